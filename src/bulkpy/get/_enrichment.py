"""Tidy tables of enrichment results (``bk.tl.gsea``/``bk.tl.ora``/``bk.tl.camera``/``bk.tl.fry``/``bk.tl.score(key=)``), GSEA running scores and dispersions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._validate import check_adata, check_unique_var_names, dense, get_matrix
from ._de import de_df, split_name

_METHODS = ("gsea", "ora", "camera", "fry", "score")


def _enrichment_keys(adata) -> list[str]:
    out = []
    for k, v in adata.uns.items():
        params = v.get("params") if isinstance(v, Mapping) else None
        if isinstance(params, Mapping) and params.get("method") in _METHODS:
            out.append(str(k))
    return out


def _entry(adata, key) -> tuple[Mapping, str, list[str]]:
    """The ``uns`` entry of an enrichment run, its method and its contrasts."""
    check_adata(adata)
    if not isinstance(key, str):
        raise TypeError(f"key must be the key_added of an enrichment run (a string), got {key!r}")
    found = _enrichment_keys(adata)
    if key not in found:
        raise KeyError(
            f"no enrichment result (bk.tl.gsea / ora / camera / fry / score(key=)) under key {key!r}; results in this object: {found or 'none'}"
        )
    entry = adata.uns[key]
    method = str(entry["params"]["method"])
    contrasts = [str(c) for c in entry if c != "params"]
    return entry, method, contrasts


def _optional(value) -> str | None:
    """A stored optional string parameter (``None`` is stored as ``"None"`` in h5ad-safe params)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "None":
        return None
    return str(value)


def _pick(contrasts: list[str], contrast, key: str) -> str:
    if contrast is None:
        if len(contrasts) != 1:
            raise ValueError(f"result {key!r} has {len(contrasts)} contrasts; pass contrast= one of {contrasts}")
        return contrasts[0]
    if not isinstance(contrast, str):
        raise TypeError(f"contrast must be a contrast name (a string), got {contrast!r}")
    if contrast not in contrasts:
        raise KeyError(f"contrast {contrast!r} not in result {key!r}; contrasts: {contrasts}")
    return contrast


def _group_tables(entry, key: str, contrasts: list[str], contrast, group) -> pd.DataFrame:
    """The table of one group, or the long table of several (``"all"`` or a list)."""
    params = entry["params"]
    if "split_by" not in params:
        raise ValueError(
            f"enrichment result {key!r} was not run on a DE result split by group; leave group= unset"
        )
    groups = list(dict.fromkeys(split_name(c)[0] for c in contrasts))
    skipped = {**dict(params.get("de_skipped", {})), **{split_name(c)[0]: r for c, r in dict(params.get("skipped", {})).items()}}
    if isinstance(group, str) and group != "all":
        wanted, long = [group], False
    elif isinstance(group, str):
        wanted, long = groups, True
    elif isinstance(group, list | tuple) and group and all(isinstance(g, str) for g in group):
        wanted, long = list(group), True
    else:
        raise TypeError(f"group must be a group name, a list of them or 'all', got {group!r}")
    for g in wanted:
        if g not in groups:
            why = f": {skipped[g]}" if g in skipped else ""
            raise KeyError(f"group {g!r} has no result in {key!r}{why}; groups: {groups}")
    if contrast is not None and not isinstance(contrast, str):
        raise TypeError(f"contrast must be a contrast name (a string), got {contrast!r}")
    frames = []
    for g in wanted:
        mine = [c for c in contrasts if split_name(c)[0] == g]
        if contrast is not None:
            mine = [c for c in mine if split_name(c)[1] == contrast or c == contrast]
            if not mine:
                raise KeyError(f"contrast {contrast!r} not in group {g!r} of {key!r}")
        elif not long and len(mine) != 1:
            raise ValueError(f"group {g!r} of {key!r} has {len(mine)} contrasts; pass contrast= one of "
                             f"{[split_name(c)[1] for c in mine]}")  # fmt: skip
        if not long:
            return pd.DataFrame(entry[mine[0]]).copy()
        for c in mine:
            t = pd.DataFrame(entry[c]).copy()
            t.insert(0, "gene_set", t.index.astype(str))
            t.insert(0, "contrast", split_name(c)[1])
            t.insert(0, "group", g)
            frames.append(t.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def enrichment(adata, key: str, *, contrast: str | None = None, group=None) -> pd.DataFrame:
    """The table of one contrast of a gene set enrichment run (:func:`bulkpy.tl.gsea`,
    :func:`bulkpy.tl.ora`, :func:`bulkpy.tl.camera`, :func:`bulkpy.tl.fry` or :func:`bulkpy.tl.score`
    on a DE result), or, for a run on a
    DE result split by group, of one group or all groups.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the enrichment run (e.g. ``"gsea_limma"``, ``"ora_deseq"``).
    contrast
        Contrast name; may be omitted when the run has a single contrast (with ``group``: in the
        group).
    group
        For a run on a DE result split by group (``split_by=``): a group, a list of groups or
        ``"all"``; a list or ``"all"`` gives one long table.

    Returns
    -------
    A DataFrame indexed by gene set, sorted by p-value (a copy: editing it does not change
    ``adata``); with a list of groups or ``"all"``, a long table with a default index and the
    columns ``group``, ``contrast``, ``gene_set`` and the statistics. GSEA: ``ES``, ``NES``, ``pvalue``, ``padj``, ``log2err``, ``size``,
    ``leading_edge`` (and ``genes``); ORA: ``size``, ``overlap``, ``expected``,
    ``fold_enrichment``, ``pvalue``, ``padj``, ``genes``; camera: ``size``, ``correlation``,
    ``direction``, ``stat``, ``pvalue``, ``padj``, ``genes``; fry: ``size``, ``direction``,
    ``stat``, ``pvalue``, ``padj``, ``pvalue_mixed``, ``padj_mixed``, ``genes`` (limma's column
    names are in ``adata.uns[key]["params"]["r_columns"]``); score (``bk.tl.score(key=...)``):
    ``score``, ``padj`` (``NaN`` for methods that do not test), ``size``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_tmm_cpm", trend=True)
    >>> sets = {"a": list(adata.var_names[:40]), "b": list(adata.var_names[100:160])}
    >>> bk.tl.ora(adata, key="limma", gene_sets=sets, direction="both")
    >>> bk.get.enrichment(adata, "ora_limma").shape
    (2, 7)
    """
    entry, _, contrasts = _entry(adata, key)
    if group is not None:
        return _group_tables(entry, key, contrasts, contrast, group)
    c = _pick(contrasts, contrast, key)
    return pd.DataFrame(entry[c]).copy()


def gsea_running_score(adata, key: str, term: str, *, contrast: str | None = None) -> pd.DataFrame:
    """The GSEA running enrichment score of one gene set along the ranked genes.

    The ranking is rebuilt from the differential expression table the run used
    (:func:`bulkpy.get.de_df` and the stored ``stat``; genes with a missing statistic left out,
    ties in ``var_names`` order, as :func:`bulkpy.tl.gsea`) and the set's genes are read from the
    ``genes`` column of the stored table. The running sum steps up by ``|stat| / sum of |stat|``
    of the set at each of its genes and down by ``1 / (genes not in the set)`` at every other
    gene; its extreme is the enrichment score (ES), identical to the stored ``ES``.

    Parameters
    ----------
    adata
        Annotated data matrix holding the GSEA result and the differential expression result it
        was run on.
    key
        The ``key_added`` of the :func:`bulkpy.tl.gsea` run (e.g. ``"gsea_limma"``).
    term
        Name of the gene set (a row of :func:`bulkpy.get.enrichment`).
    contrast
        Contrast name; may be omitted when the run has a single contrast.

    Returns
    -------
    A DataFrame with one row per ranked gene, in rank order: ``rank`` (0 = largest statistic),
    ``gene`` (``var_names``), ``stat``, ``hit`` (whether the gene is in the set) and
    ``running_score`` (the running sum after that gene; just before a hit for the gene preceding
    it, so that the curve reaches the score's minimum exactly).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 10].copy()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_tmm_cpm", trend=True)
    >>> sets = {"a": list(adata.var_names[:40]), "b": list(adata.var_names[100:160])}
    >>> bk.tl.gsea(adata, key="limma", gene_sets=sets, n_perm_simple=100)
    >>> rs = bk.get.gsea_running_score(adata, "gsea_limma", "a")
    >>> int(rs["hit"].sum())
    40
    """
    from .._stats.enrichment.gsea import rank_order
    from ..tl._enrichment import _labels

    entry, method, contrasts = _entry(adata, key)
    if method != "gsea":
        raise ValueError(f"result {key!r} is a {method!r} run; the running score needs a bk.tl.gsea result")
    c = _pick(contrasts, contrast, key)
    table = pd.DataFrame(entry[c])
    if not isinstance(term, str):
        raise TypeError(f"term must be a gene set name (a string), got {term!r}")
    if term not in table.index:
        raise KeyError(f"gene set {term!r} not in result {key!r} ({c}); e.g. {list(table.index[:5])}")
    if "genes" not in table.columns:
        raise KeyError(f"result {key!r} has no 'genes' column (made by an older bulkpy); rerun bk.tl.gsea")
    params = entry["params"]
    de_key, stat = str(params["key"]), str(params.get("stat", "stat"))
    gene_symbols = params.get("gene_symbols")
    gene_symbols = _optional(gene_symbols)
    df = de_df(adata, de_key, contrast=c)
    if stat not in df.columns:
        raise KeyError(f"stat {stat!r} of the GSEA run is not a column of result {de_key!r}; columns: {list(df.columns)}")
    v = pd.to_numeric(df[stat], errors="coerce").to_numpy(dtype=np.float64)
    ok = ~np.isnan(v)
    genes = pd.Index(adata.var_names[ok], dtype=object)
    v = v[ok]
    labels = pd.Index(_labels(adata.var, gene_symbols, genes))
    first = pd.Series(np.arange(len(labels)), index=labels)
    first = first[~first.index.duplicated()]
    members = [g for g in str(table.loc[term, "genes"]).split(";") if g]
    idx = first.reindex(members).dropna().to_numpy(dtype=np.int64)
    if idx.size != len(members) or idx.size == 0:
        raise ValueError(
            f"the genes of {term!r} are not all among the ranked genes of {de_key!r} ({c}); "
            "was the DE result changed after bk.tl.gsea?"
        )
    n, k = v.size, idx.size
    order = rank_order(v)
    r = np.abs(v[order])
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    pos = np.sort(inv[idx])
    hit = np.zeros(n, dtype=bool)
    hit[pos] = True
    w = r[pos]
    cum = np.cumsum(w)  # sequential sums, as the engine's loop
    nr = cum[-1]
    if not nr > 0:
        w, cum, nr = np.ones(k), np.cumsum(np.ones(k)), float(k)
    miss = 1.0 / (n - k)
    h = np.cumsum(hit)  # hits up to and including each position
    C = np.concatenate([[0.0], cum])
    score = C[h] / nr - (np.arange(n) + 1 - h) * miss
    top = cum / nr - (pos - np.arange(k)) * miss  # the engine's values at the hits
    score[pos] = top
    before = pos - 1
    m = (before >= 0) & ~hit[np.maximum(before, 0)]
    score[before[m]] = (top - w / nr)[m]
    return pd.DataFrame(
        {
            "rank": np.arange(n),
            "gene": np.asarray(genes[order], dtype=object),
            "stat": v[order],
            "hit": hit,
            "running_score": score,
        }
    )


def dispersions(adata, key: str) -> pd.DataFrame:
    """Dispersion estimates per gene, for DESeq2's dispersion plot (``plotDispEsts``).

    Reads the ``var`` columns written by :func:`bulkpy.tl.deseq` (``{key}_baseMean``,
    ``{key}_dispGeneEst``, ``{key}_dispFit``, ``{key}_dispersion``, ``{key}_dispOutlier``) or by
    :func:`bulkpy.pp.vst` (``{key}_gene_dispersion``, ``{key}_fitted_dispersion``; the mean of
    normalised counts is then computed from the counts layer and the size factors the VST used).

    Parameters
    ----------
    adata
        Annotated data matrix.
    key
        The ``key_added`` of the :func:`bulkpy.tl.deseq` or :func:`bulkpy.pp.vst` run.

    Returns
    -------
    A DataFrame indexed by gene with ``mean`` (mean of normalised counts), ``gene_wise``,
    ``fitted``, ``final`` (maximum a posteriori or outlier-kept gene-wise value; missing for a VST
    result) and ``outlier`` (gene-wise estimate kept because it lies far above the trend).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.vst(adata)
    >>> list(bk.get.dispersions(adata, "vst").columns)
    ['mean', 'gene_wise', 'fitted', 'final', 'outlier']
    """
    check_adata(adata)
    check_unique_var_names(adata, what="bk.get.dispersions")
    if not isinstance(key, str):
        raise TypeError(f"key must be the key_added of bk.tl.deseq or bk.pp.vst (a string), got {key!r}")
    var = adata.var
    deseq = [f"{key}_{c}" for c in ("baseMean", "dispGeneEst", "dispFit", "dispersion")]
    vst = [f"{key}_gene_dispersion", f"{key}_fitted_dispersion"]
    idx = adata.var_names
    if all(c in var.columns for c in deseq):
        out = pd.DataFrame(
            {
                "mean": var[deseq[0]].to_numpy(dtype=float),
                "gene_wise": var[deseq[1]].to_numpy(dtype=float),
                "fitted": var[deseq[2]].to_numpy(dtype=float),
                "final": var[deseq[3]].to_numpy(dtype=float),
            },
            index=idx,
        )
        col = f"{key}_dispOutlier"
        out["outlier"] = var[col].fillna(False).to_numpy(dtype=bool) if col in var.columns else False
        return out
    if all(c in var.columns for c in vst):
        entry = adata.uns.get(key)
        params = entry.get("params") if isinstance(entry, Mapping) else None
        sf = entry.get("size_factors") if isinstance(entry, Mapping) else None
        if not isinstance(params, Mapping) or sf is None:
            raise ValueError(
                f"the size factors of the VST {key!r} are not stored in uns[{key!r}] (normalisation factors were "
                "used); the mean of normalised counts can not be computed"
            )
        layer = params.get("layer")
        layer = _optional(layer)
        X = dense(get_matrix(adata, layer))
        sf = np.asarray(sf, dtype=np.float64)
        if sf.shape != (adata.n_obs,):
            raise ValueError(f"uns[{key!r}]['size_factors'] has shape {sf.shape}; expected ({adata.n_obs},)")
        return pd.DataFrame(
            {
                "mean": (np.asarray(X, dtype=np.float64) / sf[:, None]).mean(axis=0),
                "gene_wise": var[vst[0]].to_numpy(dtype=float),
                "fitted": var[vst[1]].to_numpy(dtype=float),
                "final": np.nan,
                "outlier": False,
            },
            index=idx,
        )
    found = sorted(
        {c[: -len(s)] for c in var.columns for s in ("_dispGeneEst", "_gene_dispersion") if c.endswith(s)}
    )
    raise KeyError(
        f"no dispersion estimates under key {key!r} (bk.tl.deseq or bk.pp.vst); keys with dispersions: {found or 'none'}"
    )
