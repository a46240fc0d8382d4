"""Aggregation of cells into pseudobulk units.

Arrays are cells × genes, like ``AnnData.X``: scipy CSR/CSC sparse or dense numpy. Each cell belongs
to at most one unit, given as an integer code per cell (``-1`` leaves a cell out). The sums are sparse
indicator-matrix products (units × cells) @ (cells × genes); the cell matrix is never densified nor
copied whole, and the result (units × genes) is dense float64 and exact:

- float64 (and float32 integer counts) are multiplied in their own precision in one product, with no
  copy of the cell matrix; float32 sums are exact while below 2**24, and the rare matrix whose sums
  reach it is summed again in float64;
- other dtypes (integers, unchecked float32) are cast to float64 one block of ~16M non-zeros at a time.

The raw-count check (non-negative finite integers) also runs block by block.

A dask cell matrix (chunks numpy or scipy sparse) is summed chunk by chunk in one ``dask.compute``
(:func:`sum_by_unit_blocks`): every chunk gives its units × chunk-genes sums (checked as counts),
which are added over the chunks of cells; only the units × genes result reaches the client.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._blocks import is_dask

#: Non-zeros (sparse) or elements (dense) per block: 2**24 ≈ 16.8M, i.e. a float64 temporary of ~130 MB.
BLOCK_SIZE = 1 << 24
#: Values checked at once by the raw-count check: small enough for its passes to stay in cache.
CHECK_BLOCK = 1 << 18
#: float32 represents every integer up to 2**24 exactly.
_F32_EXACT = float(1 << 24)


class NotCountsError(ValueError):
    """The matrix does not hold raw counts (non-negative finite integers).

    ``kind`` is ``"non-finite"``, ``"negative"`` or ``"non-integer"``; ``examples`` a few offending
    values; ``max_value`` the largest finite value in the block where they were found.
    """

    def __init__(self, kind: str, examples: np.ndarray, max_value: float, dtype):
        self.kind = kind
        self.examples = examples
        self.max_value = max_value
        ex = ", ".join(f"{v:.6g}" for v in examples)
        super().__init__(
            f"it holds {kind} values (e.g. {ex}; largest value {max_value:.6g}, dtype {dtype}), "
            "but pseudobulk sums need raw counts: non-negative integers"
        )


def _check_count_block(values: np.ndarray, buf: np.ndarray | None = None) -> None:
    """Raise :class:`NotCountsError` unless ``values`` are finite non-negative integers."""
    if values.size == 0:
        return
    kind = values.dtype.kind
    if kind == "b":
        return
    if kind not in "iuf":
        raise TypeError(f"the count matrix must be numeric, got dtype {values.dtype}")
    lo = values.min()
    if kind == "f":
        # fast path (min, rint, subtract, any): NaN and negatives fail `lo >= 0`; a fraction
        # leaves rint(v) - v != 0 and +inf leaves inf - inf = NaN, both truthy for any()
        bad = not lo >= 0
        if not bad:
            r = np.rint(values, out=buf[: values.size].reshape(values.shape) if buf is not None else None)
            with np.errstate(invalid="ignore"):
                np.subtract(r, values, out=r)
            bad = bool(r.any())
        if bad:
            v = values.ravel()
            finite = np.isfinite(v)
            fmax = float(v[finite].max()) if finite.any() else float("nan")
            if not finite.all():
                raise NotCountsError("non-finite", v[~finite][:3], fmax, values.dtype)
            if (v < 0).any():
                raise NotCountsError("negative", v[v < 0][:3], fmax, values.dtype)
            frac = v != np.rint(v)
            raise NotCountsError("non-integer", v[frac][:3], fmax, values.dtype)
    elif lo < 0:
        v = values.ravel()
        raise NotCountsError("negative", v[v < 0][:3], float(values.max()), values.dtype)


def check_counts_matrix(x, *, block_size: int = CHECK_BLOCK) -> None:
    """Raise :class:`NotCountsError` unless every stored value of ``x`` is a non-negative integer.

    Works on cache-sized pieces (no copy of the whole matrix).
    """
    if sparse.issparse(x):
        data = x.data[: x.nnz]
    else:
        x = np.asarray(x)
        data = x.reshape(-1) if x.flags.c_contiguous else None
        if data is None:  # a strided view: check row blocks
            rows = max(1, block_size // max(x.shape[1], 1))
            for s in range(0, x.shape[0], rows):
                _check_count_block(x[s : s + rows])
            return
    buf = np.empty(min(block_size, data.size), dtype=data.dtype) if data.dtype.kind == "f" else None
    for a in range(0, data.size, block_size):
        _check_count_block(data[a : a + block_size], buf)


def _major_blocks(indptr: np.ndarray, block_size: int) -> list[tuple[int, int]]:
    """Split the major axis of a compressed matrix into runs holding about ``block_size`` non-zeros."""
    n = len(indptr) - 1
    if n == 0:
        return []
    # cumulative non-zeros at each major index; cut where it crosses a multiple of block_size
    targets = np.arange(block_size, int(indptr[-1]) + block_size, block_size)
    cuts = np.searchsorted(indptr, targets, side="left")
    cuts = np.unique(np.clip(np.concatenate([[0], cuts, [n]]), 0, n))
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))


def indicator(codes: np.ndarray, n_units: int, *, dtype=np.float64) -> sparse.csr_matrix:
    """Sparse units × cells indicator: entry (u, c) is 1 when cell ``c`` has code ``u``.

    Cells with a negative code belong to no unit.
    """
    codes = np.asarray(codes)
    cells = np.flatnonzero(codes >= 0)
    return sparse.csr_matrix((np.ones(cells.size, dtype=dtype), (codes[cells], cells)), shape=(n_units, codes.size))


def count_cells(codes: np.ndarray, n_units: int) -> np.ndarray:
    """Number of cells per unit."""
    codes = np.asarray(codes)
    return np.bincount(codes[codes >= 0], minlength=n_units).astype(np.int64)


def _as_float64(values: np.ndarray, buf: np.ndarray | None = None) -> np.ndarray:
    """``values`` as float64: itself if it is, else cast into ``buf`` (reused across blocks) or a new array."""
    if values.dtype == np.float64:
        return values
    if buf is None:
        return values.astype(np.float64)
    out = buf[: values.size]
    np.copyto(out, values, casting="unsafe")
    return out


def _csr_block(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
    """A CSR matrix over the given arrays without copying them.

    (scipy's constructor copies a small slice of a much larger index array to free memory, which is
    what we do not want for a block taken out of the cell matrix.)
    """
    m = sparse.csr_matrix(shape, dtype=data.dtype)
    m.data, m.indices, m.indptr = data, indices, indptr
    return m


def _add_into(out: np.ndarray, part) -> None:
    """``out += part`` for a sparse ``part`` without duplicate entries (a product's result)."""
    if not part.nnz:
        return
    if part.nnz * 4 >= out.size:
        out += part.toarray()
    else:
        part = part.tocoo()
        out.ravel()[part.row.astype(np.int64) * out.shape[1] + part.col] += part.data


def _sum_blocks_float64(x, codes, n_units: int, blocks, biggest: int, out: np.ndarray) -> None:
    """Add the per-unit sums of sparse ``x`` into ``out``, casting one block at a time to float64."""
    n_cells, n_genes = x.shape
    buf64 = np.empty(biggest, dtype=np.float64) if x.data.dtype != np.float64 else None
    if x.format == "csr":
        # blocks of cells: units × block indicator @ block of rows, accumulated
        for s, e in blocks:
            a, b = int(x.indptr[s]), int(x.indptr[e])
            blk = _csr_block(_as_float64(x.data[a:b], buf64), x.indices[a:b], x.indptr[s : e + 1] - a, (e - s, n_genes))
            _add_into(out, indicator(codes[s:e], n_units) @ blk)
    else:
        # blocks of genes: (genes × cells) @ (cells × units), transposed into place
        ind_t = indicator(codes, n_units).T.tocsr()
        for s, e in blocks:
            a, b = int(x.indptr[s]), int(x.indptr[e])
            blk_t = _csr_block(_as_float64(x.data[a:b], buf64), x.indices[a:b], x.indptr[s : e + 1] - a, (e - s, n_cells))
            out[:, s:e] = (blk_t @ ind_t).toarray().T


def sum_by_unit(
    x,
    codes: np.ndarray,
    n_units: int,
    *,
    check_counts: bool = True,
    block_size: int = BLOCK_SIZE,
) -> np.ndarray:
    """Sum the cells (rows) of ``x`` within each unit.

    Parameters
    ----------
    x
        Cells × genes: scipy sparse (CSR or CSC; other formats are converted to CSR), dense, or a
        dask array of either (:func:`sum_by_unit_blocks`).
    codes
        Unit index (``0 .. n_units-1``) of every cell; ``-1`` leaves a cell out.
    n_units
        Number of units (rows of the result).
    check_counts
        Raise :class:`NotCountsError` if a value is negative, non-finite or non-integer.
    block_size
        Non-zeros (sparse matrices summed in float64 blocks) or elements (dense) handled at once.

    Returns
    -------
    Dense float64 array, units × genes.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 1 or codes.size != x.shape[0]:
        raise ValueError(f"codes must hold one entry per cell ({x.shape[0]}), got shape {codes.shape}")
    if codes.size and codes.max() >= n_units:
        raise ValueError(f"codes must be < n_units={n_units}, got {codes.max()}")
    if is_dask(x):
        return sum_by_unit_blocks(x, codes, n_units, check_counts=check_counts, block_size=block_size)
    block_size = int(block_size)
    n_cells, n_genes = x.shape

    if sparse.issparse(x) and x.format not in ("csr", "csc"):
        x = sparse.csr_matrix(x)
    if sparse.issparse(x):
        dtype = x.data.dtype
        blocks = _major_blocks(x.indptr, block_size)
        biggest = max((int(x.indptr[e] - x.indptr[s]) for s, e in blocks), default=0)
        if check_counts:
            check_counts_matrix(x)
        if dtype == np.float64 or (dtype == np.float32 and check_counts):
            # One product in the matrix's own precision, so the cell matrix is not copied. float32 sums
            # of non-negative integers are exact while below 2**24: the partial sums only grow, and once
            # one passes 2**24 the (rounded) result stays >= 2**24, which sends us to the float64 path.
            ind = indicator(codes, n_units, dtype=dtype)
            res = ind @ x if x.format == "csr" else (x.T @ ind.T.tocsr()).T
            out = np.asarray(res.toarray(), dtype=np.float64)
            if dtype == np.float64 or not out.size or out.max() < _F32_EXACT:
                return out
        out = np.zeros((n_units, n_genes), dtype=np.float64)
        _sum_blocks_float64(x, codes, n_units, blocks, biggest, out)
        return out

    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d cells × genes matrix, got {x.ndim} dimensions")
    if check_counts:
        check_counts_matrix(x)
    out = np.zeros((n_units, n_genes), dtype=np.float64)
    rows = max(1, block_size // max(n_genes, 1))
    for s in range(0, n_cells, rows):
        e = min(n_cells, s + rows)
        vals = x[s:e]
        out += indicator(codes[s:e], n_units) @ _as_float64(vals)
    return out


def _chunk_sums(chunk, codes, n_units, check_counts, block_size):
    return sum_by_unit(chunk, codes, n_units, check_counts=check_counts, block_size=block_size)


def _added(*parts):
    out = parts[0].copy()
    for q in parts[1:]:
        out += q
    return out


def sum_by_unit_blocks(x, codes: np.ndarray, n_units: int, *, check_counts: bool = True, block_size: int = BLOCK_SIZE) -> np.ndarray:
    """:func:`sum_by_unit` of a dask cells × genes array, chunk by chunk in one ``dask.compute``:
    each chunk's units × genes sums (each chunk checked as counts), added over the chunks of cells
    in order (exact for counts: integer sums below 2**53)."""
    import dask

    chunks = x.to_delayed()
    bounds = np.concatenate([[0], np.cumsum(x.chunks[0])])
    cols = []
    for j in range(chunks.shape[1]):
        parts = [
            dask.delayed(_chunk_sums, pure=True)(chunks[i, j], codes[bounds[i] : bounds[i + 1]], n_units, check_counts, block_size)
            for i in range(chunks.shape[0])
        ]
        cols.append(dask.delayed(_added, pure=True)(*parts))
    out = dask.compute(*cols)
    return np.concatenate(out, axis=1) if out else np.zeros((n_units, x.shape[1]))


def unit_segments(codes: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells ordered by unit (stable) and the start of each unit's run in that order."""
    codes = np.asarray(codes)
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    starts = np.searchsorted(codes[order], np.arange(n_units), side="left")
    return order, starts


def constant_within(values: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each unit, whether the integer ``values`` (e.g. factor codes) are all equal over its cells.

    ``order``/``starts`` come from :func:`unit_segments`; every unit must have at least one cell.
    """
    v = np.asarray(values)[order]
    if v.size == 0:
        return np.ones(len(starts), dtype=bool)
    return np.minimum.reduceat(v, starts) == np.maximum.reduceat(v, starts)
