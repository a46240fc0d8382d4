"""Dask scale-out of the DE functions other than DESeq2 (issue 15): ``bk.tl.edger``, ``bk.tl.voom``,
``bk.tl.limma`` and ``bk.tl.rank_test`` on a dask-backed layer run block by block of genes.

Each function is run on every array type of ``dask_helpers.ARRAY_TYPES`` and compared with the
in-memory result: bitwise for genes chunked with every sample (the per-gene arithmetic is the same
and the global steps see the same per-gene vectors), within 1e-10 (relative) otherwise. The
:class:`~dask_helpers.CountingScheduler` holds each function to the number of passes its docstring
declares and checks that nothing samples × genes is gathered.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
from dask_helpers import ARRAY_TYPES, DASK_TYPES, as_array_type, counted, is_dask
from helpers import assert_adata_equal

import bulkpy as bk


def _tables_equal(got, want, kind, *, rtol=1e-10, exact=True):
    """Every varm table, var column and obs column of ``want``'s result, in ``got``."""
    for k in want.varm:
        a, b = got.varm[k], want.varm[k]
        assert list(a.columns) == list(b.columns), k
        for c in b.columns:
            _close(a[c].to_numpy(), b[c].to_numpy(), kind, rtol, exact, f"varm[{k}][{c}]")
    for frame, name in ((got.var, "var"), (got.obs, "obs")):
        ref = want.var if name == "var" else want.obs
        for c in ref.columns:
            if pd.api.types.is_float_dtype(ref[c]):
                _close(frame[c].to_numpy(), ref[c].to_numpy(), kind, rtol, exact, f"{name}[{c}]")


def _close(a, b, kind, rtol, exact, what):
    if kind == "dask_genes" and exact:
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0, equal_nan=True, err_msg=what)


def _as(adata, layer, kind, **kw):
    ad = adata.copy()
    ad.layers[layer] = as_array_type(np.asarray(ad.layers[layer] if layer else ad.X, dtype=np.float64), kind, **kw)
    return ad




def _gathered_nothing(sched, ad) -> None:
    """The largest array a computation returned is far below the samples × genes matrix."""
    n, g = ad.shape
    assert sched.largest < n * g * 8 / 5, (sched.largest, n * g * 8)


@pytest.fixture(scope="module")
def many():
    """Pasilla's samples resampled (Poisson) 20 times: 140 samples × 2,000 genes. Dask inputs have
    more samples than per-gene results have columns (edgeR's 21 dispersion grid points), so the
    pass-counting tests can tell per-gene results from a gathered matrix; with fewer samples a
    block's per-gene results can outweigh its counts."""
    import anndata

    ad = bk.datasets.pasilla()
    X = np.asarray(ad.layers["counts"], dtype=np.float64)
    X = X[:, np.argsort(-X.sum(axis=0), kind="stable")[:2000]]
    rng = np.random.default_rng(0)
    obs = pd.concat([ad.obs] * 20)
    obs.index = [f"s{i}" for i in range(obs.shape[0])]
    out = anndata.AnnData(obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(X.shape[1])]))
    out.layers["counts"] = rng.poisson(np.tile(X, (20, 1))).astype(np.float64)
    bk.pp.normalize(out, method="tmm", log=True)
    return out


@pytest.fixture
def pasilla_tmm(pasilla):
    bk.pp.normalize(pasilla, method="tmm", log=True)
    return pasilla


# --------------------------------------------------------------------------------------------
# rank_test
# --------------------------------------------------------------------------------------------
_RANK = dict(groupby="condition", group="treated", reference="untreated", layer="log_tmm_cpm")


@pytest.mark.parametrize("kind", ARRAY_TYPES)
@pytest.mark.parametrize("test", ["wilcoxon", "t-test"])
def test_rank_test_any_array_type(pasilla_tmm, kind, test):
    want = pasilla_tmm.copy()
    bk.tl.rank_test(want, test=test, **_RANK)
    got = _as(pasilla_tmm, "log_tmm_cpm", kind)
    bk.tl.rank_test(got, test=test, **_RANK)
    _tables_equal(got, want, kind)
    assert got.uns["rank_test"]["params"]["log_scale"] is True


def test_rank_test_passes(many):
    ad = _as(many, "log_tmm_cpm", "dask_genes")
    ad.uns.pop("log_tmm_cpm", None)  # no stored parameters: the log scale is guessed from the summary pass
    sched = counted(bk.tl.rank_test, ad, **_RANK)
    assert sched.computes <= 2  # the docstring: two passes
    _gathered_nothing(sched, ad)
    assert ad.uns["rank_test"]["params"]["log_scale"] is True


# --------------------------------------------------------------------------------------------
# limma
# --------------------------------------------------------------------------------------------
_DESIGN = "~ type + condition"
_CONTRAST = ["condition", "treated", "untreated"]


@pytest.fixture
def pasilla_logcpm(pasilla):
    ad = pasilla[:, np.asarray(pasilla.layers["counts"]).sum(axis=0) >= 20].copy()
    bk.pp.normalize(ad, method="tmm", log=True)
    return ad


@pytest.mark.parametrize("kind", ARRAY_TYPES)
def test_limma_any_array_type(pasilla_logcpm, kind):
    kw = dict(design=_DESIGN, contrast=_CONTRAST, ftest="all", layer="log_tmm_cpm", trend=True)
    want = pasilla_logcpm.copy()
    bk.tl.limma(want, **kw)
    got = _as(pasilla_logcpm, "log_tmm_cpm", kind)
    bk.tl.limma(got, **kw)
    _tables_equal(got, want, kind)


@pytest.mark.parametrize("kind", DASK_TYPES)
def test_limma_missing_values_and_sample_weights(pasilla_logcpm, kind):
    ad = pasilla_logcpm
    E = np.asarray(ad.layers["log_tmm_cpm"]).copy()
    E[np.random.default_rng(0).random(E.shape) < 0.01] = np.nan
    ad.layers["E"] = E
    ad.obs["w"] = np.linspace(0.5, 1.5, ad.n_obs)
    kw = dict(design=_DESIGN, contrast=_CONTRAST, layer="E", weights="w", robust=True)
    want = ad.copy()
    bk.tl.limma(want, **kw)
    got = _as(ad, "E", kind)
    bk.tl.limma(got, **kw)
    # not bitwise: genes sharing a pattern of missing values are fitted by one BLAS product per block,
    # and BLAS rounds the edge rows of products of other widths differently (1 ulp in a few genes)
    _tables_equal(got, want, kind, exact=False)


def test_limma_passes(many):
    ad = _as(many, "log_tmm_cpm", "dask_genes")
    sched = counted(bk.tl.limma, ad, design=_DESIGN, contrast=_CONTRAST, layer="log_tmm_cpm")
    assert sched.computes <= 2  # the docstring: two passes
    _gathered_nothing(sched, ad)


def test_limma_refusals_leave_adata_untouched(pasilla_logcpm):
    ad = _as(pasilla_logcpm, "log_tmm_cpm", "dask_genes")
    before = ad.copy()
    with pytest.raises(ValueError, match="needs the matrix in memory"):
        bk.tl.limma(ad, design=_DESIGN, contrast=_CONTRAST, layer="log_tmm_cpm", sample_weights=True)
    E = np.asarray(pasilla_logcpm.layers["log_tmm_cpm"]).copy()
    E[0, 3] = -np.inf
    ad.layers["bad"] = as_array_type(E, "dask_genes")
    before.layers["bad"] = ad.layers["bad"]
    with pytest.raises(ValueError, match="1 infinite values"):
        bk.tl.limma(ad, design=_DESIGN, contrast=_CONTRAST, layer="bad")
    assert_adata_equal(ad, before)


# --------------------------------------------------------------------------------------------
# voom
# --------------------------------------------------------------------------------------------
@pytest.fixture
def pasilla_kept(pasilla):
    return pasilla[:, np.asarray(pasilla.layers["counts"]).sum(axis=0) >= 20].copy()


@pytest.mark.parametrize("kind", ARRAY_TYPES)
def test_voom_any_array_type(pasilla_kept, kind):
    pasilla_kept.obs["nf"] = np.linspace(0.9, 1.1, pasilla_kept.n_obs)
    kw = dict(design=_DESIGN, contrast=_CONTRAST, norm="none", norm_factors_key="nf")
    want = pasilla_kept.copy()
    bk.tl.voom(want, **kw)
    got = _as(pasilla_kept, "counts", kind)
    bk.tl.voom(got, **kw)
    _tables_equal(got, want, kind)
    for k in ("voom_E", "voom_weights"):
        assert is_dask(got.layers[k]) == kind.startswith("dask")
        _close(np.asarray(got.layers[k]), want.layers[k], kind, 1e-10, True, k)
    if kind == "dask_genes":
        np.testing.assert_array_equal(got.uns["voom"]["trend"]["y"], want.uns["voom"]["trend"]["y"])


def test_voom_passes_lazy_layers_and_limma_on_them(many):
    want = many.copy()
    bk.tl.voom(want, design=_DESIGN, contrast=_CONTRAST)
    ad = _as(many, "counts", "dask_genes")
    sched = counted(bk.tl.voom, ad, design=_DESIGN, contrast=_CONTRAST)
    assert sched.computes <= 6  # the docstring: four passes, and two for TMM
    _gathered_nothing(sched, ad)
    assert is_dask(ad.layers["voom_E"]) and is_dask(ad.layers["voom_weights"])
    _tables_equal(ad, want, "dask_genes")
    # limma on voom's lazy layers reproduces voom's tables (two more passes: the check of E and the fit)
    sched = counted(
        bk.tl.limma, ad, design=_DESIGN, contrast=_CONTRAST, layer="voom_E", weights="voom_weights", key_added="again"
    )
    assert sched.computes <= 3
    again, voom = ad.varm["again_treated_vs_untreated"], ad.varm["voom_treated_vs_untreated"]
    np.testing.assert_array_equal(again["pvalue"], voom["pvalue"])


# --------------------------------------------------------------------------------------------
# edgeR
# --------------------------------------------------------------------------------------------
def _r_current(name):
    from conftest import shared_path

    return pd.read_csv(shared_path("pasilla", "r_current", name), index_col=0)


@pytest.fixture(scope="module")
def edger_pasilla():
    """Pasilla filtered as R's filterByExpr, untreated as the reference level (as the R
    references), with the in-memory edgeR 4 QL result."""
    ad = bk.datasets.pasilla()
    keep = _r_current("edger_filter_by_expr.csv.gz")["keep"].astype(bool)
    ad = ad[:, ad.var_names.isin(keep.index[keep.to_numpy()])].copy()
    ad.obs["condition"] = pd.Categorical(ad.obs["condition"].astype(str), categories=["untreated", "treated"])
    want = ad.copy()
    bk.tl.edger(want, design=_DESIGN, contrast=_CONTRAST)
    return ad, want


@pytest.mark.parametrize("kind", ARRAY_TYPES)
def test_edger_ql_any_array_type(edger_pasilla, kind):
    ad, want = edger_pasilla
    got = _as(ad, "counts", kind)
    bk.tl.edger(got, design=_DESIGN, contrast=_CONTRAST)
    _tables_equal(got, want, kind)
    assert got.uns["edger"]["params"]["n_genes_tested"] == want.uns["edger"]["params"]["n_genes_tested"]


def test_edger_dask_matches_r(edger_pasilla):
    # the tolerances of test_tl_edger.py's edgeR 4.10.7 parity (observed ~3e-9 / 9e-10 there)
    ad, _ = edger_pasilla
    got = _as(ad, "counts", "dask_genes")
    bk.tl.edger(got, design=_DESIGN, contrast=_CONTRAST)
    ours = bk.get.de_df(got, "edger")
    ref = _r_current("edger_qlf.csv.gz").loc[got.var_names]
    ok = ~np.isnan(ref["PValue"].to_numpy())
    lp = [np.log10(np.maximum(v.to_numpy()[ok], 1e-300)) for v in (ours["pvalue"], ref["PValue"])]
    assert np.percentile(np.abs(lp[0] - lp[1]), 99) < 1e-7
    assert np.percentile(np.abs(ours["log2FoldChange"].to_numpy()[ok] - ref["logFC"].to_numpy()[ok]), 99) < 1e-7
    assert set(ours.index[ours["padj"] < 0.05]) == set(ref.index[ref["FDR"] < 0.05])
    common = _r_current("edger_common_dispersion.csv.gz").iloc[0, 0]
    assert abs(got.uns["edger"]["params"]["common_dispersion"] / common - 1) < 1e-8


@pytest.mark.parametrize(
    "kw",
    [
        dict(test="LRT"), dict(test="LRT", lfc=0.585), dict(lfc=0.585, robust=True), dict(mask_var="m", norm="RLE"),
        dict(legacy=True), dict(legacy=True, lfc=0.585, treat_null="worst.case"), dict(legacy=True, robust=True),
        dict(test="exact", design="~ condition"), dict(test="exact", design="~ condition", robust=True, mask_var="m"),
    ],
    ids=[
        "lrt", "lrt_treat", "ql_treat_robust", "mask_rle", "legacy", "legacy_treat", "legacy_robust", "exact",
        "exact_robust_mask",
    ],
)
def test_edger_routes_on_dask(pasilla_kept, kw):
    ad = pasilla_kept[:, :3000].copy()
    ad.var["m"] = np.asarray(ad.layers["counts"]).sum(axis=0) >= 50
    kw = {"design": _DESIGN, **kw}
    want = ad.copy()
    bk.tl.edger(want, contrast=_CONTRAST, **kw)
    got = _as(ad, "counts", "dask_genes")
    bk.tl.edger(got, contrast=_CONTRAST, **kw)
    _tables_equal(got, want, "dask_genes")


@pytest.mark.parametrize(
    "kw,bound",
    [(dict(), 30), (dict(test="LRT"), 8), (dict(legacy=True), 9), (dict(test="exact", design="~ condition"), 32)],
    ids=["QL", "LRT", "legacy", "exact"],
)
def test_edger_passes(many, kw, bound):
    # the docstring: about 25 (QL: 24 here, 13 of them R's optimize), 8 (LRT), 9 (legacy), about 27 (exact)
    # the exact test's pseudo-counts are recomputed in each of its ~15 optimize passes: fewer genes
    ad = _as(many[:, :400] if kw.get("test") == "exact" else many, "counts", "dask_genes")
    sched = counted(bk.tl.edger, ad, contrast=_CONTRAST, **{"design": _DESIGN, **kw})
    assert sched.computes <= bound
    _gathered_nothing(sched, ad)


def test_edger_refusals_leave_adata_untouched(edger_pasilla):
    ad = _as(edger_pasilla[0], "counts", "dask_genes")
    before = ad.copy()
    ad.layers["length"] = before.layers["length"] = np.full(ad.shape, 1000.0)
    with pytest.raises(ValueError, match="not available on a dask layer"):
        bk.tl.edger(ad, design=_DESIGN, contrast=_CONTRAST, lengths="length")
    bad = np.asarray(edger_pasilla[0].layers["counts"], dtype=np.float64).copy()
    bad[1, 2] = -1
    ad.layers["bad"] = before.layers["bad"] = as_array_type(bad, "dask_genes")
    with pytest.raises(ValueError, match="negative"):
        bk.tl.edger(ad, design=_DESIGN, contrast=_CONTRAST, layer="bad")
    assert_adata_equal(ad, before)


# --------------------------------------------------------------------------------------------
# schedulers: the compiled kernels (numba, parallel=True) run on one thread inside each task
# --------------------------------------------------------------------------------------------
def _small_edger(pasilla_kept):
    ad = pasilla_kept[:, :2000].copy()
    want = ad.copy()
    bk.tl.edger(want, design=_DESIGN, contrast=_CONTRAST)
    return _as(ad, "counts", "dask_genes", gene_chunk=250), want


def test_threaded_scheduler_same_numbers(pasilla_kept):
    got, want = _small_edger(pasilla_kept)
    with dask.config.set(scheduler="threads", num_workers=2):
        bk.tl.edger(got, design=_DESIGN, contrast=_CONTRAST)
    _tables_equal(got, want, "dask_genes")


@pytest.mark.slow
def test_distributed_local_cluster_same_numbers(pasilla_kept):
    distributed = pytest.importorskip("distributed")
    got, want = _small_edger(pasilla_kept)
    limma_want = got.copy()
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster),
    ):
        bk.tl.edger(got, design=_DESIGN, contrast=_CONTRAST)
        bk.tl.voom(got, design=_DESIGN, contrast=_CONTRAST)
        E = got.layers["voom_E"].compute()
    key = "edger_treated_vs_untreated"
    for c in want.varm[key].columns:
        np.testing.assert_array_equal(got.varm[key][c], want.varm[key][c])
    bk.tl.voom(limma_want, design=_DESIGN, contrast=_CONTRAST)  # the same dask input on the local scheduler
    np.testing.assert_array_equal(E, np.asarray(limma_want.layers["voom_E"]))
    key = "voom_treated_vs_untreated"
    np.testing.assert_array_equal(got.varm[key]["pvalue"], limma_want.varm[key]["pvalue"])


# --------------------------------------------------------------------------------------------
# repeated measures (block=): duplicateCorrelation's per-gene correlations in one pass
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def airway_kept():
    ad = bk.datasets.airway()
    return ad[:, np.asarray(ad.layers["counts"]).sum(axis=0) >= 200][:, :3000].copy()


@pytest.mark.parametrize("kind", DASK_TYPES)
def test_voom_and_limma_with_block_on_dask(airway_kept, kind):
    kw = dict(design="~ dex", contrast=["dex", "trt", "untrt"], block="cell")
    want = airway_kept.copy()
    bk.tl.voom(want, **kw)
    bk.tl.limma(want, layer="voom_E", weights="voom_weights", key_added="lim", **kw)
    got = _as(airway_kept, "counts", kind)
    sched = counted(bk.tl.voom, got, **kw)
    assert sched.computes <= 9  # the docstring: 4 + 2 (TMM) + 3 (block)
    bk.tl.limma(got, layer="voom_E", weights="voom_weights", key_added="lim", **kw)
    _tables_equal(got, want, kind)
    for key in ("voom", "lim"):
        assert got.uns[key]["params"]["correlation"] == pytest.approx(want.uns[key]["params"]["correlation"], rel=1e-12)


def test_lazy_voom_layers_write_h5ad(pasilla_kept, tmp_path):
    ad = _as(pasilla_kept[:, :500], "counts", "dask_genes")
    bk.tl.voom(ad, design=_DESIGN, contrast=_CONTRAST)
    path = tmp_path / "voom.h5ad"
    ad.write_h5ad(path)  # the lazy layers are computed chunk by chunk as they are written
    back = __import__("anndata").read_h5ad(path)
    np.testing.assert_array_equal(back.layers["voom_weights"], np.asarray(ad.layers["voom_weights"]))
    pd.testing.assert_frame_equal(back.varm["voom_treated_vs_untreated"], ad.varm["voom_treated_vs_untreated"])


def test_voom_and_rank_test_refusals_leave_adata_untouched(pasilla_tmm):
    ad = _as(pasilla_tmm, "counts", "dask_genes")
    E = np.asarray(pasilla_tmm.layers["log_tmm_cpm"]).copy()
    E[2, 5] = np.nan
    ad.layers["nan"] = as_array_type(E, "dask_samples")
    before = ad.copy()
    with pytest.raises(ValueError, match="needs the matrix in memory"):
        bk.tl.voom(ad, design=_DESIGN, contrast=_CONTRAST, sample_weights=True)
    with pytest.raises(ValueError, match="1 missing or infinite values"):
        bk.tl.rank_test(ad, **{**_RANK, "layer": "nan"})
    assert_adata_equal(ad, before)


@pytest.mark.parametrize("kind", ["dask_genes", "dask_2d"])
def test_voom_offset_layer_on_dask(pasilla_kept, kind):
    ad = pasilla_kept[:, :2000].copy()
    ad.layers["off"] = np.random.default_rng(1).normal(0, 0.2, ad.shape)
    kw = dict(design=_DESIGN, contrast=_CONTRAST, offset="off")
    want = ad.copy()
    bk.tl.voom(want, **kw)
    got = _as(_as(ad, "counts", kind), "off", kind)
    bk.tl.voom(got, **kw)
    _tables_equal(got, want, kind)
    _close(np.asarray(got.layers["voom_weights"]), want.layers["voom_weights"], kind, 1e-10, True, "weights")


def test_voom_dask_matches_r(edger_pasilla):
    # voom with R's TMM factors against limma 3.68.5's voom + eBayes, test_tl_limma.py's tolerances
    # (max relative difference 1e-8, 99th percentile 1e-10; observed ~6e-10 / 1e-12 there)
    from conftest import read_ref
    from helpers import rel_diff

    ad = _as(edger_pasilla[0], "counts", "dask_genes")
    ad.obs["r_nf"] = read_ref("pasilla", "edger_tmm_filtered.csv.gz").loc[ad.obs_names, "norm_factor"].to_numpy()
    bk.tl.voom(ad, design=_DESIGN, contrast=_CONTRAST, norm="none", norm_factors_key="r_nf")
    tt = _r_current("limma_voom_toptable.csv.gz")
    ours = bk.get.de_df(ad, "voom").loc[tt.index]
    for r_col, col in {"logFC": "log2FoldChange", "t": "stat", "P.Value": "pvalue", "AveExpr": "AveExpr"}.items():
        r = rel_diff(ours[col], tt[r_col])
        r = r[np.isfinite(r)]
        assert r.max() < 1e-8 and np.percentile(r, 99) < 1e-10, (r_col, r.max())
