"""Conventions shared by the numba kernels.

A kernel that calls another kernel with a literal integer (``f(x, 0)``) makes numba compile the
callee once more, specialised to that value (the argument is typed ``Literal[int](0)``, not
``int64``); each specialisation costs a full compilation on a first call. Pass :data:`I0` /
:data:`I1` (typed ``int64``) instead.
"""

from __future__ import annotations

import numpy as np

I0 = np.int64(0)
I1 = np.int64(1)
