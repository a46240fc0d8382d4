"""Repeated measures (``block=``, limma's ``duplicateCorrelation`` + ``lmFit(block, correlation)``)
and sample quality weights (``arrayWeights``, ``voomWithQualityWeights``) in ``bk.tl.limma`` /
``bk.tl.voom`` and the engines, against limma 3.68.5 (Bioconductor 3.23).

References: ``../shared/data/<dataset>/r_current`` (``refscripts/make_refs_current.R``: airway with
the cell line as block, design ``~ dex``) and, for what that script does not cover,
``tests/fixtures/airway/r_current/make_limma_block_refs.R``; trimmed copies of both are committed
in ``tests/fixtures/<dataset>/r_current`` (PROVENANCE_limma.txt), so the airway and pasilla tests
run on a fresh clone. The algorithms are deterministic: observed agreement is ~1e-12 (correlations,
weights, moderated t) and the tolerances below leave a margin of a few hundred.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, roundtrip
from helpers import assert_adata_equal, rel_diff
from test_tl_limma import (
    _assert_parity_targets,
    _compare_table,
    _current_path,
    _filtered,
    _logcpm3,
    read_current,
)

import bulkpy as bk
from bulkpy._stats import limma as lin

DESIGNS = {
    "pasilla": ("~ type + condition", "condition", "treated", "untreated"),
    "airway": ("~ cell + dex", "dex", "trt", "untrt"),
    "geuvadis85": ("~ sex", "sex", "Male", "Female"),
}
AIRWAY_BLOCK = {"design": "~ dex", "contrast": ["dex", "trt", "untrt"], "block": "cell"}
_VOOM_R = {"norm": "none", "norm_factors_key": "r_norm_factors"}


def _airway(request):
    """airway's filterByExpr genes with R's TMM factors, log-CPM (prior count 3), untrt first."""
    ad = _filtered(request, "airway")
    ad.obs["dex"] = ad.obs["dex"].cat.reorder_categories(["untrt", "trt"])
    ad.layers["logcpm"] = _logcpm3(ad)
    return ad


def _na_layer(ad):
    """log-CPM with R's pattern of missing values: (5 g + 2 j) mod 23 == 0, g and j from 1."""
    E = ad.layers["logcpm"].copy()
    g = np.arange(1, ad.n_vars + 1)[None, :]
    j = np.arange(1, ad.n_obs + 1)[:, None]
    E[(5 * g + 2 * j) % 23 == 0] = np.nan
    return E


def _block_refs() -> pd.Series:
    return pd.read_csv(_current_path("airway", "limma_block_correlations.csv"), index_col=0)["correlation"]


def _assert_rel(ours, ref, tol, what):
    r = rel_diff(ours, ref)
    assert np.nanmax(r) < tol, f"{what}: max relative difference {np.nanmax(r):.3g}"


# --------------------------------------------------------------------------------------------
# voom with blocks (the reference script's steps)
# --------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_voom_block_matches_r_current(request):
    # voom -> duplicateCorrelation -> voom(block, correlation) -> duplicateCorrelation ->
    # lmFit(block, correlation) -> eBayes; observed: correlations 2e-13, weights 4e-13, table 6e-10
    # (t of genes with logFC ~ 0) / 1e-12 (99th percentile)
    tt = read_current("airway", "limma_voom_block_toptable.csv.gz")
    r_cor = [float(v) for v in _current_path("airway", "limma_voom_block_correlation.txt").read_text().split()]
    W = read_current("airway", "limma_voom_block_weights.csv.gz")
    ad = _airway(request)
    bk.tl.voom(ad, **AIRWAY_BLOCK, **_VOOM_R)
    p = ad.uns["voom"]["params"]
    assert p["block"] == "cell" and p["n_blocks"] == 4 and p["correlation_estimated"] is True
    _assert_rel(p["correlations"], r_cor, 1e-9, "consensus correlations")
    assert p["correlation_voom"] == p["correlations"][0] and p["correlation"] == p["correlations"][1]
    pos = W.index.to_numpy(dtype=int) - 1  # positions among the kept genes
    _assert_rel(ad.layers["voom_weights"].T[pos], W.to_numpy(), 1e-9, "weights of the second voom")
    df = bk.get.de_df(ad, "voom")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)


@pytest.mark.parity
def test_voom_block_given_correlation_matches_r(request):
    # voom(y, mb, block, correlation = 0.3) then lmFit(v, mb, block, correlation = 0.3): no estimation
    tt = read_current("airway", "limma_voom_block_cor0.3_toptable.csv.gz")
    ad = _airway(request)
    bk.tl.voom(ad, **AIRWAY_BLOCK, correlation=0.3, **_VOOM_R)
    p = ad.uns["voom"]["params"]
    assert p["correlation"] == 0.3 and p["correlation_voom"] == 0.3 and p["correlation_estimated"] is False
    assert "correlations" not in p
    df = bk.get.de_df(ad, "voom")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)


@pytest.mark.parity
def test_voom_quality_weights_with_block_matches_r(request):
    # voomWithQualityWeights in place of voom in the two rounds
    tt = read_current("airway", "limma_voom_quality_block_toptable.csv.gz")
    cors = _block_refs()
    aws = read_current("airway", "limma_array_weights_variants.csv")
    ad = _airway(request)
    bk.tl.voom(ad, **AIRWAY_BLOCK, sample_weights=True, **_VOOM_R)
    p = ad.uns["voom"]["params"]
    _assert_rel(p["correlations"], cors[["voom_quality_first", "voom_quality_second"]].to_numpy(), 1e-9, "correlations")
    _assert_rel(ad.obs["voom_sample_weights"], aws.loc[ad.obs_names, "voom_quality_block"], 1e-9, "sample weights")
    df = bk.get.de_df(ad, "voom")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_voom_quality_weights_match_r_current(request, dataset):
    # voomWithQualityWeights(y, mm): sample weights gene by gene, twice; observed ~5e-14 / 1e-12
    formula, fac, test, ref = DESIGNS[dataset]
    tt = read_current(dataset, "limma_voom_quality_toptable.csv.gz")
    sw = read_current(dataset, "limma_voom_quality_sample_weights.csv.gz")["sample_weight"]
    ad = _filtered(request, dataset)
    bk.tl.voom(ad, design=formula, contrast=[fac, test, ref], sample_weights=True, **_VOOM_R)
    _assert_rel(ad.obs["voom_sample_weights"], sw.loc[ad.obs_names], 1e-9, "sample weights")
    p = ad.uns["voom"]["params"]
    assert p["sample_weights_method"] == "genebygene"
    np.testing.assert_array_equal(p["sample_weights"], ad.obs["voom_sample_weights"].to_numpy())
    df = bk.get.de_df(ad, "voom")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)


# --------------------------------------------------------------------------------------------
# limma with blocks and sample weights
# --------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_limma_block_matches_r(request):
    # duplicateCorrelation(logcpm, ~ dex, block = cell), lmFit(block, correlation), eBayes(trend = TRUE)
    tt = read_current("airway", "limma_block_trend_toptable.csv.gz")
    ad = _airway(request)
    bk.tl.limma(ad, **AIRWAY_BLOCK, layer="logcpm", trend=True)
    assert ad.uns["limma"]["params"]["correlation"] == pytest.approx(_block_refs()["logcpm"], rel=1e-9)
    df = bk.get.de_df(ad, "limma")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)
    # the mean of the treated samples, a contrast of both coefficients: contrasts.fit uses the
    # correlation of the coefficients from the GLS fit
    tc = read_current("airway", "limma_block_contrast_toptable.csv.gz")
    bk.tl.limma(ad, design="~ dex", contrast=[1.0, 1.0], layer="logcpm", block="cell", key_added="trt_mean")
    _compare_table(bk.get.de_df(ad, "trt_mean"), tc, max_tol=1e-7, p99_tol=1e-9)


@pytest.mark.parity
def test_limma_block_sample_weights_matches_r(request):
    # aw = arrayWeights(logcpm, ~ dex); duplicateCorrelation(weights = aw); lmFit(weights = aw, block)
    tt = read_current("airway", "limma_block_array_weights_toptable.csv.gz")
    aws = read_current("airway", "limma_array_weights_variants.csv")
    ad = _airway(request)
    bk.tl.limma(ad, **AIRWAY_BLOCK, layer="logcpm", trend=True, sample_weights=True)
    p = ad.uns["limma"]["params"]
    assert p["sample_weights_method"] == "reml"
    _assert_rel(ad.obs["limma_sample_weights"], aws.loc[ad.obs_names, "reml_block_design"], 1e-9, "array weights")
    assert p["correlation"] == pytest.approx(_block_refs()["array_weights"], rel=1e-9)
    df = bk.get.de_df(ad, "limma")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)


@pytest.mark.parity
def test_limma_block_missing_values_matches_r(request):
    # per-gene REML on the observed samples, GLS per pattern of missing values
    tt = read_current("airway", "limma_block_na_toptable.csv.gz")
    ad = _airway(request)
    ad.layers["na"] = _na_layer(ad)
    bk.tl.limma(ad, **AIRWAY_BLOCK, layer="na")
    assert ad.uns["limma"]["params"]["correlation"] == pytest.approx(_block_refs()["na"], rel=1e-9)
    assert ad.var["limma_df_residual"].nunique() > 1
    df = bk.get.de_df(ad, "limma")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)


@pytest.mark.parity
def test_duplicate_correlation_per_gene_matches_r(request):
    # the per-gene atanh correlations (every 16th gene: labels 1..k are k-th sampled genes)
    ref = read_current("airway", "limma_block_atanh_correlations.csv.gz")
    ad = _airway(request)
    X = np.column_stack([np.ones(ad.n_obs), (ad.obs["dex"] == "trt").to_numpy(float)])
    cell = ad.obs["cell"].to_numpy()
    pos = (ref.index.to_numpy() - 1) * 16
    aw = lin.array_weights(ad.layers["logcpm"], X)
    for col, y, w in (("logcpm", ad.layers["logcpm"], None), ("array_weights", ad.layers["logcpm"], aw),
                      ("na", _na_layer(ad), None)):
        res = lin.duplicate_correlation(y, X, cell, weights=w)
        # observed ~1e-11; genes whose REML fit sits at the bound rho_min are equal exactly
        np.testing.assert_allclose(res.atanh_correlations[pos], ref[col], rtol=1e-8, atol=1e-10, err_msg=col)
        assert res.consensus_correlation == pytest.approx(_block_refs()[col], rel=1e-9)


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_limma_trend_sample_weights_match_r_current(request, dataset):
    # arrayWeights(logcpm, mm) (REML) then eBayes(lmFit(logcpm, mm, weights = aw), trend = TRUE)
    formula, fac, test, ref = DESIGNS[dataset]
    tt = read_current(dataset, "limma_trend_array_weights_toptable.csv.gz")
    aw = read_current(dataset, "limma_array_weights_logcpm.csv.gz")["array_weight"]
    ad = _filtered(request, dataset)
    ad.layers["logcpm"] = _logcpm3(ad)
    kw = {"design": formula, "contrast": [fac, test, ref], "layer": "logcpm", "trend": True}
    bk.tl.limma(ad, **kw, sample_weights=True)
    # observed: weights 3e-12 (airway), t 2e-9 (max, genes with t ~ 0) / 1e-12
    _assert_rel(ad.obs["limma_sample_weights"], aw.loc[ad.obs_names], 1e-9, "array weights")
    assert ad.uns["limma"]["params"]["sample_weights_method"] == "reml"
    df = bk.get.de_df(ad, "limma")
    _compare_table(df, tt, max_tol=1e-7, p99_tol=1e-9)
    _assert_parity_targets(df, tt)
    # the same through bk.pp.array_weights and weights=<obs column>
    bk.pp.array_weights(ad, design=formula, layer="logcpm")
    bk.tl.limma(ad, **kw, weights="array_weights", key_added="via_obs")
    assert ad.uns["via_obs"]["params"]["weights"] == "obs['array_weights']"
    pd.testing.assert_frame_equal(bk.get.de_df(ad, "via_obs"), df)


# --------------------------------------------------------------------------------------------
# engine properties
# --------------------------------------------------------------------------------------------


def _gls_brute_force(y, X, C, w=None):
    """Per-gene generalised least squares with numpy, the slow way."""
    g = y.shape[1]
    coef = np.full((X.shape[1], g), np.nan)
    sigma = np.full(g, np.nan)
    for j in range(g):
        obs = np.isfinite(y[:, j])
        V = C[np.ix_(obs, obs)]
        if w is not None:
            s = 1 / np.sqrt(w[obs, j])
            V = V * np.outer(s, s)
        Vi = np.linalg.inv(V)
        Xo = X[obs]
        b = np.linalg.solve(Xo.T @ Vi @ Xo, Xo.T @ Vi @ y[obs, j])
        r = y[obs, j] - Xo @ b
        coef[:, j] = b
        sigma[j] = np.sqrt(r @ Vi @ r / (obs.sum() - X.shape[1]))
    return coef, sigma


def test_gls_matches_per_gene_fits():
    rng = np.random.default_rng(11)
    n, g = 12, 200
    block = np.repeat(np.arange(4), 3)
    X = np.column_stack([np.ones(n), np.tile([0.0, 1.0, 1.0], 4), rng.normal(size=n)])
    y = X @ rng.normal(size=(3, g)) + rng.normal(size=(4, g))[block] + rng.normal(size=(n, g))
    C = lin.lmfit.block_correlation_matrix(block, 0.4)
    w = rng.uniform(0.3, 3, size=(n, g))
    ymiss = y.copy()
    ymiss[rng.uniform(size=y.shape) < 0.08] = np.nan
    for yy, ww in ((y, None), (y, w), (ymiss, w), (y, w[:, 0])):
        fit = lin.lm_fit(yy, X, weights=ww, block=block, correlation=0.4)
        wfull = None if ww is None else np.broadcast_to(np.asarray(ww).reshape(n, -1), (n, g))
        coef, sigma = _gls_brute_force(yy, X, C, wfull)
        np.testing.assert_allclose(fit.coefficients, coef, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fit.sigma, sigma, rtol=1e-9)
    # correlation 0 is ordinary least squares
    np.testing.assert_allclose(
        lin.lm_fit(y, X, block=block, correlation=0.0).coefficients, lin.lm_fit(y, X).coefficients, rtol=1e-10
    )


def test_duplicate_correlation_recovers_the_simulated_correlation():
    rng = np.random.default_rng(12)
    n, g, rho = 16, 3000, 0.6
    block = np.repeat(np.arange(8), 2)
    X = np.column_stack([np.ones(n), np.tile([0.0, 1.0], 8)])
    y = np.sqrt(rho) * rng.normal(size=(8, g))[block] + np.sqrt(1 - rho) * rng.normal(size=(n, g))
    res = lin.duplicate_correlation(y, X, block)
    assert abs(res.consensus_correlation - rho) < 0.03
    # independent of how the genes are batched
    other = lin.duplicate_correlation(y, X, block, chunk_elements=999)
    np.testing.assert_array_equal(res.atanh_correlations, other.atanh_correlations)


def test_duplicate_correlation_degenerate_blocks_warn_like_limma():
    rng = np.random.default_rng(13)
    y = rng.normal(size=(6, 50))
    X = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1.0]])
    with pytest.warns(UserWarning, match="Blocks all of size 1"):
        assert lin.duplicate_correlation(y, X, np.arange(6)).consensus_correlation == 0
    with pytest.warns(UserWarning, match="already encoded"):
        assert lin.duplicate_correlation(y, X, [0, 0, 0, 1, 1, 1]).consensus_correlation == 0
    assert lin.block_in_design(X, [0, 0, 0, 1, 1, 1]) and not lin.block_in_design(X, [0, 1, 2, 0, 1, 2])


# --------------------------------------------------------------------------------------------
# adapters: slots, round trip, bad input
# --------------------------------------------------------------------------------------------


@pytest.fixture
def paired(request):
    """airway's first 2,000 expressed genes (the committed fixtures cover airway)."""
    ad = bk.datasets.airway()
    ad = ad[:, np.flatnonzero(ad.X.sum(axis=0) >= 200)[:2000]].copy()
    lib = ad.X.sum(axis=1, keepdims=True)
    ad.layers["logcpm"] = np.log2((ad.X + 0.5) / (lib + 1) * 1e6)
    return ad


def test_block_results_roundtrip_h5ad(paired, tmp_h5ad):
    bk.tl.voom(paired, **AIRWAY_BLOCK, sample_weights=True)
    bk.tl.limma(paired, **AIRWAY_BLOCK, layer="logcpm", sample_weights=True, correlation=0.5)
    back = roundtrip(paired, tmp_h5ad)
    for key in ("voom", "limma"):
        pd.testing.assert_frame_equal(bk.get.de_df(back, key), bk.get.de_df(paired, key))
        p, q = back.uns[key]["params"], paired.uns[key]["params"]
        for k in ("block", "n_blocks", "correlation", "correlation_estimated", "sample_weights_method"):
            assert p[k] == q[k], k
        np.testing.assert_array_equal(p["sample_weights"], q["sample_weights"])
        np.testing.assert_array_equal(back.obs[f"{key}_sample_weights"], paired.obs[f"{key}_sample_weights"])
    np.testing.assert_array_equal(back.uns["voom"]["params"]["correlations"], paired.uns["voom"]["params"]["correlations"])
    assert back.uns["limma"]["params"]["correlation"] == 0.5
    assert back.uns["limma"]["params"]["correlation_estimated"] is False


def test_voom_sample_weights_are_in_the_weights(paired):
    bk.tl.voom(paired, design="~ dex", contrast=["dex", "trt", "untrt"], key_added="plain")
    bk.tl.voom(paired, design="~ dex", contrast=["dex", "trt", "untrt"], sample_weights=True, key_added="q")
    aw = paired.obs["q_sample_weights"].to_numpy()
    assert not np.allclose(aw, 1) and np.all(aw > 0)
    ratio = paired.layers["q_weights"] / paired.layers["plain_weights"]
    assert np.corrcoef(ratio.mean(axis=1), aw)[0, 1] > 0.9


@pytest.mark.parametrize(
    ("fn", "kwargs", "exc", "match"),
    [
        ("limma", {"design": "~ cell + dex", "block": "cell"}, ValueError, "already a fixed effect"),
        ("voom", {"design": "~ cell + dex", "block": "cell"}, ValueError, "remove 'cell' from the design"),
        ("limma", {"design": "~ dex", "block": "nope"}, KeyError, "not a column of adata.obs"),
        ("limma", {"design": "~ dex", "block": "withna"}, ValueError, "missing values"),
        ("voom", {"design": "~ dex", "block": "sample_id"}, ValueError, "no repeated measures"),
        ("limma", {"design": "~ dex", "correlation": 0.3}, ValueError, "pass block="),
        ("limma", {"design": "~ dex", "block": "cell", "correlation": 1.0}, ValueError, r"\(-1, 1\)"),
        ("voom", {"design": "~ dex", "block": "cell", "correlation": "0.3"}, TypeError, "correlation"),
        ("limma", {"design": "~ dex", "sample_weights": "yes"}, TypeError, "sample_weights"),
        ("voom", {"design": "~ dex", "sample_weights": 1}, TypeError, "sample_weights"),
        ("limma", {"design": "~ dex", "weights": "cell"}, TypeError, "numeric sample weights"),
        ("limma", {"design": "~ dex", "weights": "nothing"}, KeyError, "neither a layer nor an obs column"),
    ],
)
def test_bad_block_input_raises_and_leaves_adata_unchanged(paired, fn, kwargs, exc, match):
    paired.obs["sample_id"] = paired.obs_names.astype(str)
    paired.obs["withna"] = paired.obs["cell"].astype(object).where(paired.obs["dex"] == "trt")
    before = paired.copy()
    kwargs = {"contrast": ["dex", "trt", "untrt"], **kwargs}
    if fn == "limma":
        kwargs.setdefault("layer", "logcpm")
    with pytest.raises(exc, match=match):
        getattr(bk.tl, fn)(paired, **kwargs)
    assert_adata_equal(paired, before)


def test_fixtures_are_small():
    for p in (FIXTURES / "airway" / "r_current").glob("limma_*"):
        assert p.stat().st_size < 200_000, p
