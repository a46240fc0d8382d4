"""DESeq2's ``DESeq()``, ``results()`` and ``lfcShrink(type = "normal")`` on arrays (DESeq2 1.38).

Arrays at the interface are samples × genes (like ``AnnData.X``); internally the per-gene work is
gene-major and runs in the compiled kernels of :mod:`bulkpy._stats.deseq2._kernels` through
:mod:`bulkpy._stats.deseq2.nbinom` (the negative binomial GLM) and :mod:`bulkpy._stats.deseq2.dispersion`
(dispersions), which this module drives. What it adds, following the DESeq2 1.38 sources:

* the Wald test (``nbinomWaldTest``: sandwich standard errors, two-sided normal p-values) and the
  likelihood ratio test (``nbinomLRT``: deviance difference, chi-squared with ``p_full - p_reduced``
  degrees of freedom), and contrasts of the coefficients (``getContrast``: ``c' beta`` and
  ``sqrt(c' Σ c)`` at the fitted coefficients);
* Cook's distances (``calculateCooksDistance``: Pearson residuals with the robust method-of-moments
  dispersion of ``robustMethodOfMomentsDisp``, trimmed per cell of identical design rows), their
  maximum over samples in cells of three or more (``recordMaxCooks``), and the replacement of
  outlier counts by the trimmed mean when a cell has at least ``min_replicates`` samples, with a
  refit of those genes' dispersions and coefficients (``replaceOutliers``,
  ``refitWithoutOutliers``);
* the post-processing of ``results()``: thresholded tests (``lfcThreshold`` with the four
  ``altHypothesis``), the Cook's cutoff (``qf(0.99, p, m - p)``; for a design of one two-level
  factor an outlier is kept when three or more samples have a larger count), the rules for genes
  whose compared samples are all zero and for genes whose replaced counts are all zero,
  independent filtering on the mean of normalised counts (``pvalueAdjustment``: genefilter's
  ``filtered_p`` over 50 quantiles, R's ``lowess(f = 1/5)`` of the number of rejections) and
  Benjamini–Hochberg;
* the normal prior on fold changes (``estimateBetaPriorVar`` with the weighted upper quantile and
  the penalised refit of ``lfcShrink(type = "normal")``).

The work on genes is done in blocks (:func:`deseq` maps the per-gene steps over blocks of genes;
only the dispersion trend, its prior variance, the beta prior variance and the independent
filtering need all genes; the genes whose outliers were replaced are refitted together, as
DESeq2's subset object), so memory stays bounded and a chunked array could be mapped the same
way. Nothing couples genes inside a block; numpy's matrix products for the least-squares start
values may round the last bit differently for another block shape, which the line searches'
stopping rules can carry to ~1e-7 relative (tested).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sst

from .._blocks import (
    Block,
    GeneBlocks,
    blocks_for,
    gene_blocks,
    is_dask,
    lazy_gene_map,
    map_gene_blocks,
    read_block,
    uses_dask,
)
from ..limma.lowess import lowess
from ..multitest import p_adjust_bh
from ._kernels import contrast_kernel_par, cooks_par, design_cells, n_chunks, n_threads, run_chunks
from .dispersion import (
    DispersionTrend,
    col_sums_ld,
    dispersion_prior_variance,
    estimate_gene_dispersions,
    estimate_map_dispersions,
    fit_dispersion_trend,
    log_dispersion_residual_variance,
    row_means_r,
    row_vars_r,
    xim_r,
)
from .nbinom import LOG2E, fit_nb_glm

ALT_HYPOTHESES = ("greaterAbs", "lessAbs", "greater", "less")
TESTS = ("Wald", "LRT")



# ----------------------------------------------------------------------------------------------
# small R-faithful helpers
# ----------------------------------------------------------------------------------------------
def r_quantile(x: np.ndarray, probs) -> np.ndarray:
    """R's ``quantile(x, probs)`` (type 7) with R's arithmetic: ``(1 - h) x[lo] + h x[hi]``."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    probs = np.atleast_1d(np.asarray(probs, dtype=np.float64))
    n = x.size
    index = 1.0 + max(n - 1, 0) * probs
    lo = np.floor(index).astype(np.int64)
    hi = np.ceil(index).astype(np.int64)
    qs = x[lo - 1].copy()
    xhi = x[hi - 1]
    i = (index > lo) & (xhi != qs)
    h = (index - lo)[i]
    qs[i] = (1.0 - h) * qs[i] + h * xhi[i]
    return qs


def r_seq(start: float, stop: float, length: int) -> np.ndarray:
    """R's ``seq(start, stop, length.out = length)``."""
    if length <= 2:
        return np.array([start, stop][:length], dtype=np.float64)
    if start == stop:
        return np.full(length, float(start))
    by = (stop - start) / (length - 1)
    out = start + np.arange(length) * by
    out[-1] = stop
    return out


def trimmed_mean_rows(x: np.ndarray, trim: float) -> np.ndarray:
    """R's ``mean(v, trim = trim)`` of every row ``v`` of ``x`` (genes × samples)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[1]
    if trim >= 0.5:
        return np.median(x, axis=1)
    lo = int(math.floor(n * trim))
    if lo == 0:
        return x.mean(axis=1)
    s = np.sort(x, axis=1)
    return s[:, lo : n - lo].mean(axis=1)


def cell_codes(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells of identical design rows, numbered in order of first appearance (as DESeq2's
    ``factor(cells, levels = unique(cells))``): returns (code per sample, size per cell)."""
    X = np.asarray(X, dtype=np.float64)
    _, first, inv = np.unique(X, axis=0, return_index=True, return_inverse=True)
    inv = np.asarray(inv).ravel()
    order = np.argsort(first, kind="stable")  # unique rows sorted -> by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[inv]
    return codes, np.bincount(codes, minlength=order.size)


def n_or_more_in_cell(X: np.ndarray, n: int | float) -> np.ndarray:
    """DESeq2's ``nOrMoreInCell``: per sample, whether its cell (design row) has ``>= n`` samples."""
    codes, sizes = cell_codes(X)
    return sizes[codes] >= n


def default_cooks_cutoff(m: int, p: int) -> float:
    """``qf(0.99, p, m - p)``, DESeq2's default Cook's distance cutoff."""
    if m <= p:
        return float("nan")
    return float(sst.f.ppf(0.99, p, m - p))


def two_sided_normal_pvalue(stat: np.ndarray) -> np.ndarray:
    """``2 * pnorm(|stat|, lower.tail = FALSE)``."""
    with np.errstate(invalid="ignore"):
        return 2.0 * special.ndtr(-np.abs(stat))


def upper_normal(x: np.ndarray) -> np.ndarray:
    """``pnorm(x, lower.tail = FALSE)``."""
    return special.ndtr(-np.asarray(x, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# Cook's distances and outlier replacement
# ----------------------------------------------------------------------------------------------
def robust_moments_dispersion(norm_counts: np.ndarray, X: np.ndarray) -> np.ndarray:
    """DESeq2's ``robustMethodOfMomentsDisp`` for genes × samples normalised counts.

    The variance is a trimmed within-cell variance, the largest over the cells of three or more
    samples (``trimmedCellVariance``; trim 1/3, 1/4 or 1/8 and scale 2.04, 1.86 or 1.51 for
    cells of <= 3, <= 23 and more samples), or, without such cells, a trimmed variance over all
    samples (``trimmedVariance``); the dispersion ``(v - mean) / mean^2`` is bounded below by 0.04."""
    cnts = np.asarray(norm_counts, dtype=np.float64)
    codes, sizes = cell_codes(X)
    big = np.flatnonzero(sizes >= 3)
    if big.size:
        v = np.full(cnts.shape[0], -np.inf)
        for c in big:
            sub = cnts[:, codes == c]
            k = sub.shape[1]
            if k <= 3.5:
                trim, scale = 1 / 3, 2.04
            elif k <= 23.5:
                trim, scale = 1 / 4, 1.86
            else:
                trim, scale = 1 / 8, 1.51
            cm = trimmed_mean_rows(sub, trim)
            var_c = scale * trimmed_mean_rows((sub - cm[:, None]) ** 2, trim)
            v = np.maximum(v, var_c)
    else:
        rm = trimmed_mean_rows(cnts, 1 / 8)
        v = 1.51 * trimmed_mean_rows((cnts - rm[:, None]) ** 2, 1 / 8)
    m = cnts.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (v - m) / m**2
    return np.maximum(alpha, 0.04)


def cooks_distance(y: np.ndarray, mu: np.ndarray, hat: np.ndarray, norm_counts: np.ndarray, X: np.ndarray) -> np.ndarray:
    """DESeq2's ``calculateCooksDistance``; all arguments genes × samples (gene-major)."""
    p = X.shape[1]
    alpha = robust_moments_dispersion(norm_counts, X)
    out = np.empty(y.shape)
    yc, muc, hatc = (np.ascontiguousarray(a, dtype=np.float64) for a in (y, mu, hat))
    cooks_par(yc, muc, hatc, np.ascontiguousarray(alpha, dtype=np.float64), float(p), out)
    return out


def max_cooks(cooks: np.ndarray, X: np.ndarray) -> np.ndarray:
    """DESeq2's ``recordMaxCooks``: the largest Cook's distance (genes × samples) over the samples
    in cells of three or more; NaN when there are none or no residual degrees of freedom."""
    m, p = X.shape
    use = n_or_more_in_cell(X, 3)
    if not (m > p and use.any()):
        return np.full(cooks.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        return np.max(cooks[:, use], axis=1)


# ----------------------------------------------------------------------------------------------
# thresholded tests, independent filtering
# ----------------------------------------------------------------------------------------------
def threshold_test(lfc: np.ndarray, se: np.ndarray, threshold: float, alt: str) -> tuple[np.ndarray, np.ndarray]:
    """``results(lfcThreshold = threshold, altHypothesis = alt)``: statistic and p-value (normal)."""
    T = float(threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        if alt == "greaterAbs":
            z = (np.abs(lfc) - T) / se
            return np.sign(lfc) * np.maximum(z, 0.0), np.minimum(1.0, 2.0 * upper_normal(z))
        if alt == "lessAbs":
            za = (T - lfc) / se
            zb = (lfc + T) / se
            return np.minimum(np.maximum(za, 0.0), np.maximum(zb, 0.0)), np.maximum(upper_normal(za), upper_normal(zb))
        if alt == "greater":
            z = (lfc - T) / se
            return np.maximum(z, 0.0), upper_normal(z)
        if alt == "less":
            return np.minimum((lfc + T) / se, 0.0), upper_normal((-T - lfc) / se)
    raise ValueError(f"alt_hypothesis={alt!r} is not supported; choose one of {list(ALT_HYPOTHESES)}")


@dataclass
class FilterResult:
    """Outcome of :func:`independent_filtering` (DESeq2's ``metadata(res)``)."""

    padj: np.ndarray
    theta: np.ndarray
    num_rej: np.ndarray
    lowess_fit: np.ndarray
    filter_theta: float
    filter_threshold: float


def independent_filtering(filter_stat: np.ndarray, pvalue: np.ndarray, alpha: float, theta=None) -> FilterResult:
    """DESeq2's ``pvalueAdjustment`` with ``independentFiltering = TRUE`` and BH.

    For each quantile ``theta`` of ``filter_stat`` (50 from the fraction of zeros to 0.95 by
    default) the p-values of the genes at or above it are adjusted (genefilter's ``filtered_p``);
    the number of rejections at ``alpha`` is smoothed by R's ``lowess(f = 1/5)`` and the first
    ``theta`` whose rejections exceed the smooth's maximum minus its residual root mean square is
    chosen (the first ``theta`` if at most 10 genes are ever rejected)."""
    filt = np.asarray(filter_stat, dtype=np.float64)
    p = np.asarray(pvalue, dtype=np.float64)
    if theta is None:
        lower = float(np.mean(filt == 0))
        upper = 0.95 if lower < 0.95 else 1.0
        theta = r_seq(lower, upper, 50)
    theta = np.asarray(theta, dtype=np.float64)
    cutoffs = r_quantile(filt, theta)
    padj = np.full((filt.size, theta.size), np.nan)
    for i, cut in enumerate(cutoffs):
        use = filt >= cut
        if use.any():
            padj[use, i] = p_adjust_bh(p[use])
    with np.errstate(invalid="ignore"):
        num_rej = np.sum(padj < alpha, axis=0).astype(np.float64)
    _, fit = lowess(theta, num_rej, f=1 / 5)
    if num_rej.max() <= 10:
        j = 0
    else:
        pos = num_rej > 0
        resid = num_rej[pos] - fit[pos] if pos.any() else np.zeros(1)
        thresh = fit.max() - math.sqrt(float(np.mean(resid**2)))
        above = np.flatnonzero(num_rej > thresh)
        j = int(above[0]) if above.size else 0
    return FilterResult(
        padj=padj[:, j].copy(),
        theta=theta,
        num_rej=num_rej,
        lowess_fit=fit,
        filter_theta=float(theta[j]),
        filter_threshold=float(cutoffs[j]),
    )


# ----------------------------------------------------------------------------------------------
# normal prior on log fold changes (lfcShrink type = "normal")
# ----------------------------------------------------------------------------------------------
def _approx_constant_right(xk: np.ndarray, yk: np.ndarray, v: float) -> float:
    """R's ``approx(xk, yk, xout = v, method = "constant", f = 1, rule = 2)``."""
    if v < xk[0]:
        return float(yk[0])
    if v > xk[-1]:
        return float(yk[-1])
    j = int(np.searchsorted(xk, v, side="left"))
    if xk[j] == v:
        return float(yk[j])
    return float(yk[j])  # f = 1: the value at the right end of the interval


def weighted_upper_quantile(x: np.ndarray, w: np.ndarray, prob: float) -> float:
    """Hmisc's ``wtd.quantile(x, weights = w, probs = prob, normwt = TRUE)`` (type "quantile"),
    as vendored by DESeq2."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    keep = ~(np.isnan(w) | (w == 0))
    x, w = x[keep], w[keep]
    ok = ~np.isnan(x + w)
    x, w = x[ok], w[ok]
    w = w * x.size / w.sum()
    xs, inv = np.unique(x, return_inverse=True)
    ws = np.bincount(np.asarray(inv).ravel(), weights=w, minlength=xs.size)
    n = float(ws.sum())
    order = 1.0 + (n - 1.0) * prob
    low = max(math.floor(order), 1.0)
    high = min(low + 1.0, n)
    frac = order % 1.0
    cw = np.cumsum(ws)
    ql = _approx_constant_right(cw, xs, low)
    qh = _approx_constant_right(cw, xs, high)
    return (1.0 - frac) * ql + frac * qh


def beta_prior_variance(beta_log2: np.ndarray, base_mean: np.ndarray, disp_fit: np.ndarray, *, upper_quantile: float = 0.05) -> np.ndarray:
    """Prior variance per column of the log2 coefficients ``beta_log2`` (genes × columns), as
    DESeq2's ``estimateBetaPriorVar(betaPriorMethod = "weighted")``: the variance of a zero-centred
    normal whose ``1 - upper_quantile / 2`` quantile matches the weighted ``1 - upper_quantile``
    quantile of ``|beta|`` (|beta| < 10; weights ``1 / (1 / baseMean + dispFit)``). Pass only
    genes that are not all zero."""
    B = np.atleast_2d(np.asarray(beta_log2, dtype=np.float64))
    wts = 1.0 / (1.0 / np.asarray(base_mean, dtype=np.float64) + np.asarray(disp_fit, dtype=np.float64))
    if B.shape[0] <= 1:
        return (B[0] ** 2) if B.shape[0] == 1 else np.full(B.shape[1], 1e6)
    z = float(sst.norm.ppf(1.0 - upper_quantile / 2))
    out = np.empty(B.shape[1])
    for k in range(B.shape[1]):
        x = B[:, k]
        with np.errstate(invalid="ignore"):
            fin = np.abs(x) < 10
        if not fin.any():
            out[k] = 1e6
        else:
            out[k] = (weighted_upper_quantile(np.abs(x[fin]), wts[fin], 1.0 - upper_quantile) / z) ** 2
    return out


def factor_prior_variance(beta_log2: np.ndarray, base_mean: np.ndarray, disp_fit: np.ndarray, columns, *, upper_quantile: float = 0.05) -> float:
    """The prior variance DESeq2 gives every level of a factor in an expanded model matrix
    (``addAllContrasts`` + ``averagePriorsOverLevels``): the mean of the prior variances of the
    factor's treatment-coded coefficients (``columns`` of ``beta_log2``) and of all their pairwise
    differences."""
    cols = list(columns)
    M = np.asarray(beta_log2, dtype=np.float64)[:, cols]
    parts = [M]
    n = len(cols)
    if n > 1:
        diffs = [M[:, i] - M[:, j] for j in range(n - 1) for i in range(j + 1, n)]
        parts.append(np.column_stack(diffs))
    v = beta_prior_variance(np.column_stack(parts), base_mean, disp_fit, upper_quantile=upper_quantile)
    return float(np.mean(v))


# ----------------------------------------------------------------------------------------------
# the model fit (DESeq)
# ----------------------------------------------------------------------------------------------
@dataclass
class DESeqFit:
    """Everything :func:`deseq` computes. Per-gene arrays have one entry per gene; ``cooks`` is
    samples × genes. Coefficients are on the natural-log scale (multiply by ``1 / log(2)``)."""

    base_mean: np.ndarray
    base_var: np.ndarray
    all_zero: np.ndarray
    disp_gene_est: np.ndarray
    disp_gene_iter: np.ndarray
    disp_fit: np.ndarray
    disp_map: np.ndarray
    dispersion: np.ndarray
    disp_outlier: np.ndarray
    disp_iter: np.ndarray
    beta: np.ndarray
    beta_se: np.ndarray
    beta_conv: np.ndarray
    beta_iter: np.ndarray
    deviance: np.ndarray
    cooks: np.ndarray
    max_cooks: np.ndarray
    replace: np.ndarray
    n_above_outlier: np.ndarray
    contrast_lfc: np.ndarray
    contrast_se: np.ndarray
    contrast_all_zero: np.ndarray
    trend: DispersionTrend
    var_log_disp_ests: float
    prior_var: float
    test: str
    lrt_stat: np.ndarray | None = None
    lrt_pvalue: np.ndarray | None = None
    lrt_df: int | None = None
    reduced_beta_conv: np.ndarray | None = None
    replaceable: np.ndarray | None = None
    refitted: bool = False
    cooks_cutoff: float = float("nan")


def n_blocks(g: int, n: int, block_genes: int | None = None) -> int:
    """Number of gene blocks :func:`deseq` works in (the shared driver's rule)."""
    return len(gene_blocks(g, n, block_genes=block_genes))


def _normalised(y_gm: np.ndarray, sf, nf_gm) -> np.ndarray:
    """Normalised counts, genes × samples (on one block of genes per thread for a large block:
    the same divisions)."""
    out = np.empty(np.shape(y_gm))

    def rows(lo, hi):
        np.divide(y_gm[lo:hi], nf_gm[lo:hi] if nf_gm is not None else sf, out=out[lo:hi])

    run_chunks(rows, out.shape[0], n_threads() if out.size >= 1_000_000 else 1)
    return out


def _fit(y_gm, X, disp, sf, nf_gm, minmu, lambda_=None):
    return fit_nb_glm(
        y_gm, X, disp, size_factors=sf if nf_gm is None else None, norm_factors=nf_gm, minmu=minmu, lambda_=lambda_,
        gene_major=True,
    )  # fmt: skip


def _nf_gene_major(sf, nf_gm, g):
    if nf_gm is not None:
        return np.ascontiguousarray(nf_gm)
    return np.ascontiguousarray(np.broadcast_to(sf, (g, sf.size)))


def contrast_estimates(beta, X, sf, nf_gm, alpha, C, *, lambda_nat=None, minmu=0.5):
    """``getContrast`` for every column of ``C`` (p × k) and gene: log2 estimate and standard
    error ``sqrt(c' Σ c)`` at the given natural-log coefficients (genes × p); ``nf_gm``: the
    genes' normalisation factors, genes × samples (or ``None`` for the size factors ``sf``)."""
    g = beta.shape[0]
    p = X.shape[1]
    C = np.ascontiguousarray(np.asarray(C, dtype=np.float64).reshape(p, -1))
    lam = np.full(p, 1e-6 * LOG2E**2) if lambda_nat is None else np.asarray(lambda_nat, dtype=np.float64)
    num = np.empty((g, C.shape[1]))
    den = np.empty((g, C.shape[1]))
    if g:
        with np.errstate(all="ignore"):
            contrast_kernel_par(
                _nf_gene_major(sf, nf_gm, g), *design_cells(X),
                np.ascontiguousarray(alpha, dtype=np.float64), np.ascontiguousarray(lam),
                np.ascontiguousarray(beta, dtype=np.float64), float(minmu), C, num, den, n_chunks(g),
            )  # fmt: skip
    return num * LOG2E, den * LOG2E


class _Stage3:
    """Results of the per-gene fit of one block (Wald or LRT), genes of the block only."""

    def __init__(self, nb: int, p: int):
        self.dispersion = np.full(nb, np.nan)
        self.disp_map = np.full(nb, np.nan)
        self.disp_outlier = np.zeros(nb, dtype=bool)
        self.disp_iter = np.zeros(nb, dtype=np.int64)
        self.beta = np.full((nb, p), np.nan)
        self.beta_se = np.full((nb, p), np.nan)
        self.beta_conv = np.zeros(nb, dtype=bool)
        self.beta_iter = np.zeros(nb, dtype=np.int64)
        self.deviance = np.full(nb, np.nan)
        self.lrt_stat = np.full(nb, np.nan)
        self.reduced_conv = np.zeros(nb, dtype=bool)
        self.mu = None
        self.hat = None


def _map_and_fit(y_gm, X, Xr, sf, nf_gm, mu_gm, disp_gene_est, disp_fit, prior_var, var_log, opts, fill_disp):
    """MAP dispersions, the GLM fit (and reduced fit for the LRT) for genes that are not all zero.

    ``y_gm``, ``nf_gm``, ``mu_gm`` genes × samples; returns a :class:`_Stage3` (with
    ``mu``/``hat`` genes × samples)."""
    nb = y_gm.shape[0]
    st = _Stage3(nb, X.shape[1])
    if nb == 0:
        return st
    if fill_disp is not None:
        st.dispersion[:] = fill_disp
    else:
        mp = estimate_map_dispersions(
            y_gm, X, mu_gm, disp_gene_est, disp_fit, prior_var, var_log, outlier_sd=opts["outlier_sd"],
            min_disp=opts["min_disp"], kappa_0=opts["kappa_0"], disp_tol=opts["disp_tol"], maxit=opts["maxit"],
            gene_major=True,
        )  # fmt: skip
        st.dispersion, st.disp_map, st.disp_outlier, st.disp_iter = mp.dispersion, mp.disp_map, mp.disp_outlier, mp.disp_iter
    fit = _fit(y_gm, X, st.dispersion, sf, nf_gm, opts["minmu"])
    st.beta, st.beta_se = fit.beta, fit.beta_se
    st.beta_conv, st.beta_iter, st.deviance = fit.converged, fit.iterations, fit.deviance
    st.mu = fit.mu
    st.hat = fit.hat_diagonals
    if Xr is not None:
        red = _fit(y_gm, Xr, st.dispersion, sf, nf_gm, opts["minmu"])
        st.lrt_stat = 2.0 * (fit.log_like - red.log_like)
        st.reduced_conv = red.converged
    return st


def deseq(
    counts: np.ndarray,
    design: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
    contrasts: np.ndarray | None = None,
    contrast_samples: list | None = None,
    test: str = "Wald",
    reduced: np.ndarray | None = None,
    fit_type: str = "parametric",
    min_replicates_for_replace: float = 7,
    minmu: float = 0.5,
    min_disp: float = 1e-8,
    kappa_0: float = 1.0,
    disp_tol: float = 1e-6,
    maxit: int = 100,
    outlier_sd: float = 2.0,
    block_genes: int | None = None,
    on_block=None,
) -> DESeqFit:
    """DESeq2's ``DESeq()`` (Wald or likelihood ratio test) followed by the contrasts' estimates.

    Parameters
    ----------
    counts
        Raw counts, samples × genes.
    design
        Full design matrix, samples × coefficients (full column rank).
    size_factors, norm_factors
        Size factors (n,) or normalisation factors (samples × genes); exactly one.
    contrasts
        Contrast vectors, coefficients × k (columns of ``design``); their log2 estimates and
        standard errors are computed for every gene (DESeq2's ``getContrast``).
    contrast_samples
        Per contrast, ``None`` or a boolean mask of the samples whose counts decide DESeq2's
        "all compared samples are zero" rule (``contrastAllZeroCharacter`` /
        ``contrastAllZeroNumeric``).
    test
        ``"Wald"`` or ``"LRT"`` (then ``reduced`` is the reduced design matrix).
    fit_type
        Dispersion trend (``"parametric"``, ``"local"``, ``"mean"``).
    min_replicates_for_replace
        Replace outlier counts (Cook's distance above ``qf(0.99, p, m - p)``) in samples whose
        cell has at least this many samples and refit those genes; ``inf`` to never replace.
    minmu, min_disp, kappa_0, disp_tol, maxit, outlier_sd
        As in DESeq2.
    block_genes
        Genes per block (default: about 8 million matrix elements per block).
    on_block
        Called with the name of the stage after each block of genes (for a progress bar):
        ``n_blocks(g, n, block_genes)`` blocks of gene-wise dispersions, as many of MAP
        dispersions and fits, then one call for the refit of genes with replaced outliers.
        Blocks are walked by the shared driver (:mod:`bulkpy._stats._blocks`); ``counts`` and
        ``norm_factors`` may be numpy, scipy sparse or dask arrays.

    Returns
    -------
    :class:`DESeqFit`
    """
    inp = _check_inputs(
        counts, design, size_factors=size_factors, norm_factors=norm_factors, contrasts=contrasts,
        contrast_samples=contrast_samples, test=test, reduced=reduced, block_genes=block_genes,
        opts=dict(minmu=minmu, min_disp=min_disp, kappa_0=kappa_0, disp_tol=disp_tol, maxit=maxit, outlier_sd=outlier_sd),
    )  # fmt: skip
    st = _gene_wise_dispersions(inp, on_block)
    _dispersion_trend_and_prior(inp, st, fit_type)
    _map_fit_and_outliers(inp, st, min_replicates_for_replace, on_block)
    _refit_without_outliers(inp, st)
    if on_block is not None:
        on_block("refit of replaced outliers")
    _contrast_estimates(inp, st)
    return _assemble(inp, st, test)


@dataclass
class _Model:
    """What every block of :func:`deseq` needs besides its counts (small, picklable: a dask task
    carries it): the designs, size factors, options and the global quantities of earlier passes."""

    X: np.ndarray
    Xr: np.ndarray | None
    sf: np.ndarray | None
    has_nf: bool
    opts: dict
    masks: list
    xim: float = float("nan")
    # after the dispersion trend (pass 2)
    prior_var: float = float("nan")
    var_log: float = float("nan")
    fill_disp: float | None = None
    trend: Any = None
    # pass 3
    cutoff: float = float("nan")
    replaceable: np.ndarray | None = None
    do_replace: bool = False


@dataclass
class _Inputs:
    """Validated inputs of :func:`deseq` (counts and normalisation factors stay as given: blocks are
    read from them by the gene-block driver, in memory or as dask tasks)."""

    counts: Any
    nf: Any
    C: np.ndarray
    blocks: GeneBlocks
    m: _Model

    @property
    def n(self) -> int:
        return self.m.X.shape[0]

    @property
    def g(self) -> int:
        return self.counts.shape[1]

    @property
    def p(self) -> int:
        return self.m.X.shape[1]

    @property
    def lazy(self) -> bool:
        """Dask input: samples × genes intermediates are not kept (recomputed per block instead)."""
        return uses_dask(self.counts, self.nf)

    @property
    def mats(self) -> list:
        return [self.counts, self.nf]


class _State:
    """Per-gene quantities filled in pass by pass (DESeq2's mcols(dds) as the run proceeds)."""

    # pass 1
    base_mean: np.ndarray
    base_var: np.ndarray
    all_zero: np.ndarray
    nz: np.ndarray
    disp_gene_est: np.ndarray
    disp_gene_iter: np.ndarray
    mus: list
    # pass 2
    trend: DispersionTrend
    disp_fit: np.ndarray
    # pass 3 and the refit
    out: dict[str, np.ndarray]
    cooks: Any
    max_cooks: np.ndarray
    max_cooks_unreplaceable: np.ndarray
    replace: np.ndarray
    n_above: np.ndarray
    new_all_zero: np.ndarray
    caz: np.ndarray
    refit_idx: list
    refit_y: list
    refit_nf: list
    refitted: bool
    # contrasts
    lfc: np.ndarray
    lse: np.ndarray
    all_zero_final: np.ndarray


def _check_inputs(counts, design, *, size_factors, norm_factors, contrasts, contrast_samples, test, reduced, block_genes, opts):
    X = np.asarray(design, dtype=np.float64)
    n, g = counts.shape
    p = X.shape[1]
    if test not in TESTS:
        raise ValueError(f"test={test!r} is not supported; choose one of {list(TESTS)}")
    Xr = None
    if test == "LRT":
        if reduced is None:
            raise ValueError("the likelihood ratio test needs a reduced design")
        Xr = np.asarray(reduced, dtype=np.float64)
    if (size_factors is None) == (norm_factors is None):
        raise ValueError("give exactly one of size_factors and norm_factors")
    sf = None if size_factors is None else np.asarray(size_factors, dtype=np.float64).ravel()
    C = np.zeros((p, 0)) if contrasts is None else np.asarray(contrasts, dtype=np.float64).reshape(p, -1)
    masks = list(contrast_samples) if contrast_samples is not None else [None] * C.shape[1]
    masks = [None if mk is None else np.asarray(mk, dtype=bool) for mk in masks]
    m = _Model(X=X, Xr=Xr, sf=sf, has_nf=norm_factors is not None, opts=opts, masks=masks)
    return _Inputs(
        counts=counts, nf=norm_factors, C=C, blocks=blocks_for(counts, n, block_genes=block_genes), m=m,
    )  # fmt: skip


# ---- pass 0 and pass 1: all-zero genes, xim, gene-wise dispersions ----------------------------
def _zero_block(blk: Block, has_nf: bool):
    """Which genes of the block are zero in every sample, and (with normalisation factors) the
    per-sample long double sums of the factors of the other genes."""
    all_zero = blk.read(0).sum(axis=0) == 0
    sums = col_sums_ld([blk.read(1, gene_major=True, keep=~all_zero)], blk.read(0).shape[0]) if has_nf else None
    return all_zero, sums


def _gene_est(blk: Block, m: _Model):
    """``estimateDispersionsGeneEst`` for the genes of the block (all of them: all-zero genes get NaN)."""
    o = m.opts
    return estimate_gene_dispersions(
        blk.read(0, gene_major=True), m.X, size_factors=m.sf, norm_factors=blk.read(1, gene_major=True),
        min_disp=o["min_disp"], kappa_0=o["kappa_0"], disp_tol=o["disp_tol"], maxit=o["maxit"], minmu=o["minmu"],
        xim=m.xim, gene_major=True,
    )  # fmt: skip


def _gene_est_block(blk: Block, m: _Model, keep_mu: bool):
    ge = _gene_est(blk, m)
    all_zero = blk.read(0).sum(axis=0) == 0
    return ge.base_mean, ge.base_var, ge.disp_gene_est, ge.disp_gene_iter, (ge.mu if keep_mu else None), all_zero


def _all_zero_and_xim(inp: _Inputs, st: _State) -> None:
    """With normalisation factors, pass 0: the all-zero genes and DESeq2's momentsDispEstimate
    ``xim`` = mean(1 / colMeans(normFactors)) over the other genes, with R's arithmetic (pass 1
    needs it). With size factors ``xim`` = mean(1 / sizeFactors) and pass 1 finds the all-zero
    genes itself (one pass fewer over the counts)."""
    m = inp.m
    if not m.has_nf:
        m.xim = xim_r(m.sf)
        return
    lazy_nf = is_dask(inp.nf)
    parts = map_gene_blocks(_zero_block, inp.mats, inp.blocks, args=(lazy_nf,))
    _set_all_zero(st, np.concatenate([a for a, _ in parts]))
    if lazy_nf:
        # block sums added in block order (in memory: one long double sum over genes in order)
        acc = np.zeros(inp.n, dtype=np.longdouble)
        for _, (s_b, _c) in parts:
            acc = acc + s_b
        m.xim = xim_r(nf_col_sums=(acc, int(st.nz.sum())))
    else:
        nz = st.nz
        m.xim = xim_r(nf_col_sums=col_sums_ld((read_block(inp.nf, sl, gene_major=True, keep=nz[sl]) for sl in inp.blocks), inp.n))


def _set_all_zero(st: _State, all_zero: np.ndarray) -> None:
    st.all_zero = all_zero
    st.nz = ~all_zero
    if not st.nz.any():
        raise ValueError("every gene is zero in all samples")


def _gene_wise_dispersions(inp: _Inputs, on_block) -> _State:
    """Pass 1 (per block): base means and variances, DESeq2's ``estimateDispersionsGeneEst``.
    In memory each block's fitted means are kept for pass 3; on dask input pass 3 recomputes them."""
    st = _State()
    _all_zero_and_xim(inp, st)
    parts = map_gene_blocks(
        _gene_est_block, inp.mats, inp.blocks, args=(inp.m, not inp.lazy), on_block=on_block,
        stage="gene-wise dispersions",
    )  # fmt: skip
    if not inp.m.has_nf:
        _set_all_zero(st, np.concatenate([q[5] for q in parts]))
    st.base_mean = np.concatenate([q[0] for q in parts])
    st.base_var = np.concatenate([q[1] for q in parts])
    st.disp_gene_est = np.concatenate([q[2] for q in parts])
    st.disp_gene_iter = np.concatenate([q[3] for q in parts]).astype(np.int64)
    st.mus = [q[4] for q in parts]
    return st


def _dispersion_trend_and_prior(inp: _Inputs, st: _State, fit_type: str) -> None:
    """Pass 2 (all genes): ``estimateDispersionsFit`` and ``estimateDispersionsPriorVar``."""
    nz, m = st.nz, inp.m
    min_disp = m.opts["min_disp"]
    st.trend = fit_dispersion_trend(st.base_mean, st.disp_gene_est, fit_type=fit_type, min_disp=min_disp)
    m.trend = st.trend
    st.disp_fit = np.full(inp.g, np.nan)
    st.disp_fit[nz] = st.trend(st.base_mean[nz])
    m.var_log = log_dispersion_residual_variance(st.disp_gene_est[nz], st.disp_fit[nz], min_disp=min_disp)
    m.fill_disp = None
    if not (st.disp_gene_est[nz] >= min_disp * 100).any():
        warnings.warn(
            f"all genes have dispersion estimates < {min_disp * 10}, returning dispersion = {min_disp * 10}",
            UserWarning,
            stacklevel=3,
        )
        m.fill_disp = min_disp * 10
        m.prior_var = 0.25
    else:
        m.prior_var = dispersion_prior_variance(
            st.disp_gene_est[nz], st.disp_fit[nz], m.var_log, inp.n, inp.p, min_disp=min_disp
        )


# ---- pass 3: MAP dispersions, the fit, Cook's distances, outlier replacement ------------------
_OUT_KEYS = (
    "dispersion", "disp_map", "disp_outlier", "disp_iter", "beta", "beta_se", "beta_conv", "beta_iter", "deviance",
    "lrt_stat", "reduced_conv",
)  # fmt: skip


def _fit_block(blk: Block, m: _Model, keep_cooks: bool, nz_b, dge_b, dfit_b, mu_gm) -> dict:
    """One block of pass 3 for the genes of the block that are not all zero (``nz_b``): their
    MAP dispersions and fit, Cook's distances and DESeq2's outlier rules. ``mu_gm`` is pass 1's
    fitted means of the block, or ``None`` to recompute them (dask input)."""
    if mu_gm is None:
        mu_gm = _gene_est(blk, m).mu
    ii = np.flatnonzero(nz_b)  # genes of the block (local indices)
    r: dict = {"ii": ii}
    if ii.size == 0:
        return r
    X, sf = m.X, m.sf
    y_ge = blk.read(0, gene_major=True, keep=nz_b)
    nf_nz = blk.read(1, gene_major=True, keep=nz_b)
    if not nz_b.all():
        mu_gm = mu_gm[nz_b]
    fit = _map_and_fit(y_ge, X, m.Xr, sf, nf_nz, mu_gm, dge_b[ii], dfit_b[ii], m.prior_var, m.var_log, m.opts, m.fill_disp)
    del mu_gm
    r["out"] = {key: getattr(fit, key) for key in _OUT_KEYS}
    norm_ge = _normalised(y_ge, sf, nf_nz)
    ck = cooks_distance(y_ge, fit.mu, fit.hat, norm_ge, X)
    fit.mu = fit.hat = None
    r["max_cooks"] = max_cooks(ck, X)
    if m.replaceable is not None and not m.replaceable.all():
        rc = ck.copy()
        rc[:, m.replaceable] = 0.0
        r["max_cooks_unreplaceable"] = max_cooks(rc, X)
    # for DESeq2's rule for a design of one two-level factor: the count at the sample with
    # the largest Cook's distance, and how many samples have a larger count
    amax = np.argmax(np.where(np.isnan(ck), -np.inf, ck), axis=1)
    out_count = y_ge[np.arange(ck.shape[0]), amax]
    r["n_above"] = (y_ge > out_count[:, None]).sum(axis=1)
    if keep_cooks:
        r["cooks"] = ck
    if m.do_replace:
        r.update(_replace_outliers(m, ii, y_ge, nf_nz, norm_ge, ck))
        if not m.has_nf and r.get("refit_y") is not None and len(r["refit_y"]):
            r["refit"] = _refit(m, r.pop("refit_y"), None, r["refit_base_mean"], m.xim)
    r["caz"] = _compared_all_zero(blk, m, ~nz_b, r.get("now_zero_local"))
    return r


def _refit(m: _Model, y_f, nf_f, base_mean_f, xim_f) -> dict:
    """``refitWithoutOutliers`` for genes with replaced counts: gene-wise dispersions, the trend
    at their new means, MAP dispersions and the fit, with the prior of the first fit."""
    o = m.opts
    y_f = np.ascontiguousarray(y_f)
    ge = estimate_gene_dispersions(
        y_f, m.X, size_factors=m.sf, norm_factors=nf_f, min_disp=o["min_disp"], kappa_0=o["kappa_0"],
        disp_tol=o["disp_tol"], maxit=o["maxit"], minmu=o["minmu"], xim=xim_f, gene_major=True,
    )  # fmt: skip
    disp_fit = m.trend(base_mean_f)
    fit = _map_and_fit(
        y_f, m.X, m.Xr, m.sf, nf_f, ge.mu, ge.disp_gene_est, disp_fit, m.prior_var, m.var_log, o, m.fill_disp
    )
    return dict(
        disp_gene_est=ge.disp_gene_est, disp_gene_iter=ge.disp_gene_iter, disp_fit=disp_fit,
        out={key: getattr(fit, key) for key in _OUT_KEYS},
    )  # fmt: skip


def _compared_all_zero(blk: Block, m: _Model, all_zero_b, now_zero_local) -> np.ndarray | None:
    """DESeq2's rule that a contrast whose compared samples are all zero (and the gene is not,
    after outlier replacement) has no estimate; genes × contrasts for the block."""
    if not any(mk is not None for mk in m.masks):
        return None
    zero_final = all_zero_b.copy()
    if now_zero_local is not None:
        zero_final[now_zero_local] = True
    y = blk.read(0, gene_major=True)
    caz = np.zeros((y.shape[0], len(m.masks)), dtype=np.bool_)
    for j, mk in enumerate(m.masks):
        if mk is not None:
            caz[:, j] = (y[:, mk] == 0).all(axis=1) & ~zero_final
    return caz


def _replace_outliers(m: _Model, ii, y_ge, nf_nz, norm_ge, ck) -> dict:
    """``replaceOutliers``: counts with a Cook's distance above the cutoff, in samples of cells with
    at least ``min_replicates`` samples, become the trimmed mean of the normalised counts times the
    sample's factor (truncated to an integer); the genes are queued for the refit."""
    sf = m.sf
    with np.errstate(invalid="ignore"):
        over = ck > m.cutoff
    rep = over.any(axis=1)
    r: dict = {"replace": rep}
    if not rep.any():
        return r
    r_loc = ii[rep]
    tbm = trimmed_mean_rows(norm_ge[rep], 0.2)
    nf_r = None if nf_nz is None else np.ascontiguousarray(nf_nz[rep])
    new_y = y_ge[rep].copy()
    change = over[rep] & m.replaceable[None, :]
    new_y[change] = np.trunc(tbm[:, None] * _nf_gene_major(sf, nf_r, r_loc.size))[change]
    norm_new = _normalised(new_y, sf, nf_r)
    now_zero = new_y.sum(axis=1) == 0
    keep = ~now_zero
    base_mean = row_means_r(norm_new)
    r.update(
        replaced_local=r_loc, base_mean=base_mean, base_var=row_vars_r(norm_new),
        now_zero_local=r_loc[now_zero], refit_local=r_loc[keep], refit_y=new_y[keep],
        refit_nf=None if nf_r is None else nf_r[keep], refit_base_mean=base_mean[keep],
    )  # fmt: skip
    return r


def _pass3_setup(inp: _Inputs, min_replicates_for_replace) -> None:
    m, n, p = inp.m, inp.n, inp.p
    m.cutoff = default_cooks_cutoff(n, p)
    if np.isfinite(min_replicates_for_replace):
        m.replaceable = n_or_more_in_cell(m.X, min_replicates_for_replace)
    else:
        m.replaceable = np.zeros(n, dtype=bool)
    m.do_replace = bool(m.replaceable.any()) and n > p


def _map_fit_and_outliers(inp: _Inputs, st: _State, min_replicates_for_replace, on_block) -> None:
    """Pass 3 (per block): MAP dispersions, the GLM fit, Cook's distances and ``replaceOutliers``.
    In memory the Cook's distances are kept (samples × genes); on dask input they become a lazy
    layer that recomputes each block's fit when it is computed."""
    _pass3_setup(inp, min_replicates_for_replace)
    g, p, k = inp.g, inp.p, inp.C.shape[1]
    st.out = dict(
        dispersion=np.full(g, np.nan), disp_map=np.full(g, np.nan), disp_outlier=np.zeros(g, bool),
        disp_iter=np.zeros(g, np.int64), beta=np.full((g, p), np.nan), beta_se=np.full((g, p), np.nan),
        beta_conv=np.zeros(g, bool), beta_iter=np.zeros(g, np.int64), deviance=np.full(g, np.nan),
        lrt_stat=np.full(g, np.nan), reduced_conv=np.zeros(g, bool),
    )  # fmt: skip
    st.max_cooks = np.full(g, np.nan)
    st.max_cooks_unreplaceable = np.full(g, np.nan)
    st.replace = np.zeros(g, dtype=bool)
    st.n_above = np.zeros(g, dtype=np.int64)
    st.new_all_zero = np.zeros(g, dtype=bool)
    st.caz = np.zeros((g, k), dtype=bool)
    st.refit_idx, st.refit_y, st.refit_nf = [], [], []
    keep_cooks = not inp.lazy
    if keep_cooks:
        st.cooks = np.full((inp.n, g), np.nan)
    mus, st.mus = st.mus, []
    # the pass-1 values (refits overwrite some of them as the blocks are stored)
    dge, dfit = st.disp_gene_est.copy(), st.disp_fit.copy()

    def per_block(i, sl):
        mu, mus[i] = mus[i], None  # each block's pass-1 means are released once used
        return st.nz[sl], dge[sl], dfit[sl], mu

    for sl, r in zip(
        inp.blocks,
        map_gene_blocks(
            _fit_block, inp.mats, inp.blocks, args=(inp.m, keep_cooks), per_block=per_block, on_block=on_block,
            stage="MAP dispersions and fit",
        ),
        strict=True,
    ):  # fmt: skip
        _store_block(st, sl, r)
    if not keep_cooks:
        st.cooks = lazy_gene_map(
            _cooks_block, inp.mats, inp.blocks, args=(inp.m,),
            per_block=lambda i, sl: (st.nz[sl], dge[sl], dfit[sl]),
        )  # fmt: skip


def _store_block(st: _State, sl: slice, r: dict) -> None:
    """Write one block's pass-3 results into the gene-length arrays."""
    ii = sl.start + r["ii"]
    if ii.size == 0:
        return
    for key, v in r["out"].items():
        st.out[key][ii] = v
    st.max_cooks[ii] = r["max_cooks"]
    if "max_cooks_unreplaceable" in r:
        st.max_cooks_unreplaceable[ii] = r["max_cooks_unreplaceable"]
    st.n_above[ii] = r["n_above"]
    if "cooks" in r:
        st.cooks[:, ii] = r["cooks"].T
    if r.get("caz") is not None:
        st.caz[sl] = r["caz"]
    if "replace" in r:
        st.replace[ii] = r["replace"]
    if "replaced_local" in r:
        rr = sl.start + r["replaced_local"]
        st.base_mean[rr], st.base_var[rr] = r["base_mean"], r["base_var"]
        st.new_all_zero[sl.start + r["now_zero_local"]] = True
        if r["refit_local"].size:
            f_idx = sl.start + r["refit_local"]
            st.refit_idx.append(f_idx)
            if "refit" in r:  # refitted in the block (size factors)
                _store_refit(st, f_idx, r["refit"])
            else:  # normalisation factors: refitted together (xim over the refitted genes)
                st.refit_y.append(r["refit_y"])
                st.refit_nf.append(r["refit_nf"])


def _store_refit(st: _State, f_idx: np.ndarray, rf: dict) -> None:
    st.disp_gene_est[f_idx], st.disp_gene_iter[f_idx] = rf["disp_gene_est"], rf["disp_gene_iter"]
    st.disp_fit[f_idx] = rf["disp_fit"]
    for key, v in rf["out"].items():
        st.out[key][f_idx] = v


def _cooks_block(blk: Block, m: _Model, nz_b, dge_b, dfit_b) -> np.ndarray:
    """Cook's distances of one block (samples × genes, NaN for all-zero genes), recomputed from
    the counts and the per-gene results of passes 1 and 2 (the lazy layer on dask input)."""
    r = _fit_block(blk, m, True, nz_b, dge_b, dfit_b, None)
    out = np.full((m.X.shape[0], nz_b.size), np.nan)
    if r["ii"].size:
        out[:, r["ii"]] = r["cooks"].T
    return out


def _refit_without_outliers(inp: _Inputs, st: _State) -> None:
    """``refitWithoutOutliers``. With size factors each block refitted its own genes in pass 3 (the
    genes are independent given the trend and the prior). With normalisation factors DESeq2
    recomputes ``xim`` over the refitted genes, so they are refitted here together (their counts
    were gathered: with factors, dask input brings those genes' rows to the client)."""
    st.refitted = bool(st.refit_idx)
    if not st.refit_y:
        return
    m = inp.m
    f_idx = np.concatenate(st.refit_idx)
    y_f = np.ascontiguousarray(np.concatenate(st.refit_y, axis=0))
    nf_f = np.ascontiguousarray(np.concatenate(st.refit_nf, axis=0))
    # DESeq2 recomputes xim on the refitted subset: mean over samples of 1 / (mean over genes)
    xim_f = xim_r(nf_col_sums=col_sums_ld([nf_f], inp.n))
    _store_refit(st, f_idx, _refit(m, y_f, nf_f, st.base_mean[f_idx], xim_f))


# ---- contrasts -------------------------------------------------------------------------------
def _contrast_block(blk: Block, m: _Model, C, ok_b, beta_b, disp_b):
    if not ok_b.any() or C.shape[1] == 0:
        return None
    nf_b = blk.read(0, gene_major=True, keep=ok_b) if m.has_nf else None
    return contrast_estimates(beta_b[ok_b], m.X, m.sf, nf_b, disp_b[ok_b], C, minmu=m.opts["minmu"])


def _contrast_estimates(inp: _Inputs, st: _State) -> None:
    """``getContrast`` at the final coefficients (per block; only the normalisation factors are
    read, so with size factors nothing is read again)."""
    g, k = inp.g, inp.C.shape[1]
    final_nz = st.nz & ~st.new_all_zero
    st.lfc = np.full((g, k), np.nan)
    st.lse = np.full((g, k), np.nan)
    st.all_zero_final = st.all_zero | st.new_all_zero
    if not k:
        return
    beta, disp = st.out["beta"], st.out["dispersion"]
    parts = map_gene_blocks(
        _contrast_block, [inp.nf], inp.blocks, args=(inp.m, inp.C),
        per_block=lambda i, sl: (final_nz[sl], beta[sl], disp[sl]),
    )  # fmt: skip
    for sl, r in zip(inp.blocks, parts, strict=True):
        if r is not None:
            ii = sl.start + np.flatnonzero(final_nz[sl])
            st.lfc[ii], st.lse[ii] = r


def _assemble(inp: _Inputs, st: _State, test: str) -> DESeqFit:
    out, mx = st.out, st.max_cooks
    if st.refitted:
        # refitWithoutOutliers: results of genes whose counts became all zero are NA, and the
        # maximum Cook's distance is taken over the samples that could not be replaced
        for key in ("beta", "beta_se", "deviance", "lrt_stat"):
            out[key][st.new_all_zero] = np.nan
        if inp.m.replaceable.all():
            mx[:] = np.nan
        else:
            mx = st.max_cooks_unreplaceable
            mx[st.all_zero] = np.nan
    res = DESeqFit(
        base_mean=st.base_mean, base_var=st.base_var, all_zero=st.all_zero_final, disp_gene_est=st.disp_gene_est,
        disp_gene_iter=st.disp_gene_iter, disp_fit=st.disp_fit, disp_map=out["disp_map"], dispersion=out["dispersion"],
        disp_outlier=out["disp_outlier"], disp_iter=out["disp_iter"], beta=out["beta"], beta_se=out["beta_se"],
        beta_conv=out["beta_conv"], beta_iter=out["beta_iter"], deviance=out["deviance"], cooks=st.cooks,
        max_cooks=mx, replace=st.replace, n_above_outlier=st.n_above, contrast_lfc=st.lfc, contrast_se=st.lse,
        contrast_all_zero=st.caz, trend=st.trend, var_log_disp_ests=float(inp.m.var_log), prior_var=float(inp.m.prior_var),
        test=test, replaceable=inp.m.replaceable, refitted=st.refitted, cooks_cutoff=inp.m.cutoff,
    )  # fmt: skip
    if test == "LRT":
        df = inp.p - inp.m.Xr.shape[1]
        res.lrt_stat = out["lrt_stat"]
        res.lrt_df = int(df)
        with np.errstate(invalid="ignore"):
            res.lrt_pvalue = sst.chi2.sf(out["lrt_stat"], df)
        res.reduced_beta_conv = out["reduced_conv"]
    return res


# ----------------------------------------------------------------------------------------------
# results()
# ----------------------------------------------------------------------------------------------
@dataclass
class ResultTable:
    """One contrast's results (DESeq2's ``results()`` columns) and the filtering metadata."""

    base_mean: np.ndarray
    log2_fold_change: np.ndarray
    lfc_se: np.ndarray
    stat: np.ndarray
    pvalue: np.ndarray
    padj: np.ndarray
    cooks_outlier: np.ndarray
    filtering: FilterResult | None


def results(
    fit: DESeqFit,
    j: int,
    *,
    lfc_threshold: float = 0.0,
    alt_hypothesis: str = "greaterAbs",
    cooks_cutoff: float | bool | None = None,
    two_level_rule: bool = False,
    independent_filtering_: bool = True,
    alpha: float = 0.1,
    theta=None,
) -> ResultTable:
    """DESeq2's ``results()`` for contrast ``j`` of ``fit``.

    ``cooks_cutoff``: ``None``/``True`` for ``qf(0.99, p, m - p)``, ``False`` for none, or a
    number. ``two_level_rule``: the design is one factor with two levels (DESeq2 then keeps an
    outlier gene's p-value when three or more samples have a larger count than the outlier)."""
    if alt_hypothesis not in ALT_HYPOTHESES:
        raise ValueError(f"alt_hypothesis={alt_hypothesis!r} is not supported; choose one of {list(ALT_HYPOTHESES)}")
    lfc = fit.contrast_lfc[:, j].copy()
    se = fit.contrast_se[:, j].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = lfc / se
    pvalue = two_sided_normal_pvalue(stat)
    caz = fit.contrast_all_zero[:, j]
    lfc[caz] = 0.0
    stat[caz] = 0.0
    pvalue[caz] = 1.0
    if fit.test == "LRT":
        stat = fit.lrt_stat.copy()
        pvalue = fit.lrt_pvalue.copy()
    if not (lfc_threshold == 0 and alt_hypothesis == "greaterAbs"):
        if fit.test == "LRT":
            raise ValueError("tests of log fold change above or below a threshold must be Wald tests")
        stat, pvalue = threshold_test(lfc, se, lfc_threshold, alt_hypothesis)
    cutoff = fit.cooks_cutoff if cooks_cutoff is None or cooks_cutoff is True else cooks_cutoff
    outlier = np.zeros(lfc.shape, dtype=bool)
    if cutoff is not False:
        with np.errstate(invalid="ignore"):
            outlier = fit.max_cooks > float(cutoff)
        if two_level_rule and outlier.any():
            outlier &= ~(fit.n_above_outlier >= 3)
        pvalue[outlier] = np.nan
    now_zero = fit.replace & (fit.base_mean == 0)
    lfc[now_zero] = 0.0
    se[now_zero] = 0.0
    stat[now_zero] = 0.0
    pvalue[now_zero] = 1.0
    filt = None
    if independent_filtering_:
        filt = independent_filtering(fit.base_mean, pvalue, alpha, theta)
        padj = filt.padj
    else:
        padj = p_adjust_bh(pvalue)
    return ResultTable(fit.base_mean.copy(), lfc, se, stat, pvalue, padj, outlier, filt)


# ----------------------------------------------------------------------------------------------
# lfcShrink(type = "normal")
# ----------------------------------------------------------------------------------------------
def _shrink_block(blk: Block, Xs, sf, lam, lam_nat, C, masks, minmu, nz_b, disp_b):
    """The penalised refit and contrasts of the block's genes that are not all zero."""
    if not nz_b.any():
        return None
    y_b = blk.read(0, gene_major=True, keep=nz_b)
    nf_b = blk.read(1, gene_major=True, keep=nz_b)
    f = _fit(y_b, Xs, disp_b[nz_b], sf, nf_b, minmu, lambda_=lam)
    lfc, se = contrast_estimates(f.beta, Xs, sf, nf_b, disp_b[nz_b], C, lambda_nat=lam_nat, minmu=minmu)
    for j, mk in enumerate(masks):
        if mk is not None:
            lfc[(y_b[:, mk] == 0).all(axis=1), j] = 0.0
    return lfc, se


def shrink_normal(
    counts: np.ndarray,
    fit: DESeqFit,
    design: np.ndarray,
    prior_var: np.ndarray,
    contrasts: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
    contrast_samples: list | None = None,
    minmu: float = 0.5,
    block_genes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shrunken log2 fold changes and their standard errors (``lfcShrink(type = "normal")``).

    Refits every gene that is not all zero with the ridge penalty ``1 / prior_var`` (log2 scale)
    on ``design`` (the expanded model matrix for factor contrasts, the standard one for a
    coefficient), with the original counts and the final dispersions of ``fit``, then evaluates
    the ``contrasts`` (columns of ``design``) with the penalised sandwich covariance. Returns
    genes × contrasts arrays (NaN for all-zero genes; 0 for genes whose replaced counts are all
    zero; 0 fold change where the compared samples are all zero)."""
    Xs = np.asarray(design, dtype=np.float64)
    n, g = counts.shape
    C = np.asarray(contrasts, dtype=np.float64).reshape(Xs.shape[1], -1)
    k = C.shape[1]
    lam = 1.0 / np.asarray(prior_var, dtype=np.float64)
    lam_nat = lam * LOG2E**2
    sf = None if size_factors is None else np.asarray(size_factors, dtype=np.float64).ravel()
    lfc = np.full((g, k), np.nan)
    se = np.full((g, k), np.nan)
    nz = ~fit.all_zero
    masks = [None if m is None else np.asarray(m, dtype=bool) for m in (contrast_samples or [None] * k)]
    blocks = blocks_for(counts, n, block_genes=block_genes)
    parts = map_gene_blocks(
        _shrink_block, [counts, norm_factors], blocks, args=(Xs, sf, lam, lam_nat, C, masks, minmu),
        per_block=lambda i, sl: (nz[sl], fit.dispersion[sl]),
    )  # fmt: skip
    for sl, r in zip(blocks, parts, strict=True):
        if r is not None:
            ii = sl.start + np.flatnonzero(nz[sl])
            lfc[ii], se[ii] = r
    now_zero = fit.replace & (fit.base_mean == 0)
    lfc[now_zero] = 0.0
    se[now_zero] = 0.0
    return lfc, se
