"""Gene id annotation: Ensembl ids <-> symbols, Entrez ids and gene types from a bundled table, or
names, types and positions from a GTF file for any organism."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .._docs import doc_adata, doc_copy, doc_params
from .._slots import check_key, write_params
from .._utils import finish, start
from .._validate import check_adata, check_choice, check_unique_var_names, var_column
from ..io import _gtf

logger = logging.getLogger(__name__)

ANNOTATION_FILE = "human_ensembl_symbol_entrez_orgHs3.16.tsv.gz"
ANNOTATION_SOURCE = "org.Hs.eg.db 3.16 (NCBI Gene 2022-09, Ensembl ids via NCBI)"
_ORGANISMS = ("human",)
_ID_TYPES = ("ensembl", "symbol")
# Ensembl gene ids with a version suffix, also GENCODE's PAR copies: ENSG00000000003.14, ENSG00000002586.20_PAR_Y
_VERSION = r"^(ENS[A-Z]*G\d+)\.\d+(?:_PAR_Y)?$"
# what each id type is mapped to: output column -> column of the table
_OUTPUT = {
    "ensembl": {"symbol": "SYMBOL", "entrez_id": "ENTREZID", "gene_type": "GENETYPE"},
    "symbol": {"ensembl_id": "ENSEMBL", "entrez_id": "ENTREZID", "gene_type": "GENETYPE"},
}
_KEY = {"ensembl": "ENSEMBL", "symbol": "SYMBOL"}
# with a GTF: output column -> column of bulkpy.io._gtf.gene_table
_POSITION = {"gene_type": "gene_type", "chromosome": "seqname", "start": "start", "end": "end", "strand": "strand"}
_GTF_OUTPUT = {
    "ensembl": {"symbol": "gene_name", **_POSITION},
    "symbol": {"ensembl_id": "gene_id", **_POSITION},
}


def _annotation_table() -> pd.DataFrame:
    from ..datasets._counts import data_path

    return pd.read_csv(data_path(ANNOTATION_FILE), sep="\t", dtype=str, keep_default_na=False)


def strip_ensembl_version(ids) -> pd.Index:
    """``ENSG00000000003.14`` -> ``ENSG00000000003`` (also ``..._PAR_Y``); other ids are returned unchanged."""
    return pd.Index(np.asarray(ids, dtype=object).astype(str)).str.replace(_VERSION, r"\1", regex=True)


def _no_match_hint(ids: pd.Index, id_type: str) -> str:
    sample = list(ids[:3])
    if id_type == "ensembl":
        if ids.str.startswith("ENSMUSG").any():
            return f"the ids look like mouse Ensembl ids (e.g. {sample}); only human is bundled"
        if not ids.str.startswith("ENS").any():
            return f"the ids do not look like Ensembl gene ids (e.g. {sample}); for gene symbols pass id_type='symbol'"
        return f"e.g. {sample} are not human Ensembl gene ids known to {ANNOTATION_SOURCE}"
    if ids.str.match(r"^ENS[A-Z]*G\d").any():
        return f"the ids look like Ensembl ids (e.g. {sample}); pass id_type='ensembl'"
    return f"e.g. {sample} are not official human gene symbols (HGNC, as of {ANNOTATION_SOURCE})"


def _first_rows(keys: pd.Series) -> tuple[pd.Index, np.ndarray, pd.Series]:
    """Lookup of the non-missing ``keys`` (first row of each), those rows, and the entries per key."""
    valid = keys.notna().to_numpy()
    vals = pd.Index(keys[valid].astype(str).to_numpy(dtype=object))
    rows = np.flatnonzero(valid)
    first = ~vals.duplicated()
    return vals[first], rows[first], vals.value_counts()


def _gtf_rows(ids: pd.Index, table: pd.DataFrame, id_type: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Row of the GTF gene table for each id (-1: none), whether it matched only without versions,
    and how many matched ids had several entries (the first taken).

    Ids are matched as written first (so GENCODE's ``..._PAR_Y`` copies keep their chrY rows), then
    Ensembl gene ids without their version on both sides (``ENSG00000000003.14`` ~
    ``ENSG00000000003``; an Ensembl GTF's ``gene_id`` + ``gene_version`` counts as written).
    """
    if id_type == "symbol":
        lookup, rows, n_entries = _first_rows(table["gene_name"])
        pos = lookup.get_indexer(ids)
        row = np.where(pos >= 0, rows[np.maximum(pos, 0)], -1)
        n_multiple = int((n_entries.reindex(ids[row >= 0]).to_numpy() > 1).sum())
        return row, np.zeros(len(ids), dtype=bool), n_multiple
    gene_id = table["gene_id"].astype(str)
    versioned = pd.Series(_gtf.versioned(gene_id.to_numpy(), table["gene_version"].to_numpy()))
    both = pd.concat([gene_id, versioned[versioned != gene_id]])  # index: the table's rows
    lookup, rows, n_exact = _first_rows(pd.Series(both.to_numpy(), dtype=object))
    rows = both.index.to_numpy()[rows]
    pos = lookup.get_indexer(ids)
    row = np.where(pos >= 0, rows[np.maximum(pos, 0)], -1)
    n_multiple = int((n_exact.reindex(ids[row >= 0]).to_numpy() > 1).sum())
    miss = np.flatnonzero(row < 0)
    s_lookup, s_rows, n_stripped = _first_rows(pd.Series(strip_ensembl_version(gene_id), dtype=object))
    s_ids = strip_ensembl_version(ids[miss])
    s_pos = s_lookup.get_indexer(s_ids)
    found = s_pos >= 0
    row[miss[found]] = s_rows[s_pos[found]]
    n_multiple += int((n_stripped.reindex(s_ids[found]).to_numpy() > 1).sum())
    without_version = np.zeros(len(ids), dtype=bool)
    without_version[miss[found]] = True
    return row, without_version, n_multiple


def _gtf_columns(table: pd.DataFrame, row: np.ndarray, outputs: dict[str, str]) -> dict:
    """The new var columns: categoricals, and nullable integers for positions (NaN / <NA> unmatched)."""
    new = {}
    for out, src in outputs.items():
        col = table[src]
        if out in ("start", "end"):
            new[out] = pd.array(col.array.take(row, allow_fill=True), dtype="Int64")
        else:
            vals = pd.api.extensions.take(col.to_numpy(dtype=object), row, allow_fill=True, fill_value=np.nan)
            new[out] = pd.Categorical(vals)
    return new


def _gtf_no_match_hint(ids: pd.Index, table: pd.DataFrame, id_type: str, source: str) -> str:
    key = "gene_name" if id_type == "symbol" else "gene_id"
    theirs = table[key].dropna().astype(str).head(3).tolist()
    hint = f"e.g. {list(ids[:3])} vs the {key} values of {source}, e.g. {theirs}"
    if id_type == "ensembl" and not ids.str.match(r"^ENS[A-Z]*G\d").any() and table["gene_name"].isin(ids).any():
        hint += "; the ids look like gene names: pass id_type='symbol'"
    elif id_type == "symbol" and strip_ensembl_version(table["gene_id"]).isin(strip_ensembl_version(ids)).any():
        hint += "; the ids look like gene ids: pass id_type='ensembl'"
    return hint


@doc_params(adata=doc_adata, copy=doc_copy)
def annotate_genes(
    adata,
    *,
    organism: str = "human",
    id_type: str = "ensembl",
    gtf=None,
    id_column: str | None = None,
    key_added: str = "annotate_genes",
    copy: bool = False,
):
    """Add gene symbols, gene types and Entrez ids (bundled human table) or names, types and
    positions (a GTF file, any organism) to ``var``.

    **Bundled table** (``gtf=None``): human Ensembl gene ids mapped to NCBI Gene symbols, Entrez
    ids and gene types (Bioconductor ``org.Hs.eg.db`` 3.16, NCBI Gene 2022-09; 40,102 rows).
    Ensembl version suffixes (``ENSG00000000003.14``, GENCODE's ``..._PAR_Y``) are removed before
    matching. An id with several entries in the table (394 Ensembl ids have 2 or more symbols,
    e.g. a gene and an antisense transcript sharing it; 3,506 symbols have several Ensembl ids)
    gets the first one in the table's order, which is org.Hs.eg.db's (ascending Entrez id,
    mostly), i.e. what AnnotationDbi's ``mapIds(org.Hs.eg.db, ids, "SYMBOL", "ENSEMBL",
    multiVals="first")`` returns. The table holds genes that NCBI links to an Ensembl id, so with
    ``id_type="symbol"`` a gene without one is not found either. Ids not in the table (e.g.
    airway's ``LRG_`` ids, retired or non-coding Ensembl genes) are left missing: the new columns
    are categoricals with NaN there, which round-trip through h5ad.

    **GTF** (``gtf=``, e.g. the GENCODE or Ensembl annotation the reads were quantified against,
    for any organism, offline): the ``gene`` lines (or, for GTFs without them, the span of each
    gene's transcript or exon lines) give ``gene_name``, the gene type (GENCODE's ``gene_type``,
    Ensembl's ``gene_biotype``), the sequence name, start, end and strand. Ids are matched as
    written first, then Ensembl ids without their version on both sides, so versioned
    ``var_names`` match an Ensembl GTF's unversioned ``gene_id`` and the other way round; GENCODE's
    ``..._PAR_Y`` copies match their own chrY lines when written so. An id with several entries
    gets the first in file order.

    Parameters
    ----------
    {adata}
    organism
        Organism of the bundled table: only ``"human"`` is bundled. Not used with ``gtf``.
    id_type
        What the ids are: ``"ensembl"`` (gene ids, ``ENSG...``, version suffix allowed; with a GTF,
        its ``gene_id``, whatever the scheme, e.g. FlyBase's ``FBgn...`` in Ensembl's fly GTF)
        adds ``symbol`` and the other columns below; ``"symbol"`` (official gene symbols, with a
        GTF its ``gene_name``, matched exactly and case-sensitively) adds ``ensembl_id`` (with a
        GTF: its ``gene_id``) instead of ``symbol``.
    gtf
        A GTF file (path, plain or gzipped; see :func:`bulkpy.io.read_gtf`) or a table read by
        :func:`bulkpy.io.read_gtf`, to annotate from instead of the bundled human table.
    id_column
        Column of ``var`` holding the ids; ``None`` uses ``var_names``.
    key_added
        Key in ``uns`` for the match report and parameters.
    {copy}

    Returns
    -------
    ``None`` when ``copy=False`` (``adata`` is modified in place), else the modified copy. Writes
    (existing columns of these names are replaced)

    * from the bundled table: ``var["symbol"]`` (or ``var["ensembl_id"]`` for
      ``id_type="symbol"``), ``var["entrez_id"]`` (as strings) and ``var["gene_type"]``
      (``protein-coding``, ``ncRNA``, ``pseudo``, ...): categoricals, NaN where the id is not found;
    * from a GTF: ``var["symbol"]`` (or ``var["ensembl_id"]``), ``var["gene_type"]`` (the GTF's
      values, e.g. ``protein_coding``, ``lncRNA``), ``var["chromosome"]`` and ``var["strand"]``:
      categoricals, NaN where not found; ``var["start"]`` and ``var["end"]``: 1-based, inclusive
      (the GTF's coordinates), nullable integers (``<NA>`` where not found);
    * ``uns[key_added]``: ``n_genes``, ``n_matched``, ``match_rate``, ``n_multiple`` (matched ids
      with several entries, the first taken), ``columns``, with a GTF also
      ``n_matched_without_version`` (ids that matched only once versions were removed), and
      ``params`` (organism (``"None"`` with a GTF), id_type, id_column, gtf (the path, or
      ``"DataFrame"``, or ``"None"``), source (for a GTF, its file name and first header lines),
      versions).

    The match count is also logged (logger ``bulkpy.pp._annotate``, level INFO).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> bk.pp.annotate_genes(adata)
    >>> adata.var.loc["ENSG00000000003", ["symbol", "entrez_id", "gene_type"]].tolist()
    ['TSPAN6', '7105', 'protein-coding']
    >>> round(adata.uns["annotate_genes"]["match_rate"], 3)
    0.551

    From a GTF (here two lines of GENCODE's, written out; versioned ids match airway's unversioned
    ones):

    >>> import gzip, pathlib, tempfile
    >>> gtf = pathlib.Path(tempfile.mkdtemp()) / "gencode.gtf.gz"
    >>> with gzip.open(gtf, "wt") as fh:
    ...     _ = fh.write(
    ...         'chrX\\tHAVANA\\tgene\\t100627108\\t100639991\\t.\\t-\\t.\\tgene_id "ENSG00000000003.15"; '
    ...         'gene_type "protein_coding"; gene_name "TSPAN6"; level 2;\\n'
    ...         'chrX\\tHAVANA\\tgene\\t100584936\\t100599885\\t.\\t+\\t.\\tgene_id "ENSG00000000005.6"; '
    ...         'gene_type "protein_coding"; gene_name "TNMD"; level 2;\\n'
    ...     )
    >>> small = adata[:, :3].copy()
    >>> bk.pp.annotate_genes(small, gtf=gtf)
    >>> small.var[["symbol", "gene_type", "chromosome", "start", "end", "strand"]]
                    symbol       gene_type chromosome      start        end strand
    ENSG00000000003 TSPAN6  protein_coding       chrX  100627108  100639991      -
    ENSG00000000005   TNMD  protein_coding       chrX  100584936  100599885      +
    ENSG00000000419    NaN             NaN        NaN       <NA>       <NA>    NaN
    """
    check_adata(adata)
    check_unique_var_names(adata, what="bk.pp.annotate_genes")
    if gtf is None and (not isinstance(organism, str) or organism.lower() not in _ORGANISMS):
        raise ValueError(
            f"organism={organism!r} is not supported; the bundled annotation covers {list(_ORGANISMS)} only "
            f"({ANNOTATION_SOURCE}); for other organisms pass gtf= (a GENCODE or Ensembl GTF)"
        )
    check_choice(id_type, _ID_TYPES, "id_type")
    check_key(key_added, "key_added")
    if gtf is not None and not isinstance(gtf, str | os.PathLike | pd.DataFrame):
        raise TypeError(
            f"gtf must be the path of a GTF file or a table from bk.io.read_gtf, got {type(gtf).__name__}"
        )
    outputs = _OUTPUT[id_type] if gtf is None else _GTF_OUTPUT[id_type]
    if id_column is None:
        raw = adata.var_names
    else:
        if id_column in outputs:
            raise ValueError(
                f"id_column {id_column!r} would be overwritten by the annotation; rename it first "
                f"(the columns written are {list(outputs)})"
            )
        col = var_column(adata, id_column, what="id_column")
        if col.isna().any():
            raise ValueError(f"adata.var[{id_column!r}] has {int(col.isna().sum())} missing ids; fill or drop them")
        raw = col
    ids = pd.Index(np.asarray(raw, dtype=object).astype(str)).str.strip()
    n = len(ids)
    extra = {}
    if gtf is None:
        if id_type == "ensembl":
            ids = strip_ensembl_version(ids)
        source, organism_used = ANNOTATION_SOURCE, organism.lower()
        table = _annotation_table()
        key = _KEY[id_type]
        n_entries = table[key].value_counts()
        first = table.drop_duplicates(key, keep="first").set_index(key)
        pos = first.index.get_indexer(ids)
        hit = pos >= 0
        n_matched = int(hit.sum())
        if n_matched == 0:
            raise ValueError(
                f"none of the {n} gene ids matched the {organism} annotation: " + _no_match_hint(ids, id_type)
            )
        n_multiple = int((n_entries.reindex(ids[hit]).to_numpy() > 1).sum())
        new = {}
        for out, src in outputs.items():
            vals = np.full(n, np.nan, dtype=object)
            vals[hit] = first[src].to_numpy()[pos[hit]]
            vals[hit & (vals == "")] = np.nan
            new[out] = pd.Categorical(vals)
    else:
        table, source = _gtf.gene_table(gtf)
        organism_used = None
        row, without_version, n_multiple = _gtf_rows(ids, table, id_type)
        n_matched = int((row >= 0).sum())
        if n_matched == 0:
            raise ValueError(
                f"none of the {n} gene ids matched the GTF ({len(table)} genes): "
                + _gtf_no_match_hint(ids, table, id_type, source)
            )
        new = _gtf_columns(table, row, outputs)
        extra["n_matched_without_version"] = int(without_version.sum())

    rate = n_matched / n
    logger.info(
        "annotate_genes: %d of %d ids (%.1f%%) found in %s; %d had several entries (first taken)",
        n_matched,
        n,
        100 * rate,
        source,
        n_multiple,
    )
    adata = start(adata, copy)
    for out, vals in new.items():
        adata.var[out] = vals
    gtf_param = None if gtf is None else ("DataFrame" if isinstance(gtf, pd.DataFrame) else str(gtf))
    write_params(
        adata,
        key_added,
        {"organism": organism_used, "id_type": id_type, "id_column": id_column, "gtf": gtf_param, "source": source},
        n_genes=n,
        n_matched=n_matched,
        match_rate=rate,
        n_multiple=n_multiple,
        columns=list(outputs),
        **extra,
    )
    return finish(adata, copy)
