"""limma 3.68's variance moderation (bulkpy._stats.limma.squeeze_var / ebayes): the
``fitFDistUnequalDF1`` estimator chosen by ``legacy = NULL`` when residual df differ.

References: ``tests/fixtures/limma_unequal_df`` (made by its ``make_refs.R`` with R 4.6.2 /
limma 3.68.5): ``lmFit`` on 600 simulated genes with 8% missing values (so residual df 0-6) →
``eBayes`` default / ``legacy = TRUE`` / robust / trend / trend + robust, ``treat``; and
``squeezeVar`` on fractional df with and without a covariate (the weighted lowess trend).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from helpers import rel_diff

from bulkpy._stats.limma import ebayes, lm_fit, treat
from bulkpy._stats.limma.weighted_lowess import loess_fit, weighted_lowess

# the module itself (the package re-exports the function under the same name)
SV = importlib.import_module("bulkpy._stats.limma.squeeze_var")
REFS = FIXTURES / "limma_unequal_df"


def _read(name):
    return pd.read_csv(REFS / name, index_col=0)


@pytest.fixture(scope="module")
def nan_fit():
    y = _read("input_y.csv.gz")
    X = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one gene has no residual df (R warns too)
        return lm_fit(y.to_numpy().T, X)


def _close(ours, ref, tol, what):
    ours = np.broadcast_to(np.asarray(ours, dtype=float), np.shape(ref))
    ref = np.asarray(ref, dtype=float)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=what)
    ok = ~np.isnan(ref)
    r = rel_diff(ours[ok], ref[ok])
    assert r.max() < tol, f"{what}: max relative difference {r.max():.3g}"


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("default", {}),
        ("legacy", {"legacy": True}),
        ("robust", {"robust": True}),
        ("trend", {"trend": True}),
        ("trend_robust", {"trend": True, "robust": True}),
    ],
)
def test_ebayes_unequal_df_matches_limma_368(nan_fit, name, kwargs):
    # observed: ~2e-11 (the references keep 12 significant digits)
    ref = _read("ebayes_refs.csv.gz")
    np.testing.assert_array_equal(nan_fit.df_residual, ref["df_residual"])
    eb = ebayes(nan_fit, **kwargs)
    _close(eb.t[1], ref[f"{name}_t"], 1e-9, "t")
    _close(eb.p_value[1], ref[f"{name}_p"], 1e-9, "p")
    _close(eb.s2_prior, ref[f"{name}_s2_prior"], 1e-9, "s2.prior")
    _close(eb.df_prior, ref[f"{name}_df_prior"], 1e-9, "df.prior")


def test_treat_unequal_df_matches_limma_368(nan_fit):
    ref = _read("ebayes_refs.csv.gz")
    tr = treat(nan_fit, lfc=0.5)
    _close(tr.t[1], ref["treat_t"], 1e-9, "t")
    _close(tr.p_value[1], ref["treat_p"], 1e-9, "p")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("plain", {}), ("cov", {"covariate": True}), ("cov_robust", {"covariate": True, "robust": True})],
)
def test_squeeze_var_fractional_df_matches_limma_368(name, kwargs):
    # fractional df as edgeR 4's adjusted df; with a covariate the location is limma's
    # weightedLowess trend. Observed ~4e-12.
    ref = _read("squeezevar_fractional.csv.gz")
    kwargs = dict(kwargs)
    if kwargs.pop("covariate", False):
        kwargs["covariate"] = ref["covariate"].to_numpy()
    post, prior, dfp = SV.squeeze_var(ref["var"].to_numpy(), ref["df"].to_numpy(), **kwargs)
    _close(post, ref[f"{name}_var_post"], 1e-10, "var.post")
    _close(prior, ref[f"{name}_var_prior"], 1e-10, "var.prior")
    _close(dfp, ref[f"{name}_df_prior"], 1e-10, "df.prior")


def test_legacy_switch_semantics(nan_fit):
    df = nan_fit.df_residual
    assert not SV.choose_legacy(df)  # df 0..6 differ: R picks fitFDistUnequalDF1
    assert SV.choose_legacy(np.full(10, 4.0)) and SV.choose_legacy(np.r_[0.0, 4.0, 4.0])  # df == 0 ignored
    assert SV.choose_legacy(4.0) and not SV.choose_legacy(np.zeros(3))
    new, old = ebayes(nan_fit), ebayes(nan_fit, legacy=True)
    assert ebayes(nan_fit, legacy=False).df_prior == new.df_prior
    assert new.df_prior != old.df_prior
    # equal df: legacy=None is the old estimator, legacy=False the new one
    rng = np.random.default_rng(1)
    v = rng.chisquare(4, 500) / 4 * 0.3
    assert SV.squeeze_var(v, 4.0)[2] == SV.squeeze_var(v, 4.0, legacy=True)[2]
    assert SV.squeeze_var(v, 4.0)[2] != SV.squeeze_var(v, 4.0, legacy=False)[2]
    # giving a span selects the new estimator (R: span non-NULL forces legacy = FALSE)
    a = rng.uniform(0, 10, 500)
    assert np.all(
        SV.squeeze_var(v, 4.0, covariate=a, span=0.5)[1]
        == SV.squeeze_var(v, 4.0, covariate=a, span=0.5, legacy=False)[1]
    )
    # fewer than three variances: no moderation
    post, prior, dfp = SV.squeeze_var([0.1, 0.2], 3.0)
    np.testing.assert_array_equal(post, [0.1, 0.2]) and dfp == 0


def test_logmdigamma_and_fmin():
    from scipy import special
    from scipy.optimize import minimize_scalar

    x = np.array([1e-3, 0.5, 4.999, 5.0, 12.0, 1e3, 1e7])
    ref = np.log(x) - special.digamma(x)
    # scipy's digamma loses digits to cancellation here, hence 1e-10
    np.testing.assert_allclose(SV.logmdigamma(x)[:5], ref[:5], rtol=1e-10)
    big = x[5:]
    np.testing.assert_allclose(
        SV.logmdigamma(big), 1 / (2 * big) + 1 / (12 * big**2) - 1 / (120 * big**4), rtol=1e-14
    )
    assert np.isnan(SV.logmdigamma(np.array([0.0, -1.0]))).all()
    f = lambda u: (u - 0.7) ** 2 + 0.1 * np.sin(5 * u)  # noqa: E731
    ours = SV.fmin(f, 0.0, 2.0)
    assert abs(ours - minimize_scalar(f, bounds=(0, 2), method="bounded", options={"xatol": 1e-10}).x) < 1e-4


def test_weighted_lowess_pieces():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 400)
    y = np.sin(x) + rng.normal(0, 0.1, 400)
    # equal weights make loessFit the unweighted lowess; a straight line is fitted exactly
    w = np.ones(400)
    np.testing.assert_allclose(loess_fit(2 * x + 1, x, w * 3, span=0.3, iterations=1), 2 * x + 1, rtol=1e-12)
    fit = weighted_lowess(x, y, rng.uniform(0.5, 2, 400), span=0.1, iterations=1)
    assert np.abs(fit - np.sin(x)).max() < 0.15
    # few positively weighted points: a weighted straight line
    out = loess_fit(y[:6], x[:6], np.r_[1.0, 2, 3, 4, 5, 6], span=0.3)
    sw = np.sqrt(np.r_[1.0, 2, 3, 4, 5, 6])
    coef = np.linalg.lstsq(np.column_stack([np.ones(6), x[:6]]) * sw[:, None], y[:6] * sw, rcond=None)[0]
    np.testing.assert_allclose(out, coef[0] + coef[1] * x[:6], rtol=1e-12)
