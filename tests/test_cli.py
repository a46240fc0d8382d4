"""The demo runs on bundled data and writes an h5ad plus figures that plain anndata/PNG readers open."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import pytest


@pytest.mark.slow
def test_demo(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "bulkpy", "demo", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "filterByExpr" in res.stdout
    h5 = out / "pasilla_bulkpy.h5ad"
    back = ad.read_h5ad(h5)
    assert back.n_obs == 7
    for layer in ("counts", "log_cpm", "vst"):
        assert layer in back.layers
    assert "size_factors" in back.obs
    air = ad.read_h5ad(out / "airway_bulkpy.h5ad")
    gsea = air.uns["gsea_deseq"]["dex_trt_vs_untrt"]
    assert len(gsea) > 500 and (gsea["padj"] < 0.05).any()
    assert "deseq_dex_trt_vs_untrt" in air.varm
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"volcano_deseq.png", "ma_deseq.png", "gsea_enrichment_airway.png"} <= set(pngs)
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("pasilla_report.html", "airway_report.html"):
        html = (out / name).read_text(encoding="utf-8")
        assert 'id="de-deseq' in html and "data:image/png;base64," in html
    assert 'id="enr-gsea-deseq"' in (out / "airway_report.html").read_text(encoding="utf-8")


def test_cli_report(tmp_path):
    """`bulkpy report x.h5ad -o x.html` on a saved object (params read back from h5ad), and clear errors."""
    import bulkpy as bk

    adata = bk.datasets.pasilla()[:, :300].copy()
    bk.pp.qc_metrics(adata)
    h5 = tmp_path / "study.h5ad"
    adata.write_h5ad(h5)
    res = subprocess.run([sys.executable, "-m", "bulkpy", "report", str(h5), "-o", str(tmp_path / "study.html"),
                          "--title", "my study"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "study.html").read_text(encoding="utf-8")
    assert "<title>my study</title>" in html and 'uns["qc_metrics"]["params"]' in html
    bad = subprocess.run([sys.executable, "-m", "bulkpy", "report", str(h5), "-o", str(tmp_path / "no" / "x.html")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "bulkpy", "report", str(tmp_path / "nope.h5ad")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_cli_requires_command():
    res = subprocess.run([sys.executable, "-m", "bulkpy"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "demo" in res.stderr
