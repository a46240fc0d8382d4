"""limma's ``duplicateCorrelation`` with ``block=`` (limma 3.68.5; statmod 1.5's ``mixedModel2Fit``).

The intra-block correlation of repeated measures: for every gene, the two variance components of
the mixed model ``y = X beta + Z u + e`` (``Z`` the block indicators, ``u`` and ``e`` independent
normal) are estimated by REML the way statmod's ``mixedModel2Fit`` does it: on the residual space
of the (weighted) design, rotated by the singular vectors of the projected block indicators, the
squared rotated residuals have means ``sigma2_e + d_k sigma2_b`` (``d_k`` the squared singular
values), which a gamma GLM with identity link fits (``glmgam.fit``, started from least squares).
The gene's correlation is ``sigma2_b / (sigma2_e + sigma2_b)``. The consensus is the back-transformed
15% trimmed mean of the Fisher-transformed (``atanh``) correlations, after bounding them to
``[1 / (1 - largest block) + 0.01, 0.99]``.

Vectorised over genes: the design's residual space, the singular value decompositions and the
least-squares starts are batched in numpy per pattern of missing values; the gamma GLM runs per
gene in compiled code (:func:`._kernels.glmgam_identity2`). As in limma, observation weights
(e.g. voom's) scale the response and the design but not the block indicators, and a weight <= 0
marks the observation as missing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .._blocks import gene_blocks
from ._kernels import glmgam_identity2
from .lmfit import _check_design, _estimable_columns, _weights_matrix, missing_patterns

#: ``mixedModel2Fit`` as ``duplicateCorrelation`` calls it: ``tol = 1e-6`` (statmod's default),
#: ``maxit = 20``
_GLM_TOL = 1e-6
_GLM_MAXIT = 20
_RHO_MAX = 0.99


@dataclass
class DupCorResult:
    """Result of :func:`duplicate_correlation`.

    Attributes
    ----------
    consensus_correlation
        the consensus intra-block correlation (limma's ``consensus.correlation``).
    atanh_correlations
        ``(genes,)`` Fisher-transformed per-gene correlations after bounding (NaN where the
        gene has too few observations or blocks, or the fit failed).
    """

    consensus_correlation: float
    atanh_correlations: np.ndarray


def block_codes(block, n: int) -> tuple[np.ndarray, int]:
    """Integer codes ``0..k-1`` of a block vector of length ``n`` (any labels) and ``k``."""
    b = np.asarray(block)
    if b.ndim != 1 or b.size != n:
        raise ValueError(f"block must have one value per sample ({n}), got shape {b.shape}")
    _, codes = np.unique(b, return_inverse=True)
    codes = np.asarray(codes, dtype=np.intp).ravel()
    return codes, int(codes.max()) + 1 if codes.size else 0


def block_in_design(design, block) -> bool:
    """Whether the block factor is already encoded in the design (limma's check: the residuals of
    the block indicators, minus the first level's, after projecting on the design are all below
    1e-8), which makes the intra-block correlation unidentifiable."""
    X = np.asarray(design, dtype=np.float64)
    codes, k = block_codes(block, X.shape[0])
    if k < 2:
        return True  # one block: the same for every sample, like an intercept (limma's check gives TRUE)
    B = (codes[:, None] == np.arange(1, k)[None, :]).astype(np.float64)
    Xe = X[:, _estimable_columns(X)]
    Q = np.linalg.qr(Xe, mode="complete")[0][:, Xe.shape[1] :]
    if Q.shape[1] == 0:
        return True
    return bool(np.max(np.abs(Q.T @ B)) < 1e-8)


def _trimmed_mean(x: np.ndarray, trim: float) -> float:
    """R's ``mean(x, trim = trim, na.rm = TRUE)``."""
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        return math.nan
    if trim > 0:
        if trim >= 0.5:
            return float(np.median(x))
        lo = int(math.floor(n * trim))  # R's lo - 1
        hi = n - lo
        x = np.sort(x)[lo:hi]
    return math.fsum(x) / x.size


def _residual_rotation(y, X, Z, sw):
    """The squared singular values ``d`` (padded with zeros) and the squared rotated residuals
    ``dy`` of ``mixedModel2Fit`` for the genes (columns) of ``y``: ``genes × m`` each, ``m`` the
    residual degrees of freedom. ``sw`` is ``sqrt(weights)`` (samples × genes) or None."""
    n, r = X.shape
    m = n - r
    g = y.shape[1]
    if sw is None:
        Q = np.linalg.qr(X, mode="complete")[0][:, r:]
        U, s, _ = np.linalg.svd(Q.T @ Z, full_matrices=True)
        dy = (U.T @ (Q.T @ y)) ** 2
        d = np.zeros(m)
        d[: s.size] = s**2
        return np.broadcast_to(d, (g, m)), dy.T
    Xw = sw.T[:, :, None] * X[None, :, :]  # genes × n × r
    Q = np.linalg.qr(Xw, mode="complete")[0][:, :, r:]  # genes × n × m
    QtZ = np.einsum("gnm,nq->gmq", Q, Z)
    U, s, _ = np.linalg.svd(QtZ, full_matrices=True)  # U: genes × m × m
    qy = np.einsum("gnm,ng->gm", Q, sw * y)
    dy = np.einsum("gmk,gm->gk", U, qy) ** 2
    d = np.zeros((g, m))
    d[:, : s.shape[1]] = s**2
    return d, dy


def _varcomp_rho(d, dy):
    """``mixedModel2Fit(only.varcomp = TRUE)``'s variance components from ``d``/``dy`` (genes × m)
    and the correlation ``block / (residual + block)``: least squares of ``dy`` on ``[1, d]``,
    refined by the gamma GLM when ``m > 2`` and ``d`` varies."""
    g, m = dy.shape
    dm = d.mean(axis=1)
    dc = d - dm[:, None]
    sdd = np.einsum("gm,gm->g", dc, dc)
    dnorm = np.sqrt(np.einsum("gm,gm->g", d, d))
    aliased = ~(np.sqrt(sdd) > 1e-7 * dnorm)  # lm.fit: the d column is collinear with the intercept
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.einsum("gm,gm->g", dc, dy) / sdd
        inter = dy.mean(axis=1) - slope * dm
    slope[aliased] = np.nan
    vc = np.column_stack([inter, slope])
    nonzero = np.sum(np.abs(d) > 1e-15, axis=1)
    var_d = sdd / max(m - 1, 1)
    use_glm = (m > 2) & (nonzero > 1) & (var_d > 1e-15) & ~aliased
    if use_glm.any():
        fitted_ok = np.all(inter[:, None] + slope[:, None] * d >= 0, axis=1)
        start = np.where(fitted_ok[:, None], vc, np.column_stack([dy.mean(axis=1), np.zeros(g)]))
        idx = np.flatnonzero(use_glm)
        vc[idx] = glmgam_identity2(
            np.ascontiguousarray(d[idx]),
            np.ascontiguousarray(dy[idx]),
            np.ascontiguousarray(start[idx]),
            _GLM_TOL,
            _GLM_MAXIT,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        return vc[:, 1] / (vc[:, 0] + vc[:, 1])


def duplicate_correlation(
    y, design, block, *, weights=None, trim: float = 0.15, chunk_elements: int = 2_000_000
) -> DupCorResult:
    """The consensus intra-block correlation (limma ``duplicateCorrelation(y, design, block = block)``).

    Parameters
    ----------
    y
        Log-expression, samples × genes; NaN marks a missing value.
    design
        Design matrix, samples × coefficients (the fixed effects; the block must not be one).
    block
        One label per sample; samples with the same label are correlated.
    weights
        Optional observation weights (samples × genes, or one per sample), e.g. voom's.
    trim
        Fraction trimmed from each end before averaging the ``atanh`` correlations.
    chunk_elements
        Genes are processed in batches of about this many ``samples² × genes`` elements.

    Returns
    -------
    :class:`DupCorResult`. With blocks all of size 1, or a block factor that the design already
    encodes, the correlation is 0 (with a warning), as in limma.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be a 2-d samples x genes array, got shape {y.shape}")
    n, g = y.shape
    X = _check_design(design, n)
    nbeta = X.shape[1]
    codes, _ = block_codes(block, n)
    max_block = int(np.bincount(codes).max())
    if max_block == 1:
        warnings.warn("Blocks all of size 1: setting intrablock correlation to zero.", UserWarning, stacklevel=2)
        return DupCorResult(0.0, np.zeros(g))
    if block_in_design(X, codes):
        warnings.warn(
            "Block factor already encoded in the design matrix: setting intrablock correlation to zero.",
            UserWarning,
            stacklevel=2,
        )
        return DupCorResult(0.0, np.zeros(g))
    missing = ~np.isfinite(y)
    W = None
    if weights is not None:
        W = _weights_matrix(weights, y.shape)
        missing = missing | ~(W > 0) | ~np.isfinite(W)

    rho = np.full(g, np.nan)
    for obs, genes in missing_patterns(missing):
        nobs = int(obs.sum())
        present = np.unique(codes[obs])
        nblocks = present.size
        if not (nobs > nbeta + 2 and 1 < nblocks < nobs - 1):
            continue
        Xo = X[obs][:, _estimable_columns(X[obs])]
        Z = (codes[obs][:, None] == present[None, :]).astype(np.float64)
        for sl in gene_blocks(genes.size, nobs * nobs, block_elements=chunk_elements):
            gg = genes[sl]
            yo = y[np.ix_(obs, gg)]
            sw = None
            if W is not None:
                wo = W[np.ix_(obs, gg)]
                sw = None if np.all(wo == 1.0) else np.sqrt(wo)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                d, dy = _residual_rotation(yo, Xo, Z, sw)
                rho[gg] = _varcomp_rho(d, dy)

    rho_min = 1.0 / (1.0 - max_block) + 0.01
    with np.errstate(invalid="ignore"):
        rho = np.where(rho < rho_min, rho_min, rho)
        rho = np.where(rho > _RHO_MAX, _RHO_MAX, rho)
    arho = np.arctanh(rho)
    return DupCorResult(float(np.tanh(_trimmed_mean(arho, trim))), arho)


def _dupcor_block(blk, X, block, vec_weights, trim):
    w = blk.read(1)
    res = duplicate_correlation(blk.read(0), X, block, weights=vec_weights if w is None else w, trim=trim)
    return res.atanh_correlations


def duplicate_correlation_blocks(y, design, block, *, weights=None, trim: float = 0.15, blocks=None) -> DupCorResult:
    """:func:`duplicate_correlation` of a samples × genes matrix read block by block of genes (e.g.
    a dask array, with a dask weights matrix read the same way): one pass returning each gene's
    correlation, then the consensus over all genes, the same numbers as in memory."""
    from .._blocks import blocks_for, map_gene_blocks

    n, g = y.shape
    X = _check_design(design, n)
    codes, _ = block_codes(block, n)
    if int(np.bincount(codes).max()) == 1 or block_in_design(X, codes):
        zero = duplicate_correlation(np.zeros((n, 1)), X, block)  # limma's zero, with its warning
        return DupCorResult(zero.consensus_correlation, np.zeros(g))
    wmat = weights if weights is not None and np.ndim(weights) == 2 and np.shape(weights)[1] > 1 else None
    wvec = None if wmat is not None or weights is None else np.asarray(weights, dtype=np.float64)
    parts = map_gene_blocks(
        _dupcor_block, [y, wmat], blocks_for(y, n) if blocks is None else blocks, args=(X, codes, wvec, trim)
    )
    arho = np.concatenate(parts)
    return DupCorResult(float(np.tanh(_trimmed_mean(arho, trim))), arho)
