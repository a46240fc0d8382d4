"""Pseudobulk: sum a single-cell AnnData's raw counts per sample (and cell group) into a bulk AnnData."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._slots import COUNTS, write_params
from .._stats import aggregate as _agg
from .._validate import check_adata, check_choice, get_matrix, is_dask, obs_column

logger = logging.getLogger(__name__)

_KEY = "pseudobulk"
_COMPUTED = ("n_cells", "total_counts")
# layer names under which scanpy users commonly keep raw counts
_COUNT_LAYERS = ("counts", "raw_counts", "count", "raw", "umi", "umis", "X_counts")


def _factor(col: pd.Series, key: str, what: str) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (0..k-1) and levels of an obs column used to define pseudobulk units.

    Categorical columns keep their category order (unused categories get no unit); other columns
    are sorted.
    """
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(
            f"{what} obs[{key!r}] is missing (NaN) for {n_missing} of {len(col)} cells; every cell needs a "
            f"value: drop those cells first (adata[adata.obs[{key!r}].notna()]) or fill them in"
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.int64), pd.Index(col.cat.categories)
    try:
        codes, levels = pd.factorize(col, sort=True)
    except TypeError:
        # values that can not be ordered (e.g. mixed types): order of appearance
        codes, levels = pd.factorize(col, sort=False)
    return codes.astype(np.int64), pd.Index(levels)


def _column_codes(col: pd.Series) -> np.ndarray | None:
    """Integer codes of an obs column for the constancy check (NaN is a value of its own)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.int64)
    try:
        codes, _ = pd.factorize(col, use_na_sentinel=True)
    except TypeError:  # unhashable values such as lists
        return None
    return codes.astype(np.int64)


def _take(col: pd.Series, rows: np.ndarray, index: pd.Index) -> pd.Series:
    """Values of ``col`` at ``rows`` (one cell per unit), keeping the dtype; unused categories removed."""
    out = col.iloc[rows].set_axis(index)
    if isinstance(out.dtype, pd.CategoricalDtype):
        out = out.cat.remove_unused_categories()
    elif out.dtype == object and all(isinstance(v, str) for v in out.to_numpy()):
        out = out.astype("category")
    return out


def _not_counts_message(adata, layer, err: _agg.NotCountsError) -> str:
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    msg = f"{where} does not hold raw counts: {err}."
    if err.kind == "negative":
        msg += " The values look scaled or centred (e.g. by sc.pp.scale)."
    elif err.kind == "non-integer" and err.max_value < 50:
        msg += " The values look log-normalised (e.g. by sc.pp.normalize_total + sc.pp.log1p)."
    candidates = [k for k in adata.layers.keys() if k != layer and str(k).lower() in _COUNT_LAYERS]
    if candidates:
        msg += f" Pass layer={candidates[0]!r}, which may hold the raw counts."
    else:
        layers = ", ".join(repr(k) for k in adata.layers.keys()) or "none"
        msg += f" Pass layer= naming the layer with raw UMI/read counts (layers: {layers})."
    if adata.raw is not None:
        msg += (
            " If the counts are in adata.raw, use bk.pp.pseudobulk(adata.raw.to_adata(), ...)"
            " (adata.raw.to_adata() keeps obs)."
        )
    if err.kind == "non-integer":
        msg += " Estimated (fractional) counts, e.g. from an EM quantifier, must be rounded into a layer first."
    return msg


def _check_threshold(value, name: str, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
        raise TypeError(f"{name} must be a non-negative number{' or None' if allow_none else ''}, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def pseudobulk(
    adata: AnnData,
    *,
    sample_key: str,
    groups_key: str | None = None,
    layer: str | None = None,
    min_cells: int = 10,
    min_counts: float | None = None,
    mode: str = "sum",
) -> AnnData:
    """Sum the raw counts of a single-cell AnnData per sample (and cell group) into a bulk AnnData.

    One pseudobulk *unit* is made for every sample (``groups_key=None``) or every observed
    sample × group combination (e.g. donor × cell type); combinations without cells are not
    created. The counts are summed exactly with a sparse indicator-matrix product
    (units × cells) @ (cells × genes) that never densifies or copies the cell matrix: beyond the
    input, memory is about the units × genes result (measured: +0.23 GB for 1M cells × 30k genes
    with 295M non-zeros into 300 units). The input is not modified.

    A dask cell matrix (chunks numpy or scipy CSR, e.g. from ``anndata.experimental.read_elem_lazy``)
    is summed chunk by chunk: on dask input, 1 pass over the matrix (one ``dask.compute``, which
    also checks the counts) and only the units × genes sums are gathered; the result holds them
    in memory, equal to the in-memory sums.

    Parameters
    ----------
    adata
        Single-cell AnnData: cells in ``obs``, genes in ``var``; the counts sparse (CSR or CSC;
        other sparse formats are converted to CSR), dense, or a dask array of either.
    sample_key
        ``obs`` column naming each cell's sample (biological replicate, e.g. donor or
        donor × condition). Missing values are an error.
    groups_key
        ``obs`` column with a second grouping (usually the cell type) to pseudobulk within each
        sample; ``None`` for one unit per sample. Must differ from ``sample_key``.
    layer
        Layer holding raw counts (non-negative integers); ``None`` uses ``adata.X``. Log-normalised
        or scaled values are refused with a hint (scanpy workflows usually keep the counts in
        ``layers["counts"]``).
    min_cells
        Units with fewer cells are dropped (listed in ``uns["pseudobulk"]["dropped_units"]``).
    min_counts
        Units whose summed counts over all genes are lower are dropped; ``None`` for no limit.
    mode
        ``"sum"``: ``X`` holds the summed counts. ``"mean"``: ``X`` holds the mean count per cell
        (sum / ``n_cells``). ``layers["counts"]`` holds the sums either way.

    Returns
    -------
    AnnData
        A new object with one observation per unit and the genes of ``adata``:

        - ``X``: the summed (or mean, see ``mode``) counts, dense float64;
        - ``layers["counts"]``: the summed counts, dense float64;
        - ``obs_names``: the sample, or ``"<sample>_<group>"`` with ``groups_key``, ordered by
          sample then group (category order for categorical columns, sorted otherwise);
        - ``obs``: ``sample_key`` (and ``groups_key``), every other ``obs`` column that is constant
          within each unit (sample-level annotation such as condition or batch; the others are
          dropped and their names logged), ``n_cells`` (cells per unit) and ``total_counts``
          (summed counts over all genes). Categorical columns keep their category order, minus
          unused categories;
        - ``var``: a copy of ``adata.var``;
        - ``uns["pseudobulk"]``: ``params`` (keys, layer, thresholds, mode, numbers of cells and
          units, versions), ``dropped_units`` (a DataFrame: sample, group, n_cells, total_counts
          and the reason for each unit below ``min_cells``/``min_counts``) and
          ``dropped_obs_columns`` (names of the ``obs`` columns not carried over).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from anndata import AnnData
    >>> from scipy import sparse
    >>> import bulkpy as bk
    >>> rng = np.random.default_rng(0)
    >>> obs = pd.DataFrame(
    ...     {
    ...         "donor": np.repeat(["d1", "d2", "d3", "d4"], 60),
    ...         "condition": np.repeat(["ctrl", "stim"], 120),
    ...         "cell_type": np.tile(["B", "T", "T"], 80),
    ...     },
    ...     index=[f"cell{i}" for i in range(240)],
    ... )
    >>> cells = AnnData(sparse.csr_matrix(rng.poisson(0.5, (240, 50)).astype(np.float32)), obs=obs)
    >>> pdata = bk.pp.pseudobulk(cells, sample_key="donor", groups_key="cell_type")
    >>> pdata.shape
    (8, 50)
    >>> pdata.obs_names[:3].tolist()
    ['d1_B', 'd1_T', 'd2_B']
    >>> pdata.obs[["condition", "n_cells"]].head(2)
         condition  n_cells
    d1_B      ctrl       20
    d1_T      ctrl       40
    >>> bool(np.allclose(pdata.layers["counts"].sum(), cells.X.sum()))
    True
    """
    check_adata(adata)
    if adata.isbacked:
        raise TypeError("adata is backed (opened with backed='r'); load it first with adata.to_memory()")
    s_col = obs_column(adata, sample_key, what="sample_key")
    if groups_key is not None:
        g_col = obs_column(adata, groups_key, what="groups_key")
        if groups_key == sample_key:
            raise ValueError(
                f"groups_key and sample_key are both {sample_key!r}; groups_key must be another obs column "
                "(e.g. the cell type) or None for one pseudobulk per sample"
            )
    min_cells = _check_threshold(min_cells, "min_cells")
    min_counts = _check_threshold(min_counts, "min_counts", allow_none=True)
    check_choice(mode, ("sum", "mean"), "mode")
    x = get_matrix(adata, layer)
    if not (sparse.issparse(x) or isinstance(x, np.ndarray) or is_dask(x)):
        raise TypeError(
            f"the count matrix must be a scipy sparse matrix, a numpy array or a dask array of either, got "
            f"{type(x).__name__}; load it into memory first (e.g. adata.to_memory())"
        )
    if x.shape[0] == 0:
        raise ValueError("adata has no cells")

    unit, n_units, names, u_samples, u_groups = _units(s_col, g_col if groups_key is not None else None, sample_key, groups_key)

    n_cells = _agg.count_cells(unit, n_units)
    try:
        sums = _agg.sum_by_unit(x, unit, n_units, check_counts=True)
    except _agg.NotCountsError as err:
        raise ValueError(_not_counts_message(adata, layer, err)) from None
    total = sums.sum(axis=1)

    few_cells = n_cells < min_cells
    few_counts = total < min_counts if min_counts is not None else np.zeros(n_units, dtype=bool)
    keep = ~(few_cells | few_counts)
    if not keep.any():
        raise ValueError(
            f"no pseudobulk is left: all {n_units} have fewer than min_cells={min_cells} cells "
            f"(largest: {int(n_cells.max())})"
            + (f" or fewer than min_counts={min_counts} counts (largest: {total.max():.6g})" if min_counts is not None else "")
            + "; lower the thresholds"
        )
    kept = np.flatnonzero(keep)
    obs_names = names[kept]

    obs, dropped_cols = _unit_obs(adata, unit, n_units, keep, obs_names, s_col, sample_key, g_col if groups_key is not None else None, groups_key)
    obs["n_cells"] = n_cells[kept]
    obs["total_counts"] = total[kept]

    dropped = pd.DataFrame(
        {
            "sample": u_samples[~keep],
            **({"group": u_groups[~keep]} if u_groups is not None else {}),
            "n_cells": n_cells[~keep],
            "total_counts": total[~keep],
            "reason": np.array(
                [
                    ",".join(r for r, flag in (("min_cells", fc), ("min_counts", fk)) if flag)
                    for fc, fk in zip(few_cells[~keep], few_counts[~keep], strict=True)
                ],
                dtype=object,
            ),
        },
        index=names[~keep],
    )
    if len(dropped):
        logger.info("pseudobulk: dropped %d of %d units: %s", len(dropped), n_units, list(dropped.index))

    counts = sums[kept]
    X = counts / n_cells[kept, None] if mode == "mean" else counts.copy()
    var = adata.var.copy()
    pdata = AnnData(X=X, obs=obs, var=var)
    pdata.layers[COUNTS] = counts
    write_params(
        pdata,
        _KEY,
        {
            "sample_key": sample_key,
            "groups_key": groups_key,
            "layer": layer,
            "min_cells": min_cells,
            "min_counts": min_counts,
            "mode": mode,
            "n_cells_input": int(x.shape[0]),
            "n_units_observed": int(n_units),
            "n_units_kept": int(kept.size),
        },
        dropped_units=dropped,
        dropped_obs_columns=dropped_cols,
    )
    return pdata


def _units(s_col, g_col, sample_key, groups_key):
    """The pseudobulk units: observed (sample, group) combinations, ordered by sample level then
    group level; returns each cell's unit, the number of units, their names, samples and groups."""
    s_codes, s_levels = _factor(s_col, sample_key, "sample_key")
    if g_col is not None:
        g_codes, g_levels = _factor(g_col, groups_key, "groups_key")
        combined = s_codes * len(g_levels) + g_codes
    else:
        combined = s_codes
    observed, unit = np.unique(combined, return_inverse=True)
    unit = unit.reshape(-1)
    n_units = observed.size
    if g_col is not None:
        u_samples = s_levels[observed // len(g_levels)].astype(str)
        u_groups = g_levels[observed % len(g_levels)].astype(str)
        names = pd.Index([f"{s}_{g}" for s, g in zip(u_samples, u_groups, strict=True)])
    else:
        u_samples = s_levels[observed].astype(str)
        u_groups = None
        names = pd.Index(list(u_samples))
    if not names.is_unique:
        dup = names[names.duplicated()].unique().tolist()[:5]
        raise ValueError(
            f"pseudobulk names are not unique: {dup} (values of {sample_key!r}"
            f"{f' and {groups_key!r}' if groups_key else ''} that read the same as text, or that contain '_'"
            " ambiguously); rename the values so that they differ"
        )

    return unit, n_units, names, u_samples, u_groups


def _unit_obs(adata, unit, n_units, keep, obs_names, s_col, sample_key, g_col, groups_key):
    """Sample-level annotation of the kept units: the obs columns constant within every kept unit
    (the others are listed, not carried over)."""
    kept = np.flatnonzero(keep)
    order, starts = _agg.unit_segments(unit, n_units)
    first = order[starts]
    obs = pd.DataFrame(index=obs_names)
    obs[sample_key] = _take(s_col, first[kept], obs_names)
    if g_col is not None:
        obs[groups_key] = _take(g_col, first[kept], obs_names)
    dropped_cols: list[str] = []
    replaced: list[str] = []
    for c in adata.obs.columns:
        if c in (sample_key, groups_key):
            continue
        if c in _COMPUTED:
            replaced.append(str(c))
            continue
        col = adata.obs[c]
        codes = _column_codes(col)
        if codes is None or not _agg.constant_within(codes, order, starts)[keep].all():
            dropped_cols.append(str(c))
            continue
        obs[c] = _take(col, first[kept], obs_names)
    if dropped_cols:
        logger.info(
            "pseudobulk: %d obs columns vary within units and were not carried over: %s",
            len(dropped_cols),
            ", ".join(dropped_cols),
        )
    if replaced:
        logger.info("pseudobulk: obs columns %s of the cells were replaced by the per-unit values", replaced)

    return obs, dropped_cols
