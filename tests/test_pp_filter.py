"""bk.pp.filter_by_expr: edgeR 3.40's filterByExpr, exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from conftest import read_ref, roundtrip
from helpers import assert_adata_equal
from scipy import sparse

import bulkpy as bk
from bulkpy._stats import filter as engine

# the designs the R references were made with (shared/refscripts/make_refs.R:
# ``filterByExpr(DGEList(counts), design = model.matrix(design, coldata))``)
DESIGNS = {"pasilla": "~ type + condition", "airway": "~ cell + dex", "geuvadis85": "~ sex"}


def _ref_keep(dataset: str, adata) -> np.ndarray:
    """edgeR's keep vector. The full reference (../shared) lists every gene with TRUE/FALSE; the
    committed fixture (tests/fixtures) is trimmed to the kept genes only, in gene order."""
    ref = read_ref(dataset, "edger_filter_by_expr.csv.gz")["keep"].astype(bool)
    if len(ref) == adata.n_vars:
        assert list(ref.index) == list(adata.var_names)
        return ref.to_numpy()
    assert ref.all() and ref.index.isin(adata.var_names).all(), "a trimmed reference lists kept genes only"
    return adata.var_names.isin(ref.index)


def _reference_rule(counts, min_size, lib=None, min_count=10, min_total=15, large_n=10, min_prop=0.7):
    """filterByExpr written out plainly, per gene, as an independent check of the engine."""
    counts = np.asarray(counts, dtype=float)
    lib = counts.sum(axis=1) if lib is None else lib
    m = min_size if min_size <= large_n else large_n + (min_size - large_n) * min_prop
    cutoff = min_count / np.median(lib) * 1e6
    keep = []
    for j in range(counts.shape[1]):
        cpm = [counts[i, j] * (1e6 / lib[i]) for i in range(counts.shape[0])]
        keep.append(sum(c >= cutoff for c in cpm) >= m - 1e-14 and counts[:, j].sum() >= min_total - 1e-14)
    return np.array(keep)


# --- parity with edgeR ---------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_parity_with_edger_design(dataset, request):
    adata = request.getfixturevalue(dataset)
    bk.pp.filter_by_expr(adata, design=DESIGNS[dataset])
    ours = adata.var["filter_by_expr"].to_numpy()
    ref = _ref_keep(dataset, adata)
    assert ours.dtype == bool
    np.testing.assert_array_equal(ours, ref)  # every gene: exact agreement
    assert adata.uns["filter_by_expr"]["n_kept"] == int(ref.sum())


@pytest.mark.parity
def test_parity_with_edger_group_airway(airway):
    # With ~ cell + dex on 4 cell lines x 2 treatments edgeR's minimum group size is
    # 1 / max(hat) = 1.6, i.e. 2 samples must pass; group = cell (2 samples per cell line)
    # requires the same 2, so edgeR's result for the design is also the result for this group.
    bk.pp.filter_by_expr(airway, group="cell")
    assert airway.uns["filter_by_expr"]["min_group_size"] == 2
    np.testing.assert_array_equal(airway.var["filter_by_expr"].to_numpy(), _ref_keep("airway", airway))


def test_design_quantities_pasilla(pasilla):
    bk.pp.filter_by_expr(pasilla, design="~ type + condition")
    u = pasilla.uns["filter_by_expr"]
    lib = pasilla.layers["counts"].sum(axis=1)
    assert u["median_lib_size"] == np.median(lib)
    assert u["cpm_cutoff"] == 10 / np.median(lib) * 1e6
    # the largest leverage of ~ type + condition on these 7 samples is 3/5 (treated single-read
    # is the only sample of its cell): 1/0.6 = 5/3
    assert u["min_group_size"] == pytest.approx(5 / 3, rel=1e-14)
    assert u["min_samples"] == u["min_group_size"]


def test_group_matches_plain_rule_and_one_way_design(pasilla):
    X = pasilla.layers["counts"]
    for col in ("condition", "type"):
        a = pasilla.copy()
        bk.pp.filter_by_expr(a, group=col)
        n_min = pasilla.obs[col].value_counts().min()
        assert a.uns["filter_by_expr"]["min_group_size"] == n_min
        np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), _reference_rule(X, n_min))
        # for a one-way layout the leverages are 1/n per group, so the design gives the same genes
        b = pasilla.copy()
        bk.pp.filter_by_expr(b, design=f"~ {col}")
        np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), b.var["filter_by_expr"].to_numpy())
        assert b.uns["filter_by_expr"]["min_group_size"] == pytest.approx(n_min, rel=1e-14)


def test_design_forms_agree(pasilla):
    X, names = bk._design.design_matrix(pasilla.obs, "~ type + condition")
    results = []
    for design in (
        "~ type + condition",
        "~ 0 + type + condition",  # R's hat() adds an intercept, so the same column space
        X,
        pd.DataFrame(X, index=pasilla.obs_names, columns=names),
        np.column_stack([X, X[:, 1]]),  # rank deficient: leverages of the column space
    ):
        a = pasilla.copy()
        bk.pp.filter_by_expr(a, design=design)
        results.append(a.var["filter_by_expr"].to_numpy())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_no_group_no_design_uses_all_samples(pasilla):
    bk.pp.filter_by_expr(pasilla)
    u = pasilla.uns["filter_by_expr"]
    assert u["min_group_size"] == 7
    np.testing.assert_array_equal(pasilla.var["filter_by_expr"].to_numpy(), _reference_rule(pasilla.layers["counts"], 7))


# --- the rule's details on constructed data ---------------------------------------------------------


def _adata(counts, **obs):
    counts = np.asarray(counts, dtype=float)
    a = AnnData(X=counts.copy(), obs=pd.DataFrame(obs, index=[f"s{i}" for i in range(counts.shape[0])]))
    a.var_names = [f"g{j}" for j in range(counts.shape[1])]
    a.layers["counts"] = counts
    return a


def test_large_n_and_min_prop():
    # 30 samples in two groups of 15: 10 + (15 - 10) * 0.7 = 13.5, so 14 samples must pass
    n = 30
    background = np.full((n, 1), 1e6)  # equal library sizes
    genes = np.zeros((n, 4))
    for j, k in enumerate((13, 14, 15, 30)):
        genes[:k, j] = 100
    a = _adata(np.hstack([background, genes]), g=["a"] * 15 + ["b"] * 15)
    bk.pp.filter_by_expr(a, group="g")
    assert a.uns["filter_by_expr"]["min_samples"] == pytest.approx(13.5)
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), [True, False, True, True, True])
    bk.pp.filter_by_expr(a, group="g", min_prop=1.0)  # all 15 needed
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), [True, False, False, True, True])
    bk.pp.filter_by_expr(a, group="g", large_n=20)  # no relaxation below 20 per group
    assert a.uns["filter_by_expr"]["min_samples"] == 15


@pytest.mark.parity
def test_large_n_on_real_data(geuvadis85):
    # geuvadis85 is pre-filtered (edgeR keeps every gene at the defaults); a higher min_count puts
    # genes on both sides of the 31.7-sample requirement (41 females -> 10 + 31 * 0.7)
    bk.pp.filter_by_expr(geuvadis85, group="sex", min_count=300)
    u = geuvadis85.uns["filter_by_expr"]
    assert u["min_group_size"] == 41 and u["min_samples"] == pytest.approx(31.7)
    X = geuvadis85.layers["counts"]
    lib = X.sum(axis=1)
    n_pass = (X * (1e6 / lib)[:, None] >= u["cpm_cutoff"]).sum(axis=0)
    assert ((n_pass >= 25) & (n_pass <= 40)).sum() > 100  # many genes near the requirement
    exp = _reference_rule(X[:, :1500], 41, lib=lib, min_count=300)
    np.testing.assert_array_equal(geuvadis85.var["filter_by_expr"].to_numpy()[:1500], exp)
    keep = geuvadis85.var["filter_by_expr"].to_numpy()
    assert keep[n_pass == 32].all() and not keep[n_pass == 31].any()
    assert (n_pass == 31).any() and (n_pass == 32).any()


def test_tolerance_on_group_size_and_total():
    # one-way design with groups of 3 and 4: 1/max(hat) is 3 up to rounding, and genes seen in
    # exactly 3 samples must be kept (edgeR compares with a tolerance of 1e-14)
    lib = np.full((7, 1), 1e6)
    g = np.zeros((7, 3))
    g[:3, 0] = 20  # 3 samples
    g[:2, 1] = 20  # 2 samples
    g[:, 2] = [15 - 5e-15, 0, 0, 0, 0, 0, 0]  # in 1 sample only
    a = _adata(np.hstack([lib, g]), grp=list("aaabbbb"))
    bk.pp.filter_by_expr(a, design="~ grp")
    assert a.uns["filter_by_expr"]["min_group_size"] == pytest.approx(3, rel=1e-14)
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy()[:3], [True, True, False])
    # totals: 15 - 5e-15 passes min.total.count = 15 (within 1e-14); 15 - 1e-13 does not
    tot = engine.gene_totals(np.array([[15 - 5e-15, 15 - 1e-13]]))
    assert (tot >= 15 - engine.TOL).tolist() == [True, False]


def test_cpm_uses_edgers_order_of_operations():
    # edgeR's C++ computes count * (1e6 / lib) and the cutoff as (min.count / median) * 1e6. For a
    # sample whose library is the median and that has exactly min.count reads the two agree only up
    # to rounding: for about a quarter of library sizes near 1e6 the CPM lands just below the cutoff
    # (edgeR: fails), for another quarter just above (passes). We follow edgeR's arithmetic.
    libs = np.arange(1_000_000, 1_000_100, dtype=float)
    cpm, cut = 10 * (1e6 / libs), 10 / libs * 1e6
    below, above = libs[cpm < cut][0], libs[cpm > cut][0]
    for lib, expected in ((below, 0), (above, 1)):
        counts = np.array([[10.0, lib - 10.0]])
        n = engine.n_samples_above(counts, np.array([lib]), engine.cpm_cutoff(np.array([lib]), 10))
        assert n[0] == expected
        n = engine.n_samples_above(sparse.csr_matrix(counts), np.array([lib]), engine.cpm_cutoff(np.array([lib]), 10))
        assert n[0] == expected
        keep, _ = engine.filter_by_expr(np.vstack([counts, counts]), min_total_count=0)
        assert keep[0] == bool(expected)


def test_r_median_even_and_odd():
    assert engine.r_median(np.array([3.0, 1.0, 2.0])) == 2.0
    assert engine.r_median(np.array([4.0, 1.0, 3.0, 2.0])) == 2.5
    big = np.array([2.0**53 - 1, 2.0**53 - 3])  # the long-double mean keeps the exact midpoint
    assert engine.r_median(big) == 2.0**53 - 2


def test_hat_values_match_the_definition():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(9), rng.normal(size=(9, 2))])
    h = engine.hat_values(X)
    H = X @ np.linalg.solve(X.T @ X, X.T)
    np.testing.assert_allclose(h, np.diag(H), rtol=1e-12)
    # R adds an intercept: a design without one gets the leverages of [1, X]
    np.testing.assert_allclose(engine.hat_values(X[:, 1:]), h, rtol=1e-12)
    np.testing.assert_allclose(engine.hat_values(X[:, 1:], intercept=False).sum(), 2, rtol=1e-12)
    # a duplicated column changes nothing
    np.testing.assert_allclose(engine.hat_values(np.column_stack([X, X[:, 2]])), h, rtol=1e-12)


def test_one_sample_per_level():
    # every group has a single sample: edgeR's minimum group size is 1, so a gene passes with the
    # cutoff reached in any one sample (and a total of at least 15)
    counts = np.array([[1e6, 30, 0, 14], [1e6, 0, 0, 0], [1e6, 0, 16, 0]])
    a = _adata(counts, grp=["x", "y", "z"])
    bk.pp.filter_by_expr(a, group="grp")
    assert a.uns["filter_by_expr"]["min_group_size"] == 1
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), [True, True, True, False])
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), _reference_rule(counts, 1))


def test_unused_group_levels_are_ignored(pasilla):
    a = pasilla[pasilla.obs["type"] == "paired_end"].copy()
    a.obs["type"] = a.obs["type"].cat.add_categories(["single_read"])  # a level no sample has
    bk.pp.filter_by_expr(a, group="type")
    assert a.uns["filter_by_expr"]["min_group_size"] == 4
    bk.pp.filter_by_expr(a, design="~ type + condition")  # unused level dropped, no zero column
    assert a.uns["filter_by_expr"]["params"]["design_columns"].tolist() == ["Intercept", "condition[T.untreated]"]


def test_min_count_zero_and_non_integer_counts():
    rng = np.random.default_rng(2)
    counts = rng.gamma(0.5, 40, size=(6, 50))
    counts[:, :5] = 0
    a = _adata(counts, grp=list("aaabbb"))
    bk.pp.filter_by_expr(a, group="grp", min_count=0, min_total_count=0)
    assert a.var["filter_by_expr"].all()
    bk.pp.filter_by_expr(a, group="grp")
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), _reference_rule(counts, 3))


def test_lib_size_argument(pasilla):
    lib = pasilla.layers["counts"].sum(axis=1)
    base = bk.pp.filter_by_expr(pasilla, design="~ type + condition", copy=True)
    pasilla.obs["lib"] = lib
    series = pd.Series(lib, index=pasilla.obs_names).iloc[::-1]  # aligned by sample name
    for ls in ("lib", lib, list(lib), series):
        a = bk.pp.filter_by_expr(pasilla, design="~ type + condition", lib_size=ls, copy=True)
        np.testing.assert_array_equal(a.var["filter_by_expr"], base.var["filter_by_expr"])
    # effective library sizes (lib x norm factor), as edgeR uses for a normalised DGEList
    nf = np.array([1.1, 0.9, 1.0, 1.2, 0.8, 1.05, 0.95])
    a = bk.pp.filter_by_expr(pasilla, design="~ type + condition", lib_size=lib * nf, copy=True)
    exp = _reference_rule(pasilla.layers["counts"], 2, lib=lib * nf)
    np.testing.assert_array_equal(a.var["filter_by_expr"].to_numpy(), exp)
    assert a.uns["filter_by_expr"]["params"]["lib_size"] == "given per-sample values"


def test_sparse_equals_dense(airway):
    dense = bk.pp.filter_by_expr(airway, design="~ cell + dex", copy=True)
    for fmt in (sparse.csr_matrix, sparse.csc_matrix, sparse.csr_array):
        a = airway.copy()
        a.layers["counts"] = fmt(a.layers["counts"])
        bk.pp.filter_by_expr(a, design="~ cell + dex")
        np.testing.assert_array_equal(a.var["filter_by_expr"], dense.var["filter_by_expr"])
        for k in ("cpm_cutoff", "median_lib_size", "min_group_size"):
            assert a.uns["filter_by_expr"][k] == dense.uns["filter_by_expr"][k]
    a = airway.copy()
    a.layers["counts"] = sparse.csr_matrix(a.layers["counts"])
    bk.pp.filter_by_expr(a, group="dex", min_count=0)
    assert a.uns["filter_by_expr"]["n_kept"] == int((airway.layers["counts"].sum(axis=0) >= 15).sum())


def test_layer_none_reads_X(pasilla):
    a = bk.pp.filter_by_expr(pasilla, design="~ condition", layer=None, copy=True)
    b = bk.pp.filter_by_expr(pasilla, design="~ condition", copy=True)
    np.testing.assert_array_equal(a.var["filter_by_expr"], b.var["filter_by_expr"])


# --- slots, copy, subset, h5ad ---------------------------------------------------------------------


def test_copy_semantics(pasilla):
    before = pasilla.copy()
    out = bk.pp.filter_by_expr(pasilla, design="~ type + condition", copy=True)
    assert isinstance(out, AnnData) and out is not pasilla
    assert_adata_equal(pasilla, before)
    assert "filter_by_expr" in out.var and "filter_by_expr" in out.uns
    assert bk.pp.filter_by_expr(pasilla, design="~ type + condition") is None
    np.testing.assert_array_equal(pasilla.var["filter_by_expr"], out.var["filter_by_expr"])


def test_subset(pasilla):
    keep = bk.pp.filter_by_expr(pasilla, design="~ type + condition", copy=True).var["filter_by_expr"].to_numpy()
    before = pasilla.copy()
    sub = bk.pp.filter_by_expr(pasilla, design="~ type + condition", subset=True, copy=True)
    assert_adata_equal(pasilla, before)
    assert sub.n_vars == keep.sum() and list(sub.var_names) == list(pasilla.var_names[keep])
    assert sub.var["filter_by_expr"].all()
    np.testing.assert_array_equal(sub.layers["counts"], pasilla.layers["counts"][:, keep])
    assert sub.uns["filter_by_expr"]["n_genes"] == pasilla.n_vars
    assert bk.pp.filter_by_expr(pasilla, design="~ type + condition", subset=True, key_added="fbe") is None
    assert pasilla.n_vars == keep.sum() and not pasilla.is_view
    assert bool(pasilla.uns["fbe"]["params"]["subset"]) is True


def test_params_and_h5ad_roundtrip(pasilla, tmp_h5ad):
    bk.pp.filter_by_expr(pasilla, design="~ type + condition", key_added="expressed")
    bk.pp.filter_by_expr(pasilla, group="condition", key_added="expressed_by_group")
    p = pasilla.uns["expressed"]["params"]
    assert p["design"] == "~ type + condition" and p["group"] == "None" and p["layer"] == "counts"
    assert list(p["design_columns"]) == ["Intercept", "type[T.single_read]", "condition[T.untreated]"]
    assert p["min_count"] == 10 and p["min_total_count"] == 15 and p["large_n"] == 10 and p["min_prop"] == 0.7
    assert list(pasilla.uns["expressed_by_group"]["params"]["group_levels"]) == ["treated", "untreated"]
    back = roundtrip(pasilla, tmp_h5ad)
    for key in ("expressed", "expressed_by_group"):
        np.testing.assert_array_equal(back.var[key].to_numpy(), pasilla.var[key].to_numpy())
        assert back.var[key].dtype == bool
        for k in ("cpm_cutoff", "median_lib_size", "min_group_size", "min_samples", "n_kept", "n_genes"):
            assert back.uns[key][k] == pasilla.uns[key][k]
        assert back.uns[key]["params"]["design"] == pasilla.uns[key]["params"]["design"]


# --- bad input: a clear error, and the AnnData left as it was -----------------------------------


def _bad(adata, exc, match, **kw):
    before = adata.copy()
    with pytest.raises(exc, match=match):
        bk.pp.filter_by_expr(adata, **kw)
    assert_adata_equal(adata, before)


def test_bad_counts(pasilla):
    a = pasilla.copy()
    a.layers["counts"][0, 3] = -1
    _bad(a, ValueError, "negative", design="~ condition")
    a = pasilla.copy()
    a.layers["counts"][2, 5] = np.nan
    _bad(a, ValueError, "non-finite", design="~ condition")
    a = pasilla.copy()
    a.layers["counts"][2, 5] = np.inf
    _bad(a, ValueError, "non-finite", design="~ condition")
    a = pasilla.copy()
    a.layers["log"] = np.log2(a.layers["counts"] + 1) / 3
    _bad(a, ValueError, "log-transformed", layer="log", design="~ condition")
    a = pasilla.copy()
    a.layers["counts"][1] = 0
    _bad(a, ValueError, r"samples \['untreated2'\] have no counts", design="~ condition")


def test_bad_layer_group_design(pasilla):
    _bad(pasilla, KeyError, r"layer 'raw' not found; available layers: 'counts'", layer="raw")
    _bad(pasilla, KeyError, r"'treatment' is not a column of adata.obs; columns are: \['condition', 'type'\]", group="treatment")
    _bad(pasilla, KeyError, r"'treatment'.*columns are: \['condition', 'type'\]", design="~ treatment")
    _bad(pasilla, ValueError, "either group= or design=", group="condition", design="~ condition")
    a = pasilla.copy()
    a.obs["condition"] = a.obs["condition"].astype(object)
    a.obs.loc["treated2", "condition"] = None
    _bad(a, ValueError, r"'condition'.*1 missing values.*treated2", design="~ type + condition")
    _bad(a, ValueError, r"'condition' \(group\) has 1 missing values.*treated2", group="condition")
    _bad(pasilla, ValueError, "6 rows but there are 7 samples", design=np.ones((6, 2)))
    _bad(pasilla, TypeError, "name of an obs column", group=["condition"])


def test_bad_parameters(pasilla):
    _bad(pasilla, ValueError, "min_prop must be finite and between 0 and 1", min_prop=1.5)
    _bad(pasilla, ValueError, "min_count must be finite and >= 0", min_count=-1)
    _bad(pasilla, TypeError, "min_total_count must be a number", min_total_count="15")
    _bad(pasilla, ValueError, "large_n", large_n=np.nan)
    _bad(pasilla, TypeError, "subset must be True or False", subset=1)
    _bad(pasilla, TypeError, "copy must be True or False", copy="yes")
    _bad(pasilla, ValueError, "contains '/'", key_added="a/b")
    _bad(pasilla, ValueError, "lib_size has 3 values but there are 7 samples", lib_size=[1e6, 1e6, 1e6])
    _bad(pasilla, ValueError, r"finite and positive; not so for samples \['untreated1'\]", lib_size=[0] + [1e7] * 6)
    _bad(pasilla, KeyError, "'libs' is not a column", lib_size="libs")
    _bad(pasilla, ValueError, "lib_size Series does not match", lib_size=pd.Series([1e7] * 7, index=list("abcdefg")))
    _bad(pasilla, TypeError, "lib_size must be None", lib_size={"a": 1})
    _bad(pasilla, TypeError, "must be numeric", lib_size="condition")
