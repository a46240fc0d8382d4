"""bk.io.read_gtf and the GTF tables behind read_quant(tx2gene=<gtf>) and annotate_genes(gtf=...).

The fixtures in ``tests/fixtures/gtf`` are tiny hand-written GTFs in GENCODE's, Ensembl's and
UCSC's attribute styles (see their PROVENANCE.txt).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bulkpy as bk
from bulkpy.io import _gtf

GTF = FIXTURES / "gtf"
GENCODE = GTF / "gencode_v44_excerpt.gtf"
ENSEMBL = GTF / "ensembl_110_grcm39_excerpt.gtf.gz"
UCSC = GTF / "ucsc_exons_only.gtf"
FIELDS = ["seqname", "source", "feature", "start", "end", "score", "strand", "frame"]


# ------------------------------------------------------------------------------------------
# read_gtf on the three attribute styles


def test_gencode_genes():
    df = bk.io.read_gtf(GENCODE)
    assert list(df.columns[:8]) == FIELDS
    assert list(df.columns[8:]) == [
        "gene_id",
        "gene_type",
        "gene_name",
        "level",
        "tag",
        "hgnc_id",
        "havana_gene",
    ]
    assert df["gene_id"].tolist() == [
        "ENSG00000290825.1", "ENSG00000002586.20", "ENSG00000002586.20_PAR_Y", "ENSG00000000005.6",
        "ENSG00000000003.16",
    ]  # fmt: skip
    assert df["gene_name"].tolist() == ["DDX11L2", "CD99", "CD99", "TNMD", "TSPAN6"]
    assert df["seqname"].astype(str).tolist() == ["chr1", "chrX", "chrY", "chrX", "chrX"]
    assert df["start"].dtype == np.int64 and df["end"].dtype == np.int64
    assert df.loc[4, ["start", "end"]].tolist() == [100627108, 100639991]
    assert df["strand"].astype(str).tolist() == ["+", "+", "+", "+", "-"]
    assert df["score"].isna().all() and df["score"].dtype == np.float64
    for col in ("seqname", "source", "feature", "strand", "frame"):
        assert isinstance(df[col].dtype, pd.CategoricalDtype)
    # GENCODE writes the level unquoted; absent attributes are NaN
    assert df["level"].tolist() == ["2", "3", "3", "2", "2"]
    assert df["havana_gene"].isna().tolist() == [True, False, True, False, False]
    assert df.attrs["gtf_header"][0].startswith(
        "##description: evidence-based annotation of the human genome"
    )
    assert len(df.attrs["gtf_header"]) == 5


def test_gencode_transcripts_repeated_tags_and_feature_lists():
    tx = bk.io.read_gtf(GENCODE, feature="transcript")
    assert len(tx) == 6 and set(tx["feature"]) == {"transcript"}
    # a key given several times on a line: its values joined in order
    assert tx["tag"].tolist()[:2] == ["basic,Ensembl_canonical", "basic,Ensembl_canonical,MANE_Select,CCDS"]
    assert pd.isna(tx["tag"].iloc[5])
    both = bk.io.read_gtf(GENCODE, feature=["transcript", "CDS"], attributes=["transcript_id", "exon_number"])
    assert list(both.columns) == [*FIELDS, "transcript_id", "exon_number"]
    assert both["feature"].astype(str).tolist().count("CDS") == 1
    cds = both[both["feature"] == "CDS"].iloc[0]
    assert cds["frame"] == "0" and cds["exon_number"] == "1" and cds["start"] == 2691315
    every = bk.io.read_gtf(GENCODE, feature=None)
    assert len(every) == 15  # all feature lines, the five header lines skipped
    assert every["feature"].astype(str).value_counts().to_dict() == {
        "transcript": 6,
        "gene": 5,
        "exon": 3,
        "CDS": 1,
    }


def test_attributes_subset_and_absent_key():
    df = bk.io.read_gtf(GENCODE, attributes=["gene_name", "not_there"])
    assert list(df.columns) == [*FIELDS, "gene_name", "not_there"]
    assert df["not_there"].isna().all()


def test_ensembl_style_gzipped():
    df = bk.io.read_gtf(ENSEMBL)
    assert df["gene_id"].tolist() == [
        "ENSMUSG00000000001",
        "ENSMUSG00000000003",
        "ENSMUSG00000000028",
        "ENSMUSG00000102693",
    ]
    assert df["gene_version"].tolist() == ["5", "16", "16", "2"]
    assert df["gene_biotype"].tolist() == ["protein_coding"] * 3 + ["TEC"]
    assert pd.isna(df["gene_name"].iloc[3])  # Ensembl omits gene_name for unnamed genes
    assert df["seqname"].astype(str).tolist() == ["3", "X", "16", "1"]
    assert df.attrs["gtf_header"][0] == "#!genome-build GRCm39"
    tx = bk.io.read_gtf(ENSEMBL, feature="transcript")
    assert tx["transcript_support_level"].iloc[0] == "1 (assigned to previous version 4)"  # spaces in a value


def test_no_line_of_the_feature_gives_an_empty_table(caplog):
    with caplog.at_level(logging.INFO, logger="bulkpy.io._gtf"):
        df = bk.io.read_gtf(UCSC)
    assert len(df) == 0 and list(df.columns) == FIELDS
    assert "no ['gene'] lines" in caplog.text and "'exon', 'CDS'" in caplog.text
    exons = bk.io.read_gtf(UCSC, feature="exon")
    assert len(exons) == 6 and exons["gene_id"].tolist()[:2] == ["FAM110C", "FAM110C"]


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_compressed_like_plain(tmp_path, opener):
    target = tmp_path / "annotation.gtf.any"
    with open(GENCODE, "rb") as src, opener(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    pd.testing.assert_frame_equal(bk.io.read_gtf(target, feature=None), bk.io.read_gtf(GENCODE, feature=None))


def test_small_blocks_stitch_lines(monkeypatch):
    """Lines cut across the reader's blocks are put back together (blocks of 100 bytes here)."""
    expected = bk.io.read_gtf(GENCODE, feature=None)
    monkeypatch.setattr(_gtf, "_BLOCK", 100)
    pd.testing.assert_frame_equal(bk.io.read_gtf(GENCODE, feature=None), expected)
    pd.testing.assert_frame_equal(
        bk.io.read_gtf(ENSEMBL, feature="transcript"), bk.io.read_gtf(ENSEMBL, feature="transcript")
    )


def test_line_endings_blank_lines_and_comments(tmp_path):
    lines = GENCODE.read_text().splitlines()
    messy = lines[:6] + ["", "# a comment between features", "#\twith\ttabs\tgene\t1\t2"] + lines[6:]
    p = tmp_path / "messy.gtf"
    p.write_bytes(("\r\n".join(messy)).encode())  # CRLF, no final newline
    expected = bk.io.read_gtf(GENCODE, feature=None)
    got = bk.io.read_gtf(p, feature=None)
    pd.testing.assert_frame_equal(got, expected)


def test_path_forms_and_spacing(tmp_path):
    p = tmp_path / "loose.gtf"
    # no final ';', no space after ';', unquoted value, empty quoted value
    p.write_text('1\tsrc\tgene\t5\t10\t3.5\t.\t.\tgene_id "g1";gene_name "A";level 2;note ""\n')
    df = bk.io.read_gtf(str(p))
    assert df.loc[0, ["gene_id", "gene_name", "level"]].tolist() == ["g1", "A", "2"]
    assert df.loc[0, "score"] == 3.5
    assert "note" not in df.columns or pd.isna(df.loc[0, "note"])


def test_tx2gene_tables():
    gencode = _gtf.tx2gene(GENCODE)
    assert list(gencode.columns) == ["tx", "gene"]
    assert gencode["tx"].tolist() == [
        "ENST00000456328.2", "ENST00000381192.10", "ENST00000381192.10_PAR_Y", "ENST00000373031.5",
        "ENST00000373020.9", "ENST00000494424.1",
    ]  # fmt: skip
    assert gencode["gene"].iloc[2] == "ENSG00000002586.20_PAR_Y"
    # Ensembl: transcript_version appended, as in the cDNA FASTA; gene ids as written
    ensembl = _gtf.tx2gene(ENSEMBL)
    assert ensembl["tx"].tolist()[:3] == [
        "ENSMUST00000000001.5",
        "ENSMUST00000000003.14",
        "ENSMUST00000114041.3",
    ]
    assert ensembl["gene"].tolist()[:3] == ["ENSMUSG00000000001", "ENSMUSG00000000003", "ENSMUSG00000000003"]
    # no transcript lines: from the exon lines, each transcript once
    ucsc = _gtf.tx2gene(UCSC)
    assert ucsc.to_dict("list") == {
        "tx": ["ENST00000327669.5", "ENST00000403658.5", "ENST00000356150.10"],
        "gene": ["FAM110C", "SH3YL1", "SH3YL1"],
    }


def test_gene_tables():
    genes, source = _gtf.gene_table(ENSEMBL)
    assert list(genes.columns) == list(_gtf.GENE_COLUMNS)
    assert genes["gene_type"].tolist() == ["protein_coding"] * 3 + ["TEC"]  # from gene_biotype
    assert source.startswith("GTF ensembl_110_grcm39_excerpt.gtf.gz (genome-build GRCm39")
    # UCSC: no gene lines; a gene spans its exon and CDS lines
    ucsc, _ = _gtf.gene_table(UCSC)
    assert ucsc["gene_id"].tolist() == ["FAM110C", "SH3YL1"]
    assert ucsc[["start", "end"]].astype(int).to_numpy().tolist() == [[38814, 46385], [218136, 264869]]
    assert ucsc["strand"].tolist() == ["-", "+"] and ucsc["gene_name"].isna().all()
    # a table from read_gtf gives the same genes as the file
    from_frame, what = _gtf.gene_table(bk.io.read_gtf(GENCODE, feature=None))
    pd.testing.assert_frame_equal(from_frame, _gtf.gene_table(GENCODE)[0])
    assert what == "GTF table (DataFrame)"


def test_looks_like_gtf(tmp_path):
    assert _gtf.looks_like_gtf(GENCODE) and _gtf.looks_like_gtf(ENSEMBL)
    renamed = tmp_path / "annotation.txt"
    shutil.copy(GENCODE, renamed)
    assert _gtf.looks_like_gtf(renamed)
    csv = tmp_path / "t2g.csv"
    csv.write_text("TXNAME,GENEID\nENST1,ENSG1\n")
    assert not _gtf.looks_like_gtf(csv)
    tsv = tmp_path / "t2g.tsv"
    tsv.write_text("ENST1\tENSG1\n")
    assert not _gtf.looks_like_gtf(tsv)


# ------------------------------------------------------------------------------------------
# what is not a GTF


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            "TXNAME,GENEID\nENST1,ENSG1\n",
            r"is not a GTF file: line 1 has 1 tab-separated field\(s\) where a GTF line has 9",
        ),
        ("##gff-version 3\nchr1\tsrc\tgene\t1\t9\t.\t+\t.\tID=gene:1;Name=A\n", "is a GFF3 file"),
        ("chr1\tsrc\tgene\t1\t9\t.\t+\t.\tID=gene:1;Name=A\n", "GFF3-style attributes"),
        (
            'chr1\tsrc\tgene\tone\t9\t.\t+\t.\tgene_id "g";\n',
            "start and end 'one', '9' are not whole numbers",
        ),
        ('chr1\tsrc\tgene\t1\t9\t.\t+\t.\t"g1"; "t1";\n', 'are not key "value"; pairs'),
        ("##description: only a header\n", "holds no GTF feature line"),
        ("", "holds no GTF feature line"),
    ],
)
def test_not_a_gtf(tmp_path, content, match):
    p = tmp_path / "x.gtf"
    p.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        bk.io.read_gtf(p)
    assert "GTF 2.2 / GFF2" in str(err.value) or "GFF3" in str(err.value)


def test_bad_lines_after_the_first(tmp_path):
    """The first 20 feature lines are checked up front; later bad lines are caught when parsed."""
    good = GENCODE.read_text().splitlines()[5:] * 3
    p = tmp_path / "late.gtf"
    bad_start = good[0].split("\t")
    bad_start[3] = "12x"
    p.write_text("\n".join([*good, "\t".join(bad_start)]) + "\n")
    with pytest.raises(ValueError, match=r"1 line\(s\) have a start that is not a whole number, e.g. '12x'"):
        bk.io.read_gtf(p)
    p.write_text("\n".join([*good, "chr1\tsrc\tgene\t1\t2"]) + "\n")
    with pytest.raises(
        ValueError, match=r"has 5 tab-separated field\(s\) where a GTF line has 9 \(1 such line"
    ):
        bk.io.read_gtf(p)
    p.write_text("\n".join([*good, 'chr1\tsrc\tgene\t1\t2\t.\t+\t.\tgene_id "x";\textra']) + "\n")
    with pytest.raises(ValueError, match=r"has 10 tab-separated field\(s\) where a GTF line has 9"):
        bk.io.read_gtf(p)


def test_binary_and_other_compression(tmp_path):
    p = tmp_path / "x.gtf"
    p.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match="is not a text file"):
        bk.io.read_gtf(p)
    p.write_bytes(b"(\xb5/\xfd" + b"\x00" * 20)
    with pytest.raises(ValueError, match="zstd- or zip-compressed"):
        bk.io.read_gtf(p)
    p.write_bytes(b"\x1f\x8b" + b"\x00" * 20)  # a broken gzip
    with pytest.raises(ValueError, match="can not read"):
        bk.io.read_gtf(p)


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="gtf file not found"):
        bk.io.read_gtf(tmp_path / "nope.gtf")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        bk.io.read_gtf(tmp_path)
    with pytest.raises(TypeError, match="path of a GTF file"):
        bk.io.read_gtf(3)
    with pytest.raises(TypeError, match="feature must be a feature type"):
        bk.io.read_gtf(GENCODE, feature=3)
    with pytest.raises(TypeError, match="feature must be a feature type"):
        bk.io.read_gtf(GENCODE, feature=[])
    with pytest.raises(ValueError, match="can not contain tabs"):
        bk.io.read_gtf(GENCODE, feature="gene\t")
    with pytest.raises(TypeError, match="attributes must be a list"):
        bk.io.read_gtf(GENCODE, attributes="gene_id")


# ------------------------------------------------------------------------------------------
# property tests: what is written is read back; junk is a ValueError, never another exception

_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_value = st.text(
    alphabet=st.characters(blacklist_characters='";\n\r\t\\', blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=12,
)
_feature = st.sampled_from(["gene", "transcript", "exon", "CDS", "UTR"])
_record = st.tuples(
    _feature,
    st.integers(1, 10**9),
    st.integers(0, 10**6),
    st.sampled_from(["+", "-", "."]),
    st.dictionaries(_key.filter(lambda k: k not in FIELDS and k != "gene_id"), _value, max_size=4),
    st.lists(_value, max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, min_size=1, max_size=8))
def test_roundtrip_property(tmp_path_factory, records):
    lines, expected = [], []
    for i, (feature, start, length, strand, attrs, tags) in enumerate(records):
        parts = [f'gene_id "g{i}"'] + [f'{k} "{v}"' for k, v in attrs.items()] + [f'tag "{t}"' for t in tags]
        lines.append(
            f"chr{i}\tsrc\t{feature}\t{start}\t{start + length}\t.\t{strand}\t.\t" + "; ".join(parts) + ";"
        )
        expected.append((feature, start, start + length, strand, attrs, ",".join(tags) or np.nan))
    p = tmp_path_factory.mktemp("gtf") / "random.gtf"
    p.write_text("#header\n" + "\n".join(lines) + "\n")
    df = bk.io.read_gtf(p, feature=None)
    assert len(df) == len(records)
    assert df["gene_id"].tolist() == [f"g{i}" for i in range(len(records))]
    for i, (feature, start, end, strand, attrs, tags) in enumerate(expected):
        row = df.iloc[i]
        assert (row["feature"], row["start"], row["end"], row["strand"]) == (feature, start, end, strand)
        for k, v in attrs.items():
            if k != "tag":
                assert row[k] == v.strip() or row[k] == v
        if "tag" not in attrs:
            got = row.get("tag", np.nan)
            assert (pd.isna(got) and pd.isna(tags)) or got == tags


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list('abc\t\n;"=#. 0123')), max_size=200))
def test_junk_raises_value_error_or_reads(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("junk") / "junk.gtf"
    p.write_text(text)
    try:
        df = bk.io.read_gtf(p, feature=None)
    except ValueError:
        return
    assert list(df.columns[:8]) == FIELDS
