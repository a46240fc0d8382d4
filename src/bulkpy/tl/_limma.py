"""limma: linear models with empirical Bayes moderation (``bk.tl.limma``) and voom (``bk.tl.voom``).

Defaults follow limma 3.68 (Bioconductor 3.23): voom's adaptive lowess span and ``eBayes``'
``legacy=NULL`` choice of hyperparameter estimator. ``adaptive_span=False`` (voom's fixed span,
0.5 by default) and ``legacy=True`` give the results of earlier releases such as limma 3.54
(Bioconductor 3.16).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import describe_design, design_spec, expr_variable
from .._docs import doc_adata, doc_copy, doc_params
from .._slots import check_key, write_de
from .._stats import limma as _lin
from .._utils import finish, start
from .._validate import (
    check_adata,
    check_bool,
    check_counts,
    dask_summary,
    dense,
    get_matrix,
    is_dask,
    obs_column,
)
from ._contrasts import DOC_CONTRAST as _doc_contrast
from ._contrasts import DOC_DESIGN as _doc_design
from ._contrasts import _one_contrast, collect_contrasts, contrast_items, parse_design
from ._contrasts import parse_contrasts as _contrasts
from ._grouped import DOC_SPLIT, DOC_SPLIT_RETURNS, check_unsplit, run_grouped, split_arguments

#: limma version whose behaviour the defaults follow, and its Bioconductor release.
LIMMA_VERSION = "3.68.5"
R_RELEASE = "Bioconductor 3.23"

_NORM_METHODS = ("TMM", "TMMwsp", "RLE", "upperquartile", "none")

_doc_key = """\
key_added
    Key of the result: tables in ``varm[f"{key_added}_{contrast}"]``, parameters in
    ``uns[key_added]``, per-gene model columns in ``var`` prefixed ``f"{key_added}_"``."""

_doc_ftest = """\
ftest
    Moderated F-tests of several coefficients or contrasts at once (the null hypothesis: all of
    them are zero), as limma's ``topTable(fit, coef = c(...))`` or ``topTable`` after
    ``contrasts.fit`` with several contrasts:

    - ``"all"``: every design column but the intercept (``topTable(fit, coef = 2:p)``), named
      ``"F_all"``;
    - an obs column of the formula, e.g. ``"cell"``: all columns of its term (a factor with more
      than two levels, a spline...), named ``"F_cell"``;
    - a list of contrasts in any form ``contrast`` accepts (coefficient names,
      ``[factor, test, reference]``, numeric vectors) or of obs columns, tested together, named
      ``"F_"`` followed by their names joined by ``_``;
    - a dict ``{name: any of the above}`` for several F-tests or to choose the names.

    An F-test needs two or more linearly independent contrasts: for one, use ``contrast=``
    (its moderated t test gives the same p-value). Linearly dependent contrasts (e.g. all
    pairwise differences of three groups) are tested on their rank, as limma does. Not with
    ``lfc > 0`` (limma's ``treat`` has no F-test). With ``ftest``, ``contrast`` may be ``None``
    (F-tests only)."""

_doc_lfc = """\
lfc
    Log2 fold-change threshold. ``0`` gives the ordinary moderated t test (limma ``eBayes``);
    a positive value tests ``|log2FC| > lfc`` with limma's ``treat`` (no ``B`` column then)."""

_doc_robust = """\
robust
    Estimate the prior robustly so that genes with outlying variances are not over-shrunk
    (limma's ``robust=TRUE``: Winsorised moments, ``fitFDistRobustly``)."""

_doc_legacy = """\
legacy
    How the prior degrees of freedom and variance are estimated (limma's ``legacy`` of
    ``eBayes``/``treat``). ``None`` (limma 3.68's default) uses the moment estimator of limma
    3.54 (``fitFDist``, or ``fitFDistRobustly`` with ``robust``) when all genes with residual
    degrees of freedom have the same number of them, and the profile-likelihood estimator of
    limma >= 3.62 (``fitFDistUnequalDF1``) when they differ (missing values, voom with zero
    counts...); ``True`` always uses the former (the results of limma 3.54 / Bioconductor 3.16),
    ``False`` always the latter."""

_doc_block = """\
block
    ``obs`` column naming the block of each sample (patient, donor, cell line...) for repeated
    measures: samples of the same block are correlated, with the intra-block correlation of
    limma's ``duplicateCorrelation`` (a random effect instead of a fixed term). The block must
    not also be in the design (that makes the correlation unidentifiable). Fitted by
    generalised least squares (limma's ``lmFit(block =, correlation =)``).
correlation
    The intra-block correlation, in (-1, 1), with ``block``; ``None`` estimates it with
    ``duplicateCorrelation`` (the consensus over genes)."""

_doc_table = """\
- ``varm[f"{key_added}_{contrast}"]``: one table per contrast, indexed like ``var_names``,
  with ``log2FoldChange`` (logFC), ``lfcSE`` (posterior standard error), ``stat`` (moderated
  t), ``pvalue``, ``padj`` (Benjamini–Hochberg), ``AveExpr`` and ``B`` (log-odds; not with
  ``lfc > 0``), i.e. limma's ``topTable`` columns under the shared bulkpy names;
- ``var[f"{key_added}_sigma"]``, ``_df_residual``, ``_s2_prior``, ``_df_prior``, ``_s2_post``,
  ``_df_total``: residual standard deviation and the empirical Bayes quantities per gene;
- ``uns[key_added]["contrasts"]`` (contrast names) and ``uns[key_added]["params"]``: method,
  design and its column names, the contrast vectors, trend/robust/lfc, ``legacy`` (``"auto"``
  for ``None``) and ``legacy_used`` (the estimator actually used), the prior
  (``s2_prior``/``df_prior`` when they are one number), the layer, the R release followed
  (``r_release``, ``limma_version``) and the Python versions; with ``block``, ``block``,
  ``n_blocks``, ``correlation`` (the one used) and ``correlation_estimated``; with
  ``sample_weights``, ``sample_weights`` (one per sample, in ``obs_names`` order) and
  ``sample_weights_method``;
- with ``ftest``, ``varm[f"{key_added}_{name}"]``: one table per F-test with
  ``log2FoldChange_{contrast}`` (the log fold change of each tested coefficient or contrast,
  limma's columns named by the coefficients), ``AveExpr``, ``stat`` (the moderated F), ``pvalue``
  and ``padj`` (there is no single ``log2FoldChange``); ``uns[key_added]["ftests"]`` (F-test
  names) and ``params["ftests"]`` (per F-test its contrast vectors, ``df1`` and the spec). The
  denominator degrees of freedom of each gene are ``var[f"{key_added}_df_prior"]`` +
  ``var[f"{key_added}_df_residual"]``."""


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_lfc(lfc) -> float:
    if isinstance(lfc, bool) or not isinstance(lfc, int | float | np.integer | np.floating):
        raise TypeError(f"lfc must be a number >= 0 (log2 fold change), got {lfc!r}")
    v = float(lfc)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"lfc must be a finite number >= 0 (log2 fold change), got {lfc!r}")
    return v


def _check_legacy(legacy) -> bool | None:
    if legacy is None or isinstance(legacy, bool | np.bool_):
        return None if legacy is None else bool(legacy)
    raise TypeError(
        f"legacy must be None (limma's default: choose from the residual degrees of freedom), True or False; "
        f"got {legacy!r}"
    )


def _legacy_used(df_residual: np.ndarray, legacy: bool | None) -> bool:
    """The estimator limma 3.68's ``squeezeVar`` picks: with ``legacy=NULL`` the legacy one exactly
    when the positive residual degrees of freedom are all equal."""
    if legacy is not None:
        return legacy
    dfp = np.asarray(df_residual, dtype=np.float64)
    dfp = dfp[dfp > 0]
    return bool(dfp.size > 0 and dfp.min() == dfp.max())


def _design(adata: AnnData, design) -> tuple[np.ndarray, list[str]]:
    return parse_design(adata, design, what_needs_df="the variance")


def _weights(adata: AnnData, weights, shape: tuple[int, int]):
    if weights is None:
        return None, "None"
    if isinstance(weights, str):
        if weights in adata.layers:
            W = get_matrix(adata, weights)
            W = W if is_dask(W) else dense(W)
            desc = f"layers[{weights!r}]"
        elif weights in adata.obs.columns:
            col = adata.obs[weights]
            if not pd.api.types.is_numeric_dtype(col):
                raise TypeError(f"obs column {weights!r} must hold numeric sample weights, got dtype {col.dtype}")
            W = col.to_numpy(dtype=np.float64)
            desc = f"obs[{weights!r}]"
        else:
            layers = ", ".join(repr(k) for k in adata.layers) or "none"
            raise KeyError(
                f"weights {weights!r} is neither a layer nor an obs column; available layers: {layers}; sample "
                f"weights can be an obs column (e.g. from bk.pp.array_weights), columns are: {list(adata.obs.columns)}"
            )
    else:
        try:
            W = np.asarray(weights.toarray() if hasattr(weights, "toarray") else weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"weights must be a layer name, an obs column name or a numeric array, got {type(weights).__name__}"
            ) from None
        desc = f"array {W.shape}"
    n, g = shape
    if W.shape not in ((n, g), (n,)):
        raise ValueError(
            f"weights must be samples x genes ({n} x {g}, like the data) or one weight per sample ({n},); "
            f"got shape {W.shape}"
        )
    s = dask_summary(W) if is_dask(W) else None
    if (s["nonfinite"] if s else not np.all(np.isfinite(W))):
        raise ValueError("weights contain missing or infinite values; weights must be finite numbers >= 0")
    negative = s["negative"] if s else int(np.sum(W < 0))
    if negative:
        raise ValueError(
            f"weights contain {negative} negative values; weights must be >= 0 (0 drops an observation)"
        )
    return W, desc


def _block(adata: AnnData, block, X: np.ndarray, cols: list[str]) -> tuple[np.ndarray | None, int]:
    """Integer codes of the block column (checked: no missing values, repeated, not in the design)."""
    if block is None:
        return None, 0
    col = obs_column(adata, block, what="block")
    na = pd.isna(col).to_numpy()
    if na.any():
        raise ValueError(
            f"block column {block!r} has {int(na.sum())} missing values (samples "
            f"{list(map(str, adata.obs_names[na][:10]))}); give every sample a block"
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.remove_unused_categories().cat.codes.to_numpy().astype(np.intp)
    else:
        vals = col.to_numpy()
        _, codes = np.unique(vals.astype(str) if vals.dtype == object else vals, return_inverse=True)
        codes = np.asarray(codes, dtype=np.intp).ravel()
    sizes = np.bincount(codes)
    if sizes.max() < 2:
        raise ValueError(
            f"every sample is its own block in {block!r} ({sizes.size} blocks of one sample): there are no repeated "
            "measures, so no intra-block correlation to estimate (limma sets it to 0); drop block="
        )
    if _lin.block_in_design(X, codes):
        raise ValueError(
            f"block {block!r} is already a fixed effect of the design (its levels are explained by the design "
            f"columns {cols}), so the intra-block correlation is not identifiable (limma's duplicateCorrelation "
            f"warns and sets it to 0). Either remove {block!r} from the design to model the blocks as correlated "
            "repeated measures, or keep it in the design and drop block="
        )
    return codes, int(sizes.size)


def _check_correlation(correlation, block) -> float | None:
    if correlation is None:
        return None
    if block is None:
        raise ValueError("correlation= is the intra-block correlation of block=; pass block= (an obs column) with it")
    if isinstance(correlation, bool) or not isinstance(correlation, int | float | np.integer | np.floating):
        raise TypeError(f"correlation must be a number in (-1, 1) or None (estimate it), got {correlation!r}")
    r = float(correlation)
    if not np.isfinite(r) or abs(r) >= 1:
        raise ValueError(
            f"correlation must be in (-1, 1) (1 or -1 makes the model degenerate), got {correlation!r}"
        )
    return r


def _block_params(block, n_blocks: int, correlation: float, estimated: bool) -> dict:
    if block is None:
        return {}
    return {
        "block": block,
        "n_blocks": n_blocks,
        "correlation": float(correlation),
        "correlation_estimated": estimated,
    }


def _expression(adata: AnnData, layer):
    """The log-expression: in memory a dense float64 array, checked; a dask matrix as it is,
    checked from its one-pass summary (infinite values are told from NaN by the fit's pass)."""
    E = get_matrix(adata, layer)
    if is_dask(E):
        return _dask_expression(E, layer)
    E = dense(E)
    if E.ndim != 2 or 0 in E.shape:
        raise ValueError(f"the expression matrix is empty (shape {E.shape})")
    inf = np.isinf(E)
    if inf.any():
        _refuse_inf(int(inf.sum()), layer)
    if np.isnan(E).all():
        raise ValueError("the expression matrix has only missing values")
    finite = E[np.isfinite(E)]
    if finite.size and finite.min() >= 0 and finite.max() > 100 and np.all(finite == np.round(finite)):
        _warn_counts(layer)
    return E


def _dask_expression(E, layer):
    if E.ndim != 2 or 0 in E.shape:
        raise ValueError(f"the expression matrix is empty (shape {E.shape})")
    s = dask_summary(E)
    if s["finite"] == 0:
        raise ValueError("the expression matrix has only missing values")
    if s["negative"] == 0 and s["max"] > 100 and s["nonint"] == 0:
        _warn_counts(layer)
    return E


def _refuse_inf(n_inf: int, layer) -> None:
    raise ValueError(
        f"the expression matrix ({'X' if layer is None else f'layer {layer!r}'}) has {n_inf} infinite "
        "values (the log of 0?); use a log transform with a prior count, or set them to NaN to treat them as missing"
    )


def _warn_counts(layer) -> None:
    warnings.warn(
        f"the expression values ({'X' if layer is None else f'layer {layer!r}'}) look like raw counts; limma "
        "expects log-expression: use bk.tl.voom for counts, or log-transform first (e.g. log-CPM)",
        UserWarning,
        stacklevel=4,
    )


def _check_observed(adata: AnnData, empty: np.ndarray) -> None:
    if empty.any():
        raise ValueError(
            f"{int(empty.sum())} genes have no observed value (e.g. {adata.var_names[empty][:5].tolist()}), so "
            "their average expression, the covariate of trend=True, is undefined; drop them first"
        )


def _dask_missing(E, W) -> bool:
    """Whether a dask expression matrix (with its weights) has a missing observation anywhere."""
    if W is not None and np.ndim(W) == 2 and np.shape(W)[1] > 1:
        return True  # a weights matrix: limma fits by patterns of missing values whatever they are
    if dask_summary(E)["nonfinite"] if is_dask(E) else not np.all(np.isfinite(E)):
        return True
    return W is not None and bool(np.any(~(np.asarray(W) > 0)))


def _refuse_on_dask(what: str) -> None:
    raise ValueError(
        f"{what} needs the matrix in memory (an iterative estimate over all genes); it is not computed silently "
        "from a dask layer. Load it first (adata.layers[key] = adata.layers[key].compute()), or give the "
        "estimate (correlation=)"
    )


# --------------------------------------------------------------------------------------------
# F-tests (ftest=)
# --------------------------------------------------------------------------------------------


@dataclass
class _FTest:
    """One moderated F-test: its name, the coefficients x contrasts matrix and the contrast names."""

    name: str
    C: np.ndarray
    columns: list[str]
    spec: object


def _intercept_columns(X: np.ndarray, cols: list[str]) -> list[int]:
    return [j for j, c in enumerate(cols) if c in ("Intercept", "(Intercept)") or np.all(X[:, j] == 1)]


def _term_columns(adata: AnnData, design, cols: list[str], column: str) -> list[int] | None:
    """Design columns of the formula terms that read only obs ``column`` (None if it is no such term)."""
    if not isinstance(design, str) or column not in adata.obs.columns:
        return None
    spec = design_spec(adata.obs, design)
    out: list[int] = []
    for st in spec.structure:
        factors = [str(f) for f in st.term.factors]
        if len(factors) == 1 and factors[0] != "1" and expr_variable(factors[0], adata.obs) == column:
            out.extend(cols.index(c) for c in st.columns)
    return out or None


def _unit_columns(cols: list[str], idx: list[int]) -> list[tuple[str, np.ndarray]]:
    out = []
    for j in idx:
        v = np.zeros(len(cols))
        v[j] = 1.0
        out.append((cols[j], v))
    return out


def _ftest_parts(adata: AnnData, design, X, cols: list[str], spec) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """Default name and the (name, vector) contrasts of one F-test spec."""
    if isinstance(spec, str) and spec not in cols:
        if spec == "all":
            idx = [j for j in range(len(cols)) if j not in _intercept_columns(X, cols)]
            return "F_all", _unit_columns(cols, idx)
        idx = _term_columns(adata, design, cols, spec)
        if idx is None:
            raise KeyError(
                f"ftest {spec!r} is neither 'all', an obs column of the formula design, nor a coefficient; "
                f"coefficients are: {cols}; give a list of contrasts to test together"
            )
        return f"F_{spec}", _unit_columns(cols, idx)
    items = contrast_items(spec, cols)
    parts: list[tuple[str, np.ndarray]] = []
    labels: list[str] = []
    rest = []
    for given, item in items:
        if given is None and isinstance(item, str) and item not in cols:
            idx = _term_columns(adata, design, cols, item)
            if idx is not None:
                parts.extend(_unit_columns(cols, idx))
                labels.append(item)
                continue
        rest.append((given, item))
    if rest:
        pairs = collect_contrasts(rest, lambda sp, default: _one_contrast(adata, design, cols, sp, default))
        parts.extend(pairs)
        labels.extend(n for n, _ in pairs)
    return "F_" + "_".join(labels), parts


def _spec_record(spec):
    if isinstance(spec, str):
        return spec
    if isinstance(spec, np.ndarray) or not isinstance(spec, list | tuple):
        return [str(s) for s in np.atleast_1d(np.asarray(spec, dtype=object))]
    return [_spec_record(s) if isinstance(s, list | tuple | np.ndarray) else str(s) for s in spec]


def _parse_ftests(adata: AnnData, design, X, cols: list[str], ftest, taken: list[str], lfc: float) -> list[_FTest]:
    """The F-tests of ``ftest=``, checked (two or more independent contrasts, unique names)."""
    if ftest is None:
        return []
    if lfc > 0:
        raise ValueError(
            "ftest= can not be combined with lfc > 0: limma's treat tests one coefficient against a threshold and "
            "has no F-test; run the F-tests in a call with lfc=0"
        )
    if isinstance(ftest, Mapping):
        if not ftest:
            raise ValueError("ftest is an empty dict; give {name: 'all' | obs column | list of contrasts}")
        given = [(str(k), v) for k, v in ftest.items()]
    elif isinstance(ftest, str | list | tuple | np.ndarray):
        given = [(None, ftest)]
    else:
        raise TypeError(
            f"could not read ftest {ftest!r}: give 'all', an obs column of the design, a list of contrasts or a dict "
            "{name: any of these}"
        )
    cov = np.linalg.inv(X.T @ X)
    out: list[_FTest] = []
    for name, spec in given:
        default, parts = _ftest_parts(adata, design, X, cols, spec)
        name = default if name is None else name
        check_key(name, "F-test name")
        C = np.column_stack([v for _, v in parts]) if parts else np.zeros((len(cols), 0))
        labels = [n for n, _ in parts]
        if len(set(labels)) < len(labels):
            raise ValueError(f"F-test {name!r} names a contrast twice: {labels}")
        rank = _lin.f_projection(C.T @ cov @ C).shape[1] if C.shape[1] else 0
        if rank < 2:
            what = labels[0] if len(labels) == 1 else f"{labels} (of rank {rank})"
            raise ValueError(
                f"F-test {name!r} tests a single contrast, {what}: an F-test needs two or more linearly independent "
                f"coefficients or contrasts; for one, use contrast= (its moderated t test, whose p-value equals the F-test's)"
            )
        if name in taken or any(f.name == name for f in out):
            raise ValueError(
                f"F-test name {name!r} is used twice (contrasts: {taken}); name the F-tests with a dict {{name: ftest}}"
            )
        out.append(_FTest(name, C, labels, _spec_record(spec)))
    return out


def _tests(adata: AnnData, design, X, cols: list[str], contrast, ftest, lfc: float):
    """The t-test contrasts (names, matrix, specs) and the F-tests; ``contrast`` may be None with ``ftest``."""
    if contrast is None and ftest is None:
        raise TypeError(
            f"contrast or ftest is required: e.g. contrast=['condition', 'treated', 'untreated'] or a coefficient name "
            f"(one of {cols}), or ftest='all' for a moderated F-test of every coefficient but the intercept"
        )
    if contrast is None:
        names, C, specs = [], np.zeros((len(cols), 0)), {}
    else:
        names, C, specs = _contrasts(adata, design, cols, contrast)
    return names, C, specs, _parse_ftests(adata, design, X, cols, ftest, names, lfc)


def _ftest_table(var_names, fit, eb, ft: _FTest) -> tuple[pd.DataFrame, int]:
    ffit = _lin.contrasts_fit(fit, ft.C)
    res = _lin.moderated_f(ffit, eb)
    cols = {f"log2FoldChange_{c}": ffit.coefficients[j] for j, c in enumerate(ft.columns)}
    cols.update(
        AveExpr=ffit.amean, stat=res.F, pvalue=res.p_value, padj=_lin.p_adjust_bh(res.p_value)
    )
    return pd.DataFrame(cols, index=var_names), res.df1


# --------------------------------------------------------------------------------------------
# fit + tests shared by limma and voom
# --------------------------------------------------------------------------------------------


def _lm_fit(E, X, *, weights, block, correlation, layer=None):
    """limma's ``lmFit``: on the whole matrix in memory, on a dask matrix one pass block by block
    of genes (infinite values, refused, are counted by the same pass)."""
    if not is_dask(E) and not is_dask(weights):
        return _lin.lm_fit(E, X, weights=weights, block=block, correlation=correlation)
    fit, ninf = _lin.lm_fit_blocks(
        E, X, weights=weights, block=block, correlation=correlation, missing=_dask_missing(E, weights)
    )
    if ninf.sum():
        _refuse_inf(int(ninf.sum()), layer)
    return fit


def _fit_and_test(
    E, X, C, names, *, weights, trend, robust, lfc, legacy, block=None, correlation=None, ftests=(), layer=None
):
    fit = _lm_fit(E, X, weights=weights, block=block, correlation=correlation, layer=layer)
    return _moderate(fit, C, ftests, trend=trend, robust=robust, lfc=lfc, legacy=legacy)


def _moderate(fit, C, ftests, *, trend, robust, lfc, legacy):
    """``contrasts.fit`` and ``eBayes`` (or ``treat``) on per-gene vectors."""
    if not np.any(fit.df_residual > 0):
        raise ValueError("no gene has residual degrees of freedom (too many missing values for the design)")
    # the posterior variances do not depend on the contrasts: without t tests, moderate on the first F-test's
    cfit = _lin.contrasts_fit(fit, C if C.shape[1] else ftests[0].C)
    if lfc > 0:
        eb = _lin.treat(cfit, lfc=lfc, trend=trend, robust=robust, legacy=legacy)
    else:
        eb = _lin.ebayes(cfit, trend=trend, robust=robust, legacy=legacy)
    return fit, cfit, eb


def _tables(var_names, cfit, eb, names) -> dict[str, pd.DataFrame]:
    out: dict[str, pd.DataFrame] = {}
    se = cfit.stdev_unscaled * np.sqrt(eb.s2_post)[None, :]
    for j, name in enumerate(names):
        cols = {
            "log2FoldChange": cfit.coefficients[j],
            "lfcSE": se[j],
            "stat": eb.t[j],
            "pvalue": eb.p_value[j],
            "padj": _lin.p_adjust_bh(eb.p_value[j]),
            "AveExpr": cfit.amean,
        }
        if eb.lods is not None:
            cols["B"] = eb.lods[j]
        out[name] = pd.DataFrame(cols, index=var_names)
    return out


def _scalar_or_note(value, note: str):
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0 or arr.size == 1:
        return float(arr.ravel()[0])
    if np.all(arr == arr[0]):
        return float(arr[0])
    return note


def _write(adata, key, fit, cfit, eb, names, C, specs, params, *, legacy, ftests=()) -> None:
    g = fit.sigma.size
    var_cols = {
        "sigma": fit.sigma,
        "df_residual": fit.df_residual,
        "s2_prior": np.broadcast_to(np.asarray(eb.s2_prior, dtype=np.float64), (g,)),
        "df_prior": np.broadcast_to(np.asarray(eb.df_prior, dtype=np.float64), (g,)),
        "s2_post": eb.s2_post,
        "df_total": eb.df_total,
    }
    for k, v in var_cols.items():
        adata.var[f"{key}_{k}"] = np.array(v, dtype=np.float64)
    p = dict(params)
    p.update(
        contrasts={name: C[:, j] for j, name in enumerate(names)},
        contrast_specs=specs,
        s2_prior=_scalar_or_note(eb.s2_prior, f"per gene: var['{key}_s2_prior']"),
        df_prior=_scalar_or_note(eb.df_prior, f"per gene: var['{key}_df_prior']"),
        proportion=0.01,
        stdev_coef_lim=[0.1, 4.0],
        winsor_tail_p=[0.05, 0.1],
        legacy="auto" if legacy is None else legacy,
        legacy_used=_legacy_used(fit.df_residual, legacy),
        r_release=R_RELEASE,
        limma_version=LIMMA_VERSION,
    )
    if legacy is not None:
        note = (
            "legacy=True: fitFDist/fitFDistRobustly moment estimates of the prior whatever the residual df "
            "(as limma 3.54 / Bioconductor 3.16)"
            if legacy
            else "legacy=False: fitFDistUnequalDF1 profile-likelihood estimates of the prior (limma >= 3.62)"
        )
        p["note"] = f"{p['note']}; {note}" if "note" in p else note
    if eb.var_prior is not None and names:
        p["var_prior"] = {name: float(eb.var_prior[j]) for j, name in enumerate(names)}
    ftables = {}
    if ftests:
        p["ftests"] = {}
        for ft in ftests:
            ftables[ft.name], df1 = _ftest_table(adata.var_names, fit, eb, ft)
            p["ftests"][ft.name] = {
                "contrasts": {c: ft.C[:, j] for j, c in enumerate(ft.columns)},
                "df1": df1,
                "spec": ft.spec,
            }
    write_de(adata, key, _tables(adata.var_names, cfit, eb, names), p, ftests=ftables)


def _voom_counts(adata: AnnData, layer):
    X = get_matrix(adata, layer)
    counts = X if is_dask(X) else dense(X)
    what = "counts in " + ("X" if layer is None else f"layer {layer!r}")
    check_counts(counts, what=what, integer=False)
    if counts.shape[1] < 2:
        raise ValueError("voom needs at least two genes to fit a mean-variance trend")
    return counts


def _voom_offset(adata: AnnData, offset, counts):
    if offset is None:
        return None
    off = get_matrix(adata, offset)
    off = off if is_dask(off) else dense(off)
    bad = dask_summary(off)["nonfinite"] if is_dask(off) else not np.all(np.isfinite(off))
    if off.shape != counts.shape or bad:
        raise ValueError(
            f"offset layer {offset!r} must hold finite natural-log offsets of the counts' shape {counts.shape}"
        )
    if is_dask(counts) and not is_dask(off):
        import dask.array as da

        off = da.from_array(off, chunks=counts.chunks)
    return off


def _library_sizes(counts) -> tuple[np.ndarray, np.ndarray | None]:
    """Column totals per sample and, for a dask matrix, which genes have a positive count (one
    pass over blocks of samples, the input of :func:`norm_factors`); in memory ``None``."""
    if not is_dask(counts):
        return counts.sum(axis=1), None
    from .._stats import normalization as _norm

    blocks_fn = getattr(_norm, "library_sizes_blocks", None)
    if blocks_fn is not None:
        return blocks_fn(counts)
    return np.asarray(counts.sum(axis=1, dtype=np.float64).compute(), dtype=np.float64), None


def norm_factors(counts, lib: np.ndarray, method: str, detected: np.ndarray | None = None) -> np.ndarray:
    """edgeR's ``calcNormFactors`` of the counts (samples × genes) with library sizes ``lib``; a dask
    matrix is read block by block by the normalisation engine (``detected``: its genes with a
    positive count, from :func:`_library_sizes`)."""
    from .._stats import normalization as _norm

    if not is_dask(counts):
        return _norm.calc_norm_factors(counts, lib_size=lib, method=method)[0]
    if method == "none":
        return np.ones(counts.shape[0])
    blocks_fn = getattr(_norm, "calc_norm_factors_blocks", None)
    if blocks_fn is None or detected is None:
        raise ValueError(
            f"norm={method!r} on a dask layer needs the chunk-by-chunk calcNormFactors of bk.pp.norm_factors, "
            "which this installation lacks; compute the factors in memory, or use norm='none'"
        )
    return blocks_fn(counts, lib_size=lib, detected=detected, method=method)[0]


def _voom_norm_factors(adata: AnnData, counts, lib, detected, norm: str, norm_factors_key):
    if norm_factors_key is None:
        return norm_factors(counts, lib, norm, detected), norm
    if norm != "none":
        raise ValueError(
            f"norm_factors_key={norm_factors_key!r} reads the factors from obs; pass norm='none' with it "
            f"(norm={norm!r} would compute them here)"
        )
    if not isinstance(norm_factors_key, str) or norm_factors_key not in adata.obs.columns:
        raise KeyError(
            f"norm_factors_key {norm_factors_key!r} is not a column of adata.obs; columns are: {list(adata.obs.columns)}"
        )
    nf = pd.to_numeric(adata.obs[norm_factors_key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(nf)) or np.any(nf <= 0):
        raise ValueError(f"adata.obs[{norm_factors_key!r}] must hold finite positive normalisation factors")
    return nf, f"obs[{norm_factors_key!r}]"


def _voom_rounds(counts, X, codes, correlation, sample_weights, **kw):
    """voom (or voomWithQualityWeights) as the limma user's guide runs it with blocks: once
    without the block, the consensus correlation, again with block and correlation in voom's linear
    model, the correlation again. Returns the last voom, its sample weights (or None), the
    estimated correlations and the correlation for the final fit."""

    lazy = is_dask(counts)
    dupcor = _lin.duplicate_correlation_blocks if lazy else _lin.duplicate_correlation

    def one(block, cor):
        if sample_weights:
            q = _lin.voom_with_quality_weights(counts, X, block=block, correlation=cor, **kw)
            return q.voom, q.sample_weights
        return (_lin.voom_blocks if lazy else _lin.voom)(counts, X, block=block, correlation=cor, **kw), None

    if codes is None:
        v, aw = one(None, None)
        return v, aw, [], None
    if correlation is not None:
        v, aw = one(codes, correlation)
        return v, aw, [], correlation
    cors = []
    v, aw = one(None, None)
    cors.append(dupcor(v.E, X, codes, weights=v.weights).consensus_correlation)
    v, aw = one(codes, cors[0])
    cors.append(dupcor(v.E, X, codes, weights=v.weights).consensus_correlation)
    return v, aw, cors, cors[1]


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------


@doc_params(
    adata=doc_adata,
    design=_doc_design,
    contrast=_doc_contrast,
    ftest=_doc_ftest,
    key_added=_doc_key,
    lfc=_doc_lfc,
    robust=_doc_robust,
    legacy=_doc_legacy,
    block=_doc_block,
    table=_doc_table,
    copy=doc_copy,
    split=DOC_SPLIT,
    split_returns=DOC_SPLIT_RETURNS,
)
def limma(
    adata: AnnData,
    *,
    design,
    contrast=None,
    ftest=None,
    layer: str | None = None,
    weights=None,
    sample_weights: bool = False,
    block: str | None = None,
    correlation: float | None = None,
    trend: bool = False,
    robust: bool = False,
    lfc: float = 0,
    legacy: bool | None = None,
    split_by: str | None = None,
    filter_groups: bool | dict = True,
    key_added: str = "limma",
    copy: bool = False,
) -> AnnData | None:
    """Differential expression with limma: a linear model per gene and moderated t tests.

    limma 3.68's ``lmFit`` → ``contrasts.fit`` → ``eBayes`` (or ``treat``) → ``topTable`` on
    log-expression values (log-CPM, microarray intensities, proteomics...). Missing values (NaN)
    are allowed: each gene is fitted on its observed samples, as limma does. For RNA-seq counts
    use :func:`bulkpy.tl.voom`, or limma-trend (``trend=True`` on log-CPM with a prior count).

    Repeated measures (several samples per patient, donor or cell line) are modelled as limma does
    with ``block=``: ``duplicateCorrelation`` → ``lmFit(block, correlation)`` → ``eBayes``. Sample
    quality weights (limma's ``arrayWeights``) come from ``sample_weights=True`` or from
    :func:`bulkpy.pp.array_weights` passed as ``weights="array_weights"``.

    A dask-backed layer (and weights layer, e.g. voom's lazy ``voom_weights``) is fitted block by
    block of genes and never gathered: on dask input two passes over the matrix (the one-pass check
    of the values, shared with other functions reading the same array, then the fit; a dask weights
    layer adds its own check), the per-gene results computed within the call; ``block=`` without
    ``correlation=`` adds one pass (``duplicateCorrelation``: each gene's correlation, then the
    consensus). ``sample_weights=True`` is refused there (``arrayWeights`` iterates over all
    genes at once; load the layer into memory for it).

    Parameters
    ----------
    {adata}
    {design}
    {contrast}
    {ftest}
    layer
        Layer of log-expression values; ``None`` uses ``adata.X``.
    weights
        Optional observation weights: a layer name (samples × genes), an ``obs`` column name (one
        weight per sample, e.g. from :func:`bulkpy.pp.array_weights`) or an array, samples × genes
        or one weight per sample (limma's array weights). Must be >= 0; 0 leaves the observation
        out.
    sample_weights
        Estimate sample quality weights with limma's ``arrayWeights(E, design, weights)``
        (``method="auto"``: REML for complete data without ``weights``, else gene by gene) and fit
        with them (times ``weights`` when given).
    {block}
    trend
        Let the prior variance depend on the average expression (limma-trend: a natural-spline
        trend of the log variances on ``AveExpr``).
    {robust}
    {lfc}
    {legacy}
    {split}
    {key_added}
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    {table}
    - ``obs[f"{{key_added}}_sample_weights"]``: with ``sample_weights=True``, the weights of
      ``arrayWeights``.

    {split_returns}

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 100].copy()
    >>> lib = adata.X.sum(axis=1, keepdims=True)
    >>> adata.layers["log_cpm"] = np.log2((adata.X + 0.5) / (lib + 1) * 1e6)
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_cpm", trend=True)
    >>> df = bk.get.de_df(adata, "limma")
    >>> list(df.columns)
    ['log2FoldChange', 'lfcSE', 'stat', 'pvalue', 'padj', 'AveExpr', 'B']
    >>> int((df["padj"] < 0.05).sum()) > 100
    True

    A moderated F-test of every coefficient but the intercept (limma's ``topTable(fit, coef = 2:3)``)

    >>> bk.tl.limma(adata, design="~ type + condition", ftest="all", layer="log_cpm", trend=True, key_added="anova")
    >>> f = bk.get.de_df(adata, "anova")  # the F-test "F_all"
    >>> list(f.columns)
    ['log2FoldChange_type[T.single_read]', 'log2FoldChange_condition[T.untreated]', 'AveExpr', 'stat', 'pvalue', 'padj']
    >>> adata.uns["anova"]["params"]["ftests"]["F_all"]["df1"]
    2

    Repeated measures: airway's four cell lines, each treated and untreated, as blocks

    >>> airway = bk.datasets.airway()
    >>> airway = airway[:, airway.X.sum(axis=0) >= 200].copy()
    >>> lib = airway.X.sum(axis=1, keepdims=True)
    >>> airway.layers["log_cpm"] = np.log2((airway.X + 0.5) / (lib + 1) * 1e6)
    >>> bk.tl.limma(airway, design="~ dex", contrast=["dex", "trt", "untrt"], layer="log_cpm", block="cell",
    ...             sample_weights=True)
    >>> 0 < airway.uns["limma"]["params"]["correlation"] < 1
    True
    >>> airway.obs["limma_sample_weights"].shape
    (8,)
    """
    if split_by is not None:
        return run_grouped(
            limma, adata, split_by=split_by, filter_groups=filter_groups, filter_layer="counts",
            kwargs=split_arguments(locals()), key_added=key_added, copy=copy,
        )  # fmt: skip
    check_unsplit(filter_groups)
    check_adata(adata)
    check_key(key_added, "key_added")
    sample_weights = check_bool(sample_weights, "sample_weights")
    trend = check_bool(trend, "trend")
    robust = check_bool(robust, "robust")
    lfc = _check_lfc(lfc)
    legacy = _check_legacy(legacy)
    E = _expression(adata, layer)
    X, cols = _design(adata, design)
    names, C, specs, ftests = _tests(adata, design, X, cols, contrast, ftest, lfc)
    W, wdesc = _weights(adata, weights, E.shape)
    correlation = _check_correlation(correlation, block)
    codes, n_blocks = _block(adata, block, X, cols)
    lazy = is_dask(E) or is_dask(W)
    if lazy and sample_weights:
        _refuse_on_dask("sample_weights=True (limma's arrayWeights)")
    if trend and not lazy:
        _check_observed(adata, np.isnan(E).all(axis=0))
    aw = None
    if sample_weights:
        aw = _lin.array_weights(E, X, weights=W)
        W = aw if W is None else (aw * W if W.ndim == 1 else aw[:, None] * W)
    estimated = codes is not None and correlation is None
    if estimated:
        dupcor = _lin.duplicate_correlation_blocks if lazy else _lin.duplicate_correlation
        correlation = dupcor(E, X, codes, weights=W).consensus_correlation
    fit = _lm_fit(E, X, weights=W, block=codes, correlation=correlation, layer=layer)
    if trend and lazy:
        _check_observed(adata, np.isnan(fit.amean))
    fit, cfit, eb = _moderate(fit, C, ftests, trend=trend, robust=robust, lfc=lfc, legacy=legacy)

    adata = start(adata, copy)
    method = "limma-trend" if trend else "limma"
    params = {
        "method": method,
        "test": "treat" if lfc > 0 else "eBayes",
        "design": describe_design(design),
        "design_columns": cols,
        "layer": layer,
        "weights": wdesc,
        "trend": trend,
        "robust": robust,
        "lfc": lfc,
        "n_samples": int(E.shape[0]),
        "n_genes": int(E.shape[1]),
    }
    params.update(_block_params(block, n_blocks, correlation, estimated))
    if aw is not None:
        method = "genebygene" if weights is not None or np.isnan(E).any() else "reml"  # never on dask
        params.update(sample_weights=aw, sample_weights_method=method)
        adata.obs[f"{key_added}_sample_weights"] = aw
    _write(adata, key_added, fit, cfit, eb, names, C, specs, params, legacy=legacy, ftests=ftests)
    return finish(adata, copy)


@doc_params(
    adata=doc_adata,
    design=_doc_design,
    contrast=_doc_contrast,
    ftest=_doc_ftest,
    key_added=_doc_key,
    lfc=_doc_lfc,
    robust=_doc_robust,
    legacy=_doc_legacy,
    block=_doc_block,
    table=_doc_table,
    copy=doc_copy,
    split=DOC_SPLIT,
    split_returns=DOC_SPLIT_RETURNS,
)
def voom(
    adata: AnnData,
    *,
    design,
    contrast=None,
    ftest=None,
    layer: str | None = "counts",
    norm: str = "TMM",
    norm_factors_key: str | None = None,
    offset: str | None = None,
    block: str | None = None,
    correlation: float | None = None,
    sample_weights: bool = False,
    adaptive_span: bool = True,
    span: float = 0.5,
    robust: bool = False,
    lfc: float = 0,
    legacy: bool | None = None,
    split_by: str | None = None,
    filter_groups: bool | dict = True,
    key_added: str = "voom",
    copy: bool = False,
) -> AnnData | None:
    """Differential expression of counts with limma-voom.

    limma 3.68's ``voom`` on the counts with (by default) edgeR TMM normalisation, then the
    weighted ``lmFit`` → ``contrasts.fit`` → ``eBayes`` of :func:`bulkpy.tl.limma`. Library sizes
    are the column sums of the counts of the genes in ``adata``, so filter genes first (e.g.
    :func:`bulkpy.pp.filter_by_expr` with ``subset=True``) to reproduce edgeR/limma's
    ``y[keep, , keep.lib.sizes=FALSE]``; ``log2((count + 0.5) / (lib_size * norm_factor + 1) * 1e6)``
    is the log-CPM, and the lowess trend (R's ``lowess``) of the square-root residual standard
    deviation against the mean log count gives each observation the weight
    ``trend(fitted log count) ** -4``. As in limma 3.68 the lowess span is chosen from the number of
    genes ``G`` (``adaptive.span = TRUE``: ``min(1, 0.3 + 0.7 * (50 / G) ** (1/3))``, limma's
    ``chooseLowessSpan``; 0.43 for 8,000 genes, 0.40 for 17,000); ``adaptive_span=False`` uses
    ``span``, whose default 0.5 gives the results of limma < 3.66 (e.g. limma 3.54).

    With ``block=`` (repeated measures) voom runs twice, as in the limma user's guide: voom →
    ``duplicateCorrelation`` → voom with the block and that correlation in its linear model →
    ``duplicateCorrelation`` again → ``lmFit(block, correlation)`` → ``eBayes``. With
    ``sample_weights=True`` each voom is limma's ``voomWithQualityWeights``: voom, sample quality
    weights (``arrayWeights``, gene by gene), voom again with them, the sample weights again, and
    the observation weights are voom's times the sample weights.

    A dask-backed counts layer runs block by block of genes, never gathered: on dask input four
    passes over the matrix (the one-pass check of the counts, shared with other functions reading
    it; the library sizes; voom's unweighted fit; the weighted fit), plus those of the
    normalisation factors (TMM: 2; none with ``norm="none"`` or ``norm_factors_key``), and with
    ``block=`` three more (``duplicateCorrelation``, voom again, ``duplicateCorrelation``; none
    with ``correlation=`` given). The per-gene results are computed within the call;
    ``layers[f"{{key_added}}_E"]`` and ``_weights`` are written as lazy dask arrays, recomputed
    block by block from the counts when used. ``sample_weights=True`` is refused there
    (``voomWithQualityWeights`` iterates over all genes between voom rounds).

    Parameters
    ----------
    {adata}
    {design}
    {contrast}
    {ftest}
    layer
        Layer of raw counts (finite, >= 0); ``None`` uses ``adata.X``.
    norm
        Normalisation factors computed here with edgeR's ``calcNormFactors``: ``"TMM"``,
        ``"TMMwsp"``, ``"RLE"``, ``"upperquartile"``, or ``"none"`` (factors of 1).
    norm_factors_key
        Read the normalisation factors from this obs column instead (e.g. ``"norm_factors"``
        from :func:`bulkpy.pp.norm_factors`); requires ``norm="none"``.
    offset
        Layer of per-observation offsets (samples × genes, natural log, e.g. edgeR's DGEList
        ``offset`` or log transcript lengths), limma 3.68's ``voom(offset=)``: centred per gene,
        they scale each sample's library size gene by gene, ``lib_size * exp(offset - gene mean)``.
        ``None``: one library size per sample.
    {block}
    sample_weights
        Down-weight poor-quality samples with limma's ``voomWithQualityWeights`` (sample weights
        estimated gene by gene from voom's output, ``arrayWeights(method = "genebygene")``).
    adaptive_span
        Choose the lowess span from the number of genes (limma's ``adaptive.span``, ``True``
        by default since limma 3.66, Bioconductor 3.22); ``False`` uses ``span``.
    span
        Fraction of the genes used by each local fit of the lowess trend, with
        ``adaptive_span=False`` (R's default 0.5, the span of limma < 3.66 such as 3.54).
    {robust}
    {lfc}
    {legacy}
    {split}
    {key_added}
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``layers[f"{{key_added}}_E"]``: voom's log-CPM;
    - ``layers[f"{{key_added}}_weights"]``: voom's precision weights;
    - ``obs[f"{{key_added}}_lib_size"]`` (effective library size = sum × factor) and
      ``obs[f"{{key_added}}_norm_factors"]``;
    - ``var[f"{{key_added}}_mean_log_count"]``, ``var[f"{{key_added}}_sqrt_sigma"]``: the points of the
      mean-variance plot (NaN for all-zero genes) and ``uns[key_added]["trend"]`` the lowess
      line (``x``, ``y``); the span used is ``uns[key_added]["params"]["span"]``;
    - ``obs[f"{{key_added}}_sample_weights"]``: with ``sample_weights=True``, the sample weights
      (already in ``layers[f"{{key_added}}_weights"]``);
    {table}
      With ``block`` and an estimated correlation, ``params["correlations"]`` holds the
      consensus correlation of both rounds (the first went into the second voom's linear model,
      ``params["correlation_voom"]``; the second into the final fit, ``params["correlation"]``).

    {split_returns}

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 100].copy()
    >>> bk.tl.voom(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    >>> sorted(k for k in adata.layers if k.startswith("voom"))
    ['voom_E', 'voom_weights']
    >>> int((bk.get.de_df(adata, "voom")["padj"] < 0.05).sum()) > 100
    True

    A t test and an F-test in one fit: do the four cell lines of airway differ at all?

    >>> airway = bk.datasets.airway()
    >>> airway = airway[:, airway.X.sum(axis=0) >= 200].copy()
    >>> bk.tl.voom(airway, design="~ cell + dex", contrast=["dex", "trt", "untrt"], ftest="cell", key_added="vf")
    >>> airway.uns["vf"]["contrasts"].tolist(), airway.uns["vf"]["ftests"].tolist()
    (['trt_vs_untrt'], ['F_cell'])
    >>> cells = bk.get.de_df(airway, "vf", contrast="F_cell")
    >>> airway.uns["vf"]["params"]["ftests"]["F_cell"]["df1"], int((cells["padj"] < 0.05).sum()) > 100
    (3, True)

    Repeated measures (the cell line of airway as block) and sample quality weights

    >>> airway = bk.datasets.airway()
    >>> airway = airway[:, airway.X.sum(axis=0) >= 200].copy()
    >>> bk.tl.voom(airway, design="~ dex", contrast=["dex", "trt", "untrt"], block="cell", sample_weights=True)
    >>> p = airway.uns["voom"]["params"]
    >>> p["block"], len(p["correlations"]), 0 < p["correlation"] < 1
    ('cell', 2, True)
    """
    if split_by is not None:
        return run_grouped(
            voom, adata, split_by=split_by, filter_groups=filter_groups, filter_layer=layer,
            kwargs=split_arguments(locals()), key_added=key_added, copy=copy,
        )  # fmt: skip
    check_unsplit(filter_groups)

    check_adata(adata)
    check_key(key_added, "key_added")
    robust = check_bool(robust, "robust")
    sample_weights = check_bool(sample_weights, "sample_weights")
    adaptive_span = check_bool(adaptive_span, "adaptive_span")
    lfc = _check_lfc(lfc)
    legacy = _check_legacy(legacy)
    if not isinstance(norm, str) or norm not in _NORM_METHODS:
        raise ValueError(f"norm={norm!r} is not supported; choose one of {list(_NORM_METHODS)}")
    if (
        isinstance(span, bool)
        or not isinstance(span, int | float | np.integer | np.floating)
        or not 0 < float(span) <= 1
    ):
        raise ValueError(f"span must be a number in (0, 1], got {span!r}")
    span = float(span)
    if adaptive_span and span != 0.5:
        raise ValueError(
            f"span={span!r} is only used with adaptive_span=False; with adaptive_span=True (limma's default since 3.66) "
            "the span is chosen from the number of genes"
        )
    counts = _voom_counts(adata, layer)
    X, cols = _design(adata, design)
    names, C, specs, ftests = _tests(adata, design, X, cols, contrast, ftest, lfc)
    correlation = _check_correlation(correlation, block)
    codes, n_blocks = _block(adata, block, X, cols)
    lazy = is_dask(counts)
    if lazy and sample_weights:
        _refuse_on_dask("sample_weights=True (limma's voomWithQualityWeights)")
    off = _voom_offset(adata, offset, counts)
    lib, detected = _library_sizes(counts)
    if np.any(lib <= 0):
        raise ValueError(
            f"samples with no counts: {adata.obs_names[lib <= 0].tolist()[:10]}; remove them first"
        )
    nf, norm_desc = _voom_norm_factors(adata, counts, lib, detected, norm, norm_factors_key)
    eff_lib = lib * nf
    kw = dict(lib_size=eff_lib, offset=off, span=span, adaptive_span=adaptive_span)
    vres, aw, cors, correlation = _voom_rounds(counts, X, codes, correlation, sample_weights, **kw)
    fit, cfit, eb = _fit_and_test(
        vres.E, X, C, names, weights=vres.weights, trend=False, robust=robust, lfc=lfc, legacy=legacy,
        block=codes, correlation=correlation, ftests=ftests,
    )

    adata = start(adata, copy)
    adata.layers[f"{key_added}_E"] = vres.E
    adata.layers[f"{key_added}_weights"] = vres.weights
    adata.obs[f"{key_added}_lib_size"] = eff_lib
    adata.obs[f"{key_added}_norm_factors"] = nf
    adata.var[f"{key_added}_mean_log_count"] = vres.sx
    adata.var[f"{key_added}_sqrt_sigma"] = vres.sy
    params = {
        "method": "voom",
        "test": "treat" if lfc > 0 else "eBayes",
        "design": describe_design(design),
        "design_columns": cols,
        "layer": layer,
        "norm": norm_desc,
        "offset": "None" if offset is None else f"layers[{offset!r}]",
        "adaptive_span": adaptive_span,
        "span": vres.span,
        "trend": False,
        "robust": robust,
        "lfc": lfc,
        "weights": f"layers['{key_added}_weights']",
        "n_samples": int(counts.shape[0]),
        "n_genes": int(counts.shape[1]),
    }
    if codes is not None:
        params.update(_block_params(block, n_blocks, correlation, bool(cors)))
        params["correlation_voom"] = float(cors[0]) if cors else float(correlation)
        if cors:
            params["correlations"] = np.asarray(cors, dtype=np.float64)
    if aw is not None:
        params.update(sample_weights=aw, sample_weights_method="genebygene")
        adata.obs[f"{key_added}_sample_weights"] = aw
    if not adaptive_span:
        params["note"] = (
            f"adaptive_span=False: voom's fixed lowess span {vres.span:g} (limma 3.68's voom(adaptive.span = FALSE); "
            "span 0.5 is the default of limma < 3.66, e.g. limma 3.54 / Bioconductor 3.16)"
        )
    _write(adata, key_added, fit, cfit, eb, names, C, specs, params, legacy=legacy, ftests=ftests)
    entry = dict(adata.uns[key_added])
    entry["trend"] = {
        "x": np.asarray(vres.trend_x, dtype=np.float64),
        "y": np.asarray(vres.trend_y, dtype=np.float64),
    }
    adata.uns[key_added] = entry
    return finish(adata, copy)


__all__ = ["limma", "voom"]
