"""R's ``lowess`` (the ``clowess`` algorithm) and limma's unweighted ``loessFit``, used by voom,
the robust variance trend and DESeq2's independent filtering; R's ``approx(rule = 2)``; limma's
``chooseLowessSpan`` (the span of voom's trend under ``adaptive.span = TRUE``, limma >= 3.60).
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# lowess (R's clowess) and voom
# --------------------------------------------------------------------------------------------


def _lowest(x, y, n, xs, nleft, nright, rw, xrange):
    """Fitted value at ``xs`` from the points ``nleft..`` (0-based) as ``clowess``'s ``lowest``:
    tricube weights within the radius (times the robustness weights ``rw`` unless ``None``),
    a locally linear fit when the points are spread enough. Returns ``(value, ok)``."""
    h = max(xs - x[nleft], x[nright] - xs)
    h9 = 0.999 * h
    h1 = 0.001 * h
    # the points used run from nleft to just before the first point right of xs beyond h9
    # (ties on the right are picked up); locate it by bisection, then check it exactly
    j = int(np.searchsorted(x, xs + h9, side="right"))
    j = max(j, nleft)
    while j > nleft and x[j - 1] > xs and (x[j - 1] - xs) > h9:
        j -= 1
    while j < n and not (x[j] > xs and abs(x[j] - xs) > h9):
        j += 1
    xw = x[nleft:j]
    r = np.abs(xw - xs)
    if h > 0:
        w = r / h
        w = 1.0 - w * w * w
        # weights below 1e-270 change no sum; zeroing them avoids slow subnormal arithmetic
        w[w < 1e-90] = 0.0
        w = w * w * w
        w[r <= h1] = 1.0
        w[r > h9] = 0.0
    else:
        w = (r <= 0).astype(np.float64)
    if rw is not None:
        w *= rw[nleft:j]
    a = float(w.sum())
    if a <= 0:
        return 0.0, False
    w /= a
    if h > 0:
        # plain sums, not BLAS dot products: a multi-threaded ddot is slow on a busy machine
        a = float((w * xw).sum())
        b = xs - a
        dx = xw - a
        c = float((w * dx * dx).sum())
        if np.sqrt(c) > 0.001 * xrange:
            b = b / c
            w *= b * dx + 1.0
    return float((w * y[nleft:j]).sum()), True


def lowess(x, y, *, f: float = 2 / 3, iter: int = 3, delta: float | None = None):
    """R's ``lowess`` (``clowess``): returns ``(x_sorted, fitted)``.

    The points are sorted by ``x`` (stably); ``delta`` defaults to 1% of the range of ``x``.
    Fits are computed at points at least ``delta`` apart and linearly interpolated between.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError("x and y lengths differ")
    n = x.size
    if n == 0:
        raise ValueError("lowess needs at least one point")
    o = np.argsort(x, kind="stable")
    x = x[o]
    y = y[o]
    if delta is None:
        delta = 0.01 * (x[-1] - x[0])
    ys = np.empty(n)
    if n < 2:
        ys[0] = y[0]
        return x, ys
    ns = max(2, min(n, int(f * n + 1e-7)))
    xrange = x[-1] - x[0]
    rw = np.ones(n)
    res = np.zeros(n)
    it = 1
    while it <= iter + 1:
        nleft, nright = 0, ns - 1
        last = -1
        i = 0
        while True:
            if nright < n - 1:
                # move the window right while that shrinks the radius (the predicate is monotone:
                # bisect for the first window position where it fails)
                if (x[i] - x[nleft]) > (x[nright + 1] - x[i]):
                    lo, hi = nleft + 1, n - ns  # candidate final nleft in [lo, hi]
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if (x[i] - x[mid]) > (x[mid + ns] - x[i]):
                            lo = mid + 1
                        else:
                            hi = mid
                    nleft = lo
                    nright = nleft + ns - 1
            val, ok = _lowest(x, y, n, x[i], nleft, nright, rw if it > 1 else None, xrange)
            ys[i] = val if ok else y[i]
            if last < i - 1:
                denom = x[i] - x[last]
                js = np.arange(last + 1, i)
                alpha = (x[js] - x[last]) / denom
                ys[js] = alpha * ys[i] + (1.0 - alpha) * ys[last]
            last = i
            cut = x[last] + delta
            brk = int(np.searchsorted(x, cut, side="right"))  # first index with x > cut
            tie_end = int(np.searchsorted(x, x[last], side="right")) - 1
            if tie_end > last:
                ys[last + 1 : tie_end + 1] = ys[last]
                last = tie_end
            i = max(last + 1, brk - 1)
            if last >= n - 1:
                break
        res = y - ys
        sc = float(np.sum(np.abs(res))) / n
        if it > iter:
            break
        ar = np.abs(res)
        m1 = n // 2
        part = np.partition(ar, (m1, n - m1 - 1) if n % 2 == 0 else m1)
        cmad = 3.0 * (part[m1] + part[n - m1 - 1]) if n % 2 == 0 else 6.0 * part[m1]
        if cmad < 1e-7 * sc:
            break
        c9 = 0.999 * cmad
        c1 = 0.001 * cmad
        # cmad is 0 only when every residual is 0 (a perfect fit, e.g. DESeq2's numRej all zero): then
        # every weight is 1, as R's clowess gives without ever dividing by cmad
        mid = (1.0 - (ar / cmad) ** 2) ** 2 if cmad > 0 else np.ones_like(ar)
        rw = np.where(ar <= c1, 1.0, np.where(ar <= c9, mid, 0.0))
        it += 1
    return x, ys


def choose_lowess_span(n: int, *, small_n: int = 50, min_span: float = 0.3, power: float = 1 / 3) -> float:
    """limma's ``chooseLowessSpan``: a lowess span that shrinks with the number of points ``n``.

    ``min(1, min_span + (1 - min_span) * (small_n / n) ** power)``: 1 up to ``small_n`` points,
    falling towards ``min_span`` for many. The defaults are those voom uses with
    ``adaptive.span = TRUE`` (limma >= 3.60; ``small.n = 50``, ``min.span = 0.3``, ``power = 1/3``).
    """
    if n <= 0:
        raise ValueError(f"n must be a positive number of points, got {n}")
    return float(min(min_span + (1.0 - min_span) * (small_n / n) ** power, 1.0))


def _loess_fit_unweighted(y, x, *, span: float, iterations: int = 4) -> np.ndarray:
    """limma's ``loessFit`` without weights: R's ``lowess(f=span, iter=iterations-1)`` on the
    finite points; returns the fitted values in the input order (NaN elsewhere)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(y.size, np.nan)
    obs = np.isfinite(y) & np.isfinite(x)
    nobs = int(obs.sum())
    if nobs == 0:
        return out
    if span < 1 / nobs:
        out[obs] = y[obs]
        return out
    xo, yo = x[obs], y[obs]
    o = np.argsort(xo, kind="stable")
    _, fitted_sorted = lowess(xo, yo, f=span, iter=iterations - 1)
    fitted = np.empty(nobs)
    fitted[o] = fitted_sorted
    out[obs] = fitted
    return out


def _interp_rule2(v, xp: np.ndarray, fp: np.ndarray, chunk: int = 1 << 21) -> np.ndarray:
    """Linear interpolation through the sorted, distinct knots ``(xp, fp)``, constant beyond the
    ends (R's ``approxfun(rule = 2)``); the same values as ``np.interp``, faster for many points:
    a lookup table over a uniform grid finds each point's interval without a binary search."""
    v = np.asarray(v, dtype=np.float64)
    m = xp.size
    if m == 1:
        return np.full(v.shape, fp[0])
    x0, x1 = xp[0], xp[-1]
    cells = int(min(max(4 * m, 1024), 1 << 22))
    h = (x1 - x0) / cells
    lut = np.searchsorted(xp, x0 + h * np.arange(cells + 1), side="right") - 1
    np.clip(lut, 0, m - 2, out=lut)
    slope = np.diff(fp) / np.diff(xp)
    flat = v.ravel()
    out = np.empty(flat.size)
    for s in range(0, flat.size, chunk):
        vc = np.clip(flat[s : s + chunk], x0, x1)
        c = ((vc - x0) / h).astype(np.intp)
        np.clip(c, 0, cells - 1, out=c)
        k = lut[c]
        # the interval starts at the last knot <= v: step left past rounding at cell edges, then
        # right past the knots that share the cell
        idx = np.flatnonzero(xp[k] > vc)
        while idx.size:
            k[idx] -= 1
            idx = idx[xp[k[idx]] > vc[idx]]
        idx = np.flatnonzero(xp[k + 1] <= vc)
        while idx.size:
            idx = idx[k[idx] < m - 2]
            k[idx] += 1
            idx = idx[xp[k[idx] + 1] <= vc[idx]]
        out[s : s + chunk] = fp[k] + (vc - xp[k]) * slope[k]
    return out.reshape(v.shape)
