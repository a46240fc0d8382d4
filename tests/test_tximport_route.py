"""The salmon route into the count models, as the tximport vignette (tximport 1.40, Bioconductor
3.23) takes it: ``bk.io.read_quant`` → ``bk.tl.deseq`` (``DESeqDataSetFromTximport``: rounded
counts, average transcript lengths as normalisation factors), → edgeR with offsets from the
lengths (``scaleOffset``), and ``counts_from_abundance="lengthScaledTPM"`` → ``bk.tl.voom``.

Core tests use the compact fixture ``tests/fixtures/geuvadis6_quant`` (all 6 runs, the
transcripts of 280 genes). The ``parity`` tests read the full salmon files of
``../shared/data/geuvadis6_quant`` and compare with ``r_current/tximport_*`` of
``shared/refscripts/make_tximport_current.R`` (R 4.6.2, DESeq2 1.52.0, edgeR 4.10.7, limma 3.68.5):
a 3 vs 3 split of the six runs in the order of ``samples.txt`` (no biological contrast), so few
genes are significant and the comparison rests on the whole tables.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, roundtrip, shared_path
from helpers import assert_adata_equal, rel_diff

import bulkpy as bk
from bulkpy._stats import tximport as tx
from bulkpy._stats.deseq2.size_factors import deseq2_size_factors, estimate_norm_factors

DATASET = "geuvadis6_quant"
FIX = FIXTURES / DATASET
T2G = "tx2gene_gencode_v27_derived_from_rsem.csv.gz"
RUNS = pd.read_csv(FIX / "samples.txt", sep=" ")["run"].tolist()
DESIGN = "~ group"
CONTRAST = ["group", "B", "A"]
LOGGER = "bulkpy.tl._deseq"


def _read(root, mode="no"):
    files = {r: root / "salmon" / r / "quant.sf.gz" for r in RUNS}
    adata = bk.io.read_quant(files, type="salmon", tx2gene=root / T2G, counts_from_abundance=mode)
    adata.obs["group"] = pd.Categorical(["A"] * 3 + ["B"] * 3)  # the R script's split, by order
    return adata


@pytest.fixture(scope="module")
def _fixture_no():
    return _read(FIX)


@pytest.fixture
def fixture_no(_fixture_no):
    return _fixture_no.copy()


# ------------------------------------------------------------------------------------------
# DESeq2 on the compact fixture: what the adapter does with a read_quant object


def test_deseq_rounds_and_uses_lengths(fixture_no, caplog):
    adata = fixture_no
    counts = adata.layers["counts"].copy()
    assert (counts != np.round(counts)).any()  # salmon's estimated counts
    with caplog.at_level(logging.INFO, logger=LOGGER):
        bk.tl.deseq(adata, design=DESIGN, contrast=CONTRAST)
    assert "rounding the estimated counts in layer 'counts'" in caplog.text
    np.testing.assert_array_equal(adata.layers["counts"], counts)  # the input is not touched
    p = adata.uns["deseq"]["params"]
    n_changed = int((counts != np.round(counts)).sum())
    assert p["tximport"] == "no" and p["lengths"] == "layers['length']"
    assert p["counts_rounded"] is True and p["n_counts_rounded"] == n_changed
    assert p["size_factors"].startswith("ratio, with tximport lengths")
    # DESeq2's estimateNormFactors on round(counts) and the lengths; no size factors
    expected = estimate_norm_factors(np.round(counts), adata.layers["length"])[1]
    np.testing.assert_array_equal(adata.layers["deseq_norm_factors"], expected)
    assert "deseq_size_factors" not in adata.obs


def test_deseq_same_as_explicit_route(fixture_no):
    # read_quant → deseq equals the route spelled out: round, pp.size_factors with the lengths, deseq
    auto = fixture_no.copy()
    bk.tl.deseq(auto, design=DESIGN, contrast=CONTRAST)
    manual = fixture_no.copy()
    del manual.uns["tximport"]
    manual.layers["counts"] = np.round(manual.layers["counts"])
    bk.pp.size_factors(manual)
    bk.tl.deseq(manual, design=DESIGN, contrast=CONTRAST)
    assert manual.uns["deseq"]["params"]["size_factors"] == "layers['norm_factors']"
    pd.testing.assert_frame_equal(bk.get.de_df(auto, "deseq"), bk.get.de_df(manual, "deseq"))
    np.testing.assert_array_equal(auto.layers["deseq_norm_factors"], manual.layers["norm_factors"])
    # pp.size_factors on the read_quant object rounds too, so its factors are DESeq2's
    pp = fixture_no.copy()
    bk.pp.size_factors(pp)
    assert pp.uns["size_factors"]["params"]["counts_rounded"] is True
    np.testing.assert_array_equal(pp.layers["norm_factors"], auto.layers["deseq_norm_factors"])
    bk.tl.deseq(pp, design=DESIGN, contrast=CONTRAST)  # uses them, as DESeq() uses existing factors
    pd.testing.assert_frame_equal(bk.get.de_df(pp, "deseq"), bk.get.de_df(auto, "deseq"))
    assert pp.uns["deseq"]["params"]["lengths"] == "None"
    # an explicit layer of lengths on counts that did not come from read_quant: the same
    named = fixture_no.copy()
    del named.uns["tximport"]
    bk.tl.deseq(named, design=DESIGN, contrast=CONTRAST, lengths="length")
    pd.testing.assert_frame_equal(bk.get.de_df(named, "deseq"), bk.get.de_df(auto, "deseq"))


def test_deseq_lengths_none_and_counts_from_abundance(fixture_no, caplog):
    adata = fixture_no
    bk.tl.deseq(adata, design=DESIGN, contrast=CONTRAST, lengths=None)
    p = adata.uns["deseq"]["params"]
    assert p["counts_rounded"] is True and p["lengths"] == "None" and p["size_factors"] == "ratio"
    np.testing.assert_array_equal(
        adata.obs["deseq_size_factors"], deseq2_size_factors(np.round(adata.layers["counts"]))
    )
    assert "deseq_norm_factors" not in adata.layers
    # countsFromAbundance = "lengthScaledTPM": rounded, "using just counts from tximport"
    ls = _read(FIX, "lengthScaledTPM")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        bk.tl.deseq(ls, design=DESIGN, contrast=CONTRAST)
    assert "using just the counts from tximport" in caplog.text
    p = ls.uns["deseq"]["params"]
    assert p["tximport"] == "lengthScaledTPM" and p["counts_rounded"] is True and p["lengths"] == "None"
    np.testing.assert_array_equal(
        ls.obs["deseq_size_factors"], deseq2_size_factors(np.round(ls.layers["counts"]))
    )
    # pp.size_factors leaves the lengths out for these counts as well
    bk.pp.size_factors(ls)
    assert ls.uns["size_factors"]["params"]["lengths_used"] is False and "norm_factors" not in ls.layers


def test_deseq_tximport_roundtrip(fixture_no, tmp_h5ad):
    bk.tl.deseq(fixture_no, design=DESIGN, contrast=CONTRAST)
    back = roundtrip(fixture_no, tmp_h5ad)
    assert_adata_equal(fixture_no, back)
    p = back.uns["deseq"]["params"]
    assert p["tximport"] == "no" and bool(p["counts_rounded"]) is True and p["lengths"] == "layers['length']"


def _bad(adata, exc, match, **kw):
    before = adata.copy()
    with pytest.raises(exc, match=match):
        bk.tl.deseq(adata, design=DESIGN, contrast=CONTRAST, **kw)
    assert_adata_equal(adata, before)


def test_deseq_tximport_errors(fixture_no):
    # non-integer counts that did not come from read_quant are still an error, with the way out
    plain = fixture_no.copy()
    del plain.uns["tximport"]
    _bad(plain, ValueError, r"non-integer values.*lengths='length'")
    del plain.layers["length"]
    _bad(plain, ValueError, "non-integer values")
    # read_quant's marker applies to the counts it wrote, not to another layer
    other = fixture_no.copy()
    other.layers["est"] = other.layers["counts"].copy()
    _bad(other, ValueError, "non-integer values", layer="est")
    _bad(fixture_no, KeyError, "lengths='nope' is not a layer", lengths="nope")
    _bad(fixture_no, TypeError, "lengths must be", lengths=1.0)
    bad_len = fixture_no.copy()
    bad_len.layers["length"][0, 0] = 0.0
    _bad(bad_len, ValueError, "finite positive average transcript lengths")
    # counts from abundance already account for length: no lengths on top (tximport's vignette)
    _bad(_read(FIX, "scaledTPM"), ValueError, "would correct twice", lengths="length")


# ------------------------------------------------------------------------------------------
# edgeR's offsets from the lengths (the engine function; the adapter needs gene × sample offsets)


def test_edger_length_offset_is_scale_offset_of_vignette_matrix(fixture_no):
    counts, length = fixture_no.layers["counts"], fixture_no.layers["length"]
    off = tx.edger_length_offset(counts, length)
    lib = counts.sum(axis=1)
    # scaleOffset: each gene's offsets average to the mean log library size
    np.testing.assert_allclose(off.mean(axis=0), np.log(lib).mean(), rtol=1e-13)
    # and differ between samples by log(normMat) + log(eff.lib), as the vignette builds them
    nm = length / np.exp(np.log(length).mean(axis=0))
    nc = counts / nm
    from bulkpy._stats.normalization import calc_norm_factors

    eff = calc_norm_factors(nc)[0] * nc.sum(axis=1)
    want = np.log(nm) + np.log(eff)[:, None]
    np.testing.assert_allclose(off - off[:1], want - want[:1], rtol=0, atol=1e-12)
    # a per-sample offset (equal lengths) comes back as log effective library sizes, recentred
    flat = tx.edger_length_offset(counts, np.full_like(length, 1000.0))
    assert np.allclose(flat, flat[:, :1])


# ------------------------------------------------------------------------------------------
# parity with R on the full salmon files (../shared/data/geuvadis6_quant)


def _r_current(name):
    return pd.read_csv(shared_path(DATASET, "r_current", f"{name}.csv.gz"), index_col=0)


@pytest.fixture(scope="module")
def _full_no():
    return _read(shared_path(DATASET))


def _agreement(ours: pd.DataFrame, ref: pd.DataFrame, cols: dict[str, str]) -> dict:
    """Agreement on the genes of ``ref``: ``cols`` maps our column names to R's (lfc, p, padj)."""
    ours = ours.loc[ref.index]
    lfc = (ours[cols["lfc"]] - ref[cols["lfc_r"]]).abs().dropna()
    both = (ours[cols["p"]] > 0) & (ref[cols["p_r"]] > 0)
    lp = (np.log10(ours[cols["p"]][both]) - np.log10(ref[cols["p_r"]][both])).abs()
    s1 = set(ours.index[ours[cols["padj"]] < 0.05])
    s2 = set(ref.index[ref[cols["padj_r"]] < 0.05])
    return {
        "lfc_p99": lfc.quantile(0.99),
        "lfc_max": lfc.max(),
        "log10p_p99": lp.quantile(0.99),
        "log10p_max": lp.max(),
        "jaccard": len(s1 & s2) / len(s1 | s2) if s1 | s2 else 1.0,
        "n_sig": (len(s1), len(s2)),
        "na": float(np.mean(ours[cols["padj"]].isna().to_numpy() == ref[cols["padj_r"]].isna().to_numpy())),
    }


@pytest.mark.parity
def test_deseq_from_tximport_matches_deseq2(_full_no):
    adata = _full_no.copy()
    bk.tl.deseq(adata, design=DESIGN, contrast=CONTRAST)
    # normalizationFactors(dds): measured max relative difference 6e-15
    nf = _r_current("tximport_deseq2_normalization_factors").loc[adata.var_names, adata.obs_names]
    assert rel_diff(adata.layers["deseq_norm_factors"], nf.to_numpy().T).max() < 1e-12
    ours, ref = bk.get.de_df(adata, "deseq"), _r_current("tximport_deseq2_wald")
    assert list(ref.index) == list(adata.var_names)
    for col in ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]:
        np.testing.assert_array_equal(ours[col].isna().to_numpy(), ref[col].isna().to_numpy(), err_msg=col)
        ok = ref[col].notna().to_numpy()
        rel = rel_diff(ours[col].to_numpy()[ok], ref[col].to_numpy()[ok])
        # measured 99th percentiles 4e-15 (baseMean) to 3e-10 (padj)
        assert np.quantile(rel, 0.99) < 1e-8, col
    cmp = _agreement(ours, ref, {"lfc": "log2FoldChange", "lfc_r": "log2FoldChange", "p": "pvalue",
                                 "p_r": "pvalue", "padj": "padj", "padj_r": "padj"})  # fmt: skip
    # one gene differs beyond 1e-8: ENSG00000278196.3 (betaIter 100: its IRLS does not converge,
    # DESeq2 refits it with optim's L-BFGS-B and stops at optim's tolerance; we solve to
    # convergence), log2FC 3.45878 vs 3.45899, p 0.13777 vs 0.13774
    assert cmp["lfc_max"] < 5e-4 and cmp["log10p_max"] < 1e-3
    assert cmp["lfc_p99"] < 1e-8 and cmp["log10p_p99"] < 1e-8
    assert cmp["jaccard"] == 1.0 and cmp["n_sig"][1] > 0 and cmp["na"] == 1.0


@pytest.mark.parity
def test_voom_on_length_scaled_tpm_matches_limma():
    # R: DGEList(txs$counts) → filterByExpr(ys, mm), keep.lib.sizes = FALSE → normLibSizes (TMM) →
    # voom(ys, mm) (limma 3.68: adaptive.span = TRUE) → lmFit → eBayes → topTable
    adata = _read(shared_path(DATASET), "lengthScaledTPM")
    bk.pp.filter_by_expr(adata, design=DESIGN, subset=True)
    bk.tl.voom(adata, design=DESIGN, contrast=CONTRAST)
    ref = _r_current("tximport_limma_voom_lstpm")
    assert sorted(ref.index) == sorted(adata.var_names)  # the same filterByExpr genes
    assert adata.uns["voom"]["params"]["adaptive_span"] is True
    ours = bk.get.de_df(adata, "voom")
    cmp = _agreement(ours, ref, {"lfc": "log2FoldChange", "lfc_r": "logFC", "p": "pvalue", "p_r": "P.Value",
                                 "padj": "padj", "padj_r": "adj.P.Val"})  # fmt: skip
    # measured: |ΔlogFC| max 6e-13, |Δlog10 p| max 3e-13; no gene at padj < 0.05 in either
    assert cmp["lfc_max"] < 1e-9 and cmp["log10p_max"] < 1e-9
    assert cmp["jaccard"] == 1.0 and cmp["na"] == 1.0
    o = ours.loc[ref.index]
    assert rel_diff(o["padj"], ref["adj.P.Val"]).max() < 1e-9
    assert rel_diff(o["AveExpr"], ref["AveExpr"]).max() < 1e-9


@pytest.mark.parity
def test_edger_length_offset_is_the_vignettes(_full_no):
    # edgeR route of the script: offsets from all genes (calcNormFactors on counts / normMat, then
    # scaleOffset), filterByExpr on the counts (lib sizes of all genes), estimateDisp, glmQLFit
    # (edgeR 4). This checks the offsets themselves through the fold changes (the whole route through
    # bk.tl.edger is tested in tests/test_tl_edger_routes.py): glmFit with
    # them (prior count 0.125, as edgeR's logFC) and one common dispersion of 0.05 instead of R's
    # trended ones reproduces R's logFC to a median of 2e-4 (99th pct 1e-2, the dispersions'
    # doing); per-sample offsets (log library sizes), i.e. ignoring the lengths, miss by 0.2.
    from bulkpy._stats.edger import nb

    adata = _full_no.copy()
    ref = _r_current("tximport_edger_qlf")
    bk.pp.filter_by_expr(adata, design=DESIGN)
    assert set(adata.var_names[adata.var["filter_by_expr"]]) == set(ref.index)  # 16,501 genes
    counts = adata.layers["counts"]
    off = tx.edger_length_offset(counts, adata.layers["length"])  # on all genes, as in R
    keep = adata.var_names.get_indexer(ref.index)
    y = np.ascontiguousarray(counts[:, keep].T)
    X = np.column_stack([np.ones(6), [0.0, 0, 0, 1, 1, 1]])
    lfc = {}
    for name, o in (("lengths", off[:, keep].T), ("lib_size", np.log(counts.sum(axis=1)))):
        coef, _, _ = nb.glm_fit(y, X, 0.05, o, prior_count=0.125)
        lfc[name] = np.abs(coef[:, 1] / np.log(2) - ref["logFC"].to_numpy())
    assert np.median(lfc["lengths"]) < 1e-3 and np.quantile(lfc["lengths"], 0.99) < 0.05
    assert np.median(lfc["lib_size"]) > 0.1
