"""Compiled per-gene kernels (numba) for limma's variance-component fits.

:func:`glmgam_identity2`
    statmod's ``glmgam.fit`` (statmod 1.5) for the two-column design ``[1, d]`` that
    ``mixedModel2Fit`` hands it: a gamma GLM with identity link by Fisher scoring with
    Levenberg damping, one small problem per gene, every gene following R's start, damping,
    acceptance and stopping rules. Genes are independent.
:func:`array_weights_gene_by_gene`
    limma's ``.arrayWeightsGeneByGene`` (limma 3.68): one scoring update of the log sample
    weights per gene, in gene order. The update of each gene starts from the weights left by
    the previous one, so the loop is sequential by construction; it runs in compiled code.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import inner, kernel

#: R's ``qr()`` tolerance for rank detection (``lm.fit``/``lm.wfit``)
_QR_TOL = 1e-7


# --------------------------------------------------------------------------------------------
# statmod::glmgam.fit for mixedModel2Fit
# --------------------------------------------------------------------------------------------


@kernel
def _gamma_deviance(y, mu):
    """statmod's ``deviance.gamma``: Inf for a negative mean, observations with ``y`` and ``mu``
    both (near) zero left out."""
    m = y.size
    for i in range(m):
        if mu[i] < 0.0:
            return math.inf
    dev = 0.0
    for i in range(m):
        if y[i] < 1e-15 and mu[i] < 1e-15:
            continue
        dev += (y[i] - mu[i]) / mu[i] - math.log(y[i] / mu[i])
    return 2.0 * dev


@inner
def _max(a):
    m = a[0]
    for i in range(1, a.size):
        if a[i] > m:
            m = a[i]
    return m


@inner
def _glmgam_one(d, y, b0, b1, tol, maxit):
    """One gene of :func:`glmgam_identity2`; returns the two coefficients (NaN where R errors)."""
    m = y.size
    if _max(y) == 0.0:
        return 0.0, 0.0
    mu = np.empty(m)
    v = np.empty(m)
    for i in range(m):
        mu[i] = b0 + b1 * d[i]
        if mu[i] < 0.0:
            return math.nan, math.nan  # "Starting values give negative fitted values"
    dev = _gamma_deviance(y, mu)
    it = 0
    lam = 0.0
    while True:
        it += 1
        vmax = 0.0
        for i in range(m):
            v[i] = mu[i] * mu[i]
            if v[i] > vmax:
                vmax = v[i]
        a11 = 0.0
        a12 = 0.0
        a22 = 0.0
        dl1 = 0.0
        dl2 = 0.0
        for i in range(m):
            vi = max(v[i], vmax / 1e3)
            a11 += 1.0 / vi
            a12 += d[i] / vi
            a22 += d[i] * d[i] / vi
            r = (y[i] - mu[i]) / vi
            dl1 += r
            dl2 += d[i] * r
        maxinfo = max(a11, a22)
        if it == 1:
            lam = abs((a11 + a22) / 2.0) / 2.0
        old0 = b0
        old1 = b1
        devold = dev
        lev = 0
        db0 = 0.0
        db1 = 0.0
        while True:
            lev += 1
            # chol(XVX + lambda * I) and the two triangular solves
            c11 = a11 + lam
            c22 = a22 + lam
            if not c11 > 0.0:
                return math.nan, math.nan
            l11 = math.sqrt(c11)
            l21 = a12 / l11
            s = c22 - l21 * l21
            if not s > 0.0:
                return math.nan, math.nan
            l22 = math.sqrt(s)
            z1 = dl1 / l11
            z2 = (dl2 - l21 * z1) / l22
            db1 = z2 / l22
            db0 = (z1 - l21 * db1) / l11
            b0 = old0 + db0
            b1 = old1 + db1
            for i in range(m):
                mu[i] = b0 + b1 * d[i]
            dev = _gamma_deviance(y, mu)
            if dev <= devold:
                break
            ratio = dev / _max(mu)
            if math.isnan(ratio) or math.isnan(dev):
                return math.nan, math.nan  # R: missing value where TRUE/FALSE needed
            if ratio < 1e-15:
                break
            if lam / maxinfo > 1e15:
                b0 = old0
                b1 = old1
                break
            lam = 2.0 * lam
        if lam / maxinfo > 1e15:
            break
        if lev == 1:
            lam = lam / 10.0
        if dl1 * db0 + dl2 * db1 < tol:
            break
        ratio = dev / _max(mu)
        if math.isnan(ratio):
            return math.nan, math.nan
        if ratio < 1e-15:
            break
        if it > maxit:
            break
    return b0, b1


@kernel
def glmgam_identity2(d, y, start, tol, maxit):
    """statmod's ``glmgam.fit(cbind(1, d), y, coef.start = start, tol, maxit)`` for every row
    (gene) of ``d`` and ``y`` (genes × m); returns genes × 2 coefficients, NaN where R errors."""
    g = y.shape[0]
    out = np.empty((g, 2))
    for k in range(g):
        c0, c1 = _glmgam_one(d[k], y[k], start[k, 0], start[k, 1], tol, maxit)
        out[k, 0] = c0
        out[k, 1] = c1
    return out


# --------------------------------------------------------------------------------------------
# limma:::.arrayWeightsGeneByGene
# --------------------------------------------------------------------------------------------


@inner
def _wls_hat(X, y, w, resid, h):
    """Weighted least squares of ``y`` on ``X`` (rows with ``w > 0``) by modified Gram-Schmidt on
    ``sqrt(w) X`` with R's rank rule (a column whose norm after removing the earlier kept columns
    is below 1e-7 of its own norm is dropped, as ``lm.wfit``'s pivoting QR). Writes the
    (unweighted) residuals and the leverages; returns the weighted residual sum of squares and
    the rank."""
    n, p = X.shape
    sw = np.sqrt(w)
    Q = np.empty((n, p))
    rank = 0
    for j in range(p):
        norm0 = 0.0
        for i in range(n):
            Q[i, rank] = sw[i] * X[i, j]
            norm0 += Q[i, rank] * Q[i, rank]
        norm0 = math.sqrt(norm0)
        if norm0 == 0.0:
            continue
        for _ in range(2):
            for k in range(rank):
                dot = 0.0
                for i in range(n):
                    dot += Q[i, k] * Q[i, rank]
                for i in range(n):
                    Q[i, rank] -= dot * Q[i, k]
        nr = 0.0
        for i in range(n):
            nr += Q[i, rank] * Q[i, rank]
        nr = math.sqrt(nr)
        if nr > _QR_TOL * norm0:
            for i in range(n):
                Q[i, rank] /= nr
            rank += 1
    ys = sw * y
    r = ys.copy()
    for _ in range(2):
        for k in range(rank):
            dot = 0.0
            for i in range(n):
                dot += Q[i, k] * r[i]
            for i in range(n):
                r[i] -= dot * Q[i, k]
    rss = 0.0
    for i in range(n):
        rss += r[i] * r[i]
        resid[i] = r[i] / sw[i]
        hh = 0.0
        for k in range(rank):
            hh += Q[i, k] * Q[i, k]
        h[i] = hh
    return rss, rank


@kernel
def array_weights_gene_by_gene(E, design, weights, use_weights, Z2, info2, zptr, zcol, zval):
    """limma's ``.arrayWeightsGeneByGene``: ``E`` genes × samples (NaN for missing), ``design``
    samples × p (full column rank), ``weights`` genes × samples prior weights (used when
    ``use_weights``), ``Z2`` samples × q the variance design (also as compressed rows ``zptr``,
    ``zcol``, ``zval``), ``info2`` its prior information ``prior.n * t(Z2) Z2`` (updated in
    place). Returns the sample weights."""
    g, n = E.shape
    q = Z2.shape[1]
    gam = np.zeros(q)
    aw = np.ones(n)
    w = np.empty(n)
    d = np.zeros(n)
    h1 = np.zeros(n)
    for gene in range(g):
        for j in range(n):
            w[j] = aw[j] * weights[gene, j] if use_weights else aw[j]
        y = E[gene]
        nobs = 0
        for j in range(n):
            if not math.isnan(y[j]):
                nobs += 1
        if nobs < n:
            if nobs <= 2:
                continue
            obs = np.empty(nobs, dtype=np.int64)
            k = 0
            for j in range(n):
                if not math.isnan(y[j]):
                    obs[k] = j
                    k += 1
            Xo = design[obs]
            resid = np.empty(nobs)
            h = np.empty(nobs)
            rss, rank = _wls_hat(Xo, y[obs], w[obs], resid, h)
            if nobs - rank < 2:
                continue
            for j in range(n):
                d[j] = 0.0
                h1[j] = 0.0
            for k in range(nobs):
                j = obs[k]
                d[j] = w[j] * resid[k] * resid[k]
                h1[j] = 1.0 - h[k]
        else:
            resid = np.empty(n)
            h = np.empty(n)
            rss, rank = _wls_hat(design, y, w, resid, h)
            for j in range(n):
                d[j] = w[j] * resid[j] * resid[j]
                h1[j] = 1.0 - h[j]
        df = nobs - rank
        if df <= 0:
            continue
        s2 = rss / df
        if s2 < 1e-15:
            continue
        # info = t(Z) diag(h1) Z with Z = cbind(1, Z2); info2 += its Schur complement. Summed
        # over the non-zero entries of each row of Z2 (contr.sum rows have one but the last)
        i11 = 0.0
        for j in range(n):
            i11 += h1[j]
        c = np.zeros(q)
        dl = np.zeros(q)
        for j in range(n):
            zj = d[j] / s2 - h1[j]
            for u in range(zptr[j], zptr[j + 1]):
                a = zcol[u]
                c[a] += h1[j] * zval[u]
                dl[a] += zval[u] * zj
                for v in range(zptr[j], zptr[j + 1]):
                    info2[a, zcol[v]] += zval[u] * h1[j] * zval[v]
        for a in range(q):
            for b in range(q):
                info2[a, b] -= c[a] * c[b] / i11
        step = np.linalg.solve(info2, dl)
        for a in range(q):
            gam[a] += step[a]
        for j in range(n):
            s = 0.0
            for a in range(q):
                s += Z2[j, a] * gam[a]
            aw[j] = math.exp(-s)
    return aw
