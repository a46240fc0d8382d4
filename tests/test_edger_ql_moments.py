"""The NB unit-deviance moments behind edgeR 4's ``glmQLFit(legacy = FALSE)`` against edgeR 4.10.7.

References in ``tests/fixtures/edger_ql_moments`` (made by ``make_ql_moments.R`` there): edgeR's
``2E/V`` and ``2E^2/V`` on a grid of means and dispersions, read back from its C code, and the
adjusted deviances and df of a simulated fit (``.cxx_compute_adj_vec``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES

from bulkpy._stats.edger import ql
from bulkpy._stats.edger import ql_moments as M

REF = FIXTURES / "edger_ql_moments"


def _read(name):
    # round_trip: the dispersion 0.736 must parse to the double R wrote (edgeR's case boundary)
    return pd.read_csv(REF / name, float_precision="round_trip")


@pytest.fixture(scope="module")
def grid():
    return _read("ql_moments_grid.csv.gz")


def test_moments_match_edger_on_grid(grid):
    mu, phi = grid["mu"].to_numpy(), grid["phi"].to_numpy()
    E, V = M.deviance_moments(mu, phi)
    E_r = grid["kappa"] / grid["alpha"]
    V_r = 2 * grid["kappa"] / grid["alpha"] ** 2
    assert np.all(np.isfinite(E)) and np.all(np.isfinite(V))
    # measured: 1.5e-11 (E, means below 0.01) and 4e-12 (V)
    np.testing.assert_allclose(E, E_r, rtol=5e-11, atol=0)
    np.testing.assert_allclose(V, V_r, rtol=5e-11, atol=0)


def test_weights_zero_below_edger_low_bound():
    tabs = M.moment_tables()
    for phi in (0.0, 0.1, 1.0, 5.0):
        assert M.deviance_weights(1e-40, phi, tabs) == (0.0, 0.0)
        assert M.deviance_weights(0.0, phi, tabs) == (0.0, 0.0)


def test_exact_moments_are_not_edgers(grid):
    """The exact moments differ from edgeR's approximations by up to a few % (and by far more
    above a mean of 5,000 with dispersions near 4): edgeR's own values are needed for parity."""
    g = grid[(grid["phi"] <= 4) & (grid["mu"] > 1e-3)].iloc[::7]
    E, V = M.exact_deviance_moments(g["mu"].to_numpy(), g["phi"].to_numpy())
    rel = np.abs(E / (g["kappa"] / g["alpha"]) - 1)
    assert 1e-5 < rel.max() < 0.1


def test_exact_moments_poisson_and_nb():
    # direct sums over the support, independent of the compiled sum
    from scipy import stats

    for mu, phi in [(0.3, 0.0), (7.0, 0.0), (3.0, 0.5), (40.0, 2.0)]:
        k = np.arange(20000.0)
        if phi == 0:
            p = stats.poisson.pmf(k, mu)
            d = 2 * (np.where(k > 0, k * np.log(np.where(k > 0, k, 1) / mu), 0) - (k - mu))
        else:
            s = 1 / phi
            p = stats.nbinom.pmf(k, s, s / (s + mu))
            kk = np.where(k > 0, k, 1)
            d = 2 * (np.where(k > 0, k * np.log(kk / mu), 0) - (k + s) * np.log((k + s) / (mu + s)))
        e = np.sum(p * d)
        v = np.sum(p * (d - e) ** 2)
        E, V = M.exact_deviance_moments(mu, phi)
        np.testing.assert_allclose([E, V], [e, v], rtol=1e-11)


def test_adjusted_deviance_df_match_edger():
    y = _read("ql_moments_fit_counts.csv.gz").to_numpy(float)
    mu = _read("ql_moments_fit_fitted.csv.gz").to_numpy(float)
    adj = _read("ql_moments_fit_adj.csv.gz")
    X = np.column_stack([np.ones(6), np.repeat([0.0, 1.0], 3)])
    # genes with a group of zeros (a weighted design of lower rank) are the leverages' business
    full = (y[:, :3].sum(axis=1) > 0) & (y[:, 3:].sum(axis=1) > 0)
    y, mu, adj = y[full], mu[full], adj[full]
    dev, df, s2 = ql.adjusted_deviance(y, mu, X, adj["dispersion"].to_numpy(), 1.3)
    # measured: 6e-12, 5e-12, 7e-12
    np.testing.assert_allclose(dev, adj["deviance"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(df, adj["df"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s2, adj["s2"], rtol=1e-10, atol=1e-12)
