"""Enrichment and dispersion plots (bk.pl.gsea, enrichment, ora_bar, dispersion) and the bk.get
tables behind them (enrichment, gsea_running_score, dispersions).

Real data: airway (genes with >= 500 counts), limma-trend on TMM log-CPM (dex, blocked by cell
line), Reactome sets of 15-300 genes matched through ``var["symbol"]``. Each plot is compared
with a PNG baseline in tests/baseline/ (``BULKPY_REGEN_BASELINES=1`` rewrites them).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.style  # the baselines are drawn under matplotlib.style.context("default")
import numpy as np
import pytest
from helpers import assert_adata_equal
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.testing.compare import compare_images

import bulkpy as bk

BASELINE = Path(__file__).resolve().parent / "baseline"
REGEN = os.environ.get("BULKPY_REGEN_BASELINES") == "1"
RC = {"font.family": ["DejaVu Sans"], "font.size": 10.0, "figure.dpi": 40, "savefig.dpi": 40,
      "text.hinting": "default", "axes.unicode_minus": True}  # fmt: skip


@pytest.fixture(scope="module")
def _air(_airway):
    adata = _airway[:, _airway.layers["counts"].sum(axis=0) >= 500].copy()
    bk.pp.annotate_genes(adata)
    bk.pp.normalize(adata, method="tmm", log=True, key_added="log_cpm")
    bk.tl.limma(adata, design="~ cell + dex", contrast=["dex", "trt", "untrt"], layer="log_cpm", trend=True,
                key_added="de")  # fmt: skip
    reactome = bk.datasets.reactome()
    sets = {k: v for k, v in sorted(reactome.items())[::4]}  # a quarter of Reactome keeps it fast
    bk.tl.gsea(adata, key="de", gene_sets=sets, gene_symbols="symbol", max_size=300, n_perm_simple=200)
    bk.tl.ora(adata, key="de", gene_sets=sets, gene_symbols="symbol", direction="both", max_size=300)
    return adata


@pytest.fixture(autouse=True)
def _default_style():
    """Figures take rcParams when created: draw every figure of this file under matplotlib's defaults,
    whatever other tests (or libraries they import) changed earlier in the session."""
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        yield


@pytest.fixture
def air(_air):
    return _air.copy()


def _compare(fig, name, tmp_path):
    with matplotlib.rc_context(RC):
        fig = getattr(fig, "figure", fig)
        fig = getattr(fig, "figure", None) or fig
        FigureCanvasAgg(fig)
        out = tmp_path / f"{name}.png"
        fig.savefig(out, dpi=40)
    base = BASELINE / f"{name}.png"
    if REGEN or not base.exists():
        base.write_bytes(out.read_bytes())
        if not REGEN:
            pytest.skip(f"baseline {base.name} written")
    assert base.stat().st_size < 40_000
    err = compare_images(str(base), str(out), tol=8)
    assert err is None, err


# ------------------------------------------------------------------------------------------------
# bk.get
# ------------------------------------------------------------------------------------------------


def test_get_enrichment_copy_and_errors(air):
    g = bk.get.enrichment(air, "gsea_de")
    assert list(g.columns) == ["ES", "NES", "pvalue", "padj", "log2err", "size", "leading_edge", "genes"]
    g.iloc[0, 0] = 99.0
    assert bk.get.enrichment(air, "gsea_de", contrast="trt_vs_untrt").iloc[0, 0] != 99.0
    o = bk.get.enrichment(air, "ora_de")
    assert (o["overlap"] <= o["size"]).all() and len(o) > 50
    with pytest.raises(KeyError, match="gsea_de"):
        bk.get.enrichment(air, "gsea_nope")
    with pytest.raises(KeyError, match="trt_vs_untrt"):
        bk.get.enrichment(air, "gsea_de", contrast="x_vs_y")
    with pytest.raises(TypeError):
        bk.get.enrichment(air, 3)


def test_running_score_extreme_is_stored_es(air):
    g = bk.get.enrichment(air, "gsea_de")
    terms = list(g.index[:15]) + list(g.index[-5:])
    for term in terms:
        rs = bk.get.gsea_running_score(air, "gsea_de", term)
        es = g.loc[term, "ES"]
        ext = rs["running_score"].max() if es > 0 else rs["running_score"].min()
        assert ext == es, term  # exactly: the same sums as the engine
        assert rs["hit"].sum() == g.loc[term, "size"]
        assert (np.diff(rs["stat"]) <= 0).all()
    # the leading edge genes are hits before the extreme (positive ES) in rank order
    term = g.index[(g["ES"] > 0).to_numpy()][0]
    rs = bk.get.gsea_running_score(air, "gsea_de", term)
    at = int(rs["running_score"].idxmax())
    sym = air.var["symbol"].reindex(rs["gene"][rs["hit"] & (rs["rank"] <= at)]).astype(str).tolist()
    assert sym == g.loc[term, "leading_edge"].split(";")


def test_running_score_errors(air):
    with pytest.raises(KeyError, match="not in result"):
        bk.get.gsea_running_score(air, "gsea_de", "no such set")
    with pytest.raises(ValueError, match="ora"):
        bk.get.gsea_running_score(air, "ora_de", bk.get.enrichment(air, "ora_de").index[0])


def test_get_dispersions_vst():
    adata = bk.datasets.pasilla()
    bk.pp.vst(adata)
    d = bk.get.dispersions(adata, "vst")
    np.testing.assert_array_equal(d["gene_wise"], adata.var["vst_gene_dispersion"])
    sf = adata.uns["vst"]["size_factors"]
    np.testing.assert_allclose(d["mean"], (adata.layers["counts"] / sf[:, None]).mean(0))
    assert d["final"].isna().all() and not d["outlier"].any()
    with pytest.raises(KeyError, match="vst"):
        bk.get.dispersions(adata, "nope")


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------


def test_pl_gsea(air, tmp_path):
    before = air.copy()
    g = bk.get.enrichment(air, "gsea_de")
    term = g.index[0]
    fig = bk.pl.gsea(air, key="gsea_de", term=term)
    assert_adata_equal(air, before)
    a1, a2, a3 = fig.axes
    line = next(x for x in a1.lines if x.get_gid() == "running_score")
    y = line.get_ydata()
    assert (y.max() if g.loc[term, "ES"] > 0 else y.min()) == g.loc[term, "ES"]
    hits = next(c for c in a2.collections if c.get_gid() == "hits")
    assert len(hits.get_segments()) == g.loc[term, "size"]
    assert term[:40] in a1.get_title()
    _compare(fig, "gsea", tmp_path)
    # into a given subplot
    from matplotlib.figure import Figure

    f = Figure()
    ax = f.subplots()
    assert bk.pl.gsea(air, key="gsea_de", term=term, ax=ax) is f and len(f.axes) == 3
    with pytest.raises(KeyError, match="gene_sets"):
        bk.pl.gsea(air, key="gsea_de", term=term, gene_sets={"x": ["A"]})


def test_pl_enrichment_dots(air, tmp_path):
    g = bk.get.enrichment(air, "gsea_de")
    ax = bk.pl.enrichment(air, key="gsea_de", n_terms=8)
    dots = next(c for c in ax.collections if c.get_gid() == "dots")
    assert len(dots.get_offsets()) == 8
    labels = [t.get_text() for t in ax.get_yticklabels()]
    top = g.sort_values("padj", kind="stable").index[:8]
    assert labels == [t if len(t) <= 45 else t[:44] + "…" for t in top]
    np.testing.assert_allclose(np.sort(dots.get_array()), np.sort(g.loc[top, "NES"]))
    _compare(ax, "enrichment", tmp_path)
    ax = bk.pl.enrichment(air, key="ora_de", n_terms=5, color="padj")
    assert len(next(c for c in ax.collections if c.get_gid() == "dots").get_offsets()) == 5
    with pytest.raises(ValueError, match="fold_enrichment"):
        bk.pl.enrichment(air, key="ora_de", color="NES")
    with pytest.raises(ValueError, match="n_terms"):
        bk.pl.enrichment(air, key="gsea_de", n_terms=0)
    with pytest.raises(KeyError):
        bk.pl.enrichment(air, key="de")


def test_pl_ora_bar(air, tmp_path):
    o = bk.get.enrichment(air, "ora_de").sort_values(["padj", "pvalue"], kind="stable")
    ax = bk.pl.ora_bar(air, key="ora_de", n_terms=6)
    assert len(ax.patches) == 6
    np.testing.assert_allclose([p.get_width() for p in ax.patches], -np.log10(o["padj"].iloc[:6]))
    assert [t.get_text() for t in ax.texts] == [f" {k}/{n}" for k, n in zip(o["overlap"][:6], o["size"][:6], strict=True)]
    _compare(ax, "ora_bar", tmp_path)
    with pytest.raises(ValueError, match="ora"):
        bk.pl.ora_bar(air, key="gsea_de")
    with pytest.raises(TypeError):
        bk.pl.ora_bar(air, key="ora_de", n_terms=2.5)


def test_pl_dispersion_vst(tmp_path):
    adata = bk.datasets.pasilla()
    adata = adata[:, adata.layers["counts"].sum(axis=0) >= 10].copy()
    bk.pp.vst(adata)
    ax = bk.pl.dispersion(adata, key="vst")
    cols = {c.get_gid(): c for c in ax.collections if c.get_gid()}
    d = bk.get.dispersions(adata, "vst")
    assert len(cols["gene_wise"].get_offsets()) + len(cols.get("gene_wise_floor", cols["gene_wise"]).get_offsets()) * (
        "gene_wise_floor" in cols) == len(d)  # fmt: skip
    assert len(cols["fitted"].get_offsets()) == len(d) and "final" not in cols
    assert ax.get_xscale() == ax.get_yscale() == "log"
    _compare(ax, "dispersion", tmp_path)
    with pytest.raises(KeyError):
        bk.pl.dispersion(adata, key="nope")


@pytest.mark.skipif(not hasattr(bk.tl, "deseq"), reason="bk.tl.deseq not available")
def test_pl_dispersion_deseq():
    adata = bk.datasets.pasilla()
    adata = adata[:, adata.layers["counts"].sum(axis=0) >= 10].copy()
    bk.tl.deseq(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    d = bk.get.dispersions(adata, "deseq")
    assert d["final"].notna().all() and d["outlier"].any()
    ax = bk.pl.dispersion(adata, key="deseq")
    cols = {c.get_gid(): c for c in ax.collections if c.get_gid()}
    assert len(cols["outliers"].get_offsets()) == d["outlier"].sum()
    assert len(cols["final"].get_offsets()) == len(d)
