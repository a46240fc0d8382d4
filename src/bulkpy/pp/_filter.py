"""Gene filtering: edgeR's ``filterByExpr``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._design import describe_design, design_matrix
from .._docs import doc_adata, doc_copy, doc_copy_returns, doc_params
from .._slots import check_key, write_params
from .._stats import filter as _filter
from .._utils import finish, start
from .._validate import check_counts, get_matrix, looks_logged, obs_column

logger = logging.getLogger(__name__)


def _number(value, name: str, *, low: float = 0.0, high: float = np.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < low or v > high:
        rng = f">= {low:g}" if high == np.inf else f"between {low:g} and {high:g}"
        raise ValueError(f"{name} must be finite and {rng}, got {value!r}")
    return v


def _group_codes(adata, group: str) -> tuple[np.ndarray, list[str]]:
    col = obs_column(adata, group, what="group")
    na = pd.isna(col).to_numpy()
    if na.any():
        samples = list(map(str, adata.obs_names[na][:10]))
        raise ValueError(
            f"obs column {group!r} (group) has {int(na.sum())} missing values (samples {samples}); "
            "assign every sample to a group or drop those samples first"
        )
    codes, levels = pd.factorize(col, sort=True)
    return codes.astype(np.int64), [str(x) for x in levels]


def _lib_sizes(adata, lib_size, X) -> tuple[np.ndarray | None, str]:
    if lib_size is None:
        return None, "column sums of the counts"
    if isinstance(lib_size, str):
        col = obs_column(adata, lib_size, what="lib_size")
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise TypeError(f"obs column {lib_size!r} (lib_size) must be numeric, got dtype {col.dtype}")
        vals, label = col.to_numpy(dtype=np.float64), f"obs[{lib_size!r}]"
    else:
        if isinstance(lib_size, pd.Series) and not isinstance(lib_size.index, pd.RangeIndex):
            idx = lib_size.index.astype(str)
            if not idx.is_unique or set(idx) != set(adata.obs_names):
                raise ValueError("the index of the lib_size Series does not match adata.obs_names")
            lib_size = lib_size.set_axis(idx).loc[adata.obs_names]
        try:
            vals = np.asarray(lib_size, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise TypeError(
                f"lib_size must be None, an obs column name or one number per sample, got {type(lib_size).__name__}"
            ) from None
        label = "given per-sample values"
        if vals.size != X.shape[0]:
            raise ValueError(f"lib_size has {vals.size} values but there are {X.shape[0]} samples")
    bad = ~np.isfinite(vals) | (vals <= 0)
    if bad.any():
        samples = list(map(str, adata.obs_names[bad][:10]))
        raise ValueError(f"library sizes must be finite and positive; not so for samples {samples} ({label})")
    return vals, label


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def filter_by_expr(
    adata,
    *,
    group: str | None = None,
    design=None,
    layer: str | None = "counts",
    min_count: float = 10,
    min_total_count: float = 15,
    large_n: float = 10,
    min_prop: float = 0.7,
    lib_size=None,
    subset: bool = False,
    key_added: str = "filter_by_expr",
    copy: bool = False,
):
    """Flag the genes with enough counts to be worth testing, by edgeR's ``filterByExpr`` rule.

    The same rule, defaults and result as edgeR 3.40's ``filterByExpr``: a gene is kept when it
    reaches ``min_count`` reads, expressed as counts per million of the median library size, in at
    least as many samples as the smallest group, and has at least ``min_total_count`` reads in
    all. The smallest group size is the size of the smallest level of ``group``, or
    ``1 / max(leverage)`` of ``design`` (R's ``hat(design)``); with neither, all samples form
    one group. Groups larger than ``large_n`` only need ``large_n + (n - large_n) * min_prop``
    samples. Comparisons use edgeR's tolerance of 1e-14.

    A dask matrix is read chunk by chunk, giving the same kept genes: on dask input, 3 passes over
    the matrix (``dask.compute`` calls: the count check, 1 if it was checked before; the library
    sizes, none with ``lib_size``; the per-gene counts); nothing samples × genes is gathered.

    Parameters
    ----------
    {adata}
    group
        ``obs`` column assigning samples to experimental groups (edgeR's ``group``). Pass either
        ``group`` or ``design``. Missing values are an error (edgeR would silently leave those
        samples out of the group sizes).
    design
        The design of the analysis to come: a formula on ``obs`` such as ``"~ batch + condition"``
        (evaluated with formulaic) or a numeric matrix, one row per sample.
    layer
        Layer holding raw counts (finite, non-negative; non-integer estimated counts are
        accepted); ``None`` uses ``adata.X``.
    min_count
        Minimum count, in the sample of median library size, required in the smallest group's
        number of samples (edgeR's ``min.count``).
    min_total_count
        Minimum total count over all samples (``min.total.count``).
    large_n
        Number of samples per group beyond which only a proportion must pass (``large.n``).
    min_prop
        That proportion, in [0, 1] (``min.prop``).
    lib_size
        Library sizes: ``None`` for the per-sample sums of the counts (as edgeR on a fresh
        ``DGEList``), an ``obs`` column name, or one positive number per sample (e.g. library
        size × normalisation factor, as edgeR does for a normalised ``DGEList``).
    subset
        Also drop the genes that fail from the AnnData (in place, or from the returned copy).
    key_added
        Name of the boolean ``var`` column and of the ``uns`` entry.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes ``var[key_added]`` (``True`` for kept genes) and ``uns[key_added]`` with
        ``params`` (the arguments, the design's column names) and the quantities the rule used:
        ``cpm_cutoff``, ``median_lib_size``, ``min_group_size`` (before the large-n relaxation),
        ``min_samples`` (after it), ``n_kept``, ``n_genes``. With ``subset=True`` only the kept
        genes remain.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.filter_by_expr(adata, design="~ type + condition")
    >>> int(adata.var["filter_by_expr"].sum())
    8066
    >>> round(adata.uns["filter_by_expr"]["cpm_cutoff"], 3)
    0.967
    >>> bk.pp.filter_by_expr(adata, group="condition", subset=True)
    >>> adata.n_vars
    7919
    """
    X = get_matrix(adata, layer)
    where = "X" if layer is None else f"layer {layer!r}"
    check_counts(X, what=f"counts in {where}", integer=False)
    if looks_logged(X):
        raise ValueError(
            f"the values in {where} look log-transformed (small non-integers); filter_by_expr needs raw "
            "counts: pass the layer that holds them"
        )
    min_count = _number(min_count, "min_count")
    min_total_count = _number(min_total_count, "min_total_count")
    large_n = _number(large_n, "large_n")
    min_prop = _number(min_prop, "min_prop", high=1.0)
    for name, flag in (("subset", subset), ("copy", copy)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    check_key(key_added, "key_added")

    codes = mm = None
    levels: list[str] = []
    columns: list[str] = []
    if group is not None and design is not None:
        raise ValueError("pass either group= or design=, not both (edgeR would use group and ignore design)")
    if group is not None:
        codes, levels = _group_codes(adata, group)
    elif design is not None:
        mm, columns = design_matrix(adata.obs, design)
    else:
        logger.info("filter_by_expr: no group or design given; all samples are taken as one group")
    lib, lib_label = _lib_sizes(adata, lib_size, X)
    if lib is None:
        lib = _filter.library_sizes(X)
        empty = lib <= 0
        if empty.any():
            samples = list(map(str, adata.obs_names[empty][:10]))
            raise ValueError(f"samples {samples} have no counts in {where}; remove them before filtering")

    keep, info = _filter.filter_by_expr(
        X,
        lib_size=lib,
        design=mm,
        group=codes,
        min_count=min_count,
        min_total_count=min_total_count,
        large_n=large_n,
        min_prop=min_prop,
    )

    n_genes = int(keep.size)
    adata = start(adata, copy)
    adata.var[key_added] = keep
    write_params(
        adata,
        key_added,
        {
            "method": "edgeR::filterByExpr",
            "layer": layer,
            "group": group,
            "group_levels": levels,
            "design": describe_design(design),
            "design_columns": columns,
            "min_count": min_count,
            "min_total_count": min_total_count,
            "large_n": large_n,
            "min_prop": min_prop,
            "lib_size": lib_label,
            "subset": subset,
        },
        cpm_cutoff=info["cpm_cutoff"],
        median_lib_size=info["median_lib_size"],
        min_group_size=info["min_group_size"],
        min_samples=info["min_samples"],
        n_kept=int(keep.sum()),
        n_genes=n_genes,
    )
    if subset:
        adata._inplace_subset_var(keep)
    return finish(adata, copy)
