"""Small dense linear algebra compiled with numba, shared by the per-gene kernels of every family
(DESeq2's IRLS and dispersion fits, edgeR's GLM fits): one p × p problem per gene."""

from __future__ import annotations

import math

import numpy as np

from ._jit import inner


@inner
def cholesky_inplace(a, p):
    """Lower Cholesky factor of the p × p SPD matrix ``a`` in place; False if not positive definite."""
    for j in range(p):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, p):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / d
    return True


@inner
def chol_solve(L, b, p, out):
    for i in range(p):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * out[k]
        out[i] = s / L[i, i]
    for i in range(p - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, p):
            s -= L[k, i] * out[k]
        out[i] = s / L[i, i]


@inner
def chol_inverse(L, p, out):
    e = np.zeros(p)
    col = np.zeros(p)
    for j in range(p):
        for i in range(p):
            e[i] = 0.0
        e[j] = 1.0
        chol_solve(L, e, p, col)
        for i in range(p):
            out[i, j] = col[i]
