"""bk.tl.camera and bk.tl.fry against limma 3.68.5 (Bioconductor 3.23).

References:

* ``tests/fixtures/airway/r_current/camera/`` (committed; ``make_camera_fixtures.R`` made them in
  the R 4.6 chroot): airway, voom on the filterByExpr/TMM genes with design ``~ cell + dex``, 32
  Reactome sets (CC BY 4.0) mapped to Ensembl ids; camera with the default correlation, estimated
  (``inter.gene.cor = NA``), ``allow.neg.cor``, ranks, ``trend.var``, a contrast vector and no
  weights; fry with every ``standardize``, ``robust`` + ``trend.var``, a contrast vector, no
  weights and a block with correlation 0.3.
* ``../shared/data/airway/r_current/limma_camera*_hallmark``, ``limma_fry_hallmark`` (parity):
  MSigDB Hallmark (test use only), symbols through ``limma_camera_symbols``, sets of >= 15 genes.

camera and fry are deterministic, so agreement is at rounding level (observed below).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, read_ref, roundtrip
from helpers import assert_adata_equal

import bulkpy as bk
from bulkpy._stats.limma import camera as cm

CAMFIX = FIXTURES / "airway" / "r_current" / "camera"
CONTRAST = ["dex", "trt", "untrt"]


def _voom_airway(airway, design="~ cell + dex", key_added="voom"):
    """airway as R's reference run it: filterByExpr genes, R's TMM factors, cell levels sorted and
    dex relevelled to untrt (the design's column order matters for weighted camera/fry)."""
    keep = read_ref("airway", "edger_filter_by_expr.csv.gz")["keep"].astype(bool)
    tmm = read_ref("airway", "edger_tmm_filtered.csv.gz")
    ad = airway[:, airway.var_names.isin(keep.index[keep.to_numpy()])].copy()
    ad.obs["r_nf"] = tmm.loc[ad.obs_names, "norm_factor"].to_numpy()
    ad.obs["cell"] = pd.Categorical(ad.obs["cell"].astype(str), categories=sorted(ad.obs["cell"].astype(str).unique()))
    ad.obs["dex"] = pd.Categorical(ad.obs["dex"].astype(str), categories=["untrt", "trt"])
    bk.tl.voom(ad, design=design, contrast=CONTRAST, norm="none", norm_factors_key="r_nf", key_added=key_added)
    return ad


@pytest.fixture(scope="module")
def _voomed():
    import bulkpy as bk

    ad = _voom_airway(bk.datasets.airway())
    bk.tl.voom(ad, design="~ dex", contrast=CONTRAST, norm="none", norm_factors_key="r_nf", key_added="voom_dex")
    return ad


@pytest.fixture
def voomed(_voomed):
    return _voomed.copy()


@pytest.fixture(scope="module")
def reactome():
    return bk.io.read_gmt(CAMFIX / "reactome_ensembl.gmt")


def _fixture(name):
    return pd.read_csv(CAMFIX / f"{name}.csv.gz", index_col=0)


def _compare(ours: pd.DataFrame, ref: pd.DataFrame, *, tol: float, mixed: bool = False) -> float:
    """Same sets, sizes and directions; max |log10 p| difference of every p-value column."""
    assert set(ours.index) == set(ref.index)
    o = ours.loc[ref.index]
    np.testing.assert_array_equal(o["size"].to_numpy(), ref["NGenes"].to_numpy())
    if "Direction" in ref.columns:
        np.testing.assert_array_equal(o["direction"].to_numpy(), ref["Direction"].to_numpy())
    pairs = [("pvalue", "PValue"), ("padj", "FDR")]
    if mixed:
        pairs += [("pvalue_mixed", "PValue.Mixed"), ("padj_mixed", "FDR.Mixed")]
    worst = 0.0
    for ours_col, r_col in pairs:
        d = np.abs(np.log10(o[ours_col].to_numpy(float)) - np.log10(ref[r_col].to_numpy(float)))
        worst = max(worst, float(d.max()))
    if "Correlation" in ref.columns:
        np.testing.assert_allclose(o["correlation"].to_numpy(float), ref["Correlation"].to_numpy(float), rtol=1e-8, atol=1e-12)
    assert worst < tol, f"max |dlog10 p| = {worst:.3g}"
    # the row order is limma's (p-value order; fry also by size and the mixed p-value)
    assert list(ours.index) == list(ref.index) or np.allclose(
        ours["pvalue"].to_numpy(float), ref.loc[ours.index, "PValue"].to_numpy(float)
    )
    return worst


# observed on this machine: max |dlog10 p| <= 3e-12 for every variant below
CAMERA_CASES = {
    "camera": {},
    "camera_estcor": {"inter_gene_cor": None},
    "camera_estcor_negcor": {"inter_gene_cor": None, "allow_neg_cor": True},
    "camera_ranks": {"use_ranks": True},
    "camera_ranks_estcor": {"use_ranks": True, "inter_gene_cor": None},
    "camera_trend": {"trend_var": True},
}


@pytest.mark.parametrize("name", sorted(CAMERA_CASES))
def test_camera_matches_limma(voomed, reactome, name):
    bk.tl.camera(voomed, reactome, key="voom", **CAMERA_CASES[name])
    ours = bk.get.enrichment(voomed, "camera_voom")
    _compare(ours, _fixture(name), tol=1e-9)
    p = voomed.uns["camera_voom"]["params"]
    assert p["limma_version"] == "3.68.5" and p["r_release"] == "Bioconductor 3.23"


FRY_CASES = {
    "fry": {},
    "fry_residual_sd": {"standardize": "residual.sd"},
    "fry_p2": {"standardize": "p2"},
    "fry_none": {"standardize": "none"},
    "fry_robust_trend": {"robust": True, "trend_var": True},
}


@pytest.mark.parametrize("name", sorted(FRY_CASES))
def test_fry_matches_limma(voomed, reactome, name):
    bk.tl.fry(voomed, reactome, key="voom", **FRY_CASES[name])
    ours = bk.get.enrichment(voomed, "fry_voom")
    _compare(ours, _fixture(name), tol=1e-9, mixed=True)


def test_contrast_vector_and_unweighted_match_limma(voomed, reactome):
    # a contrast vector (the design rotated by its Householder reflection, as R) and no weights
    given = {"layer": "voom_E", "design": "~ cell + dex"}
    vec = {"cells": [0, 1, -1, 0, 0]}
    bk.tl.camera(voomed, reactome, **given, weights="voom_weights", contrast=vec, inter_gene_cor=None, key_added="cv")
    _compare(bk.get.enrichment(voomed, "cv"), _fixture("camera_vector_estcor"), tol=1e-9)
    bk.tl.fry(voomed, reactome, **given, weights="voom_weights", contrast=vec, key_added="fv")
    _compare(bk.get.enrichment(voomed, "fv"), _fixture("fry_vector"), tol=1e-9, mixed=True)
    bk.tl.camera(voomed, reactome, **given, contrast=CONTRAST, inter_gene_cor=None, key_added="cu")
    _compare(bk.get.enrichment(voomed, "cu"), _fixture("camera_unweighted_estcor"), tol=1e-9)
    bk.tl.fry(voomed, reactome, **given, contrast=CONTRAST, key_added="fu")
    _compare(bk.get.enrichment(voomed, "fu"), _fixture("fry_unweighted"), tol=1e-9, mixed=True)


def test_fry_block_matches_limma(voomed, reactome):
    bk.tl.fry(voomed, reactome, key="voom_dex", block="cell", correlation=0.3)
    _compare(bk.get.enrichment(voomed, "fry_voom_dex"), _fixture("fry_block_cor0.3"), tol=1e-9, mixed=True)
    assert voomed.uns["fry_voom_dex"]["params"]["correlation"] == 0.3
    bk.tl.camera(voomed, reactome, key="voom_dex", inter_gene_cor=None)
    _compare(bk.get.enrichment(voomed, "camera_voom_dex"), _fixture("camera_dex_only_estcor"), tol=1e-9)


# --------------------------------------------------------------------------------------------
# Hallmark on the shared references (the parity targets)


def _hallmark(ad):
    gmt = SHARED / "genesets" / "h.all.v7.0.symbols.gmt"
    sym = SHARED / "airway" / "r_current" / "limma_camera_symbols.csv.gz"
    if not gmt.exists() or not sym.exists():
        pytest.skip(f"Hallmark GMT or symbol table not in {SHARED}")
    s = pd.read_csv(sym, index_col=0)["symbol"]
    ad.var["r_symbol"] = s.reindex(ad.var_names).to_numpy()
    return bk.io.read_gmt(gmt)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("func", "kw", "ref", "mixed"),
    [
        (bk.tl.camera, {}, "limma_camera_hallmark", False),
        (bk.tl.camera, {"inter_gene_cor": None}, "limma_camera_estcor_hallmark", False),
        (bk.tl.fry, {}, "limma_fry_hallmark", True),
    ],
)
def test_hallmark_matches_limma(voomed, func, kw, ref, mixed):
    hall = _hallmark(voomed)
    func(voomed, hall, key="voom", gene_symbols="r_symbol", min_size=15, key_added="h", **kw)
    r = pd.read_csv(SHARED / "airway" / "r_current" / f"{ref}.csv.gz", index_col=0)
    # observed: max |dlog10 p| 3e-14 (camera), 1.5e-13 (estimated correlation), 9e-13 (fry)
    worst = _compare(bk.get.enrichment(voomed, "h"), r, tol=1e-10, mixed=mixed)
    assert len(r) == 50 and worst < 1e-10


# --------------------------------------------------------------------------------------------
# slots, round trip, plots, errors


def test_roundtrip_and_plot(voomed, reactome, tmp_path):
    bk.tl.camera(voomed, reactome, key="voom")
    bk.tl.fry(voomed, reactome, key="voom")
    back = roundtrip(voomed, tmp_path / "a.h5ad")
    assert_adata_equal(voomed, back)
    for key in ("camera_voom", "fry_voom"):
        pd.testing.assert_frame_equal(bk.get.enrichment(back, key), bk.get.enrichment(voomed, key))
        p = back.uns[key]["params"]
        assert p["key"] == "voom" and list(p["contrasts"]) == list(voomed.uns["voom"]["contrasts"])
        assert p["r_columns"]["pvalue"] == "PValue"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = bk.pl.enrichment(back, key="fry_voom", n_terms=5)
    assert len(ax.get_yticklabels()) == 5
    plt.close("all")


def test_auto_key_copy_and_results_without_key(voomed, reactome):
    del voomed.uns["voom_dex"]
    out = bk.tl.camera(voomed, reactome, copy=True)
    assert "camera_voom" in out.uns and "camera_voom" not in voomed.uns
    # the model given directly equals the stored one
    bk.tl.camera(voomed, reactome, layer="voom_E", weights="voom_weights", design="~ cell + dex", contrast=CONTRAST)
    a, b = bk.get.enrichment(out, "camera_voom"), bk.get.enrichment(voomed, "camera")
    pd.testing.assert_frame_equal(a, b)


def test_limma_result(voomed, reactome):
    voomed.layers["lcpm"] = voomed.layers["voom_E"]
    bk.tl.limma(voomed, design="~ cell + dex", contrast=CONTRAST, layer="lcpm", key_added="lim")
    bk.tl.camera(voomed, reactome, key="lim", inter_gene_cor=None)
    _compare(bk.get.enrichment(voomed, "camera_lim"), _fixture("camera_unweighted_estcor"), tol=1e-9)


def test_errors_leave_the_object_unchanged(voomed, reactome, airway):
    before = voomed.copy()
    with pytest.raises(KeyError, match="no limma/voom result under key 'nope'"):
        bk.tl.camera(voomed, reactome, key="nope")
    with pytest.raises(ValueError, match="several limma/voom results"):
        bk.tl.fry(voomed, reactome)
    with pytest.raises(KeyError, match="contrast 'x' not in result 'voom'"):
        bk.tl.camera(voomed, reactome, key="voom", contrast="x")
    with pytest.raises(ValueError, match="min_size must be at least 2"):
        bk.tl.camera(voomed, reactome, key="voom", min_size=1)
    one = {"lonely": [voomed.var_names[0], "not_a_gene"]}
    with pytest.raises(ValueError, match="no gene set has between 2"):
        bk.tl.fry(voomed, one, key="voom")
    with pytest.raises(ValueError, match="layer= is read from the stored"):
        bk.tl.camera(voomed, reactome, key="voom", layer="voom_E")
    with pytest.raises(ValueError, match="either key= .* or design="):
        bk.tl.camera(voomed, reactome, key="voom", design="~ dex")
    with pytest.raises(ValueError, match="block= and correlation= go together"):
        bk.tl.fry(voomed, reactome, key="voom", block="cell")
    with pytest.raises(ValueError, match="standardize"):
        bk.tl.fry(voomed, reactome, key="voom", standardize="sd")
    with pytest.raises(ValueError, match="inter_gene_cor must be in"):
        bk.tl.camera(voomed, reactome, key="voom", inter_gene_cor=1.5)
    with pytest.raises(TypeError, match="gene_sets is required"):
        bk.tl.camera(voomed, key="voom")
    assert_adata_equal(voomed, before)
    with pytest.raises(KeyError, match="no limma/voom result"):
        bk.tl.camera(airway, reactome)


def test_camera_refuses_a_block_result(voomed, reactome):
    voomed.uns["voom_dex"]["params"]["block"] = "cell"
    voomed.uns["voom_dex"]["params"]["correlation"] = 0.3
    with pytest.raises(ValueError, match="camera has no block"):
        bk.tl.camera(voomed, reactome, key="voom_dex")
    bk.tl.fry(voomed, reactome, key="voom_dex")  # the stored block and correlation
    _compare(bk.get.enrichment(voomed, "fry_voom_dex"), _fixture("fry_block_cor0.3"), tol=1e-9, mixed=True)


def test_engine_blocks_and_rank_invariance(voomed):
    # gene blocks do not change the effects; the unweighted effects are orthonormal rotations
    E, W = voomed.layers["voom_E"], voomed.layers["voom_weights"]
    X = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    a = cm.lm_effects(E[:, :50], X, 1, weights=W[:, :50])
    b = cm.lm_effects(E[:, :50], X, 1, weights=W[:, :50], block_genes=7)
    np.testing.assert_array_equal(a, b)
    e = cm.lm_effects(E[:, :50], X, 1)
    np.testing.assert_allclose((e**2).sum(axis=1), ((E[:, :50] - E[:, :50].mean(axis=0)) ** 2).sum(axis=0), rtol=1e-12)
    z = cm.zscore_t_hill(np.array([-3.0, 0.0, 2.0]), 1e6)
    np.testing.assert_allclose(z, [-3.0, 0.0, 2.0], atol=1e-5)
