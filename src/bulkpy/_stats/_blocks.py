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
