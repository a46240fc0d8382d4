"""bk.pp.qc_metrics: per-sample and per-gene QC metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from conftest import roundtrip
from helpers import assert_adata_equal
from scipy import sparse

import bulkpy as bk

OBS_COLS = ["total_counts", "n_genes_detected", "log1p_total_counts", "pct_counts_top_50"]
VAR_COLS = ["total_counts", "mean_counts", "n_samples_detected", "frac_samples_detected", "log1p_total_counts", "log1p_mean_counts"]


def test_values_on_pasilla(pasilla):
    X = pasilla.layers["counts"]
    bk.pp.qc_metrics(pasilla, top_n=(10, 50, 20_000))
    o, v = pasilla.obs, pasilla.var
    np.testing.assert_array_equal(o["total_counts"], X.sum(axis=1))
    np.testing.assert_array_equal(o["n_genes_detected"], (X > 0).sum(axis=1))
    assert o["n_genes_detected"].dtype == np.int64
    np.testing.assert_array_equal(o["log1p_total_counts"], np.log1p(X.sum(axis=1)))
    srt = -np.sort(-X, axis=1)
    for n in (10, 50):
        np.testing.assert_allclose(o[f"pct_counts_top_{n}"], 100 * srt[:, :n].sum(axis=1) / X.sum(axis=1), rtol=1e-14)
    # more genes asked for than there are: all the counts
    np.testing.assert_array_equal(o["pct_counts_top_20000"], 100.0)
    np.testing.assert_array_equal(v["total_counts"], X.sum(axis=0))
    np.testing.assert_allclose(v["mean_counts"], X.mean(axis=0), rtol=1e-14)
    np.testing.assert_array_equal(v["n_samples_detected"], (X > 0).sum(axis=0))
    np.testing.assert_allclose(v["frac_samples_detected"], (X > 0).mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(v["log1p_mean_counts"], np.log1p(X.mean(axis=0)), rtol=1e-14)
    # the counts are not touched
    np.testing.assert_array_equal(pasilla.layers["counts"], X)


def test_agrees_with_scanpy(airway):
    sc = pytest.importorskip("scanpy")
    obs, var = sc.pp.calculate_qc_metrics(airway, layer="counts", percent_top=(50, 500), inplace=False, log1p=True)
    bk.pp.qc_metrics(airway, top_n=(50, 500))
    o, v = airway.obs, airway.var
    np.testing.assert_array_equal(o["total_counts"], obs["total_counts"])
    np.testing.assert_array_equal(o["n_genes_detected"], obs["n_genes_by_counts"])
    np.testing.assert_allclose(o["log1p_total_counts"], obs["log1p_total_counts"], rtol=1e-14)
    for n in (50, 500):
        np.testing.assert_allclose(o[f"pct_counts_top_{n}"], obs[f"pct_counts_in_top_{n}_genes"], rtol=1e-12)
    np.testing.assert_allclose(v["mean_counts"], var["mean_counts"], rtol=1e-12)
    np.testing.assert_array_equal(v["n_samples_detected"], var["n_cells_by_counts"])
    np.testing.assert_allclose(v["total_counts"], var["total_counts"], rtol=1e-12)
    np.testing.assert_allclose(100 * (1 - v["frac_samples_detected"]), var["pct_dropout_by_counts"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fmt", [sparse.csr_matrix, sparse.csc_matrix, sparse.csr_array])
def test_sparse_equals_dense(pasilla, fmt):
    pasilla.var["mt"] = np.arange(pasilla.n_vars) % 13 == 0
    a = pasilla.copy()
    X = fmt(a.layers["counts"])
    X.data[:5] = 0  # explicitly stored zeros are not detections
    a.layers["counts"] = X
    dense_z = pasilla.copy()
    dense_z.layers["counts"] = X.toarray()
    dense = bk.pp.qc_metrics(dense_z, top_n=(1, 50, 500), qc_vars="mt", copy=True)
    bk.pp.qc_metrics(a, top_n=(1, 50, 500), qc_vars="mt")
    pd.testing.assert_frame_equal(a.obs, dense.obs, check_exact=False, rtol=1e-13)
    pd.testing.assert_frame_equal(a.var, dense.var, check_exact=False, rtol=1e-13)
    assert a.obs["n_genes_detected"].dtype == dense.obs["n_genes_detected"].dtype


def test_qc_vars(pasilla):
    X = pasilla.layers["counts"]
    mt = np.zeros(pasilla.n_vars, dtype=bool)
    mt[::50] = True
    pasilla.var["mito"] = mt
    pasilla.var["ribo"] = ~mt
    bk.pp.qc_metrics(pasilla, qc_vars=["mito", "ribo"])
    np.testing.assert_array_equal(pasilla.obs["total_counts_mito"], X[:, mt].sum(axis=1))
    np.testing.assert_allclose(pasilla.obs["pct_counts_mito"], 100 * X[:, mt].sum(axis=1) / X.sum(axis=1), rtol=1e-14)
    np.testing.assert_allclose(pasilla.obs["pct_counts_mito"] + pasilla.obs["pct_counts_ribo"], 100, rtol=1e-13)
    assert list(pasilla.uns["qc_metrics"]["params"]["qc_vars"]) == ["mito", "ribo"]


def test_options(pasilla):
    bk.pp.qc_metrics(pasilla, top_n=None, log1p=False, key_added="qc")
    assert list(pasilla.obs.columns) == ["condition", "type", "total_counts", "n_genes_detected"]
    assert list(pasilla.var.columns) == VAR_COLS[:4]
    assert "qc" in pasilla.uns and "qc_metrics" not in pasilla.uns
    a = bk.pp.qc_metrics(pasilla, top_n=100, copy=True)
    assert "pct_counts_top_100" in a.obs
    a = bk.pp.qc_metrics(pasilla, top_n=[200, 50, 200], copy=True)
    assert [c for c in a.obs if c.startswith("pct_counts_top")] == ["pct_counts_top_200", "pct_counts_top_50"]
    assert list(a.uns["qc_metrics"]["params"]["top_n"]) == [200, 50]
    a = bk.pp.qc_metrics(pasilla, layer=None, copy=True)
    b = bk.pp.qc_metrics(pasilla, copy=True)
    pd.testing.assert_frame_equal(a.obs, b.obs)


def test_edge_cases_non_integer_and_empty_sample():
    X = np.array([[0.5, 2.25, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 1.0]])
    a = AnnData(X=X.copy(), obs=pd.DataFrame(index=["a", "b", "c"]))
    a.layers["counts"] = X
    bk.pp.qc_metrics(a, top_n=(1, 2))
    np.testing.assert_array_equal(a.obs["total_counts"], [2.75, 0, 5])
    np.testing.assert_array_equal(a.obs["n_genes_detected"], [2, 0, 3])
    np.testing.assert_allclose(a.obs["pct_counts_top_1"].to_numpy()[[0, 2]], [100 * 2.25 / 2.75, 60])
    np.testing.assert_allclose(a.obs["pct_counts_top_2"].to_numpy()[[0, 2]], [100, 80])
    assert np.isnan(a.obs.loc["b", "pct_counts_top_1"])  # 0 / 0, and no warning
    np.testing.assert_array_equal(a.var["n_samples_detected"], [2, 2, 1])
    np.testing.assert_allclose(a.var["frac_samples_detected"], [2 / 3, 2 / 3, 1 / 3])


def test_copy_semantics(pasilla):
    before = pasilla.copy()
    out = bk.pp.qc_metrics(pasilla, copy=True)
    assert isinstance(out, AnnData) and out is not pasilla
    assert_adata_equal(pasilla, before)
    assert all(c in out.obs for c in OBS_COLS) and all(c in out.var for c in VAR_COLS)
    assert bk.pp.qc_metrics(pasilla) is None
    pd.testing.assert_frame_equal(pasilla.obs, out.obs)
    pd.testing.assert_frame_equal(pasilla.var, out.var)


def test_h5ad_roundtrip(pasilla, tmp_h5ad):
    pasilla.var["mt"] = np.arange(pasilla.n_vars) < 20
    bk.pp.qc_metrics(pasilla, top_n=(50, 100), qc_vars=["mt"])
    back = roundtrip(pasilla, tmp_h5ad)
    pd.testing.assert_frame_equal(back.obs, pasilla.obs)
    pd.testing.assert_frame_equal(back.var, pasilla.var)
    p, q = back.uns["qc_metrics"]["params"], pasilla.uns["qc_metrics"]["params"]
    assert list(p["top_n"]) == [50, 100] and list(p["qc_vars"]) == ["mt"]
    assert p["layer"] == q["layer"] == "counts" and bool(p["log1p"]) is True


def _bad(adata, exc, match, **kw):
    before = adata.copy()
    with pytest.raises(exc, match=match):
        bk.pp.qc_metrics(adata, **kw)
    assert_adata_equal(adata, before)


def test_bad_input(pasilla):
    _bad(pasilla, KeyError, "layer 'raw' not found; available layers: 'counts'", layer="raw")
    a = pasilla.copy()
    a.layers["counts"][1, 1] = -3
    _bad(a, ValueError, "1 negative values", layer="counts")
    a = pasilla.copy()
    a.layers["counts"][1, 1] = np.nan
    _bad(a, ValueError, "non-finite", layer="counts")
    a = pasilla.copy()
    a.layers["counts"] = sparse.csr_matrix(a.layers["counts"])
    a.layers["counts"].data[0] = np.inf
    _bad(a, ValueError, "non-finite")
    _bad(pasilla, ValueError, "positive integers", top_n=(50, 0))
    _bad(pasilla, ValueError, "positive integers", top_n=[2.5])
    _bad(pasilla, TypeError, "top_n must be an int or a sequence", top_n="50")
    _bad(pasilla, KeyError, r"'mito' is not a column of adata.var; columns are: \[\]", qc_vars=["mito"])
    a = pasilla.copy()
    a.var["mt"] = np.arange(a.n_vars) % 2
    _bad(a, TypeError, "'mt' named in qc_vars must be boolean", qc_vars="mt")
    _bad(pasilla, TypeError, "log1p must be True or False", log1p=1)
    _bad(pasilla, ValueError, "contains '/'", key_added="q/c")
    _bad(pasilla, TypeError, "copy must be True or False", copy=None)
