"""edgeR: negative binomial GLMs with quasi-likelihood F tests or likelihood-ratio tests (``bk.tl.edger``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import describe_design
from .._docs import doc_adata, doc_copy, doc_params
from .._progress import check_progress, progress_bar
from .._slots import check_key, write_de
from .._stats import normalization as _norm
from .._stats.edger import glm as _edger
from .._stats.edger import ql as _ql
from .._utils import finish, start
from .._validate import (
    check_adata,
    check_bool,
    check_choice,
    check_counts,
    dense,
    get_matrix,
    layer_name,
    looks_logged,
)
from ._contrasts import DOC_CONTRAST, DOC_DESIGN, parse_contrasts, parse_design

_NORM_METHODS = ("TMM", "TMMwsp", "RLE", "upperquartile", "none")
_TESTS = ("QL", "LRT")


def _scalar_or_note(value, note: str):
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        return float(arr.ravel()[0])
    if np.all(arr == arr.ravel()[0]):
        return float(arr.ravel()[0])
    return note


def _counts(adata: AnnData, layer) -> np.ndarray:
    counts = dense(get_matrix(adata, layer))
    where = layer_name(layer)
    if counts.ndim != 2 or 0 in counts.shape:
        raise ValueError(f"the counts in {where} are empty (shape {counts.shape})")
    check_counts(counts, what=f"counts in {where}", integer=False)
    if looks_logged(counts):
        raise ValueError(
            f"the values in {where} look log-transformed (small and mostly fractional); edgeR needs counts: "
            "pass the layer holding raw (or estimated) counts"
        )
    lib = counts.sum(axis=1)
    if np.any(lib <= 0):
        raise ValueError(
            f"samples with no counts: {adata.obs_names[lib <= 0].tolist()[:10]}; remove them first"
        )
    return counts


def _table(r, index, **extra) -> pd.DataFrame:
    """One contrast's result table: the DE schema's columns, then the test's own."""
    cols = {"log2FoldChange": r.log2_fold_change, "stat": r.statistic, "pvalue": r.pvalue, "padj": r.padj}
    return pd.DataFrame({**cols, "logCPM": r.log_cpm, **extra}, index=index)


@doc_params(adata=doc_adata, design=DOC_DESIGN, contrast=DOC_CONTRAST, copy=doc_copy)
def edger(
    adata: AnnData,
    *,
    design,
    contrast,
    test: str = "QL",
    layer: str | None = "counts",
    norm: str = "TMM",
    robust: bool = False,
    legacy: bool = False,
    progress: bool | None = None,
    key_added: str = "edger",
    copy: bool = False,
) -> AnnData | None:
    """Differential expression of counts with edgeR: quasi-likelihood F tests or likelihood-ratio tests.

    edgeR 4.10's pipeline (Bioconductor 3.23): ``calcNormFactors`` → ``estimateDisp`` (common,
    trended and tagwise negative binomial dispersions; Cox-Reid adjusted profile likelihood on a
    grid, locfit trend in AveLogCPM with span ``chooseLowessSpan``, weighted likelihood empirical
    Bayes) → either

    - ``test="QL"``: ``glmQLFit`` (edgeR 4, ``legacy = FALSE``: one NB dispersion estimated from
      the most abundant genes, deviances and residual df adjusted for low counts, their ratio
      squeezed towards a trend in AveLogCPM by limma 3.68's ``fitFDistUnequalDF1``) →
      ``glmQLFTest``, the recommended test; or
    - ``test="LRT"``: ``glmFit`` with the tagwise dispersions → ``glmLRT``.

    ``legacy=True`` reproduces edgeR 3.40 (Bioconductor 3.16): ``estimateDisp``'s old trend span
    and prior df estimator, and ``glmQLFit(legacy = TRUE)`` (the trended dispersions, residual df
    reduced for fitted zeros, Poisson bound in ``glmQLFTest``).

    Log fold changes are ``glmFit``'s, shrunk by a prior count of 0.125 (``predFC``). Library
    sizes are the column sums of the genes in ``adata``, so filter first (e.g.
    :func:`bulkpy.pp.filter_by_expr` with ``subset=True``) to reproduce edgeR's
    ``y[keep, , keep.lib.sizes=FALSE]``. Non-integer counts (e.g. estimated counts) are
    accepted, as edgeR accepts them.

    Parameters
    ----------
    {adata}
    {design}
    {contrast}
    test
        ``"QL"`` (quasi-likelihood F test) or ``"LRT"`` (likelihood-ratio test).
    layer
        Layer of raw counts (finite, >= 0); ``None`` uses ``adata.X``.
    norm
        Normalisation factors computed here with edgeR's ``calcNormFactors``: ``"TMM"``,
        ``"TMMwsp"``, ``"RLE"``, ``"upperquartile"``, or ``"none"`` (factors of 1).
    robust
        Robust empirical Bayes (``robust=TRUE`` of ``estimateDisp`` and ``glmQLFit``): genes with
        outlying dispersions are shrunk less.
    legacy
        ``False`` (default): edgeR 4.10's behaviour, as R's ``glmQLFit(legacy = FALSE)`` after
        edgeR 4's ``estimateDisp``; ``True``: edgeR 3.40's (Bioconductor 3.16) throughout.
    progress
        Show a progress bar (tqdm; a widget in Jupyter) over the dispersion grid of
        ``estimateDisp``, the long step; ``None`` shows it for inputs of 10 million counts or more.
        Interrupting leaves ``adata`` unchanged.
    key_added
        Key of the result: tables in ``varm[f"{{key_added}}_{{contrast}}"]``, parameters in
        ``uns[key_added]``, per-gene model columns in ``var`` and library sizes in ``obs``
        prefixed ``f"{{key_added}}_"``.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``varm[f"{{key_added}}_{{contrast}}"]``: one table per contrast, indexed like ``var_names``,
      with ``log2FoldChange`` (edgeR's logFC), ``stat`` (the F or LR statistic), ``pvalue``,
      ``padj`` (Benjamini–Hochberg FDR), ``logCPM`` (AveLogCPM) and ``F`` with ``df_total``
      (QL) or ``LR`` (LRT);
    - ``var``: the negative binomial dispersions ``{{key_added}}_common_dispersion``,
      ``_trended_dispersion`` and ``_tagwise_dispersion``; with ``test="QL"`` also
      ``_ql_dispersion`` (deviance / residual df), ``_ql_dispersion_prior``,
      ``_ql_dispersion_post`` (squeezed), ``_df_residual`` and ``_df_prior``; the deviance and df
      are edgeR 4's adjusted ones (``deviance.adj``, also stored as ``_deviance_adj``, and
      ``df.residual.adj``), with ``legacy=True`` the raw deviance and the df reduced for fitted
      zeros;
    - ``obs``: ``{{key_added}}_lib_size`` (effective library size = sum × factor) and
      ``{{key_added}}_norm_factors``;
    - ``uns[key_added]``: ``contrasts`` (names) and ``params``: method, test, design and its
      columns, the contrast vectors, normalisation, robust, legacy, the common dispersion, the
      prior df of the tagwise and QL shrinkage, the trend span, layer, the R release and the
      edgeR and limma versions followed; with edgeR 4's QL also the NB dispersion of the fit
      (``ql_nb_dispersion``), ``average_ql_dispersion`` and ``top_proportion``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.filter_by_expr(adata, design="~ type + condition", subset=True)
    >>> bk.tl.edger(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    >>> df = bk.get.de_df(adata, "edger")
    >>> list(df.columns)
    ['log2FoldChange', 'stat', 'pvalue', 'padj', 'logCPM', 'F', 'df_total']
    >>> int((df["padj"] < 0.05).sum()) > 500
    True
    """
    check_adata(adata)
    check_key(key_added, "key_added")
    check_choice(test, _TESTS, "test")
    check_choice(norm, _NORM_METHODS, "norm")
    robust = check_bool(robust, "robust")
    legacy = check_bool(legacy, "legacy")
    progress = check_progress(progress)
    counts = _counts(adata, layer)
    X, cols = parse_design(adata, design, what_needs_df="the dispersions")
    if X.shape[1] < 2:
        raise ValueError(
            f"the design has a single column ({cols}); edgeR's tests compare it with a model without the "
            "tested effect, so the design needs at least two columns (e.g. '~ condition')"
        )
    names, C, specs = parse_contrasts(adata, design, cols, contrast)

    lib = counts.sum(axis=1)
    nf, _ = _norm.calc_norm_factors(counts, lib_size=lib, method=norm)
    eff = lib * nf
    log_lib = np.log(eff)
    n_fits = int((counts.sum(axis=0) >= 5).sum()) * 21  # estimate_disp's defaults: min_row_sum 5, 21 points
    with progress_bar(n_fits, "edgeR: dispersion grid", progress, counts.size, unit="fit") as bar:
        disp = _edger.estimate_disp(
            counts,
            X,
            eff,
            robust=robust,
            legacy_span=legacy,
            squeeze_legacy=True if legacy else None,
            on_progress=bar.update,
        )
    yg = np.ascontiguousarray(counts.T)
    g = counts.shape[1]
    var_cols = {
        "common_dispersion": np.full(g, disp.common),
        "trended_dispersion": disp.trended,
        "tagwise_dispersion": disp.tagwise,
    }
    tables: dict[str, pd.DataFrame] = {}
    if test == "QL" and legacy:
        ql = _edger.glm_ql_fit(yg, X, disp.trended, log_lib, disp.ave_log_cpm, robust=robust)
        for j, name in enumerate(names):
            r = _edger.glm_ql_ftest(ql, yg, X, log_lib, C[:, j], disp.ave_log_cpm)
            tables[name] = _table(r, adata.var_names, F=r.statistic, df_total=r.df_total)
        var_cols.update(
            ql_dispersion=ql.s2,
            ql_dispersion_prior=np.broadcast_to(np.asarray(ql.var_prior, dtype=np.float64), (g,)),
            ql_dispersion_post=ql.var_post,
            df_residual=ql.df_residual_zeros,
            df_prior=np.broadcast_to(np.asarray(ql.df_prior, dtype=np.float64), (g,)),
        )
        ql_params = {
            "ql_df_prior": _scalar_or_note(ql.df_prior, f"per gene: var['{key_added}_df_prior']"),
            "ql_dispersion_prior": _scalar_or_note(
                ql.var_prior, f"per gene: var['{key_added}_ql_dispersion_prior']"
            ),
            "abundance_trend": True,
            "poisson_bound": True,
        }
    elif test == "QL":
        q4 = _ql.glm_ql_fit_v4(yg, X, log_lib, disp.ave_log_cpm, robust=robust)
        for j, name in enumerate(names):
            r = _ql.glm_ql_ftest_v4(q4, yg, X, log_lib, C[:, j], disp.ave_log_cpm)
            tables[name] = _table(r, adata.var_names, F=r.statistic, df_total=r.df_total)
        var_cols.update(
            ql_dispersion=q4.s2,
            ql_dispersion_prior=np.broadcast_to(np.asarray(q4.var_prior, dtype=np.float64), (g,)),
            ql_dispersion_post=q4.var_post,
            df_residual=q4.df_residual_adj,
            df_prior=np.broadcast_to(np.asarray(q4.df_prior, dtype=np.float64), (g,)),
            deviance_adj=q4.deviance_adj,
        )
        ql_params = {
            "ql_df_prior": _scalar_or_note(q4.df_prior, f"per gene: var['{key_added}_df_prior']"),
            "ql_dispersion_prior": _scalar_or_note(
                q4.var_prior, f"per gene: var['{key_added}_ql_dispersion_prior']"
            ),
            "ql_nb_dispersion": float(q4.dispersion),
            "average_ql_dispersion": q4.average_ql_dispersion,
            "top_proportion": float(q4.top_proportion),
            "abundance_trend": True,
            "poisson_bound": False,
        }
    else:
        fit = _edger.glm_fit_genes(yg, X, disp.tagwise, log_lib, prior_count=0.125)
        for j, name in enumerate(names):
            r = _edger.glm_lrt(fit, yg, X, log_lib, C[:, j], disp.ave_log_cpm)
            tables[name] = _table(r, adata.var_names, LR=r.statistic)
        ql_params = {}

    adata = start(adata, copy)
    for k, v in var_cols.items():
        adata.var[f"{key_added}_{k}"] = np.array(v, dtype=np.float64)
    adata.obs[f"{key_added}_lib_size"] = eff
    adata.obs[f"{key_added}_norm_factors"] = nf
    params = {
        "method": f"edgeR-{test}",
        "test": "glmQLFTest" if test == "QL" else "glmLRT",
        "design": describe_design(design),
        "design_columns": cols,
        "contrasts": {name: C[:, j] for j, name in enumerate(names)},
        "contrast_specs": specs,
        "layer": layer,
        "norm": norm,
        "robust": robust,
        "legacy": legacy,
        "common_dispersion": disp.common,
        "prior_df": _scalar_or_note(disp.prior_df, "per gene (robust)"),
        "trend_method": "locfit",
        "span": disp.span,
        "min_row_sum": 5,
        "prior_count": 0.125,
        "winsor_tail_p": [0.05, 0.1],
        "r_release": "Bioconductor 3.16" if legacy else "Bioconductor 3.23",
        "edger_version": _edger.EDGER_LEGACY_VERSION if legacy else _edger.EDGER_VERSION,
        "limma_version": "3.54.1" if legacy else "3.68.5",
        "n_samples": int(counts.shape[0]),
        "n_genes": int(g),
        **ql_params,
    }
    write_de(adata, key_added, tables, params)
    return finish(adata, copy)


__all__ = ["edger"]
