"""Array types for the scale-out tests (scanpy's ``array_type`` idea) and a counting scheduler.

``ARRAY_TYPES`` names how a samples × genes matrix is held: in memory (numpy, scipy CSR) or as a
dask array chunked by genes (every sample in a chunk: gene-major storage), by samples, or both.
:func:`as_array_type` converts; :class:`CountingScheduler` is a dask scheduler callable that runs
each graph synchronously, counts the computations and records the largest result, so a test can
fail when a function computes more passes than it declares or gathers a samples × genes matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

ARRAY_TYPES = ["numpy", "csr", "dask_genes", "dask_samples", "dask_2d"]
DASK_TYPES = ["dask_genes", "dask_samples", "dask_2d"]


def as_array_type(x, kind: str, *, gene_chunk: int | None = None, sample_chunk: int | None = None):
    """``x`` (samples × genes, dense) held as ``kind``; dask chunk sizes default to a few chunks."""
    x = np.asarray(x)
    n, g = x.shape
    gc = gene_chunk or max(1, -(-g // 5))
    sc = sample_chunk or max(1, -(-n // 3))
    if kind == "numpy":
        return x
    if kind == "csr":
        return sparse.csr_matrix(x)
    da = pytest.importorskip("dask.array")
    if kind == "dask_genes":
        return da.from_array(x, chunks=(n, gc))
    if kind == "dask_samples":
        return da.from_array(x, chunks=(sc, g))
    if kind == "dask_2d":
        return da.from_array(x, chunks=(sc, gc))
    raise ValueError(kind)


def is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


class CountingScheduler:
    """A dask scheduler (``dask.config.set(scheduler=CountingScheduler())``): runs graphs with the
    synchronous scheduler, counting computations and the bytes of the largest array returned."""

    def __init__(self):
        self.computes = 0
        self.largest = 0

    def __call__(self, dsk, keys, **kwargs):
        import dask

        self.computes += 1
        out = dask.get(dsk, keys, **kwargs)
        self.largest = max(self.largest, _nbytes(out))
        return out


def counted(fn, *args, **kw) -> CountingScheduler:
    """Run ``fn(*args, **kw)`` under a :class:`CountingScheduler` and return it."""
    import dask

    sched = CountingScheduler()
    with dask.config.set(scheduler=sched):
        fn(*args, **kw)
    return sched


def _nbytes(x) -> int:
    if isinstance(x, list | tuple):
        return max((_nbytes(v) for v in x), default=0)
    if isinstance(x, dict):
        return max((_nbytes(v) for v in x.values()), default=0)
    if hasattr(x, "nbytes"):
        return int(x.nbytes)
    if isinstance(x, object) and hasattr(x, "__dict__"):
        return max((_nbytes(v) for v in vars(x).values()), default=0)
    return 0
