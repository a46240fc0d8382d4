"""Tidy differential expression tables, whatever method made them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._slots import de_varm_key
from .._validate import check_adata, check_unique_var_names


def _contrasts(adata, key: str) -> list[str]:
    check_adata(adata)
    check_unique_var_names(adata)  # DE tables are indexed by gene (and ora/gsea start here)
    entry = adata.uns.get(key)
    if not isinstance(entry, Mapping) or "contrasts" not in entry:
        found = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and "contrasts" in v]
        raise KeyError(f"no differential expression result under key {key!r}; results in this object: {found or 'none'}")
    return [str(c) for c in np.atleast_1d(entry["contrasts"])]


def de_df(adata, key: str, *, contrast: str | None = None) -> pd.DataFrame:
    """The result table of one contrast of a differential expression run.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run (e.g. ``"deseq"``, ``"limma"``).
    contrast
        Contrast name; may be omitted when the run has a single contrast.

    Returns
    -------
    A DataFrame indexed by gene with at least ``log2FoldChange``, ``stat``, ``pvalue`` and ``padj``
    (a copy: editing it does not change ``adata``).

    Examples
    --------
    >>> import pandas as pd, bulkpy as bk
    >>> from bulkpy._slots import write_de
    >>> adata = bk.datasets.pasilla()[:, :3].copy()
    >>> df = pd.DataFrame({"log2FoldChange": [1.0, 0, -1], "stat": [2.0, 0, -2], "pvalue": [0.04, 1, 0.04],
    ...                    "padj": [0.06, 1, 0.06]}, index=adata.var_names)
    >>> write_de(adata, "toy", {"treated_vs_untreated": df}, {"method": "toy"})
    >>> bk.get.de_df(adata, "toy").shape
    (3, 4)
    """
    names = _contrasts(adata, key)
    if contrast is None:
        if len(names) != 1:
            raise ValueError(f"result {key!r} has {len(names)} contrasts; pass contrast= one of {names}")
        contrast = names[0]
    if contrast not in names:
        raise KeyError(f"contrast {contrast!r} not in result {key!r}; contrasts: {names}")
    df = adata.varm[de_varm_key(key, contrast)]
    return pd.DataFrame(df).copy()


def de_stats(adata, key: str, *, stat: str = "stat", contrasts=None) -> pd.DataFrame:
    """One statistic for every contrast as a contrasts × genes DataFrame, ready for decoupler
    (``dc.mt.ulm(de_stats, net)`` scores pathways per contrast).

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the differential expression run.
    stat
        Column to collect (``"stat"``, ``"log2FoldChange"``, ...). Missing values become 0.
    contrasts
        Contrast names to include; all by default.

    Returns
    -------
    DataFrame with one row per contrast and one column per gene.

    Examples
    --------
    >>> import pandas as pd, bulkpy as bk
    >>> from bulkpy._slots import write_de
    >>> adata = bk.datasets.pasilla()[:, :3].copy()
    >>> df = pd.DataFrame({"log2FoldChange": [1.0, 0, -1], "stat": [2.0, 0, -2], "pvalue": [0.04, 1, 0.04],
    ...                    "padj": [0.06, 1, 0.06]}, index=adata.var_names)
    >>> write_de(adata, "toy", {"treated_vs_untreated": df}, {"method": "toy"})
    >>> bk.get.de_stats(adata, "toy").shape
    (1, 3)
    """
    names = _contrasts(adata, key)
    if contrasts is None:
        contrasts = names
    contrasts = [contrasts] if isinstance(contrasts, str) else list(contrasts)
    rows = {}
    for c in contrasts:
        df = de_df(adata, key, contrast=c)
        if stat not in df.columns:
            raise KeyError(f"column {stat!r} not in result {key!r}; columns: {list(df.columns)}")
        rows[c] = pd.to_numeric(df[stat], errors="coerce").fillna(0.0)
    return pd.DataFrame(rows).T
