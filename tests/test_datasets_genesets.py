"""Bundled gene set collections (Reactome, GO, PROGENy) and the MSigDB download helper (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

import bulkpy as bk
from bulkpy.datasets import _genesets as gs_mod
from bulkpy.datasets._counts import data_path

GO_SIZES = {"BP": 9373, "MF": 1963, "CC": 1195}


@pytest.fixture(scope="session")
def go_sets():
    """Each ontology loaded once per session (about a second each)."""
    return {ont: bk.datasets.go(ont) for ont in GO_SIZES}


@pytest.fixture(scope="session")
def _annotated_airway_logcpm(_airway):
    """Airway with symbols as var_names (expressed, uniquely named genes) and log2-CPM in X."""
    a = bk.pp.annotate_genes(_airway, copy=True)
    keep = a.var["symbol"].notna().to_numpy() & (np.asarray(a.X.sum(0)).ravel() >= 80)
    a = a[:, keep].copy()
    a = a[:, ~a.var["symbol"].astype(str).duplicated().to_numpy()].copy()
    a.var_names = a.var["symbol"].astype(str).to_numpy()
    x = np.asarray(a.layers["counts"])
    a.layers["logcpm"] = np.log2(x / x.sum(1, keepdims=True) * 1e6 + 1)
    a.X = a.layers["logcpm"].copy()
    return a


# ---------------------------------------------------------------------------------------------
# Reactome


def test_reactome_is_the_shared_release():
    sets = bk.datasets.reactome()
    assert len(sets) == 2694
    assert sets.descriptions["Glycolysis"] == "R-HSA-70171"
    assert {"GAPDH", "PKM", "HK1"} <= set(sets["Glycolysis"])
    shared = bk.io.read_gmt(shared_path("genesets", "ReactomePathways_2024-09-18.gmt"))
    assert sets == shared and sets.descriptions == shared.descriptions


# ---------------------------------------------------------------------------------------------
# GO


@pytest.mark.parametrize("ont", list(GO_SIZES))
def test_go_counts_per_ontology(go_sets, ont):
    sets = go_sets[ont]
    assert len(sets) == GO_SIZES[ont]
    assert set(sets.descriptions.values()) == {ont}
    sizes = np.array([len(v) for v in sets.values()])
    assert sizes.min() >= 5 and sizes.max() <= 2000
    names = list(sets)
    assert all(n.startswith("GO:") for n in names)
    assert names == sorted(names)  # GO id order


def test_go_content(go_sets):
    bp = go_sets["BP"]
    glyco = bp["GO:0006096 glycolytic process"]
    assert {"GAPDH", "PKM", "HK1", "ENO1", "ALDOA"} <= set(glyco)
    # annotations are propagated to ancestors: every gene of the child is in the parent
    # 'canonical glycolysis' (GO:0061621) is_a 'glycolytic process' (GO:0006096)
    child = bp["GO:0061621 canonical glycolysis"]
    assert set(child) <= set(glyco)
    # the three ontologies partition the bundled file
    total = sum(len(v) for v in go_sets.values())
    assert total == 12531
    with gzip.open(data_path(gs_mod.GO_FILE), "rt") as fh:
        assert sum(1 for _ in fh) == total


def test_go_lower_case_and_bad_ontology():
    with pytest.raises(ValueError, match=r"choose one of \['BP', 'MF', 'CC'\]"):
        bk.datasets.go("XX")
    with pytest.raises(ValueError, match="not a GO ontology"):
        bk.datasets.go(None)


def test_go_lower_case_accepted(go_sets):
    cc = bk.datasets.go("cc")
    assert cc == go_sets["CC"]


# ---------------------------------------------------------------------------------------------
# PROGENy


def test_progeny_shape_and_columns():
    net = bk.datasets.progeny(thr_padj=1)
    assert list(net.columns) == ["source", "target", "weight", "padj"]  # decoupler's dc.op.progeny columns
    assert net.shape == (7000, 4)
    counts = net["source"].value_counts()
    assert len(counts) == 14 and (counts == 500).all()
    assert sorted(counts.index) == sorted(
        ["Androgen", "EGFR", "Estrogen", "Hypoxia", "JAK-STAT", "MAPK", "NFkB", "p53", "PI3K", "TGFb", "TNFa", "Trail", "VEGF", "WNT"]
    )
    assert not net.duplicated(["source", "target"]).any()
    # sorted by pathway, then p-value, as decoupler returns it
    assert net["source"].tolist() == sorted(net["source"])
    assert all(g["padj"].is_monotonic_increasing for _, g in net.groupby("source"))
    assert net["target"].dtype == object and net["weight"].dtype == np.float64


@pytest.mark.parametrize(("organism", "n_rows", "short"), [("human", 6571, {"Trail": 294, "WNT": 277}), ("mouse", 6452, {"WNT": 266, "Trail": 186})])
def test_progeny_default_threshold_as_decoupler(organism, n_rows, short):
    net = bk.datasets.progeny(organism)
    assert net.shape == (n_rows, 4)
    assert (net["padj"] < 0.05).all()
    counts = net["source"].value_counts()
    assert {k: counts[k] for k in short} == short
    assert (counts.drop(list(short)) == 500).all()


def test_progeny_top_n_is_the_lowest_p_values():
    full = bk.datasets.progeny(thr_padj=1)
    top = bk.datasets.progeny(top=50, thr_padj=1)
    assert top.shape == (700, 4)
    for pw, g in full.groupby("source"):
        t = top[top["source"] == pw]
        assert t["padj"].max() <= g["padj"].nsmallest(51).iloc[-1]
        assert t["target"].tolist() == g["target"].head(50).tolist()


@pytest.mark.parity
@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_progeny_scores_match_the_r_package(organism):
    """PROGENy's own regression test: progeny(expr, scale=TRUE, top=10) on its example input.

    The R score is t(expr) %*% model (top 10 genes per pathway by p-value, unfiltered), scaled per
    pathway across samples; rebuilding the model from our table must reproduce it.
    """
    expr = pd.read_csv(shared_path("progeny", "reference_io", f"{organism}_input.csv"), index_col=0)
    expected = pd.read_csv(shared_path("progeny", "reference_io", f"{organism}_def_expected.csv"), index_col=0)
    net = bk.datasets.progeny(organism, top=10, thr_padj=1)
    w = net.pivot(index="target", columns="source", values="weight").fillna(0.0)
    common = expr.index.intersection(w.index)
    scores = expr.loc[common].T @ w.loc[common]
    scores = (scores - scores.mean()) / scores.std(ddof=1)
    got = scores[expected.columns].loc[expected.index].to_numpy()
    # measured: 9e-14 (human), 6e-13 (mouse)
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=0, atol=1e-10)


def test_progeny_feeds_decoupler_ulm(_annotated_airway_logcpm):
    import decoupler as dc

    adata = _annotated_airway_logcpm.copy()
    dc.mt.ulm(adata, bk.datasets.progeny(), tmin=5)
    scores = adata.obsm["score_ulm"]
    assert scores.shape == (8, 14) and np.isfinite(scores.to_numpy()).all()
    assert adata.obsm["padj_ulm"].shape == (8, 14)
    # dexamethasone activates the glucocorticoid receptor, whose targets (FKBP5, TSC22D3, ...)
    # overlap the androgen footprint: Androgen activity rises in each of the 4 cell lines
    obs = adata.obs.assign(androgen=scores["Androgen"].to_numpy())
    paired = obs.pivot_table(index="cell", columns="dex", values="androgen", observed=True)
    assert ((paired["trt"] - paired["untrt"]) > 1).all()


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"organism": "rat"}, ValueError, "choose one of"),
        ({"top": 0}, ValueError, "out of range"),
        ({"top": 501}, ValueError, "top 500|1 to 500"),
        ({"top": 10.0}, TypeError, "integer"),
        ({"top": True}, TypeError, "integer"),
        ({"thr_padj": 0}, ValueError, "out of range"),
        ({"thr_padj": 1.5}, ValueError, "out of range"),
        ({"thr_padj": "0.05"}, TypeError, "number"),
    ],
)
def test_progeny_bad_input(kw, err, match):
    with pytest.raises(err, match=match):
        bk.datasets.progeny(**kw)


# ---------------------------------------------------------------------------------------------
# MSigDB download helper (never touches the network)


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a non-file URL."""
    real = urllib.request.urlopen

    def guard(req, *a, **k):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        if not url.startswith("file:"):
            raise AssertionError(f"a test tried to open {url}")
        return real(req, *a, **k)

    monkeypatch.setattr(urllib.request, "urlopen", guard)


@pytest.fixture
def local_gmt(tmp_path):
    """A GMT made from bundled data (5 Reactome pathways), so these tests run on a fresh clone."""
    sets = bk.datasets.reactome()
    small = {k: sets[k] for k in list(sets)[:5]}
    p = tmp_path / "src" / "h.all.v2025.1.Hs.symbols.gmt"
    p.parent.mkdir()
    bk.io.write_gmt(small, p)
    return p, small


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_msigdb_url_pattern():
    assert gs_mod.msigdb_url("h.all") == (
        "https://data.broadinstitute.org/gsea-msigdb/msigdb/release/2025.1.Hs/h.all.v2025.1.Hs.symbols.gmt"
    )
    assert gs_mod.msigdb_url("m2.cp.reactome", "2024.1", "mouse").endswith(
        "/release/2024.1.Mm/m2.cp.reactome.v2024.1.Mm.symbols.gmt"
    )
    assert gs_mod.msigdb_url("c2.cp.kegg", "7.5.1").endswith("/release/7.5.1/c2.cp.kegg.v7.5.1.symbols.gmt")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("hallmark",), "did you mean 'hallmark.all'"),
        (("H.ALL",), "not an MSigDB collection"),
        (("h.all", "v7"), "not an MSigDB release"),
        (("h.all", "2025.1", "rat"), "choose one of"),
        (("h.all", "2025.1", "mouse"), "Did you mean 'mh.all'"),
        (("c2.cp.reactome", "2025.1", "mouse"), "Did you mean 'm2.cp.reactome'"),
        (("mh.all", "2025.1", "human"), "species='mouse'"),
        (("mh.all", "7.5.1", "mouse"), "human collections only"),
    ],
)
def test_msigdb_bad_names(args, match, tmp_path, no_network):
    with pytest.raises(ValueError, match=match):
        gs_mod.msigdb_url(*args)
    kw = dict(zip(("version", "species"), args[1:], strict=False))
    with pytest.raises(ValueError, match=match):
        bk.datasets.msigdb(args[0], cache_dir=tmp_path, **kw)


def test_msigdb_from_file_url_then_cache(local_gmt, tmp_path, no_network):
    src, small = local_gmt
    cache = tmp_path / "cache"
    sets = bk.datasets.msigdb("h.all", url=src.as_uri(), cache_dir=cache, sha256=_sha(src))
    assert sets == small and isinstance(sets, dict)
    cached = list((cache / "msigdb").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith("h.all.v2025.1.Hs.symbols.gmt")
    assert cached[0].read_bytes() == src.read_bytes()
    # second call reads the cache: the source can be gone
    src.unlink()
    again = bk.datasets.msigdb("h.all", url=src.as_uri(), cache_dir=cache, sha256=_sha(cached[0]))
    assert again == small
    assert not list((cache / "msigdb").glob("*.part"))


def test_msigdb_hallmark_copy(tmp_path, no_network):
    """The Hallmark v7.0 file (not shipped) read through the helper from a local copy."""
    hallmark = shared_path("genesets", "h.all.v7.0.symbols.gmt")
    local = tmp_path / "h.all.v7.0.symbols.gmt"
    local.write_bytes(hallmark.read_bytes())
    sets = bk.datasets.msigdb("h.all", version="7.0", url=local.as_uri(), cache_dir=tmp_path / "c")
    assert len(sets) == 50 and len(sets["HALLMARK_HYPOXIA"]) == 200


def test_msigdb_bad_hash_removes_the_cached_file(local_gmt, tmp_path, no_network):
    src, _ = local_gmt
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256 mismatch.*removed from the cache"):
        bk.datasets.msigdb("h.all", url=src.as_uri(), cache_dir=cache, sha256="0" * 64)
    assert list((cache / "msigdb").iterdir()) == []
    with pytest.raises(ValueError, match="64 hexadecimal"):
        bk.datasets.msigdb("h.all", url=src.as_uri(), cache_dir=cache, sha256="abc")


def test_msigdb_corrupt_cache_is_fetched_again(local_gmt, tmp_path, no_network):
    src, small = local_gmt
    cache = tmp_path / "cache"
    bk.datasets.msigdb("h.all", url=src.as_uri(), cache_dir=cache)
    (cached,) = (cache / "msigdb").iterdir()
    cached.write_text("garbage")
    sets = bk.datasets.msigdb("h.all", url=src.as_uri(), cache_dir=cache, sha256=_sha(src))
    assert sets == small and cached.read_bytes() == src.read_bytes()


def test_msigdb_default_url_is_requested_and_cached(local_gmt, tmp_path, monkeypatch):
    """Without url=, the MSigDB URL is requested once (served here by a fake) and then cached."""
    src, small = local_gmt
    requested = []

    def fake_urlopen(req, *a, **k):
        requested.append(req.full_url)
        return io.BytesIO(src.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    assert bk.datasets.msigdb("h.all", cache_dir=cache) == small
    assert bk.datasets.msigdb("h.all", cache_dir=cache) == small
    assert requested == [gs_mod.msigdb_url("h.all")]
    assert (cache / "msigdb" / "h.all.v2025.1.Hs.symbols.gmt").exists()


def test_msigdb_default_cache_dir(local_gmt, tmp_path, monkeypatch, no_network):
    src, small = local_gmt
    monkeypatch.setenv("BULKPY_CACHE_DIR", str(tmp_path / "env_cache"))
    assert gs_mod.default_cache_dir() == tmp_path / "env_cache"
    assert bk.datasets.msigdb("h.all", url=src.as_uri()) == small
    assert len(list((tmp_path / "env_cache" / "msigdb").iterdir())) == 1
    monkeypatch.delenv("BULKPY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gs_mod.default_cache_dir() == tmp_path / "xdg" / "bulkpy"


def test_msigdb_download_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="could not read"):
        bk.datasets.msigdb("h.all", url=(tmp_path / "missing.gmt").as_uri(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="full URL"):
        bk.datasets.msigdb("h.all", url="h.all.gmt", cache_dir=tmp_path)

    def http_404(req, *a, **k):
        raise urllib.error.HTTPError(req.full_url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", http_404)
    with pytest.raises(ValueError, match="HTTP 404"):
        bk.datasets.msigdb("c9.nothing", cache_dir=tmp_path)

    def offline(req, *a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="no route to host"):
        bk.datasets.msigdb("h.all", cache_dir=tmp_path)
    assert list((tmp_path / "msigdb").iterdir()) == []


def test_msigdb_not_a_gmt_is_not_cached(tmp_path, no_network):
    page = tmp_path / "error.html"
    page.write_text("<html>\n<body>Not found</body>\n</html>\n")
    with pytest.raises(ValueError, match="did not give a valid GMT file"):
        bk.datasets.msigdb("h.all", url=page.as_uri(), cache_dir=tmp_path / "c")
    assert list((tmp_path / "c" / "msigdb").iterdir()) == []
