"""Diagnostic plots: sample distances, relative log expression, p-value histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import get
from .._validate import obs_column
from ..get._expression import _groupby_list
from ._de import _table
from ._plotter import OKABE_ITO, category_colors, clustered_heatmap, get_ax, legend, linkage, style_axes


def sample_distances(adata, *, layer: str | None = None, groupby=None):
    """Clustered heatmap of Euclidean distances between samples, as in the DESeq2 vignette.

    Distances are computed on ``layer`` (:func:`bulkpy.get.sample_distances`), samples ordered by
    complete-linkage hierarchical clustering of those distances (scipy; ``pheatmap``'s default),
    with the dendrogram on top and left. Replicates should sit together in dark blocks.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer of log-scale expression (VST, log-CPM); ``None`` uses ``adata.X``.
    groupby
        ``obs`` column, or list of columns, drawn as coloured annotation bars above the samples.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`. Its axes are labelled ``"heatmap"``, ``"colorbar"``,
    ``"dendrogram_rows"``, ``"dendrogram_cols"`` and ``"annotation:<column>"``.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.layers["log"] = np.log2(adata.layers["counts"] + 1)
    >>> fig = bk.pl.sample_distances(adata, layer="log", groupby=["condition", "type"])
    >>> fig.axes[0].get_images()[0].get_array().shape
    (7, 7)
    """
    groups = _groupby_list(groupby)
    annotations = {g: obs_column(adata, g, what="groupby") for g in groups}
    D = get.sample_distances(adata, layer=layer)
    Z = linkage(D.to_numpy(), distances=True)
    annotations = {g: v.reindex(D.columns) for g, v in annotations.items()}
    return clustered_heatmap(
        D, row_linkage=Z, col_linkage=Z, col_annotations=annotations, cmap="Blues_r", vmin=0,
        cbar_label="Euclidean distance", cell=(0.3, 0.3),
    )


def rle(adata, *, layer: str | None = None, groupby: str | None = None, log: bool | None = None, ax=None):
    """Relative log expression per sample: box plots of each gene's log expression minus its median.

    Boxes of well-normalised samples are centred on 0 and equally narrow; a shifted box points to a
    normalisation problem, a wide one to a sample of poorer quality (Gandolfo & Speed 2018). Box
    whiskers reach 1.5 times the interquartile range; outliers are not drawn.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer to read: raw counts (logged as ``log2(x + 1)``) or log-scale normalised expression;
        ``None`` uses ``adata.X``.
    groupby
        ``obs`` column to colour the samples by.
    log
        Take ``log2(x + 1)`` first; by default only when the values are non-negative integers
        (see :func:`bulkpy.get.rle`).
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> ax = bk.pl.rle(adata, layer="log_tmm_cpm", groupby="condition")
    >>> len(ax.patches)
    7
    """
    if groupby is not None:
        colors, mapping = category_colors(obs_column(adata, groupby, what="groupby"))
    else:
        colors, mapping = np.array([OKABE_ITO[1]] * adata.n_obs, dtype=object), {}
    R = get.rle(adata, layer=layer, log=log)
    n = R.shape[0]
    ax = get_ax(ax, figsize=(max(3.5, 0.35 * n + 1.5), 3.4))
    bp = ax.boxplot(
        list(R.to_numpy()), positions=range(n), widths=0.6, patch_artist=True, showfliers=False,
        medianprops={"color": "black", "lw": 1}, whiskerprops={"color": "0.3"}, capprops={"color": "0.3"},
        manage_ticks=False,
    )
    for box, c, name in zip(bp["boxes"], colors, R.index, strict=True):
        box.set_facecolor(c)
        box.set_edgecolor("0.3")
        box.set_gid(f"rle:{name}")
    ax.axhline(0, color="0.3", lw=0.8, ls="--", zorder=0)
    ax.set_xticks(range(n), R.index.astype(str), rotation=90, fontsize="small")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("relative log expression")
    style_axes(ax)
    if mapping:
        legend(ax, mapping, groupby, marker="s")
    return ax


def pvalue_hist(adata, *, key: str, contrast: str | None = None, ax=None):
    """Histogram of the p-values of a differential expression result.

    A well-behaved test gives a flat histogram (null genes) with a peak near 0 (genes that change).
    The dashed line is the level of a flat histogram holding the estimated share of null genes
    (Storey's π0 with λ = 0.5, the mean height of the bins above 0.5). A hump in the middle or a
    rise towards 1 points to a mis-specified model or to discrete low counts.

    Parameters
    ----------
    adata
        Annotated data matrix holding a differential expression result.
    key
        The ``key_added`` of the differential expression run.
    contrast
        Contrast to draw; may be omitted when the run has one contrast.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into (20 bins of width 0.05; genes without a p-value
    are left out).

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_tmm_cpm", trend=True)
    >>> ax = bk.pl.pvalue_hist(adata, key="limma")
    >>> len(ax.patches)
    20
    """
    df, contrast = _table(adata, key, contrast, ("pvalue",))
    p = pd.to_numeric(df["pvalue"], errors="coerce").to_numpy(dtype=float)
    p = p[np.isfinite(p)]
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"result {key!r} has p-values outside [0, 1]; is the 'pvalue' column a p-value?")
    ax = get_ax(ax, figsize=(4.5, 3.4))
    ax.hist(p, bins=np.linspace(0, 1, 21), color=OKABE_ITO[4], edgecolor="white", linewidth=0.5)
    if p.size:
        level = (p > 0.5).sum() / 10.0
        pi0 = min(1.0, 2.0 * (p > 0.5).mean())
        ax.axhline(level, color=OKABE_ITO[5], lw=1, ls="--", label=f"flat level (π0 ≈ {pi0:.2f})")
        ax.legend(frameon=False, fontsize="small", loc="upper right")
    ax.set_xlim(0, 1)
    ax.set_xlabel("p-value")
    ax.set_ylabel("genes")
    ax.set_title(f"{contrast} ({p.size} genes)", fontsize="medium")
    style_axes(ax)
    return ax
