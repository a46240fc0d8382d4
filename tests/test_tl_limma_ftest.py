"""Moderated F-tests of bk.tl.limma / bk.tl.voom (``ftest=``) against limma 3.68.5 (Bioconductor 3.23).

limma's ``topTable(fit, coef = 2:p)`` (the F statistic of ``classifyTestsF`` on the correlation of
the coefficients, ``df1`` its rank, ``df2 = df.prior + df.residual``) and ``topTable`` after
``contrasts.fit`` with several contrasts.

References: ``../shared/data/<dataset>/r_current/limma_voom_ftest_all_coefs.csv.gz``
(``refscripts/make_refs_current.R``; pasilla and airway, geuvadis85's design has one coefficient)
and, made by ``tests/fixtures/pasilla/r_current/make_limma_ftest_refs.R`` in the R 4.6.2 /
Bioconductor 3.23 chroot, trimmed copies (every 16th or 32nd gene, 12 significant digits) in
``tests/fixtures/<dataset>/r_current``: F-tests over contrasts on airway (three pairwise cell-line
differences of rank 2; dex with one cell-line difference, robust), pasilla's log-CPM with missing
values (unequal residual df and genes whose type coefficient is not estimable), and geuvadis85 with
a synthetic three-level group beside sex. Observed agreement: ~1e-12 relative (max over genes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, read_ref, roundtrip
from helpers import assert_adata_equal, rel_diff

import bulkpy as bk
from bulkpy._stats import limma as lin

DESIGNS = {"pasilla": "~ type + condition", "airway": "~ cell + dex", "geuvadis85": "~ sex + grp"}
# R's reference levels: condition relevelled to untreated, dex to untrt, factor levels sorted
LEVELS = {
    "condition": ["untreated", "treated"],
    "type": ["paired_end", "single_read"],
    "dex": ["untrt", "trt"],
    "cell": ["N052611", "N061011", "N080611", "N61311"],
    "sex": ["Female", "Male"],
    "grp": ["a", "b", "c"],
}


def _current(dataset: str, name: str, *, shared_first: bool = True) -> pd.DataFrame:
    paths = [FIXTURES / dataset / "r_current" / name]
    if shared_first:
        paths.insert(0, SHARED / dataset / "r_current" / name)
    for p in paths:
        if p.exists():
            return pd.read_csv(p, index_col=0)
    pytest.skip(f"limma 3.68 reference {dataset}/r_current/{name} not available in {SHARED} nor in {FIXTURES}")


def _r_levels(adata):
    for col, levels in LEVELS.items():
        if col in adata.obs.columns:
            adata.obs[col] = pd.Categorical(adata.obs[col].astype(str), categories=levels)
    return adata


def _prepared(request, dataset: str):
    """The genes edgeR's filterByExpr keeps with the design and TMM factors of the kept genes in
    ``obs["nf"]``: R's own (``edger_filter_by_expr``, ``edger_tmm_filtered``) when available, else
    bulkpy's (identical gene sets, factors within 1e-14)."""
    adata = _r_levels(request.getfixturevalue(dataset))
    if dataset == "geuvadis85":
        adata.obs["grp"] = pd.Categorical(np.array(["a", "b", "c"])[np.arange(adata.n_obs) % 3])
    try:
        if dataset == "geuvadis85":
            raise FileNotFoundError  # R's filter used ~ sex; this design adds grp
        keep = read_ref(dataset, "edger_filter_by_expr.csv.gz")["keep"].astype(bool)
        tmm = read_ref(dataset, "edger_tmm_filtered.csv.gz")
    except (FileNotFoundError, pytest.skip.Exception):
        bk.pp.filter_by_expr(adata, design=DESIGNS[dataset], subset=True)
        bk.pp.norm_factors(adata, key_added="nf")
        return adata
    ad = adata[:, adata.var_names.isin(keep.index[keep.to_numpy()])].copy()
    ad.obs["nf"] = tmm.loc[ad.obs_names, "norm_factor"].to_numpy()
    return ad


def _voom(ad, **kw):
    bk.tl.voom(ad, design=DESIGNS[_dataset_of(ad)], norm="none", norm_factors_key="nf", **kw)


def _dataset_of(ad) -> str:
    return "airway" if "dex" in ad.obs else "pasilla" if "condition" in ad.obs else "geuvadis85"


def _r_name(col: str) -> str:
    """R's coefficient name of a formulaic column: ``type[T.single_read]`` -> ``typesingle_read``."""
    if "[T." in col:
        var, level = col.split("[T.")
        return var + level.rstrip("]")
    return col


def _compare(df, ref, *, tol=1e-9, p99=1e-11):
    """F, p-values, padj, AveExpr and every log fold change column; the NA pattern exactly; the
    issue's user-level targets (|delta log10 p| p99 < 0.01, padj < 0.05 Jaccard >= 0.995)."""
    ours = df.loc[ref.index]
    pairs = {"stat": "F", "pvalue": "P.Value", "padj": "adj.P.Val", "AveExpr": "AveExpr"}
    for c in df.columns:
        if c.startswith("log2FoldChange_"):
            pairs[c] = _r_name(c.removeprefix("log2FoldChange_"))
    assert set(pairs.values()) == set(ref.columns) - {"df_prior"}
    for o, r in pairs.items():
        np.testing.assert_array_equal(ours[o].isna().to_numpy(), ref[r].isna().to_numpy(), err_msg=o)
        d = rel_diff(ours[o], ref[r])
        d = d[np.isfinite(d)]
        assert d.max() < tol and np.percentile(d, 99) < p99, f"{o}: max {d.max():.3g}, p99 {np.percentile(d, 99):.3g}"
    ok = ref["P.Value"].notna().to_numpy()
    dlp = np.abs(np.log10(ours["pvalue"].to_numpy()[ok]) - np.log10(ref["P.Value"].to_numpy()[ok]))
    assert np.percentile(dlp, 99) < 0.01
    a, b = ours["padj"].to_numpy() < 0.05, ref["adj.P.Val"].to_numpy() < 0.05
    assert (a | b).sum() == 0 or (a & b).sum() / (a | b).sum() >= 0.995


# --------------------------------------------------------------------------------------------
# parity with limma 3.68.5
# --------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway"])
def test_voom_ftest_all_coefs_matches_r(request, dataset):
    # topTable(eBayes(lmFit(voom(y, mm), mm)), coef = 2:ncol(mm)); observed ~1e-12 (max)
    ref = _current(dataset, "limma_voom_ftest_all_coefs.csv.gz")
    ad = _prepared(request, dataset)
    _voom(ad, ftest="all")
    assert list(ad.uns["voom"]["ftests"]) == ["F_all"] and len(ad.uns["voom"]["contrasts"]) == 0
    p = ad.uns["voom"]["params"]["ftests"]["F_all"]
    assert p["df1"] == (2 if dataset == "pasilla" else 4) and p["spec"] == "all"
    df = bk.get.de_df(ad, "voom")  # the run's only result
    assert list(df.columns[-4:]) == ["AveExpr", "stat", "pvalue", "padj"]
    _compare(df, ref)


@pytest.mark.parity
def test_voom_ftest_over_contrasts_matches_r(request):
    # airway: contrasts.fit(fit, three pairwise cell-line differences) -> eBayes -> topTable: three
    # contrasts of rank 2, so df1 = 2; observed ~1e-12
    ref = _current("airway", "limma_voom_ftest_cell_pairs.csv.gz", shared_first=False)
    ad = _prepared(request, "airway")
    pairs = [["cell", "N080611", "N061011"], ["cell", "N61311", "N080611"], ["cell", "N61311", "N061011"]]
    _voom(ad, contrast=["dex", "trt", "untrt"], ftest={"cell_pairs": pairs})
    assert list(ad.uns["voom"]["contrasts"]) == ["trt_vs_untrt"]
    assert list(ad.uns["voom"]["ftests"]) == ["cell_pairs"]
    assert ad.uns["voom"]["params"]["ftests"]["cell_pairs"]["df1"] == 2
    df = bk.get.de_df(ad, "voom", contrast="cell_pairs")
    _compare(df, ref)
    # two of the differences (the third is their sum) are the same hypothesis, but with voom's weights
    # limma's F is not invariant to the parametrisation (the t statistics use each gene's weighted
    # standard errors, their correlation the unweighted design's): close, not equal, as in limma
    _voom(ad, ftest=pairs[:2], key_added="two")
    two = bk.get.de_df(ad, "two")
    assert ad.uns["two"]["params"]["ftests"]["F_N080611_vs_N061011_N61311_vs_N080611"]["df1"] == 2
    assert 0.99 < np.corrcoef(np.log(two["stat"]), np.log(df["stat"]))[0, 1] < 1 - 1e-6
    # the cell term: all four cell lines, three coefficients
    _voom(ad, ftest="cell", key_added="cell")
    assert ad.uns["cell"]["params"]["ftests"]["F_cell"]["df1"] == 3


@pytest.mark.parity
def test_voom_ftest_robust_matches_r(request):
    # dex with one cell-line difference (non-orthogonal), eBayes(robust = TRUE): df.prior per gene
    ref = _current("airway", "limma_voom_ftest_dex_cell_robust.csv.gz", shared_first=False)
    ad = _prepared(request, "airway")
    _voom(ad, ftest=[["dex", "trt", "untrt"], ["cell", "N61311", "N080611"]], robust=True)
    assert list(ad.uns["voom"]["ftests"]) == ["F_trt_vs_untrt_N61311_vs_N080611"]
    df = bk.get.de_df(ad, "voom").rename(columns={"log2FoldChange_trt_vs_untrt": "log2FoldChange_dextrt"})
    _compare(df, ref)
    d = rel_diff(ad.var.loc[ref.index, "voom_df_prior"], ref["df_prior"])
    assert np.nanmax(d) < 1e-9


def _pasilla_na(request):
    """pasilla's log-CPM (prior count 3) with missing values as make_limma_ftest_refs.R: residual df
    1-4 across genes, and every 50th gene (from the 7th) without its paired-end samples."""
    ad = _prepared(request, "pasilla")
    counts = ad.layers["counts"]
    lib = counts.sum(axis=1) * ad.obs["nf"].to_numpy()
    # edgeR's cpm(log = TRUE, prior.count = 3): prior scaled by library size / mean library size
    prior = 3 * lib / lib.mean()
    E = np.log2((counts + prior[:, None]) / (lib + 2 * prior)[:, None] * 1e6)
    g = np.arange(1, ad.n_vars + 1)[None, :]
    j = np.arange(1, ad.n_obs + 1)[:, None]
    E[(5 * g + 2 * j) % 23 == 0] = np.nan
    pe = (ad.obs["type"] != "single_read").to_numpy()
    E[np.ix_(pe, np.arange(6, ad.n_vars, 50))] = np.nan
    ad.layers["na"] = E
    return ad


@pytest.mark.parity
@pytest.mark.parametrize(
    ("kw", "ref"),
    [
        ({}, "limma_na_ftest_all_coefs"),
        ({"trend": True}, "limma_na_trend_ftest_all_coefs"),
        ({"legacy": True}, "limma_na_legacy_ftest_all_coefs"),
    ],
)
def test_limma_ftest_missing_values_matches_r(request, kw, ref):
    # unequal residual df (legacy = NULL: fitFDistUnequalDF1) and non-estimable coefficients (F NA)
    tt = _current("pasilla", f"{ref}.csv.gz", shared_first=False)
    ad = _pasilla_na(request)
    bk.tl.limma(ad, design="~ type + condition", ftest="all", layer="na", **kw)
    df = bk.get.de_df(ad, "limma")
    assert df["stat"].isna().sum() == 162 and tt["F"].isna().any()
    assert ad.var["limma_df_residual"].nunique() > 1
    _compare(df, tt)


@pytest.mark.parity
def test_voom_ftest_factor_and_named_matches_r(request):
    # geuvadis85 (85 samples) with a synthetic three-level group: topTable(coef = 2:4) and
    # topTable(coef = c("grpb", "grpc"))
    all_ref = _current("geuvadis85", "limma_voom_grp_ftest_all_coefs.csv.gz", shared_first=False)
    grp_ref = _current("geuvadis85", "limma_voom_grp_ftest_grp.csv.gz", shared_first=False)
    ad = _prepared(request, "geuvadis85")
    _voom(ad, contrast=["sex", "Male", "Female"], ftest={"all_coefs": "all", "grp": "grp"})
    assert list(ad.uns["voom"]["ftests"]) == ["all_coefs", "grp"]
    _compare(bk.get.de_df(ad, "voom", contrast="all_coefs"), all_ref)
    _compare(bk.get.de_df(ad, "voom", contrast="grp"), grp_ref)
    # the t test in the same run is the ordinary one
    assert list(bk.get.de_df(ad, "voom").columns)[:3] == ["log2FoldChange", "lfcSE", "stat"]


# --------------------------------------------------------------------------------------------
# the statistic
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small(pasilla):
    ad = _r_levels(pasilla[:, pasilla.X.sum(axis=0) >= 100].copy())
    lib = ad.X.sum(axis=1, keepdims=True)
    ad.layers["logcpm"] = np.log2((ad.X + 0.5) / (lib + 1) * 1e6)
    return ad


def test_f_is_invariant_to_the_parametrisation(small):
    # the same hypothesis from coefficient names, numeric vectors and their sums
    kw = {"design": "~ type + condition", "layer": "logcpm"}
    bk.tl.limma(small, **kw, ftest={"names": ["type[T.single_read]", "condition[T.treated]"],
                                    "sums": [[0, 1, 0], [0, 1, 1]], "all": "all"})  # fmt: skip
    base = bk.get.de_df(small, "limma", contrast="names")
    for name in ("sums", "all"):
        other = bk.get.de_df(small, "limma", contrast=name)
        np.testing.assert_allclose(other["stat"], base["stat"], rtol=1e-10)
        np.testing.assert_allclose(other["pvalue"], base["pvalue"], rtol=1e-10)
    assert list(bk.get.de_df(small, "limma", contrast="sums").columns[:2]) == [
        "log2FoldChange_contrast1",
        "log2FoldChange_contrast2",
    ]


def test_f_of_orthogonal_coefficients_is_mean_of_t_squared():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(12), np.repeat([0, 1], 6), np.tile([0, 1], 6)])
    X[:, 1:] -= X[:, 1:].mean(axis=0)  # centred balanced factors: orthogonal coefficients
    E = rng.normal(size=(12, 200))
    fit = lin.contrasts_fit(lin.lm_fit(E, X), np.eye(3)[:, 1:])
    eb = lin.ebayes(fit)
    res = lin.moderated_f(fit, eb)
    np.testing.assert_allclose(res.F, (eb.t**2).mean(axis=0), rtol=1e-12)
    assert res.df1 == 2
    np.testing.assert_allclose(res.df2, 9 + eb.df_prior)
    # one coefficient: F = t^2 on (1, df2), the p-value of the t test when df_total is not capped
    one = lin.contrasts_fit(lin.lm_fit(E, X), np.eye(3)[:, [1]])
    r1 = lin.moderated_f(one, eb)
    np.testing.assert_allclose(r1.F, eb.t[0] ** 2, rtol=1e-12)
    np.testing.assert_allclose(r1.p_value, eb.p_value[0], rtol=1e-10)


def test_f_p_value_with_infinite_df2_is_chi_square():
    from scipy import stats

    from bulkpy._stats.limma.ebayes import f_p_value

    F = np.array([0.5, 3.0, 10.0])
    np.testing.assert_allclose(f_p_value(F, 2, np.inf), stats.chi2.sf(2 * F, 2), rtol=1e-14)
    np.testing.assert_allclose(
        f_p_value(F, 3, [5.0, np.inf, 7.0]),
        [stats.f.sf(0.5, 3, 5), stats.chi2.sf(9, 3), stats.f.sf(10, 3, 7)],
        rtol=1e-14,
    )


def test_rank_deficient_contrasts_use_their_rank(small):
    kw = {"design": "~ type + condition", "layer": "logcpm"}
    bk.tl.limma(small, **kw, ftest=[[0, 1, 0], [0, 0, 1], [0, 1, 1]], key_added="dep")
    bk.tl.limma(small, **kw, ftest="all", key_added="ind")
    assert small.uns["dep"]["params"]["ftests"]["F_contrast1_contrast2_contrast3"]["df1"] == 2
    a, b = bk.get.de_df(small, "dep"), bk.get.de_df(small, "ind")
    np.testing.assert_allclose(a["stat"], b["stat"], rtol=1e-9)
    np.testing.assert_allclose(a["pvalue"], b["pvalue"], rtol=1e-9)


# --------------------------------------------------------------------------------------------
# reading, plotting, storing
# --------------------------------------------------------------------------------------------


def test_de_df_and_de_stats_with_ftests(small):
    bk.tl.limma(small, design="~ type + condition", contrast=["condition", "treated", "untreated"],
                ftest="all", layer="logcpm")  # fmt: skip
    assert bk.get.de_df(small, "limma").columns[0] == "log2FoldChange"  # the single contrast
    f = bk.get.de_df(small, "limma", contrast="F_all")
    assert "log2FoldChange" not in f.columns and (f["stat"] >= 0).all()
    st = bk.get.de_stats(small, "limma")
    assert list(st.index) == ["treated_vs_untreated"]  # F-tests only when named
    st = bk.get.de_stats(small, "limma", contrasts=["treated_vs_untreated", "F_all"])
    assert list(st.index) == ["treated_vs_untreated", "F_all"]
    with pytest.raises(KeyError, match="F-tests: \\['F_all'\\]"):
        bk.get.de_df(small, "limma", contrast="nope")
    bk.tl.limma(small, design="~ type + condition", ftest="all", layer="logcpm", key_added="only_f")
    assert "stat" in bk.get.de_df(small, "only_f")
    with pytest.raises(ValueError, match="only the F-tests"):
        bk.get.de_stats(small, "only_f")


def test_plots_refuse_ftests_clearly(small):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bk.tl.limma(small, design="~ type + condition", contrast=["condition", "treated", "untreated"],
                ftest="all", layer="logcpm")  # fmt: skip
    for fn in (bk.pl.volcano, bk.pl.ma):
        with pytest.raises(ValueError, match="F-test of 2 coefficients .* no single log2 fold change"):
            fn(small, key="limma", contrast="F_all")
        ax = fn(small, key="limma", n_labels=0)  # the t test of the same run
        assert ax.get_title() == "treated_vs_untreated"
        plt.close("all")


def test_ftest_results_roundtrip_h5ad(small, tmp_h5ad):
    pairs = [["condition", "treated", "untreated"], "type[T.single_read]"]
    bk.tl.limma(small, design="~ type + condition", contrast="type[T.single_read]",
                ftest={"both": "all", "pairs": pairs}, layer="logcpm")  # fmt: skip
    bk.tl.limma(small, design="~ type + condition", ftest="all", layer="logcpm", key_added="f_only")
    back = roundtrip(small, tmp_h5ad)
    assert_adata_equal(back, small)
    pd.testing.assert_frame_equal(bk.get.de_df(back, "limma", contrast="both"), bk.get.de_df(small, "limma", contrast="both"))
    pd.testing.assert_frame_equal(bk.get.de_df(back, "f_only"), bk.get.de_df(small, "f_only"))
    assert back.uns["limma"]["params"]["ftests"]["both"]["df1"] == 2
    assert list(back.uns["limma"]["params"]["ftests"]["pairs"]["contrasts"]) == ["treated_vs_untreated", "type[T.single_read]"]
    pd.testing.assert_frame_equal(bk.get.de_df(back, "limma", contrast="pairs"), bk.get.de_df(small, "limma", contrast="pairs"))
    # re-running a key replaces its F-tests
    bk.tl.limma(small, design="~ type + condition", contrast="type[T.single_read]", layer="logcpm")
    assert "limma_both" not in small.varm and "limma_pairs" not in small.varm and "ftests" not in small.uns["limma"]


def test_ftest_on_a_subset_of_genes_follows_varm(small):
    bk.tl.limma(small, design="~ type + condition", ftest="all", layer="logcpm")
    sub = small[:, :50].copy()
    pd.testing.assert_frame_equal(bk.get.de_df(sub, "limma"), bk.get.de_df(small, "limma").iloc[:50])


# --------------------------------------------------------------------------------------------
# bad input: clear errors, the object untouched
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"ftest": "condition[T.treated]"}, ValueError, "single contrast, condition\\[T.treated\\].*use contrast="),
        ({"ftest": "condition"}, ValueError, "single contrast"),
        ({"ftest": ["condition", "treated", "untreated"]}, ValueError, "single contrast, treated_vs_untreated"),
        ({"ftest": [[0, 1, 0], [0, 2, 0]]}, ValueError, "of rank 1"),
        ({"ftest": ["type[T.single_read]", "type[T.single_read]"]}, ValueError, "is used twice"),
        ({"ftest": "all", "lfc": 1.0}, ValueError, "treat .* has no F-test"),
        ({"ftest": "batch"}, KeyError, "neither 'all', an obs column"),
        ({"ftest": {}}, ValueError, "empty dict"),
        ({"ftest": 3}, TypeError, "could not read ftest"),
        ({"ftest": {"a/b": "all"}}, ValueError, "contains '/'"),
        ({"contrast": "condition[T.treated]", "ftest": {"condition[T.treated]": "all"}}, ValueError, "used twice"),
        ({}, TypeError, "contrast or ftest is required"),
    ],
)
def test_bad_ftest_raises_and_leaves_adata_unchanged(small, kwargs, exc, match):
    before = small.copy()
    with pytest.raises(exc, match=match):
        bk.tl.limma(small, design="~ type + condition", layer="logcpm", **kwargs)
    assert_adata_equal(small, before)


def test_ftest_all_with_one_coefficient_is_an_error(small):
    with pytest.raises(ValueError, match="single contrast, condition\\[T.treated\\]"):
        bk.tl.voom(small, design="~ condition", ftest="all")
    with pytest.raises(ValueError, match="single contrast"):
        bk.tl.limma(small, design=small.obs[[]].assign(a=1.0, b=np.arange(7.0)).to_numpy(), ftest="all",
                    layer="logcpm")  # fmt: skip
    with pytest.raises(KeyError, match="obs column of the formula"):
        bk.tl.limma(small, design=np.column_stack([np.ones(7), np.arange(7.0), np.arange(7.0) ** 2]), ftest="type",
                    layer="logcpm")  # fmt: skip
