from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import roundtrip, shared_path

import bulkpy as bk
from bulkpy.datasets._counts import data_path


def test_pasilla_bundled(pasilla):
    assert pasilla.shape == (7, 14599)
    assert list(pasilla.obs_names[:2]) == ["untreated1", "untreated2"]
    assert pasilla.obs["condition"].tolist().count("treated") == 3
    np.testing.assert_array_equal(pasilla.X, pasilla.layers["counts"])
    raw = pd.read_csv(data_path("pasilla_counts.tsv.gz"), sep="\t", index_col=0)
    np.testing.assert_array_equal(pasilla.layers["counts"], raw.T.to_numpy())
    assert pasilla.X is not pasilla.layers["counts"]


def test_pasilla_original_annotation_names_mismatch():
    path = shared_path("pasilla", "pasilla_sample_annotation_original.csv")
    with pytest.raises(ValueError, match=r"untreated1.*untreated1fb"):
        bk.io.read_counts(data_path("pasilla_counts.tsv.gz"), samples=path)


def test_samples_by_genes_and_dataframe(tmp_path, pasilla):
    df = pd.DataFrame(pasilla.layers["counts"], index=pasilla.obs_names, columns=pasilla.var_names)
    p = tmp_path / "c.csv"
    df.to_csv(p)
    coldata = pasilla.obs.copy()
    a = bk.io.read_counts(p, samples=coldata)
    assert a.shape == pasilla.shape
    np.testing.assert_array_equal(a.X, pasilla.X)
    assert (a.obs["type"] == pasilla.obs["type"]).all()
    b = bk.io.read_counts(p, orientation="samples_by_genes")
    assert b.shape == pasilla.shape


def test_featurecounts_table(tmp_path):
    p = tmp_path / "fc.txt"
    p.write_text(
        "# Program:featureCounts v2.0.1\n"
        "Geneid\tChr\tStart\tEnd\tStrand\tLength\ts1\ts2\n"
        "g1\tchr1\t1\t100\t+\t100\t5\t7\n"
        "g2\tchr1\t200\t300\t-\t101\t0\t3\n"
    )
    a = bk.io.read_counts(p)
    assert a.shape == (2, 2)
    assert list(a.var["Length"]) == [100, 101]
    np.testing.assert_array_equal(a.X, [[5, 0], [7, 3]])


def test_roundtrip(pasilla, tmp_h5ad):
    back = roundtrip(pasilla, tmp_h5ad)
    np.testing.assert_array_equal(back.layers["counts"], pasilla.layers["counts"])
    pd.testing.assert_frame_equal(back.obs, pasilla.obs)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("gene\ts1\ts2\ng1\t1\t-2\n", "negative"),
        ("gene\ts1\ts2\ng1\t1\tNA\n", "non-finite"),
        ("gene\ts1\ts2\ng1\t1\t2\ng1\t3\t4\n", "duplicated gene"),
        ("gene\ts1\ts1\ng1\t1\t2\ng2\t3\t4\n", "duplicated column"),
        ("gene\ts1\ts2\ng1\t1\tfoo\n", "non-numeric"),
        ("gene\ts1\ts2\n", "empty"),
        ("", "empty"),
    ],
)
def test_bad_tables(tmp_path, content, match):
    p = tmp_path / "bad.tsv"
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        bk.io.read_counts(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        bk.io.read_counts(tmp_path / "nope.tsv")


def test_gzipped_tsv_and_sample_column(tmp_path):
    p = tmp_path / "c.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("gene\ta\tb\ng1\t1\t2\ng2\t3\t4\ng3\t0\t0\n")
    s = tmp_path / "s.csv"
    s.write_text("idx,name,group\n1,b,x\n2,a,y\n")
    ad = bk.io.read_counts(p, samples=s, sample_column="name")
    assert list(ad.obs_names) == ["a", "b"]
    assert list(ad.obs["group"]) == ["y", "x"]
    with pytest.raises(KeyError, match="sample_column"):
        bk.io.read_counts(p, samples=s, sample_column="nope")


def test_bad_orientation(tmp_path):
    with pytest.raises(ValueError, match="orientation"):
        bk.io.read_counts(data_path("pasilla_counts.tsv.gz"), orientation="rows")
