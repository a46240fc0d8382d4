"""Render the plot gallery (docs/gallery.md) into docs/_static/gallery/*.png.

docs/conf.py runs this at build time, and the page shows the code between the ``gallery-start``
and ``gallery-end`` markers below (``literalinclude``), so the code on the page is the code that
drew the pictures. Run it by hand with ``python docs/_gallery.py [output folder]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# gallery-start setup
import bulkpy as bk

adata = bk.datasets.pasilla()
bk.pp.filter_by_expr(adata, design="~ type + condition", subset=True)
bk.pp.normalize(adata, method="tmm", log=True, key_added="log_cpm")
bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
            layer="log_cpm", trend=True)
top = bk.get.de_df(adata, "limma").sort_values("padj").index[:30].tolist()
# gallery-end setup

OUT = Path(__file__).resolve().parent / "_static" / "gallery"


def volcano():
    # gallery-start volcano
    ax = bk.pl.volcano(adata, key="limma", padj=0.05, lfc=1.0, n_labels=10)
    # gallery-end volcano
    return ax.figure


def ma():
    # gallery-start ma
    ax = bk.pl.ma(adata, key="limma", padj=0.05, n_labels=10)
    # gallery-end ma
    return ax.figure


def pvalue_hist():
    # gallery-start pvalue_hist
    ax = bk.pl.pvalue_hist(adata, key="limma")
    # gallery-end pvalue_hist
    return ax.figure


def sample_distances():
    # gallery-start sample_distances
    fig = bk.pl.sample_distances(adata, layer="log_cpm", groupby=["condition", "type"])
    # gallery-end sample_distances
    return fig


def rle():
    # gallery-start rle
    ax = bk.pl.rle(adata, layer="log_cpm", groupby="condition")
    # gallery-end rle
    return ax.figure


def heatmap():
    # gallery-start heatmap
    fig = bk.pl.heatmap(adata, var_names=top, layer="log_cpm", groupby=["condition", "type"])
    # gallery-end heatmap
    return fig


def expression():
    # gallery-start expression
    ax = bk.pl.expression(adata, var_names=top[:4], groupby="condition", layer="log_cpm", kind="box")
    # gallery-end expression
    return ax.figure


PLOTS = {f.__name__: f for f in (volcano, ma, pvalue_hist, sample_distances, rle, heatmap, expression)}


def main(out: Path = OUT) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in PLOTS.items():
        path = out / f"{name}.png"
        draw().savefig(path, dpi=100)
        written.append(path)
    return written


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
