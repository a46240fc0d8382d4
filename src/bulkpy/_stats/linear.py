"""limma's linear-model engine: ``lmFit``, ``contrasts.fit``, ``squeezeVar``, ``eBayes``, ``treat``
and ``voom`` (limma 3.54 semantics), vectorised over genes.

Arrays are samples × genes, like ``AnnData.X``. Per-gene results are 1-D arrays over genes and
per-coefficient results are ``(coefficients, genes)`` arrays, so the gene axis is always last.
Nothing here knows about AnnData.

Functions
---------
:func:`lm_fit`
    ordinary or weighted least squares for every gene at once; missing values (NaN) per gene
    as limma does (each gene fit on its observed samples, ``df_residual`` varies by gene).
:func:`contrasts_fit`
    a contrast matrix applied to the coefficients and their unscaled covariance, using the
    correlation of the coefficients for non-orthogonal designs.
:func:`fit_f_dist`, :func:`fit_f_dist_robustly`, :func:`squeeze_var`
    the empirical Bayes prior of the gene variances (moment matching on ``log F`` with a
    natural-spline trend on a covariate; the robust Winsorised variant).
:func:`ebayes`, :func:`treat`
    moderated t statistics, p-values and the B statistic; TREAT tests against a fold-change
    threshold.
:func:`voom`
    log-CPM, the lowess mean-variance trend and the observation weights.
:func:`lowess`
    R's ``lowess`` (the ``clowess`` algorithm), used by :func:`voom` and the robust trend.
:func:`p_adjust_bh`
    Benjamini–Hochberg adjusted p-values ignoring missing values, as R's ``p.adjust``.

The algorithms follow the R sources of limma 3.54.1 and R's ``stats`` (``lowess``, ``approx``,
``uniroot``) and ``splines::ns``; the code is a fresh implementation written for numpy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import special
from scipy import stats as sst
from scipy.interpolate import BSpline

__all__ = [
    "EBayesResult",
    "LinearFit",
    "VoomResult",
    "contrasts_fit",
    "ebayes",
    "fit_f_dist",
    "fit_f_dist_robustly",
    "lm_fit",
    "lowess",
    "natural_spline_basis",
    "p_adjust_bh",
    "squeeze_var",
    "treat",
    "trigamma_inverse",
    "voom",
]

#: R's ``qr()`` tolerance for rank detection (LINPACK ``dqrdc2``).
RANK_TOL = 1e-7


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _trigamma(x):
    return special.polygamma(1, x)


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


def p_adjust_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values along the last axis; NaN stays NaN and is not
    counted among the tests (R's ``p.adjust(p, "BH")``)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim > 1:
        return np.stack([p_adjust_bh(row) for row in p.reshape(-1, p.shape[-1])]).reshape(p.shape)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")[::-1]  # decreasing
    ranks = np.arange(m, 0, -1, dtype=np.float64)
    adj = np.minimum.accumulate(m / ranks * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


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
    """

    coefficients: np.ndarray
    stdev_unscaled: np.ndarray
    sigma: np.ndarray
    df_residual: np.ndarray
    amean: np.ndarray
    cov_coefficients: np.ndarray
    design: np.ndarray
    contrasts: np.ndarray | None = None


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


def lm_fit(y, design, *, weights=None, chunk_elements: int = 4_000_000) -> LinearFit:
    """Fit ``y[:, g] ~ design`` for every gene ``g`` (limma ``lmFit`` with ``method="ls"``).

    Parameters
    ----------
    y
        Log-expression, samples × genes. NaN marks a missing value: each gene is fitted on its
        observed samples (genes with the same pattern of missing values are fitted together).
    design
        Design matrix, samples × coefficients, of full column rank.
    weights
        Optional observation weights (samples × genes, or one per sample). Weights <= 0 or
        non-finite mark the observation as missing, as in limma.
    chunk_elements
        Genes are processed in blocks of about this many samples × genes elements.

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

    amean = _row_nanmean(y)
    missing = ~np.isfinite(y)
    W = None
    if weights is not None:
        W = _weights_matrix(weights, y.shape)
        missing = missing | ~(W > 0) | ~np.isfinite(W)

    coef = np.full((p, g), np.nan)
    su = np.full((p, g), np.nan)
    rss = np.full(g, np.nan)
    df = np.zeros(g)

    if not missing.any() and W is None:
        beta, r, uv = _ols_block(y, X)
        coef[:] = beta
        su[:] = np.sqrt(uv)
        rss[:] = r
        df[:] = n - p
    else:
        # group genes by their pattern of missing values: the estimable columns and the residual
        # df depend only on the pattern
        if missing.any():
            packed = np.packbits(missing, axis=0)
            patterns, inverse = np.unique(packed.T, axis=0, return_inverse=True)
            inverse = np.asarray(inverse).ravel()
        else:
            patterns = np.zeros((1, 1), dtype=np.uint8)
            inverse = np.zeros(g, dtype=np.intp)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(patterns.shape[0] + 1))
        step = max(1, int(chunk_elements // max(n, 1)))
        for k in range(patterns.shape[0]):
            genes = order[bounds[k] : bounds[k + 1]]
            if genes.size == 0:
                continue
            obs = ~missing[:, genes[0]]
            nobs = int(obs.sum())
            if nobs == 0:
                continue
            Xo = X[obs]
            est = _estimable_columns(Xo)
            if est.size == 0:
                df[genes] = nobs
                yo = y[np.ix_(obs, genes)]
                wo = 1.0 if W is None else W[np.ix_(obs, genes)]
                rss[genes] = np.sum(wo * yo * yo, axis=0)
                continue
            Xe = Xo[:, est]
            df[genes] = nobs - est.size
            for start in range(0, genes.size, step):
                gg = genes[start : start + step]
                yo = y[np.ix_(obs, gg)]
                if W is None:
                    beta, r, uv = _ols_block(yo, Xe)
                else:
                    beta, r, uv = _wls_block(yo, W[np.ix_(obs, gg)], Xe)
                coef[np.ix_(est, gg)] = beta
                su[np.ix_(est, gg)] = np.sqrt(uv)
                rss[gg] = r
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.where(df > 0, np.sqrt(np.maximum(rss, 0) / np.maximum(df, 1)), np.nan)
    cov = np.linalg.inv(X.T @ X)
    return LinearFit(
        coefficients=coef,
        stdev_unscaled=su,
        sigma=sigma,
        df_residual=df,
        amean=amean,
        cov_coefficients=cov,
        design=X,
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
# natural splines (splines::ns) for the variance trend
# --------------------------------------------------------------------------------------------


def natural_spline_basis(x, df: int, *, intercept: bool = True):
    """A basis of the natural cubic splines ``splines::ns(x, df, intercept)`` spans, and a
    function evaluating it at new points (linear beyond the boundary knots, as ``predict.ns``).

    Interior knots are the ``df - 1 - intercept`` equally spaced quantiles (R's type 7) of ``x``,
    the boundary knots its range. The basis differs from R's by an invertible linear map, which
    leaves least-squares fitted values unchanged.

    Returns
    -------
    ``(basis, evaluate)``: the ``len(x) × df`` matrix and a callable ``evaluate(new_x)``.
    """
    x = np.asarray(x, dtype=np.float64)
    n_int = int(df) - 1 - int(bool(intercept))
    if n_int < 0:
        n_int = 0
    lo, hi = float(np.min(x)), float(np.max(x))
    if n_int > 0:
        probs = np.linspace(0.0, 1.0, n_int + 2)[1:-1]
        knots = np.quantile(x, probs)
    else:
        knots = np.zeros(0)
    t = np.sort(np.concatenate([np.repeat([lo, hi], 4), knots]))
    nb = t.size - 4
    eye = np.eye(nb)
    splines = [BSpline(t, eye[i], 3, extrapolate=False) for i in range(nb)]
    d1 = [s.derivative(1) for s in splines]
    d2 = [s.derivative(2) for s in splines]

    def _eval_inside(v):
        out = np.empty((v.size, nb))
        for i, s in enumerate(splines):
            out[:, i] = s(v)  # scipy includes the right boundary knot in the last interval
        return out

    const = np.array(
        [
            [float(BSpline(s.t, s.c, s.k, extrapolate=True)(lo)) for s in d2],
            [float(BSpline(s.t, s.c, s.k, extrapolate=True)(hi)) for s in d2],
        ]
    )
    if not intercept:
        const = const[:, 1:]
    # orthonormal basis of the null space of the boundary second-derivative constraints
    _, _, vt = np.linalg.svd(const)
    null = vt[2:].T

    val_lo = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(lo)) for s in splines])
    val_hi = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(hi)) for s in splines])
    der_lo = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(lo)) for s in d1])
    der_hi = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(hi)) for s in d1])

    def evaluate(v):
        v = np.asarray(v, dtype=np.float64).ravel()
        B = np.empty((v.size, nb))
        left = v < lo
        right = v > hi
        inside = ~(left | right)
        if inside.any():
            B[inside] = _eval_inside(v[inside])
        if left.any():
            B[left] = val_lo[None, :] + (v[left] - lo)[:, None] * der_lo[None, :]
        if right.any():
            B[right] = val_hi[None, :] + (v[right] - hi)[:, None] * der_hi[None, :]
        if not intercept:
            B = B[:, 1:]
        return B @ null

    return evaluate(x), evaluate


# --------------------------------------------------------------------------------------------
# fitFDist / trigammaInverse / squeezeVar
# --------------------------------------------------------------------------------------------


def trigamma_inverse(x) -> np.ndarray:
    """Solve ``trigamma(y) = x`` for ``y`` (limma's ``trigammaInverse``, Newton's method)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.full(x.shape, np.nan)
    big = x > 1e7
    small = (x < 1e-6) & (x >= 0)
    reg = (x >= 1e-6) & (x <= 1e7)
    y[big] = 1.0 / np.sqrt(x[big])
    y[small] = 1.0 / x[small]
    if reg.any():
        xr = x[reg]
        yr = 0.5 + 1.0 / xr
        for _ in range(51):
            tri = _trigamma(yr)
            dif = tri * (1.0 - tri / xr) / special.polygamma(2, yr)
            yr = yr + dif
            if np.max(-dif / yr) < 1e-8:
                break
        else:  # pragma: no cover - limma warns after 50 iterations
            warnings.warn("trigamma_inverse: iteration limit exceeded", RuntimeWarning, stacklevel=2)
        y[reg] = yr
    return y


def fit_f_dist(x, df1, covariate=None) -> tuple[np.ndarray | float, float]:
    """Moment estimation of a scaled F distribution ``x ~ scale * F(df1, df2)`` (limma
    ``fitFDist``): returns ``(scale, df2)``. With ``covariate`` the scale follows a natural spline
    trend in the covariate (``ns`` with ``1 + (n>=3) + (n>=6) + (n>=30)`` df) and is returned per
    value."""
    x = np.asarray(x, dtype=np.float64).ravel().copy()
    n = x.size
    if n == 0:
        return np.nan, np.nan
    if n == 1:
        return x[0], 0.0
    df1 = np.asarray(df1, dtype=np.float64)
    scalar_df = df1.ndim == 0 or df1.size == 1
    if scalar_df:
        d = float(df1.ravel()[0])
        if not (np.isfinite(d) and d > 1e-15):
            return np.nan, np.nan
        ok = np.ones(n, dtype=bool)
        df1 = np.full(n, d)
    else:
        df1 = df1.ravel()
        if df1.size != n:
            raise ValueError("x and df1 have different lengths")
        ok = np.isfinite(df1) & (df1 > 1e-15)
    cov = None
    if covariate is not None:
        cov = np.asarray(covariate, dtype=np.float64).ravel().copy()
        if cov.size != n:
            raise ValueError("x and covariate must be of same length")
        if np.isnan(cov).any():
            raise ValueError("NA covariate values not allowed")
        isfin = np.isfinite(cov)
        if not isfin.all():
            if isfin.any():
                lo, hi = cov[isfin].min(), cov[isfin].max()
                cov[cov == -np.inf] = lo - 1
                cov[cov == np.inf] = hi + 1
            else:
                cov = np.sign(cov)
    with np.errstate(invalid="ignore"):
        ok = ok & np.isfinite(x) & (x > -1e-15)
    nok = int(ok.sum())
    if nok == 1:
        return x[ok][0], 0.0
    notallok = nok < n
    cov_notok = None
    if notallok:
        x = x[ok]
        df1 = df1[ok]
        if cov is not None:
            cov_notok = cov[~ok]
            cov = cov[ok]
    splinedf = 1
    if cov is not None:
        splinedf = 1 + int(nok >= 3) + int(nok >= 6) + int(nok >= 30)
        splinedf = min(splinedf, np.unique(cov).size)
        if splinedf < 2:
            scale, df2 = fit_f_dist(x, df1)
            return np.full(n, scale), df2
    x = np.maximum(x, 0)
    m = np.median(x)
    if m == 0:
        warnings.warn(
            "More than half of residual variances are exactly zero: eBayes unreliable",
            UserWarning,
            stacklevel=2,
        )
        m = 1.0
    elif np.any(x == 0):
        warnings.warn(
            "Zero sample variances detected, have been offset away from zero", UserWarning, stacklevel=2
        )
    x = np.maximum(x, 1e-5 * m)
    z = np.log(x)
    e = z - special.digamma(df1 / 2) + np.log(df1 / 2)
    if cov is None:
        emean = float(np.mean(e))
        evar = float(np.sum((e - emean) ** 2) / (nok - 1))
    else:
        basis, evaluate = natural_spline_basis(cov, splinedf, intercept=True)
        coef_, _, rank, _ = np.linalg.lstsq(basis, e, rcond=None)
        fitted = basis @ coef_
        evar = float(np.sum((e - fitted) ** 2) / (nok - rank))
        if notallok:
            emean = np.zeros(n)
            emean[ok] = fitted
            emean[~ok] = evaluate(cov_notok) @ coef_
        else:
            emean = fitted
    evar = evar - float(np.mean(_trigamma(df1 / 2)))
    if evar > 0:
        df2 = float(2 * trigamma_inverse(evar)[0])
        s20 = np.exp(emean + special.digamma(df2 / 2) - np.log(df2 / 2))
    else:
        df2 = np.inf
        s20 = float(np.mean(x)) if cov is None else np.exp(emean)
    return s20, df2


def _zeroin(f, ax: float, bx: float, fa: float, fb: float, tol: float, maxit: int = 1000) -> float:
    """Brent's root finder in the form R's ``uniroot`` uses (Forsythe, Malcolm & Moler)."""
    eps = np.finfo(float).eps
    a, b, c = ax, bx, ax
    fc = fa
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(maxit + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * eps * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b = b + new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


def _f_logsf(x, df1, df2):
    """log P(F > x) for an F(df1, df2) distribution (chi-square / df1 when df2 is infinite)."""
    x = np.asarray(x, dtype=np.float64)
    if np.isinf(df2):
        return sst.chi2.logsf(x * df1, df1)
    return sst.f.logsf(x, df1, df2)


def _f_logcdf(x, df1, df2):
    x = np.asarray(x, dtype=np.float64)
    if np.isinf(df2):
        return sst.chi2.logcdf(x * df1, df1)
    return sst.f.logcdf(x, df1, df2)


def _f_ppf(q, df1, df2):
    if np.isinf(df2):
        return sst.chi2.ppf(q, df1) / df1
    return sst.f.ppf(q, df1, df2)


def _f_pdf(x, df1, df2):
    if np.isinf(df2):
        return sst.chi2.pdf(x * df1, df1) * df1
    return sst.f.pdf(x, df1, df2)


def _r_quantile(x: np.ndarray, probs) -> np.ndarray:
    return np.quantile(x, probs)


def _trimmed_mean(x: np.ndarray, trim: float) -> float:
    """R's ``mean(x, trim=)``: drop ``floor(n * trim)`` values from each end."""
    n = x.size
    if trim <= 0 or n == 0:
        return float(np.mean(x))
    if trim >= 0.5:
        return float(np.median(x))
    lo = int(np.floor(n * trim))
    s = np.sort(x)
    return float(np.mean(s[lo : n - lo]))


_GQ_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _gauss_uniform(n: int = 128):
    """Gauss–Legendre nodes and weights for the uniform distribution on [0, 1]
    (statmod's ``gauss.quad.prob(n, "uniform")``)."""
    if n not in _GQ_CACHE:
        x, w = np.polynomial.legendre.leggauss(n)
        _GQ_CACHE[n] = ((x + 1) / 2, w / 2)
    return _GQ_CACHE[n]


def _winsorized_moments(df1: float, df2: float, winsor_tail_p) -> tuple[float, float]:
    nodes01, weights = _gauss_uniform(128)
    wp = np.asarray(winsor_tail_p, dtype=np.float64)
    fq = np.array([_f_ppf(wp[0], df1, df2), _f_ppf(1 - wp[1], df1, df2)], dtype=np.float64)
    zq = np.log(fq)
    q = fq / (1 + fq)
    nodes = q[0] + (q[1] - q[0]) * nodes01
    fnodes = nodes / (1 - nodes)
    znodes = np.log(fnodes)
    f = _f_pdf(fnodes, df1, df2) / (1 - nodes) ** 2
    q21 = q[1] - q[0]
    m = q21 * np.sum(weights * f * znodes) + np.sum(zq * wp)
    v = q21 * np.sum(weights * f * (znodes - m) ** 2) + np.sum((zq - m) ** 2 * wp)
    return float(m), float(v)


def fit_f_dist_robustly(x, df1, covariate=None, winsor_tail_p=(0.05, 0.1)) -> dict:
    """Robust estimation of a scaled F distribution from Winsorised ``log F`` moments (limma
    ``fitFDistRobustly``). Returns a dict with ``scale``, ``df2`` and the per-value
    ``df2_shrunk`` (prior df shrunk towards 0 for outlying variances), plus ``tail_p_value``,
    ``prob_outlier`` and ``df2_outlier`` where computed."""
    x = np.asarray(x, dtype=np.float64).ravel().copy()
    n = x.size
    if n < 2:
        return {"scale": np.nan, "df2": np.nan, "df2_shrunk": np.full(n, np.nan)}
    if n == 2:
        scale, df2 = fit_f_dist(x, df1, covariate)
        return {"scale": scale, "df2": df2, "df2_shrunk": np.full(n, df2)}
    df1 = np.asarray(df1, dtype=np.float64)
    if df1.size not in (1, n):
        raise ValueError("x and df1 are different lengths")
    df1_vec = np.full(n, float(df1.ravel()[0])) if df1.size == 1 else df1.ravel().copy()
    cov = None
    if covariate is not None:
        cov = np.asarray(covariate, dtype=np.float64).ravel()
        if cov.size != n:
            raise ValueError("x and covariate are different lengths")
        if not np.all(np.isfinite(cov)):
            raise ValueError("covariate contains NA or infinite values")

    ok = ~np.isnan(x) & np.isfinite(df1_vec) & (df1_vec > 1e-6)
    if not ok.all():
        fit = fit_f_dist_robustly(x[ok], df1_vec[ok], None if cov is None else cov[ok], winsor_tail_p)
        df2_shrunk = x.copy()
        df2_shrunk[ok] = fit["df2_shrunk"]
        df2_shrunk[~ok] = fit["df2"]
        if cov is None:
            scale = fit["scale"]
        else:
            scale = x.copy()
            scale[ok] = fit["scale"]
            scale[~ok] = np.exp(_approx_rule2(cov[ok], np.log(fit["scale"]), cov[~ok]))
        out = dict(fit)
        out.update(scale=scale, df2_shrunk=df2_shrunk)
        return out

    m = np.median(x)
    if m <= 0:
        raise ValueError("Variances are mostly <= 0")
    small = x < m * 1e-12
    if small.any():
        nz = int(small.sum())
        msg = (
            "One very small variance detected, has been offset away from zero"
            if nz == 1
            else f"{nz} very small variances detected, have been offset away from zero"
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        x[small] = m * 1e-12

    nr_scale, nr_df2 = fit_f_dist(x, df1_vec if df1.size > 1 else float(df1.ravel()[0]), cov)

    wtp = np.resize(np.asarray(winsor_tail_p, dtype=np.float64), 2)
    prob = np.array([wtp[0], 1 - wtp[1]])
    if np.all(wtp < 1 / n):
        return {"scale": nr_scale, "df2": nr_df2, "df2_shrunk": np.full(n, nr_df2)}

    # transform x to a constant df1
    if df1.size > 1:
        df1max = float(np.max(df1_vec))
        i = df1_vec < (df1max - 1e-14)
        if i.any():
            s = nr_scale if cov is None else np.asarray(nr_scale)[i]
            f = x[i] / s
            pup = _f_logsf(f, df1_vec[i], nr_df2)
            plo = _f_logcdf(f, df1_vec[i], nr_df2)
            up = pup < plo
            fnew = f.copy()
            if up.any():
                fnew[up] = _f_isf_log(pup[up], df1max, nr_df2)
            if (~up).any():
                fnew[~up] = _f_ppf_log(plo[~up], df1max, nr_df2)
            x[i] = fnew * s
        df1v = df1max
    else:
        df1v = float(df1_vec[0])

    z = np.log(x)
    if cov is None:
        ztrend = _trimmed_mean(z, float(wtp[1]))
        zresid = z - ztrend
    else:
        ztrend = _loess_fit_unweighted(z, cov, span=0.4, iterations=4)
        zresid = z - ztrend

    zrq = _r_quantile(zresid, prob)
    zwins = np.minimum(np.maximum(zresid, zrq[0]), zrq[1])
    zwmean = float(np.mean(zwins))
    zwvar = float(np.mean((zwins - zwmean) ** 2) * n / (n - 1))

    mom_inf = _winsorized_moments(df1v, np.inf, wtp)
    funval_inf = np.log(zwvar / mom_inf[1])
    if funval_inf <= 0:
        df2 = np.inf
        ztc = ztrend + zwmean - mom_inf[0]
        s20 = np.exp(ztc)
        fstat = np.exp(z - ztc)
        tail_p = sst.chi2.sf(fstat * df1v, df1v)
        r = sst.rankdata(fstat)
        emp = (n - r + 0.5) / n
        prob_not = np.minimum(tail_p / emp, 1)
        df_pooled = n * df1v
        df2_shrunk = np.full(n, df2)
        o_ = prob_not < 1
        if o_.any():
            df2_shrunk[o_] = prob_not[o_] * df_pooled
            o = np.argsort(tail_p, kind="stable")
            df2_shrunk[o] = np.maximum.accumulate(df2_shrunk[o])
        return {"scale": s20, "df2": df2, "tail_p_value": tail_p, "df2_shrunk": df2_shrunk}

    def fun(u):
        d2 = u / (1 - u)
        mom = _winsorized_moments(df1v, d2, wtp)
        return np.log(zwvar / mom[1])

    if np.isinf(nr_df2):
        return {"scale": nr_scale, "df2": nr_df2, "df2_shrunk": np.full(n, nr_df2)}
    rbx = nr_df2 / (1 + nr_df2)
    funval_low = fun(rbx)
    if funval_low >= 0:
        df2 = nr_df2
    else:
        u = _zeroin(fun, rbx, 1.0, funval_low, funval_inf, tol=1e-8)
        df2 = u / (1 - u)

    mom = _winsorized_moments(df1v, df2, wtp)
    ztc = ztrend + zwmean - mom[0]
    s20 = np.exp(ztc)
    zresid = z - ztc
    fstat = np.exp(zresid)
    log_tail_p = _f_logsf(fstat, df1v, df2)
    tail_p = np.exp(log_tail_p)
    r = sst.rankdata(fstat)
    log_emp = np.log(n - r + 0.5) - np.log(n)
    log_prob_not = np.minimum(log_tail_p - log_emp, 0)
    prob_not = np.exp(log_prob_not)
    prob_out = -np.expm1(log_prob_not)
    if np.any(log_prob_not < 0):
        min_log_tail_p = float(np.min(log_tail_p))
        if min_log_tail_p == -np.inf:
            df2_outlier = 0.0
            df2_shrunk = prob_not * df2
        else:
            df2_outlier = np.log(0.5) / min_log_tail_p * df2
            new_log_tail_p = float(_f_logsf(np.max(fstat), df1v, df2_outlier))
            df2_outlier = np.log(0.5) / new_log_tail_p * df2_outlier
            df2_shrunk = prob_not * df2 + prob_out * df2_outlier
        o = np.argsort(log_tail_p, kind="stable")
        ordered = df2_shrunk[o]
        cm = np.cumsum(ordered) / np.arange(1, n + 1)
        imin = int(np.argmin(cm))
        ordered[: imin + 1] = cm[imin]
        df2_shrunk = np.empty(n)
        df2_shrunk[o] = np.maximum.accumulate(ordered)
    else:
        df2_outlier = df2
        df2_shrunk = np.full(n, df2)
    return {
        "scale": s20,
        "df2": df2,
        "tail_p_value": tail_p,
        "prob_outlier": prob_out,
        "df2_outlier": df2_outlier,
        "df2_shrunk": df2_shrunk,
    }


def _f_isf_log(logp, df1, df2):
    p = np.exp(logp)
    if np.isinf(df2):
        return sst.chi2.isf(p, df1) / df1
    return sst.f.isf(p, df1, df2)


def _f_ppf_log(logp, df1, df2):
    return _f_ppf(np.exp(logp), df1, df2)


def _approx_rule2(x, y, xout):
    """R's ``approx(x, y, xout, rule=2, ties=mean)``: linear interpolation, constant beyond."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    o = np.argsort(x, kind="stable")
    xs, ys = x[o], y[o]
    xu, idx = np.unique(xs, return_inverse=True)
    if xu.size < xs.size:
        ys = np.bincount(idx, weights=ys) / np.bincount(idx)
    return np.interp(np.asarray(xout, dtype=np.float64), xu, ys)


def squeeze_var(var, df, *, covariate=None, robust: bool = False, winsor_tail_p=(0.05, 0.1)):
    """Empirical Bayes posterior variances (limma ``squeezeVar``).

    Returns ``(var_post, var_prior, df_prior)``; ``var_prior`` is a scalar or per-gene (with a
    covariate), ``df_prior`` a scalar or per-gene (robust).
    """
    var = np.asarray(var, dtype=np.float64).ravel().copy()
    n = var.size
    if n == 0:
        raise ValueError("var is empty")
    df = np.asarray(df, dtype=np.float64)
    if n == 1:
        return var.copy(), var.copy(), 0.0
    if df.size > 1:
        var[df.ravel() == 0] = 0
    if robust:
        fit = fit_f_dist_robustly(var, df, covariate=covariate, winsor_tail_p=winsor_tail_p)
        df_prior = fit["df2_shrunk"]
        var_prior = fit["scale"]
    else:
        var_prior, df_prior = fit_f_dist(var, df, covariate=covariate)
    if np.any(np.isnan(np.asarray(df_prior, dtype=np.float64))):
        raise ValueError("Could not estimate prior df")
    var_post = _squeeze(var, df, var_prior, df_prior)
    return var_post, var_prior, df_prior


def _squeeze(var, df, var_prior, df_prior):
    n = var.size
    df_prior = np.asarray(df_prior, dtype=np.float64)
    var_prior_b = np.broadcast_to(np.asarray(var_prior, dtype=np.float64), (n,))
    df_prior_b = np.broadcast_to(df_prior, (n,))
    df_b = np.broadcast_to(df, (n,))
    fin = np.isfinite(df_prior_b)
    out = np.array(var_prior_b, dtype=np.float64, copy=True)
    if fin.any():
        with np.errstate(invalid="ignore"):
            num = df_b[fin] * var[fin] + df_prior_b[fin] * var_prior_b[fin]
            out[fin] = num / (df_b[fin] + df_prior_b[fin])
    return out


# --------------------------------------------------------------------------------------------
# eBayes / treat
# --------------------------------------------------------------------------------------------


@dataclass
class EBayesResult:
    """Moderated statistics from :func:`ebayes` or :func:`treat`; ``(k, genes)`` arrays unless noted.

    Attributes
    ----------
    t
        moderated t statistics (TREAT t for :func:`treat`).
    p_value
        two-sided p-values.
    lods
        B statistics (log-odds of differential expression); ``None`` for :func:`treat`.
    s2_prior
        prior variance, scalar or ``(genes,)`` with a trend.
    df_prior
        prior degrees of freedom, scalar or ``(genes,)`` when robust.
    s2_post
        ``(genes,)`` posterior variances.
    df_total
        ``(genes,)`` total degrees of freedom.
    var_prior
        ``(k,)`` prior variance of the non-zero coefficients (the B statistic's), ``None`` for treat.
    lfc
        the TREAT threshold (0 for :func:`ebayes`).
    """

    t: np.ndarray
    p_value: np.ndarray
    lods: np.ndarray | None
    s2_prior: np.ndarray | float
    df_prior: np.ndarray | float
    s2_post: np.ndarray
    df_total: np.ndarray
    var_prior: np.ndarray | None
    lfc: float = 0.0


def _check_fit_for_eb(fit: LinearFit):
    df = np.asarray(fit.df_residual, dtype=np.float64)
    if df.size == 0 or np.max(df) == 0:
        raise ValueError("No residual degrees of freedom in linear model fits")
    if not np.any(np.isfinite(fit.sigma)):
        raise ValueError("No finite residual standard deviations")
    return df


def _covariate_for(fit: LinearFit, trend):
    if isinstance(trend, bool | np.bool_):
        return np.asarray(fit.amean, dtype=np.float64) if trend else None
    cov = np.asarray(trend, dtype=np.float64).ravel()
    if cov.size != fit.sigma.size:
        raise ValueError("If trend is numeric then it should have length equal to the number of genes")
    return cov


def _t_logsf(t, df):
    return sst.t.logsf(t, df)


def _tmixture_vector(tstat, su, df, proportion, v0_lim):
    ok = ~np.isnan(tstat)
    tstat, su, df = tstat[ok], su[ok], df[ok]
    ngenes = tstat.size
    ntarget = int(np.ceil(proportion / 2 * ngenes))
    if ntarget < 1:
        return np.nan
    p = max(ntarget / ngenes, proportion)
    tstat = np.abs(tstat)
    maxdf = np.max(df)
    i = df < maxdf
    if i.any():
        tail = _t_logsf(tstat[i], df[i])
        tstat = tstat.copy()
        tstat[i] = sst.t.isf(np.exp(tail), maxdf)
    o = np.argsort(-tstat, kind="stable")[:ntarget]
    tstat = tstat[o]
    v1 = su[o] ** 2
    r = np.arange(1, ntarget + 1)
    p0 = 2 * sst.t.sf(tstat, maxdf)
    ptarget = ((r - 0.5) / ngenes - (1 - p) * p0) / p
    v0 = np.zeros(ntarget)
    pos = ptarget > p0
    if pos.any():
        qtarget = sst.t.isf(ptarget[pos] / 2, maxdf)
        v0[pos] = v1[pos] * ((tstat[pos] / qtarget) ** 2 - 1)
    if v0_lim is not None:
        v0 = np.minimum(np.maximum(v0, v0_lim[0]), v0_lim[1])
    return float(np.mean(v0))


def ebayes(
    fit: LinearFit,
    *,
    proportion: float = 0.01,
    stdev_coef_lim=(0.1, 4.0),
    trend=False,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
) -> EBayesResult:
    """Empirical Bayes moderated t statistics (limma ``eBayes``).

    ``trend=True`` uses the fit's ``amean`` as covariate of the prior variance; a numeric vector
    gives the covariate directly.
    """
    df_res = _check_fit_for_eb(fit)
    cov = _covariate_for(fit, trend)
    s2_post, s2_prior, df_prior = squeeze_var(
        fit.sigma**2, df_res, covariate=cov, robust=robust, winsor_tail_p=winsor_tail_p
    )
    coef = fit.coefficients
    su = fit.stdev_unscaled
    with np.errstate(invalid="ignore", divide="ignore"):
        t = coef / su / np.sqrt(s2_post)[None, :]
    df_total = df_res + np.asarray(df_prior, dtype=np.float64)
    df_pooled = float(np.nansum(df_res))
    df_total = np.minimum(df_total, df_pooled)
    df_total = np.broadcast_to(df_total, df_res.shape).astype(np.float64)
    p_value = 2 * sst.t.sf(np.abs(t), df_total[None, :])

    # B statistic
    lim = np.asarray(stdev_coef_lim, dtype=np.float64) ** 2 / np.median(np.atleast_1d(s2_prior))
    k = coef.shape[0]
    var_prior = np.array([_tmixture_vector(t[j], su[j], df_total, proportion, lim) for j in range(k)])
    if np.any(np.isnan(var_prior)):
        var_prior[np.isnan(var_prior)] = 1 / np.median(np.atleast_1d(s2_prior))
        warnings.warn("Estimation of var.prior failed - set to default value", UserWarning, stacklevel=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (su**2 + var_prior[:, None]) / su**2
        t2 = t**2
        dfp = np.broadcast_to(np.asarray(df_prior, dtype=np.float64), df_res.shape)
        inf_df = dfp > 1e6
        kernel = (1 + df_total) / 2 * np.log((t2 + df_total) / (t2 / r + df_total))
        if inf_df.any():
            kernel_inf = t2 * (1 - 1 / r) / 2
            kernel = np.where(inf_df[None, :], kernel_inf, kernel)
        lods = np.log(proportion / (1 - proportion)) - np.log(r) / 2 + kernel
    return EBayesResult(
        t=t,
        p_value=p_value,
        lods=lods,
        s2_prior=s2_prior,
        df_prior=df_prior,
        s2_post=s2_post,
        df_total=df_total,
        var_prior=var_prior,
        lfc=0.0,
    )


def treat(
    fit: LinearFit,
    *,
    lfc: float = np.log2(1.2),
    trend=False,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
) -> EBayesResult:
    """Moderated t tests relative to a log2 fold-change threshold ``lfc`` (limma ``treat``)."""
    df_res = _check_fit_for_eb(fit)
    cov = _covariate_for(fit, trend)
    s2_post, s2_prior, df_prior = squeeze_var(
        fit.sigma**2, df_res, covariate=cov, robust=robust, winsor_tail_p=winsor_tail_p
    )
    df_total = df_res + np.asarray(df_prior, dtype=np.float64)
    df_total = np.minimum(df_total, float(np.nansum(df_res)))
    df_total = np.broadcast_to(df_total, df_res.shape).astype(np.float64)
    lfc = abs(float(lfc))
    coef = fit.coefficients
    acoef = np.abs(coef)
    se = fit.stdev_unscaled * np.sqrt(s2_post)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        t_right = (acoef - lfc) / se
        t_left = (acoef + lfc) / se
    p_value = sst.t.sf(t_right, df_total[None, :]) + sst.t.sf(t_left, df_total[None, :])
    t_right = np.maximum(t_right, 0)
    t = np.zeros(coef.shape)
    up = coef > lfc
    down = coef < -lfc
    t[up] = t_right[up]
    t[down] = -t_right[down]
    t[np.isnan(coef) | np.isnan(se)] = np.nan
    return EBayesResult(
        t=t,
        p_value=p_value,
        lods=None,
        s2_prior=s2_prior,
        df_prior=df_prior,
        s2_post=s2_post,
        df_total=df_total,
        var_prior=None,
        lfc=lfc,
    )


# --------------------------------------------------------------------------------------------
# lowess (R's clowess) and voom
# --------------------------------------------------------------------------------------------


def _lowest(x, y, n, xs, nleft, nright, rw, xrange):
    """Fitted value at ``xs`` from the points ``nleft..`` (0-based) as ``clowess``'s ``lowest``:
    tricube weights within the radius (times the robustness weights ``rw`` unless ``None``),
    a locally linear fit when the points are spread enough. Returns ``(value, ok)``."""
    h = max(xs - x[nleft], x[nright] - xs)
    h9 = 0.999 * h
    h1 = 0.001 * h
    # the points used run from nleft to just before the first point right of xs beyond h9
    # (ties on the right are picked up); locate it by bisection, then check it exactly
    j = int(np.searchsorted(x, xs + h9, side="right"))
    j = max(j, nleft)
    while j > nleft and x[j - 1] > xs and (x[j - 1] - xs) > h9:
        j -= 1
    while j < n and not (x[j] > xs and abs(x[j] - xs) > h9):
        j += 1
    xw = x[nleft:j]
    r = np.abs(xw - xs)
    if h > 0:
        w = r / h
        w = 1.0 - w * w * w
        # weights below 1e-270 change no sum; zeroing them avoids slow subnormal arithmetic
        w[w < 1e-90] = 0.0
        w = w * w * w
        w[r <= h1] = 1.0
        w[r > h9] = 0.0
    else:
        w = (r <= 0).astype(np.float64)
    if rw is not None:
        w *= rw[nleft:j]
    a = float(w.sum())
    if a <= 0:
        return 0.0, False
    w /= a
    if h > 0:
        # plain sums, not BLAS dot products: a multi-threaded ddot is slow on a busy machine
        a = float((w * xw).sum())
        b = xs - a
        dx = xw - a
        c = float((w * dx * dx).sum())
        if np.sqrt(c) > 0.001 * xrange:
            b = b / c
            w *= b * dx + 1.0
    return float((w * y[nleft:j]).sum()), True


def lowess(x, y, *, f: float = 2 / 3, iter: int = 3, delta: float | None = None):
    """R's ``lowess`` (``clowess``): returns ``(x_sorted, fitted)``.

    The points are sorted by ``x`` (stably); ``delta`` defaults to 1% of the range of ``x``.
    Fits are computed at points at least ``delta`` apart and linearly interpolated between.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError("x and y lengths differ")
    n = x.size
    if n == 0:
        raise ValueError("lowess needs at least one point")
    o = np.argsort(x, kind="stable")
    x = x[o]
    y = y[o]
    if delta is None:
        delta = 0.01 * (x[-1] - x[0])
    ys = np.empty(n)
    if n < 2:
        ys[0] = y[0]
        return x, ys
    ns = max(2, min(n, int(f * n + 1e-7)))
    xrange = x[-1] - x[0]
    rw = np.ones(n)
    res = np.zeros(n)
    it = 1
    while it <= iter + 1:
        nleft, nright = 0, ns - 1
        last = -1
        i = 0
        while True:
            if nright < n - 1:
                # move the window right while that shrinks the radius (the predicate is monotone:
                # bisect for the first window position where it fails)
                if (x[i] - x[nleft]) > (x[nright + 1] - x[i]):
                    lo, hi = nleft + 1, n - ns  # candidate final nleft in [lo, hi]
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if (x[i] - x[mid]) > (x[mid + ns] - x[i]):
                            lo = mid + 1
                        else:
                            hi = mid
                    nleft = lo
                    nright = nleft + ns - 1
            val, ok = _lowest(x, y, n, x[i], nleft, nright, rw if it > 1 else None, xrange)
            ys[i] = val if ok else y[i]
            if last < i - 1:
                denom = x[i] - x[last]
                js = np.arange(last + 1, i)
                alpha = (x[js] - x[last]) / denom
                ys[js] = alpha * ys[i] + (1.0 - alpha) * ys[last]
            last = i
            cut = x[last] + delta
            brk = int(np.searchsorted(x, cut, side="right"))  # first index with x > cut
            tie_end = int(np.searchsorted(x, x[last], side="right")) - 1
            if tie_end > last:
                ys[last + 1 : tie_end + 1] = ys[last]
                last = tie_end
            i = max(last + 1, brk - 1)
            if last >= n - 1:
                break
        res = y - ys
        sc = float(np.sum(np.abs(res))) / n
        if it > iter:
            break
        ar = np.abs(res)
        m1 = n // 2
        part = np.partition(ar, (m1, n - m1 - 1) if n % 2 == 0 else m1)
        cmad = 3.0 * (part[m1] + part[n - m1 - 1]) if n % 2 == 0 else 6.0 * part[m1]
        if cmad < 1e-7 * sc:
            break
        c9 = 0.999 * cmad
        c1 = 0.001 * cmad
        rw = np.where(ar <= c1, 1.0, np.where(ar <= c9, (1.0 - (ar / cmad) ** 2) ** 2, 0.0))
        it += 1
    return x, ys


def _loess_fit_unweighted(y, x, *, span: float, iterations: int = 4) -> np.ndarray:
    """limma's ``loessFit`` without weights: R's ``lowess(f=span, iter=iterations-1)`` on the
    finite points; returns the fitted values in the input order (NaN elsewhere)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(y.size, np.nan)
    obs = np.isfinite(y) & np.isfinite(x)
    nobs = int(obs.sum())
    if nobs == 0:
        return out
    if span < 1 / nobs:
        out[obs] = y[obs]
        return out
    xo, yo = x[obs], y[obs]
    o = np.argsort(xo, kind="stable")
    _, fitted_sorted = lowess(xo, yo, f=span, iter=iterations - 1)
    fitted = np.empty(nobs)
    fitted[o] = fitted_sorted
    out[obs] = fitted
    return out


def _interp_rule2(v, xp: np.ndarray, fp: np.ndarray, chunk: int = 1 << 21) -> np.ndarray:
    """Linear interpolation through the sorted, distinct knots ``(xp, fp)``, constant beyond the
    ends (R's ``approxfun(rule = 2)``); the same values as ``np.interp``, faster for many points:
    a lookup table over a uniform grid finds each point's interval without a binary search."""
    v = np.asarray(v, dtype=np.float64)
    m = xp.size
    if m == 1:
        return np.full(v.shape, fp[0])
    x0, x1 = xp[0], xp[-1]
    cells = int(min(max(4 * m, 1024), 1 << 22))
    h = (x1 - x0) / cells
    lut = np.searchsorted(xp, x0 + h * np.arange(cells + 1), side="right") - 1
    np.clip(lut, 0, m - 2, out=lut)
    slope = np.diff(fp) / np.diff(xp)
    flat = v.ravel()
    out = np.empty(flat.size)
    for s in range(0, flat.size, chunk):
        vc = np.clip(flat[s : s + chunk], x0, x1)
        c = ((vc - x0) / h).astype(np.intp)
        np.clip(c, 0, cells - 1, out=c)
        k = lut[c]
        # the interval starts at the last knot <= v: step left past rounding at cell edges, then
        # right past the knots that share the cell
        idx = np.flatnonzero(xp[k] > vc)
        while idx.size:
            k[idx] -= 1
            idx = idx[xp[k[idx]] > vc[idx]]
        idx = np.flatnonzero(xp[k + 1] <= vc)
        while idx.size:
            idx = idx[k[idx] < m - 2]
            k[idx] += 1
            idx = idx[xp[k[idx] + 1] <= vc[idx]]
        out[s : s + chunk] = fp[k] + (vc - xp[k]) * slope[k]
    return out.reshape(v.shape)


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
    """

    E: np.ndarray
    weights: np.ndarray
    lib_size: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    trend_x: np.ndarray
    trend_y: np.ndarray
    fit: LinearFit


def voom(counts, design, *, lib_size=None, span: float = 0.5) -> VoomResult:
    """limma's ``voom`` on a samples × genes count matrix.

    ``lib_size`` (per sample) defaults to the column totals; for a normalised DGEList pass
    ``lib.size * norm.factors``. ``E = log2((counts + 0.5) / (lib_size + 1) * 1e6)``; the lowess
    trend (``f = span``) of ``sqrt(sigma)`` against the mean log count gives the weights
    ``trend(fitted log count) ** -4``, interpolated linearly and held constant beyond the ends.
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
    lib = counts.sum(axis=1) if lib_size is None else np.asarray(lib_size, dtype=np.float64).ravel()
    if lib.shape != (n,):
        raise ValueError(f"lib_size must have one value per sample ({n}), got shape {lib.shape}")
    loglib = np.log2(lib + 1)
    E = np.log2(counts + 0.5) - loglib[:, None] + np.log2(1e6)
    fit = lm_fit(E, X)
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
        return VoomResult(E, np.ones_like(E), lib, nanv, nanv.copy(), np.zeros(0), np.zeros(0), fit)
    sx = fit.amean + np.mean(loglib) - np.log2(1e6)
    sy = np.sqrt(fit.sigma)
    allzero = counts.sum(axis=0) == 0
    use = ~allzero
    lx, ly = lowess(sx[use], sy[use], f=span)
    # approxfun(l, rule = 2, ties = list("ordered", mean))
    xu, start = np.unique(lx, return_index=True)
    if xu.size < lx.size:
        counts_u = np.diff(np.append(start, lx.size))
        ly_u = np.add.reduceat(ly, start) / counts_u
    else:
        ly_u = ly
    fitted_values = X @ fit.coefficients
    fitted_logcount = fitted_values + loglib[:, None] - np.log2(1e6)
    trend = _interp_rule2(fitted_logcount, xu, ly_u)
    weights = 1.0 / trend**4
    sx_out = np.where(use, sx, np.nan)
    sy_out = np.where(use, sy, np.nan)
    return VoomResult(
        E=E, weights=weights, lib_size=lib, sx=sx_out, sy=sy_out, trend_x=lx, trend_y=ly, fit=fit
    )
