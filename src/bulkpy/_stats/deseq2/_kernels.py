"""Compiled per-gene kernels (numba) shared by the negative binomial engines.

Each kernel loops over the genes of a block inside compiled code (no Python loop per gene) and
solves one small problem per gene: p × p systems by Cholesky, the negative binomial density by
R's saddle-point formula, digamma by recurrence and asymptotic series. Kernels are deterministic
and independent across genes, so any block of genes gives the same per-gene answers.

The ``*_par`` wrappers split the genes into contiguous chunks and run the serial kernel on the
chunks in a thread pool (the kernels release the GIL; ``numba.set_num_threads`` /
``NUMBA_NUM_THREADS`` choose how many threads); every gene is computed by the same serial code, so
the results do not depend on the thread count.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .._jit import inner, kernel
from .._linalg import chol_inverse, chol_solve, cholesky_inplace
from .._vmath import vlog1p, vsum

_LN_2PI = math.log(2.0 * math.pi)
_LN_SQRT_2PI = 0.5 * _LN_2PI
_LARGE = 30.0

# stirlerr(n) = log(n!) - log(sqrt(2 pi n) (n/e)^n) at n = 0, 0.5, ..., 15 (computed in 50-digit
# decimal arithmetic)
SFERR_HALVES = np.array(
    [
        0.0, 0.15342640972002736, 0.08106146679532726, 0.05481412105191765, 0.0413406959554093,
        0.03316287351993629, 0.02767792568499834, 0.023746163656297496, 0.020790672103765093,
        0.018488450532673187, 0.016644691189821193, 0.015134973221917378, 0.013876128823070748,
        0.012810465242920227, 0.01189670994589177, 0.011104559758206917, 0.010411265261972096,
        0.009799416126158804, 0.009255462182712733, 0.008768700134139386, 0.00833056343336287,
        0.00793411456431402, 0.007573675487951841, 0.007244554301320383, 0.00694284010720953,
        0.006665247032707682, 0.006408994188004207, 0.006171712263039458, 0.0059513701127588475,
        0.0057462165130101155, 0.005554733551962801,
    ]
)  # fmt: skip


@kernel
def stirlerr(n):
    """Error of Stirling's approximation to log(n!) (R's ``stirlerr``, R <= 4.3)."""
    if n <= 15.0:
        nn = n + n
        if nn == math.floor(nn):
            return SFERR_HALVES[int(nn)]
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _LN_SQRT_2PI
    nn = n * n
    s0 = 1.0 / 12.0
    s1 = 1.0 / 360.0
    s2 = 1.0 / 1260.0
    s3 = 1.0 / 1680.0
    s4 = 1.0 / 1188.0
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


@inner
def bd0(x, np_):
    """``x log(x/np) + np - x`` without cancellation (R's ``bd0``)."""
    if abs(x - np_) < 0.1 * (x + np_):
        v = (x - np_) / (x + np_)
        s = (x - np_) * v
        if abs(s) < 2.2250738585072014e-308:
            return s
        ej = 2.0 * x * v
        v = v * v
        for j in range(1, 1000):
            ej *= v
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
    return x * math.log(x / np_) + np_ - x


@inner
def nb_logpmf1(y, mu, alpha):
    """log dnbinom(y, mu=mu, size=1/alpha) as R's ``dnbinom_mu`` (y a non-negative integer)."""
    size = 1.0 / alpha
    if y == 0.0:
        if size < mu:
            return size * math.log(size / (size + mu))
        return size * math.log1p(-mu / (size + mu))
    if y < 1e-10 * size:
        if size < mu:
            p = math.log(size / (1.0 + size / mu))
        else:
            p = math.log(mu / (1.0 + mu / size))
        return y * p - mu - math.lgamma(y + 1.0) + math.log1p(y * (y - 1.0) / (2.0 * size))
    n = size + y
    pp = size / (size + mu)
    qq = mu / (size + mu)
    lc = stirlerr(n) - stirlerr(size) - stirlerr(y) - bd0(size, n * pp) - bd0(y, n * qq)
    lf = _LN_2PI + math.log(size) + math.log1p(-size / n)
    return math.log(size / n) + lc - 0.5 * lf


@kernel
def nb_logpmf_flat(y, mu, alpha, out):
    for i in range(y.shape[0]):
        out[i] = nb_logpmf1(y[i], mu[i], alpha[i])


_ALGMCS = np.array(
    [
        +0.1666389480451863247205729650822e0,
        -0.1384948176067563840732986059135e-4,
        +0.9810825646924729426157171547487e-8,
        -0.1809129475572494194263306266719e-10,
        +0.6221098041892605227126015543416e-13,
    ]
)


@inner
def lgamma_large(x):
    """log Gamma(x) for x > 10 by R's formulas (the Stirling remainder as SLATEC's ``d9lgmc``),
    with the C library's logarithm so that the large-argument rounding, which dominates
    DESeq2's log posterior at tiny dispersions, is the same as in R. The cases are selected
    rather than branched to, in the loop that fills the lgamma cache."""
    lx = math.log(x)
    tmp = 10.0 / x
    twox = (tmp * tmp * 2.0 - 1.0) * 2.0
    b0 = 0.0
    b1 = 0.0
    b2 = 0.0
    for i in range(1, 6):
        b2 = b1
        b1 = b0
        b0 = twox * b1 - b2 + _ALGMCS[5 - i]
    cor = (b0 - b2) * 0.5 / x
    if x >= 94906265.62425156:
        cor = 1.0 / (x * 12.0)
    out = _LN_SQRT_2PI + (x - 0.5) * lx - x + cor
    if x > 4934720.0:
        out = _LN_SQRT_2PI + (x - 0.5) * lx - x
    if x > 1e17:
        out = x * (lx - 1.0)
    return out


@inner
def lgamma_r(x):
    """log Gamma(x) for x > 0: the C library's below 10, :func:`lgamma_large` above."""
    if x <= 10.0:
        return math.lgamma(x)
    return lgamma_large(x)


@inner
def lgamma_r_into(x0, u, k, out):
    """``out[q] = lgamma_r(x0 + u[q])`` for ``q < k``: one pass of :func:`lgamma_large`, then
    the C library's lgamma where the argument is 10 or less (faster than branching per value)."""
    for q in range(k):
        out[q] = lgamma_large(u[q] + x0)
    for q in range(k):
        x = u[q] + x0
        if x <= 10.0:
            out[q] = math.lgamma(x)


@kernel
def digamma(x):
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series."""
    r = 0.0
    while x < 6.0:
        r -= 1.0 / x
        x += 1.0
    return r + _digamma_series(x)


@inner
def digamma_into(x0, u, k, out):
    """``out[q] = digamma(x0 + u[q])`` for ``q < k``: one pass of the series, then the
    recurrence where the argument is below 6 (faster than branching per value)."""
    for q in range(k):
        out[q] = _digamma_series(u[q] + x0)
    for q in range(k):
        x = u[q] + x0
        if x < 6.0:
            out[q] = digamma(x)


@inner
def _digamma_series(x):
    """The asymptotic series of psi(x), for x >= 6."""
    f = 1.0 / (x * x)
    t = f * (
        -1.0 / 12.0
        + f
        * (
            1.0 / 120.0
            + f * (-1.0 / 252.0 + f * (1.0 / 240.0 + f * (-1.0 / 132.0 + f * (691.0 / 32760.0 + f * (-1.0 / 12.0)))))
        )
    )
    return math.log(x) - 0.5 / x + t


def design_cells(X):
    """Cells of identical design rows: (cell index of every sample, int64; the distinct rows,
    cells × coefficients, in order of first appearance). The kernels sum weights per cell before
    forming X' W X, so a design with few distinct rows costs little per sample."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    _, first, inv = np.unique(X, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[np.asarray(inv).ravel()].astype(np.int64), np.ascontiguousarray(X[first[order]])


@kernel
def column_products(X):
    """Products of design columns, ``X[:, k] * X[:, m]`` for ``m <= k`` (row ``k (k + 1) / 2 + m``)
    of a ``p (p + 1) / 2 × rows`` array: X' diag(w) X is then a dot product per entry."""
    n, p = X.shape
    out = np.empty((p * (p + 1) // 2, n))
    r = 0
    for k in range(p):
        for m in range(k + 1):
            for j in range(n):
                out[r, j] = X[j, k] * X[j, m]
            r += 1
    return out


@inner
def wdot(a, w):
    """``sum(a * w)`` over the length of ``a`` with four partial sums (so the compiled loop is not
    one long dependency chain)."""
    n = a.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    j = 0
    while j + 4 <= n:
        s0 += a[j] * w[j]
        s1 += a[j + 1] * w[j + 1]
        s2 += a[j + 2] * w[j + 2]
        s3 += a[j + 3] * w[j + 3]
        j += 4
    while j < n:
        s0 += a[j] * w[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@inner
def gram(XX, w, b, p):
    """``b = X' diag(w) X`` from :func:`column_products` (``w`` per row of ``X``)."""
    r = 0
    for k in range(p):
        for m in range(k + 1):
            v = wdot(XX[r], w)
            b[k, m] = v
            b[m, k] = v
            r += 1


@inner
def cell_sums(cell, v, out, n_cells):
    """``out[c] = sum of v[j] over the samples j of cell c``."""
    for c in range(n_cells):
        out[c] = 0.0
    for j in range(v.shape[0]):
        out[cell[j]] += v[j]


@kernel
def nb_kconst(y, r, s_r):
    """The part of log dnbinom(y, mu, size = r) that does not depend on mu,
    ``lgamma(y + r) - lgamma(r) - lgamma(y + 1) - y log(r)``, so that the log density is this
    plus ``y log(mu) - (y + r) log(1 + mu / r)``. Written with Stirling's corrections
    (``s_r = stirlerr(r)``) as ``(y + r - 1/2) log(1 + y/r) - lgamma(y + 1) - y + stirlerr(y + r) - stirlerr(r)``,
    which has no cancellation for large ``r`` (it is R's saddle-point density at ``mu = y``)."""
    if y == 0.0:
        return 0.0
    return (y + r - 0.5) * math.log1p(y / r) - math.lgamma(y + 1.0) - y + stirlerr(y + r) - s_r


@inner
def _nb_mu_terms(y, m, lm, a, r):
    """``y log(m) - (y + r) log(1 + a m)``: the mean-dependent part of the NB log density, with
    ``lm = log(m)`` given (0 log 0 is 0). Branch-free, with
    :func:`~bulkpy._stats._vmath.vlog1p`, so that IRLS's deviance loop over samples is
    vectorised. (The dispersion line search keeps the C library's logarithms: at tiny
    dispersions its log posterior is a difference of huge terms, and where it is flat the path
    follows R's last bits; with ``vlog`` a few genes of pasilla and airway stopped elsewhere.)"""
    l1 = vlog1p(a * m)
    out = y * lm - (y + r) * l1
    if y == 0.0:
        out = -r * l1
    return out


@inner
def _cell_predictors(XC, b, etac, ec):
    """Linear predictor ``XC b`` of each design cell and its exponential."""
    for c in range(XC.shape[0]):
        eta = 0.0
        for k in range(XC.shape[1]):
            eta += XC[c, k] * b[k]
        etac[c] = eta
        ec[c] = math.exp(eta)


@inner
def _bounded_means(nf_row, cell, ec, etac, lnf, minmu, lminmu, mu, lmu):
    """Per sample ``mu = max(nf exp(eta), minmu)`` and its log, ``log nf + eta`` when not bounded."""
    for j in range(nf_row.shape[0]):
        m = nf_row[j] * ec[cell[j]]
        if m < minmu:
            mu[j] = minmu
            lmu[j] = lminmu
        else:
            mu[j] = m
            lmu[j] = lnf[j] + etac[cell[j]]


@kernel
def irls_kernel(y, nf, nf_shared, cell, XC, alpha, lam, beta, tol, maxit, minmu, mu_out, iters, hat, var, dev_out, ll_out):
    """DESeq2's ``fitBeta`` for each gene (rows of ``y``/``nf``): updates ``beta`` in place and
    writes the fitted means ``nf exp(X beta)`` (``mu_out``, not bounded), iterations, hat
    diagonals and sandwich variances (at the means bounded below by ``minmu``, as DESeq2), the
    deviance of the bounded means and the log-likelihood of the unbounded ones.

    The design is given by its distinct rows ``XC`` and each sample's row ``cell``
    (:func:`design_cells`). Means are kept on the log scale, ``log nf + X beta``, so that an
    iteration takes one logarithm per sample (``log(1 + alpha mu)``); the working response
    ``log(mu / nf)`` is the linear predictor itself. With ``nf_shared`` every row of ``nf`` is the
    same (size factors): it is then given as one row, and its logarithms are taken once."""
    # One compiled loop body per gene, longer than 100 lines on purpose: it follows fitBeta's C++
    # iteration step by step (weights, the penalised normal equations, the deviance test, the
    # large-coefficient stop) so that each gene takes R's path, and splitting it into jitted calls
    # would pass the per-gene scratch arrays around in the innermost loop.
    g, n = y.shape
    n_cells, p = XC.shape
    A = np.empty((p, p))
    rhs = np.empty(p)
    bnew = np.empty(p)
    mu = np.empty(n)
    lmu = np.empty(n)
    lnf = np.empty(n)
    w = np.empty(n)
    dv = np.empty(n)
    inv = np.empty((p, p))
    xtwx = np.empty((p, p))
    tmp = np.empty((p, p))
    kconst = np.empty(n)
    ec = np.empty(n_cells)
    etac = np.empty(n_cells)
    wc = np.empty(n_cells)
    wzc = np.empty(n_cells)
    hc = np.empty(n_cells)
    XX = column_products(XC)
    XT = np.ascontiguousarray(XC.T)
    lminmu = math.log(minmu)
    uy = np.empty(n)
    uidx = np.empty(n, dtype=np.int64)
    slot = np.full(max(4 * n, 256), -1, dtype=np.int64)
    kcache = np.empty(n)
    for i in range(g):
        a = alpha[i]
        r = 1.0 / a
        s_r = stirlerr(r)
        _cell_predictors(XC, beta[i], etac, ec)
        nfi = nf[0] if nf_shared else nf[i]
        if i == 0 or not nf_shared:
            for j in range(n):
                lnf[j] = math.log(nfi[j])
        nu = unique_counts(y[i], uy, uidx, slot)
        for q in range(nu):
            kcache[q] = nb_kconst(uy[q], r, s_r)
        _bounded_means(nfi, cell, ec, etac, lnf, minmu, lminmu, mu, lmu)
        for j in range(n):
            # log density = kconst + y log(mu) - (y + r) log(1 + alpha mu): the mu-free part once
            kconst[j] = kcache[uidx[j]] if nu > 0 else nb_kconst(y[i, j], r, s_r)
        dev = 0.0
        dev_old = 0.0
        it = 0
        for t in range(maxit):
            it += 1
            for c in range(n_cells):
                wc[c] = 0.0
                wzc[c] = 0.0
            for j in range(n):  # weights and weighted working responses (a vectorised loop)
                m = mu[j]
                w[j] = m / (1.0 + a * m)
                # working response log(mu / nf) + (y - mu) / mu
                dv[j] = w[j] * (lmu[j] - lnf[j] + (y[i, j] - m) / m)
            for j in range(n):  # summed per cell
                c = cell[j]
                wc[c] += w[j]
                wzc[c] += dv[j]
            for k in range(p):
                rhs[k] = wdot(XT[k], wzc)
            gram(XX, wc, A, p)
            for k in range(p):
                A[k, k] += lam[k]
            if not cholesky_inplace(A, p):
                it = maxit
                for k in range(p):
                    beta[i, k] = np.nan
                break
            chol_solve(A, rhs, p, bnew)
            large = False
            for k in range(p):
                beta[i, k] = bnew[k]
                if not abs(bnew[k]) <= _LARGE:
                    large = True
            if large:
                it = maxit
                break
            _cell_predictors(XC, bnew, etac, ec)
            _bounded_means(nfi, cell, ec, etac, lnf, minmu, lminmu, mu, lmu)
            for j in range(n):
                dv[j] = -2.0 * (kconst[j] + _nb_mu_terms(y[i, j], mu[j], lmu[j], a, r))
            dev = vsum(dv, n)
            conv = abs(dev - dev_old) / (abs(dev) + 0.1)
            if math.isnan(conv):
                it = maxit
                break
            if t > 0 and conv < tol:
                break
            dev_old = dev
        iters[i] = it
        dev_out[i] = dev
        # log-likelihood at the unbounded means: the deviance's terms, except where mu was bounded
        ll = -0.5 * dev
        for j in range(n):
            m = nfi[j] * ec[cell[j]]
            mu_out[i, j] = m
            if m < minmu:
                yj = y[i, j]
                ll += _nb_mu_terms(yj, m, math.log(m), a, r) - _nb_mu_terms(yj, mu[j], lmu[j], a, r)
        ll_out[i] = ll
        # covariance and hat diagonals with the weights of the last (bounded) mu
        for c in range(n_cells):
            wc[c] = 0.0
        for j in range(n):
            w[j] = mu[j] / (1.0 + a * mu[j])
            wc[cell[j]] += w[j]
        gram(XX, wc, xtwx, p)
        for k in range(p):
            for m in range(p):
                A[k, m] = xtwx[k, m]
            A[k, k] += lam[k]
        if not cholesky_inplace(A, p):
            for k in range(p):
                var[i, k] = np.nan
            for j in range(n):
                hat[i, j] = np.nan
            continue
        chol_inverse(A, p, inv)
        for c in range(n_cells):
            s = 0.0
            for k in range(p):
                for m in range(p):
                    s += XC[c, k] * inv[k, m] * XC[c, m]
            hc[c] = s
        for j in range(n):
            hat[i, j] = w[j] * hc[cell[j]]
        # sigma = inv xtwx inv
        for k in range(p):
            for m in range(p):
                s = 0.0
                for q in range(p):
                    s += inv[k, q] * xtwx[q, m]
                tmp[k, m] = s
        for k in range(p):
            s = 0.0
            for q in range(p):
                s += tmp[k, q] * inv[q, k]
            var[i, k] = s


@kernel
def unique_counts(y, uy, uidx, slot):
    """Distinct values of ``y`` (into ``uy``, in order of appearance) and each sample's index among
    them (``uidx``); returns their number, or 0 when ``y`` has a value that is not an integer in
    ``[0, len(slot))``. Functions of ``count + 1/alpha`` (lgamma, digamma, the density's constant)
    are then evaluated once per distinct count: the values, and their sums in sample order, are
    the same. ``slot`` (all -1 on entry and on return) maps a count to its index, so this is one
    pass over the samples, with no sort."""
    n = y.shape[0]
    top = slot.shape[0]
    k = 0
    for j in range(n):
        v = y[j]
        if not (v >= 0.0 and v < top and v == math.floor(v)):
            for q in range(k):
                slot[int(uy[q])] = -1
            return 0
        iv = int(v)
        s = slot[iv]
        if s < 0:
            s = k
            slot[iv] = k
            uy[k] = v
            k += 1
        uidx[j] = s
    for q in range(k):
        slot[int(uy[q])] = -1
    return k


@kernel
def scratch(n, p):
    """Work arrays of :func:`log_posterior` / :func:`dlog_posterior` for ``n`` samples and ``p``
    coefficients: (p × p matrices, length-n vectors, distinct counts, their index, the count → index
    map of :func:`unique_counts`).

    ``vecs`` rows: 0 the lgamma/digamma cache, 1 ``log(1 + mu alpha)``, 2 ``1 / (1 + mu alpha)``,
    3 (first entry) the ``log(alpha)`` of the last :func:`log_posterior` call (NaN: none), 4 and 5
    per-cell sums of the Cox-Reid weights ``w`` and of ``w^2``. :func:`dlog_posterior` at that same
    ``log(alpha)`` reuses rows 1, 2, 5 and the Cholesky factor in ``mats[0]``."""
    vecs = np.empty((6, n))
    vecs[3, 0] = np.nan
    slot = np.full(max(4 * n, 256), -1, dtype=np.int64)
    return np.empty((3, p, p)), vecs, np.empty(n), np.empty(n, dtype=np.int64), slot


@kernel
def log_posterior(la, y, mu, cell, XXC, p, prior_mean, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu):
    """DESeq2's ``log_posterior`` (C++): NB log-likelihood terms that depend on alpha, the
    Cox-Reid term ``-0.5 log det(X' W X)`` and an optional normal prior on log(alpha).

    ``XXC`` holds the column products (:func:`column_products`) of the design's distinct rows and
    ``cell`` each sample's row (:func:`design_cells`); ``mats``/``vecs`` are work arrays
    (:func:`scratch`); the ``nu`` distinct counts ``uy`` and the index ``uidx`` of
    :func:`unique_counts` let lgamma be evaluated once per distinct count. One pass over the
    samples computes the likelihood terms (summed per sample in sample order, as DESeq2, which
    keeps rounding, and so the line search's path, close to R's) and the Cox-Reid weights per cell."""
    n = y.shape[0]
    n_cells = XXC.shape[1]
    alpha = math.exp(la)
    vecs[3, 0] = np.nan
    ainv = 1.0 / alpha
    log_ainv = math.log(ainv)
    lg_ainv = lgamma_r(ainv)
    cache = vecs[0]
    logs = vecs[1]
    qv = vecs[2]
    wc = vecs[4]
    w2c = vecs[5]
    lgamma_r_into(ainv, uy, nu, cache)
    for c in range(n_cells):
        wc[c] = 0.0
        w2c[c] = 0.0
    for j in range(n):
        x = mu[j] * alpha
        qv[j] = 1.0 / (1.0 + x)
        logs[j] = math.log(1.0 + x)
    ll = 0.0
    for j in range(n):
        lm = logs[j]
        w = mu[j] * qv[j]  # = 1 / (1/mu + alpha)
        c = cell[j]
        wc[c] += w
        w2c[c] += w * w
        yj = y[j]
        if yj == 0.0:  # lgamma(ainv) - lgamma(ainv) and 0 * log(...) are exactly 0
            ll += -ainv * lm
        else:
            # log(mu + 1/alpha) = log(1 + mu alpha) + log(1/alpha)
            lg = cache[uidx[j]] if nu > 0 else lgamma_r(yj + ainv)
            ll += lg - lg_ainv - yj * (lm + log_ainv) - ainv * lm
    cr = 0.0
    if use_cr:
        b = mats[0]
        gram(XXC, wc, b, p)
        if not cholesky_inplace(b, p):
            return -np.inf
        ld = 0.0
        for k in range(p):
            ld += math.log(b[k, k])
        cr = -ld  # -0.5 * log det = -sum log diag(L)
    vecs[3, 0] = la
    prior = 0.0
    if use_prior:
        prior = -0.5 * (la - prior_mean) ** 2 / prior_var
    return ll + prior + cr


@kernel
def dlog_posterior(la, y, mu, cell, XXC, p, prior_mean, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu):
    """Derivative of :func:`log_posterior` with respect to log(alpha) (DESeq2's ``dlog_posterior``).

    The Cox-Reid part is ``-0.5 trace((X'WX)^-1 X' dW X)`` with ``dW = -W^2``, as DESeq2. At the
    ``log(alpha)`` of the last :func:`log_posterior` call its per-sample terms are reused."""
    n = y.shape[0]
    alpha = math.exp(la)
    if not vecs[3, 0] == la:  # log_posterior was not last evaluated here: compute the terms
        if log_posterior(la, y, mu, cell, XXC, p, prior_mean, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu) == -np.inf:
            return np.nan
    cr = 0.0
    if use_cr:
        b = mats[0]
        db = mats[1]
        inv = mats[2]
        gram(XXC, vecs[5], db, p)  # X' W^2 X = -X' dW X
        chol_inverse(b, p, inv)
        tr = 0.0
        for k in range(p):
            for m in range(p):
                tr += inv[k, m] * db[m, k]
        cr = 0.5 * tr
    ainv = 1.0 / alpha
    dg_ainv = digamma(ainv)
    cache = vecs[0]
    logs = vecs[1]
    qv = vecs[2]
    digamma_into(ainv, uy, nu, cache)
    s = 0.0
    for j in range(n):
        ma = mu[j] * alpha
        q = qv[j]
        # ma / (1 + ma) and y / (mu + 1/alpha) = y alpha / (1 + ma)
        dg = cache[uidx[j]] if nu > 0 else digamma(y[j] + ainv)
        s += dg_ainv + logs[j] - ma * q - dg + y[j] * alpha * q
    ll = ainv * ainv * s
    prior = 0.0
    if use_prior:
        prior = -(la - prior_mean) / prior_var
    return (ll + cr) * alpha + prior


@kernel
def fit_disp_kernel(
    y, mu, cell, XC, log_alpha, prior_mean, prior_var, use_prior, min_log_alpha, kappa_0, tol, maxit, use_cr,
    iters, iter_accept, initial_lp, last_lp, last_change,
):  # fmt: skip
    """DESeq2's ``fitDisp`` (C++) for each gene: Armijo backtracking line search on log(alpha)
    along the gradient; ``log_alpha`` is updated in place."""
    g, n = y.shape
    p = XC.shape[1]
    XXC = column_products(XC)
    mats, vecs, uy, uidx, slot = scratch(n, p)
    epsilon = 1.0e-4
    for i in range(g):
        yi = y[i]
        mi = mu[i]
        pm = prior_mean[i]
        a = log_alpha[i]
        nu = unique_counts(yi, uy, uidx, slot)
        lp = log_posterior(a, yi, mi, cell, XXC, p, pm, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu)
        dlp = dlog_posterior(
            a, yi, mi, cell, XXC, p, pm, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu
        )
        kappa = kappa_0
        initial_lp[i] = lp
        change = -1.0
        it = 0
        acc = 0
        for _t in range(maxit):
            it += 1
            a_propose = a + kappa * dlp
            if a_propose < -30.0:
                kappa = (-30.0 - a) / dlp
            if a_propose > 10.0:
                kappa = (10.0 - a) / dlp
            theta_kappa = -log_posterior(
                a + kappa * dlp, yi, mi, cell, XXC, p, pm, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu
            )
            theta_hat_kappa = -lp - kappa * epsilon * dlp * dlp
            if theta_kappa <= theta_hat_kappa:
                acc += 1
                a = a + kappa * dlp
                lpnew = -theta_kappa  # log_posterior at this same a (DESeq2 recomputes it)
                change = lpnew - lp
                if change < tol:
                    lp = lpnew
                    break
                if a < min_log_alpha:
                    break
                lp = lpnew
                dlp = dlog_posterior(
                    a, yi, mi, cell, XXC, p, pm, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu
                )
                kappa = min(kappa * 1.1, kappa_0)
                if acc % 5 == 0:
                    kappa = kappa / 2.0
            else:
                kappa = kappa / 2.0
        iters[i] = it
        iter_accept[i] = acc
        last_lp[i] = lp
        last_change[i] = change
        log_alpha[i] = a


@kernel
def fit_disp_grid_kernel(y, mu, cell, XC, grid, prior_mean, prior_var, use_prior, use_cr, out):
    """DESeq2's ``fitDispGrid`` (C++): coarse grid on log(alpha), then a fine grid of the same
    size spanning one coarse step either side of the best point."""
    g, n = y.shape
    p = XC.shape[1]
    XXC = column_products(XC)
    mats, vecs, uy, uidx, slot = scratch(n, p)
    m = grid.shape[0]
    delta = grid[1] - grid[0]
    for i in range(g):
        nu = unique_counts(y[i], uy, uidx, slot)
        pm = prior_mean[i]
        best = -np.inf
        a_hat = grid[0]
        for t in range(m):
            v = log_posterior(
                grid[t], y[i], mu[i], cell, XXC, p, pm, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu
            )
            if v > best:
                best = v
                a_hat = grid[t]
        lo = a_hat - delta
        step = 2.0 * delta / (m - 1)
        best = -np.inf
        res = lo
        for t in range(m):
            a = lo + t * step if t < m - 1 else a_hat + delta
            v = log_posterior(
                a, y[i], mu[i], cell, XXC, p, pm, prior_var, use_prior, use_cr, mats, vecs, uy, uidx, nu
            )
            if v > best:
                best = v
                res = a
        out[i] = res


@kernel
def contrast_kernel(nf, cell, XC, alpha, lam, beta, minmu, C, num, denom):
    """DESeq2's ``fitBeta`` with ``maxit = 0`` (as ``getContrast`` calls it) for each gene: at the
    given coefficients, the sandwich covariance ``(X'WX + Λ)^-1 X'WX (X'WX + Λ)^-1`` with
    ``W = diag(mu / (1 + alpha mu))`` and ``mu = max(nf exp(X beta), minmu)``; writes ``c' beta``
    to ``num`` and ``sqrt(c' Σ c)`` to ``denom`` for every column ``c`` of ``C`` (p × k).
    Genes with a NaN coefficient or a singular system get NaN."""
    g, n = nf.shape
    n_cells, p = XC.shape
    k = C.shape[1]
    w = np.empty(n)
    ec = np.empty(n_cells)
    wc = np.empty(n_cells)
    xtwx = np.empty((p, p))
    A = np.empty((p, p))
    inv = np.empty((p, p))
    tmp = np.empty((p, p))
    sig = np.empty((p, p))
    XX = column_products(XC)
    for i in range(g):
        bad = False
        for q in range(p):
            if not math.isfinite(beta[i, q]):
                bad = True
        if bad:
            for c in range(k):
                num[i, c] = np.nan
                denom[i, c] = np.nan
            continue
        a = alpha[i]
        for c in range(n_cells):
            eta = 0.0
            for q in range(p):
                eta += XC[c, q] * beta[i, q]
            ec[c] = math.exp(eta)
        for j in range(n):
            mu = max(nf[i, j] * ec[cell[j]], minmu)
            w[j] = mu / (1.0 + a * mu)
        cell_sums(cell, w, wc, n_cells)
        gram(XX, wc, xtwx, p)
        for q in range(p):
            for m in range(p):
                A[q, m] = xtwx[q, m]
            A[q, q] += lam[q]
        if not cholesky_inplace(A, p):
            for c in range(k):
                num[i, c] = np.nan
                denom[i, c] = np.nan
            continue
        chol_inverse(A, p, inv)
        for q in range(p):
            for m in range(p):
                s = 0.0
                for r in range(p):
                    s += inv[q, r] * xtwx[r, m]
                tmp[q, m] = s
        for q in range(p):
            for m in range(p):
                s = 0.0
                for r in range(p):
                    s += tmp[q, r] * inv[r, m]
                sig[q, m] = s
        for c in range(k):
            s = 0.0
            for q in range(p):
                s += C[q, c] * beta[i, q]
            num[i, c] = s
            v = 0.0
            for q in range(p):
                for m in range(p):
                    v += C[q, c] * sig[q, m] * C[m, c]
            denom[i, c] = math.sqrt(v) if v >= 0.0 else np.nan


# ----------------------------------------------------------------------------------------------
# parallel wrappers: contiguous chunks of genes in a thread pool
# ----------------------------------------------------------------------------------------------
# The serial kernels are compiled with ``nogil=True``, so Python threads run them side by side.
# A numba ``parallel=True`` wrapper would compile each kernel a second time (10-13 s per wrapper on
# first use); a thread pool over the same chunks runs the same compiled code and costs nothing to
# compile.
def n_threads() -> int:
    """Threads the parallel wrappers use: numba's thread count (``numba.set_num_threads`` /
    ``NUMBA_NUM_THREADS``), else the number of CPUs."""
    try:
        t = int(numba.get_num_threads())
    except Exception:  # pragma: no cover - numba without a threading layer
        t = os.cpu_count() or 1
    return max(1, t)


def n_chunks(g: int) -> int:
    """Number of gene chunks for the parallel wrappers (a few per thread, for balance)."""
    t = n_threads()
    return int(max(1, min(g, 1 if t <= 1 else 8 * t)))


def run_chunks(fn: Callable[[int, int], object], g: int, nchunks: int) -> None:
    """Call ``fn(lo, hi)`` on ``nchunks`` contiguous chunks of ``range(g)`` (chunk ``c`` is
    ``[c g // nchunks, (c + 1) g // nchunks)``), in a pool of :func:`n_threads` threads. ``fn``
    writes its chunk's rows of its outputs, so the result does not depend on the thread count."""
    nchunks = max(1, int(nchunks))
    bounds = [(c * g // nchunks, (c + 1) * g // nchunks) for c in range(nchunks)]
    bounds = [(lo, hi) for lo, hi in bounds if hi > lo]
    workers = min(n_threads(), len(bounds))
    if workers <= 1:
        for lo, hi in bounds:
            fn(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulkpy") as pool:
        for f in [pool.submit(fn, lo, hi) for lo, hi in bounds]:
            f.result()


def irls_kernel_par(
    y, nf, nf_shared, cell, XC, alpha, lam, beta, tol, maxit, minmu, mu_out, iters, hat, var, dev_out, ll_out, nchunks
):  # fmt: skip
    """:func:`irls_kernel` over contiguous chunks of genes in threads."""

    def one(lo, hi):
        irls_kernel(
            y[lo:hi], nf if nf_shared else nf[lo:hi], nf_shared, cell, XC, alpha[lo:hi], lam, beta[lo:hi], tol, maxit, minmu, mu_out[lo:hi],
            iters[lo:hi], hat[lo:hi], var[lo:hi], dev_out[lo:hi], ll_out[lo:hi],
        )  # fmt: skip

    run_chunks(one, y.shape[0], nchunks)


def fit_disp_kernel_par(
    y, mu, cell, XC, log_alpha, prior_mean, prior_var, use_prior, min_log_alpha, kappa_0, tol, maxit, use_cr,
    iters, iter_accept, initial_lp, last_lp, last_change, nchunks,
):  # fmt: skip
    """:func:`fit_disp_kernel` over contiguous chunks of genes in threads."""

    def one(lo, hi):
        fit_disp_kernel(
            y[lo:hi], mu[lo:hi], cell, XC, log_alpha[lo:hi], prior_mean[lo:hi], prior_var, use_prior, min_log_alpha,
            kappa_0, tol, maxit, use_cr, iters[lo:hi], iter_accept[lo:hi], initial_lp[lo:hi], last_lp[lo:hi],
            last_change[lo:hi],
        )  # fmt: skip

    run_chunks(one, y.shape[0], nchunks)


def fit_disp_grid_kernel_par(y, mu, cell, XC, grid, prior_mean, prior_var, use_prior, use_cr, out, nchunks):
    """:func:`fit_disp_grid_kernel` over contiguous chunks of genes in threads."""

    def one(lo, hi):
        fit_disp_grid_kernel(
            y[lo:hi], mu[lo:hi], cell, XC, grid, prior_mean[lo:hi], prior_var, use_prior, use_cr, out[lo:hi]
        )

    run_chunks(one, y.shape[0], nchunks)


def contrast_kernel_par(nf, cell, XC, alpha, lam, beta, minmu, C, num, denom, nchunks):
    """:func:`contrast_kernel` over contiguous chunks of genes in threads."""

    def one(lo, hi):
        contrast_kernel(nf[lo:hi], cell, XC, alpha[lo:hi], lam, beta[lo:hi], minmu, C, num[lo:hi], denom[lo:hi])

    run_chunks(one, nf.shape[0], nchunks)


def nb_logpmf_flat_par(y, mu, alpha, out):
    """:func:`nb_logpmf_flat` over contiguous chunks in threads."""
    g = y.shape[0]

    def one(lo, hi):
        nb_logpmf_flat(y[lo:hi], mu[lo:hi], alpha[lo:hi], out[lo:hi])

    run_chunks(one, g, n_chunks(g))


# ----------------------------------------------------------------------------------------------
# elementwise passes over a block, over chunks of rows in threads (numpy's run on one core)
# ----------------------------------------------------------------------------------------------
@kernel
def log_columns(counts, cols, out):
    """``out[j, k] = log(counts[j, cols[k]])`` for samples × genes ``counts``."""
    n = counts.shape[0]
    for j in range(n):
        for k in range(cols.shape[0]):
            out[j, k] = math.log(counts[j, cols[k]])


def log_columns_par(counts, cols, out):
    """:func:`log_columns` over chunks of samples in threads."""
    n = counts.shape[0]

    def one(lo, hi):
        log_columns(counts[lo:hi], cols, out[lo:hi])

    run_chunks(one, n, n_chunks(n))


@kernel
def log_norm_counts(y, nf, nf_shared, out):
    """``log(y / nf + 0.1)`` (DESeq2's starting values are fitted to it), genes × samples; with
    ``nf_shared`` ``nf`` is a single row for all genes."""
    for i in range(y.shape[0]):
        _log_norm_row(y[i], nf[0] if nf_shared else nf[i], out[i])


def log_norm_counts_par(y, nf, nf_shared, out):
    """:func:`log_norm_counts` over chunks of genes in threads."""
    g = y.shape[0]

    def one(lo, hi):
        log_norm_counts(y[lo:hi], nf if nf_shared else nf[lo:hi], nf_shared, out[lo:hi])

    run_chunks(one, g, n_chunks(g))


@inner
def _log_norm_row(y, nf, out):
    for j in range(y.shape[0]):
        out[j] = math.log(y[j] / nf[j] + 0.1)


@kernel
def cooks(y, mu, hat, alpha, p, out):
    """DESeq2's Cook's distances ``(y - mu)^2 / (mu + alpha mu^2) / p * h / (1 - h)^2`` with the
    gene's robust dispersion ``alpha``, genes × samples."""
    for i in range(y.shape[0]):
        a = alpha[i]
        for j in range(y.shape[1]):
            m = mu[i, j]
            h = hat[i, j]
            r = y[i, j] - m
            out[i, j] = r * r / (m + a * (m * m)) / p * h / ((1.0 - h) * (1.0 - h))


def cooks_par(y, mu, hat, alpha, p, out):
    """:func:`cooks` over chunks of genes in threads."""
    g = y.shape[0]

    def one(lo, hi):
        cooks(y[lo:hi], mu[lo:hi], hat[lo:hi], alpha[lo:hi], p, out[lo:hi])

    run_chunks(one, g, n_chunks(g))


@kernel
def rough_terms(norm, fitted, out):
    """DESeq2's ``roughDispEstimate`` terms ``((y - mu)^2 - mu) / mu^2`` with ``mu = max(fitted, 1)``,
    genes × samples (summed per gene by the caller)."""
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            m = max(fitted[i, j], 1.0)
            d = norm[i, j] - m
            out[i, j] = (d * d - m) / (m * m)


def rough_terms_par(norm, fitted, out):
    """:func:`rough_terms` over chunks of genes in threads."""
    g = norm.shape[0]

    def one(lo, hi):
        rough_terms(norm[lo:hi], fitted[lo:hi], out[lo:hi])

    run_chunks(one, g, n_chunks(g))


@kernel
def ordered_matmul(a, b, out):
    """``out = a b`` with each entry summed over the inner index in order, ``a[i, 0] b[0, j] +
    a[i, 1] b[1, j] + ...`` (the reference BLAS ``dgemm``'s order, so R's rounding)."""
    m = b.shape[1]
    for i in range(a.shape[0]):
        for j in range(m):
            out[i, j] = a[i, 0] * b[0, j]
        for k in range(1, a.shape[1]):
            aik = a[i, k]
            for j in range(m):
                out[i, j] += aik * b[k, j]


def ordered_matmul_par(a, b, out):
    """:func:`ordered_matmul` over chunks of rows of ``a`` in threads."""
    g = a.shape[0]

    def one(lo, hi):
        ordered_matmul(a[lo:hi], b, out[lo:hi])

    run_chunks(one, g, n_chunks(g))
