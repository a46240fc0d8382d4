"""Compiled per-gene kernels (numba) for edgeR's negative binomial GLM fits.

Each kernel loops over the genes it is given inside compiled code (no Python loop per gene),
on one thread (the engines run it on chunks of genes in a thread pool, ``run_chunks``), and
follows edgeR's C++ per gene: the same start, damping, acceptance
and stopping rules, so every gene takes the same path as in edgeR. Genes are independent, so
the results do not depend on the block or on the number of threads.

Counts are genes × samples (C order); offsets are a 2-d array with one row shared by every gene
(``log`` effective library sizes, as in a DGEList) or one row per gene (a gene × sample offset
matrix, ``y$offset``); dispersions are one value per gene.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import inner, kernel
from .._linalg import chol_solve, cholesky_inplace

_LOW = 1e-10  # edgeR's low_value
_LOG_LOW = math.log(_LOW)
_MILDLY_LOW = 1e-8
_SUPREMELY_LOW = 1e-13
_RIDICULOUSLY_LOW = 1e-100


@inner
def unit_nb_deviance(y, mu, phi):
    """edgeR's ``compute_unit_nb_deviance`` (C++), one observation."""
    y = y + _MILDLY_LOW
    mu = mu + _MILDLY_LOW
    if phi < 1e-4:
        resid = y - mu
        # the C++ writes 2/3 in integer arithmetic, i.e. 0
        return 2.0 * (
            y * math.log(y / mu) - resid - 0.5 * resid * resid * phi * (1.0 + phi * (0.0 * resid - y))
        )
    product = mu * phi
    if product > 1e6:
        return 2.0 * ((y - mu) / mu - math.log(y / mu)) * mu / (1.0 + product)
    inv = 1.0 / phi
    return 2.0 * (y * math.log(y / mu) + (y + inv) * math.log((mu + inv) / (y + inv)))


@inner
def _off_row(off, g):
    """The offsets of gene ``g``: row ``g`` of a gene × sample matrix, or the one shared row."""
    return off[g] if off.shape[0] > 1 else off[0]


@inner
def _deviance_row(y, g, mu, phi, n):
    d = 0.0
    for j in range(n):
        d += unit_nb_deviance(y[g, j], mu[j], phi)
    return d


@inner
def _fill_mu(X, beta, off, n, p, mu):
    for j in range(n):
        eta = off[j]
        for k in range(p):
            eta += X[j, k] * beta[k]
        mu[j] = math.exp(eta)


@inner
def _levenberg_one(y, g, X, off, phi, b, maxit, tol, mu, mu_new, beta_new, dl, dbeta, xwx, a, w):
    """One gene of ``glm_levenberg::fit``; ``b`` holds the start and receives the estimate, ``mu``
    the fitted values. Returns the deviance (``NaN`` coefficients for an all-zero gene)."""
    n, p = X.shape
    ymax = 0.0
    for j in range(n):
        if y[g, j] > ymax:
            ymax = y[g, j]
    if ymax < _LOW:
        for k in range(p):
            b[k] = np.nan
        for j in range(n):
            mu[j] = 0.0
        return 0.0
    _fill_mu(X, b, off, n, p, mu)
    dev = _deviance_row(y, g, mu, phi, n)
    max_info = -1.0
    lam = 0.0
    for it in range(1, maxit + 1):
        for k in range(p):
            dl[k] = 0.0
        for j in range(n):
            den = 1.0 + mu[j] * phi
            w[j] = mu[j] / den
            deriv = (y[g, j] - mu[j]) / den
            for k in range(p):
                dl[k] += X[j, k] * deriv
        for r in range(p):
            for c in range(p):
                xwx[r, c] = 0.0
        for j in range(n):
            wj = w[j]
            for r in range(p):
                xr = X[j, r] * wj
                for c in range(r + 1):
                    xwx[r, c] += xr * X[j, c]
        for r in range(p):
            for c in range(r):
                xwx[c, r] = xwx[r, c]
        for r in range(p):
            if xwx[r, r] > max_info:
                max_info = xwx[r, r]
        if it == 1:
            lam = max_info * 1e-6
            if lam < _SUPREMELY_LOW:
                lam = _SUPREMELY_LOW
        lev = 0
        low_dev = False
        failed = False
        while True:
            lev += 1
            while True:
                for r in range(p):
                    for c in range(p):
                        a[r, c] = xwx[r, c]
                    a[r, r] += lam
                if cholesky_inplace(a, p):  # False where LAPACK's dpotrf fails, NaN included
                    break
                lam *= 10.0
                if lam <= 0.0:
                    lam = _RIDICULOUSLY_LOW
            chol_solve(a, dl, p, dbeta)
            for k in range(p):
                beta_new[k] = b[k] + dbeta[k]
            _fill_mu(X, beta_new, off, n, p, mu_new)
            dev_new = _deviance_row(y, g, mu_new, phi, n)
            if dev_new / ymax < _SUPREMELY_LOW:
                low_dev = True
            if dev_new <= dev or low_dev:
                for k in range(p):
                    b[k] = beta_new[k]
                for j in range(n):
                    mu[j] = mu_new[j]
                dev = dev_new
                break
            lam *= 2.0
            if lam <= 0.0:
                lam = _RIDICULOUSLY_LOW
            if lam / max_info > 1.0 / _SUPREMELY_LOW:
                failed = True
                break
        if failed or low_dev:
            break
        divergence = 0.0
        for k in range(p):
            divergence += dl[k] * dbeta[k]
        if divergence < tol:
            break
        if lev == 1:
            lam /= 10.0
    return dev


@kernel
def levenberg_kernel_serial(y, X, off, disp, beta, maxit, tol, mu_out, dev_out):
    """edgeR's ``glm_levenberg::fit`` for every gene (rows of ``y``). ``beta`` (genes ×
    coefficients) holds the starting values and receives the estimates. One thread: the engines
    run it on chunks of genes in a thread pool (``deseq2._kernels.run_chunks``)."""
    G, n = y.shape
    p = X.shape[1]
    mu_new = np.empty(n)
    beta_new = np.empty(p)
    dl = np.empty(p)
    dbeta = np.empty(p)
    xwx = np.empty((p, p))
    a = np.empty((p, p))
    w = np.empty(n)
    for g in range(G):
        dev_out[g] = _levenberg_one(
            y, g, X, _off_row(off, g), disp[g], beta[g], maxit, tol, mu_out[g], mu_new, beta_new, dl, dbeta, xwx,
            a, w,
        )  # fmt: skip


@inner
def _one_way_gene(y, g, off, phi, order, bounds, start, maxit, tol, beta_out):
    ng = bounds.size - 1
    for k in range(ng):
        lo = bounds[k]
        hi = bounds[k + 1]
        nonzero = False
        cur = start[g, k]
        if math.isnan(cur):
            cur = 0.0
            for t in range(lo, hi):
                j = order[t]
                if y[g, j] > _LOW:
                    cur += y[g, j] / math.exp(off[j])
                    nonzero = True
            cur = math.log(cur / (hi - lo)) if nonzero else 0.0
        else:
            for t in range(lo, hi):
                if y[g, order[t]] > _LOW:
                    nonzero = True
                    break
        if not nonzero:
            beta_out[g, k] = -np.inf
            continue
        for _ in range(maxit):
            dl = 0.0
            info = 0.0
            for t in range(lo, hi):
                j = order[t]
                m = math.exp(cur + off[j])
                den = 1.0 + m * phi
                dl += (y[g, j] - m) / den
                info += m / den
            step = dl / info
            cur += step
            if abs(step) < tol:
                break
        beta_out[g, k] = cur


@kernel
def one_way_kernel_serial(y, off, disp, order, bounds, start, maxit, tol, beta_out):
    """edgeR's ``glm_one_group`` (Newton-Raphson for one log-mean) for every gene and every group
    of a one-way layout: group ``k`` holds the samples ``order[bounds[k]:bounds[k + 1]]``. The
    start is ``log(mean(y / exp(offset)))`` over the positive counts unless ``start[g, k]`` is
    finite; all-zero groups give ``-inf``."""
    for g in range(y.shape[0]):
        _one_way_gene(y, g, _off_row(off, g), disp[g], order, bounds, start, maxit, tol, beta_out)


@inner
def _deviance_gene(y, mu, g, phi):
    d = 0.0
    for j in range(y.shape[1]):
        d += unit_nb_deviance(y[g, j], mu[g, j], phi)
    return d


@kernel
def deviance_kernel_serial(y, mu, disp, out):
    """Residual deviance per gene: the sum of :func:`unit_nb_deviance` over samples."""
    for g in range(y.shape[0]):
        out[g] = _deviance_gene(y, mu, g, disp[g])


@kernel
def count_marks(y, top, mark):
    """Mark ``mark[k]`` for every count ``k`` in ``y``; False (marks unusable) if a value is not
    an integer in ``[0, top)``."""
    for g in range(y.shape[0]):
        for j in range(y.shape[1]):
            v = y[g, j]
            if v >= 0.0 and v < top and v == math.floor(v):
                mark[int(v)] = True
            else:
                return False
    return True


@kernel
def lgamma_tables(mark, r, t_yr, t_y1):
    """``lgamma(k + r)`` and ``lgamma(k + 1)`` at the marked counts ``k``."""
    for k in range(mark.shape[0]):
        if mark[k]:
            t_yr[k] = math.lgamma(k + r)
            t_y1[k] = math.lgamma(k + 1.0)


@kernel
def apl_kernel_serial(y, mu, disp, X, use_tables, t_yr, t_y1, out):
    """edgeR's ``compute_apl`` for one dispersion ``disp`` (a number) and every gene: the NB
    log-likelihood at the fitted means (terms with a zero mean skipped) minus half the log
    determinant of ``X'WX``, from the pivots of its LDL' factorisation eliminating from the last
    column (pivots below 1e-10 or not finite count as 1e-10). With ``use_tables`` the counts are
    integers and ``lgamma(y + 1/disp)``, ``lgamma(y + 1)`` are read from ``t_yr``/``t_y1``
    (:func:`lgamma_tables`: the same values, evaluated once per distinct count)."""
    G, n = y.shape
    p = X.shape[1]
    r, r_log_r, lg_r = _r_terms(disp)
    a = np.empty((p, p))
    w = np.empty(n)
    u = np.empty(p)
    for g in range(G):
        out[g] = _apl_one(y, mu, g, disp, r, r_log_r, lg_r, X, a, w, u, use_tables, t_yr, t_y1)


@inner
def _r_terms(disp):
    if disp > 0:
        r = 1.0 / disp
        return r, r * math.log(r), math.lgamma(r)
    return 0.0, 0.0, 0.0


@inner
def _apl_one(y, mu, g, disp, r, r_log_r, lg_r, X, a, w, u, use_tables, t_yr, t_y1):
    """One gene of ``compute_apl`` (``r = 1 / disp`` and its terms precomputed)."""
    n, p = X.shape
    ll = 0.0
    for j in range(n):
        m = mu[g, j]
        yy = y[g, j]
        w[j] = m / (1.0 + disp * m)
        if m == 0.0:
            continue
        if disp > 0:
            logmur = math.log(m + r)
            if use_tables:
                lg_yr = t_yr[int(yy)]
                lg_y1 = t_y1[int(yy)]
            else:
                lg_yr = math.lgamma(yy + r)
                lg_y1 = math.lgamma(yy + 1.0)
            ll += yy * math.log(m) - yy * logmur + r_log_r - r * logmur + lg_yr - lg_y1 - lg_r
        else:
            ll += yy * math.log(m) - m - math.lgamma(yy + 1.0)
    if p == 1:
        s = 0.0
        for j in range(n):
            s += w[j]  # as the C++: a one-column design is taken to be the intercept
        adj = math.log(abs(s)) / 2.0
    else:
        for rr in range(p):
            for c in range(rr + 1):
                s = 0.0
                for j in range(n):
                    s += X[j, rr] * X[j, c] * w[j]
                a[rr, c] = s
                a[c, rr] = s
        logd = 0.0
        for k in range(p - 1, -1, -1):
            dk = a[k, k]
            if not math.isfinite(dk) or dk < _LOW:
                logd += _LOG_LOW
            else:
                logd += math.log(dk)
            if k == 0:
                break
            for i in range(k):
                u[i] = a[i, k] / dk if dk != 0.0 else 0.0
            for i in range(k):
                for jj in range(k):
                    a[i, jj] -= u[i] * u[jj] * dk
        adj = 0.5 * logd
    return ll - adj


# --------------------------------------------------------------------------------------------
# exactTestDoubleTail
# --------------------------------------------------------------------------------------------


@inner
def _log_dnbinom(x, size, mu):
    """log of R's ``dnbinom(x, size = size, mu = mu)`` for a whole number ``x >= 0``."""
    lp = -size * math.log1p(mu / size)
    if x == 0.0:
        return lp
    return (
        lp + math.lgamma(x + size) - math.lgamma(size) - math.lgamma(x + 1.0) + x * math.log(mu / (size + mu))
    )


@kernel
def double_tail_kernel(s1, s2, n1, n2, disp, use, p):
    """edgeR's ``exactTestDoubleTail`` for the genes with ``use``: ``p[g]`` becomes twice the
    probability of a split of the total ``s = s1 + s2`` at least as far from its expectation, on
    the observed side, under NB(size ``n_k / disp``, mean ``n_k s / (n1 + n2)``) per group, over
    the probability of ``s``; summed in log space. Genes at their expected split keep ``p``."""
    for g in range(s1.size):
        if not use[g]:
            continue
        s = s1[g] + s2[g]
        mu = s / (n1 + n2)
        mu1 = n1 * mu
        mu2 = n2 * mu
        if s1[g] < mu1:
            lo, hi = 0.0, s1[g]
        elif s1[g] > mu1:
            lo, hi = s1[g], s
        else:
            continue
        phi = disp[g]
        size1 = n1 / phi
        size2 = n2 / phi
        m = -np.inf
        acc = 0.0
        x = lo
        while x <= hi:
            v = _log_dnbinom(x, size1, mu1) + _log_dnbinom(s - x, size2, mu2)
            if v > m:
                acc = acc * math.exp(m - v) + 1.0
                m = v
            else:
                acc += math.exp(v - m)
            x += 1.0
        p[g] = 2.0 * math.exp(m + math.log(acc) - _log_dnbinom(s, (n1 + n2) / phi, s))
