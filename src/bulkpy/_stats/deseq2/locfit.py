"""R ``locfit`` (package locfit 1.5-9) as DESeq2's ``localDispersionFit`` calls it.

DESeq2 fits ``locfit(logDisps ~ logMeans, weights = means)`` and predicts with
``predict(fit, data.frame(logMeans = ...))``. With locfit's defaults that is a local quadratic
(``deg = 2``) Gaussian (``"qgaussian"``) fit, tricube kernel, nearest-neighbour fraction
``alpha = 0.7``, no scaling, evaluated on the adaptive tree ``ev = rbox(cut = 0.8)``. This module
follows the steps of locfit's C code (``startlf``, ``compparcomp``, ``atree_start``/``atree_grow``,
``procv``, ``nbhd``, ``locfit``/``max_nr``, ``atree_int``/``rectcell_interp``), including its
numerics, so that the trend is the same number as R's and not merely the same kind of smoother:

1. *Parametric component* (``compparcomp``): one global weighted quadratic around the
   prior-weighted mean of ``x``; the vertex fits store their difference from it, and it is added
   back at prediction.
2. *Tree* (``atree_start``/``atree_grow``): the fit starts at ``min(x)`` and ``max(x)``; a cell is
   halved while its length exceeds ``cut`` times the smaller positive bandwidth of its two
   vertices (locfit's ``atree_split``), depth first, the left half first. locfit allocates room
   for ``floor((5 / alpha / min(cut, 1) + 1) * 2)`` vertices (19 for DESeq2's call) and stops with
   ``newsplit: out of vertex space`` if the tree needs more; so does this module.
3. *Vertex fit* (``nbhd``, ``locfit``): the bandwidth is the distance to the
   ``floor(n alpha + 1e-12)``-th nearest data point, the weights are prior weight × tricube
   ``(1 - |d / h|^3)^3``, and the quadratic in ``(1, dx, dx^2 / 2)`` is fitted by locfit's single
   Newton-Raphson step from the weighted mean. That step solves the normal equations through
   locfit's Jacobi eigen-decomposition of the correlation-scaled ``X'WX`` (``jacob_dec``,
   ``eig_dec``, ``eig_solve``): rotations stop once every off-diagonal element is below
   ``sqrt(1e-15)`` of its diagonal pair, and eigenvalues below ``1e-8`` of the largest are not
   inverted. The result is therefore not the exact least-squares solution: it differs from it
   by up to ~1e-8 (relative), and a textbook least-squares fit differs from R's trend by that
   much. The normal equations are accumulated point by point in locfit's order (the data order,
   or outward from the fitting point when ``x`` is sorted, locfit's ``nbhd1``).
4. *Prediction* (``atree_int``, ``hermite2``): the tree is descended to the cell holding the
   point; the residual (vertex fit minus parametric component) is interpolated by cubic Hermite
   polynomials from the vertex values and slopes, continued linearly outside ``[min(x), max(x)]``,
   and the parametric component is added.

Scope: one covariate, the default family, kernel and evaluation structure; other locfit options
(``ev = lfgrid()``, ``kern``, ``deg``) are not reproduced because DESeq2 never passes them.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import inner, kernel

NVERT_FORMULA = "floor((5 / alpha / min(cut, 1) + 1) * 2)"


class LocfitError(RuntimeError):
    """locfit could not build its evaluation structure (R stops with the same message)."""


# ----------------------------------------------------------------------------------------------
# the local fit at one point: locfit()'s single Newton-Raphson step with its eigen solver
# ----------------------------------------------------------------------------------------------
@inner
def _jacobi_solve(Z, v):
    """locfit's ``jacob_solve`` with ``JAC_EIGD`` on a p × p row-major ``Z``: solve ``Z a = v``
    through the Jacobi eigen-decomposition of the correlation-scaled matrix (``jacob_dec``,
    ``eig_dec``, ``eig_solve``). ``Z`` and ``v`` are overwritten; returns the solution."""
    p = v.size
    dg = np.empty(p)
    for i in range(p):
        zii = Z[i * (p + 1)]
        dg[i] = 0.0 if zii <= 0 else 1.0 / math.sqrt(zii)
    for i in range(p):
        for j in range(p):
            Z[i * p + j] *= dg[i] * dg[j]
    # eig_dec: cyclic Jacobi rotations, at most 20 sweeps
    P = np.zeros(p * p)
    for i in range(p):
        P[i * p + i] = 1.0
    for _sweep in range(20):
        moved = False
        for i in range(p):
            for j in range(i + 1, p):
                zij = Z[i * p + j]
                if zij * zij > 1.0e-15 * abs(Z[i * p + i] * Z[j * p + j]):
                    c = (Z[j * p + j] - Z[i * p + i]) / 2
                    s = -Z[i * p + j]
                    r = math.sqrt(c * c + s * s)
                    c /= r
                    s = math.sqrt((1 - c) / 2) * (1.0 if s > 0 else -1.0)
                    c = math.sqrt((1 + c) / 2)
                    for k in range(p):
                        u = Z[i * p + k]
                        w = Z[j * p + k]
                        Z[i * p + k] = u * c + w * s
                        Z[j * p + k] = w * c - u * s
                    for k in range(p):
                        u = Z[k * p + i]
                        w = Z[k * p + j]
                        Z[k * p + i] = u * c + w * s
                        Z[k * p + j] = w * c - u * s
                    Z[i * p + j] = 0.0
                    Z[j * p + i] = 0.0
                    for k in range(p):
                        u = P[k * p + i]
                        w = P[k * p + j]
                        P[k * p + i] = u * c + w * s
                        P[k * p + j] = w * c - u * s
                    moved = True
        if not moved:
            break
    # eig_solve on dg * v, then scale back by dg
    for i in range(p):
        v[i] *= dg[i]
    mx = Z[0]
    for i in range(1, p):
        if Z[i * (p + 1)] > mx:
            mx = Z[i * (p + 1)]
    tol = 1.0e-8 * mx
    w = np.zeros(p)
    for i in range(p):
        for j in range(p):
            w[i] += P[j * p + i] * v[j]
    for i in range(p):
        if Z[i * p + i] > tol:  # smaller eigenvalues are left uninverted, as locfit does
            w[i] /= Z[i * (p + 1)]
    out = np.zeros(p)
    for i in range(p):
        for j in range(p):
            out[i] += P[i * p + j] * w[j]
        out[i] *= dg[i]
    return out


@kernel
def _local_quadratic(x, y, pw, idx, kw, t):
    """locfit's fit at ``t`` on the points ``idx`` (in that order) with kernel weights ``kw``:
    ``reginit`` (weighted mean), one ``likereg`` evaluation of the Gaussian log-likelihood's
    gradient and Hessian in the basis ``(1, dx, dx^2 / 2)``, and one Newton step. Returns the
    three coefficients (value, slope, curvature at ``t``); NaN when no point has weight."""
    m = idx.size
    s0 = 0.0
    s1 = 0.0
    for r in range(m):
        i = idx[r]
        s1 += kw[r] * (pw[i] * y[i])
        s0 += kw[r] * pw[i]
    cf = np.full(3, np.nan)
    if s0 == 0:
        return cf
    cf0 = s1 / s0
    f1 = np.zeros(3)
    Z = np.zeros(9)
    X = np.empty(3)
    for r in range(m):
        i = idx[r]
        dx = x[i] - t
        X[0] = 1.0
        X[1] = dx
        X[2] = dx * dx / 2
        th = 0.0 + ((cf0 * X[0] + 0.0 * X[1]) + 0.0 * X[2])
        dll = pw[i] * (y[i] - th)
        ww = kw[r]
        for j in range(3):
            f1[j] += X[j] * ww * dll
        c = ww * pw[i]
        for a in range(3):
            for b in range(3):
                Z[a * 3 + b] += c * X[a] * X[b]
    delta = _jacobi_solve(Z, f1)
    cf[0] = cf0 + delta[0]
    cf[1] = 0.0 + delta[1]
    cf[2] = 0.0 + delta[2]
    return cf


@inner
def _tricube_weight(di, h):
    """locfit's ``weightsph`` with the tricube kernel ``W``."""
    if h == 0:
        return 1.0 if di == 0.0 else 0.0
    u = abs(di / h)
    if u > 1:
        return 0.0
    u = 1 - u * u * u
    return u * u * u


@kernel
def _neighbourhood(x, t, h, ordered):
    """Points with positive weight at ``t`` and their weights, in locfit's order: the data order
    (``nbhd``), or for sorted ``x`` outward from the fitting point (``nbhd1``: leftwards from the
    last point <= ``t``, then rightwards, each side stopping at the first zero weight)."""
    n = x.size
    idx = np.empty(n, dtype=np.int64)
    kw = np.empty(n)
    m = 0
    if not ordered:
        for i in range(n):
            w = _tricube_weight(abs(x[i] - t), h)
            if w > 0:
                idx[m] = i
                kw[m] = w
                m += 1
        return idx[:m], kw[:m]
    # closest data point (ties to the left), then the last point <= t
    if t <= x[0]:
        z = 0
    elif t >= x[n - 1]:
        z = n - 1
    else:
        lo = 0
        hi = n - 1
        while hi - lo > 1:
            mid = (hi + lo) // 2
            if x[mid] > t:
                hi = mid
            else:
                lo = mid
        z = hi if (t - x[lo]) > (x[hi] - t) else lo
    if x[z] > t:
        z -= 1
    i = z
    while i >= 0:
        w = _tricube_weight((t - x[i]) / 1.0, h)
        if w > 0:
            idx[m] = i
            kw[m] = w
            m += 1
            i -= 1
        else:
            break
    i = z + 1
    while i < n:
        w = _tricube_weight((x[i] - t) / 1.0, h)
        if w > 0:
            idx[m] = i
            kw[m] = w
            m += 1
            i += 1
        else:
            break
    return idx[:m], kw[:m]


@kernel
def _weighted_mean(x, w):
    """compparcomp's centre: the prior-weighted mean of ``x``, summed in data order."""
    sw = 0.0
    sx = 0.0
    for i in range(x.size):
        sw += w[i]
        sx += x[i] * w[i]
    return sx / sw


# ----------------------------------------------------------------------------------------------
# the fit
# ----------------------------------------------------------------------------------------------
class LocalQuadraticFit:
    """``locfit(y ~ x, weights = weights)`` with locfit's defaults, as DESeq2 calls it.

    Parameters
    ----------
    x, y, weights
        Data (1-d arrays of equal length; prior weights, DESeq2 passes the base means).
    alpha
        Nearest-neighbour fraction of the data in each local fit (locfit's ``alpha``).
    cut
        Refinement parameter of locfit's adaptive tree (``rbox(cut = )``).

    Raises
    ------
    LocfitError
        When the tree needs more vertices than locfit allocates (R stops with
        ``newsplit: out of vertex space``).
    """

    def __init__(self, x, y, weights=None, *, alpha: float = 0.7, cut: float = 0.8):
        x = np.ascontiguousarray(x, dtype=np.float64).ravel()
        y = np.ascontiguousarray(y, dtype=np.float64).ravel()
        w = np.ones_like(x) if weights is None else np.ascontiguousarray(weights, dtype=np.float64).ravel()
        if not (x.shape == y.shape == w.shape) or x.size < 1:
            raise ValueError("the local fit needs at least one point, with matching x, y and weights")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(w))):
            raise ValueError("the local fit needs finite x, y and weights")
        self.x, self.y, self.w = x, y, w
        self.alpha, self.cut = float(alpha), float(cut)
        n = x.size
        self.nn = int(n * self.alpha + 1e-12)  # locfit: (int)(n * nn + 1e-12)
        self._ordered = bool(n == 1 or np.all(x[1:] >= x[:-1]))  # locfit's lfd->ord
        # parametric component (compparcomp): all kernel weights 1, around the weighted mean
        self.xbar = _weighted_mean(x, w)
        self.pc = _local_quadratic(x, y, w, np.arange(n, dtype=np.int64), np.ones(n), self.xbar)
        self.lo, self.hi = float(x.min()), float(x.max())
        self.max_vertices = self._vertex_space()
        self._build_tree()

    # -- locfit's pieces -------------------------------------------------------------------
    def _vertex_space(self) -> int:
        """atree_guessnv: the number of vertices locfit allocates (mk = 100)."""
        if self.alpha > 0:
            a0 = 1.0 if self.alpha > 1 else 1 / self.alpha
            cu = min(1.0, max(self.cut, 0.01))
            return int((5 * a0 / cu + 1) * 2)
        return 102 * 2

    def _bandwidth(self, t: float) -> float:
        if self.nn <= 0:
            return 0.0
        dist = np.abs(self.x - t)
        if self.nn < dist.size:
            return float(np.partition(dist, self.nn - 1)[self.nn - 1])
        return float(dist.max() * (self.nn / dist.size))

    def _pc_terms(self, t):
        """The parametric component's value and slope at ``t`` (addparcomp / subparcomp)."""
        c0, c1, c2 = self.pc
        dx = np.asarray(t, dtype=np.float64) - self.xbar
        value = ((0.0 + c0 * 1.0) + c1 * dx) + c2 * (dx * dx / 2)
        slope = ((0.0 + c0 * 0.0) + c1 * 1.0) + c2 * dx
        return value, slope

    def local(self, t: float) -> tuple[float, float, float]:
        """locfit's direct fit at ``t``: (value, slope, bandwidth)."""
        h = self._bandwidth(t)
        idx, kw = _neighbourhood(self.x, float(t), h, self._ordered)
        cf = _local_quadratic(self.x, self.y, self.w, idx, kw, float(t))
        return float(cf[0]), float(cf[1]), h

    def _new_vertex(self, t: float) -> int:
        if len(self._vx) >= self.max_vertices:
            raise LocfitError(
                "newsplit: out of vertex space (locfit's adaptive tree needs more than "
                f"{self.max_vertices} vertices for alpha={self.alpha}, cut={self.cut})"
            )
        v, s, h = self.local(t)
        pv, ps = self._pc_terms(t)
        self._vx.append(t)
        self._vval.append(v - float(pv))
        self._vslope.append(s - float(ps))
        self._vh.append(h)
        return len(self._vx) - 1

    def _splits(self, a: int, b: int) -> bool:
        """atree_split for the cell with vertices ``a`` < ``b``."""
        hmin = 0.0
        for h in (self._vh[a], self._vh[b]):
            if h > 0 and (hmin == 0 or h < hmin):
                hmin = h
        le = (self._vx[b] - self._vx[a]) / 1.0
        score = 2 * (self._vx[b] - self._vx[a]) / (self.hi - self.lo) if hmin == 0 else le / hmin
        return self.cut < score

    def _build_tree(self) -> None:
        """atree_start + atree_grow: cells as (left vertex, right vertex, left child, right child)."""
        self._vx: list[float] = []
        self._vval: list[float] = []
        self._vslope: list[float] = []
        self._vh: list[float] = []
        self._cells: list[list[int]] = []
        a = self._new_vertex(self.lo)
        b = self._new_vertex(self.hi)
        if self.hi == self.lo:  # one distinct x: a single vertex pair, no cell to split
            self._cells.append([a, b, -1, -1])
            return
        self._grow(a, b)

    def _grow(self, a: int, b: int) -> int:
        cell = len(self._cells)
        self._cells.append([a, b, -1, -1])
        if self._splits(a, b):
            m = self._new_vertex((self._vx[a] + self._vx[b]) / 2)
            self._cells[cell][2] = self._grow(a, m)
            self._cells[cell][3] = self._grow(m, b)
        return cell

    # -- prediction ------------------------------------------------------------------------
    def __call__(self, t) -> np.ndarray:
        """``predict(fit, t)``: the fitted values at ``t`` (any shape)."""
        t = np.asarray(t, dtype=np.float64)
        flat = t.ravel()
        vx = np.array(self._vx)
        vval = np.array(self._vval)
        vslope = np.array(self._vslope)
        cells = np.array(self._cells, dtype=np.int64)
        # atree_int: descend from the root; left when 2 (t - ll) < (ur - ll)
        node = np.zeros(flat.size, dtype=np.int64)
        while True:
            inner = cells[node, 2] >= 0
            if not inner.any():
                break
            ll = vx[cells[node, 0]]
            ur = vx[cells[node, 1]]
            left = 2 * (flat - ll) < (ur - ll)
            node = np.where(inner, np.where(left, cells[node, 2], cells[node, 3]), node)
        a, b = cells[node, 0], cells[node, 1]
        ll, z = vx[a], vx[b] - vx[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            h = np.where(z == 0, 0.0, (flat - ll) / np.where(z == 0, 1.0, z))
        # hermite2: cubic Hermite basis inside the cell, linear continuation outside
        phi1 = h * h * (3 - 2 * h)
        phi0 = 1 - phi1
        phi2 = h * (1 - h) * (1 - h)
        phi3 = h * h * (h - 1)
        below, above = h < 0, h > 1
        phi0 = np.where(below, 1.0, np.where(above, 0.0, phi0))
        phi1 = np.where(below, 0.0, np.where(above, 1.0, phi1))
        phi2 = np.where(below, h, np.where(above, 0.0, phi2))
        phi3 = np.where(below, 0.0, np.where(above, h - 1, phi3))
        flat_cell = z == 0
        phi0, phi1 = np.where(flat_cell, 1.0, phi0), np.where(flat_cell, 0.0, phi1)
        phi2, phi3 = np.where(flat_cell, 0.0, phi2) * z, np.where(flat_cell, 0.0, phi3) * z
        res = phi0 * vval[a] + phi1 * vval[b] + phi2 * vslope[a] + phi3 * vslope[b]
        out = res + self._pc_terms(flat)[0]
        return out.reshape(t.shape)

    @property
    def vertices(self) -> np.ndarray:
        """Evaluation points (sorted)."""
        return np.sort(np.array(self._vx))
