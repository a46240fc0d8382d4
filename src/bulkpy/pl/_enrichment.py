"""Gene set enrichment plots (GSEA running score, dot plot, ORA bars) and DESeq2's dispersion plot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import get
from ..get._enrichment import _entry, _pick
from ._plotter import OKABE_ITO, check_n, get_ax, legend_handles, stacked_panels, style_axes

_EXAMPLE_SETUP = """\
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_tmm_cpm", trend=True)
    >>> sets = {f"set{i}": list(adata.var_names[i * 50 : i * 50 + 40]) for i in range(6)}"""


def _doc(func):
    func.__doc__ = func.__doc__.replace("{setup}", _EXAMPLE_SETUP.strip())
    return func


def _neglog10(p) -> np.ndarray:
    p = pd.to_numeric(p, errors="coerce").to_numpy(dtype=float)
    with np.errstate(divide="ignore"):
        out = -np.log10(p)
    finite = out[np.isfinite(out)]
    cap = finite.max() if finite.size else 1.0
    return np.where(np.isinf(out), cap, out)


def _short(name: str, width: int = 45) -> str:
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


@_doc
def gsea(adata, *, key: str, term: str, gene_sets=None, contrast: str | None = None, ax=None):
    """GSEA plot of one gene set: running enrichment score, the set's genes along the ranking and
    the ranked statistic, as in the GSEA and fgsea (``plotEnrichment``) reports.

    Top: the running score (:func:`bulkpy.get.gsea_running_score`) with a dashed line at the
    enrichment score (its extreme) and a dotted one at the rank where it is reached. Middle: a tick
    per gene of the set at its rank. Bottom: the statistic of every gene in rank order.

    Parameters
    ----------
    adata
        Annotated data matrix holding a :func:`bulkpy.tl.gsea` result and the differential
        expression result it was run on.
    key
        The ``key_added`` of the GSEA run (e.g. ``"gsea_limma"``).
    term
        Name of the gene set to draw.
    gene_sets
        Not needed (the set's genes are stored with the result); when given, a ``dict`` of set
        name -> genes, and ``term`` must be one of its names (a check that the plot shows the
        set you mean).
    contrast
        Contrast to draw; may be omitted when the run has one contrast.
    ax
        Axes whose place the three panels take (it must be a subplot of a grid, e.g. from
        ``fig.subplots()``); a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`; its axes, top to bottom, hold the running score
    (a line with gid ``"running_score"``), the hits (gid ``"hits"``) and the ranked statistic
    (gid ``"ranked_stat"``).

    Examples
    --------
    {setup}
    >>> bk.tl.gsea(adata, key="limma", gene_sets=sets, n_perm_simple=100)
    >>> fig = bk.pl.gsea(adata, key="gsea_limma", term="set0")
    >>> len(fig.axes)
    3
    """
    entry, method, contrasts = _entry(adata, key)
    c = _pick(contrasts, contrast, key)
    if gene_sets is not None:
        if not isinstance(gene_sets, dict):
            raise TypeError(f"gene_sets must be a dict of set name -> genes, got {type(gene_sets).__name__}")
        if term not in gene_sets:
            raise KeyError(f"term {term!r} is not a name of gene_sets (e.g. {list(gene_sets)[:5]})")
    rs = get.gsea_running_score(adata, key, term, contrast=c)
    row = get.enrichment(adata, key, contrast=c).loc[term]
    stat = str(entry["params"].get("stat", "stat"))
    x = rs["rank"].to_numpy()
    y = rs["running_score"].to_numpy()
    es = float(row["ES"])
    at = int(np.argmax(y) if es > 0 else np.argmin(y))

    fig, (a1, a2, a3) = stacked_panels(ax)
    (line,) = a1.plot(x, y, color=OKABE_ITO[2], lw=1.3)
    line.set_gid("running_score")
    a1.axhline(0, color="0.3", lw=0.7)
    a1.axhline(es, color=OKABE_ITO[5], lw=0.8, ls="--")
    a1.axvline(at, color="0.4", lw=0.7, ls=":")
    a1.set_ylabel("enrichment score")
    padj = row["padj"]
    a1.set_title(f"{_short(term, 60)}\nNES {float(row['NES']):.2f}, padj {float(padj):.2g}", fontsize="medium")
    a1.tick_params(labelbottom=False)
    style_axes(a1)

    hits = x[rs["hit"].to_numpy()]
    vl = a2.vlines(hits, 0, 1, color="black", lw=0.5)
    vl.set_gid("hits")
    a2.set_ylim(0, 1)
    a2.set_yticks([])
    a2.tick_params(labelbottom=False, length=0)
    for s in a2.spines.values():
        s.set_visible(False)

    v = rs["stat"].to_numpy()
    poly = a3.fill_between(x, 0, v, color=OKABE_ITO[1], lw=0, step="mid")
    poly.set_gid("ranked_stat")
    a3.axhline(0, color="0.3", lw=0.6)
    a3.set_ylabel(stat, fontsize="small")
    a3.set_xlabel("rank in gene list")
    a3.set_xlim(0, max(len(x) - 1, 1))
    style_axes(a3)
    return fig


@_doc
def enrichment(adata, *, key: str, n_terms: int = 10, color: str | None = None, contrasts=None, ax=None):
    """Dot plot of the top gene sets of an enrichment run across its contrasts.

    Rows are the ``n_terms`` gene sets with the smallest adjusted p-value in any contrast (most
    significant on top), columns the contrasts. Each dot is sized by the set's size and coloured
    by the normalised enrichment score (GSEA, diverging colours centred on 0), the fold
    enrichment (ORA), the signed statistic (camera, fry; diverging), the score
    (:func:`bulkpy.tl.score` with ``key=``; diverging), or −log10 ``padj``. Sets not
    tested in a contrast have no dot there.

    Parameters
    ----------
    adata
        Annotated data matrix holding a :func:`bulkpy.tl.gsea`, :func:`bulkpy.tl.ora`,
        :func:`bulkpy.tl.camera`, :func:`bulkpy.tl.fry` or :func:`bulkpy.tl.score` (``key=``) result.
    key
        The ``key_added`` of the enrichment run (e.g. ``"gsea_limma"``, ``"ora_limma"``,
        ``"camera_voom"``).
    n_terms
        Number of gene sets to show.
    color
        ``"NES"`` (GSEA), ``"fold_enrichment"`` (ORA), ``"stat"`` (camera, fry), ``"score"``
        (:func:`bulkpy.tl.score`) or ``"padj"``
        (−log10 adjusted p-value); by default the method's score.
    contrasts
        Contrasts to show (a name or a list); all by default.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into; the dots are one collection with gid
    ``"dots"``, the y tick labels the set names.

    Examples
    --------
    {setup}
    >>> bk.tl.gsea(adata, key="limma", gene_sets=sets, n_perm_simple=100)
    >>> ax = bk.pl.enrichment(adata, key="gsea_limma", n_terms=4)
    >>> len(ax.get_yticklabels())
    4
    """
    n_terms = check_n(n_terms, "n_terms")
    if n_terms == 0:
        raise ValueError("n_terms must be at least 1")
    entry, method, names = _entry(adata, key)
    score = {"gsea": "NES", "ora": "fold_enrichment", "score": "score"}.get(method, "stat")  # camera / fry: stat
    label = f"{entry['params'].get('score_method', '')} score" if method == "score" else f"{method} statistic"
    color = score if color is None else color
    if color not in (score, "padj"):
        raise ValueError(f"color={color!r} is not available for a {method.upper()} result; choose one of {[score, 'padj']}")
    if contrasts is None:
        contrasts = names
    contrasts = [contrasts] if isinstance(contrasts, str) else list(contrasts)
    if not contrasts:
        raise ValueError(f"contrasts is empty; contrasts of {key!r}: {names}")
    tables = {c: get.enrichment(adata, key, contrast=_pick(names, c, key)) for c in contrasts}
    long = pd.concat([t.assign(contrast=c) for c, t in tables.items()]).reset_index()
    long = long.rename(columns={long.columns[0]: "gene_set"})
    long["padj"] = pd.to_numeric(long["padj"], errors="coerce")
    best = long.dropna(subset=["padj"]).groupby("gene_set", sort=False)["padj"].min()
    if best.empty:
        raise ValueError(f"result {key!r} has no gene set with an adjusted p-value")
    top = list(best.sort_values(kind="stable").index[:n_terms])
    sub = long[long["gene_set"].isin(top)].copy()
    ypos = {t: i for i, t in enumerate(top)}
    xpos = {c: i for i, c in enumerate(contrasts)}
    xs = sub["contrast"].map(xpos).to_numpy(dtype=float)
    ys = sub["gene_set"].map(ypos).to_numpy(dtype=float)
    size = pd.to_numeric(sub["size"], errors="coerce").to_numpy(dtype=float)
    smax = np.nanmax(size) if size.size else 1.0
    area = 20 + 180 * size / smax
    if color == "padj":
        cvals, cmap, norm_kw, clabel = _neglog10(sub["padj"]), "viridis", {"vmin": 0}, "−log10 padj"
    else:
        cvals = pd.to_numeric(sub[color], errors="coerce").to_numpy(dtype=float)
        if color in ("NES", "stat", "score"):
            lim = float(np.nanmax(np.abs(cvals))) if np.isfinite(cvals).any() else 1.0
            cmap, norm_kw, clabel = "RdBu_r", {"vmin": -lim, "vmax": lim}, color if color == "NES" else label
        else:
            cmap, norm_kw, clabel = "viridis", {}, "fold enrichment"

    ax = get_ax(ax, figsize=(2.2 + 0.6 * len(contrasts) + 0.06 * max(len(_short(t)) for t in top), 1.2 + 0.3 * len(top)))
    sc = ax.scatter(xs, ys, s=area, c=cvals, cmap=cmap, edgecolors="0.3", linewidths=0.4, **norm_kw)
    sc.set_gid("dots")
    ax.set_yticks(range(len(top)), [_short(t) for t in top], fontsize="small")
    ax.set_xticks(range(len(contrasts)), contrasts, rotation=30, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(contrasts) - 0.4)
    ax.set_ylim(len(top) - 0.5, -0.5)
    ax.grid(color="0.92", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    cb = ax.figure.colorbar(sc, ax=ax, shrink=0.6, pad=0.02)
    cb.set_label(clabel, fontsize="small")
    cb.ax.tick_params(labelsize="small")
    from matplotlib.lines import Line2D

    ref = sorted({int(round(v)) for v in np.nanquantile(size, [0.0, 0.5, 1.0])}) if size.size else []
    handles = [
        Line2D([], [], marker="o", ls="", color="0.6", markeredgecolor="0.3", markersize=np.sqrt(20 + 180 * r / smax), label=str(r))
        for r in ref
    ]
    if handles:
        legend_handles(ax, handles, "set size", loc="lower left", bbox_to_anchor=(1.0, 0.0))
    return ax


@_doc
def ora_bar(adata, *, key: str, contrast: str | None = None, n_terms: int = 10, ax=None):
    """Bar chart of the top over-represented gene sets: −log10 adjusted p-value per set, with the
    number of DE genes in the set over its size written at the end of each bar.

    Parameters
    ----------
    adata
        Annotated data matrix holding a :func:`bulkpy.tl.ora` result.
    key
        The ``key_added`` of the ORA run (e.g. ``"ora_limma"``).
    contrast
        Contrast to draw; may be omitted when the run has one contrast.
    n_terms
        Number of gene sets to show, smallest ``padj`` first (on top).
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into (one bar per set, y tick labels the set names,
    one text ``"overlap/size"`` per bar).

    Examples
    --------
    {setup}
    >>> bk.tl.ora(adata, key="limma", gene_sets=sets, direction="both", min_size=5)
    >>> ax = bk.pl.ora_bar(adata, key="ora_limma", n_terms=3)
    >>> len(ax.patches)
    3
    """
    n_terms = check_n(n_terms, "n_terms")
    if n_terms == 0:
        raise ValueError("n_terms must be at least 1")
    entry, method, names = _entry(adata, key)
    if method != "ora":
        raise ValueError(f"result {key!r} is a {method!r} run; ora_bar draws a bk.tl.ora result (see bk.pl.enrichment)")
    c = _pick(names, contrast, key)
    t = get.enrichment(adata, key, contrast=c)
    t["padj"] = pd.to_numeric(t["padj"], errors="coerce")
    t = t.dropna(subset=["padj"]).sort_values(["padj", "pvalue"], kind="stable").head(n_terms)
    if t.empty:
        raise ValueError(f"result {key!r} ({c}) has no gene set with an adjusted p-value")
    h = _neglog10(t["padj"])
    ax = get_ax(ax, figsize=(2.6 + 0.06 * max(len(_short(s)) for s in t.index), 1.0 + 0.3 * len(t)))
    y = np.arange(len(t))
    bars = ax.barh(y, h, color=OKABE_ITO[4], height=0.7)
    for b, name in zip(bars, t.index, strict=True):
        b.set_gid(f"bar:{name}")
    for yi, hi, k, n in zip(y, h, t["overlap"], t["size"], strict=True):
        ax.text(hi, yi, f" {int(k)}/{int(n)}", va="center", ha="left", fontsize="x-small")
    ax.axvline(-np.log10(0.05), color="0.4", lw=0.7, ls="--")
    ax.set_yticks(y, [_short(s) for s in t.index], fontsize="small")
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.set_xlim(0, max(float(h.max()), -np.log10(0.05)) * 1.25)
    ax.set_xlabel("−log10 padj")
    ax.set_title(c, fontsize="medium")
    style_axes(ax)
    return ax


def dispersion(adata, *, key: str, ax=None):
    """Dispersion estimates against the mean of normalised counts, DESeq2's ``plotDispEsts``.

    Gene-wise estimates are black dots, the fitted trend red (Okabe-Ito vermillion), the final
    (maximum a posteriori) estimates blue; genes whose gene-wise estimate was kept as final
    because it lies far above the trend (dispersion outliers) are circled. Both axes are log
    scales; gene-wise estimates far below the rest (DESeq2's floor at ``1e-8``) are drawn at the
    bottom edge as downward triangles. A :func:`bulkpy.pp.vst` result has no final estimates.

    Parameters
    ----------
    adata
        Annotated data matrix.
    key
        The ``key_added`` of the :func:`bulkpy.tl.deseq` or :func:`bulkpy.pp.vst` run (see
        :func:`bulkpy.get.dispersions`).
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` drawn into; collections with gid ``"gene_wise"``,
    ``"gene_wise_floor"``, ``"fitted"``, ``"final"``, ``"outliers"`` (those present).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.vst(adata)
    >>> ax = bk.pl.dispersion(adata, key="vst")
    >>> ax.get_xscale(), ax.get_yscale()
    ('log', 'log')
    """
    d = get.dispersions(adata, key)
    m = d["mean"].to_numpy(dtype=float)
    g = d["gene_wise"].to_numpy(dtype=float)
    f = d["fitted"].to_numpy(dtype=float)
    fin = d["final"].to_numpy(dtype=float)
    out = d["outlier"].to_numpy(dtype=bool)
    ok = np.isfinite(m) & (m > 0) & np.isfinite(g)
    if not ok.any():
        raise ValueError(f"no gene with a positive mean and a dispersion estimate under key {key!r}")
    pos = g[ok & (g > 1e-6)]
    ymin = 10 ** (np.floor(np.log10(pos.min())) - 0.1) if pos.size else 1e-8
    low = ok & (g < ymin)
    big = ok.sum() > 2000
    ax = get_ax(ax, figsize=(4.8, 4.0))
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.lines import Line2D

    handles = []
    sc = ax.scatter(m[ok & ~low], g[ok & ~low], s=2, c="black", linewidths=0, rasterized=big, zorder=1)
    sc.set_gid("gene_wise")
    handles.append(Line2D([], [], marker="o", ls="", color="black", markersize=3, label="gene-wise"))
    if low.any():
        sc = ax.scatter(m[low], np.full(low.sum(), ymin), s=6, marker="v", c="black", linewidths=0, zorder=1)
        sc.set_gid("gene_wise_floor")
    has_final = np.isfinite(fin) & ok
    if has_final.any():
        sc = ax.scatter(m[has_final], np.maximum(fin[has_final], ymin), s=2, c=OKABE_ITO[4], linewidths=0,
                        rasterized=big, zorder=2)
        sc.set_gid("final")
        handles.append(Line2D([], [], marker="o", ls="", color=OKABE_ITO[4], markersize=3, label="final"))
    fit_ok = ok & np.isfinite(f)
    sc = ax.scatter(m[fit_ok], f[fit_ok], s=1.5, c=OKABE_ITO[5], linewidths=0, rasterized=big, zorder=3)
    sc.set_gid("fitted")
    handles.insert(1, Line2D([], [], marker="o", ls="", color=OKABE_ITO[5], markersize=3, label="fitted"))
    o = out & has_final
    if o.any():
        sc = ax.scatter(m[o], np.maximum(fin[o], ymin), s=22, facecolors="none", edgecolors=OKABE_ITO[4],
                        linewidths=0.6, zorder=4)
        sc.set_gid("outliers")
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor=OKABE_ITO[4],
                              markersize=5, label=f"outlier ({int(o.sum())})"))
    ax.set_ylim(bottom=ymin / 1.5)
    ax.set_xlabel("mean of normalised counts")
    ax.set_ylabel("dispersion")
    style_axes(ax)
    legend_handles(ax, handles, None, loc="upper right", bbox_to_anchor=(1.0, 1.0))
    return ax
