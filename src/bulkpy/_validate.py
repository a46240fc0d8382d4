"""Input checks shared by every adapter. Each raises a clear error and never mutates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse


def _is_sparse(x) -> bool:
    return sparse.issparse(x)


def check_adata(adata) -> None:
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData object, got {type(adata).__name__}")


def get_matrix(adata, layer: str | None, *, unique_var_names: bool = True):
    """Return ``adata.layers[layer]`` or ``adata.X`` (``layer=None``), raising with the available layers.

    Every adapter reads its matrix here, so this is also where duplicated gene names are refused
    (:func:`check_unique_var_names`): results keyed by gene would be ambiguous. Readers whose
    results are per sample only (sample distances, PCA coordinates) pass ``unique_var_names=False``.
    """
    check_adata(adata)
    if unique_var_names:
        check_unique_var_names(adata)
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass layer= naming one of: " + _layers_list(adata))
        return adata.X
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a string or None, got {type(layer).__name__}")
    if layer not in adata.layers:
        raise KeyError(f"layer {layer!r} not found; available layers: {_layers_list(adata)} (or layer=None for X)")
    return adata.layers[layer]


def _layers_list(adata) -> str:
    keys = list(adata.layers.keys())
    return ", ".join(repr(k) for k in keys) if keys else "none"


#: the public functions that run chunk by chunk on a dask-backed matrix (docs/scaling.md)
DASK_FUNCTIONS = (
    "pp.qc_metrics", "pp.filter_by_expr", "pp.size_factors", "pp.norm_factors", "pp.normalize", "pp.vst",
    "pp.pseudobulk", "tl.deseq", "tl.edger", "tl.voom", "tl.limma", "tl.rank_test",
)  # fmt: skip


def dense(x) -> np.ndarray:
    """A dense float64 copy-or-view of ``x``; a dask matrix is refused (never computed silently)."""
    if _is_dask(x):
        raise TypeError(
            f"this function needs the matrix in memory, but it is a dask array of shape {x.shape}; it is not "
            "computed silently. Functions that run chunk by chunk on dask: "
            + ", ".join(DASK_FUNCTIONS)
            + ". To run this one, load the layer first: adata.layers[key] = adata.layers[key].compute()"
        )
    if _is_sparse(x):
        return np.asarray(x.toarray(), dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


def is_dask(x) -> bool:
    """Whether ``x`` is a dask array (without importing dask)."""
    return type(x).__module__.split(".")[0] == "dask"


_is_dask = is_dask


#: summaries of dask matrices already checked, by the array's graph name (a deterministic token):
#: a lazy layer is read once to check it, however many functions are called on it
_DASK_SUMMARIES: dict[str, dict] = {}


def _chunk_summary(c) -> np.ndarray:
    d = c.data if _is_sparse(c) else np.asarray(c)
    d = d.ravel()
    if d.dtype.kind not in "biuf":
        return np.array([d.size, 0, 0, 0, -np.inf, 0], dtype=np.float64)
    fin = np.isfinite(d) if d.dtype.kind == "f" else np.ones(d.size, dtype=bool)
    f = d[fin]
    nonint = int((f != np.round(f)).sum()) if d.dtype.kind == "f" else 0
    mx = float(f.max()) if f.size else -np.inf
    return np.array([d.size, d.size - f.size, int((f < 0).sum()), nonint, mx, f.size], dtype=np.float64)


def dask_summary(x) -> dict:
    """Sizes, non-finite, negative and non-integer value counts and the finite maximum of a dask
    matrix, from one pass over its chunks (one ``dask.compute``; remembered by graph name)."""
    got = _DASK_SUMMARIES.get(x.name)
    if got is not None:
        return got
    import dask

    parts = dask.compute(*[dask.delayed(_chunk_summary)(c) for c in x.to_delayed().ravel()])
    a = np.vstack(parts) if parts else np.zeros((0, 6))
    out = dict(
        kind=np.dtype(x.dtype).kind, size=int(a[:, 0].sum()), nonfinite=int(a[:, 1].sum()),
        negative=int(a[:, 2].sum()), nonint=int(a[:, 3].sum()), max=float(a[:, 4].max()) if len(a) else -np.inf,
        finite=int(a[:, 5].sum()),
    )  # fmt: skip
    if len(_DASK_SUMMARIES) > 64:
        _DASK_SUMMARIES.clear()
    _DASK_SUMMARIES[x.name] = out
    return out


def check_counts(x, *, what: str = "counts", integer: bool = True, allow_sparse: bool = True) -> None:
    """Raise if ``x`` holds negative, non-finite or (with ``integer``) non-integer values.

    A dask matrix is checked chunk by chunk in one computation (:func:`dask_summary`)."""
    if _is_dask(x):
        _check_counts_summary(dask_summary(x), x.shape, what, integer)
        return
    data = x.data if _is_sparse(x) else np.asarray(x)
    if _is_sparse(x) and not allow_sparse:
        raise TypeError(f"{what} must be a dense array here")
    if data.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype {data.dtype}")
    if data.size == 0:
        if (_is_sparse(x) and 0 in x.shape) or (not _is_sparse(x)):
            raise ValueError(f"{what} are empty (shape {x.shape})")
        return
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            raise ValueError(f"{what} contain {int(bad.sum())} non-finite values (NaN or inf); counts must be finite")
    neg = data < 0
    if neg.any():
        raise ValueError(f"{what} contain {int(neg.sum())} negative values; counts must be >= 0")
    if integer and data.dtype.kind == "f":
        frac = data != np.round(data)
        if frac.any():
            hint = ""
            if data.max() < 50:
                hint = " The values look log-transformed; pass the layer that holds raw counts."
            raise ValueError(
                f"{what} contain {int(frac.sum())} non-integer values; a count model needs integer counts "
                "(round estimated counts, e.g. from salmon, or use counts_from_abundance)." + hint
            )


def _check_counts_summary(s: dict, shape, what: str, integer: bool) -> None:
    if s["kind"] not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype kind {s['kind']!r}")
    if 0 in shape:
        raise ValueError(f"{what} are empty (shape {shape})")
    if s["nonfinite"]:
        raise ValueError(f"{what} contain {s['nonfinite']} non-finite values (NaN or inf); counts must be finite")
    if s["negative"]:
        raise ValueError(f"{what} contain {s['negative']} negative values; counts must be >= 0")
    if integer and s["nonint"]:
        hint = " The values look log-transformed; pass the layer that holds raw counts." if s["max"] < 50 else ""
        raise ValueError(
            f"{what} contain {s['nonint']} non-integer values; a count model needs integer counts "
            "(round estimated counts, e.g. from salmon, or use counts_from_abundance)." + hint
        )


def check_unique_var_names(adata, *, what: str | None = None) -> None:
    """Raise a ValueError naming duplicated gene names (``var_names``) and the ways out.

    Functions that key results by gene (a DE table, a per-gene column, gene-set membership) call
    this before touching ``adata``; ``what`` names the function in the message.
    """
    names = adata.var_names
    if names.is_unique:
        return
    dup = names[names.duplicated()].unique()
    who = f"{what} keys its results by gene: " if what else "results keyed by gene would be ambiguous: "
    raise ValueError(
        f"{who}gene names (adata.var_names) must be unique, but {len(dup)} occur more than once, "
        f"e.g. {dup[:5].tolist()}. Make them unique with adata.var_names_make_unique() (adds -1, -2, ...), "
        "use unique ids as var_names (e.g. Ensembl ids, keeping symbols in a var column), or sum the "
        "duplicates into one gene each (e.g. adata.var['name'] = adata.var_names; "
        "scanpy.get.aggregate(adata, by='name', func='sum', axis='var', layer='counts'))"
    )


def check_unique_names(adata) -> None:
    names = adata.obs_names
    if not names.is_unique:
        dup = names[names.duplicated()].unique()[:10].tolist()
        raise ValueError(
            f"duplicated sample (obs) names, e.g. {dup}; make them unique (e.g. adata.obs_names_make_unique())"
        )
    check_unique_var_names(adata)


def obs_column(adata, key: str, *, what: str = "column") -> pd.Series:
    """Return ``adata.obs[key]``, raising with the existing columns."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be the name of an obs column (a string), got {type(key).__name__}")
    if key not in adata.obs.columns:
        raise KeyError(f"{what} {key!r} is not a column of adata.obs; columns are: {list(adata.obs.columns)}")
    return adata.obs[key]


def var_column(adata, key: str, *, what: str = "column") -> pd.Series:
    if not isinstance(key, str):
        raise TypeError(f"{what} must be the name of a var column (a string), got {type(key).__name__}")
    if key not in adata.var.columns:
        raise KeyError(f"{what} {key!r} is not a column of adata.var; columns are: {list(adata.var.columns)}")
    return adata.var[key]


def check_choice(value, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}")
    return value


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def looks_logged(x) -> bool:
    """Heuristic: a matrix of non-integers with a small maximum is likely log-scale."""
    if _is_dask(x):
        s = dask_summary(x)
        if s["kind"] != "f" or s["finite"] == 0:
            return False
        return bool(s["negative"] or (s["max"] < 30 and s["nonint"] / s["finite"] > 0.5))
    data = x.data if _is_sparse(x) else np.asarray(x)
    if data.size == 0 or data.dtype.kind not in "f":
        return False
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return False
    return bool((finite < 0).any() or (finite.max() < 30 and (finite != np.round(finite)).mean() > 0.5))


def check_bool(value, name: str) -> bool:
    """Raise unless ``value`` is a boolean (numpy booleans accepted)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def layer_name(layer: str | None) -> str:
    """How error messages name a layer: ``X`` or ``layer 'name'``."""
    return "X" if layer is None else f"layer {layer!r}"
