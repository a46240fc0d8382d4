"""Quality-control metrics of a count matrix (samples × genes, dense or scipy sparse)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse


def _sum(X, axis: int) -> np.ndarray:
    if sparse.issparse(X):
        return np.asarray(X.sum(axis=axis, dtype=np.float64)).ravel()
    return np.asarray(X).sum(axis=axis, dtype=np.float64)


def _n_positive(X, axis: int) -> np.ndarray:
    if sparse.issparse(X):
        # count stored values > 0 (explicitly stored zeros are not detections)
        return np.asarray((X > 0).sum(axis=axis)).ravel().astype(np.int64)
    return (np.asarray(X) > 0).sum(axis=axis).astype(np.int64)


def top_n_sums(X, top_n: Sequence[int]) -> np.ndarray:
    """Per sample, the sum of its ``n`` largest counts for each ``n`` in ``top_n`` (samples × len(top_n)).

    Loops over samples (never over genes); each row is partially sorted once for the largest ``n``.
    """
    top_n = [int(k) for k in top_n]
    n_obs = X.shape[0]
    out = np.zeros((n_obs, len(top_n)), dtype=np.float64)
    if not top_n:
        return out
    kmax = max(top_n)
    if sparse.issparse(X):
        X = sparse.csr_matrix(X)
        rows = (X.data[X.indptr[i] : X.indptr[i + 1]] for i in range(n_obs))
    else:
        X = np.asarray(X)
        rows = (X[i] for i in range(n_obs))
    for i, row in enumerate(rows):
        row = np.asarray(row, dtype=np.float64)
        k = min(kmax, row.size)
        if k == 0:
            continue
        top = -np.sort(-np.partition(row, row.size - k)[row.size - k :])  # largest k, descending
        csum = np.cumsum(top)
        for j, n in enumerate(top_n):
            out[i, j] = csum[min(n, k) - 1]
    return out


def sample_metrics(X, *, top_n: Sequence[int] = (), gene_sets: Mapping[str, np.ndarray] | None = None) -> dict:
    """Per-sample metrics.

    Returns a dict of arrays: ``total_counts``, ``n_genes_detected`` (counts > 0), ``top_n``
    (samples × len(top_n): percent of the sample's counts in its ``n`` most expressed genes) and,
    for each gene set name, ``total_counts_<name>`` and ``pct_counts_<name>``. A sample with no
    counts at all gets NaN percentages (0/0).
    """
    total = _sum(X, axis=1)
    out = {"total_counts": total, "n_genes_detected": _n_positive(X, axis=1)}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["top_n"] = 100.0 * top_n_sums(X, top_n) / total[:, None]
        for name, mask in (gene_sets or {}).items():
            mask = np.asarray(mask, dtype=bool)
            sub = X[:, mask] if sparse.issparse(X) else np.asarray(X)[:, mask]
            t = _sum(sub, axis=1)
            out[f"total_counts_{name}"] = t
            out[f"pct_counts_{name}"] = 100.0 * t / total
    return out


def gene_metrics(X) -> dict:
    """Per-gene metrics: ``total_counts``, ``mean_counts``, ``n_samples_detected`` (counts > 0) and
    ``frac_samples_detected``."""
    n_obs = X.shape[0]
    total = _sum(X, axis=0)
    det = _n_positive(X, axis=0)
    return {
        "total_counts": total,
        "mean_counts": total / n_obs,
        "n_samples_detected": det,
        "frac_samples_detected": det / n_obs,
    }
