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

A dask matrix (:func:`variance_stabilizing_transformation_blocks`) is read in one pass over blocks
of genes for the gene-wise dispersions (and the per-gene means and largest normalised count the
local fit's integral needs), the trend is fitted on those per-gene vectors, and the transformed
values are a lazy dask array made block by block with the same arithmetic. With normalisation
factors, one more pass gives DESeq2's ``xim`` (long double column sums, added block by block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._blocks import blocks_for, lazy_gene_map, map_gene_blocks
from .dispersion import (
    DispersionTrend,
    GeneDispersions,
    col_sums_ld,
    estimate_gene_dispersions,
    fit_dispersion_trend,
    xim_r,
)


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
    return local_map_apply(nc, local_map(nc.max(), nc.mean(axis=0), trend, size_factors))


def local_map(nc_max: float, means: np.ndarray, trend: DispersionTrend, size_factors: np.ndarray) -> tuple:
    """The numerical VST's map from the largest normalised count, the per-gene means of the
    normalised counts and the trend: ``(knots, values, spline coefficients, eta, xi)``."""
    xg = np.sinh(np.linspace(np.arcsinh(0.0), np.arcsinh(nc_max), 1000))[1:]
    xim = np.mean(1.0 / np.asarray(size_factors, dtype=np.float64))
    base_var = trend(xg) * xg**2 + xim * xg
    integrand = 1.0 / np.sqrt(base_var)
    knots = np.arcsinh((xg[1:] + xg[:-1]) / 2)
    values = np.cumsum((xg[1:] - xg[:-1]) * (integrand[1:] + integrand[:-1]) / 2)
    coefs = fmm_spline(knots, values)
    h1, h2 = np.quantile(means, [0.95, 0.999])
    s1, s2 = fmm_eval(knots, values, coefs, np.arcsinh([h1, h2]))
    eta = (np.log2(h2) - np.log2(h1)) / (s2 - s1)
    xi = np.log2(h1) - eta * s1
    return knots, values, coefs, eta, xi


def local_map_apply(nc: np.ndarray, lmap: tuple) -> np.ndarray:
    """Apply :func:`local_map`'s map to normalised counts."""
    knots, values, coefs, eta, xi = lmap
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


# ----------------------------------------------------------------------------------------------
# dask: gene-wise dispersions in one pass over blocks of genes, a lazy transformation
# ----------------------------------------------------------------------------------------------
_GENE_FIELDS = ("disp_gene_est", "disp_gene_iter", "base_mean", "base_var", "all_zero", "converged")


def _normalised(b, sf):
    x = b.read(0)
    nf = b.read(1)
    return x / nf if nf is not None else x / sf[:, None]


def _xim_block(b):
    """All-zero genes, long double column sums of the factors of the other genes, the factors'
    log row sums and their bad values (one block of genes)."""
    y = b.read(0, gene_major=True)
    nf = b.read(1, gene_major=True)
    nz = y.sum(axis=1) != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sums = np.log(nf).sum(axis=0)
    return col_sums_ld([nf[nz]], nf.shape[1]), log_sums, int((~np.isfinite(nf) | (nf <= 0)).sum())


def norm_factor_summaries(counts, norm_factors) -> tuple[float, np.ndarray, int]:
    """DESeq2's ``xim`` for normalisation factors (block sums added in long double), the
    per-sample geometric means of the factors and the number of non-finite or non-positive
    factors, from one pass over blocks of genes (one ``dask.compute``)."""
    parts = map_gene_blocks(_xim_block, [counts, norm_factors], blocks_for(counts, counts.shape[0]))
    acc = np.zeros(counts.shape[0], dtype=np.longdouble)
    for (a, _), _, _ in parts:
        acc = acc + a
    count = sum(c for (_, c), _, _ in parts)
    log_mean = np.sum([q[1] for q in parts], axis=0) / counts.shape[1]
    bad = sum(q[2] for q in parts)
    if bad or not count:  # refused by the caller (or no gene to estimate from)
        return float("nan"), np.exp(log_mean), bad
    return xim_r(nf_col_sums=(acc, count)), np.exp(log_mean), bad


def _dispersion_block(b, design, sf, xim) -> dict:
    """Gene-wise dispersions of one block of genes, and the per-gene means and largest value of
    the normalised counts (the local fit's integral needs them; so may a failed parametric fit)."""
    ge = estimate_gene_dispersions(
        b.read(0, gene_major=True), design, size_factors=sf, norm_factors=b.read(1, gene_major=True), xim=xim,
        gene_major=True,
    )  # fmt: skip
    out = {k: getattr(ge, k) for k in _GENE_FIELDS}
    out["min_disp"], out["max_disp"] = ge.min_disp, ge.max_disp
    nc = _normalised(b, sf)
    out["nc_mean"], out["nc_max"] = nc.mean(axis=0), float(nc.max()) if nc.size else -np.inf
    return out


def _vst_block(b, sf, fit_type: str, params: dict, lmap):
    nc = _normalised(b, sf)
    if fit_type == "parametric":
        return vst_parametric(nc, params["asymptDisp"], params["extraPois"])
    if fit_type == "mean":
        return vst_mean(nc, params["mean"])
    return local_map_apply(nc, lmap)


def variance_stabilizing_transformation_blocks(
    counts,
    design: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors=None,
    fit_type: str = "parametric",
) -> VSTResult:
    """:func:`variance_stabilizing_transformation` of a dask matrix: one pass over blocks of genes
    for the gene-wise dispersions (two with ``norm_factors``: ``xim`` first), the trend fitted on
    the per-gene vectors, and ``vst`` a lazy dask array. The gene-wise estimates hold no ``mu``
    (``None``). With ``size_factors`` the numbers are those of the matrix in memory."""
    n, g = counts.shape
    sf = np.ones(n) if size_factors is None and norm_factors is None else size_factors
    if norm_factors is not None:
        xim, sf_local, bad = norm_factor_summaries(counts, norm_factors)
        if bad:
            raise ValueError("normalisation factors must be finite and positive")
    else:
        sf = np.asarray(sf, dtype=np.float64)
        xim, sf_local = xim_r(sf), sf
    blocks = blocks_for(counts, n)
    parts = map_gene_blocks(_dispersion_block, [counts, norm_factors], blocks, args=(design, sf, xim))
    ge = GeneDispersions(
        **{k: np.concatenate([q[k] for q in parts]) for k in _GENE_FIELDS}, mu=None,
        min_disp=parts[0]["min_disp"], max_disp=parts[0]["max_disp"],
    )  # fmt: skip
    trend = fit_dispersion_trend(ge.base_mean, ge.disp_gene_est, fit_type=fit_type)
    disp_fit = np.full(g, np.nan)
    nz = ~ge.all_zero
    disp_fit[nz] = trend(ge.base_mean[nz])
    lmap = None
    if trend.fit_type == "local":
        means = np.concatenate([q["nc_mean"] for q in parts])
        lmap = local_map(max(q["nc_max"] for q in parts), means, trend, sf_local)
    vst = lazy_gene_map(_vst_block, [counts, norm_factors], blocks, args=(sf, trend.fit_type, trend.params, lmap))
    return VSTResult(vst=vst, trend=trend, gene=ge, disp_fit=disp_fit)
