"""Gene set enrichment: over-representation (ORA), preranked GSEA and per-sample scores.

The adapters read differential expression results (``bk.get.de_df``) or an expression layer,
match the gene sets to the genes (optionally through a ``var`` column of symbols), call the
engines in :mod:`bulkpy._stats` (or decoupler for the per-sample methods it has) and write:

* ``ora`` / ``gsea``: one DataFrame per contrast under ``uns[key_added][contrast]`` and the
  parameters under ``uns[key_added]["params"]``;
* ``score``: ``obsm["score_<name>"]`` (samples x sets) and, for methods with a test,
  ``obsm["padj_<name>"]``, decoupler's scheme, with parameters in ``uns["score_<name>"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_params
from .._genesets import as_gene_sets, sets_for_genes
from .._slots import check_key, h5ad_safe, h5ad_safe_frame, write_params
from .._utils import finish, start
from .._validate import check_choice, dense, get_matrix
from ..get._de import _check_group, _contrasts, de_df, grouping, split_name

logger = logging.getLogger(__name__)

_doc_gene_sets = """\
gene_sets
    Gene sets: a ``dict`` of set name -> list of genes (e.g. :func:`bulkpy.datasets.reactome`,
    :func:`bulkpy.io.read_gmt`), a GMT file path, or decoupler's long DataFrame (``source``,
    ``target``)."""

_doc_gene_symbols = """\
gene_symbols
    Column of ``adata.var`` holding the ids the gene sets use (e.g. ``"symbol"`` after
    :func:`bulkpy.pp.annotate_genes` when ``var_names`` are Ensembl ids). A symbol shared by
    several genes counts once, as the first of them in ``var`` order among the genes considered.
    ``None`` matches the sets to ``var_names``."""

_doc_sizes = """\
min_size
    Test only sets with at least this many genes among the genes considered (fgsea's
    ``minSize``).
max_size
    Test only sets with at most this many genes among the genes considered (fgsea's
    ``maxSize``); ``None``: no upper bound."""

_doc_de_key = """\
key
    The ``key_added`` of the differential expression run (see :func:`bulkpy.get.de_df`); may be
    omitted when the object holds a single one. Only with an AnnData.
contrast
    Contrast name, or a list of them; all contrasts of ``key`` by default.
group
    For a DE result split by group (``split_by=``): a group or a list of groups to analyse; all
    tested groups by default (one result per group and contrast, stored under the names
    ``f"{group}:{contrast}"``; read them with ``bk.get.enrichment(..., group=...)``). A group whose
    genes can not be analysed (e.g. no gene set large enough among its tested genes) is skipped,
    its reason in ``params["skipped"]``."""


# --------------------------------------------------------------------------------------------
# shared checks


def _de_key(adata: AnnData, key) -> str:
    found = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and "contrasts" in v]
    if key is None:
        if len(found) == 1:
            return found[0]
        if not found:
            raise KeyError(
                "this AnnData holds no differential expression result; run one first (e.g. bk.tl.limma) "
                "or pass a ranked pd.Series / gene list instead"
            )
        raise ValueError(
            f"this AnnData holds several differential expression results; pass key= one of {found}"
        )
    if not isinstance(key, str):
        raise TypeError(f"key must be the name of a differential expression result (a string), got {key!r}")
    _contrasts(adata, key)  # raises KeyError listing the results present
    return key


def _contrast_list(adata: AnnData, key: str, contrast) -> list[str]:
    names = _contrasts(adata, key)
    if "params" in names:
        raise ValueError(
            f"result {key!r} has a contrast named 'params', which would clash with the parameters entry"
        )
    if contrast is None:
        return names
    wanted = [contrast] if isinstance(contrast, str) else contrast
    if not isinstance(wanted, Iterable) or isinstance(wanted, Mapping):
        raise TypeError(f"contrast must be a contrast name or a list of them, got {contrast!r}")
    wanted = list(wanted)
    if not wanted:
        raise ValueError(f"contrast is an empty list; contrasts of {key!r}: {names}")
    for c in wanted:
        if c not in names:
            raise KeyError(f"contrast {c!r} not in result {key!r}; contrasts: {names}")
    return [str(c) for c in dict.fromkeys(wanted)]


def _grouped_contrasts(adata: AnnData, key: str, contrast, group) -> tuple[list[str], dict] | None:
    """For a DE result split by group: the stored names ``f"{group}:{contrast}"`` meant by
    ``contrast`` (own or stored names) and ``group``, and the parameters that record the grouping;
    ``None`` for an ungrouped result (where ``group`` is refused)."""
    info = grouping(adata, key)
    if info is None:
        if group is not None:
            _check_group(adata, key, group)  # raises: not grouped
        return None
    split_by, groups, skipped = info
    wanted = groups if group is None else _check_group(adata, key, [group] if isinstance(group, str) else group)[0]
    names = _contrasts(adata, key)
    if contrast is None:
        base = None
    else:
        base = [contrast] if isinstance(contrast, str) else list(contrast)
        known = {split_name(n)[1] for n in names} | set(names)
        bad = [c for c in base if c not in known]
        if bad:
            raise KeyError(
                f"contrast(s) {bad} not in result {key!r}; contrasts: {sorted({split_name(n)[1] for n in names})}"
            )
    out = [
        n for n in names
        if split_name(n)[0] in wanted and (base is None or split_name(n)[1] in base or n in base)
    ]  # fmt: skip
    if not out:
        raise KeyError(f"no contrast {base} in groups {wanted} of result {key!r}")
    return out, {"split_by": split_by, "de_skipped": skipped}


def _run_contrasts(run, contrasts: list[str], grouped: bool, key: str) -> tuple[dict, dict]:
    """``run(contrast)`` for each contrast; in a grouped result a contrast whose analysis raises a
    ``ValueError`` (too few genes...) is skipped with its reason, unless every one fails."""
    tables, skipped = {}, {}
    for c in contrasts:
        if not grouped:
            tables[c] = run(c)
            continue
        try:
            tables[c] = run(c)
        except ValueError as err:
            skipped[c] = str(err)
            logger.warning("group %r of %r skipped: %s", split_name(c)[0], key, err)
    if not tables:
        raise ValueError(f"no group of result {key!r} could be analysed: {skipped}")
    return tables, skipped


def _check_int(value, name: str, *, minimum: int = 0, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_number(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    v = float(value)
    if not (lo <= v <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def _check_sizes(min_size, max_size) -> tuple[int, int | None]:
    mn = _check_int(min_size, "min_size", minimum=1)
    mx = _check_int(max_size, "max_size", minimum=1, allow_none=True)
    if mx is not None and mx < mn:
        raise ValueError(f"max_size ({mx}) is smaller than min_size ({mn})")
    return mn, mx


def _gene_list(values, what: str) -> pd.Index:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a list of gene ids, got {type(values).__name__}")
    out = list(values.values if isinstance(values, pd.Series) else values)
    bad = [g for g in out if not isinstance(g, str)]
    if bad:
        raise TypeError(f"{what} must hold gene ids (strings); found {bad[:3]}")
    return pd.Index(list(dict.fromkeys(out)), dtype=object)


def _labels(var: pd.DataFrame | None, gene_symbols: str | None, genes: pd.Index) -> np.ndarray:
    """How genes are reported in tables: their ``var[gene_symbols]`` value (the sets' ids) or the id."""
    if gene_symbols is None or var is None:
        return np.asarray(genes, dtype=object)
    col = var[gene_symbols].reindex(genes)
    lab = col.astype(object).to_numpy()
    missing = pd.isna(lab)
    lab[missing] = np.asarray(genes, dtype=object)[missing]
    return lab.astype(str).astype(object)


def _joined(indptr: np.ndarray, members: np.ndarray, labels: np.ndarray) -> list[str]:
    """``';'``-joined labels of each row of a ragged array (loop over sets, not genes)."""
    lab = labels[members]
    return [";".join(lab[indptr[i] : indptr[i + 1]]) for i in range(indptr.size - 1)]


def _store(adata: AnnData, key_added: str, tables: dict[str, pd.DataFrame], params: dict) -> None:
    adata.uns.pop(key_added, None)
    adata.uns[key_added] = {c: h5ad_safe_frame(t) for c, t in tables.items()}
    write_params(adata, key_added, params)


def _check_key_added(key_added, default: str) -> str:
    key_added = default if key_added is None else key_added
    return check_key(key_added, "key_added")


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("pvalue", kind="stable", na_position="last")


# --------------------------------------------------------------------------------------------
# ORA


def _ora_table(names, res, member, selected, labels, order_key) -> pd.DataFrame:
    from scipy import sparse

    sub = sparse.csr_matrix(member)[:, np.flatnonzero(selected)]
    sub.sort_indices()
    sel_idx = np.flatnonzero(selected)
    # order the overlap genes of each set by order_key (e.g. adjusted p-value) of the selected genes
    rank = np.empty(sel_idx.size, dtype=np.int64)
    rank[np.argsort(order_key[sel_idx], kind="stable")] = np.arange(sel_idx.size)
    rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    perm = np.lexsort((rank[sub.indices], rows))
    genes = _joined(sub.indptr, sel_idx[sub.indices[perm]], labels)
    table = pd.DataFrame(
        {
            "size": res["size"],
            "overlap": res["overlap"],
            "expected": res["expected"],
            "fold_enrichment": res["fold_enrichment"],
            "pvalue": res["pvalue"],
            "padj": res["padj"],
            "genes": genes,
        },
        index=pd.Index(np.asarray(names, dtype=object), name="gene_set"),
    )
    return _sort(table)


@doc_params(gene_sets=_doc_gene_sets, gene_symbols=_doc_gene_symbols, sizes=_doc_sizes, de_key=_doc_de_key)
def ora(
    data,
    *,
    key: str | None = None,
    contrast=None,
    group=None,
    gene_sets,
    direction: str = "up",
    padj: float = 0.05,
    lfc: float = 0.0,
    universe=None,
    min_size: int = 15,
    max_size: int | None = 500,
    gene_symbols: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
):
    """Over-representation analysis: are the differentially expressed genes enriched in gene sets?

    A one-sided hypergeometric test per set, ``P(X >= k)`` with ``k`` DE genes in the set, of
    the DE genes against the universe of tested genes (``scipy.stats.hypergeom.sf(k - 1, M, n,
    N)``: ``M`` genes in the universe, ``n`` of them in the set, ``N`` DE genes; R's
    ``phyper(k - 1, n, M - n, N, lower.tail = FALSE)``), Benjamini-Hochberg adjusted over all
    tested sets. Sets are sized within the universe before the ``min_size``/``max_size`` filter.

    Parameters
    ----------
    data
        An AnnData holding a differential expression result (results are written into it), or a
        list of gene ids (the table is returned).
    {de_key}
    {gene_sets}
    direction
        Which DE genes: ``"up"`` (``log2FoldChange > lfc``), ``"down"`` (``< -lfc``) or
        ``"both"`` (``|log2FoldChange| > lfc``), each with ``padj`` below the threshold.
    padj
        Adjusted p-value threshold (strictly below) for a gene to count as DE.
    lfc
        Log2 fold change threshold (>= 0).
    universe
        Background genes (ids of ``var_names``, or of the list's ids). Default with an AnnData:
        the tested genes, those with a non-missing ``padj`` (genes DESeq2 filtered out are not
        counted); with a gene list: every gene of the (size-unfiltered) gene sets. DE genes
        outside the universe are ignored.
    {sizes}
    {gene_symbols}
    key_added
        Where to store the results in ``uns``; default ``f"ora_{{key}}"``.
    copy
        With an AnnData, return a modified copy instead of writing into it. Ignored for a gene
        list.

    Returns
    -------
    With an AnnData: ``None`` (or the modified copy with ``copy=True``), having written

    * ``uns[key_added][contrast]``: a DataFrame per contrast indexed by gene set (``gene_set``)
      with ``size`` (set genes in the universe), ``overlap`` (DE genes in the set), ``expected``,
      ``fold_enrichment`` (``overlap / expected``), ``pvalue``, ``padj`` and ``genes`` (the
      overlap genes, most significant first, ``;``-joined, in the sets' ids), sorted by p-value;
    * ``uns[key_added]["params"]``: the DE key and contrasts, thresholds, universe, sizes, and per
      contrast the numbers of DE (``n_de``) and universe (``n_universe``) genes.

    With a gene list: that DataFrame.

    Examples
    --------
    >>> import pandas as pd, bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 500].copy()
    >>> bk.pp.annotate_genes(adata)
    >>> bk.tl.deseq(adata, design="~ cell + dex", contrast=["dex", "trt", "untrt"])
    >>> bk.tl.ora(adata, key="deseq", gene_sets=bk.datasets.reactome(), gene_symbols="symbol", padj=0.1)
    >>> res = adata.uns["ora_deseq"]["dex_trt_vs_untrt"]
    >>> list(res.columns)
    ['size', 'overlap', 'expected', 'fold_enrichment', 'pvalue', 'padj', 'genes']

    A plain gene list returns the table:

    >>> sets = bk.datasets.reactome()
    >>> hits = sets["Interferon alpha/beta signaling"][:12] + ["GAPDH", "ACTB"]
    >>> bk.tl.ora(hits, gene_sets=sets).index[0]
    'Interferon alpha/beta signaling'
    """
    direction = check_choice(direction, ("up", "down", "both"), "direction")
    thr = _check_number(padj, "padj", 0.0, 1.0)
    lfc = _check_number(lfc, "lfc", 0.0, np.inf)
    min_size, max_size = _check_sizes(min_size, max_size)
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    net = as_gene_sets(gene_sets)
    params = {
        "method": "ora",
        "test": "hypergeometric, one-sided (over-representation)",
        "direction": direction,
        "padj": thr,
        "lfc": lfc,
        "min_size": min_size,
        "max_size": max_size,
        "gene_symbols": gene_symbols,
        "n_gene_sets": int(net["source"].nunique()),
    }
    from .._stats.enrichment.ora import ora as _ora

    if not isinstance(data, AnnData):
        for name, val in (
            ("key", key),
            ("contrast", contrast),
            ("group", group),
            ("gene_symbols", gene_symbols),
            ("key_added", key_added),
        ):
            if val is not None:
                raise ValueError(f"{name}= applies to an AnnData input; with a gene list leave it unset")
        hits = _gene_list(data, "data")
        univ = pd.Index(pd.unique(net["target"])) if universe is None else _gene_list(universe, "universe")
        member, names, _ = sets_for_genes(
            net, univ, min_size=min_size, max_size=max_size, what="the universe", validated=True
        )
        selected = univ.isin(hits)
        if not selected.any():
            raise ValueError(
                f"none of the {len(hits)} genes is in the universe of {len(univ)} genes (e.g. {list(univ[:3])})"
            )
        res = _ora(member, selected)
        order_key = np.full(len(univ), np.inf)
        order_key[univ.get_indexer(hits[hits.isin(univ)])] = np.arange(int(selected.sum()))
        return _ora_table(names, res, member, selected, np.asarray(univ, dtype=object), order_key)

    key = _de_key(data, key)
    grouped = _grouped_contrasts(data, key, contrast, group)
    contrasts = _contrast_list(data, key, contrast) if grouped is None else grouped[0]
    key_added = _check_key_added(key_added, f"ora_{key}")
    var_names = data.var_names
    given = None
    if universe is not None:
        given = _gene_list(universe, "universe")
        if not given.isin(var_names).any():
            raise ValueError(
                f"no gene of universe (e.g. {list(given[:3])}) is in adata.var_names (e.g. {list(var_names[:3])})"
            )
    n_de, n_univ = {}, {}

    def one(c: str) -> pd.DataFrame:
        df = de_df(data, key, contrast=c)
        for col in ("padj", "log2FoldChange"):
            if col not in df.columns:
                raise KeyError(f"result {key!r} ({c}) has no {col!r} column; columns: {list(df.columns)}")
        q = pd.to_numeric(df["padj"], errors="coerce").to_numpy(dtype=np.float64)
        lf = pd.to_numeric(df["log2FoldChange"], errors="coerce").to_numpy(dtype=np.float64)
        tested = ~np.isnan(q)
        if given is not None:  # in a grouped result, only the group's tested genes
            tested = np.asarray(var_names.isin(given)) & (tested if grouped is not None else True)
        if not tested.any():
            raise ValueError(f"result {key!r} ({c}) has no tested gene (every padj is missing)")
        univ = var_names[tested]
        member, names, _ = sets_for_genes(
            net, univ, var=data.var, gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, validated=True,
            what=f"the tested genes of {key!r} ({c})",
        )  # fmt: skip
        qt, lt = q[tested], lf[tested]
        with np.errstate(invalid="ignore"):
            sig = np.nan_to_num(qt, nan=np.inf) < thr
            if direction == "up":
                sel = sig & (lt > lfc)
            elif direction == "down":
                sel = sig & (lt < -lfc)
            else:
                sel = sig & (np.abs(lt) > lfc)
        sel = np.nan_to_num(sel, nan=False).astype(bool)
        res = _ora(member, sel)
        labels = _labels(data.var, gene_symbols, univ)
        n_de[c] = int(sel.sum())
        n_univ[c] = int(univ.size)
        return _ora_table(names, res, member, sel, labels, np.nan_to_num(qt, nan=np.inf))

    tables, skipped = _run_contrasts(one, contrasts, grouped is not None, key)
    params.update(
        key=key,
        contrasts=list(tables),
        universe="tested genes (non-missing padj)" if given is None else f"given ({len(given)} genes)",
        n_de=n_de,
        n_universe=n_univ,
    )
    if grouped is not None:
        params.update(grouped[1], skipped=skipped)
    adata = start(data, copy)
    _store(adata, key_added, tables, params)
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# GSEA


def _gsea_table(names, res, labels, member) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "ES": res["es"],
            "NES": res["nes"],
            "pvalue": res["pvalue"],
            "padj": res["padj"],
            "log2err": res["log2err"],
            "size": res["size"].astype(np.int64),
            "leading_edge": _joined(res["le_indptr"], res["le_indices"], labels),
            "genes": _joined(member.indptr, member.indices, labels),
        },
        index=pd.Index(np.asarray(names, dtype=object), name="gene_set"),
    )
    return _sort(table)


def _ranked_series(data) -> pd.Series:
    s = data
    if not s.index.is_unique:
        dup = s.index[s.index.duplicated()].unique()[:3].tolist()
        raise ValueError(f"the ranking repeats gene ids, e.g. {dup}; keep one value per gene")
    if s.index.hasnans:
        raise ValueError("the ranking has missing gene ids in its index")
    vals = pd.to_numeric(s, errors="coerce")
    if vals.isna().any():
        n = int(vals.isna().sum())
        raise ValueError(f"the ranking has {n} missing or non-numeric values; drop them first (s.dropna())")
    v = vals.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(
            f"the ranking has {int((~np.isfinite(v)).sum())} infinite values; statistics must be finite"
        )
    return pd.Series(v, index=pd.Index(s.index.astype(str), dtype=object))


@doc_params(gene_sets=_doc_gene_sets, gene_symbols=_doc_gene_symbols, sizes=_doc_sizes, de_key=_doc_de_key)
def gsea(
    data,
    *,
    key: str | None = None,
    contrast=None,
    group=None,
    gene_sets,
    stat: str = "stat",
    min_size: int = 15,
    max_size: int | None = 500,
    eps: float = 0.0,
    n_perm_simple: int = 1000,
    sample_size: int = 101,
    seed: int = 0,
    gene_symbols: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
):
    """Preranked gene set enrichment analysis (GSEA) with fgsea's multilevel p-values.

    Genes are ranked by a statistic of a differential expression result (the Wald or moderated t
    statistic by default), one ranking per contrast. For every set: the enrichment score (ES,
    the weighted Kolmogorov-Smirnov running sum of GSEA with weight ``|stat|``), the normalised
    score (NES: ES over the mean score of the same sign of random sets of the same size), and a
    p-value by fgsea's adaptive multilevel splitting Monte-Carlo (Korotkevich et al. 2016,
    ``fgseaMultilevel`` of fgsea 1.31), which estimates arbitrarily small p-values with a known
    error (``log2err``), Benjamini-Hochberg adjusted over the sets of a contrast. See
    :mod:`bulkpy._stats.enrichment.gsea` for the algorithm. Genes with a missing statistic (not tested)
    are left out of the ranking; tied statistics keep the order of ``var_names``.

    ES and leading edges equal fgsea's; p-values and NES are Monte-Carlo estimates with their
    own random numbers (same ``seed``, same result, whatever the thread count).

    Parameters
    ----------
    data
        An AnnData holding a differential expression result (results are written into it), or a
        ranked ``pd.Series`` of statistics indexed by gene id (an ``.rnk`` file; the table is
        returned).
    {de_key}
    {gene_sets}
    stat
        Column of the DE table to rank by (``"stat"``, ``"log2FoldChange"``, ...).
    {sizes}
    eps
        Lower bound of the p-values computed (fgsea's ``eps``); 0 estimates every p-value.
    n_perm_simple
        Random gene sets per size in the first sampling phase (fgsea's ``nPermSimple``).
    sample_size
        Population size of the multilevel splitting (fgsea's ``sampleSize``; made odd).
    seed
        Seed of the random numbers.
    {gene_symbols}
    key_added
        Where to store the results in ``uns``; default ``f"gsea_{{key}}"``.
    copy
        With an AnnData, return a modified copy instead of writing into it. Ignored for a Series.

    Returns
    -------
    With an AnnData: ``None`` (or the modified copy with ``copy=True``), having written

    * ``uns[key_added][contrast]``: a DataFrame per contrast indexed by gene set (``gene_set``)
      with ``ES``, ``NES``, ``pvalue``, ``padj``, ``log2err`` (expected standard deviation of
      ``log2(pvalue)``; missing when the estimate may be biased), ``size`` (set genes among the
      ranked genes) and ``leading_edge`` (``;``-joined, in the sets' ids, from the extreme of the
      ranking inwards) and ``genes`` (all the set's genes among the ranked genes, ``;``-joined, in
      the sets' ids; :func:`bulkpy.get.gsea_running_score`
      redraws the running score from them), sorted by p-value;
    * ``uns[key_added]["params"]``: the DE key, contrasts and statistic, the sampling parameters
      and per contrast the number of ranked genes (``n_genes``).

    With a Series: that DataFrame.

    Examples
    --------
    >>> import pandas as pd, bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 500].copy()
    >>> bk.pp.annotate_genes(adata)
    >>> bk.tl.deseq(adata, design="~ cell + dex", contrast=["dex", "trt", "untrt"])
    >>> reactome = bk.datasets.reactome()
    >>> sets = {{k: v for k, v in reactome.items() if "nterferon" in k or "Glycoly" in k}}
    >>> bk.tl.gsea(adata, key="deseq", gene_sets=sets, gene_symbols="symbol")
    >>> res = adata.uns["gsea_deseq"]["dex_trt_vs_untrt"]
    >>> list(res.columns)
    ['ES', 'NES', 'pvalue', 'padj', 'log2err', 'size', 'leading_edge', 'genes']

    A ranked Series returns the table:

    >>> stat = bk.get.de_df(adata, "deseq")["stat"].dropna()
    >>> ranks = pd.Series(stat.to_numpy(), index=adata.var.loc[stat.index, "symbol"].astype(str)).groupby(level=0).first()
    >>> bk.tl.gsea(ranks, gene_sets=sets).shape[1]
    8
    """
    stat_name = stat
    if not isinstance(stat_name, str):
        raise TypeError(f"stat must be the name of a column of the DE table, got {stat!r}")
    min_size, max_size = _check_sizes(min_size, max_size)
    eps = _check_number(eps, "eps", 0.0, 1.0)
    n_perm_simple = _check_int(n_perm_simple, "n_perm_simple", minimum=1)
    sample_size = _check_int(sample_size, "sample_size", minimum=3)
    seed = _check_int(seed, "seed", minimum=0)
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    net = as_gene_sets(gene_sets)
    from .._stats.enrichment.gsea import gsea as _gsea

    opts = {"n_perm_simple": n_perm_simple, "sample_size": sample_size, "eps": eps, "seed": seed}
    params = {
        "method": "gsea",
        "algorithm": "fgsea multilevel (Korotkevich et al. 2016), scoreType std, gseaParam 1",
        "min_size": min_size,
        "max_size": max_size,
        "gene_symbols": gene_symbols,
        "n_gene_sets": int(net["source"].nunique()),
        **opts,
    }

    def run(ranking: pd.Series, var, what: str) -> pd.DataFrame:
        genes = pd.Index(ranking.index, dtype=object)
        if len(genes) <= min_size:
            raise ValueError(
                f"{what} has {len(genes)} ranked gene(s); a tested set needs at least min_size={min_size} "
                "genes and fewer than all ranked genes"
            )
        member, names, _ = sets_for_genes(
            net, genes, var=var, gene_symbols=gene_symbols, min_size=min_size, validated=True,
            max_size=min(max_size, len(genes) - 1) if max_size is not None else len(genes) - 1, what=what,
        )  # fmt: skip
        res = _gsea(ranking.to_numpy(dtype=np.float64), member.indptr, member.indices, **opts)
        return _gsea_table(names, res, _labels(var, gene_symbols, genes), member)

    if not isinstance(data, AnnData):
        if not isinstance(data, pd.Series):
            raise TypeError(
                f"data must be an AnnData holding a DE result or a pd.Series of statistics indexed by gene, "
                f"got {type(data).__name__}"
            )
        for name, val in (
            ("key", key),
            ("contrast", contrast),
            ("group", group),
            ("gene_symbols", gene_symbols),
            ("key_added", key_added),
        ):
            if val is not None:
                raise ValueError(f"{name}= applies to an AnnData input; with a ranked Series leave it unset")
        return run(_ranked_series(data), None, "the ranking")

    key = _de_key(data, key)
    grouped = _grouped_contrasts(data, key, contrast, group)
    contrasts = _contrast_list(data, key, contrast) if grouped is None else grouped[0]
    key_added = _check_key_added(key_added, f"gsea_{key}")
    frames = {}
    for c in contrasts:
        df = de_df(data, key, contrast=c)
        if stat_name not in df.columns:
            raise KeyError(
                f"stat {stat_name!r} is not a column of result {key!r} ({c}); columns: {list(df.columns)}"
            )
        v = pd.to_numeric(df[stat_name], errors="coerce").to_numpy(dtype=np.float64)
        if np.isinf(v).any():
            raise ValueError(
                f"column {stat_name!r} of result {key!r} ({c}) has {int(np.isinf(v).sum())} infinite values"
            )
        ok = ~np.isnan(v)
        if not ok.any():
            raise ValueError(f"column {stat_name!r} of result {key!r} ({c}) has no value (all missing)")
        frames[c] = pd.Series(v[ok], index=pd.Index(data.var_names[ok], dtype=object))
    tables, skipped = _run_contrasts(
        lambda c: run(frames[c], data.var, f"the ranked genes of {key!r} ({c})"), list(frames), grouped is not None, key
    )
    params.update(
        key=key, contrasts=list(tables), stat=stat_name, n_genes={c: int(s.size) for c, s in frames.items()}
    )
    if grouped is not None:
        params.update(grouped[1], skipped=skipped)
    adata = start(data, copy)
    _store(adata, key_added, tables, params)
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# per-sample scores

#: GSVA release whose defaults ``"gsva"``/``"ssgsea"`` follow (``gsvaParam``/``ssgseaParam``).
GSVA_VERSION = "2.6.12"
#: Methods bulkpy computes itself (R GSVA parity) and their options with GSVA 2.6's defaults.
OWN_METHODS = {
    "gsva": {"kcdf": "auto", "kcdf_none_min_sample_size": 200, "tau": 1.0, "mx_diff": True, "abs_ranking": False},
    "ssgsea": {"alpha": 0.25, "normalize": True},
}


def _gsva_kcdf(kcdf, min_sample_size, n_samples: int, integer_dtype: bool) -> str:
    """GSVA 2.6's kernel choice (``.parse_kcdf_param``): ``"auto"`` is the empirical CDF
    (``"none"``) from ``kcdfNoneMinSampleSize`` samples on, else a Poisson kernel for an integer
    matrix and a Gaussian one otherwise."""
    kcdf = kcdf.lower() if isinstance(kcdf, str) else kcdf
    kcdf = check_choice(kcdf, ("auto", "gaussian", "poisson", "none"), "kcdf")
    if isinstance(min_sample_size, bool) or not isinstance(min_sample_size, int | np.integer) or min_sample_size < 1:
        raise ValueError(f"kcdf_none_min_sample_size must be a positive integer, got {min_sample_size!r}")
    if kcdf != "auto":
        return kcdf
    if n_samples >= min_sample_size:
        return "none"
    return "poisson" if integer_dtype else "gaussian"
#: Methods delegated to decoupler (``decoupler.mt.<name>``; wsum and wmean through ``waggr``).
DECOUPLER_METHODS = ("ulm", "mlm", "wsum", "wmean", "waggr", "aucell", "zscore", "viper", "udt", "mdt")


def _decoupler_fn(method: str):
    try:
        import decoupler as dc
    except ImportError as e:  # pragma: no cover - decoupler is a dependency
        raise ImportError(f"method={method!r} needs decoupler (pip install decoupler)") from e
    name = "waggr" if method in ("wsum", "wmean") else method
    mt = getattr(dc, "mt", None)
    fn = getattr(mt, name, None) if mt is not None else None
    if fn is not None:
        return fn, "mt"
    fn = getattr(dc, f"run_{method}", None)  # decoupler 1.x
    if fn is not None:
        return fn, "run"
    version = getattr(dc, "__version__", "?")
    raise ValueError(f"the installed decoupler ({version}) has no method {method!r}")


def _unpack(res):
    if isinstance(res, tuple | list) and len(res) >= 1 and isinstance(res[0], pd.DataFrame):
        pv = res[-1] if len(res) >= 2 and isinstance(res[-1], pd.DataFrame) else None
        return res[0], pv
    if isinstance(res, pd.DataFrame):
        return res, None
    return None


def _run_decoupler(
    method: str, x: np.ndarray, obs_names, var_names, net: pd.DataFrame, tmin: int, kwargs: dict
):
    fn, api = _decoupler_fn(method)
    kw = dict(kwargs)
    if method in ("wsum", "wmean"):
        kw.setdefault("fun", method)
    df = pd.DataFrame(x, index=pd.Index(obs_names, dtype=object), columns=pd.Index(var_names, dtype=object))
    try:
        if api == "mt":
            res = fn(df, net, tmin=tmin, **kw)
        else:  # decoupler 1.x: run_<method>(mat, net, source, target, weight, min_n)
            res = fn(mat=df, net=net, source="source", target="target", weight="weight", min_n=tmin, **kw)
    except AssertionError as e:  # decoupler validates its options with assert
        raise ValueError(f"decoupler rejected the options of method={method!r}: {e}") from None
    out = _unpack(res)
    if out is None:
        # an API that writes into an AnnData: run it on a temporary one and read obsm back
        tmp = AnnData(X=x.copy(), obs=pd.DataFrame(index=df.index), var=pd.DataFrame(index=df.columns))
        got = fn(tmp, net, tmin=tmin, **kw)
        tmp = got if isinstance(got, AnnData) else tmp
        es = next((tmp.obsm[k] for k in tmp.obsm if k.startswith("score_") or k.endswith("_estimate")), None)
        pv = next((tmp.obsm[k] for k in tmp.obsm if k.startswith("padj_") or k.endswith("_pvals")), None)
        if es is None:
            raise RuntimeError(
                f"could not read the scores of decoupler's {method!r} (unknown return type {type(res)})"
            )
        out = (pd.DataFrame(es), None if pv is None else pd.DataFrame(pv))
    return out


def _safe_columns(names) -> list[str]:
    """Set names as h5ad-safe column names: ``/`` (which h5ad can not store in a key) becomes ``_``."""
    cols = [str(n).replace("/", "_") for n in names]
    seen: dict[str, int] = {}
    out = []
    for c in cols:
        if c in seen:
            seen[c] += 1
            c = f"{c}_{seen[c]}"
        else:
            seen[c] = 0
        out.append(c)
    return out


def _score_table(es: pd.Series, pv: pd.Series | None, names: pd.Index, sizes: np.ndarray) -> pd.DataFrame:
    """One contrast's table: decoupler's score (and p-value) per set, with the set's size."""
    keep = np.asarray(names.isin(es.index))
    names = pd.Index(np.asarray(names[keep], dtype=object), name="gene_set")
    table = pd.DataFrame(
        {
            "score": es.reindex(names).to_numpy(dtype=np.float64),
            "padj": np.nan if pv is None else pv.reindex(names).to_numpy(dtype=np.float64),
            "size": sizes[keep].astype(np.int64),
        },
        index=names,
    )
    if pv is None:  # no test: strongest scores first
        return table.iloc[np.argsort(-np.abs(table["score"].to_numpy()), kind="stable")]
    return table.sort_values("padj", kind="stable", na_position="last")


def _de_stat_rows(data: AnnData, key: str, contrasts: list[str], stat: str) -> pd.DataFrame:
    """The DE statistic, contrasts x genes, NaN where a gene was not tested (in the group)."""
    rows = {}
    for c in contrasts:
        df = de_df(data, key, contrast=c)
        if stat not in df.columns:
            raise KeyError(f"stat {stat!r} is not a column of result {key!r} ({c}); columns: {list(df.columns)}")
        v = pd.to_numeric(df[stat], errors="coerce").to_numpy(dtype=np.float64)
        if np.isinf(v).any():
            raise ValueError(f"column {stat!r} of result {key!r} ({c}) has {int(np.isinf(v).sum())} infinite values")
        if np.isnan(v).all():
            raise ValueError(f"column {stat!r} of result {key!r} ({c}) has no value (all missing)")
        rows[c] = v
    return pd.DataFrame.from_dict(rows, orient="index", columns=pd.Index(data.var_names, dtype=object))


def _score_de(
    data: AnnData, *, key: str, contrasts: list[str], grouped: bool, stat: str, net: pd.DataFrame,
    method: str, gene_symbols, min_size: int, max_size, kwargs: dict,
) -> tuple[dict[str, pd.DataFrame], dict, dict[str, int]]:
    """decoupler's ``method`` on the DE statistic of each contrast: one call per set of contrasts
    tested on the same genes (all contrasts of an ungrouped result, the contrasts of a group),
    the sets matched and size-filtered on those genes. Returns the tables, the skipped contrasts
    and the number of genes scored per contrast."""
    stats = _de_stat_rows(data, key, contrasts, stat)
    tested = stats.notna().to_numpy()
    first: dict[bytes, str] = {}
    batches: dict[str, list[str]] = {}  # first contrast -> contrasts tested on the same genes
    for c, mask in zip(contrasts, tested, strict=True):
        batches.setdefault(first.setdefault(mask.tobytes(), c), []).append(c)

    def run(batch: list[str]) -> dict[str, pd.DataFrame]:
        mask = tested[contrasts.index(batch[0])]
        genes = pd.Index(data.var_names[mask], dtype=object)
        what = f"the tested genes of {key!r} ({', '.join(batch)})"
        member, names, filt = sets_for_genes(
            net, genes, var=data.var, gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, what=what,
            validated=True,
        )  # fmt: skip
        x = stats.loc[batch].to_numpy(dtype=np.float64)[:, mask]
        es, pv = _run_decoupler(method, x, pd.Index(batch, dtype=object), genes, filt, min_size, kwargs)
        sizes = np.diff(member.indptr)
        return {
            c: _score_table(es.loc[c], None if pv is None else pv.loc[c], pd.Index(names), sizes)
            for c in batch
            if c in es.index
        }

    per_batch, skipped = _run_contrasts(lambda b: run(batches[b]), list(batches), grouped, key)
    tables = {c: t for b in per_batch.values() for c, t in b.items()}
    skipped = {c: why for b, why in skipped.items() for c in batches[b]}
    missing = [c for c in contrasts if c not in tables and c not in skipped]
    for c in missing:  # decoupler drops an all-zero row
        skipped[c] = "decoupler returned no score (all statistics zero)"
    if not tables:
        raise ValueError(f"no contrast of result {key!r} could be scored: {skipped}")
    n_genes = {c: int(tested[i].sum()) for i, c in enumerate(contrasts) if c in tables}
    return {c: tables[c] for c in contrasts if c in tables}, skipped, n_genes


@doc_params(gene_sets=_doc_gene_sets, gene_symbols=_doc_gene_symbols, de_key=_doc_de_key)
def score(
    adata: AnnData,
    *,
    gene_sets,
    method: str = "ulm",
    layer: str | None = None,
    key: str | None = None,
    contrast=None,
    group=None,
    stat: str = "stat",
    gene_symbols: str | None = None,
    min_size: int = 5,
    max_size: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
    **kwargs,
):
    """Per-sample gene set (pathway, regulon) scores.

    ``"gsva"`` and ``"ssgsea"`` are computed by bulkpy with the defaults of R's GSVA 2.6
    (``gsva(gsvaParam(...))``, ``gsva(ssgseaParam(...))``) and agree with it, and with GSVA 1.46,
    to ~1e-15 on log-CPM; GSVA drops genes that are constant across samples first (ssGSEA keeps
    them), as GSVA does. GSVA 2.6 chooses the kernel itself (``kcdf="auto"``): the empirical CDF
    from 200 samples on, below that a Poisson kernel for an integer matrix and a Gaussian one
    otherwise (GSVA 1.46 always used the Gaussian kernel; pass ``kcdf="gaussian"`` for it). The
    other methods are
    decoupler's (``decoupler.mt.<method>``: ``ulm``, ``mlm``, ``wsum``/``wmean`` (``waggr``),
    ``aucell``, ``zscore``, ``viper``, ``udt``, ``mdt``), run on the layer with the sets matched
    and size-filtered here; weighted sets (e.g. :func:`bulkpy.datasets.progeny`) keep their
    weights for those, while GSVA and ssGSEA use membership only.

    With ``key=`` a differential expression result is scored instead of a layer: decoupler's
    method runs on the DE statistic of each contrast (and each group of a result split by group),
    giving pathway activity per contrast, as ``dc.mt.ulm(data=bk.get.de_stats(adata, key),
    net=...)`` does, stored as a table per contrast like :func:`bulkpy.tl.gsea`'s. Genes whose
    statistic is missing (not tested; in a grouped result, not tested in the group) are left out
    of the contrast's scoring (:func:`bulkpy.get.de_stats` sets them to 0). GSVA and ssGSEA rank
    samples against each other and do not apply to a DE statistic.

    Parameters
    ----------
    adata
        Annotated data matrix, samples in ``obs`` and genes in ``var``.
    {gene_sets}
    method
        ``"ulm"`` (default), ``"mlm"``, ``"wsum"``, ``"wmean"``, ``"waggr"``, ``"aucell"``,
        ``"zscore"``, ``"viper"``, ``"udt"``, ``"mdt"`` (decoupler), or ``"gsva"``, ``"ssgsea"``.
    layer
        Layer of normalised, log-scale expression (e.g. log-CPM or VST); ``None`` uses ``X``.
        Not with ``key``.
    {de_key}
        With ``key``, the result is scored per contrast instead of per sample (decoupler's
        methods only).
    stat
        With ``key``: the column of the DE table to score (``"stat"``: the Wald, moderated t or
        signed statistic; ``"log2FoldChange"``, ...).
    {gene_symbols}
    min_size
        Score only sets with at least this many genes among ``var_names`` (decoupler's ``tmin``;
        GSVA's ``min.sz``).
    max_size
        Score only sets with at most this many genes (GSVA's ``max.sz``); ``None``: no upper bound.
    key_added
        Name of the result: ``obsm[f"score_{{key_added}}"]``; default the method name. A second
        collection scored with another ``key_added`` does not overwrite the first. With ``key``:
        ``uns[key_added]``; default ``f"{{method}}_{{key}}"`` (e.g. ``"ulm_deseq"``).
    copy
        Return a modified copy instead of writing into ``adata``.
    **kwargs
        Options of the method: for ``"gsva"`` ``kcdf`` (``"auto"``, ``"gaussian"``,
        ``"poisson"`` for counts, ``"none"``), ``kcdf_none_min_sample_size`` (200; GSVA's
        ``kcdfNoneMinSampleSize``), ``tau`` (1), ``mx_diff`` (True; ``maxDiff``),
        ``abs_ranking`` (False; ``absRanking``); for ``"ssgsea"`` ``alpha`` (0.25) and
        ``normalize`` (True); for decoupler's methods, theirs (e.g. ``times`` for ``waggr``).

    Returns
    -------
    ``None`` when ``copy=False`` (``adata`` is modified in place), else the modified copy, with

    * ``obsm[f"score_{{name}}"]``: DataFrame of scores, samples x gene sets (``name`` =
      ``key_added`` or the method); ``/`` in set names becomes ``_`` (h5ad can not store it);
    * ``obsm[f"padj_{{name}}"]``: adjusted p-values, same shape, for methods that test
      (``ulm``, ``mlm``, ``waggr`` with permutations, ``viper``, ``zscore``);
    * ``uns[f"score_{{name}}"]["params"]``: method, options (for ``"gsva"`` with
      ``kcdf_used``, the kernel ``"auto"`` chose), the GSVA release followed
      (``gsva_version``), layer, sizes, backend and version, and the original set names in
      column order (``gene_sets``).

    With ``key`` (no ``obsm`` written):

    * ``uns[key_added][contrast]``: a DataFrame per contrast (``f"{{group}}:{{contrast}}"`` in a
      grouped result; read with :func:`bulkpy.get.enrichment`, drawn by
      :func:`bulkpy.pl.enrichment` and :func:`bulkpy.pl.enrichment_groups`) indexed by gene set
      (``gene_set``) with ``score`` (decoupler's), ``padj`` (decoupler's p-value, Benjamini-Hochberg
      adjusted over the sets of the contrast by decoupler, except ``mlm``'s, which decoupler leaves
      unadjusted; ``NaN`` for methods that do not test, e.g. ``aucell``) and ``size`` (set genes
      among the contrast's tested genes), sorted by ``padj`` (else by ``|score|``);
    * ``uns[key_added]["params"]``: ``method="score"``, ``score_method``, options, the DE key,
      contrasts and statistic, sizes, backend and version, the number of genes scored per
      contrast (``n_genes``) and, for a grouped result, ``split_by`` and the contrasts skipped
      with their reason (``skipped``).

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 500].copy()
    >>> bk.pp.annotate_genes(adata)
    >>> adata.layers["log_cpm"] = np.log2(adata.X / adata.X.sum(axis=1, keepdims=True) * 1e6 + 1)
    >>> bk.tl.score(adata, gene_sets=bk.datasets.progeny(), layer="log_cpm", gene_symbols="symbol")
    >>> adata.obsm["score_ulm"].shape
    (8, 14)
    >>> sets = {{k: v for k, v in bk.datasets.reactome().items() if "nterferon" in k}}
    >>> bk.tl.score(adata, gene_sets=sets, method="ssgsea", layer="log_cpm", gene_symbols="symbol")
    >>> adata.obsm["score_ssgsea"].shape[0]
    8

    Pathway activity of a contrast, from the Wald statistics of DESeq2:

    >>> bk.tl.deseq(adata, design="~ cell + dex", contrast=["dex", "trt", "untrt"])
    >>> bk.tl.score(adata, gene_sets=bk.datasets.progeny(), key="deseq", gene_symbols="symbol")
    >>> res = bk.get.enrichment(adata, "ulm_deseq")
    >>> list(res.columns), res.shape[0]
    (['score', 'padj', 'size'], 14)
    """
    all_methods = list(OWN_METHODS) + list(DECOUPLER_METHODS)
    if not isinstance(method, str) or method not in all_methods:
        raise ValueError(f"method={method!r} is not supported; choose one of {all_methods}")
    if key is not None:
        return _score_de_result(
            adata, key=key, contrast=contrast, group=group, stat=stat, gene_sets=gene_sets, method=method,
            layer=layer, gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, key_added=key_added,
            copy=copy, kwargs=kwargs,
        )  # fmt: skip
    for pname, val in (("contrast", contrast), ("group", group)):
        if val is not None:
            raise ValueError(f"{pname}= applies to a DE result: pass key= too, or leave it unset to score samples")
    if stat != "stat":
        raise ValueError("stat= applies to a DE result: pass key= too, or leave it unset to score samples")
    name = method if key_added is None else key_added
    if not isinstance(name, str) or not name:
        raise TypeError(f"key_added must be a non-empty string, got {key_added!r}")
    obsm_key = check_key(f"score_{name}", "key_added")
    min_size, max_size = _check_sizes(min_size, max_size)
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    x = dense(get_matrix(adata, layer))
    if not np.isfinite(x).all():
        raise ValueError(
            f"{'X' if layer is None else f'layer {layer!r}'} has {int((~np.isfinite(x)).sum())} NaN or infinite values"
        )
    net = as_gene_sets(gene_sets)
    genes = adata.var_names
    options: dict = {}
    if method in OWN_METHODS:
        allowed = OWN_METHODS[method]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise TypeError(
                f"method={method!r} takes no option(s) {unknown}; its options are {sorted(allowed)}"
            )
        options = {**allowed, **kwargs}
        keep = np.ones(genes.size, dtype=bool)
        engine_options = dict(options)
        if method == "gsva":
            raw = get_matrix(adata, layer)
            kcdf = _gsva_kcdf(
                options["kcdf"], engine_options.pop("kcdf_none_min_sample_size"), adata.n_obs,
                np.dtype(raw.dtype).kind in "iu",
            )  # fmt: skip
            engine_options["kcdf"] = kcdf
            options["kcdf_used"] = kcdf
            if kcdf == "poisson" and (x < 0).any() | (x != np.round(x)).any():
                raise ValueError(
                    "kcdf='poisson' needs integer counts (pass the counts layer), found non-integer values"
                )
            from .._stats.enrichment.gsva import constant_genes

            keep = ~constant_genes(x)
            if keep.sum() < 2:
                raise ValueError("fewer than two genes vary across samples; GSVA needs at least two")
        member, names, _ = sets_for_genes(
            net, genes[keep], var=adata.var, gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, validated=True,
        )  # fmt: skip
        from .._stats.enrichment import gsva as _gsva

        xk = x[:, keep]
        if method == "gsva":
            es = _gsva.gsva(xk, member.indptr, member.indices, **engine_options)
        else:
            es = _gsva.ssgsea(xk, member.indptr, member.indices, **engine_options)
        scores = pd.DataFrame(es, index=adata.obs_names.copy(), columns=list(names))
        padj = None
        backend = f"bulkpy (R GSVA {GSVA_VERSION} defaults)"
    else:
        _decoupler_fn(method)  # fail early if decoupler lacks it
        member, names, filt = sets_for_genes(
            net, genes, var=adata.var, gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, validated=True,
        )  # fmt: skip
        options = dict(kwargs)
        es, pv = _run_decoupler(method, x, adata.obs_names, genes, filt, min_size, kwargs)
        cols = [c for c in names if c in es.columns]
        scores = es.reindex(index=adata.obs_names, columns=cols).astype(np.float64)
        padj = None if pv is None else pv.reindex(index=adata.obs_names, columns=cols).astype(np.float64)
        names = pd.Index(cols)
        import decoupler as dc

        backend = f"decoupler {getattr(dc, '__version__', '?')}"
    cols = _safe_columns(names)
    scores.columns = cols
    scores.index = pd.Index(adata.obs_names.astype(str), dtype=object)
    if padj is not None:
        padj.columns = cols
        padj.index = scores.index
    params = {
        "method": method,
        "options": h5ad_safe(options),
        "layer": layer,
        "gene_symbols": gene_symbols,
        "min_size": min_size,
        "max_size": max_size,
        "backend": backend,
        "gene_sets": [str(n) for n in names],
    }
    if method in OWN_METHODS:
        params["gsva_version"] = GSVA_VERSION
    adata = start(adata, copy)
    adata.obsm[obsm_key] = scores
    padj_key = f"padj_{name}"
    if padj is not None:
        adata.obsm[padj_key] = padj
    else:
        adata.obsm.pop(padj_key, None)
    adata.uns.pop(obsm_key, None)
    write_params(adata, obsm_key, params)
    return finish(adata, copy)


def _score_de_result(
    adata: AnnData, *, key, contrast, group, stat, gene_sets, method: str, layer, gene_symbols, min_size,
    max_size, key_added, copy, kwargs: dict,
):
    """``bk.tl.score(key=...)``: validate, score each contrast of the DE result, store the tables."""
    if method in OWN_METHODS:
        raise ValueError(
            f"method={method!r} ranks samples against each other and does not apply to a DE statistic; "
            f"with key= use one of decoupler's methods {list(DECOUPLER_METHODS)} (e.g. 'ulm')"
        )
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData holding a DE result, got {type(adata).__name__}")
    if layer is not None:
        raise ValueError("layer= applies to per-sample scores; with key= the DE statistic is scored, leave layer unset")
    if not isinstance(stat, str):
        raise TypeError(f"stat must be the name of a column of the DE table, got {stat!r}")
    min_size, max_size = _check_sizes(min_size, max_size)
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    key = _de_key(adata, key)
    grouped = _grouped_contrasts(adata, key, contrast, group)
    contrasts = _contrast_list(adata, key, contrast) if grouped is None else grouped[0]
    key_added = _check_key_added(key_added, f"{method}_{key}")
    _decoupler_fn(method)  # fail early if decoupler lacks it
    net = as_gene_sets(gene_sets)
    tables, skipped, n_genes = _score_de(
        adata, key=key, contrasts=contrasts, grouped=grouped is not None, stat=stat, net=net, method=method,
        gene_symbols=gene_symbols, min_size=min_size, max_size=max_size, kwargs=kwargs,
    )  # fmt: skip
    import decoupler as dc

    params = {
        "method": "score",
        "score_method": method,
        "options": h5ad_safe(dict(kwargs)),
        "key": key,
        "contrasts": list(tables),
        "stat": stat,
        "gene_symbols": gene_symbols,
        "min_size": min_size,
        "max_size": max_size,
        "n_gene_sets": int(net["source"].nunique()),
        "n_genes": n_genes,
        "backend": f"decoupler {getattr(dc, '__version__', '?')}",
    }
    if grouped is not None:
        params.update(grouped[1], skipped=skipped)
    elif skipped:
        params["skipped"] = skipped
    adata = start(adata, copy)
    _store(adata, key_added, tables, params)
    return finish(adata, copy)
