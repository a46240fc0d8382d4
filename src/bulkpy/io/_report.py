"""A study report: one self-contained HTML file with what an analysed AnnData holds.

The report reads the object through ``bk.get`` and draws through ``bk.pl``; it never writes to the
AnnData. Figures are inlined as base64 PNG, style and script are inline (no network access when the
file is opened). The page is rendered from the Jinja2 templates in ``bulkpy/io/templates``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import io as _io
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validate import check_adata, check_counts, obs_column
from .._version import __version__
from ..get._enrichment import _enrichment_keys

#: Layers of log-scale expression the sample-structure section prefers, in order.
_LOG_LAYERS = ("vst", "rlog")
#: ``var`` columns holding gene symbols, in order of preference.
_SYMBOL_COLUMNS = ("symbol", "gene_symbol", "gene_name", "SYMBOL", "gene_symbols")
#: DE table columns shown first when present (others follow, numeric only).
_DE_FIRST = ("baseMean", "AveExpr", "logCPM", "log2FoldChange", "log2FoldChange_shrunk", "lfcSE", "stat", "pvalue", "padj")
#: Default significance level when a run stores none (DESeq2 records its ``alpha``).
_DEFAULT_ALPHA = 0.05
_MAX_CELL = 80  # characters of a long text cell (leading edges, gene lists) shown in tables


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("bulkpy.io", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _check_target(filename) -> Path:
    """The report's path, refused before any work when it can not be written."""
    if not isinstance(filename, str | os.PathLike):
        raise TypeError(f"filename must be a path (str or pathlib.Path), got {type(filename).__name__}")
    path = Path(filename).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; pass a file name such as 'study.html'")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder {str(parent)!r} does not exist; create it or write the report elsewhere")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"can not write {str(path)!r}: no write permission; choose a writable location")
    return path


def _figure_uri(fig, dpi: int) -> str:
    """A matplotlib figure as a ``data:`` URI (PNG, base64); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(make, dpi: int, caption: str) -> dict:
    """Draw one figure; a plot that refuses the data gives a note instead of stopping the report."""
    try:
        drawn = make()
    except (ValueError, KeyError, TypeError) as err:
        return {"uri": None, "caption": caption, "error": f"{type(err).__name__}: {err}"}
    fig = drawn if hasattr(drawn, "savefig") else drawn.figure
    return {"uri": _figure_uri(fig, dpi), "caption": caption, "error": None}


def _cell(value) -> dict:
    """One table cell: the text shown and the value sorted on (numbers sort numerically)."""
    if isinstance(value, bool | np.bool_):
        return {"text": str(bool(value)), "sort": str(bool(value)), "num": False, "title": ""}
    if isinstance(value, int | np.integer):
        return {"text": str(int(value)), "sort": str(int(value)), "num": True, "title": ""}
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return {"text": "NA" if np.isnan(v) else str(v), "sort": "", "num": True, "title": ""}
        text = f"{v:,.0f}" if v.is_integer() and 1e4 <= abs(v) < 1e15 else f"{v:.4g}"  # library sizes
        return {"text": text, "sort": repr(v), "num": True, "title": ""}
    if value is None:
        return {"text": "", "sort": "", "num": False, "title": ""}
    if isinstance(value, np.ndarray | list | tuple):
        value = ", ".join(map(str, np.ravel(np.asarray(value, dtype=object))))
    text = str(value)
    short = text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"
    return {"text": short, "sort": text.lower(), "num": False, "title": text if short != text else ""}


def _table(df: pd.DataFrame, *, index_name: str, table_id: str) -> dict:
    """A DataFrame as rows of cells for the sortable, searchable table template."""
    columns = [index_name, *map(str, df.columns)]
    rows = [[_cell(str(idx)), *(_cell(v) for v in row)] for idx, row in zip(df.index, df.itertuples(index=False), strict=True)]
    return {"id": table_id, "columns": columns, "rows": rows}


def _plain(value, limit: int = 12) -> str:
    """A stored parameter as short text (arrays and long lists abridged)."""
    if isinstance(value, np.ndarray | list | tuple):
        arr = np.ravel(np.asarray(value, dtype=object))
        items = [_plain(v) for v in arr[:limit]]
        more = f", … ({arr.size} in all)" if arr.size > limit else ""
        return "[" + ", ".join(items) + more + "]"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _flatten(params: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    """Nested parameters as (dotted name, text) rows."""
    out: list[tuple[str, str]] = []
    for k, v in params.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if v:
                out.extend(_flatten(v, name + "."))
            else:
                out.append((name, "{}"))
        elif isinstance(v, pd.DataFrame):
            out.append((name, f"table of {v.shape[0]} rows × {v.shape[1]} columns"))
        else:
            out.append((name, _plain(v)))
    return out


def _software() -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    rows = [("python", platform.python_version())]
    for pkg in ("bulkpy", "anndata", "numpy", "scipy", "pandas", "matplotlib", "numba", "jinja2"):
        try:
            rows.append((pkg, version(pkg)))
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            rows.append((pkg, "not installed"))
    return rows


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "x"


# ------------------------------------------------------------------------------------------------
# what the object holds
# ------------------------------------------------------------------------------------------------


def _de_keys(adata) -> list[str]:
    return [str(k) for k, v in adata.uns.items() if isinstance(v, Mapping) and "contrasts" in v]


def _symbol_column(adata) -> str | None:
    for c in _SYMBOL_COLUMNS:
        if c in adata.var.columns:
            return c
    return None


def _counts_layer(adata) -> tuple[bool, str | None]:
    """Where raw counts are: ``(True, "counts")``, ``(True, None)`` for X, or ``(False, None)``."""
    if "counts" in adata.layers:
        return True, "counts"
    if adata.X is not None:
        try:
            check_counts(adata.X)
        except (ValueError, TypeError):
            return False, None
        return True, None
    return False, None


def _guess_groupby(adata) -> str | None:
    """The factor of the first stored contrast, else the first categorical ``obs`` column that
    splits the samples into groups (2 levels or more, fewer levels than samples)."""
    for key in _de_keys(adata):
        specs = adata.uns[key].get("params", {}).get("contrast_specs", {})
        if isinstance(specs, Mapping):
            for spec in specs.values():
                first = np.ravel(np.asarray(spec, dtype=object))[:1]
                if first.size and str(first[0]) in adata.obs.columns:
                    return str(first[0])
    for c in adata.obs.columns:
        s = adata.obs[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object:
            n = s.nunique(dropna=True)
            if 2 <= n < adata.n_obs:
                return str(c)
    return None


def _alpha(params: Mapping) -> float:
    a = params.get("alpha")
    try:
        a = float(a)
    except (TypeError, ValueError):
        return _DEFAULT_ALPHA
    return a if 0 < a <= 1 else _DEFAULT_ALPHA


# ------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------


def _samples_section(adata, groupby: str | None, dpi: int) -> dict:
    from .. import get, pl

    has_counts, counts_layer = _counts_layer(adata)
    obs = adata.obs.copy()
    qc_note = None
    if has_counts:
        qc = get.sample_qc(adata, layer=counts_layer)
        stored = all(c in adata.obs.columns for c in qc.columns)
        qc_note = (
            "QC metrics from bk.pp.qc_metrics (obs)." if stored
            else f"QC metrics computed for this report from {'layers[' + repr(counts_layer) + ']' if counts_layer else 'X'} (not stored in the object)."
        )
        for c in qc.columns:
            if c not in obs.columns:
                obs[c] = qc[c]
        qc_fig = _figure(lambda: pl.qc(adata, groupby=groupby, layer=counts_layer), dpi, "Library size and genes detected per sample")
    else:
        qc_fig = None
        qc_note = "No raw counts (layers['counts'] or integer X): library-size QC not shown."
    return {
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "table": _table(obs, index_name="sample", table_id="samples-table"),
        "qc_note": qc_note,
        "qc_figure": qc_fig,
    }


def _structure_section(adata, layer: str | None, groupby: str | None, dpi: int) -> dict:
    """PCA and sample distances on a log-scale layer (VST/rlog/log-*), or on log-CPM computed on a
    light copy, or on X when there are no counts (e.g. log-scale microarray data)."""
    from anndata import AnnData

    from .. import pl, pp

    obj = adata
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"layer {layer!r} not found; available layers: {sorted(adata.layers)}")
        used, note = layer, f"layers[{layer!r}]"
    else:
        logs = [k for k in _LOG_LAYERS if k in adata.layers] or sorted(k for k in adata.layers if str(k).startswith("log"))
        has_counts, counts_layer = _counts_layer(adata)
        if logs:
            used, note = logs[0], f"layers[{logs[0]!r}]"
        elif has_counts:
            X = adata.layers[counts_layer] if counts_layer else adata.X
            obj = AnnData(X=X, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
            if groupby is not None:
                obj.obs[groupby] = adata.obs[groupby].to_numpy()
            pp.normalize(obj, method="cpm", log=True, layer=None, key_added="log_cpm")
            used, note = "log_cpm", "log-CPM (edgeR cpm, prior count 2) computed for this report (not stored)"
        else:
            used, note = None, "X"
    if adata.n_obs < 3:
        return {"note": note, "figures": [], "skipped": f"{adata.n_obs} sample(s): too few for PCA and distances"}
    figures = [
        _figure(lambda: pl.pca(obj, layer=used, color=groupby), dpi, "PCA on the 500 most variable genes"),
        _figure(lambda: pl.sample_distances(obj, layer=used, groupby=groupby), dpi, "Euclidean distances between samples"),
    ]
    return {"note": note, "figures": figures, "skipped": None}


def _de_tables(df: pd.DataFrame, adata, symbol: str | None, n_top: int, table_id: str) -> dict:
    padj = pd.to_numeric(df["padj"], errors="coerce")
    pval = pd.to_numeric(df["pvalue"], errors="coerce")
    order = pd.DataFrame({"padj": padj, "pvalue": pval}).sort_values(["padj", "pvalue"], na_position="last").index
    top = df.loc[order[:n_top]]
    first = [c for c in _DE_FIRST if c in top.columns]
    rest = [c for c in top.columns if c not in first and pd.api.types.is_numeric_dtype(top[c])]
    shown = top[first + rest]
    if symbol is not None:
        shown.insert(0, symbol, adata.var.loc[shown.index, symbol].astype(str).replace({"nan": ""}))
    return _table(shown, index_name="gene", table_id=table_id)


def _de_section(adata, key: str, symbol: str | None, n_top: int, dpi: int) -> dict:
    from .. import get, pl
    from ..get._de import _contrasts, _ftests

    entry = adata.uns[key]
    params = entry.get("params", {}) if isinstance(entry.get("params"), Mapping) else {}
    alpha = _alpha(params)
    results = []
    names = _contrasts(adata, key)
    for name in names + _ftests(adata, key):
        df = get.de_df(adata, key, contrast=name)
        padj = pd.to_numeric(df["padj"], errors="coerce").to_numpy(dtype=float)
        sig = np.isfinite(padj) & (padj < alpha)
        ftest = name not in names
        lfc = None if ftest else pd.to_numeric(df["log2FoldChange"], errors="coerce").to_numpy(dtype=float)
        figures = []
        if not ftest:
            figures = [
                _figure(lambda n=name: pl.volcano(adata, key=key, contrast=n, padj=alpha, lfc=0, label_key=symbol), dpi,
                        f"Volcano plot, padj < {alpha:g}"),
                _figure(lambda n=name: pl.ma(adata, key=key, contrast=n, padj=alpha, label_key=symbol), dpi,
                        f"MA plot, padj < {alpha:g}"),
            ]
        results.append({
            "name": name,
            "anchor": f"de-{_slug(key)}-{_slug(name)}",
            "ftest": ftest,
            "n_genes": int(df.shape[0]),
            "n_tested": int(np.isfinite(padj).sum()),
            "n_sig": int(sig.sum()),
            "n_up": None if ftest else int((sig & (lfc > 0)).sum()),
            "n_down": None if ftest else int((sig & (lfc < 0)).sum()),
            "figures": figures,
            "table": _de_tables(df, adata, symbol, n_top, f"de-{_slug(key)}-{_slug(name)}-table"),
        })
    return {
        "key": key,
        "anchor": f"de-{_slug(key)}",
        "method": _plain(params.get("method", "unknown")),
        "design": _plain(params.get("design", "")),
        "alpha": alpha,
        "alpha_stored": "alpha" in params,
        "results": results,
        "provenance": _provenance(adata, key),
    }


def _enrichment_section(adata, key: str, n_terms: int, dpi: int) -> dict:
    from .. import get, pl
    from ..get._enrichment import _entry

    _, method, contrasts = _entry(adata, key)
    tables = []
    for c in contrasts:
        df = get.enrichment(adata, key, contrast=c)
        if "padj" in df.columns:
            df = df.sort_values("padj", kind="stable")
        shown = df.drop(columns=[x for x in ("genes",) if x in df.columns]).head(n_terms)
        tables.append({
            "contrast": c,
            "n_sets": int(df.shape[0]),
            "n_sig": int((pd.to_numeric(df.get("padj", pd.Series(dtype=float)), errors="coerce") < 0.05).sum()),
            "table": _table(shown, index_name="gene set", table_id=f"enr-{_slug(key)}-{_slug(c)}-table"),
        })
    fig = _figure(lambda: pl.enrichment(adata, key=key, n_terms=min(n_terms, 20)), dpi, "Top gene sets across contrasts")
    return {
        "key": key, "anchor": f"enr-{_slug(key)}", "method": method, "tables": tables, "figure": fig,
        "provenance": _provenance(adata, key),
    }


def _provenance(adata, key: str) -> dict:
    """The parameters that made result ``key`` and the versions recorded with them."""
    params = adata.uns[key].get("params")
    params = params if isinstance(params, Mapping) else {}
    versions = params.get("versions")
    made_with = ", ".join(f"{k} {_plain(v)}" for k, v in versions.items()) if isinstance(versions, Mapping) else ""
    rows = [(k, v) for k, v in _flatten(params) if not k.startswith("versions.")]
    return {"key": key, "rows": rows, "made_with": made_with or "versions not recorded"}


def _params_sections(adata, shown: set[str]) -> list[dict]:
    """Parameters of every other stored step (QC, filters, normalisation, transforms, models)."""
    return [
        _provenance(adata, str(k)) for k, v in adata.uns.items()
        if str(k) not in shown and isinstance(v, Mapping) and isinstance(v.get("params"), Mapping)
    ]


# ------------------------------------------------------------------------------------------------
# the public function
# ------------------------------------------------------------------------------------------------


def write_report(
    adata,
    filename,
    *,
    title: str | None = None,
    groupby: str | None = None,
    layer: str | None = None,
    n_top: int = 100,
    dpi: int = 96,
) -> Path:
    """Write a study report: one self-contained HTML file with what the AnnData holds.

    The report has the samples and their QC (library size, genes detected: read from ``obs`` when
    :func:`bulkpy.pp.qc_metrics` wrote them, computed on the fly otherwise), the sample structure
    (PCA and clustered sample distances on a log-scale layer), every differential expression result
    in the object (per contrast: number of significant genes up and down at the run's ``alpha``,
    volcano and MA plots, a sortable and searchable table of the top genes with symbols when
    ``var`` has them), every enrichment result (dot plot and tables), and the parameters and
    software versions that made each result (``uns[key]["params"]``). Figures are inlined as PNG
    and style and script are inline: the file opens offline and can be mailed as it is. An object
    with no results still gives a report of its samples.

    Parameters
    ----------
    adata
        Annotated data matrix (samples × genes), as analysed with bulkpy or read from an h5ad.
        Nothing is written to it.
    filename
        The HTML file to write (an existing file is replaced). Its folder must exist and be
        writable; this is checked before any work.
    title
        Title of the report; by default ``"bulkpy report"`` followed by the object's shape.
    groupby
        ``obs`` column colouring samples in the QC, PCA and distance plots; by default the factor of
        the first stored contrast, else the first categorical ``obs`` column that splits the samples.
    layer
        Log-scale layer for PCA and sample distances; by default ``"vst"``, then ``"rlog"``, then
        the first layer whose name starts with ``"log"``, else log-CPM computed from the counts on
        a copy (or ``X`` when there are no counts, e.g. log-scale microarray data).
    n_top
        Number of genes in each differential expression table (smallest ``padj`` first); also the
        number of gene sets in each enrichment table.
    dpi
        Resolution of the inlined figures.

    Returns
    -------
    The :class:`~pathlib.Path` of the written report. ``adata`` is not modified.

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        When ``filename`` can not be written (checked before anything is computed).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> out = bk.io.write_report(adata, pathlib.Path(tempfile.mkdtemp()) / "study.html", title="pasilla")
    >>> "<h2 id=\\"samples\\">Samples" in out.read_text()
    True
    """
    check_adata(adata)
    path = _check_target(filename)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    if groupby is not None:
        obs_column(adata, groupby, what="groupby")
    else:
        groupby = _guess_groupby(adata)
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer {layer!r} not found; available layers: {sorted(adata.layers) or 'none'}")
    for value, name in ((n_top, "n_top"), (dpi, "dpi")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    symbol = _symbol_column(adata)
    de_keys = _de_keys(adata)
    enrichment_keys = _enrichment_keys(adata)
    context: dict[str, Any] = {
        "title": title or f"bulkpy report: {adata.n_obs} samples × {adata.n_vars} genes",
        "created": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "groupby": groupby,
        "symbol": symbol,
        "samples": _samples_section(adata, groupby, dpi),
        "structure": _structure_section(adata, layer, groupby, dpi),
        "de": [_de_section(adata, k, symbol, int(n_top), dpi) for k in de_keys],
        "enrichment": [_enrichment_section(adata, k, int(n_top), dpi) for k in enrichment_keys],
        "params": _params_sections(adata, set(de_keys) | set(enrichment_keys)),
        "software": _software(),
        "bulkpy_version": __version__,
        "layers": sorted(map(str, adata.layers)),
    }
    html = _environment().get_template("report.html.j2").render(**context)
    _write_atomic(path, html)
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename, so an interrupted run never leaves half a report."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
