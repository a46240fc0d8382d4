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


#: Separates the group from the contrast in the contrast names of a grouped result (``split_by=``).
_SEP = ":"
_ALL = "all"


def grouping(adata, key: str) -> tuple[str, list[str], dict[str, str]] | None:
    """``(split_by, tested groups, skipped group -> reason)`` of a grouped result, else ``None``."""
    entry = adata.uns.get(key)
    if not isinstance(entry, Mapping) or "split_by" not in entry:
        return None
    skipped = entry.get("skipped", {})
    skipped = {str(k): str(v) for k, v in skipped.items()} if isinstance(skipped, Mapping) else {}
    return str(entry["split_by"]), [str(g) for g in np.atleast_1d(entry.get("groups", []))], skipped


def split_name(name: str) -> tuple[str, str]:
    """``(group, contrast)`` of a contrast name of a grouped result (group labels hold no ``:``)."""
    group, _, contrast = name.partition(_SEP)
    return group, contrast


def _check_group(adata, key: str, group) -> tuple[list[str], bool]:
    """The groups meant by ``group`` and whether a long table (``"all"`` or a list) is wanted."""
    info = grouping(adata, key)
    if info is None:
        raise ValueError(
            f"result {key!r} was not split by group (split_by=); leave group= unset, or rerun the method with "
            "split_by= an obs column"
        )
    split_by, groups, skipped = info
    if isinstance(group, str):
        if group == _ALL:
            return groups, True
        wanted, long = [group], False
    elif isinstance(group, list | tuple | np.ndarray | pd.Index) and len(group) and all(isinstance(g, str) for g in group):
        wanted, long = [str(g) for g in group], True
    else:
        raise TypeError(f"group must be a group name, a list of them or {_ALL!r}, got {group!r}")
    for g in wanted:
        if g in skipped:
            raise KeyError(f"group {g!r} of {split_by!r} was not tested in result {key!r}: {skipped[g]}")
        if g not in groups:
            raise KeyError(f"group {g!r} is not a group of result {key!r} (split by {split_by!r}); groups: {groups}")
    return wanted, long


def group_contrast(adata, key: str, group: str, contrast: str | None) -> str:
    """The stored contrast name of ``contrast`` of ``group`` (omitted: the group's single contrast)."""
    names = _contrasts(adata, key) + _ftests(adata, key)
    if contrast is not None:
        if not isinstance(contrast, str):
            raise TypeError(f"contrast must be a contrast name (a string), got {contrast!r}")
        full = f"{group}{_SEP}{contrast}"
        if full in names:
            return full
        if contrast in names and split_name(contrast)[0] == group:
            return contrast
        raise KeyError(
            f"contrast {contrast!r} not in group {group!r} of result {key!r}; contrasts: "
            f"{[split_name(n)[1] for n in names if split_name(n)[0] == group]}"
        )
    mine = [n for n in _contrasts(adata, key) if split_name(n)[0] == group]
    if len(mine) != 1:
        raise ValueError(
            f"group {group!r} of result {key!r} has {len(mine)} contrasts; pass contrast= one of "
            f"{[split_name(n)[1] for n in mine]}"
        )
    return mine[0]


def _long(adata, key: str, groups: list[str], contrast: str | None) -> pd.DataFrame:
    frames = []
    for g in groups:
        mine = [n for n in _contrasts(adata, key) if split_name(n)[0] == g]
        names = mine if contrast is None else [group_contrast(adata, key, g, contrast)]
        for n in names:
            df = pd.DataFrame(adata.varm[de_varm_key(key, n)])
            df = df[df.notna().any(axis=1)]  # genes not tested in this group
            df.insert(0, "gene", df.index.astype(str))
            df.insert(0, "contrast", split_name(n)[1])
            df.insert(0, "group", g)
            frames.append(df.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def de_df(adata, key: str, *, contrast: str | None = None, group=None) -> pd.DataFrame:
    """The result table of one contrast (or F-test) of a differential expression run, or, for a
    run split by group (``split_by=``), of one group or all of them.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run (e.g. ``"deseq"``, ``"limma"``).
    contrast
        Contrast name, or the name of an F-test (``bk.tl.limma(ftest=...)``); may be omitted when
        the run has a single contrast (or no contrast and a single F-test). With ``group``, the
        contrast's own name (``"stim_vs_ctrl"``); without it, a grouped run's full names
        (``"B cells:stim_vs_ctrl"``) are accepted too.
    group
        For a run split by group: a group (level of ``split_by``), a list of groups, or ``"all"``.
        A list or ``"all"`` gives one long table (``contrast`` omitted: every contrast).

    Returns
    -------
    A DataFrame indexed by gene with at least ``log2FoldChange``, ``stat``, ``pvalue`` and ``padj``
    (a copy: editing it does not change ``adata``); in a grouped run, genes not tested in the group
    are ``NaN``. The table of an F-test has no single ``log2FoldChange`` but one
    ``log2FoldChange_{contrast}`` per tested coefficient or contrast, and ``stat`` is the F
    statistic. With ``group="all"`` or a list: a long table with a default index and the columns
    ``group``, ``contrast``, ``gene`` and the statistics, one row per group, contrast and gene
    tested in that group.

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

    Split by group (here the library type of pasilla's samples), one long table of all groups:

    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 500].copy()
    >>> bk.tl.edger(adata, design="~ condition", contrast=["condition", "treated", "untreated"], split_by="type")
    >>> bk.get.de_df(adata, "edger", group="paired_end").shape[1]
    7
    >>> long = bk.get.de_df(adata, "edger", group="all")
    >>> list(long.columns[:4]), sorted(long["group"].unique())
    (['group', 'contrast', 'gene', 'log2FoldChange'], ['paired_end', 'single_read'])
    """
    if group is not None:
        groups, long = _check_group(adata, key, group)
        if long:
            return _long(adata, key, groups, contrast)
        contrast = group_contrast(adata, key, groups[0], contrast)
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
