"""One place that names the AnnData slots bulkpy writes and makes parameters h5ad-safe.

anndata (0.10-0.13) refuses or silently changes tuples, sets, ``pd.Series``, ``None``,
mixed-type lists, non-string dict keys, integer column names, MultiIndex and ``/`` in keys.
Every writer goes through :func:`h5ad_safe` and :func:`write_params` so that what is stored
reads back the same.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Layer that holds raw counts.
COUNTS = "counts"

_NONE = "None"


def check_key(key: str, what: str = "key") -> str:
    """Raise if ``key`` can not be used as an h5ad key."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"{what} must be a non-empty string, got {key!r}")
    if "/" in key:
        raise ValueError(f"{what} {key!r} contains '/', which h5ad can not store; use e.g. 'treated_vs_untreated'")
    return key


def h5ad_safe(obj: Any) -> Any:
    """Convert ``obj`` to something that survives ``write_h5ad``/``read_h5ad`` unchanged.

    ``None`` becomes the string ``"None"``, tuples and sets become lists (then arrays), dict keys
    become strings, numpy scalars become Python scalars, Series become dicts.
    """
    if obj is None:
        return _NONE
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, _dt.date | _dt.datetime):
        return obj.isoformat()
    if isinstance(obj, pd.Series):
        return {str(k): h5ad_safe(v) for k, v in obj.items()}
    if isinstance(obj, pd.DataFrame):
        return h5ad_safe_frame(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            out[check_key(str(k), "dictionary key")] = h5ad_safe(v)
        return out
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":
            return obj
        return np.asarray([str(x) for x in obj.ravel()], dtype=object).reshape(obj.shape).astype(str)
    if isinstance(obj, list | tuple | set | frozenset | pd.Index):
        items = sorted(obj, key=str) if isinstance(obj, set | frozenset) else list(obj)
        if len(items) == 0:
            return np.array([], dtype=str)
        conv = [h5ad_safe(x) for x in items]
        if any(isinstance(x, dict | list) or (isinstance(x, np.ndarray) and x.ndim > 0) for x in conv):
            # nested structures: store as a dict keyed by position
            return {str(i): x for i, x in enumerate(conv)}
        if all(isinstance(x, bool) for x in conv):
            return np.asarray(conv, dtype=bool)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in conv):
            return np.asarray(conv, dtype=np.int64)
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in conv):
            return np.asarray(conv, dtype=np.float64)
        return np.asarray([str(x) for x in conv], dtype=str)
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return str(obj)


def h5ad_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Return a flat DataFrame with string column names and an h5ad-writable index."""
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = ["_".join(map(str, c)) for c in out.columns]
    out.columns = [check_key(str(c), "column name") for c in out.columns]
    if isinstance(out.index, pd.MultiIndex):
        out = out.reset_index()
    out.index = out.index.astype(str)
    for c in out.columns:
        s = out[c]
        if s.dtype == object:
            vals = s.to_numpy()
            if all(isinstance(v, bool | np.bool_) for v in vals):
                out[c] = s.astype(bool)
            elif not all(isinstance(v, str) for v in vals):
                # mixed or missing: strings for the non-missing, keep NaN as ""
                out[c] = [("" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v)) for v in vals]
    return out


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    """Versions of bulkpy and the libraries that shape its results (read once per process)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("bulkpy", "anndata", "numpy", "scipy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            out[pkg] = "unknown"
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Versions of bulkpy and the libraries that shape its results."""
    return dict(_versions())


def write_params(adata, key: str, params: Mapping[str, Any], **extra: Any) -> None:
    """Store ``params`` (plus versions) under ``adata.uns[key]["params"]``, h5ad-safe.

    Other entries already in ``adata.uns[key]`` are kept.
    """
    check_key(key)
    entry = adata.uns.get(key)
    entry = dict(entry) if isinstance(entry, Mapping) else {}
    p = dict(params)
    p.setdefault("versions", versions())
    entry["params"] = h5ad_safe(p)
    for k, v in extra.items():
        entry[check_key(k)] = h5ad_safe(v)
    adata.uns[key] = entry


#: Columns every differential-expression table has, whatever the method.
DE_COLUMNS = ("log2FoldChange", "stat", "pvalue", "padj")

#: Columns of a table testing several coefficients at once (an F-test: no single log2 fold change).
FTEST_COLUMNS = ("stat", "pvalue", "padj")


def de_varm_key(key: str, contrast: str) -> str:
    """The ``varm`` key of one contrast's result table: ``f"{key}_{contrast}"``."""
    return f"{check_key(key)}_{check_key(contrast, 'contrast name')}"


def write_de(
    adata,
    key: str,
    results: Mapping[str, pd.DataFrame],
    params: Mapping[str, Any],
    *,
    ftests: Mapping[str, pd.DataFrame] | None = None,
    **extra: Any,
) -> None:
    """Store differential expression results: one flat table per contrast in
    ``varm[f"{key}_{contrast}"]`` (so it follows gene subsetting), the list of contrasts and the
    parameters in ``uns[key]``. Tables must be indexed like ``adata.var_names`` and carry at least
    :data:`DE_COLUMNS`. Tables of F-tests (several coefficients tested at once) go in ``ftests``:
    stored the same way, listed in ``uns[key]["ftests"]``, with at least :data:`FTEST_COLUMNS`.
    Earlier contrasts and F-tests stored under the same key are removed first."""
    check_key(key)
    ftests = {} if ftests is None else ftests
    for kind, tables, required in (("contrast", results, DE_COLUMNS), ("F-test", ftests, FTEST_COLUMNS)):
        for name, df in tables.items():
            check_key(name, f"{kind} name")
            missing = [c for c in required if c not in df.columns]
            if missing:
                raise ValueError(f"result table for {name!r} lacks columns {missing}")
            if not df.index.equals(adata.var_names):
                raise ValueError(f"result table for {name!r} is not indexed by adata.var_names")
    clash = sorted(set(results) & set(ftests))
    if clash:
        raise ValueError(f"names used both for a contrast and an F-test: {clash}")
    old = adata.uns.get(key)
    if isinstance(old, Mapping):
        for slot in ("contrasts", "ftests"):
            for c in np.atleast_1d(old.get(slot, [])):
                adata.varm.pop(de_varm_key(key, str(c)), None)
    for name, df in {**results, **ftests}.items():
        adata.varm[de_varm_key(key, name)] = h5ad_safe_frame(df)
    adata.uns.pop(key, None)
    if ftests:
        extra["ftests"] = list(ftests)
    write_params(adata, key, params, contrasts=list(results), **extra)
