"""bk.pp.annotate_genes: Ensembl ids <-> symbols / Entrez ids / gene types (org.Hs.eg.db 3.16)."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, roundtrip
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


# ------------------------------------------------------------------------------------------
# from a GTF, any organism (tests/fixtures/gtf: GENCODE, Ensembl mouse and UCSC styles)

GTF = FIXTURES / "gtf"
GENCODE = GTF / "gencode_v44_excerpt.gtf"
ENSEMBL_MOUSE = GTF / "ensembl_110_grcm39_excerpt.gtf.gz"
GTF_COLUMNS = ["symbol", "gene_type", "chromosome", "start", "end", "strand"]


def test_gtf_gencode_versions_both_ways(tmp_h5ad):
    a = _toy([
        "ENSG00000000003",            # unversioned id, versioned GTF
        "ENSG00000000005.6",          # the same version
        "ENSG00000002586.19",         # another version: matched without versions, the chrX gene first
        "ENSG00000002586.20_PAR_Y",   # GENCODE's chrY copy matches its own line
        "ENSG99999999999",
    ])  # fmt: skip
    bk.pp.annotate_genes(a, gtf=GENCODE)
    v = a.var
    assert v.columns.tolist() == GTF_COLUMNS
    assert v["symbol"].tolist()[:4] == ["TSPAN6", "TNMD", "CD99", "CD99"]
    assert v["chromosome"].astype(str).tolist()[:4] == ["chrX", "chrX", "chrX", "chrY"]
    assert v["start"].tolist()[:2] == [100627108, 100584936] and v["end"].tolist()[0] == 100639991
    assert v["strand"].astype(str).tolist()[:2] == ["-", "+"]
    assert v["gene_type"].astype(str).tolist()[0] == "protein_coding"
    assert v.iloc[4].isna().all()
    assert str(v["start"].dtype) == "Int64" and isinstance(v["symbol"].dtype, pd.CategoricalDtype)
    rep = a.uns["annotate_genes"]
    assert rep["n_matched"] == 4 and rep["n_genes"] == 5 and rep["match_rate"] == pytest.approx(0.8)
    assert rep["n_matched_without_version"] == 2  # ENSG00000000003, ENSG00000002586.19
    assert rep["n_multiple"] == 1  # ENSG00000002586 is on chrX and chrY
    assert list(rep["columns"]) == GTF_COLUMNS
    p = rep["params"]
    assert p["gtf"] == str(GENCODE) and p["organism"] == "None"
    assert p["source"].startswith("GTF gencode_v44_excerpt.gtf (description: evidence-based annotation")
    back = roundtrip(a, tmp_h5ad)
    pd.testing.assert_frame_equal(back.var, a.var)
    assert back.uns["annotate_genes"]["n_matched_without_version"] == 2


def test_gtf_ensembl_mouse_gzipped():
    """Ensembl: unversioned gene_id plus gene_version; gene_biotype; a gene without a name."""
    a = _toy(["ENSMUSG00000000001.5", "ENSMUSG00000000003", "ENSMUSG00000102693.2", "ENSMUSG00000000028.15", "Gnai3"])
    out = bk.pp.annotate_genes(a, gtf=ENSEMBL_MOUSE, organism="mouse", copy=True)
    v = out.var
    assert v["symbol"].tolist()[:2] == ["Gnai3", "Pbsn"] and pd.isna(v["symbol"].iloc[2])
    assert v["gene_type"].astype(str).tolist()[:4] == ["protein_coding", "protein_coding", "TEC", "protein_coding"]
    assert v["chromosome"].astype(str).tolist()[:4] == ["3", "X", "1", "16"]
    assert v["start"].tolist()[3] == 18599197
    rep = out.uns["annotate_genes"]
    assert rep["n_matched"] == 4
    assert rep["n_matched_without_version"] == 1  # .15 against gene_version 16; .5 and .2 match as written
    assert rep["params"]["source"].startswith("GTF ensembl_110_grcm39_excerpt.gtf.gz (genome-build GRCm39")


def test_gtf_symbols_and_tables():
    a = _toy(["TSPAN6", "CD99", "XX"])
    bk.pp.annotate_genes(a, gtf=GENCODE, id_type="symbol")
    assert a.var.columns.tolist() == ["ensembl_id", *GTF_COLUMNS[1:]]
    assert a.var["ensembl_id"].tolist()[:2] == ["ENSG00000000003.16", "ENSG00000002586.20"]  # first in file order
    assert a.uns["annotate_genes"]["n_multiple"] == 1
    # a table read once with bk.io.read_gtf gives the same as the file
    b = _toy(["ENSG00000000003", "ENSG00000290825"])
    c = b.copy()
    bk.pp.annotate_genes(b, gtf=GENCODE)
    bk.pp.annotate_genes(c, gtf=bk.io.read_gtf(GENCODE, feature=None))
    pd.testing.assert_frame_equal(b.var, c.var)
    assert c.uns["annotate_genes"]["params"]["gtf"] == "DataFrame"
    # a GTF without gene lines: each gene spans its lines
    u = _toy(["SH3YL1", "FAM110C"])
    bk.pp.annotate_genes(u, gtf=GTF / "ucsc_exons_only.gtf")
    assert u.var["start"].tolist() == [218136, 38814] and u.var["end"].tolist() == [264869, 46385]
    assert u.var["symbol"].isna().all()  # UCSC writes no gene_name


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"gtf": 3}, TypeError, "gtf must be the path of a GTF file or a table"),
        ({"gtf": "no/such/file.gtf"}, FileNotFoundError, "gtf file not found"),
        ({"gtf": FIXTURES / "geuvadis6_quant" / "samples.txt"}, ValueError, "is not a GTF file"),
        ({"gtf": pd.DataFrame({"x": [1]})}, ValueError, "has no gene_id column"),
        ({"gtf": GENCODE, "id_column": "chromosome"}, ValueError, "would be overwritten"),
        ({"gtf": GENCODE, "id_type": "symbol"}, ValueError, "look like gene ids: pass id_type='ensembl'"),
    ],
)
def test_gtf_bad_input_leaves_adata_untouched(kw, err, match):
    a = _toy(["ENSG00000000003", "ENSG00000000005"], chromosome=["1", "2"])
    before = a.copy()
    with pytest.raises(err, match=match):
        bk.pp.annotate_genes(a, **kw)
    assert_adata_equal(a, before)
    assert a.uns == {}


def test_gtf_no_match_explains():
    a = _toy(["TSPAN6", "TNMD"])
    with pytest.raises(ValueError, match=r"none of the 2 gene ids matched the GTF \(5 genes\).*pass id_type='symbol'"):
        bk.pp.annotate_genes(a, gtf=GENCODE)


@pytest.mark.filterwarnings("ignore:Variable names are not unique:UserWarning")  # anndata's, on purpose here
def test_duplicated_var_names_refused():
    a = _toy(["ENSG00000000003", "ENSG00000000005", "ENSG00000000003"])
    before = a.copy()
    for kw in ({}, {"gtf": GENCODE}):
        with pytest.raises(ValueError, match=r"bk.pp.annotate_genes keys its results by gene.*\['ENSG00000000003'\]"):
            bk.pp.annotate_genes(a, **kw)
        assert_adata_equal(a, before)
