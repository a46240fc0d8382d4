"""bk.pp.combat and bk.pp.combat_seq: parity with sva 3.46, real-data properties, bad input.

Parity (R references in ../shared/data, skipped when absent):
* bladderbatch 22,283 × 57, ``ComBat(e, batch, model.matrix(~cancer))``: parametric on all genes
  and non-parametric on the first 2,000 genes (measured max |diff| ~1.5e-13 for both);
* pasilla 9,819 × 7 (row sums > 10), ``ComBat_seq(counts, batch = type, group = condition)``: every
  adjusted count equal to R's (the reference is also committed in tests/fixtures/pasilla, and
  pasilla is bundled, so this one runs on a fresh clone).

The committed bladderbatch fixture (first 500 genes) can not be compared with R: ComBat's priors
(and the non-parametric integration) use all genes, so a gene subset gives other numbers. It is
used for properties that hold on real data.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, read_ref, roundtrip, shared_path
from helpers import assert_adata_equal

import bulkpy as bk
from bulkpy._stats import combat as _cb
from bulkpy._stats.edger import nb as _nb

# --------------------------------------------------------------------------------------------
# data


def _bladder(expr_path, pheno_path, n_genes=None):
    e = pd.read_csv(expr_path, index_col=0, nrows=n_genes)
    ph = pd.read_csv(pheno_path, index_col=0)
    obs = pd.DataFrame(
        {"batch": pd.Categorical(ph["batch"].astype(str)), "cancer": pd.Categorical(ph["cancer"].astype(str))},
        index=ph.index.astype(str),
    )
    a = ad.AnnData(X=e.T.to_numpy(dtype=np.float64), obs=obs)
    a.var_names = e.index.astype(str)
    return a


@pytest.fixture(scope="module")
def _bladder_full():
    return _bladder(shared_path("bladderbatch", "expression_log2.csv.gz"), shared_path("bladderbatch", "pheno.csv"))


@pytest.fixture(scope="module")
def _bladder500():
    full = SHARED / "bladderbatch"
    if (full / "expression_log2.csv.gz").exists():
        return _bladder(full / "expression_log2.csv.gz", full / "pheno.csv", n_genes=500)
    return _bladder(FIXTURES / "bladderbatch" / "expression_log2_head500.csv.gz", FIXTURES / "bladderbatch" / "pheno.csv")


@pytest.fixture
def bladder500(_bladder500):
    return _bladder500.copy()


@pytest.fixture(scope="module")
def _pasilla10():
    a = bk.datasets.pasilla()
    return a[:, a.layers["counts"].sum(axis=0) > 10].copy()


@pytest.fixture
def pasilla10(_pasilla10):
    return _pasilla10.copy()


@pytest.fixture(scope="module")
def _pasilla_seq(_pasilla10):
    """ComBat-seq of the filtered pasilla data, computed once for the tests that only read it."""
    return bk.pp.combat_seq(_pasilla10, batch="type", group="condition", copy=True)


def _small_log(seed=0, n_per=(4, 5, 6), genes=200):
    rng = np.random.default_rng(seed)
    batch = np.repeat([f"b{i}" for i in range(len(n_per))], n_per)
    n = batch.size
    cond = np.tile(["ctl", "trt"], n)[:n]
    shift = rng.normal(0, 1, (len(n_per), genes))
    scale = rng.uniform(0.5, 2, (len(n_per), genes))
    codes = np.unique(batch, return_inverse=True)[1]
    x = 8 + rng.normal(0, 1, (n, genes)) * scale[codes] + shift[codes] + (cond == "trt")[:, None] * 0.8
    obs = pd.DataFrame({"batch": pd.Categorical(batch), "cond": pd.Categorical(cond)}, index=[f"s{i}" for i in range(n)])
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(genes)]))


# --------------------------------------------------------------------------------------------
# parity with sva


@pytest.mark.parity
def test_combat_parametric_matches_sva(_bladder_full):
    a = _bladder_full.copy()
    ref = read_ref("bladderbatch", "combat_parametric.csv.gz")
    bk.pp.combat(a, batch="batch", covariates=["cancer"])
    assert list(ref.index) == list(a.var_names) and list(ref.columns) == list(a.obs_names)
    diff = np.abs(a.layers["combat"] - ref.T.to_numpy())
    # measured 1.5e-13 (R 4.2.2 / sva 3.46); the parametric iteration stops after the same rounds as R
    assert diff.max() < 1e-9
    assert a.uns["combat"]["priors"]["iterations"].tolist() == [7, 5, 14, 32, 5]


@pytest.mark.parity
def test_combat_nonparametric_matches_sva(_bladder_full):
    a = _bladder_full[:, :2000].copy()
    ref = read_ref("bladderbatch", "combat_nonparametric_head2000.csv.gz")
    bk.pp.combat(a, batch="batch", covariates="~ cancer", parametric=False)
    assert list(ref.index) == list(a.var_names)
    diff = np.abs(a.layers["combat"] - ref.T.to_numpy())
    # measured 1.3e-13: sva's int.eprior draws no random numbers (the 'seed 1' of the script is unused)
    assert diff.max() < 1e-9


@pytest.mark.parity
def test_combat_seq_matches_sva(_pasilla10, _pasilla_seq):
    ref = read_ref("pasilla", "combat_seq_type_condition_rowsum10.csv.gz")
    got = pd.DataFrame(_pasilla_seq.layers["combat_seq"].T, index=_pasilla10.var_names, columns=_pasilla10.obs_names)
    got = got.loc[ref.index, ref.columns].to_numpy()
    r = ref.to_numpy(dtype=np.float64)
    assert (r != _pasilla10[:, ref.index].layers["counts"].T).mean() > 0.8  # the reference really adjusts
    # measured: all 68,733 counts identical to R's. Allow a handful of ties at quantile boundaries
    # (p within rounding of a distribution-function step) to fall the other way on another libm.
    assert np.sum(got != r) <= 5
    assert np.max(np.abs(got - r)) <= 1


# --------------------------------------------------------------------------------------------
# properties on real data (committed fixture)


def _ls_coefs(a, y):
    b = a.obs["batch"].cat.codes.to_numpy()
    c = a.obs["cancer"].astype(str).to_numpy()
    levels = np.unique(c)
    design = np.hstack([np.eye(b.max() + 1)[b], np.column_stack([(c == lv).astype(float) for lv in levels[1:]])])
    return np.linalg.lstsq(design, y, rcond=None)[0], b.max() + 1


def test_combat_removes_batch_keeps_cancer(bladder500):
    a = bladder500
    bk.pp.combat(a, batch="batch", covariates=["cancer"])
    before, nb = _ls_coefs(a, a.X)
    after, _ = _ls_coefs(a, a.layers["combat"])
    # batch coefficients (given cancer) shrink from 0.36 to 0.06 on average
    assert after[:nb].std(axis=0).mean() < 0.25 * before[:nb].std(axis=0).mean()
    # batch x cancer is saturated by the additive model here (7 cells, 7 coefficients), so the
    # covariate effect is kept exactly
    np.testing.assert_allclose(after[nb:], before[nb:], atol=1e-10)
    assert np.isfinite(a.layers["combat"]).all()
    t = a.varm["combat"]
    assert t["adjusted"].all() and list(t.columns[:5]) == [f"gamma_hat_{i}" for i in range(1, 6)]


def test_combat_without_covariates_equalises_batch_means(bladder500):
    a = bladder500
    bk.pp.combat(a, batch="batch")
    b = a.obs["batch"].cat.codes.to_numpy()
    m0 = np.vstack([a.X[b == k].mean(axis=0) for k in range(5)]).var(axis=0).mean()
    m1 = np.vstack([a.layers["combat"][b == k].mean(axis=0) for k in range(5)]).var(axis=0).mean()
    assert m1 < 0.1 * m0  # 0.124 -> 0.009


def test_combat_nonparametric_close_to_parametric(bladder500):
    a = bladder500
    bk.pp.combat(a, batch="batch", covariates=["cancer"], key_added="par")
    bk.pp.combat(a, batch="batch", covariates=["cancer"], parametric=False, key_added="npar")
    d = np.abs(a.layers["par"] - a.layers["npar"])
    assert 0 < np.median(d) < 0.05


def test_combat_ref_batch_and_mean_only(bladder500):
    a = bladder500
    bk.pp.combat(a, batch="batch", covariates=["cancer"], ref_batch="2", key_added="ref")
    r = (a.obs["batch"] == "2").to_numpy()
    np.testing.assert_array_equal(a.layers["ref"][r], a.X[r])
    assert not np.allclose(a.layers["ref"][~r], a.X[~r])
    assert a.uns["ref"]["params"]["ref_batch"] == "2"
    # ref_batch given as the integer the user may have in mind
    bk.pp.combat(a, batch="batch", covariates=["cancer"], ref_batch=2, key_added="ref2")
    np.testing.assert_array_equal(a.layers["ref2"], a.layers["ref"])
    bk.pp.combat(a, batch="batch", covariates=["cancer"], mean_only=True, key_added="mo")
    t = a.varm["mo"]
    assert (t.filter(like="delta_star").to_numpy() == 1).all()
    # mean-only: each gene is shifted by one constant per batch (gamma_star x pooled sd), no rescaling
    shift = a.layers["mo"] - a.X
    b = a.obs["batch"].cat.codes.to_numpy()
    for k in range(5):
        np.testing.assert_allclose(shift[b == k], np.broadcast_to(shift[b == k][:1], shift[b == k].shape), atol=1e-12)
    np.testing.assert_allclose(shift[b == 0][0], -t["gamma_star_1"] * np.sqrt(t["var_pooled"]), atol=1e-12)
    assert np.isnan(a.uns["mo"]["priors"]["a_prior"]).all()


def test_combat_roundtrip_and_copy(bladder500, tmp_h5ad):
    a = bladder500
    orig = a.copy()
    out = bk.pp.combat(a, batch="batch", covariates=["cancer"], copy=True)
    assert_adata_equal(a, orig)
    assert "combat" in out.layers and "combat" not in a.layers
    back = roundtrip(out, tmp_h5ad)
    np.testing.assert_array_equal(back.layers["combat"], out.layers["combat"])
    pd.testing.assert_frame_equal(back.varm["combat"], out.varm["combat"])
    p = back.uns["combat"]["params"]
    assert p["method"] == "ComBat" and p["batch"] == "batch" and list(p["covariates"]) == ["cancer"]
    assert p["ref_batch"] == "None"
    pd.testing.assert_frame_equal(back.uns["combat"]["priors"], out.uns["combat"]["priors"], check_dtype=False)


# --------------------------------------------------------------------------------------------
# synthetic edge cases


def test_combat_constant_gene_within_batch_left_unchanged():
    a = _small_log()
    a.X[a.obs["batch"] == "b1", 3] = 5.0
    bk.pp.combat(a, batch="batch", covariates=["cond"])
    np.testing.assert_array_equal(a.layers["combat"][:, 3], a.X[:, 3])
    assert not a.varm["combat"]["adjusted"].iloc[3]
    assert a.varm["combat"]["adjusted"].drop(index="g3").all()
    assert a.uns["combat"]["params"]["n_genes_constant_in_a_batch"] == 1


def test_combat_missing_values():
    a = _small_log(genes=120)
    a.X[0, 5] = np.nan
    a.X[7, 9] = np.nan
    bk.pp.combat(a, batch="batch", covariates=["cond"])
    c = a.layers["combat"]
    assert np.isnan(c[0, 5]) and np.isnan(c[7, 9]) and np.isfinite(c).sum() == c.size - 2
    assert a.uns["combat"]["params"]["missing_values"]
    # the per-gene fit on the observed samples is ordinary least squares on those samples
    design = np.column_stack([np.ones(a.n_obs), a.obs["cond"].cat.codes.to_numpy()])
    beta = _cb._masked_lstsq(design, a.X, ~np.isnan(a.X))
    obs = ~np.isnan(a.X[:, 5])
    np.testing.assert_allclose(beta[:, 5], np.linalg.lstsq(design[obs], a.X[obs, 5], rcond=None)[0], rtol=1e-10)
    # the non-parametric integration skips missing values too
    bk.pp.combat(a, batch="batch", covariates=["cond"], parametric=False, key_added="np")
    assert np.isnan(a.layers["np"][0, 5]) and np.isfinite(a.layers["np"]).sum() == c.size - 2
    # batch effect still removed for the gene with a missing value
    b = a.obs["batch"].cat.codes.to_numpy()
    spread = [np.nanmean(c[b == k, 5]) for k in range(3)]
    raw = [np.nanmean(a.X[b == k, 5]) for k in range(3)]
    assert np.std(spread) < np.std(raw)


def test_combat_single_sample_batch():
    a = _small_log(n_per=(1, 5, 6))
    before = a.copy()
    with pytest.raises(ValueError, match="single sample.*mean_only=True"):
        bk.pp.combat(a, batch="batch")
    assert_adata_equal(a, before)
    bk.pp.combat(a, batch="batch", mean_only=True)
    assert a.uns["combat"]["params"]["mean_only"]
    assert np.isfinite(a.layers["combat"]).all()


def test_combat_errors_leave_adata_unchanged():
    a = _small_log()
    a.obs["batch_copy"] = a.obs["batch"].astype(str)
    a.obs["age"] = np.arange(a.n_obs, dtype=float)
    before = a.copy()
    cases = [
        (KeyError, "not a column of adata.obs", dict(batch="run")),
        (KeyError, "layer 'logcpm' not found", dict(batch="batch", layer="logcpm")),
        (ValueError, "'batch_copy' is confounded with batch", dict(batch="batch", covariates=["batch_copy"])),
        (ValueError, "include the batch column", dict(batch="batch", covariates=["batch"])),
        (ValueError, "is not a batch", dict(batch="batch", ref_batch="b9")),
        (KeyError, "covariate 'sex'", dict(batch="batch", covariates=["sex"])),
        (TypeError, "parametric must be True or False", dict(batch="batch", parametric="yes")),
        (ValueError, "contains '/'", dict(batch="batch", key_added="a/b")),
    ]
    for exc, msg, kw in cases:
        with pytest.raises(exc, match=msg):
            bk.pp.combat(a, **kw)
        assert_adata_equal(a, before)
    with pytest.raises(ValueError, match=r"covariates 'batch_copy\[T.b1\]', 'batch_copy\[T.b2\]' are confounded with batch"):
        bk.pp.combat(a, batch="batch", covariates="~ batch_copy")
    assert_adata_equal(a, before)
    # numeric covariate works
    bk.pp.combat(a, batch="batch", covariates=["age", "cond"])
    assert a.uns["combat"]["params"]["covariate_columns"].tolist() == ["age", "cond[T.trt]"]


def test_combat_covariates_confounded_with_each_other():
    a = _small_log()
    a.obs["cond2"] = a.obs["cond"].astype(str)
    with pytest.raises(ValueError, match="confounded with each other"):
        bk.pp.combat(a, batch="batch", covariates=["cond", "cond2"])


def test_combat_rejects_counts_and_inf(pasilla10):
    before = pasilla10.copy()
    with pytest.raises(ValueError, match="looks like raw counts.*combat_seq"):
        bk.pp.combat(pasilla10, batch="type", layer="counts")
    assert_adata_equal(pasilla10, before)
    with np.errstate(divide="ignore"):
        pasilla10.layers["log"] = np.log2(pasilla10.layers["counts"])  # log of 0 -> -inf
    with pytest.raises(ValueError, match="infinite"):
        bk.pp.combat(pasilla10, batch="type", layer="log")


def test_combat_single_batch_and_missing_batch():
    a = _small_log()
    a.obs["one"] = "x"
    with pytest.raises(ValueError, match="single level"):
        bk.pp.combat(a, batch="one")
    a.obs["gappy"] = a.obs["batch"].astype(object)
    a.obs.loc["s0", "gappy"] = None
    with pytest.raises(ValueError, match="missing values"):
        bk.pp.combat(a, batch="gappy")


def test_it_sol_stops_like_sva():
    """The parametric iteration stops at the first round whose largest relative change is <= conv."""
    rng = np.random.default_rng(1)
    s = rng.normal(0.3, 1.2, (6, 300))
    g, d = s.mean(axis=0), s.var(axis=0, ddof=1)
    a, b = _cb._moments_prior(d)
    gs, ds, it = _cb.it_sol(s, g, d, g.mean(), g.var(ddof=1), a, b)
    g2, d2, it2 = _cb.it_sol(s, g, d, g.mean(), g.var(ddof=1), a, b, conv=1e-12)
    assert it2 > it
    assert np.max(np.abs(gs - g2) / np.abs(g2)) < 1e-3


# --------------------------------------------------------------------------------------------
# ComBat-seq


def test_combat_seq_output(pasilla10, _pasilla_seq):
    out = _pasilla_seq
    c = out.layers["combat_seq"]
    x = pasilla10.layers["counts"]
    assert (c == np.round(c)).all() and (c >= 0).all()
    small = x <= 1
    np.testing.assert_array_equal(c[small], x[small])  # counts of 0 and 1 are kept
    t = out.varm["combat_seq"]
    assert set(t.columns) >= {"gamma_hat_paired_end", "gamma_hat_single_read", "phi_hat_paired_end", "phi_star", "adjusted"}
    np.testing.assert_allclose(t["phi_star"], t[["phi_hat_paired_end", "phi_hat_single_read"]].mean(axis=1))
    p = out.uns["combat_seq"]["params"]
    assert p["dispersion_model"]["paired_end"] == "covariates"
    # edgeR common dispersions within each batch (R: 0.00488, 0.0275)
    assert abs(p["common_dispersion"]["paired_end"] - 0.00488289) < 1e-6
    assert abs(p["common_dispersion"]["single_read"] - 0.02747174) < 1e-6


def test_combat_seq_roundtrip(_pasilla_seq, tmp_h5ad):
    back = roundtrip(_pasilla_seq, tmp_h5ad)
    np.testing.assert_array_equal(back.layers["combat_seq"], _pasilla_seq.layers["combat_seq"])
    pd.testing.assert_frame_equal(back.varm["combat_seq"], _pasilla_seq.varm["combat_seq"])
    p = back.uns["combat_seq"]["params"]
    assert p["group"] == "condition" and not p["shrink"] and p["covariates"] == "None"


def test_combat_seq_zero_in_a_batch_unchanged():
    rng = np.random.default_rng(3)
    x = rng.negative_binomial(5, 0.05, size=(8, 150)).astype(float)
    x[:4, 7] = 0
    obs = pd.DataFrame({"batch": ["a"] * 4 + ["b"] * 4, "g": ["x", "y"] * 4}, index=[f"s{i}" for i in range(8)])
    a = ad.AnnData(X=x.copy(), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(150)]))
    a.layers["counts"] = x
    bk.pp.combat_seq(a, batch="batch", group="g")
    np.testing.assert_array_equal(a.layers["combat_seq"][:, 7], x[:, 7])
    assert not a.varm["combat_seq"]["adjusted"].iloc[7]
    assert a.uns["combat_seq"]["params"]["n_genes_zero_in_a_batch"] == 1


def test_combat_seq_shrink(pasilla10):
    a = pasilla10[:, :400].copy()
    bk.pp.combat_seq(a, batch="type", group="condition", shrink=True, key_added="s")
    t = a.varm["s"]
    assert not np.allclose(t["gamma_star_paired_end"], t["gamma_hat_paired_end"])
    # shrinkage pulls the batch effects together
    assert t["gamma_star_paired_end"].var() < t["gamma_hat_paired_end"].var()
    bk.pp.combat_seq(a, batch="type", group="condition", shrink=True, gene_subset_n=50, seed=1, key_added="s1")
    bk.pp.combat_seq(a, batch="type", group="condition", shrink=True, gene_subset_n=50, seed=1, key_added="s2")
    np.testing.assert_array_equal(a.layers["s1"], a.layers["s2"])


def test_combat_seq_errors_leave_adata_unchanged(pasilla10):
    a = pasilla10
    a.layers["logcpm"] = np.log2(a.layers["counts"] + 0.5)
    a.obs["typ2"] = a.obs["type"].astype(str)
    a.obs["solo"] = ["a", "b", "b", "b", "c", "c", "c"]
    before = a.copy()
    cases = [
        (ValueError, "log-transformed.*bk.pp.combat", dict(batch="type", layer="logcpm")),
        (ValueError, "single sample.*at least two", dict(batch="solo")),
        (ValueError, "'typ2' is confounded with batch", dict(batch="type", group="typ2")),
        (KeyError, "not a column of adata.obs", dict(batch="lane")),
        (KeyError, "group 'cond'", dict(batch="type", group="cond")),
        (ValueError, "only applies with shrink=True", dict(batch="type", gene_subset_n=10)),
    ]
    for exc, msg, kw in cases:
        with pytest.raises(exc, match=msg):
            bk.pp.combat_seq(a, **kw)
        assert_adata_equal(a, before)
    a.layers["frac"] = a.layers["counts"] + 0.25
    with pytest.raises(ValueError, match="non-integer"):
        bk.pp.combat_seq(a, batch="type", layer="frac")


# --------------------------------------------------------------------------------------------
# edgeR pieces


def test_unit_deviance_branches():
    y = np.array([0.0, 3.0, 10.0, 500.0])
    mu = np.array([0.5, 2.0, 12.0, 480.0])
    # NB branch against the closed form; Poisson limit for tiny dispersion
    d = _nb.unit_deviance(y, mu, 0.1)
    yy, mm = y + 1e-8, mu + 1e-8
    ref = 2 * (yy * np.log(yy / mm) + (yy + 10) * np.log((mm + 10) / (yy + 10)))
    np.testing.assert_allclose(d, ref, rtol=1e-12)
    pois = 2 * (yy * np.log(yy / mm) - (yy - mm))
    np.testing.assert_allclose(_nb.unit_deviance(y, mu, 1e-9), pois, rtol=1e-6)


def test_brent_matches_known_minimum():
    from bulkpy._stats._optimize import fmin

    x = fmin(lambda t: (t - 0.7) ** 2 + 1, 0.0, 2.0, 1e-8)
    assert abs(x - 0.7) < 1e-6


def test_maximize_interpolant_recovers_quadratic_peak():
    x = np.linspace(-6, 6, 11)
    peaks = np.array([-2.3, 0.0, 1.7, 4.1])
    t = x[None, :] - peaks[:, None]
    # the FMM spline reproduces a cubic exactly, so the maximiser is found exactly
    y = -(t**2) + 0.01 * t**3
    np.testing.assert_allclose(_nb.maximize_interpolant(x, y), peaks, atol=1e-10)
    # an exact quadratic has no cubic term: edgeR's root formula divides by zero and keeps the grid point
    np.testing.assert_allclose(_nb.maximize_interpolant(x, -(t**2))[0], -2.4)


def test_levenberg_agrees_with_one_way_fit():
    rng = np.random.default_rng(5)
    y = rng.negative_binomial(4, 0.02, size=(300, 6)).astype(float)
    design = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1]])
    off = np.log(y.sum(axis=0))
    c1, mu1 = _nb.fit_one_way(y, design, off, 0.1)
    c2, mu2, dev, it, failed = _nb.fit_levenberg(y, design, off, 0.1)
    assert not failed.any()
    np.testing.assert_allclose(c2, c1, atol=1e-4)
    np.testing.assert_allclose(mu2, mu1, rtol=1e-4)


def test_qnbinom_inverts_pnbinom():
    rng = np.random.default_rng(2)
    size = 1 / rng.uniform(0.001, 0.5, 2000)
    mu = rng.uniform(0.5, 5000, 2000)
    q = rng.integers(0, 3000, 2000).astype(float)
    p = _nb.pnbinom(q, size, mu)
    ok = p < 1 - 1e-12
    np.testing.assert_array_equal(_nb.qnbinom(p[ok], size[ok], mu[ok]), q[ok])
