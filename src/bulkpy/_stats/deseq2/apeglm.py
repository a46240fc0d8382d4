"""apeglm's shrinkage of one GLM coefficient, as DESeq2's ``lfcShrink(type = "apeglm")`` runs it.

Follows apeglm 1.27.0 (Zhu, Ibrahim & Love 2018) with ``method = "nbinomCR"``, the way DESeq2 1.52
calls it: the counts, the design matrix, the final dispersions, ``log(sizeFactors)`` (or
``log(normalizationFactors)``) as offsets, unit weights and the coefficient's index.

The prior
    A zero-centred Cauchy prior on the shrunken coefficient and a normal prior of standard
    deviation 15 on every other coefficient. With ``apeAdapt = TRUE`` (DESeq2's default) the
    Cauchy scale is ``min(sqrt(A), 1)``, ``A`` the variance of a normal–normal model fitted to the
    maximum likelihood estimates and their standard errors (``priorVar``: Efron and Morris's
    estimating equation, solved by R's ``uniroot``, tolerance ``.Machine$double.eps^0.25``, on
    ``[1e-6, 400]``). With ``apeAdapt = FALSE`` every column but the first gets a Cauchy prior of
    scale 1.

The posterior mode (``nbinomCppRoutine``)
    Per gene, the negative log posterior divided by ``max(its value at 0, 1)`` (plus 10) is
    minimised by RcppNumerical's L-BFGS (LBFGSpp: 6 corrections, the Nocedal–Wright strong-Wolfe
    line search, stopping when the gradient norm is below 1e-8, when the scaled objective changes
    by less than 1e-8 relative, or after 300 iterations) from ``(0.1, -0.1, ...)`` and again from
    ``(-0.1, 0.1, ...)``; a line-search failure, or the two modes differing by more than 0.01,
    marks the gene as not converged.

The posterior standard deviation (``optimNbinomHess``)
    The Hessian of the negative log posterior at the mode by R's ``optimHess`` (central
    differences of the analytic gradient with step 1e-3, symmetrised); the posterior SDs are the
    square roots of the diagonal of its inverse. A gene that did not converge, or whose inverse
    Hessian has a non-positive diagonal element, is refitted from that mode by R's
    ``optim(method = "BFGS")`` (``vmmin``: Nash's variable metric with backtracking, relative
    tolerance ``sqrt(.Machine$double.eps)``, 100 iterations) and its Hessian taken there; a
    non-positive variance then leaves the SD (and the tail probabilities) missing.

Tail probabilities
    The false sign rate ``pnorm(-|mode|, 0, sd)``; with a threshold ``T`` (DESeq2's
    ``lfcThreshold`` on the natural-log scale) the probability of a false sign or a change
    smaller than ``T`` (``pnorm(T, mode, sd)`` for a positive mode, ``1 - pnorm(-T, mode, sd)``
    for a negative one); s-values are the running means of these sorted (``svalue``).

The optimisers are reproduced step by step (their arithmetic in the same order, R's long-double
sums emulated by compensated sums), so the modes agree with R's to rounding except where a
stopping test falls within rounding of its tolerance; there the two stop one step apart, which
the tolerances bound (the scaled objective changes by < 1e-8 relative at the last step).

The per-gene work runs in compiled kernels (numba) over blocks of genes from the shared driver
(:mod:`bulkpy._stats._blocks`); every gene is independent, so blocks and threads do not change
the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from .._blocks import Block, blocks_for, map_gene_blocks
from .._jit import I0 as _I0
from .._jit import inner, kernel
from .._optimize import zeroin
from ._kernels import n_chunks, run_chunks

#: apeglm release whose ``apeglm()`` (method ``"nbinomCR"``) this module follows
APEGLM_VERSION = "1.27.0"
#: the optimiser DESeq2's ``lfcShrink`` asks apeglm for
APEGLM_METHOD = "nbinomCR"
#: standard deviation of the normal prior on the coefficients that are not shrunk
NO_SHRINK_SCALE = 15.0
#: ``priorVar``'s search interval for the prior variance
MIN_PRIOR_VAR = 0.001**2
MAX_PRIOR_VAR = 20.0**2

_DBL_EPS = float(np.finfo(np.float64).eps)
_UNIROOT_TOL = _DBL_EPS**0.25
# LBFGSpp as RcppNumerical's optim_lbfgs(maxit = 300, eps_f = 1e-8, eps_g = 1e-8) sets it up
_M = 6
_EPS_G = 1e-8
_EPS_F = 1e-8
_MAXIT = 300
_MAX_LS = 100
_FTOL = 1e-4
_WOLFE = 0.9
# R's optim(method = "BFGS") defaults and optimHess's step
_BFGS_MAXIT = 100
_BFGS_RELTOL = math.sqrt(_DBL_EPS)
_NDEPS = 1e-3
# status codes of the per-gene kernel
_OK = 0
_LS_FAILED = -1


# ----------------------------------------------------------------------------------------------
# the prior scale (priorVar) and s-values (svalue)
# ----------------------------------------------------------------------------------------------
def prior_variance(mle: np.ndarray, se: np.ndarray, *, min_var: float = MIN_PRIOR_VAR, max_var: float = MAX_PRIOR_VAR) -> float:
    """apeglm's ``priorVar``: the variance ``A`` of a zero-mean normal prior on the true effects
    given estimates ``mle`` with standard errors ``se`` (natural log scale; missing estimates are
    dropped), the root of Efron and Morris's ``Â(A) = A`` with
    ``Â(A) = Σ (mle² − se²) w / Σ w``, ``w = 1 / (2 (A + se²)²)``, by R's ``uniroot`` on
    ``[min_var, max_var]`` (``min_var`` when ``Â(min_var) < min_var``)."""
    mle = np.asarray(mle, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    keep = ~np.isnan(mle)
    X, D = mle[keep], se[keep] ** 2
    S = X**2

    def objective(A: float) -> float:
        w = 1.0 / (2.0 * (A + D) ** 2)
        return float(np.sum((S - D) * w) / np.sum(w)) - A

    f_lo = objective(min_var)
    if f_lo < 0:
        return float(min_var)
    f_hi = objective(max_var)
    if f_hi > 0:
        raise ValueError(
            f"the prior variance of the fold changes exceeds {max_var} (apeglm's priorVar has no root below it); "
            "the maximum likelihood estimates are not usable for an adaptive prior, use ape_adapt=False"
        )
    return float(zeroin(objective, min_var, max_var, f_lo, f_hi, _UNIROOT_TOL))


def svalue(lfsr: np.ndarray) -> np.ndarray:
    """apeglm's ``svalue``: the mean of the local false sign rates at or below each one (sorted
    increasingly, ties in order of appearance); missing rates stay missing."""
    lfsr = np.asarray(lfsr, dtype=np.float64)
    order = np.argsort(np.where(np.isnan(lfsr), np.inf, lfsr), kind="stable")
    nan_last = np.isnan(lfsr[order])
    vals = lfsr[order]
    cm = np.cumsum(np.where(nan_last, 0.0, vals)) / np.arange(1, lfsr.size + 1)
    cm[nan_last] = np.nan
    out = np.empty_like(lfsr)
    out[order] = cm
    return out


def tail_probabilities(b: np.ndarray, sd: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Laplace-approximation tail probabilities of posterior modes ``b`` with SDs ``sd`` (natural
    log scale), as ``apeglm.single``: the false sign rate ``pnorm(-|b|, 0, sd)`` and, with a
    ``threshold`` ``T``, the probability of a false sign or a change below ``T``
    (``pnorm(T, b, sd)`` for ``b >= 0``, ``1 - pnorm(-T, b, sd)`` for ``b < 0``; ``None`` without)."""
    b = np.asarray(b, dtype=np.float64)
    sd = np.asarray(sd, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fsr = special.ndtr(-np.abs(b) / sd)
        thresh = None
        if threshold is not None:
            z = (np.sign(b) * float(threshold) - b) / sd
            thresh = np.where(b < 0, 1.0 - special.ndtr(z), special.ndtr(z))
    return fsr, thresh


def tail_svalue(b: np.ndarray, sd: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """s-values of :func:`tail_probabilities` (of the false sign or small probabilities with a
    threshold, as ``lfcShrink(lfcThreshold = )``; of the false sign rates without)."""
    fsr, thresh = tail_probabilities(b, sd, threshold)
    return svalue(thresh if thresh is not None else fsr)


# ----------------------------------------------------------------------------------------------
# compiled pieces: sums in the order of the reference implementations
# ----------------------------------------------------------------------------------------------
@inner
def _esum(v, n):
    """Sum of ``v[:n]`` in Eigen's order for a vectorised reduction (SSE2 packets of two, two
    accumulators), as the C++ objective and LBFGSpp's dot products add."""
    if n == 0:
        return 0.0
    if n < 2:
        return v[0]
    npk = n // 2
    r0a = v[0]
    r0b = v[1]
    if npk > 1:
        r1a = v[2]
        r1b = v[3]
        end2 = (n // 4) * 4
        i = 4
        while i < end2:
            r0a += v[i]
            r0b += v[i + 1]
            r1a += v[i + 2]
            r1b += v[i + 3]
            i += 4
        r0a += r1a
        r0b += r1b
        if npk * 2 > end2:
            r0a += v[end2]
            r0b += v[end2 + 1]
    res = r0a + r0b
    for i in range(npk * 2, n):
        res += v[i]
    return res


@inner
def _edot(a, b, n, tmp):
    for i in range(n):
        tmp[i] = a[i] * b[i]
    return _esum(tmp, n)


@inner
def _ldsum(v, n):
    """R's ``sum`` (a long-double accumulator), emulated by a compensated (double-double) sum."""
    s = 0.0
    c = 0.0
    for i in range(n):
        x = v[i]
        t = s + x
        if abs(s) >= abs(x):
            c += (s - t) + x
        else:
            c += (x - t) + s
        s = t
    return s + c


# ----------------------------------------------------------------------------------------------
# the objective in apeglm's C++ (nbinomGLM) and in its R code (nbinomFn / nbinomGr)
# ----------------------------------------------------------------------------------------------
@inner
def _cpp_fg(beta, X, y, off, size, sigma2, S2, shrink, cnst, grad, w):
    """apeglm's C++ scaled negative log posterior ``f / cnst + 10`` and its gradient."""
    n, p = X.shape
    d = w[0]
    cv = w[1]
    for i in range(n):
        xb = 0.0
        for j in range(p):
            xb += X[i, j] * beta[j]
        e = math.exp(xb + off[i])
        a = y[i] + size
        b = e + size
        cv[i] = y[i] - a * e * (1.0 / b)
        d[i] = y[i] * xb - a * math.log(b)
    neg_prior = 0.0
    dprior = w[2]
    for k in range(p):
        if not shrink[k]:
            neg_prior += beta[k] ** 2 / (2.0 * sigma2)
            dprior[k] = beta[k] / sigma2
    for k in range(p):
        if shrink[k]:
            neg_prior += math.log1p(beta[k] ** 2 / S2)
            dprior[k] = 2.0 * beta[k] / (S2 + beta[k] ** 2)
    f = -1.0 * _esum(d, n) / cnst + neg_prior / cnst + 10.0
    for k in range(p):
        # Eigen's row-major GEMV: one packet accumulator, then the tail
        lo = 0.0
        hi = 0.0
        m2 = (n // 2) * 2
        for i in range(0, m2, 2):
            lo += X[i, k] * cv[i]
            hi += X[i + 1, k] * cv[i + 1]
        dot = lo + hi if m2 > 0 else 0.0
        for i in range(m2, n):
            dot += X[i, k] * cv[i]
        grad[k] = (-1.0 * dot) / cnst + dprior[k] / cnst
    return f


@inner
def _r_fn(beta, X, y, off, size, sigma, S, shrink, cnst, w):
    """apeglm's R ``nbinomFn`` (negative log posterior plus ``cnst``), R's long-double sums."""
    n, p = X.shape
    t = w[0]
    for i in range(n):
        xb = 0.0
        for j in range(p):
            xb += X[i, j] * beta[j]
        t[i] = y[i] * xb - (y[i] + size) * math.log(size + math.exp(xb + off[i]))
    u = w[1]
    m = _I0
    for k in range(p):
        if not shrink[k]:
            u[m] = -beta[k] ** 2 / (2.0 * sigma**2)
            m += 1
    prior_a = _ldsum(u, m)
    m = _I0
    for k in range(p):
        if shrink[k]:
            u[m] = -math.log1p(beta[k] ** 2 / S**2)
            m += 1
    prior = prior_a + _ldsum(u, m)
    return -_ldsum(t, n) - prior + cnst


@inner
def _r_gr(beta, X, y, off, size, sigma, S, shrink, grad, w):
    """apeglm's R ``nbinomGr`` (reference BLAS sums: in sample order)."""
    n, p = X.shape
    v = w[0]
    for i in range(n):
        xb = 0.0
        for j in range(p):
            xb += X[i, j] * beta[j]
        e = math.exp(xb + off[i])
        v[i] = y[i] - (y[i] + size) * e / (size + e)
    for k in range(p):
        s = 0.0
        for i in range(n):
            s += v[i] * X[i, k]
        if shrink[k]:
            pr = -2.0 * beta[k] / (S**2 + beta[k] ** 2)
        else:
            pr = -beta[k] / sigma**2
        grad[k] = -s - pr


# ----------------------------------------------------------------------------------------------
# LBFGSpp's L-BFGS with the Nocedal-Wright line search (RcppNumerical's optim_lbfgs)
# ----------------------------------------------------------------------------------------------
@inner
def _quad_interp(step_lo, step_hi, fx_lo, fx_hi, dg_lo):
    fdiff = fx_hi - fx_lo
    sdiff = step_hi - step_lo
    smid = (step_hi + step_lo) / 2.0
    cand = fdiff * step_lo - smid * sdiff * dg_lo
    cand = cand / (fdiff - sdiff * dg_lo)
    end_dist = min(abs(cand - step_lo), abs(cand - step_hi))
    near_end = end_dist < 0.01 * abs(sdiff)
    bisect = (not np.isfinite(cand)) or cand <= min(step_lo, step_hi) or cand >= max(step_lo, step_hi) or near_end
    return smid if bisect else cand


@inner
def _lbfgs(x, X, y, off, size, sigma2, S2, shrink, cnst, w):
    """Minimise the C++ objective from ``x`` (updated in place, as LBFGSpp leaves it); returns
    ``_OK`` or ``_LS_FAILED`` (LBFGSpp threw: RcppNumerical's status -1).

    One long function on purpose: it replays LBFGSpp's ``minimize``, its line search and its
    two-loop recursion statement by statement (same tests, same order of operations, inlined for
    numba), because R's modes are whatever that sequence of iterates stops at."""
    p = x.shape[0]
    grad = np.empty(p)
    xp = np.empty(p)
    gradp = np.empty(p)
    drt = np.empty(p)
    x_lo = np.empty(p)
    grad_lo = np.empty(p)
    vs = np.empty(p)
    vy = np.empty(p)
    tmp = np.empty(p)
    S_h = np.zeros((_M, p))
    Y_h = np.zeros((_M, p))
    ys_h = np.zeros(_M)
    al = np.zeros(_M)
    theta = 1.0
    ncorr = 0
    ptr = _M

    fx = _cpp_fg(x, X, y, off, size, sigma2, S2, shrink, cnst, grad, w)
    gnorm = math.sqrt(_edot(grad, grad, p, tmp))
    fx_prev = fx
    if gnorm <= _EPS_G or gnorm <= _EPS_G * math.sqrt(_edot(x, x, p, tmp)):
        return _OK
    for i in range(p):
        drt[i] = -grad[i]
    step = 1.0 / math.sqrt(_edot(drt, drt, p, tmp))
    k = 1
    while True:
        for i in range(p):
            xp[i] = x[i]
            gradp[i] = grad[i]
        dg = _edot(grad, drt, p, tmp)
        # ---- line search (Nocedal & Wright, algorithms 3.5 and 3.6) ----
        fx_init = fx
        dg_init = dg
        if dg_init > 0.0:
            return _LS_FAILED
        test_decr = _FTOL * dg_init
        test_curv = -_WOLFE * dg_init
        step_lo = 0.0
        fx_lo = fx_init
        dg_lo = dg_init
        step_hi = 0.0
        fx_hi = 0.0
        for i in range(p):
            x_lo[i] = xp[i]
            grad_lo[i] = grad[i]
        it = 0
        done = False
        while True:
            for i in range(p):
                x[i] = xp[i] + step * drt[i]
            fx = _cpp_fg(x, X, y, off, size, sigma2, S2, shrink, cnst, grad, w)
            dg = _edot(grad, drt, p, tmp)
            if fx - fx_init > step * test_decr or (0.0 < step_lo and fx >= fx_lo):
                step_hi = step
                fx_hi = fx
                break
            if abs(dg) <= test_curv:
                done = True
                break
            step_hi = step_lo
            fx_hi = fx_lo
            step_lo = step
            fx_lo = fx
            dg_lo = dg
            for i in range(p):
                x_lo[i] = x[i]
                grad_lo[i] = grad[i]
            if dg >= 0.0:
                break
            it += 1
            if it >= _MAX_LS:
                done = True  # x, grad, fx are the last (= best) point
                break
            step *= 2.0
        if not done:
            while True:
                step = _quad_interp(step_lo, step_hi, fx_lo, fx_hi, dg_lo)
                for i in range(p):
                    x[i] = xp[i] + step * drt[i]
                fx = _cpp_fg(x, X, y, off, size, sigma2, S2, shrink, cnst, grad, w)
                dg = _edot(grad, drt, p, tmp)
                if fx - fx_init > step * test_decr or fx >= fx_lo:
                    if step == step_hi:
                        return _LS_FAILED
                    step_hi = step
                    fx_hi = fx
                else:
                    if abs(dg) <= test_curv:
                        break
                    if dg * (step_hi - step_lo) >= 0.0:
                        step_hi = step_lo
                        fx_hi = fx_lo
                    if step == step_lo:
                        return _LS_FAILED
                    step_lo = step
                    fx_lo = fx
                    dg_lo = dg
                    for i in range(p):
                        x_lo[i] = x[i]
                        grad_lo[i] = grad[i]
                it += 1
                if it >= _MAX_LS:
                    if step_lo <= 0.0:
                        return _LS_FAILED
                    step = step_lo
                    fx = fx_lo
                    for i in range(p):
                        x[i] = x_lo[i]
                        grad[i] = grad_lo[i]
                    break
        # ---- convergence tests ----
        gnorm = math.sqrt(_edot(grad, grad, p, tmp))
        if gnorm <= _EPS_G or gnorm <= _EPS_G * math.sqrt(_edot(x, x, p, tmp)):
            return _OK
        if abs(fx_prev - fx) <= _EPS_F * max(max(abs(fx), abs(fx_prev)), 1.0):
            return _OK
        fx_prev = fx
        if k >= _MAXIT:
            return _OK
        # ---- update the L-BFGS memory and the direction ----
        for i in range(p):
            vs[i] = x[i] - xp[i]
            vy[i] = grad[i] - gradp[i]
        if _edot(vs, vy, p, tmp) > _DBL_EPS * _edot(vy, vy, p, tmp):
            loc = ptr % _M
            for i in range(p):
                S_h[loc, i] = vs[i]
                Y_h[loc, i] = vy[i]
            ysv = _edot(S_h[loc], Y_h[loc], p, tmp)
            ys_h[loc] = ysv
            theta = _edot(Y_h[loc], Y_h[loc], p, tmp) / ysv
            if ncorr < _M:
                ncorr += 1
            ptr = loc + 1
        for i in range(p):
            drt[i] = -1.0 * grad[i]
        j = ptr % _M
        for _ in range(ncorr):
            j = (j + _M - 1) % _M
            al[j] = _edot(S_h[j], drt, p, tmp) / ys_h[j]
            for i in range(p):
                drt[i] -= al[j] * Y_h[j, i]
        for i in range(p):
            drt[i] /= theta
        for _ in range(ncorr):
            bt = _edot(Y_h[j], drt, p, tmp) / ys_h[j]
            for i in range(p):
                drt[i] += (al[j] - bt) * S_h[j, i]
            j = (j + 1) % _M
        step = 1.0
        k += 1


# ----------------------------------------------------------------------------------------------
# R's optimHess and optim(method = "BFGS") on nbinomFn / nbinomGr
# ----------------------------------------------------------------------------------------------
@inner
def _optim_hess(par, X, y, off, size, sigma, S, shrink, H, w):
    """R's ``optimHess`` with the analytic gradient: central differences (step 1e-3), symmetrised."""
    p = par.shape[0]
    dpar = par.copy()
    g1 = np.empty(p)
    g2 = np.empty(p)
    for i in range(p):
        dpar[i] = dpar[i] + _NDEPS
        _r_gr(dpar, X, y, off, size, sigma, S, shrink, g1, w)
        dpar[i] = dpar[i] - 2.0 * _NDEPS
        _r_gr(dpar, X, y, off, size, sigma, S, shrink, g2, w)
        for j in range(p):
            H[j, i] = (g1[j] - g2[j]) / (2.0 * _NDEPS)
        dpar[i] = dpar[i] + _NDEPS
    for i in range(p):
        for j in range(i):
            t = 0.5 * (H[j, i] + H[i, j])
            H[j, i] = t
            H[i, j] = t


@inner
def _inverse_diag(H, out):
    """Diagonal of ``solve(H)`` (Gaussian elimination with partial pivoting, as LAPACK's dgesv);
    False if ``H`` is singular."""
    p = H.shape[0]
    A = H.copy()
    B = np.eye(p)
    for c in range(p):
        piv = c
        big = abs(A[c, c])
        for r in range(c + 1, p):
            if abs(A[r, c]) > big:
                big = abs(A[r, c])
                piv = r
        if big == 0.0 or not np.isfinite(big):
            return False
        if piv != c:
            for k in range(p):
                t = A[c, k]
                A[c, k] = A[piv, k]
                A[piv, k] = t
                t = B[c, k]
                B[c, k] = B[piv, k]
                B[piv, k] = t
        for r in range(c + 1, p):
            f = A[r, c] / A[c, c]
            if f != 0.0:
                for k in range(c, p):
                    A[r, k] -= f * A[c, k]
                for k in range(p):
                    B[r, k] -= f * B[c, k]
    for col in range(p):
        for r in range(p - 1, -1, -1):
            s = B[r, col]
            for k in range(r + 1, p):
                s -= A[r, k] * B[k, col]
            B[r, col] = s / A[r, r]
        out[col] = B[col, col]
    return True


@inner
def _vmmin(b, X, y, off, size, sigma, S, shrink, cnst, w):
    """R's ``vmmin`` (``optim(method = "BFGS")``, default controls) on ``nbinomFn``; ``b`` is
    updated in place. Returns the number of gradient evaluations (R's ``counts[2]``). Kept as one
    function to follow R's loop (restarts, backtracking, the inverse-Hessian update) line by line."""
    n = b.shape[0]
    g = np.empty(n)
    t = np.empty(n)
    Xv = np.empty(n)
    c = np.empty(n)
    B = np.zeros((n, n))
    f = _r_fn(b, X, y, off, size, sigma, S, shrink, cnst, w)
    if not np.isfinite(f):
        return -1
    fmin = f
    funcount = 1
    gradcount = 1
    _r_gr(b, X, y, off, size, sigma, S, shrink, g, w)
    it = 1
    ilast = gradcount
    count = 0
    while True:
        if ilast == gradcount:
            for i in range(n):
                for j in range(i):
                    B[i, j] = 0.0
                B[i, i] = 1.0
        for i in range(n):
            Xv[i] = b[i]
            c[i] = g[i]
        gradproj = 0.0
        for i in range(n):
            s = 0.0
            for j in range(i + 1):
                s -= B[i, j] * g[j]
            for j in range(i + 1, n):
                s -= B[j, i] * g[j]
            t[i] = s
            gradproj += s * g[i]
        if gradproj < 0.0:
            steplength = 1.0
            accpoint = False
            while True:
                count = 0
                for i in range(n):
                    b[i] = Xv[i] + steplength * t[i]
                    if 10.0 + Xv[i] == 10.0 + b[i]:
                        count += 1
                if count < n:
                    f = _r_fn(b, X, y, off, size, sigma, S, shrink, cnst, w)
                    funcount += 1
                    accpoint = np.isfinite(f) and (f <= fmin + gradproj * steplength * 1e-4)
                    if not accpoint:
                        steplength *= 0.2
                if count == n or accpoint:
                    break
            enough = (f > -np.inf) and abs(f - fmin) > _BFGS_RELTOL * (abs(fmin) + _BFGS_RELTOL)
            if not enough:
                count = n
                fmin = f
            if count < n:
                fmin = f
                _r_gr(b, X, y, off, size, sigma, S, shrink, g, w)
                gradcount += 1
                it += 1
                D1 = 0.0
                for i in range(n):
                    t[i] = steplength * t[i]
                    c[i] = g[i] - c[i]
                    D1 += t[i] * c[i]
                if D1 > 0:
                    D2 = 0.0
                    for i in range(n):
                        s = 0.0
                        for j in range(i + 1):
                            s += B[i, j] * c[j]
                        for j in range(i + 1, n):
                            s += B[j, i] * c[j]
                        Xv[i] = s
                        D2 += s * c[i]
                    D2 = 1.0 + D2 / D1
                    for i in range(n):
                        for j in range(i + 1):
                            B[i, j] += (D2 * t[i] * t[j] - Xv[i] * t[j] - t[i] * Xv[j]) / D1
                else:
                    ilast = gradcount
            else:
                if ilast < gradcount:
                    count = 0
                    ilast = gradcount
        else:
            count = 0
            if ilast == gradcount:
                count = n
            else:
                ilast = gradcount
        if it >= _BFGS_MAXIT:
            break
        if gradcount - ilast > 2 * n:
            ilast = gradcount
        if not (count != n or ilast != gradcount):
            break
    return gradcount


# ----------------------------------------------------------------------------------------------
# one gene, and the block kernel
# ----------------------------------------------------------------------------------------------
@inner
def _ape_gene(X, y, off, size, sigma, S, shrink, init_nan, out_map, out_sd, out_info):
    """apeglm's ``nbinomCppRoutine`` then ``apeglm.single``/``optimNbinomHess`` for one gene.

    ``out_info``: [conv (0 or -1 after the C++ fits), refitted by optim (0/1), optim's gradient
    count, posterior variance not positive (0/1)]."""
    n, p = X.shape
    sigma2 = sigma * sigma
    S2 = S * S
    w = np.empty((3, max(n, p)))
    zero = np.zeros(p)
    # the scale of the C++ objective: R's nbinomFn at 0 (no constant), at least 1
    cnst = _r_fn(zero, X, y, off, size, sigma, S, shrink, 0.0, w)
    if not cnst > 1.0:
        cnst = 1.0
    b1 = np.empty(p)
    b2 = np.empty(p)
    for j in range(p):
        b1[j] = 0.1 if j % 2 == 0 else -0.1
        b2[j] = -b1[j]
    st = _lbfgs(b1, X, y, off, size, sigma2, S2, shrink, cnst, w)
    _lbfgs(b2, X, y, off, size, sigma2, S2, shrink, cnst, w)
    conv = 0.0 if st == _OK else -1.0
    delta = 0.0
    for j in range(p):
        dj = abs(b1[j] - b2[j])
        if dj > delta or np.isnan(dj):
            delta = dj
    if delta > 0.01:
        conv = -1.0
    par = b1.copy()
    has_nan = False
    for j in range(p):
        if np.isnan(par[j]):
            has_nan = True
    if has_nan:  # apeglm starts R's fit from (log basemean, -1, 1, ...) instead
        for j in range(p):
            par[j] = init_nan[j]
    # optimNbinomHess
    H = np.empty((p, p))
    var = np.empty(p)
    refit = conv != 0.0
    if not refit:
        _optim_hess(par, X, y, off, size, sigma, S, shrink, H, w)
        if not _inverse_diag(H, var):
            refit = True
        else:
            for j in range(p):
                if not var[j] > 0.0:
                    refit = True
    out_info[0] = conv
    out_info[1] = 0.0
    out_info[2] = np.nan
    if refit:
        cst = -_r_fn(par, X, y, off, size, sigma, S, shrink, 0.0, w) - 1.0
        gc = _vmmin(par, X, y, off, size, sigma, S, shrink, cst, w)
        out_info[1] = 1.0
        out_info[2] = gc
        _optim_hess(par, X, y, off, size, sigma, S, shrink, H, w)
        if not _inverse_diag(H, var):
            for j in range(p):
                var[j] = np.nan
    for j in range(p):
        out_map[j] = par[j]
    ok = True
    for j in range(p):
        if not var[j] > 0.0:
            ok = False
    out_info[3] = 0.0 if ok else 1.0
    for j in range(p):
        out_sd[j] = math.sqrt(var[j]) if ok else np.nan


@kernel
def _ape_rows(X, Y, OFF, off_shared, size, sigma, S, shrink, init_nan, out_map, out_sd, out_info):
    for i in range(Y.shape[0]):
        off = OFF[0] if off_shared else OFF[i]
        _ape_gene(X, Y[i], off, size[i], sigma, S, shrink, init_nan[i], out_map[i], out_sd[i], out_info[i])


def _ape_block(X, Y, OFF, off_shared, size, sigma, S, shrink, init_nan, out_map, out_sd, out_info, nchunks):
    """:func:`_ape_rows` over contiguous chunks of genes in threads."""

    def one(lo, hi):
        _ape_rows(
            X, Y[lo:hi], OFF if off_shared else OFF[lo:hi], off_shared, size[lo:hi], sigma, S, shrink,
            init_nan[lo:hi], out_map[lo:hi], out_sd[lo:hi], out_info[lo:hi],
        )  # fmt: skip

    run_chunks(one, Y.shape[0], nchunks)


# ----------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------
@dataclass
class ApeglmFit:
    """What ``apeglm()`` returns for one coefficient (natural-log scale, genes in rows).

    ``map``/``sd``: posterior modes and SDs of every coefficient (NaN for genes with only zero
    counts; ``sd`` NaN where the posterior variance is not positive); ``conv``: 0, or -1 where the
    C++ fits failed or disagreed (NaN for all-zero genes); ``refit``: refitted by R's BFGS;
    ``fsr``: false sign rate of ``coef``; ``thresh``: probability of a false sign or a change below
    the threshold (with a threshold); ``svalue``: s-values of ``thresh`` (or of ``fsr``)."""

    map: np.ndarray
    sd: np.ndarray
    conv: np.ndarray
    refit: np.ndarray
    fsr: np.ndarray
    thresh: np.ndarray | None
    svalue: np.ndarray
    coef: int
    prior_scale: float
    prior_var: float | None
    no_shrink: list[int]


def _validate(counts, X, coef, dispersion, size_factors, norm_factors, mle):
    n, g = counts.shape
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"design must have one row per sample ({n}), got shape {X.shape}")
    p = X.shape[1]
    if not 1 <= coef < p:
        raise ValueError(
            f"coef must index a column of the design other than the first (apeglm does not shrink it), got {coef} for "
            f"{p} columns"
        )
    if dispersion.shape != (g,):
        raise ValueError(f"dispersion must have one value per gene ({g}), got shape {dispersion.shape}")
    if (size_factors is None) == (norm_factors is None):
        raise ValueError("give exactly one of size_factors and norm_factors")
    if mle is not None and mle.shape != (g, 2):
        raise ValueError(f"mle must be genes × 2 (estimate, standard error), got shape {mle.shape}")


def _ape_block_task(blk: Block, X, sf_off, base_samples, init_rest, scale: float, shrink, disp_b):
    """apeglm on the genes of one block that are not all zero: their local indices, MAP
    estimates, posterior SDs and the fit information (convergence, refit)."""
    y = blk.read(0, gene_major=True)
    nz = y.sum(axis=1) > 0
    if not nz.any():
        return None
    p = X.shape[1]
    y = np.ascontiguousarray(y[nz])
    if sf_off is not None:
        off, shared = sf_off, True
    else:
        off = np.ascontiguousarray(np.log(blk.read(1, gene_major=True)[nz]))
        shared = False
    size = 1.0 / disp_b[nz]
    bm = y[:, base_samples].mean(axis=1)
    init_nan = np.tile(init_rest, (y.shape[0], 1))
    init_nan[:, 0] = np.where(bm == 0, 0.0, np.log(np.where(bm == 0, 1.0, bm)))
    m = np.empty((y.shape[0], p))
    s = np.empty((y.shape[0], p))
    inf = np.empty((y.shape[0], 4))
    _ape_block(
        X, y, off, shared, np.ascontiguousarray(size), NO_SHRINK_SCALE, scale, shrink, init_nan, m, s, inf,
        n_chunks(y.shape[0]),
    )  # fmt: skip
    return np.flatnonzero(nz), m, s, inf


def apeglm_shrink(
    counts,
    design: np.ndarray,
    coef: int,
    dispersion: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors=None,
    mle: np.ndarray | None = None,
    threshold: float | None = None,
    block_genes: int | None = None,
    on_block: Callable[[str], None] | None = None,
) -> ApeglmFit:
    """apeglm's ``apeglm(Y, x, param = dispersion, coef, mle, threshold, offset, method = "nbinomCR")``
    as DESeq2's ``lfcShrink(type = "apeglm")`` calls it.

    Parameters
    ----------
    counts
        Samples × genes counts (numpy, scipy sparse or dask; read in blocks of genes).
    design
        The model matrix (samples × coefficients) the dispersions were estimated with.
    coef
        Index of the coefficient to shrink (not 0: apeglm never shrinks the first column).
    dispersion
        Final negative binomial dispersion per gene (NaN allowed for genes with only zeros).
    size_factors, norm_factors
        One of them: the offsets are ``log(size_factors)`` or ``log(norm_factors)`` (samples × genes).
    mle
        Genes × 2: the maximum likelihood estimate of ``coef`` and its standard error (natural
        log scale; DESeq2's ``log(2) * cbind(log2FoldChange, lfcSE)``). Given: the adaptive prior
        (``apeAdapt = TRUE``); ``None``: Cauchy(0, 1) on every column but the first.
    threshold
        ``T`` > 0 on the natural log scale: also the probabilities of a false sign or small
        change and their s-values (DESeq2's ``lfcThreshold * log(2)``).
    """
    X = np.ascontiguousarray(np.asarray(design, dtype=np.float64))
    disp = np.asarray(dispersion, dtype=np.float64).ravel()
    mle = None if mle is None else np.asarray(mle, dtype=np.float64)
    n, g = counts.shape
    p = X.shape[1]
    _validate(counts, X, int(coef), disp, size_factors, norm_factors, mle)
    if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    coef = int(coef)
    if mle is not None:
        prior_var: float | None = prior_variance(mle[:, 0], mle[:, 1])
        scale = min(math.sqrt(prior_var), 1.0)
        no_shrink = [j for j in range(p) if j != coef]
    else:
        prior_var, scale, no_shrink = None, 1.0, [0]
    shrink = np.ones(p, dtype=np.bool_)
    shrink[no_shrink] = False
    # samples whose design row has exactly one non-zero entry: apeglm's "basemean" for a restart
    base_samples = (X == 0).sum(axis=1) == p - 1
    if not base_samples.any():
        base_samples[:] = True
    init_rest = np.array([1.0 if j % 2 == 0 else -1.0 for j in range(p)])
    sf_off = None
    if norm_factors is None:
        sf = np.asarray(size_factors, dtype=np.float64).ravel()
        sf_off = np.ascontiguousarray(np.log(sf)[None, :])

    out_map = np.full((g, p), np.nan)
    out_sd = np.full((g, p), np.nan)
    info = np.full((g, 4), np.nan)
    blocks = blocks_for(counts, n, block_genes=block_genes)
    parts = map_gene_blocks(
        _ape_block_task, [counts, norm_factors], blocks,
        args=(X, sf_off, base_samples, init_rest, float(scale), shrink), per_block=lambda i, sl: (disp[sl],),
        on_block=on_block, stage="apeglm",
    )  # fmt: skip
    for sl, r in zip(blocks, parts, strict=True):
        if r is not None:
            idx = sl.start + r[0]
            out_map[idx], out_sd[idx], info[idx] = r[1:]
    fsr, thresh = tail_probabilities(out_map[:, coef], out_sd[:, coef], threshold)
    return ApeglmFit(
        map=out_map, sd=out_sd, conv=info[:, 0], refit=info[:, 1] == 1.0, fsr=fsr, thresh=thresh,
        svalue=svalue(thresh if thresh is not None else fsr), coef=coef, prior_scale=float(scale),
        prior_var=prior_var, no_shrink=no_shrink,
    )  # fmt: skip
