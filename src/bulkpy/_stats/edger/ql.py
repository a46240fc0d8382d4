"""edgeR 4's quasi-likelihood fit (edgeR 4.10, Bioconductor 3.23): ``glmQLFit(legacy = FALSE)``.

Steps of :func:`glm_ql_fit_v4`, as ``glmQLFit(y, design)`` runs them on a DGEList:

1. the NB dispersion: one value, the Cox-Reid common dispersion (``estimateGLMCommonDisp``:
   R's ``optimize`` of the summed adjusted profile likelihood over ``dispersion^(1/4)`` in
   ``[0, 4^(1/4)]``, ``tol = 1e-5``) of the ``top.proportion`` most abundant genes by AveLogCPM,
   ``top.proportion = chooseLowessSpan(ngenes * sqrt(df.residual), small.n = 20, min.span =
   0.02)``; a given dispersion is capped at 4;
2. ``glmFit`` with it; the average quasi-dispersion (``compute_ave_qd``): twice, adjusted
   deviances and df (below) with the current value, lowess (``f = 0.5``, 3 iterations) of their
   quarter-root ratio against AveLogCPM, the 90% quantile of the trend (at least 1), to the
   fourth power, starting from 1;
3. ``glmFit`` again with the working dispersion ``dispersion / average quasi-dispersion``;
4. adjusted deviances and residual df (``compute_adjust_vec``): for every observation the
   leverage ``h`` of the working-weight hat matrix, the unit deviance ``d`` at the working
   dispersion, and the moments of the NB unit deviance at mean ``mu / ave`` and dispersion
   ``phi`` matched to a scaled chi-square: ``deviance.adj = sum d * 2E/V`` and
   ``df.residual.adj = sum (1 - h) * 2E^2/V`` (observations with ``1 - h < 1e-4`` left out);
5. ``squeezeVar(deviance.adj / df.residual.adj, df.residual.adj, covariate = AveLogCPM,
   legacy = FALSE)``: limma's ``fitFDistUnequalDF1``.

:func:`glm_ql_ftest_v4` is ``glmQLFTest`` on that fit: the null model is fitted with the
working dispersion, ``F = LR / df.test / s2.post`` on ``df.prior + df.residual.adj`` df (capped at
the pooled residual df), no Poisson bound.

The moments ``E`` and ``V`` are edgeR's own approximations of them (``compute_weight``), rebuilt
from the moments in :mod:`bulkpy._stats.edger.ql_moments`: they agree with edgeR 4.10.7's to
about 1e-11 (relative), though they differ from the exact moments by up to about 1e-3 (a few % for
dispersions near 4 and means above 5,000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._jit import kernel
from .._optimize import fmin
from ..deseq2._kernels import n_chunks, run_chunks
from ..limma.lowess import choose_lowess_span, lowess
from ..limma.squeeze_var import squeeze_var
from ..multitest import p_adjust_bh
from ._kernels import unit_nb_deviance
from .ql_moments import dispersion_tables, moment_tables, table_space, weights_at

_ZERO_LEV = 1e-4  # edgeR's thresholdzero for 1 - leverage and for the adjusted df


@kernel
def _adjust_kernel(y, mu, lev, disp, prior, tabs, dev, df):
    """edgeR's ``compute_adjust_vec`` for the genes (rows) given: adjusted deviance and df."""
    G, n = y.shape
    t = table_space(tabs)
    u = np.empty(n)
    for g in range(G):
        phi = disp[g]
        if g == 0 or phi != disp[g - 1]:
            dispersion_tables(phi, tabs, t)
        phi_q = phi / prior
        for j in range(n):  # edgeR 4's unit deviances, floored at 0 (a vectorised loop)
            v = unit_nb_deviance(y[g, j], mu[g, j], phi_q)
            u[j] = v if v > 0.0 else 0.0
        dsum = 0.0
        fsum = 0.0
        for j in range(n):
            hd = 1.0 - lev[g, j]
            if hd < _ZERO_LEV:
                continue
            a, k = weights_at(mu[g, j] / prior, phi, t)
            dsum += u[j] * a
            fsum += hd * k
        dev[g] = dsum
        df[g] = fsum


def leverages(mu, X, disp, prior) -> np.ndarray:
    """Diagonal of the hat matrix of the working weights ``mu / (1 + mu * disp / prior)`` per
    gene (genes × samples). Where the weighted design loses rank (a group fitted as zero, e.g. a
    gene with no counts in one group), the hat matrix of the columns it keeps, as edgeR's pivoting
    QR (``qr_hat``) gives it: the pseudo-inverse of ``X'WX`` for those genes. Large matrices run
    on chunks of genes in threads (numpy releases the GIL; each gene's values are its own)."""
    from .glm import _gene_chunks

    disp = np.broadcast_to(np.asarray(disp, dtype=np.float64), (mu.shape[0],))
    out = np.empty(mu.shape)

    def chunk(lo, hi):
        out[lo:hi] = _leverages(mu[lo:hi], X, disp[lo:hi], prior)

    run_chunks(chunk, mu.shape[0], _gene_chunks(mu))
    return out


def _leverages(mu, X, disp, prior) -> np.ndarray:
    w = mu / (1.0 + mu * (disp[:, None] / prior))
    xtwx = np.einsum("gi,ij,ik->gjk", w, X, X)
    with np.errstate(all="ignore"):
        cond = np.linalg.cond(xtwx)
    bad = ~np.isfinite(cond) | (cond > 1e12)
    inv = np.empty_like(xtwx)
    inv[~bad] = np.linalg.inv(xtwx[~bad])
    if bad.any():
        inv[bad] = np.linalg.pinv(xtwx[bad], rcond=1e-10, hermitian=True)
    return w * np.einsum("ij,gjk,ik->gi", X, inv, X)


def adjusted_deviance(y, mu, X, disp, prior: float):
    """edgeR's ``compute_adjust_vec``: adjusted deviances, adjusted residual df and their ratio
    (0 where the df are below 1e-4), per gene."""
    y = np.ascontiguousarray(y, dtype=np.float64)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    disp = np.ascontiguousarray(np.broadcast_to(np.asarray(disp, dtype=np.float64), (y.shape[0],)))
    lev = np.ascontiguousarray(leverages(mu, X, disp, prior))
    dev = np.empty(y.shape[0])
    df = np.empty(y.shape[0])
    tabs = moment_tables()
    run_chunks(
        lambda lo, hi: _adjust_kernel(
            y[lo:hi], mu[lo:hi], lev[lo:hi], disp[lo:hi], float(prior), tabs, dev[lo:hi], df[lo:hi]
        ),
        y.shape[0], n_chunks(y.shape[0]),
    )  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(df < _ZERO_LEV, 0.0, dev / df)
    return dev, df, s2


def _prior_from_trend(ave_log_cpm, s2, df) -> float:
    """edgeR's ``compute_prior``: lowess (f 0.5, 3 iterations) of ``s2^(1/4)`` on AveLogCPM over
    the genes with df > 1e-8, the 90% quantile of the fitted trend, at least 1, to the 4th power."""
    keep = df > 1e-8
    _, fitted = lowess(ave_log_cpm[keep], np.sqrt(np.sqrt(s2[keep])), f=0.5, iter=3)
    p = max(float(np.quantile(fitted, 0.9)), 1.0)
    return p**4


def average_ql_dispersion(y, mu, X, disp, ave_log_cpm) -> float:
    """edgeR's ``compute_ave_qd``: two updates of the average quasi-dispersion from 1."""
    prior = 1.0
    for _ in range(2):
        _, df, s2 = adjusted_deviance(y, mu, X, disp, prior)
        prior = _prior_from_trend(ave_log_cpm, s2, df)
    return prior


def top_proportion(n_genes: int, df_residual: int) -> float:
    """``glmQLFit``'s default ``top.proportion``."""
    return choose_lowess_span(n_genes * np.sqrt(df_residual), small_n=20, min_span=0.02)


def common_dispersion_cox_reid(
    y, X, log_lib, *, min_row_sum: float = 5, interval=(0.0, 4.0), tol: float = 1e-5
) -> float:
    """edgeR's ``estimateGLMCommonDisp(method = "CoxReid")`` (``dispCoxReid``) on genes × samples
    counts: the dispersion maximising the summed Cox-Reid adjusted profile likelihood, by R's
    ``optimize`` over its fourth root (genes with a total below ``min_row_sum`` left out).
    ``log_lib``: offsets per sample or genes × samples."""
    from . import glm as _glm

    y = np.asarray(y, dtype=np.float64)
    off = _glm.offsets(log_lib, y.shape[0], y.shape[1], "log_lib")
    keep = y.sum(axis=1) >= min_row_sum
    y = np.ascontiguousarray(y[keep])
    off = _glm.offset_rows(off, keep)
    if y.shape[0] < 1:
        raise ValueError("no data rows with required number of counts")
    G = y.shape[0]
    counts = _glm.count_table(y)

    def minus_apl(par):
        disp = par**4
        _, mu, _, _ = _glm._fit(y, X, np.full(G, disp), off)
        return -float(np.sum(_glm.apl(y, mu, disp, X, counts)))

    par = fmin(minus_apl, interval[0] ** 0.25, interval[1] ** 0.25, tol=tol)
    return par**4


@dataclass
class QLFit4:
    """``glmQLFit(legacy = FALSE)`` result (arrays per gene).

    Attributes
    ----------
    glm
        The NB GLM fitted with the working dispersion (its ``dispersion`` is the NB dispersion).
    dispersion
        The NB dispersion (one value).
    average_ql_dispersion
        The average quasi-dispersion.
    top_proportion
        Share of genes the dispersion was estimated from (``None`` when it was given).
    df_residual_adj, deviance_adj, s2
        Adjusted residual df, adjusted deviances and their ratio.
    var_post, var_prior, df_prior
        Squeezed QL dispersions and the prior (``squeezeVar``).
    """

    glm: object
    dispersion: float
    average_ql_dispersion: float
    top_proportion: float | None
    df_residual_adj: np.ndarray
    deviance_adj: np.ndarray
    s2: np.ndarray
    var_post: np.ndarray
    var_prior: float | np.ndarray
    df_prior: float | np.ndarray


def glm_ql_fit_v4(
    y_genes, X, log_lib, ave_log_cpm, *, dispersion=None, top_prop=None, robust: bool = False
) -> QLFit4:
    """edgeR 4.10 ``glmQLFit(legacy = FALSE)`` on genes × samples counts (see the module docstring).

    ``dispersion`` ``None`` estimates it from the most abundant genes (edgeR 4's default for a
    DGEList); a given value (scalar or per gene) is capped at 4.
    """
    from . import glm as _glm

    y = np.ascontiguousarray(y_genes, dtype=np.float64)
    G, n = y.shape
    X = np.asarray(X, dtype=np.float64)
    off = np.asarray(log_lib, dtype=np.float64)
    alc = np.asarray(ave_log_cpm, dtype=np.float64)
    if dispersion is None:
        if top_prop is None:
            top_prop = top_proportion(G, n - X.shape[1])
        elif not 0 <= top_prop <= 1:
            raise ValueError("top_prop should be between 0 and 1")
        ntop = int(np.ceil(top_prop * G))
        top = np.argsort(-alc, kind="stable")[:ntop]
        dispersion = common_dispersion_cox_reid(y[top], X, _glm.offset_rows(_glm.offsets(off, G, n), top))
    else:
        dispersion = np.minimum(np.asarray(dispersion, dtype=np.float64), 4.0)
        top_prop = None
    disp = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), (G,)).copy()
    # R's glmFit here also refits with prior counts (prior.count = 0.125), but only the fitted
    # values of the unshrunk fit reach compute_ave_qd: the refit is left out (same results)
    first = _glm.glm_fit_genes(y, X, disp, off, prior_count=0.0)
    ave = average_ql_dispersion(y, first.fitted, X, disp, alc)
    fit = _glm.glm_fit_genes(y, X, disp / ave, off, prior_count=0.125)
    dev, df, s2 = adjusted_deviance(y, fit.fitted, X, disp, ave)
    return squeezed_fit(fit, disp, ave, top_prop, dev, df, s2, alc, robust=robust)


def squeezed_fit(fit, disp, ave, top_prop, dev, df, s2, ave_log_cpm, *, robust: bool) -> QLFit4:
    """The last step of ``glmQLFit``: ``squeezeVar`` of the adjusted deviances over their df."""
    var_post, var_prior, df_prior = squeeze_var(s2, df, covariate=ave_log_cpm, robust=robust, legacy=False)
    disp_out = float(disp[0]) if np.all(disp == disp[0]) else disp
    return QLFit4(fit, disp_out, float(ave), top_prop, df, dev, s2, var_post, var_prior, df_prior)


def glm_ql_ftest_v4(ql: QLFit4, y_genes, X, log_lib, contrast, ave_log_cpm):
    """edgeR 4.10 ``glmQLFTest`` on a :func:`glm_ql_fit_v4` fit (one contrast vector)."""
    from . import glm as _glm

    y = np.asarray(y_genes, dtype=np.float64)
    lr, logfc, df_test = _glm._lrt(ql.glm, y, X, log_lib, contrast)  # null fit at the working dispersion
    return ql_ftest_table(ql, lr, logfc, df_test, y.shape[1] - X.shape[1], ave_log_cpm)


def ql_ftest_table(ql: QLFit4, lr, logfc, df_test, df_residual: int, ave_log_cpm):
    """``glmQLFTest``'s table from the likelihood ratios ``lr`` of a contrast (per gene) and the
    squeezed QL dispersions of ``ql``; ``df_residual`` is ``n_samples - n_coefficients``."""
    G = lr.size
    with np.errstate(divide="ignore", invalid="ignore"):
        fstat = lr / df_test / ql.var_post
    df_total = np.minimum(np.asarray(ql.df_prior, dtype=np.float64) + ql.df_residual_adj, G * df_residual)
    p = _glm_module()._f_sf(fstat, df_test, df_total)
    return _glm_module().DETable(logfc, ave_log_cpm, fstat, p, p_adjust_bh(p), np.broadcast_to(df_total, (G,)).copy())


def _glm_module():
    from . import glm

    return glm
