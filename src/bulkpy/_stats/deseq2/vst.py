"""DESeq2's variance stabilising transformation (``varianceStabilizingTransformation``).

Arrays are samples × genes. The transformation integrates ``1 / sqrt(v(mu))`` with the fitted
variance function ``v(mu) = mu / s + alpha(mu) mu^2`` (``s`` the size factors):

* ``parametric`` trend ``alpha(mu) = asymptDisp + extraPois / mu``: DESeq2's closed form;
* ``mean`` trend (constant ``alpha``): ``(2 asinh(sqrt(alpha q)) - log(alpha) - log 4) / log 2``;
* ``local`` trend (R ``locfit`` as DESeq2 fits it, :mod:`bulkpy._stats.deseq2.locfit`):
  numerically, as DESeq2 does: the trapezoidal integral on 999 points spaced
  evenly in ``asinh`` up to the largest normalised count, interpolated by R's ``fmm`` cubic spline
  (:func:`fmm_spline`) and scaled so that it matches ``log2`` between the 95% and 99.9%
  quantiles of the gene means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dispersion import DispersionTrend, GeneDispersions, estimate_gene_dispersions, fit_dispersion_trend


def vst_parametric(norm_counts: np.ndarray, asympt_disp: float, extra_pois: float) -> np.ndarray:
    """Closed-form VST for the parametric trend (log2 scale)."""
    a, b = float(asympt_disp), float(extra_pois)
    q = np.asarray(norm_counts, dtype=np.float64)
    return np.log((1 + b + 2 * a * q + 2 * np.sqrt(a * q * (1 + b + a * q))) / (4 * a)) / np.log(2)


def vst_mean(norm_counts: np.ndarray, alpha: float) -> np.ndarray:
    """VST for a constant dispersion ``alpha`` (log2 scale)."""
    q = np.asarray(norm_counts, dtype=np.float64)
    return (2 * np.arcsinh(np.sqrt(alpha * q)) - np.log(alpha) - np.log(4)) / np.log(2)


def fmm_spline(x: np.ndarray, y: np.ndarray):
    """Coefficients (b, c, d) of the interpolating cubic spline with Forsythe, Malcolm & Moler's
    end conditions (the third derivative at each end matches that of the cubic through the four
    end points), as R's ``splinefun(method = "fmm")``. On [x_i, x_{i+1}] the spline is
    ``y_i + b_i t + c_i t^2 + d_i t^3`` with ``t = x - x_i``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if n < 2:
        raise ValueError("a spline needs at least two points")
    if n < 3:
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return np.full(2, slope), np.zeros(2), np.zeros(2)
    h = np.diff(x)  # d[1..n-1]
    delta = np.diff(y) / h  # first divided differences
    # tridiagonal system for sigma (= second derivative / 6)
    diag = np.empty(n)
    rhs = np.empty(n)
    diag[1:-1] = 2.0 * (h[:-1] + h[1:])
    rhs[1:-1] = delta[1:] - delta[:-1]
    diag[0] = -h[0]
    diag[-1] = -h[-1]
    rhs[0] = rhs[-1] = 0.0
    if n > 3:
        c1 = rhs[2] / (x[3] - x[1]) - rhs[1] / (x[2] - x[0])
        cn = rhs[-2] / (x[-1] - x[-3]) - rhs[-3] / (x[-2] - x[-4])
        rhs[0] = c1 * h[0] * h[0] / (x[3] - x[0])
        rhs[-1] = -cn * h[-1] * h[-1] / (x[-1] - x[-4])
    # Gaussian elimination (off-diagonals are h on both sides)
    for i in range(1, n):
        t = h[i - 1] / diag[i - 1]
        diag[i] = diag[i] - t * h[i - 1]
        rhs[i] = rhs[i] - t * rhs[i - 1]
    sigma = np.empty(n)
    sigma[-1] = rhs[-1] / diag[-1]
    for i in range(n - 2, -1, -1):
        sigma[i] = (rhs[i] - h[i] * sigma[i + 1]) / diag[i]
    b = np.empty(n)
    c = np.empty(n)
    d = np.empty(n)
    b[-1] = delta[-1] + h[-1] * (sigma[-2] + 2.0 * sigma[-1])
    b[:-1] = delta - h * (sigma[1:] + 2.0 * sigma[:-1])
    d[:-1] = (sigma[1:] - sigma[:-1]) / h
    c[:] = 3.0 * sigma
    d[-1] = d[-2]
    return b, c, d


def fmm_eval(x: np.ndarray, y: np.ndarray, coefs, u: np.ndarray) -> np.ndarray:
    """Evaluate the spline from :func:`fmm_spline` at ``u`` (end cubics extended outside)."""
    b, c, d = coefs
    u = np.asarray(u, dtype=np.float64)
    i = np.clip(np.searchsorted(x, u, side="right") - 1, 0, x.size - 1)
    t = u - x[i]
    return y[i] + t * (b[i] + t * (c[i] + t * d[i]))


def vst_local(norm_counts: np.ndarray, trend: DispersionTrend, size_factors: np.ndarray) -> np.ndarray:
    """Numerical VST for a non-parametric trend, as DESeq2's ``getVarianceStabilizedData``."""
    nc = np.asarray(norm_counts, dtype=np.float64)
    xg = np.sinh(np.linspace(np.arcsinh(0.0), np.arcsinh(nc.max()), 1000))[1:]
    xim = np.mean(1.0 / np.asarray(size_factors, dtype=np.float64))
    base_var = trend(xg) * xg**2 + xim * xg
    integrand = 1.0 / np.sqrt(base_var)
    knots = np.arcsinh((xg[1:] + xg[:-1]) / 2)
    values = np.cumsum((xg[1:] - xg[:-1]) * (integrand[1:] + integrand[:-1]) / 2)
    coefs = fmm_spline(knots, values)
    means = nc.mean(axis=0)
    h1, h2 = np.quantile(means, [0.95, 0.999])
    s1, s2 = fmm_eval(knots, values, coefs, np.arcsinh([h1, h2]))
    eta = (np.log2(h2) - np.log2(h1)) / (s2 - s1)
    xi = np.log2(h1) - eta * s1
    return eta * fmm_eval(knots, values, coefs, np.arcsinh(nc)) + xi


def transform(norm_counts: np.ndarray, trend: DispersionTrend, size_factors: np.ndarray) -> np.ndarray:
    """Apply the VST for ``trend`` to normalised counts (samples × genes)."""
    if trend.fit_type == "parametric":
        return vst_parametric(norm_counts, trend.params["asymptDisp"], trend.params["extraPois"])
    if trend.fit_type == "mean":
        return vst_mean(norm_counts, trend.params["mean"])
    return vst_local(norm_counts, trend, size_factors)


@dataclass
class VSTResult:
    """Output of :func:`variance_stabilizing_transformation`."""

    vst: np.ndarray
    trend: DispersionTrend
    gene: GeneDispersions
    disp_fit: np.ndarray


def variance_stabilizing_transformation(
    counts: np.ndarray,
    design: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
    fit_type: str = "parametric",
) -> VSTResult:
    """Fit gene-wise dispersions for ``design`` and the trend, then transform (DESeq2's
    ``varianceStabilizingTransformation``; ``blind=TRUE`` is an intercept-only ``design``).

    Parameters
    ----------
    counts
        Raw counts, samples × genes.
    design
        Design matrix, samples × coefficients.
    size_factors, norm_factors
        Size factors (n,) or normalisation factors (samples × genes; the local fit then uses
        their per-sample geometric means as size factors, as DESeq2).
    fit_type
        ``"parametric"``, ``"local"`` or ``"mean"``.

    Returns
    -------
    :class:`VSTResult`
    """
    counts = np.asarray(counts, dtype=np.float64)
    n, g = counts.shape
    ge = estimate_gene_dispersions(counts, design, size_factors=size_factors, norm_factors=norm_factors)
    trend = fit_dispersion_trend(ge.base_mean, ge.disp_gene_est, fit_type=fit_type)
    disp_fit = np.full(g, np.nan)
    nz = ~ge.all_zero
    disp_fit[nz] = trend(ge.base_mean[nz])
    if norm_factors is not None:
        nf = np.asarray(norm_factors, dtype=np.float64)
        norm = counts / nf
        sf = np.exp(np.mean(np.log(nf), axis=1))
    else:
        sf = np.ones(n) if size_factors is None else np.asarray(size_factors, dtype=np.float64)
        norm = counts / sf[:, None]
    return VSTResult(vst=transform(norm, trend, sf), trend=trend, gene=ge, disp_fit=disp_fit)
