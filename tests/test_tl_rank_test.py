"""bk.tl.rank_test (Wilcoxon rank-sum / Welch t per gene) against scipy.stats.

scipy's ``mannwhitneyu(method="asymptotic")`` is R's ``wilcox.test(exact = FALSE, correct = TRUE)``
(normal approximation with tie and continuity corrections), and ``ttest_ind(equal_var=False)`` is
R's ``t.test``; ``false_discovery_control`` is ``p.adjust(method = "BH")``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import roundtrip
from helpers import assert_adata_equal
from scipy import stats

import bulkpy as bk
from bulkpy._stats import rank


def _tmm(adata):
    bk.pp.normalize(adata, method="tmm")
    return adata


def _scipy_wilcoxon(a, b):
    res = stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True, alternative="two-sided", axis=0)
    return res.statistic, res.pvalue


@pytest.mark.parity
def test_wilcoxon_matches_scipy_geuvadis85(geuvadis85):
    ad = _tmm(geuvadis85)
    bk.tl.rank_test(ad, groupby="sex", group="Male", reference="Female", layer="tmm_cpm")
    df = bk.get.de_df(ad, "rank_test", contrast="Male_vs_Female")
    E = ad.layers["tmm_cpm"]
    male = (ad.obs["sex"] == "Male").to_numpy()
    u, p = _scipy_wilcoxon(E[male], E[~male])
    np.testing.assert_allclose(df["U"], u, rtol=0, atol=1e-9)
    np.testing.assert_allclose(df["pvalue"], p, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(df["padj"], stats.false_discovery_control(p), rtol=1e-12)
    # a signed z: positive where the males rank higher
    n1, n2 = male.sum(), (~male).sum()
    assert np.all(np.sign(df["stat"]) == np.sign(np.round(u - n1 * n2 / 2, 9)))
    np.testing.assert_allclose(df["log2FoldChange"], np.log2(E[male].mean(0) / E[~male].mean(0)), rtol=1e-12)
    assert (df["padj"] < 0.05).sum() > 5  # sex-linked genes
    assert ad.uns["rank_test"]["params"]["n_group"] == n1


@pytest.mark.parity
def test_welch_matches_scipy_geuvadis85(geuvadis85):
    ad = geuvadis85
    bk.pp.normalize(ad, method="tmm", log=True)
    bk.tl.rank_test(ad, groupby="sex", group="Male", reference="Female", layer="log_tmm_cpm", test="t-test")
    df = bk.get.de_df(ad, "rank_test")
    E = ad.layers["log_tmm_cpm"]
    male = (ad.obs["sex"] == "Male").to_numpy()
    ref = stats.ttest_ind(E[male], E[~male], equal_var=False, axis=0)
    np.testing.assert_allclose(df["stat"], ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(df["pvalue"], ref.pvalue, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(df["df"], ref.df, rtol=1e-10)
    # log scale read from the parameters bk.pp.normalize stored: the fold change is a difference
    assert ad.uns["rank_test"]["params"]["log_scale"] is True
    np.testing.assert_allclose(df["log2FoldChange"], E[male].mean(0) - E[~male].mean(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("test", ["wilcoxon", "t-test"])
def test_rank_test_matches_scipy_pasilla(pasilla, test):
    ad = _tmm(pasilla)
    bk.tl.rank_test(ad, groupby="condition", group="treated", reference="untreated", layer="tmm_cpm", test=test)
    df = bk.get.de_df(ad, "rank_test")
    E = ad.layers["tmm_cpm"]
    t = (ad.obs["condition"] == "treated").to_numpy()
    if test == "wilcoxon":
        u, p = _scipy_wilcoxon(E[t], E[~t])
        np.testing.assert_allclose(df["U"], u, atol=1e-9)
        np.testing.assert_allclose(df["pvalue"], p, rtol=1e-12)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's note on constant genes
            ref = stats.ttest_ind(E[t], E[~t], equal_var=False, axis=0)
        np.testing.assert_array_equal(np.isnan(df["pvalue"]), np.isnan(ref.pvalue))
        ok = ~np.isnan(ref.pvalue)
        np.testing.assert_allclose(df["pvalue"][ok], ref.pvalue[ok], rtol=1e-9)
    assert df.index.equals(ad.var_names)


def test_rank_test_engine_ties_and_constant_genes():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(9, 300)).astype(float)
    b = rng.integers(0, 5, size=(11, 300)).astype(float)
    a[:, 0] = b[:, 0] = 2.0  # all tied: z = 0, p = 1 (scipy: p = 1)
    res = rank.wilcoxon(a, b)
    u, p = _scipy_wilcoxon(a, b)
    np.testing.assert_allclose(res.pvalue, p, rtol=1e-12)
    np.testing.assert_allclose(res.extra, u)
    assert res.statistic[0] == 0 and res.pvalue[0] == 1
    # the tie term sum(t^3 - t) per column
    x = np.array([[1.0, 5], [1, 5], [2, 5], [3, 6]])
    np.testing.assert_array_equal(rank._tie_sums(x), [6, 24])


def test_rank_test_rest_copy_and_roundtrip(pasilla, tmp_h5ad):
    ad = _tmm(pasilla)
    ad.obs["lane"] = ["a", "a", "b", "b", "c", "c", "c"]
    before = ad.copy()
    res = bk.tl.rank_test(ad, groupby="lane", group="c", reference="rest", layer="tmm_cpm", copy=True)
    assert_adata_equal(ad, before)
    df = bk.get.de_df(res, "rank_test")
    assert list(res.uns["rank_test"]["contrasts"]) == ["c_vs_rest"]
    E = ad.layers["tmm_cpm"]
    c = (ad.obs["lane"] == "c").to_numpy()
    np.testing.assert_allclose(df["pvalue"], _scipy_wilcoxon(E[c], E[~c])[1], rtol=1e-12)
    back = roundtrip(res, tmp_h5ad)
    pd.testing.assert_frame_equal(bk.get.de_df(back, "rank_test"), df)
    assert back.uns["rank_test"]["params"]["reference"] == "rest"


def test_rank_test_log_scale_given_and_raw_count_warning(pasilla):
    ad = pasilla
    ad.layers["lc"] = np.log2(ad.layers["counts"] + 1.0)
    bk.tl.rank_test(ad, groupby="condition", group="treated", reference="untreated", layer="lc", log_scale=True)
    df = bk.get.de_df(ad, "rank_test")
    t = (ad.obs["condition"] == "treated").to_numpy()
    np.testing.assert_allclose(df["log2FoldChange"], ad.layers["lc"][t].mean(0) - ad.layers["lc"][~t].mean(0))
    with pytest.warns(UserWarning, match="raw counts"):
        bk.tl.rank_test(ad, groupby="condition", group="treated", reference="untreated", layer="counts")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"groupby": "condition", "group": "treated", "reference": "solo"}, ValueError, "at least 2 samples"),
        ({"groupby": "condition", "group": "treated", "reference": "placebo"}, ValueError, "not a level"),
        ({"groupby": "condition", "group": "treated", "reference": "treated"}, ValueError, "two different"),
        ({"groupby": "batch", "group": "treated", "reference": "untreated"}, KeyError, "not a column"),
        ({"groupby": "condition", "group": "treated", "reference": "untreated", "test": "ks"}, ValueError, "test="),
        ({"groupby": "condition", "group": "treated", "reference": "untreated", "layer": "nan"}, ValueError, "missing"),
        ({"groupby": "condition", "group": "treated", "reference": "untreated", "log_scale": 1}, TypeError, "log_scale"),
    ],
)
def test_rank_test_bad_input_leaves_adata_untouched(pasilla, kwargs, exc, match):
    ad = _tmm(pasilla)
    ad.obs["condition"] = ad.obs["condition"].astype(str)
    ad.obs.loc[ad.obs_names[0], "condition"] = "solo"
    nan = ad.layers["tmm_cpm"].copy()
    nan[0, 0] = np.nan
    ad.layers["nan"] = nan
    kwargs.setdefault("layer", "tmm_cpm")
    before = ad.copy()
    with pytest.raises(exc, match=match):
        bk.tl.rank_test(ad, **kwargs)
    assert_adata_equal(ad, before)
