"""Compiled per-gene kernels (numba) shared by the negative binomial engines.

Each kernel loops over the genes of a block inside compiled code (no Python loop per gene) and
solves one small problem per gene: p × p systems by Cholesky, the negative binomial density by
R's saddle-point formula, digamma by recurrence and asymptotic series. Kernels are deterministic
and independent across genes, so any block of genes gives the same per-gene answers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _lgammacor(x):
    """Stirling remainder of log Gamma(x), x >= 10 (SLATEC ``d9lgmc`` as used by R)."""
    if x < 94906265.62425156:
        tmp = 10.0 / x
        t = tmp * tmp * 2.0 - 1.0
        twox = t * 2.0
        b0 = 0.0
        b1 = 0.0
        b2 = 0.0
        for i in range(1, 6):
            b2 = b1
            b1 = b0
            b0 = twox * b1 - b2 + _ALGMCS[5 - i]
        return (b0 - b2) * 0.5 / x
    return 1.0 / (x * 12.0)


@njit(cache=True)
def lgamma_r(x):
    """log Gamma(x) for x > 0 with R's formulas above 10 (so that the large-argument rounding,
    which dominates DESeq2's log posterior at tiny dispersions, is the same as in R)."""
    if x <= 10.0:
        return math.lgamma(x)
    if x > 1e17:
        return x * (math.log(x) - 1.0)
    if x > 4934720.0:
        return _LN_SQRT_2PI + (x - 0.5) * math.log(x) - x
    return _LN_SQRT_2PI + (x - 0.5) * math.log(x) - x + _lgammacor(x)


@njit(cache=True)
def digamma(x):
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series."""
    r = 0.0
    while x < 6.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    t = f * (
        -1.0 / 12.0
        + f
        * (
            1.0 / 120.0
            + f * (-1.0 / 252.0 + f * (1.0 / 240.0 + f * (-1.0 / 132.0 + f * (691.0 / 32760.0 + f * (-1.0 / 12.0)))))
        )
    )
    return r + math.log(x) - 0.5 / x + t


@njit(cache=True)
def cholesky_inplace(a, p):
    """Lower Cholesky factor of the p × p SPD matrix ``a`` in place; False if not positive definite."""
    for j in range(p):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, p):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / d
    return True


@njit(cache=True)
def chol_solve(L, b, p, out):
    for i in range(p):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * out[k]
        out[i] = s / L[i, i]
    for i in range(p - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, p):
            s -= L[k, i] * out[k]
        out[i] = s / L[i, i]


@njit(cache=True)
def chol_inverse(L, p, out):
    e = np.zeros(p)
    col = np.zeros(p)
    for j in range(p):
        for i in range(p):
            e[i] = 0.0
        e[j] = 1.0
        chol_solve(L, e, p, col)
        for i in range(p):
            out[i, j] = col[i]


@njit(cache=True)
def irls_kernel(y, nf, X, alpha, lam, beta, tol, maxit, minmu, mu_out, iters, hat, var, dev_out):
    """DESeq2's ``fitBeta`` for each gene (rows of ``y``/``nf``): updates ``beta`` in place and
    writes the bounded fitted means, iterations, hat diagonals, sandwich variances, deviance."""
    g, n = y.shape
    p = X.shape[1]
    A = np.empty((p, p))
    rhs = np.empty(p)
    bnew = np.empty(p)
    mu = np.empty(n)
    w = np.empty(n)
    z = np.empty(n)
    inv = np.empty((p, p))
    xtwx = np.empty((p, p))
    tmp = np.empty((p, p))
    kconst = np.empty(n)
    for i in range(g):
        a = alpha[i]
        r = 1.0 / a
        for j in range(n):
            eta = 0.0
            for k in range(p):
                eta += X[j, k] * beta[i, k]
            mu[j] = max(nf[i, j] * math.exp(eta), minmu)
            # log density = kconst + y log(mu) - (y + r) log1p(mu / r): the mu-free part once
            yj = y[i, j]
            kconst[j] = nb_logpmf1(yj, mu[j], a) - (yj * math.log(mu[j]) - (yj + r) * math.log1p(mu[j] / r))
        dev = 0.0
        dev_old = 0.0
        it = 0
        for t in range(maxit):
            it += 1
            for j in range(n):
                w[j] = mu[j] / (1.0 + a * mu[j])
                z[j] = math.log(mu[j] / nf[i, j]) + (y[i, j] - mu[j]) / mu[j]
            for k in range(p):
                s = 0.0
                for j in range(n):
                    s += X[j, k] * w[j] * z[j]
                rhs[k] = s
                for m in range(k + 1):
                    s = 0.0
                    for j in range(n):
                        s += X[j, k] * w[j] * X[j, m]
                    A[k, m] = s
                    A[m, k] = s
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
            for j in range(n):
                eta = 0.0
                for k in range(p):
                    eta += X[j, k] * bnew[k]
                mu[j] = max(nf[i, j] * math.exp(eta), minmu)
            dev = 0.0
            for j in range(n):
                yj = y[i, j]
                dev += -2.0 * (kconst[j] + yj * math.log(mu[j]) - (yj + r) * math.log1p(mu[j] / r))
            conv = abs(dev - dev_old) / (abs(dev) + 0.1)
            if math.isnan(conv):
                it = maxit
                break
            if t > 0 and conv < tol:
                break
            dev_old = dev
        iters[i] = it
        dev_out[i] = dev
        # covariance and hat diagonals with the weights of the last (bounded) mu
        for j in range(n):
            w[j] = mu[j] / (1.0 + a * mu[j])
            mu_out[i, j] = mu[j]
        for k in range(p):
            for m in range(k + 1):
                s = 0.0
                for j in range(n):
                    s += X[j, k] * w[j] * X[j, m]
                xtwx[k, m] = s
                xtwx[m, k] = s
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
        for j in range(n):
            s = 0.0
            for k in range(p):
                for m in range(p):
                    s += X[j, k] * inv[k, m] * X[j, m]
            hat[i, j] = w[j] * s
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


@njit(cache=True)
def _cr_chol(la, mu, X, b, w):
    """Cholesky factor (in ``b``) of X' W X with W = diag(1 / (1/mu + alpha)); weights in ``w``.
    Returns False if the matrix is not positive definite."""
    n, p = X.shape
    alpha = math.exp(la)
    for j in range(n):
        w[j] = 1.0 / (1.0 / mu[j] + alpha)
    for k in range(p):
        for m in range(k + 1):
            s = 0.0
            for j in range(n):
                s += X[j, k] * X[j, m] * w[j]
            b[k, m] = s
            b[m, k] = s
    return cholesky_inplace(b, p)


@njit(cache=True)
def log_posterior(la, y, mu, X, prior_mean, prior_var, use_prior, use_cr, b, w, z):
    """DESeq2's ``log_posterior`` (C++): NB log-likelihood terms that depend on alpha, the
    Cox-Reid term ``-0.5 log det(X' W X)`` and an optional normal prior on log(alpha)."""
    n, p = X.shape
    alpha = math.exp(la)
    cr = 0.0
    if use_cr:
        if not _cr_chol(la, mu, X, b, w):
            return -np.inf
        ld = 0.0
        for k in range(p):
            ld += math.log(b[k, k])
        cr = -ld  # -0.5 * log det = -sum log diag(L)
    ainv = 1.0 / alpha
    lg_ainv = lgamma_r(ainv)
    ll = 0.0
    for j in range(n):
        ll += lgamma_r(y[j] + ainv) - lg_ainv - y[j] * math.log(mu[j] + ainv) - ainv * math.log(1.0 + mu[j] * alpha)
    prior = 0.0
    if use_prior:
        prior = -0.5 * (la - prior_mean) ** 2 / prior_var
    return ll + prior + cr


@njit(cache=True)
def dlog_posterior(la, y, mu, X, prior_mean, prior_var, use_prior, use_cr, b, w, z):
    """Derivative of :func:`log_posterior` with respect to log(alpha) (DESeq2's ``dlog_posterior``).

    The Cox-Reid part uses trace((X'WX)^-1 X' dW X) = sum_j dw_j |L^-1 x_j|^2, dw_j = -w_j^2."""
    n, p = X.shape
    alpha = math.exp(la)
    cr = 0.0
    if use_cr:
        if not _cr_chol(la, mu, X, b, w):
            return np.nan
        tr = 0.0
        for j in range(n):
            q = 0.0
            for k in range(p):
                s = X[j, k]
                for m in range(k):
                    s -= b[k, m] * z[m]
                z[k] = s / b[k, k]
                q += z[k] * z[k]
            tr -= w[j] * w[j] * q
        cr = -0.5 * tr
    ainv = 1.0 / alpha
    dg_ainv = digamma(ainv)
    s = 0.0
    for j in range(n):
        ma = mu[j] * alpha
        s += dg_ainv + math.log(1.0 + ma) - ma / (1.0 + ma) - digamma(y[j] + ainv) + y[j] / (mu[j] + ainv)
    ll = ainv * ainv * s
    prior = 0.0
    if use_prior:
        prior = -(la - prior_mean) / prior_var
    return (ll + cr) * alpha + prior


@njit(cache=True)
def fit_disp_kernel(
    y, mu, X, log_alpha, prior_mean, prior_var, use_prior, min_log_alpha, kappa_0, tol, maxit, use_cr,
    iters, iter_accept, initial_lp, last_lp, last_change,
):  # fmt: skip
    """DESeq2's ``fitDisp`` (C++) for each gene: Armijo backtracking line search on log(alpha)
    along the gradient; ``log_alpha`` is updated in place."""
    g, n = y.shape
    p = X.shape[1]
    b = np.empty((p, p))
    z = np.empty(p)
    w = np.empty(n)
    epsilon = 1.0e-4
    for i in range(g):
        yi = y[i]
        mi = mu[i]
        pm = prior_mean[i]
        a = log_alpha[i]
        lp = log_posterior(a, yi, mi, X, pm, prior_var, use_prior, use_cr, b, w, z)
        dlp = dlog_posterior(a, yi, mi, X, pm, prior_var, use_prior, use_cr, b, w, z)
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
            theta_kappa = -log_posterior(a + kappa * dlp, yi, mi, X, pm, prior_var, use_prior, use_cr, b, w, z)
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
                dlp = dlog_posterior(a, yi, mi, X, pm, prior_var, use_prior, use_cr, b, w, z)
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


@njit(cache=True)
def fit_disp_grid_kernel(y, mu, X, grid, prior_mean, prior_var, use_prior, use_cr, out):
    """DESeq2's ``fitDispGrid`` (C++): coarse grid on log(alpha), then a fine grid of the same
    size spanning one coarse step either side of the best point."""
    g, n = y.shape
    p = X.shape[1]
    b = np.empty((p, p))
    z = np.empty(p)
    w = np.empty(n)
    m = grid.shape[0]
    delta = grid[1] - grid[0]
    for i in range(g):
        best = -np.inf
        a_hat = grid[0]
        for t in range(m):
            v = log_posterior(grid[t], y[i], mu[i], X, prior_mean[i], prior_var, use_prior, use_cr, b, w, z)
            if v > best:
                best = v
                a_hat = grid[t]
        lo = a_hat - delta
        step = 2.0 * delta / (m - 1)
        best = -np.inf
        res = lo
        for t in range(m):
            a = lo + t * step if t < m - 1 else a_hat + delta
            v = log_posterior(a, y[i], mu[i], X, prior_mean[i], prior_var, use_prior, use_cr, b, w, z)
            if v > best:
                best = v
                res = a
        out[i] = res
