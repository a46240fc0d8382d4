"""edgeR's ``filterByExpr`` (edgeR 3.40): keep genes with enough counts in enough samples.

Arrays are samples × genes, like ``AnnData.X``. The rule, for a count matrix ``y``:

1. the smallest group size ``m``: from a design, ``1 / max(hat values)`` of the design with an
   intercept column added (R's ``hat(design)``); from a grouping, the size of the smallest group
   that has samples; with neither, the number of samples;
2. when ``m > large_n``, ``m = large_n + (m - large_n) * min_prop``;
3. the CPM cutoff is ``min_count / median(library sizes) * 1e6``;
4. a gene is kept when its CPM (``count * (1e6 / library size)``) reaches the cutoff in at least
   ``m - 1e-14`` samples and its total count is at least ``min_total_count - 1e-14``.

The arithmetic follows edgeR's order of operations so that the kept set is the same, not merely
close: CPMs are ``count * (1e6 / lib.size)`` as edgeR's C++ ``calculate_cpm_raw`` computes them,
the cutoff is ``(min.count / median) * 1e6``, the median of an even number of library sizes is the
long-double mean of the middle two as in R's ``mean``, and sums are accumulated in long double
(R's ``colSums``/``rowSums``).

A dask matrix is read in two passes (``dask.compute`` calls): the library sizes over blocks of
whole samples (the same long double row sums), then the per-gene CPM counts and totals over blocks
of genes (the same per-gene arithmetic), so the kept set is the one the matrix in memory gives.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._blocks import blocks_for, is_dask, map_gene_blocks, map_sample_blocks

#: edgeR's tolerance in both comparisons.
TOL = 1e-14
#: R's ``qr()`` rank tolerance.
QR_TOL = 1e-7


def hat_values(design: np.ndarray, *, intercept: bool = True) -> np.ndarray:
    """Leverages (diagonal of the hat matrix) of ``design``, as R's ``stats::hat``.

    As in R, an intercept column is prepended by default (``hat(x, intercept = TRUE)``), so a
    design without one is treated as if it had it; with an intercept already present the result
    is the ordinary leverage. Rank deficiency is allowed: the leverages are those of the column
    space, with R's rank tolerance ``1e-7`` in a pivoted Householder QR.
    """
    from scipy.linalg import qr

    X = np.asarray(design, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"design must be 2-dimensional, got shape {X.shape}")
    if intercept:
        X = np.column_stack([np.ones(X.shape[0]), X])
    if X.shape[1] == 0:
        return np.zeros(X.shape[0])
    q, r, _ = qr(X, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    rank = int((d > QR_TOL * d[0]).sum()) if d.size and d[0] > 0 else 0
    return (q[:, :rank] ** 2).sum(axis=1)


def min_group_size_from_design(design: np.ndarray) -> float:
    """edgeR's minimum effective group size for a design: ``1 / max(hat(design))``."""
    h = hat_values(design)
    return float(1.0 / h.max())


def min_group_size_from_groups(codes: np.ndarray) -> int:
    """Size of the smallest non-empty group; ``codes`` are integer group codes (>= 0)."""
    codes = np.asarray(codes)
    if codes.size == 0:
        raise ValueError("no samples in the grouping")
    if codes.dtype.kind not in "iu" or (codes < 0).any():
        raise ValueError("group codes must be non-negative integers")
    n = np.bincount(codes)
    return int(n[n > 0].min())


def large_n_adjust(min_size: float, *, large_n: float = 10, min_prop: float = 0.7) -> float:
    """edgeR's relaxation for large groups: ``large_n + (m - large_n) * min_prop`` when ``m > large_n``."""
    if min_size > large_n:
        return large_n + (min_size - large_n) * min_prop
    return float(min_size)


def r_median(x: np.ndarray) -> float:
    """R's ``median``: for an even length the mean of the two middle values computed as R's
    ``mean`` does (long-double sum, divided, plus the long-double mean of the residuals)."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("median of an empty vector")
    if n % 2 == 1:
        return float(x[n // 2])
    mid = x[n // 2 - 1 : n // 2 + 1].astype(np.longdouble)
    s = mid.sum() / 2
    if np.isfinite(s):
        s = s + (mid - s).sum() / 2
    return float(s)


def _row_sums_ld(rows, x) -> np.ndarray:
    return np.asarray(x.sum(axis=1, dtype=np.longdouble), dtype=np.float64)


def library_sizes(counts) -> np.ndarray:
    """Per-sample column sums of the counts (R's ``colSums``, accumulated in long double); a dask
    matrix in one pass over blocks of samples."""
    if is_dask(counts):
        return np.concatenate(map_sample_blocks(_row_sums_ld, [counts]))
    if sparse.issparse(counts):
        return np.asarray(counts.sum(axis=1, dtype=np.longdouble), dtype=np.float64).ravel()
    return np.asarray(np.asarray(counts).sum(axis=1, dtype=np.longdouble), dtype=np.float64)


def gene_totals(counts) -> np.ndarray:
    """Per-gene total counts (R's ``rowSums``, accumulated in long double)."""
    if sparse.issparse(counts):
        return np.asarray(counts.sum(axis=0, dtype=np.longdouble), dtype=np.float64).ravel()
    return np.asarray(np.asarray(counts).sum(axis=0, dtype=np.longdouble), dtype=np.float64)


def cpm_cutoff(lib_size: np.ndarray, min_count: float) -> float:
    """The CPM that ``min_count`` reads are in a library of median size: ``min_count / median * 1e6``."""
    return float(min_count / r_median(lib_size) * 1e6)


def n_samples_above(counts, lib_size: np.ndarray, cutoff: float) -> np.ndarray:
    """Per gene, the number of samples whose CPM ``count * (1e6 / lib_size)`` is >= ``cutoff``."""
    lib_size = np.asarray(lib_size, dtype=np.float64)
    scale = 1e6 / lib_size
    n, p = counts.shape
    if sparse.issparse(counts):
        if cutoff <= 0:  # implicit zeros pass too
            return np.full(p, n, dtype=np.int64)
        X = sparse.csr_matrix(counts)
        rows = np.repeat(np.arange(n), np.diff(X.indptr))
        passed = X.data.astype(np.float64) * scale[rows] >= cutoff
        return np.bincount(X.indices[passed], minlength=p).astype(np.int64)
    X = np.asarray(counts)
    out = np.zeros(p, dtype=np.int64)
    for i in range(n):  # one sample at a time keeps memory at one row of CPMs
        out += X[i].astype(np.float64, copy=False) * scale[i] >= cutoff
    return out


def _gene_counts_block(b, lib: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    x = b.read(0)
    return n_samples_above(x, lib, cutoff), gene_totals(x)


def _per_gene_counts(counts, lib: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, the number of samples at or above the CPM cutoff and the total count (a dask
    matrix: one pass over blocks of genes)."""
    if not is_dask(counts):
        return n_samples_above(counts, lib, cutoff), gene_totals(counts)
    parts = map_gene_blocks(_gene_counts_block, [counts], blocks_for(counts, counts.shape[0]), args=(lib, cutoff))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def filter_by_expr(
    counts,
    *,
    lib_size: np.ndarray | None = None,
    design: np.ndarray | None = None,
    group: np.ndarray | None = None,
    min_count: float = 10,
    min_total_count: float = 15,
    large_n: float = 10,
    min_prop: float = 0.7,
) -> tuple[np.ndarray, dict[str, float]]:
    """edgeR's ``filterByExpr.default``: which genes have enough counts to be worth testing.

    Parameters
    ----------
    counts
        Counts, samples × genes (dense, scipy sparse or dask), finite and non-negative.
    lib_size
        Library sizes (default: the per-sample sums of ``counts``), all positive.
    design
        Design matrix, samples × coefficients; its hat values give the minimum group size.
    group
        Integer group codes per sample (>= 0); used instead of ``design`` when given (edgeR's
        precedence).
    min_count, min_total_count, large_n, min_prop
        edgeR's arguments ``min.count``, ``min.total.count``, ``large.n``, ``min.prop``.

    Returns
    -------
    ``(keep, info)``: the boolean mask over genes, and a dict with ``min_group_size`` (before the
    large-n relaxation), ``min_samples`` (after it), ``median_lib_size`` and ``cpm_cutoff``.
    """
    n, _ = counts.shape
    lib = library_sizes(counts) if lib_size is None else np.asarray(lib_size, dtype=np.float64).ravel()
    if lib.shape != (n,):
        raise ValueError(f"lib_size has {lib.size} values for {n} samples")
    if not np.all(np.isfinite(lib)) or np.any(lib <= 0):
        raise ValueError("library sizes must be finite and positive (edgeR's cpm stops otherwise)")
    if group is not None:
        group = np.asarray(group)
        if group.shape != (n,):
            raise ValueError(f"group has {group.size} values for {n} samples")
        m = float(min_group_size_from_groups(group))
    elif design is not None:
        design = np.asarray(design, dtype=np.float64)
        if design.ndim != 2 or design.shape[0] != n:
            raise ValueError(f"design must have one row per sample ({n}), got shape {design.shape}")
        m = min_group_size_from_design(design)
    else:
        m = float(n)
    m_eff = large_n_adjust(m, large_n=large_n, min_prop=min_prop)
    median = r_median(lib)
    cutoff = float(min_count / median * 1e6)
    above, totals = _per_gene_counts(counts, lib, cutoff)
    keep_cpm = above >= (m_eff - TOL)
    keep_total = totals >= (min_total_count - TOL)
    info = {"min_group_size": m, "min_samples": m_eff, "median_lib_size": median, "cpm_cutoff": cutoff}
    return keep_cpm & keep_total, info
