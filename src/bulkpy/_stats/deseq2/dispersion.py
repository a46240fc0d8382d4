"""DESeq2's dispersion estimation, vectorised over genes.

Arrays are samples × genes (``AnnData.X``) at the interface. The steps follow DESeq2 1.38:

1. :func:`estimate_gene_dispersions` (``estimateDispersionsGeneEst``): rough starting values
   (the smaller of ``roughDispEstimate`` and the method-of-moments estimate, with R's arithmetic so
   that they are R's doubles: the line search can hinge on their last bits), means from the NB
   GLM (or from a linear model when the design is one-way), then per gene the Cox-Reid adjusted
   profile likelihood maximised over log(alpha) by DESeq2's Armijo line search, with DESeq2's
   rules for moves that do not increase the likelihood and a grid search for genes that did not
   converge;
2. :func:`fit_dispersion_trend` (``estimateDispersionsFit``): ``parametric``
   (``asymptDisp + extraPois / mean`` by an iteratively reweighted Gamma-family GLM with outlier
   removal; on failure -- DESeq2's own conditions -- a warning and the ``local`` fit, as DESeq2),
   ``local`` (``locfit`` on log scale as DESeq2's ``localDispersionFit`` calls it, reproduced
   with locfit's numerics, see :mod:`bulkpy._stats.deseq2.locfit`) or ``mean`` (trimmed mean);
3. :func:`dispersion_prior_variance` (``estimateDispersionsPriorVar``);
4. :func:`estimate_map_dispersions` (``estimateDispersionsMAP``): maximum a posteriori
   dispersions under a log-normal prior centred on the trend, gene-wise estimates kept for
   dispersion outliers.

:func:`estimate_dispersions` runs all four. Steps 1 and 4 are per gene (any block of genes gives
the same answers, given the same trend and prior variance); steps 2 and 3 need all genes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import polygamma

from ._kernels import (
    design_cells,
    fit_disp_grid_kernel_par,
    fit_disp_kernel_par,
    n_chunks,
    n_threads,
    ordered_matmul_par,
    rough_terms_par,
    run_chunks,
)
from .locfit import LocalQuadraticFit, LocfitError
from .nbinom import fit_nb_glm, norm_factor_matrix

FIT_TYPES = ("parametric", "local", "mean")


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _gene_major(counts) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(counts, dtype=np.float64).T)


def _check_design(X: np.ndarray, n: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"design must be a samples × coefficients matrix with {n} rows, got shape {X.shape}")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("the design matrix is not of full column rank; remove redundant or all-zero columns")
    if X.shape[0] == X.shape[1]:
        raise ValueError(
            "the number of samples equals the number of coefficients: there are no replicates "
            "to estimate the dispersion; use a design with fewer coefficients"
        )
    return X


# R's numerics for the starting values. The line search of ``fitDisp`` starts from the smaller of
# the rough and moments estimates; for genes whose start is a tiny dispersion the log posterior
# is flat in log(alpha) (its slope vanishes as alpha -> 0) and its first Armijo step is decided by
# rounding, so a start that differs from R's in the last bits can change whether DESeq2's rule
# "one iteration = not converged, refit on the grid" applies. The rough estimate is therefore
# computed with R's operations in R's order: LINPACK's QR (``qr``: ``dqrdc2``, ``qr.Q``: ``dqrsl``),
# ``solve`` of the triangular factor (LAPACK ``dgesv`` reduces to ``dtrsm`` on it), reference BLAS
# products (``dgemm``: each entry a sequential sum) and ``rowSums`` in long double; and so are the
# moments estimate's ``baseMean``, ``baseVar`` and ``xim`` (:func:`row_means_r`, :func:`row_vars_r`,
# :func:`xim_r`). This matters most with normalisation factors, whose scale moves these values;
# with size factors it changes the last bits only. (Where numpy's long double is a double --
# Windows, macOS on arm64 -- the sums round differently, and the starts are R's to rounding only.)
def _dnrm2(v: np.ndarray) -> float:
    """Reference BLAS ``dnrm2`` (LAPACK >= 3.10) for values of ordinary size: the square root of
    the sequential sum of squares (other values: numpy's norm)."""
    a = np.abs(v)
    if not np.all((a == 0) | ((a > 1e-150) & (a < 1e150))):
        return float(np.linalg.norm(v))
    return float(np.sqrt(_seq_dot(v, v)))


def _seq_dot(u: np.ndarray, v: np.ndarray) -> float:
    """Reference BLAS ``ddot``: products summed in order."""
    s = 0.0
    for t in (u * v).tolist():
        s += t
    return s


def _linpack_qr(X: np.ndarray, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """``qr.Q(qr(X))`` and ``qr.R(qr(X))`` as R computes them (LINPACK ``dqrdc2``, Householder
    reflections with its limited pivoting of negligible columns, then ``dqrsl`` applied to the
    identity's first columns)."""
    x = np.array(X, dtype=np.float64, copy=True)
    n, p = x.shape
    qraux = np.array([_dnrm2(x[:, j]) for j in range(p)])
    orig = np.where(qraux == 0.0, 1.0, qraux)
    k = p + 1
    for col in range(min(n, p)):
        # move columns whose norm fell below tol times the original to the right-hand edge
        while col + 1 < k and qraux[col] < orig[col] * tol:
            order = [*range(col), *range(col + 1, p), col]
            x, qraux, orig = x[:, order], qraux[order], orig[order]
            k -= 1
        if col + 1 == n:
            continue
        nrm = _dnrm2(x[col:, col])
        if nrm == 0.0:
            continue
        if x[col, col] != 0.0:
            nrm = float(np.copysign(nrm, x[col, col]))
        x[col:, col] = (1.0 / nrm) * x[col:, col]
        x[col, col] = 1.0 + x[col, col]
        for j in range(col + 1, p):
            t = -_seq_dot(x[col:, col], x[col:, j]) / x[col, col]
            x[col:, j] = x[col:, j] + t * x[col:, col]
            if qraux[j] != 0.0:
                tt = max(1.0 - (abs(x[col, j]) / qraux[j]) ** 2, 0.0)
                qraux[j] = qraux[j] * np.sqrt(tt) if abs(tt) >= 1e-6 else _dnrm2(x[col + 1 :, j])
        qraux[col] = x[col, col]
        x[col, col] = -nrm
    rank = min(k - 1, n)
    q = np.zeros((n, rank))
    for c in range(rank):
        qy = np.zeros(n)
        qy[c] = 1.0
        for j in range(min(rank, n - 1) - 1, -1, -1):
            if qraux[j] == 0.0:
                continue
            h = x[j:, j].copy()
            h[0] = qraux[j]
            t = -_seq_dot(h, qy[j:]) / h[0]
            qy[j:] = qy[j:] + t * h
        q[:, c] = qy
    return q, np.triu(x[: min(n, p)])


def _upper_inverse(r: np.ndarray) -> np.ndarray:
    """``solve(R)`` for an upper-triangular ``R`` as LAPACK's ``dgesv`` computes it (no pivoting
    happens, so it is the back substitution of ``dtrsm`` on the columns of the identity)."""
    p = r.shape[0]
    out = np.eye(p)
    for j in range(p):
        b = out[:, j]
        for k in range(p - 1, -1, -1):
            if b[k] != 0.0:
                b[k] = b[k] / r[k, k]
                b[:k] = b[:k] - b[k] * r[:k, k]
    return out


def _blas_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a %*% b`` as the reference BLAS ``dgemm`` sums: over the inner index in order."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    out = np.empty((a.shape[0], b.shape[1]))
    ordered_matmul_par(a, b, out)
    return out


def _by_rows(fn, x: np.ndarray) -> np.ndarray:
    """``fn`` (a per-row reduction of a 2-d array to one number per row) on one block of rows per
    thread: numpy's loops release the GIL. Each row's arithmetic is unchanged, so the result is
    bit-identical. (Smaller blocks lose: ``fn`` walks the columns, one numpy call per column and
    block; at 1,000 samples the three R-exact reductions went from 0.19 s to 0.10 s on 7,000
    genes with two blocks, and took 0.57 s with blocks of 65 rows.)"""
    g = x.shape[0]
    if x.size < _ROWS_THREADED_SIZE:
        return fn(x)
    out = np.empty(g)

    def block(lo, hi):
        out[lo:hi] = fn(x[lo:hi])

    run_chunks(block, g, n_threads())
    return out


_ROWS_THREADED_SIZE = 1_000_000  # values from which the R-exact row reductions run in threads


def _r_row_sums(x: np.ndarray) -> np.ndarray:
    """R's ``rowSums`` of a matrix: a long double accumulator over the columns in order."""
    return _by_rows(_r_row_sums_block, x)


def _r_row_sums_block(x: np.ndarray) -> np.ndarray:
    acc = np.zeros(x.shape[0], dtype=np.longdouble)
    for j in range(x.shape[1]):
        acc += x[:, j]
    return acc.astype(np.float64)


def linear_model_mu(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Least-squares fitted values of each row of ``y`` (genes × samples) on ``X``, computed as
    DESeq2's ``linearModelMu`` does, ``(y Q) (X R^-1)'`` with R's QR and products (see above)."""
    q, r = _linpack_qr(X)
    xr = _blas_matmul(np.asarray(X, dtype=np.float64), _upper_inverse(r))
    return _blas_matmul(_blas_matmul(np.asarray(y, dtype=np.float64), q), np.ascontiguousarray(xr.T))


def rough_dispersion(norm_counts: np.ndarray, X: np.ndarray) -> np.ndarray:
    """DESeq2's ``roughDispEstimate`` for genes × samples normalised counts."""
    m, p = X.shape
    norm_counts = np.ascontiguousarray(norm_counts, dtype=np.float64)
    terms = np.ascontiguousarray(linear_model_mu(norm_counts, X))
    rough_terms_par(norm_counts, terms, terms)  # in place, in numba's threads
    est = _r_row_sums(terms) / (m - p)
    return np.maximum(est, 0.0)


def moments_dispersion(base_mean: np.ndarray, base_var: np.ndarray, xim: float) -> np.ndarray:
    """DESeq2's ``momentsDispEstimate``: ``(var - xim * mean) / mean^2``."""
    return (base_var - xim * base_mean) / base_mean**2


def row_means_r(x: np.ndarray) -> np.ndarray:
    """R's ``rowMeans`` (DESeq2's ``baseMean``): a long double sum over the columns in order,
    divided in long double."""
    return _by_rows(_row_means_block, x)


def _row_means_block(x: np.ndarray) -> np.ndarray:
    acc = np.zeros(x.shape[0], dtype=np.longdouble)
    for j in range(x.shape[1]):
        acc += x[:, j]
    return (acc / x.shape[1]).astype(np.float64)


def row_vars_r(x: np.ndarray) -> np.ndarray:
    """matrixStats' ``rowVars`` (DESeq2's ``baseVar``): the mean summed in order and refined by
    the mean of the deviations, then the squared deviations summed in order over ``n - 1``."""
    return _by_rows(_row_vars_block, x)


def _row_vars_block(x: np.ndarray) -> np.ndarray:
    n = x.shape[1]
    if n < 2:
        return np.zeros(x.shape[0])
    mu = np.zeros(x.shape[0])
    for j in range(n):
        mu += x[:, j]
    mu /= n
    dev = np.zeros(x.shape[0])
    for j in range(n):
        dev += x[:, j] - mu
    mu += dev / n
    ss = np.zeros(x.shape[0])
    for j in range(n):
        d = x[:, j] - mu
        ss += d * d
    return ss / (n - 1)


def mean_r(v: np.ndarray) -> float:
    """R's ``mean`` of a vector: a long double sum over ``n``, then corrected by the mean of the
    deviations (also in long double)."""
    v = np.asarray(v, dtype=np.float64).ravel()
    s = np.longdouble(0.0)
    for t in v:
        s += t
    s /= v.size
    r = np.longdouble(0.0)
    for t in v:
        r += np.longdouble(t) - s
    return float(s + r / v.size)


def col_sums_ld(blocks, n: int) -> tuple[np.ndarray, int]:
    """Per-sample sums over the genes of ``blocks`` (each genes × samples, in gene order), added in
    long double one gene after another as R's ``colSums``/``colMeans`` do; and the number of genes."""
    acc = np.zeros(n, dtype=np.longdouble)
    count = 0
    for b in blocks:
        b = np.asarray(b, dtype=np.float64)
        step = max(1, 2**20 // max(n, 1))  # bounded long double copies
        for lo in range(0, b.shape[0], step):
            part = b[lo : lo + step]
            acc = np.concatenate([acc[None, :], part.astype(np.longdouble)], axis=0).cumsum(axis=0)[-1]
        count += b.shape[0]
    return acc, count


def xim_r(sf: np.ndarray | None = None, nf_col_sums: tuple[np.ndarray, int] | None = None) -> float:
    """``xim`` of DESeq2's ``momentsDispEstimate``: ``mean(1 / sizeFactors)``, or with
    normalisation factors ``mean(1 / colMeans(normalizationFactors))`` over the genes that are not
    all zero (``nf_col_sums``: :func:`col_sums_ld` of their factors), with R's arithmetic."""
    if nf_col_sums is not None:
        acc, count = nf_col_sums
        return mean_r(1.0 / (acc / count).astype(np.float64))
    return mean_r(1.0 / np.asarray(sf, dtype=np.float64))


def _xim(sf: np.ndarray | None, nf_sm: np.ndarray | None) -> float:
    """``xim`` of DESeq2's ``momentsDispEstimate``; ``nf_sm`` is samples × genes."""
    if nf_sm is not None:
        return xim_r(nf_col_sums=col_sums_ld([np.asarray(nf_sm, dtype=np.float64).T], nf_sm.shape[0]))
    return xim_r(sf)


def _model_matrix_groups(X: np.ndarray) -> int:
    return len({tuple(row) for row in np.asarray(X).tolist()})


def mad(x: np.ndarray) -> float:
    """R's ``mad``: 1.4826 × median absolute deviation from the median."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def trimmed_mean(x: np.ndarray, trim: float) -> float:
    """R's ``mean(x, trim=)``."""
    x = np.sort(np.asarray(x, dtype=np.float64)[~np.isnan(x)])
    n = x.size
    if trim > 0 and n:
        if trim >= 0.5:
            return float(np.median(x))
        lo = int(np.floor(n * trim))
        x = x[lo : n - lo]
    return float(np.mean(x))


# ----------------------------------------------------------------------------------------------
# step 1: gene-wise estimates
# ----------------------------------------------------------------------------------------------
@dataclass
class GeneDispersions:
    """Gene-wise dispersion estimates (DESeq2's ``dispGeneEst`` and friends).

    Per-gene arrays have one entry per gene of the input (NaN for all-zero genes); ``mu`` is
    samples × genes (genes × samples when estimated with ``gene_major``).
    """

    disp_gene_est: np.ndarray
    disp_gene_iter: np.ndarray
    base_mean: np.ndarray
    base_var: np.ndarray
    all_zero: np.ndarray
    mu: np.ndarray
    converged: np.ndarray
    min_disp: float
    max_disp: float


def line_search_dispersion(
    y: np.ndarray,
    mu: np.ndarray,
    X: np.ndarray,
    log_alpha: np.ndarray,
    *,
    prior_mean: np.ndarray | None = None,
    prior_var: float = 1.0,
    use_prior: bool = False,
    min_log_alpha: float = np.log(1e-9),
    kappa_0: float = 1.0,
    tol: float = 1e-6,
    maxit: int = 100,
    use_cr: bool = True,
) -> dict[str, np.ndarray]:
    """DESeq2's ``fitDisp`` for genes × samples ``y`` and ``mu`` (gene-major)."""
    g = y.shape[0]
    la = np.array(log_alpha, dtype=np.float64, copy=True)
    pm = np.zeros(g) if prior_mean is None else np.ascontiguousarray(prior_mean, dtype=np.float64)
    out = {
        "iter": np.zeros(g, dtype=np.int64),
        "iter_accept": np.zeros(g, dtype=np.int64),
        "initial_lp": np.empty(g),
        "last_lp": np.empty(g),
        "last_change": np.empty(g),
    }
    cell, XC = design_cells(X)
    with np.errstate(all="ignore"):
        fit_disp_kernel_par(
            np.ascontiguousarray(y), np.ascontiguousarray(mu), cell, XC,
            la, pm, float(prior_var), bool(use_prior), float(min_log_alpha), float(kappa_0), float(tol),
            int(maxit), bool(use_cr), out["iter"], out["iter_accept"], out["initial_lp"], out["last_lp"],
            out["last_change"], n_chunks(g),
        )  # fmt: skip
    out["log_alpha"] = la
    return out


def grid_dispersion(
    y: np.ndarray,
    mu: np.ndarray,
    X: np.ndarray,
    *,
    prior_mean: np.ndarray | None = None,
    prior_var: float = 1.0,
    use_prior: bool = False,
    use_cr: bool = True,
) -> np.ndarray:
    """DESeq2's ``fitDispGridWrapper``: grid search over log(alpha) in [log 1e-8, log max(10, n)]."""
    g, n = y.shape
    grid = np.linspace(np.log(1e-8), np.log(max(10.0, n)), 20)
    pm = np.zeros(g) if prior_mean is None else np.ascontiguousarray(prior_mean, dtype=np.float64)
    out = np.empty(g)
    cell, XC = design_cells(X)
    with np.errstate(all="ignore"):
        fit_disp_grid_kernel_par(
            np.ascontiguousarray(y), np.ascontiguousarray(mu), cell, XC,
            grid, pm, float(prior_var), bool(use_prior), bool(use_cr), out, n_chunks(g),
        )  # fmt: skip
    return np.exp(out)


def estimate_gene_dispersions(
    counts: np.ndarray,
    design: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
    min_disp: float = 1e-8,
    kappa_0: float = 1.0,
    disp_tol: float = 1e-6,
    maxit: int = 100,
    use_cr: bool = True,
    niter: int = 1,
    linear_mu: bool | None = None,
    minmu: float = 0.5,
    alpha_init: np.ndarray | float | None = None,
    xim: float | None = None,
    gene_major: bool = False,
) -> GeneDispersions:
    """Gene-wise dispersion estimates (DESeq2's ``estimateDispersionsGeneEst``).

    Parameters
    ----------
    counts
        Raw counts, samples × genes.
    design
        Design matrix, samples × coefficients.
    size_factors, norm_factors
        Size factors (n,) or normalisation factors (samples × genes); ones if both are ``None``.
    min_disp
        Smallest dispersion (DESeq2's ``minDisp``).
    kappa_0, disp_tol, maxit
        Line-search parameters (initial step, tolerance on the log posterior, iterations).
    use_cr
        Use the Cox-Reid adjustment.
    niter
        Number of alternations between mean and dispersion fits.
    linear_mu
        Means from a linear model of normalised counts (default: when the design has as many
        distinct rows as columns, as DESeq2).
    minmu
        Lower bound on the fitted means.
    alpha_init
        Starting values (default: DESeq2's rough / moments estimate).
    xim
        The moments estimate's ``xim`` (DESeq2: ``mean(1 / sizeFactors)``, or with normalisation
        factors ``mean(1 / colMeans(normalizationFactors))`` over the genes that are not all
        zero); default: computed from the arguments. Give it to process genes in blocks.
    gene_major
        ``counts``, ``norm_factors`` and the returned ``mu`` are genes × samples (the engines'
        layout: no transposed copies).

    Returns
    -------
    :class:`GeneDispersions`
    """
    if gene_major:
        y_all = np.ascontiguousarray(counts, dtype=np.float64)
        if norm_factors is not None:
            norm_factors = np.asarray(norm_factors, dtype=np.float64).T
    else:
        y_all = _gene_major(counts)
    g_all, n = y_all.shape
    X = _check_design(design, n)
    p = X.shape[1]
    if np.log(min_disp / 10) <= -30:
        raise ValueError("log(min_disp / 10) must be above -30 for numerical stability")
    if niter < 1:
        raise ValueError("niter must be at least 1")
    nf_all = norm_factor_matrix(n, g_all, size_factors, norm_factors)
    norm_all = y_all / nf_all
    base_mean = row_means_r(norm_all)  # DESeq2's getBaseMeansAndVariances, with R's arithmetic
    base_var = row_vars_r(norm_all)
    all_zero = y_all.sum(axis=1) == 0
    nz = ~all_zero
    if nz.all():  # no copies (nf may be a broadcast view of the size factors)
        y, nf, norm = y_all, nf_all, norm_all
    else:
        y, nf, norm = y_all[nz], nf_all[nz], norm_all[nz]
    max_disp = max(10.0, float(n))
    alpha_hat = _starting_dispersions(
        norm, X, base_mean[nz], base_var[nz], nz, g_all, alpha_init, xim, size_factors, norm_factors
    )
    alpha_hat = np.minimum(np.maximum(min_disp, alpha_hat), max_disp)
    if linear_mu is None:
        linear_mu = _model_matrix_groups(X) == p
    disp, mu, disp_iter, conv = _alternate_means_and_dispersions(
        y, nf, norm, X, alpha_hat, size_factors=size_factors, norm_factors=norm_factors, linear_mu=linear_mu,
        niter=niter, minmu=minmu, min_disp=min_disp, max_disp=max_disp, kappa_0=kappa_0, disp_tol=disp_tol,
        maxit=maxit, use_cr=use_cr,
    )  # fmt: skip

    def full(v, fill=np.nan, dtype=np.float64):
        out = np.full(g_all, fill, dtype=dtype)
        out[nz] = v
        return out

    if nz.all():
        mu_full = mu
    else:
        mu_full = np.full((g_all, n), np.nan)
        mu_full[nz] = mu
    return GeneDispersions(
        disp_gene_est=full(disp),
        disp_gene_iter=full(disp_iter, 0, np.int64),
        base_mean=base_mean,
        base_var=base_var,
        all_zero=all_zero,
        mu=mu_full if gene_major else mu_full.T.copy(),
        converged=full(conv, False, bool),
        min_disp=float(min_disp),
        max_disp=max_disp,
    )


def _starting_dispersions(norm, X, base_mean, base_var, nz, g_all, alpha_init, xim, size_factors, norm_factors):
    """DESeq2's starting values: the smaller of the rough (``roughDispEstimate``) and moments
    (``momentsDispEstimate``) estimates, or the given ``alpha_init``; genes not all zero only."""
    n, g = norm.shape[1], norm.shape[0]
    if alpha_init is None:
        if xim is None:
            sf = None if size_factors is None else np.asarray(size_factors, dtype=np.float64)
            # DESeq2 (momentsDispEstimate on the genes that are not all zero)
            nf_sm = None if norm_factors is None else np.asarray(norm_factors, dtype=np.float64)[:, nz]
            if sf is None and nf_sm is None:
                sf = np.ones(n)
            xim = _xim(sf, nf_sm)
        return np.minimum(rough_dispersion(norm, X), moments_dispersion(base_mean, base_var, xim))
    a0 = np.asarray(alpha_init, dtype=np.float64)
    alpha_hat = np.full(g, float(a0)) if a0.ndim == 0 else a0.ravel()[nz] if a0.size == g_all else a0.ravel()
    if alpha_hat.shape != (g,):
        raise ValueError("alpha_init must be a scalar or have one value per gene")
    return alpha_hat


def _alternate_means_and_dispersions(y, nf, norm, X, alpha_hat, *, size_factors, norm_factors, linear_mu, niter, minmu,
                                     min_disp, max_disp, kappa_0, disp_tol, maxit, use_cr):  # fmt: skip
    """``estimateDispersionsGeneEst``'s loop: fit the means (a linear model of the normalised
    counts, or the NB GLM), then the dispersions by line search on the Cox-Reid adjusted
    likelihood; up to ``niter`` rounds for the genes whose dispersion still moves. Then DESeq2's
    rules: keep the start where the likelihood did not increase (one round), refit genes that did
    not converge on the grid, bound to ``[min_disp, max_disp]``."""
    g, n = y.shape
    alpha_init_v = alpha_hat.copy()
    alpha_new = alpha_hat.copy()
    fitidx = np.ones(g, dtype=bool)
    mu = np.empty((g, n))
    disp_iter = np.zeros(g, dtype=np.int64)
    last_lp = initial_lp = None
    for _it in range(niter):
        every = bool(fitidx.all())
        idx = slice(None) if every else np.flatnonzero(fitidx)
        y_i, nf_i = (y, nf) if every else (y[idx], nf[idx])
        if linear_mu:
            fit_mu = linear_model_mu(norm[idx], X) * nf_i
        else:
            fit_mu = fit_nb_glm(
                y_i, X, alpha_hat[idx], size_factors=size_factors if norm_factors is None else None,
                norm_factors=None if norm_factors is None else nf_i, minmu=minmu, loglik=False, gene_major=True,
            ).mu  # fmt: skip
        np.maximum(fit_mu, minmu, out=fit_mu)
        mu[idx] = fit_mu
        res = line_search_dispersion(
            y_i, fit_mu, X, np.log(alpha_hat[idx]), prior_mean=np.log(alpha_hat[idx]), prior_var=1.0,
            use_prior=False, min_log_alpha=np.log(min_disp / 10), kappa_0=kappa_0, tol=disp_tol,
            maxit=maxit, use_cr=use_cr,
        )  # fmt: skip
        disp_iter[idx] = res["iter"]
        alpha_new[idx] = np.minimum(np.exp(res["log_alpha"]), max_disp)
        last_lp, initial_lp = res["last_lp"], res["initial_lp"]
        with np.errstate(invalid="ignore"):
            fitidx = np.abs(np.log(alpha_new) - np.log(alpha_hat)) > 0.05
        fitidx[np.isnan(fitidx)] = False
        alpha_hat = alpha_new.copy()
        if not fitidx.any():
            break

    disp = alpha_hat.copy()
    if niter == 1:
        no_increase = last_lp < initial_lp + np.abs(initial_lp) / 1e6
        disp[no_increase] = alpha_init_v[no_increase]
    conv = (disp_iter < maxit) & (disp_iter != 1)
    refit = ~conv & (disp > min_disp * 10)
    if refit.any():
        disp[refit] = grid_dispersion(y[refit], mu[refit], X, use_prior=False, use_cr=use_cr)
    disp = np.minimum(np.maximum(disp, min_disp), max_disp)
    return disp, mu, disp_iter, conv


# ----------------------------------------------------------------------------------------------
# step 2: trend
# ----------------------------------------------------------------------------------------------
@dataclass
class DispersionTrend:
    """A fitted dispersion-mean trend; call it on means to get fitted dispersions.

    Attributes
    ----------
    fit_type
        ``"parametric"``, ``"local"`` or ``"mean"`` (the type actually fitted, e.g. ``"local"``
        after a failed parametric fit).
    params
        ``{"asymptDisp", "extraPois"}`` (parametric), ``{"mean"}`` (mean) or the local fit's
        settings (local: ``alpha``, ``deg``, ``kernel``, ``cut``, ``n_vertices`` and, when it
        replaced a failed parametric fit, ``parametric_error``).
    local_fit
        The :class:`~bulkpy._stats.deseq2.locfit.LocalQuadraticFit` on log scale (local only).
    """

    fit_type: str
    params: dict[str, Any] = field(default_factory=dict)
    local_fit: LocalQuadraticFit | None = None

    def __call__(self, means) -> np.ndarray:
        means = np.asarray(means, dtype=np.float64)
        if self.fit_type == "parametric":
            return self.params["asymptDisp"] + self.params["extraPois"] / means
        if self.fit_type == "mean":
            return np.full(means.shape, self.params["mean"])
        if self.fit_type == "local":
            with np.errstate(divide="ignore"):
                return np.exp(self.local_fit(np.log(means)))
        raise ValueError(f"unknown fit type {self.fit_type!r}")


class ParametricFitError(RuntimeError):
    """The parametric trend could not be fitted (DESeq2 then falls back to ``local``)."""


def _gamma_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """``sum(Gamma()$dev.resids(y, mu, 1))``; NaN when a mean is not positive."""
    with np.errstate(all="ignore"):
        return float(np.sum(-2.0 * (np.log(np.where(y == 0, 1.0, y / mu)) - (y - mu) / mu)))


def _valid_gamma_mean(mu: np.ndarray) -> bool:
    """``Gamma()$validmu``."""
    return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))


def _rank_deficient(Xw: np.ndarray, tol: float) -> bool:
    """Whether LINPACK's ``dqrdc2`` (R's ``Cdqrls``) with tolerance ``tol`` drops the second
    column: its norm after removing the first column's direction is below ``tol`` times its
    original norm."""
    c0, c1 = Xw[:, 0], Xw[:, 1]
    n1 = float(np.sqrt(c1 @ c1))
    if n1 == 0:
        return True
    resid = c1 - c0 * ((c0 @ c1) / (c0 @ c0))
    return float(np.sqrt(resid @ resid)) < tol * n1


def _gamma_identity_glm(y: np.ndarray, x1: np.ndarray, start: np.ndarray, *, epsilon=1e-8, maxit=25):
    """R's ``glm.fit`` for ``y ~ x1`` with ``Gamma(link = "identity")`` from ``start``
    (``glm.control()`` defaults: ``epsilon = 1e-8``, ``maxit = 25``).

    Returns (coefficients, converged). Raises :class:`ParametricFitError` where ``glm.fit``
    stops (invalid starting values, step halving that cannot restore a finite deviance or valid
    means) or returns an ``NA`` coefficient (a rank-deficient model matrix), which DESeq2's
    ``parametricDispersionFit`` turns into an error as well."""
    if np.any(y <= 0):
        raise ParametricFitError("non-positive values not allowed for the 'Gamma' family")
    X = np.column_stack([np.ones_like(x1), x1])
    coef = np.asarray(start, dtype=np.float64).copy()
    coefold = coef.copy()
    eta = X @ coef
    mu = eta
    if not _valid_gamma_mean(mu):
        raise ParametricFitError("cannot find valid starting values: please specify some")
    devold = _gamma_deviance(y, mu)
    conv = False
    deficient = False
    start = coef
    for _it in range(maxit):
        z = eta + (y - mu)  # identity link: mu.eta = 1
        w = np.sqrt(1.0 / (mu * mu))  # sqrt(prior weight * mu.eta^2 / variance(mu))
        Xw = X * w[:, None]
        deficient = _rank_deficient(Xw, min(1e-7, epsilon / 1000))
        if deficient:  # Cdqrls pivots the column out; its coefficient is 0 until glm.fit sets NA
            b0 = float((z * w) @ Xw[:, 0] / (Xw[:, 0] @ Xw[:, 0]))
            start = np.array([b0, 0.0])
        else:
            start, *_ = np.linalg.lstsq(Xw, z * w, rcond=None)
        if not np.all(np.isfinite(start)):
            break  # glm.fit: "non-finite coefficients", not converged
        eta = X @ start
        mu = eta
        dev = _gamma_deviance(y, mu)
        ii = 1
        while not np.isfinite(dev):
            if ii > maxit:
                raise ParametricFitError("inner loop 1; cannot correct step size")
            ii += 1
            start = (start + coefold) / 2
            eta = X @ start
            mu = eta
            dev = _gamma_deviance(y, mu)
        if not _valid_gamma_mean(mu):
            ii = 1
            while not _valid_gamma_mean(mu):
                if ii > maxit:
                    raise ParametricFitError("inner loop 2; cannot correct step size")
                ii += 1
                start = (start + coefold) / 2
                eta = X @ start
                mu = eta
            dev = _gamma_deviance(y, mu)
        if abs(dev - devold) / (0.1 + abs(dev)) < epsilon:
            conv = True
            coef = start
            break
        devold = dev
        coef = coefold = start
    if deficient:
        raise ParametricFitError(
            "missing value where TRUE/FALSE needed (a coefficient is NA: rank-deficient fit)"
        )
    return np.asarray(coef, dtype=np.float64), conv


def parametric_dispersion_fit(means: np.ndarray, disps: np.ndarray) -> tuple[float, float]:
    """DESeq2's ``parametricDispersionFit``: ``asymptDisp + extraPois / mean`` by iteratively
    refitting a Gamma-family GLM (identity link) on the genes whose ratio to the current fit lies
    in (1e-4, 15), starting from ``(0.1, 1)``.

    Raises :class:`ParametricFitError` exactly where DESeq2 stops: a coefficient that is not
    positive after any refit ("parametric dispersion fit failed"), no settled fit after 11 GLM
    fits -- the sum of squared log coefficient changes below 1e-6 *and* the GLM converged --
    ("dispersion fit did not converge"), or an error inside ``glm.fit`` (see
    :func:`_gamma_identity_glm`; also fewer than 2 genes near the trend).

    On 264 gene subsets of pasilla and airway this fails exactly where DESeq2 1.52 fails. When the
    Gamma GLM oscillates without converging, its trajectory is chaotic (rounding differences of
    the least-squares solves grow over the refits), so the reason can differ from R's -- once in
    those 264: a negative coefficient in R, the refit limit here -- while the outcome, the local
    fit, is the same."""
    means = np.asarray(means, dtype=np.float64)
    disps = np.asarray(disps, dtype=np.float64)
    coefs = np.array([0.1, 1.0])
    it = 0
    while True:
        residuals = disps / (coefs[0] + coefs[1] / means)
        good = (residuals > 1e-4) & (residuals < 15)
        if good.sum() < 2:
            raise ParametricFitError(f"{int(good.sum())} genes near the trend: the GLM is not estimable")
        oldcoefs = coefs
        coefs, converged = _gamma_identity_glm(disps[good], 1.0 / means[good], coefs)
        if not np.all(coefs > 0):
            raise ParametricFitError("parametric dispersion fit failed")
        if np.sum(np.log(coefs / oldcoefs) ** 2) < 1e-6 and converged:
            break
        it += 1
        if it > 10:
            raise ParametricFitError("dispersion fit did not converge")
    return float(coefs[0]), float(coefs[1])


def local_dispersion_fit(
    means: np.ndarray, disps: np.ndarray, *, min_disp: float = 1e-8
) -> LocalQuadraticFit:
    """DESeq2's ``localDispersionFit``: ``locfit(log(disps) ~ log(means), weights = means)`` on the
    genes with ``disps >= 10 * min_disp`` (see :mod:`bulkpy._stats.deseq2.locfit`)."""
    means = np.asarray(means, dtype=np.float64)
    disps = np.asarray(disps, dtype=np.float64)
    keep = disps >= min_disp * 10
    return LocalQuadraticFit(np.log(means[keep]), np.log(disps[keep]), means[keep])


PARAMETRIC_FAILED = (
    "the parametric fit of dispersion estimates over the mean of counts failed ({err}), which occurs when "
    "the trend is not well captured by the function y = a/x + b; a local regression fit was substituted "
    "(DESeq2: fitType='parametric', but the dispersion trend was not well captured by the function: "
    "y = a/x + b, and a local regression fit was automatically substituted). Use fit_type='local' or "
    "'mean' to avoid this warning."
)


def fit_dispersion_trend(
    base_mean: np.ndarray,
    disp_gene_est: np.ndarray,
    *,
    fit_type: str = "parametric",
    min_disp: float = 1e-8,
) -> DispersionTrend:
    """Fit the dispersion-mean trend (DESeq2's ``estimateDispersionsFit``).

    ``base_mean`` and ``disp_gene_est`` are per gene; NaN (all-zero genes) are ignored. Genes with
    gene-wise estimates above ``100 * min_disp`` are used. A failed parametric fit (any of
    DESeq2's failure conditions, :func:`parametric_dispersion_fit`) emits a :class:`UserWarning`
    -- DESeq2 prints a message -- and the ``local`` fit is used instead; the trend's ``fit_type``
    is then ``"local"`` and its ``params["parametric_error"]`` says why."""
    if fit_type not in FIT_TYPES:
        raise ValueError(f"fit_type={fit_type!r} is not supported; choose one of {list(FIT_TYPES)}")
    bm = np.asarray(base_mean, dtype=np.float64)
    de = np.asarray(disp_gene_est, dtype=np.float64)
    ok = ~np.isnan(de)
    bm, de = bm[ok], de[ok]
    use = de > 100 * min_disp
    if not use.any():
        raise ValueError(
            "all gene-wise dispersion estimates are within 2 orders of magnitude of the minimum "
            "value, so the trend can not be fitted; use the gene-wise estimates as final dispersions"
        )
    extra: dict[str, Any] = {}
    if fit_type == "parametric":
        try:
            a, b = parametric_dispersion_fit(bm[use], de[use])
            return DispersionTrend("parametric", {"asymptDisp": a, "extraPois": b})
        except (ParametricFitError, np.linalg.LinAlgError, FloatingPointError) as err:
            warnings.warn(PARAMETRIC_FAILED.format(err=err), UserWarning, stacklevel=2)
            fit_type = "local"
            extra = {"parametric_error": str(err)}
    if fit_type == "local":
        try:
            lf = local_dispersion_fit(bm[use], de[use], min_disp=min_disp)
        except LocfitError as err:
            raise LocfitError(
                f"the local dispersion trend can not be fitted on these {int(use.sum())} genes ({err}); "
                "DESeq2 stops with the same locfit error. Use fit_type='mean'"
                + ("" if extra else " or 'parametric'")
            ) from err
        params = {
            "alpha": lf.alpha,
            "deg": 2,
            "kernel": "tricube",
            "cut": lf.cut,
            "n_vertices": len(lf.vertices),
        }
        return DispersionTrend("local", {**params, **extra}, local_fit=lf)
    use_mean = de > 10 * min_disp
    return DispersionTrend("mean", {"mean": trimmed_mean(de[use_mean], 0.001)})


def log_dispersion_residual_variance(disp_gene_est, disp_fit, *, min_disp: float = 1e-8) -> float:
    """``varLogDispEsts``: squared MAD of log(gene-wise / fitted) over genes with
    gene-wise estimates >= 100 × ``min_disp`` (as DESeq2's ``dispersionFunction<-``)."""
    de = np.asarray(disp_gene_est, dtype=np.float64)
    df = np.asarray(disp_fit, dtype=np.float64)
    above = de >= min_disp * 100
    if not above.any():
        return float("nan")
    return mad(np.log(de[above]) - np.log(df[above])) ** 2


# ----------------------------------------------------------------------------------------------
# step 3: prior variance
# ----------------------------------------------------------------------------------------------
def dispersion_prior_variance(
    disp_gene_est: np.ndarray,
    disp_fit: np.ndarray,
    var_log_disp_ests: float,
    n_samples: int,
    n_coefs: int,
    *,
    min_disp: float = 1e-8,
) -> float:
    """Prior variance of log dispersions around the trend (DESeq2's ``estimateDispersionsPriorVar``).

    ``max(varLogDispEsts - trigamma((m - p) / 2), 0.25)``. With 1 to 3 residual degrees of
    freedom DESeq2 matches the distribution of log residuals by simulation instead; that branch
    is :func:`bulkpy._stats.deseq2.priorvar_sim.simulated_prior_variance`, which reproduces R's random
    stream (``set.seed(2)``) so the result is the same number as DESeq2's."""
    m, p = int(n_samples), int(n_coefs)
    de = np.asarray(disp_gene_est, dtype=np.float64)
    df = np.asarray(disp_fit, dtype=np.float64)
    above = de >= min_disp * 100
    if not above.any():
        raise ValueError("no gene-wise dispersion estimate is above 100 × min_disp")
    if (m - p) <= 3 and m > p:
        from .priorvar_sim import simulated_prior_variance

        resid = np.log(de[above]) - np.log(df[above])
        return simulated_prior_variance(resid, m - p)
    if m > p:
        exp_var = float(polygamma(1, (m - p) / 2))
        return float(max(var_log_disp_ests - exp_var, 0.25))
    return float(var_log_disp_ests)


# ----------------------------------------------------------------------------------------------
# step 4: MAP
# ----------------------------------------------------------------------------------------------
@dataclass
class MapDispersions:
    """Final dispersions (DESeq2's ``dispMAP``, ``dispersion``, ``dispOutlier``, ``dispIter``)."""

    disp_map: np.ndarray
    dispersion: np.ndarray
    disp_outlier: np.ndarray
    disp_iter: np.ndarray
    converged: np.ndarray


def estimate_map_dispersions(
    counts: np.ndarray,
    design: np.ndarray,
    mu: np.ndarray,
    disp_gene_est: np.ndarray,
    disp_fit: np.ndarray,
    prior_var: float,
    var_log_disp_ests: float,
    *,
    outlier_sd: float = 2.0,
    min_disp: float = 1e-8,
    kappa_0: float = 1.0,
    disp_tol: float = 1e-6,
    maxit: int = 100,
    use_cr: bool = True,
    gene_major: bool = False,
) -> MapDispersions:
    """MAP dispersions per gene (DESeq2's ``estimateDispersionsMAP``) given the trend values
    ``disp_fit``, the prior variance and the gene-wise fit's means ``mu`` (samples × genes;
    with ``gene_major`` ``counts`` and ``mu`` are genes × samples). Genes with NaN
    ``disp_gene_est`` (all zero) get NaN."""
    y_all = np.ascontiguousarray(counts, dtype=np.float64) if gene_major else _gene_major(counts)
    g_all, n = y_all.shape
    X = np.asarray(design, dtype=np.float64)
    de_all = np.asarray(disp_gene_est, dtype=np.float64)
    df_all = np.asarray(disp_fit, dtype=np.float64)
    nz = ~np.isnan(de_all)
    mu_all = np.asarray(mu, dtype=np.float64)
    if not gene_major:
        mu_all = mu_all.T
    if nz.all():
        y, mu_g = y_all, np.ascontiguousarray(mu_all)
    else:
        y, mu_g = y_all[nz], np.ascontiguousarray(mu_all[nz])
    de, df = de_all[nz], df_all[nz]
    max_disp = max(10.0, float(n))
    init = np.where(de > 0.1 * df, de, df)
    init[np.isnan(init)] = df[np.isnan(init)]
    res = line_search_dispersion(
        y, mu_g, X, np.log(init), prior_mean=np.log(df), prior_var=float(prior_var), use_prior=True,
        min_log_alpha=np.log(min_disp / 10), kappa_0=kappa_0, tol=disp_tol, maxit=maxit, use_cr=use_cr,
    )  # fmt: skip
    disp_map = np.exp(res["log_alpha"])
    conv = res["iter"] < maxit
    if (~conv).any():
        bad = ~conv
        disp_map[bad] = grid_dispersion(
            y[bad],
            mu_g[bad],
            X,
            prior_mean=np.log(df[bad]),
            prior_var=float(prior_var),
            use_prior=True,
            use_cr=True,
        )
    disp_map = np.minimum(np.maximum(disp_map, min_disp), max_disp)
    with np.errstate(invalid="ignore", divide="ignore"):
        outlier = np.log(de) > np.log(df) + outlier_sd * np.sqrt(var_log_disp_ests)
    outlier[np.isnan(outlier)] = False
    final = np.where(outlier, de, disp_map)

    def full(v, fill=np.nan, dtype=np.float64):
        out = np.full(g_all, fill, dtype=dtype)
        out[nz] = v
        return out

    return MapDispersions(
        disp_map=full(disp_map),
        dispersion=full(final),
        disp_outlier=full(outlier, False, bool),
        disp_iter=full(res["iter"], 0, np.int64),
        converged=full(conv, False, bool),
    )


# ----------------------------------------------------------------------------------------------
# all steps
# ----------------------------------------------------------------------------------------------
@dataclass
class DispersionResult:
    """Everything :func:`estimate_dispersions` computes (per-gene arrays have one entry per gene)."""

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
    trend: DispersionTrend
    var_log_disp_ests: float
    prior_var: float
    mu: np.ndarray


def estimate_dispersions(
    counts: np.ndarray,
    design: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
    fit_type: str = "parametric",
    min_disp: float = 1e-8,
    kappa_0: float = 1.0,
    disp_tol: float = 1e-6,
    maxit: int = 100,
    outlier_sd: float = 2.0,
    prior_var: float | None = None,
    minmu: float = 0.5,
    niter: int = 1,
) -> DispersionResult:
    """DESeq2's ``estimateDispersions``: gene-wise, trend, prior variance, MAP.

    Parameters
    ----------
    counts
        Raw counts, samples × genes.
    design
        Design matrix, samples × coefficients.
    size_factors, norm_factors
        Size factors (n,) or normalisation factors (samples × genes).
    fit_type
        Trend: ``"parametric"``, ``"local"`` or ``"mean"``.
    min_disp, kappa_0, disp_tol, maxit, outlier_sd, minmu, niter
        As in DESeq2.
    prior_var
        Fixed prior variance of log dispersions (default: estimated).

    Returns
    -------
    :class:`DispersionResult`
    """
    if fit_type not in FIT_TYPES:
        raise ValueError(f"fit_type={fit_type!r} is not supported; choose one of {list(FIT_TYPES)}")
    ge = estimate_gene_dispersions(
        counts, design, size_factors=size_factors, norm_factors=norm_factors, min_disp=min_disp,
        kappa_0=kappa_0, disp_tol=disp_tol, maxit=maxit, niter=niter, minmu=minmu,
    )  # fmt: skip
    trend = fit_dispersion_trend(ge.base_mean, ge.disp_gene_est, fit_type=fit_type, min_disp=min_disp)
    nz = ~ge.all_zero
    disp_fit = np.full(ge.base_mean.shape, np.nan)
    disp_fit[nz] = trend(ge.base_mean[nz])
    var_log = log_dispersion_residual_variance(ge.disp_gene_est[nz], disp_fit[nz], min_disp=min_disp)
    X = np.asarray(design, dtype=np.float64)
    n = X.shape[0]
    g_nz = int(nz.sum())
    if not (ge.disp_gene_est[nz] >= min_disp * 100).any():
        warnings.warn(
            f"all genes have dispersion estimates < {min_disp * 10}, returning dispersion = {min_disp * 10}",
            UserWarning,
            stacklevel=2,
        )
        fill = np.where(nz, min_disp * 10, np.nan)
        return DispersionResult(
            ge.base_mean, ge.base_var, ge.all_zero, ge.disp_gene_est, ge.disp_gene_iter, disp_fit,
            np.full(fill.shape, np.nan), fill, np.zeros(fill.shape, bool), np.zeros(fill.shape, np.int64),
            trend, var_log, 0.25, ge.mu,
        )  # fmt: skip
    if prior_var is None:
        prior_var = dispersion_prior_variance(
            ge.disp_gene_est[nz], disp_fit[nz], var_log, n, X.shape[1], min_disp=min_disp
        )
    del g_nz
    mp = estimate_map_dispersions(
        counts, X, ge.mu, ge.disp_gene_est, disp_fit, prior_var, var_log, outlier_sd=outlier_sd,
        min_disp=min_disp, kappa_0=kappa_0, disp_tol=disp_tol, maxit=maxit,
    )  # fmt: skip
    return DispersionResult(
        base_mean=ge.base_mean,
        base_var=ge.base_var,
        all_zero=ge.all_zero,
        disp_gene_est=ge.disp_gene_est,
        disp_gene_iter=ge.disp_gene_iter,
        disp_fit=disp_fit,
        disp_map=mp.disp_map,
        dispersion=mp.dispersion,
        disp_outlier=mp.disp_outlier,
        disp_iter=mp.disp_iter,
        trend=trend,
        var_log_disp_ests=var_log,
        prior_var=float(prior_var),
        mu=ge.mu,
    )
