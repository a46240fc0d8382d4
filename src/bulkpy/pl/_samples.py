"""Sample-level plots: QC overview and PCA."""

from __future__ import annotations

from .. import get
from .._validate import obs_column
from ._plotter import OKABE_ITO, category_colors, get_ax, legend, new_figure


def qc(adata, *, groupby: str | None = None, layer: str = "counts"):
    """Library sizes and detected genes per sample (two panels).

    Parameters
    ----------
    adata
        Annotated data matrix with raw counts.
    groupby
        ``obs`` column to colour samples by.
    layer
        Layer with raw counts (``None`` for ``X``); used when ``bk.pp.qc_metrics`` has not been run.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` with one panel per metric.

    Examples
    --------
    >>> import bulkpy as bk
    >>> fig = bk.pl.qc(bk.datasets.pasilla(), groupby="condition")
    >>> len(fig.axes)
    2
    """
    df = get.sample_qc(adata, layer=layer)
    fig, axes = new_figure(2)
    if groupby is not None:
        colors, mapping = category_colors(obs_column(adata, groupby))
    else:
        colors, mapping = [OKABE_ITO[4]] * df.shape[0], {}
    names = df.index.astype(str)
    for ax, col, label in (
        (axes[0], "total_counts", "library size (millions of counts)"),
        (axes[1], "n_genes_detected", "genes detected"),
    ):
        vals = df[col] / (1e6 if col == "total_counts" else 1)
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)), names, rotation=90, fontsize="small")
        ax.set_ylabel(label)
        ax.spines[["top", "right"]].set_visible(False)
    if mapping:
        legend(axes[1], mapping, groupby, marker="s")
    return fig


def pca(adata, *, layer: str | None = None, color: str | None = None, n_top_genes: int | None = 500, components=(1, 2), ax=None):
    """PCA of samples on the most variable genes, as DESeq2's ``plotPCA``.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer of log-scale expression (e.g. ``"vst"`` or ``"log_cpm"``); ``None`` uses ``X``.
    color
        ``obs`` column to colour samples by.
    n_top_genes
        Number of most variable genes used (``None`` for all genes).
    components
        The two principal components to draw (1-based).
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.layers["log"] = np.log2(adata.layers["counts"] + 1)
    >>> ax = bk.pl.pca(adata, layer="log", color="condition")
    >>> len(ax.collections[0].get_offsets())
    7
    """
    coords, var_ratio = get.pca(adata, layer=layer, n_comps=max(components), n_top_genes=n_top_genes)
    ax = get_ax(ax)
    i, j = components[0] - 1, components[1] - 1
    if color is not None:
        colors, mapping = category_colors(obs_column(adata, color))
    else:
        colors, mapping = [OKABE_ITO[4]] * coords.shape[0], {}
    ax.scatter(coords.iloc[:, i], coords.iloc[:, j], c=list(colors), s=40, edgecolor="white", linewidth=0.5)
    ax.set_xlabel(f"PC{i + 1} ({100 * var_ratio[i]:.0f}% variance)")
    ax.set_ylabel(f"PC{j + 1} ({100 * var_ratio[j]:.0f}% variance)")
    ax.spines[["top", "right"]].set_visible(False)
    if mapping:
        legend(ax, mapping, color)
    return ax
