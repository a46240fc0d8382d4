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
from dask_helpers import ARRAY_TYPES, DASK_TYPES, CountingScheduler, as_array_type, is_dask
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


def _counted(fn, *args, **kw):
    sched = CountingScheduler()
    with dask.config.set(scheduler=sched):
        fn(*args, **kw)
    return sched


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


def test_rank_test_passes(pasilla_tmm):
    ad = _as(pasilla_tmm, "log_tmm_cpm", "dask_genes")
    ad.uns.pop("log_tmm_cpm", None)  # no stored parameters: the log scale is guessed from the summary pass
    sched = _counted(bk.tl.rank_test, ad, **_RANK)
    assert sched.computes <= 2  # the docstring: two passes
    n, g = ad.shape
    assert sched.largest < n * g * 8 / 4
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


def test_limma_passes_and_refusals(pasilla_logcpm):
    ad = _as(pasilla_logcpm, "log_tmm_cpm", "dask_genes")
    sched = _counted(bk.tl.limma, ad, design=_DESIGN, contrast=_CONTRAST, layer="log_tmm_cpm")
    assert sched.computes <= 2  # the docstring: two passes
    n, g = ad.shape
    assert sched.largest < n * g * 8 / 4
    before = ad.copy()
    with pytest.raises(ValueError, match="needs the matrix in memory"):
        bk.tl.limma(ad, design="~ condition", contrast=_CONTRAST, layer="log_tmm_cpm", block="type")
    with pytest.raises(ValueError, match="needs the matrix in memory"):
        bk.tl.limma(ad, design=_DESIGN, contrast=_CONTRAST, layer="log_tmm_cpm", sample_weights=True)
    E = np.asarray(pasilla_logcpm.layers["log_tmm_cpm"]).copy()
    E[0, 3] = -np.inf
    ad.layers["bad"] = as_array_type(E, "dask_genes")
    before.layers["bad"] = ad.layers["bad"]
    with pytest.raises(ValueError, match="1 infinite values"):
        bk.tl.limma(ad, design=_DESIGN, contrast=_CONTRAST, layer="bad")
    assert_adata_equal(ad, before)
