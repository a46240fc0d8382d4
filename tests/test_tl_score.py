"""bk.tl.score: GSVA and ssGSEA (bulkpy._stats.enrichment.gsva) against R's GSVA 2.6 and 1.46, and the
decoupler methods.

References: ``../shared/data/geuvadis85/r_reference/{gsva,ssgsea}_hallmark.csv.gz`` made by
``refscripts/make_gsea_refs.R`` from ``logcpm_by_symbol.csv.gz`` (edgeR TMM log-CPM, 85 samples,
10,036 genes by symbol) and MSigDB Hallmark v7.0: ``gsva(m, hall, method = "gsva", kcdf =
"Gaussian", min.sz = 15, max.sz = 500)`` and ``gsva(m, hall, method = "ssgsea", min.sz = 15,
max.sz = 500)`` (GSVA 1.46); ``geuvadis85/r_current/{gsva,ssgsea}_hallmark.csv.gz`` made by
``refscripts/make_tximport_current.R`` from the same input with GSVA 2.6.12's parameter objects:
``gsva(gsvaParam(m, hall, kcdf = "Gaussian", minSize = 15, maxSize = 500))`` and
``gsva(ssgseaParam(m, hall, minSize = 15, maxSize = 500))``. Without ../shared, small synthetic
data are checked against plain re-implementations of GSVA's R/C code written out loop by loop below.
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import read_ref, roundtrip, shared_path
from helpers import assert_adata_equal
from scipy import special, stats

import bulkpy as bk
from bulkpy._stats.enrichment import gsva as engine


@pytest.fixture(scope="module")
def geuvadis_logcpm():
    e = read_ref("geuvadis85", "logcpm_by_symbol.csv.gz")
    return ad.AnnData(
        X=np.ascontiguousarray(e.T.to_numpy()),
        obs=pd.DataFrame(index=pd.Index(e.columns.astype(str), dtype=object)),
        var=pd.DataFrame(index=pd.Index(e.index.astype(str), dtype=object)),
    )


@pytest.fixture(scope="module")
def hallmark():
    return bk.io.read_gmt(shared_path("genesets", "h.all.v7.0.symbols.gmt"))


@pytest.mark.parity
@pytest.mark.parametrize(("method", "tol"), [("gsva", 1e-8), ("ssgsea", 1e-10)])
def test_parity_gsva_1_46(geuvadis_logcpm, hallmark, method, tol):
    ref = read_ref("geuvadis85", f"{method}_hallmark.csv.gz")
    adata = geuvadis_logcpm.copy()
    bk.tl.score(adata, gene_sets=hallmark, method=method, min_size=15, max_size=500)
    ours = adata.obsm[f"score_{method}"]
    assert set(ours.columns) == set(ref.index)  # same sets pass the size filter (49 of 50)
    diff = np.abs(ours.loc[ref.columns, ref.index].to_numpy().T - ref.to_numpy())
    assert diff.max() < tol, f"max abs difference {diff.max():.3g}"
    assert f"padj_{method}" not in adata.obsm


@pytest.mark.parity
@pytest.mark.parametrize(("method", "tol"), [("gsva", 1e-12), ("ssgsea", 1e-12)])
def test_parity_gsva_2_6(geuvadis_logcpm, hallmark, method, tol):
    # GSVA 2.6.12 (Bioconductor 3.23) with its parameter objects. Measured max |difference|:
    # GSVA 8e-16, ssGSEA 4e-15 (GSVA 2.6 and 1.46 differ from each other by 2.4e-13 for GSVA, 0 for
    # ssGSEA). bulkpy's defaults are GSVA 2.6's: kcdf="auto" picks the Gaussian kernel here (85
    # samples < kcdfNoneMinSampleSize 200, non-integer matrix), as the reference's kcdf="Gaussian".
    ref = pd.read_csv(shared_path("geuvadis85", "r_current", f"{method}_hallmark.csv.gz"), index_col=0)
    adata = geuvadis_logcpm.copy()
    bk.tl.score(adata, gene_sets=hallmark, method=method, min_size=15, max_size=500)
    ours = adata.obsm[f"score_{method}"]
    assert set(ours.columns) == set(ref.index)  # same sets pass the size filter (49 of 50)
    diff = np.abs(ours.loc[ref.columns, ref.index].to_numpy().T - ref.to_numpy())
    assert diff.max() < tol, f"max abs difference {diff.max():.3g}"
    p = adata.uns[f"score_{method}"]["params"]
    assert p["gsva_version"].startswith("2.6")
    if method == "gsva":
        assert p["options"]["kcdf"] == "auto" and p["options"]["kcdf_used"] == "gaussian"


def test_gsva_kcdf_auto_follows_gsva_2_6(toy):
    # GSVA 2.6's .parse_kcdf_param: Gaussian kernel for a non-integer matrix, Poisson for an
    # integer one, the empirical CDF from kcdfNoneMinSampleSize (200) samples on
    adata, sets = toy
    x = np.delete(adata.X, 7, axis=1)
    genes = [g for g in adata.var_names if g != "g7"]
    kw = {"gene_sets": sets, "method": "gsva", "min_size": 3}

    def run(a, **extra):
        bk.tl.score(a, **kw, **extra)
        return a.obsm["score_gsva"], a.uns["score_gsva"]["params"]["options"]

    auto, opt = run(ad.AnnData(X=x.copy(), obs=adata.obs.copy(), var=pd.DataFrame(index=genes)))
    gauss, _ = run(ad.AnnData(X=x.copy(), obs=adata.obs.copy(), var=pd.DataFrame(index=genes)), kcdf="Gaussian")
    assert opt["kcdf_used"] == "gaussian"
    pd.testing.assert_frame_equal(auto, gauss)
    counts = np.round(np.exp(x)).astype(np.int64)
    a_int = ad.AnnData(X=counts, obs=adata.obs.copy(), var=pd.DataFrame(index=genes))
    pois, opt = run(a_int)
    assert opt["kcdf_used"] == "poisson"
    pd.testing.assert_frame_equal(pois, run(a_int.copy(), kcdf="poisson")[0])
    # the same counts stored as floats are not an integer matrix for GSVA: Gaussian
    _, opt = run(ad.AnnData(X=counts.astype(float), obs=adata.obs.copy(), var=pd.DataFrame(index=genes)))
    assert opt["kcdf_used"] == "gaussian"
    # from kcdf_none_min_sample_size samples on: the empirical CDF
    few = ad.AnnData(X=x.copy(), obs=adata.obs.copy(), var=pd.DataFrame(index=genes))
    ecdf, opt = run(few, kcdf_none_min_sample_size=9)
    assert opt["kcdf_used"] == "none"
    pd.testing.assert_frame_equal(ecdf, run(few.copy(), kcdf="none")[0])
    with pytest.raises(ValueError, match="kcdf_none_min_sample_size must be a positive integer"):
        run(few.copy(), kcdf_none_min_sample_size=0)


def test_constant_genes_rule_of_gsva_2_6():
    # GSVA >= 1.52 (.filterGenes): a gene is constant when its minimum equals its maximum
    x = np.array([[1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0 + 1e-12, 5.0], [1.0, 4.0, 3.0, np.nan]])
    np.testing.assert_array_equal(engine.constant_genes(x), [True, False, False, True])


# --------------------------------------------------------------------------------------------
# GSVA 1.46 written out plainly (R's compute.gene.density, compute_rank_score, ks_test_m; ssgsea's .rndWalk)


def _gsva_plain(x: np.ndarray, sets: list[np.ndarray]) -> np.ndarray:
    n_s, n_g = x.shape
    table = [special.ndtr(10.0 * i / 10000.0) for i in range(10001)]
    dens = np.empty_like(x)
    for g in range(n_g):
        col = x[:, g]
        bw = np.std(col, ddof=1) / 4.0
        for j in range(n_s):
            lt = 0.0
            for i in range(n_s):
                v = (col[j] - col[i]) / bw
                cdf = 0.0 if v < -10 else 1.0 if v > 10 else table[int(abs(v) / 10.0 * 10000.0)]
                lt += (1.0 - cdf) if -10 <= v < 0 else cdf
            lt /= n_s
            dens[j, g] = -math.log((1.0 - lt) / lt)
    out = np.empty((n_s, len(sets)))
    for j in range(n_s):
        order = sorted(range(n_g), key=lambda g: (-dens[j, g], g))
        rank_score = np.empty(n_g)
        for p, g in enumerate(order):
            rank_score[g] = abs(n_g - p - n_g / 2)
        for s, members in enumerate(sets):
            inset = set(members.tolist())
            total = sum(rank_score[g] for g in members)
            dec = 1.0 / (n_g - len(members))
            cum = mx = mn = 0.0
            for g in order:
                cum += rank_score[g] / total if g in inset else -dec
                mx, mn = max(mx, cum), min(mn, cum)
            out[j, s] = mx + mn
    return out


def _ssgsea_plain(x: np.ndarray, sets: list[np.ndarray], alpha=0.25) -> np.ndarray:
    n_s, n_g = x.shape
    es = np.empty((n_s, len(sets)))
    for j in range(n_s):
        r = np.trunc(stats.rankdata(x[j], method="average"))
        ranking = sorted(range(n_g), key=lambda g: (-r[g], g))
        for s, members in enumerate(sets):
            ind = np.isin(ranking, members)
            w = np.abs(r[ranking]) ** alpha * ind
            walk = np.cumsum(w) / w.sum() - np.cumsum(~ind) / (~ind).sum()
            es[j, s] = walk.sum()  # R's .rndWalk
    return es / (es.max() - es.min())


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(9, 120)) + rng.normal(size=120) * 2
    x[:, 7] = x[0, 7]  # a constant gene: GSVA drops it
    x[:, 10:14] = np.round(x[:, 10:14])  # ties
    x[2, 20:30] += 3  # sample 2 has set A up
    genes = [f"g{i}" for i in range(120)]
    sets = {"A": genes[20:30] + ["g7"], "B": genes[5:40:3], "C/D": genes[60:100], "tiny": genes[:2]}
    adata = ad.AnnData(
        X=x, obs=pd.DataFrame(index=[f"s{i}" for i in range(9)]), var=pd.DataFrame(index=genes)
    )
    adata.var["symbol"] = [f"SYM{i}" for i in range(120)]
    return adata, sets


def test_gsva_matches_plain_implementation(toy):
    adata, sets = toy
    adata = adata.copy()
    bk.tl.score(adata, gene_sets=sets, method="gsva", min_size=3)
    ours = adata.obsm["score_gsva"]
    assert list(ours.columns) == ["A", "B", "C_D"]  # "/" is not h5ad-safe; "tiny" is too small
    assert list(adata.uns["score_gsva"]["params"]["gene_sets"]) == ["A", "B", "C/D"]
    keep = np.array([g != "g7" for g in adata.var_names])
    x = adata.X[:, keep]
    idx = {g: i for i, g in enumerate(adata.var_names[keep])}
    members = [np.array([idx[g] for g in sets[k] if g in idx]) for k in ("A", "B", "C/D")]
    np.testing.assert_allclose(ours.to_numpy(), _gsva_plain(x, members), atol=1e-12)
    assert ours.loc["s2", "A"] == ours["A"].max()


def test_ssgsea_matches_plain_implementation(toy):
    adata, sets = toy
    adata = adata.copy()
    bk.tl.score(adata, gene_sets=sets, method="ssgsea", min_size=3)
    idx = {g: i for i, g in enumerate(adata.var_names)}
    members = [np.array([idx[g] for g in sets[k]]) for k in ("A", "B", "C/D")]
    np.testing.assert_allclose(
        adata.obsm["score_ssgsea"].to_numpy(), _ssgsea_plain(adata.X, members), atol=1e-12
    )


def test_gsva_options(toy):
    adata, sets = toy
    x = np.delete(adata.X, 7, axis=1)  # without the constant gene
    idx = [np.arange(20, 30), np.arange(60, 100)]
    indptr = np.array([0, 10, 50])
    base = engine.gsva(x, indptr, np.concatenate(idx))
    absr = engine.gsva(x, indptr, np.concatenate(idx), abs_ranking=True)
    assert not np.allclose(base, absr)
    with pytest.raises(ValueError, match="constant"):
        engine.gsva(adata.X, indptr, np.concatenate(idx))
    counts = np.round(np.exp(x[:, :60]))
    pois = engine.gsva(counts, np.array([0, 10]), np.arange(20, 30), kcdf="poisson")
    assert np.isfinite(pois).all()
    ecdf = engine.gsva(x, indptr, np.concatenate(idx), kcdf="none")
    assert np.isfinite(ecdf).all()
    with pytest.raises(ValueError, match="kcdf"):
        engine.gsva(x, indptr, np.concatenate(idx), kcdf="epanechnikov")


# --------------------------------------------------------------------------------------------
# decoupler methods and the adapter


@pytest.fixture(scope="module")
def _airway_logcpm():
    adata = bk.datasets.airway()
    adata = adata[:, adata.X.sum(axis=0) >= 500].copy()
    bk.pp.annotate_genes(adata)
    adata.layers["log_cpm"] = np.log2(adata.X / adata.X.sum(axis=1, keepdims=True) * 1e6 + 1)
    return adata


@pytest.fixture
def airway_logcpm(_airway_logcpm):
    return _airway_logcpm.copy()


def test_ulm_is_decouplers(airway_logcpm):
    import decoupler as dc

    net = bk.datasets.progeny()
    bk.tl.score(airway_logcpm, gene_sets=net, layer="log_cpm", gene_symbols="symbol")
    ours, padj = airway_logcpm.obsm["score_ulm"], airway_logcpm.obsm["padj_ulm"]
    assert ours.shape == (8, 14) and padj.shape == (8, 14)
    p = airway_logcpm.uns["score_ulm"]["params"]
    assert p["method"] == "ulm" and p["backend"].startswith("decoupler") and p["layer"] == "log_cpm"
    # on data named by symbol, bulkpy's ulm is decoupler's ulm on the same matrix and net
    sym = airway_logcpm.var["symbol"].astype(object)
    first = (~sym.duplicated() & sym.notna()).to_numpy()
    by_sym = airway_logcpm[:, first].copy()
    by_sym.var_names = sym[first].astype(str).to_numpy()
    bk.tl.score(by_sym, gene_sets=net, layer="log_cpm")
    df = pd.DataFrame(by_sym.layers["log_cpm"], index=by_sym.obs_names, columns=by_sym.var_names)
    es, pv = dc.mt.ulm(df, net, tmin=5)
    ours = by_sym.obsm["score_ulm"]
    pd.testing.assert_frame_equal(ours, es.loc[ours.index, ours.columns].astype(float), check_names=False)
    pd.testing.assert_frame_equal(by_sym.obsm["padj_ulm"], pv.loc[ours.index, ours.columns].astype(float),
                                  check_names=False)  # fmt: skip
    # scores agree closely with the symbol-mapped run (it keeps duplicated/unnamed genes as background)
    a = airway_logcpm.obsm["score_ulm"]
    assert np.corrcoef(a.to_numpy().ravel(), ours.loc[a.index, a.columns].to_numpy().ravel())[0, 1] > 0.95


def test_collections_do_not_overwrite_and_roundtrip(airway_logcpm, tmp_h5ad):
    reactome = bk.datasets.reactome()
    ifn = {k: v for k, v in reactome.items() if "nterferon" in k}
    bk.tl.score(airway_logcpm, gene_sets=bk.datasets.progeny(), layer="log_cpm", gene_symbols="symbol")
    bk.tl.score(airway_logcpm, gene_sets=ifn, layer="log_cpm", gene_symbols="symbol", key_added="ifn")
    bk.tl.score(
        airway_logcpm, gene_sets=ifn, method="gsva", layer="log_cpm", gene_symbols="symbol", min_size=10
    )
    bk.tl.score(airway_logcpm, gene_sets=ifn, method="aucell", layer="log_cpm", gene_symbols="symbol")
    assert {"score_ulm", "padj_ulm", "score_ifn", "padj_ifn", "score_gsva", "score_aucell"} <= set(
        airway_logcpm.obsm
    )
    assert "padj_aucell" not in airway_logcpm.obsm
    assert airway_logcpm.obsm["score_ulm"].shape[1] == 14
    assert any("_" in c for c in airway_logcpm.obsm["score_ifn"].columns)  # "alpha/beta" -> "alpha_beta"
    back = roundtrip(airway_logcpm, tmp_h5ad)
    for k in ("score_ulm", "padj_ulm", "score_ifn", "padj_ifn", "score_gsva", "score_aucell"):
        pd.testing.assert_frame_equal(back.obsm[k], airway_logcpm.obsm[k])
    assert back.uns["score_gsva"]["params"]["options"]["kcdf"] == "auto"
    assert back.uns["score_gsva"]["params"]["options"]["kcdf_used"] == "gaussian"
    assert back.uns["score_gsva"]["params"]["gsva_version"] == "2.6.12"
    assert list(back.uns["score_ifn"]["params"]["gene_sets"]) == list(
        airway_logcpm.uns["score_ifn"]["params"]["gene_sets"]
    )


def test_copy(airway_logcpm):
    before = airway_logcpm.copy()
    new = bk.tl.score(airway_logcpm, gene_sets=bk.datasets.progeny(), layer="log_cpm", gene_symbols="symbol",
                      method="ssgsea", copy=True)  # fmt: skip
    assert_adata_equal(airway_logcpm, before)
    assert "score_ssgsea" in new.obsm and "score_ssgsea" not in airway_logcpm.obsm


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "plage"}, ValueError, "choose one of"),
        ({"method": "gsva", "kcdf": "box"}, ValueError, "kcdf='box' is not supported"),
        ({"method": "gsva", "alpha": 1}, TypeError, "takes no option"),
        ({"method": "gsva", "kcdf": "poisson"}, ValueError, "integer counts"),
        ({"gene_symbols": None}, ValueError, "gene_symbols='symbol'"),
        ({"min_size": 600}, ValueError, "set sizes range from"),
        ({"layer": "nope"}, KeyError, "layer 'nope' not found"),
        ({"key_added": "a/b"}, ValueError, "contains '/'"),
        ({"gene_symbols": "nope"}, KeyError, "not a column of adata.var"),
    ],
)
def test_bad_input_leaves_adata_untouched(airway_logcpm, kwargs, exc, match):
    before = airway_logcpm.copy()
    kw = {"gene_sets": bk.datasets.progeny(), "layer": "log_cpm", "gene_symbols": "symbol", **kwargs}
    with pytest.raises(exc, match=match):
        bk.tl.score(airway_logcpm, **kw)
    assert_adata_equal(airway_logcpm, before)


def test_nan_in_layer(toy):
    adata, sets = toy
    adata = adata.copy()
    adata.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        bk.tl.score(adata, gene_sets=sets, method="ssgsea", min_size=3)


# --------------------------------------------------------------------------------------------
# bk.tl.score(key=...): pathway activity per contrast (and group) of a DE result


@pytest.fixture(scope="module")
def _pasilla_de():
    adata = bk.datasets.pasilla()
    adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    bk.tl.deseq(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    bk.tl.deseq(adata, design="~ condition", contrast=["condition", "treated", "untreated"], split_by="type",
                key_added="by_type")  # fmt: skip
    return adata


@pytest.fixture
def pasilla_de(_pasilla_de):
    return _pasilla_de.copy()


def _de_sets(adata) -> dict[str, list[str]]:
    rng = np.random.default_rng(7)
    genes = adata.var_names.to_numpy()
    stat = bk.get.de_df(adata, "deseq")["stat"]
    sets = {f"random{i}": list(rng.choice(genes, 20 + 15 * i, replace=False)) for i in range(6)}
    sets["up"] = list(stat.nlargest(40).index)  # genes up in treated: a set with a large positive score
    sets["tiny"] = list(genes[:3])  # below min_size
    return sets


def _net(sets) -> pd.DataFrame:
    return pd.DataFrame([(s, g) for s, gs in sets.items() for g in gs], columns=["source", "target"])


@pytest.mark.parametrize("method", ["ulm", "mlm", "zscore"])
def test_score_de_is_decouplers_on_de_stats(pasilla_de, method):
    import decoupler as dc

    sets = _de_sets(pasilla_de)
    bk.tl.score(pasilla_de, gene_sets=sets, key="deseq", method=method)
    key_added = f"{method}_deseq"
    assert not any(k.startswith(("score_", "padj_")) for k in pasilla_de.obsm)
    stats = bk.get.de_stats(pasilla_de, "deseq")
    assert stats.notna().all().all() and (bk.get.de_df(pasilla_de, "deseq")["stat"].notna()).all()
    es, pv = dc.mt.__dict__[method](data=stats, net=_net(sets), tmin=5)  # what a decoupler user runs
    res = bk.get.enrichment(pasilla_de, key_added)
    assert list(res.columns) == ["score", "padj", "size"] and res.index.name == "gene_set"
    assert "tiny" not in res.index and set(res.index) == set(es.columns)
    c = "condition_treated_vs_untreated"
    np.testing.assert_array_equal(res["score"].to_numpy(), es.loc[c, res.index].to_numpy(dtype=float))
    np.testing.assert_array_equal(res["padj"].to_numpy(), pv.loc[c, res.index].to_numpy(dtype=float))
    assert res.loc["up", "size"] == 40 and res.loc["random1", "size"] == 35
    assert res.index[0] == "up" and res.loc["up", "score"] > 5
    p = pasilla_de.uns[key_added]["params"]
    assert p["method"] == "score" and p["score_method"] == method and p["key"] == "deseq"
    assert p["backend"].startswith("decoupler") and int(p["n_genes"][c]) == pasilla_de.n_vars


def test_score_de_per_group_and_plots(pasilla_de, tmp_h5ad):
    import decoupler as dc

    sets = _de_sets(pasilla_de)
    bk.tl.score(pasilla_de, gene_sets=sets, key="by_type", gene_symbols=None)
    entry = pasilla_de.uns["ulm_by_type"]
    groups = list(pasilla_de.uns["by_type"]["groups"])
    names = [f"{g}:condition_treated_vs_untreated" for g in groups]
    assert sorted(k for k in entry if k != "params") == sorted(names)
    stats = bk.get.de_stats(pasilla_de, "by_type")
    for g, name in zip(groups, names, strict=True):
        tested = bk.get.de_df(pasilla_de, "by_type", group=g)["stat"].notna()
        # each group is decoupler on that group's row of de_stats, over the genes tested in the group
        es, pv = dc.mt.ulm(data=stats.loc[[name], tested.to_numpy()], net=_net(sets), tmin=5)
        res = bk.get.enrichment(pasilla_de, "ulm_by_type", group=g)
        np.testing.assert_array_equal(res["score"].to_numpy(), es.loc[name, res.index].to_numpy(dtype=float))
        np.testing.assert_array_equal(res["padj"].to_numpy(), pv.loc[name, res.index].to_numpy(dtype=float))
        assert int(entry["params"]["n_genes"][name]) == int(tested.sum())
    long = bk.get.enrichment(pasilla_de, "ulm_by_type", group="all")
    assert list(long.columns) == ["group", "contrast", "gene_set", "score", "padj", "size"]
    assert str(entry["params"]["split_by"]) == "type"
    ax = bk.pl.enrichment_groups(pasilla_de, key="ulm_by_type", n_terms=4)
    assert len(ax.get_yticklabels()) == 4 and [t.get_text() for t in ax.get_xticklabels()] == groups
    assert ax.get_yticklabels()[0].get_text() == "up"
    bk.tl.score(pasilla_de, gene_sets=sets, key="deseq")
    ax = bk.pl.enrichment(pasilla_de, key="ulm_deseq", n_terms=3)
    assert len(ax.get_yticklabels()) == 3
    # one group only, and the h5ad round trip
    bk.tl.score(pasilla_de, gene_sets=sets, key="by_type", group=groups[0], key_added="one")
    assert [k for k in pasilla_de.uns["one"] if k != "params"] == [names[0]]
    back = roundtrip(pasilla_de, tmp_h5ad)
    for key in ("ulm_by_type", "ulm_deseq", "one"):
        for k in pasilla_de.uns[key]:
            if k != "params":
                pd.testing.assert_frame_equal(pd.DataFrame(back.uns[key][k]), pd.DataFrame(pasilla_de.uns[key][k]))
    pd.testing.assert_frame_equal(bk.get.enrichment(back, "ulm_by_type", group=groups[1]),
                                  bk.get.enrichment(pasilla_de, "ulm_by_type", group=groups[1]))  # fmt: skip
    assert back.uns["ulm_by_type"]["params"]["score_method"] == "ulm"


def test_score_de_copy_and_stat(pasilla_de):
    before = pasilla_de.copy()
    sets = _de_sets(pasilla_de)
    new = bk.tl.score(pasilla_de, gene_sets=sets, key="deseq", stat="log2FoldChange", copy=True)
    assert_adata_equal(pasilla_de, before)
    assert "ulm_deseq" in new.uns and new.uns["ulm_deseq"]["params"]["stat"] == "log2FoldChange"
    # per-sample scores are unchanged by the new parameters
    new.layers["log"] = np.log1p(new.X.astype(float))
    bk.tl.score(new, gene_sets=sets, layer="log")
    assert new.obsm["score_ulm"].shape[0] == new.n_obs


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "gsva"}, ValueError, "does not apply to a DE statistic"),
        ({"method": "ssgsea"}, ValueError, "does not apply to a DE statistic"),
        ({"layer": "counts"}, ValueError, "leave layer unset"),
        ({"key": "nope"}, KeyError, "nope"),
        ({"stat": "nope"}, KeyError, "stat 'nope' is not a column"),
        ({"contrast": "nope"}, KeyError, "contrast 'nope' not in result"),
        ({"group": "paired_end"}, ValueError, "not split by group"),
        ({"key": "by_type", "group": "nope"}, KeyError, "not a group"),
        ({"key_added": "a/b"}, ValueError, "contains '/'"),
        ({"min_size": 500}, ValueError, "set sizes range from"),
        ({"key": None, "contrast": "x"}, ValueError, "pass key= too"),
        ({"key": None, "stat": "log2FoldChange"}, ValueError, "pass key= too"),
    ],
)
def test_score_de_bad_input_leaves_adata_untouched(pasilla_de, kwargs, exc, match):
    before = pasilla_de.copy()
    kw = {"gene_sets": _de_sets(pasilla_de), "key": "deseq", **kwargs}
    with pytest.raises(exc, match=match):
        bk.tl.score(pasilla_de, **kw)
    assert_adata_equal(pasilla_de, before)


def test_score_de_method_without_test(pasilla_de):
    import decoupler as dc

    sets = _de_sets(pasilla_de)
    bk.tl.score(pasilla_de, gene_sets=sets, key="deseq", method="aucell")
    res = bk.get.enrichment(pasilla_de, "aucell_deseq")
    es, _ = dc.mt.aucell(data=bk.get.de_stats(pasilla_de, "deseq"), net=_net(sets), tmin=5)
    np.testing.assert_array_equal(res["score"].to_numpy(), es.iloc[0][res.index].to_numpy(dtype=float))
    assert res["padj"].isna().all() and (np.diff(np.abs(res["score"].to_numpy())) <= 0).all()
    with pytest.raises(ValueError, match="no gene set with an adjusted p-value"):
        bk.pl.enrichment(pasilla_de, key="aucell_deseq")
