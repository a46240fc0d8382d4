"""Negative binomial GLM machinery of edgeR (3.40) that sva's ``ComBat_seq`` relies on.

Vectorised over genes. Unlike the public engines, these helpers take **genes × samples**
arrays (one row per gene, as edgeR does), because every quantity here is a per-gene fit.

* :func:`glm_fit` — edgeR's ``glmFit``: the one-way shortcut (``mglmOneWay`` /
  ``mglmOneGroup`` Fisher scoring) when the design is a one-way layout, else the
  Levenberg-damped Fisher scoring of ``mglmLevenberg``; with ``prior_count > 0`` the
  coefficients are those of ``predFC`` (refit after adding library-size-scaled prior counts).
* :func:`adjusted_profile_lik` — the Cox-Reid adjusted profile log-likelihood.
* :func:`common_dispersion` — ``estimateGLMCommonDisp`` (method "CoxReid": R's ``optimize``
  of the summed APL over ``dispersion^(1/4)`` in ``[0, 4^(1/4)]``).
* :func:`tagwise_dispersion` — ``estimateGLMTagwiseDisp`` as ComBat-seq calls it
  (``prior.df = 0``: each gene's own APL maximised by spline interpolation over the grid
  ``dispersion * 2^seq(-6, 6, length = 11)``).
* :func:`pnbinom` / :func:`qnbinom` — R's NB distribution and quantile functions
  (mean parametrisation), used by ComBat-seq's quantile matching.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from .._optimize import fmin

LOW_VALUE = 1e-10
LOG_LOW_VALUE = np.log(LOW_VALUE)
_DBL_EPS = np.finfo(float).eps


# --------------------------------------------------------------------------------------------
# deviance and likelihood


def unit_deviance(y, mu, phi):
    """edgeR's unit NB deviance (``compute_unit_nb_deviance``), elementwise.

    Poisson-like expansion for ``phi < 1e-4``, gamma limit for ``mu * phi > 1e6``; both
    arguments are offset by 1e-8 first. (The expansion's ``2/3`` is integer division in the C++
    source, i.e. zero; kept for agreement.)"""
    y = np.asarray(y, dtype=np.float64) + 1e-8
    mu = np.asarray(mu, dtype=np.float64) + 1e-8
    phi = np.broadcast_to(np.asarray(phi, dtype=np.float64), np.broadcast_shapes(np.shape(y), np.shape(mu)))
    y, mu = np.broadcast_arrays(y, mu)
    out = np.empty(y.shape)
    small = phi < 1e-4
    product = mu * phi
    large = ~small & (product > 1e6)
    mid = ~small & ~large
    if small.any():
        ys, ms, ps = y[small], mu[small], phi[small]
        r = ys - ms
        out[small] = 2 * (ys * np.log(ys / ms) - r - 0.5 * r * r * ps * (1 + ps * (0.0 * r - ys)))
    if large.any():
        yl, ml, pl = y[large], mu[large], product[large]
        out[large] = 2 * ((yl - ml) / ml - np.log(yl / ml)) * ml / (1 + pl)
    if mid.any():
        ym, mm = y[mid], mu[mid]
        inv = 1.0 / phi[mid]
        out[mid] = 2 * (ym * np.log(ym / mm) + (ym + inv) * np.log((mm + inv) / (ym + inv)))
    return out


def nb_deviance(y, mu, phi):
    """Residual deviance per gene (row sums of :func:`unit_deviance`)."""
    return unit_deviance(y, mu, phi).sum(axis=-1)


# --------------------------------------------------------------------------------------------
# small batched linear algebra (p is the number of coefficients, a handful)


def _cholesky_solve(a, b):
    """Solve ``a x = b`` for a stack of symmetric matrices by Cholesky (LAPACK ``dpotrf`` fails
    when a pivot is not positive or is NaN). Returns ``(x, ok)``; ``x`` is garbage where not ok."""
    m, p, _ = a.shape
    L = [[None] * p for _ in range(p)]
    ok = np.ones(m, dtype=bool)
    for j in range(p):
        s = a[:, j, j].copy()
        for k in range(j):
            s -= L[j][k] * L[j][k]
        good = s > 0  # False for NaN too
        ok &= good
        ljj = np.sqrt(np.where(good, s, 1.0))
        L[j][j] = ljj
        for i in range(j + 1, p):
            t = a[:, i, j].copy()
            for k in range(j):
                t -= L[i][k] * L[j][k]
            L[i][j] = t / ljj
    z = [None] * p
    for i in range(p):
        t = b[:, i].copy()
        for k in range(i):
            t -= L[i][k] * z[k]
        z[i] = t / L[i][i]
    x = [None] * p
    for i in range(p - 1, -1, -1):
        t = z[i].copy()
        for k in range(i + 1, p):
            t -= L[k][i] * x[k]
        x[i] = t / L[i][i]
    return np.column_stack(x), ok


def _xtwx(X, W):
    """``X' diag(w_g) X`` for every row ``w_g`` of ``W`` (genes × samples) → genes × p × p."""
    return np.matmul(X.T[None, :, :] * W[:, None, :], X)


def _ldl_upper_logdet_half(a):
    """Half the sum of log pivots of ``a = U D U'`` (LAPACK ``dsytrf`` with uplo "U", which
    eliminates from the last column; no interchanges are needed for the diagonally dominant
    ``X'WX`` of indicator designs). Pivots below 1e-10 or non-finite count as 1e-10, as edgeR."""
    m, p, _ = a.shape
    a = a.copy()
    logd = np.zeros(m)
    for k in range(p - 1, -1, -1):
        dk = a[:, k, k]
        bad = ~np.isfinite(dk) | (dk < LOW_VALUE)
        logd += np.where(bad, LOG_LOW_VALUE, np.log(np.where(bad, 1.0, dk)))
        if k == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where((dk != 0)[:, None], a[:, :k, k] / dk[:, None], 0.0)  # column k of U above the diagonal
        a[:, :k, :k] -= u[:, :, None] * u[:, None, :] * dk[:, None, None]
    return 0.5 * logd


# --------------------------------------------------------------------------------------------
# GLM fits


def _as_matrix(v, shape):
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 0:
        return np.full(shape, float(v))
    if v.ndim == 1:
        if v.shape[0] == shape[1]:
            return np.broadcast_to(v[None, :], shape)
        return np.broadcast_to(v[:, None], shape)
    return v


def fit_one_group(y, offset, disp, *, maxit: int = 50, tol: float = 1e-10):
    """edgeR's ``mglmOneGroup``: Fisher scoring for a single log-mean per gene.

    Starts from the log of the mean count/library-size ratio; each gene stops at its own
    convergence (``|step| < tol``). All-zero genes give ``-inf``."""
    y = np.asarray(y, dtype=np.float64)
    G, n = y.shape
    offset = _as_matrix(offset, y.shape)
    disp = _as_matrix(disp, y.shape)
    pos = y > LOW_VALUE
    nonzero = pos.any(axis=1)
    beta = np.full(G, -np.inf)
    poisson = np.all(disp == 0, axis=1)
    if poisson.any():
        sl = np.exp(offset[poisson]).sum(axis=1)
        sc = y[poisson].sum(axis=1)
        with np.errstate(divide="ignore"):
            beta[poisson] = np.log(sc / sl)
    nb = nonzero & ~poisson
    if not nb.any():
        return beta
    yy, oo, dd = y[nb], offset[nb], disp[nb]
    b = np.log(np.sum(np.where(yy > LOW_VALUE, yy / np.exp(oo), 0.0), axis=1) / n)
    active = np.ones(b.shape[0], dtype=bool)
    for _ in range(maxit):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        mu = np.exp(b[idx, None] + oo[idx])
        den = 1 + mu * dd[idx]
        dl = np.sum((yy[idx] - mu) / den, axis=1)
        info = np.sum(mu / den, axis=1)
        step = dl / info
        b[idx] += step
        active[idx[np.abs(step) < tol]] = False
    beta[nb] = b
    return beta


def _design_groups(design):
    """Group samples by identical design rows (edgeR's ``designAsFactor``); returns
    ``(codes, unique_rows)`` with groups ordered by first appearance."""
    _, first, codes = np.unique(design, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[np.asarray(codes).ravel()]
    return codes, design[np.sort(first)]


def is_one_way(design) -> bool:
    codes, uniq = _design_groups(np.asarray(design, dtype=np.float64))
    return uniq.shape[0] == design.shape[1]


def fit_one_way(y, design, offset, disp, *, maxit: int = 50, tol: float = 1e-10):
    """edgeR's ``mglmOneWay``: one :func:`fit_one_group` per group of identical design rows,
    betas floored at -1e8, fitted values ``exp(offset + beta_group)``, then coefficients by
    solving the representative design rows. Returns ``(coefficients G×p, fitted G×n)``."""
    y = np.asarray(y, dtype=np.float64)
    design = np.asarray(design, dtype=np.float64)
    offset = _as_matrix(offset, y.shape)
    disp = _as_matrix(disp, y.shape)
    codes, uniq = _design_groups(design)
    ng = uniq.shape[0]
    beta = np.empty((y.shape[0], ng))
    for g in range(ng):
        j = codes == g
        beta[:, g] = fit_one_group(y[:, j], offset[:, j], disp[:, j], maxit=maxit, tol=tol)
    beta = np.maximum(beta, -1e8)
    mu = np.exp(offset + beta[:, codes])
    indicator = np.sum(uniq == 1) == ng and np.sum(uniq == 0) == (ng - 1) * ng
    if indicator:
        coef = np.empty_like(beta)
        coef[:, np.argmax(uniq, axis=1)] = beta
    else:
        coef = np.linalg.solve(uniq, beta.T).T
    return coef, mu


def levenberg_start(y, design, offset, disp):
    """edgeR's default Levenberg starting values ("null" method): the least-squares solution of
    ``X beta = log(weighted mean of count/library size)`` for every sample."""
    y = np.asarray(y, dtype=np.float64)
    offset = _as_matrix(offset, y.shape)
    disp = _as_matrix(disp, y.shape)
    N = np.exp(offset)
    w = N / (1 + disp * N)
    with np.errstate(divide="ignore"):
        c = np.log(np.sum(y * w / N, axis=1) / np.sum(w, axis=1))
    v = np.linalg.lstsq(design, np.ones(design.shape[0]), rcond=None)[0]
    return c[:, None] * v[None, :]


def fit_levenberg(y, design, offset, disp, *, start=None, maxit: int = 250, tol: float = 1e-6):
    """edgeR's ``mglmLevenberg`` (C++ ``glm_levenberg::fit``), vectorised over genes.

    Fisher scoring with Levenberg damping: ``lambda`` starts at ``1e-6 * max(diag X'WX)``, a
    step is taken only if the deviance does not increase (else ``lambda`` doubles, failing
    beyond ``1e13 * max_info``), ``lambda`` shrinks tenfold after an undamped-enough step, and
    a gene stops when ``dl' dbeta < tol`` or its deviance is negligible. Every gene follows its
    own path exactly as the per-gene C++ loop. Returns ``(coefficients, fitted, deviance, iter, failed)``."""
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(design, dtype=np.float64)
    G, n = y.shape
    p = X.shape[1]
    offset = np.ascontiguousarray(_as_matrix(offset, y.shape))
    disp = np.ascontiguousarray(_as_matrix(disp, y.shape))
    beta = levenberg_start(y, X, offset, disp) if start is None else np.array(start, dtype=np.float64)
    ymax = y.max(axis=1)
    zero = ymax < LOW_VALUE
    mu = np.zeros((G, n))
    dev = np.zeros(G)
    iters = np.zeros(G, dtype=int)
    failed = np.zeros(G, dtype=bool)
    beta[zero] = np.nan
    live = ~zero
    mu[live] = np.exp(offset[live] + beta[live] @ X.T)
    dev[live] = nb_deviance(y[live], mu[live], disp[live])
    max_info = np.full(G, -1.0)
    lam = np.zeros(G)
    active = live.copy()
    it = 0
    while True:
        it += 1
        idx = np.flatnonzero(active)
        if idx.size == 0 or it > maxit:
            break
        iters[idx] = it
        yA, muA, dA = y[idx], mu[idx], disp[idx]
        den = 1 + muA * dA
        W = muA / den
        deriv = (yA - muA) / den
        xtwx = _xtwx(X, W)
        dl = deriv @ X
        diag = np.einsum("gii->gi", xtwx)
        max_info[idx] = np.maximum(max_info[idx], diag.max(axis=1))
        if it == 1:
            lam[idx] = np.maximum(max_info[idx] * 1e-6, 1e-13)
        # inner Levenberg loop, per gene
        m = idx.size
        inner = np.ones(m, dtype=bool)
        lev = np.zeros(m, dtype=int)
        low_dev = np.zeros(m, dtype=bool)
        fail_here = np.zeros(m, dtype=bool)
        dbeta_keep = np.zeros((m, p))
        eye = np.eye(p)
        while inner.any():
            k = np.flatnonzero(inner)
            lev[k] += 1
            gi = idx[k]
            # Cholesky with lambda on the diagonal; increase lambda tenfold until it works
            todo = np.ones(k.size, dtype=bool)
            dbeta = np.zeros((k.size, p))
            while todo.any():
                t = np.flatnonzero(todo)
                A = xtwx[k[t]] + lam[gi[t], None, None] * eye
                sol, ok = _cholesky_solve(A, dl[k[t]])
                dbeta[t[ok]] = sol[ok]
                todo[t[ok]] = False
                bad = t[~ok]
                if bad.size:
                    lam[gi[bad]] *= 10
                    lam[gi[bad]] = np.where(lam[gi[bad]] <= 0, 1e-100, lam[gi[bad]])
            dbeta_keep[k] = dbeta
            beta_new = beta[gi] + dbeta
            mu_new = np.exp(offset[gi] + beta_new @ X.T)
            dev_new = nb_deviance(y[gi], mu_new, disp[gi])
            low = dev_new / ymax[gi] < 1e-13
            accept = (dev_new <= dev[gi]) | low
            a = np.flatnonzero(accept)
            beta[gi[a]] = beta_new[a]
            mu[gi[a]] = mu_new[a]
            dev[gi[a]] = dev_new[a]
            low_dev[k[a]] = low[a]
            inner[k[a]] = False
            r = np.flatnonzero(~accept)
            if r.size:
                gr = gi[r]
                lam[gr] *= 2
                lam[gr] = np.where(lam[gr] <= 0, 1e-100, lam[gr])
                f = lam[gr] / max_info[gr] > 1e13
                fail_here[k[r[f]]] = True
                inner[k[r[f]]] = False
        failed[idx[fail_here]] = True
        divergence = np.sum(dl * dbeta_keep, axis=1)
        stop = fail_here | low_dev | (divergence < tol)
        shrink = ~stop & (lev == 1)
        lam[idx[shrink]] /= 10
        active[idx[stop]] = False
    return beta, mu, dev, iters, failed


def add_prior_count(y, offset, prior_count):
    """edgeR's ``addPriorCount``: add ``prior_count * lib / mean(lib)`` to each count and twice
    that to each library size (per gene when the offset is a matrix)."""
    y = np.asarray(y, dtype=np.float64)
    offset = _as_matrix(offset, y.shape)
    lib = np.exp(offset)
    ave = lib.mean(axis=1, keepdims=True)
    adj = prior_count * lib / ave
    return y + adj, np.log(lib + 2 * adj)


def glm_fit(y, design, disp, offset, *, prior_count: float = 0.0):
    """edgeR's ``glmFit.default`` (no weights). Returns ``(coefficients, fitted, method)``;
    with ``prior_count > 0`` the coefficients are the ``predFC`` ones (fitted values stay
    those of the unshrunk fit), exactly as edgeR reports them."""
    y = np.asarray(y, dtype=np.float64)
    design = np.asarray(design, dtype=np.float64)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError("design matrix not of full rank")
    disp = _as_matrix(disp, y.shape)
    offset = _as_matrix(offset, y.shape)

    def fit(yy, off):
        if is_one_way(design):
            coef, mu = fit_one_way(yy, design, off, disp)
            return coef, mu, "oneway"
        coef, mu, *_ = fit_levenberg(yy, design, off, disp)
        return coef, mu, "levenberg"

    coef, mu, method = fit(y, offset)
    if prior_count > 0:
        y2, off2 = add_prior_count(y, offset, prior_count)
        c2, _, _ = fit(y2, off2)
        coef = (c2 / np.log(2)) * np.log(2)
    return coef, mu, method


def adjusted_profile_lik(disp, y, design, offset):
    """Cox-Reid adjusted profile log-likelihood per gene (edgeR's ``adjustedProfileLik``)."""
    y = np.asarray(y, dtype=np.float64)
    design = np.asarray(design, dtype=np.float64)
    disp = _as_matrix(disp, y.shape)
    _, mu, _ = glm_fit(y, design, disp, offset)
    pos = mu != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 1.0 / disp
        logmur = np.log(mu + r)
        ll_nb = y * np.log(mu) - y * logmur + r * np.log(r) - r * logmur + special.gammaln(y + r) - special.gammaln(y + 1) - special.gammaln(r)
        ll_po = y * np.log(mu) - mu - special.gammaln(y + 1)
    ll = np.where(disp > 0, ll_nb, ll_po)
    loglik = np.sum(np.where(pos, ll, 0.0), axis=1)
    W = np.where(pos, mu / (1 + disp * mu), 0.0)
    if design.shape[1] == 1:
        with np.errstate(divide="ignore"):
            adj = np.log(np.abs(W.sum(axis=1))) / 2
    else:
        xtwx = _xtwx(design, W)
        adj = _ldl_upper_logdet_half(xtwx)
    return loglik - adj


# --------------------------------------------------------------------------------------------
# dispersion estimation


def common_dispersion(y, design=None, offset=None, *, interval=(0.0, 4.0), tol: float = 1e-5, min_row_sum: float = 5):
    """edgeR's ``estimateGLMCommonDisp`` (CoxReid): maximise the APL summed over genes with a
    row sum of at least ``min_row_sum``, over ``dispersion^(1/4)``. ``y`` is genes × samples;
    ``offset`` defaults to the log column sums."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[1]
    design = np.ones((n, 1)) if design is None else np.asarray(design, dtype=np.float64)
    if design.shape[1] >= n:
        raise ValueError("no residual degrees of freedom for the common dispersion")
    if offset is None:
        offset = np.log(y.sum(axis=0))
    offset = _as_matrix(offset, y.shape)
    keep = y.sum(axis=1) >= min_row_sum
    if not keep.any():
        raise ValueError("no data rows with required number of counts")
    yk, ok = y[keep], offset[keep]

    def neg(par):
        return -float(np.sum(adjusted_profile_lik(par**4, yk, design, ok)))

    lo, hi = interval[0] ** 0.25, interval[1] ** 0.25
    return fmin(neg, lo, hi, tol) ** 4


def fmm_spline(x, y):
    """Forsythe-Malcolm-Moler cubic spline coefficients (R's ``spline(method = "fmm")``),
    for one abscissa vector and many ordinate rows. Returns ``(b, c, d)``, each like ``y``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    m = y.shape[0]
    b = np.zeros((m, n))
    c = np.zeros((m, n))
    d = np.zeros((m, n))
    # 0-based translation of the classical algorithm
    dx = np.diff(x)
    d[:, 0] = dx[0]
    c[:, 1] = (y[:, 1] - y[:, 0]) / dx[0]
    for i in range(1, n - 1):
        d[:, i] = dx[i]
        b[:, i] = 2.0 * (d[:, i - 1] + d[:, i])
        c[:, i + 1] = (y[:, i + 1] - y[:, i]) / d[:, i]
        c[:, i] = c[:, i + 1] - c[:, i]
    b[:, 0] = -d[:, 0]
    b[:, n - 1] = -d[:, n - 2]
    c[:, 0] = 0.0
    c[:, n - 1] = 0.0
    if n > 3:
        c[:, 0] = c[:, 2] / (x[3] - x[1]) - c[:, 1] / (x[2] - x[0])
        c[:, n - 1] = c[:, n - 2] / (x[n - 1] - x[n - 3]) - c[:, n - 3] / (x[n - 2] - x[n - 4])
        c[:, 0] = c[:, 0] * d[:, 0] * d[:, 0] / (x[3] - x[0])
        c[:, n - 1] = -c[:, n - 1] * d[:, n - 2] * d[:, n - 2] / (x[n - 1] - x[n - 4])
    for i in range(1, n):
        t = d[:, i - 1] / b[:, i - 1]
        b[:, i] = b[:, i] - t * d[:, i - 1]
        c[:, i] = c[:, i] - t * c[:, i - 1]
    c[:, n - 1] = c[:, n - 1] / b[:, n - 1]
    for i in range(n - 2, -1, -1):
        c[:, i] = (c[:, i] - d[:, i] * c[:, i + 1]) / b[:, i]
    b[:, n - 1] = (y[:, n - 1] - y[:, n - 2]) / d[:, n - 2] + d[:, n - 2] * (c[:, n - 2] + 2.0 * c[:, n - 1])
    for i in range(n - 1):
        b[:, i] = (y[:, i + 1] - y[:, i]) / d[:, i] - d[:, i] * (c[:, i + 1] + 2.0 * c[:, i])
        d[:, i] = (c[:, i + 1] - c[:, i]) / d[:, i]
        c[:, i] = 3.0 * c[:, i]
    c[:, n - 1] = 3.0 * c[:, n - 1]
    d[:, n - 1] = d[:, n - 2]
    return b, c, d


def maximize_interpolant(x, y):
    """edgeR's ``maximizeInterpolant``: the maximiser of the FMM spline through each row of ``y``,
    looked for in the two segments beside the largest grid value."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m, n = y.shape
    b, c, d = fmm_spline(x, y)
    at = np.argmax(y, axis=1)  # first maximum, like the C++ loop (NaN aside)
    rows = np.arange(m)
    best = y[rows, at].copy()
    xmax = x[at].copy()
    for side in (-1, 0):  # left segment starts at at-1, right segment at at
        seg = at + side
        ok = (seg >= 0) & (seg <= n - 2)
        s = np.where(ok, seg, 0)
        A = 3 * d[rows, s]
        B = 2 * c[rows, s]
        C = b[rows, s]
        disc = B * B - 4 * A * C
        with np.errstate(invalid="ignore", divide="ignore"):
            sol = -B / (2 * A) - np.sqrt(disc) / (2 * A)
        width = x[s + 1] - x[s]
        use = ok & (disc >= 0) & (sol > 0) & (sol < width)
        with np.errstate(invalid="ignore"):
            val = ((d[rows, s] * sol + c[rows, s]) * sol + b[rows, s]) * sol + y[rows, s]
        better = use & (val > best)
        best = np.where(better, val, best)
        xmax = np.where(better, sol + x[s], xmax)
    return xmax


def tagwise_dispersion(y, design, dispersion, offset=None, *, min_row_sum: float = 5, grid_npts: int = 11, grid_range=(-6.0, 6.0)):
    """``estimateGLMTagwiseDisp`` with ``prior.df = 0`` (as ComBat-seq calls it): each gene's
    APL on the grid ``dispersion * 2^k`` is interpolated by a spline and maximised. Genes with a
    row sum below ``min_row_sum`` keep ``dispersion``."""
    y = np.asarray(y, dtype=np.float64)
    G, n = y.shape
    design = np.asarray(design, dtype=np.float64)
    if design.shape[1] >= n:
        raise ValueError("no residual degrees of freedom for the tagwise dispersion")
    if offset is None:
        offset = np.log(y.sum(axis=0))
    offset = _as_matrix(offset, y.shape)
    disp = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), (G,)).copy()
    use = y.sum(axis=1) >= min_row_sum
    if not use.any():
        return disp
    yu, ou, du = y[use], offset[use], disp[use]
    pts = np.linspace(grid_range[0], grid_range[1], grid_npts)
    apl = np.empty((yu.shape[0], grid_npts))
    for i, k in enumerate(pts):
        apl[:, i] = adjusted_profile_lik(du * 2.0**k, yu, design, ou)
    dmax = maximize_interpolant(pts, apl)
    disp[use] = du * 2.0**dmax
    return disp


# --------------------------------------------------------------------------------------------
# NB distribution in R's mean parametrisation


def pnbinom(q, size, mu):
    """R's ``pnbinom(q, size = size, mu = mu)`` (lower tail), via the regularised incomplete beta."""
    q = np.floor(np.asarray(q, dtype=np.float64) + 1e-7)
    size = np.asarray(size, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    prob = size / (size + mu)
    out = special.betainc(size, q + 1.0, prob)
    return np.where(q < 0, 0.0, out)


def qnbinom(p, size, mu, *, max_steps: int = 10_000):
    """R's ``qnbinom(p, size = size, mu = mu)``: the smallest integer y >= 0 with
    ``pnbinom(y) >= p * (1 - 8 eps)`` (R 4.x's fuzz for left continuity)."""
    p, size, mu = np.broadcast_arrays(
        np.asarray(p, dtype=np.float64), np.asarray(size, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    )
    out = np.zeros(p.shape)
    target = p * (1 - 8 * _DBL_EPS)
    inf = p >= 1
    zero = (mu == 0) | (size == 0) | (p <= 0)
    work = ~inf & ~zero
    if work.any():
        t, s, m = target[work], size[work], mu[work]
        prob = s / (s + m)
        # start from boost's quantile (scipy), then unit steps on the distribution function
        with np.errstate(all="ignore"):
            y = stats.nbinom.ppf(t, s, prob)
        y = np.where(np.isfinite(y) & (y > 0), y, 0.0)
        idx = np.arange(y.size)
        for _ in range(max_steps):  # move right while F(y) < p
            up = special.betainc(s[idx], y[idx] + 1.0, prob[idx]) < t[idx]
            idx = idx[up]
            if idx.size == 0:
                break
            y[idx] += 1.0
        idx = np.flatnonzero(y > 0)
        for _ in range(max_steps):  # move left while F(y - 1) >= p
            down = special.betainc(s[idx], y[idx], prob[idx]) >= t[idx]
            idx = idx[down]
            if idx.size == 0:
                break
            y[idx] -= 1.0
            idx = idx[y[idx] > 0]
        out[work] = y
    out[inf] = np.inf
    return out
