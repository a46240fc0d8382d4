"""limma's ``eBayes`` and ``treat`` (limma 3.68, Bioconductor 3.23): moderated t statistics,
p-values and the B statistic; TREAT tests against a fold-change threshold; the moderated F
statistic of several coefficients or contrasts (``classifyTestsF(fstat.only = TRUE)`` as ``eBayes``
and ``topTable(coef = )`` compute it).

The variances are moderated by :func:`~bulkpy._stats.limma.squeeze_var.squeeze_var`, whose
``legacy`` switch both functions pass on: ``None`` (R's default) estimates the prior with
``fitFDistUnequalDF1`` when the residual df differ between genes (missing values, zero weights)
and with the long-standing ``fitFDist``/``fitFDistRobustly`` otherwise; ``True`` always uses the
latter (limma 3.54 behaviour); ``False`` always the former.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

from .lmfit import LinearFit
from .squeeze_var import squeeze_var

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
    span: float | None = None,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
    legacy: bool | None = None,
) -> EBayesResult:
    """Empirical Bayes moderated t statistics (limma ``eBayes``).

    Parameters
    ----------
    fit
        The linear model fits.
    proportion
        Assumed proportion of differentially expressed genes (B statistic).
    stdev_coef_lim
        Limits of the prior standard deviation of the non-zero coefficients (B statistic).
    trend
        ``True`` uses the fit's ``amean`` as covariate of the prior variance; a numeric vector
        gives the covariate directly.
    span
        Lowess span of the trend under the new estimator; giving it selects that estimator.
    robust
        Robust empirical Bayes (outlying variances get less prior df).
    winsor_tail_p
        Winsorisation tails of the legacy robust estimator.
    legacy
        ``None`` (R's default): the new prior estimator exactly when the residual df differ
        between genes; ``True``: the limma 3.54 estimators; ``False``: always the new one.
    """
    df_res = _check_fit_for_eb(fit)
    cov = _covariate_for(fit, trend)
    s2_post, s2_prior, df_prior = squeeze_var(
        fit.sigma**2,
        df_res,
        covariate=cov,
        span=span,
        robust=robust,
        winsor_tail_p=winsor_tail_p,
        legacy=legacy,
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
    legacy: bool | None = None,
    upshot: bool = False,
) -> EBayesResult:
    """Moderated t tests relative to a log2 fold-change threshold ``lfc`` (limma ``treat``).

    ``legacy`` as for :func:`ebayes`. ``upshot=True`` (limma >= 3.64): the p-value averages the
    TREAT p-values over thresholds uniform on ``[-lfc, lfc]`` (16-point Gauss-Legendre), and
    the reported t uses half the threshold.
    """
    df_res = _check_fit_for_eb(fit)
    cov = _covariate_for(fit, trend)
    s2_post, s2_prior, df_prior = squeeze_var(
        fit.sigma**2, df_res, covariate=cov, robust=robust, winsor_tail_p=winsor_tail_p, legacy=legacy
    )
    df_total = df_res + np.asarray(df_prior, dtype=np.float64)
    df_total = np.minimum(df_total, float(np.nansum(df_res)))
    df_total = np.broadcast_to(df_total, df_res.shape).astype(np.float64)
    lfc = abs(float(lfc))
    treat_lfc = lfc
    coef = fit.coefficients
    acoef = np.abs(coef)
    se = fit.stdev_unscaled * np.sqrt(s2_post)[None, :]
    dft = df_total[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        if upshot and lfc > 0:
            x, wq = np.polynomial.legendre.leggauss(16)
            p_value = np.zeros(coef.shape)
            for node, weight in zip(x[8:] * lfc, wq[8:] / 2, strict=True):
                p_value += weight * (sst.t.sf((acoef - node) / se, dft) + sst.t.sf((acoef + node) / se, dft))
            p_value = 2 * p_value
            lfc = lfc / 2
            t_right = np.maximum((acoef - lfc) / se, 0)
        else:
            t_right = (acoef - lfc) / se
            t_left = (acoef + lfc) / se
            p_value = sst.t.sf(t_right, dft) + sst.t.sf(t_left, dft)
            t_right = np.maximum(t_right, 0)
    # limma 3.68: t is 0 for missing coefficients, missing where only the standard error is
    coef0 = np.where(np.isnan(coef), 0.0, coef)
    t = np.zeros(coef.shape)
    up = coef0 > lfc
    down = coef0 < -lfc
    t[up] = t_right[up]
    t[down] = -t_right[down]
    return EBayesResult(
        t=t,
        p_value=p_value,
        lods=None,
        s2_prior=s2_prior,
        df_prior=df_prior,
        s2_post=s2_post,
        df_total=df_total,
        var_prior=None,
        lfc=treat_lfc,
    )


# --------------------------------------------------------------------------------------------
# moderated F (classifyTestsF(fstat.only = TRUE), eBayes' F / F.p.value, topTable(coef = 2:p))
# --------------------------------------------------------------------------------------------


@dataclass
class FTestResult:
    """A moderated F-test of ``k`` coefficients or contrasts together; ``(genes,)`` arrays unless noted.

    Attributes
    ----------
    F
        moderated F statistics (NaN where a tested coefficient is missing).
    p_value
        upper-tail p-values of ``F`` on ``df1`` and ``df2`` degrees of freedom.
    df1
        numerator degrees of freedom: the rank of the correlation of the tested coefficients.
    df2
        denominator degrees of freedom: ``df_prior + df_residual`` (not capped at the pooled
        residual df as ``df_total`` is).
    t
        ``(k, genes)`` moderated t statistics of the tested coefficients.
    """

    F: np.ndarray
    p_value: np.ndarray
    df1: int
    df2: np.ndarray
    t: np.ndarray


def f_projection(cov_coefficients) -> np.ndarray:
    """The ``(k, r)`` matrix ``Q`` with ``F = |Q' t|^2``: eigenvectors of the correlation of the
    coefficients scaled by ``1 / sqrt(eigenvalue * r)``, keeping the ``r`` eigenvalues above
    ``1e-8`` times the largest (limma's ``classifyTestsF``; a zero variance counts as 1)."""
    cov = np.array(cov_coefficients, dtype=np.float64, ndmin=2)
    d = np.diag(cov).copy()
    if np.any(d == 0):
        idx = np.flatnonzero(d == 0)
        cov[idx, idx] = 1.0
        d[idx] = 1.0
    sd = np.sqrt(d)
    cor = cov / np.outer(sd, sd)
    values, vectors = np.linalg.eigh(cor)
    values, vectors = values[::-1], vectors[:, ::-1]
    r = int(np.sum(values / values[0] > 1e-8))
    return vectors[:, :r] / np.sqrt(values[:r])[None, :] / np.sqrt(r)


def f_p_value(F, df1: int, df2) -> np.ndarray:
    """``pf(F, df1, df2, lower.tail = FALSE)``, with the chi-square limit ``df1 * F`` on ``df1``
    degrees of freedom where ``df2`` is infinite."""
    F = np.asarray(F, dtype=np.float64)
    df2 = np.broadcast_to(np.asarray(df2, dtype=np.float64), F.shape)
    inf = np.isinf(df2)
    with np.errstate(invalid="ignore"):
        p = sst.f.sf(F, df1, np.where(inf, 1.0, df2))
        if inf.any():
            p = np.where(inf, sst.chi2.sf(df1 * F, df1), p)
    return p


def moderated_f(fit: LinearFit, eb: EBayesResult) -> FTestResult:
    """Moderated F statistics testing all coefficients of ``fit`` together (limma's ``F`` and
    ``F.p.value`` of ``eBayes``, which ``topTable(fit, coef = c(...))`` recomputes for a subset).

    ``fit`` holds the coefficients to test (``contrasts_fit`` of the full fit for contrasts or a
    subset of coefficients, with the covariance of those coefficients); ``eb`` is ``eBayes`` of the
    same linear model (any contrasts: the posterior variances do not depend on them). With the
    moderated t statistics ``t`` of the ``k`` coefficients and ``R`` their correlation,
    ``F = t' R^-1 t / k``; linearly dependent coefficients are handled through the eigenvalues of
    ``R`` (``df1`` is its rank). Genes with a missing coefficient get a missing F.
    """
    coef = np.asarray(fit.coefficients, dtype=np.float64)
    if coef.ndim != 2 or coef.shape[0] < 1:
        raise ValueError("moderated_f needs a (k, genes) array of coefficients")
    k = coef.shape[0]
    cov = np.asarray(fit.cov_coefficients, dtype=np.float64)
    if cov.shape != (k, k):
        raise ValueError(f"cov_coefficients must be {k} x {k} like the tested coefficients, got {cov.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        t = coef / fit.stdev_unscaled / np.sqrt(eb.s2_post)[None, :]
    df2 = np.asarray(fit.df_residual, dtype=np.float64) + np.asarray(eb.df_prior, dtype=np.float64)
    df2 = np.broadcast_to(df2, t.shape[1:]).astype(np.float64)
    if k == 1:
        F = t[0] ** 2
        df1 = 1
    else:
        Q = f_projection(cov)
        df1 = Q.shape[1]
        F = np.sum((Q.T @ t) ** 2, axis=0)
    return FTestResult(F=F, p_value=f_p_value(F, df1, df2), df1=df1, df2=df2, t=t)
