"""bk.tl.deseq with gene × sample normalisation factors (``layers["norm_factors"]``) that are not
scaled to a geometric mean of 1 per gene, against DESeq2 1.52's ``DESeq()`` after
``normalizationFactors(dds) <- nf``.

References: ``tests/fixtures/{pasilla,airway}/r_current/*_deseq2_normfactors_*`` made by
``tests/fixtures/pasilla/r_current/make_deseq2_normfactors_refs.R`` (R 4.6.2, DESeq2 1.52.0; see
``PROVENANCE_deseq2_normfactors.txt`` there). The factors are a closed formula (:func:`make_nf`,
rounded to 6 decimals so that numpy and R hold the same doubles): a smooth gene factor × a column
scale × a perturbation (``raw``), 10 × geometric-mean-1 factors (``scale10``) and the factors of
``test_tl_deseq_apeglm.py`` (``sin``). The last is where bulkpy used to differ by ~3e-4 in the
dispersions: two genes start the gene-wise line search at a tiny dispersion, where the log posterior
is flat in log(alpha) and the first Armijo step is decided by rounding; bulkpy's rough estimate
differed from R's in the 11th digit, DESeq2 took one step (and so refitted the gene on its grid)
while bulkpy took several (and kept the start), and the two genes moved the whole trend. The
starting values are now computed with R's arithmetic (:mod:`bulkpy._stats.deseq2.dispersion`) and
agree with R's bit for bit.

What is left is the line searches' own rounding (bulkpy's log posterior and its derivative are not
R's bit for bit): a handful of genes stop a step apart, up to a few 1e-6 in the MAP dispersion, as
with size factors; and genes with an extreme fold change (|log2FC| > 10, a group all zero) whose
IRLS stops on the deviance with the coefficient still drifting.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from helpers import rel_diff

import bulkpy as bk
from bulkpy._stats.deseq2 import dispersion as disp

# name: (dataset, factors, design, contrast, minReplicatesForReplace)
CASES = {
    "pasilla_raw": ("pasilla", "raw", "~ type + condition", ["condition", "treated", "untreated"], 7),
    "pasilla_scale10": ("pasilla", "scale10", "~ type + condition", ["condition", "treated", "untreated"], 7),
    "pasilla_sin": ("pasilla", "sin", "~ type + condition", ["condition", "treated", "untreated"], 7),
    "airway_raw": ("airway", "raw", "~ cell + dex", ["dex", "trt", "untrt"], 7),
    "airway_scale10": ("airway", "scale10", "~ cell + dex", ["dex", "trt", "untrt"], 7),
    "airway_dex_replace": ("airway", "raw", "~ dex", ["dex", "trt", "untrt"], 3),
}
LEVELS = {
    "pasilla": {"condition": ["untreated", "treated"], "type": ["paired_end", "single_read"]},
    "airway": {"dex": ["untrt", "trt"], "cell": ["N052611", "N061011", "N080611", "N61311"]},
}
DESIGNS = {
    "~ type + condition": lambda obs: [obs.type == "single_read", obs.condition == "treated"],
    "~ cell + dex": lambda obs: [obs.cell == c for c in LEVELS["airway"]["cell"][1:]] + [obs.dex == "trt"],
    "~ dex": lambda obs: [obs.dex == "trt"],
}
DISPERSIONS = ["dispGeneEst", "dispFit", "dispMAP", "dispersion"]
RESULTS = ["log2FoldChange", "lfcSE", "pvalue"]


def make_nf(n_samples: int, n_genes: int, case: str) -> np.ndarray:
    """The factors of the reference (samples × genes; gene i, sample j counted from 1)."""
    i = np.arange(1, n_genes + 1, dtype=np.float64)[None, :]
    j = np.arange(1, n_samples + 1, dtype=np.float64)[:, None]
    if case == "sin":
        nf = np.exp(0.3 * np.sin(1.7 * (j - 1) + 0.01 * (i - 1))) * (1 + (j - 1) / 10)
    else:
        nf = np.exp(1.5 * np.sin(2 * np.pi * i / n_genes)) * np.exp(0.4 * np.sin(1.3 * j))
        nf = nf * np.exp(0.25 * np.sin(1.7 * i + 2.9 * j))
        if case == "scale10":
            nf = 10 * nf / np.exp(np.log(nf).mean(axis=0, keepdims=True))
    return np.round(nf, 6)


def _prepared(adata, case):
    ds, factors, *_ = CASES[case]
    for col, levels in LEVELS[ds].items():
        adata.obs[col] = pd.Categorical(adata.obs[col].astype(str), categories=levels)
    adata.layers["norm_factors"] = make_nf(adata.n_obs, adata.n_vars, factors)
    return adata


def _reference(case):
    ds = CASES[case][0]
    stem = FIXTURES / ds / "r_current" / f"{ds}_deseq2_normfactors_{case.split('_', 1)[1]}"
    table = pd.read_csv(f"{stem}.csv.gz", index_col=0, float_precision="round_trip")
    starts = pd.read_csv(f"{stem}_starts.csv.gz", index_col=0, float_precision="round_trip")
    with gzip.open(f"{stem}_padj01.txt.gz", "rt") as fh:
        padj01 = np.array([int(v) - 1 for v in fh.read().split()], dtype=np.int64)
    scalars = {}
    with open(f"{stem}_scalars.txt") as fh:
        lines = fh.read().splitlines()
    for line in lines:
        key, *vals = line.split()
        scalars[key] = [int(v) - 1 for v in vals] if key == "gridRefit" else float(vals[0])
    return table, starts, padj01, scalars


_FITS: dict = {}


@pytest.fixture
def fitted(request, _pasilla, _airway):
    """``bk.tl.deseq`` of the case (run once per module; each test gets the same object)."""
    case = request.param
    if case not in _FITS:
        ds, _, design, contrast, min_rep = CASES[case]
        a = _prepared((_pasilla if ds == "pasilla" else _airway).copy(), case)
        bk.tl.deseq(a, design=design, contrast=contrast, min_replicates_for_replace=min_rep)
        _FITS[case] = a
    return case, _FITS[case]


def _table(adata, case):
    return bk.get.de_df(adata, "deseq", contrast="{}_{}_vs_{}".format(*CASES[case][3]))


@pytest.mark.parametrize("fitted", list(CASES), indirect=True)
def test_dispersions_match_deseq2(fitted):
    case, a = fitted
    ref, _, _, scalars = _reference(case)
    var = a.var.loc[ref.index]
    np.testing.assert_allclose(var["deseq_baseMean"], ref["baseMean"], rtol=1e-11)
    for col in DISPERSIONS:
        d = rel_diff(var[f"deseq_{col}"], ref[col])
        # the line searches stop within their tolerance of R's: p99 ~1e-10, a few genes ~1e-6
        assert np.quantile(d, 0.99) < 1e-8 and d.max() < 1e-5, (col, np.quantile(d, 0.99), d.max())
    trend = a.uns["deseq"]["params"]["trend"]
    assert trend["asymptDisp"] == pytest.approx(scalars["asymptDisp"], rel=1e-8)
    assert trend["extraPois"] == pytest.approx(scalars["extraPois"], rel=1e-8)
    assert a.uns["deseq"]["params"]["disp_prior_var"] == pytest.approx(scalars["dispPriorVar"], rel=1e-8)


@pytest.mark.parametrize("fitted", list(CASES), indirect=True)
def test_grid_refits_match_deseq2(fitted):
    # the genes DESeq2 refits on its grid after a one-step line search: the same genes, genome-wide,
    # with the same estimates (this is where the factors' scale used to matter)
    case, a = fitted
    ref, _, _, scalars = _reference(case)
    est, it = a.var["deseq_dispGeneEst"].to_numpy(), a.var["deseq_dispGeneIter"].to_numpy()
    ours = np.flatnonzero((it == 1) & (est > 1e-7))
    np.testing.assert_array_equal(ours, scalars["gridRefit"])
    genes = a.var_names[ours]
    assert rel_diff(est[ours], ref.loc[genes, "dispGeneEst"]).max(initial=0) < 1e-6


@pytest.mark.parametrize("fitted", list(CASES), indirect=True)
def test_results_match_deseq2(fitted):
    case, a = fitted
    ref, _, padj01, scalars = _reference(case)
    df = _table(a, case)
    got = df.loc[ref.index]
    for col in RESULTS:
        o, r = got[col].to_numpy(float), ref[col].to_numpy(float)
        np.testing.assert_array_equal(np.isnan(o), np.isnan(r))
        d = np.abs(o - r)[~np.isnan(r)] / np.maximum(np.abs(r[~np.isnan(r)]), 1.0)
        assert np.quantile(d, 0.99) < 1e-8, (col, np.quantile(d, 0.99))
    np.testing.assert_array_equal(got["padj"].isna(), ref["padj"].isna())
    # genome-wide: the genes with padj < 0.1 (Jaccard 1), the filter threshold, replaced counts
    sig = np.flatnonzero((df["padj"] < 0.1).to_numpy())
    np.testing.assert_array_equal(sig, padj01)
    name = "{}_{}_vs_{}".format(*CASES[case][3])
    assert a.uns["deseq"]["params"]["filter_threshold"][name] == pytest.approx(scalars["filterThreshold"], rel=1e-8)
    assert a.uns["deseq"]["params"]["n_genes_replaced"] == scalars["nReplaced"]
    replaced = ref["replace"].to_numpy(dtype=object)  # TRUE/FALSE, or empty where DESeq2 replaced nothing
    np.testing.assert_array_equal(a.var.loc[ref.index, "deseq_replace"].to_numpy(bool), replaced == True)  # noqa: E712


@pytest.mark.parametrize("case", list(CASES))
def test_starting_values_are_deseq2s(case, _pasilla, _airway):
    # the moments estimate's xim (mean(1 / colMeans(normalizationFactors))) and, for the genes whose
    # outcome hangs on them, roughDispEstimate and momentsDispEstimate: R's doubles
    ds, factors, design, *_ = CASES[case]
    _, starts, _, scalars = _reference(case)
    a = _prepared((_pasilla if ds == "pasilla" else _airway).copy(), case)
    y = np.asarray(a.layers["counts"], dtype=np.float64)
    nf = a.layers["norm_factors"]
    nz = y.sum(axis=0) > 0
    assert disp._xim(None, nf[:, nz]) == pytest.approx(scalars["xim"], rel=1e-15)
    if starts.empty:
        return
    X = np.column_stack([np.ones(a.n_obs), *DESIGNS[design](a.obs)]).astype(np.float64)
    norm = np.ascontiguousarray((y / nf).T[nz])
    rough = pd.Series(disp.rough_dispersion(norm, X), index=a.var_names[nz])
    moments = pd.Series(
        disp.moments_dispersion(disp.row_means_r(norm), disp.row_vars_r(norm), disp._xim(None, nf[:, nz])),
        index=a.var_names[nz],
    )
    np.testing.assert_allclose(rough[starts.index], starts["roughDisp"], rtol=1e-15)
    np.testing.assert_allclose(moments[starts.index], starts["momentsDisp"], rtol=1e-15)
