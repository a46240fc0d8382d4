"""Per-sample gene set scores: GSVA and ssGSEA as in R's GSVA 1.46, whose dense-matrix algorithms
GSVA 2.6 keeps (``gsvaParam``/``ssgseaParam``; the kernel choice ``kcdf="auto"`` is the adapter's).

Arrays are samples x genes (like ``AnnData.X``); gene sets are given as CSR-like
``indptr``/``indices`` (gene column indices per set). Results are samples x sets.

GSVA (Haenzelmann, Castelo & Guinney 2013), ``gsva(method="gsva")`` of GSVA 1.46:

1. per gene, a kernel estimate of the cumulative distribution of its expression across samples,
   evaluated at each sample, turned into log-odds: with ``kcdf="gaussian"`` the Gaussian kernel
   with bandwidth ``sd / 4``, whose normal CDF GSVA reads from a table of ``pnorm`` at steps of
   0.001 standard deviations (truncating, not rounding, the argument; 0 or 1 beyond 10); with
   ``"poisson"`` ``ppois(x_j, x_i + 0.5)`` (counts); with ``"none"`` the empirical CDF;
2. per sample, genes are ordered by that score (decreasing, ties in gene order) and weighted by
   the symmetric rank score ``|n - p + 1 - n / 2|`` (``p`` the 1-based position);
3. per set and sample, the running sum of a weighted Kolmogorov-Smirnov walk (steps
   ``w ** tau / sum(w ** tau)`` on the set's genes, ``-1 / (n - k)`` elsewhere); the score is its
   largest positive plus its largest negative deviation (``mx.diff=TRUE``), or
   ``max - min`` with ``abs_ranking``, or the larger deviation with its sign (``mx.diff=FALSE``).

ssGSEA (Barbie et al. 2009), ``gsva(method="ssgsea")`` of GSVA 1.46: genes ranked per sample
(average ranks of ties, then truncated to integers, as GSVA 1.46 stores them in an integer
matrix), weights ``rank ** alpha``; the score is the sum over the walk of (in-set step CDF minus
out-of-set step CDF), computed in closed form; with ``normalize`` all scores are divided by
their range over the whole samples x sets matrix.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse, special, stats

from .._jit import kernel

#: GSVA's table of the standard normal CDF: ``pnorm(10 * i / 10000)``, i = 0..10000.
_PRECOMPUTE_RESOLUTION = 10000
_MAX_PRECOMPUTE = 10.0
_CDF_TABLE = special.ndtr(
    _MAX_PRECOMPUTE * np.arange(_PRECOMPUTE_RESOLUTION + 1, dtype=np.float64) / _PRECOMPUTE_RESOLUTION
)


def row_sd(x: np.ndarray) -> np.ndarray:
    """Per-column (gene) standard deviation as GSVA's C code computes it: mean with a long double
    accumulator and one correction pass, sum of squares in long double."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    ld = np.longdouble
    s = x.astype(ld).sum(axis=0)
    tmp = s / n
    corr = (x.astype(ld) - tmp).sum(axis=0)
    tmp = np.where(np.isfinite(tmp.astype(np.float64)), tmp + corr / n, tmp)
    mean = tmp.astype(np.float64)
    d = x - mean
    ss = (d * d).astype(ld).sum(axis=0)
    return np.sqrt((ss / ld(n - 1)).astype(np.float64))


def constant_genes(x: np.ndarray) -> np.ndarray:
    """Genes GSVA drops as constant: since GSVA 1.52 (``.filterGenes``) those whose smallest and
    largest value are equal (or NaN); GSVA 1.46 used a standard deviation below 1e-10, which
    differs only for genes varying by less than that."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return np.ones(x.shape[1], dtype=bool)
    with np.errstate(invalid="ignore"):
        lo, hi = x.min(axis=0), x.max(axis=0)
    return ~(hi > lo)


@kernel
def _gauss_density(x, bw, table, out, c0, c1):
    """Log-odds of the Gaussian-kernel CDF of genes (columns of ``x``) ``c0:c1`` at every sample.

    GSVA sums ``cdf((x_j - x_i) / h)`` over ``i`` for every sample ``j``. The kernel is evaluated
    once per pair: ``(x_i - x_j) / h`` is exactly the negative of ``(x_j - x_i) / h`` in floating
    point and the table is symmetric, so the pair's term for ``i`` is GSVA's own value for it,
    and each sum still receives its terms in GSVA's order (``i = 0, 1, ...``): the result is
    the same to the last bit, in half the time."""
    n = x.shape[0]
    col = np.empty(n)
    lt = np.empty(n)
    for c in range(c0, c1):
        h = bw[c]
        for i in range(n):
            col[i] = x[i, c]
            lt[i] = 0.0
        for a in range(n):
            ya = col[a]
            acc = lt[a] + table[0]  # terms i < a came from the earlier rows; then i = a (v = 0)
            for i in range(a + 1, n):
                v = (ya - col[i]) / h
                if v < -10.0:
                    acc += 0.0
                    lt[i] += 1.0
                elif v > 10.0:
                    acc += 1.0
                    lt[i] += 0.0
                else:
                    t = table[int(abs(v) / 10.0 * 10000.0)]
                    if v < 0:
                        acc += 1.0 - t
                        lt[i] += t
                    elif v > 0:
                        acc += t
                        lt[i] += 1.0 - t
                    else:
                        acc += t
                        lt[i] += t
            m = acc / n
            out[a, c] = -1.0 * math.log((1.0 - m) / m)


def _n_threads() -> int:
    try:
        import numba

        return max(1, int(numba.get_num_threads()))
    except Exception:  # pragma: no cover
        return 1


def _threaded(n: int, fn, min_block: int = 64) -> None:
    """Run ``fn(a, b)`` over blocks of ``range(n)`` in threads (compiled kernels release the GIL;
    each block writes its own part of the output, so the result does not depend on the split)."""
    workers = max(1, min(_n_threads(), n // min_block))
    bounds = np.linspace(0, n, workers + 1).astype(int)
    jobs = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    if len(jobs) <= 1:
        for a, b in jobs:
            fn(a, b)
        return
    with ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        for f in [ex.submit(fn, a, b) for a, b in jobs]:
            f.result()


def kernel_density(x: np.ndarray, kcdf: str = "gaussian", *, block: int = 512) -> np.ndarray:
    """GSVA's step 1: samples x genes matrix of log-odds of each value under its gene's kernel CDF."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    n, g = x.shape
    if kcdf == "gaussian":
        bw = row_sd(x) / 4.0
        if not (bw > 0).all():
            raise ValueError(
                f"{int((~(bw > 0)).sum())} constant genes: remove them first (constant_genes), as GSVA does"
            )
        out = np.empty_like(x)
        _threaded(g, lambda a, b: _gauss_density(x, bw, _CDF_TABLE, out, a, b))
        return out
    if kcdf == "poisson":
        out = np.empty_like(x)
        for a in range(0, g, block):
            xb = x[:, a : a + block]
            # lt[j, c] = mean_i ppois(x[j, c], x[i, c] + 0.5)
            lt = special.pdtr(xb[:, None, :], xb[None, :, :] + 0.5).mean(axis=1)
            with np.errstate(divide="ignore"):
                out[:, a : a + block] = -1.0 * np.log((1.0 - lt) / lt)
        return out
    if kcdf == "none":
        # R: ecdf(x)(x), then log(F / (1 - F))
        f = stats.rankdata(x, axis=0, method="max") / n
        with np.errstate(divide="ignore"):
            return np.log(f / (1.0 - f))
    raise ValueError(f"kcdf={kcdf!r} is not supported; choose one of ['gaussian', 'poisson', 'none']")


def _incidence(indptr, indices, n_genes):
    """Gene -> sets incidence (CSC of the sets x genes membership)."""
    m = indptr.size - 1
    rows = np.repeat(np.arange(m), np.diff(indptr))
    mat = sparse.csr_matrix((np.ones(indices.size), (rows, indices)), shape=(m, n_genes)).tocsc()
    mat.sort_indices()
    return mat.indptr.astype(np.int64), mat.indices.astype(np.int64)


@kernel
def _ks_walks(order, score, g_ptr, g_sets, sizes, mode, j0, j1, out):
    """GSVA's random walk for every set in samples ``j0:j1``.

    ``order[j]``: genes of sample ``j`` by decreasing score; ``score[p]``: the walk's weight of
    the gene at position ``p`` (its rank score to the power tau); ``g_ptr``/``g_sets``: the sets of
    each gene. The running sum of a set peaks right after one of its genes and dips right before
    one, so only those points are visited. ``mode``: 0 max + min (mx.diff), 1 max - min
    (abs.ranking), 2 the larger deviation with its sign.
    """
    n = order.shape[1]
    m = sizes.shape[0]
    total = np.zeros(m)
    cum = np.zeros(m)
    hits = np.zeros(m, dtype=np.int64)
    mx_pos = np.zeros(m)
    mx_neg = np.zeros(m)
    for j in range(j0, j1):
        for s in range(m):
            total[s] = 0.0
            cum[s] = 0.0
            hits[s] = 0
            mx_pos[s] = 0.0
            mx_neg[s] = 0.0
        for p in range(n):
            g = order[j, p]
            w = score[p]
            for q in range(g_ptr[g], g_ptr[g + 1]):
                total[g_sets[q]] += w
        for p in range(n):
            g = order[j, p]
            w = score[p]
            for q in range(g_ptr[g], g_ptr[g + 1]):
                s = g_sets[q]
                dec = 1.0 / (n - sizes[s])
                before = cum[s] / total[s] - dec * (p - hits[s])
                if before < mx_neg[s]:
                    mx_neg[s] = before
                cum[s] += w
                hits[s] += 1
                after = cum[s] / total[s] - dec * (p + 1 - hits[s])
                if after > mx_pos[s]:
                    mx_pos[s] = after
        for s in range(m):
            if mode == 0:
                out[j, s] = mx_pos[s] + mx_neg[s]
            elif mode == 1:
                out[j, s] = mx_pos[s] - mx_neg[s]
            else:
                out[j, s] = mx_pos[s] if mx_pos[s] > abs(mx_neg[s]) else mx_neg[s]


def gsva(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    kcdf: str = "gaussian",
    tau: float = 1.0,
    mx_diff: bool = True,
    abs_ranking: bool = False,
) -> np.ndarray:
    """GSVA scores (samples x sets) of the sets ``indices[indptr[s]:indptr[s+1]]`` (gene columns of
    ``x``). Constant genes must be removed beforehand (see :func:`constant_genes`)."""
    x = np.asarray(x, dtype=np.float64)
    n_samples, n = x.shape
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    sizes = np.diff(indptr)
    dens = kernel_density(x, kcdf) if n_samples > 1 else x.copy()
    order = np.argsort(-dens, axis=1, kind="stable")
    score = np.abs(n - np.arange(n, dtype=np.float64) - n / 2.0)  # rank score by position (0-based)
    g_ptr, g_sets = _incidence(indptr, indices, n)
    mode = 0 if mx_diff and not abs_ranking else (1 if mx_diff else 2)
    weight = score if tau == 1 else score**tau
    out = np.empty((n_samples, sizes.size))
    order = np.ascontiguousarray(order)
    _threaded(
        n_samples, lambda a, b: _ks_walks(order, weight, g_ptr, g_sets, sizes, mode, a, b, out), min_block=8
    )
    return out


def ssgsea(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    alpha: float = 0.25,
    normalize: bool = True,
) -> np.ndarray:
    """ssGSEA scores (samples x sets) as GSVA 1.46 computes them (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    n_samples, n = x.shape
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    sizes = np.diff(indptr).astype(np.float64)
    m = sizes.size
    rows = np.repeat(np.arange(m), np.diff(indptr))
    member = sparse.csr_matrix((np.ones(indices.size), (rows, indices)), shape=(m, n))
    ranks = np.trunc(stats.rankdata(x, axis=1, method="average"))  # GSVA 1.46 stores them as integers
    ra = np.abs(ranks) ** alpha
    # position of each gene in the decreasing order of its rank (ties in gene order), 0-based
    order = np.argsort(-ranks, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(n)[None, :].repeat(n_samples, axis=0), axis=1)
    weight_pos = (n - pos).astype(np.float64)  # n - idx + 1 with idx 1-based
    num = member @ (ra * weight_pos).T  # sets x samples
    den = member @ ra.T
    sum_pos = member @ weight_pos.T
    es = num / den - (n * (n + 1) / 2.0 - sum_pos) / (n - sizes)[:, None]
    es = es.T
    if normalize:
        es = es / (es.max() - es.min())
    return es
