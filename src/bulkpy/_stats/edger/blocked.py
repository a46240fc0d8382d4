"""edgeR's GLM pipeline block by block of genes, for counts held as a dask array (issue 15).

The same R functions as :mod:`.glm`, :mod:`.ql` and :mod:`.treat` (``estimateDisp``, ``glmQLFit``
and ``glmQLFTest``, ``glmFit`` and ``glmLRT``, ``glmTreat``; edgeR 4.10), split at their global
steps. Every pass over the counts is one :func:`~bulkpy._stats._blocks.map_gene_blocks` call (one
``dask.compute``, a task per block of genes running the per-gene kernels on one thread) returning
per-gene vectors only; the global steps (the common dispersion, the locfit trend, ``squeezeVar``,
the average quasi-dispersion) run on those vectors between passes, exactly as the in-memory
functions run them. The per-gene arithmetic is the in-memory path's, so the results are the same
numbers. Counts are never gathered, and no samples × genes result is kept.

Passes of :func:`edger_glm` (``test="QL"``, the default): three for ``estimateDisp`` (likelihood
grid, AveLogCPM, deviances for the prior df), one per evaluation of R's ``optimize`` for the NB
dispersion of ``glmQLFit`` over the blocks holding its most abundant genes (``top.proportion``;
about 20), two for the average quasi-dispersion, one for the final fit and the tests. ``test="LRT"``:
the three of ``estimateDisp`` and one for ``glmFit`` and the tests. edgeR 3's QL (``legacy``): the
three of ``estimateDisp`` (its legacy options), one for the fit and tests, one for the Poisson
bound.

Model offsets are one value per sample here (log effective library sizes); the genes × samples
offsets of tximport lengths are not supported on this path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _blocks
from .._optimize import fmin
from ..multitest import p_adjust_bh
from . import exact as _exact
from . import glm as _glm
from . import ql as _ql
from . import treat as _treat

_LN2 = np.log(2.0)


@dataclass(frozen=True)
class Model:
    """What every block task needs: the tested genes (``mask`` over all genes, or ``None``), the
    design, the log effective library sizes (one per sample) and, for the classic mode, the
    effective library sizes themselves."""

    mask: np.ndarray | None
    X: np.ndarray
    log_lib: np.ndarray
    lib: np.ndarray | None = None

    def read(self, blk) -> np.ndarray:
        """The block's tested genes, genes × samples."""
        return blk.read(0, gene_major=True, keep=None if self.mask is None else self.mask[blk.sl])

    def rows(self, blk) -> slice:
        """The block's slice of per-gene vectors over the tested genes."""
        if self.mask is None:
            return blk.sl
        return slice(int(self.mask[: blk.sl.start].sum()), int(self.mask[: blk.sl.stop].sum()))

    def off(self, g: int) -> np.ndarray:
        return _glm.offsets(self.log_lib, g, self.X.shape[0])


def gene_blocks_of(counts):
    """The blocks of genes the passes walk (the block driver's rule for ``counts``)."""
    return _blocks.blocks_for(counts, counts.shape[0])


def _map(fn, counts, blocks, *args) -> list:
    return _blocks.map_gene_blocks(fn, [counts], blocks, args=args)


def _cat(parts, i: int, axis: int = 0) -> np.ndarray:
    return np.concatenate([p[i] for p in parts], axis=axis)


# --------------------------------------------------------------------------------------------
# estimateDisp
# --------------------------------------------------------------------------------------------


def _apl_block(blk, m: Model, grid, min_row_sum):
    y = m.read(blk)
    rs = y.sum(axis=1)
    ys = np.ascontiguousarray(y[rs >= min_row_sum])
    return rs, _glm._apl_grid(ys, m.X, m.off(ys.shape[0]), grid)


def _alc_block(blk, m: Model, common):
    return (_glm.ave_log_cpm_genes(m.read(blk), m.log_lib, common),)


def _trended_block(blk, m: Model, sel, trended):
    rows = m.rows(blk)
    s = sel[rows]
    ys = np.ascontiguousarray(m.read(blk)[s])
    return _glm.trended_deviances(ys, m.X, trended[rows][s], m.off(ys.shape[0]))


def estimate_disp(counts, m: Model, blocks, *, robust=False, legacy_span=False, squeeze_legacy=None,
                  min_row_sum: float = 5, grid_length: int = 21, grid_range=(-10.0, 10.0)):  # fmt: skip
    """``estimateDisp`` (as :func:`.glm.estimate_disp`) in three passes; also returns the row sums."""
    n, p = m.X.shape
    if p >= n:
        raise ValueError(
            f"the design has {p} columns for {n} samples: no residual degrees of freedom for the dispersion"
        )
    pts = np.linspace(grid_range[0], grid_range[1], grid_length)
    grid = 0.1 * 2.0**pts
    parts = _map(_apl_block, counts, blocks, m, grid, min_row_sum)
    rowsum, l0 = _cat(parts, 0), _cat(parts, 1)
    sel = rowsum >= min_row_sum
    if not sel.any():
        raise ValueError(
            f"no gene has a total count of at least {min_row_sum}; the dispersion can not be estimated"
        )
    common = float(0.1 * 2.0 ** _glm.nb.maximize_interpolant(pts, l0.sum(axis=0)[None, :])[0])
    disp = _trend_and_tagwise(
        counts, m, blocks, sel, l0, pts, common, robust=robust, legacy_span=legacy_span, squeeze_legacy=squeeze_legacy
    )
    return disp, rowsum


def _trend_and_tagwise(counts, m: Model, blocks, sel, l0, pts, common, *, robust, legacy_span, squeeze_legacy):
    """The second half of ``estimateDisp`` (as :func:`.glm.trend_and_tagwise`): a pass for
    AveLogCPM, the trend, a pass for the deviances of the prior df, the tagwise dispersions."""
    n, p = m.X.shape
    alc = _cat(_map(_alc_block, counts, blocks, m, common), 0)
    cov = alc[sel]
    span, m0, disp_trend, trended = _glm.dispersion_trend(l0, cov, alc, sel, pts, span=None, legacy_span=legacy_span)
    parts = _map(_trended_block, counts, blocks, m, sel, trended)
    prior_df = _glm.prior_df_of(
        _cat(parts, 0), _cat(parts, 1), cov, robust=robust, winsor_tail_p=(0.05, 0.1), squeeze_legacy=squeeze_legacy
    )
    return _glm.tagwise_dispersions(common, trended, alc, sel, l0, m0, pts, prior_df, n - p, robust=robust, span=span)


# --------------------------------------------------------------------------------------------
# glmQLFit (edgeR 4)
# --------------------------------------------------------------------------------------------


def _top_apl_block(blk, m: Model, disp):
    y = m.read(blk)
    g = y.shape[0]
    _, mu, _, _ = _glm._fit(y, m.X, np.full(g, disp), m.off(g))
    return (_glm.apl(y, mu, disp, m.X),)


def _common_dispersion(counts, m: Model, alc, rowsum, top_prop) -> float:
    """``estimateGLMCommonDisp`` of the most abundant genes (``top_prop`` of them): those genes
    are read once and persisted (a dask array of those genes only, held by the scheduler: its
    workers under ``distributed``), then one pass over them per evaluation of R's ``optimize``.
    The likelihoods are summed in the order of the in-memory path (by decreasing AveLogCPM)."""
    ntop = int(np.ceil(top_prop * alc.size))
    top = np.argsort(-alc, kind="stable")[:ntop]
    top = top[rowsum[top] >= 5]
    if top.size < 1:
        raise ValueError("no data rows with required number of counts")
    genes = np.sort(top)
    order = np.searchsorted(genes, top)  # the top genes' places among them in gene order
    sub = counts[:, genes if m.mask is None else np.flatnonzero(m.mask)[genes]]
    blocks = _blocks.blocks_for(sub, sub.shape[0])
    if _blocks.is_dask(sub):
        sub = _blocks._aligned(sub, blocks).persist()
    mt = Model(None, m.X, m.log_lib)

    def minus_apl(par):
        disp = par**4
        return -float(np.sum(_cat(_map(_top_apl_block, sub, blocks, mt, disp), 0)[order]))

    par = fmin(minus_apl, 0.0, 4.0**0.25, tol=1e-5)
    return par**4


def _qd_block(blk, m: Model, disp, prior):
    y = m.read(blk)
    d = np.full(y.shape[0], disp)
    _, mu, _, _ = _glm._fit(y, m.X, d, m.log_lib)
    _, df, s2 = _ql.adjusted_deviance(y, mu, m.X, d, prior)
    return df, s2


def _final_block(blk, m: Model, disp, ave, C, lfc):
    y = m.read(blk)
    g = y.shape[0]
    d = np.full(g, disp)
    fit = _glm.glm_fit_genes(y, m.X, d / ave, m.log_lib, prior_count=0.125)
    dev, df, s2 = _ql.adjusted_deviance(y, fit.fitted, m.X, d, ave)
    return (dev, df, s2, *_contrast_parts(fit, y, m, C, lfc))


def _contrast_parts(fit, y, m: Model, C, lfc):
    """Per contrast: ``(LR, log2FC)`` for the F or LR test, or glmTreat's ``(z.left, z.right,
    unshrunk log2FC, log2FC)`` with ``lfc > 0``; stacked as arrays of contrasts × genes."""
    out = []
    for j in range(C.shape[1]):
        c = C[:, j]
        if lfc > 0:
            zl, zr = _treat._z_pair(y, m.X, m.off(y.shape[0]), fit.dispersion, c, lfc)
            out.append((zl, zr, fit.unshrunk @ c / _LN2, fit.coefficients @ c / _LN2))
        else:
            lr, logfc, _ = _glm._lrt(fit, y, m.X, m.log_lib, c)
            out.append((lr, logfc))
    return [np.array([o[i] for o in out]).reshape(len(out), -1) for i in range(2 if lfc == 0 else 4)]


def _tables(parts, first: int, C, lfc, null, ql, df_residual, alc, *, test):
    k = 2 if lfc == 0 else 4
    arrs = [_cat(parts, first + i, axis=1) for i in range(k)]
    tables = []
    for j in range(C.shape[1]):
        if lfc > 0:
            zl, zr, unshrunk, logfc = (a[j] for a in arrs)
            p = _treat.treat_p_from_z(zl, zr, unshrunk, lfc, null, ql, df_residual)
            tables.append(_glm.DETable(logfc, alc, unshrunk, p, p_adjust_bh(p)))
        elif test == "QL":
            tables.append(_ql.ql_ftest_table(ql, arrs[0][j], arrs[1][j], 1, df_residual, alc))
        else:
            lr, logfc = arrs[0][j], arrs[1][j]
            p = _glm.stats.chi2.sf(lr, 1)
            tables.append(_glm.DETable(logfc, alc, lr, p, p_adjust_bh(p)))
    return tables


def ql_v4(counts, m: Model, blocks, alc, rowsum, C, *, robust=False, lfc=0.0, null="interval"):
    """edgeR 4's ``glmQLFit`` and, per contrast (columns of ``C``), ``glmQLFTest`` (or
    ``glmTreat`` with ``lfc > 0``). Returns the fit (its ``glm`` is ``None``) and the tables."""
    n, p = m.X.shape
    top_prop = _ql.top_proportion(alc.size, n - p)
    disp = _common_dispersion(counts, m, alc, rowsum, top_prop)
    prior = 1.0
    for _ in range(2):  # compute_ave_qd
        parts = _map(_qd_block, counts, blocks, m, disp, prior)
        prior = _ql._prior_from_trend(alc, _cat(parts, 1), _cat(parts, 0))
    ave = prior
    parts = _map(_final_block, counts, blocks, m, disp, ave, C, lfc)
    dev, df, s2 = (_cat(parts, i) for i in range(3))
    ql = _ql.squeezed_fit(None, np.full(alc.size, disp), ave, top_prop, dev, df, s2, alc, robust=robust)
    return ql, _tables(parts, 3, C, lfc, null, ql, n - p, alc, test="QL")


# --------------------------------------------------------------------------------------------
# glmQLFit(legacy = TRUE): edgeR 3's QL fit, with the Poisson bound
# --------------------------------------------------------------------------------------------


def _legacy_block(blk, m: Model, trended, C, lfc):
    y = m.read(blk)
    fit = _glm.glm_fit_genes(y, m.X, trended[m.rows(blk)], m.log_lib, prior_count=0.125)
    dfr = _glm.resid_df((fit.fitted < _glm._ZERO) & (y < _glm._ZERO), m.X)
    return (fit.deviance, dfr, *_contrast_parts(fit, y, m, C, lfc))


def _bound_block(blk, m: Model, trended, var_post, C, lfc, null):
    """The genes of the block below the Poisson bound and, per contrast, their Poisson p-values."""
    y = m.read(blk)
    rows = m.rows(blk)
    fit = _glm.glm_fit_genes(y, m.X, trended[rows], m.log_lib, prior_count=0.125)
    below = _glm.below_poisson_bound(fit, var_post[rows])
    yb = np.ascontiguousarray(y[below])
    off = _glm.offset_rows(m.off(y.shape[0]), below)
    start = fit.unshrunk[below]
    ps = []
    for j in range(C.shape[1]):
        if lfc > 0:
            ps.append(_treat.poisson_treat_p(yb, m.X, off, start, C[:, j], lfc, null))
        else:
            ps.append(_glm.poisson_p(yb, m.X, off, start, C[:, j], 1))
    return below, np.array(ps).reshape(C.shape[1], -1)


def ql_legacy(counts, m: Model, blocks, disp, C, *, robust=False, lfc=0.0, null="interval"):
    """edgeR 3's ``glmQLFit`` (``legacy = TRUE``: the trended dispersions, residual df less the
    zero fits, ``squeezeVar(legacy = TRUE)``) and per contrast ``glmQLFTest`` or ``glmTreat``
    with the Poisson bound: two passes (the fit and tests, then the bound, which needs the
    squeezed dispersions). Returns the fit (its ``glm`` is ``None``) and the tables."""
    n, p = m.X.shape
    alc = disp.ave_log_cpm
    parts = _map(_legacy_block, counts, blocks, m, disp.trended, C, lfc)
    dev, dfr = _cat(parts, 0), _cat(parts, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = dev / dfr
    s2[dfr == 0] = 0.0
    s2 = np.maximum(s2, 0.0)
    var_post, var_prior, df_prior = _glm.squeeze_var(
        s2, dfr, covariate=alc, robust=robust, winsor_tail_p=(0.05, 0.1), legacy=True
    )
    ql = _glm.QLFit(None, dfr, s2, var_post, var_prior, df_prior)
    tables = _legacy_tables(parts, C, lfc, null, ql, n - p, alc)
    bound = _map(_bound_block, counts, blocks, m, disp.trended, var_post, C, lfc, null)
    below, p_pois = _cat(bound, 0), _cat(bound, 1, axis=1)
    for j, t in enumerate(tables):
        if below.any():
            t.pvalue[below] = np.maximum(t.pvalue[below], p_pois[j])
        t.padj = p_adjust_bh(t.pvalue)
    return ql, tables


def _legacy_tables(parts, C, lfc, null, ql, df_residual, alc):
    """The tables before the Poisson bound (as :func:`.glm.glm_ql_ftest` and :func:`.treat.glm_treat`)."""
    if lfc > 0:
        return _tables(parts, 2, C, lfc, null, ql, df_residual, alc, test="QL")
    G = alc.size
    arrs = [_cat(parts, 2 + i, axis=1) for i in range(2)]
    tables = []
    for j in range(C.shape[1]):
        with np.errstate(divide="ignore", invalid="ignore"):
            fstat = arrs[0][j] / 1 / ql.var_post
        df_total = np.asarray(ql.df_prior, dtype=np.float64) + ql.df_residual_zeros
        df_total = np.minimum(df_total, G * df_residual)
        p = _glm._f_sf(fstat, 1, df_total)
        tables.append(_glm.DETable(arrs[1][j], alc, fstat, p, None, np.broadcast_to(df_total, (G,)).copy()))
    return tables


# --------------------------------------------------------------------------------------------
# glmFit + glmLRT
# --------------------------------------------------------------------------------------------


def _lrt_block(blk, m: Model, tagwise, C, lfc):
    y = m.read(blk)
    fit = _glm.glm_fit_genes(y, m.X, tagwise[m.rows(blk)], m.log_lib, prior_count=0.125)
    return _contrast_parts(fit, y, m, C, lfc)


def lrt(counts, m: Model, blocks, disp, C, *, lfc=0.0, null="interval"):
    """``glmFit`` with the tagwise dispersions and, per contrast, ``glmLRT`` (or ``glmTreat``)."""
    parts = _map(_lrt_block, counts, blocks, m, disp.tagwise, C, lfc)
    return _tables(parts, 0, C, lfc, null, None, m.X.shape[0] - m.X.shape[1], disp.ave_log_cpm, test="LRT")


# --------------------------------------------------------------------------------------------
# classic mode: estimateDisp without a design, exactTest
# --------------------------------------------------------------------------------------------


def _cond_lik_block(blk, m: Model, codes, k, lib, dispersion, r):
    y = m.read(blk)
    pseudo, _ = _exact.equalize_lib_sizes(y, codes, k, dispersion, lib)
    return y.sum(axis=1), _exact._cond_log_lik(pseudo, codes, k, r)


def _cond_grid_block(blk, m: Model, codes, k, lib, dispersion, grid, min_row_sum):
    y = m.read(blk)
    pseudo, _ = _exact.equalize_lib_sizes(y, codes, k, dispersion, lib)
    ps = pseudo[y.sum(axis=1) >= min_row_sum]
    return (np.column_stack([_exact._cond_log_lik(ps, codes, k, np.full(ps.shape[0], 1.0 / d)) for d in grid]),)


def estimate_disp_classic(counts, m: Model, blocks, codes, *, robust=False, min_row_sum: float = 5, tol=1e-6):
    """``estimateDisp`` in classic mode (as :func:`.exact.estimate_disp_classic`; ``m.X`` is
    ``model.matrix(~ group)`` and ``m.log_lib`` the log effective library sizes): one pass per
    evaluation of R's ``optimize`` for the first common dispersion (the pseudo-counts recomputed
    in each task, never kept), one for the grid likelihoods, then the trend and tagwise passes."""
    k = int(codes.max()) + 1
    if np.all(np.bincount(codes, minlength=k) <= 1):
        raise ValueError("no group has more than one sample: there is no replication to estimate the dispersion")
    lib = m.lib
    sel = None

    def minus_loglik(delta):
        nonlocal sel
        parts = _map(_cond_lik_block, counts, blocks, m, codes, k, lib, 0.01, 1.0 / delta - 1.0)
        if sel is None:
            sel = _cat(parts, 0) >= min_row_sum
            if not sel.any():
                raise ValueError(
                    f"no gene has a total count of at least {min_row_sum}; the dispersion can not be estimated"
                )
        return -float(np.sum(_cat(parts, 1)[sel]))

    delta = fmin(minus_loglik, 1e-4, 100 / 101, tol=tol)
    pts = np.linspace(_exact._GRID_RANGE[0], _exact._GRID_RANGE[1], _exact._GRID_LENGTH)
    grid = 0.1 * 2.0**pts
    l0 = _cat(_map(_cond_grid_block, counts, blocks, m, codes, k, lib, delta / (1 - delta), grid, min_row_sum), 0)
    common = float(0.1 * 2.0 ** _glm.nb.maximize_interpolant(pts, l0.sum(axis=0)[None, :])[0])
    return _trend_and_tagwise(
        counts, m, blocks, sel, l0, pts, common, robust=robust, legacy_span=False, squeeze_legacy=None
    )


def _exact_block(blk, m: Model, codes, pairs, tagwise, alc):
    x = blk.read(0, keep=None if m.mask is None else m.mask[blk.sl])  # samples × genes, as in memory
    rows = m.rows(blk)
    res = [_exact.exact_test(x, codes, pair, m.lib, tagwise[rows], alc[rows]) for pair in pairs]
    return np.array([r.log2_fold_change for r in res]), np.array([r.pvalue for r in res])


def exact_tests(counts, m: Model, blocks, codes, pairs, disp) -> list:
    """``exactTest`` of each pair of groups, in one pass."""
    parts = _map(_exact_block, counts, blocks, m, codes, list(pairs), disp.tagwise, disp.ave_log_cpm)
    logfc, p = _cat(parts, 0, axis=1), _cat(parts, 1, axis=1)
    return [
        _glm.DETable(logfc[j], disp.ave_log_cpm, logfc[j], p[j], p_adjust_bh(p[j])) for j in range(len(pairs))
    ]
