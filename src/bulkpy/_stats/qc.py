"""Quality-control metrics of a count matrix (samples × genes, dense, scipy sparse or dask).

A dask matrix is read in one pass over blocks of genes (:func:`qc_metrics_blocks`): each block
gives its per-gene metrics, its per-sample partial sums and, per sample, its largest ``max(top_n)``
counts; the largest counts of a sample over all genes are among those candidates, so the top-n
sums are the same numbers as in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse

from ._blocks import blocks_for, is_dask, map_gene_blocks


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
    if not top_n:
        return np.zeros((n_obs, 0), dtype=np.float64)
    if sparse.issparse(X):
        X = sparse.csr_matrix(X)
        rows = (X.data[X.indptr[i] : X.indptr[i + 1]] for i in range(n_obs))
    else:
        X = np.asarray(X)
        rows = (X[i] for i in range(n_obs))
    return _top_sums(rows, n_obs, top_n)


def _top_sums(rows, n_obs: int, top_n: list[int]) -> np.ndarray:
    """The top-n sums of each row of ``rows`` (an iterable of 1-d arrays)."""
    out = np.zeros((n_obs, len(top_n)), dtype=np.float64)
    kmax = max(top_n)
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


# ----------------------------------------------------------------------------------------------
# dask: one pass over blocks of genes
# ----------------------------------------------------------------------------------------------
def _largest(x: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``x``, its ``k`` largest values (unordered; all of them when fewer)."""
    if k >= x.shape[1]:
        return x
    return np.partition(x, x.shape[1] - k, axis=1)[:, x.shape[1] - k :]


def _qc_block(b, kmax: int, sets: list[np.ndarray]) -> dict:
    """One block's per-gene metrics, per-sample partial sums and top-count candidates."""
    x = b.read(0)
    top = _largest(x, kmax) if kmax else np.zeros((x.shape[0], 0))
    pos = x > 0
    return {
        "g_total": x.sum(axis=0),
        "g_det": pos.sum(axis=0).astype(np.int64),
        "s_total": x.sum(axis=1),
        "s_det": pos.sum(axis=1).astype(np.int64),
        "top": top,
        "sets": [x[:, m[b.sl]].sum(axis=1) for m in sets],
    }


def _top_from_candidates(parts: list[dict], total: np.ndarray, top_n: list[int], g: int) -> np.ndarray:
    """Top-n sums from the blocks' candidates; an ``n`` of at least ``g`` genes sums every count."""
    out = np.repeat(total[:, None], len(top_n), axis=1)
    small = [j for j, k in enumerate(top_n) if k < g]
    if small:
        cand = np.concatenate([p["top"] for p in parts], axis=1)
        out[:, small] = _top_sums(cand, len(total), [top_n[j] for j in small])
    return out


def qc_metrics_blocks(X, *, top_n: Sequence[int] = (), gene_sets: Mapping[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """:func:`sample_metrics` and :func:`gene_metrics` of a dask matrix in one pass over blocks of
    genes (one ``dask.compute``); the per-sample sums add the blocks' partial sums (exact for
    integer counts)."""
    n, g = X.shape
    top_n = [int(k) for k in top_n]
    sets = {k: np.asarray(v, dtype=bool) for k, v in (gene_sets or {}).items()}
    kmax = max((k for k in top_n if k < g), default=0)  # n >= the number of genes: all counts
    parts = map_gene_blocks(_qc_block, [X], blocks_for(X, n), args=(kmax, list(sets.values())))
    total = np.sum([p["s_total"] for p in parts], axis=0)
    s = {"total_counts": total, "n_genes_detected": np.sum([p["s_det"] for p in parts], axis=0)}
    with np.errstate(invalid="ignore", divide="ignore"):
        s["top_n"] = 100.0 * _top_from_candidates(parts, total, top_n, g) / total[:, None]
        for j, name in enumerate(sets):
            t = np.sum([p["sets"][j] for p in parts], axis=0)
            s[f"total_counts_{name}"] = t
            s[f"pct_counts_{name}"] = 100.0 * t / total
    gt = np.concatenate([p["g_total"] for p in parts])
    det = np.concatenate([p["g_det"] for p in parts])
    gm = {"total_counts": gt, "mean_counts": gt / n, "n_samples_detected": det, "frac_samples_detected": det / n}
    return s, gm


def qc_metrics(X, *, top_n: Sequence[int] = (), gene_sets: Mapping[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """Per-sample and per-gene metrics (:func:`sample_metrics`, :func:`gene_metrics`) of a numpy,
    scipy sparse or dask matrix (dask: one pass, :func:`qc_metrics_blocks`)."""
    if is_dask(X):
        return qc_metrics_blocks(X, top_n=top_n, gene_sets=gene_sets)
    return sample_metrics(X, top_n=top_n, gene_sets=gene_sets), gene_metrics(X)
