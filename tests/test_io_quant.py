"""bk.io.read_quant: tximport's import and gene summarisation, against R tximport 1.26.

Core tests use the compact fixture in ``tests/fixtures/geuvadis6_quant`` (all 6 samples, the
transcripts of 280 genes; see its PROVENANCE.txt); the ``parity`` tests use the full data in
``../shared/data/geuvadis6_quant``.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, read_ref, roundtrip, shared_path
from helpers import rel_diff

import bulkpy as bk
from bulkpy._stats import tximport as tx
from bulkpy.io import _quant

DATASET = "geuvadis6_quant"
FIX = FIXTURES / DATASET
T2G_NAME = "tx2gene_gencode_v27_derived_from_rsem.csv.gz"
RUNS = pd.read_csv(FIX / "samples.txt", sep=" ")["run"].tolist()
LAYOUT = {"salmon": ("salmon", "quant.sf.gz"), "kallisto": ("kallisto_boot", "abundance.tsv.gz")}
TOL = 1e-6
LOGGER = "bulkpy.io._quant"


def quant_files(root: Path, type: str) -> dict[str, Path]:
    sub, name = LAYOUT[type]
    return {r: root / sub / r / name for r in RUNS}


def assert_matches_ref(adata, layer: str, ref_name: str, *, fixture_rows: bool = True):
    """The layer equals the R reference (genes × samples CSV) to TOL; with ``fixture_rows`` the
    genes read are exactly the rows of the trimmed reference in the fixture."""
    ref = read_ref(DATASET, ref_name)
    assert list(ref.columns) == list(adata.obs_names)
    if fixture_rows:
        trimmed = pd.read_csv(FIX / ref_name, index_col=0)
        assert list(adata.var_names) == list(trimmed.index)
    expected = ref.loc[adata.var_names].to_numpy().T
    got = adata.layers[layer]
    zero = expected == 0
    np.testing.assert_array_equal(got[zero], 0.0)
    d = rel_diff(got[~zero], expected[~zero])
    assert d.max() < TOL, f"{ref_name}: max relative difference {d.max():.3g}"
    return d


# ------------------------------------------------------------------------------------------
# the compact fixture: real data, R references for what trimming leaves unchanged


@pytest.fixture(scope="module")
def _fixture_gene_level():
    t2g = FIX / T2G_NAME
    return {t: bk.io.read_quant(quant_files(FIX, t), type=t, tx2gene=t2g) for t in LAYOUT}


@pytest.mark.parametrize("type", ["salmon", "kallisto"])
def test_fixture_gene_level_matches_r(_fixture_gene_level, type):
    adata = _fixture_gene_level[type]
    assert list(adata.obs_names) == RUNS
    assert_matches_ref(adata, "counts", f"{type}_no_counts.csv.gz")
    assert_matches_ref(adata, "abundance", f"{type}_abundance.csv.gz")
    assert_matches_ref(adata, "length", f"{type}_length.csv.gz")
    np.testing.assert_array_equal(adata.X, adata.layers["counts"])
    assert adata.X is not adata.layers["counts"]
    # the fixture exercises both of tximport's fills for zero-abundance genes
    zero = adata.layers["abundance"] == 0
    assert (zero.any(axis=0) & ~zero.all(axis=0)).sum() >= 10  # geometric mean of the other samples
    assert zero.all(axis=0).sum() >= 10  # average transcript length
    length = adata.layers["length"]
    assert np.isfinite(length).all() and (length > 0).all()
    params = adata.uns["tximport"]["params"]
    assert params["type"] == type and params["counts_from_abundance"] == "no" and params["level"] == "gene"
    assert [Path(f).parent.name for f in params["files"]] == RUNS
    assert params["n_transcripts_missing"] == (25 if type == "kallisto" else 0)
    assert adata.var["n_transcripts"].sum() == params["n_features_read"] - params["n_transcripts_missing"]


def test_fixture_length_fill_rules(_fixture_gene_level):
    """The two fills, checked by hand on the fixture's genes (and matching R above)."""
    adata = _fixture_gene_level["salmon"]
    ab, length = adata.layers["abundance"], adata.layers["length"]
    zero = ab == 0
    partial = np.flatnonzero(zero.any(axis=0) & ~zero.all(axis=0))
    g = partial[0]
    present = ~zero[:, g]
    expected = np.exp(np.mean(np.log(length[present, g])))
    np.testing.assert_allclose(length[~present, g], expected, rtol=1e-12)
    # all-zero gene: mean over its transcripts of their mean effective length
    g = np.flatnonzero(zero.all(axis=0))[0]
    gene = adata.var_names[g]
    t2g = pd.read_csv(FIX / T2G_NAME)
    txs = set(t2g.loc[t2g.GENEID == gene, "TXNAME"])
    per_sample = [
        pd.read_csv(f, sep="\t", index_col=0).loc[sorted(txs), "EffectiveLength"]
        for f in quant_files(FIX, "salmon").values()
    ]
    expected = pd.concat(per_sample, axis=1).mean(axis=1).mean()
    np.testing.assert_allclose(length[:, g], expected, rtol=1e-12)


@pytest.mark.parametrize("type", ["salmon", "kallisto"])
@pytest.mark.parametrize("mode", ["scaledTPM", "lengthScaledTPM"])
def test_fixture_counts_from_abundance(_fixture_gene_level, type, mode):
    """Trimming changes each sample's library total, so on the fixture the R values are matched up
    to one factor per sample; each sample keeps the total of its estimated counts."""
    adata = bk.io.read_quant(
        quant_files(FIX, type), type=type, tx2gene=FIX / T2G_NAME, counts_from_abundance=mode
    )
    plain = _fixture_gene_level[type]
    assert adata.uns["tximport"]["params"]["counts_from_abundance"] == mode
    np.testing.assert_array_equal(adata.layers["abundance"], plain.layers["abundance"])
    np.testing.assert_array_equal(adata.layers["length"], plain.layers["length"])
    np.testing.assert_allclose(adata.X.sum(axis=1), plain.X.sum(axis=1), rtol=1e-12)
    ref = read_ref(DATASET, f"{type}_{mode}_counts.csv.gz").loc[adata.var_names].to_numpy().T
    got = adata.layers["counts"]
    assert ((got == 0) == (ref == 0)).all()
    pos = ref > 0
    for i in range(adata.n_obs):
        ratio = got[i, pos[i]] / ref[i, pos[i]]
        assert rel_diff(ratio, np.median(ratio)).max() < TOL
    # and not proportional to the estimated counts: the mode really changed them
    assert not np.allclose(got, plain.X)


@pytest.mark.parametrize("type", ["salmon", "kallisto"])
def test_fixture_tx_out_matches_r(type):
    adata = bk.io.read_quant(quant_files(FIX, type), type=type, tx_out=True)
    n_rows = len(pd.read_csv(quant_files(FIX, type)[RUNS[0]], sep="\t"))
    assert adata.shape == (6, n_rows)
    assert adata.uns["tximport"]["params"]["level"] == "transcript"
    assert "gene_id" not in adata.var
    ref = pd.read_csv(FIX / f"{type}_txout_counts_head2000.csv.gz", index_col=0)
    assert len(ref) >= 5
    np.testing.assert_array_equal(adata[:, ref.index].layers["counts"], ref.to_numpy().T)


def test_tx_out_with_tx2gene_and_roundtrip(tmp_h5ad):
    adata = bk.io.read_quant(
        quant_files(FIX, "kallisto"), type="kallisto", tx2gene=FIX / T2G_NAME, tx_out=True
    )
    gene = adata.var["gene_id"]
    assert gene.isna().sum() == 25
    t2g = pd.read_csv(FIX / T2G_NAME, index_col=0)["GENEID"]
    mapped = gene.dropna()
    assert (mapped.astype(str) == t2g.loc[mapped.index]).all()
    back = roundtrip(adata, tmp_h5ad)
    pd.testing.assert_series_equal(back.var["gene_id"], adata.var["gene_id"])
    assert back.uns["tximport"]["params"]["level"] == "transcript"


def test_tx_out_counts_from_abundance():
    """Transcript-level scaledTPM/lengthScaledTPM (makeCountsFromAbundance on transcripts)."""
    files = quant_files(FIX, "salmon")
    plain = bk.io.read_quant(files, tx_out=True)
    for mode in ("scaledTPM", "lengthScaledTPM"):
        a = bk.io.read_quant(files, tx_out=True, counts_from_abundance=mode)
        new = plain.layers["abundance"] * (
            plain.layers["length"].mean(axis=0) if mode == "lengthScaledTPM" else 1.0
        )
        expected = new * (plain.X.sum(axis=1) / new.sum(axis=1))[:, None]
        np.testing.assert_allclose(a.X, expected, rtol=1e-12)


def test_h5ad_roundtrip(_fixture_gene_level, tmp_h5ad):
    adata = _fixture_gene_level["salmon"]
    back = roundtrip(adata, tmp_h5ad)
    for layer in ("counts", "abundance", "length"):
        np.testing.assert_array_equal(back.layers[layer], adata.layers[layer])
    np.testing.assert_array_equal(back.X, adata.X)
    pd.testing.assert_frame_equal(back.var, adata.var)
    p, q = back.uns["tximport"]["params"], adata.uns["tximport"]["params"]
    assert set(p) == set(q)
    for k in p:
        if k == "versions":
            assert dict(p[k]) == dict(q[k])
        else:
            np.testing.assert_array_equal(p[k], q[k])
    assert list(p["files"]) == [str(f) for f in quant_files(FIX, "salmon").values()]


# ------------------------------------------------------------------------------------------
# RSEM


def test_rsem_gene_level():
    paths = [FIX / "rsem" / r / f"{r}.genes.results.gz" for r in ("ERR188021", "ERR188088")]
    adata = bk.io.read_quant(paths, type="rsem")
    assert list(adata.obs_names) == ["ERR188021", "ERR188088"]
    raw = [pd.read_csv(p, sep="\t", index_col=0) for p in paths]
    assert list(adata.var_names) == list(raw[0].index)
    for i, df in enumerate(raw):
        np.testing.assert_array_equal(adata.layers["counts"][i], df["expected_count"].to_numpy())
        np.testing.assert_array_equal(adata.layers["abundance"][i], df["TPM"].to_numpy())
        # RSEM's 0 effective lengths become 1; the others are kept
        eff = df["effective_length"].to_numpy()
        assert (eff == 0).any()
        np.testing.assert_array_equal(adata.layers["length"][i], np.maximum(eff, 1.0))
    assert adata.uns["tximport"]["params"]["level"] == "gene"
    with pytest.raises(ValueError, match="transcript-level estimates"):
        bk.io.read_quant(paths, type="rsem", counts_from_abundance="lengthScaledTPM")
    with pytest.raises(ValueError, match="tx_out=True needs transcript-level"):
        bk.io.read_quant(paths, type="rsem", tx_out=True)
    with pytest.raises(ValueError, match="mix gene-level"):
        bk.io.read_quant(
            {"g": paths[0], "i": FIX / "rsem" / "ERR188021" / "ERR188021.isoforms.results.gz"}, type="rsem"
        )


def test_rsem_isoforms_sum_to_rsem_genes():
    """Summarising RSEM's isoform estimates gives RSEM's own gene estimates (both rounded to 0.01)."""
    iso = FIX / "rsem" / "ERR188021" / "ERR188021.isoforms.results.gz"
    with pytest.raises(ValueError, match="transcript level.*needs tx2gene"):
        bk.io.read_quant([iso], type="rsem")
    tx_level = bk.io.read_quant([iso], type="rsem", tx_out=True)
    assert list(tx_level.obs_names) == ["ERR188021"] and tx_level.n_vars == 854
    adata = bk.io.read_quant({"ERR188021": iso}, type="rsem", tx2gene=FIX / T2G_NAME)
    genes = pd.read_csv(FIX / "rsem" / "ERR188021" / "ERR188021.genes.results.gz", sep="\t", index_col=0)
    assert list(adata.var_names) == list(genes.index)
    n = adata.var["n_transcripts"].to_numpy()
    tol = 0.005 * (n + 1) + 1e-9
    assert (np.abs(adata.X[0] - genes["expected_count"].to_numpy()) <= tol).all()
    assert (np.abs(adata.layers["abundance"][0] - genes["TPM"].to_numpy()) <= tol).all()
    assert (adata.layers["length"] >= 1).all()


@pytest.mark.parity
def test_rsem_shared():
    """The full RSEM files, if the shared folder has them (the current one does not: see the fixture)."""
    folder = shared_path(DATASET, "rsem")
    paths = sorted(folder.glob("*/*.genes.results.gz"))
    adata = bk.io.read_quant(paths, type="rsem")
    first = pd.read_csv(paths[0], sep="\t", index_col=0)
    np.testing.assert_array_equal(adata.X[0], first["expected_count"].to_numpy())


# ------------------------------------------------------------------------------------------
# inputs: names, folders, compression, tx2gene forms, sample tables


def test_list_input_and_folders(_fixture_gene_level, tmp_path):
    t2g = FIX / T2G_NAME
    files = list(quant_files(FIX, "salmon").values())
    by_list = bk.io.read_quant(files[::-1], tx2gene=t2g)
    assert list(by_list.obs_names) == RUNS[::-1]
    np.testing.assert_array_equal(by_list.X, _fixture_gene_level["salmon"].X[::-1])
    by_folder = bk.io.read_quant([f.parent for f in files], tx2gene=t2g)
    assert list(by_folder.obs_names) == RUNS
    np.testing.assert_array_equal(by_folder.X, _fixture_gene_level["salmon"].X)
    with pytest.raises(FileNotFoundError, match="no salmon quantification file"):
        bk.io.read_quant([tmp_path], tx2gene=t2g)


def test_plain_text_and_misnamed_gzip(_fixture_gene_level, tmp_path):
    """Uncompressed files work, and gzip is recognised by content, not by name."""
    files = {}
    for i, (run, src) in enumerate(quant_files(FIX, "kallisto").items()):
        dst = tmp_path / run / "abundance.tsv"
        dst.parent.mkdir()
        if i % 2:
            shutil.copy(src, dst)  # gzip content without .gz
        else:
            with gzip.open(src, "rb") as fi:
                dst.write_bytes(fi.read())
        files[run] = dst
    a = bk.io.read_quant(files, type="kallisto", tx2gene=FIX / T2G_NAME)
    np.testing.assert_array_equal(a.X, _fixture_gene_level["kallisto"].X)
    np.testing.assert_array_equal(a.layers["length"], _fixture_gene_level["kallisto"].layers["length"])


def test_tx2gene_forms(_fixture_gene_level, tmp_path):
    files = quant_files(FIX, "salmon")
    expected = _fixture_gene_level["salmon"]
    t2g = pd.read_csv(FIX / T2G_NAME)
    tsv = tmp_path / "t2g.txt"
    t2g.to_csv(tsv, sep="\t", index=False, header=False)
    with_cols = t2g.assign(symbol="x")
    for form in (t2g, tsv, with_cols):
        a = bk.io.read_quant(files, tx2gene=form)
        np.testing.assert_array_equal(a.X, expected.X)
        assert list(a.var_names) == list(expected.var_names)
    assert bk.io.read_quant(files, tx2gene=t2g).uns["tximport"]["params"]["tx2gene"] == "DataFrame"
    # duplicated transcript rows: the first is used
    dup = pd.concat([t2g, t2g.assign(GENEID="other")], ignore_index=True)
    a = bk.io.read_quant(files, tx2gene=dup)
    assert "other" not in a.var_names
    np.testing.assert_array_equal(a.X, expected.X)


def test_ignore_tx_version(_fixture_gene_level):
    files = quant_files(FIX, "salmon")
    expected = _fixture_gene_level["salmon"]
    t2g = pd.read_csv(FIX / T2G_NAME)
    t2g = t2g[~t2g.TXNAME.str.endswith("_PAR_Y")]  # PAR_Y ids only differ after the version
    unversioned = t2g.assign(TXNAME=t2g.TXNAME.str.replace(r"\..*", "", regex=True))
    with pytest.raises(ValueError, match=r"none of the transcripts.*ignore_tx_version"):
        bk.io.read_quant(files, tx2gene=unversioned)
    a = bk.io.read_quant(files, tx2gene=unversioned, ignore_tx_version=True)
    b = bk.io.read_quant(files, tx2gene=t2g, ignore_tx_version=True)
    keep = expected.var_names[~expected.var_names.str.endswith("_PAR_Y")]
    for x in (a, b):
        assert list(x.var_names) == list(keep)
        np.testing.assert_allclose(x.X, expected[:, keep].X, rtol=1e-14)
        assert x.uns["tximport"]["params"]["ignore_tx_version"] is True


def _write_salmon(path: Path, names, tpm, reads, efflen):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "Name": names,
            "Length": np.asarray(efflen) + 100,
            "EffectiveLength": efflen,
            "TPM": tpm,
            "NumReads": reads,
        }
    ).to_csv(path, sep="\t", index=False)
    return path


def test_ignore_after_bar(tmp_path):
    names = ["ENST1.1|ENSG1.1|OTT|x|", "ENST2.3|ENSG1.1|OTT|y|", "ENST3.1|ENSG2.4|OTT|z|"]
    f1 = _write_salmon(
        tmp_path / "a" / "quant.sf", names, [1e5, 3e5, 6e5], [10.0, 20.0, 30.0], [100.0, 200.0, 300.0]
    )
    f2 = _write_salmon(
        tmp_path / "b" / "quant.sf", names, [0.0, 5e5, 5e5], [0.0, 30.0, 20.0], [110.0, 190.0, 310.0]
    )
    t2g = pd.DataFrame({"tx": ["ENST1.1", "ENST2.3", "ENST3.1"], "gene": ["ENSG1.1", "ENSG1.1", "ENSG2.4"]})
    with pytest.raises(ValueError, match="ignore_after_bar"):
        bk.io.read_quant([f1, f2], tx2gene=t2g)
    a = bk.io.read_quant([f1, f2], tx2gene=t2g, ignore_after_bar=True)
    assert list(a.obs_names) == ["a", "b"] and list(a.var_names) == ["ENSG1.1", "ENSG2.4"]
    np.testing.assert_array_equal(a.X, [[30.0, 30.0], [30.0, 20.0]])
    np.testing.assert_array_equal(a.layers["abundance"], [[4e5, 6e5], [5e5, 5e5]])
    np.testing.assert_allclose(a.layers["length"], [[(1e5 * 100 + 3e5 * 200) / 4e5, 300.0], [190.0, 310.0]])
    t = bk.io.read_quant([f1, f2], tx_out=True, ignore_after_bar=True)
    assert list(t.var_names) == ["ENST1.1", "ENST2.3", "ENST3.1"]
    assert list(bk.io.read_quant([f1, f2], tx_out=True).var_names) == names


def test_kallisto_h5(tmp_path):
    import h5py

    ids = ["t1", "t2", "t3"]
    counts = np.array([[10.0, 0.0, 30.0], [5.0, 5.0, 0.0]])
    efflen = np.array([[100.0, 200.0, 300.0], [90.0, 210.0, 290.0]])
    files = {}
    for i, s in enumerate(("s1", "s2")):
        p = tmp_path / s / "abundance.h5"
        p.parent.mkdir()
        with h5py.File(p, "w") as f:
            f["est_counts"] = counts[i]
            f["aux/ids"] = np.array(ids, dtype="S")
            f["aux/eff_lengths"] = efflen[i]
        files[s] = p
    a = bk.io.read_quant(list(files.values()), type="kallisto", tx_out=True)
    assert list(a.obs_names) == ["s1", "s2"] and list(a.var_names) == ids
    rate = counts / efflen
    np.testing.assert_allclose(a.layers["abundance"], rate / rate.sum(axis=1, keepdims=True) * 1e6)
    np.testing.assert_array_equal(a.X, counts)
    g = bk.io.read_quant(files, type="kallisto", tx2gene=pd.DataFrame({"t": ids, "g": ["A", "A", "B"]}))
    np.testing.assert_array_equal(g.X, [[10.0, 30.0], [10.0, 0.0]])


def test_samples_table(tmp_path):
    files = quant_files(FIX, "salmon")
    table = pd.read_csv(FIX / "samples.txt", sep=" ").set_index("run").iloc[::-1]
    a = bk.io.read_quant(files, tx_out=True, samples=table)
    assert list(a.obs_names) == RUNS
    assert list(a.obs["sample"]) == list(table.loc[RUNS, "sample"])
    bad = table.rename(index={"ERR188021": "ERR188021_x"}).drop(index="ERR188356")
    with pytest.raises(
        ValueError,
        match=r"In files but not in samples: \['ERR188021', 'ERR188356'\].*In samples but not in files: \['ERR188021_x'\]",
    ):
        bk.io.read_quant(files, tx_out=True, samples=bad)
    with pytest.raises(TypeError, match="DataFrame indexed by sample name"):
        bk.io.read_quant(files, tx_out=True, samples=list(RUNS))


# ------------------------------------------------------------------------------------------
# bad input


def test_missing_file_is_named(tmp_path):
    files = quant_files(FIX, "salmon")
    files["ERR999"] = tmp_path / "ERR999" / "quant.sf.gz"
    with pytest.raises(FileNotFoundError, match=r"1 quantification file.*ERR999/quant\.sf\.gz"):
        bk.io.read_quant(files, tx2gene=FIX / T2G_NAME)
    with pytest.raises(FileNotFoundError, match="tx2gene file not found"):
        bk.io.read_quant(quant_files(FIX, "salmon"), tx2gene=tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"type": "stringtie"},
            ValueError,
            r"type='stringtie' is not supported.*'salmon', 'kallisto', 'rsem'",
        ),
        (
            {"counts_from_abundance": "dtuScaledTPM"},
            ValueError,
            "counts_from_abundance='dtuScaledTPM' is not supported",
        ),
        ({"tx2gene": None}, ValueError, "needs tx2gene"),
        ({"tx2gene": 3}, TypeError, "tx2gene must be a DataFrame"),
        ({"tx2gene": pd.DataFrame({"tx": ["a"]})}, ValueError, "two columns"),
        (
            {"tx2gene": pd.DataFrame({"tx": ["a", None], "g": ["b", "c"]})},
            ValueError,
            "missing transcript or gene",
        ),
        (
            {"tx2gene": pd.DataFrame({"tx": ["a"], "g": ["b"]})},
            ValueError,
            r"none of the transcripts.*Example ids \(files\): \['ENST",
        ),
        ({"tx_out": 1}, TypeError, "tx_out must be True or False"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"tx2gene": FIX / T2G_NAME, **kwargs}
    with pytest.raises(error, match=match):
        bk.io.read_quant(quant_files(FIX, "salmon"), **args)


def test_bad_files_argument(tmp_path):
    with pytest.raises(TypeError, match="mapping sample -> path"):
        bk.io.read_quant(42, tx_out=True)
    with pytest.raises(ValueError, match="files is empty"):
        bk.io.read_quant([], tx_out=True)
    with pytest.raises(TypeError, match="strings or os.PathLike"):
        bk.io.read_quant([1, 2], tx_out=True)


def test_duplicated_sample_names(tmp_path):
    f = quant_files(FIX, "salmon")[RUNS[0]]
    other = tmp_path / "x" / RUNS[0] / "quant.sf.gz"
    other.parent.mkdir(parents=True)
    shutil.copy(f, other)
    with pytest.raises(ValueError, match=rf"duplicated sample names \['{RUNS[0]}'\].*mapping sample -> path"):
        bk.io.read_quant([f, other], tx_out=True)
    a = bk.io.read_quant({"one": f, "two": other}, tx_out=True)
    assert list(a.obs_names) == ["one", "two"]
    with pytest.raises(ValueError, match="duplicated sample names"):
        bk.io.read_quant(pd.Series([f, other], index=["s", "s"]), tx_out=True)


def test_wrong_type_hint():
    with pytest.raises(
        ValueError,
        match=r"not a salmon quantification file.*looks like a kallisto file: pass type='kallisto'",
    ):
        bk.io.read_quant(quant_files(FIX, "kallisto"), type="salmon", tx_out=True)


def test_missing_transcripts_logged(caplog):
    t2g = pd.read_csv(FIX / T2G_NAME)
    files = quant_files(FIX, "salmon")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        a = bk.io.read_quant(files, tx2gene=t2g.iloc[10:])
    assert "transcripts missing from tx2gene: 10 of 854" in caplog.text
    assert a.uns["tximport"]["params"]["n_transcripts_missing"] == 10
    assert a.var["n_transcripts"].sum() == 844


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("Name\tLength\tEffectiveLength\tTPM\tNumReads\nt1\t10\t5\t-1\t3\n", "negative"),
        ("Name\tLength\tEffectiveLength\tTPM\tNumReads\nt1\t10\t5\tNA\t3\n", "missing, infinite or negative"),
        ("Name\tLength\tEffectiveLength\tTPM\tNumReads\nt1\t10\t5\tabc\t3\n", "non-numeric"),
        ("", "empty"),
    ],
)
def test_bad_file_content(tmp_path, content, match):
    p = tmp_path / "s1" / "quant.sf"
    p.parent.mkdir()
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        bk.io.read_quant([p], tx_out=True)


def test_files_with_different_transcripts(tmp_path):
    f1 = _write_salmon(tmp_path / "a" / "quant.sf", ["t1", "t2"], [5e5, 5e5], [1.0, 2.0], [10.0, 20.0])
    f2 = _write_salmon(tmp_path / "b" / "quant.sf", ["t1", "t3"], [5e5, 5e5], [1.0, 2.0], [10.0, 20.0])
    with pytest.raises(ValueError, match="does not hold the same features"):
        bk.io.read_quant([f1, f2], tx_out=True)
    # the same transcripts in another order are aligned
    f3 = _write_salmon(tmp_path / "c" / "quant.sf", ["t2", "t1"], [4e5, 6e5], [2.0, 1.0], [20.0, 10.0])
    a = bk.io.read_quant([f1, f3], tx_out=True)
    np.testing.assert_array_equal(a.X, [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_array_equal(a.layers["abundance"][1], [6e5, 4e5])


# ------------------------------------------------------------------------------------------
# tx2gene from the GTF annotation (R: makeTxDbFromGFF + select(txdb, keys, "GENEID", "TXNAME"))


def _split_version(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    parts = ids.str.split(".", n=1, expand=True)
    return parts[0], parts[1]


def _write_gtf(path: Path, t2g: pd.DataFrame, *, style: str = "gencode", versions: bool = True) -> Path:
    """The committed tx2gene table written as a GTF: for each gene a gene line, for each transcript
    a transcript and an exon line. ``style="gencode"``: versioned ids, gene_type; ``"ensembl"``:
    ids without versions, given as gene_version / transcript_version (left out with
    ``versions=False``), gene_biotype, an Ensembl-like header."""
    tx, gene = t2g.iloc[:, 0].astype(str), t2g.iloc[:, 1].astype(str)
    if style == "ensembl":
        header = ["#!genome-build GRCh38.p14", "#!genome-version GRCh38"]
        tx_id, tx_v = _split_version(tx)
        gene_id, gene_v = _split_version(gene)
    else:
        header = ["##description: evidence-based annotation of the human genome (GRCh38)", "##format: gtf"]
        tx_id, gene_id = tx, gene
    lines, seen = list(header), set()
    for i in range(len(t2g)):
        if style == "ensembl":
            g_attr = f'gene_id "{gene_id.iloc[i]}";' + (f' gene_version "{gene_v.iloc[i]}";' if versions else "")
            t_attr = g_attr + f' transcript_id "{tx_id.iloc[i]}";' + (
                f' transcript_version "{tx_v.iloc[i]}";' if versions else ""
            )
            g_attr += ' gene_biotype "protein_coding";'
        else:
            g_attr = f'gene_id "{gene_id.iloc[i]}"; gene_type "protein_coding"; level 2;'
            t_attr = f'gene_id "{gene_id.iloc[i]}"; transcript_id "{tx_id.iloc[i]}"; gene_type "protein_coding"; tag "basic";'
        start = 1000 * (i + 1)
        if gene.iloc[i] not in seen:
            seen.add(gene.iloc[i])
            lines.append(f"chr1\tHAVANA\tgene\t{start}\t{start + 900}\t.\t+\t.\t{g_attr}")
        lines.append(f"chr1\tHAVANA\ttranscript\t{start}\t{start + 500}\t.\t+\t.\t{t_attr}")
        lines.append(f"chr1\tHAVANA\texon\t{start}\t{start + 100}\t.\t+\t.\t{t_attr} exon_number 1;")
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _assert_same_quant(a, b):
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    np.testing.assert_array_equal(a.X, b.X)
    for layer in ("counts", "abundance", "length"):
        np.testing.assert_array_equal(a.layers[layer], b.layers[layer])
    pd.testing.assert_frame_equal(a.var, b.var)
    pa, pb = dict(a.uns["tximport"]["params"]), dict(b.uns["tximport"]["params"])
    pa.pop("tx2gene"), pb.pop("tx2gene")
    assert pa.keys() == pb.keys()
    for k in pa:
        if k != "versions":
            np.testing.assert_equal(pa[k], pb[k])


@pytest.mark.parametrize("type", ["salmon", "kallisto"])
@pytest.mark.parametrize("name", ["gencode.gtf", "gencode.gtf.gz", "annotation.txt"])
def test_tx2gene_gtf_same_as_table(_fixture_gene_level, tmp_path, type, name):
    """The GTF the index came from gives exactly what the tx2gene table gives (a ``.txt`` name is
    recognised by its content)."""
    gtf = _write_gtf(tmp_path / name, pd.read_csv(FIX / T2G_NAME))
    a = bk.io.read_quant(quant_files(FIX, type), type=type, tx2gene=gtf)
    _assert_same_quant(a, _fixture_gene_level[type])
    assert a.uns["tximport"]["params"]["tx2gene"] == str(gtf)
    # the same from a path string, and transcript level with each transcript's gene
    t = bk.io.read_quant(quant_files(FIX, type), type=type, tx2gene=str(gtf), tx_out=True)
    t_csv = bk.io.read_quant(quant_files(FIX, type), type=type, tx2gene=FIX / T2G_NAME, tx_out=True)
    _assert_same_quant(t, t_csv)


def test_tx2gene_gtf_ensembl_style(_fixture_gene_level, tmp_path):
    """Ensembl GTFs give versions apart: transcript ids get theirs back (they match the quant files
    as they are), gene ids stay unversioned. Without versions, ignore_tx_version=True matches."""
    t2g = pd.read_csv(FIX / T2G_NAME)
    t2g = t2g[~t2g.TXNAME.str.endswith("_PAR_Y")]  # GENCODE's chrY copies have no Ensembl form
    expected = _fixture_gene_level["salmon"]
    keep = expected.var_names[~expected.var_names.str.endswith("_PAR_Y")]
    files = quant_files(FIX, "salmon")
    a = bk.io.read_quant(files, tx2gene=_write_gtf(tmp_path / "ens.gtf.gz", t2g, style="ensembl"))
    assert list(a.var_names) == [g.split(".")[0] for g in keep]
    np.testing.assert_array_equal(a.X, expected[:, keep].X)
    np.testing.assert_array_equal(a.layers["length"], expected[:, keep].layers["length"])
    n_par = int(pd.read_csv(FIX / T2G_NAME).TXNAME.str.endswith("_PAR_Y").sum())
    assert a.uns["tximport"]["params"]["n_transcripts_missing"] == n_par

    bare = _write_gtf(tmp_path / "bare.gtf", t2g, style="ensembl", versions=False)
    with pytest.raises(ValueError, match=r"none of the transcripts.*ignore_tx_version=True"):
        bk.io.read_quant(files, tx2gene=bare)
    b = bk.io.read_quant(files, tx2gene=bare, ignore_tx_version=True)
    c = bk.io.read_quant(files, tx2gene=t2g, ignore_tx_version=True)
    assert list(b.var_names) == [g.split(".")[0] for g in c.var_names]
    np.testing.assert_array_equal(b.X, c.X)
    assert b.uns["tximport"]["params"]["ignore_tx_version"] is True


def test_tx2gene_gtf_errors(tmp_path):
    files = quant_files(FIX, "salmon")
    gff3 = tmp_path / "genes.gff3"
    gff3.write_text("##gff-version 3\nchr1\tsrc\tmRNA\t1\t9\t.\t+\t.\tID=transcript:T1;Parent=gene:G1\n")
    with pytest.raises(ValueError, match="is a GFF3 file"):
        bk.io.read_quant(files, tx2gene=gff3)
    genes_only = tmp_path / "genes_only.gtf"
    genes_only.write_text('chr1\tsrc\tgene\t1\t9\t.\t+\t.\tgene_id "G1";\n')
    with pytest.raises(ValueError, match=r"has no 'transcript' or 'exon' line.*\['gene'\]"):
        bk.io.read_quant(files, tx2gene=genes_only)
    no_tx_id = tmp_path / "no_tx_id.gtf"
    no_tx_id.write_text('chr1\tsrc\ttranscript\t1\t9\t.\t+\t.\tgene_id "G1"; transcript_name "A";\n')
    with pytest.raises(ValueError, match=r"has the attribute\(s\) \['transcript_id'\]"):
        bk.io.read_quant(files, tx2gene=no_tx_id)


# ------------------------------------------------------------------------------------------
# the engine on small hand-made cases


def test_engine_summarize_by_hand():
    # 2 samples × 4 transcripts; genes: t0,t1 -> 0; t2 -> 1; t3 -> 2
    abundance = np.array([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    counts = np.array([[2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 6.0, 0.0]])
    length = np.array([[100.0, 200.0, 50.0, 10.0], [120.0, 220.0, 60.0, 30.0]])
    codes = np.array([0, 0, 1, 2])
    ab, cnt, ln = tx.summarize_to_gene(abundance, counts, length, codes, 3)
    np.testing.assert_array_equal(ab, [[4.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    np.testing.assert_array_equal(cnt, [[6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    # gene 0: weighted in sample 0 (175), missing in sample 1 -> geometric mean of the others = 175
    # gene 1: missing in sample 0 -> 60; gene 2: missing everywhere -> mean(10, 30) = 20
    np.testing.assert_allclose(ln, [[175.0, 60.0, 20.0], [175.0, 60.0, 20.0]])
    _, cnt_s, _ = tx.summarize_to_gene(
        abundance, counts, length, codes, 3, counts_from_abundance_method="lengthScaledTPM"
    )
    np.testing.assert_allclose(cnt_s, [[6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])


def test_engine_geometric_fill_and_zero_sample():
    ln = np.array([[np.nan, 1.0], [4.0, np.nan], [16.0, np.nan]])
    out = tx.replace_missing_length(ln, np.array([7.0, 9.0]))
    np.testing.assert_allclose(out, [[8.0, 1.0], [4.0, 1.0], [16.0, 1.0]])
    counts = np.array([[3.0, 1.0], [0.0, 0.0]])
    ab = np.array([[1.0, 1.0], [0.0, 0.0]])
    out = tx.counts_from_abundance(counts, ab, np.ones((2, 2)), "scaledTPM")
    np.testing.assert_array_equal(out, [[2.0, 2.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="codes must lie"):
        tx.group_sum(np.ones((1, 2)), np.array([0, 5]), 2)


# ------------------------------------------------------------------------------------------
# full parity on the shared data (6 samples, 200,401 salmon / 178,136 kallisto transcripts)


@pytest.fixture(scope="module")
def parse_once():
    """Parse each set of shared files once per module: later read_quant calls on the same paths get
    copies of the parsed matrices, so all modes run through the public function without re-reading
    1.2 M lines each time (parsing itself is checked by the first call against R)."""
    cache = {}
    real = _quant._read_all

    def cached(paths, type):
        key = (tuple(map(str, paths)), type)
        if key not in cache:
            cache[key] = real(paths, type)
        ids, ab, cnt, ln, gene_level = cache[key]
        return ids.copy(), ab.copy(), cnt.copy(), ln.copy(), gene_level

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_quant, "_read_all", cached)
        yield


@pytest.mark.parity
@pytest.mark.parametrize("type", ["salmon", "kallisto"])
@pytest.mark.parametrize("mode", ["no", "scaledTPM", "lengthScaledTPM"])
def test_parity_shared_gene_level(parse_once, type, mode):
    root = shared_path(DATASET)
    adata = bk.io.read_quant(
        quant_files(root, type), type=type, tx2gene=root / T2G_NAME, counts_from_abundance=mode
    )
    layers = [("counts", f"{mode}_counts")]
    if mode == "no":
        layers += [("abundance", "abundance"), ("length", "length")]
    for layer, name in layers:
        ref = read_ref(DATASET, f"{type}_{name}.csv.gz")
        assert list(ref.index) == list(adata.var_names)
        assert_matches_ref(adata, layer, f"{type}_{name}.csv.gz", fixture_rows=False)
    length = adata.layers["length"]
    assert np.isfinite(length).all() and (length > 0).all()
    assert adata.n_vars == {"salmon": 58288, "kallisto": 34756}[type]
    assert adata.uns["tximport"]["params"]["n_transcripts_missing"] == {"salmon": 0, "kallisto": 16434}[type]


@pytest.mark.parity
@pytest.mark.parametrize("type", ["salmon", "kallisto"])
def test_parity_shared_tx_out(parse_once, type):
    root = shared_path(DATASET)
    adata = bk.io.read_quant(quant_files(root, type), type=type, tx_out=True)
    ref = read_ref(DATASET, f"{type}_txout_counts_head2000.csv.gz")
    assert adata.n_vars == {"salmon": 200401, "kallisto": 178136}[type]
    assert list(adata.var_names[:2000]) == list(ref.index)
    np.testing.assert_array_equal(adata.layers["counts"][:, :2000], ref.to_numpy().T)
