"""Library size factors (DESeq2's median-of-ratios family).

Arrays are samples × genes, like ``AnnData.X``.
"""

from __future__ import annotations

import numpy as np


def log_geometric_means(counts: np.ndarray, *, method: str = "ratio") -> np.ndarray:
    """Per-gene log geometric mean across samples.

    ``"ratio"``: the ordinary geometric mean (``-inf`` when a gene has a zero).
    ``"poscounts"``: DESeq2's ``poscounts`` variant, the product of the positive counts to the
    power 1/n (all samples in the denominator), ``-inf`` only for all-zero genes.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[0]
    with np.errstate(divide="ignore"):
        logc = np.log(counts)
    if method == "ratio":
        return logc.mean(axis=0)
    if method == "poscounts":
        s = np.where(counts > 0, logc, 0.0).sum(axis=0) / n
        return np.where((counts > 0).any(axis=0), s, -np.inf)
    raise ValueError(f"unknown geometric mean method {method!r}")


def median_of_ratios(counts: np.ndarray, log_geo_means: np.ndarray, *, control: np.ndarray | None = None) -> np.ndarray:
    """Median over genes of ``counts / geometric mean`` per sample, as DESeq2's
    ``estimateSizeFactorsForMatrix``: genes with a non-finite log geometric mean and zero counts
    of the sample are left out. ``control`` is an optional boolean mask of genes to use."""
    counts = np.asarray(counts, dtype=np.float64)
    use = np.isfinite(log_geo_means)
    if control is not None:
        use = use & np.asarray(control, dtype=bool)
    c = counts[:, use]
    with np.errstate(divide="ignore"):
        ratios = np.log(c) - log_geo_means[use]
    ratios[c <= 0] = np.nan
    empty = np.isnan(ratios).all(axis=1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} samples have no gene with a positive count among the genes used for size factors")
    return np.exp(np.nanmedian(ratios, axis=1))


def deseq2_size_factors(counts: np.ndarray, *, method: str = "ratio", control: np.ndarray | None = None) -> np.ndarray:
    """DESeq2 size factors with ``method`` ``"ratio"`` or ``"poscounts"``.

    Poscounts factors are scaled to a geometric mean of 1, as DESeq2 does when geometric means are
    supplied; ratio factors are not.
    """
    counts = np.asarray(counts, dtype=np.float64)
    lgm = log_geometric_means(counts, method=method)
    usable = np.isfinite(lgm) if control is None else np.isfinite(lgm) & np.asarray(control, dtype=bool)
    if not usable.any():
        raise ValueError(
            "every gene has a zero in at least one sample, so the median-of-ratios ('ratio') size factors "
            "can not be computed; use method='poscounts' (DESeq2's choice for sparse data such as single cells)"
        )
    sf = median_of_ratios(counts, lgm, control=control)
    if method == "poscounts":
        sf = sf / np.exp(np.mean(np.log(sf)))
    return sf
