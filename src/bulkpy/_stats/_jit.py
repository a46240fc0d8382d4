"""How the numba kernels are compiled.

Every compiled function is one of two kinds, and each costs compile time on the first call after
installing (the cache on disk serves later processes):

- :func:`kernel`: called from Python (an engine's entry into compiled code). It gets numba's
  Python wrapper, releases the GIL (engines run kernels on gene chunks in threads) and is cached.
- :func:`inner`: called only from other compiled functions. Numba compiles no Python wrapper and
  no C wrapper for it, which saves a few tens of milliseconds per function on a first call (there
  are about a hundred); calling one from Python raises an error.
- :func:`inline`: an inner function that numba inlines into each caller. For small helpers called
  once per observation with array arguments: numba counts a reference to every array argument of
  every call (two atomic operations each), which made edgeR's per-observation deviance weights
  cost four times their arithmetic. Each caller compiles its own copy, so keep them few and small.

Every kind compiles with numba's ``error_model="numpy"``: a division by zero gives ``inf`` or
``nan`` as in R's C code, rather than a check of each divisor that raises ``ZeroDivisionError``.
The check is a branch out of the loop, which keeps a loop over samples from being vectorised
(:mod:`bulkpy._stats._vmath`).

No kernel uses numba's ``parallel=True``: engines run kernels on chunks of genes in a thread pool
(``deseq2._kernels.run_chunks``), so each kernel compiles once, with no parallel variant beside
the serial one.

A kernel that calls another compiled function with a literal integer (``f(x, 0)``) makes numba
compile the callee once more, specialised to that value (the argument is typed
``Literal[int](0)``, not ``int64``): pass :data:`I0` / :data:`I1` instead. Likewise, an
assignment through a slice or an index array (``a[:] = b[idx]``) compiles numba's shape-error
message, string formatting included (seconds on a first call): write the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

I0 = np.int64(0)
I1 = np.int64(1)


def kernel(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as a kernel called from Python (cached, GIL released)."""
    return njit(cache=True, nogil=True, no_cfunc_wrapper=True, error_model="numpy")(fn)


def inner(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` for calls from other compiled functions only (cached, no wrappers)."""
    return njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True, error_model="numpy")(fn)


def inline(fn: Callable[..., Any]) -> Any:
    """Like :func:`inner`, and inlined by numba into every compiled caller."""
    return njit(
        inline="always", cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True, error_model="numpy"
    )(fn)
