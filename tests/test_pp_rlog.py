"""bk.pp.rlog: DESeq2 1.52's rlog.

References (DESeq2 1.52.0, R 4.6.2 / Bioconductor 3.23):

* ``../shared/data/<dataset>/r_current/deseq2_rlog_blind*`` from ``refscripts/make_refs_current.R``:
  ``rlog(dds, blind = TRUE)`` after ``DESeq(dds)`` (pasilla all genes, geuvadis85 the first 2,000);
* ``tests/fixtures/<dataset>/r_current/deseq2_rlog_{blind,design}_trim.csv.gz`` from
  ``tests/fixtures/deseq2_rlog/make_rlog_refs.R``: ``rlog(dds, blind = TRUE)`` and, after
  ``estimateDispersions(dds)`` with the data set's design, ``rlog(dds, blind = FALSE)``; every 20th
  (pasilla), 100th (geuvadis85) or 200th (airway) gene, plus the genes whose rlog fit did not
  converge in R and the first all-zero gene. ``*_genes_trim`` hold R's intercept, dispFit and
  betaConv for those genes, ``*_beta_prior_var.txt`` R's ``betaPriorVar``.

Every comparison transforms all genes (the trend and the prior variance depend on all of them)
and compares the genes the reference holds. Measured on all genes (max |diff|, blind / design):
pasilla 1.4e-10 / 2.1e-10, geuvadis85 3.3e-10 / 2.9e-10 (including the 15 / 14 genes whose fit
stops at 100 iterations without converging, in R as here), airway 6.2e-12 / 2.3e-13
(``tests/fixtures/deseq2_rlog/README.md``). No gene differs by more than that.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, roundtrip
from helpers import assert_adata_equal
from scipy import sparse

import bulkpy as bk

DESIGNS = {"pasilla": "~ type + condition", "airway": "~ cell + dex", "geuvadis85": "~ sex"}
REF_LEVELS = {
    "pasilla": ("condition", "untreated"),
    "airway": ("dex", "untrt"),
    "geuvadis85": ("sex", "Female"),
}
TOL = 1e-6  # required max |diff|; measured ~1e-10 (see the module docstring)


def _r_levels(adata, dataset):
    col, ref = REF_LEVELS[dataset]
    c = adata.obs[col].astype("category")
    adata.obs[col] = c.cat.reorder_categories([ref] + [x for x in c.cat.categories if x != ref])
    return adata


def _fixture(dataset, name):
    p = FIXTURES / dataset / "r_current" / name
    if not p.exists():
        pytest.skip(f"fixture {p} missing")
    return p


def _shared(dataset, name):
    p = SHARED / dataset / "r_current" / name
    if not p.exists():
        pytest.skip(
            f"shared data not available: {p} (set BULKPY_SHARED_DATA or place shared/ beside the checkout)"
        )
    return p


def _diff(adata, key, path):
    ref = pd.read_csv(path, index_col=0)
    ours = pd.DataFrame(adata.layers[key].T, index=adata.var_names, columns=adata.obs_names)
    assert set(ref.index) <= set(adata.var_names)
    return np.abs(ours.loc[ref.index, ref.columns].to_numpy() - ref.to_numpy())


def _check_genes(adata, key, dataset, mode):
    """Intercept, fitted dispersion, convergence and prior variance against R's."""
    g = pd.read_csv(_fixture(dataset, f"deseq2_rlog_{mode}_genes_trim.csv.gz"), index_col=0)
    var = adata.var.loc[g.index]
    fin = np.isfinite(g["rlogIntercept"].to_numpy())
    np.testing.assert_array_equal(np.isfinite(var[f"{key}_intercept"].to_numpy()), fin)
    np.testing.assert_allclose(
        var[f"{key}_intercept"].to_numpy()[fin], g["rlogIntercept"].to_numpy()[fin], rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        var[f"{key}_fitted_dispersion"].to_numpy()[fin], g["dispFit"].to_numpy()[fin], rtol=1e-8
    )
    bpv = float(_fixture(dataset, f"deseq2_rlog_{mode}_beta_prior_var.txt").read_text())
    assert adata.uns[key]["beta_prior_var"] == pytest.approx(bpv, rel=1e-10)
    n_not_conv = int((g["betaConv"] == False).sum())  # noqa: E712 (NA for all-zero genes)
    assert adata.uns[key]["params"]["n_not_converged"] >= n_not_conv


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize(
    ("dataset", "name"),
    [
        ("pasilla", "deseq2_rlog_blind.csv.gz"),
        ("geuvadis85", "deseq2_rlog_blind_head2000.csv.gz"),
    ],
)
def test_blind_rlog_matches_deseq2_shared(dataset, name, request):
    path = _shared(dataset, name)
    adata = request.getfixturevalue(dataset)
    bk.pp.rlog(adata)
    d = _diff(adata, "rlog", path)
    # measured: max 1.4e-10, p99 2.0e-11 (pasilla); max 3.3e-10, p99 5.9e-11 (geuvadis85)
    assert d.max() < TOL and np.quantile(d, 0.99) < 1e-8
    assert adata.uns["rlog"]["params"]["fit_type_used"] == "parametric"


@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_rlog_matches_deseq2_fixtures(dataset, request):
    # blind and design on one object: the R fixtures run on a fresh clone
    adata = _r_levels(request.getfixturevalue(dataset), dataset)
    bk.pp.rlog(adata)
    d = _diff(adata, "rlog", _fixture(dataset, "deseq2_rlog_blind_trim.csv.gz"))
    assert d.max() < TOL
    _check_genes(adata, "rlog", dataset, "blind")
    bk.pp.rlog(adata, blind=False, design=DESIGNS[dataset], key_added="rlog_design")
    d = _diff(adata, "rlog_design", _fixture(dataset, "deseq2_rlog_design_trim.csv.gz"))
    assert d.max() < TOL
    _check_genes(adata, "rlog_design", dataset, "design")
    assert adata.uns["rlog_design"]["params"]["design"] == DESIGNS[dataset]


def test_given_prior_variance_reproduces(pasilla):
    bk.pp.rlog(pasilla)
    bpv = pasilla.uns["rlog"]["beta_prior_var"]
    bk.pp.rlog(pasilla, beta_prior_var=bpv, key_added="rlog2")
    np.testing.assert_array_equal(pasilla.layers["rlog2"], pasilla.layers["rlog"])
    assert pasilla.uns["rlog2"]["params"]["beta_prior_var"] == "given"
    # a tighter prior pulls the samples towards each gene's intercept
    bk.pp.rlog(pasilla, beta_prior_var=bpv / 100, key_added="rlog3")
    assert pasilla.layers["rlog3"].std(axis=0).mean() < pasilla.layers["rlog"].std(axis=0).mean()


# --- slots and normalisation ----------------------------------------------------------------------


def test_slots_and_roundtrip(pasilla, tmp_h5ad):
    bk.pp.rlog(pasilla)
    assert pasilla.layers["rlog"].shape == pasilla.shape
    zero = pasilla.layers["counts"].sum(axis=0) == 0
    assert zero.any()
    assert (pasilla.layers["rlog"][:, zero] == 0).all()
    icpt = pasilla.var["rlog_intercept"].to_numpy()
    assert np.isneginf(icpt[zero]).all() and np.isfinite(icpt[~zero]).all()
    assert np.isnan(pasilla.var["rlog_fitted_dispersion"].to_numpy()[zero]).all()
    assert (pasilla.var["rlog_fitted_dispersion"].to_numpy()[~zero] > 0).all()
    params = pasilla.uns["rlog"]["params"]
    assert params["blind"] is True and params["design"] == "~ 1" and params["deseq2_version"] == "1.52.0"
    back = roundtrip(pasilla, tmp_h5ad)
    np.testing.assert_array_equal(back.layers["rlog"], pasilla.layers["rlog"])
    pd.testing.assert_frame_equal(back.var, pasilla.var)
    assert back.uns["rlog"]["beta_prior_var"] == pasilla.uns["rlog"]["beta_prior_var"]
    assert back.uns["rlog"]["trend"]["asymptDisp"] == pasilla.uns["rlog"]["trend"]["asymptDisp"]
    assert back.uns["rlog"]["params"]["fit_type_used"] == "parametric"
    np.testing.assert_array_equal(back.uns["rlog"]["size_factors"], pasilla.uns["rlog"]["size_factors"])


def test_copy_protocol(pasilla):
    before = pasilla.copy()
    out = bk.pp.rlog(pasilla, copy=True)
    assert_adata_equal(pasilla, before)
    assert "rlog" in out.layers
    assert bk.pp.rlog(pasilla) is None
    np.testing.assert_array_equal(out.layers["rlog"], pasilla.layers["rlog"])


def test_norm_factors_layer_equals_size_factors(pasilla):
    sf = np.asarray(bk.pp.size_factors(pasilla, copy=True).obs["size_factors"])
    a = pasilla.copy()
    a.obs["size_factors"] = sf
    bk.pp.rlog(a)
    assert a.uns["rlog"]["params"]["size_factors"] == "obs['size_factors']"
    pasilla.layers["norm_factors"] = np.repeat(sf[:, None], pasilla.n_vars, axis=1)
    bk.pp.rlog(pasilla)
    assert pasilla.uns["rlog"]["params"]["size_factors"] == "layers['norm_factors']"
    assert "size_factors" not in pasilla.uns["rlog"]
    np.testing.assert_allclose(pasilla.layers["rlog"], a.layers["rlog"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("array_type", ["sparse", "dask"])
def test_array_types_give_the_same_result(pasilla, array_type):
    dense = pasilla.copy()
    if array_type == "sparse":
        pasilla.layers["counts"] = sparse.csr_matrix(pasilla.layers["counts"])
    else:
        da = pytest.importorskip("dask.array")
        pasilla.layers["counts"] = da.from_array(pasilla.layers["counts"], chunks=(7, 2000))
    bk.pp.rlog(pasilla)
    bk.pp.rlog(dense)
    np.testing.assert_array_equal(pasilla.layers["rlog"], dense.layers["rlog"])


def test_blocks_give_the_same_numbers(pasilla):
    from bulkpy._stats.deseq2 import rlog as engine

    counts = pasilla.layers["counts"].astype(float)
    sf = np.asarray(bk.pp.size_factors(pasilla, copy=True).obs["size_factors"])
    whole = engine.rlog(counts, np.ones((7, 1)), size_factors=sf)
    seen = []
    blocks = engine.rlog(counts, np.ones((7, 1)), size_factors=sf, block_genes=1000, on_block=seen.append)
    np.testing.assert_array_equal(blocks.rlog, whole.rlog)
    assert blocks.beta_prior_var == pytest.approx(whole.beta_prior_var, rel=1e-14)
    assert seen.count("rlog fit") == 15 and seen.count("gene-wise dispersions") == 15


def test_closed_form_steps_equal_the_general_engine(geuvadis85, monkeypatch):
    # rlog_irls solves DESeq2's IRLS steps in closed form; fit_nb_glm (dense Cholesky) takes the
    # same steps: same coefficients to rounding and the same iterations, on 85 samples
    from bulkpy._stats.deseq2 import rlog as engine
    from bulkpy._stats.deseq2.nbinom import fit_nb_glm

    y = geuvadis85.layers["counts"][:, :1500].T.astype(float)
    keep = y.sum(axis=1) > 0
    y = np.ascontiguousarray(y[keep])
    sf = np.asarray(bk.pp.size_factors(geuvadis85, copy=True).obs["size_factors"])
    alpha = 0.05 + 2.0 / y.mean(axis=1)
    n = y.shape[1]
    beta, iters = engine.rlog_irls(y, sf[None, :], alpha, 0.18)
    ref = fit_nb_glm(
        y, engine.sample_design(n), alpha, size_factors=sf, lambda_=engine.rlog_lambda(n, 0.18),
        beta_tol=1e-4, use_optim=False, loglik=False, gene_major=True,
    )  # fmt: skip
    assert np.abs(beta - ref.beta).max() < 1e-9
    np.testing.assert_array_equal(iters, ref.iterations)
    # genes the closed form can not fit (non-finite coefficients) go to the general engine
    bad = np.arange(y.shape[0]) % 7 == 0

    original = engine.rlog_irls

    def broken(*args, **kw):
        b, it = original(*args, **kw)
        b[bad] = np.nan
        return b, it

    monkeypatch.setattr(engine, "rlog_irls", broken)
    beta2, conv, opt = engine.rlog_fit(y, alpha, 0.18, size_factors=sf)
    assert np.abs(beta2 - ref.beta).max() < 1e-9
    np.testing.assert_array_equal(conv, ref.converged)
    np.testing.assert_array_equal(opt[bad], ref.optimized[bad])


@pytest.mark.parametrize("fit_type", ["local", "mean"])
def test_other_trends(pasilla, fit_type):
    bk.pp.rlog(pasilla, fit_type=fit_type)
    assert pasilla.uns["rlog"]["trend"]["fit_type"] == fit_type
    assert np.isfinite(pasilla.layers["rlog"]).all()


def test_shrinks_low_counts_towards_the_mean(pasilla):
    # the point of rlog: low counts are pulled towards the gene's mean, far more than high counts
    # (median sd ratio to log2(q + 1): 0.04 for means 1-10, 0.6 above 1,000 on pasilla)
    bk.pp.rlog(pasilla)
    counts = pasilla.layers["counts"]
    logn = np.log2(counts / pasilla.uns["rlog"]["size_factors"][:, None] + 1)
    mean = counts.mean(axis=0)
    low, high = (mean > 1) & (mean < 10), mean > 1000
    sd = logn.std(axis=0)
    ratio = pasilla.layers["rlog"].std(axis=0)[sd > 0] / sd[sd > 0]
    low, high = low[sd > 0], high[sd > 0]
    assert np.median(ratio[low]) < 0.1 and np.median(ratio[high]) > 0.4


def test_sparse_data_warns_as_deseq2():
    rng = np.random.default_rng(1)
    counts = rng.poisson(20, size=(6, 400)).astype(float)
    counts[:, :100] = 0
    counts[rng.integers(0, 6, 100), np.arange(100)] = 500  # one large count, zeros elsewhere
    adata = ad.AnnData(counts)
    adata.layers["counts"] = counts.copy()
    with pytest.warns(UserWarning, match="single sample"):
        bk.pp.rlog(adata, fit_type="mean")


def test_no_warnings_on_real_data(pasilla):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bk.pp.rlog(pasilla, blind=False, design="~ type + condition")


# --- bad input leaves the object untouched ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "nope"}, KeyError, "layer 'nope' not found"),
        ({"fit_type": "loess"}, ValueError, "fit_type"),
        ({"blind": "yes"}, TypeError, "blind"),
        ({"design": "~ condition"}, ValueError, "only used with blind=False"),
        ({"blind": False}, ValueError, "needs a design"),
        ({"blind": False, "design": "~ nope"}, KeyError, "nope"),
        ({"beta_prior_var": -1.0}, ValueError, "beta_prior_var"),
        ({"beta_prior_var": "big"}, TypeError, "beta_prior_var"),
        ({"key_added": "counts"}, ValueError, "overwrite the input layer"),
        ({"key_added": "a/b"}, ValueError, "contains '/'"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"copy": "no"}, TypeError, "copy"),
    ],
)
def test_bad_arguments_leave_adata_untouched(pasilla, kwargs, error, match):
    before = pasilla.copy()
    with pytest.raises(error, match=match):
        bk.pp.rlog(pasilla, **kwargs)
    assert_adata_equal(pasilla, before)


def test_bad_data_leaves_adata_untouched(pasilla):
    for mutate, error, match in [
        (lambda a: a.layers.__setitem__("counts", a.layers["counts"] + 0.5), ValueError, "non-integer"),
        (lambda a: a.layers.__setitem__("counts", -a.layers["counts"]), ValueError, "negative"),
        (lambda a: a.obs.__setitem__("size_factors", np.r_[0.0, np.ones(6)]), ValueError, "size_factors"),
    ]:
        a = pasilla.copy()
        mutate(a)
        before = a.copy()
        with pytest.raises(error, match=match):
            bk.pp.rlog(a)
        assert_adata_equal(a, before)
