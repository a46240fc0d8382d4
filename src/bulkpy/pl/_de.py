"""Differential expression plots: volcano and MA, for the result of any DE method."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import get
from .._validate import check_positive, var_column
from ..get._de import _resolve, group_contrast, is_ftest
from ._plotter import (
    DOWN,
    NOT_SIGNIFICANT,
    UNTESTED,
    UP,
    check_n,
    get_ax,
    label_points,
    legend_handles,
    style_axes,
)

_doc_common = """\
adata
    Annotated data matrix holding a differential expression result (from ``bk.tl.*``, or any
    table stored with the shared schema).
key
    The ``key_added`` of the differential expression run (e.g. ``"deseq"``, ``"limma"``).
contrast
    Contrast to draw; may be omitted when the run has one contrast (with ``group``: in the group).
group
    For a run split by group (``split_by=``): the group to draw."""

_doc_labels = """\
n_labels
    Number of significant genes to label, smallest ``padj`` first (``0`` for none). Labels are
    placed so that they overlap neither each other nor the labelled points.
label_key
    ``var`` column with the label of each gene (e.g. ``"symbol"``); ``adata.var_names`` by
    default, and for genes whose label is missing."""

_doc_colours = """\
Genes with ``padj`` below the threshold are coloured by direction (up: vermillion, down: blue,
Okabe-Ito colours, safe for colour-blind readers), other tested genes dark grey, and genes without
an adjusted p-value (``padj`` missing, e.g. removed by DESeq2's independent filtering) light
grey. Each group is one scatter collection whose ``gid`` is ``"up"``, ``"down"``,
``"not_significant"`` or ``"padj_na"``."""


def _indented(text: str) -> str:
    """Shared text placed at a docstring's 4-space indentation: indent every line but the first."""
    return text.replace("\n", "\n    ")


def _doc(func):
    func.__doc__ = func.__doc__.format(
        common=_indented(_doc_common), labels=_indented(_doc_labels), colours=_indented(_doc_colours)
    )
    return func


def _table(adata, key, contrast, columns, group=None) -> tuple[pd.DataFrame, str]:
    if not isinstance(key, str):
        raise TypeError(f"key must be the key_added of a differential expression run (a string), got {key!r}")
    if group is not None:
        if not isinstance(group, str):
            raise TypeError(f"group must be one group name (a string), got {group!r}")
        get.de_df(adata, key, group=group, contrast=contrast)  # raises for unknown or skipped groups
        contrast = group_contrast(adata, key, group, contrast)
    contrast = _resolve(adata, key, contrast)
    df = get.de_df(adata, key, contrast=contrast)
    missing = [c for c in columns if c not in df.columns]
    if missing and is_ftest(adata, key, contrast):
        fcs = [c for c in df.columns if c.startswith("log2FoldChange_")]
        raise ValueError(
            f"{contrast!r} of result {key!r} is an F-test of {len(fcs)} coefficients or contrasts at once: it has no "
            f"single log2 fold change to plot (its columns: {fcs}); plot one contrast of the run, or test it with "
            "contrast= to draw it"
        )
    if missing:
        raise KeyError(f"result {key!r} lacks columns {missing}; columns: {list(df.columns)}")
    return df, contrast


def _check_threshold(value, name: str) -> float:
    v = check_positive(value, name)
    if v > 1:
        raise ValueError(f"{name} is a probability threshold and must be in (0, 1], got {value!r}")
    return v


def _labels(adata, label_key) -> np.ndarray:
    names = adata.var_names.astype(str).to_numpy()
    if label_key is None:
        return names
    col = var_column(adata, label_key, what="label_key")
    lab = col.astype(object).to_numpy()
    missing = pd.isna(lab) | (col.astype(str).to_numpy() == "")
    return np.where(missing, names, lab.astype(str))


def _classes(df: pd.DataFrame, padj: float, lfc: float) -> np.ndarray:
    """``"up"``/``"down"``/``"not_significant"``/``"padj_na"`` per gene."""
    q = pd.to_numeric(df["padj"], errors="coerce").to_numpy(dtype=float)
    fc = pd.to_numeric(df["log2FoldChange"], errors="coerce").to_numpy(dtype=float)
    sig = (q < padj) & (np.abs(fc) >= lfc)
    out = np.full(len(df), "not_significant", dtype=object)
    out[np.isnan(q)] = "padj_na"
    out[sig & (fc > 0)] = "up"
    out[sig & (fc < 0)] = "down"
    return out


_STYLE = {
    "padj_na": (UNTESTED, "padj NA", 4, 1),
    "not_significant": (NOT_SIGNIFICANT, "not significant", 4, 2),
    "down": (DOWN, "down", 8, 3),
    "up": (UP, "up", 8, 3),  # drawn last, listed first
}


def _scatter(ax, x, y, classes, *, capped=None) -> list:
    """One collection per class (drawn grey first), legend with counts."""
    from matplotlib.lines import Line2D

    handles = []
    for cls, (color, label, size, z) in _STYLE.items():
        m = classes == cls
        if not m.any():
            continue
        sc = ax.scatter(x[m], y[m], s=size, c=color, linewidths=0, rasterized=bool(m.sum() > 2000), zorder=z)
        sc.set_gid(cls)
        handles.append(Line2D([], [], marker="o", linestyle="", color=color, markersize=4, label=f"{label} ({int(m.sum())})"))
    handles = handles[::-1]  # up, down, not significant, padj NA
    if capped is not None and capped.any():
        ax.scatter(x[capped], y[capped], s=14, marker="^", facecolors="none", edgecolors="black", linewidths=0.5, zorder=4)
    return handles


def _label_top(ax, df, x, y, classes, names, n_labels) -> None:
    if n_labels == 0:
        return
    sig = np.flatnonzero(np.isin(classes, ("up", "down")) & np.isfinite(x) & np.isfinite(y))
    if sig.size == 0:
        return
    q = pd.to_numeric(df["padj"], errors="coerce").to_numpy(dtype=float)[sig]
    p = pd.to_numeric(df["pvalue"], errors="coerce").to_numpy(dtype=float)[sig]
    a = -np.abs(pd.to_numeric(df["log2FoldChange"], errors="coerce").to_numpy(dtype=float)[sig])
    order = np.lexsort((np.arange(sig.size), a, p, q))  # padj, then p-value, then |log2FC|, then position
    top = sig[order[:n_labels]]
    drawn = np.flatnonzero(classes != "not_drawn")
    drawn = drawn[~np.isin(drawn, top)]
    label_points(ax, x[top], y[top], names[top], obstacles=(x[drawn], y[drawn]))


@_doc
def volcano(
    adata,
    *,
    key: str,
    contrast: str | None = None,
    group: str | None = None,
    padj: float = 0.05,
    lfc: float = 1.0,
    n_labels: int = 10,
    label_key: str | None = None,
    ax=None,
):
    """Volcano plot: log2 fold change against significance (−log10 p-value) for every gene.

    A gene is significant when its ``padj`` is below ``padj`` and its absolute log2 fold change
    at least ``lfc``; dashed lines mark both thresholds (the horizontal one at the largest p-value
    among genes with ``padj`` below the threshold). {colours} Genes without a p-value are not
    drawn; p-values of exactly 0 are drawn at the top as open triangles.

    Parameters
    ----------
    {common}
    padj
        Adjusted p-value threshold, in (0, 1].
    lfc
        Absolute log2 fold change threshold (``0`` for none).
    {labels}
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_tmm_cpm", trend=True)
    >>> ax = bk.pl.volcano(adata, key="limma", n_labels=5)
    >>> len(ax.texts)
    5
    """
    padj = _check_threshold(padj, "padj")
    lfc = check_positive(lfc, "lfc", allow_zero=True)
    n_labels = check_n(n_labels, "n_labels")
    df, contrast = _table(adata, key, contrast, ("log2FoldChange", "pvalue", "padj"), group)
    names = _labels(adata, label_key)
    x = pd.to_numeric(df["log2FoldChange"], errors="coerce").to_numpy(dtype=float)
    p = pd.to_numeric(df["pvalue"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(p) & (p >= 0)
    positive = p[ok & (p > 0)]
    floor = positive.min() if positive.size else 1e-300
    capped = ok & (p == 0)
    with np.errstate(divide="ignore"):
        y = -np.log10(np.where(capped, floor, p))
    classes = _classes(df, padj, lfc)
    classes[~ok] = "not_drawn"

    ax = get_ax(ax, figsize=(5.6, 4.2))
    handles = _scatter(ax, x, y, classes, capped=capped)
    q = pd.to_numeric(df["padj"], errors="coerce").to_numpy(dtype=float)
    below = ok & (q < padj)
    if below.any():
        ax.axhline(-np.log10(p[below].max()), color="0.4", lw=0.7, ls="--", zorder=0)
    if lfc > 0:
        for v in (-lfc, lfc):
            ax.axvline(v, color="0.4", lw=0.7, ls="--", zorder=0)
    ax.set_xlabel("log2 fold change")
    ax.set_ylabel("−log10 p-value")
    ax.set_title(contrast, fontsize="medium")
    style_axes(ax)
    if handles:
        legend_handles(ax, handles, f"padj < {padj:g}" + (f", |log2FC| ≥ {lfc:g}" if lfc > 0 else ""))
    _label_top(ax, df, x, y, classes, names, n_labels)
    return ax


@_doc
def ma(
    adata,
    *,
    key: str,
    contrast: str | None = None,
    group: str | None = None,
    padj: float = 0.05,
    n_labels: int = 10,
    label_key: str | None = None,
    ax=None,
):
    """MA plot: log2 fold change against mean expression for every gene, as DESeq2's ``plotMA``.

    The x axis is the mean of normalised counts (``baseMean``, DESeq2 and edgeR-style results) on
    a log10 scale, or the average log2 expression (``AveExpr``, limma) when the table has no
    ``baseMean``. Genes with a ``baseMean`` of 0 or a missing log2 fold change are not drawn.
    {colours}

    Parameters
    ----------
    {common}
    padj
        Adjusted p-value threshold, in (0, 1].
    {labels}
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_tmm_cpm", trend=True)
    >>> ax = bk.pl.ma(adata, key="limma", n_labels=0)
    >>> ax.get_xlabel()
    'average log2 expression (AveExpr)'
    """
    padj = _check_threshold(padj, "padj")
    n_labels = check_n(n_labels, "n_labels")
    df, contrast = _table(adata, key, contrast, ("log2FoldChange", "pvalue", "padj"), group)
    names = _labels(adata, label_key)
    if "baseMean" in df.columns:
        xcol, log_x = "baseMean", True
    elif "AveExpr" in df.columns:
        xcol, log_x = "AveExpr", False
    else:
        raise KeyError(
            f"result {key!r} has neither a 'baseMean' nor an 'AveExpr' column for the x axis; columns: {list(df.columns)}"
        )
    x = pd.to_numeric(df[xcol], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(df["log2FoldChange"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) if log_x else True)
    classes = _classes(df, padj, 0.0)
    classes[~ok] = "not_drawn"

    ax = get_ax(ax, figsize=(5.6, 4.2))
    if log_x:
        ax.set_xscale("log")
    handles = _scatter(ax, x, y, classes)
    ax.axhline(0, color="0.3", lw=0.8, zorder=0)
    ax.set_xlabel("mean of normalised counts (baseMean)" if log_x else "average log2 expression (AveExpr)")
    ax.set_ylabel("log2 fold change")
    ax.set_title(contrast, fontsize="medium")
    style_axes(ax)
    if handles:
        legend_handles(ax, handles, f"padj < {padj:g}")
    _label_top(ax, df, x, y, classes, names, n_labels)
    return ax
