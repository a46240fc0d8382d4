"""bk.tl.ora and the over-representation engine (bulkpy._stats.enrichment.ora).

Real data: the bundled airway counts, a paired t-test of dexamethasone vs untreated (4 cell
lines) as the differential expression result, Reactome (bundled) mapped through the symbols of
``bk.pp.annotate_genes``. p-values are checked against ``scipy.stats.hypergeom.sf(k - 1, M, n, N)``
computed set by set from plain Python sets (an independent count of k, M, n, N).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import roundtrip
from helpers import assert_adata_equal
from scipy import stats

import bulkpy as bk
from bulkpy._slots import write_de
from bulkpy._stats.enrichment.ora import ora as ora_engine


@pytest.fixture(scope="module")
def _airway_de():
    adata = bk.datasets.airway()
    adata = adata[:, adata.X.sum(axis=0) >= 200].copy()
    bk.pp.annotate_genes(adata)
    x = np.log2(adata.X / adata.X.sum(axis=1, keepdims=True) * 1e6 + 1)
    assert list(adata.obs["dex"][1::2]) == ["trt"] * 4 and list(adata.obs["dex"][::2]) == ["untrt"] * 4
    t, p = stats.ttest_rel(x[1::2], x[::2])
    padj = stats.false_discovery_control(p)
    lfc = (x[1::2] - x[::2]).mean(axis=0)
    padj[:50] = np.nan  # as DESeq2's independent filtering: not tested
    de = pd.DataFrame({"log2FoldChange": lfc, "stat": t, "pvalue": p, "padj": padj}, index=adata.var_names)
    write_de(adata, "ttest", {"trt_vs_untrt": de, "untrt_vs_trt": de.assign(log2FoldChange=-lfc, stat=-t)},
             {"method": "paired t-test"})  # fmt: skip
    return adata


@pytest.fixture
def airway_de(_airway_de):
    return _airway_de.copy()


@pytest.fixture(scope="module")
def reactome():
    return bk.datasets.reactome()


def _expected(adata, sets, *, direction="up", thr=0.05, lfc=0.0, min_size=15, max_size=500):
    """ORA counted with plain Python sets, symbols mapped to the first tested gene in var order."""
    de = bk.get.de_df(adata, "ttest", contrast="trt_vs_untrt")
    tested = de.index[de["padj"].notna()]
    sym = adata.var.loc[tested, "symbol"].dropna().astype(str)
    sym = sym[~sym.duplicated()]
    sym2gene = dict(zip(sym.to_numpy(), sym.index, strict=True))
    universe = set(tested)
    q, l2 = de.loc[tested, "padj"], de.loc[tested, "log2FoldChange"]
    up = {"up": l2 > lfc, "down": l2 < -lfc, "both": l2.abs() > lfc}[direction]
    de_genes = set(tested[(q < thr) & up])
    rows = {}
    for name, genes in sets.items():
        members = {sym2gene[g] for g in genes if g in sym2gene}
        n = len(members)
        if not (min_size <= n <= max_size):
            continue
        k = len(members & de_genes)
        rows[name] = (n, k, stats.hypergeom.sf(k - 1, len(universe), n, len(de_genes)))
    return pd.DataFrame(rows, index=["size", "overlap", "pvalue"]).T, len(de_genes), len(universe)


@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_pvalues_are_hypergeometric(airway_de, reactome, direction):
    bk.tl.ora(airway_de, key="ttest", contrast="trt_vs_untrt", gene_sets=reactome, gene_symbols="symbol",
              direction=direction)  # fmt: skip
    res = airway_de.uns["ora_ttest"]["trt_vs_untrt"]
    exp, n_de, n_univ = _expected(airway_de, reactome, direction=direction)
    assert set(res.index) == set(exp.index)
    res = res.loc[exp.index]
    np.testing.assert_array_equal(res["size"], exp["size"].astype(int))
    np.testing.assert_array_equal(res["overlap"], exp["overlap"].astype(int))
    np.testing.assert_allclose(res["pvalue"], exp["pvalue"].astype(float), rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        res["padj"], stats.false_discovery_control(exp["pvalue"].astype(float)), rtol=1e-10
    )
    np.testing.assert_allclose(res["expected"], exp["size"] * n_de / n_univ, rtol=1e-12)
    np.testing.assert_allclose(res["fold_enrichment"], res["overlap"] / res["expected"], rtol=1e-12)
    params = airway_de.uns["ora_ttest"]["params"]
    assert params["n_de"]["trt_vs_untrt"] == n_de and params["n_universe"]["trt_vs_untrt"] == n_univ
    assert n_univ == airway_de.n_vars - 50  # untested genes are not in the universe
    # overlap genes: symbols, as many as the overlap, most significant first
    row = res.loc[res["overlap"] > 2].iloc[0]
    genes = row["genes"].split(";")
    assert len(genes) == row["overlap"]
    de = bk.get.de_df(airway_de, "ttest", contrast="trt_vs_untrt")
    sym_q = de["padj"].groupby(airway_de.var["symbol"].astype(str)).min()
    assert list(sym_q.loc[genes]) == sorted(sym_q.loc[genes])


def test_enriched_direction_makes_sense(airway_de, reactome):
    """Dexamethasone response: known glucocorticoid targets are up (e.g. FKBP5, TSC22D3, PER1)."""
    bk.tl.ora(airway_de, key="ttest", gene_sets=reactome, gene_symbols="symbol", padj=0.1)
    res = airway_de.uns["ora_ttest"]
    assert set(res) == {"trt_vs_untrt", "untrt_vs_trt", "params"}
    up = res["trt_vs_untrt"]
    assert (up["pvalue"].diff().dropna() >= 0).all()  # sorted by p-value
    # the two contrasts are mirror images: "up" of one is "down" of the other
    bk.tl.ora(airway_de, key="ttest", contrast="untrt_vs_trt", gene_sets=reactome, gene_symbols="symbol",
              padj=0.1, direction="down", key_added="mirror")  # fmt: skip
    pd.testing.assert_frame_equal(airway_de.uns["mirror"]["untrt_vs_trt"], up)


def test_universe_and_gene_list(airway_de, reactome):
    tested = bk.get.de_df(airway_de, "ttest", contrast="trt_vs_untrt")
    univ = list(airway_de.var_names[100:])
    bk.tl.ora(airway_de, key="ttest", contrast="trt_vs_untrt", gene_sets=reactome, gene_symbols="symbol",
              universe=univ, key_added="u")  # fmt: skip
    assert airway_de.uns["u"]["params"]["n_universe"]["trt_vs_untrt"] == len(univ)
    assert airway_de.uns["u"]["params"]["universe"] == f"given ({len(univ)} genes)"
    assert tested.shape[0] == airway_de.n_vars
    # a plain gene list gives the same numbers as the engine on explicit sets
    sets = {"A": list("abcdefghij"), "B": list("klmnopqrst"), "C": list("abcklm")}
    res = bk.tl.ora(["a", "b", "c", "d", "k", "zz"], gene_sets=sets, min_size=1)
    # universe = the 20 set genes; "zz" is not in it
    assert res.loc["A", "overlap"] == 4 and res.loc["A", "size"] == 10
    assert res.loc["A", "pvalue"] == pytest.approx(stats.hypergeom.sf(3, 20, 10, 5), rel=1e-12)
    assert res.loc["C", "genes"] == "a;b;c;k"
    res2 = bk.tl.ora(["a", "b"], gene_sets=sets, min_size=1, universe=list("abcdefghijklmnopqrstuvwxyz"))
    assert res2.loc["A", "pvalue"] == pytest.approx(stats.hypergeom.sf(1, 26, 10, 2), rel=1e-12)


def test_engine_directly():
    from scipy import sparse

    member = sparse.csr_matrix(np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]))
    sel = np.array([True, True, False, False, False, True])
    res = ora_engine(member, sel)
    np.testing.assert_array_equal(res["overlap"], [2, 1, 0])
    np.testing.assert_allclose(res["pvalue"], stats.hypergeom.sf(np.array([1, 0, -1]), 6, [3, 4, 0], 3))
    assert res["pvalue"][2] == 1.0 and np.isnan(res["fold_enrichment"][2])
    with pytest.raises(ValueError, match="one entry per gene"):
        ora_engine(member, sel[:3])


def test_roundtrip_and_copy(airway_de, reactome, tmp_h5ad):
    before = airway_de.copy()
    new = bk.tl.ora(airway_de, key="ttest", gene_sets=reactome, gene_symbols="symbol", copy=True)
    assert_adata_equal(airway_de, before)
    assert "ora_ttest" not in airway_de.uns
    back = roundtrip(new, tmp_h5ad)
    for c in ("trt_vs_untrt", "untrt_vs_trt"):
        pd.testing.assert_frame_equal(back.uns["ora_ttest"][c], new.uns["ora_ttest"][c])
    p = back.uns["ora_ttest"]["params"]
    assert p["key"] == "ttest" and p["direction"] == "up" and p["max_size"] == 500
    assert list(p["contrasts"]) == ["trt_vs_untrt", "untrt_vs_trt"]
    # a rerun replaces the earlier result
    bk.tl.ora(new, key="ttest", contrast="untrt_vs_trt", gene_sets=reactome, gene_symbols="symbol")
    assert set(new.uns["ora_ttest"]) == {"untrt_vs_trt", "params"}


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"key": "nope"}, KeyError, "no differential expression result under key 'nope'"),
        ({"contrast": "x_vs_y"}, KeyError, "contrasts: \\['trt_vs_untrt', 'untrt_vs_trt'\\]"),
        ({"gene_symbols": None}, ValueError, "gene_symbols='symbol'"),
        (
            {"min_size": 5000, "max_size": 6000},
            ValueError,
            "between 5000 and 6000 genes .*set sizes range from 1 to",
        ),
        ({"direction": "sideways"}, ValueError, "choose one of \\['up', 'down', 'both'\\]"),
        ({"padj": 1.5}, ValueError, "padj must be in"),
        ({"lfc": -1}, ValueError, "lfc must be in"),
        ({"universe": ["nope"]}, ValueError, "no gene of universe"),
        ({"gene_sets": 3}, TypeError, "gene sets must be"),
        ({"key_added": ""}, TypeError, "key_added must be a non-empty string"),
    ],
)
def test_bad_input_leaves_adata_untouched(airway_de, reactome, kwargs, exc, match):
    before = airway_de.copy()
    kw = {"key": "ttest", "gene_sets": reactome, "gene_symbols": "symbol", **kwargs}
    with pytest.raises(exc, match=match):
        bk.tl.ora(airway_de, **kw)
    assert_adata_equal(airway_de, before)


def test_bad_gene_list(reactome):
    with pytest.raises(ValueError, match="applies to an AnnData"):
        bk.tl.ora(["TP53"], gene_sets=reactome, gene_symbols="symbol")
    with pytest.raises(TypeError, match="list of gene ids"):
        bk.tl.ora("TP53", gene_sets=reactome)
    with pytest.raises(TypeError, match="strings"):
        bk.tl.ora([1, 2], gene_sets=reactome)
    with pytest.raises(ValueError, match="none of the 1 genes is in the universe"):
        bk.tl.ora(["NOT_A_GENE"], gene_sets=reactome)
    adata = bk.datasets.pasilla()
    with pytest.raises(KeyError, match="no differential expression result"):
        bk.tl.ora(adata, gene_sets=reactome)
