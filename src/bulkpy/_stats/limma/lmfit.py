"""limma's ``lmFit`` (``lm.series``, ``gls.series``) and ``contrasts.fit`` (the same in limma 3.54 and
3.68), vectorised over genes.

Arrays are samples × genes, like ``AnnData.X``. Per-gene results are 1-D arrays over genes and
per-coefficient results are ``(coefficients, genes)`` arrays, so the gene axis is always last.

:func:`lm_fit`
    ordinary or weighted least squares for every gene at once; missing values (NaN) per gene
    as limma does (each gene fit on its observed samples, ``df_residual`` varies by gene). With
    ``block`` and ``correlation`` (repeated measures), generalised least squares with the
    block-diagonal correlation matrix, weights combined as ``W^-1/2 C W^-1/2`` (``gls.series``).
:func:`contrasts_fit`
    a contrast matrix applied to the coefficients and their unscaled covariance, using the
    correlation of the coefficients for non-orthogonal designs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._blocks import gene_blocks

#: R's ``qr()`` tolerance for rank detection (LINPACK ``dqrdc2``).
RANK_TOL = 1e-7


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _row_nanmean(y: np.ndarray) -> np.ndarray:
    """Mean over samples of the non-NaN values (R's ``rowMeans(na.rm=TRUE)``), NaN when none."""
    ok = ~np.isnan(y)
    n = ok.sum(axis=0)
    s = np.where(ok, y, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _estimable_columns(X: np.ndarray, tol: float = RANK_TOL) -> np.ndarray:
    """Indices of the columns R's limited-pivoting QR keeps: walking the columns in order, a
    column is dropped when its norm after removing the earlier kept columns is below ``tol``
    times its original norm."""
    n, p = X.shape
    kept: list[int] = []
    Q = np.zeros((n, 0))
    for j in range(p):
        v = X[:, j].astype(np.float64)
        norm0 = np.linalg.norm(v)
        if norm0 == 0:
            continue
        r = v
        for _ in range(2):
            r = r - Q @ (Q.T @ r)
        nr = np.linalg.norm(r)
        if nr > tol * norm0:
            Q = np.column_stack([Q, r / nr])
            kept.append(j)
    return np.asarray(kept, dtype=np.intp)


# --------------------------------------------------------------------------------------------
# lmFit
# --------------------------------------------------------------------------------------------


@dataclass
class LinearFit:
    """Result of :func:`lm_fit` (and :func:`contrasts_fit`).

    Attributes
    ----------
    coefficients
        ``(k, genes)`` estimated coefficients (or contrasts); NaN where not estimable.
    stdev_unscaled
        ``(k, genes)`` standard errors divided by ``sigma``.
    sigma
        ``(genes,)`` residual standard deviations; NaN where ``df_residual`` is 0.
    df_residual
        ``(genes,)`` residual degrees of freedom (observed samples minus rank).
    amean
        ``(genes,)`` mean of the non-missing log-expression values per gene.
    cov_coefficients
        ``(k, k)`` unscaled covariance of the coefficients from the (unweighted) design.
    design
        ``(samples, p)`` design matrix.
    contrasts
        ``(p, k)`` contrast matrix when made by :func:`contrasts_fit`, else ``None``.
    block, correlation
        the block labels and intra-block correlation of a generalised least-squares fit, else
        ``None``.
    """

    coefficients: np.ndarray
    stdev_unscaled: np.ndarray
    sigma: np.ndarray
    df_residual: np.ndarray
    amean: np.ndarray
    cov_coefficients: np.ndarray
    design: np.ndarray
    contrasts: np.ndarray | None = None
    block: np.ndarray | None = None
    correlation: float | None = None


def _check_design(design, n: int) -> np.ndarray:
    X = np.asarray(design, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"design must be a samples x coefficients matrix with {n} rows, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("design has missing or non-finite values")
    if X.shape[1] == 0:
        raise ValueError("design has no columns")
    return X


def _weights_matrix(weights, shape) -> np.ndarray:
    W = np.asarray(weights, dtype=np.float64)
    n, g = shape
    if W.shape == (n,):
        W = np.broadcast_to(W[:, None], shape)
    elif W.shape == (n, 1):
        W = np.broadcast_to(W, shape)
    elif W.shape == (1, g):
        W = np.broadcast_to(W, shape)
    if W.shape != shape:
        raise ValueError(
            f"weights must have the shape of the data (samples x genes = {shape}) or one value per sample ({n},); "
            f"got shape {np.shape(weights)}"
        )
    return W


def _ols_block(y: np.ndarray, X: np.ndarray):
    """Unweighted least squares of every column of ``y`` on ``X`` (full column rank) via QR."""
    Q, R = np.linalg.qr(X)
    beta = np.linalg.solve(R, Q.T @ y)
    resid = y - X @ beta
    rss = np.einsum("ij,ij->j", resid, resid)
    Rinv = np.linalg.inv(R)
    unscaled_var = np.einsum("ij,ij->i", Rinv, Rinv)  # diag((R'R)^-1)
    return beta, rss, np.broadcast_to(unscaled_var[:, None], beta.shape)


def _batched_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of symmetric positive definite matrices ``(g, p, p)``,
    vectorised over the stack (a loop over the ``p`` columns only)."""
    g, p, _ = A.shape
    L = np.zeros_like(A)
    for j in range(p):
        Lj = L[:, j, :j]
        d = A[:, j, j] - (Lj * Lj).sum(axis=1)
        with np.errstate(invalid="ignore"):
            L[:, j, j] = np.sqrt(d)
        if j + 1 < p:
            off = np.matmul(L[:, j + 1 :, :j], Lj[:, :, None])[:, :, 0]
            L[:, j + 1 :, j] = (A[:, j + 1 :, j] - off) / L[:, j, j][:, None]
    return L


def _batched_lower_inverse(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower triangular matrices by forward substitution."""
    g, p, _ = L.shape
    Linv = np.zeros_like(L)
    for i in range(p):
        # row i of L^-1: (e_i - L[i, :i] @ Linv[:i, :]) / L[i, i]
        row = -np.matmul(L[:, i : i + 1, :i], Linv[:, :i, :])[:, 0, :]
        row[:, i] += 1.0
        Linv[:, i, :] = row / L[:, i, i][:, None]
    return Linv


def _wls_block(y: np.ndarray, w: np.ndarray, X: np.ndarray):
    """Weighted least squares of every column of ``y`` on ``X`` with per-observation weights
    ``w`` (same shape as ``y``) by batched normal equations on the column-equilibrated design,
    solved by Cholesky with one step of iterative refinement."""
    n, g = y.shape
    p = X.shape[1]
    scale = np.sqrt(np.einsum("ij,ij->j", X, X))
    scale[scale == 0] = 1.0
    Xs = X / scale
    pairs = (Xs[:, :, None] * Xs[:, None, :]).reshape(n, p * p)
    XtWX = (w.T @ pairs).reshape(g, p, p)
    XtWX = 0.5 * (XtWX + XtWX.transpose(0, 2, 1))
    Linv = _batched_lower_inverse(_batched_cholesky(XtWX))
    # (X'WX)^-1 = Linv' Linv
    inv = np.matmul(Linv.transpose(0, 2, 1), Linv)
    beta = np.matmul(inv, ((w * y).T @ Xs)[:, :, None])[:, :, 0]
    resid = y - Xs @ beta.T
    # one step of iterative refinement recovers the accuracy lost to forming X'WX
    beta = beta + np.matmul(inv, ((w * resid).T @ Xs)[:, :, None])[:, :, 0]
    resid = y - Xs @ beta.T
    rss = np.einsum("ij,ij->j", w * resid, resid)
    unscaled_var = np.diagonal(inv, axis1=1, axis2=2)  # diag((X'WX)^-1)
    return (beta / scale).T, rss, (unscaled_var / scale**2).T


def missing_patterns(missing: np.ndarray):
    """Groups of genes (columns of the samples × genes boolean ``missing``) sharing one pattern of
    missing values: yields ``(observed samples mask, gene indices)`` for each pattern."""
    g = missing.shape[1]
    if missing.any():
        packed = np.packbits(missing, axis=0)
        patterns, inverse = np.unique(packed.T, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).ravel()
    else:
        patterns = np.zeros((1, 1), dtype=np.uint8)
        inverse = np.zeros(g, dtype=np.intp)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(patterns.shape[0] + 1))
    for k in range(patterns.shape[0]):
        genes = order[bounds[k] : bounds[k + 1]]
        if genes.size:
            yield ~missing[:, genes[0]], genes


def block_correlation_matrix(block, correlation: float) -> np.ndarray:
    """limma's ``cormatrix`` for ``block``: ``correlation`` between samples of the same block, 1 on
    the diagonal, 0 elsewhere."""
    b = np.asarray(block)
    same = b[:, None] == b[None, :]
    C = np.where(same, float(correlation), 0.0)
    np.fill_diagonal(C, 1.0)
    return C


def _check_block(block, correlation, n: int):
    if block is None:
        if correlation is not None:
            raise ValueError("correlation is only used with block (the samples sharing a block are correlated)")
        return None
    b = np.asarray(block)
    if b.ndim != 1 or b.size != n:
        raise ValueError(f"block must have one value per sample ({n}), got shape {b.shape}")
    if correlation is None:
        raise ValueError("the correlation must be set with block (see duplicate_correlation)")
    r = float(correlation)
    if not np.isfinite(r) or abs(r) >= 1:
        raise ValueError(f"correlation must be in (-1, 1) (1 or -1 makes the model degenerate), got {correlation!r}")
    return block_correlation_matrix(b, r)


def _gls_whitened_block(y, w, X, Linv):
    """Generalised least squares of every column of ``y`` on ``X`` with the correlation whose
    Cholesky factor has inverse ``Linv`` and per-observation weights ``w`` (or None): the data
    and design are whitened by ``Linv diag(sqrt(w))`` (limma's ``backsolve(chol(V), ...)`` with
    ``V = W^-1/2 C W^-1/2``), then least squares per gene by batched QR."""
    if w is None:
        return _ols_block(Linv @ y, Linv @ X)
    sw = np.sqrt(w)
    ys = Linv @ (sw * y)  # n × g
    Xs = np.einsum("ij,jg,jk->gik", Linv, sw, X)  # g × n × p
    Q, R = np.linalg.qr(Xs)
    beta = np.linalg.solve(R, np.einsum("gnp,ng->gp", Q, ys)[:, :, None])[:, :, 0]
    resid = ys - np.einsum("gnp,gp->ng", Xs, beta)
    rss = np.einsum("ng,ng->g", resid, resid)
    Rinv = np.linalg.inv(R)
    unscaled_var = np.einsum("gij,gij->gi", Rinv, Rinv)
    return beta.T, rss, unscaled_var.T


def lm_fit(
    y,
    design,
    *,
    weights=None,
    block=None,
    correlation: float | None = None,
    chunk_elements: int = 4_000_000,
    missing: bool | None = None,
) -> LinearFit:
    """Fit ``y[:, g] ~ design`` for every gene ``g`` (limma ``lmFit`` with ``method="ls"``).

    Parameters
    ----------
    y
        Log-expression, samples × genes. NaN marks a missing value: each gene is fitted on its
        observed samples (genes with the same pattern of missing values are fitted together).
    design
        Design matrix, samples × coefficients, of full column rank.
    weights
        Optional observation weights (samples × genes, or one per sample: limma's array weights).
        Weights <= 0 or non-finite mark the observation as missing, as in limma.
    block
        Optional block label per sample (repeated measures): samples of the same block have
        intra-block correlation ``correlation`` and the fit is generalised least squares
        (limma's ``gls.series``).
    correlation
        The intra-block correlation (e.g. from :func:`duplicate_correlation`), with ``block``.
    chunk_elements
        Genes are processed in blocks of about this many samples × genes elements.
    missing
        Whether the whole matrix has a missing observation when ``y`` is one block of its genes
        (:func:`lm_fit_blocks`): limma chooses its branch (one fit for all genes, or a fit per
        pattern of missing values) on the whole matrix. ``None``: from ``y`` (and ``weights``).

    Returns
    -------
    :class:`LinearFit`.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be a 2-d samples x genes array, got shape {y.shape}")
    n, g = y.shape
    X = _check_design(design, n)
    p = X.shape[1]
    est_full = _estimable_columns(X)
    if est_full.size < p:
        raise ValueError("design is not of full column rank")
    C = _check_block(block, correlation, n)
    globally_missing = missing

    amean = _row_nanmean(y)
    missing = ~np.isfinite(y)
    W = None
    # one weight per sample (limma's asMatrixWeights marks them "arrayweights")
    array_weights = weights is not None and np.shape(weights) in ((n,), (n, 1))
    if weights is not None:
        W = _weights_matrix(weights, y.shape)
        missing = missing | ~(W > 0) | ~np.isfinite(W)

    coef = np.full((p, g), np.nan)
    su = np.full((p, g), np.nan)
    rss = np.full(g, np.nan)
    df = np.zeros(g)

    any_missing = bool(missing.any()) if globally_missing is None else bool(globally_missing)
    if not any_missing and (W is None or array_weights):
        # limma's NoProbeWts branch: one fit for all genes; with array weights the covariance of
        # the coefficients is the weighted one
        w1 = None if W is None else np.asarray(W[:, 0], dtype=np.float64)
        if C is None:
            beta, r, uv = _ols_block(y, X) if w1 is None else _ols_block(np.sqrt(w1)[:, None] * y, np.sqrt(w1)[:, None] * X)
            Xw = X if w1 is None else np.sqrt(w1)[:, None] * X
        else:
            V = C if w1 is None else C / np.sqrt(np.outer(w1, w1))
            Linv = np.linalg.inv(np.linalg.cholesky(V))
            Xw = Linv @ X
            beta, r, uv = _ols_block(Linv @ y, Xw)
        coef[:] = beta
        su[:] = np.sqrt(uv)
        rss[:] = r
        df[:] = n - p
        cov = np.linalg.inv(Xw.T @ Xw)
    else:
        for obs, genes in missing_patterns(missing):
            nobs = int(obs.sum())
            if nobs == 0:
                continue
            Xo = X[obs]
            est = _estimable_columns(Xo)
            Linv = None if C is None else np.linalg.inv(np.linalg.cholesky(C[np.ix_(obs, obs)]))
            if est.size == 0:
                df[genes] = nobs
                yo = y[np.ix_(obs, genes)]
                if W is not None:
                    yo = np.sqrt(W[np.ix_(obs, genes)]) * yo
                if Linv is not None:
                    yo = Linv @ yo
                rss[genes] = np.sum(yo * yo, axis=0)
                continue
            Xe = Xo[:, est]
            df[genes] = nobs - est.size
            for sl in gene_blocks(genes.size, n if C is None else n * est.size, block_elements=chunk_elements):
                gg = genes[sl]
                yo = y[np.ix_(obs, gg)]
                wo = None if W is None else W[np.ix_(obs, gg)]
                if Linv is not None:
                    beta, r, uv = _gls_whitened_block(yo, wo, Xe, Linv)
                elif wo is None:
                    beta, r, uv = _ols_block(yo, Xe)
                else:
                    beta, r, uv = _wls_block(yo, wo, Xe)
                coef[np.ix_(est, gg)] = beta
                su[np.ix_(est, gg)] = np.sqrt(uv)
                rss[gg] = r
        if C is None:
            cov = np.linalg.inv(X.T @ X)
        else:
            Xw = np.linalg.inv(np.linalg.cholesky(C)) @ X
            cov = np.linalg.inv(Xw.T @ Xw)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.where(df > 0, np.sqrt(np.maximum(rss, 0) / np.maximum(df, 1)), np.nan)
    return LinearFit(
        coefficients=coef,
        stdev_unscaled=su,
        sigma=sigma,
        df_residual=df,
        amean=amean,
        cov_coefficients=cov,
        design=X,
        block=None if block is None else np.asarray(block),
        correlation=None if correlation is None else float(correlation),
    )


# --------------------------------------------------------------------------------------------
# contrasts.fit
# --------------------------------------------------------------------------------------------


def _cov2cor(cov: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(cov))
    return cov / np.outer(d, d)


def contrasts_fit(fit: LinearFit, contrasts) -> LinearFit:
    """Re-express a fit in terms of contrasts of its coefficients (limma ``contrasts.fit``).

    ``contrasts`` is ``(p, k)`` (or a length-``p`` vector). Standard errors use the correlation
    of the coefficients from the design when it is not orthogonal; with observation weights this
    is limma's approximation.
    """
    C = np.asarray(contrasts, dtype=np.float64)
    if C.ndim == 1:
        C = C[:, None]
    p = fit.coefficients.shape[0]
    if C.ndim != 2 or C.shape[0] != p:
        raise ValueError(f"the contrast matrix must have {p} rows (one per coefficient), got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError("contrasts must be finite numbers")
    k = C.shape[1]
    g = fit.coefficients.shape[1]
    cov = fit.cov_coefficients
    cor = _cov2cor(cov)
    used = np.abs(C).sum(axis=1) != 0
    Cu = C[used]
    coef = fit.coefficients[used]
    su = fit.stdev_unscaled[used]
    cor_u = cor[np.ix_(used, used)]
    cov_new = C.T @ cov @ C
    if Cu.shape[0] == 0:
        return replace(
            fit,
            coefficients=np.zeros((k, g)),
            stdev_unscaled=np.zeros((k, g)),
            cov_coefficients=cov_new,
            contrasts=C,
        )
    na = np.isnan(coef)
    if na.any():
        coef = np.where(na, 0.0, coef)
        su = np.where(na, 1e30, su)
    new_coef = Cu.T @ coef
    low = cor_u[np.tril_indices(cor_u.shape[0], -1)]
    orthog = cor_u.shape[0] < 2 or bool(np.all(np.abs(low) < 1e-14))
    if orthog:
        new_su = np.sqrt((Cu**2).T @ su**2)
    else:
        new_su = np.empty((k, g))
        for j in range(k):  # loop over contrasts, vectorised over genes
            A = su * Cu[:, j][:, None]
            new_su[j] = np.sqrt(np.maximum(np.einsum("lg,lm,mg->g", A, cor_u, A), 0))
    if na.any():
        bad = new_su > 1e20
        new_coef[bad] = np.nan
        new_su[bad] = np.nan
    return replace(fit, coefficients=new_coef, stdev_unscaled=new_su, cov_coefficients=cov_new, contrasts=C)


# --------------------------------------------------------------------------------------------
# lmFit block by block of genes (dask input)
# --------------------------------------------------------------------------------------------


def _lm_fit_block(blk, X, vec_weights, block, correlation, missing):
    y = blk.read(0)
    w = blk.read(1)
    fit = lm_fit(y, X, weights=vec_weights if w is None else w, block=block, correlation=correlation, missing=missing)
    ninf = np.isinf(y).sum(axis=0)
    return fit.coefficients, fit.stdev_unscaled, fit.sigma, fit.df_residual, fit.amean, fit.cov_coefficients, ninf


def lm_fit_blocks(
    y, design, *, weights=None, block=None, correlation: float | None = None, missing: bool | None = None,
    blocks=None,
) -> tuple[LinearFit, np.ndarray]:  # fmt: skip
    """:func:`lm_fit` of a samples × genes matrix block by block of genes (one pass, e.g. over a
    dask array: one ``dask.compute``, each task fitting its block), with the number of infinite
    values of each gene (the adapter refuses them).

    ``weights``: ``None``, one per sample, or samples × genes (read block by block like ``y``).
    ``missing``: whether the whole matrix has a missing value (NaN, or a weight <= 0) — limma's
    branch is chosen on the whole matrix, so the blocks take the in-memory path's arithmetic.
    The per-gene results are those of :func:`lm_fit` on the whole matrix."""
    from .._blocks import blocks_for, map_gene_blocks

    n = y.shape[0]
    X = _check_design(design, n)
    wmat = weights if weights is not None and np.ndim(weights) == 2 and np.shape(weights)[1] > 1 else None
    wvec = None if wmat is not None or weights is None else np.asarray(weights, dtype=np.float64)
    if blocks is None:
        blocks = blocks_for(y, n)
    parts = map_gene_blocks(_lm_fit_block, [y, wmat], blocks, args=(X, wvec, block, correlation, missing))
    coef, su, sigma, df, amean, ninf = (np.concatenate([p[i] for p in parts], axis=-1) for i in (0, 1, 2, 3, 4, 6))
    fit = LinearFit(
        coefficients=coef, stdev_unscaled=su, sigma=sigma, df_residual=df, amean=amean,
        cov_coefficients=parts[0][5], design=X, block=None if block is None else np.asarray(block),
        correlation=None if correlation is None else float(correlation),
    )  # fmt: skip
    return fit, ninf
