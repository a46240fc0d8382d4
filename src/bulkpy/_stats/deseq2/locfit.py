"""One-dimensional local quadratic regression reproducing R ``locfit``'s defaults.

DESeq2's ``localDispersionFit`` calls ``locfit(logDisps ~ logMeans, weights = means)`` with
locfit's defaults: nearest-neighbour fraction ``alpha = 0.7``, local quadratic (``deg = 2``),
tricube kernel, Gaussian (least squares) family, and the adaptive-tree evaluation structure
(``ev = rbox(cut = 0.8)``). This module implements that combination from the published method
(Loader, *Local Regression and Likelihood*, 1999) and locfit's documented evaluation scheme:

* a global weighted quadratic (the *parametric component*) is fitted first and subtracted;
* the local fits are computed only at the vertices of an adaptive 1-d tree that starts with the
  data range and halves a cell while its length exceeds ``cut`` times the smaller of the two
  vertex bandwidths; the bandwidth at a vertex is the distance to its ``floor(n alpha)``-th
  nearest data point, and the weights are prior weight × tricube(distance / bandwidth);
* between vertices the residual (local minus global) fit is interpolated by cubic Hermite
  polynomials from the vertex values and slopes, extrapolated linearly outside the data range,
  and the global quadratic is added back.

Not reproduced: locfit's handling of degenerate neighbourhoods (fewer distinct points than
coefficients) and its pseudo-vertices; neither arises for the thousands of genes DESeq2 fits.
"""

from __future__ import annotations

import numpy as np


def _tricube(u: np.ndarray) -> np.ndarray:
    u = np.abs(u)
    return np.where(u < 1.0, (1.0 - u**3) ** 3, 0.0)


def _wls_quadratic(dx: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares of y on (1, dx, dx^2/2); returns the 3 coefficients."""
    basis = np.column_stack([np.ones_like(dx), dx, 0.5 * dx * dx])
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(basis * sw[:, None], y * sw, rcond=None)
    return coef


class LocalQuadraticFit:
    """Local quadratic fit of ``y`` on ``x`` with prior ``weights`` (locfit defaults).

    Parameters
    ----------
    x, y, weights
        Data (1-d arrays of equal length, weights > 0).
    alpha
        Nearest-neighbour fraction of the data in each local fit.
    cut
        Tree refinement parameter of locfit's ``rbox``.
    """

    def __init__(self, x, y, weights=None, *, alpha: float = 0.7, cut: float = 0.8):
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if not (x.shape == y.shape == w.shape) or x.size < 3:
            raise ValueError("local fit needs at least 3 points with matching x, y and weights")
        self.x, self.y, self.w = x, y, w
        self.alpha, self.cut = float(alpha), float(cut)
        self.nn = int(x.size * self.alpha + 1e-12)
        # parametric component: global weighted quadratic around the weighted mean of x
        self.xbar = float(np.sum(w * x) / np.sum(w))
        self.pc = _wls_quadratic(x - self.xbar, y, w)
        self.lo, self.hi = float(x.min()), float(x.max())
        self._vertices: dict[float, tuple[float, float, float]] = {}
        self._cells: list[tuple[float, float]] = []
        if self.hi > self.lo:
            self._grow(self.lo, self.hi)
        else:
            self._vertex(self.lo)
        self._cells.sort()

    # -- fitting ---------------------------------------------------------------------------
    def _pc_value(self, t):
        d = np.asarray(t, dtype=np.float64) - self.xbar
        return self.pc[0] + self.pc[1] * d + 0.5 * self.pc[2] * d * d

    def _pc_slope(self, t):
        return self.pc[1] + self.pc[2] * (np.asarray(t, dtype=np.float64) - self.xbar)

    def _bandwidth(self, dist: np.ndarray) -> float:
        n = dist.size
        if self.nn <= 0:
            return 0.0
        if self.nn < n:
            return float(np.partition(dist, self.nn - 1)[self.nn - 1])
        return float(dist.max() * (self.nn / n))

    def local(self, t: float) -> tuple[float, float, float]:
        """Direct local fit at ``t``: (value, slope, bandwidth)."""
        dist = np.abs(self.x - t)
        h = self._bandwidth(dist)
        kw = _tricube(dist / h) if h > 0 else (dist == 0).astype(float)
        ww = self.w * kw
        use = ww > 0
        coef = _wls_quadratic(self.x[use] - t, self.y[use], ww[use])
        return float(coef[0]), float(coef[1]), h

    def _vertex(self, t: float) -> tuple[float, float, float]:
        if t not in self._vertices:
            v, s, h = self.local(t)
            self._vertices[t] = (v - float(self._pc_value(t)), s - float(self._pc_slope(t)), h)
        return self._vertices[t]

    def _splits(self, ll: float, ur: float) -> bool:
        h0 = self._vertex(ll)[2]
        h1 = self._vertex(ur)[2]
        pos = [h for h in (h0, h1) if h > 0]
        if pos:
            score = (ur - ll) / min(pos)
        else:
            score = 2.0 * (ur - ll) / (self.hi - self.lo)
        return score > self.cut

    def _grow(self, ll: float, ur: float) -> None:
        stack = [(ll, ur)]
        while stack:
            a, b = stack.pop()
            if self._splits(a, b):
                m = (a + b) / 2.0
                self._vertex(m)
                stack.append((m, b))
                stack.append((a, m))
            else:
                self._cells.append((a, b))

    # -- prediction ------------------------------------------------------------------------
    def __call__(self, t) -> np.ndarray:
        """Predict at ``t`` (any shape)."""
        t = np.asarray(t, dtype=np.float64)
        flat = t.ravel()
        if not self._cells:  # a single distinct x value
            v, s, _ = self._vertices[self.lo]
            out = v + s * (flat - self.lo) + self._pc_value(flat)
            return out.reshape(t.shape)
        lows = np.array([c[0] for c in self._cells])
        highs = np.array([c[1] for c in self._cells])
        k = np.clip(np.searchsorted(lows, flat, side="right") - 1, 0, len(lows) - 1)
        a, b = lows[k], highs[k]
        v0 = np.array([self._vertices[c][0] for c in lows])[k]
        d0 = np.array([self._vertices[c][1] for c in lows])[k]
        v1 = np.array([self._vertices[c][0] for c in highs])[k]
        d1 = np.array([self._vertices[c][1] for c in highs])[k]
        z = b - a
        u = (flat - a) / z
        phi1 = u * u * (3.0 - 2.0 * u)
        phi0 = 1.0 - phi1
        phi2 = u * (1.0 - u) ** 2
        phi3 = u * u * (u - 1.0)
        left = u < 0
        right = u > 1
        phi0 = np.where(left, 1.0, np.where(right, 0.0, phi0))
        phi1 = np.where(left, 0.0, np.where(right, 1.0, phi1))
        phi2 = np.where(left, u, np.where(right, 0.0, phi2))
        phi3 = np.where(left, 0.0, np.where(right, u - 1.0, phi3))
        res = phi0 * v0 + phi1 * v1 + (phi2 * d0 + phi3 * d1) * z
        return (res + self._pc_value(flat)).reshape(t.shape)

    @property
    def vertices(self) -> np.ndarray:
        """Evaluation points (sorted)."""
        return np.array(sorted(self._vertices))
