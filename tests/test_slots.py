"""Params written by bulkpy survive write_h5ad/read_h5ad, including the types anndata mangles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import roundtrip

import bulkpy as bk
from bulkpy._slots import check_key, h5ad_safe, write_de, write_params


def test_params_roundtrip(pasilla, tmp_h5ad):
    params = {
        "tuple": (1, 2),
        "set": {"b", "a"},
        "none": None,
        "mixed": [1, "a", 2.5],
        "series": pd.Series([1.0, 2.0], index=["x", "y"]),
        "nested": {1: {"deep": (True, False)}},
        "np": np.float32(1.5),
        "empty": [],
        "func": np.mean,
    }
    write_params(pasilla, "thing", params)
    back = roundtrip(pasilla, tmp_h5ad).uns["thing"]["params"]
    assert list(back["tuple"]) == [1, 2]
    assert list(back["set"]) == ["a", "b"]
    assert back["none"] == "None"
    assert list(back["mixed"]) == ["1", "a", "2.5"]
    assert back["series"]["y"] == 2.0
    assert list(back["nested"]["1"]["deep"]) == [True, False]
    assert back["np"] == 1.5
    assert len(back["empty"]) == 0
    assert back["func"] == "mean"
    assert back["versions"]["bulkpy"] == bk.__version__


def test_key_with_slash_rejected():
    with pytest.raises(ValueError, match="treated_vs_untreated"):
        check_key("treated/untreated")
    with pytest.raises(ValueError, match="'/'"):
        h5ad_safe({"a/b": 1})


def test_de_tables_roundtrip_and_subset(pasilla, tmp_h5ad):
    rng = np.random.default_rng(0)
    n = pasilla.n_vars
    tables = {
        c: pd.DataFrame(
            {"baseMean": rng.random(n), "log2FoldChange": rng.normal(size=n), "stat": rng.normal(size=n),
             "pvalue": rng.random(n), "padj": np.where(rng.random(n) < 0.1, np.nan, rng.random(n))},
            index=pasilla.var_names,
        )
        for c in ("treated_vs_untreated", "paired_vs_single")
    }
    write_de(pasilla, "de", tables, {"method": "test", "design": "~ type + condition"})
    back = roundtrip(pasilla, tmp_h5ad)
    for c, df in tables.items():
        pd.testing.assert_frame_equal(bk.get.de_df(back, "de", contrast=c), df, check_names=False)
    stats = bk.get.de_stats(back, "de")
    assert stats.shape == (2, n)
    sub = back[:, :10]
    assert bk.get.de_df(sub, "de", contrast="paired_vs_single").shape[0] == 10
    with pytest.raises(ValueError, match="pass contrast="):
        bk.get.de_df(back, "de")
    with pytest.raises(KeyError, match="contrasts"):
        bk.get.de_df(back, "de", contrast="nope")
    with pytest.raises(KeyError, match="no differential expression result"):
        bk.get.de_df(back, "other")
    # rewriting a key replaces its contrasts
    write_de(pasilla, "de", {"only": tables["paired_vs_single"]}, {"method": "test"})
    assert "de_treated_vs_untreated" not in pasilla.varm


def test_de_requires_columns(pasilla):
    df = pd.DataFrame({"stat": np.zeros(pasilla.n_vars)}, index=pasilla.var_names)
    with pytest.raises(ValueError, match="lacks columns"):
        write_de(pasilla, "de", {"a_vs_b": df}, {})
