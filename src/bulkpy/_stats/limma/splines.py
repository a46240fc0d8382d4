"""Natural cubic spline basis as R's ``splines::ns``, for limma's variance trend (``fitFDist``)."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline


def natural_spline_basis(x, df: int, *, intercept: bool = True):
    """A basis of the natural cubic splines ``splines::ns(x, df, intercept)`` spans, and a
    function evaluating it at new points (linear beyond the boundary knots, as ``predict.ns``).

    Interior knots are the ``df - 1 - intercept`` equally spaced quantiles (R's type 7) of ``x``,
    the boundary knots its range. The basis differs from R's by an invertible linear map, which
    leaves least-squares fitted values unchanged.

    Returns
    -------
    ``(basis, evaluate)``: the ``len(x) × df`` matrix and a callable ``evaluate(new_x)``.
    """
    x = np.asarray(x, dtype=np.float64)
    n_int = int(df) - 1 - int(bool(intercept))
    if n_int < 0:
        n_int = 0
    lo, hi = float(np.min(x)), float(np.max(x))
    if n_int > 0:
        probs = np.linspace(0.0, 1.0, n_int + 2)[1:-1]
        knots = np.quantile(x, probs)
    else:
        knots = np.zeros(0)
    t = np.sort(np.concatenate([np.repeat([lo, hi], 4), knots]))
    nb = t.size - 4
    eye = np.eye(nb)
    splines = [BSpline(t, eye[i], 3, extrapolate=False) for i in range(nb)]
    d1 = [s.derivative(1) for s in splines]
    d2 = [s.derivative(2) for s in splines]

    def _eval_inside(v):
        out = np.empty((v.size, nb))
        for i, s in enumerate(splines):
            out[:, i] = s(v)  # scipy includes the right boundary knot in the last interval
        return out

    const = np.array(
        [
            [float(BSpline(s.t, s.c, s.k, extrapolate=True)(lo)) for s in d2],
            [float(BSpline(s.t, s.c, s.k, extrapolate=True)(hi)) for s in d2],
        ]
    )
    if not intercept:
        const = const[:, 1:]
    # orthonormal basis of the null space of the boundary second-derivative constraints
    _, _, vt = np.linalg.svd(const)
    null = vt[2:].T

    val_lo = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(lo)) for s in splines])
    val_hi = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(hi)) for s in splines])
    der_lo = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(lo)) for s in d1])
    der_hi = np.array([float(BSpline(s.t, s.c, s.k, extrapolate=True)(hi)) for s in d1])

    def evaluate(v):
        v = np.asarray(v, dtype=np.float64).ravel()
        B = np.empty((v.size, nb))
        left = v < lo
        right = v > hi
        inside = ~(left | right)
        if inside.any():
            B[inside] = _eval_inside(v[inside])
        if left.any():
            B[left] = val_lo[None, :] + (v[left] - lo)[:, None] * der_lo[None, :]
        if right.any():
            B[right] = val_hi[None, :] + (v[right] - hi)[:, None] * der_hi[None, :]
        if not intercept:
            B = B[:, 1:]
        return B @ null

    return evaluate(x), evaluate
