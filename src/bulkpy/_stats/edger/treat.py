"""edgeR's ``glmTreat`` (edgeR 4.10, Bioconductor 3.23): tests of ``|log2FC| > lfc`` on a GLM fit.

For one contrast ``c`` of a fit (``glmFit``, edgeR 4's ``glmQLFit`` or the legacy one), as
:func:`glm_treat` runs it:

1. the design is written with ``c' beta`` as its first coefficient (the coefficient's own column
   when ``c`` names one coefficient, else ``contrastAsCoef``'s reparametrisation ``[X c / |c|^2,
   X Q2]``); the null design leaves that column out;
2. the model is refitted (no prior count) with the offsets moved by ``+lfc * log(2)`` times that
   column and again by ``-lfc * log(2)``; each time the null model is fitted too, and the square
   root of the deviance difference is a z-score at one end of the interval (``z.left`` the
   smaller). The dispersions are the fit's own: the tagwise ones after ``glmFit``, the working
   dispersion ``dispersion / average.ql.dispersion`` after edgeR 4's ``glmQLFit``, the trended
   ones after the legacy fit;
3. after a QL fit each z becomes ``zscoreT(z / sqrt(s2.post), df.total)`` (the normal score of
   the t tail probability, on ``df.prior + df.residual`` capped at the pooled residual df);
4. ``z.left`` changes sign when the unshrunk log fold change lies inside ``[-lfc, lfc]``;
5. p-values: ``null = "interval"`` (edgeR 4's default) averages the two-sided p-value over a
   uniform distribution of true log fold changes in the interval (the constant 1.470402 and the
   closed-form integral of the normal cdf, ``.integratepnorm``); ``"worst.case"`` (edgeR 3's
   only rule) adds the two normal tails, ``pnorm(-z.right) + pnorm(z.left)``;
6. after the legacy QL fit, genes below the Poisson bound keep the larger of their p-value and
   the Poisson (dispersion 0) ``glmTreat`` p-value.

The reported log fold change is the fit's (``predFC``-shrunk with prior count 0.125); the unshrunk
one decides step 4 and is reported beside it (``unshrunk.logFC``).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from ..multitest import p_adjust_bh
from . import glm as _glm

TREAT_NULLS = ("interval", "worst.case")
_C_INTERVAL = 1.470402  # edgeR's constant of the interval null


def _integrate_pnorm(a, b):
    """edgeR's ``.integratepnorm``: the mean of ``pnorm`` over ``[a, b]`` (``pnorm(a)`` if equal)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)

    def f(x):
        return x * special.ndtr(x) + np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)

    with np.errstate(divide="ignore", invalid="ignore"):
        out = (f(b) - f(a)) / (b - a)
    return np.where(a == b, special.ndtr(a), out)


def zscore_t(x, df):
    """limma's ``zscoreT`` (the quantile method): the standard normal deviate with the same upper
    tail probability as ``|x|`` under Student's t with ``df`` (infinite df: ``x`` itself), signed
    like ``x``."""
    x = np.asarray(x, dtype=np.float64)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), x.shape)
    ax = np.abs(x)
    logp = np.empty(x.shape)
    inf = ~np.isfinite(df)
    logp[inf] = special.log_ndtr(-ax[inf])
    logp[~inf] = stats.t.logsf(ax[~inf], df[~inf])
    return -special.ndtri_exp(logp) * np.sign(x)


def _designs(X: np.ndarray, contrast: np.ndarray):
    """``(design, column, null design)`` with ``contrast' beta`` as the tested coefficient."""
    c = np.asarray(contrast, dtype=np.float64)
    nzi = np.flatnonzero(c != 0)
    X0 = _glm._null_design(X, c)
    if nzi.size == 1:
        return X, X[:, nzi[0]] / c[nzi[0]], X0
    col = X @ c / float(c @ c)
    return np.column_stack([col, X0]), col, X0


def _z_pair(y, X, off, disp, contrast, lfc: float):
    """``(z.left, z.right)``: root deviance differences with the offsets moved to ``±lfc``."""
    X1, col, X0 = _designs(X, contrast)
    adj = lfc * np.log(2.0) * col
    z = []
    for sign in (1.0, -1.0):
        o = off + sign * adj
        _, _, dev0, _ = _glm._fit(y, X0, disp, o)
        _, _, dev1, _ = _glm._fit(y, X1, disp, o)
        z.append(np.sqrt(np.maximum(0.0, dev0 - dev1)))
    return np.minimum(z[0], z[1]), np.maximum(z[0], z[1])


def _p_values(z_left, z_right, within, null: str):
    z_left = z_left * (2.0 * within - 1.0)
    if null == "worst.case":
        return special.ndtr(-z_right) + special.ndtr(z_left)
    p = np.ones(z_left.shape)
    j = z_right + z_left > _C_INTERVAL
    p[j] = _integrate_pnorm(-z_right[j], -z_right[j] + _C_INTERVAL) + _integrate_pnorm(
        z_left[j] - _C_INTERVAL, z_left[j]
    )
    k = ~j & ~np.isnan(z_right + z_left)
    p[k] = 2 * _integrate_pnorm(-z_right[k], z_left[k])
    return p


def _treat_p(fit, y, X, off, contrast, lfc, null, ql=None):
    z_left, z_right = _z_pair(y, X, off, fit.dispersion, contrast, lfc)
    unshrunk = fit.unshrunk @ contrast / np.log(2.0)
    return treat_p_from_z(z_left, z_right, unshrunk, lfc, null, ql, y.shape[1] - X.shape[1]), unshrunk


def treat_p_from_z(z_left, z_right, unshrunk, lfc: float, null: str, ql, df_residual: int):
    """``glmTreat``'s p-values from the z-scores at the ends of the interval (:func:`_z_pair`) and
    the unshrunk log2 fold changes, per gene; after a QL fit (``ql``) the z-scores become t
    deviates (``zscoreT``) on its squeezed dispersions. ``df_residual``: samples - coefficients."""
    G = z_left.size
    if ql is not None:
        df_res = getattr(ql, "df_residual_adj", None)
        if df_res is None:
            df_res = ql.df_residual_zeros
        df_total = np.minimum(np.asarray(ql.df_prior, dtype=np.float64) + df_res, G * df_residual)
        s = np.sqrt(ql.var_post)
        with np.errstate(divide="ignore", invalid="ignore"):
            z_left = zscore_t(z_left / s, df_total)
            z_right = zscore_t(z_right / s, df_total)
    return _p_values(z_left, z_right, np.abs(unshrunk) <= lfc, null)


def glm_treat(
    fit, y_genes, X, log_lib, contrast, ave_log_cpm, lfc: float, *, ql=None, null: str = "interval"
) -> _glm.DETable:
    """edgeR's ``glmTreat`` of one contrast vector (see the module docstring).

    ``fit`` is the :class:`~bulkpy._stats.edger.glm.GLMFit` that was tested (``glm_fit_genes``
    for the LRT, ``ql.glm`` for a QL fit), ``ql`` the QL fit (:func:`~.ql.glm_ql_fit_v4` or the
    legacy :func:`~.glm.glm_ql_fit`) or ``None`` after ``glmFit``. ``log_lib``: the fit's offsets
    (per sample or genes × samples). ``lfc`` is on the log2 scale and must be positive (edgeR
    turns ``lfc = 0`` into ``glmQLFTest``/``glmLRT``). The returned table's ``statistic`` is the
    unshrunk log2 fold change (glmTreat reports no test statistic); ``df_total`` is ``None``.
    """
    if not np.isfinite(lfc) or lfc <= 0:
        raise ValueError(f"lfc must be a positive log2 fold change, got {lfc!r}")
    if null not in TREAT_NULLS:
        raise ValueError(f"null must be one of {list(TREAT_NULLS)}, got {null!r}")
    y = np.ascontiguousarray(y_genes, dtype=np.float64)
    G, n = y.shape
    c = np.asarray(contrast, dtype=np.float64)
    off = _glm.offsets(log_lib, G, n, "log_lib")
    p, unshrunk = _treat_p(fit, y, X, off, c, lfc, null, ql)
    if ql is not None and getattr(ql, "df_residual_adj", None) is None:  # legacy QL: Poisson bound
        below = _glm.below_poisson_bound(fit, ql.var_post)
        if below.any():
            yb = np.ascontiguousarray(y[below])
            p_pois = poisson_treat_p(yb, X, _glm.offset_rows(off, below), fit.unshrunk[below], c, lfc, null)
            p[below] = np.maximum(p[below], p_pois)
    logfc = fit.coefficients @ c / np.log(2.0)
    return _glm.DETable(logfc, ave_log_cpm, unshrunk, p, p_adjust_bh(p))


def poisson_treat_p(yb, X, off, start, contrast, lfc: float, null: str) -> np.ndarray:
    """``glmTreat``'s p-values of a Poisson (dispersion 0) fit of the genes ``yb``, started from
    ``start``: the bound edgeR 3's QL ``glmTreat`` applies to genes below the Poisson variance."""
    pois = _glm.glm_fit_genes(yb, X, 0.0, off, start=start)
    p_pois, _ = _treat_p(pois, yb, X, off, contrast, lfc, null)
    return p_pois
