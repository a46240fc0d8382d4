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


def _ftests(adata, key: str) -> list[str]:
    """Names of the F-tests (several coefficients tested at once) of a result; empty if none."""
    entry = adata.uns.get(key)
    if not isinstance(entry, Mapping) or "ftests" not in entry:
        return []
    return [str(c) for c in np.atleast_1d(entry["ftests"])]


def is_ftest(adata, key: str, name: str) -> bool:
    """Whether ``name`` is an F-test (no single log2 fold change) of result ``key``."""
    return name in _ftests(adata, key)


def _resolve(adata, key: str, contrast: str | None) -> str:
    """The contrast or F-test meant by ``contrast``: omitted, the run's single contrast (or its single
    F-test when it has no contrast)."""
    names = _contrasts(adata, key)
    fnames = _ftests(adata, key)
    if contrast is None:
        if len(names) == 1:
            return names[0]
        if not names and len(fnames) == 1:
            return fnames[0]
        raise ValueError(
            f"result {key!r} has {len(names)} contrasts{f' and {len(fnames)} F-tests' if fnames else ''}; pass "
            f"contrast= one of {names + fnames}"
        )
    if contrast not in names and contrast not in fnames:
        raise KeyError(
            f"contrast {contrast!r} not in result {key!r}; contrasts: {names}" + (f", F-tests: {fnames}" if fnames else "")
        )
    return contrast


def de_df(adata, key: str, *, contrast: str | None = None) -> pd.DataFrame:
    """The result table of one contrast (or F-test) of a differential expression run.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run (e.g. ``"deseq"``, ``"limma"``).
    contrast
        Contrast name, or the name of an F-test (``bk.tl.limma(ftest=...)``); may be omitted when
        the run has a single contrast (or no contrast and a single F-test).

    Returns
    -------
    A DataFrame indexed by gene with at least ``log2FoldChange``, ``stat``, ``pvalue`` and ``padj``
    (a copy: editing it does not change ``adata``). The table of an F-test has no single
    ``log2FoldChange`` but one ``log2FoldChange_{contrast}`` per tested coefficient or contrast,
    and ``stat`` is the F statistic.

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
    contrast = _resolve(adata, key, contrast)
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
        Contrast names to include; all by default. F-tests (unsigned F statistics) are included
        only when named.

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
        if not names and _ftests(adata, key):
            raise ValueError(
                f"result {key!r} has no contrast, only the F-tests {_ftests(adata, key)}; name them with contrasts="
            )
        contrasts = names
    contrasts = [contrasts] if isinstance(contrasts, str) else list(contrasts)
    rows = {}
    for c in contrasts:
        df = de_df(adata, key, contrast=c)
        if stat not in df.columns:
            raise KeyError(f"column {stat!r} not in result {key!r}; columns: {list(df.columns)}")
        rows[c] = pd.to_numeric(df[stat], errors="coerce").fillna(0.0)
    return pd.DataFrame(rows).T
