"""Expression plots: a clustered heatmap of chosen genes, and expression per group."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import get
from .._validate import check_bool, check_choice, obs_column, var_column
from ..get._expression import _groupby_list, var_indices
from ._plotter import category_colors, clustered_heatmap, get_ax, legend, linkage, style_axes

_KINDS = ("box", "strip", "bar")


def heatmap(
    adata,
    *,
    var_names,
    layer: str | None = None,
    groupby=None,
    zscore: bool = True,
    dendrogram: bool = True,
    gene_symbols: str | None = None,
    label_key: str | None = None,
):
    """Clustered heatmap of chosen genes (rows) across samples (columns), with sample annotation bars.

    Like ``pheatmap`` in the DESeq2 and limma workflows: with ``zscore`` each gene is centred and
    scaled to unit standard deviation across samples (a diverging colour map around 0), and genes
    and samples are ordered by complete-linkage hierarchical clustering on Euclidean distances
    (scipy), drawn as dendrograms.

    Parameters
    ----------
    adata
        Annotated data matrix.
    var_names
        Genes to show: names in ``adata.var_names`` (or in ``var[gene_symbols]``), at least one.
    layer
        Layer of log-scale expression (e.g. ``"vst"``, ``"log_cpm"``); ``None`` uses ``adata.X``.
    groupby
        ``obs`` column, or list of columns, drawn as coloured annotation bars above the samples.
    zscore
        Scale each gene to mean 0 and standard deviation 1 across samples (constant genes become 0).
        With ``False`` the values are drawn as they are, with a sequential colour map.
    dendrogram
        Cluster genes and samples and draw the dendrograms; with ``False`` genes keep the order of
        ``var_names`` and samples the order of ``adata``.
    gene_symbols
        ``var`` column in which to look ``var_names`` up (e.g. ``"symbol"``).
    label_key
        ``var`` column labelling the rows (e.g. ``"symbol"`` when ``var_names`` are Ensembl ids);
        by default the names as given in ``var_names``. Rows are labelled up to 80 genes.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`. Its axes are labelled ``"heatmap"``, ``"colorbar"``,
    ``"dendrogram_rows"``/``"dendrogram_cols"`` (with ``dendrogram``) and ``"annotation:<column>"``.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.layers["log"] = np.log2(adata.layers["counts"] + 1)
    >>> genes = adata.var_names[np.argsort(-adata.layers["log"].var(axis=0))[:20]]
    >>> fig = bk.pl.heatmap(adata, var_names=list(genes), layer="log", groupby="condition")
    >>> fig.axes[0].get_images()[0].get_array().shape
    (20, 7)
    """
    zscore = check_bool(zscore, "zscore")
    dendrogram = check_bool(dendrogram, "dendrogram")
    groups = _groupby_list(groupby)
    df = get.expression(adata, var_names, layer=layer, groupby=groups or None, gene_symbols=gene_symbols)
    M = df.pivot(index="gene", columns="sample", values="value").reindex(columns=adata.obs_names)
    M = M.reindex(index=df["gene"].cat.categories)
    values = M.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError("the layer has non-finite values (NaN or inf) for these genes; use a layer with finite values")
    if zscore:
        sd = values.std(axis=1, ddof=1, keepdims=True) if values.shape[1] > 1 else np.zeros((values.shape[0], 1))
        values = np.divide(values - values.mean(axis=1, keepdims=True), sd, out=np.zeros_like(values), where=sd > 0)
        lim = max(float(np.abs(values).max()), 1e-12)
        cmap, vmin, vmax, label = "RdBu_r", -lim, lim, "z-score"
    else:
        cmap, vmin, vmax, label = "viridis", None, None, layer if layer is not None else "X"
    row_names = M.index
    if label_key is not None:
        idx, _ = var_indices(adata, var_names, gene_symbols=gene_symbols)
        lab = var_column(adata, label_key, what="label_key").iloc[idx]
        row_names = pd.Index([str(v) if pd.notna(v) and str(v) else str(g) for v, g in zip(lab, M.index, strict=True)])
    M = pd.DataFrame(values, index=row_names, columns=M.columns)
    row_link = linkage(values) if dendrogram else None
    col_link = linkage(values.T) if dendrogram else None
    annotations = {g: obs_column(adata, g, what="groupby").reindex(M.columns) for g in groups}
    return clustered_heatmap(
        M, row_linkage=row_link, col_linkage=col_link, col_annotations=annotations, cmap=cmap, vmin=vmin, vmax=vmax,
        cbar_label=label, row_labels=M.shape[0] <= 80,
    )


def expression(
    adata,
    *,
    var_names,
    groupby: str,
    layer: str | None = None,
    kind: str = "box",
    gene_symbols: str | None = None,
    ax=None,
):
    """Expression of a few genes per group of samples: box plots, strip plots or bars, with the samples as points.

    Genes are side by side along the x axis; within a gene there is one box (or strip, or bar)
    per level of ``groupby``, coloured with the Okabe-Ito palette. Every sample is drawn as a
    point (bulk studies have few replicates, and a box of three values hides that).

    Parameters
    ----------
    adata
        Annotated data matrix.
    var_names
        Gene names (a list, or one name), in ``adata.var_names`` or in ``var[gene_symbols]``.
    groupby
        ``obs`` column that defines the groups.
    layer
        Layer of normalised expression (e.g. ``"log_cpm"``, ``"vst"``, ``"normalized"``); ``None``
        uses ``adata.X``.
    kind
        ``"box"`` (box plots, the default), ``"strip"`` (points and the group median) or
        ``"bar"`` (group mean with its standard error).
    gene_symbols
        ``var`` column in which to look ``var_names`` up (e.g. ``"symbol"``).
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
    >>> ax = bk.pl.expression(adata, var_names=["FBgn0039155", "FBgn0025111"], groupby="condition", layer="log")
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['FBgn0039155', 'FBgn0025111']
    """
    check_choice(kind, _KINDS, "kind")
    if not isinstance(groupby, str):
        raise TypeError(f"groupby must be the name of one obs column, got {groupby!r}")
    df = get.expression(adata, var_names, layer=layer, groupby=groupby, gene_symbols=gene_symbols)
    _, mapping = category_colors(obs_column(adata, groupby))
    levels = list(mapping)
    genes = list(df["gene"].cat.categories)
    n_lev = max(len(levels), 1)
    width = 0.8 / n_lev

    ax = get_ax(ax, figsize=(max(3.0, 0.55 * len(genes) * n_lev + 1.8), 3.6))
    for gi, gene in enumerate(genes):
        sub = df[df["gene"] == gene]
        for li, lev in enumerate(levels):
            vals = sub.loc[sub[groupby] == lev, "value"].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                continue
            pos = gi - 0.4 + width * (li + 0.5)
            color = mapping[lev]
            if kind == "box":
                bp = ax.boxplot(
                    [vals], positions=[pos], widths=width * 0.8, patch_artist=True, showfliers=False,
                    medianprops={"color": "black", "lw": 1}, whiskerprops={"color": "0.3"}, capprops={"color": "0.3"},
                    boxprops={"facecolor": color, "alpha": 0.45, "edgecolor": "0.3"}, manage_ticks=False,
                )
                for b in bp["boxes"]:
                    b.set_gid(f"box:{gene}:{lev}")
            elif kind == "bar":
                se = vals.std(ddof=1) / np.sqrt(vals.size) if vals.size > 1 else 0.0
                ax.bar(pos, vals.mean(), width=width * 0.8, color=color, alpha=0.6, edgecolor="0.3", linewidth=0.6,
                       yerr=se, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"}, gid=f"bar:{gene}:{lev}")
            else:
                ax.hlines(np.median(vals), pos - width * 0.35, pos + width * 0.35, color="black", lw=1.2)
            # samples as points, spread evenly across the box (deterministic, no random jitter)
            spread = np.linspace(-1, 1, vals.size) * width * 0.25 if vals.size > 1 else np.zeros(1)
            pts = ax.scatter(pos + spread, vals, s=16, color=color, edgecolor="black", linewidth=0.4, zorder=3)
            pts.set_gid(f"points:{gene}:{lev}")
    tilt = len(genes) > 1 and max(len(g) for g in genes) > 8
    ax.set_xticks(range(len(genes)), genes, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(-0.6, len(genes) - 0.4)
    ax.set_ylabel(layer if layer is not None else "expression")
    style_axes(ax)
    legend(ax, mapping, groupby, marker="s")
    if kind == "bar" and ax.get_ylim()[0] > 0:
        ax.set_ylim(bottom=0)
    return ax

