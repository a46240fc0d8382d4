"""Dask scale-out of the preprocessing functions (issue 15): ``bk.pp.qc_metrics``,
``filter_by_expr``, ``size_factors``, ``norm_factors``, ``normalize``, ``vst`` and ``pseudobulk`` on
a dask-backed layer run chunk by chunk.

Each function runs on every array type of ``dask_helpers.ARRAY_TYPES`` (real data: pasilla, airway)
and is compared with the in-memory result: bitwise for the in-memory types and for genes chunked
with every sample, within 1e-10 (relative) for the other layouts (in practice they are bitwise
too: the per-sample steps read whole rows). Samples × genes results must stay lazy dask arrays; the
:class:`~dask_helpers.CountingScheduler` holds each call to the passes (``dask.compute`` calls) its
docstring declares and checks that nothing bigger than one value per gene reaches the client.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
from conftest import read_ref
from dask_helpers import ARRAY_TYPES, DASK_TYPES, CountingScheduler, as_array_type, counted, is_dask
from helpers import assert_adata_equal, rel_diff
from scipy import sparse

import bulkpy as bk
from bulkpy import _validate


@pytest.fixture(autouse=True)
def _fresh_checks(monkeypatch):
    """Forget the remembered count checks, so every call's first pass is counted."""
    monkeypatch.setattr(_validate, "_DASK_SUMMARIES", {})


def _as(adata, kind, layer="counts", **kw):
    adata.layers[layer] = as_array_type(np.asarray(adata.layers[layer], dtype=np.float64), kind, **kw)
    return adata




def _value(x):
    if is_dask(x):
        x = x.compute()
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _close(got, want, kind, what=""):
    got, want = _value(got), _value(want)
    if kind in ("numpy", "csr", "dask_genes"):
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=0, equal_nan=True, err_msg=what)


def _same_results(got, want, kind, *, layers=()):
    """Every numeric obs/var column and the named layers of ``want`` in ``got``; the layers are
    lazy dask arrays when the input is."""
    for frame, ref in ((got.obs, want.obs), (got.var, want.var)):
        for c in ref.columns:
            if pd.api.types.is_numeric_dtype(ref[c]) or pd.api.types.is_bool_dtype(ref[c]):
                _close(frame[c].to_numpy(), ref[c].to_numpy(), kind, c)
    for k in layers:
        assert is_dask(got.layers[k]) == kind.startswith("dask"), k
        _close(got.layers[k], want.layers[k], kind, k)


def _small(sched, adata, passes):
    """At most ``passes`` computations, none returning more than one float64 per gene (far below
    the samples × genes matrix)."""
    assert sched.computes <= passes, sched.computes
    assert sched.largest <= 8 * adata.n_vars < adata.n_obs * adata.n_vars * 8 / 4, sched.largest


def _run_both(adata, kind, fn, **kw):
    want = adata.copy()
    fn(want, **kw)
    got = _as(adata.copy(), kind)
    return got, want, counted(fn, got, **kw)


# ------------------------------------------------------------------------------------------------
# the functions, every array type
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ARRAY_TYPES)
def test_qc_metrics(pasilla, kind):
    pasilla.var["first"] = np.arange(pasilla.n_vars) < 300
    kw = {"top_n": (5, 50, 20_000), "qc_vars": ["first"]}
    got, want, sched = _run_both(pasilla, kind, bk.pp.qc_metrics, **kw)
    _same_results(got, want, kind)
    assert (got.obs["pct_counts_top_20000"] == 100).all()
    if kind.startswith("dask"):
        _small(sched, got, 2)  # docstring: 2 passes


@pytest.mark.parametrize("kind", ARRAY_TYPES)
def test_filter_by_expr(pasilla, kind):
    got, want, sched = _run_both(pasilla, kind, bk.pp.filter_by_expr, design="~ type + condition")
    _same_results(got, want, kind)
    keep = read_ref("pasilla", "edger_filter_by_expr.csv.gz")["keep"].astype(bool)
    assert set(got.var_names[got.var["filter_by_expr"]]) == set(keep.index[keep.to_numpy()])
    if kind.startswith("dask"):
        _small(sched, got, 3)
        lib = got.layers["counts"].sum(axis=1).compute()
        _small(counted(bk.pp.filter_by_expr, got, group="condition", lib_size=lib, key_added="f2"), got, 1)


@pytest.mark.parametrize("kind", ARRAY_TYPES)
@pytest.mark.parametrize(("method", "ref"), [("ratio", "deseq2_size_factors.csv.gz"), ("poscounts", "deseq2_size_factors_poscounts.csv.gz")])
def test_size_factors(airway, kind, method, ref):
    got, want, sched = _run_both(airway, kind, bk.pp.size_factors, method=method)
    _same_results(got, want, kind)
    expected = read_ref("airway", ref).loc[got.obs_names, "size_factor"]
    assert rel_diff(got.obs["size_factors"], expected).max() < 1e-12  # as test_pp_normalize
    if kind.startswith("dask"):
        _small(sched, got, 3)


@pytest.mark.parametrize("kind", ARRAY_TYPES)
def test_size_factors_control_genes_and_lengths(pasilla, kind):
    rng = np.random.default_rng(1)
    pasilla.layers["length"] = rng.uniform(300.0, 5000.0, pasilla.shape)
    pasilla.var["ctrl"] = np.arange(pasilla.n_vars) % 3 == 0
    for kw in ({"control_genes": "ctrl", "use_lengths": False, "key_added": "sf_ctrl"}, {"method": "poscounts"}, {}):
        got, want, sched = _run_both(pasilla, kind, bk.pp.size_factors, **kw)
        _same_results(got, want, kind, layers=["norm_factors"] if "use_lengths" not in kw else [])
        if kind.startswith("dask"):
            _small(sched, got, 3)
    # a dask length layer with in-memory counts: the factors are lazy too
    if kind.startswith("dask"):
        mixed = pasilla.copy()
        mixed = _as(mixed, kind, layer="length")
        bk.pp.size_factors(mixed)
        bk.pp.size_factors(pasilla)
        assert is_dask(mixed.layers["norm_factors"])
        _close(mixed.layers["norm_factors"], pasilla.layers["norm_factors"], kind)


@pytest.mark.parametrize("kind", ARRAY_TYPES)
@pytest.mark.parametrize(
    ("method", "kw", "passes"),
    [("TMM", {}, 4), ("TMMwsp", {}, 4), ("TMM", {"ref_column": 3}, 3), ("RLE", {}, 4), ("upperquartile", {}, 3), ("none", {}, 2)],
)
def test_norm_factors(pasilla, kind, method, kw, passes):
    got, want, sched = _run_both(pasilla, kind, bk.pp.norm_factors, method=method, **kw)
    _same_results(got, want, kind)
    if kind.startswith("dask"):
        _small(sched, got, passes)


@pytest.mark.parametrize("kind", DASK_TYPES)
@pytest.mark.parametrize(("method", "ref"), [("TMM", "edger_tmm_all_genes.csv.gz"), ("RLE", "edger_rle_all_genes.csv.gz")])
def test_norm_factors_match_edger(airway, kind, method, ref):
    _as(airway, kind)
    bk.pp.norm_factors(airway, method=method)
    expected = read_ref("airway", ref).loc[airway.obs_names, "norm_factor"]
    assert rel_diff(airway.obs["norm_factors"], expected).max() < 1e-12  # as test_pp_normalize


@pytest.mark.parametrize("kind", ARRAY_TYPES)
@pytest.mark.parametrize(
    ("kw", "passes"),
    [
        ({"method": "cpm"}, 2),
        ({"method": "cpm", "log": True}, 2),
        ({"method": "tmm", "log": True}, 4),
        ({"method": "size_factors", "log": True}, 3),
        ({"method": "tpm", "log": True}, 2),
    ],
)
def test_normalize(pasilla, kind, kw, passes):
    pasilla.var["length"] = 100.0 + np.arange(pasilla.n_vars) % 977
    got, want, sched = _run_both(pasilla, kind, bk.pp.normalize, **kw)
    key = next(k for k in want.layers if k != "counts")
    _same_results(got, want, kind, layers=[key])
    if kind.startswith("dask"):
        _small(sched, got, passes)


@pytest.mark.parametrize("kind", DASK_TYPES)
def test_normalize_with_stored_factors(pasilla, kind):
    """Stored factors cost no pass beyond the check; a lazy factor layer one more (its check)."""
    rng = np.random.default_rng(2)
    pasilla.layers["length"] = rng.uniform(300.0, 5000.0, pasilla.shape)
    want = pasilla.copy()
    got = _as(pasilla, kind)
    for ad in (want, got):
        bk.pp.norm_factors(ad)
        bk.pp.size_factors(ad)  # with lengths: layers["norm_factors"], lazy for dask
    assert is_dask(got.layers["norm_factors"])
    for kw, passes in (({"method": "tmm"}, 1), ({"method": "size_factors"}, 2), ({"method": "tpm", "key_added": "tpm_len"}, 2)):
        bk.pp.normalize(want, **kw)
        _validate._DASK_SUMMARIES.clear()
        _small(counted(bk.pp.normalize, got, **kw), got, passes)
    _same_results(got, want, kind, layers=["tmm_cpm", "normalized", "tpm_len"])


def test_lazy_layer_is_written_chunk_by_chunk(pasilla, tmp_h5ad):
    _as(pasilla, "dask_genes", gene_chunk=2000)
    bk.pp.normalize(pasilla, method="tmm", log=True)
    assert is_dask(pasilla.layers["log_tmm_cpm"])
    pasilla.write_h5ad(tmp_h5ad)  # anndata stores a dask layer chunk by chunk
    import anndata as ad

    back = ad.read_h5ad(tmp_h5ad)
    want = bk.datasets.pasilla()
    bk.pp.normalize(want, method="tmm", log=True)
    np.testing.assert_array_equal(back.layers["log_tmm_cpm"], want.layers["log_tmm_cpm"])


@pytest.mark.parametrize("kind", ARRAY_TYPES)
@pytest.mark.parametrize(("kw", "passes"), [({}, 4), ({"fit_type": "local"}, 4), ({"fit_type": "mean"}, 4)])
def test_vst(pasilla, kind, kw, passes):
    got, want, sched = _run_both(pasilla, kind, bk.pp.vst, **kw)
    _same_results(got, want, kind, layers=["vst"])
    assert got.uns["vst"]["trend"] == want.uns["vst"]["trend"]
    if kind.startswith("dask"):
        _small(sched, got, passes)


@pytest.mark.parametrize("kind", DASK_TYPES)
def test_vst_poscounts_when_every_gene_has_a_zero(pasilla, kind):
    x = pasilla.layers["counts"].copy()
    x[np.arange(pasilla.n_vars) % 7, np.arange(pasilla.n_vars)] = 0
    pasilla.layers["counts"] = x
    got, want, sched = _run_both(pasilla, kind, bk.pp.vst, fit_type="mean")  # no parametric trend here
    assert got.uns["vst"]["params"]["size_factors"].startswith("computed (poscounts")
    _same_results(got, want, kind, layers=["vst"])
    np.testing.assert_array_equal(got.uns["vst"]["size_factors"], want.uns["vst"]["size_factors"])
    _small(sched, got, 4)
    x[3] = 0
    got.layers["counts"] = as_array_type(x, kind)
    before = got.copy()
    with pytest.raises(ValueError, match="have no counts; remove them first"):
        bk.pp.vst(got, fit_type="mean", key_added="vst2")
    assert_adata_equal(got, before)


@pytest.mark.parametrize("kind", DASK_TYPES)
def test_vst_matches_deseq2_with_design_and_stored_factors(pasilla, kind):
    c = pasilla.obs["condition"].astype("category")
    pasilla.obs["condition"] = c.cat.reorder_categories(["untreated"] + [x for x in c.cat.categories if x != "untreated"])
    want = pasilla.copy()
    got = _as(pasilla, kind)
    bk.pp.vst(want, blind=False, design="~ type + condition")
    _small(counted(bk.pp.vst, got, blind=False, design="~ type + condition"), got, 4)
    _same_results(got, want, kind, layers=["vst"])
    ref = read_ref("pasilla", "deseq2_vst_design.csv.gz")
    ours = pd.DataFrame(_value(got.layers["vst"]).T, index=got.var_names, columns=got.obs_names)
    d = np.abs(ours.loc[ref.index, ref.columns].to_numpy() - ref.to_numpy())
    assert np.quantile(d, 0.99) < 1e-6 and d.max() < 1e-5  # as test_pp_vst
    # stored size factors: the check and the dispersions only
    bk.pp.size_factors(got)
    bk.pp.size_factors(want)
    _validate._DASK_SUMMARIES.clear()
    _small(counted(bk.pp.vst, got, key_added="vst_sf"), got, 2)
    bk.pp.vst(want, key_added="vst_sf")
    _same_results(got, want, kind, layers=["vst_sf"])


@pytest.mark.parametrize("kind", DASK_TYPES)
def test_vst_with_norm_factor_layer(pasilla, kind):
    """Gene × sample factors: one pass more for DESeq2's xim, whose long double column sums are
    added block by block (so ~1e-12 rather than bitwise in general)."""
    rng = np.random.default_rng(3)
    pasilla.layers["length"] = rng.uniform(300.0, 5000.0, pasilla.shape)
    bk.pp.size_factors(pasilla)
    want = pasilla.copy()
    bk.pp.vst(want, fit_type="local")
    got = _as(pasilla, kind)
    got = _as(got, kind, layer="norm_factors")
    _small(counted(bk.pp.vst, got, fit_type="local"), got, 3)
    assert is_dask(got.layers["vst"])
    np.testing.assert_allclose(_value(got.layers["vst"]), want.layers["vst"], rtol=1e-10)
    np.testing.assert_allclose(got.var["vst_gene_dispersion"], want.var["vst_gene_dispersion"], rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# pseudobulk: cells in rows, chunks numpy or scipy CSR
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells():
    from sim_pseudobulk import simulate

    return simulate(n_donors=4, n_cell_types=3, n_genes=400, mean_cells=50, seed=4)


@pytest.mark.parametrize(("chunks", "csr"), [((250, 400), False), ((250, 400), True), ((300, 150), True)])
def test_pseudobulk(cells, chunks, csr):
    import dask.array as da

    want = bk.pp.pseudobulk(cells, sample_key="sample", groups_key="cell_type", min_cells=5)
    c = cells.copy()
    c.X = da.from_array(cells.X if csr else cells.X.toarray(), chunks=chunks, asarray=False)
    sched = CountingScheduler()
    with dask.config.set(scheduler=sched):
        got = bk.pp.pseudobulk(c, sample_key="sample", groups_key="cell_type", min_cells=5)
    assert sched.computes == 1  # docstring: 1 pass
    n_units = got.uns["pseudobulk"]["params"]["n_units_observed"]
    assert sched.largest <= n_units * cells.n_vars * 8 < cells.n_obs * cells.n_vars * 8 / 10
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.layers["counts"], want.layers["counts"])
    pd.testing.assert_frame_equal(got.obs, want.obs)
    # and the pseudobulk flows into the dask-capable functions in memory
    bk.pp.filter_by_expr(got, group="condition")


def test_pseudobulk_refuses_non_counts_on_dask(cells):
    import dask.array as da

    c = cells.copy()
    x = cells.X.toarray()
    x[7, 3] = 0.5
    c.X = da.from_array(x, chunks=(250, 400))
    before = c.copy()
    with pytest.raises(ValueError, match="does not hold raw counts: it holds non-integer"):
        bk.pp.pseudobulk(c, sample_key="sample")
    assert c.obs.equals(before.obs) and list(c.layers) == list(before.layers)


# ------------------------------------------------------------------------------------------------
# errors: the AnnData untouched; functions without dask support say so
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "kw", "error", "match"),
    [
        (bk.pp.qc_metrics, {}, ValueError, "negative"),
        (bk.pp.filter_by_expr, {}, ValueError, "negative"),
        (bk.pp.size_factors, {}, ValueError, "negative"),
        (bk.pp.norm_factors, {}, ValueError, "negative"),
        (bk.pp.normalize, {"method": "tmm"}, ValueError, "negative"),
        (bk.pp.vst, {}, ValueError, "negative"),
    ],
)
def test_bad_dask_counts_leave_adata_untouched(pasilla, fn, kw, error, match):
    x = pasilla.layers["counts"].copy()
    x[2, 5] = -1
    pasilla.layers["counts"] = as_array_type(x, "dask_2d")
    before = pasilla.copy()
    with pytest.raises(error, match=match):
        fn(pasilla, **kw)
    assert_adata_equal(pasilla, before)


def test_errors_found_in_a_pass_leave_adata_untouched(pasilla):
    _as(pasilla, "dask_genes")
    pasilla.layers["length"] = as_array_type(np.where(np.arange(pasilla.n_vars) == 9, 0.0, 1000.0) * np.ones((7, 1)), "dask_samples")
    before = pasilla.copy()
    with pytest.raises(ValueError, match="finite positive lengths"):
        bk.pp.size_factors(pasilla)
    with pytest.raises(ValueError, match="finite positive lengths"):
        bk.pp.normalize(pasilla, method="size_factors")
    with pytest.raises(ValueError, match="gene lengths must be finite and positive"):
        bk.pp.normalize(pasilla, method="tpm")
    del pasilla.layers["length"], before.layers["length"]
    pasilla.layers["norm_factors"] = as_array_type(np.zeros(pasilla.shape), "dask_genes")
    before.layers["norm_factors"] = pasilla.layers["norm_factors"]
    with pytest.raises(ValueError, match="finite positive normalisation factors"):
        bk.pp.vst(pasilla)
    with pytest.raises(ValueError, match="finite positive factors"):
        bk.pp.normalize(pasilla, method="size_factors")
    with pytest.raises(ValueError, match="ref_column must be a sample index"):
        bk.pp.norm_factors(pasilla, ref_column=7)
    assert_adata_equal(pasilla, before)


def test_functions_without_dask_support_say_so(pasilla):
    _as(pasilla, "dask_genes")
    pasilla.layers["log"] = np.log1p(pasilla.layers["counts"])  # lazy
    before = pasilla.copy()
    with pytest.raises(TypeError, match="needs the matrix in memory.*load the layer first"):
        bk.pp.combat(pasilla, batch="type", layer="log")
    with pytest.raises(TypeError, match="method='iterate' needs the counts in memory"):
        bk.pp.size_factors(pasilla, method="iterate")
    assert_adata_equal(pasilla, before)


def test_zarr_layer_on_a_distributed_client(pasilla, tmp_path):
    """A counts layer read lazily from zarr, run on a distributed Client (the tasks' functions and
    arguments travel to its workers): the same numbers, and the transformed layer written to zarr
    chunk by chunk."""
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("zarr")
    want = pasilla.copy()
    bk.pp.size_factors(want)
    bk.pp.norm_factors(want)
    bk.pp.vst(want)
    da.from_array(pasilla.layers["counts"], chunks=(7, 3000)).to_zarr(str(tmp_path / "counts.zarr"))
    pasilla.layers["counts"] = da.from_zarr(str(tmp_path / "counts.zarr"))
    with (
        # one worker process (tasks pickled); the dashboard on a free port (others may hold 8787)
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster),
    ):
        bk.pp.size_factors(pasilla)
        bk.pp.norm_factors(pasilla)
        bk.pp.vst(pasilla)
        pasilla.layers["vst"].to_zarr(str(tmp_path / "vst.zarr"))
    _same_results(pasilla, want, "dask_genes")
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "vst.zarr")).compute(), want.layers["vst"])


@pytest.mark.parametrize("chunks", ["int", "csr_genes", "csr_rows"])
def test_integer_and_sparse_chunks(pasilla, chunks):
    """Integer counts and scipy CSR chunks (e.g. from ``read_elem_lazy``): the same numbers."""
    import dask.array as da

    x = pasilla.layers["counts"].astype(np.int64)
    want = pasilla.copy()
    if chunks == "int":
        pasilla.layers["counts"] = da.from_array(x, chunks=(7, 3000))
    else:
        c = (7, 3000) if chunks == "csr_genes" else (3, -1)
        pasilla.layers["counts"] = da.from_array(sparse.csr_matrix(x), chunks=c, asarray=False)
    calls = [
        (bk.pp.qc_metrics, {}),
        (bk.pp.filter_by_expr, {}),
        (bk.pp.size_factors, {}),
        (bk.pp.norm_factors, {}),
        (bk.pp.normalize, {"method": "tmm", "log": True}),
        (bk.pp.vst, {}),
    ]
    for fn, kw in calls:
        fn(pasilla, **kw)
        fn(want, **kw)
    _same_results(pasilla, want, "dask_genes", layers=["log_tmm_cpm", "vst"])
