"""Command line: ``bulkpy demo --out DIR`` and ``bulkpy report study.h5ad -o study.html`` (also
``python -m bulkpy ...``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _step(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def demo(out: Path) -> Path:
    """Run the pipeline that exists on bundled real data (pasilla) and write an h5ad and PNG figures."""
    import matplotlib

    matplotlib.use("Agg")
    import bulkpy as bk

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    adata = bk.datasets.pasilla()
    _step(f"loaded pasilla (Brooks et al. 2011): {adata.n_obs} samples x {adata.n_vars} genes, raw counts in layers['counts']", t0)

    bk.pp.qc_metrics(adata)
    lib = adata.obs["total_counts"]
    _step(f"QC metrics -> obs/var; library sizes {lib.min() / 1e6:.1f}M to {lib.max() / 1e6:.1f}M counts", t0)

    bk.pp.filter_by_expr(adata, design="~ type + condition")
    keep = adata.var["filter_by_expr"]
    _step(f"filterByExpr (design ~ type + condition): {int(keep.sum())} of {adata.n_vars} genes kept -> var['filter_by_expr']", t0)
    adata = adata[:, keep.to_numpy()].copy()

    bk.pp.size_factors(adata)
    _step("DESeq2 median-of-ratios size factors -> obs['size_factors']: "
          + ", ".join(f"{v:.2f}" for v in adata.obs["size_factors"]), t0)
    bk.pp.norm_factors(adata, method="TMM")
    _step("edgeR TMM normalisation factors -> obs['norm_factors']", t0)
    bk.pp.normalize(adata, method="cpm", log=True, key_added="log_cpm")
    _step("log-CPM (edgeR cpm(log=TRUE, prior.count=2)) -> layers['log_cpm']", t0)
    bk.pp.vst(adata, blind=True)
    _step("DESeq2 variance-stabilising transformation (blind) -> layers['vst']", t0)
    bk.tl.deseq(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"], shrink="normal")
    de = bk.get.de_df(adata, "deseq")
    n_up = int(((de["padj"] < 0.1) & (de["log2FoldChange"] > 0)).sum())
    n_down = int(((de["padj"] < 0.1) & (de["log2FoldChange"] < 0)).sum())
    _step(
        f"DESeq2 Wald test (~ type + condition, treated vs untreated): {n_up + n_down} genes with padj < 0.1 "
        f"({n_up} up, {n_down} down) -> varm['deseq_condition_treated_vs_untreated']",
        t0,
    )

    figs = {}
    figs["qc.png"] = bk.pl.qc(adata, groupby="condition")
    figs["pca_vst.png"] = bk.pl.pca(adata, layer="vst", color="condition").figure
    figs["sample_distances_vst.png"] = bk.pl.sample_distances(adata, layer="vst", groupby="condition")
    figs["rle_log_cpm.png"] = bk.pl.rle(adata, layer="log_cpm", groupby="condition").figure
    figs["volcano_deseq.png"] = bk.pl.volcano(adata, key="deseq").figure
    figs["ma_deseq.png"] = bk.pl.ma(adata, key="deseq").figure
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=120)
        _step(f"figure -> {out / name}", t0)

    path = out / "pasilla_bulkpy.h5ad"
    adata.write_h5ad(path)
    _step(f"AnnData with every result and its parameters -> {path}", t0)
    print(adata)
    report = bk.io.write_report(adata, out / "pasilla_report.html", title="pasilla: DESeq2 treated vs untreated")
    _step(f"study report (one self-contained HTML file) -> {report}", t0)

    # pathways need human gene sets: the same DE on airway (human), then GSEA with bundled Reactome
    air = bk.datasets.airway()
    bk.pp.filter_by_expr(air, design="~ cell + dex", subset=True)
    bk.pp.annotate_genes(air)
    bk.tl.deseq(air, design="~ cell + dex", contrast=["dex", "trt", "untrt"])
    _step(f"airway (Himes et al. 2014): {air.n_obs} samples x {air.n_vars} genes after filterByExpr; "
          "DESeq2 Wald test dex trt vs untrt -> varm['deseq_dex_trt_vs_untrt']", t0)
    bk.tl.gsea(air, key="deseq", gene_sets=bk.datasets.reactome(), gene_symbols="symbol", seed=0)
    res = bk.get.enrichment(air, "gsea_deseq")
    top = res.sort_values("padj").head(3)
    _step(f"GSEA (fgsea multilevel) on the Wald statistic, Reactome: {len(res)} sets tested, "
          f"{int((res['padj'] < 0.05).sum())} with padj < 0.05 -> uns['gsea_deseq']; top: "
          + "; ".join(f"{t} (NES {n:.2f})" for t, n in zip(top.index, top["NES"], strict=True)), t0)
    for name, fig in {
        "gsea_enrichment_airway.png": bk.pl.enrichment(air, key="gsea_deseq", n_terms=15).figure,
        "gsea_top_term_airway.png": bk.pl.gsea(air, key="gsea_deseq", term=str(top.index[0])),
    }.items():
        fig.savefig(out / name, dpi=120)
        _step(f"figure -> {out / name}", t0)
    air_path = out / "airway_bulkpy.h5ad"
    air.write_h5ad(air_path)
    _step(f"airway AnnData with DE and GSEA results -> {air_path}", t0)
    report = bk.io.write_report(air, out / "airway_report.html", title="airway: DESeq2 dex trt vs untrt and GSEA")
    _step(f"study report -> {report}", t0)
    return path


def report(h5ad: Path, out: Path | None, *, title: str | None = None, groupby: str | None = None,
           layer: str | None = None, n_top: int = 100) -> Path:
    """Write the HTML study report of a saved AnnData (``bulkpy report study.h5ad -o study.html``)."""
    import matplotlib

    matplotlib.use("Agg")
    import anndata

    import bulkpy as bk
    from bulkpy.io._report import _check_target

    if not h5ad.is_file():
        raise FileNotFoundError(f"no such file: {str(h5ad)!r} (pass an .h5ad written by bulkpy or anndata)")
    out = h5ad.with_suffix(".html") if out is None else out
    _check_target(out)  # before reading a possibly large file
    adata = anndata.read_h5ad(h5ad)
    return bk.io.write_report(adata, out, title=title, groupby=groupby, layer=layer, n_top=n_top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulkpy", description="bulkpy: bulk expression analysis on AnnData")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the analysis pipeline on bundled real data (pasilla)")
    p_demo.add_argument("--out", type=Path, default=Path("bulkpy_demo"), help="output folder (created)")
    p_rep = sub.add_parser("report", help="write a self-contained HTML report of an analysed .h5ad")
    p_rep.add_argument("h5ad", type=Path, help="the .h5ad file (samples x genes, as saved by bulkpy)")
    p_rep.add_argument("-o", "--out", type=Path, default=None, help="HTML file to write (default: beside the h5ad)")
    p_rep.add_argument("--title", default=None, help="report title")
    p_rep.add_argument("--groupby", default=None, help="obs column colouring the samples (default: guessed)")
    p_rep.add_argument("--layer", default=None, help="log-scale layer for PCA and distances (default: vst, rlog, log*)")
    p_rep.add_argument("--n-top", type=int, default=100, help="genes per DE table (default 100)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out)
    elif args.command == "report":
        try:
            path = report(args.h5ad, args.out, title=args.title, groupby=args.groupby, layer=args.layer,
                          n_top=args.n_top)
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"bulkpy report: error: {err}", file=sys.stderr)
            return 2
        print(f"report -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
