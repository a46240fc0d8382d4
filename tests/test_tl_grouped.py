"""Differential expression per group (``split_by=``): every group equals the tool run by hand on its
subset, exactly; skipped groups; storage, round trip and readers; enrichment and plots per group.

Real data: the muscat subset of Kang et al. 2018 (tests/fixtures/kang2018_pbmc_subset, GPL-3, test
data only), pseudobulked per sample x cell type. Simulated data with known truth: tests/sim_pseudobulk.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED
from helpers import assert_adata_equal
from sim_pseudobulk import fdr_power, simulate

import bulkpy as bk

matplotlib.use("Agg")

KANG = "kang2018_muscat_example_sce.h5ad"
STIM = ["group_id", "stim", "ctrl"]


def _kang_path() -> Path:
    full = SHARED / "kang2018_pbmc_subset" / KANG
    return full if full.exists() else FIXTURES / "kang2018_pbmc_subset" / KANG


@pytest.fixture(scope="module")
def _pb():
    cells = ad.read_h5ad(_kang_path())
    pb = bk.pp.pseudobulk(cells, sample_key="sample_id", groups_key="cluster_id")
    pb.obs["donor"] = pd.Categorical(pb.obs["sample_id"].astype(str).str[-3:])
    bk.pp.normalize(pb, log=True)  # layers["log_cpm"] on all units, for limma and the rank test
    return pb


@pytest.fixture
def pb(_pb):
    return _pb.copy()


@pytest.fixture(scope="module")
def _sim():
    """Simulated: 6 donors, each with a control and a stimulated sample, 3 cell types."""
    cells = simulate(n_donors=6, n_cell_types=3, n_genes=600, mean_cells=60, seed=7)
    pb = bk.pp.pseudobulk(cells, sample_key="sample", groups_key="cell_type")
    bk.pp.normalize(pb, log=True)
    return pb


@pytest.fixture
def sim(_sim):
    return _sim.copy()


SIM_STIM = ["condition", "stim", "ctrl"]
# data, tool, its arguments, the key it writes
CASES = {
    "deseq": ("kang", bk.tl.deseq, {"design": "~ group_id", "contrast": STIM}, "deseq"),
    "deseq_paired": ("sim", bk.tl.deseq, {"design": "~ donor + condition", "contrast": SIM_STIM}, "deseq"),
    "edger": ("kang", bk.tl.edger, {"design": "~ group_id", "contrast": STIM}, "edger"),
    "edger_paired_lrt": ("kang", bk.tl.edger, {"design": "~ donor + group_id", "contrast": STIM, "test": "LRT"}, "edger"),
    "voom": ("kang", bk.tl.voom, {"design": "~ group_id", "contrast": STIM}, "voom"),
    "voom_block": ("sim", bk.tl.voom, {"design": "~ condition", "contrast": SIM_STIM, "block": "donor"}, "voom"),
    "limma_block": (
        "sim", bk.tl.limma, {"design": "~ condition", "contrast": SIM_STIM, "layer": "log_cpm", "block": "donor"}, "limma"
    ),
    "rank_test": (
        "kang", bk.tl.rank_test, {"groupby": "group_id", "group": "stim", "reference": "ctrl", "layer": "log_cpm"},
        "rank_test",
    ),
}


def _by_hand(pb, group, tool, kw, *, filt=True, split_by="cluster_id"):
    sub = pb[(pb.obs[split_by] == group).to_numpy()].copy()
    if filt:
        how = {"group": kw["groupby"]} if "groupby" in kw else {"design": kw["design"]}
        bk.pp.filter_by_expr(sub, **how, subset=True)
    tool(sub, **kw)
    return sub


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_group_equals_the_tool_on_its_subset(request, case):
    data, tool, kw, key = CASES[case]
    pb = request.getfixturevalue("pb" if data == "kang" else "sim")
    split_by = "cluster_id" if data == "kang" else "cell_type"
    tool(pb, **kw, split_by=split_by)
    entry = pb.uns[key]
    groups = list(entry["groups"])
    assert groups == [str(g) for g in pb.obs[split_by].cat.categories]
    assert dict(entry["skipped"]) == {}
    assert dict(entry["params"]["group_sizes"]) == pb.obs[split_by].value_counts().astype(int).to_dict()
    for g in groups:
        sub = _by_hand(pb, g, tool, kw, split_by=split_by)
        want = bk.get.de_df(sub, key)
        got = bk.get.de_df(pb, key, group=g)
        assert got.index.equals(pb.var_names)
        pd.testing.assert_frame_equal(got.loc[sub.var_names], want, check_exact=True)
        assert got.drop(index=sub.var_names).isna().all().all()
        assert entry["params"]["n_genes_tested"][g] == sub.n_vars
        # per-unit values (size factors, library sizes) and per-gene model columns, as the tool wrote them
        for c in [c for c in sub.obs.columns if c.startswith(f"{key}_")]:
            np.testing.assert_array_equal(pb.obs.loc[sub.obs_names, c].to_numpy(dtype=float), sub.obs[c].to_numpy(dtype=float))
        fit_cols = [c for c in sub.var.columns if c.startswith(f"{key}_")]
        if fit_cols:
            fit = pd.DataFrame(pb.varm[f"{key}_fit_{g}"]).loc[sub.var_names]
            for c in fit_cols:
                np.testing.assert_array_equal(fit[c[len(key) + 1 :]].to_numpy(dtype=float), sub.var[c].to_numpy(dtype=float))
        for layer in [k for k in sub.layers if k.startswith(f"{key}_")]:
            got_layer = pd.DataFrame(pb.layers[layer], index=pb.obs_names, columns=pb.var_names)
            np.testing.assert_array_equal(got_layer.loc[sub.obs_names, sub.var_names].to_numpy(), sub.layers[layer])
        assert dict(entry["fits"][g]["params"])["n_genes"] == sub.n_vars


def test_filter_groups_off_and_options(pb):
    kw = {"design": "~ group_id", "contrast": STIM}
    bk.tl.edger(pb, **kw, split_by="cluster_id", filter_groups=False)
    sub = _by_hand(pb, "B cells", bk.tl.edger, kw, filt=False)
    pd.testing.assert_frame_equal(bk.get.de_df(pb, "edger", group="B cells"), bk.get.de_df(sub, "edger"), check_exact=True)
    assert not pb.uns["edger"]["params"]["filter_groups"]
    bk.tl.edger(pb, **kw, split_by="cluster_id", filter_groups={"min_count": 20}, key_added="strict")
    sub = pb[(pb.obs["cluster_id"] == "B cells").to_numpy()].copy()
    bk.pp.filter_by_expr(sub, design="~ group_id", min_count=20, subset=True)
    bk.tl.edger(sub, **kw, key_added="strict")
    pd.testing.assert_frame_equal(bk.get.de_df(pb, "strict", group="B cells").loc[sub.var_names],
                                  bk.get.de_df(sub, "strict"), check_exact=True)  # fmt: skip


def test_groups_that_can_not_be_tested_are_skipped(pb):
    ct = pb.obs["cluster_id"].astype(str)
    # B cells: only the control units (the contrast's level is missing); CD8 T cells: a single unit
    drop = ((ct == "B cells") & (pb.obs["group_id"] == "stim")) | ((ct == "CD8 T cells") & (pb.obs_names != "ctrl101_CD8 T cells"))
    pb = pb[~drop.to_numpy()].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bk.tl.deseq(pb, design="~ group_id", contrast=STIM, split_by="cluster_id")
    entry = pb.uns["deseq"]
    skipped = dict(entry["skipped"])
    assert sorted(skipped) == ["B cells", "CD8 T cells"]
    assert "1 unit" in skipped["CD8 T cells"]
    assert "stim" in skipped["B cells"]
    assert "B cells" not in list(entry["groups"])
    assert dict(entry["params"]["group_sizes"])["B cells"] == 2
    with pytest.raises(KeyError, match="not tested"):
        bk.get.de_df(pb, "deseq", group="B cells")
    assert np.isnan(pb.obs.loc[ct[~drop].index[ct[~drop] == "B cells"], "deseq_size_factors"]).all()
    long = bk.get.de_df(pb, "deseq", group="all")
    assert sorted(long["group"].unique()) == ["CD14+ Monocytes", "CD4 T cells", "FCGR3A+ Monocytes"]


def test_a_failing_call_leaves_the_object_untouched(pb):
    before = pb.copy()
    with pytest.raises(ValueError, match="no group of 'cluster_id' could be tested"):
        bk.tl.deseq(pb, design="~ group_id", contrast=["group_id", "stim", "nope"], split_by="cluster_id")
    with pytest.raises(KeyError, match="split_by"):
        bk.tl.edger(pb, design="~ group_id", contrast=STIM, split_by="celltype")
    with pytest.raises(TypeError, match="filter_groups"):
        bk.tl.voom(pb, design="~ group_id", contrast=STIM, split_by="cluster_id", filter_groups="yes")
    with pytest.raises(ValueError, match="filter_groups"):
        bk.tl.voom(pb, design="~ group_id", contrast=STIM, filter_groups=False)
    with pytest.raises(ValueError, match="filter_by_expr does not take"):
        bk.tl.voom(pb, design="~ group_id", contrast=STIM, split_by="cluster_id", filter_groups={"x": 1})
    with pytest.raises(KeyError, match="layers"):
        bk.tl.edger(pb, design="~ group_id", contrast=STIM, layer="raw", split_by="cluster_id")
    assert_adata_equal(pb, before)


def test_level_named_all_is_refused(pb):
    pb.obs["ct2"] = pb.obs["cluster_id"].astype(str).replace({"B cells": "all"})
    before = pb.copy()
    with pytest.raises(ValueError, match="'all'"):
        bk.tl.edger(pb, design="~ group_id", contrast=STIM, split_by="ct2")
    assert_adata_equal(pb, before)


def test_copy_and_round_trip(pb, tmp_path):
    out = bk.tl.voom(pb, design="~ group_id", contrast=STIM, split_by="cluster_id", copy=True)
    assert "voom" not in pb.uns and out is not None
    path = tmp_path / "grouped.h5ad"
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(bk.get.de_df(back, "voom", group="all"), bk.get.de_df(out, "voom", group="all"))
    assert list(back.uns["voom"]["groups"]) == list(out.uns["voom"]["groups"])
    assert dict(back.uns["voom"]["params"]["group_sizes"]) == dict(out.uns["voom"]["params"]["group_sizes"])
    stats = bk.get.de_stats(out, "voom")
    assert stats.shape == (5, out.n_vars)
    # a second grouped run under the same key replaces the first, its per-group tables too
    bk.tl.voom(back, design="~ donor", contrast=["donor", "107", "101"], split_by="group_id", key_added="voom")
    assert list(back.uns["voom"]["groups"]) == ["ctrl", "stim"]
    assert not [k for k in back.varm if k.startswith("voom_") and "B cells" in k]


def test_long_table_and_readers(pb):
    bk.tl.edger(pb, design="~ group_id", contrast=STIM, split_by="cluster_id")
    long = bk.get.de_df(pb, "edger", group="all")
    assert list(long.columns[:4]) == ["group", "contrast", "gene", "log2FoldChange"]
    assert set(long["contrast"]) == {"stim_vs_ctrl"}
    for g, part in long.groupby("group"):
        one = bk.get.de_df(pb, "edger", group=g).dropna(how="all")
        np.testing.assert_array_equal(part["gene"].to_numpy(), one.index.to_numpy())
        np.testing.assert_array_equal(part["pvalue"].to_numpy(), one["pvalue"].to_numpy())
    two = bk.get.de_df(pb, "edger", group=["B cells", "CD4 T cells"])
    assert sorted(two["group"].unique()) == ["B cells", "CD4 T cells"]
    same = bk.get.de_df(pb, "edger", contrast="B cells:stim_vs_ctrl")
    pd.testing.assert_frame_equal(same, bk.get.de_df(pb, "edger", group="B cells", contrast="stim_vs_ctrl"))
    with pytest.raises(ValueError, match="pass contrast="):
        bk.get.de_df(pb, "edger")
    with pytest.raises(KeyError, match="groups"):
        bk.get.de_df(pb, "edger", group="NK cells")
    bk.tl.edger(pb, design="~ group_id", contrast=STIM, key_added="whole")
    with pytest.raises(ValueError, match="not split by group"):
        bk.get.de_df(pb, "whole", group="B cells")


def _sets(pb):
    rng = np.random.default_rng(1)
    genes = pb.var_names.to_numpy()
    sets = {f"random{i}": list(rng.choice(genes, 40, replace=False)) for i in range(6)}
    # interferon response genes of the Kang data (stimulated with IFN-beta)
    isg = [g for g in pb.var_names if g.upper().startswith(("ISG", "IFI", "IFIT", "MX", "OAS"))]
    sets["interferon"] = isg
    return sets


def test_gsea_and_ora_per_group(pb):
    bk.tl.deseq(pb, design="~ group_id", contrast=STIM, split_by="cluster_id")
    sets = _sets(pb)
    bk.tl.gsea(pb, key="deseq", gene_sets=sets, min_size=5, n_perm_simple=200)
    entry = pb.uns["gsea_deseq"]
    groups = list(pb.uns["deseq"]["groups"])
    assert sorted(c for c in entry if c != "params") == sorted(f"{g}:group_id_stim_vs_ctrl" for g in groups)
    # each group's GSEA equals GSEA on that group's ranking
    for g in groups[:2]:
        stat = bk.get.de_df(pb, "deseq", group=g)["stat"].dropna()
        want = bk.tl.gsea(stat, gene_sets=sets, min_size=5, n_perm_simple=200)
        pd.testing.assert_frame_equal(bk.get.enrichment(pb, "gsea_deseq", group=g), want)
    long = bk.get.enrichment(pb, "gsea_deseq", group="all")
    assert list(long.columns[:3]) == ["group", "contrast", "gene_set"] and set(long["group"]) == set(groups)
    bk.tl.ora(pb, key="deseq", gene_sets=sets, group=["B cells", "CD14+ Monocytes"], min_size=5, padj=0.1, direction="both")
    ora = pb.uns["ora_deseq"]
    assert sorted(c for c in ora if c != "params") == ["B cells:group_id_stim_vs_ctrl", "CD14+ Monocytes:group_id_stim_vs_ctrl"]
    assert str(ora["params"]["split_by"]) == "cluster_id"
    with pytest.raises(KeyError, match="groups"):
        bk.get.enrichment(pb, "ora_deseq", group="CD4 T cells")


def test_simulated_truth_fdr_and_power():
    cells = simulate(n_donors=6, n_cell_types=3, n_genes=1500, mean_cells=120, seed=3)
    pb = bk.pp.pseudobulk(cells, sample_key="sample", groups_key="cell_type")
    bk.tl.deseq(pb, design="~ donor + condition", contrast=["condition", "stim", "ctrl"], split_by="cell_type")
    for ct in pb.uns["deseq"]["groups"]:
        df = bk.get.de_df(pb, "deseq", group=ct)
        tested = df["padj"].notna().to_numpy()
        fdp, power, n = fdr_power((df["padj"] < 0.05).to_numpy(), cells.var[f"de_{ct}"].to_numpy() & tested)
        assert n > 20 and fdp < 0.15 and power > 0.3, (ct, fdp, power, n)


def test_plots_compare_groups(pb):
    bk.tl.deseq(pb, design="~ group_id", contrast=STIM, split_by="cluster_id")
    groups = list(pb.uns["deseq"]["groups"])
    ax = bk.pl.de_counts(pb, key="deseq", padj=0.1)
    up = [p.get_width() for p in ax.patches if p.get_gid() == "up"]
    down = [-p.get_width() for p in ax.patches if p.get_gid() == "down"]
    for g, u, d in zip(groups, up, down, strict=True):
        df = bk.get.de_df(pb, "deseq", group=g)
        sig = df["padj"] < 0.1
        assert (u, d) == ((sig & (df["log2FoldChange"] > 0)).sum(), (sig & (df["log2FoldChange"] < 0)).sum())
    ax = bk.pl.fold_changes(pb, key="deseq", n_genes=6)
    assert len(ax.get_yticklabels()) == 6 and [t.get_text() for t in ax.get_xticklabels()] == groups
    genes = list(pb.var_names[:3])
    ax = bk.pl.fold_changes(pb, key="deseq", genes=genes, kind="heatmap")
    img = next(a for a in ax.get_images() if a.get_gid() == "heatmap")
    want = np.array([[bk.get.de_df(pb, "deseq", group=g).loc[x, "log2FoldChange"] for g in groups] for x in genes])
    np.testing.assert_array_equal(np.ma.filled(img.get_array(), np.nan), want)
    ax = bk.pl.volcano(pb, key="deseq", group="CD14+ Monocytes", n_labels=0)
    assert ax.get_title() == "CD14+ Monocytes:group_id_stim_vs_ctrl"
    ax = bk.pl.ma(pb, key="deseq", group="B cells", n_labels=0)
    assert ax.get_title() == "B cells:group_id_stim_vs_ctrl"
    bk.tl.gsea(pb, key="deseq", gene_sets=_sets(pb), min_size=5, n_perm_simple=200)
    ax = bk.pl.enrichment_groups(pb, key="gsea_deseq", n_terms=4)
    assert len(ax.get_yticklabels()) == 4 and len(ax.get_xticklabels()) == len(groups)
    bk.tl.deseq(pb, design="~ group_id", contrast=STIM, key_added="whole")
    with pytest.raises(ValueError, match="not split by group"):
        bk.pl.de_counts(pb, key="whole")
    with pytest.raises(ValueError, match="kind"):
        bk.pl.fold_changes(pb, key="deseq", kind="bars")
