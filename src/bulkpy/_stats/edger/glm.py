"""edgeR's dispersion estimation, negative binomial GLMs, likelihood-ratio and quasi-likelihood F
tests, vectorised over genes: edgeR 4.10 (Bioconductor 3.23) by default, edgeR 3.40
(Bioconductor 3.16) behind the legacy switches.

edgeR 4's ``glmQLFit(legacy = FALSE)`` (adjusted deviances and df) is in :mod:`.ql`; this module
holds the GLM machinery, ``estimateDisp`` and the legacy quasi-likelihood fit, which edgeR 4 keeps
as ``glmQLFit(legacy = TRUE)``.

The public functions take counts as **samples × genes** (like ``AnnData.X``); internally every
quantity is gene-major (genes × samples, as edgeR stores it) so that each per-gene fit is a row.
Loops run over grid points, groups of samples, zero patterns and iterations, never over genes.
The GLM fits (``mglmOneGroup``/``mglmOneWay``/``mglmLevenberg``), deviances and the Cox-Reid
adjusted profile likelihood are the algorithms of :mod:`bulkpy._stats.nb` (written for
ComBat-seq) compiled per gene in :mod:`bulkpy._stats.edger._kernels`, with warm starts and a
parallel path for large blocks (at least :data:`PARALLEL_MIN_SIZE` counts); ``maximizeInterpolant``
and the design grouping are nb's; the empirical Bayes moderation is limma's ``squeezeVar``
from :mod:`bulkpy._stats.limma`.

Results depend on the parametrisation of the design at the level of edgeR's convergence
tolerance (the Levenberg damping ``lambda * I`` is not invariant to it): edgeR itself moves the
pasilla common dispersion by 2.5e-6 (relative) when the reference level changes. With the same
design columns as R the results agree with edgeR 3.40.2 to about 1e-9.

:func:`estimate_disp` — ``estimateDisp`` (design given, ``trend.method = "locfit"``):

1. genes with a row sum of at least ``min_row_sum`` (5) are used;
2. a GLM with dispersion 0.05 finds the observations fitted as exactly zero; genes are grouped
   by that pattern, and for each group the design restricted to its non-zero samples (columns
   kept as R's pivoting QR keeps them; groups with no residual df are skipped);
3. the Cox-Reid adjusted profile log-likelihood (APL) of every gene on the grid
   ``0.1 * 2^seq(-10, 10, length = 21)`` (each fit warm-started from the previous grid point);
4. common dispersion: the maximum of the spline through the summed APL (``maximizeInterpolant``);
5. ``AveLogCPM`` (``aveLogCPM`` with the common dispersion, prior count 2);
6. trend: the APL of each grid point smoothed against AveLogCPM by a local-constant ``locfit``
   (tricube kernel, nearest-neighbour span ``chooseLowessSpan(n_genes)`` = ``0.3 + 0.7 *
   (50 / n_genes)^(1/3)`` in edgeR 4, ``0.25 + 0.75 * sqrt(50 / n_genes)`` in edgeR 3 and with
   ``legacy_span=True``, locfit's
   adaptive evaluation tree with linear interpolation between vertices), maximised per gene;
7. prior df: deviances of a GLM with the trended dispersions over the residual df (adjusted for
   zero fits, ``.residDF``) squeezed by ``squeezeVar`` with AveLogCPM as covariate (``robust``;
   edgeR 4 lets limma 3.68 choose the estimator, ``legacy = NULL``: the new one when zero fits
   make the df differ; edgeR 3 always used the old one);
8. tagwise: the maximum of ``APL + prior.n * trend APL`` with ``prior.n = prior.df / residual df``
   (weighted likelihood empirical Bayes, ``WLEB``).

:func:`glm_ql_fit` / :func:`glm_ql_ftest` — ``glmQLFit`` (edgeR 3.x: QL dispersions
``deviance / df.residual.zeros``, ``squeezeVar`` with the AveLogCPM trend) and ``glmQLFTest``
(``F = LR / df.test / var.post`` on ``df.prior + df.residual.zeros`` df, capped at the pooled
residual df; p-values of genes below the Poisson bound are replaced by the larger Poisson LRT
p-value). :func:`glm_lrt` — ``glmFit`` + ``glmLRT``. Log fold changes are ``predFC`` with prior
count 0.125, as ``glmFit`` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..deseq2._kernels import n_chunks, run_chunks
from ..limma.lowess import choose_lowess_span
from ..limma.squeeze_var import squeeze_var
from ..multitest import p_adjust_bh
from . import nb

#: edgeR version whose behaviour the defaults follow, and the one behind the legacy switches.
EDGER_VERSION = "4.10.7"
EDGER_LEGACY_VERSION = "3.40.2"

_LN2 = np.log(2.0)
_LN_MILLION = np.log(1e6)
_ZERO = 1e-4  # edgeR's threshold for "fitted as zero" (counts and fitted values)
_QR_TOL = 1e-7


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _vec(v, size: int, what: str) -> np.ndarray:
    """A scalar or a vector of ``size`` values as a contiguous float64 vector."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 0:
        return np.full(size, float(v))
    v = v.ravel()
    if v.size != size:
        raise ValueError(f"{what} must have {size} values, got {v.size}")
    return np.ascontiguousarray(v)


def offsets(offset, n_genes: int, n_samples: int, what: str = "offset") -> np.ndarray:
    """Log offsets as a C-contiguous 2-d array: ``(1, n_samples)`` for one value per sample (a
    ``DGEList``'s log effective library sizes, the fast path) or ``(n_genes, n_samples)`` for a
    gene × sample matrix (``y$offset``, e.g. from ``scaleOffset``). A matrix whose rows are all
    equal is kept as a matrix (the kernels index its rows)."""
    o = np.asarray(offset, dtype=np.float64)
    if o.ndim == 0:
        return np.full((1, n_samples), float(o))
    if o.ndim == 1:
        if o.size != n_samples:
            raise ValueError(f"{what} must have {n_samples} values (one per sample), got {o.size}")
        return np.ascontiguousarray(o[None, :])
    if o.ndim != 2 or o.shape[1] != n_samples or o.shape[0] not in (1, n_genes):
        raise ValueError(
            f"{what} must be one value per sample or a genes × samples matrix ({n_genes} × {n_samples}), "
            f"got shape {o.shape}"
        )
    if not np.all(np.isfinite(o)):
        raise ValueError(f"{what} must be finite")
    return np.ascontiguousarray(o)


def offset_rows(off: np.ndarray, rows) -> np.ndarray:
    """The offsets of the genes ``rows`` (an index or mask) of a 2-d offset from :func:`offsets`."""
    if off.shape[0] == 1:
        return off
    return np.ascontiguousarray(off[rows])


def add_prior_count(y, log_lib, prior_count: float):
    """edgeR's ``addPriorCount``: ``prior_count * lib / mean(lib)`` is added to each count and
    twice that to each library size, ``lib = exp(offset)``. ``log_lib`` is one value per sample
    or genes × samples (then ``mean(lib)`` is taken per gene, as edgeR does). Returns the new
    counts and log library sizes (a vector, or a matrix for a matrix offset)."""
    y = np.asarray(y, dtype=np.float64)
    o = np.asarray(log_lib, dtype=np.float64)
    lib = np.exp(o)
    if o.ndim <= 1:
        adj = prior_count * lib / lib.mean()
        return y + adj[None, :], np.log(lib + 2 * adj)
    adj = prior_count * lib / lib.mean(axis=1, keepdims=True)
    return y + adj, np.log(lib + 2 * adj)


#: Blocks with at least this many counts run the compiled fits on all threads (smaller blocks
#: would spend more on starting the threads than on the fits). Measured on airway (8 x 16,860,
#: whose zero-pattern groups of genes are fitted apart at each of the 21 grid points):
#: bk.tl.edger 1.72 s with 1,000,000, 1.15-1.25 s from 50,000 down to 5,000.
PARALLEL_MIN_SIZE = 50_000


def _parallel(y) -> bool:
    return y.size >= PARALLEL_MIN_SIZE


def _gene_chunks(y) -> int:
    """Chunks of genes for a compiled kernel: a few per thread on a large matrix, else one (run
    in the calling thread). Genes are independent, so the chunks do not change a result."""
    return n_chunks(y.shape[0]) if _parallel(y) else 1


def _rows(off, lo: int, hi: int):
    """The offsets of genes ``lo:hi``: the rows of a gene × sample matrix, or the one shared row."""
    return off if off.shape[0] == 1 else off[lo:hi]


def kept_columns(X: np.ndarray, tol: float = _QR_TOL) -> np.ndarray:
    """Columns R's ``qr(X)$pivot[1:rank]`` keeps (LINPACK's limited pivoting: a column whose norm,
    after projecting out the kept ones, falls below ``tol`` times its own norm is moved out)."""
    from ..._design import _greedy_rank

    kept, _, _ = _greedy_rank(np.asarray(X, dtype=np.float64), tol)
    return np.asarray(kept, dtype=np.intp)


def _rank(X: np.ndarray) -> int:
    return int(kept_columns(X).size)


def _pattern_groups(zero: np.ndarray):
    """Rows with identical logical patterns (edgeR's ``.comboGroups``): yields ``(pattern, rows)``."""
    if zero.shape[0] == 0:
        return
    packed = np.ascontiguousarray(np.packbits(zero, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    inv = np.asarray(inv).ravel()
    uniq = zero[first]
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    for rows in np.split(order, bounds):
        yield uniq[inv[rows[0]]], rows


# --------------------------------------------------------------------------------------------
# GLM fits (genes × samples)
# --------------------------------------------------------------------------------------------


@dataclass
class GLMFit:
    """A negative binomial GLM fitted to every gene (edgeR's ``DGEGLM``), gene-major.

    Attributes
    ----------
    coefficients
        genes × coefficients, natural log scale; the ``predFC`` (prior-count shrunk) values when
        the fit used ``prior_count > 0``.
    unshrunk
        The maximum likelihood coefficients.
    fitted
        genes × samples fitted means (of the unshrunk fit).
    deviance
        Residual deviance per gene.
    dispersion
        The dispersions used (per gene).
    method
        ``"oneway"`` or ``"levenberg"``.
    """

    coefficients: np.ndarray
    unshrunk: np.ndarray
    fitted: np.ndarray
    deviance: np.ndarray
    dispersion: np.ndarray
    method: str


def _fit(y, X, disp, offset, *, start=None):
    """``glmFit`` without prior count: the one-way shortcut or Levenberg. ``disp`` is per gene,
    ``offset`` per sample or genes × samples. Returns ``(coef, fitted, deviance, method)``."""
    if nb.is_one_way(X):
        coef, mu = fit_one_way(y, X, offset, disp, start=start)
        return coef, mu, deviance(y, mu, disp), "oneway"
    coef, mu, dev = fit_levenberg(y, X, offset, disp, start=start)
    return coef, mu, dev, "levenberg"


def deviance(y, mu, disp) -> np.ndarray:
    """Residual NB deviance per gene (edgeR's ``nbinomDeviance``), compiled; ``disp`` per gene."""
    from ._kernels import deviance_kernel_serial

    y = np.ascontiguousarray(y, dtype=np.float64)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    dsp = _vec(disp, y.shape[0], "disp")
    out = np.empty(y.shape[0])
    run_chunks(
        lambda lo, hi: deviance_kernel_serial(y[lo:hi], mu[lo:hi], dsp[lo:hi], out[lo:hi]), y.shape[0], _gene_chunks(y)
    )
    return out


def fit_one_way(y, X, offset, disp, *, start=None):
    """edgeR's ``mglmOneWay``: ``mglmOneGroup`` (Newton-Raphson for one log-mean, tolerance
    1e-10, 50 iterations) per group of identical design rows, starting from ``start @ row`` when
    given; log-means floored at -1e8, fitted values ``exp(offset + log-mean)``, coefficients by
    solving the distinct design rows (compiled form of :func:`bulkpy._stats.nb.fit_one_way`)."""
    from ._kernels import one_way_kernel_serial

    y = np.ascontiguousarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    G, n = y.shape
    off = offsets(offset, G, n)
    codes, uniq = nb._design_groups(X)
    ng = uniq.shape[0]
    if start is None:
        gstart = np.full((G, ng), np.nan)
    else:
        gstart = np.ascontiguousarray(np.asarray(start, dtype=np.float64) @ uniq.T)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=ng))]).astype(np.int64)
    beta = np.empty((G, ng))
    mu = np.empty((G, n))
    dsp = _vec(disp, G, "disp")
    run_chunks(
        lambda lo, hi: one_way_kernel_serial(
            y[lo:hi], _rows(off, lo, hi), dsp[lo:hi], order, bounds, gstart[lo:hi], 50, 1e-10, beta[lo:hi], mu[lo:hi]
        ),
        G, _gene_chunks(y),
    )  # fmt: skip
    beta = np.maximum(beta, -1e8)
    indicator = np.sum(uniq == 1) == ng and np.sum(uniq == 0) == (ng - 1) * ng
    if indicator:
        coef = np.empty_like(beta)
        coef[:, np.argmax(uniq, axis=1)] = beta
    else:
        coef = np.linalg.solve(uniq, beta.T).T
    return coef, mu


def fit_one_group(y, offset, disp) -> np.ndarray:
    """edgeR's ``mglmOneGroup``: the one-way fit with a single group; ``-inf`` for all-zero genes."""
    y = np.asarray(y, dtype=np.float64)
    coef, _ = fit_one_way(y, np.ones((y.shape[1], 1)), offset, disp)
    return np.where(coef[:, 0] <= -1e8, -np.inf, coef[:, 0])


def count_table(y) -> tuple[bool, np.ndarray]:
    """``(integer, mark)``: whether the counts ``y`` are all integers below the table's size, and
    which counts occur (:func:`apl` tabulates lgamma at them; pass this to calls on the same ``y``)."""
    from ._kernels import count_marks

    top = float(min(_APL_TABLE_MAX, y.size + 1)) if y.size else 1.0
    mark = np.zeros(int(top), dtype=np.bool_)
    return (y.size > 0 and bool(count_marks(y, top, mark))), mark


def apl(y, mu, disp: float, X, counts=None) -> np.ndarray:
    """Cox-Reid adjusted profile log-likelihood at the fitted means ``mu`` for one dispersion
    (edgeR's ``compute_apl``; compiled form of ``adjusted_profile_lik`` in :mod:`bulkpy._stats.nb`).
    ``counts``: :func:`count_table` of ``y`` when it is already known."""
    from ._kernels import apl_kernel_serial, lgamma_tables

    y = np.ascontiguousarray(y, dtype=np.float64)
    out = np.empty(y.shape[0])
    # integer counts: lgamma once per distinct count (most of this step's cost on large cohorts)
    integer, mark = count_table(y) if counts is None else counts
    use = disp > 0 and integer
    t_yr = np.zeros(mark.size if use else 1)
    t_y1 = np.zeros(mark.size if use else 1)
    if use:
        lgamma_tables(mark, 1.0 / float(disp), t_yr, t_y1)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    run_chunks(
        lambda lo, hi: apl_kernel_serial(y[lo:hi], mu[lo:hi], float(disp), X, use, t_yr, t_y1, out[lo:hi]),
        y.shape[0], _gene_chunks(y),
    )  # fmt: skip
    return out


#: largest count + 1 for which :func:`apl` tabulates lgamma (larger counts: evaluated per sample)
_APL_TABLE_MAX = 1 << 22


def fit_levenberg(y, X, offset, disp, *, start=None, maxit: int = 250, tol: float = 1e-6):
    """edgeR's ``mglmLevenberg`` (``maxit = 250`` as ``glmFit`` calls it) in compiled code; the
    same algorithm as :func:`bulkpy._stats.nb.fit_levenberg`. ``offset`` per sample or genes ×
    samples, ``disp`` per gene. Returns ``(coefficients, fitted, deviance)``."""
    from ._kernels import levenberg_kernel_serial

    y = np.ascontiguousarray(y, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    G, n = y.shape
    off = offsets(offset, G, n)
    dsp = _vec(disp, G, "disp")
    if start is None:
        beta = _levenberg_start(y, X, off, dsp)
    else:
        beta = np.array(start, dtype=np.float64, copy=True)
    beta = np.ascontiguousarray(beta)
    mu = np.empty((G, n))
    dev = np.empty(G)
    run_chunks(
        lambda lo, hi: levenberg_kernel_serial(
            y[lo:hi], X, _rows(off, lo, hi), dsp[lo:hi], beta[lo:hi], maxit, tol, mu[lo:hi], dev[lo:hi]
        ),
        G, _gene_chunks(y),
    )  # fmt: skip
    return beta, mu, dev


def _levenberg_start(y, X, off, disp):
    """edgeR's "null" start: the least-squares solution of ``X beta = log(weighted mean of
    count / library size)`` for every sample (``nb.levenberg_start`` with vectors). The weighted
    sums run on chunks of genes in threads; ``exp`` and ``log`` are taken on whole arrays, so the
    result does not depend on the chunks (numpy's transcendental functions can differ in the last
    bit with an element's position in memory)."""
    N = np.exp(off)
    num = np.empty(y.shape[0])
    den = np.empty(y.shape[0])

    def chunk(lo, hi):
        n_ = _rows(N, lo, hi)
        w = n_ / (1 + disp[lo:hi, None] * n_)
        num[lo:hi] = np.sum(y[lo:hi] * (w / n_), axis=1)
        den[lo:hi] = np.sum(w, axis=1)

    run_chunks(chunk, y.shape[0], _gene_chunks(y))
    with np.errstate(divide="ignore"):
        c = np.log(num / den)
    v = np.linalg.lstsq(X, np.ones(X.shape[0]), rcond=None)[0]
    return c[:, None] * v[None, :]


def glm_fit_genes(y, X, dispersion, log_lib, *, prior_count: float = 0.125, start=None) -> GLMFit:
    """edgeR's ``glmFit`` on a genes × samples count matrix ``y`` with per-gene ``dispersion``
    (scalar or (G,)) and offsets ``log_lib``: per sample (log effective library sizes) or genes ×
    samples (``y$offset``)."""
    y = np.ascontiguousarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    disp = _vec(dispersion, y.shape[0], "dispersion")
    off = offsets(log_lib, y.shape[0], y.shape[1], "log_lib")
    if off.shape[0] == 1:
        off = off[0]
    coef, mu, dev, method = _fit(y, X, disp, off, start=start)
    shrunk = coef
    if prior_count > 0:
        y2, off2 = add_prior_count(y, off, prior_count)
        shrunk, _, _, _ = _fit(y2, X, disp, off2)
    return GLMFit(shrunk, coef, mu, dev, disp, method)


def ave_log_cpm_genes(y, log_lib, dispersion, *, prior_count: float = 2.0) -> np.ndarray:
    """edgeR's ``aveLogCPM``: log2 CPM of the one-group NB fit after adding prior counts
    (``prior_count * lib / mean(lib)`` to the counts, twice that to the library sizes).
    ``log_lib`` is one value per sample or a genes × samples offset matrix (``aveLogCPM(y,
    offset = )``; a ``DGEList`` with an offset still uses its library sizes, as edgeR does)."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] == 0:
        return np.zeros(0)
    off = offsets(log_lib, y.shape[0], y.shape[1], "log_lib")
    y2, off2 = add_prior_count(y, off[0] if off.shape[0] == 1 else off, prior_count)
    beta = fit_one_group(y2, off2, dispersion)
    return (beta + _LN_MILLION) / _LN2


def resid_df(zero: np.ndarray, X: np.ndarray) -> np.ndarray:
    """edgeR's ``.residDF``: residual df per gene, less one per observation fitted as zero and
    with the rank of the design restricted to the other observations."""
    G, n = zero.shape
    p = X.shape[1]
    nzero = zero.sum(axis=1)
    df = np.full(G, float(n - p))
    df[nzero == n] = 0.0
    some = (nzero > 0) & (nzero < n)
    if some.any():
        idx = np.flatnonzero(some)
        for pattern, rows in _pattern_groups(zero[idx]):
            r = _rank(X[~pattern])
            df[idx[rows]] = max(n - int(pattern.sum()) - r, 0)
    return df


# --------------------------------------------------------------------------------------------
# locfit with degree 0 (edgeR's locfitByCol)
# --------------------------------------------------------------------------------------------


def _tricube(u):
    u = np.abs(u)
    return np.where(u < 1.0, (1.0 - u**3) ** 3, 0.0)


def _nn_bandwidth(x: np.ndarray, t: float, k: int) -> float:
    d = np.abs(x - t)
    n = d.size
    if k <= 0:
        return 0.0
    if k < n:
        return float(np.partition(d, k - 1)[k - 1])
    return float(d.max() * (k / n))


def locfit_deg0_by_col(Y, x, span: float, *, cut: float = 0.8) -> np.ndarray:
    """edgeR's ``locfitByCol(Y, x, span = span, degree = 0)``: every column of ``Y`` smoothed
    against ``x`` by R locfit's local-constant fit (tricube weights, nearest-neighbour bandwidth
    of ``floor(n * span)`` points), evaluated as locfit's ``fitted`` does: local fits at the
    vertices of its adaptive tree (a cell is halved while its length exceeds ``cut`` times the
    smaller vertex bandwidth), linear interpolation in between (a degree-0 fit stores no slopes).
    The tree depends on ``x`` only, so all columns share one smoothing matrix."""
    Y = np.asarray(Y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if span * n < 2 or n <= 1:
        return Y.copy()
    k = int(n * span + 1e-12)
    lo, hi = float(x.min()), float(x.max())
    h: dict[float, float] = {}

    def band(t):
        if t not in h:
            h[t] = _nn_bandwidth(x, t, k)
        return h[t]

    cells: list[tuple[float, float]] = []
    if hi > lo:
        stack = [(lo, hi)]
        while stack:
            a, b = stack.pop()
            pos = [v for v in (band(a), band(b)) if v > 0]
            score = (b - a) / min(pos) if pos else 2.0 * (b - a) / (hi - lo)
            if score > cut:
                m = (a + b) / 2.0
                stack.append((m, b))
                stack.append((a, m))
            else:
                cells.append((a, b))
    else:
        band(lo)
    verts = np.array(sorted(h))
    hv = np.array([h[v] for v in verts])
    with np.errstate(divide="ignore", invalid="ignore"):
        K = np.where(
            hv[:, None] > 0,
            _tricube((x[None, :] - verts[:, None]) / hv[:, None]),
            (x[None, :] == verts[:, None]) * 1.0,
        )
    K /= K.sum(axis=1, keepdims=True)
    V = K @ Y  # vertex values
    if not cells:
        return np.broadcast_to(V[0], Y.shape).copy()
    cells.sort()
    lows = np.array([c[0] for c in cells])
    highs = np.array([c[1] for c in cells])
    c = np.clip(np.searchsorted(lows, x, side="right") - 1, 0, lows.size - 1)
    a, b = lows[c], highs[c]
    ia = np.searchsorted(verts, a)
    ib = np.searchsorted(verts, b)
    u = np.where(b > a, (x - a) / np.where(b > a, b - a, 1.0), 0.0)
    return (1.0 - u)[:, None] * V[ia] + u[:, None] * V[ib]


# --------------------------------------------------------------------------------------------
# estimateDisp
# --------------------------------------------------------------------------------------------


@dataclass
class Dispersions:
    """Result of :func:`estimate_disp` (arrays per gene).

    Attributes
    ----------
    common, trended, tagwise
        The three dispersion estimates.
    ave_log_cpm
        ``aveLogCPM`` with the common dispersion (edgeR's ``y$AveLogCPM``).
    prior_df
        Prior df of the tagwise shrinkage (a number, or per gene with ``robust``).
    prior_n
        ``prior_df / (n_samples - n_coefficients)``.
    span
        Span of the locfit trend.
    used
        Genes with enough counts to enter the estimation (row sum >= ``min_row_sum``).
    """

    common: float
    trended: np.ndarray
    tagwise: np.ndarray
    ave_log_cpm: np.ndarray
    prior_df: float | np.ndarray
    prior_n: float | np.ndarray
    span: float
    used: np.ndarray


def _apl_grid(y, X, off, grid, *, zero_disp: float = 0.05, on_progress=None) -> np.ndarray:
    """Cox-Reid APL of every gene (rows of ``y``) at each dispersion of ``grid``, with edgeR's
    handling of observations fitted as zero. Genes of a zero pattern without residual df keep 0.
    ``on_progress(k)`` is called as ``k`` more of the ``genes × grid`` fits are done."""
    G, n = y.shape
    L = grid.size
    l0 = np.zeros((G, L))
    if G == 0:
        return l0
    off = offsets(off, G, n)
    _, mu, _, _ = _fit(y, X, np.full(G, zero_disp), off)
    zerofit = (y < _ZERO) & (mu < _ZERO)
    for pattern, rows in _pattern_groups(zerofit):
        nz = ~pattern
        if not nz.all():
            Xr = X[nz][:, kept_columns(X[nz])] if nz.any() else None
            if Xr is None or Xr.shape[0] == Xr.shape[1]:
                if on_progress is not None:
                    on_progress(rows.size * L)
                continue
        else:
            Xr = X
        yy = y[rows] if nz.all() else np.ascontiguousarray(y[np.ix_(rows, np.flatnonzero(nz))])
        oo = np.ascontiguousarray(offset_rows(off, rows)[:, nz])
        beta = None
        counts = count_table(yy)
        for i in range(L):
            coef, mu_i, _, _ = _fit(yy, Xr, np.full(rows.size, grid[i]), oo, start=beta)
            l0[rows, i] = apl(yy, mu_i, grid[i], Xr, counts)
            beta = coef
            if on_progress is not None:
                on_progress(rows.size)
    return l0


def estimate_disp(
    counts,
    design,
    lib_size,
    *,
    prior_df: float | None = None,
    robust: bool = False,
    winsor_tail_p=(0.05, 0.1),
    min_row_sum: float = 5,
    grid_length: int = 21,
    grid_range=(-10.0, 10.0),
    span: float | None = None,
    legacy_span: bool = False,
    squeeze_legacy: bool | None = None,
    offset=None,
    on_progress=None,
) -> Dispersions:
    """edgeR's ``estimateDisp`` with a design (``trend.method = "locfit"``, ``tagwise = TRUE``).

    edgeR 4.10 by default; ``legacy_span=True`` (R's ``legacy.span = TRUE``) gives edgeR 3's
    trend span, ``squeeze_legacy`` is the ``legacy`` of the ``squeezeVar`` call for the prior df
    (``None``, edgeR 4: limma chooses; ``True``: edgeR 3's ``fitFDist``). Both ``True`` reproduce
    edgeR 3.40.

    ``counts`` is samples × genes, ``design`` samples × coefficients (full rank), ``lib_size`` the
    effective library sizes (``lib.size * norm.factors``). ``offset``: ``None`` (the model offsets
    are ``log(lib_size)``) or samples × genes log offsets (a ``DGEList``'s ``y$offset``, e.g. from
    ``scaleOffset``), which replace them in every fit; AveLogCPM still uses ``lib_size``, as
    edgeR's ``estimateDisp`` does. See the module docstring for the steps.
    ``on_progress(k)``: called as ``k`` more of the (genes with a total count of at least
    ``min_row_sum``) × ``grid_length`` likelihood fits are done, for a progress bar.
    """
    y = np.ascontiguousarray(np.asarray(counts, dtype=np.float64).T)
    X = np.asarray(design, dtype=np.float64)
    G, n = y.shape
    p = X.shape[1]
    if p >= n:
        raise ValueError(
            f"the design has {p} columns for {n} samples: no residual degrees of freedom for the dispersion"
        )
    log_lib = np.log(np.asarray(lib_size, dtype=np.float64))
    sel = y.sum(axis=1) >= min_row_sum
    if not sel.any():
        raise ValueError(
            f"no gene has a total count of at least {min_row_sum}; the dispersion can not be estimated"
        )
    ys = np.ascontiguousarray(y[sel])
    if offset is None:
        off = offsets(log_lib, G, n)
    else:
        o = np.asarray(offset, dtype=np.float64)
        off = offsets(o.T if o.ndim == 2 else o, G, n)
    off = offset_rows(off, sel)
    pts = np.linspace(grid_range[0], grid_range[1], grid_length)
    grid = 0.1 * 2.0**pts
    l0 = _apl_grid(ys, X, off, grid, on_progress=on_progress)
    overall = nb.maximize_interpolant(pts, l0.sum(axis=0)[None, :])[0]
    common = float(0.1 * 2.0**overall)

    return trend_and_tagwise(
        y, X, off, sel, l0, pts, common, log_lib,
        prior_df=prior_df, robust=robust, winsor_tail_p=winsor_tail_p, span=span, legacy_span=legacy_span,
        squeeze_legacy=squeeze_legacy,
    )  # fmt: skip


def trend_and_tagwise(
    y, X, off, sel, l0, pts, common: float, log_lib, *, prior_df, robust, winsor_tail_p, span, legacy_span,
    squeeze_legacy,
) -> Dispersions:  # fmt: skip
    """The second half of ``estimateDisp``, shared by the design and the classic mode: AveLogCPM
    with the common dispersion, the locfit trend of the likelihoods ``l0`` (genes ``sel`` ×
    grid points ``pts``), the prior df from the deviances of a GLM with the trended dispersions
    (design ``X``, offsets ``off`` of the genes ``sel``), and the tagwise dispersions (WLEB).
    ``y`` is genes × samples (all genes)."""
    G, n = y.shape
    ys = np.ascontiguousarray(y[sel])
    alc = ave_log_cpm_genes(y, log_lib, common)
    cov = alc[sel]
    span, m0, disp_trend, trended = dispersion_trend(l0, cov, alc, sel, pts, span=span, legacy_span=legacy_span)
    if prior_df is None:
        dev, dfr = trended_deviances(ys, X, disp_trend, off)
        prior_df = prior_df_of(dev, dfr, cov, robust=robust, winsor_tail_p=winsor_tail_p, squeeze_legacy=squeeze_legacy)
    return tagwise_dispersions(
        common, trended, alc, sel, l0, m0, pts, prior_df, n - X.shape[1], robust=robust, span=span
    )


def dispersion_trend(l0, cov, alc, sel, pts, *, span, legacy_span):
    """``estimateDisp``'s trend: the span, the locfit-smoothed likelihoods ``m0`` (genes ``sel``
    × grid points), their maxima (the trended dispersions of the genes ``sel``) and the trended
    dispersions of all genes (the others take the value of the gene of lowest AveLogCPM)."""
    G = alc.size
    ns = int(sel.sum())
    if span is None:
        if legacy_span:
            span = 1.0 if ns <= 50 else 0.25 + 0.75 * (50.0 / ns) ** 0.5
        else:
            span = choose_lowess_span(ns)
    m0 = locfit_deg0_by_col(l0, cov, span)
    disp_trend = 0.1 * 2.0 ** nb.maximize_interpolant(pts, m0)
    trended = np.full(G, disp_trend[int(np.argmin(cov))])
    trended[sel] = disp_trend
    return span, m0, disp_trend, trended


def trended_deviances(ys, X, disp_trend, off):
    """Deviances of a GLM with the trended dispersions and the residual df adjusted for zero fits
    (``.residDF``), per gene (genes × samples counts ``ys``): the input of the prior df."""
    _, mu, dev, _ = _fit(ys, X, disp_trend, off)
    zero = (ys < _ZERO) & (mu < _ZERO)
    return dev, resid_df(zero, X)


def prior_df_of(dev, dfr, cov, *, robust, winsor_tail_p, squeeze_legacy):
    """The prior df of the tagwise shrinkage: ``squeezeVar`` of ``deviance / df`` on AveLogCPM."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = dev / dfr
    s2[dfr == 0] = 0.0
    s2 = np.maximum(s2, 0.0)
    _, _, prior_df = squeeze_var(
        s2, dfr, covariate=cov, robust=robust, winsor_tail_p=winsor_tail_p, legacy=squeeze_legacy
    )
    return prior_df


def tagwise_dispersions(common, trended, alc, sel, l0, m0, pts, prior_df, df_residual, *, robust, span) -> Dispersions:
    """The tagwise dispersions (weighted likelihood empirical Bayes, ``WLEB``) and the result."""
    G = trended.size
    ns = int(sel.sum())
    prior_df_arr = np.asarray(prior_df, dtype=np.float64)
    prior_n = prior_df_arr / df_residual
    tagwise = trended.copy()
    too_large = np.broadcast_to(prior_n > 1e6, (ns,))
    if not too_large.all():
        temp_n = np.minimum(np.broadcast_to(prior_n, (ns,)), 1e6)
        ind = nb.maximize_interpolant(pts, l0 + temp_n[:, None] * m0)
        vals = 0.1 * 2.0**ind
        if not robust:
            tagwise[sel] = vals
        else:
            t = tagwise[sel]
            t[~too_large] = vals[~too_large]
            tagwise[sel] = t
    if robust:
        full_df = np.full(G, np.inf)
        full_n = np.full(G, np.inf)
        full_df[sel] = np.broadcast_to(prior_df_arr, (ns,))
        full_n[sel] = np.broadcast_to(prior_n, (ns,))
        prior_df_out, prior_n_out = full_df, full_n
    else:
        prior_df_out, prior_n_out = float(prior_df_arr), float(prior_n)
    return Dispersions(common, trended, tagwise, alc, prior_df_out, prior_n_out, float(span), sel)


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


def _null_design(X: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """Design of the null model ``contrast' beta = 0``: the design without the coefficient when the
    contrast names one coefficient (edgeR's ``coef=``), else ``X Q2`` with ``Q2`` spanning the
    orthogonal complement of the contrast (the QR reparametrisation of ``glmLRT(contrast=)``)."""
    c = np.asarray(contrast, dtype=np.float64)
    nzi = np.flatnonzero(c != 0)
    if nzi.size == 1:
        return np.delete(X, nzi[0], axis=1)
    q, _ = np.linalg.qr(c[:, None], mode="complete")
    return X @ q[:, 1:]


def _lrt(fit: GLMFit, y, X, log_lib, contrast):
    """LR statistic and log2 fold change of one contrast (edgeR's ``glmLRT``)."""
    X0 = _null_design(X, contrast)
    _, _, dev0, _ = _fit(y, X0, fit.dispersion, log_lib)
    lr = dev0 - fit.deviance
    logfc = (fit.coefficients @ contrast) / _LN2
    return lr, logfc, 1


@dataclass
class DETable:
    """One contrast's table (arrays per gene)."""

    log2_fold_change: np.ndarray
    log_cpm: np.ndarray
    statistic: np.ndarray
    pvalue: np.ndarray
    padj: np.ndarray
    df_total: np.ndarray | None = None


def glm_lrt(fit: GLMFit, y_genes, X, log_lib, contrast, ave_log_cpm) -> DETable:
    """edgeR's ``glmLRT`` of one contrast vector on a fit from :func:`glm_fit_genes`."""
    lr, logfc, df = _lrt(fit, y_genes, X, log_lib, contrast)
    p = stats.chi2.sf(lr, df)
    return DETable(logfc, ave_log_cpm, lr, p, p_adjust_bh(p))


@dataclass
class QLFit:
    """``glmQLFit`` result: the GLM plus the quasi-likelihood dispersions."""

    glm: GLMFit
    df_residual_zeros: np.ndarray
    s2: np.ndarray
    var_post: np.ndarray
    var_prior: float | np.ndarray
    df_prior: float | np.ndarray


def glm_ql_fit(
    y_genes, X, dispersion, log_lib, ave_log_cpm, *, robust: bool = False, winsor_tail_p=(0.05, 0.1)
):
    """edgeR 3.x ``glmQLFit`` (``abundance.trend = TRUE``), kept by edgeR 4 as ``legacy = TRUE``:
    NB GLM with the given (trended) dispersions, QL dispersions ``deviance / df.residual.zeros``
    squeezed towards a trend in AveLogCPM (limma's ``fitFDist``/``fitFDistRobustly``)."""
    fit = glm_fit_genes(y_genes, X, dispersion, log_lib, prior_count=0.125)
    zero = (fit.fitted < _ZERO) & (np.asarray(y_genes) < _ZERO)
    dfr = resid_df(zero, X)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = fit.deviance / dfr
    s2[dfr == 0] = 0.0
    s2 = np.maximum(s2, 0.0)
    var_post, var_prior, df_prior = squeeze_var(
        s2, dfr, covariate=ave_log_cpm, robust=robust, winsor_tail_p=winsor_tail_p, legacy=True
    )
    return QLFit(fit, dfr, s2, var_post, var_prior, df_prior)


def _f_sf(f, df1, df2):
    f = np.asarray(f, dtype=np.float64)
    df2 = np.broadcast_to(np.asarray(df2, dtype=np.float64), f.shape)
    out = np.empty(f.shape)
    inf = ~np.isfinite(df2)
    if inf.any():
        out[inf] = stats.chi2.sf(f[inf] * df1, df1)
    if (~inf).any():
        out[~inf] = stats.f.sf(f[~inf], df1, df2[~inf])
    return out


def glm_ql_ftest(
    ql: QLFit, y_genes, X, log_lib, contrast, ave_log_cpm, *, poisson_bound: bool = True
) -> DETable:
    """edgeR's ``glmQLFTest`` of one contrast vector on a legacy fit (:func:`glm_ql_fit`), with the
    Poisson bound; edgeR 4's fits are tested by :func:`bulkpy._stats.edger.ql.glm_ql_ftest_v4`."""
    y = np.asarray(y_genes, dtype=np.float64)
    G, n = y.shape
    lr, logfc, df_test = _lrt(ql.glm, y, X, log_lib, contrast)
    with np.errstate(divide="ignore", invalid="ignore"):
        fstat = lr / df_test / ql.var_post
    df_total = np.asarray(ql.df_prior, dtype=np.float64) + ql.df_residual_zeros
    df_total = np.minimum(df_total, G * (n - X.shape[1]))
    p = _f_sf(fstat, df_test, df_total)
    if poisson_bound:
        below = below_poisson_bound(ql.glm, ql.var_post)
        if below.any():
            off = offset_rows(offsets(log_lib, G, n), below)
            p_pois = poisson_p(np.ascontiguousarray(y[below]), X, off, ql.glm.unshrunk[below], contrast, df_test)
            p[below] = np.maximum(p[below], p_pois)
    return DETable(logfc, ave_log_cpm, fstat, p, p_adjust_bh(p), np.broadcast_to(df_total, (G,)).copy())


def below_poisson_bound(fit: GLMFit, var_post) -> np.ndarray:
    """Genes whose QL variance falls below the Poisson variance at some observation (edgeR 3's
    ``glmQLFTest``/``glmTreat`` bound): ``(mu * dispersion + 1) * s2.post < 1``."""
    return np.any((fit.fitted * fit.dispersion[:, None] + 1) * np.asarray(var_post)[:, None] < 1, axis=1)


def poisson_p(yb, X, off, start, contrast, df_test) -> np.ndarray:
    """The Poisson (dispersion 0) likelihood-ratio p-values of one contrast for the genes ``yb``
    (genes × samples), the full model started from ``start`` (the QL fit's unshrunk coefficients)."""
    zero = np.zeros(yb.shape[0])
    _, _, dev1, _ = _fit(yb, X, zero, off, start=start)
    _, _, dev0, _ = _fit(yb, _null_design(X, contrast), zero, off)
    return stats.chi2.sf(dev0 - dev1, df_test)
