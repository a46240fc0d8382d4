"""The gene-block driver: how every engine walks a samples × genes matrix in blocks of genes.

Engines never slice blocks themselves and never call ``np.asarray`` on a whole counts matrix; they
ask this module for

* :func:`gene_blocks` — the blocks (the block-size rule lives here, once): contiguous slices of
  genes holding about :data:`BLOCK_ELEMENTS` matrix elements each;
* :func:`read_block` — one block as a dense float64 array (samples × genes, or genes × samples
  for the compiled kernels), from a numpy array, a scipy sparse matrix or a dask array (the block
  is computed, nothing else);
* :func:`for_each_block` — runs a function on every block with a progress callback after each one;
  an interruption (``KeyboardInterrupt``) propagates between blocks, and because engines return new
  arrays and adapters write into the AnnData only after the engine returns, an interrupted call
  leaves the user's object as it was.

The per-gene results of a block are written into preallocated gene-length arrays by the caller (or
gathered with :func:`gather`), so every engine produces the same numbers whatever the block size:
genes are independent in every per-gene step. Dask input plugs in at :func:`read_block`; the
per-gene vectors gathered between passes are small (one number per gene).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: default number of matrix elements (genes × samples) per block of genes (64 MB of float64)
BLOCK_ELEMENTS = 8_000_000


@dataclass(frozen=True)
class GeneBlocks:
    """Contiguous blocks of ``size`` genes (the last may be shorter) over ``n_genes`` genes."""

    n_genes: int
    size: int

    def __iter__(self) -> Iterator[slice]:
        for start in range(0, self.n_genes, self.size):
            yield slice(start, min(self.n_genes, start + self.size))

    def __len__(self) -> int:
        return -(-self.n_genes // self.size)


def gene_blocks(
    n_genes: int, n_samples: int, *, block_genes: int | None = None, block_elements: int = BLOCK_ELEMENTS
) -> GeneBlocks:
    """Blocks of genes for a matrix of ``n_samples`` × ``n_genes``: ``block_genes`` genes each, or
    as many as fit in ``block_elements`` matrix elements (at least one gene)."""
    if block_genes is not None:
        if isinstance(block_genes, bool) or int(block_genes) < 1:
            raise ValueError(f"block_genes must be a positive integer, got {block_genes!r}")
        size = int(block_genes)
    else:
        size = max(1, int(block_elements) // max(int(n_samples), 1))
    return GeneBlocks(int(n_genes), size)


def is_dask(a) -> bool:
    """Whether ``a`` is a dask array (without importing dask when it is not installed)."""
    return type(a).__module__.split(".")[0] == "dask"


def read_block(a, genes, *, gene_major: bool = False, keep: np.ndarray | None = None) -> np.ndarray:
    """The genes ``genes`` (a slice or an index array) of the samples × genes matrix ``a`` as a
    dense float64 array; ``keep`` (a boolean mask over those genes) drops some of them.

    ``gene_major=True`` gives genes × samples in C order (the compiled kernels' layout). Works on
    numpy arrays, scipy sparse matrices and dask arrays (only the block is computed)."""
    b = a[:, genes]
    if is_dask(b):
        b = b.compute()
    if sparse.issparse(b):
        b = b.toarray()
    b = np.asarray(b, dtype=np.float64)
    if gene_major:
        b = b.T
    if keep is not None and not keep.all():
        b = b[keep] if gene_major else b[:, keep]
    return np.ascontiguousarray(b)


def for_each_block(
    fn: Callable[[slice], None],
    blocks: GeneBlocks | Sequence[slice],
    *,
    on_block: Callable[[str], None] | None = None,
    stage: str = "",
) -> None:
    """Call ``fn(block)`` for every block of genes, then ``on_block(stage)`` (progress)."""
    for sl in blocks:
        fn(sl)
        if on_block is not None:
            on_block(stage)


def gather(parts: Sequence[np.ndarray], *, axis: int = -1) -> np.ndarray:
    """Per-gene results of consecutive blocks joined along the gene axis."""
    if not parts:
        return np.empty(0)
    return np.concatenate(parts, axis=axis)


# ----------------------------------------------------------------------------------------------
# Mapping a per-block function over genes: in memory, or as one dask graph per pass
# ----------------------------------------------------------------------------------------------
class Block:
    """The matrices of one block of genes as a per-block function sees them.

    ``sl`` is the block's slice of the full gene axis (to index per-gene vectors); :meth:`read`
    gives matrix ``i`` of the block as a dense float64 array (as :func:`read_block`). In memory the
    block is read from the whole matrix; under dask the block's chunk was computed by the task and
    is read from there, so the function sees the same numbers either way."""

    __slots__ = ("sl", "_mats", "_local")

    def __init__(self, sl: slice, mats: Sequence, local: bool):
        self.sl, self._mats, self._local = sl, mats, local

    @property
    def size(self) -> int:
        return self.sl.stop - self.sl.start

    def read(self, i: int = 0, *, gene_major: bool = False, keep: np.ndarray | None = None) -> np.ndarray | None:
        a = self._mats[i]
        if a is None:
            return None
        return read_block(a, slice(0, self.size) if self._local else self.sl, gene_major=gene_major, keep=keep)


def blocks_for(a, n_samples: int, *, block_genes: int | None = None) -> GeneBlocks:
    """The blocks an engine walks ``a`` (samples × genes) in: :func:`gene_blocks`, whatever the
    array type. A dask array is rechunked to these blocks inside the graph (cheap along genes),
    so every gene is computed in the same block as in memory: the matrix products of a block round
    a gene's numbers depending on its place in the block, and DESeq2's line searches can carry
    that last bit to 1e-5, so equal blocks are what makes dask and in-memory results bitwise equal."""
    return gene_blocks(int(a.shape[1]), n_samples, block_genes=block_genes)


def _aligned(a, blocks: GeneBlocks):
    """``a`` (dask, samples × genes) rechunked so its chunks are the blocks (all samples each)."""
    sizes = tuple(sl.stop - sl.start for sl in blocks)
    if a.chunks == ((a.shape[0],), sizes):
        return a
    return a.rechunk(((a.shape[0],), sizes))


class _serial_kernels:
    """Inside a dask task the compiled kernels run on one thread (numba's thread count is
    per thread): dask runs blocks in parallel already, and the result does not depend on it."""

    def __enter__(self):
        import numba

        self._t = numba.get_num_threads()
        numba.set_num_threads(1)

    def __exit__(self, *exc):
        import numba

        numba.set_num_threads(self._t)


def _task(fn, sl, args, *chunks):
    with _serial_kernels():
        return fn(Block(sl, chunks, True), *args)


def _block_args(args: tuple, per_block, i: int, sl: slice) -> tuple:
    return args if per_block is None else (*args, *per_block(i, sl))


def uses_dask(*mats) -> bool:
    return any(m is not None and is_dask(m) for m in mats)


def map_gene_blocks(
    fn: Callable[..., object],
    mats: Sequence,
    blocks: GeneBlocks,
    *,
    args: tuple = (),
    per_block: Callable[[int, slice], tuple] | None = None,
    on_block: Callable[[str], None] | None = None,
    stage: str = "",
) -> list:
    """``[fn(Block, *args, *per_block(i, sl)) for each block i]``: the per-block results, in order.

    ``per_block`` gives a block's own extra arguments (e.g. per-gene vectors sliced to the block,
    so a task carries only its genes' values).

    ``mats`` are samples × genes matrices (numpy, scipy sparse, dask, or ``None``) read through
    :meth:`Block.read`. In memory the blocks run one after another (the engines' kernels use the
    threads). When any matrix is a dask array, every block becomes a task of one dask graph, run
    with one ``dask.compute`` (on the user's active scheduler or ``distributed`` Client): each task
    computes its own chunk and returns ``fn``'s result, which should be per-gene (small); the
    matrices are never gathered. ``fn`` and ``args`` must be picklable for a distributed Client
    (module-level functions, numpy arrays)."""
    if not uses_dask(*mats):
        out = []
        for i, sl in enumerate(blocks):
            out.append(fn(Block(sl, mats, False), *_block_args(args, per_block, i, sl)))
            if on_block is not None:
                on_block(stage)
        return out
    import dask

    aligned = [None if m is None else _aligned(m if is_dask(m) else _as_dask(m, blocks), blocks) for m in mats]
    tasks = []
    for i, sl in enumerate(blocks):
        chunks = [None if m is None else m.blocks[0, i] for m in aligned]
        tasks.append(dask.delayed(_task, pure=True)(fn, sl, _block_args(args, per_block, i, sl), *chunks))
    out = list(dask.compute(*tasks))
    if on_block is not None:
        for _ in out:
            on_block(stage)
    return out


def _as_dask(m, blocks: GeneBlocks):
    import dask.array as da

    if sparse.issparse(m):
        m = m.toarray()
    return da.from_array(np.asarray(m), chunks=(m.shape[0], blocks.size))


def lazy_gene_map(
    fn: Callable[..., np.ndarray],
    mats: Sequence,
    blocks: GeneBlocks,
    *,
    args: tuple = (),
    per_block: Callable[[int, slice], tuple] | None = None,
    dtype=np.float64,
):
    """A samples × genes result made block by block by ``fn(Block, *args, *per_block(i, sl))``
    (which returns the block's samples × block-genes array). In memory the blocks are computed now into one array;
    with dask input the result is a lazy dask array with the blocks as chunks, computed only when
    the user computes or writes it (nothing samples × genes is gathered here)."""
    n = next(m for m in mats if m is not None).shape[0]
    if not uses_dask(*mats):
        out = np.empty((n, blocks.n_genes), dtype=dtype)
        for i, sl in enumerate(blocks):
            out[:, sl] = fn(Block(sl, mats, False), *_block_args(args, per_block, i, sl))
        return out
    import dask.array as da

    aligned = [None if m is None else _aligned(m if is_dask(m) else _as_dask(m, blocks), blocks) for m in mats]
    present = [m for m in aligned if m is not None]
    where = [i for i, m in enumerate(aligned) if m is not None]
    starts = np.cumsum([0] + [sl.stop - sl.start for sl in blocks])

    def one(*chunks, block_info=None):
        j = block_info[None]["chunk-location"][1]
        full = [None] * len(aligned)
        for i, c in zip(where, chunks, strict=True):
            full[i] = c
        sl = slice(int(starts[j]), int(starts[j + 1]))
        with _serial_kernels():
            return np.asarray(fn(Block(sl, full, True), *_block_args(args, per_block, j, sl)), dtype=dtype)

    return da.map_blocks(one, *present, dtype=dtype, chunks=present[0].chunks, meta=np.empty((0, 0), dtype=dtype))


# ----------------------------------------------------------------------------------------------
# Passes over blocks of samples: per-sample reductions that need every gene of a sample
# ----------------------------------------------------------------------------------------------
def sample_blocks(n_samples: int, n_genes: int, *, block_elements: int = BLOCK_ELEMENTS) -> list[slice]:
    """Contiguous blocks of samples (rows) holding about ``block_elements`` matrix elements each
    (every gene of a sample in one block; at least one sample per block)."""
    size = max(1, int(block_elements) // max(int(n_genes), 1))
    return [slice(s, min(int(n_samples), s + size)) for s in range(0, int(n_samples), size)]


def _dense_rows(c) -> np.ndarray | None:
    if c is None:
        return None
    if is_dask(c):
        c = c.compute()
    if sparse.issparse(c):
        c = c.toarray()
    return np.ascontiguousarray(np.asarray(c, dtype=np.float64))


def _rows_task(fn, sl, args, *chunks):
    with _serial_kernels():
        return fn(sl, *[_dense_rows(c) for c in chunks], *args)


def map_sample_blocks(
    fn: Callable[..., object],
    mats: Sequence,
    *,
    args: tuple = (),
    block_elements: int = BLOCK_ELEMENTS,
) -> list:
    """``[fn(rows, *row_blocks, *args) for each block of samples]``: the per-block results, in order.

    The samples × genes matrices ``mats`` (numpy, scipy sparse, dask, or ``None``) are given to
    ``fn`` as dense float64 C-ordered blocks of whole rows (every gene of the block's samples);
    ``rows`` is the block's slice of the sample axis. This is how per-sample reductions over all
    genes (medians of ratios, quantiles, trimmed means) run without gathering the matrix. In memory
    the blocks run one after another; when any matrix is a dask array it is rechunked into row
    blocks and every block becomes a task of one graph run with one ``dask.compute``. ``args`` may
    hold dask arrays (small per-gene vectors, a reference row): they are computed in the same graph.
    """
    first = next(m for m in mats if m is not None)
    n, g = first.shape
    blocks = sample_blocks(n, g, block_elements=block_elements)
    if not uses_dask(*mats):
        return [fn(sl, *[None if m is None else _dense_rows(m[sl]) for m in mats], *args) for sl in blocks]
    import dask
    import dask.array as da

    sizes = tuple(sl.stop - sl.start for sl in blocks)
    with _row_major_copies(mats, sizes) as row_mats:
        aligned = [
            None if m is None else (m if is_dask(m) else da.from_array(_dense_rows(m), chunks=(sizes, g))).rechunk((sizes, (g,)))
            for m in row_mats
        ]
        tasks = [
            dask.delayed(_rows_task, pure=True)(fn, sl, args, *[None if m is None else m.blocks[i, 0] for m in aligned])
            for i, sl in enumerate(blocks)
        ]
        return list(dask.compute(*tasks))


#: dask matrices larger than this (bytes) are transposed through a temporary zarr store before a
#: pass over blocks of samples, when no distributed Client is active
TRANSPOSE_BYTES = 512 * 2**20


class _row_major_copies:
    """Large gene-chunked dask matrices as row-major copies for a pass over blocks of samples.

    Every block of samples needs a piece of every chunk of genes. Left to a rechunk inside the
    graph, dask reads each stored chunk once per block of samples (its slicing reaches into the
    store's reader) or holds the whole matrix in memory. Without a distributed Client (whose p2p
    rechunk spills to disk), a matrix larger than :data:`TRANSPOSE_BYTES` is therefore first written,
    chunk by chunk, to a temporary zarr store chunked as (block of samples × stored chunk of genes):
    one extra pass, memory bounded by one stored chunk, and then each block of samples reads only its
    own small chunks. The store is deleted after the pass."""

    def __init__(self, mats, sizes):
        self.mats, self.sizes, self.dirs = list(mats), sizes, []

    def __enter__(self):
        out = []
        for m in self.mats:
            out.append(self._copy(m) if self._needs_copy(m) else m)
        return out

    def _needs_copy(self, m) -> bool:
        if m is None or not is_dask(m) or len(m.chunks[1]) == 1 or m.nbytes <= TRANSPOSE_BYTES:
            return False
        from dask.base import get_scheduler

        # on a distributed Client (the active scheduler), the p2p rechunk spills to disk
        return type(getattr(get_scheduler(), "__self__", None)).__name__ != "Client"

    def _copy(self, m):
        import tempfile

        import dask
        import dask.array as da
        import zarr

        d = tempfile.mkdtemp(prefix="bulkpy-rows-", dir=dask.config.get("temporary-directory", None))
        self.dirs.append(d)
        if not isinstance(m._meta, np.ndarray):  # sparse chunks: dense rows are what the pass reads
            m = m.map_blocks(lambda c: c.toarray() if sparse.issparse(c) else np.asarray(c), dtype=m.dtype)
        store = zarr.open_array(d, mode="w", shape=m.shape, chunks=(self.sizes[0], max(m.chunks[1])), dtype=m.dtype)
        # chunk-aligned writes need no lock; samples in several chunks write parts of zarr chunks
        da.store(m, store, lock=len(m.chunks[0]) > 1)
        return da.from_zarr(store)

    def __exit__(self, *exc):
        import shutil

        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
