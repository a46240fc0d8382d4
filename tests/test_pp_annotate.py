"""bk.pp.annotate_genes: Ensembl ids <-> symbols / Entrez ids / gene types (org.Hs.eg.db 3.16)."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import roundtrip
from helpers import assert_adata_equal

import bulkpy as bk
from bulkpy._genesets import filter_gene_sets, to_var_names


def _toy(var_names, **var_cols):
    a = ad.AnnData(np.ones((2, len(var_names))), var=pd.DataFrame(var_cols, index=list(var_names)))
    return a


@pytest.fixture(scope="module")
def airway_annotated(_airway):
    return bk.pp.annotate_genes(_airway, copy=True)


def test_airway_match_rate(airway_annotated, _airway, caplog):
    a = airway_annotated
    rep = a.uns["annotate_genes"]
    # 35,329 of 64,102 airway ids (55.1%) are in org.Hs.eg.db 3.16; the rest are LRG_ ids (425) and
    # GRCh37-era Ensembl ids retired or re-issued in GRCh38 (e.g. GGNBP2's ENSG00000005955)
    assert rep["n_genes"] == 64102
    assert rep["n_matched"] == 35329
    assert rep["match_rate"] == pytest.approx(35329 / 64102)
    assert rep["n_multiple"] == 258
    assert list(rep["columns"]) == ["symbol", "entrez_id", "gene_type"]
    assert rep["params"]["source"].startswith("org.Hs.eg.db 3.16")
    # among genes with >= 10 counts in every sample, 90% get a symbol
    expressed = np.asarray((_airway.X >= 10).all(0)).ravel()
    rate = a.var["symbol"].notna().to_numpy()[expressed].mean()
    assert rate == pytest.approx(0.903, abs=0.001)
    assert a.var["symbol"][a.var_names.str.startswith("LRG_")].isna().all()
    # the log line reports it
    with caplog.at_level(logging.INFO, logger="bulkpy"):
        bk.pp.annotate_genes(_airway, copy=True)
    assert "35329 of 64102 ids (55.1%)" in caplog.text


def test_airway_known_genes(airway_annotated):
    v = airway_annotated.var
    assert v.loc["ENSG00000000003", ["symbol", "entrez_id", "gene_type"]].tolist() == ["TSPAN6", "7105", "protein-coding"]
    # FKBP5, the gene dexamethasone induces most in this dataset
    assert v.loc["ENSG00000096060", "symbol"] == "FKBP5"
    for col in ("symbol", "entrez_id", "gene_type"):
        assert isinstance(v[col].dtype, pd.CategoricalDtype)
    assert set(v["gene_type"].cat.categories) <= {
        "protein-coding", "pseudo", "ncRNA", "snoRNA", "other", "snRNA", "rRNA", "scRNA", "unknown"
    }


def test_airway_round_trip(airway_annotated, tmp_h5ad):
    back = roundtrip(airway_annotated, tmp_h5ad)
    for col in ("symbol", "entrez_id", "gene_type"):
        pd.testing.assert_series_equal(back.var[col], airway_annotated.var[col])
    rep, rep0 = back.uns["annotate_genes"], airway_annotated.uns["annotate_genes"]
    assert rep["n_matched"] == rep0["n_matched"] and rep["match_rate"] == rep0["match_rate"]
    assert rep["params"]["id_column"] == "None"


def test_version_suffix_and_one_to_many():
    a = _toy(["ENSG00000000003.14", "ENSG00000002586.20_PAR_Y", "ENSG00000156273", "ENSG99999999999", "LRG_1"])
    bk.pp.annotate_genes(a)
    assert a.var["symbol"].tolist()[:3] == ["TSPAN6", "CD99", "BACH1"]  # BACH1 (Entrez 571) before GRIK1-AS2
    assert a.var["symbol"].isna().tolist() == [False, False, False, True, True]
    assert a.var["entrez_id"].tolist()[2] == "571"
    assert a.uns["annotate_genes"]["n_multiple"] == 1
    assert a.uns["annotate_genes"]["n_matched"] == 3


def test_symbols_to_ensembl(tmp_h5ad):
    a = _toy(["TSPAN6", "AATF", "ABCF1", "NOT_A_GENE", "tspan6"])
    out = bk.pp.annotate_genes(a, id_type="symbol", copy=True)
    v = out.var
    assert "symbol" not in v.columns
    # several Ensembl ids per symbol: the first in table (Entrez) order
    assert v["ensembl_id"].tolist()[:3] == ["ENSG00000000003", "ENSG00000275700", "ENSG00000204574"]
    assert v["entrez_id"].tolist()[:3] == ["7105", "26574", "23"]
    assert v["ensembl_id"].isna().tolist() == [False, False, False, True, True]  # exact, case-sensitive
    assert out.uns["annotate_genes"]["n_multiple"] == 2
    back = roundtrip(out, tmp_h5ad)
    pd.testing.assert_series_equal(back.var["ensembl_id"], v["ensembl_id"])


def test_id_column_and_key_added():
    a = _toy(["g1", "g2"], gene_ids=["ENSG00000000003", "ENSG00000000005"])
    bk.pp.annotate_genes(a, id_column="gene_ids", key_added="annot")
    assert a.var["symbol"].tolist() == ["TSPAN6", "TNMD"]
    assert "annot" in a.uns and "annotate_genes" not in a.uns
    assert a.uns["annot"]["params"]["id_column"] == "gene_ids"


def test_in_place_and_copy():
    a = _toy(["ENSG00000000003"])
    before = a.copy()
    out = bk.pp.annotate_genes(a, copy=True)
    assert_adata_equal(a, before)
    assert out.var["symbol"].tolist() == ["TSPAN6"]
    assert bk.pp.annotate_genes(a) is None
    assert a.var["symbol"].tolist() == ["TSPAN6"]
    # running again replaces the columns
    bk.pp.annotate_genes(a)
    assert a.var.columns.tolist() == ["symbol", "entrez_id", "gene_type"]


def test_symbols_map_gene_sets_onto_ensembl_ids(airway_annotated):
    """The enrichment path: sets of symbols onto airway's Ensembl var_names through var['symbol']."""
    net = to_var_names(bk.datasets.reactome(), airway_annotated.var, "symbol")
    assert net["target"].str.startswith("ENSG").all()
    kept = filter_gene_sets(net, genes=airway_annotated.var_names, min_size=15, max_size=500)
    assert set(kept["target"]) <= set(airway_annotated.var_names)
    glyco = kept.loc[kept["source"] == "Glycolysis", "target"]
    assert "ENSG00000111640" in set(glyco)  # GAPDH


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"organism": "mouse"}, ValueError, r"covers \['human'\] only"),
        ({"organism": None}, ValueError, "not supported"),
        ({"id_type": "entrez"}, ValueError, r"choose one of \['ensembl', 'symbol'\]"),
        ({"id_column": "nope"}, KeyError, "not a column of adata.var"),
        ({"id_column": "symbol"}, ValueError, "would be overwritten"),
        ({"key_added": "a/b"}, ValueError, "contains '/'"),
        ({"key_added": ""}, TypeError, "non-empty string"),
        ({"copy": "yes"}, TypeError, "copy must be True or False"),
    ],
)
def test_bad_input_leaves_adata_untouched(kw, err, match):
    a = _toy(["ENSG00000000003", "ENSG00000000005"], symbol=["x", "y"])
    before = a.copy()
    with pytest.raises(err, match=match):
        bk.pp.annotate_genes(a, **kw)
    assert_adata_equal(a, before)
    assert a.uns == {}


@pytest.mark.parametrize(
    ("names", "kw", "match"),
    [
        (["TSPAN6", "TNMD"], {}, "id_type='symbol'"),
        (["ENSMUSG00000000001", "ENSMUSG00000000003"], {}, "mouse Ensembl ids"),
        (["ENSG00000000003", "ENSG00000000005"], {"id_type": "symbol"}, "id_type='ensembl'"),
        (["ENSG99999999998", "ENSG99999999999"], {}, "not human Ensembl gene ids known"),
        (["foo", "bar"], {"id_type": "symbol"}, "not official human gene symbols"),
    ],
)
def test_no_match_explains(names, kw, match):
    a = _toy(names)
    before = a.copy()
    with pytest.raises(ValueError, match=match):
        bk.pp.annotate_genes(a, **kw)
    assert_adata_equal(a, before)


def test_missing_ids_in_column_and_not_anndata():
    a = _toy(["g1", "g2"], gene_ids=["ENSG00000000003", None])
    with pytest.raises(ValueError, match="missing ids"):
        bk.pp.annotate_genes(a, id_column="gene_ids")
    with pytest.raises(TypeError, match="AnnData"):
        bk.pp.annotate_genes(pd.DataFrame({"x": [1]}))
