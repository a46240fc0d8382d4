"""The moments of the negative binomial unit deviance as edgeR 4.10 evaluates them for
``glmQLFit(legacy = FALSE)`` (``compute_weight``, called by ``compute_adjust_vec`` and
``compute_ave_qd``).

:func:`deviance_weights` gives ``2E/V`` and ``2E^2/V`` at a mean and dispersion from piecewise
Chebyshev interpolants of the moments that :func:`moment_tables` builds once per process from the
moments themselves (about two seconds), following edgeR's construction (below); they agree with
edgeR 4.10.7's values to about 1e-11 (relative).  edgeR's approximations differ from the exact
moments (:func:`exact_deviance_moments`) by up to about 1e-3, and by a few % for dispersions near
4 and means above 5,000, where edgeR stops following the mean.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .._jit import I0, inline, inner, kernel

_LOW = 1e-32  # edgeR's low_bound: observations with smaller means carry no weight

# edgeR's ``compute_weight`` returns ``2E/V`` ("alpha") and ``2E^2/V`` ("kappa") from fixed
# Chebyshev interpolants of the moments, built once by its authors.  Every table is the Chebyshev
# interpolant at the first-kind nodes ``cos(pi (j + 1/2) / n)`` of a moment function on an interval
# (``n`` nodes per axis); the construction is re-done here from the moments themselves, with
# edgeR's intervals, anchors and moment sums:
#
# * Poisson normalisers (used by case 1 for means up to 20): interpolants in the mean, 10 nodes, on
#   the intervals of ``_POIS_BREAKS``; on ``[0, 0.02]`` of the moment divided by ``_small_factor``;
#   from 20 on the asymptotic forms ``1 - 1/(6 mu) - 1/(2 mu^2)`` and ``1 - 0.4/mu^2``.
# * case 1, dispersion below 0.736 (Chebyshev variable ``phi / 0.368 - 1``): for means up to 20,
#   7 x 7 tensor interpolants in (mean, dispersion) of the moment divided by the Poisson
#   normaliser; for means in (20, 60], between anchor means ``a < b``,
#   ``W_b(phi) + (W_a(phi) - W_b(phi)) s(mu)`` times the asymptotic form, where ``W_a`` is the
#   7-node interpolant in the dispersion of the moment over the asymptotic form at mean ``a`` and
#   ``s`` the 7-node interpolant in the mean of that ratio at dispersion 0.736, rescaled to run
#   from 1 at ``a`` to 0 at ``b`` (its moments summed over the counts 0..999); above 60 a 6-node
#   interpolant in the dispersion at one anchor mean per interval, times the asymptotic form.
# * case 2, dispersion in [0.736, 4.001) (variable ``phi / 2 - 1``): for means below 50, 10 x 10
#   tensor interpolants of the moment (on ``[0, 0.01]`` divided by ``_small_factor``; edgeR reads
#   that table at ``mu / 0.01 - 1``, i.e. on its lower half only); from 50 to 5,000 the two-anchor
#   form in ``x = p / mu + q`` with the profile at dispersion 4; from 5,000 on the table at 5,000.
# * dispersion of 4.001 and more (never in glmQLFit, which caps the dispersion at 4): the moments
#   summed over the counts ``0 .. min(mu^2 phi + 10, 50) - 1``.
#
# Some of edgeR's tables come from moments summed over the first 100 or 1,000 counts only, not
# renormalised (``E = sum f d``, ``V = sum f (d - E)^2``); ``nmax`` below records which.

_POIS_BREAKS = np.array([[0.0, 0.02, 0.4249, 1.5, 3.544, 20.0], [0.0, 0.02, 0.4966, 1.5, 4.2714, 20.0]])
_C1_PHI = 0.736  # case 1: dispersion in [0, 0.736)
_C1_LO_BREAKS = np.array([[0.0, 0.01, 0.33, 1.77, 4.0, 10.0, 20.0], [0.0, 0.01, 0.33, 1.30, 4.0, 10.0, 20.0]])
_C1_MID_ANCHORS = np.array([20.0, 25.0, 30.0, 40.0, 60.0])
# above 60: (lower end of the interval, anchor mean, mean of the asymptotic form it is divided by)
_C1_HI = (
    ((60.0, 68.0, 68.0), (80.0, 100.0, 100.0), (120.0, 120.0, 120.0)),
    ((60.0, 70.0, 70.0), (80.0, 100.0, 100.0), (120.0, 150.0, 150.0), (250.0, 500.0, 150.0)),
)
_C1_HI_LOWER = np.array([[60.0, 80.0, 120.0, np.inf], [60.0, 80.0, 120.0, 250.0]])
_C2_PHI = 4.001  # case 2: dispersion in [0.736, 4.001)
_C2_LO_BREAKS = np.array(
    [[0.0, 0.01, 0.43, 3.62, 10.0, 30.0, 50.0], [0.0, 0.01, 0.50, 3.88, 10.0, 30.0, 50.0]]
)
_C2_LO_NMAX = (-1, -1, 99, 999, -1, -1)  # counts summed per piece (-1: all)
_C2_HI_ANCHORS = np.array([50.0, 100.0, 1000.0, 5000.0])
_C2_HI_X = np.array([[200.0, -3.0], [2000.0 / 9.0, -11.0 / 9.0], [2500.0, -1.5]])  # x = p / mu + q


@kernel
def _dev_moment_sums(mu, phi, nmax):
    """``E = sum f(y) d(y)`` and ``V = sum f(y) (d(y) - E)^2`` over ``y = 0 .. nmax`` for the
    NB(mean ``mu``, dispersion ``phi``) pmf ``f`` (Poisson for ``phi = 0``) and unit deviance
    ``d``; with ``nmax < 0`` over all counts (the exact moments), summed until the tail is below
    1e-17 of the sums. The pmf runs by its ratio recurrence, recomputed from ``lgamma`` every 64
    counts; the sums are compensated."""
    pois = phi <= 0.0
    s = 0.0 if pois else 1.0 / phi
    r = 0.0 if pois else mu / (mu + s)
    logr = 0.0 if pois else math.log(r)
    lp0 = -mu if pois else -s * math.log1p(mu * phi)
    s0 = s1 = s2 = 0.0
    c0 = c1 = c2 = 0.0
    sd = math.sqrt(mu + phi * mu * mu)
    p = 0.0
    k = 0
    while True:
        y = float(k)
        if k % 64 == 0:
            if pois:
                lp = lp0 + (y * math.log(mu) if k > 0 else 0.0) - math.lgamma(y + 1.0)
            else:
                lp = lp0 + math.lgamma(y + s) - math.lgamma(s) - math.lgamma(y + 1.0) + y * logr
            p = math.exp(lp)
        if pois:
            d = 2.0 * mu if k == 0 else 2.0 * (y * math.log1p((y - mu) / mu) - (y - mu))
        elif k == 0:
            d = 2.0 * s * math.log1p(mu * phi)
        else:
            d = 2.0 * (y * math.log1p((y - mu) / mu) - (y + s) * math.log1p((y - mu) / (mu + s)))
        if d < 0.0:
            d = 0.0
        # Neumaier-compensated sums of p, p d, p d^2
        v = p
        t = s0 + v
        c0 += (s0 - t) + v if abs(s0) >= abs(v) else (v - t) + s0
        s0 = t
        v = p * d
        t = s1 + v
        c1 += (s1 - t) + v if abs(s1) >= abs(v) else (v - t) + s1
        s1 = t
        v = p * d * d
        t = s2 + v
        c2 += (s2 - t) + v if abs(s2) >= abs(v) else (v - t) + s2
        s2 = t
        q = mu / (y + 1.0) if pois else (y + s) / (y + 1.0) * r  # f(y + 1) / f(y)
        if nmax >= 0:
            if k >= nmax:
                break
        elif y > mu + 10.0 * sd and q < 1.0:
            qb = q if pois or q > r else r  # a bound on the ratios further out
            tail = p * (1.0 + d * d) / (1.0 - qb)
            if tail < 1e-17 * (s0 + s2) or k > 100_000_000:
                break
        p *= q
        k += 1
    e = s1 + c1
    v = (s2 + c2) - e * e * (2.0 - (s0 + c0))
    return e, v


def exact_deviance_moments(mu, phi):
    """Exact mean and variance of the NB unit deviance at mean ``mu`` and dispersion ``phi``
    (Poisson for ``phi = 0``), elementwise."""
    mu, phi = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(phi, dtype=np.float64))
    out = np.empty(mu.shape + (2,))
    _exact_kernel(np.ascontiguousarray(mu).ravel(), np.ascontiguousarray(phi).ravel(), out.reshape(-1, 2))
    return out[..., 0], out[..., 1]


@kernel
def _exact_kernel(mu, phi, out):
    for i in range(mu.size):
        out[i, 0], out[i, 1] = _dev_moment_sums(mu[i], phi[i], -1)


def _weights_from_sums(mu, phi, nmax=-1):
    e, v = _dev_moment_sums(float(mu), float(phi), nmax)
    return np.array([2.0 * e / v, 2.0 * e * e / v])


def _nodes(n):
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _cheb_coef(values, axis=-1):
    """Chebyshev coefficients of the interpolant through values at the first-kind nodes."""
    values = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    n = values.shape[-1]
    j = np.arange(n)
    basis = np.cos(np.pi * np.outer(j, j + 0.5) / n) * np.where(j == 0, 1.0, 2.0)[:, None] / n
    return np.moveaxis(values @ basis.T, -1, axis)


def _on(a, b, t):
    return 0.5 * (a + b) + 0.5 * (b - a) * t


def _small_factor(which, mu):
    """The factor the tables on the smallest means are divided by: ``L / (1 + L)^2`` for alpha and
    ``mu (L / (1 + L))^2`` for kappa, ``L = log(mu)``."""
    lm = np.log(mu)
    return lm / (1.0 + lm) ** 2 if which == 0 else mu * (lm / (1.0 + lm)) ** 2


def _asym(which, mu):
    return 1.0 - 1.0 / (6.0 * mu) - 1.0 / (2.0 * mu * mu) if which == 0 else 1.0 - 0.4 / (mu * mu)


@lru_cache(maxsize=1)
def moment_tables():
    """edgeR's Chebyshev tables rebuilt from the moments (see the comment above ``_POIS_BREAKS``);
    computed once per process, about two seconds."""
    memo: dict = {}

    def w(mu, phi, nmax=-1):
        key = (float(mu), float(phi), nmax)
        if key not in memo:
            memo[key] = _weights_from_sums(mu, phi, nmax)
        return memo[key]

    n10, n7, n6 = _nodes(10), _nodes(7), _nodes(6)
    pois = np.empty((2, 5, 10))
    for i in range(2):
        for j in range(5):
            a, b = _POIS_BREAKS[i, j], _POIS_BREAKS[i, j + 1]
            mus = _on(a, b, n10)
            v = np.array([w(m, 0.0)[i] for m in mus])
            pois[i, j] = _cheb_coef(v / _small_factor(i, mus) if j == 0 else v)
    phis1 = _on(0.0, _C1_PHI, n7)
    c1lo = np.empty((2, 6, 7, 7))
    for i in range(2):
        for j in range(6):
            mus = _on(_C1_LO_BREAKS[i, j], _C1_LO_BREAKS[i, j + 1], n7)
            norm = np.array([_pois_weight(i, m, pois) for m in mus])
            v = np.array([[w(m, p)[i] for p in phis1] for m in mus]) / norm[:, None]
            c1lo[i, j] = _cheb_coef(_cheb_coef(v, 0), 1)
    c1mid = np.empty((2, 4, 3, 7))
    for i in range(2):
        anchors = [_cheb_coef(np.array([w(a, p)[i] for p in phis1]) / _asym(i, a)) for a in _C1_MID_ANCHORS]
        for j in range(4):
            a, b = _C1_MID_ANCHORS[j], _C1_MID_ANCHORS[j + 1]
            g = np.array([w(m, _C1_PHI, 999)[i] / _asym(i, m) for m in (a, b, *_on(a, b, n7))])
            c1mid[i, j] = (anchors[j + 1], anchors[j], _cheb_coef((g[2:] - g[1]) / (g[0] - g[1])))
    c1hi = np.zeros((2, 4, 6))
    phis6 = _on(0.0, _C1_PHI, n6)
    for i in range(2):
        for j, (_, m0, mn) in enumerate(_C1_HI[i]):
            c1hi[i, j] = _cheb_coef(np.array([w(m0, p)[i] for p in phis6])) / _asym(i, mn)
    phis2 = _on(0.0, 4.0, n10)
    c2lo = np.empty((2, 6, 10, 10))
    for i in range(2):
        for j in range(6):
            mus = _on(_C2_LO_BREAKS[i, j], _C2_LO_BREAKS[i, j + 1], n10)
            v = np.array([[w(m, p, _C2_LO_NMAX[j])[i] for p in phis2] for m in mus])
            if j == 0:
                v = v / _small_factor(i, mus)[:, None]
            c2lo[i, j] = _cheb_coef(_cheb_coef(v, 0), 1)
    c2hi = np.empty((2, 4, 3, 10))
    for i in range(2):
        anchors = [_cheb_coef(np.array([w(a, p)[i] for p in phis2])) for a in _C2_HI_ANCHORS]
        for j in range(3):
            lo, hi = _C2_HI_ANCHORS[j], _C2_HI_ANCHORS[j + 1]
            pp, qq = _C2_HI_X[j]
            g = np.array([w(m, 4.0)[i] for m in (lo, hi, *(pp / (n10 - qq)))])
            c2hi[i, j] = (anchors[j], anchors[j + 1], _cheb_coef((g[2:] - g[0]) / (g[1] - g[0])))
        c2hi[i, 3] = (anchors[3], anchors[3], np.zeros(10))
    return pois, c1lo, c1mid, c1hi, c2lo, c2hi


@inner
def _clenshaw(c, x):
    b1 = 0.0
    b2 = 0.0
    for j in range(c.size - 1, 0, -1):
        b1, b2 = 2.0 * x * b1 - b2 + c[j], b1
    return x * b1 - b2 + c[0]


# one flat table per dispersion (:func:`table_space`): the dispersion's part of the tables
# (:func:`dispersion_tables`) then the tables read per observation, so that the per-observation
# functions take one array (numba counts references to every array argument at every call; they
# are also inlined, see ``_jit.py``)
_LO, _AB, _HI, _POIS, _C1MID, _C2HI, _TABLE = 0, 120, 136, 144, 244, 412, 652
I7 = np.int64(7)
I10 = np.int64(10)


@inner
def _clenshaw_at(c, off, n, x):
    """:func:`_clenshaw` of the coefficients ``c[off:off + n]`` (``c`` flat: no array view per
    observation, whose reference counting cost more than the sum itself)."""
    b1 = 0.0
    b2 = 0.0
    for j in range(off + n - 1, off, -1):
        b1, b2 = 2.0 * x * b1 - b2 + c[j], b1
    return x * b1 - b2 + c[off]


@inner
def _piece_at(breaks, w, mu):
    """:func:`_piece` on the row ``w`` of a 2-d table of breaks."""
    j = 0
    while j < breaks.shape[1] - 2 and mu >= breaks[w, j + 1]:
        j += 1
    return j


@inner
def _small_factor_nb(which, mu):
    lm = math.log(mu)
    if which == 0:
        return lm / ((1.0 + lm) * (1.0 + lm))
    q = lm / (1.0 + lm)
    return mu * q * q


@inner
def _asym_nb(which, mu):
    if which == 0:
        return 1.0 - 1.0 / (6.0 * mu) - 1.0 / (2.0 * mu * mu)
    return 1.0 - 0.4 / (mu * mu)


@inner
def _pois_at(which, mu, pois, off):
    """The Poisson normaliser at ``mu`` from the flattened ``pois`` table at ``pois[off:]``."""
    if mu >= 20.0:
        return _asym_nb(which, mu)
    br = _POIS_BREAKS
    j = _piece_at(br, which, mu)
    x = (2.0 * mu - br[which, j] - br[which, j + 1]) / (br[which, j + 1] - br[which, j])
    v = _clenshaw_at(pois, off + (which * 5 + j) * 10, 10, x)
    return v * _small_factor_nb(which, mu) if j == 0 else v


@kernel
def _pois_weight(which, mu, pois):
    return _pois_at(which, mu, pois.ravel(), I0)


@inner
def dispersion_tables(phi, tabs, t):
    """The dispersion's part of the tables at dispersion ``phi`` (below 4.001), evaluated once so
    that each mean costs one interpolant in the mean:

    * at ``t[(w * 6 + j) * 10:]``: the tensor interpolant of piece ``j`` (means below 20 in case 1, below 50
      in case 2) summed over its dispersion axis, i.e. the coefficients in the mean at ``phi``;
    * at ``t[120 + (w * 4 + j) * 2:][:2]``: the two anchor profiles ``W(phi)`` of the interval ``j`` of
      case 1 (means 20 to 60) or case 2 (50 to 5,000; ``j = 3``: the table at 5,000);
    * ``t[136 + w * 4 + j]``: case 1's interpolant in the dispersion for the interval ``j`` above 60.

    ``w`` is 0 for ``2E/V`` and 1 for ``2E^2/V``. Only the collapsed tensor tables change the
    order of the arithmetic (last bits: the interpolants themselves agree with edgeR's to ~1e-11);
    the anchor and above-60 values are the same numbers as evaluated per observation."""
    pois, c1lo, c1mid, c1hi, c2lo, c2hi = tabs
    if phi < _C1_PHI:
        y = phi / (0.5 * _C1_PHI) - 1.0
        _collapse(t, c1lo, c1mid, y, I7)
        for w in range(2):
            for j in range(4):
                t[_HI + w * 4 + j] = _clenshaw(c1hi[w, j], y)
    elif phi < _C2_PHI:
        _collapse(t, c2lo, c2hi, phi / 2.0 - 1.0, I10)


@inner
def _collapse(t, lo, ab, y, nx):
    """Into ``t``: the ``nx`` coefficients in the mean of each tensor table of ``lo`` and the two
    anchor profiles of each interval of ``ab``, at the dispersion variable ``y``."""
    for w in range(2):
        for j in range(6):
            for i in range(nx):
                t[_LO + (w * 6 + j) * 10 + i] = _clenshaw(lo[w, j, i], y)
        for j in range(4):
            t[_AB + (w * 4 + j) * 2] = _clenshaw(ab[w, j, 0], y)
            t[_AB + (w * 4 + j) * 2 + 1] = _clenshaw(ab[w, j, 1], y)


@inline
def _weight_at(w, mu, phi, t):
    """``2E/V`` (``w`` 0) or ``2E^2/V`` (``w`` 1) at mean ``mu`` from the table ``t`` of
    :func:`table_space` filled by :func:`dispersion_tables` at ``phi`` (below 4.001)."""
    if phi < _C1_PHI:
        if mu > 60.0:
            j = 0
            while j < 3 and mu > _C1_HI_LOWER[w, j + 1]:
                j += 1
            return t[_HI + w * 4 + j] * _asym_nb(w, mu)
        if mu > 20.0:
            j = 0
            while j < 3 and mu >= _C1_MID_ANCHORS[j + 1]:
                j += 1
            a = _C1_MID_ANCHORS[j]
            b = _C1_MID_ANCHORS[j + 1]
            base = t[_AB + (w * 4 + j) * 2]
            s = _clenshaw_at(t, _C1MID + ((w * 4 + j) * 3 + 2) * 7, 7, (2.0 * mu - a - b) / (b - a))
            return (base + (t[_AB + (w * 4 + j) * 2 + 1] - base) * s) * _asym_nb(w, mu)
        br = _C1_LO_BREAKS
        j = _piece_at(br, w, mu)
        x = (2.0 * mu - br[w, j] - br[w, j + 1]) / (br[w, j + 1] - br[w, j])
        return _clenshaw_at(t, _LO + (w * 6 + j) * 10, 7, x) * _pois_at(w, mu, t, _POIS)
    if mu >= 5000.0:
        return t[_AB + (w * 4 + 3) * 2]
    if mu >= 50.0:
        j = 0 if mu < 100.0 else (1 if mu < 1000.0 else 2)
        base = t[_AB + (w * 4 + j) * 2]
        s = _clenshaw_at(t, _C2HI + ((w * 4 + j) * 3 + 2) * 10, 10, _C2_HI_X[j, 0] / mu + _C2_HI_X[j, 1])
        return base + (t[_AB + (w * 4 + j) * 2 + 1] - base) * s
    br = _C2_LO_BREAKS
    j = _piece_at(br, w, mu)
    if j == 0:  # edgeR reads the [0, 0.01] table at mu / 0.01 - 1
        return _clenshaw_at(t, _LO + w * 60, 10, mu / 0.01 - 1.0) * _small_factor_nb(w, mu)
    x = (2.0 * mu - br[w, j] - br[w, j + 1]) / (br[w, j + 1] - br[w, j])
    return _clenshaw_at(t, _LO + (w * 6 + j) * 10, 10, x)


@inner
def table_space(tabs):
    """The flat table of :func:`weights_at` for the tables of :func:`moment_tables`; fill its
    dispersion's part with :func:`dispersion_tables` before use."""
    t = np.zeros(_TABLE)
    pois, c1mid, c2hi = tabs[0].ravel(), tabs[2].ravel(), tabs[5].ravel()
    for i in range(pois.size):
        t[_POIS + i] = pois[i]
    for i in range(c1mid.size):
        t[_C1MID + i] = c1mid[i]
    for i in range(c2hi.size):
        t[_C2HI + i] = c2hi[i]
    return t


@inner
def weights_at(m, phi, t):
    """edgeR's ``compute_weight``: ``(2E/V, 2E^2/V)`` of the NB unit deviance at mean ``m`` and
    dispersion ``phi`` (the scale and df of the matching scaled chi-square), from the table ``t``
    (:func:`table_space`, :func:`dispersion_tables` at ``phi``; unused from 4.001 on, where the
    moments are summed); 0 for ``m < 1e-32``."""
    if m < _LOW:
        return 0.0, 0.0
    if phi < _C2_PHI:
        a = 0.0
        for w in range(2):  # one call site: the inlined body is compiled once
            v = _weight_at(w, m, phi, t)
            if w == 0:
                a = v
        return a, v
    n = 50 if m * m * phi + 10.0 >= 50.0 else int(m * m * phi + 10.0)
    e, v = _dev_moment_sums(m, phi, n - 1)
    return 2.0 * e / v, 2.0 * e * e / v


@kernel
def deviance_weights(m, phi, tabs):
    """:func:`weights_at` for one mean and dispersion, from :func:`moment_tables`."""
    t = table_space(tabs)
    dispersion_tables(phi, tabs, t)
    return weights_at(m, phi, t)


def deviance_moments(mu, phi):
    """The mean and variance of the NB unit deviance as edgeR 4.10 evaluates them (elementwise):
    ``E = kappa / alpha`` and ``V = 2 kappa / alpha^2`` from :func:`deviance_weights`."""
    mu, phi = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(phi, dtype=np.float64))
    out = np.empty(mu.shape + (2,))
    _weights_kernel(
        np.ascontiguousarray(mu).ravel(),
        np.ascontiguousarray(phi).ravel(),
        moment_tables(),
        out.reshape(-1, 2),
    )
    a, k = out[..., 0], out[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return k / a, 2.0 * k / (a * a)


@kernel
def _weights_kernel(mu, phi, tabs, out):
    t = table_space(tabs)
    for i in range(mu.size):
        if i == 0 or phi[i] != phi[i - 1]:
            dispersion_tables(phi[i], tabs, t)
        out[i, 0], out[i, 1] = weights_at(mu[i], phi[i], t)
