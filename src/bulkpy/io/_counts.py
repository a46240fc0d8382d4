"""Counts tables into AnnData."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._slots import COUNTS
from .._validate import check_choice, check_counts

# annotation columns that featureCounts, HTSeq-style and similar tables put before the samples
_FEATURE_ANNOTATION = ("chr", "start", "end", "strand", "length", "gene_name", "symbol", "description")


def _sep_for(path: Path, sep: str | None) -> str:
    if sep is not None:
        return sep
    name = path.name.lower()
    for ext in (".gz", ".bz2", ".xz", ".zip"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith(".csv"):
        return ","
    return "\t"


def _read_table(path, sep, what: str) -> pd.DataFrame:
    if isinstance(path, pd.DataFrame):
        return path.copy()
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{what} must be a path or a pandas DataFrame, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {str(p)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"{what} path {str(p)!r} is a directory; pass the table file")
    try:
        df = pd.read_csv(p, sep=_sep_for(p, sep), index_col=0, comment="#")
        header = pd.read_csv(p, sep=_sep_for(p, sep), header=None, nrows=1, comment="#", dtype=str).iloc[0, 1:]
    except pd.errors.EmptyDataError:
        raise ValueError(f"{what} file {str(p)!r} is empty") from None
    dup = header[header.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"duplicated column names in the {what} file {str(p)!r}: {dup[:10]}")
    return df


def _suggest(missing: list[str], pool: list[str]) -> list[str]:
    out = []
    for m in missing[:10]:
        close = [c for c in pool if c.startswith(m) or m.startswith(c)] or difflib.get_close_matches(m, pool, n=1)
        if close:
            out.append(f"{m!r} ~ {close[0]!r}")
    return out


def read_counts(
    path,
    *,
    samples=None,
    sample_column: str | None = None,
    orientation: str = "auto",
    sep: str | None = None,
) -> AnnData:
    """Read a counts table (and optionally a sample table) into an AnnData.

    Parameters
    ----------
    path
        TSV or CSV file (optionally gzipped), or a DataFrame, with gene ids in the first column and
        one column per sample (``orientation="genes_by_samples"``), or the transpose. Lines starting
        with ``#`` are skipped and featureCounts' annotation columns (Chr, Start, End, Strand, Length)
        are moved to ``var``.
    samples
        Sample annotation: a CSV/TSV file whose first column (or ``sample_column``) holds the sample
        names, or a DataFrame indexed by sample name. Its names must match the counts table's.
    sample_column
        Column of ``samples`` holding the sample names, if not the first column / index.
    orientation
        ``"auto"``, ``"genes_by_samples"`` or ``"samples_by_genes"``. ``"auto"`` matches the sample
        table's names against both axes, else assumes there are more genes than samples.
    sep
        Field separator; by default ``","`` for ``.csv`` files and tab otherwise.

    Returns
    -------
    AnnData with samples in ``obs`` and genes in ``var``; the counts (float64) in ``X`` and in
    ``layers["counts"]``; the sample annotation in ``obs``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> from bulkpy.datasets._counts import data_path
    >>> adata = bk.io.read_counts(data_path("pasilla_counts.tsv.gz"), samples=data_path("pasilla_coldata.csv"))
    >>> adata.shape
    (7, 14599)
    """
    check_choice(orientation, ("auto", "genes_by_samples", "samples_by_genes"), "orientation")
    table = _read_table(path, sep, "counts")
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError(f"the counts table is empty (shape {table.shape}); expected genes x samples")

    coldata = None
    if samples is not None:
        if isinstance(samples, pd.DataFrame):
            coldata = samples.copy()
            if sample_column is not None:
                if sample_column not in coldata.columns:
                    raise KeyError(f"sample_column {sample_column!r} not in the sample table; columns: {list(coldata.columns)}")
                coldata = coldata.set_index(sample_column)
        else:
            raw = _read_table(samples, None, "sample table").reset_index()
            col = sample_column if sample_column is not None else raw.columns[0]
            if col not in raw.columns:
                raise KeyError(f"sample_column {col!r} not in the sample table; columns: {list(raw.columns)}")
            coldata = raw.set_index(col)
        coldata.index = coldata.index.astype(str)
        if coldata.shape[0] == 0:
            raise ValueError("the sample table is empty")
        if not coldata.index.is_unique:
            dup = coldata.index[coldata.index.duplicated()].unique().tolist()[:10]
            raise ValueError(f"duplicated sample names in the sample table: {dup}")

    if orientation == "auto":
        if coldata is not None:
            names = set(coldata.index)
            cols_hit = len(names & set(map(str, table.columns)))
            rows_hit = len(names & set(map(str, table.index)))
            orientation = "samples_by_genes" if rows_hit > cols_hit else "genes_by_samples"
        elif any(str(c).lower() in _FEATURE_ANNOTATION for c in table.columns):
            orientation = "genes_by_samples"
        else:
            orientation = "genes_by_samples" if table.shape[0] >= table.shape[1] else "samples_by_genes"

    var_annot = None
    if orientation == "genes_by_samples":
        annot_cols = [c for c in table.columns if str(c).lower() in _FEATURE_ANNOTATION]
        if annot_cols:
            var_annot = table[annot_cols]
            table = table.drop(columns=annot_cols)
        table = table.T
    table.index = table.index.astype(str)
    table.columns = table.columns.astype(str)
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()].unique().tolist()[:10]
        raise ValueError(f"duplicated sample names in the counts table: {dup}")
    if not table.columns.is_unique:
        dup = table.columns[table.columns.duplicated()].unique().tolist()[:10]
        raise ValueError(f"duplicated gene ids in the counts table: {dup}; sum or drop them first")
    non_numeric = list(table.select_dtypes(exclude="number").columns)
    if non_numeric:
        raise ValueError(
            f"the counts table has non-numeric entries for {len(non_numeric)} genes, e.g. {list(map(str, non_numeric[:5]))}; "
            "expected numbers only (gene ids in the first column, one column per sample)"
        )

    X = table.to_numpy(dtype=np.float64)
    check_counts(X, what="counts in the table", integer=False)

    if coldata is not None:
        in_counts = list(table.index)
        missing_annot = [s for s in in_counts if s not in coldata.index]
        missing_counts = [s for s in coldata.index if s not in set(in_counts)]
        if missing_annot or missing_counts:
            msg = "sample names differ between the counts table and the sample table."
            if missing_annot:
                msg += f" In the counts but not the sample table: {missing_annot[:20]}."
            if missing_counts:
                msg += f" In the sample table but not the counts: {missing_counts[:20]}."
            sugg = _suggest(missing_annot, missing_counts)
            if sugg:
                msg += " Possible matches: " + ", ".join(sugg) + "; rename one side so they agree."
            raise ValueError(msg)
        obs = coldata.loc[in_counts]
    else:
        obs = pd.DataFrame(index=table.index)
    obs.index.name = None

    var = pd.DataFrame(index=table.columns)
    if var_annot is not None:
        var = var.join(var_annot.set_axis(var_annot.index.astype(str)))
    var.index.name = None

    adata = AnnData(X=X, obs=obs, var=var)
    adata.layers[COUNTS] = X.copy()
    adata.strings_to_categoricals()
    return adata
