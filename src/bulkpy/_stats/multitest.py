"""Multiple-testing adjustment shared by every engine: R's ``p.adjust(method = "BH")``."""

from __future__ import annotations

import numpy as np


def p_adjust_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values along the last axis; NaN stays NaN and is not
    counted among the tests (R's ``p.adjust(p, "BH")``)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim > 1:
        return np.stack([p_adjust_bh(row) for row in p.reshape(-1, p.shape[-1])]).reshape(p.shape)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")[::-1]  # decreasing
    ranks = np.arange(m, 0, -1, dtype=np.float64)
    adj = np.minimum.accumulate(m / ranks * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out
