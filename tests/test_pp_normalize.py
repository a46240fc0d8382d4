"""bk.pp normalisation: parity with DESeq2 / edgeR / preprocessCore, slots, h5ad, bad input.

References: ``../shared/data/<ds>/r_reference`` (or their trimmed copies in ``tests/fixtures``), plus
extra references made with the same R versions (``tests/fixtures/normalize/README.md`` says how):
``deseq2_size_factors_iterate``, ``edger_norm_factors_extra`` (TMMwsp and non-default TMM/UQ
settings), ``salmon_*`` (DESeqDataSetFromTximport gene x sample normalisation factors) and
``qn_*`` (normalize.quantiles with ties and NA).
"""

from __future__ import annotations

import anndata as ad_module
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, read_ref, ref_path, roundtrip
from helpers import assert_adata_equal, rel_diff
from hypothesis import given, settings
from hypothesis import strategies as st

import bulkpy as bk

DATASETS = ["pasilla", "airway", "geuvadis85"]


@pytest.fixture
def data(request):
    return request.getfixturevalue(request.param)


def _keep(adata, ds):
    """filterByExpr's keep vector (fixtures store only the kept genes)."""
    k = read_ref(ds, "edger_filter_by_expr.csv.gz")["keep"].astype(bool)
    return adata.var_names.isin(k.index[k.to_numpy()])


def _filtered(adata, ds):
    keep = _keep(adata, ds)
    sub = adata[:, keep].copy()
    # the keep vector is right: its column sums are edgeR's lib sizes after filtering
    lib = read_ref(ds, "edger_tmm_filtered.csv.gz").loc[adata.obs_names, "lib_size"]
    np.testing.assert_array_equal(sub.layers["counts"].sum(axis=1), lib.to_numpy())
    return sub


# ------------------------------------------------------------------------------------------------
# DESeq2 size factors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("data", DATASETS, indirect=True)
@pytest.mark.parametrize(("method", "ref"), [("ratio", "deseq2_size_factors.csv.gz"), ("poscounts", "deseq2_size_factors_poscounts.csv.gz")])
def test_size_factors_match_deseq2(data, method, ref, request):
    ds = request.node.callspec.params["data"]
    bk.pp.size_factors(data, method=method)
    expected = read_ref(ds, ref).loc[data.obs_names, "size_factor"]
    assert rel_diff(data.obs["size_factors"], expected).max() < 1e-12
    assert data.uns["size_factors"]["params"]["method"] == method
    assert "norm_factors" not in data.layers


@pytest.mark.parity
def test_size_factors_iterate_match_deseq2(pasilla):
    # estimateSizeFactors(type = "iterate"); R 4.2.2 / DESeq2 1.38.3
    bk.pp.size_factors(pasilla, method="iterate")
    expected = read_ref("pasilla", "deseq2_size_factors_iterate.csv.gz").loc[pasilla.obs_names, "size_factor"]
    # same L-BFGS-B path as R's optim: agreement to ~3e-10 here (3e-7 on
    # airway, checked outside the test suite because it takes ~8 s)
    assert rel_diff(pasilla.obs["size_factors"], expected).max() < 1e-8


def test_size_factors_control_genes(pasilla):
    genes = list(pasilla.var_names[:3000])
    bk.pp.size_factors(pasilla, control_genes=genes, key_added="sf_ctrl")
    from bulkpy._stats.deseq2.size_factors import deseq2_size_factors

    mask = np.zeros(pasilla.n_vars, dtype=bool)
    mask[:3000] = True
    np.testing.assert_allclose(pasilla.obs["sf_ctrl"], deseq2_size_factors(pasilla.layers["counts"], control=mask), rtol=0)
    pasilla.var["ctrl"] = mask
    bk.pp.size_factors(pasilla, control_genes="ctrl", key_added="sf_ctrl2")
    np.testing.assert_array_equal(pasilla.obs["sf_ctrl"], pasilla.obs["sf_ctrl2"])
    assert pasilla.uns["sf_ctrl"]["params"]["n_control_genes"] == 3000


def _salmon_adata():
    counts = pd.read_csv(ref_path("geuvadis6_quant", "salmon_txi_counts_sub400.csv.gz"), index_col=0)
    length = pd.read_csv(ref_path("geuvadis6_quant", "salmon_txi_length_sub400.csv.gz"), index_col=0)
    ad = bk.io.read_counts(counts)
    ad.layers["length"] = length.loc[ad.var_names, ad.obs_names].to_numpy().T
    return ad


@pytest.mark.parity
@pytest.mark.parametrize(
    ("method", "ref"),
    [("ratio", "salmon_deseq2_norm_factors_sub400.csv.gz"), ("poscounts", "salmon_deseq2_norm_factors_sub400_poscounts.csv.gz")],
)
def test_length_norm_factors_match_deseq2_tximport(method, ref):
    # DESeqDataSetFromTximport(salmon, ~1) on 400 genes + estimateSizeFactors: normalizationFactors(dds)
    ad = _salmon_adata()
    bk.pp.size_factors(ad, method=method)
    expected = pd.read_csv(ref_path("geuvadis6_quant", ref), index_col=0).loc[ad.var_names, ad.obs_names].to_numpy().T
    assert rel_diff(ad.layers["norm_factors"], expected).max() < 1e-12
    assert ad.uns["size_factors"]["params"]["lengths_used"] is True
    # every gene's factors have geometric mean 1
    np.testing.assert_allclose(np.exp(np.log(ad.layers["norm_factors"]).mean(axis=0)), 1.0, rtol=1e-12)
    if method == "ratio":
        bk.pp.normalize(ad, method="size_factors")
        nc = pd.read_csv(ref_path("geuvadis6_quant", "salmon_deseq2_normalized_counts_sub400.csv.gz"), index_col=0)
        assert rel_diff(ad.layers["normalized"], nc.loc[ad.var_names, ad.obs_names].to_numpy().T).max() < 1e-12


def test_use_lengths_false_ignores_lengths():
    ad = _salmon_adata()
    bk.pp.size_factors(ad, use_lengths=False)
    assert "norm_factors" not in ad.layers
    from bulkpy._stats.deseq2.size_factors import deseq2_size_factors

    np.testing.assert_array_equal(ad.obs["size_factors"], deseq2_size_factors(ad.layers["counts"]))
    # factors made with lengths are removed when the same key is recomputed without them
    bk.pp.size_factors(ad)
    assert "norm_factors" in ad.layers
    bk.pp.size_factors(ad, use_lengths=False)
    assert "norm_factors" not in ad.layers


# ------------------------------------------------------------------------------------------------
# edgeR normalisation factors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("data", DATASETS, indirect=True)
@pytest.mark.parametrize(
    ("method", "ref"),
    [("TMM", "edger_tmm_all_genes.csv.gz"), ("upperquartile", "edger_upperquartile_all_genes.csv.gz"), ("RLE", "edger_rle_all_genes.csv.gz")],
)
def test_norm_factors_match_edger_all_genes(data, method, ref, request):
    ds = request.node.callspec.params["data"]
    bk.pp.norm_factors(data, method=method)
    expected = read_ref(ds, ref).loc[data.obs_names, "norm_factor"]
    assert rel_diff(data.obs["norm_factors"], expected).max() < 1e-12
    np.testing.assert_array_equal(data.obs["lib_size"], data.layers["counts"].sum(axis=1))


@pytest.mark.parity
@pytest.mark.parametrize("data", DATASETS, indirect=True)
def test_tmm_after_filter_by_expr_and_log_cpm(data, request):
    ds = request.node.callspec.params["data"]
    sub = _filtered(data, ds)
    bk.pp.norm_factors(sub)
    expected = read_ref(ds, "edger_tmm_filtered.csv.gz").loc[sub.obs_names, "norm_factor"]
    assert rel_diff(sub.obs["norm_factors"], expected).max() < 1e-12
    # cpm(y, log = TRUE, prior.count = 2): per-gene rows, so a subset of genes of the reference is valid
    bk.pp.normalize(sub, method="tmm", log=True)
    ref = read_ref(ds, "edger_logcpm_filtered.csv.gz")
    got = pd.DataFrame(sub.layers["log_tmm_cpm"].T, index=sub.var_names, columns=sub.obs_names).loc[ref.index, ref.columns]
    assert np.abs(got.to_numpy() - ref.to_numpy()).max() < 1e-12
    assert sub.uns["log_tmm_cpm"]["params"]["lib_size"] == "obs['lib_size']"


@pytest.mark.parity
@pytest.mark.parametrize("data", ["pasilla", "airway"], indirect=True)
def test_tmm_computed_on_the_fly_equals_stored(data, request):
    ds = request.node.callspec.params["data"]
    sub = _filtered(data, ds)
    bk.pp.normalize(sub, method="tmm", log=True, key_added="a")
    bk.pp.norm_factors(sub)
    bk.pp.normalize(sub, method="tmm", log=True, key_added="b")
    np.testing.assert_array_equal(sub.layers["a"], sub.layers["b"])
    assert sub.uns["a"]["params"]["norm_factors"] == "computed (TMM)"


@pytest.mark.parity
@pytest.mark.parametrize("data", ["pasilla", "airway"], indirect=True)
@pytest.mark.parametrize(
    ("column", "kwargs"),
    [
        ("TMMwsp", {"method": "TMMwsp"}),
        ("TMM_noweight", {"do_weighting": False}),
        ("TMM_ref3", {"ref_column": 2}),
        ("TMM_trim", {"logratio_trim": 0.2, "sum_trim": 0.1, "a_cutoff": -20}),
        ("uq_p90", {"method": "upperquartile", "p": 0.9}),
    ],
)
def test_norm_factors_options_match_edger(data, column, kwargs, request):
    ds = request.node.callspec.params["data"]
    bk.pp.norm_factors(data, **kwargs)
    expected = read_ref(ds, "edger_norm_factors_extra.csv.gz").loc[data.obs_names, column]
    assert rel_diff(data.obs["norm_factors"], expected).max() < 1e-12


def test_ref_column_by_name(pasilla):
    a = bk.pp.norm_factors(pasilla, ref_column=2, copy=True)
    b = bk.pp.norm_factors(pasilla, ref_column=str(pasilla.obs_names[2]), copy=True)
    np.testing.assert_array_equal(a.obs["norm_factors"], b.obs["norm_factors"])
    assert b.uns["norm_factors"]["params"]["ref_column"] == pasilla.obs_names[2]


def test_norm_factors_degenerate_cases(pasilla):
    one = pasilla[:1].copy()
    bk.pp.norm_factors(one)
    assert one.obs["norm_factors"].tolist() == [1.0]
    bk.pp.norm_factors(pasilla, method="none")
    assert (pasilla.obs["norm_factors"] == 1.0).all()
    # all-zero genes are ignored
    x = pasilla.layers["counts"].copy()
    padded = bk.io.read_counts(pd.DataFrame(np.hstack([x, np.zeros((7, 50))]).T, columns=pasilla.obs_names))
    bk.pp.norm_factors(padded)
    bk.pp.norm_factors(pasilla)
    np.testing.assert_array_equal(padded.obs["norm_factors"], pasilla.obs["norm_factors"])


def test_tmm_sparse_data_tmmwsp_and_identical_samples():
    rng = np.random.default_rng(0)
    x = rng.poisson(0.3, size=(4, 2000)).astype(float)
    ad = bk.io.read_counts(pd.DataFrame(x.T, columns=[f"s{i}" for i in range(4)]))
    bk.pp.norm_factors(ad, method="TMMwsp")
    f = ad.obs["norm_factors"].to_numpy()
    assert np.all(np.isfinite(f)) and abs(np.prod(f) - 1) < 1e-12
    same = bk.io.read_counts(pd.DataFrame(np.vstack([x[0], x[0]]).T, columns=["a", "b"]))
    bk.pp.norm_factors(same)
    np.testing.assert_allclose(same.obs["norm_factors"], 1.0, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------------
# normalised layers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("data", ["pasilla", "airway"], indirect=True)
def test_deseq2_normalized_counts(data, request):
    ds = request.node.callspec.params["data"]
    bk.pp.normalize(data, method="size_factors")  # computes ratio size factors
    ref = read_ref(ds, "deseq2_normalized_counts.csv.gz")
    got = pd.DataFrame(data.layers["normalized"].T, index=data.var_names, columns=data.obs_names).loc[ref.index, ref.columns]
    assert np.nanmax(rel_diff(got.to_numpy(), ref.to_numpy())) < 1e-12
    assert data.uns["normalized"]["params"]["factors"] == "computed (ratio)"
    bk.pp.size_factors(data, method="poscounts")
    bk.pp.normalize(data, method="size_factors", log=True, prior_count=1)
    sf = data.obs["size_factors"].to_numpy()[:, None]
    np.testing.assert_allclose(data.layers["log_normalized"], np.log2(data.layers["counts"] / sf + 1), rtol=1e-14)
    assert data.uns["log_normalized"]["params"]["factors"] == "obs['size_factors']"


def test_cpm_plain_and_log(pasilla):
    bk.pp.normalize(pasilla)
    x = pasilla.layers["counts"]
    lib = x.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pasilla.layers["cpm"], x / lib * 1e6, rtol=1e-14)
    np.testing.assert_allclose(pasilla.layers["cpm"].sum(axis=1), 1e6, rtol=1e-12)
    bk.pp.normalize(pasilla, log=True, prior_count=0.5)
    prior = 0.5 * lib / lib.mean()
    np.testing.assert_allclose(pasilla.layers["log_cpm"], np.log2((x + prior) / (lib + 2 * prior) * 1e6), rtol=0, atol=1e-12)


def test_tpm_from_var_and_layer_lengths(pasilla):
    rng = np.random.default_rng(1)
    length = rng.integers(200, 5000, pasilla.n_vars).astype(float)
    pasilla.var["Length"] = length  # as read_counts keeps featureCounts' column
    bk.pp.normalize(pasilla, method="tpm")
    rate = pasilla.layers["counts"] / length
    np.testing.assert_allclose(pasilla.layers["tpm"], rate / rate.sum(axis=1, keepdims=True) * 1e6, rtol=1e-13)
    assert pasilla.uns["tpm"]["params"]["lengths"] == "var['Length']"
    pasilla.layers["length"] = np.tile(length, (pasilla.n_obs, 1))
    bk.pp.normalize(pasilla, method="tpm", log=True, prior_count=1)
    np.testing.assert_allclose(pasilla.layers["log_tpm"], np.log2(pasilla.layers["tpm"] + 1), rtol=1e-13)
    assert pasilla.uns["log_tpm"]["params"]["lengths"] == "layers['length']"


# ------------------------------------------------------------------------------------------------
# z-scores and quantile normalisation
# ------------------------------------------------------------------------------------------------


def test_zscore(pasilla):
    bk.pp.normalize(pasilla, method="tmm", log=True, key_added="log_cpm")
    bk.pp.zscore(pasilla)
    x = pasilla.layers["log_cpm"]
    expected = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)
    np.testing.assert_allclose(pasilla.layers["zscore"], expected, rtol=1e-12)
    const = ad_module.AnnData(X=np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 3.0]]))
    bk.pp.zscore(const, layer=None)
    np.testing.assert_array_equal(const.layers["zscore"][:, 0], 0.0)
    np.testing.assert_allclose(const.layers["zscore"][:, 1], [-1.0, 1.0, 0.0])


@pytest.mark.parity
@pytest.mark.parametrize("data", ["pasilla", "airway"], indirect=True)
def test_quantile_normalize_matches_preprocesscore(data, request):
    # make_refs.R: normalize.quantiles(cpm(y, log = TRUE, prior.count = 3)) on the filtered TMM DGEList
    ds = request.node.callspec.params["data"]
    sub = _filtered(data, ds)
    bk.pp.normalize(sub, method="tmm", log=True, prior_count=3, key_added="log_cpm")
    bk.pp.quantile_normalize(sub)
    ref = read_ref(ds, "quantile_normalized_logcpm.csv.gz")
    got = pd.DataFrame(sub.layers["quantile"].T, index=sub.var_names, columns=sub.obs_names).loc[ref.index, ref.columns]
    assert np.abs(got.to_numpy() - ref.to_numpy()).max() < 1e-12


def _qn_ref(name):
    return pd.read_csv(FIXTURES / "normalize" / name, index_col=0).to_numpy(dtype=float)


@pytest.mark.parity
@pytest.mark.parametrize(("inp", "out"), [("qn_ties_input.csv.gz", "qn_ties_output.csv.gz"), ("qn_na_input.csv.gz", "qn_na_output.csv.gz")])
def test_quantile_normalize_ties_and_na(inp, out):
    # preprocessCore 1.60.2 normalize.quantiles on a 15 x 4 matrix of small integers (many ties, one .5
    # value) and the same with three NA
    x = _qn_ref(inp)
    ad = ad_module.AnnData(X=x.T.copy())
    bk.pp.quantile_normalize(ad, layer=None)
    np.testing.assert_allclose(ad.layers["quantile"], _qn_ref(out).T, rtol=0, atol=1e-13)
    assert np.array_equal(np.isnan(ad.layers["quantile"]), np.isnan(x.T))


# ------------------------------------------------------------------------------------------------
# slots, copy, h5ad
# ------------------------------------------------------------------------------------------------


def test_everything_roundtrips_h5ad(pasilla, tmp_h5ad):
    bk.pp.size_factors(pasilla)
    bk.pp.norm_factors(pasilla, ref_column=1)
    bk.pp.normalize(pasilla, method="tmm", log=True, key_added="log_cpm")
    bk.pp.normalize(pasilla, method="size_factors")
    bk.pp.zscore(pasilla)
    bk.pp.quantile_normalize(pasilla)
    back = roundtrip(pasilla, tmp_h5ad)
    assert_adata_equal(back, pasilla)
    for key in ("size_factors", "norm_factors", "log_cpm", "normalized", "zscore", "quantile"):
        assert dict(back.uns[key]["params"]).keys() == dict(pasilla.uns[key]["params"]).keys()
    assert back.uns["norm_factors"]["params"]["ref_column"] == pasilla.obs_names[1]
    ad = _salmon_adata()
    bk.pp.size_factors(ad)
    back = roundtrip(ad, tmp_h5ad)
    np.testing.assert_array_equal(back.layers["norm_factors"], ad.layers["norm_factors"])
    assert back.uns["size_factors"]["params"]["norm_factors_layer"] == "norm_factors"


def test_copy_returns_new_object(pasilla):
    before = pasilla.copy()
    out = bk.pp.norm_factors(pasilla, copy=True)
    assert out is not pasilla and "norm_factors" in out.obs
    assert_adata_equal(pasilla, before)
    assert bk.pp.size_factors(pasilla) is None
    out = bk.pp.normalize(pasilla, copy=True)
    assert "cpm" in out.layers and "cpm" not in pasilla.layers


# ------------------------------------------------------------------------------------------------
# bad input leaves the AnnData unchanged
# ------------------------------------------------------------------------------------------------


def _bad(adata, fn, exc, match, **kw):
    before = adata.copy()
    with pytest.raises(exc, match=match):
        fn(adata, **kw)
    assert_adata_equal(adata, before)


def test_bad_counts(pasilla):
    small = pasilla[:, :200].copy()
    neg = small.copy()
    neg.layers["counts"][0, 0] = -1
    nan = small.copy()
    nan.layers["counts"][0, 0] = np.nan
    logged = small.copy()
    logged.layers["counts"] = np.log2(small.layers["counts"] + 0.5)
    for fn in (bk.pp.size_factors, bk.pp.norm_factors, bk.pp.normalize):
        _bad(neg, fn, ValueError, "negative")
        _bad(nan, fn, ValueError, "non-finite")
        _bad(logged, fn, ValueError, "log-transformed")
        _bad(small, fn, KeyError, "available layers", layer="nope")
        _bad(small, fn, ValueError, "not supported", method="bogus")


def test_ratio_impossible_suggests_poscounts():
    x = np.array([[0, 5, 3], [4, 0, 2], [1, 1, 0]], dtype=float)
    ad = bk.io.read_counts(pd.DataFrame(x, index=["g1", "g2", "g3"], columns=["a", "b", "c"]))
    _bad(ad, bk.pp.size_factors, ValueError, "poscounts")
    _bad(ad, bk.pp.normalize, ValueError, "poscounts", method="size_factors")
    bk.pp.size_factors(ad, method="poscounts")
    assert np.all(np.isfinite(ad.obs["size_factors"]))


def test_bad_parameters(pasilla):
    _bad(pasilla, bk.pp.norm_factors, ValueError, "logratio_trim", logratio_trim=0.5)
    _bad(pasilla, bk.pp.norm_factors, ValueError, "sum_trim", sum_trim=-0.1)
    _bad(pasilla, bk.pp.norm_factors, ValueError, "p must be", p=1.0)
    _bad(pasilla, bk.pp.norm_factors, TypeError, "do_weighting", do_weighting="yes")
    _bad(pasilla, bk.pp.norm_factors, KeyError, "not a sample name", ref_column="nope")
    _bad(pasilla, bk.pp.norm_factors, ValueError, "sample index", ref_column=7)
    _bad(pasilla, bk.pp.norm_factors, ValueError, "lib_size", key_added="lib_size")
    _bad(pasilla, bk.pp.norm_factors, ValueError, "'/'", key_added="a/b")
    _bad(pasilla, bk.pp.size_factors, KeyError, "not a var column", control_genes="nope")
    _bad(pasilla, bk.pp.size_factors, KeyError, "not in var_names", control_genes=["nope"])
    _bad(pasilla, bk.pp.size_factors, ValueError, "iterate", method="iterate", control_genes=list(pasilla.var_names[:10]))
    _bad(pasilla, bk.pp.normalize, ValueError, "prior_count", prior_count=-1)
    _bad(pasilla, bk.pp.normalize, ValueError, "overwrite", key_added="counts")
    _bad(pasilla, bk.pp.normalize, TypeError, "copy", copy="no")
    _bad(pasilla, bk.pp.zscore, KeyError, "log_cpm")
    _bad(pasilla, bk.pp.quantile_normalize, ValueError, "overwrite", layer="counts", key_added="counts")


def test_tpm_without_lengths(pasilla):
    _bad(pasilla, bk.pp.normalize, KeyError, "lengths", method="tpm")
    _bad(pasilla, bk.pp.normalize, KeyError, "neither a layer", method="tpm", length_key="nope")
    pasilla.var["length"] = 0.0
    _bad(pasilla, bk.pp.normalize, ValueError, "positive", method="tpm")


def test_bad_length_layer_and_zero_samples(pasilla):
    ad = pasilla[:, :300].copy()
    ad.layers["length"] = np.zeros(ad.shape)
    _bad(ad, bk.pp.size_factors, ValueError, "use_lengths=False")
    z = pasilla[:, :300].copy()
    z.layers["counts"][2] = 0
    _bad(z, bk.pp.norm_factors, ValueError, "no counts")
    _bad(z, bk.pp.normalize, ValueError, "no counts")
    _bad(z, bk.pp.normalize, ValueError, "no counts", method="tmm")


def test_bad_expression_layers(pasilla):
    bk.pp.normalize(pasilla, log=True)
    pasilla.layers["log_cpm"][0, 0] = np.inf
    _bad(pasilla, bk.pp.zscore, ValueError, "non-finite")
    _bad(pasilla, bk.pp.quantile_normalize, ValueError, "infinite")
    one = pasilla[:1].copy()
    one.layers["log_cpm"][0, 0] = 0.0
    _bad(one, bk.pp.zscore, ValueError, "two samples")
    _bad(one, bk.pp.quantile_normalize, ValueError, "two samples")


def test_sparse_and_integer_counts_give_the_same_results(pasilla):
    from scipy import sparse

    sp = pasilla.copy()
    sp.layers["counts"] = sparse.csr_matrix(pasilla.layers["counts"])
    it = pasilla.copy()
    it.layers["counts"] = pasilla.layers["counts"].astype(np.int64)
    for ad in (pasilla, sp, it):
        bk.pp.norm_factors(ad)
        bk.pp.size_factors(ad, method="poscounts")
        bk.pp.normalize(ad, method="tmm", log=True)
    for ad in (sp, it):
        np.testing.assert_array_equal(ad.obs["norm_factors"], pasilla.obs["norm_factors"])
        np.testing.assert_array_equal(ad.obs["size_factors"], pasilla.obs["size_factors"])
        np.testing.assert_array_equal(ad.layers["log_tmm_cpm"], pasilla.layers["log_tmm_cpm"])


@settings(max_examples=200, deadline=None)
@given(
    vals=st.lists(st.integers(-4, 4), min_size=0, max_size=40),
    trim=st.sampled_from([0.0, 0.05, 0.3, 0.45]),
    drop=st.integers(0, 5),
)
def test_tmm_rank_window_equals_average_ranks(vals, trim, drop):
    # TMM keeps genes whose average rank (ties averaged) lies in [lo, hi]; the kernel decides it
    # with two selections instead of a sort
    from scipy.stats import rankdata

    from bulkpy._stats.normalization import _rank_window

    v = np.asarray(vals, dtype=np.float64) / 2.0
    idx = np.arange(v.size)[drop:]  # the first `drop` values are not among the ranked ones
    lo = np.floor(idx.size * trim) + 1
    hi = idx.size + 1 - lo
    out = np.zeros(v.size, dtype=bool)
    _rank_window(v, idx, float(lo), float(hi), out)
    r = rankdata(v[idx]) if idx.size else np.array([])
    expected = np.zeros(v.size, dtype=bool)
    expected[idx] = (r >= lo) & (r <= hi)
    np.testing.assert_array_equal(out, expected)
