"""Gene id annotation: Ensembl ids <-> symbols, Entrez ids and gene types from a bundled table."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._docs import doc_adata, doc_copy, doc_params
from .._slots import check_key, write_params
from .._utils import finish, start
from .._validate import check_adata, check_choice, var_column

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


@doc_params(adata=doc_adata, copy=doc_copy)
def annotate_genes(
    adata,
    *,
    organism: str = "human",
    id_type: str = "ensembl",
    id_column: str | None = None,
    key_added: str = "annotate_genes",
    copy: bool = False,
):
    """Add gene symbols, Entrez ids and gene types (or Ensembl ids) to ``var`` from a bundled table.

    The table maps human Ensembl gene ids to NCBI Gene symbols, Entrez ids and gene types
    (Bioconductor ``org.Hs.eg.db`` 3.16, NCBI Gene 2022-09; 40,102 rows). Ensembl version suffixes
    (``ENSG00000000003.14``, GENCODE's ``..._PAR_Y``) are removed before matching. An id with
    several entries in the table (394 Ensembl ids have 2 or more symbols, e.g. a gene and an
    antisense transcript sharing it; 3,506 symbols have several Ensembl ids) gets the first one in
    the table's order, which is org.Hs.eg.db's (ascending Entrez id, mostly), i.e. what AnnotationDbi's
    ``mapIds(org.Hs.eg.db, ids, "SYMBOL", "ENSEMBL", multiVals="first")`` returns. The table holds
    genes that NCBI links to an Ensembl id, so with ``id_type="symbol"`` a gene without one is not
    found either. Ids not in the table (e.g. airway's ``LRG_`` ids, retired or non-coding Ensembl genes) are left
    missing: the new columns are categoricals with NaN there, which round-trip through h5ad.

    Parameters
    ----------
    {adata}
    organism
        Only ``"human"`` is bundled.
    id_type
        What the ids are: ``"ensembl"`` (gene ids, ``ENSG...``, version suffix allowed) adds
        ``symbol``, ``entrez_id`` and ``gene_type``; ``"symbol"`` (official gene symbols, matched
        exactly and case-sensitively) adds ``ensembl_id``, ``entrez_id`` and ``gene_type``.
    id_column
        Column of ``var`` holding the ids; ``None`` uses ``var_names``.
    key_added
        Key in ``uns`` for the match report and parameters.
    {copy}

    Returns
    -------
    ``None`` when ``copy=False`` (``adata`` is modified in place), else the modified copy. Writes

    * ``var["symbol"]`` (or ``var["ensembl_id"]`` for ``id_type="symbol"``), ``var["entrez_id"]``
      (as strings) and ``var["gene_type"]`` (``protein-coding``, ``ncRNA``, ``pseudo``, ...):
      categoricals, NaN where the id is not found; existing columns of these names are replaced;
    * ``uns[key_added]``: ``n_genes``, ``n_matched``, ``match_rate``, ``n_multiple`` (matched ids
      with several table entries, the first taken), ``columns`` and ``params`` (organism,
      id_type, id_column, source, versions).

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
    """
    check_adata(adata)
    if not isinstance(organism, str) or organism.lower() not in _ORGANISMS:
        raise ValueError(
            f"organism={organism!r} is not supported; the bundled annotation covers {list(_ORGANISMS)} only "
            f"({ANNOTATION_SOURCE})"
        )
    check_choice(id_type, _ID_TYPES, "id_type")
    check_key(key_added, "key_added")
    outputs = _OUTPUT[id_type]
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
    if id_type == "ensembl":
        ids = strip_ensembl_version(ids)

    table = _annotation_table()
    key = _KEY[id_type]
    n_entries = table[key].value_counts()
    first = table.drop_duplicates(key, keep="first").set_index(key)
    pos = first.index.get_indexer(ids)
    hit = pos >= 0
    n, n_matched = len(ids), int(hit.sum())
    if n_matched == 0:
        raise ValueError(f"none of the {n} gene ids matched the {organism} annotation: " + _no_match_hint(ids, id_type))
    n_multiple = int((n_entries.reindex(ids[hit]).to_numpy() > 1).sum())
    new = {}
    for out, src in outputs.items():
        vals = np.full(n, np.nan, dtype=object)
        vals[hit] = first[src].to_numpy()[pos[hit]]
        vals[hit & (vals == "")] = np.nan
        new[out] = pd.Categorical(vals)

    rate = n_matched / n
    logger.info(
        "annotate_genes: %d of %d ids (%.1f%%) found in %s; %d had several entries (first taken)",
        n_matched,
        n,
        100 * rate,
        ANNOTATION_SOURCE,
        n_multiple,
    )
    adata = start(adata, copy)
    for out, vals in new.items():
        adata.var[out] = vals
    write_params(
        adata,
        key_added,
        {"organism": organism.lower(), "id_type": id_type, "id_column": id_column, "source": ANNOTATION_SOURCE},
        n_genes=n,
        n_matched=n_matched,
        match_rate=rate,
        n_multiple=n_multiple,
        columns=list(outputs),
    )
    return finish(adata, copy)
