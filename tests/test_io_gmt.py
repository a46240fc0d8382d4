"""GMT reading/writing (bk.io.read_gmt / write_gmt) and the gene set normaliser (bulkpy._genesets)."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

import bulkpy as bk
from bulkpy._genesets import (
    GeneSets,
    as_gene_sets,
    filter_gene_sets,
    membership_matrix,
    set_sizes,
    to_dict,
    to_var_names,
)
from bulkpy.datasets._counts import data_path
from bulkpy.datasets._genesets import REACTOME_FILE


@pytest.fixture(scope="session")
def reactome_sets():
    return bk.io.read_gmt(data_path(REACTOME_FILE))


def _naive_parse(text: str) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for line in text.splitlines():
        f = line.split("\t")
        out[f[0]] = (f[1], f[2:])
    return out


def _write(path, text, *, gz=False):
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


# ---------------------------------------------------------------------------------------------
# read_gmt on real files


def test_read_reactome_bundled(reactome_sets):
    sets = reactome_sets
    assert isinstance(sets, dict) and isinstance(sets, GeneSets)
    assert len(sets) == 2694
    # names keep their spaces; order is file order
    first = list(sets)[:2]
    assert first == ["2-LTR circle formation", "5-Phosphoribose 1-diphosphate biosynthesis"]
    assert sets["5-Phosphoribose 1-diphosphate biosynthesis"] == ["PRPS1", "PRPS1L1", "PRPS2"]
    assert sets.descriptions["2-LTR circle formation"] == "R-HSA-164843"
    assert all(d.startswith("R-HSA-") for d in sets.descriptions.values())
    assert sum(map(len, sets.values())) == 132481
    assert repr(sets) == "GeneSets with 2,694 gene sets of 1-2,625 genes"


def test_read_reactome_matches_the_shared_file(reactome_sets):
    text = shared_path("genesets", "ReactomePathways_2024-09-18.gmt").read_text(encoding="utf-8")
    naive = _naive_parse(text)
    assert list(naive) == list(reactome_sets)
    for name, (desc, genes) in naive.items():
        assert reactome_sets[name] == list(dict.fromkeys(genes))
        assert reactome_sets.descriptions[name] == desc


def test_write_read_reactome_is_byte_identical(reactome_sets, tmp_path):
    out = tmp_path / "reactome.gmt"
    bk.io.write_gmt(reactome_sets, out)
    with gzip.open(data_path(REACTOME_FILE), "rt", encoding="utf-8", newline="") as fh:
        original = fh.read()
    assert out.read_text(encoding="utf-8") == original


def test_hallmark_agrees_with_decouplers_reader():
    import decoupler as dc

    path = shared_path("genesets", "h.all.v7.0.symbols.gmt")
    sets = bk.io.read_gmt(path)
    assert len(sets) == 50
    assert sets.descriptions["HALLMARK_HYPOXIA"].startswith("http://www.gsea-msigdb.org/")
    ours = sets.to_frame()
    theirs = dc.pp.read_gmt(str(path))
    pd.testing.assert_frame_equal(ours[["source", "target"]], theirs.drop_duplicates().reset_index(drop=True))
    assert (ours["weight"] == 1.0).all()


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("name", ["sets.gmt", "sets.gmt.gz"])
def test_round_trip_dict(tmp_path, name):
    sets = {"set one": ["A", "B", "C"], "SET_2": ["C", "D"], "empty": []}
    out = tmp_path / name
    bk.io.write_gmt(sets, out, descriptions={"set one": "first set"})
    back = bk.io.read_gmt(out)
    assert back == sets
    assert list(back) == list(sets)
    assert back.descriptions == {"set one": "first set", "SET_2": "NA", "empty": "NA"}
    raw = out.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_gzip_detected_by_content_not_name(tmp_path):
    p = _write(tmp_path / "plain_name.gmt", "S\tdesc\tA\tB\n", gz=True)
    assert bk.io.read_gmt(p) == {"S": ["A", "B"]}


def test_decoupler_long_format_in_and_out(tmp_path):
    net = pd.DataFrame(
        {"source": ["T1", "T1", "T2", "T2", "T2"], "target": ["A", "B", "B", "C", "D"], "padj": 0.01}
    )
    canon = as_gene_sets(net)
    assert list(canon.columns) == ["source", "target", "weight"]
    assert (canon["weight"] == 1.0).all()
    out = tmp_path / "net.gmt"
    bk.io.write_gmt(net, out)
    back = bk.io.read_gmt(out)
    assert back == {"T1": ["A", "B"], "T2": ["B", "C", "D"]}
    pd.testing.assert_frame_equal(back.to_frame(), canon)
    # and the frame goes straight into decoupler
    import decoupler as dc

    pd.testing.assert_frame_equal(dc.pp.prune(None, back.to_frame(), tmin=2), canon)


def test_write_weighted_frame_warns_that_weights_are_dropped(tmp_path):
    net = pd.DataFrame({"source": ["P", "P"], "target": ["A", "B"], "weight": [2.0, -1.0]})
    with pytest.warns(UserWarning, match="no weights"):
        bk.io.write_gmt(net, tmp_path / "w.gmt")
    assert bk.io.read_gmt(tmp_path / "w.gmt") == {"P": ["A", "B"]}


def test_write_gmt_descriptions_string_and_empty(tmp_path):
    out = tmp_path / "d.gmt"
    bk.io.write_gmt({"a": ["X"], "b": ["Y"]}, out, descriptions="mine")
    assert bk.io.read_gmt(out).descriptions == {"a": "mine", "b": "mine"}
    bk.io.write_gmt(GeneSets({"a": ["X"]}, {"a": ""}), out)
    assert out.read_text() == "a\tNA\tX\n"


def test_read_tolerates_crlf_blank_lines_trailing_tabs_and_repeats(tmp_path):
    text = "S1\t\tA\tB\t\r\n\r\n  \nS2\tNA\tC\tC\t D \n"
    sets = bk.io.read_gmt(_write(tmp_path / "x.gmt", text))
    assert sets == {"S1": ["A", "B"], "S2": ["C", "D"]}
    assert sets.descriptions == {"S1": "", "S2": "NA"}


def test_genesets_copy_pickle(reactome_sets):
    small = GeneSets({k: reactome_sets[k] for k in list(reactome_sets)[:5]}, reactome_sets.descriptions)
    c = small.copy()
    assert isinstance(c, GeneSets) and c == small and c.descriptions == small.descriptions
    c[next(iter(c))].append("NEW")
    assert "NEW" not in small[next(iter(small))]
    back = pickle.loads(pickle.dumps(small))
    assert back == small and back.descriptions == small.descriptions
    assert repr(GeneSets()) == "GeneSets with 0 gene sets"


# ---------------------------------------------------------------------------------------------
# bad input


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        bk.io.read_gmt(tmp_path / "nope.gmt")


def test_read_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        bk.io.read_gmt(tmp_path)


def test_read_not_a_path():
    with pytest.raises(TypeError, match="path"):
        bk.io.read_gmt(["A", "B"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("S1\tNA\tA\nS2 NA A B\n", r"line 2: not a GMT record"),
        ("\tNA\tA\n", r"line 1: the gene set name .* is empty"),
        ("S1\tNA\tA\nS1\tNA\tB\n", r"'S1' appears twice \(lines 1 and 2\)"),
        ("\n\n", "holds no gene sets"),
    ],
)
def test_read_malformed(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        bk.io.read_gmt(_write(tmp_path / "bad.gmt", text))


def test_read_binary_file(tmp_path):
    p = tmp_path / "bin.gmt"
    p.write_bytes(b"S\tNA\t\xff\xfe\x00A\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        bk.io.read_gmt(p)


def test_read_truncated_gzip(tmp_path):
    p = tmp_path / "trunc.gmt.gz"
    full = gzip.compress(("S\tNA\t" + "\t".join(f"G{i}" for i in range(5000)) + "\n").encode())
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="could not read"):
        bk.io.read_gmt(p)


@pytest.mark.parametrize(
    ("sets", "err", "match"),
    [
        ({}, ValueError, "empty"),
        ({"S": "ABC"}, TypeError, "single string"),
        ({"S\tT": ["A"]}, ValueError, "tab or newline"),
        ({"S": ["A\tB"]}, ValueError, "tab or newline"),
        ({"S": ["A", ""]}, ValueError, "empty gene id"),
        ({"S": ["A", None]}, ValueError, "missing gene id"),
        ({1: ["A"]}, ValueError, "non-empty strings"),
        (["A", "B"], TypeError, "dict of set name"),
    ],
)
def test_write_bad_input(tmp_path, sets, err, match):
    out = tmp_path / "o.gmt"
    with pytest.raises(err, match=match):
        bk.io.write_gmt(sets, out)
    assert not out.exists()


def test_write_bad_path_and_descriptions(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bk.io.write_gmt({"S": ["A"]}, tmp_path / "no" / "o.gmt")
    with pytest.raises(IsADirectoryError):
        bk.io.write_gmt({"S": ["A"]}, tmp_path)
    with pytest.raises(TypeError, match="descriptions"):
        bk.io.write_gmt({"S": ["A"]}, tmp_path / "o.gmt", descriptions=["x"])


# ---------------------------------------------------------------------------------------------
# the normaliser used by the enrichment code


def test_as_gene_sets_from_each_input(tmp_path, reactome_sets):
    d = {"S1": ["A", "B", "A"], "S2": ("C",), "S3": np.array(["D", "E"])}
    net = as_gene_sets(d)
    assert net.to_dict("list") == {
        "source": ["S1", "S1", "S2", "S3", "S3"],
        "target": ["A", "B", "C", "D", "E"],
        "weight": [1.0] * 5,
    }
    assert net["weight"].dtype == np.float64 and net["source"].dtype == object
    # weighted dict and Series
    w = as_gene_sets({"P": {"A": 2.5, "B": -1}, "Q": pd.Series({"C": 0.5})})
    assert w["weight"].tolist() == [2.5, -1.0, 0.5]
    # a GMT path
    p = tmp_path / "s.gmt"
    bk.io.write_gmt(d, p)
    pd.testing.assert_frame_equal(as_gene_sets(p), net)
    pd.testing.assert_frame_equal(as_gene_sets(str(p)), net)
    # a long frame: extra columns dropped, integer ids become strings
    f = as_gene_sets(pd.DataFrame({"source": ["X", "X"], "target": [7105, 8813], "weight": [1, 2], "padj": 0.1}))
    assert f["target"].tolist() == ["7105", "8813"] and list(f.columns) == ["source", "target", "weight"]
    # real data: 132,481 pairs from Reactome, round trip through to_dict
    rnet = as_gene_sets(reactome_sets)
    assert rnet.shape == (132481, 3)
    assert to_dict(rnet) == reactome_sets
    assert set_sizes(rnet)["5-Phosphoribose 1-diphosphate biosynthesis"] == 3


@pytest.mark.parametrize(
    ("obj", "err", "match"),
    [
        (pd.DataFrame({"set": ["A"], "gene": ["B"]}), KeyError, "needs 'source'"),
        (pd.DataFrame({"source": ["A", "A"], "target": ["B", "B"]}), ValueError, "repeats 1"),
        (pd.DataFrame({"source": ["A", None], "target": ["B", "C"]}), ValueError, "missing values"),
        (pd.DataFrame({"source": ["A"], "target": ["B"], "weight": ["x"]}), ValueError, "non-numeric"),
        (pd.DataFrame({"source": ["A"], "target": ["B"], "weight": [np.inf]}), ValueError, "infinite"),
        ({"S": {"A": "heavy"}}, TypeError, "not a number"),
        ({"S": {"A": np.nan}}, ValueError, "not finite"),
        ({"S": 5}, TypeError, "list of gene ids"),
        ({"S": []}, ValueError, "empty"),
        (42, TypeError, "GMT file path"),
    ],
)
def test_as_gene_sets_bad_input(obj, err, match):
    with pytest.raises(err, match=match):
        as_gene_sets(obj)


def test_filter_gene_sets_sizes_and_universe():
    net = {"big": list("ABCDEFG"), "mid": list("ABCX"), "small": ["A", "Y"]}
    out = filter_gene_sets(net, genes=list("ABCDEFG"), min_size=3, max_size=6)
    # 'big' has 7 genes in the universe (> 6), 'mid' keeps A, B, C, 'small' only A
    assert out["source"].unique().tolist() == ["mid"]
    assert out["target"].tolist() == ["A", "B", "C"]
    assert filter_gene_sets(net, min_size=2)["source"].nunique() == 3
    with pytest.raises(ValueError, match="same kind of id"):
        filter_gene_sets(net, genes=["ENSG1", "ENSG2"])
    with pytest.raises(ValueError, match="between 10 and"):
        filter_gene_sets(net, min_size=10)
    with pytest.raises(ValueError, match="smaller than"):
        filter_gene_sets(net, min_size=5, max_size=2)
    with pytest.raises(TypeError, match="min_size"):
        filter_gene_sets(net, min_size=2.5)


def test_to_var_names_through_a_symbol_column():
    var = pd.DataFrame(
        {"symbol": pd.Categorical(["A", "B", np.nan, "B", "C"])}, index=["E1", "E2", "E3", "E4", "E5"]
    )
    net = {"S": ["A", "B", "Z"], "T": ["C"]}
    first = to_var_names(net, var, "symbol")
    assert first.values.tolist() == [["S", "E1", 1.0], ["S", "E2", 1.0], ["T", "E5", 1.0]]
    every = to_var_names(net, var, "symbol", multi="all")
    assert every["target"].tolist() == ["E1", "E2", "E4", "E5"]
    pd.testing.assert_frame_equal(to_var_names(net, var, None), as_gene_sets(net))
    with pytest.raises(KeyError, match="columns are"):
        to_var_names(net, var, "gene_name")
    with pytest.raises(ValueError, match="multi"):
        to_var_names(net, var, "symbol", multi="last")
    with pytest.raises(ValueError, match="no gene set target"):
        to_var_names({"S": ["Q"]}, var, "symbol")


def test_membership_matrix():
    net = pd.DataFrame({"source": ["P", "P", "Q", "R"], "target": ["b", "z", "a", "zz"], "weight": [2.0, 1.0, -1.0, 1.0]})
    mat, names = membership_matrix(net, ["a", "b", "c"])
    assert list(names) == ["P", "Q", "R"]
    np.testing.assert_array_equal(mat.toarray(), [[0, 2, 0], [-1, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="unique"):
        membership_matrix(net, ["a", "a"])
