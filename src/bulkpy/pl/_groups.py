"""Plots that compare the groups of a differential expression run split by group (``split_by=``):
DE genes per group, fold changes across groups and enrichment across groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import get
from .._validate import check_positive, var_column
from ..get._de import grouping
from ._plotter import DOWN, UP, check_n, get_ax, legend_handles, style_axes

_doc_key = """\
adata
    Annotated data matrix holding a differential expression result split by group (e.g.
    ``bk.tl.deseq(..., split_by="cell_type")``).
key
    The ``key_added`` of that run.
contrast
    Contrast to draw (its own name, e.g. ``"stim_vs_ctrl"``); may be omitted when every group has
    one contrast."""

_setup = """\
>>> import anndata as ad, bulkpy as bk
>>> from bulkpy.datasets import pasilla
>>> adata = pasilla()
>>> adata = adata[:, adata.X.sum(axis=0) >= 500].copy()
>>> bk.tl.edger(adata, design="~ condition", contrast=["condition", "treated", "untreated"], split_by="type")"""


def _doc(func):
    func.__doc__ = func.__doc__.format(common=_doc_key.replace("\n", "\n    "), setup=_setup.replace("\n", "\n    "))
    return func


def _long(adata, key: str, contrast) -> pd.DataFrame:
    if not isinstance(key, str):
        raise TypeError(f"key must be the key_added of a differential expression run (a string), got {key!r}")
    if grouping(adata, key) is None:
        raise ValueError(
            f"result {key!r} was not split by group; these plots compare the groups of a run made with split_by= "
            "(use bk.pl.volcano / bk.pl.ma for one result)"
        )
    long = get.de_df(adata, key, group="all", contrast=contrast)
    if contrast is None and long["contrast"].nunique() > 1:
        raise ValueError(
            f"result {key!r} has the contrasts {sorted(long['contrast'].unique())}; pass contrast= one of them"
        )
    for c in ("log2FoldChange", "padj"):
        if c not in long.columns:
            raise KeyError(f"result {key!r} has no {c!r} column (an F-test?); columns: {list(long.columns)}")
    return long


def _threshold(value, name: str) -> float:
    v = check_positive(value, name)
    if v > 1:
        raise ValueError(f"{name} is a probability threshold and must be in (0, 1], got {value!r}")
    return v


@_doc
def de_counts(adata, *, key: str, contrast: str | None = None, padj: float = 0.05, lfc: float = 0.0, ax=None):
    """Number of differentially expressed genes per group: up (right, vermillion) and down (left,
    blue), one bar pair per group, with the number of tested genes beside each group's name.

    Parameters
    ----------
    {common}
    padj
        Adjusted p-value threshold (strictly below), in (0, 1].
    lfc
        Absolute log2 fold change threshold (>= 0; genes must exceed it).
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into; the bars have the gids ``"up"`` and ``"down"``,
    one of each per group in the order of the y tick labels (top to bottom), their widths the
    numbers of genes (down negative).

    Examples
    --------
    {setup}
    >>> ax = bk.pl.de_counts(adata, key="edger")
    >>> [t.get_text().split(" (")[0] for t in ax.get_yticklabels()]
    ['paired_end', 'single_read']
    """
    padj = _threshold(padj, "padj")
    lfc = check_positive(lfc, "lfc", allow_zero=True)
    long = _long(adata, key, contrast)
    groups = list(dict.fromkeys(long["group"]))
    q = pd.to_numeric(long["padj"], errors="coerce").to_numpy(dtype=float)
    fc = pd.to_numeric(long["log2FoldChange"], errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        sig = (np.nan_to_num(q, nan=np.inf) < padj) & (np.abs(fc) > lfc)
    frame = pd.DataFrame({"group": long["group"], "up": sig & (fc > 0), "down": sig & (fc < 0), "tested": ~np.isnan(q)})
    n = frame.groupby("group", sort=False)[["up", "down", "tested"]].sum().reindex(groups)
    y = np.arange(len(groups))
    ax = get_ax(ax, figsize=(5.0, 1.0 + 0.4 * len(groups)))
    up = ax.barh(y, n["up"].to_numpy(), color=UP, height=0.7, label="up")
    down = ax.barh(y, -n["down"].to_numpy(), color=DOWN, height=0.7, label="down")
    for bars, gid in ((up, "up"), (down, "down")):
        for patch in bars:
            patch.set_gid(gid)
    lim = max(1, int(n[["up", "down"]].to_numpy().max()))
    for yi, (u, d) in enumerate(zip(n["up"], n["down"], strict=True)):
        ax.text(u + 0.02 * lim, yi, str(int(u)), va="center", ha="left", fontsize="small")
        ax.text(-d - 0.02 * lim, yi, str(int(d)), va="center", ha="right", fontsize="small")
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlim(-1.25 * lim, 1.25 * lim)
    ax.set_yticks(y, [f"{g} ({int(t)})" for g, t in zip(groups, n["tested"], strict=True)], fontsize="small")
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlabel("DE genes (down | up)")
    cond = f"padj < {padj:g}" + (f", |log2FC| > {lfc:g}" if lfc > 0 else "")
    ax.set_title(f"{long['contrast'].iloc[0]}: {cond}", fontsize="medium")
    style_axes(ax)
    legend_handles(ax, [up, down], None)
    return ax


def _gene_labels(adata, genes, label_key) -> list[str]:
    if label_key is None:
        return [str(g) for g in genes]
    col = var_column(adata, label_key, what="label_key").reindex(genes)
    return [str(v) if isinstance(v, str) and v else str(g) for g, v in zip(genes, col, strict=True)]


@_doc
def fold_changes(
    adata,
    *,
    key: str,
    genes=None,
    n_genes: int = 20,
    contrast: str | None = None,
    padj: float = 0.05,
    kind: str = "dot",
    label_key: str | None = None,
    ax=None,
):
    """Log2 fold changes of chosen or top genes across the groups: genes × groups, coloured by
    the log2 fold change (diverging, centred on 0).

    ``kind="dot"``: dots sized by −log10 ``padj`` (a black edge where ``padj`` is below the
    threshold); ``kind="heatmap"``: coloured cells with ``*`` where ``padj`` is below the
    threshold. Genes not tested in a group are left blank.

    Parameters
    ----------
    {common}
    genes
        Genes to show (``var_names``), in this order; by default the ``n_genes`` genes with the
        smallest ``padj`` in any group (most significant first).
    n_genes
        Number of top genes when ``genes`` is not given.
    padj
        Significance threshold, in (0, 1].
    kind
        ``"dot"`` or ``"heatmap"``.
    label_key
        ``var`` column with the gene labels (e.g. ``"symbol"``); ``var_names`` by default.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into: the dots (gid ``"dots"``) or the image (gid
    ``"heatmap"``), rows = genes (y tick labels), columns = groups (x tick labels).

    Examples
    --------
    {setup}
    >>> ax = bk.pl.fold_changes(adata, key="edger", n_genes=8)
    >>> len(ax.get_yticklabels()), len(ax.get_xticklabels())
    (8, 2)
    """
    padj = _threshold(padj, "padj")
    if kind not in ("dot", "heatmap"):
        raise ValueError(f"kind={kind!r} is not supported; choose 'dot' or 'heatmap'")
    long = _long(adata, key, contrast)
    groups = list(dict.fromkeys(long["group"]))
    if genes is None:
        n_genes = check_n(n_genes, "n_genes")
        if n_genes == 0:
            raise ValueError("n_genes must be at least 1")
        q = pd.to_numeric(long["padj"], errors="coerce")
        best = q.groupby(long["gene"], sort=False).min().dropna().sort_values(kind="stable")
        if best.empty:
            raise ValueError(f"result {key!r} has no gene with an adjusted p-value")
        genes = list(best.index[:n_genes])
    else:
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
        missing = [g for g in genes if g not in adata.var_names]
        if missing or not genes:
            raise KeyError(f"genes not in adata.var_names: {missing[:10]}" if missing else "genes is empty")
    fc = long.pivot(index="gene", columns="group", values="log2FoldChange").reindex(index=genes, columns=groups)
    q = long.pivot(index="gene", columns="group", values="padj").reindex(index=genes, columns=groups)
    fcv = fc.to_numpy(dtype=float)
    qv = q.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(fcv))) if np.isfinite(fcv).any() else 1.0
    labels = _gene_labels(adata, genes, label_key)
    ax = get_ax(ax, figsize=(2.2 + 0.55 * len(groups) + 0.06 * max(map(len, labels)), 1.0 + 0.25 * len(genes)))
    if kind == "heatmap":
        im = ax.imshow(np.ma.masked_invalid(fcv), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        im.set_gid("heatmap")
        ii, jj = np.nonzero(np.nan_to_num(qv, nan=np.inf) < padj)
        for i, j in zip(ii, jj, strict=True):
            ax.text(j, i, "*", ha="center", va="center", fontsize="small")
        mappable = im
    else:
        yy, xx = np.nonzero(np.isfinite(fcv))
        with np.errstate(divide="ignore"):
            nl = -np.log10(np.clip(qv[yy, xx], 1e-300, 1))
        nl = np.nan_to_num(nl, nan=0.0)
        top = max(float(nl.max()) if nl.size else 1.0, 1.0)
        sig = np.nan_to_num(qv[yy, xx], nan=np.inf) < padj
        sc = ax.scatter(
            xx, yy, s=12 + 140 * nl / top, c=fcv[yy, xx], cmap="RdBu_r", vmin=-lim, vmax=lim,
            edgecolors=np.where(sig, "black", "none").tolist(), linewidths=0.7,
        )  # fmt: skip
        sc.set_gid("dots")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(len(genes) - 0.5, -0.5)
        ax.grid(color="0.92", lw=0.6, zorder=0)
        ax.set_axisbelow(True)
        mappable = sc
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color="0.6", markersize=np.sqrt(12 + 140 * v / top), label=f"{v:g}")
            for v in sorted({1.0, round(top / 2, 1), round(top, 1)})
            if v <= top
        ]
        handles.append(Line2D([], [], marker="o", ls="", color="white", markeredgecolor="black", label=f"padj < {padj:g}"))
        legend_handles(ax, handles, "−log10 padj", loc="lower left", bbox_to_anchor=(1.0, 0.0))
    ax.set_yticks(range(len(genes)), labels, fontsize="small")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize="small")
    ax.set_title(str(long["contrast"].iloc[0]), fontsize="medium")
    cb = ax.figure.colorbar(mappable, ax=ax, shrink=0.5, pad=0.02, anchor=(0.0, 1.0))
    cb.set_label("log2 fold change", fontsize="small")
    cb.ax.tick_params(labelsize="small")
    return ax


@_doc
def enrichment_groups(
    adata, *, key: str, n_terms: int = 10, contrast: str | None = None, padj: float = 0.05, ax=None
):
    """Dot plot of gene set enrichment across groups: gene sets × groups, coloured by the
    normalised enrichment score (GSEA; fold enrichment for ORA, the statistic for camera and fry,
    the score for :func:`bulkpy.tl.score` with ``key=``) and sized by −log10 ``padj``, with a black edge where ``padj`` is below the threshold.

    Rows are the ``n_terms`` sets with the smallest ``padj`` in any group. Sets not tested in a
    group have no dot there.

    Parameters
    ----------
    adata
        Annotated data matrix holding an enrichment run (:func:`bulkpy.tl.gsea`,
        :func:`bulkpy.tl.ora`, :func:`bulkpy.tl.score` with ``key=``) on a DE result split by group.
    key
        The ``key_added`` of the enrichment run (e.g. ``"gsea_deseq"``).
    n_terms
        Number of gene sets to show.
    contrast
        Contrast to draw (its own name); may be omitted when every group has one.
    padj
        Significance threshold, in (0, 1].
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into; the dots are one collection with gid
    ``"dots"``, rows the gene sets (y tick labels), columns the groups (x tick labels).

    Examples
    --------
    {setup}
    >>> sets = {{f"set{{i}}": list(adata.var_names[i * 50 : i * 50 + 60]) for i in range(8)}}
    >>> bk.tl.gsea(adata, key="edger", gene_sets=sets, n_perm_simple=100)
    >>> ax = bk.pl.enrichment_groups(adata, key="gsea_edger", n_terms=5)
    >>> len(ax.get_yticklabels()), len(ax.get_xticklabels())
    (5, 2)
    """
    n_terms = check_n(n_terms, "n_terms")
    if n_terms == 0:
        raise ValueError("n_terms must be at least 1")
    padj = _threshold(padj, "padj")
    if not isinstance(key, str):
        raise TypeError(f"key must be the key_added of an enrichment run (a string), got {key!r}")
    long = get.enrichment(adata, key, group="all", contrast=contrast)
    if contrast is None and long["contrast"].nunique() > 1:
        raise ValueError(f"result {key!r} has the contrasts {sorted(long['contrast'].unique())}; pass contrast=")
    params = adata.uns[key]["params"]
    method = str(params["method"])
    score = {"gsea": "NES", "ora": "fold_enrichment", "score": "score"}.get(method, "stat")
    label = f"{params.get('score_method', '')} score" if method == "score" else f"{method} statistic"
    groups = list(dict.fromkeys(long["group"]))
    long["padj"] = pd.to_numeric(long["padj"], errors="coerce")
    best = long.dropna(subset=["padj"]).groupby("gene_set", sort=False)["padj"].min()
    if best.empty:
        raise ValueError(f"result {key!r} has no gene set with an adjusted p-value")
    top = list(best.sort_values(kind="stable").index[:n_terms])
    sub = long[long["gene_set"].isin(top)]
    xs = sub["group"].map({g: i for i, g in enumerate(groups)}).to_numpy(dtype=float)
    ys = sub["gene_set"].map({t: i for i, t in enumerate(top)}).to_numpy(dtype=float)
    c = pd.to_numeric(sub[score], errors="coerce").to_numpy(dtype=float)
    q = sub["padj"].to_numpy(dtype=float)
    nl = np.nan_to_num(-np.log10(np.clip(q, 1e-300, 1)), nan=0.0)
    topnl = max(float(nl.max()) if nl.size else 1.0, 1.0)
    if score == "fold_enrichment":
        norm = {"cmap": "viridis"}
    else:
        lim = float(np.nanmax(np.abs(c))) if np.isfinite(c).any() else 1.0
        norm = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
    short = [t if len(t) <= 45 else t[:44] + "…" for t in top]
    ax = get_ax(ax, figsize=(2.4 + 0.55 * len(groups) + 0.06 * max(map(len, short)), 1.2 + 0.3 * len(top)))
    sig = np.nan_to_num(q, nan=np.inf) < padj
    sc = ax.scatter(xs, ys, s=15 + 160 * nl / topnl, c=c, edgecolors=np.where(sig, "black", "none").tolist(),
                    linewidths=0.7, **norm)  # fmt: skip
    sc.set_gid("dots")
    ax.set_yticks(range(len(top)), short, fontsize="small")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(len(top) - 0.5, -0.5)
    ax.grid(color="0.92", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title(str(long["contrast"].iloc[0]), fontsize="medium")
    cb = ax.figure.colorbar(sc, ax=ax, shrink=0.5, pad=0.02, anchor=(0.0, 1.0))
    cb.set_label({"NES": "NES", "fold_enrichment": "fold enrichment"}.get(score, label), fontsize="small")
    cb.ax.tick_params(labelsize="small")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="", color="0.6", markersize=np.sqrt(15 + 160 * v / topnl), label=f"{v:g}")
        for v in sorted({1.0, round(topnl / 2, 1), round(topnl, 1)})
        if v <= topnl
    ]
    handles.append(Line2D([], [], marker="o", ls="", color="white", markeredgecolor="black", label=f"padj < {padj:g}"))
    legend_handles(ax, handles, "−log10 padj", loc="lower left", bbox_to_anchor=(1.0, 0.0))
    return ax


__all__ = ["de_counts", "enrichment_groups", "fold_changes"]
