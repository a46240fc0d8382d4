"""The plots an expression study is read through (bk.pl.volcano, ma, heatmap, expression,
sample_distances, rle, pvalue_hist) and the bk.get tables behind them.

Each plot is drawn on real data (pasilla, airway) and what was drawn is checked against the data
(points, colours, labels, matrix shapes); every plot is also compared with a committed PNG baseline
in tests/baseline/ (``BULKPY_REGEN_BASELINES=1 pytest tests/test_pl_plots.py`` rewrites them).

DE results: ``bk.tl.limma`` (limma-trend on TMM log-CPM) when it exists, else a Welch t test; the
DESeq2 Wald result of R on pasilla (tests/fixtures/pasilla/deseq2_wald_4sig.csv.gz, rounded to 4
significant digits) for a DESeq2-shaped table with baseMean and NA padj; and a Welch t test for a
minimal table with only the four shared columns.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.style  # the baselines are drawn under matplotlib.style.context("default")
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from helpers import assert_adata_equal
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.testing.compare import compare_images
from matplotlib.text import Text
from scipy import stats

import bulkpy as bk
from bulkpy._slots import write_de
from bulkpy.pl._plotter import DOWN, NOT_SIGNIFICANT, UNTESTED, UP, place_labels

BASELINE = Path(__file__).resolve().parent / "baseline"
REGEN = os.environ.get("BULKPY_REGEN_BASELINES") == "1"
RC = {
    "font.family": ["DejaVu Sans"],
    "font.size": 10.0,
    "figure.dpi": 50,
    "savefig.dpi": 50,
    "text.hinting": "default",
    "text.antialiased": True,
    "lines.antialiased": True,
    "axes.unicode_minus": True,
}


# ------------------------------------------------------------------------------------------------
# real DE results
# ------------------------------------------------------------------------------------------------


def _welch(adata, layer, factor, test, ref) -> pd.DataFrame:
    """Welch t test per gene (vectorised), BH-adjusted: a minimal result in the shared schema."""
    X = np.asarray(adata.layers[layer], dtype=float)
    g = adata.obs[factor].astype(str).to_numpy()
    a, b = X[g == test], X[g == ref]
    sa, sb = a.var(0, ddof=1) / len(a), b.var(0, ddof=1) / len(b)
    se2 = sa + sb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean(0) - b.mean(0)) / np.sqrt(se2)
        df = se2**2 / (sa**2 / (len(a) - 1) + sb**2 / (len(b) - 1))
        p = np.where(se2 > 0, 2 * stats.t.sf(np.abs(t), df), np.nan)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    q[ok] = stats.false_discovery_control(p[ok])
    return pd.DataFrame({"log2FoldChange": a.mean(0) - b.mean(0), "stat": t, "pvalue": p, "padj": q}, index=adata.var_names)


def _de(adata, *, design, factor, test, ref, layer, key="de"):
    if hasattr(bk.tl, "limma"):
        bk.tl.limma(adata, design=design, contrast=[factor, test, ref], layer=layer, trend=True, key_added=key)
    else:  # pragma: no cover - before bk.tl.limma existed
        write_de(adata, key, {f"{test}_vs_{ref}": _welch(adata, layer, factor, test, ref)}, {"method": "welch"})


@pytest.fixture(scope="module")
def _pas():
    adata = bk.datasets.pasilla()
    adata = adata[:, adata.layers["counts"].sum(axis=0) >= 10].copy()
    bk.pp.normalize(adata, method="tmm", log=True, key_added="log_cpm")
    _de(adata, design="~ type + condition", factor="condition", test="treated", ref="untreated", layer="log_cpm")
    ref = pd.read_csv(FIXTURES / "pasilla" / "deseq2_wald_4sig.csv.gz", index_col=0).reindex(adata.var_names)
    write_de(adata, "deseq", {"treated_vs_untreated": ref}, {"method": "DESeq2 1.38.3 (R reference)"})
    welch = _welch(adata, "log_cpm", "condition", "treated", "untreated")
    write_de(adata, "welch", {"treated_vs_untreated": welch}, {"method": "welch"})
    return adata


@pytest.fixture
def pas(_pas):
    return _pas.copy()


@pytest.fixture(scope="module")
def _air(_airway):
    adata = _airway[:, _airway.layers["counts"].sum(axis=0) >= 2000].copy()
    bk.pp.annotate_genes(adata)
    bk.pp.normalize(adata, method="tmm", log=True, key_added="log_cpm")
    _de(adata, design="~ cell + dex", factor="dex", test="trt", ref="untrt", layer="log_cpm")
    return adata


@pytest.fixture
def air(_air):
    return _air.copy()


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _collections(ax) -> dict:
    return {c.get_gid(): c for c in ax.collections if c.get_gid()}


def _render(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _label_boxes(ax, renderer):
    return [Text.get_window_extent(t, renderer) for t in ax.texts]


def _assert_no_overlaps(ax):
    r = _render(getattr(ax.figure, "figure", None) or ax.figure)
    boxes = _label_boxes(ax, r)
    frame = ax.get_window_extent(r)
    for i, a in enumerate(boxes):
        assert frame.x0 - 0.5 <= a.x0 and a.x1 <= frame.x1 + 0.5 and frame.y0 - 0.5 <= a.y0 and a.y1 <= frame.y1 + 0.5
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def _hex(collection):
    return {to_hex(c).upper() for c in collection.get_facecolors()}


def _significant(df, padj, lfc):
    q, fc = df["padj"].to_numpy(float), df["log2FoldChange"].to_numpy(float)
    sig = (q < padj) & (np.abs(fc) >= lfc)
    return sig & (fc > 0), sig & (fc < 0)


def _top(df, mask, n):
    sub = df[mask].assign(_neg=-df["log2FoldChange"].abs(), _pos=np.arange(mask.sum()))
    return list(sub.sort_values(["padj", "pvalue", "_neg", "_pos"]).index[:n])


# ------------------------------------------------------------------------------------------------
# volcano and MA
# ------------------------------------------------------------------------------------------------


def test_volcano_limma(pas):
    before = pas.copy()
    df = bk.get.de_df(pas, "de")
    ax = bk.pl.volcano(pas, key="de", padj=0.05, lfc=1.0, n_labels=8)
    assert_adata_equal(pas, before)
    cols = _collections(ax)
    up, down = _significant(df, 0.05, 1.0)
    assert up.sum() > 50 and down.sum() > 50
    assert len(cols["up"].get_offsets()) == up.sum()
    assert len(cols["down"].get_offsets()) == down.sum()
    assert _hex(cols["up"]) == {UP} and _hex(cols["down"]) == {DOWN} and _hex(cols["not_significant"]) == {NOT_SIGNIFICANT}
    assert sum(len(c.get_offsets()) for c in cols.values()) == pas.n_vars  # limma: every gene has a p-value
    # the up points sit where the table says
    np.testing.assert_allclose(np.sort(cols["up"].get_offsets()[:, 0]), np.sort(df["log2FoldChange"][up]))
    np.testing.assert_allclose(np.sort(cols["up"].get_offsets()[:, 1]), np.sort(-np.log10(df["pvalue"][up])))
    # the labelled genes are the 8 with the smallest padj among the significant ones
    assert [t.get_text() for t in ax.texts] == _top(df, up | down, 8)
    # thresholds: vertical lines at +-lfc, a horizontal one at the largest p-value with padj < 0.05
    xs = sorted(line.get_xdata()[0] for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1])
    assert xs == [-1.0, 1.0]
    hy = [line.get_ydata()[0] for line in ax.lines if line.get_ydata()[0] == line.get_ydata()[1] and line.get_xdata()[0] == 0]
    assert np.isclose(hy[0], -np.log10(df["pvalue"][df["padj"] < 0.05].max()))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == [f"up ({up.sum()})", f"down ({down.sum()})"]
    _assert_no_overlaps(ax)


def test_volcano_deseq2_na_padj_grey(pasilla):
    pas = pasilla  # all genes: some have no p-value
    ref = pd.read_csv(FIXTURES / "pasilla" / "deseq2_wald_4sig.csv.gz", index_col=0).reindex(pas.var_names)
    write_de(pas, "deseq", {"treated_vs_untreated": ref}, {"method": "DESeq2 1.38.3 (R reference)"})
    df = bk.get.de_df(pas, "deseq")
    ax = bk.pl.volcano(pas, key="deseq", lfc=0, n_labels=5)
    cols = _collections(ax)
    has_p = df["pvalue"].notna()
    na = has_p & df["padj"].isna()
    assert na.sum() > 1000
    assert len(cols["padj_na"].get_offsets()) == na.sum()
    assert _hex(cols["padj_na"]) == {UNTESTED}
    # genes without a p-value (all-zero counts, Cook's outliers) are not drawn
    assert sum(len(c.get_offsets()) for c in cols.values()) == has_p.sum() < pas.n_vars
    up, down = _significant(df, 0.05, 0.0)
    assert len(cols["up"].get_offsets()) == up.sum()
    assert [t.get_text() for t in ax.texts] == _top(df, up | down, 5)
    assert not [line for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1]]  # lfc=0: no vertical lines


def test_volcano_label_key_and_ax(air):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    df = bk.get.de_df(air, "de")
    out = bk.pl.volcano(air, key="de", label_key="symbol", n_labels=10, ax=axes[1])
    assert out is axes[1] and not axes[0].collections
    up, down = _significant(df, 0.05, 1.0)
    top = _top(df, up | down, 10)
    sym = air.var["symbol"].astype(object)
    expected = [str(sym[g]) if pd.notna(sym[g]) else g for g in top]
    assert [t.get_text() for t in out.texts] == expected
    assert "DUSP1" in expected  # the textbook dexamethasone-responsive gene
    _assert_no_overlaps(out)
    # a gene without a symbol is labelled by its id
    air.var.loc[top[0], "symbol"] = np.nan
    ax = bk.pl.volcano(air, key="de", label_key="symbol", n_labels=1)
    assert ax.texts[0].get_text() == top[0]


def test_ma_limma_uses_aveexpr(pas):
    df = bk.get.de_df(pas, "de")
    assert "baseMean" not in df.columns
    ax = bk.pl.ma(pas, key="de", n_labels=6)
    cols = _collections(ax)
    assert ax.get_xscale() == "linear" and "AveExpr" in ax.get_xlabel()
    assert sum(len(c.get_offsets()) for c in cols.values()) == pas.n_vars
    sig = df["padj"] < 0.05
    up = sig & (df["log2FoldChange"] > 0)
    np.testing.assert_allclose(np.sort(cols["up"].get_offsets()[:, 0]), np.sort(df["AveExpr"][up]))
    assert [t.get_text() for t in ax.texts] == _top(df, sig.to_numpy(), 6)
    _assert_no_overlaps(ax)


def test_ma_deseq2_uses_basemean(pas):
    df = bk.get.de_df(pas, "deseq")
    ax = bk.pl.ma(pas, key="deseq", padj=0.1, n_labels=10)
    cols = _collections(ax)
    assert ax.get_xscale() == "log" and "baseMean" in ax.get_xlabel()
    drawn = df["log2FoldChange"].notna() & (df["baseMean"] > 0)
    assert sum(len(c.get_offsets()) for c in cols.values()) == drawn.sum()
    na = drawn & df["padj"].isna()
    assert len(cols["padj_na"].get_offsets()) == na.sum() and _hex(cols["padj_na"]) == {UNTESTED}
    down = (df["padj"] < 0.1) & (df["log2FoldChange"] < 0)
    assert len(cols["down"].get_offsets()) == down.sum() and _hex(cols["down"]) == {DOWN}
    _assert_no_overlaps(ax)


def test_minimal_result_welch(pas):
    # only the four shared columns: volcano and the p-value histogram work, MA says what it needs
    ax = bk.pl.volcano(pas, key="welch", n_labels=3)
    assert sum(len(c.get_offsets()) for c in _collections(ax).values()) == np.isfinite(bk.get.de_df(pas, "welch")["pvalue"]).sum()
    bk.pl.pvalue_hist(pas, key="welch")
    with pytest.raises(KeyError, match="neither a 'baseMean' nor an 'AveExpr'"):
        bk.pl.ma(pas, key="welch")


def test_volcano_edge_cases(pas):
    df = bk.get.de_df(pas, "welch")
    # p-values of exactly 0 are drawn at the top as open triangles, not dropped
    zero = df.assign(pvalue=df["pvalue"].where(df["pvalue"] > 1e-4, 0.0))
    write_de(pas, "zero", {"t_vs_u": zero}, {"method": "toy"})
    n0 = int((zero["pvalue"] == 0).sum())
    assert n0 > 0
    ax = bk.pl.volcano(pas, key="zero", n_labels=0)
    drawn = np.vstack([c.get_offsets() for c in _collections(ax).values()])
    assert len(drawn) == np.isfinite(zero["pvalue"]).sum() and np.isfinite(drawn).all()
    top = -np.log10(zero["pvalue"][zero["pvalue"] > 0].min())
    triangles = [c for c in ax.collections if not c.get_gid()]
    assert len(triangles[0].get_offsets()) == n0 and np.allclose(triangles[0].get_offsets()[:, 1], top)
    # nothing significant: no labels, no horizontal threshold, all grey
    none = df.assign(padj=1.0)
    write_de(pas, "none", {"t_vs_u": none}, {"method": "toy"})
    ax = bk.pl.volcano(pas, key="none", n_labels=10)
    assert set(_collections(ax)) == {"not_significant"} and not ax.texts
    assert all(line.get_xdata()[0] == line.get_xdata()[1] for line in ax.lines)
    # a one-gene heatmap draws without a gene dendrogram
    fig = bk.pl.heatmap(pas, var_names=[pas.var_names[0]], layer="log_cpm")
    labels = {a.get_label() for a in fig.axes}
    assert "dendrogram_cols" in labels and "dendrogram_rows" not in labels


def test_volcano_in_subfigure(pas):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), layout="constrained")
    left, right = fig.subfigures(1, 2)
    ax = bk.pl.volcano(pas, key="de", n_labels=6, ax=right.add_subplot())
    assert ax.figure is right and len(ax.texts) == 6
    _assert_no_overlaps(ax)


def test_multi_contrast_result(pas):
    df = bk.get.de_df(pas, "deseq")
    write_de(pas, "two", {"a_vs_b": df, "c_vs_d": df.assign(log2FoldChange=-df["log2FoldChange"])}, {"method": "toy"})
    with pytest.raises(ValueError, match="2 contrasts"):
        bk.pl.volcano(pas, key="two")
    ax = bk.pl.volcano(pas, key="two", contrast="c_vs_d", lfc=0, n_labels=0)
    assert ax.get_title() == "c_vs_d" and not ax.texts
    up, down = _significant(df, 0.05, 0)
    assert len(_collections(ax)["up"].get_offsets()) == down.sum()  # sign flipped


# ------------------------------------------------------------------------------------------------
# diagnostics
# ------------------------------------------------------------------------------------------------


def test_pvalue_hist(pas):
    df = bk.get.de_df(pas, "deseq")
    ax = bk.pl.pvalue_hist(pas, key="deseq")
    p = df["pvalue"].dropna().to_numpy()
    counts, _ = np.histogram(p, bins=np.linspace(0, 1, 21))
    np.testing.assert_array_equal([r.get_height() for r in ax.patches], counts)
    level = [line.get_ydata()[0] for line in ax.lines]
    assert np.isclose(level[0], (p > 0.5).sum() / 10)
    assert f"({p.size} genes)" in ax.get_title()


def test_rle(pas):
    before = pas.copy()
    ax = bk.pl.rle(pas, layer="log_cpm", groupby="condition")
    assert_adata_equal(pas, before)
    X = pas.layers["log_cpm"]
    X = X[:, X.max(0) > X.min(0)]
    R = X - np.median(X, axis=0)
    medians = [line.get_ydata()[0] for line in ax.lines if line.get_color() == "black"]
    np.testing.assert_allclose(medians, np.median(R, axis=1))
    assert len(ax.patches) == pas.n_obs
    colours = [to_hex(b.get_facecolor()) for b in ax.patches]
    treated = (pas.obs["condition"] == "treated").to_numpy()
    assert len(set(np.array(colours)[treated])) == 1 and len(set(np.array(colours)[~treated])) == 1
    assert colours[int(np.argmax(treated))] != colours[int(np.argmin(treated))]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(pas.obs_names)


def test_get_rle_counts_are_logged(pas):
    r = bk.get.rle(pas, layer="counts")
    C = np.log2(pas.layers["counts"] + 1.0)
    keep = C.max(0) > C.min(0)
    np.testing.assert_allclose(r.to_numpy(), C[:, keep] - np.median(C[:, keep], axis=0))
    r2 = bk.get.rle(pas, layer="counts", log=False)
    assert r2.to_numpy().max() > 100  # used as they are
    with pytest.raises(TypeError, match="log must be"):
        bk.get.rle(pas, layer="counts", log="yes")


def test_sample_distances(pas):
    before = pas.copy()
    fig = bk.pl.sample_distances(pas, layer="log_cpm", groupby=["condition", "type"])
    assert_adata_equal(pas, before)
    axes = {a.get_label(): a for a in fig.axes}
    assert {"heatmap", "colorbar", "dendrogram_rows", "dendrogram_cols", "annotation:condition", "annotation:type"} <= set(axes)
    X = pas.layers["log_cpm"]
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(bk.get.sample_distances(pas, layer="log_cpm").to_numpy(), D, atol=1e-9)
    shown = axes["heatmap"].get_images()[0].get_array()
    order = [list(pas.obs_names).index(t.get_text()) for t in axes["heatmap"].get_xticklabels()]
    assert shown.shape == (7, 7)
    np.testing.assert_allclose(shown, D[np.ix_(order, order)], atol=1e-9)
    assert [t.get_text() for t in axes["heatmap"].get_yticklabels()] == [pas.obs_names[i] for i in order]
    # the annotation bar follows the clustered order: one colour per condition
    bar = axes["annotation:condition"].get_images()[0].get_array()
    assert bar.shape == (1, 7, 3)
    cond = pas.obs["condition"].to_numpy()[order]
    treated = {tuple(bar[0, i]) for i in range(7) if cond[i] == "treated"}
    untreated = {tuple(bar[0, i]) for i in range(7) if cond[i] == "untreated"}
    assert len(treated) == len(untreated) == 1 and treated != untreated
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["condition", "treated", "untreated", "type", "paired_end", "single_read"]


def test_sample_distances_airway_groups_by_treatment(air):
    fig = bk.pl.sample_distances(air, layer="log_cpm", groupby="dex")
    heat = next(a for a in fig.axes if a.get_label() == "heatmap")
    order = [t.get_text() for t in heat.get_xticklabels()]
    dex = air.obs.loc[order, "dex"].tolist()
    # the top split of the dendrogram is the dexamethasone treatment: first 4 share a level
    assert len(set(dex[:4])) == 1 and len(set(dex[4:])) == 1


# ------------------------------------------------------------------------------------------------
# heatmap and expression
# ------------------------------------------------------------------------------------------------


def test_heatmap(pas):
    df = bk.get.de_df(pas, "de")
    genes = list(df.sort_values("padj").index[:25])
    before = pas.copy()
    fig = bk.pl.heatmap(pas, var_names=genes, layer="log_cpm", groupby="condition")
    assert_adata_equal(pas, before)
    axes = {a.get_label(): a for a in fig.axes}
    heat = axes["heatmap"]
    M = heat.get_images()[0].get_array()
    assert M.shape == (25, 7)
    rows = [t.get_text() for t in heat.get_yticklabels()]
    cols = [t.get_text() for t in heat.get_xticklabels()]
    assert sorted(rows) == sorted(genes) and rows != genes  # clustered
    sub = pd.DataFrame(pas[:, rows].layers["log_cpm"].T, index=rows, columns=pas.obs_names)[cols].to_numpy()
    z = (sub - sub.mean(1, keepdims=True)) / sub.std(1, ddof=1, keepdims=True)
    np.testing.assert_allclose(M, z, atol=1e-12)
    np.testing.assert_allclose(M.mean(1), 0, atol=1e-12)
    assert "dendrogram_rows" in axes and "dendrogram_cols" in axes and "annotation:condition" in axes
    assert heat.get_images()[0].get_clim() == pytest.approx((-np.abs(z).max(), np.abs(z).max()))


def test_heatmap_unclustered_raw_symbols(air):
    genes = ["DUSP1", "KLF15", "PER1", "FKBP5", "TSC22D3"]
    fig = bk.pl.heatmap(air, var_names=genes, gene_symbols="symbol", layer="log_cpm", zscore=False, dendrogram=False)
    axes = {a.get_label(): a for a in fig.axes}
    assert "dendrogram_rows" not in axes and not any(k.startswith("annotation") for k in axes)
    heat = axes["heatmap"]
    assert [t.get_text() for t in heat.get_yticklabels()] == genes
    assert [t.get_text() for t in heat.get_xticklabels()] == list(air.obs_names)
    ids = [air.var_names[list(air.var["symbol"].astype(str)).index(g)] for g in genes]
    np.testing.assert_allclose(heat.get_images()[0].get_array(), air[:, ids].layers["log_cpm"].T)
    # Ensembl ids in, symbols as row labels
    fig = bk.pl.heatmap(air, var_names=ids, layer="log_cpm", label_key="symbol", dendrogram=False)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == genes


@pytest.mark.parametrize("kind", ["box", "strip", "bar"])
def test_expression(air, kind):
    genes = ["DUSP1", "KLF15", "PER1"]
    before = air.copy()
    ax = bk.pl.expression(air, var_names=genes, gene_symbols="symbol", groupby="dex", layer="log_cpm", kind=kind)
    assert_adata_equal(air, before)
    assert [t.get_text() for t in ax.get_xticklabels()] == genes
    tidy = bk.get.expression(air, genes, layer="log_cpm", groupby="dex", gene_symbols="symbol")
    pts = _collections(ax)
    for g in genes:
        for lev in ("trt", "untrt"):
            vals = tidy.loc[(tidy["gene"] == g) & (tidy["dex"] == lev), "value"].to_numpy()
            got = pts[f"points:{g}:{lev}"].get_offsets()[:, 1]
            np.testing.assert_allclose(np.sort(got), np.sort(vals))
            if kind == "bar":
                bar = next(p for p in ax.patches if p.get_gid() == f"bar:{g}:{lev}")
                assert bar.get_height() == pytest.approx(vals.mean())
            if kind == "box":
                box = next(p for p in ax.patches if p.get_gid() == f"box:{g}:{lev}")
                assert box is not None
    # dexamethasone induces all three
    up = tidy.groupby(["gene", "dex"], observed=True)["value"].mean().unstack()
    assert (up["trt"] > up["untrt"] + 1).all()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["trt", "untrt"]


def test_get_expression(pas):
    genes = ["FBgn0039155", "FBgn0025111", "FBgn0003360"]
    df = bk.get.expression(pas, genes, layer="log_cpm", groupby=["condition", "type"])
    assert df.shape == (7 * 3, 5)
    assert list(df["gene"].cat.categories) == genes
    wide = df.pivot(index="sample", columns="gene", values="value").loc[pas.obs_names, genes]
    np.testing.assert_array_equal(wide.to_numpy(), pas[:, genes].layers["log_cpm"])
    assert (df.groupby("sample")["condition"].first().loc[pas.obs_names] == pas.obs["condition"]).all()
    one = bk.get.expression(pas, "FBgn0039155")
    np.testing.assert_array_equal(one["value"], pas[:, "FBgn0039155"].X.ravel())


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


def test_bad_input(pas, air):
    before = pas.copy()
    with pytest.raises(KeyError, match="no differential expression result under key 'nope'"):
        bk.pl.volcano(pas, key="nope")
    with pytest.raises(KeyError, match="contrast 'a_vs_b' not in result 'de'"):
        bk.pl.ma(pas, key="de", contrast="a_vs_b")
    with pytest.raises(KeyError, match="no differential expression"):
        bk.pl.pvalue_hist(pas, key="log_cpm")
    with pytest.raises(TypeError, match="key must be"):
        bk.pl.volcano(pas, key=None)
    with pytest.raises(ValueError, match=r"padj .* in \(0, 1\]"):
        bk.pl.volcano(pas, key="de", padj=5)
    with pytest.raises(ValueError, match="lfc must be >= 0"):
        bk.pl.volcano(pas, key="de", lfc=-1)
    with pytest.raises(ValueError, match="n_labels must be >= 0"):
        bk.pl.ma(pas, key="de", n_labels=-1)
    with pytest.raises(TypeError, match="n_labels must be a non-negative integer"):
        bk.pl.volcano(pas, key="de", n_labels=2.5)
    with pytest.raises(KeyError, match="label_key 'symbol' is not a column of adata.var"):
        bk.pl.volcano(pas, key="de", label_key="symbol")
    with pytest.raises(KeyError, match="groupby 'batch' is not a column of adata.obs; columns are: \\['condition', 'type'\\]"):
        bk.pl.sample_distances(pas, layer="log_cpm", groupby="batch")
    with pytest.raises(KeyError, match="groupby 'batch'"):
        bk.pl.rle(pas, layer="log_cpm", groupby="batch")
    with pytest.raises(KeyError, match="groupby 'batch'"):
        bk.pl.heatmap(pas, var_names=["FBgn0039155", "FBgn0025111"], layer="log_cpm", groupby=["condition", "batch"])
    with pytest.raises(KeyError, match="groupby 'batch'"):
        bk.pl.expression(pas, var_names=["FBgn0039155"], groupby="batch")
    with pytest.raises(TypeError, match="groupby must be the name of one obs column"):
        bk.pl.expression(pas, var_names=["FBgn0039155"], groupby=["condition", "type"])
    with pytest.raises(KeyError, match=r"layer 'vst' not found; available layers: 'counts', 'log_cpm'"):
        bk.pl.rle(pas, layer="vst")
    with pytest.raises(KeyError, match="layer 'vst' not found"):
        bk.pl.sample_distances(pas, layer="vst")
    with pytest.raises(KeyError, match=r"2 of var_names not found in adata.var_names: \['GENE1', 'GENE2'\]"):
        bk.pl.heatmap(pas, var_names=["FBgn0039155", "GENE1", "GENE2"], layer="log_cpm")
    with pytest.raises(KeyError, match="not found"):
        bk.pl.expression(pas, var_names=["GENE1"], groupby="condition")
    with pytest.raises(ValueError, match="duplicates"):
        bk.get.expression(pas, ["FBgn0039155", "FBgn0039155"])
    with pytest.raises(TypeError, match="non-empty list"):
        bk.get.expression(pas, [])
    with pytest.raises(ValueError, match=r"kind='violin' is not supported; choose one of \['box', 'strip', 'bar'\]"):
        bk.pl.expression(pas, var_names=["FBgn0039155"], groupby="condition", kind="violin")
    with pytest.raises(TypeError, match="zscore must be True or False"):
        bk.pl.heatmap(pas, var_names=["FBgn0039155"], zscore="yes")
    assert_adata_equal(pas, before)
    # symbols passed without gene_symbols: the error says where they are
    with pytest.raises(KeyError, match=r"they are in adata.var\['symbol'\]: pass gene_symbols='symbol'"):
        bk.pl.expression(air, var_names=["DUSP1"], groupby="dex")
    with pytest.raises(KeyError, match="gene_symbols 'gene' is not a column"):
        bk.get.expression(air, ["DUSP1"], gene_symbols="gene")
    nan = pas.copy()
    nan.layers["log_cpm"][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        bk.pl.sample_distances(nan, layer="log_cpm")
    with pytest.raises(ValueError, match="non-finite"):
        bk.pl.heatmap(nan, var_names=[nan.var_names[0], nan.var_names[1]], layer="log_cpm")
    bad = pas.copy()
    t = bk.get.de_df(bad, "welch")
    write_de(bad, "bad", {"x_vs_y": t.assign(pvalue=t["pvalue"] * 10)}, {"method": "toy"})
    with pytest.raises(ValueError, match="p-values outside"):
        bk.pl.pvalue_hist(bad, key="bad")


# ------------------------------------------------------------------------------------------------
# label placement
# ------------------------------------------------------------------------------------------------


def test_place_labels_crowded_is_deterministic_and_overlap_free():
    rng = np.random.default_rng(0)
    anchors = np.vstack([np.full((12, 2), 150.0), rng.uniform(100, 200, size=(12, 2))])
    sizes = np.column_stack([rng.uniform(20, 60, 24), np.full(24, 9.0)])
    bounds = (0.0, 0.0, 300.0, 300.0)
    obstacles = rng.uniform(0, 300, size=(2000, 2))
    c1, failed = place_labels(anchors, sizes, bounds, obstacles=obstacles)
    assert not failed.any()
    lo, hi = c1 - sizes / 2, c1 + sizes / 2
    assert (lo >= 0).all() and (hi <= 300).all()
    over = (lo[:, None, 0] < hi[None, :, 0]) & (lo[None, :, 0] < hi[:, None, 0])
    over &= (lo[:, None, 1] < hi[None, :, 1]) & (lo[None, :, 1] < hi[:, None, 1])
    np.fill_diagonal(over, False)
    assert not over.any()
    # no label covers a labelled point
    inside = (lo[:, None, 0] <= anchors[None, :, 0]) & (anchors[None, :, 0] <= hi[:, None, 0])
    inside &= (lo[:, None, 1] <= anchors[None, :, 1]) & (anchors[None, :, 1] <= hi[:, None, 1])
    assert not inside.any()
    again, _ = place_labels(anchors.copy(), sizes.copy(), bounds, obstacles=obstacles.copy())
    np.testing.assert_array_equal(c1, again)


def test_place_labels_reports_when_full():
    # 30 wide labels can not fit in a tiny box: they are reported, not silently overlapped
    anchors = np.full((30, 2), 10.0)
    sizes = np.full((30, 2), 15.0)
    _, failed = place_labels(anchors, sizes, (0.0, 0.0, 40.0, 40.0))
    assert failed.any() and not failed[0]


# ------------------------------------------------------------------------------------------------
# image comparison against committed baselines
# ------------------------------------------------------------------------------------------------


def _draw(name, pas):
    top = list(bk.get.de_df(pas, "de").sort_values("padj").index[:20])
    if name == "volcano":
        return bk.pl.volcano(pas, key="de", n_labels=8).figure
    if name == "ma":
        return bk.pl.ma(pas, key="deseq", n_labels=8).figure
    if name == "pvalue_hist":
        return bk.pl.pvalue_hist(pas, key="deseq").figure
    if name == "rle":
        return bk.pl.rle(pas, layer="log_cpm", groupby="condition").figure
    if name == "sample_distances":
        return bk.pl.sample_distances(pas, layer="log_cpm", groupby=["condition", "type"])
    if name == "heatmap":
        return bk.pl.heatmap(pas, var_names=top, layer="log_cpm", groupby="condition")
    if name == "expression":
        return bk.pl.expression(pas, var_names=top[:3], groupby="condition", layer="log_cpm").figure
    raise AssertionError(name)


IMAGES = ["volcano", "ma", "pvalue_hist", "rle", "sample_distances", "heatmap", "expression"]


@pytest.mark.parametrize("name", IMAGES)
def test_image(name, pas, tmp_path):
    expected = BASELINE / f"{name}.png"
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        fig = _draw(name, pas)
        actual = tmp_path / f"{name}.png"
        fig.savefig(actual)
    if REGEN:
        BASELINE.mkdir(exist_ok=True)
        expected.write_bytes(actual.read_bytes())
    assert expected.exists(), f"no baseline {expected}; run with BULKPY_REGEN_BASELINES=1 to create it"
    assert expected.stat().st_size < 50_000
    err = compare_images(str(expected), str(actual), tol=8)
    assert err is None, err


def test_image_comparison_detects_a_different_plot(pas, tmp_path):
    # the comparison is not vacuous: the RLE plot without its groups differs from the baseline
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        fig = bk.pl.rle(pas, layer="log_cpm").figure
        actual = tmp_path / "rle.png"
        fig.savefig(actual)
    if not (BASELINE / "rle.png").exists():
        pytest.skip("no rle baseline yet")
    err = compare_images(str(BASELINE / "rle.png"), str(actual), tol=8)
    assert err is not None


def test_gallery_page_matches_gallery_script():
    # docs/gallery.md shows, for every plot drawn by docs/_gallery.py, its code and its picture
    import re

    from conftest import ROOT

    script = (ROOT / "docs" / "_gallery.py").read_text()
    page = (ROOT / "docs" / "gallery.md").read_text()
    names = re.findall(r"# gallery-start (\w+)", script)
    assert names == re.findall(r"# gallery-end (\w+)", script)
    plots = [n for n in names if n != "setup"]
    assert set(plots) <= set(bk.pl.__all__) and len(plots) == 7
    assert re.findall(r":start-after: gallery-start (\w+)", page) == names
    assert re.findall(r"\]\(_static/gallery/(\w+)\.png\)", page) == plots
    assert "gallery" in (ROOT / "docs" / "index.md").read_text()
    assert "docs/_static/gallery/" in (ROOT / ".gitignore").read_text()
