"""limma's variance moderation (limma 3.68, Bioconductor 3.23): ``squeezeVar``, ``fitFDist``,
``fitFDistRobustly``, ``fitFDistUnequalDF1``, ``trigammaInverse`` and statmod's ``logmdigamma``.

Two estimators of the prior (the scaled F distribution of the gene variances):

- the long-standing ones (``legacy = TRUE``): moment matching on ``log F`` with a natural-spline
  trend on a covariate (``fitFDist``), and its robust Winsorised form (``fitFDistRobustly``);
- ``fitFDistUnequalDF1`` (limma >= 3.62): the prior df by profile maximum likelihood, the
  ``log F`` location by a weighted mean or a weighted lowess trend (weights ``1/trigamma(df/2)``),
  robust form by refitting with FDR-based prior weights; made for residual df that differ between
  genes or are fractional (missing values, edgeR 4's adjusted df).

``squeezeVar(legacy = NULL)``, R's default, uses the new estimator exactly when the positive
residual df are not all identical. R's ``uniroot`` (``zeroin``) and ``optimize`` (``Brent_fmin``)
are reimplemented so that the iterations stop where R's do.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special
from scipy import stats as sst

from .._optimize import fmin, zeroin
from ..multitest import p_adjust_bh
from .lowess import _loess_fit_unweighted
from .splines import natural_spline_basis


def _trigamma(x):
    return special.polygamma(1, x)


# Bernoulli numbers B_2k / (2k) of the asymptotic series of log(x) - digamma(x), k = 1..8
_LMD_SERIES = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12, -3617 / 8160)


def logmdigamma(x) -> np.ndarray:
    """``log(x) - digamma(x)`` for ``x > 0`` without cancellation (statmod's ``logmdigamma``):
    the asymptotic series ``1/(2x) + sum B_2k / (2k x^2k)`` for ``x >= 5``, the recurrence
    ``digamma(x) = digamma(x + 5) - sum 1/(x + j)`` below; NaN for ``x <= 0``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    ok = x > 0
    z = np.where(ok, x, 1.0)
    small = z < 5
    zz = np.where(small, z + 5, z)
    u = 1 / zz**2
    tail = np.zeros(zz.shape)
    for c in reversed(_LMD_SERIES):
        tail = u * (c + tail)
    big = 1 / (2 * zz) + tail
    with np.errstate(divide="ignore"):
        rec = np.log(z / (z + 5)) + big + sum(1 / (z + j) for j in range(5))
    out[ok] = np.where(small, rec, big)[ok]
    return out


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
    e = z + logmdigamma(df1 / 2)
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
        s20 = np.exp(emean - logmdigamma(df2 / 2))
    else:
        df2 = np.inf
        s20 = float(np.mean(x)) if cov is None else np.exp(emean)
    return s20, df2




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
    x[small] = m * 1e-12  # limma >= 3.62 offsets them without a warning

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
        u = zeroin(fun, rbx, 1.0, funval_low, funval_inf, tol=1e-8)
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


def _f_two_tails(fstat, df1, df2):
    """Upper tail probabilities of ``F(df1, df2)`` and lower ones recomputed directly where small
    (as ``fitFDistUnequalDF1`` does)."""
    right = sst.f.sf(fstat, df1, df2)
    left = 1 - right
    low = left < 0.001
    if low.any():
        d1 = df1[low] if np.ndim(df1) else df1
        left[low] = sst.f.cdf(fstat[low], d1, df2)
    return right, left


def fit_f_dist_unequal_df1(
    x, df1, covariate=None, *, span: float | None = None, robust: bool = False, prior_weights=None
) -> dict:
    """Scaled F distribution ``x ~ scale * F(df1, df2)`` fitted with attention to unequal or
    fractional ``df1`` (limma 3.68 ``fitFDistUnequalDF1``).

    ``log x`` is centred by ``logmdigamma(df1/2)``; its location is the mean (or, with
    ``covariate``, a :func:`~bulkpy._stats.limma.weighted_lowess.loess_fit` trend with span
    ``chooseLowessSpan(n, small.n = 500)`` unless ``span`` is given) weighted by
    ``1/trigamma(df1/2)``; ``df2`` maximises the profile likelihood (R's ``optimize`` over
    ``df2/(1 + df2)/2``-scale in ``[1/2, 0.9998]``). Values with ``df1 < 0.01`` or missing ``x``
    carry no weight. ``robust=True``: two-sided outliers (BH FDR <= 0.3 of the F tail
    probabilities) are down-weighted by their FDR in a refit, and right outliers get a smaller
    per-value ``df2_shrunk``.

    Returns a dict with ``scale`` (scalar or per value), ``df2`` and, when robust found right
    outliers, ``df2_outlier`` and ``df2_shrunk``.
    """
    from .lowess import choose_lowess_span
    from .weighted_lowess import loess_fit

    x = np.array(x, dtype=np.float64).ravel()
    n = x.size
    df1 = np.array(df1, dtype=np.float64).ravel()
    if df1.size not in (1, n):
        raise ValueError("x and df1 are different lengths")
    if np.isnan(df1).any():
        raise ValueError("NA df1 values")
    cov = None
    if covariate is not None:
        cov = np.asarray(covariate, dtype=np.float64).ravel()
        if cov.size != n:
            raise ValueError("x and covariate are different lengths")
        if np.isnan(cov).any():
            raise ValueError("covariate contains NA values")
    pw = None
    if prior_weights is not None:
        pw = np.array(prior_weights, dtype=np.float64).ravel()
        if pw.size != n:
            raise ValueError("x and prior_weights are different lengths")
        if np.isnan(pw).any() or pw.min() < 0:
            raise ValueError("prior_weights must be non-negative numbers")
    miss = np.isnan(x)
    if miss.any():
        pw = (~miss).astype(np.float64) if pw is None else np.where(miss, 0.0, pw)
        x[miss] = 0.0
    if df1.min() < 0.01:
        tiny = df1 < 0.01
        if df1.size < n:  # a single tiny df1: every value is uninformative
            tiny = np.full(n, bool(tiny[0]))
        pw = (~tiny).astype(np.float64) if pw is None else np.where(tiny, 0.0, pw)
        df1 = np.where(df1 < 0.01, 1.0, df1)
    informative = x > 0
    if pw is not None:
        informative &= pw != 0
    n_inf = int(informative.sum())
    if n_inf < 2:
        return {"scale": np.nan, "df2": np.nan}
    if n_inf == 2:
        cov, robust, pw = None, False, None

    m = np.median(x[informative])
    xpos = np.maximum(x, 1e-12 * m)
    z = np.log(xpos)
    d1 = df1 / 2
    e = z + logmdigamma(d1)
    w = np.broadcast_to(1 / _trigamma(d1), (n,)).astype(np.float64)
    if pw is not None:
        w = w * pw
    if cov is None:
        emean = float(np.sum(w * e) / np.sum(w))
    else:
        if span is None:
            span = choose_lowess_span(n, small_n=500)
        emean = loess_fit(
            e, cov, w / np.quantile(w, 0.75), span=span, iterations=1, min_weight=1e-8, max_weight=1e2
        )
    d1x = d1 * xpos

    def minus_twice_loglik(par):
        d2 = par / (1 - par)
        d2s20 = d2 * np.exp(emean - logmdigamma(d2))
        ll = (
            -(d1 + d2) * np.log1p(d1x / d2s20)
            - d1 * np.log(d2s20)
            + special.gammaln(d1 + d2)
            - special.gammaln(d2)
        )
        if pw is not None:
            ll = pw * ll
        return float(-2 * np.sum(ll))

    par = fmin(minus_twice_loglik, 0.5, 0.9998)
    d2 = par / (1 - par)
    s20 = np.exp(emean - logmdigamma(d2))
    if not robust:
        return {"scale": s20, "df2": 2 * d2}

    df2 = 2 * d2
    fstat = x / s20
    right, left = _f_two_tails(fstat, df1 if df1.size > 1 else df1[0], df2)
    fdr = p_adjust_bh(2 * np.minimum(left, right))
    fdr[fdr > 0.3] = 1.0
    if fdr.min() == 1:
        return {"scale": s20, "df2": df2}
    refit = fit_f_dist_unequal_df1(x, df1, cov, span=span, robust=False, prior_weights=fdr)
    s20, df2 = refit["scale"], refit["df2"]
    r = sst.rankdata(fstat)
    prob_not = np.minimum(right / ((n - r + 0.5) / n), 1.0)
    if prob_not.min() == 1:
        return refit
    i = int(np.argmin(right))
    if right[i] == 0:
        df2_outlier = 0.0
        df2_shrunk = prob_not * df2
    else:
        df2_outlier = np.log(0.5) / np.log(right[i]) * df2
        d1i = df1[i] if df1.size > 1 else df1[0]
        new_log_right = sst.f.logsf(fstat[i], d1i, df2_outlier)
        df2_outlier = np.log(0.5) / new_log_right * df2_outlier
        df2_shrunk = prob_not * df2 + (1 - prob_not) * df2_outlier
    o = np.argsort(right, kind="stable")
    ordered = df2_shrunk[o]
    cm = np.cumsum(ordered) / np.arange(1, n + 1)
    imin = int(np.argmin(cm))
    ordered[: imin + 1] = cm[imin]
    df2_shrunk = np.empty(n)
    df2_shrunk[o] = np.maximum.accumulate(ordered)
    return {"scale": s20, "df2": df2, "df2_outlier": float(df2_outlier), "df2_shrunk": df2_shrunk}


def choose_legacy(df) -> bool:
    """``squeezeVar(legacy = NULL)``'s choice: the long-standing estimators when the positive
    residual df are all identical, :func:`fit_f_dist_unequal_df1` otherwise (also when no df is
    positive, as R's ``identical(min(dfp), max(dfp))`` is then false)."""
    df = np.asarray(df, dtype=np.float64).ravel()
    dfp = df[df > 0]
    return bool(dfp.size > 0 and dfp.min() == dfp.max())


def squeeze_var(
    var,
    df,
    *,
    covariate=None,
    span: float | None = None,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
    legacy: bool | None = None,
):
    """Empirical Bayes posterior variances (limma 3.68 ``squeezeVar``).

    Parameters
    ----------
    var
        Gene variances.
    df
        Their residual degrees of freedom (scalar or per gene; may be fractional).
    covariate
        Optional covariate of the prior variance (e.g. average log expression): a trend.
    span
        Lowess span of that trend in :func:`fit_f_dist_unequal_df1`; giving it selects the new
        estimator (as R does). ``None``: ``chooseLowessSpan(n, small.n = 500)``.
    robust
        Robust hyperparameters: outlying variances get less prior df.
    winsor_tail_p
        Winsorisation tails of ``fitFDistRobustly`` (legacy robust path only).
    legacy
        ``None`` (R's default): the old estimators (``fitFDist``/``fitFDistRobustly``) when the
        positive ``df`` are all identical, :func:`fit_f_dist_unequal_df1` otherwise; ``True``:
        always the old ones (limma < 3.62); ``False``: always the new one.

    Returns
    -------
    ``(var_post, var_prior, df_prior)``; ``var_prior`` is a scalar or per gene (with a
    covariate), ``df_prior`` a scalar or per gene (robust).
    """
    var = np.asarray(var, dtype=np.float64).ravel().copy()
    n = var.size
    if n == 0:
        raise ValueError("var is empty")
    df = np.asarray(df, dtype=np.float64)
    if n < 3:  # limma >= 3.62: no empirical Bayes with fewer than three values
        return var.copy(), var.copy(), 0.0
    if df.size > 1:
        var[df.ravel() == 0] = 0
    if span is not None:
        legacy = False
    if legacy is None:
        legacy = choose_legacy(df)
    if legacy:
        if robust:
            fit = fit_f_dist_robustly(var, df, covariate=covariate, winsor_tail_p=winsor_tail_p)
            df_prior = fit["df2_shrunk"]
            var_prior = fit["scale"]
        else:
            var_prior, df_prior = fit_f_dist(var, df, covariate=covariate)
    else:
        fit = fit_f_dist_unequal_df1(var, df, covariate, span=span, robust=robust)
        df_prior = fit.get("df2_shrunk", fit["df2"])
        var_prior = fit["scale"]
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
