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


def test_cli_requires_command():
    res = subprocess.run([sys.executable, "-m", "bulkpy"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "demo" in res.stderr
