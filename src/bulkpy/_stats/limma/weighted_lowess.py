"""limma's ``weightedLowess`` and the weighted branch of ``loessFit`` (limma 3.68).

``weightedLowess`` is a lowess of degree 1 whose span is a share of the total prior weight
rather than of the number of points: local fits at "seed" points at least ``delta`` apart (the
first and the last point always), each over the window grown from its seed towards the nearer
neighbour until it holds ``span`` of the total weight (then widened to whole ties), with tricube
distance weights times the prior weights times the robustness weights; straight lines between
seeds. ``delta`` is chosen so that about ``npts`` seeds cover the range of ``x`` once its largest
gaps are set aside. Robustness weights (bisquare of the residuals over six weighted MADs) are
updated between iterations. :func:`fit_f_dist_unequal_df1` calls it with one iteration.

The window search walks the sorted points once per seed, so it runs in compiled code (numba);
the number of seeds is bounded by ``npts``.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import I0 as _I0
from .._jit import inner, kernel
from .lowess import lowess

_THRESHOLD = 1e-7


@inner
def _seeds(x, delta):
    n = x.size
    idx = np.empty(n, dtype=np.int64)
    idx[0] = 0
    k = 1
    last = 0
    for pt in range(1, n - 1):
        if x[pt] - x[last] > delta:
            idx[k] = pt
            k += 1
            last = pt
    idx[k] = n - 1
    k += 1
    return idx[:k]


@inner
def _limits(seeds, x, w, spanweight):
    n = x.size
    m = seeds.size
    start = np.empty(m, dtype=np.int64)
    end = np.empty(m, dtype=np.int64)
    dist = np.empty(m)
    for s in range(m):
        cur = seeds[s]
        left = cur
        right = cur
        curw = w[cur]
        at_end = cur == n - 1
        at_start = cur == 0
        mdist = 0.0
        while curw < spanweight and (not at_end or not at_start):
            if at_end:
                left -= 1
                curw += w[left]
                if left == 0:
                    at_start = True
                d = x[cur] - x[left]
                if mdist < d:
                    mdist = d
            elif at_start:
                right += 1
                curw += w[right]
                if right == n - 1:
                    at_end = True
                d = x[right] - x[cur]
                if mdist < d:
                    mdist = d
            else:
                dl = x[cur] - x[left - 1]
                dr = x[right + 1] - x[cur]
                if dl < dr:
                    left -= 1
                    curw += w[left]
                    if left == 0:
                        at_start = True
                    if mdist < dl:
                        mdist = dl
                else:
                    right += 1
                    curw += w[right]
                    if right == n - 1:
                        at_end = True
                    if mdist < dr:
                        mdist = dr
        while left > 0 and x[left] == x[left - 1]:
            left -= 1
        while right < n - 1 and x[right] == x[right + 1]:
            right += 1
        start[s] = left
        end[s] = right
        dist[s] = mdist
    return start, end, dist


@inner
def _local_fit(x, y, w, rw, cur, left, right, dist, work):
    ymean = 0.0
    allw = 0.0
    if dist < _THRESHOLD:
        for pt in range(left, right + 1):
            work[pt] = w[pt] * rw[pt]
            ymean += y[pt] * work[pt]
            allw += work[pt]
        return ymean / allw
    xmean = 0.0
    for pt in range(left, right + 1):
        u = abs(x[cur] - x[pt]) / dist
        work[pt] = math.pow(1.0 - math.pow(u, 3.0), 3.0) * w[pt] * rw[pt]
        xmean += work[pt] * x[pt]
        ymean += work[pt] * y[pt]
        allw += work[pt]
    xmean /= allw
    ymean /= allw
    var = 0.0
    cov = 0.0
    for pt in range(left, right + 1):
        t = x[pt] - xmean
        var += t * t * work[pt]
        cov += t * (y[pt] - ymean) * work[pt]
    if var < _THRESHOLD:
        return ymean
    slope = cov / var
    return slope * x[cur] + (ymean - slope * xmean)


@kernel
def _weighted_lowess_sorted(x, y, w, span, iterations, delta):
    n = x.size
    total = 0.0
    for pt in range(n):
        total += w[pt]
    spanweight = total * span
    subrange = (x[n - 1] - x[0]) / n
    seeds = _seeds(x, delta)
    start, end, dist = _limits(seeds, x, w, spanweight)
    fit = np.empty(n)
    work = np.empty(n)
    rw = np.ones(n)
    for _ in range(iterations):
        fit[0] = _local_fit(x, y, w, rw, _I0, start[0], end[0], dist[0], work)
        last = 0
        for s in range(1, seeds.size):
            pt = seeds[s]
            fit[pt] = _local_fit(x, y, w, rw, pt, start[s], end[s], dist[s], work)
            if pt - last > 1:
                gap = x[pt] - x[last]
                if gap > _THRESHOLD * subrange:
                    slope = (fit[pt] - fit[last]) / gap
                    icpt = fit[pt] - slope * x[pt]
                    for q in range(last + 1, pt):
                        fit[q] = slope * x[q] + icpt
                else:
                    ave = 0.5 * (fit[pt] + fit[last])
                    for q in range(last + 1, pt):
                        fit[q] = ave
            last = pt
        # weighted MAD of the absolute residuals, for the robustness weights
        scale = 0.0
        for pt in range(n):
            work[pt] = abs(y[pt] - fit[pt])
            scale += work[pt]
        scale /= n
        order = np.argsort(work)  # not order[:] = ...: that compiles a shape-error message
        half = total / 2.0
        acc = 0.0
        cmad = 0.0
        for k in range(n):
            acc += w[order[k]]
            if acc == half:
                cmad = 3.0 * (work[order[k]] + work[order[k + 1]])
                break
            elif acc > half:
                cmad = 6.0 * work[order[k]]
                break
        if cmad <= _THRESHOLD * scale:
            break
        for pt in range(n):
            r = work[pt]
            rw[pt] = math.pow(1.0 - math.pow(r / cmad, 2.0), 2.0) if r < cmad else 0.0
    return fit


def weighted_lowess(
    x, y, weights=None, *, span: float = 0.3, iterations: int = 4, npts: int = 200, delta=None
):
    """limma's ``weightedLowess`` (``output.style = "loess"``): fitted values in the input order.

    Parameters
    ----------
    x, y
        Covariate and response (finite).
    weights
        Prior weights (frequency-like, non-negative); ``None`` means all 1.
    span
        Share of the total weight in each local window.
    iterations
        Number of fits (the robustness weights are updated between them).
    npts
        About how many seed points to fit at (sets ``delta`` when it is ``None``).
    delta
        Minimum distance between seed points.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    n = x.size
    if y.size != n:
        raise ValueError("x and y should have same length")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n:
        raise ValueError("weights should have same length as x and y")
    if n < 2:
        raise ValueError("need at least two points")
    o = np.argsort(x, kind="stable")
    xs = np.ascontiguousarray(x[o])
    if delta is None:
        npts = int(npts + 0.5)
        if npts < 1:
            raise ValueError("number of points should be a positive integer")
        if npts >= n:
            delta = 0.0
        else:
            cum = np.cumsum(np.sort(np.diff(xs)))
            k = np.arange(npts)
            delta = float(np.min(cum[cum.size - 1 - k] / (npts - k)))
    fit_sorted = _weighted_lowess_sorted(
        xs, np.ascontiguousarray(y[o]), np.ascontiguousarray(w[o]), float(span), int(iterations), float(delta)
    )
    fitted = np.empty(n)
    fitted[o] = fit_sorted
    return fitted


def loess_fit(
    y,
    x,
    weights=None,
    *,
    span: float = 0.3,
    iterations: int = 4,
    min_weight: float = 1e-5,
    max_weight: float = 1e5,
):
    """limma's ``loessFit`` (``method = "weightedLowess"``, ``equal.weights.as.null = TRUE``):
    fitted values in the input order, NaN where ``x`` or ``y`` is not finite.

    Without weights (or with all weights equal after clamping to ``[min_weight, max_weight]``)
    it is R's ``lowess(f = span, iter = iterations - 1)``; with fewer than ``4 + 1/span``
    positively weighted points a weighted straight line; otherwise :func:`weighted_lowess`.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    n = y.size
    if x.size != n:
        raise ValueError("y and x have different lengths")
    out = np.full(n, np.nan)
    obs = np.isfinite(y) & np.isfinite(x)
    xo, yo = x[obs], y[obs]
    nobs = xo.size
    if nobs == 0:
        return out
    if span < 1 / nobs:
        out[obs] = yo
        return out
    min_weight = max(min_weight, 0.0)
    wo = None
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.size != n:
            raise ValueError("y and weights have different lengths")
        wo = np.where(np.isnan(weights[obs]), 0.0, weights[obs])
        wo = np.minimum(np.maximum(wo, min_weight), max_weight)
        if wo.max() - wo.min() < 1e-15:
            wo = None
    if wo is None:
        o = np.argsort(xo, kind="stable")
        _, fs = lowess(xo, yo, f=span, iter=iterations - 1)
        fitted = np.empty(nobs)
        fitted[o] = fs
        out[obs] = fitted
        return out
    nw = nobs if min_weight > 0 else int((wo > 0).sum())
    if nw < 4 + 1 / span:
        if nw == 1:
            out[obs] = yo[wo > 0][0]
        else:
            sw = np.sqrt(wo)
            A = np.column_stack([np.ones(nobs), xo]) * sw[:, None]
            coef = np.linalg.lstsq(A, yo * sw, rcond=None)[0]
            out[obs] = coef[0] + coef[1] * xo
        return out
    out[obs] = weighted_lowess(xo, yo, wo, span=span, iterations=iterations, npts=200)
    return out
