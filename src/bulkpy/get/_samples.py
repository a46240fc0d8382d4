"""Tidy sample-level tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from .._validate import check_positive, get_matrix


def sample_qc(adata, *, layer: str | None = "counts") -> pd.DataFrame:
    """Library size and number of detected genes per sample.

    Reads ``obs["total_counts"]``/``obs["n_genes_detected"]`` when :func:`bulkpy.pp.qc_metrics`
    has written them, and computes them from ``layer`` otherwise. Nothing is written.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer with raw counts (``None`` for ``X``), used when the metrics are not in ``obs``.

    Returns
    -------
    DataFrame indexed by sample with columns ``total_counts`` and ``n_genes_detected``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> bk.get.sample_qc(bk.datasets.pasilla()).shape
    (7, 2)
    """
    cols = ["total_counts", "n_genes_detected"]
    if all(c in adata.obs.columns for c in cols):
        return adata.obs[cols].copy()
    X = get_matrix(adata, layer, unique_var_names=False)
    if sparse.issparse(X):
        total = np.asarray(X.sum(axis=1)).ravel()
        detected = np.asarray((X > 0).sum(axis=1)).ravel()
    else:
        X = np.asarray(X)
        total = X.sum(axis=1)
        detected = (X > 0).sum(axis=1)
    return pd.DataFrame({"total_counts": total.astype(float), "n_genes_detected": detected.astype(int)}, index=adata.obs_names)


def pca(adata, *, layer: str | None = None, n_comps: int = 2, n_top_genes: int | None = 500):
    """Principal components of the samples on the most variable genes (DESeq2's ``plotPCA`` recipe).

    Genes are ranked by variance across samples, the top ``n_top_genes`` centred (not scaled) and
    decomposed by SVD. Nothing is written to ``adata`` (use ``scanpy.pp.pca`` to store a PCA).

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer of log-scale expression; ``None`` uses ``X``.
    n_comps
        Number of components.
    n_top_genes
        Number of most variable genes (``None`` for all).

    Returns
    -------
    A DataFrame of sample coordinates (columns ``PC1``…) and an array of the fraction of variance
    each component explains.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.layers["log"] = np.log2(adata.layers["counts"] + 1)
    >>> coords, ratio = bk.get.pca(adata, layer="log")
    >>> coords.shape
    (7, 2)
    """
    X = get_matrix(adata, layer, unique_var_names=False)
    X = X.toarray() if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError("the matrix for PCA has non-finite values; use a log-scale layer without NaN/inf")
    n_comps = int(check_positive(n_comps, "n_comps"))
    if n_comps > min(X.shape):
        raise ValueError(f"n_comps={n_comps} exceeds the data's rank bound min(samples, genes)={min(X.shape)}")
    var = X.var(axis=0, ddof=1) if X.shape[0] > 1 else np.zeros(X.shape[1])
    if n_top_genes is not None:
        n_top = int(check_positive(n_top_genes, "n_top_genes"))
        idx = np.argsort(-var, kind="stable")[: min(n_top, X.shape[1])]
        X = X[:, idx]
    Xc = X - X.mean(axis=0)
    u, s, _ = np.linalg.svd(Xc, full_matrices=False)
    # a deterministic sign: the largest |loading| of each component positive in sample space
    signs = np.sign(u[np.abs(u).argmax(axis=0), range(u.shape[1])])
    signs[signs == 0] = 1
    coords = u * s * signs
    total = (s**2).sum()
    ratio = (s**2) / total if total > 0 else np.zeros_like(s)
    df = pd.DataFrame(coords[:, :n_comps], index=adata.obs_names, columns=[f"PC{i + 1}" for i in range(n_comps)])
    return df, ratio[:n_comps]
