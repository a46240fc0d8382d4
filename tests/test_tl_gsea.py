"""bk.tl.gsea and the multilevel GSEA engine (bulkpy._stats.enrichment.gsea) against fgsea 1.31.6.

References: ``../shared/data/fgsea_example`` (fgsea's own example; a copy of its inputs and of
``r_reference/fgsea_multilevel.csv.gz`` is committed in ``tests/fixtures/fgsea_example``, see
PROVENANCE.txt there) and ``../shared/data/airway/r_reference/fgsea_{hallmark,reactome}_wald_stat``
(DESeq2 Wald statistic by symbol; made by ``refscripts/make_gsea_refs.R``: genes with a missing
statistic dropped, the first gene of a duplicated symbol kept, in the order of the DESeq2 table).

p-values are Monte-Carlo estimates (fgsea's with R's random numbers, ours with our own), so they
are compared in distribution: the median |log10 p - log10 p_fgsea| across sets. ES, set sizes and
leading edges are deterministic and compared exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, ref_path, roundtrip, shared_path
from helpers import assert_adata_equal
from hypothesis import given, settings
from hypothesis import strategies as hst

import bulkpy as bk
from bulkpy._slots import write_de
from bulkpy._stats.enrichment import gsea as engine


def _fgsea_input(name: str):
    full = SHARED / "fgsea_example" / name
    if full.exists():
        return full
    local = FIXTURES / "fgsea_example" / f"{name}.gz"
    if local.exists():
        return local
    pytest.skip(f"fgsea example {name} not available in {SHARED} nor in {FIXTURES}")


@pytest.fixture(scope="module")
def fgsea_example():
    rnk = pd.read_csv(_fgsea_input("naive.vs.th1.rnk"), sep="\t", dtype={"ID": str})
    stats = pd.Series(rnk["t"].to_numpy(), index=rnk["ID"].to_numpy())
    sets = bk.io.read_gmt(_fgsea_input("mouse.reactome.gmt"))
    return stats, sets


def _check_parity(ours: pd.DataFrame, ref: pd.DataFrame, *, nes_corr=0.999, p_median=0.1):
    ref = ref.set_index("pathway")
    assert set(ours.index) == set(ref.index), "tested sets differ from fgsea's"
    o = ours.loc[ref.index]
    np.testing.assert_array_equal(o["size"].to_numpy(), ref["size"].to_numpy())
    rel = np.abs(o["ES"] - ref["ES"]) / np.abs(ref["ES"])
    assert rel.max() < 1e-8, f"ES max relative difference {rel.max():.3g}"
    assert (o["leading_edge"] == ref["leadingEdge"].astype(str)).all(), "leading edges differ"
    assert np.corrcoef(o["NES"], ref["NES"])[0, 1] > nes_corr
    assert np.abs(o["NES"] - ref["NES"]).max() < 0.15
    d = np.abs(np.log10(o["pvalue"]) - np.log10(ref["pval"]))
    assert d.median() < p_median, f"median |log10 p difference| {d.median():.3g}"
    # the smallest p-values (multilevel regime, down to 1e-27) are estimated, not floored
    small = ref["pval"] < 1e-10
    if small.any():
        assert np.abs(np.log10(o.loc[small, "pvalue"]) - np.log10(ref.loc[small, "pval"])).median() < 0.5
    # padj is BH of our own p-values
    np.testing.assert_allclose(o["padj"], engine.p_adjust_bh(o["pvalue"].to_numpy()), rtol=1e-12)
    return d


@pytest.mark.parity
def test_parity_fgsea_example(fgsea_example):
    stats, sets = fgsea_example
    res = bk.tl.gsea(stats, gene_sets=sets, min_size=15, max_size=500, eps=0.0)
    ref = pd.read_csv(ref_path("fgsea_example", "fgsea_multilevel.csv.gz"))
    d = _check_parity(res, ref)
    assert np.percentile(d, 90) < 0.35
    assert res["log2err"].notna().mean() > 0.95
    # the two most significant sets are fgsea's (their order is within Monte-Carlo error)
    assert set(res.index[:2]) == {"5990979_Cell_Cycle,_Mitotic", "5990980_Cell_Cycle"}


@pytest.mark.parity
@pytest.mark.parametrize(
    ("gmt", "ref"),
    [
        ("h.all.v7.0.symbols.gmt", "fgsea_hallmark_wald_stat.csv.gz"),
        ("ReactomePathways_2024-09-18.gmt", "fgsea_reactome_wald_stat.csv.gz"),
    ],
)
def test_parity_airway_wald(gmt, ref):
    stat = pd.read_csv(ref_path("airway", "wald_stat_by_symbol.csv.gz"))
    assert stat["stat"].duplicated().sum() > 1000  # many ties: the order of tied genes must be R's
    ranks = pd.Series(stat["stat"].to_numpy(), index=stat["symbol"].astype(str).to_numpy())
    sets = bk.io.read_gmt(shared_path("genesets", gmt))
    res = bk.tl.gsea(ranks, gene_sets=sets, min_size=15, max_size=500)
    _check_parity(res, pd.read_csv(ref_path("airway", ref)))


# --------------------------------------------------------------------------------------------
# the engine


def _es_r(stats: np.ndarray, members: np.ndarray) -> tuple[float, list[int]]:
    """fgsea's calcGseaStat (R code, gseaParam 1) written out plainly: ES and leading edge."""
    order = np.argsort(-stats, kind="stable")
    r = np.abs(stats[order])
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    s = np.sort(inv[members]) + 1  # 1-based positions
    m, n = s.size, r.size
    nr = r[s - 1].sum()
    cum = np.cumsum(r[s - 1]) / nr if nr > 0 else np.arange(1, m + 1) / m
    tops = cum - (s - np.arange(1, m + 1)) / (n - m)
    bottoms = tops - (r[s - 1] / nr if nr > 0 else 1 / m)
    mx, mn = tops.max(), bottoms.min()
    if mx > -mn:
        return mx, list(order[s[: np.argmax(tops) + 1] - 1])
    if mx < -mn:
        return mn, list(order[s[np.argmin(bottoms) :] - 1][::-1])
    return 0.0, []


def test_enrichment_score_matches_fgsea_formula():
    rng = np.random.default_rng(3)
    stats = np.round(rng.normal(size=400), 1)  # ties and zeros
    stats[:5] = 0.0
    sets = [rng.choice(400, size=k, replace=False) for k in (3, 10, 25, 60, 120)]
    sets.append(np.argsort(-stats)[:15])  # strongly enriched at the top
    indptr = np.concatenate([[0], np.cumsum([s.size for s in sets])])
    res = engine.gsea(stats, indptr, np.concatenate(sets), n_perm_simple=200, seed=1)
    for i, s in enumerate(sets):
        es, le = _es_r(stats, s)
        assert res["es"][i] == pytest.approx(es, rel=1e-12, abs=1e-15)
        got = res["le_indices"][res["le_indptr"][i] : res["le_indptr"][i + 1]]
        assert list(got) == le
    assert res["pvalue"][-1] < 1e-4 and res["nes"][-1] > 1.5


@settings(max_examples=60, deadline=None)
@given(
    values=hst.lists(hst.integers(-5, 5) | hst.integers(-(2**40), 2**40), min_size=1, max_size=120),
    frac=hst.floats(0.0, 1.0),
)
def test_kth_smallest_is_the_sorted_value(values, frac):
    # the ruler's chunk ends are population medians taken by selection instead of a full sort
    a = np.array(values, dtype=np.int64)
    kth = min(a.size - 1, int(frac * a.size))
    got = engine._kth_smallest(a.copy(), kth)
    assert got == np.sort(a)[kth]



def test_null_calibration():
    """p-values of random sets are roughly uniform (the sampling and the NES scale are right)."""
    rng = np.random.default_rng(7)
    stats = rng.normal(size=3000)
    sets = [rng.choice(3000, size=40, replace=False) for _ in range(300)]
    indptr = np.arange(0, 40 * 301, 40)
    res = engine.gsea(stats, indptr, np.concatenate(sets), n_perm_simple=500, seed=2)
    frac = (res["pvalue"] < 0.1).mean()
    assert 0.04 < frac < 0.18
    assert np.abs(np.nanmean(np.abs(res["nes"])) - 1.0) < 0.15


def test_deterministic_and_thread_independent(fgsea_example, monkeypatch):
    stats, sets = fgsea_example
    sub = {k: sets[k] for k in list(sets)[::25]}
    a = bk.tl.gsea(stats, gene_sets=sub, seed=11)
    b = bk.tl.gsea(stats, gene_sets=sub, seed=11)
    pd.testing.assert_frame_equal(a, b)
    monkeypatch.setattr(engine, "_n_threads", lambda: 1)
    c = bk.tl.gsea(stats, gene_sets=sub, seed=11)
    pd.testing.assert_frame_equal(a, c)
    d = bk.tl.gsea(stats, gene_sets=sub, seed=12)
    pd.testing.assert_series_equal(a["ES"], d.loc[a.index, "ES"])
    assert not np.allclose(a["pvalue"], d.loc[a.index, "pvalue"])


def test_eps_floors_pvalues(fgsea_example):
    stats, sets = fgsea_example
    sub = {
        k: sets[k] for k in ("5990979_Cell_Cycle,_Mitotic", "5990980_Cell_Cycle", "1221633_Meiotic_Synapsis")
    }
    res = bk.tl.gsea(stats, gene_sets=sub, eps=1e-10)
    floored = res["pvalue"] == 1e-10
    assert floored.sum() == 2 and res.loc[floored, "log2err"].isna().all()
    assert res.loc["1221633_Meiotic_Synapsis", "pvalue"] > 0.1


# --------------------------------------------------------------------------------------------
# the AnnData adapter


@pytest.fixture
def de_adata(fgsea_example):
    """A DE result with two contrasts over fgsea's example genes (a few genes untested)."""
    stats, _ = fgsea_example
    import anndata as ad

    adata = ad.AnnData(
        X=np.zeros((2, stats.size), dtype=np.float32),
        obs=pd.DataFrame(index=["s1", "s2"]),
        var=pd.DataFrame(index=pd.Index(stats.index, dtype=object)),
    )
    adata.var["symbol"] = [f"G{g}" for g in stats.index]
    t = stats.to_numpy().copy()
    t2 = -t
    t[:3] = np.nan  # e.g. all-zero genes DESeq2 does not test
    tables = {}
    for name, st in (("th1_vs_naive", t), ("naive_vs_th1", t2)):
        tables[name] = pd.DataFrame(
            {
                "log2FoldChange": st / 10,
                "stat": st,
                "pvalue": np.full(st.size, 0.5),
                "padj": np.full(st.size, 0.5),
            },
            index=adata.var_names,
        )
    write_de(adata, "de", tables, {"method": "toy"})
    return adata


@pytest.fixture
def small_sets(fgsea_example):
    stats, sets = fgsea_example
    keep = ["1221633_Meiotic_Synapsis", "5991851_Mitotic_Prometaphase"] + list(sets)[100:400:15]
    return {k: sets[k] for k in keep if 15 <= stats.index.isin(sets[k]).sum() <= 120}


def test_anndata_contrasts_params_and_roundtrip(de_adata, small_sets, tmp_h5ad, fgsea_example):
    stats, _ = fgsea_example
    out = bk.tl.gsea(de_adata, gene_sets=small_sets, seed=3)
    assert out is None
    entry = de_adata.uns["gsea_de"]
    assert set(entry) == {"th1_vs_naive", "naive_vs_th1", "params"}
    a, b = entry["th1_vs_naive"], entry["naive_vs_th1"]
    assert list(a.columns) == ["ES", "NES", "pvalue", "padj", "log2err", "size", "leading_edge", "genes"]
    assert a.index.name == "gene_set"
    # NaN statistics are left out of the ranking; the flipped contrast flips the scores
    direct = bk.tl.gsea(stats.iloc[3:], gene_sets=small_sets, seed=3)
    pd.testing.assert_frame_equal(a, direct)
    np.testing.assert_allclose(b.loc[a.index, "ES"].to_numpy()[:1], -a["ES"].to_numpy()[:1], rtol=0.05)
    p = entry["params"]
    assert p["key"] == "de" and list(p["contrasts"]) == ["th1_vs_naive", "naive_vs_th1"]
    assert p["stat"] == "stat" and p["n_genes"]["th1_vs_naive"] == stats.size - 3
    assert p["n_genes"]["naive_vs_th1"] == stats.size
    back = roundtrip(de_adata, tmp_h5ad)
    for c in ("th1_vs_naive", "naive_vs_th1"):
        pd.testing.assert_frame_equal(back.uns["gsea_de"][c], entry[c])
    assert back.uns["gsea_de"]["params"]["seed"] == 3
    assert back.uns["gsea_de"]["params"]["gene_symbols"] == "None"


def test_gene_symbols_and_copy(de_adata, small_sets):
    sym_sets = {k: [f"G{g}" for g in v] for k, v in small_sets.items()}
    before = de_adata.copy()
    new = bk.tl.gsea(de_adata, gene_sets=sym_sets, gene_symbols="symbol", contrast="th1_vs_naive",
                     key_added="gsea_sym", copy=True, seed=3)  # fmt: skip
    assert_adata_equal(de_adata, before)
    res = new.uns["gsea_sym"]["th1_vs_naive"]
    assert all(g.startswith("G") for g in res["leading_edge"].iloc[0].split(";"))
    plain = bk.tl.gsea(de_adata, gene_sets=small_sets, contrast="th1_vs_naive", copy=True, seed=3)
    ref = plain.uns["gsea_de"]["th1_vs_naive"]
    pd.testing.assert_frame_equal(res.drop(columns=["leading_edge", "genes"]), ref.drop(columns=["leading_edge", "genes"]))
    assert list(new.uns["gsea_sym"]["params"]["contrasts"]) == ["th1_vs_naive"]


def test_stat_column(de_adata, small_sets):
    bk.tl.gsea(de_adata, gene_sets=small_sets, stat="log2FoldChange", contrast="th1_vs_naive", key_added="g")
    a = de_adata.uns["g"]["th1_vs_naive"]
    bk.tl.gsea(de_adata, gene_sets=small_sets, contrast="th1_vs_naive", key_added="h")
    b = de_adata.uns["h"]["th1_vs_naive"]
    # ES is scale invariant: log2FoldChange here is stat / 10
    np.testing.assert_allclose(a["ES"], b.loc[a.index, "ES"], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"key": "nope"}, KeyError, "no differential expression result under key 'nope'"),
        ({"contrast": "b_vs_a"}, KeyError, "contrasts: \\['th1_vs_naive', 'naive_vs_th1'\\]"),
        ({"stat": "t"}, KeyError, "stat 't' is not a column"),
        ({"min_size": 600, "max_size": 700}, ValueError, "set sizes range from"),
        ({"gene_sets": {"a": ["G11287", "G11298", "G11302"]}}, ValueError, "gene_symbols='symbol'"),
        ({"gene_symbols": "nope"}, KeyError, "not a column of adata.var"),
        ({"max_size": 10, "min_size": 20}, ValueError, "smaller than min_size"),
        ({"eps": 2}, ValueError, "eps must be in"),
        ({"n_perm_simple": 0}, ValueError, "n_perm_simple must be >= 1"),
        ({"key_added": "a/b"}, ValueError, "contains '/'"),
        ({"copy": "yes"}, TypeError, "copy must be True or False"),
    ],
)
def test_bad_input_leaves_adata_untouched(de_adata, small_sets, kwargs, exc, match):
    before = de_adata.copy()
    kw = {"gene_sets": small_sets, **kwargs}
    with pytest.raises(exc, match=match):
        bk.tl.gsea(de_adata, **kw)
    assert_adata_equal(de_adata, before)


def test_bad_statistics(de_adata, small_sets, fgsea_example):
    stats, _ = fgsea_example
    bad = stats.copy()
    bad.iloc[5] = np.nan
    with pytest.raises(ValueError, match="1 missing or non-numeric values"):
        bk.tl.gsea(bad, gene_sets=small_sets)
    bad.iloc[5] = np.inf
    with pytest.raises(ValueError, match="1 infinite values"):
        bk.tl.gsea(bad, gene_sets=small_sets)
    dup = pd.concat([stats.iloc[:10], stats.iloc[:2]])
    with pytest.raises(ValueError, match="repeats gene ids"):
        bk.tl.gsea(dup, gene_sets=small_sets, min_size=1)
    with pytest.raises(ValueError, match="applies to an AnnData"):
        bk.tl.gsea(stats, gene_sets=small_sets, key="de")
    with pytest.raises(TypeError, match="pd.Series"):
        bk.tl.gsea(stats.to_numpy(), gene_sets=small_sets)
    # an infinite DE statistic is an error; an all-missing one too
    de_adata.varm["de_th1_vs_naive"].iloc[10, 1] = np.inf
    before = de_adata.copy()
    with pytest.raises(ValueError, match="infinite"):
        bk.tl.gsea(de_adata, gene_sets=small_sets)
    assert_adata_equal(de_adata, before)
    de_adata.varm["de_th1_vs_naive"]["stat"] = np.nan
    with pytest.raises(ValueError, match="all missing"):
        bk.tl.gsea(de_adata, gene_sets=small_sets)


def test_no_de_result():
    adata = bk.datasets.pasilla()
    with pytest.raises(KeyError, match="no differential expression result"):
        bk.tl.gsea(adata, gene_sets={"a": ["x", "y"]})


def test_too_few_ranked_genes():
    s = pd.Series([3.0, 1.0, -2.0], index=["a", "b", "c"])
    with pytest.raises(ValueError, match="has 3 ranked gene\\(s\\); a tested set needs at least min_size=15"):
        bk.tl.gsea(s, gene_sets={"x": ["a", "b"]})
    res = bk.tl.gsea(s, gene_sets={"x": ["a", "b"]}, min_size=1, n_perm_simple=50)
    assert res.loc["x", "size"] == 2 and res.loc["x", "leading_edge"] == "a;b"
