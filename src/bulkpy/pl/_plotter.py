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


def category_colors(values) -> tuple[np.ndarray, dict]:
    """Colours per value for a categorical vector, and the level → colour mapping for a legend."""
    s = pd.Series(values)
    levels = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) else sorted(s.dropna().unique(), key=str)
    mapping = {lev: OKABE_ITO[i % len(OKABE_ITO)] for i, lev in enumerate(levels)}
    cols = np.array([mapping.get(v, GREY) for v in s], dtype=object)
    return cols, mapping


def legend(ax, mapping: dict, title: str | None = None, *, marker="o"):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=marker, linestyle="", color=c, label=str(k)) for k, c in mapping.items()]
    ax.legend(
        handles=handles, title=title, frameon=False, fontsize="small", title_fontsize="small",
        loc="upper left", bbox_to_anchor=(1.0, 1.0),
    )
