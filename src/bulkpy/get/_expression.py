"""Tidy expression tables for plots: values of chosen genes, sample distances, relative log expression."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from .._validate import check_adata, get_matrix, obs_column, var_column


def _groupby_list(groupby) -> list[str]:
    if groupby is None:
        return []
    if isinstance(groupby, str):
        return [groupby]
    if isinstance(groupby, Sequence) and all(isinstance(g, str) for g in groupby):
        return list(groupby)
    raise TypeError(f"groupby must be an obs column name or a list of them, got {groupby!r}")


def var_indices(adata, var_names, *, gene_symbols: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Positions of ``var_names`` in ``adata.var_names`` (or in ``var[gene_symbols]``) and the names
    to show; raises a ``KeyError`` naming the genes that were not found."""
    if isinstance(var_names, str):
        var_names = [var_names]
    if not isinstance(var_names, Sequence | np.ndarray | pd.Index) or len(var_names) == 0:
        raise TypeError(f"var_names must be a non-empty list of gene names, got {var_names!r}")
    names = [str(v) for v in var_names]
    if len(set(names)) != len(names):
        dup = sorted({v for v in names if names.count(v) > 1})
        raise ValueError(f"var_names has duplicates: {dup[:10]}")
    if gene_symbols is None:
        lookup = pd.Index(adata.var_names.astype(str))
        where = "adata.var_names"
    else:
        lookup = pd.Index(var_column(adata, gene_symbols, what="gene_symbols").astype(str))
        where = f"adata.var[{gene_symbols!r}]"
    counts = lookup.value_counts()
    missing = [v for v in names if v not in counts.index]
    if missing:
        hint = ""
        if gene_symbols is None:
            for col in adata.var.columns:
                s = adata.var[col]
                if (s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype)) and s.astype(str).isin(missing).any():
                    hint = f"; they are in adata.var[{col!r}]: pass gene_symbols={col!r}"
                    break
        raise KeyError(f"{len(missing)} of var_names not found in {where}: {missing[:10]}{hint}")
    ambiguous = [v for v in names if counts[v] > 1]
    if ambiguous:
        raise ValueError(f"var_names {ambiguous[:10]} match several genes in {where}; pass adata.var_names instead")
    first = pd.Series(np.arange(len(lookup)), index=lookup)
    pos = first[~first.index.duplicated()].reindex(names).to_numpy()
    return np.asarray(pos, dtype=int), names


def _dense_columns(X, idx: np.ndarray | None = None) -> np.ndarray:
    if idx is not None:
        X = X[:, idx]
    if sparse.issparse(X):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def expression(
    adata, var_names, *, layer: str | None = None, groupby=None, gene_symbols: str | None = None
) -> pd.DataFrame:
    """Expression of some genes in every sample as a tidy long table.

    Nothing is written to ``adata``.

    Parameters
    ----------
    adata
        Annotated data matrix.
    var_names
        Gene names (a list, or one name), in ``adata.var_names`` or in the ``var`` column
        ``gene_symbols``.
    layer
        Layer to read (e.g. ``"log_cpm"``, ``"vst"``); ``None`` uses ``adata.X``.
    groupby
        ``obs`` column (or list of columns) to add to the table.
    gene_symbols
        ``var`` column in which to look ``var_names`` up (e.g. ``"symbol"``).

    Returns
    -------
    DataFrame with one row per sample and gene: columns ``sample``, ``gene`` (categorical, in the
    order of ``var_names``), ``value`` and one column per ``groupby`` column.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> df = bk.get.expression(adata, ["FBgn0039155", "FBgn0025111"], layer="counts", groupby="condition")
    >>> df.shape
    (14, 4)
    >>> list(df.columns)
    ['sample', 'gene', 'value', 'condition']
    """
    check_adata(adata)
    groups = _groupby_list(groupby)
    cols = {g: obs_column(adata, g, what="groupby") for g in groups}
    idx, names = var_indices(adata, var_names, gene_symbols=gene_symbols)
    X = _dense_columns(get_matrix(adata, layer, unique_var_names=False), idx)
    n_obs = adata.n_obs
    df = pd.DataFrame(
        {
            "sample": np.repeat(adata.obs_names.to_numpy(), len(names)),
            "gene": pd.Categorical(np.tile(names, n_obs), categories=names),
            "value": X.reshape(-1),
        }
    )
    for g, col in cols.items():
        df[g] = np.repeat(col.to_numpy(), len(names))
        if isinstance(col.dtype, pd.CategoricalDtype):
            df[g] = pd.Categorical(df[g], categories=col.cat.categories)
    return df


def sample_distances(adata, *, layer: str | None = None) -> pd.DataFrame:
    """Euclidean distances between samples, as in DESeq2's vignette (``dist(t(assay(vsd)))``).

    Use a log-scale layer (VST, log-CPM) so that a few highly expressed genes do not dominate.
    Nothing is written to ``adata``.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer to read; ``None`` uses ``adata.X``.

    Returns
    -------
    Square DataFrame (samples × samples) of distances, indexed by ``obs_names`` on both axes.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.layers["log"] = np.log2(adata.layers["counts"] + 1)
    >>> d = bk.get.sample_distances(adata, layer="log")
    >>> d.shape, float(d.iloc[0, 0])
    ((7, 7), 0.0)
    """
    from scipy.spatial.distance import pdist, squareform

    X = _dense_columns(get_matrix(adata, layer, unique_var_names=False))
    if not np.isfinite(X).all():
        raise ValueError("the layer has non-finite values (NaN or inf); use a log-scale layer with finite values")
    D = squareform(pdist(X, metric="euclidean"))
    return pd.DataFrame(D, index=adata.obs_names.copy(), columns=adata.obs_names.copy())


def _is_counts(X: np.ndarray) -> bool:
    return bool(X.size and (X >= 0).all() and (X == np.round(X)).all())


def rle(adata, *, layer: str | None = None, log: bool | None = None) -> pd.DataFrame:
    """Relative log expression: each gene's log expression minus its median over samples.

    Good samples have deviations centred on 0 with a small spread (Gandolfo & Speed 2018). Genes
    constant across samples (e.g. never detected) carry no information and are left out. Nothing
    is written to ``adata``.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Layer to read; ``None`` uses ``adata.X``.
    log
        Whether to take ``log2(x + 1)`` first. ``None`` (default) does so when the values are
        non-negative integers (raw counts) and uses them as they are otherwise (a log-scale layer).

    Returns
    -------
    DataFrame samples × genes of relative log expression.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.get.rle(adata, layer="counts").median(axis=1).round(2).tolist()  # raw counts: library sizes differ
    [0.29, 1.0, -0.3, -0.08, 0.86, -0.1, 0.0]
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> r = bk.get.rle(adata, layer="log_tmm_cpm")
    >>> r.shape, bool(r.median(axis=1).abs().max() < 0.01)
    ((7, 14599), True)
    """
    if log is not None and not isinstance(log, bool | np.bool_):
        raise TypeError(f"log must be True, False or None, got {log!r}")
    X = _dense_columns(get_matrix(adata, layer, unique_var_names=False))
    if log is None:
        log = _is_counts(X)
    if log:
        if (X < 0).any():
            raise ValueError("log=True needs non-negative values; pass a layer of counts or set log=False")
        X = np.log2(X + 1.0)
    if not np.isfinite(X).all():
        raise ValueError("the values have NaN or inf; pass a layer of counts or of finite log expression")
    keep = X.max(axis=0) > X.min(axis=0)
    X = X[:, keep]
    R = X - np.median(X, axis=0)
    return pd.DataFrame(R, index=adata.obs_names.copy(), columns=adata.var_names[keep].copy())
