"""One small shared helper for every plot (axes creation, colour-blind-safe colours, legends)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
GREY = "#BBBBBB"


def get_ax(ax=None, figsize=(4.5, 4.0)):
    """Return ``ax`` or a new Axes on a new Figure (never the pyplot current one)."""
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def new_figure(ncols: int, *, panel=(4.0, 3.5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1]), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def category_colors(values, *, offset: int = 0) -> tuple[np.ndarray, dict]:
    """Colours per value for a categorical vector, and the level → colour mapping for a legend.

    ``offset`` starts further along the palette (so that two annotations side by side differ)."""
    s = pd.Series(values)
    levels = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) else sorted(s.dropna().unique(), key=str)
    mapping = {lev: OKABE_ITO[(i + offset) % len(OKABE_ITO)] for i, lev in enumerate(levels)}
    cols = np.array([mapping.get(v, GREY) for v in s], dtype=object)
    return cols, mapping


def legend(ax, mapping: dict, title: str | None = None, *, marker="o"):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=marker, linestyle="", color=c, label=str(k)) for k, c in mapping.items()]
    ax.legend(
        handles=handles, title=title, frameon=False, fontsize="small", title_fontsize="small",
        loc="upper left", bbox_to_anchor=(1.0, 1.0),
    )


# ----------------------------------------------------------------------------------------------
# significance colours shared by the differential expression plots
# ----------------------------------------------------------------------------------------------

#: Up-regulated significant genes (Okabe-Ito vermillion), down-regulated (blue), not significant
#: (dark grey) and untested (``padj`` missing, light grey).
UP, DOWN, NOT_SIGNIFICANT, UNTESTED = OKABE_ITO[5], OKABE_ITO[4], "#7A7A7A", GREY


def style_axes(ax) -> None:
    """The house style: no top/right spines."""
    ax.spines[["top", "right"]].set_visible(False)


def legend_handles(ax, handles, title: str | None = None, *, loc="upper left", bbox_to_anchor=(1.0, 1.0), **kw):
    """A frameless legend from explicit handles (outside the axes on the right by default)."""
    return ax.legend(
        handles=handles, title=title, frameon=False, fontsize="small", title_fontsize="small",
        loc=loc, bbox_to_anchor=bbox_to_anchor, alignment="left", **kw,
    )


def check_n(value, name: str) -> int:
    """A non-negative integer parameter (counts of labels, genes...)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# label placement without overlaps
# ----------------------------------------------------------------------------------------------


def _hits(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For candidate boxes (m × 4: x0, y0, x1, y1) whether each overlaps any of ``others`` (k × 4)."""
    if len(others) == 0:
        return np.zeros(len(boxes), dtype=bool)
    b = boxes[:, None, :]
    o = others[None, :, :]
    return ((b[..., 0] < o[..., 2]) & (o[..., 0] < b[..., 2]) & (b[..., 1] < o[..., 3]) & (o[..., 1] < b[..., 3])).any(axis=1)


def _covered(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Number of ``points`` (k × 2) inside each box (m × 4)."""
    if len(points) == 0:
        return np.zeros(len(boxes), dtype=int)
    x, y = points[None, :, 0], points[None, :, 1]
    inside = (boxes[:, None, 0] <= x) & (x <= boxes[:, None, 2]) & (boxes[:, None, 1] <= y) & (y <= boxes[:, None, 3])
    return inside.sum(axis=1)


def place_labels(anchors, sizes, bounds, *, obstacles=None, pad: float = 2.0, radius: float = 3.0, step: float = 4.0,
                 directions: int = 16, patience: int = 6):
    """Deterministic, greedy placement of text boxes next to their points without overlaps.

    Everything is in points (1/72 inch) of display space. Labels are placed one after the other,
    in the order given (put the most important first). For each, candidate positions are tried on
    rings of growing distance around its point (``directions`` angles per ring, ``step`` points
    apart, starting on the side facing the middle of the axes); a candidate is allowed when its box
    lies inside ``bounds`` (x0, y0, x1, y1), keeps ``pad`` points from every label already placed
    and covers no labelled point. Among the allowed candidates the one covering the fewest
    ``obstacles`` (the other data points) wins; the search stops at the first ring with an allowed
    candidate that covers none, or ``patience`` rings after the first allowed one. No randomness:
    the same input always gives the same layout.

    Returns the box centres (n × 2) and a boolean array marking labels for which no allowed place
    existed (they are left beside their point, possibly overlapping).
    """
    anchors = np.asarray(anchors, dtype=float).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=float).reshape(-1, 2)
    obstacles = np.zeros((0, 2)) if obstacles is None else np.asarray(obstacles, dtype=float).reshape(-1, 2)
    n = len(anchors)
    x0, y0, x1, y1 = bounds
    points = np.column_stack([anchors - radius, anchors + radius])  # labelled points as small squares
    # only obstacles inside the axes matter
    keep = (obstacles[:, 0] >= x0) & (obstacles[:, 0] <= x1) & (obstacles[:, 1] >= y0) & (obstacles[:, 1] <= y1)
    obstacles = obstacles[keep]
    base = np.arange(directions) * (2 * np.pi / directions)
    # try angles near horizontal first, alternating above/below: 0, +a, -a, +2a, ...
    order = np.argsort(np.minimum(base, 2 * np.pi - base) + 1e-9 * (base > np.pi), kind="stable")
    angles = base[order]
    n_rings = int(np.ceil(max(x1 - x0, y1 - y0) / step)) + 1
    centres = np.empty((n, 2))
    failed = np.zeros(n, dtype=bool)
    placed = np.zeros((0, 4))
    for i in range(n):
        w, h = sizes[i]
        a = anchors[i]
        toward_middle = 1.0 if a[0] <= (x0 + x1) / 2 else -1.0
        cos, sin = toward_middle * np.cos(angles), np.sin(angles)
        best, best_cover, first_ring = None, None, None
        for ring in range(n_rings):
            gap = radius + pad + ring * step
            c = a + np.column_stack([(w / 2 + gap) * cos, (h / 2 + gap) * sin])
            boxes = np.column_stack([c[:, 0] - w / 2, c[:, 1] - h / 2, c[:, 0] + w / 2, c[:, 1] + h / 2])
            inside = (boxes[:, 0] >= x0) & (boxes[:, 2] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)
            padded = boxes + np.array([-pad, -pad, pad, pad])
            ok = inside & ~_hits(padded, placed) & ~_hits(boxes, points)
            if ok.any():
                first_ring = ring if first_ring is None else first_ring
                idx = np.flatnonzero(ok)
                cover = _covered(boxes[idx], obstacles)
                j = int(np.argmin(cover))  # first of the least covering, in angle order
                if best_cover is None or cover[j] < best_cover:
                    best, best_cover = c[idx[j]], int(cover[j])
                if best_cover == 0 or ring - first_ring >= patience:
                    break
        if best is None:
            failed[i] = True
            best = a + np.array([toward_middle * (w / 2 + radius + pad), 0.0])
        centres[i] = best
        w2, h2 = w / 2, h / 2
        placed = np.vstack([placed, [best[0] - w2, best[1] - h2, best[0] + w2, best[1] + h2]])
    return centres, failed


def label_points(ax, x, y, labels, *, obstacles=None, fontsize="small", color="black"):
    """Label points ``(x, y)`` (data coordinates) with ``labels``, most important first, so that
    labels overlap neither each other nor the labelled points and cover as few of the
    ``obstacles`` (``(x, y)`` arrays of the other data points) as they can (:func:`place_labels`);
    a thin line joins a label to its point when it had to move away. The axis limits are frozen
    first. Returns the list of annotation artists."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.text import Text

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    labels = [str(lab) for lab in labels]
    if not labels:
        return []
    fig = ax.figure
    fig = getattr(fig, "figure", None) or fig  # the root figure when ax sits in a SubFigure
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)  # final axes position, so that distances in points are the drawn ones
    to_pt = 72.0 / fig.dpi
    anchors = ax.transData.transform(np.column_stack([x, y])) * to_pt
    renderer = RendererAgg(max(int(fig.bbox.width), 1), max(int(fig.bbox.height), 1), fig.dpi)
    sizes = []
    for lab in labels:
        probe = Text(0, 0, lab, fontsize=fontsize)
        probe.set_figure(fig)
        ext = probe.get_window_extent(renderer)
        sizes.append((ext.width * to_pt, ext.height * to_pt))
    sizes = np.asarray(sizes)
    box = ax.bbox
    if obstacles is not None:
        ox, oy = (np.asarray(v, dtype=float) for v in obstacles)
        fin = np.isfinite(ox) & np.isfinite(oy)
        obstacles = ax.transData.transform(np.column_stack([ox[fin], oy[fin]])) * to_pt
    bounds = (box.x0 * to_pt, box.y0 * to_pt, box.x1 * to_pt, box.y1 * to_pt)
    centres, _ = place_labels(anchors, sizes, bounds, obstacles=obstacles)
    texts = []
    for lab, xi, yi, c, a, s in zip(labels, x, y, centres, anchors, sizes, strict=True):
        far = bool(np.any(np.abs(c - a) - s / 2 > 6.0))
        arrow = {"arrowstyle": "-", "lw": 0.5, "color": "0.35", "shrinkA": 0, "shrinkB": 2} if far else None
        t = ax.annotate(lab, xy=(xi, yi), xytext=tuple(c - a), textcoords="offset points", ha="center", va="center",
                        fontsize=fontsize, color=color, arrowprops=arrow, annotation_clip=False)
        t.set_in_layout(False)
        texts.append(t)
    return texts


# ----------------------------------------------------------------------------------------------
# clustered heatmaps with dendrograms and annotation bars
# ----------------------------------------------------------------------------------------------


def linkage(values: np.ndarray, *, method: str = "complete", distances: bool = False):
    """Hierarchical clustering (scipy) of the rows of ``values`` on Euclidean distances, or of a
    square distance matrix with ``distances=True``; ``None`` for fewer than two rows."""
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    values = np.asarray(values, dtype=float)
    if values.shape[0] < 2:
        return None
    if distances:
        return hierarchy.linkage(squareform(values, checks=False), method=method)
    return hierarchy.linkage(values, method=method, metric="euclidean")


def _dendrogram(ax, Z, *, orientation: str) -> np.ndarray:
    """Draw ``Z`` in ``ax`` with leaves at 0..n-1 (matching an ``imshow`` beside it); returns the leaf order."""
    from matplotlib.collections import LineCollection
    from scipy.cluster import hierarchy

    d = hierarchy.dendrogram(Z, no_plot=True)
    segs = []
    for xs, ys in zip(d["icoord"], d["dcoord"], strict=True):
        leaf = (np.asarray(xs) - 5.0) / 10.0
        h = np.asarray(ys)
        segs.append(np.column_stack([leaf, h]) if orientation == "top" else np.column_stack([-h, leaf]))
    ax.add_collection(LineCollection(segs, colors="0.25", linewidths=0.7))
    top = float(np.max(Z[:, 2])) if len(Z) else 1.0
    top = top if top > 0 else 1.0
    if orientation == "top":
        ax.set_ylim(0, top * 1.05)
    else:
        ax.set_xlim(-top * 1.05, 0)
    ax.set_axis_off()
    return np.asarray(d["leaves"])


def clustered_heatmap(
    matrix: pd.DataFrame,
    *,
    row_linkage=None,
    col_linkage=None,
    col_annotations: dict | None = None,
    cmap="viridis",
    vmin=None,
    vmax=None,
    cbar_label: str = "",
    cell=(0.28, 0.2),
    row_labels: bool = True,
):
    """A heatmap of ``matrix`` (rows × columns) with optional dendrograms (scipy linkages of its
    rows/columns), annotation bars above the columns (name → values per column, coloured with the
    Okabe-Ito palette) and a colour bar. Returns the Figure; its axes carry labels
    ``"heatmap"``, ``"colorbar"``, ``"dendrogram_rows"``, ``"dendrogram_cols"``, ``"annotation:<name>"``."""
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    col_annotations = dict(col_annotations or {})
    n_rows, n_cols = matrix.shape
    n_ann = len(col_annotations)
    dendro_w = 0.7 if row_linkage is not None else 0.0
    dendro_h = 0.6 if col_linkage is not None else 0.0
    heat_w = max(n_cols * cell[0], 1.6)
    heat_h = min(max(n_rows * cell[1], 1.6), 9.0)
    longest = max((len(str(r)) for r in matrix.index), default=0) if row_labels else 0
    width = dendro_w + heat_w + 0.3 + 0.06 * min(longest, 30) + 0.6 + (1.3 if n_ann else 0.0)
    label_h = 0.065 * min(max((len(str(c)) for c in matrix.columns), default=0), 30)
    height = dendro_h + 0.18 * n_ann + heat_h + label_h + 0.3
    fig = Figure(figsize=(width + 0.5, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.0, hspace=0.0)
    heights = ([dendro_h] if dendro_h else []) + [0.18] * n_ann + [heat_h]
    widths = ([dendro_w] if dendro_w else []) + [heat_w, 0.15] + ([1.2] if n_ann else [])
    gs = fig.add_gridspec(len(heights), len(widths), height_ratios=heights, width_ratios=widths)
    r_heat = len(heights) - 1
    c_heat = 1 if dendro_w else 0
    ax = fig.add_subplot(gs[r_heat, c_heat], label="heatmap")

    rows = np.arange(n_rows)
    cols = np.arange(n_cols)
    if row_linkage is not None:
        dax = fig.add_subplot(gs[r_heat, 0], sharey=ax, label="dendrogram_rows")
        rows = _dendrogram(dax, row_linkage, orientation="left")
    if col_linkage is not None:
        dax = fig.add_subplot(gs[0, c_heat], sharex=ax, label="dendrogram_cols")
        cols = _dendrogram(dax, col_linkage, orientation="top")
    data = matrix.to_numpy(dtype=float)[np.ix_(rows, cols)]
    im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n_cols), matrix.columns.astype(str)[cols], rotation=90, fontsize="small")
    if row_labels:
        ax.set_yticks(range(n_rows), matrix.index.astype(str)[rows], fontsize="small")
    else:
        ax.set_yticks([])
    ax.yaxis.tick_right()
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)

    handles, headers, offset = [], [], 0
    for k, (name, values) in enumerate(col_annotations.items()):
        r = (1 if dendro_h else 0) + k
        aax = fig.add_subplot(gs[r, c_heat], sharex=ax, label=f"annotation:{name}")
        colors, mapping = category_colors(values, offset=offset)
        offset += len(mapping)
        rgb = np.array([to_rgb(c) for c in colors[cols]])[None, :, :]
        aax.imshow(rgb, aspect="auto", interpolation="nearest")
        aax.set_yticks([0], [str(name)], fontsize="small")
        aax.tick_params(length=0, labelbottom=False)
        for s in aax.spines.values():
            s.set_visible(False)
        headers.append(len(handles))
        handles.append(Line2D([], [], linestyle="", label=str(name)))
        handles += [Line2D([], [], marker="s", linestyle="", color=c, label=str(lev)) for lev, c in mapping.items()]

    cax = fig.add_subplot(gs[r_heat, c_heat + 1], label="colorbar")
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(cbar_label, fontsize="small")
    cb.ax.tick_params(labelsize="small")
    if handles:
        lax = fig.add_subplot(gs[:, c_heat + 2], label="legend")
        lax.set_axis_off()
        leg = lax.legend(handles=handles, loc="upper left", frameon=False, fontsize="small", borderaxespad=0,
                         handletextpad=0.4)
        for i in headers:
            leg.get_texts()[i].set_fontweight("bold")
    return fig


# ----------------------------------------------------------------------------------------------
# stacked panels sharing an x axis (GSEA plot)
# ----------------------------------------------------------------------------------------------


def stacked_panels(ax=None, *, height_ratios=(3.0, 0.5, 1.2), figsize=(5.0, 4.2)):
    """Panels stacked vertically with a shared x axis, in a new Figure or in the place of ``ax``
    (which is removed; it must sit in a grid spec, as ``fig.subplots()`` makes). Returns the
    Figure and the list of Axes, top first."""
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        gs = fig.add_gridspec(len(height_ratios), 1, height_ratios=height_ratios)
    else:
        spec = ax.get_subplotspec()
        if spec is None:
            raise ValueError("ax must be a subplot in a grid (e.g. from fig.subplots()) to be split into panels")
        fig = ax.figure
        ax.remove()
        gs = spec.subgridspec(len(height_ratios), 1, height_ratios=height_ratios, hspace=0.05)
    axes = [fig.add_subplot(gs[0])]
    axes += [fig.add_subplot(gs[i], sharex=axes[0]) for i in range(1, len(height_ratios))]
    if ax is None:
        fig.get_layout_engine().set(hspace=0.0, h_pad=0.02)
    return fig, axes
