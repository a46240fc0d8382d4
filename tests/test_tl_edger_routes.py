"""bk.tl.edger beyond glmQLFTest/glmLRT: tximport offsets (gene × sample offset matrices), glmTreat
and the classic exact test, against edgeR 4.10.7 (``../shared/data/<dataset>/r_current``, made by
``shared/refscripts/make_refs_current.R`` and ``make_tximport_current.R``).

Trimmed pasilla references (exact test, QL glmTreat) are committed in
``tests/fixtures/pasilla/r_current`` (see its ``PROVENANCE_edger.txt``) so that a core parity test
runs on a fresh clone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, roundtrip, shared_path
from helpers import assert_adata_equal

import bulkpy as bk
from bulkpy._stats import tximport as tx
from bulkpy._stats.edger import glm as E
from bulkpy._stats.edger import ql as Q
from bulkpy._stats.edger import treat as T

DESIGNS = {
    "pasilla": ("~ type + condition", "condition", "treated", "untreated"),
    "airway": ("~ cell + dex", "dex", "trt", "untrt"),
    "geuvadis85": ("~ sex", "sex", "Male", "Female"),
}
LFC = float(np.log2(1.5))


def _ref(dataset: str, name: str) -> pd.DataFrame:
    """An edgeR 4.10 reference: ``../shared/data/<dataset>/r_current`` or the trimmed fixture."""
    for p in (SHARED / dataset / "r_current" / name, FIXTURES / dataset / "r_current" / name):
        if p.exists():
            return pd.read_csv(p, index_col=0)
    pytest.skip(f"reference {dataset}/r_current/{name} not available")


def _releveled(ad, dataset):
    _, fac, _, ref = DESIGNS[dataset]
    levels = [ref] + [v for v in sorted(ad.obs[fac].astype(str).unique()) if v != ref]
    ad.obs[fac] = pd.Categorical(ad.obs[fac].astype(str), categories=levels)
    return ad


def _agreement(ours: pd.DataFrame, ref: pd.DataFrame) -> dict:
    ours = ours.loc[ref.index]
    lp = np.abs(np.log10(np.maximum(ours["pvalue"], 1e-300)) - np.log10(np.maximum(ref["PValue"], 1e-300)))
    dl = np.abs(ours["log2FoldChange"] - ref["logFC"])
    bh = bk._stats.multitest.p_adjust_bh(ref["PValue"].to_numpy())  # R's FDR (not in trimmed fixtures)
    a = set(ours.index[ours["padj"] < 0.05])
    b = set(ref.index[bh < 0.05])
    return {
        "jaccard": len(a & b) / len(a | b) if a | b else 1.0,
        "p99_dlog10p": float(lp.quantile(0.99)),
        "p99_dlogfc": float(dl.quantile(0.99)),
        "n_sig": len(b),
    }


def _check(ag, *, p99_dlog10p, p99_dlogfc, jaccard=0.995):
    assert ag["jaccard"] >= jaccard, ag
    assert ag["p99_dlog10p"] < p99_dlog10p, ag
    assert ag["p99_dlogfc"] < p99_dlogfc, ag


# --------------------------------------------------------------------------------------------
# exactTest (classic edgeR)
# --------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_exact_test_matches_edger(request, dataset):
    if dataset != "pasilla":
        shared_path(dataset, "r_current")
    ref = _ref(dataset, "edger_exact_test.csv.gz")
    _, fac, test, refl = DESIGNS[dataset]
    ad = request.getfixturevalue(f"_{dataset}")
    ad = _releveled(ad[:, ref.index].copy(), dataset)  # R's filterByExpr(y) with the group
    bk.tl.edger(ad, design=f"~ {fac}", contrast=[fac, test, refl], test="exact")
    # measured: common dispersion 1e-11 (relative); p99 |dlog10 p| 2e-10 (pasilla), 8e-11 (airway),
    # 3e-11 (geuvadis85); p99 |dlogFC| <= 3e-12; the same padj < 0.05 sets
    if (SHARED / dataset / "r_current").exists():
        common = _ref(dataset, "edger_classic_common_dispersion.csv.gz").iloc[0, 0]
        assert abs(ad.uns["edger"]["params"]["common_dispersion"] / common - 1) < 1e-8
    ag = _agreement(bk.get.de_df(ad, "edger"), ref)
    _check(ag, p99_dlog10p=1e-6, p99_dlogfc=1e-8, jaccard=1.0)
    p = ad.uns["edger"]["params"]
    assert p["test"] == "exactTest" and p["method"] == "edgeR-exact" and p["group"] == fac
    assert list(p["pairs"]["_".join([test, "vs", refl])]) == [refl, test]


# --------------------------------------------------------------------------------------------
# glmTreat
# --------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
@pytest.mark.parametrize("test", ["QL", "LRT"])
def test_glm_treat_matches_edger(request, dataset, test):
    if dataset != "pasilla" or test == "LRT":
        shared_path(dataset, "r_current")
    name = "edger_qlf_treat_lfc0.585.csv.gz" if test == "QL" else "edger_glmlrt_treat_lfc0.585.csv.gz"
    ref = _ref(dataset, name)
    formula, fac, tl, rl = DESIGNS[dataset]
    ad = request.getfixturevalue(f"_{dataset}")
    ad = _releveled(ad[:, ref.index].copy(), dataset)
    bk.tl.edger(ad, design=formula, contrast=[fac, tl, rl], test=test, lfc=LFC)
    df = bk.get.de_df(ad, "edger")
    # LRT: the same algorithms as edgeR, measured p99 |dlog10 p| <= 3e-11, |dlogFC| <= 3e-13, the same
    # padj < 0.05 sets. QL: edgeR 4's glmQLFit, whose unit-deviance moments bound the agreement
    # (see test_tl_edger.py); with edgeR's own moment approximations measured p99 |dlog10 p| 2e-9
    # (pasilla), 8e-10 (airway), 9e-11 (geuvadis85), |dlogFC| <= 1e-9; the targets asserted.
    if test == "LRT":
        _check(_agreement(df, ref), p99_dlog10p=1e-6, p99_dlogfc=1e-6, jaccard=1.0)
    else:
        _check(_agreement(df, ref), p99_dlog10p=1e-2, p99_dlogfc=1e-3)
    if "unshrunk.logFC" in ref.columns:
        d = np.abs(df.loc[ref.index, "unshrunk_log2FoldChange"] - ref["unshrunk.logFC"])
        assert d.quantile(0.99) < (1e-6 if test == "LRT" else 1e-3)
    p = ad.uns["edger"]["params"]
    assert p["test"] == "glmTreat" and p["lfc"] == LFC and p["treat_null"] == "interval"
    assert list(df.columns) == ["log2FoldChange", "stat", "pvalue", "padj", "logCPM", "unshrunk_log2FoldChange"]
    np.testing.assert_allclose(np.abs(df["stat"]), np.abs(T.special.ndtri(df["pvalue"] / 2)), atol=1e-12)


@pytest.fixture(scope="module")
def small():
    ad = bk.datasets.pasilla()
    top = np.argsort(-ad.layers["counts"].sum(axis=0))[:1500]
    return ad[:, np.sort(top)].copy()


def test_treat_rules(small):
    ad = small.copy()
    kw = {"design": "~ type + condition", "contrast": ["condition", "treated", "untreated"]}
    bk.tl.edger(ad, **kw, key_added="f")
    bk.tl.edger(ad, **kw, lfc=LFC, key_added="t")
    bk.tl.edger(ad, **kw, lfc=LFC, treat_null="worst.case", key_added="w")
    bk.tl.edger(ad, **kw, lfc=LFC, legacy=True, key_added="lg")  # legacy QL: Poisson bound
    f, t, w, lg = (bk.get.de_df(ad, k) for k in ("f", "t", "w", "lg"))
    # a threshold only makes tests harder; the worst case is more conservative than the interval
    assert (t["pvalue"] >= f["pvalue"] - 1e-12).mean() > 0.99
    assert (w["pvalue"] >= t["pvalue"] - 1e-12).all()
    assert lg["pvalue"].between(0, 1).all() and ad.uns["lg"]["params"]["poisson_bound"] is True
    np.testing.assert_array_equal(t["log2FoldChange"], f["log2FoldChange"])
    # glmTreat's interval-null helpers
    np.testing.assert_allclose(T._integrate_pnorm(np.array([0.3]), np.array([0.3])), T.special.ndtr(0.3))
    np.testing.assert_allclose(T.zscore_t(np.array([2.0, -2.0]), np.inf), [2.0, -2.0])
    z = T.zscore_t(np.array([3.0]), 5.0)
    np.testing.assert_allclose(T.special.ndtr(-z), T.stats.t.sf(3.0, 5.0), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# gene × sample offsets (the engine) and the tximport route
# --------------------------------------------------------------------------------------------


def test_offset_matrix_equals_per_sample_offsets(small):
    # a genes × samples offset whose rows are the log library sizes gives the per-sample results
    c = np.asarray(small.layers["counts"], dtype=float)
    X, _ = bk._design.design_matrix(small.obs, "~ type + condition")
    lib = c.sum(axis=1)
    y = np.ascontiguousarray(c.T)
    M = np.tile(np.log(lib), (y.shape[0], 1))
    d1 = E.estimate_disp(c, X, lib)
    d2 = E.estimate_disp(c, X, lib, offset=M.T)
    np.testing.assert_array_equal(d1.tagwise, d2.tagwise)
    for Xi in (X, X[:, [0, 2]]):  # Levenberg and the one-way shortcut
        a, b = E.glm_fit_genes(y, Xi, d1.tagwise, np.log(lib)), E.glm_fit_genes(y, Xi, d1.tagwise, M)
        np.testing.assert_array_equal(a.coefficients, b.coefficients)
    np.testing.assert_array_equal(E.ave_log_cpm_genes(y, np.log(lib), 0.1), E.ave_log_cpm_genes(y, M, 0.1))
    q1, q2 = Q.glm_ql_fit_v4(y, X, np.log(lib), d1.ave_log_cpm), Q.glm_ql_fit_v4(y, X, M, d1.ave_log_cpm)
    c3 = np.array([0.0, 0.0, 1.0])
    r1 = Q.glm_ql_ftest_v4(q1, y, X, np.log(lib), c3, d1.ave_log_cpm)
    r2 = Q.glm_ql_ftest_v4(q2, y, X, M, c3, d1.ave_log_cpm)
    np.testing.assert_array_equal(r1.pvalue, r2.pvalue)
    # and a real matrix offset changes the fit as edgeR's addPriorCount does (per-gene mean library)
    M2 = M + np.random.default_rng(0).normal(0, 0.2, M.shape)
    y2, o2 = E.add_prior_count(y, M2, 1.0)
    lib2 = np.exp(M2)
    np.testing.assert_allclose(y2 - y, lib2 / lib2.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(o2, np.log(lib2 + 2 * (y2 - y)))


def _quant(root):
    runs = pd.read_csv(root / "samples.txt", sep=" ")["run"].tolist()
    files = {r: root / "salmon" / r / "quant.sf.gz" for r in runs}
    ad = bk.io.read_quant(files, type="salmon", tx2gene=root / "tx2gene_gencode_v27_derived_from_rsem.csv.gz")
    ad.obs["group"] = pd.Categorical(["A"] * 3 + ["B"] * 3)
    return ad


@pytest.fixture(scope="module")
def quant_fixture():
    return _quant(FIXTURES / "geuvadis6_quant")


def test_tximport_offsets_from_all_genes(quant_fixture, tmp_h5ad):
    ad = quant_fixture.copy()
    bk.pp.filter_by_expr(ad, design="~ group")
    before = ad.copy()
    kw = {"design": "~ group", "contrast": ["group", "B", "A"]}
    bk.tl.edger(ad, **kw, mask_var="filter_by_expr")
    p = ad.uns["edger"]["params"]
    assert p["offset"] == "scaleOffset(layers['length'])" and p["tximport"] == "no"
    assert p["mask_var"] == "var['filter_by_expr']" and p["n_genes_tested"] == int(ad.var["filter_by_expr"].sum())
    # the offsets are the vignette's, on all genes; library sizes are those of all genes
    want = tx.edger_length_offset(before.layers["counts"], before.layers["length"])
    np.testing.assert_allclose(ad.layers["edger_offset"], want, rtol=1e-13)
    np.testing.assert_allclose(ad.obs["edger_lib_size"], before.layers["counts"].sum(axis=1))
    df = bk.get.de_df(ad, "edger")
    keep = ad.var["filter_by_expr"].to_numpy()
    assert df.loc[keep, "pvalue"].notna().all() and df.loc[~keep].isna().all().all()
    # lengths=None: per-sample offsets (no length correction) give other numbers
    nol = bk.tl.edger(before, **kw, mask_var="filter_by_expr", lengths=None, copy=True)
    assert nol.uns["edger"]["params"]["offset"] == "log(lib_size * norm_factors)"
    assert not np.allclose(bk.get.de_df(nol, "edger")["log2FoldChange"][keep], df["log2FoldChange"][keep])
    # an explicit layer of lengths on counts that did not come from read_quant: the same
    named = before.copy()
    del named.uns["tximport"]
    bk.tl.edger(named, **kw, mask_var=named.var["filter_by_expr"].to_numpy(), lengths="length")
    pd.testing.assert_frame_equal(bk.get.de_df(named, "edger"), df)
    back = roundtrip(ad, tmp_h5ad)
    assert_adata_equal(ad, back)


@pytest.mark.parity
def test_tximport_edger_route_matches_r():
    # tximport vignette (make_tximport_current.R): offsets on all genes, filterByExpr(y, mm),
    # y[keep, ] (library sizes kept), estimateDisp, glmQLFit, glmQLFTest. 16,501 genes; no gene at
    # padj < 0.05 in either (a 3 vs 3 split with no biology). Measured with edgeR's own unit-deviance
    # moments (ql_moments.py): p99 |dlog10 p| 2.5e-10 (max 5e-9), p99 |dlogFC| 2.4e-10, logCPM 5e-14.
    ad = _quant(shared_path("geuvadis6_quant"))
    ref = pd.read_csv(shared_path("geuvadis6_quant", "r_current", "tximport_edger_qlf.csv.gz"), index_col=0)
    bk.pp.filter_by_expr(ad, design="~ group")
    bk.tl.edger(ad, design="~ group", contrast=["group", "B", "A"], mask_var="filter_by_expr")
    df = bk.get.de_df(ad, "edger")
    assert set(df.index[df["pvalue"].notna()]) == set(ref.index)
    _check(_agreement(df, ref), p99_dlog10p=1e-8, p99_dlogfc=1e-8)
    np.testing.assert_allclose(df.loc[ref.index, "logCPM"], ref["logCPM"], rtol=1e-9)


# --------------------------------------------------------------------------------------------
# round trip and bad input
# --------------------------------------------------------------------------------------------


def test_exact_and_treat_roundtrip(small, tmp_h5ad):
    ad = small.copy()
    bk.tl.edger(ad, design="~ condition", contrast=["condition", "treated", "untreated"], test="exact", key_added="x")
    bk.tl.edger(ad, design="~ type + condition", contrast="condition[T.untreated]", lfc=1.0, test="LRT", key_added="t")
    back = roundtrip(ad, tmp_h5ad)
    assert_adata_equal(ad, back)
    for key in ("x", "t"):
        pd.testing.assert_frame_equal(bk.get.de_df(back, key), bk.get.de_df(ad, key))
    assert back.uns["x"]["params"]["rejection_region"] == "doubletail"
    # the exact test of a coefficient name is the pair (reference level, that level)
    ad.obs["condition"] = pd.Categorical(ad.obs["condition"].astype(str), categories=["untreated", "treated"])
    c = bk.tl.edger(ad, design="~ condition", contrast="condition[T.treated]", test="exact", copy=True)
    x = bk.get.de_df(ad, "x")
    np.testing.assert_allclose(bk.get.de_df(c, "edger")["pvalue"], x["pvalue"], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"design": "~ type + condition", "test": "exact"}, ValueError, "one factor"),
        ({"design": "~ condition", "test": "exact", "contrast": [0, 1]}, ValueError, "compares two groups"),
        ({"design": "~ condition", "test": "exact", "lfc": 1.0}, ValueError, "no fold-change threshold"),
        ({"design": "~ condition", "test": "exact", "legacy": True}, ValueError, "no legacy"),
        ({"design": "~ condition", "lfc": -1.0}, ValueError, "lfc must be a finite number >= 0"),
        ({"design": "~ condition", "lfc": "1"}, TypeError, "lfc must be a number"),
        ({"design": "~ condition", "lfc": 1.0, "treat_null": "worst"}, ValueError, "treat_null="),
        ({"design": "~ condition", "mask_var": "nope"}, KeyError, "not a var column"),
        ({"design": "~ condition", "mask_var": "name"}, TypeError, "boolean column"),
        ({"design": "~ condition", "mask_var": np.ones(3, bool)}, TypeError, "boolean array of length"),
        ({"design": "~ condition", "mask_var": "none_kept"}, ValueError, "selects no gene"),
        ({"design": "~ condition", "lengths": "nope"}, KeyError, "is not a layer"),
    ],
)
def test_bad_input_leaves_adata_untouched(small, kwargs, exc, match):
    ad = small[:, :300].copy()
    ad.var["name"] = "x"
    ad.var["none_kept"] = False
    kwargs = {"contrast": ["condition", "treated", "untreated"], **kwargs}
    before = ad.copy()
    with pytest.raises(exc, match=match):
        bk.tl.edger(ad, **kwargs)
    assert_adata_equal(ad, before)


def test_exact_refuses_tximport_offsets(quant_fixture):
    ad = quant_fixture.copy()
    before = ad.copy()
    with pytest.raises(ValueError, match="exactTest uses library sizes only"):
        bk.tl.edger(ad, design="~ group", contrast=["group", "B", "A"], test="exact")
    assert_adata_equal(ad, before)


def test_one_way_shortcut_offsets_shared_or_per_gene():
    # the one-way kernel orders a shared offset row once per call and a gene × sample offset
    # matrix per gene: equal rows give the shared row's bits, and an offset matrix fits as Levenberg
    rng = np.random.default_rng(0)
    y = rng.poisson(20, (50, 12)).astype(float)
    y[3, :6] = 0.0  # an all-zero group
    X = np.column_stack([np.ones(12), np.repeat([0.0, 1.0], 6)])
    off = np.log(rng.uniform(0.5, 1.5, 12))
    disp = np.full(50, 0.1)
    shared = E.fit_one_way(y, X, off[None, :], disp)
    tiled = E.fit_one_way(y, X, np.tile(off, (50, 1)), disp)
    np.testing.assert_array_equal(shared[0], tiled[0])
    np.testing.assert_array_equal(shared[1], tiled[1])
    assert np.all(shared[1][3, :6] == 0.0)
    offm = np.tile(off, (50, 1)) + rng.normal(0.0, 0.1, (50, 12))
    ow = E.fit_one_way(y, X, offm, disp)[1]
    lev = E.fit_levenberg(y, X, offm, disp)[1]
    keep = np.arange(50) != 3
    np.testing.assert_allclose(ow[keep], lev[keep], rtol=1e-4)  # Levenberg stops at divergence 1e-6
