"""Differential expression per group (``split_by=``): one fit per level of an obs column.

The pseudobulk analysis of single cells (muscat's ``pbDS``, decoupler's tutorial loop) tests each
cell type on its own: the units (donor × cell type pseudobulks) of one cell type get their own
gene filter (edgeR's ``filterByExpr`` on that cell type's counts and the design), their own
normalisation and dispersion trend, and the same design and contrasts as every other cell type.
:func:`run_grouped` does this once for every DE adapter: the adapter passes itself and its
arguments, and each group is exactly ``adata[adata.obs[split_by] == level].copy()`` →
:func:`bulkpy.pp.filter_by_expr` (``subset=True``) → the adapter with the same arguments, so that a
group's result equals running the tool on that subset by hand.

Groups that can not be tested (too few units, a contrast level absent, a design without full rank or
residual degrees of freedom, no gene passing the filter: the adapters' ``ValueError``) are skipped
and the reason recorded; any other exception propagates. If no group can be tested the call raises.
Nothing is written before every group has been fitted, so a failing call leaves ``adata`` as it was.

How the result is stored (``key`` = the adapter's ``key_added``; ``g`` a group label, ``c`` a contrast):

- ``varm[f"{key}_{g}:{c}"]``: one table per group and contrast in the usual DE schema, indexed by
  all ``var_names`` (``NaN`` for genes not tested in the group); ``uns[key]["contrasts"]`` lists the
  names ``f"{g}:{c}"`` so that every reader of DE results (``bk.get.de_df``, ``bk.tl.gsea``...)
  sees one contrast per group;
- ``varm[f"{key}_fit_{g}"]``: the per-gene model columns the adapter writes to ``var`` (dispersions,
  baseMean...), without the ``f"{key}_"`` prefix;
- ``obs`` columns and ``layers`` the adapter writes (size factors, voom's ``E`` and weights...):
  merged over groups, each unit holding its own group's values (``NaN`` for skipped groups and,
  in layers, for genes not tested in the unit's group);
- ``uns[key]``: ``split_by``, ``groups`` (the tested groups), ``skipped`` (group → reason),
  ``fits`` (group → the adapter's own ``uns`` entry: ``params``, ``filtering``, ``trend``... and
  ``filter``, the gene filter's numbers) and ``params`` (the adapter's method, ``split_by``,
  ``groups``, ``group_sizes``, ``n_genes_tested``, ``filter_groups``, the design and versions).

Group labels are the levels as strings, ``/`` and ``:`` replaced by ``_`` (h5ad keys can not hold
``/``; ``:`` separates group and contrast).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._slots import check_key, de_varm_key, h5ad_safe, h5ad_safe_frame, write_de
from .._utils import finish, start
from .._validate import check_adata, check_bool, check_unique_var_names, obs_column
from ._contrasts import levels_of

logger = logging.getLogger(__name__)

#: Separates the group label from the contrast name in the contrasts of a grouped result.
SEP = ":"
#: ``group=`` value that means every group (a long table).
ALL = "all"
#: Scratch key of the per-group gene filter (written only into the per-group copies).
_FILTER_KEY = "_bulkpy_group_filter"
#: ``filter_by_expr`` options that ``filter_groups`` may set.
_FILTER_OPTIONS = ("min_count", "min_total_count", "large_n", "min_prop")

DOC_SPLIT = """\
split_by
    ``obs`` column (e.g. the cell type of each pseudobulk unit): fit the model separately for each
    of its levels, with the same design and contrasts, each group with its own gene filter,
    normalisation and dispersion or variance trend (muscat's per-cluster analysis). A group that
    can not be tested (too few units, a contrast level absent, no residual degrees of freedom, no
    gene left by the filter) is skipped and the reason recorded in ``uns[key_added]["skipped"]``.
    Results: one table per group and contrast, ``varm[f"{key_added}_{group}:{contrast}"]``,
    indexed by all genes (``NaN`` where a gene was not tested in the group); read them with
    ``bk.get.de_df(adata, key, group=...)`` (``group="all"``: one long table). Each group's result
    equals running this function on ``adata[adata.obs[split_by] == group].copy()`` after
    :func:`bulkpy.pp.filter_by_expr` (``subset=True``) when ``filter_groups`` is on.
filter_groups
    With ``split_by``: filter each group's genes with edgeR's ``filterByExpr`` on its counts
    (``layers["counts"]`` for methods that read log-expression) and the design before fitting
    (``True``, the default), not at all (``False``), or with these
    :func:`bulkpy.pp.filter_by_expr` options (a dict, e.g. ``{"min_count": 5}``)."""

DOC_SPLIT_RETURNS = """\
With ``split_by``, the tables are ``varm[f"{key_added}_{group}:{contrast}"]``, the per-gene
model columns ``varm[f"{key_added}_fit_{group}"]`` instead of ``var`` columns, the ``obs``
columns and layers are merged over groups (``NaN`` for skipped groups and untested genes), and
``uns[key_added]`` also holds ``split_by``, ``groups``, ``skipped`` (group → reason) and ``fits``
(group → that group's parameters and filter); ``params`` lists ``groups`` and ``group_sizes``."""


# --------------------------------------------------------------------------------------------
# validation


def group_label(level) -> str:
    """The label of a level of ``split_by`` in keys: the string, ``/`` and ``:`` made ``_``."""
    return str(level).replace("/", "_").replace(SEP, "_")


def check_filter_groups(filter_groups) -> dict | None:
    """``None`` (no filter) or the ``filter_by_expr`` options of the per-group filter."""
    if isinstance(filter_groups, Mapping):
        unknown = sorted(set(map(str, filter_groups)) - set(_FILTER_OPTIONS))
        if unknown:
            raise ValueError(
                f"filter_groups has options {unknown} that bk.pp.filter_by_expr does not take here; "
                f"choose among {list(_FILTER_OPTIONS)}"
            )
        return dict(filter_groups)
    return {} if check_bool(filter_groups, "filter_groups") else None


def _levels(adata: AnnData, split_by: str) -> tuple[list, list[str]]:
    col = obs_column(adata, split_by, what="split_by")
    na = pd.isna(col).to_numpy()
    if na.any():
        raise ValueError(
            f"split_by column {split_by!r} has {int(na.sum())} missing values (units "
            f"{list(map(str, adata.obs_names[na][:10]))}); give every unit a group or drop those units first"
        )
    levels = levels_of(col)
    labels = [group_label(v) for v in levels]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(
            f"levels of {split_by!r} collide once '/' and ':' are replaced by '_' (h5ad keys): {dup}; rename them"
        )
    if ALL in labels:
        raise ValueError(
            f"{split_by!r} has a level named {ALL!r}, which bk.get.de_df(group='all') reserves for every group; "
            "rename it"
        )
    return levels, labels


# --------------------------------------------------------------------------------------------
# one group


def _shell(adata: AnnData) -> AnnData:
    """``adata`` without the slots no DE adapter reads (varm, obsm, ...): same arrays, no copies."""
    return AnnData(
        X=adata.X, obs=adata.obs, var=adata.var, layers=dict(adata.layers), uns=dict(adata.uns)
    )


def _design_rows(design, rows: np.ndarray, obs_names: pd.Index):
    """A matrix design restricted to the group's units (formulas are evaluated on the subset)."""
    if design is None or isinstance(design, str):
        return design
    if isinstance(design, pd.DataFrame):
        return design.loc[obs_names[rows]] if design.index.isin(obs_names).all() else design.iloc[rows]
    arr = np.asarray(design)
    return arr[rows] if arr.ndim == 2 and arr.shape[0] == obs_names.size else design


def _snapshot(sub: AnnData, key: str) -> dict[str, dict[str, Any]]:
    return {
        "obs": {c: sub.obs[c].copy() for c in sub.obs.columns if str(c).startswith(f"{key}_")},
        "var": {c: sub.var[c].copy() for c in sub.var.columns if str(c).startswith(f"{key}_")},
        "layers": {k: sub.layers[k] for k in sub.layers if k.startswith(f"{key}_")},
    }


def _written(df: pd.DataFrame, before: dict, key: str) -> list[str]:
    """Columns with the ``f"{key}_"`` prefix the adapter wrote (new or changed)."""
    out = []
    for c in df.columns:
        if not str(c).startswith(f"{key}_"):
            continue
        old = before.get(c)
        if old is None or not old.index.equals(df.index) or not old.equals(df[c]):
            out.append(str(c))
    return out


class _Fit:
    """What one group's fit produced, aligned to the group's units and kept genes."""

    def __init__(self, sub: AnnData, key: str, before: dict, filter_info: dict | None):
        entry = sub.uns[key]
        self.contrasts = [str(c) for c in np.atleast_1d(entry["contrasts"])]
        self.ftests = [str(c) for c in np.atleast_1d(entry.get("ftests", []))]
        self.tables = {c: pd.DataFrame(sub.varm[de_varm_key(key, c)]) for c in self.contrasts + self.ftests}
        self.genes = sub.var_names
        self.units = sub.obs_names
        self.obs = {c: sub.obs[c] for c in _written(sub.obs, before["obs"], key)}
        self.var = {c[len(key) + 1 :]: sub.var[c] for c in _written(sub.var, before["var"], key)}
        self.layers = {
            k: np.asarray(v) for k, v in sub.layers.items()
            if k.startswith(f"{key}_") and (k not in before["layers"] or before["layers"][k] is not v)
        }  # fmt: skip
        self.uns = {k: v for k, v in entry.items() if k not in ("contrasts", "ftests")}
        if filter_info is not None:
            self.uns["filter"] = filter_info
        params = entry.get("params", {})
        self.params = params if isinstance(params, Mapping) else {}


def _fit_group(tool: Callable, sub: AnnData, rows, *, kwargs: dict, key: str, filt: dict | None, filter_layer,
               filter_by: dict) -> _Fit:  # fmt: skip
    """Filter one group's genes and run the adapter on it; ``ValueError`` if it can not be tested."""
    from ..pp import filter_by_expr

    if sub.n_obs < 2:
        raise ValueError(f"{sub.n_obs} unit (at least 2 are needed)")
    filter_info = None
    if filt is not None:
        filter_by_expr(sub, **filter_by, layer=filter_layer, **filt, subset=True, key_added=_FILTER_KEY)
        info = sub.uns.pop(_FILTER_KEY)
        filter_info = {k: info[k] for k in ("cpm_cutoff", "min_samples", "n_kept", "n_genes")}
        if sub.n_vars == 0:
            raise ValueError("no gene passes filterByExpr")
        del sub.var[_FILTER_KEY]
    before = _snapshot(sub, key)
    tool(sub, **kwargs, key_added=key, copy=False)
    return _Fit(sub, key, before, filter_info)


# --------------------------------------------------------------------------------------------
# the driver


def run_grouped(
    tool: Callable,
    adata: AnnData,
    *,
    split_by: str,
    filter_groups,
    filter_layer: str | None,
    kwargs: dict,
    key_added: str,
    copy: bool,
    filter_group: str | None = None,
) -> AnnData | None:
    """Run the DE adapter ``tool`` once per level of ``obs[split_by]`` and store one grouped result.

    ``kwargs`` are the adapter's arguments except ``key_added``/``copy`` (and ``split_by``,
    ``filter_groups``). ``filter_layer`` holds the raw counts the per-group ``filterByExpr`` reads;
    it uses ``kwargs["design"]`` (restricted to the group's units for a matrix design), or the
    obs column ``filter_group`` (edgeR's ``group``) when given.
    """
    check_adata(adata)
    check_unique_var_names(adata)  # an error for the whole call, not a reason to skip each group
    check_key(key_added, "key_added")
    copy = check_bool(copy, "copy")
    filt = check_filter_groups(filter_groups)
    levels, labels = _levels(adata, split_by)
    if filt is not None:
        if filter_layer is not None and filter_layer not in adata.layers:
            raise KeyError(
                f"filter_groups filters each group on the raw counts in layers[{filter_layer!r}], which does not exist "
                f"(layers: {list(adata.layers)}); add the counts or pass filter_groups=False"
            )
    design = kwargs.get("design")
    col = adata.obs[split_by]
    shell = _shell(adata)
    fits: dict[str, _Fit] = {}
    rows_of: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for level, label in zip(levels, labels, strict=True):
        rows = np.flatnonzero((col == level).to_numpy())
        sizes[label] = int(rows.size)
        sub = shell[rows].copy()
        kw = dict(kwargs)
        if "design" in kw:
            kw["design"] = _design_rows(design, rows, adata.obs_names)
        fby = {"group": filter_group} if filter_group is not None else {"design": kw.get("design")}
        try:
            fits[label] = _fit_group(tool, sub, rows, kwargs=kw, key=key_added, filt=filt, filter_layer=filter_layer,
                                     filter_by=fby)  # fmt: skip
        except ValueError as err:
            skipped[label] = str(err)
            logger.warning("%s: group %r of %r skipped: %s", getattr(tool, "__name__", "DE"), label, split_by, err)
            continue
        rows_of[label] = rows
        logger.info("%s: group %r of %r: %d units, %d genes tested", getattr(tool, "__name__", "DE"), label, split_by,
                    rows.size, fits[label].genes.size)  # fmt: skip
    if not fits:
        reasons = "; ".join(f"{g}: {r}" for g, r in skipped.items())
        raise ValueError(f"no group of {split_by!r} could be tested ({reasons})")
    adata = start(adata, copy)
    _write(adata, key_added, fits, rows_of, skipped, sizes, split_by=split_by, filt=filt, design=design)
    return finish(adata, copy)


def _merged_obs(adata: AnnData, fits: dict[str, _Fit], rows_of: dict[str, np.ndarray]) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    for g, fit in fits.items():
        for c, s in fit.obs.items():
            if c not in out:
                out[c] = pd.Series(np.nan, index=adata.obs_names, dtype=np.float64 if s.dtype.kind in "biuf" else object)
            vals = s.to_numpy()
            out[c].iloc[rows_of[g]] = vals.astype(np.float64) if out[c].dtype == np.float64 else vals
    return out


def _merged_layers(adata: AnnData, fits: dict[str, _Fit], rows_of: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for g, fit in fits.items():
        cols = adata.var_names.get_indexer(fit.genes)
        for k, v in fit.layers.items():
            if k not in out:
                out[k] = np.full(adata.shape, np.nan)
            out[k][np.ix_(rows_of[g], cols)] = v
    return out


def _reindexed(df: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """``df`` on all genes: missing rows ``NaN`` (booleans become pandas' nullable booleans, ``NA``)."""
    out = df.reindex(index)
    for c in df.columns:
        if pd.api.types.is_bool_dtype(df[c].dtype) and out[c].isna().any():
            out[c] = pd.array(df[c].reindex(index), dtype="boolean")
    return out


def _write(adata, key, fits, rows_of, skipped, sizes, *, split_by, filt, design) -> None:
    tables, ftests = {}, {}
    contrasts: list[str] = []
    for g, fit in fits.items():
        for c in fit.contrasts:
            tables[f"{g}{SEP}{c}"] = _reindexed(fit.tables[c], adata.var_names)
            if c not in contrasts:
                contrasts.append(c)
        for c in fit.ftests:
            ftests[f"{g}{SEP}{c}"] = _reindexed(fit.tables[c], adata.var_names)
    old = adata.uns.get(key)
    if isinstance(old, Mapping):
        for g in np.atleast_1d(old.get("groups", [])):
            adata.varm.pop(f"{key}_fit_{g}", None)
    for c, s in _merged_obs(adata, fits, rows_of).items():
        adata.obs[c] = s
    for k, v in _merged_layers(adata, fits, rows_of).items():
        adata.layers[k] = v
    for g, fit in fits.items():
        if fit.var:
            adata.varm[f"{key}_fit_{g}"] = h5ad_safe_frame(_reindexed(pd.DataFrame(fit.var), adata.var_names))
    first = next(iter(fits.values())).params
    params = {
        "method": first.get("method", "None"),
        "split_by": split_by,
        "groups": list(fits),
        "group_sizes": sizes,
        "n_genes_tested": {g: int(f.genes.size) for g, f in fits.items()},
        "filter_groups": filt is not None,
        "filter": "None" if filt is None else {"method": "edgeR::filterByExpr per group", **filt},
        "design": first.get("design", "None") if not isinstance(design, str) else design,
        "contrast_names": contrasts,
        "r_release": first.get("r_release", "None"),
    }
    fit_entries = {g: h5ad_safe(dict(f.uns)) for g, f in fits.items()}
    write_de(
        adata, key, tables, params, ftests=ftests or None, split_by=split_by, groups=list(fits),
        skipped=skipped, fits=fit_entries,
    )  # fmt: skip




def split_arguments(local: Mapping[str, Any]) -> dict:
    """An adapter's arguments (its ``locals()`` on entry) for :func:`run_grouped`: all but the
    AnnData, ``split_by``, ``filter_groups``, ``key_added`` and ``copy``."""
    return {k: v for k, v in local.items() if k not in ("adata", "split_by", "filter_groups", "key_added", "copy")}


def check_unsplit(filter_groups) -> None:
    """Without ``split_by``, ``filter_groups`` must keep its default (it filters the groups)."""
    if filter_groups is not True:
        raise ValueError(
            "filter_groups filters the genes of each group of split_by=; without split_by, filter the object "
            "with bk.pp.filter_by_expr first"
        )


__all__ = ["ALL", "DOC_SPLIT", "DOC_SPLIT_RETURNS", "SEP", "check_unsplit", "group_label", "run_grouped", "split_arguments"]
