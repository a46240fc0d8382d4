"""Transcript quantifications (salmon, kallisto, RSEM) into AnnData, as R's tximport does."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._slots import COUNTS, write_params
from .._stats import tximport as _tx
from .._validate import check_choice
from . import _gtf

logger = logging.getLogger(__name__)

UNS_KEY = "tximport"

# column names per tool: (id, abundance, counts, length)
_COLUMNS = {
    "salmon": ("Name", "TPM", "NumReads", "EffectiveLength"),
    "kallisto": ("target_id", "tpm", "est_counts", "eff_length"),
    "rsem": ("transcript_id", "TPM", "expected_count", "effective_length"),
}
_RSEM_GENE_ID = "gene_id"
_TYPES = tuple(_COLUMNS)
# per-sample files whose name says nothing about the sample: the sample is the folder
_STANDARD_NAMES = {"quant.sf", "quant.genes.sf", "abundance.tsv", "abundance.h5"}
_RSEM_SUFFIXES = (".genes.results", ".isoforms.results")
_COMPRESSION_EXT = (".gz", ".bz2", ".xz", ".zip", ".zst")
# the file to pick when a sample's output folder is given
_IN_FOLDER = {
    "salmon": ("quant.sf", "quant.sf.gz"),
    "kallisto": ("abundance.tsv", "abundance.tsv.gz", "abundance.h5"),
    "rsem": ("*.genes.results", "*.genes.results.gz", "*.isoforms.results", "*.isoforms.results.gz"),
}


# --------------------------------------------------------------------------------------------
# files and sample names


def _strip_compression(name: str) -> str:
    low = name.lower()
    for ext in _COMPRESSION_EXT:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _sample_name(path: Path) -> str:
    base = _strip_compression(path.name)
    if base.lower() in _STANDARD_NAMES:
        parent = path.parent.name or path.resolve().parent.name
        return parent
    for suffix in _RSEM_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return Path(base).stem or base


def _in_folder(folder: Path, type: str) -> Path:
    for pattern in _IN_FOLDER[type]:
        hits = sorted(folder.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(
                f"folder {str(folder)!r} holds several {type} files matching {pattern!r}: "
                f"{[h.name for h in hits]}; pass the file paths instead"
            )
    raise FileNotFoundError(
        f"folder {str(folder)!r} holds no {type} quantification file (looked for {list(_IN_FOLDER[type])})"
    )


def _collect_files(files, type: str) -> tuple[list[str], list[Path]]:
    """Sample names and file paths, in the order given; every file checked to exist."""
    if isinstance(files, str | os.PathLike):
        files = [files]
    if isinstance(files, Mapping | pd.Series):
        items = [(k, v) for k, v in files.items()]
        names_given = True
    elif isinstance(files, list | tuple | pd.Index | np.ndarray):
        items = [(None, v) for v in files]
        names_given = False
    else:
        raise TypeError(
            f"files must be a mapping sample -> path, a list of paths or one path, got {_type_name(files)}"
        )
    if not items:
        raise ValueError("files is empty; pass at least one quantification file")
    names, paths, missing = [], [], []
    for key, value in items:
        if not isinstance(value, str | os.PathLike):
            raise TypeError(f"file paths must be strings or os.PathLike, got {_type_name(value)} ({value!r})")
        p = Path(value)
        if not p.exists():
            missing.append(str(p))
            continue
        if p.is_dir():
            name = p.name or p.resolve().name
            p = _in_folder(p, type)
        else:
            name = _sample_name(p)
        names.append(str(key) if names_given else name)
        paths.append(p)
    if missing:
        raise FileNotFoundError(f"{len(missing)} quantification file(s) not found: {missing[:20]}")
    counts = pd.Series(names).value_counts()
    dup = counts[counts > 1].index.tolist()
    if dup:
        how = (
            "the sample names given"
            if names_given
            else "the sample names inferred from the paths (the folder for quant.sf/abundance.tsv, else the file name)"
        )
        raise ValueError(
            f"duplicated sample names {dup[:10]} in {how}; pass a mapping sample -> path with unique names"
        )
    return names, paths


def _type_name(x) -> str:
    return type(x).__name__


# --------------------------------------------------------------------------------------------
# reading one file


def _compression(path: Path) -> str | None:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic[:3] == b"BZh":
        return "bz2"
    if magic[:4] == b"\xfd7zX":
        return "xz"
    if magic[:4] == b"(\xb5/\xfd":
        return "zstd"
    if magic[:4] == b"PK\x03\x04":
        return "zip"
    return None


def _header(path: Path, compression: str | None) -> list[str]:
    try:
        return list(pd.read_csv(path, sep="\t", nrows=0, compression=compression).columns)
    except pd.errors.EmptyDataError:
        raise ValueError(f"quantification file {str(path)!r} is empty") from None
    except (UnicodeDecodeError, OSError) as err:
        raise ValueError(f"can not read {str(path)!r} as a tab-separated text file ({err})") from None


def _guess_type(columns: list[str]) -> str | None:
    for t, cols in _COLUMNS.items():
        if set(cols[1:]) <= set(columns) and (
            cols[0] in columns or (t == "rsem" and _RSEM_GENE_ID in columns)
        ):
            return t
    return None


def _read_kallisto_h5(path: Path) -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ids = np.asarray(f["aux/ids"][:])
            counts = np.asarray(f["est_counts"][:], dtype=np.float64)
            length = np.asarray(f["aux/eff_lengths"][:], dtype=np.float64)
    except (OSError, KeyError) as err:
        raise ValueError(
            f"can not read {str(path)!r} as kallisto abundance.h5 (needs est_counts, aux/ids, aux/eff_lengths): {err}"
        ) from None
    ids = pd.Index([i.decode() if isinstance(i, bytes) else str(i) for i in ids], dtype=object)
    if not (len(ids) == len(counts) == len(length)):
        raise ValueError(f"{str(path)!r}: est_counts, aux/ids and aux/eff_lengths differ in length")
    # kallisto's h5 holds no TPM: tximport computes it from counts and effective lengths
    rate = np.divide(counts, length, out=np.zeros_like(counts), where=length > 0)
    total = rate.sum()
    tpm = rate * (1e6 / total) if total > 0 else rate
    return ids, tpm, counts, length


def _read_one(path: Path, type: str) -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray, bool]:
    """(ids, abundance, counts, length, gene_level) of one file."""
    if type == "kallisto" and _strip_compression(path.name).lower().endswith(".h5"):
        return (*_read_kallisto_h5(path), False)
    comp = _compression(path)
    columns = _header(path, comp)
    id_col, ab_col, cnt_col, len_col = _COLUMNS[type]
    gene_level = False
    if type == "rsem" and columns and columns[0] == _RSEM_GENE_ID:
        id_col, gene_level = _RSEM_GENE_ID, True
    need = [id_col, ab_col, cnt_col, len_col]
    absent = [c for c in need if c not in columns]
    if absent:
        guess = _guess_type(columns)
        hint = f" It looks like a {guess} file: pass type={guess!r}." if guess and guess != type else ""
        raise ValueError(
            f"{str(path)!r} is not a {type} quantification file: it lacks the column(s) {absent} "
            f"(columns found: {columns[:10]}).{hint}"
        )
    df = pd.read_csv(
        path, sep="\t", usecols=need, dtype={id_col: str}, compression=comp, engine="c", na_filter=True
    )
    out = []
    for col in (ab_col, cnt_col, len_col):
        s = df[col]
        if not pd.api.types.is_numeric_dtype(s):
            bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
            raise ValueError(
                f"{str(path)!r}: column {col!r} holds non-numeric values, e.g. {s[bad].head(3).tolist()}"
            )
        v = s.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v) | (v < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{str(path)!r}: column {col!r} has {int(bad.sum())} missing, infinite or negative values "
                f"(first at {df[id_col].iloc[i]!r}: {v[i]}); quantifications must be finite and >= 0"
            )
        out.append(v)
    ids = df[id_col]
    if ids.isna().any():
        raise ValueError(f"{str(path)!r}: {int(ids.isna().sum())} rows have no {id_col}")
    return pd.Index(ids.to_numpy(dtype=object), dtype=object), out[0], out[1], out[2], gene_level


def _read_all(paths: list[Path], type: str):
    """Stack the files into samples × features matrices, checking that they hold the same features."""
    ids = None
    gene_level = None
    ab, cnt, ln = [], [], []
    for p in paths:
        ids_i, a, c, length, gl = _read_one(p, type)
        if gene_level is None:
            gene_level = gl
        elif gl != gene_level:
            raise ValueError(
                "the RSEM files mix gene-level (genes.results) and transcript-level (isoforms.results) "
                f"files ({str(paths[0])!r} vs {str(p)!r}); pass one kind"
            )
        if ids is None:
            ids = ids_i
        elif not (len(ids_i) == len(ids) and np.array_equal(ids_i.to_numpy(), ids.to_numpy())):
            # the same features in another order can be aligned; other differences can not
            if ids.is_unique and ids_i.is_unique and len(ids_i) == len(ids) and ids_i.isin(ids).all():
                order = ids_i.get_indexer(ids)
                a, c, length = a[order], c[order], length[order]
            else:
                only_here = ids_i.difference(ids)
                only_first = ids.difference(ids_i)
                raise ValueError(
                    f"{str(p)!r} does not hold the same features as {str(paths[0])!r} "
                    f"({len(ids_i)} vs {len(ids)} rows; {len(only_here)} only in the former, e.g. {list(only_here[:3])}, "
                    f"{len(only_first)} only in the latter, e.g. {list(only_first[:3])}); "
                    "all samples must be quantified against the same index"
                )
        ab.append(a)
        cnt.append(c)
        ln.append(length)
    return ids, np.vstack(ab), np.vstack(cnt), np.vstack(ln), bool(gene_level)


# --------------------------------------------------------------------------------------------
# tx2gene


def _strip_ids(ids: pd.Index | pd.Series, ignore_tx_version: bool, ignore_after_bar: bool):
    s = pd.Series(np.asarray(ids, dtype=object), dtype=object)
    if ignore_tx_version:
        return s.str.partition(".")[0]
    if ignore_after_bar:
        return s.str.partition("|")[0]
    return s


def _sep_for(path: Path, compression: str | None) -> str:
    name = _strip_compression(path.name).lower()
    if name.endswith(".csv"):
        return ","
    if name.endswith((".tsv", ".tab")):
        return "\t"
    first = pd.read_csv(path, sep="\t", header=None, nrows=1, dtype=str, compression=compression)
    line = "\t".join(first.iloc[0].astype(str)) if len(first) else ""
    return "\t" if first.shape[1] > 1 else ("," if "," in line else "\t")


def _load_tx2gene(tx2gene) -> tuple[pd.DataFrame, bool]:
    """A two-column frame of strings (tx, gene); ``True`` if its first row may be a header."""
    if isinstance(tx2gene, pd.DataFrame):
        df, maybe_header = tx2gene, False
    elif isinstance(tx2gene, str | os.PathLike):
        p = Path(tx2gene)
        if not p.exists():
            raise FileNotFoundError(f"tx2gene file not found: {str(p)!r}")
        if p.is_dir():
            raise IsADirectoryError(f"tx2gene path {str(p)!r} is a directory; pass a CSV/TSV or GTF file")
        if _gtf.looks_like_gtf(p):
            return _gtf.tx2gene(p), False
        comp = _compression(p)
        try:
            sep = _sep_for(p, comp)
            df = pd.read_csv(p, sep=sep, header=None, dtype=str, compression=comp, comment="#")
        except pd.errors.EmptyDataError:
            raise ValueError(f"tx2gene file {str(p)!r} is empty") from None
        maybe_header = True
    else:
        raise TypeError(
            "tx2gene must be a DataFrame (first column transcript id, second gene id) or the path of a CSV/TSV "
            f"file of that shape or of a GTF file, got {_type_name(tx2gene)}"
        )
    if df.shape[1] < 2:
        raise ValueError(
            f"tx2gene needs two columns (transcript id, gene id), got {df.shape[1]} column(s): {list(map(str, df.columns))}"
        )
    out = df.iloc[:, :2].copy()
    out.columns = ["tx", "gene"]
    na = out.isna().any(axis=1)
    if na.any():
        raise ValueError(
            f"tx2gene has {int(na.sum())} rows with a missing transcript or gene id; drop or fill them"
        )
    out = out.astype(str)
    if out.shape[0] == 0:
        raise ValueError("tx2gene is empty")
    return out.reset_index(drop=True), maybe_header


def _map_to_genes(tx_ids: pd.Index, tx2gene, ignore_tx_version: bool, ignore_after_bar: bool):
    """Indices of the transcripts kept, their gene codes, the gene ids (sorted) and the number dropped."""
    t2g, maybe_header = _load_tx2gene(tx2gene)
    keys = _strip_ids(tx_ids, ignore_tx_version, ignore_after_bar)
    t2g_tx = _strip_ids(t2g["tx"], ignore_tx_version, ignore_after_bar)
    dup = t2g_tx.duplicated()
    if dup.any():
        logger.info("tx2gene: removing %d duplicated transcript rows (keeping the first)", int(dup.sum()))
        t2g_tx, t2g = t2g_tx[~dup], t2g[~dup.to_numpy()]
    lookup = pd.Index(t2g_tx.to_numpy(dtype=object))
    pos = lookup.get_indexer(keys.to_numpy(dtype=object))
    matched = pos >= 0
    if not matched.any():
        raise ValueError(
            "none of the transcripts in the quantification files are in the first column of tx2gene; "
            "check that both come from the same annotation. "
            f"Example ids (files): {list(keys[:3])}; example ids (tx2gene): {list(t2g_tx[: 3 + int(maybe_header)])}. "
            "ignore_tx_version=True (drop '.N' versions) or ignore_after_bar=True (drop '|...' fields) may help."
        )
    n_missing = int((~matched).sum())
    if n_missing:
        logger.info("transcripts missing from tx2gene: %d of %d (dropped)", n_missing, len(keys))
    keep = np.flatnonzero(matched)
    genes_of_kept = t2g["gene"].to_numpy(dtype=object)[pos[keep]]
    codes, genes = pd.factorize(genes_of_kept, sort=True)
    return keep, codes.astype(np.intp), pd.Index(genes, dtype=object), n_missing


# --------------------------------------------------------------------------------------------
# obs from the sample table


def _obs(names: list[str], samples) -> pd.DataFrame:
    if samples is None:
        return pd.DataFrame(index=pd.Index(names, dtype=object))
    if not isinstance(samples, pd.DataFrame):
        raise TypeError(f"samples must be a DataFrame indexed by sample name, got {_type_name(samples)}")
    table = samples.copy()
    table.index = table.index.astype(str)
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()].unique().tolist()[:10]
        raise ValueError(f"duplicated sample names in the samples table: {dup}")
    in_files = [n for n in names if n not in table.index]
    in_table = [n for n in table.index if n not in set(names)]
    if in_files or in_table:
        msg = (
            "sample names differ between files and the samples table (which must be indexed by sample name)."
        )
        if in_files:
            msg += f" In files but not in samples: {in_files[:20]}."
        if in_table:
            msg += f" In samples but not in files: {in_table[:20]}."
        raise ValueError(msg)
    obs = table.loc[names]
    obs.index = pd.Index(names, dtype=object)
    obs.index.name = None
    return obs


# --------------------------------------------------------------------------------------------


def read_quant(
    files,
    *,
    type: str = "salmon",
    tx2gene=None,
    counts_from_abundance: str = "no",
    ignore_tx_version: bool = False,
    ignore_after_bar: bool = False,
    samples: pd.DataFrame | None = None,
    tx_out: bool = False,
) -> AnnData:
    """Read salmon, kallisto or RSEM quantifications into an AnnData, as R's ``tximport``.

    Transcript-level estimates are summarised to genes with ``tx2gene``: abundances (TPM) and
    estimated counts are summed over each gene's transcripts, and the gene length is the
    abundance-weighted mean of the transcripts' effective lengths. Where a sample has zero
    abundance for all of a gene's transcripts, its length is the geometric mean of the gene's
    lengths in the other samples, or, when no sample has one, the mean over the gene's transcripts
    of their lengths averaged over samples (tximport's rules). The numbers agree with tximport 1.26
    to < 1e-6 relative difference.

    Parameters
    ----------
    files
        A mapping sample name → path, or a list of paths (or one path). Paths may be files
        (gzipped or not) or a sample's output folder. For a list, the sample name is the parent
        folder for files named ``quant.sf``/``abundance.tsv``/``abundance.h5``, else the file name
        without its extensions (``ERR188021.genes.results.gz`` → ``ERR188021``).
    type
        ``"salmon"`` (``quant.sf``), ``"kallisto"`` (``abundance.tsv`` or ``abundance.h5``) or
        ``"rsem"`` (``*.isoforms.results``, or gene-level ``*.genes.results``, which are read as they
        are: no ``tx2gene``, no ``counts_from_abundance``).
    tx2gene
        Transcript-to-gene table: a DataFrame whose first two columns are transcript id and gene
        id, the path of a CSV/TSV file of that shape (with or without a header line), or the path
        of the GTF annotation the index was built from (``.gtf``/``.gtf.gz`` or any file whose
        lines are GTF; see :func:`bulkpy.io.read_gtf`), for any organism: ``transcript_id`` ->
        ``gene_id`` of its ``transcript`` lines (``exon`` lines when it has none), as
        ``makeTxDbFromGFF`` and ``select(txdb, keys, "GENEID", "TXNAME")`` give in R. Where the
        GTF gives versions apart (Ensembl's ``transcript_version``), transcript ids get theirs
        appended (``ENST00000456328.2``), as in the transcript FASTA; gene ids are kept as the GTF
        writes them. Needed for gene-level output from transcript-level files. Transcripts missing
        from it are dropped (their number is logged and stored in ``uns["tximport"]["params"]``).
    counts_from_abundance
        ``"no"`` (the estimated counts), ``"scaledTPM"`` (TPM scaled up to the library size) or
        ``"lengthScaledTPM"`` (TPM times the feature's average length over samples, scaled up to the
        library size). With the scaled modes, counts no longer carry length bias, so the length
        layer should not be used as an offset.
    ignore_tx_version
        Match transcripts to ``tx2gene`` ignoring everything from the first ``.``
        (``ENST00000456328.2`` → ``ENST00000456328``), on both sides.
    ignore_after_bar
        Match ignoring everything from the first ``|`` (GENCODE FASTA headers); with
        ``tx_out=True`` the feature names are shortened the same way.
    samples
        Sample annotation for ``obs``: a DataFrame indexed by sample name; its names must be exactly
        the sample names of ``files``.
    tx_out
        Return transcript-level values instead of summarising to genes (``tx2gene`` is then
        optional; when given, ``var["gene_id"]`` holds each transcript's gene).

    Returns
    -------
    AnnData with samples in ``obs`` and genes (transcripts with ``tx_out=True``) in ``var``, sorted
    by id for gene-level output and in file order for transcript-level output:

    - ``X`` and ``layers["counts"]``: counts (estimated, or from abundance), float64;
    - ``layers["abundance"]``: TPM;
    - ``layers["length"]``: effective length (gene level: the abundance-weighted average transcript
      length, finite and positive);
    - ``var["n_transcripts"]``: transcripts summed into each gene (gene level);
      ``var["gene_id"]`` (``tx_out=True`` with ``tx2gene``);
    - ``uns["tximport"]["params"]``: ``type``, ``counts_from_abundance``, ``level``, ``tx_out``,
      ``ignore_tx_version``, ``ignore_after_bar``, ``files`` (strings, in ``obs`` order),
      ``tx2gene`` (the path, or ``"DataFrame"``), ``n_features_read`` (rows per file),
      ``n_transcripts_missing`` (dropped for lack of a gene),
      ``versions``.

    RSEM lengths below 1 (RSEM reports 0 for features shorter than the fragment length) are set
    to 1, as tximport does for RSEM transcripts, so that the length layer is a usable offset.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import pandas as pd
    >>> import bulkpy as bk
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> quant = pd.DataFrame({"Name": ["t1", "t2", "t3"], "Length": [1500, 900, 2000],
    ...                       "EffectiveLength": [1350.0, 750.0, 1850.0],
    ...                       "TPM": [300000.0, 200000.0, 500000.0], "NumReads": [40.0, 15.0, 92.5]})
    >>> for s in ("s1", "s2"):
    ...     (tmp / s).mkdir()
    ...     quant.to_csv(tmp / s / "quant.sf", sep="\\t", index=False)
    >>> tx2gene = pd.DataFrame({"tx": ["t1", "t2", "t3"], "gene": ["gA", "gA", "gB"]})
    >>> adata = bk.io.read_quant([tmp / "s1" / "quant.sf", tmp / "s2" / "quant.sf"], tx2gene=tx2gene)
    >>> adata
    AnnData object with n_obs × n_vars = 2 × 2
        var: 'n_transcripts'
        uns: 'tximport'
        layers: 'counts', 'abundance', 'length'
    >>> adata.to_df(layer="counts")
          gA    gB
    s1  55.0  92.5
    s2  55.0  92.5
    """
    # Over 100 lines on purpose: every argument is validated here, in the docstring's order, before
    # anything is computed or written (a failing call leaves the AnnData as it was), then one engine
    # call and the writes; the checks are short and read best in one place.
    check_choice(type, _TYPES, "type")
    check_choice(counts_from_abundance, _tx.COUNTS_FROM_ABUNDANCE, "counts_from_abundance")
    for name, flag in (
        ("ignore_tx_version", ignore_tx_version),
        ("ignore_after_bar", ignore_after_bar),
        ("tx_out", tx_out),
    ):
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if tx2gene is None and not tx_out and type != "rsem":
        raise ValueError(
            "gene-level summarisation needs tx2gene (a transcript -> gene table); pass tx2gene=..., "
            "or tx_out=True for transcript-level output"
        )
    names, paths = _collect_files(files, type)
    obs = _obs(names, samples)

    ids, ab, cnt, ln, gene_level = _read_all(paths, type)
    if type == "rsem":
        # RSEM reports effective length 0 for features shorter than the fragment length
        ln = np.maximum(ln, 1.0)

    if not gene_level and not tx_out and tx2gene is None:
        raise ValueError(
            "these RSEM files are transcript level (isoforms.results): gene-level summarisation needs "
            "tx2gene; pass tx2gene=..., or tx_out=True for transcript-level output"
        )
    n_missing = 0
    var_extra: dict[str, np.ndarray] = {}
    if gene_level:
        if tx_out:
            raise ValueError(
                "tx_out=True needs transcript-level files; these are RSEM genes.results (gene level)"
            )
        if counts_from_abundance != "no":
            raise ValueError(
                f"counts_from_abundance={counts_from_abundance!r} needs transcript-level estimates; "
                "RSEM genes.results files are gene level (use *.isoforms.results with tx2gene, or 'no')"
            )
        if tx2gene is not None:
            logger.info("tx2gene is not used: the RSEM files are already gene level")
        if not ids.is_unique:
            raise ValueError(
                f"duplicated gene ids in {str(paths[0])!r}: {ids[ids.duplicated()].unique()[:5].tolist()}"
            )
        var_names, abundance, counts, length = ids, ab, cnt, ln
        level = "gene"
    elif tx_out:
        var_names = ids
        if ignore_after_bar:
            var_names = pd.Index(_strip_ids(ids, False, True).to_numpy(dtype=object), dtype=object)
        if not var_names.is_unique:
            dup = var_names[var_names.duplicated()].unique()[:5].tolist()
            raise ValueError(
                f"duplicated transcript ids {dup} in the quantification files; tx_out=True needs unique ids"
            )
        abundance, length = ab, ln
        counts = _tx.counts_from_abundance(cnt, ab, ln, counts_from_abundance)
        if tx2gene is not None:
            keep, codes, genes, n_missing = _map_to_genes(ids, tx2gene, ignore_tx_version, ignore_after_bar)
            gene_id = np.full(len(ids), np.nan, dtype=object)
            gene_id[keep] = genes.to_numpy()[codes]
            var_extra["gene_id"] = pd.Categorical(gene_id)
        level = "transcript"
    else:
        keep, codes, genes, n_missing = _map_to_genes(ids, tx2gene, ignore_tx_version, ignore_after_bar)
        abundance, counts, length = _tx.summarize_to_gene(
            ab[:, keep],
            cnt[:, keep],
            ln[:, keep],
            codes,
            len(genes),
            counts_from_abundance_method=counts_from_abundance,
        )
        var_names = genes
        var_extra["n_transcripts"] = np.bincount(codes, minlength=len(genes)).astype(np.int64)
        level = "gene"

    var = pd.DataFrame(
        var_extra, index=pd.Index(np.asarray(var_names, dtype=object).astype(str), dtype=object)
    )
    var.index.name = None
    adata = AnnData(X=counts.copy(), obs=obs, var=var)
    adata.layers[COUNTS] = counts
    adata.layers["abundance"] = abundance
    adata.layers["length"] = length
    write_params(
        adata,
        UNS_KEY,
        {
            "type": type,
            "level": level,
            "counts_from_abundance": counts_from_abundance,
            "tx_out": bool(tx_out),
            "ignore_tx_version": bool(ignore_tx_version),
            "ignore_after_bar": bool(ignore_after_bar),
            "files": [str(p) for p in paths],
            "tx2gene": "None"
            if tx2gene is None
            else ("DataFrame" if isinstance(tx2gene, pd.DataFrame) else str(tx2gene)),
            "n_features_read": int(len(ids)),
            "n_transcripts_missing": int(n_missing),
        },
    )
    adata.strings_to_categoricals()
    return adata
