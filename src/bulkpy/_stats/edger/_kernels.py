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

from .._jit import inline, inner, kernel
from .._linalg import chol_solve, cholesky_inplace
from .._vmath import vdot, vexp, vlog, vsum
from ..deseq2._kernels import column_products

_LOW = 1e-10  # edgeR's low_value
_LOG_LOW = math.log(_LOW)
_MILDLY_LOW = 1e-8
_SUPREMELY_LOW = 1e-13
_RIDICULOUSLY_LOW = 1e-100


@inline
def unit_nb_deviance(y, mu, phi):
    """edgeR's ``compute_unit_nb_deviance`` (C++), one observation. Its three cases (Poisson-like
    ``phi < 1e-4``, huge ``mu * phi``, the NB form) are all evaluated and one is selected, with
    :func:`~bulkpy._stats._vmath.vlog`, so that a loop over samples is vectorised."""
    y = y + _MILDLY_LOW
    mu = mu + _MILDLY_LOW
    log_ratio = vlog(y / mu)
    resid = y - mu
    product = mu * phi
    inv = 1.0 / phi
    out = 2.0 * (y * log_ratio + (y + inv) * vlog((mu + inv) / (y + inv)))
    if product > 1e6:
        out = 2.0 * (resid / mu - log_ratio) * mu / (1.0 + product)
    if phi < 1e-4:
        # the C++ writes 2/3 in integer arithmetic, i.e. 0
        out = 2.0 * (y * log_ratio - resid - 0.5 * resid * resid * phi * (1.0 + phi * (0.0 * resid - y)))
    return out


@inner
def _off_row(off, g):
    """The offsets of gene ``g``: row ``g`` of a gene × sample matrix, or the one shared row."""
    return off[g] if off.shape[0] > 1 else off[0]


@inner
def _deviance_row(yg, mu, phi, n, u):
    """Sum over samples of the unit deviances of one gene (counts ``yg``); ``u`` is scratch space
    of ``n`` values (the unit deviances are computed in a vectorised loop, then summed by
    :func:`~bulkpy._stats._vmath.vsum`)."""
    for j in range(n):
        u[j] = unit_nb_deviance(yg[j], mu[j], phi)
    return vsum(u, n)


@inner
def _fill_mu(Xt, beta, off, n, p, mu):
    """``mu = exp(off + X beta)`` for one gene; ``Xt`` is the design transposed (coefficients ×
    samples), and the linear predictor adds the terms in coefficient order, as the C++ does."""
    for j in range(n):
        mu[j] = off[j]
    for k in range(p):
        bk = beta[k]
        for j in range(n):
            mu[j] += Xt[k, j] * bk
    for j in range(n):
        mu[j] = vexp(mu[j])


@inner
def _levenberg_one(yg, Xt, XX, off, phi, b, maxit, tol, mu, mu_new, beta_new, dl, dbeta, xwx, a, w, u):
    """One gene of ``glm_levenberg::fit`` (counts ``yg``); ``b`` holds the start and receives the
    estimate, ``mu`` the fitted values. Returns the deviance (``NaN`` coefficients for an
    all-zero gene). ``Xt`` is the design transposed and ``XX`` its column products
    (:func:`column_products`); ``w`` and ``u`` are scratch space of one value per sample."""
    p, n = Xt.shape
    ymax = 0.0
    for j in range(n):
        if yg[j] > ymax:
            ymax = yg[j]
    if ymax < _LOW:
        for k in range(p):
            b[k] = np.nan
        for j in range(n):
            mu[j] = 0.0
        return 0.0
    _fill_mu(Xt, b, off, n, p, mu)
    dev = _deviance_row(yg, mu, phi, n, u)
    max_info = -1.0
    lam = 0.0
    for it in range(1, maxit + 1):
        for j in range(n):
            den = 1.0 + mu[j] * phi
            w[j] = mu[j] / den
            u[j] = (yg[j] - mu[j]) / den
        for k in range(p):
            dl[k] = vdot(u, Xt[k], n)
        _fisher_info(XX, w, n, p, xwx)
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
            _fill_mu(Xt, beta_new, off, n, p, mu_new)
            dev_new = _deviance_row(yg, mu_new, phi, n, u)
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


@inner
def _fisher_info(XX, w, n, p, out):
    """``X'WX`` (``W = diag(w)``) from the column products ``XX`` of :func:`column_products`."""
    i = 0
    for r in range(p):
        for c in range(r + 1):
            out[r, c] = vdot(XX[i], w, n)
            out[c, r] = out[r, c]
            i += 1


@kernel
def levenberg_kernel_serial(y, X, off, disp, beta, maxit, tol, mu_out, dev_out):
    """edgeR's ``glm_levenberg::fit`` for every gene (rows of ``y``). ``beta`` (genes ×
    coefficients) holds the starting values and receives the estimates. One thread: the engines
    run it on chunks of genes in a thread pool (``deseq2._kernels.run_chunks``)."""
    G, n = y.shape
    p = X.shape[1]
    Xt = np.ascontiguousarray(X.T)
    XX = column_products(X)
    mu_new = np.empty(n)
    beta_new = np.empty(p)
    dl = np.empty(p)
    dbeta = np.empty(p)
    xwx = np.empty((p, p))
    a = np.empty((p, p))
    w = np.empty(n)
    u = np.empty(n)
    for g in range(G):
        dev_out[g] = _levenberg_one(
            y[g], Xt, XX, _off_row(off, g), disp[g], beta[g], maxit, tol, mu_out[g], mu_new, beta_new, dl, dbeta,
            xwx, a, w, u,
        )  # fmt: skip


@inner
def _one_way_gene(yg, off, fill_off, phi, order, bounds, start_g, maxit, tol, beta_g, mu_g, yo, oo, d1, d2):
    """One gene of :func:`one_way_kernel_serial` (counts ``yg``, offsets ``off``; log-means into
    ``beta_g``, fitted values into ``mu_g``). ``yo``/``oo`` receive the counts and offsets in
    group order (the offsets only with ``fill_off``: a shared row is ordered once per kernel call),
    so that each Newton step is a vectorised loop over a group's contiguous samples (``exp`` by
    :func:`~bulkpy._stats._vmath.vexp`, the score and information as eight-way sums); ``d1``/``d2``
    are scratch space."""
    for t in range(order.shape[0]):
        yo[t] = yg[order[t]]
    if fill_off:
        for t in range(order.shape[0]):
            oo[t] = off[order[t]]
    ng = bounds.size - 1
    for k in range(ng):
        lo = bounds[k]
        hi = bounds[k + 1]
        nonzero = False
        cur = start_g[k]
        if math.isnan(cur):
            cur = 0.0
            for t in range(lo, hi):
                if yo[t] > _LOW:
                    cur += yo[t] / math.exp(oo[t])
                    nonzero = True
            cur = math.log(cur / (hi - lo)) if nonzero else 0.0
        else:
            for t in range(lo, hi):
                if yo[t] > _LOW:
                    nonzero = True
                    break
        m = hi - lo
        if not nonzero:
            beta_g[k] = -np.inf
            _group_means(-1e8, oo[lo:hi], order[lo:hi], m, d1, mu_g)
            continue
        ys = yo[lo:hi]
        os = oo[lo:hi]
        for _ in range(maxit):
            for t in range(m):
                mu = vexp(cur + os[t])
                den = 1.0 + mu * phi
                d1[t] = (ys[t] - mu) / den
                d2[t] = mu / den
            step = vsum(d1, m) / vsum(d2, m)
            cur += step
            if abs(step) < tol:
                break
        beta_g[k] = cur
        _group_means(cur if not cur < -1e8 else -1e8, os, order[lo:hi], m, d1, mu_g)


@inner
def _group_means(b, os, idx, m, buf, mu_g):
    """``mu_g[idx[t]] = exp(os[t] + b)`` for ``t < m`` (a vectorised loop, then the scatter)."""
    for t in range(m):
        buf[t] = vexp(os[t] + b)
    for t in range(m):
        mu_g[idx[t]] = buf[t]


@kernel
def one_way_kernel_serial(y, off, disp, order, bounds, start, maxit, tol, beta_out, mu_out):
    """edgeR's ``glm_one_group`` (Newton-Raphson for one log-mean) for every gene and every group
    of a one-way layout: group ``k`` holds the samples ``order[bounds[k]:bounds[k + 1]]``. The
    start is ``log(mean(y / exp(offset)))`` over the positive counts unless ``start[g, k]`` is
    finite; all-zero groups give ``-inf``. ``mu_out`` receives the fitted values
    ``exp(offset + log-mean)``, the log-means floored at -1e8 (as ``mglmOneWay``)."""
    n = y.shape[1]
    yo = np.empty(n)
    oo = np.empty(n)
    d1 = np.empty(n)
    d2 = np.empty(n)
    per_gene = off.shape[0] > 1
    if not per_gene:
        for t in range(n):
            oo[t] = off[0, order[t]]
    for g in range(y.shape[0]):
        _one_way_gene(
            y[g], _off_row(off, g), per_gene, disp[g], order, bounds, start[g], maxit, tol, beta_out[g], mu_out[g],
            yo, oo, d1, d2,
        )  # fmt: skip


@kernel
def deviance_kernel_serial(y, mu, disp, out):
    """Residual deviance per gene: the sum of :func:`unit_nb_deviance` over samples."""
    n = y.shape[1]
    u = np.empty(n)
    for g in range(y.shape[0]):
        out[g] = _deviance_row(y[g], mu[g], disp[g], n, u)


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
    XX = column_products(X)
    a = np.empty((p, p))
    w = np.empty(n)
    u = np.empty(max(n, p))
    for g in range(G):
        out[g] = _apl_one(y[g], mu[g], disp, r, r_log_r, lg_r, XX, a, w, u, use_tables, t_yr, t_y1)


@inner
def _r_terms(disp):
    if disp > 0:
        r = 1.0 / disp
        return r, r * math.log(r), math.lgamma(r)
    return 0.0, 0.0, 0.0


@inner
def _apl_one(yg, mg, disp, r, r_log_r, lg_r, XX, a, w, u, use_tables, t_yr, t_y1):
    """One gene of ``compute_apl`` (counts ``yg``, fitted values ``mg``; ``r = 1 / disp`` and its
    terms precomputed; ``XX`` the design's column products, :func:`column_products`). The
    log-likelihood terms are computed in a vectorised loop (a zero mean gives a zero term, where
    the C code skips the observation) and summed by :func:`~bulkpy._stats._vmath.vsum`."""
    n = yg.shape[0]
    p = a.shape[0]
    for j in range(n):
        w[j] = mg[j] / (1.0 + disp * mg[j])
    if disp > 0:
        for j in range(n):
            m = mg[j]
            yy = yg[j]
            logmur = vlog(m + r)
            u[j] = yy * vlog(m) - yy * logmur + r_log_r - r * logmur
        # the lgamma terms in a loop of their own: vectorised gathers are slower than scalar loads
        if use_tables:
            for j in range(n):
                k = int(yg[j])
                u[j] = u[j] + t_yr[k] - t_y1[k] - lg_r if mg[j] != 0.0 else 0.0
        else:
            for j in range(n):
                yy = yg[j]
                u[j] = u[j] + math.lgamma(yy + r) - math.lgamma(yy + 1.0) - lg_r if mg[j] != 0.0 else 0.0
    else:
        for j in range(n):
            m = mg[j]
            yy = yg[j]
            term = yy * vlog(m) - m - math.lgamma(yy + 1.0)
            u[j] = term if m != 0.0 else 0.0
    ll = vsum(u, n)
    if p == 1:
        # as the C code: a one-column design is taken to be the intercept
        adj = vlog(abs(vsum(w, n))) / 2.0
    else:
        _fisher_info(XX, w, n, p, a)
        logd = 0.0
        for k in range(p - 1, -1, -1):
            dk = a[k, k]
            if not math.isfinite(dk) or dk < _LOW:
                logd += _LOG_LOW
            else:
                logd += vlog(dk)
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
