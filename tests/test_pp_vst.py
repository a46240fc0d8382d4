"""bk.pp.vst: DESeq2 1.38.3's varianceStabilizingTransformation.

References: ``deseq2_vst_blind``/``deseq2_vst_design`` from ``shared/refscripts/make_refs.R``
(``varianceStabilizingTransformation(dds, blind=TRUE/FALSE)`` after ``DESeq(dds)``), full in
``../shared/data`` or 300 genes of pasilla in ``tests/fixtures/pasilla``; the local/mean trend
versions were made with the same DESeq2 by ``tests/fixtures/pasilla/make_deseq2_extra_refs.R``.
Each comparison runs on all genes (the trend depends on all of them) and compares the genes the
reference holds.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import read_ref, roundtrip
from helpers import assert_adata_equal
from scipy import sparse

import bulkpy as bk

# make_refs.R's designs, with R's reference levels (first category = reference)
DESIGNS = {"pasilla": "~ type + condition", "airway": "~ cell + dex", "geuvadis85": "~ sex"}
REF_LEVELS = {"pasilla": ("condition", "untreated"), "airway": ("dex", "untrt"), "geuvadis85": ("sex", "Female")}


def _r_levels(adata, dataset):
    col, ref = REF_LEVELS[dataset]
    c = adata.obs[col].astype("category")
    adata.obs[col] = c.cat.reorder_categories([ref] + [x for x in c.cat.categories if x != ref])
    return adata


def _diff(adata, key, dataset, name):
    ref = read_ref(dataset, name)
    ours = pd.DataFrame(adata.layers[key].T, index=adata.var_names, columns=adata.obs_names)
    assert set(ref.index) <= set(adata.var_names)
    return np.abs(ours.loc[ref.index, ref.columns].to_numpy() - ref.to_numpy())


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_blind_vst_matches_deseq2(dataset, request):
    adata = request.getfixturevalue(dataset)
    bk.pp.vst(adata)
    d = _diff(adata, "vst", dataset, "deseq2_vst_blind.csv.gz")
    # required: 99th percentile < 1e-3; measured ~1e-10 (pasilla, geuvadis85) and 4e-13 (airway)
    assert np.quantile(d, 0.99) < 1e-6 and d.max() < 1e-5
    assert adata.uns["vst"]["params"]["fit_type_used"] == "parametric"


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway"])
def test_design_vst_matches_deseq2(dataset, request):
    adata = _r_levels(request.getfixturevalue(dataset), dataset)
    bk.pp.vst(adata, blind=False, design=DESIGNS[dataset])
    d = _diff(adata, "vst", dataset, "deseq2_vst_design.csv.gz")
    assert np.quantile(d, 0.99) < 1e-6 and d.max() < 1e-5
    assert adata.uns["vst"]["params"]["design"] == DESIGNS[dataset]


@pytest.mark.parametrize("fit_type", ["local", "mean"])
def test_local_and_mean_vst_match_deseq2(pasilla, fit_type):
    bk.pp.vst(pasilla, fit_type=fit_type)
    d = _diff(pasilla, "vst", "pasilla", f"deseq2_vst_blind_{fit_type}.csv.gz")
    assert np.quantile(d, 0.99) < 1e-6 and d.max() < 1e-5  # measured: 1e-9 (local), 5e-12 (mean)
    _r_levels(pasilla, "pasilla")
    bk.pp.vst(pasilla, blind=False, design="~ type + condition", fit_type=fit_type, key_added="vst_d")
    d = _diff(pasilla, "vst_d", "pasilla", f"deseq2_vst_design_{fit_type}.csv.gz")
    assert np.quantile(d, 0.99) < 1e-6 and d.max() < 1e-5
    assert pasilla.uns["vst"]["trend"]["fit_type"] == fit_type


def test_reference_level_hardly_matters(pasilla):
    # formulaic's default reference for condition is "treated" (alphabetical), R's is "untreated":
    # the same column space, only the 1e-6 ridge differs, so the transform agrees to ~1e-8
    a = _r_levels(pasilla.copy(), "pasilla")
    bk.pp.vst(a, blind=False, design="~ type + condition")
    bk.pp.vst(pasilla, blind=False, design="~ type + condition")
    assert np.abs(a.layers["vst"] - pasilla.layers["vst"]).max() < 1e-6


# --- slots and normalisation ----------------------------------------------------------------------


def test_slots_and_roundtrip(pasilla, tmp_h5ad):
    bk.pp.vst(pasilla)
    assert pasilla.layers["vst"].shape == pasilla.shape
    zero = pasilla.layers["counts"].sum(axis=0) == 0
    gene = pasilla.var["vst_gene_dispersion"].to_numpy()
    fitted = pasilla.var["vst_fitted_dispersion"].to_numpy()
    assert np.isnan(gene[zero]).all() and np.isnan(fitted[zero]).all()
    assert np.isfinite(gene[~zero]).all() and (fitted[~zero] > 0).all()
    trend = pasilla.uns["vst"]["trend"]
    bm = (pasilla.layers["counts"] / pasilla.uns["vst"]["size_factors"][:, None]).mean(axis=0)
    np.testing.assert_allclose(fitted[~zero], trend["asymptDisp"] + trend["extraPois"] / bm[~zero])
    params = pasilla.uns["vst"]["params"]
    assert params["blind"] is True and params["size_factors"] == "computed (median of ratios)"
    back = roundtrip(pasilla, tmp_h5ad)
    np.testing.assert_array_equal(back.layers["vst"], pasilla.layers["vst"])
    pd.testing.assert_frame_equal(back.var, pasilla.var)
    assert back.uns["vst"]["trend"]["asymptDisp"] == trend["asymptDisp"]
    assert back.uns["vst"]["params"]["fit_type_used"] == "parametric"
    np.testing.assert_array_equal(back.uns["vst"]["size_factors"], pasilla.uns["vst"]["size_factors"])


def test_copy_protocol(pasilla):
    before = pasilla.copy()
    out = bk.pp.vst(pasilla, copy=True)
    assert_adata_equal(pasilla, before)
    assert "vst" in out.layers
    assert bk.pp.vst(pasilla) is None
    np.testing.assert_array_equal(out.layers["vst"], pasilla.layers["vst"])


def test_uses_obs_size_factors(pasilla):
    r_sf = read_ref("pasilla", "deseq2_size_factors.csv.gz")["size_factor"].loc[pasilla.obs_names].to_numpy()
    a = pasilla.copy()
    bk.pp.vst(a)
    np.testing.assert_allclose(a.uns["vst"]["size_factors"], r_sf, rtol=1e-12)
    pasilla.obs["size_factors"] = r_sf * 2  # a common scale changes the normalised counts
    bk.pp.vst(pasilla)
    assert pasilla.uns["vst"]["params"]["size_factors"] == "obs['size_factors']"
    np.testing.assert_array_equal(pasilla.uns["vst"]["size_factors"], r_sf * 2)
    assert not np.allclose(pasilla.layers["vst"], a.layers["vst"])


def test_uses_norm_factors_layer(pasilla):
    sf = np.asarray(bk.pp.size_factors(pasilla, copy=True).obs["size_factors"])
    a = pasilla.copy()
    a.obs["size_factors"] = sf
    bk.pp.vst(a, fit_type="local")
    pasilla.layers["norm_factors"] = np.repeat(sf[:, None], pasilla.n_vars, axis=1)
    bk.pp.vst(pasilla, fit_type="local")
    assert pasilla.uns["vst"]["params"]["size_factors"] == "layers['norm_factors']"
    assert "size_factors" not in pasilla.uns["vst"]
    np.testing.assert_allclose(pasilla.layers["vst"], a.layers["vst"], rtol=1e-10, atol=1e-10)


def test_poscounts_when_every_gene_has_a_zero():
    rng = np.random.default_rng(0)
    counts = rng.negative_binomial(2, 0.05, size=(6, 800)).astype(float)
    counts[np.arange(800) % 6, np.arange(800)] = 0  # a zero in every gene
    adata = ad.AnnData(counts)
    adata.layers["counts"] = counts.copy()
    bk.pp.vst(adata, fit_type="mean")  # one dispersion for all genes: a + b / mean would not fit
    assert adata.uns["vst"]["params"]["size_factors"].startswith("computed (poscounts")
    assert np.isfinite(adata.layers["vst"]).all()


def test_sparse_counts_give_the_same_result(pasilla):
    dense = pasilla.copy()
    pasilla.layers["counts"] = sparse.csr_matrix(pasilla.layers["counts"])
    bk.pp.vst(pasilla)
    bk.pp.vst(dense)
    np.testing.assert_array_equal(pasilla.layers["vst"], dense.layers["vst"])


def test_parametric_failure_falls_back_to_local():
    # dispersions that grow with the mean: a + b / mean can not fit, DESeq2 switches to local
    rng = np.random.default_rng(4)
    mu = np.exp(rng.uniform(np.log(5), np.log(5000), 3000))
    alpha = 0.002 * mu**0.6
    counts = rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu), size=(6, 3000)).astype(float)
    adata = ad.AnnData(counts)
    adata.layers["counts"] = counts.copy()
    with pytest.warns(UserWarning, match="local regression fit was substituted"):
        bk.pp.vst(adata)
    assert adata.uns["vst"]["params"]["fit_type"] == "parametric"
    assert adata.uns["vst"]["params"]["fit_type_used"] == "local"
    assert adata.uns["vst"]["trend"]["fit_type"] == "local"


def test_variance_is_stabilised(airway):
    # the point of the transform: per-gene sd hardly depends on the mean (vs log2(x + 1))
    bk.pp.vst(airway, blind=False, design="~ cell + dex")
    counts = airway.layers["counts"]
    keep = counts.mean(axis=0) > 5
    v = airway.layers["vst"][:, keep]
    lg = np.log2(counts[:, keep] / airway.uns["vst"]["size_factors"][:, None] + 1)
    m = v.mean(axis=0)
    bins = np.quantile(m, [0, 0.25, 0.5, 0.75, 1])
    sd_v = [np.median(v.std(axis=0)[(m >= lo) & (m <= hi)]) for lo, hi in zip(bins[:-1], bins[1:], strict=True)]
    sd_l = [np.median(lg.std(axis=0)[(m >= lo) & (m <= hi)]) for lo, hi in zip(bins[:-1], bins[1:], strict=True)]
    assert max(sd_v) / min(sd_v) < max(sd_l) / min(sd_l)


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
        ({"blind": False, "design": np.ones((7, 2))}, ValueError, "x1"),
        ({"key_added": "counts"}, ValueError, "overwrite the input layer"),
        ({"key_added": "a/b"}, ValueError, "contains '/'"),
        ({"copy": "no"}, TypeError, "copy"),
    ],
)
def test_bad_arguments_leave_adata_untouched(pasilla, kwargs, error, match):
    before = pasilla.copy()
    with pytest.raises(error, match=match):
        bk.pp.vst(pasilla, **kwargs)
    assert_adata_equal(pasilla, before)


def test_bad_data_leaves_adata_untouched(pasilla):
    for mutate, error, match in [
        (lambda a: a.layers.__setitem__("counts", a.layers["counts"] + 0.5), ValueError, "non-integer"),
        (lambda a: a.layers.__setitem__("counts", -a.layers["counts"]), ValueError, "negative"),
        (lambda a: a.obs.__setitem__("size_factors", np.r_[0.0, np.ones(6)]), ValueError, "size_factors"),
        (lambda a: a.layers.__setitem__("norm_factors", np.zeros(a.shape)), ValueError, "norm_factors"),
    ]:
        a = pasilla.copy()
        mutate(a)
        before = a.copy()
        with pytest.raises(error, match=match):
            bk.pp.vst(a)
        assert_adata_equal(a, before)


def test_too_many_coefficients(pasilla):
    pasilla.obs["sample"] = pasilla.obs_names.astype(str)
    before = pasilla.copy()
    with pytest.raises(ValueError, match="no replicates"):
        bk.pp.vst(pasilla, blind=False, design="~ sample")
    assert_adata_equal(pasilla, before)


def test_no_warnings_on_real_data(pasilla):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bk.pp.vst(pasilla, blind=False, design="~ type + condition", fit_type="local")
