"""limma's ``voom`` (and ``voomWithQualityWeights``, in ``array_weights.py``): log-CPM, the lowess
mean-variance trend and the observation weights.

Follows limma 3.68 (Bioconductor 3.23), whose ``voom(adaptive.span = TRUE)`` chooses the lowess
span from the number of genes (``chooseLowessSpan``); ``adaptive_span=False`` gives the fixed
``span`` (0.5 by default), voom's behaviour before limma 3.66 (e.g. limma 3.54), whose results are
otherwise the same. limma 3.68's ``offset``/``offset.prior`` (per-observation library sizes) are
``offset``/``offset_prior`` here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .lmfit import LinearFit, _check_design, lm_fit
from .lowess import _interp_rule2, choose_lowess_span, lowess


@dataclass
class VoomResult:
    """Result of :func:`voom`.

    Attributes
    ----------
    E
        samples × genes log2-CPM.
    weights
        samples × genes precision weights.
    lib_size
        ``(samples,)`` library sizes used (already multiplied by normalisation factors).
    sx, sy
        per-gene ``log2(count size + 0.5)`` and ``sqrt(sigma)`` the trend was fitted to
        (NaN for all-zero genes, which are left out).
    trend_x, trend_y
        the lowess trend (sorted ``sx`` and its fitted values).
    fit
        the unweighted :class:`LinearFit` of ``E``.
    span
        the lowess span used (chosen from the number of genes with ``adaptive_span``).
    """

    E: np.ndarray
    weights: np.ndarray
    lib_size: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    trend_x: np.ndarray
    trend_y: np.ndarray
    fit: LinearFit
    span: float = 0.5


def _offset_prior(offset, offset_prior, shape) -> np.ndarray | None:
    """limma 3.68's ``offset.prior``: given, or ``offset`` centred per gene over the samples
    (``offset - rowMeans(offset)``); ``offset_prior`` wins when both are given, as in R."""
    if offset_prior is None and offset is None:
        return None
    which = "offset_prior" if offset_prior is not None else "offset"
    o = np.asarray(offset_prior if offset_prior is not None else offset, dtype=np.float64)
    if o.shape != shape:
        raise ValueError(f"{which} must have the shape of counts {shape}, got {o.shape}")
    if not np.all(np.isfinite(o)):
        raise ValueError(f"{which} must be finite (natural-log offsets)")
    return o if offset_prior is not None else o - o.mean(axis=0)


def voom(
    counts,
    design,
    *,
    lib_size=None,
    offset=None,
    offset_prior=None,
    span: float = 0.5,
    adaptive_span: bool = True,
    weights=None,
    block=None,
    correlation: float | None = None,
) -> VoomResult:
    """limma's ``voom`` on a samples × genes count matrix.

    ``lib_size`` (per sample) defaults to the column totals; for a normalised DGEList pass
    ``lib.size * norm.factors``. ``E = log2((counts + 0.5) / (lib_size + 1) * 1e6)``; the lowess
    trend (``f = span``) of ``sqrt(sigma)`` against the mean log count gives the weights
    ``trend(fitted log count) ** -4``, interpolated linearly and held constant beyond the ends.
    With ``adaptive_span`` (limma's default since 3.66) the span is ``chooseLowessSpan`` of the
    number of genes (all of them, all-zero genes included, as R counts rows) and ``span`` is ignored.

    ``offset`` (samples × genes, natural log, e.g. edgeR's DGEList offset) makes the library
    sizes per observation, as limma 3.68 does: ``lib_size * exp(offset_prior)`` with
    ``offset_prior = offset - gene mean of offset`` (or ``offset_prior`` given directly) in the
    log-CPM and the fitted log counts; the trend's x-axis keeps the mean log library size.

    ``weights`` (prior weights, e.g. sample weights from :func:`array_weights`), ``block`` and
    ``correlation`` (repeated measures) go to voom's internal :func:`lm_fit`, as in limma, and
    shape the trend through the residual standard deviations and fitted values; the returned
    weights are voom's alone (limma's ``voomWithQualityWeights`` multiplies them by the sample
    weights afterwards).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts must be a 2-d samples x genes array, got shape {counts.shape}")
    n, g = counts.shape
    if g < 2:
        raise ValueError("Need at least two genes to fit a mean-variance trend")
    if np.isnan(counts).any():
        raise ValueError("NA counts not allowed")
    if np.min(counts) < 0:
        raise ValueError("Negative counts not allowed")
    X = _check_design(design, n)
    if adaptive_span:
        span = choose_lowess_span(g, small_n=50, min_span=0.3, power=1 / 3)
    lib = counts.sum(axis=1) if lib_size is None else np.asarray(lib_size, dtype=np.float64).ravel()
    if lib.shape != (n,):
        raise ValueError(f"lib_size must have one value per sample ({n}), got shape {lib.shape}")
    loglib = np.log2(lib + 1)
    oprior = _offset_prior(offset, offset_prior, (n, g))
    # log2(lib.size.matrix + 1): one row per sample, or per observation with offsets
    loglib_obs = loglib[:, None] if oprior is None else np.log2(np.exp(np.log(lib)[:, None] + oprior) + 1)
    E = np.log2(counts + 0.5) - loglib_obs + np.log2(1e6)
    fit = lm_fit(E, X, weights=weights, block=block, correlation=correlation)
    n_with_reps = int(np.sum(fit.df_residual > 0))
    if n_with_reps < 2:
        if n_with_reps == 0:
            warnings.warn(
                "The experimental design has no replication. Setting weights to 1.", UserWarning, stacklevel=2
            )
        else:
            warnings.warn(
                "Only one gene with any replication. Setting weights to 1.", UserWarning, stacklevel=2
            )
        nanv = np.full(g, np.nan)
        return VoomResult(
            E, np.ones_like(E), lib, nanv, nanv.copy(), np.zeros(0), np.zeros(0), fit, float(span)
        )
    sx = fit.amean + np.mean(loglib) - np.log2(1e6)
    sy = np.sqrt(fit.sigma)
    allzero = counts.sum(axis=0) == 0
    use = ~allzero
    lx, ly, xu, ly_u = _trend(sx, sy, use, span)
    weights = _weights(X, fit.coefficients, loglib_obs, xu, ly_u)
    sx_out = np.where(use, sx, np.nan)
    sy_out = np.where(use, sy, np.nan)
    return VoomResult(
        E=E,
        weights=weights,
        lib_size=lib,
        sx=sx_out,
        sy=sy_out,
        trend_x=lx,
        trend_y=ly,
        fit=fit,
        span=float(span),
    )


def _trend(sx, sy, use, span: float):
    """voom's lowess trend of ``sy`` on ``sx`` (genes ``use``) and the function R's
    ``approxfun(l, rule = 2, ties = list("ordered", mean))`` makes of it: ``(lx, ly, xu, ly_u)``."""
    lx, ly = lowess(sx[use], sy[use], f=span)
    xu, start = np.unique(lx, return_index=True)
    if xu.size < lx.size:
        counts_u = np.diff(np.append(start, lx.size))
        ly_u = np.add.reduceat(ly, start) / counts_u
    else:
        ly_u = ly
    return lx, ly, xu, ly_u


def _weights(X, coefficients, loglib_obs, xu, ly_u):
    """The precision weights: the trend at the fitted log counts, to the power -4."""
    fitted_values = X @ coefficients
    fitted_logcount = fitted_values + loglib_obs - np.log2(1e6)
    trend = _interp_rule2(fitted_logcount, xu, ly_u)
    return 1.0 / trend**4


# --------------------------------------------------------------------------------------------
# voom block by block of genes (dask input)
# --------------------------------------------------------------------------------------------


def _log_lib_obs(loglib, lib, off):
    """``log2(lib.size.matrix + 1)``: per sample, or per observation from a block's offsets."""
    if off is None:
        return loglib[:, None]
    return np.log2(np.exp(np.log(lib)[:, None] + (off - off.mean(axis=0))) + 1)


def _block_E(blk, loglib, lib):
    return np.log2(blk.read(0) + 0.5) - _log_lib_obs(loglib, lib, blk.read(1)) + np.log2(1e6)


def _block_fit(blk, X, loglib, lib, block, correlation):
    fit = lm_fit(_block_E(blk, loglib, lib), X, block=block, correlation=correlation)
    y = blk.read(0)
    return fit.coefficients, fit.sigma, fit.df_residual, fit.amean, y.sum(axis=0) == 0


def _block_weights(blk, X, coefficients, loglib, lib, xu, ly_u):
    return _weights(X, coefficients[:, blk.sl], _log_lib_obs(loglib, lib, blk.read(1)), xu, ly_u)


def voom_blocks(
    counts, design, *, lib_size, offset=None, span: float = 0.5, adaptive_span: bool = True, block=None,
    correlation: float | None = None, blocks=None,
):  # fmt: skip
    """:func:`voom` of a samples × genes count matrix block by block of genes (e.g. a dask array;
    ``offset``, if given, read block by block like the counts): one pass for the unweighted fit
    (each task returns per-gene vectors), the trend on those vectors, and ``E`` and ``weights`` as
    samples × genes results made block by block (lazy dask arrays for dask input, computed only when
    used). ``lib_size`` (the effective library sizes) is required; ``block`` and ``correlation``
    go to voom's linear model as in :func:`voom`. Same numbers as :func:`voom`; its ``fit`` holds
    the per-gene vectors of the unweighted fit."""
    from .._blocks import blocks_for, lazy_gene_map, map_gene_blocks

    n, g = counts.shape
    if g < 2:
        raise ValueError("Need at least two genes to fit a mean-variance trend")
    X = _check_design(design, n)
    if adaptive_span:
        span = choose_lowess_span(g, small_n=50, min_span=0.3, power=1 / 3)
    lib = np.asarray(lib_size, dtype=np.float64).ravel()
    if lib.shape != (n,):
        raise ValueError(f"lib_size must have one value per sample ({n}), got shape {lib.shape}")
    loglib = np.log2(lib + 1)
    blocks = blocks_for(counts, n) if blocks is None else blocks
    mats = [counts, offset]
    parts = map_gene_blocks(_block_fit, mats, blocks, args=(X, loglib, lib, block, correlation))
    coef, sigma, df, amean, allzero = (np.concatenate([p[i] for p in parts], axis=-1) for i in range(5))
    fit = LinearFit(coef, np.full_like(coef, np.nan), sigma, df, amean, np.linalg.inv(X.T @ X), X)
    E = lazy_gene_map(_block_E, mats, blocks, args=(loglib, lib))
    n_with_reps = int(np.sum(df > 0))
    if n_with_reps < 2:
        _warn_no_replication(n_with_reps)
        nanv = np.full(g, np.nan)
        W = lazy_gene_map(_ones, mats, blocks)
        return VoomResult(E, W, lib, nanv, nanv.copy(), np.zeros(0), np.zeros(0), fit, float(span))
    sx = amean + np.mean(loglib) - np.log2(1e6)
    sy = np.sqrt(sigma)
    use = ~allzero
    lx, ly, xu, ly_u = _trend(sx, sy, use, span)
    W = lazy_gene_map(_block_weights, mats, blocks, args=(X, coef, loglib, lib, xu, ly_u))
    return VoomResult(
        E=E, weights=W, lib_size=lib, sx=np.where(use, sx, np.nan), sy=np.where(use, sy, np.nan), trend_x=lx,
        trend_y=ly, fit=fit, span=float(span),
    )  # fmt: skip


def _ones(blk):
    return np.ones((blk.read(0).shape[0], blk.size))


def _warn_no_replication(n_with_reps: int) -> None:
    if n_with_reps == 0:
        warnings.warn("The experimental design has no replication. Setting weights to 1.", UserWarning, stacklevel=3)
    else:
        warnings.warn("Only one gene with any replication. Setting weights to 1.", UserWarning, stacklevel=3)
