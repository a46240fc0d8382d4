"""Per-sample and per-gene quality-control metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._docs import doc_adata, doc_copy, doc_copy_returns, doc_params
from .._slots import check_key, write_params
from .._stats import qc as _qc
from .._utils import finish, start
from .._validate import check_counts, get_matrix, var_column


def _top_n_list(top_n) -> list[int]:
    if top_n is None:
        return []
    if isinstance(top_n, int | np.integer) and not isinstance(top_n, bool):
        top_n = [top_n]
    if isinstance(top_n, str) or not isinstance(top_n, Sequence | np.ndarray):
        raise TypeError(f"top_n must be an int or a sequence of ints (e.g. (50, 100)), got {top_n!r}")
    out: list[int] = []
    for k in top_n:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"top_n values must be positive integers, got {k!r} in {top_n!r}")
        if int(k) not in out:
            out.append(int(k))
    return out


def _qc_var_masks(adata, qc_vars) -> dict[str, np.ndarray]:
    if qc_vars is None:
        return {}
    if isinstance(qc_vars, str):
        qc_vars = [qc_vars]
    if not isinstance(qc_vars, Sequence):
        raise TypeError(f"qc_vars must be a var column name or a list of them, got {type(qc_vars).__name__}")
    masks = {}
    for name in qc_vars:
        col = var_column(adata, name, what="qc_vars entry")
        if not pd.api.types.is_bool_dtype(col) or col.isna().any():
            raise TypeError(
                f"var column {name!r} named in qc_vars must be boolean without missing values "
                f"(True for the genes of the set, e.g. adata.var_names.str.startswith('MT-')); got dtype {col.dtype}"
            )
        masks[str(name)] = col.to_numpy(dtype=bool)
    return masks


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def qc_metrics(
    adata,
    *,
    layer: str | None = "counts",
    top_n: int | Sequence[int] | None = (50,),
    qc_vars: str | Sequence[str] | None = (),
    log1p: bool = True,
    key_added: str = "qc_metrics",
    copy: bool = False,
):
    """Library size, detected genes and count concentration per sample; expression and detection per gene.

    A gene is *detected* in a sample when its count is > 0. Sparse and dense matrices give the
    same values. A dask matrix is read chunk by chunk: on dask input, 2 passes over the matrix
    (``dask.compute`` calls: the count check, 1 if it was checked before, and one pass for every
    metric); nothing samples × genes is gathered. The column names are fixed (as scanpy's ``calculate_qc_metrics``, with
    sample/gene wording); running again overwrites them.

    Parameters
    ----------
    {adata}
    layer
        Layer holding raw counts (non-negative, finite; non-integer estimated counts are
        accepted); ``None`` uses ``adata.X``.
    top_n
        For each ``n``, the percentage of a sample's counts that its ``n`` most expressed genes hold
        (scanpy's ``pct_counts_in_top_n_genes``): high values flag libraries dominated by a few
        genes. When ``n`` is at least the number of genes the value is 100. ``None`` or ``()``
        for none.
    qc_vars
        Names of boolean ``var`` columns marking gene sets (mitochondrial, ribosomal, spike-ins);
        for each, the counts in the set and their percentage of the library.
    log1p
        Also write ``log1p`` (natural log of 1 + x) of the library sizes and of the per-gene
        totals and means.
    key_added
        Key in ``uns`` for the parameters.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes to ``obs``: ``total_counts`` (library size), ``n_genes_detected``,
        ``log1p_total_counts`` (if ``log1p``), ``pct_counts_top_<n>`` for each ``n`` in ``top_n``,
        ``total_counts_<name>`` and ``pct_counts_<name>`` for each ``qc_vars`` column. To ``var``:
        ``total_counts``, ``mean_counts``, ``n_samples_detected``, ``frac_samples_detected`` and,
        if ``log1p``, ``log1p_total_counts`` and ``log1p_mean_counts``. The parameters to
        ``uns[key_added]["params"]``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.qc_metrics(adata)
    >>> int(adata.obs["total_counts"].min())
    8358426
    >>> adata.obs.columns.tolist()[-4:]
    ['total_counts', 'n_genes_detected', 'log1p_total_counts', 'pct_counts_top_50']
    >>> int((adata.var["n_samples_detected"] == 0).sum())
    2240
    """
    X = get_matrix(adata, layer)
    check_counts(X, what=f"counts in {'X' if layer is None else f'layer {layer!r}'}", integer=False)
    ks = _top_n_list(top_n)
    masks = _qc_var_masks(adata, qc_vars)
    if not isinstance(log1p, bool):
        raise TypeError(f"log1p must be True or False, got {log1p!r}")
    check_key(key_added, "key_added")

    s, g = _qc.qc_metrics(X, top_n=ks, gene_sets=masks)

    adata = start(adata, copy)
    adata.obs["total_counts"] = s["total_counts"]
    adata.obs["n_genes_detected"] = s["n_genes_detected"]
    if log1p:
        adata.obs["log1p_total_counts"] = np.log1p(s["total_counts"])
    for j, k in enumerate(ks):
        adata.obs[f"pct_counts_top_{k}"] = s["top_n"][:, j]
    for name in masks:
        adata.obs[f"total_counts_{name}"] = s[f"total_counts_{name}"]
        adata.obs[f"pct_counts_{name}"] = s[f"pct_counts_{name}"]
    adata.var["total_counts"] = g["total_counts"]
    adata.var["mean_counts"] = g["mean_counts"]
    adata.var["n_samples_detected"] = g["n_samples_detected"]
    adata.var["frac_samples_detected"] = g["frac_samples_detected"]
    if log1p:
        adata.var["log1p_total_counts"] = np.log1p(g["total_counts"])
        adata.var["log1p_mean_counts"] = np.log1p(g["mean_counts"])
    write_params(
        adata,
        key_added,
        {"layer": layer, "top_n": ks, "qc_vars": list(masks), "log1p": log1p, "detection": "count > 0"},
    )
    return finish(adata, copy)
