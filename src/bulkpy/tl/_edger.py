"""edgeR: negative binomial GLMs with quasi-likelihood F tests, likelihood-ratio tests, ``glmTreat``
and the classic exact test (``bk.tl.edger``)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import describe_design
from .._docs import doc_adata, doc_copy, doc_params
from .._progress import check_progress, progress_bar
from .._slots import check_key, write_de
from .._stats import normalization as _norm
from .._stats import tximport as _tx
from .._stats.edger import blocked as _blocked
from .._stats.edger import exact as _exact
from .._stats.edger import glm as _edger
from .._stats.edger import ql as _ql
from .._stats.edger import treat as _treat
from .._tximport import quant_counts
from .._utils import finish, start
from .._validate import (
    check_adata,
    check_bool,
    check_choice,
    check_counts,
    dense,
    get_matrix,
    is_dask,
    layer_name,
    looks_logged,
)
from ._contrasts import DOC_CONTRAST, DOC_DESIGN, levels_of, parse_contrasts, parse_design
from ._grouped import DOC_SPLIT, DOC_SPLIT_RETURNS, check_unsplit, run_grouped, split_arguments
from ._limma import _library_sizes, norm_factors

logger = logging.getLogger(__name__)

_NORM_METHODS = ("TMM", "TMMwsp", "RLE", "upperquartile", "none")
_TESTS = ("QL", "LRT", "exact")


def _scalar_or_note(value, note: str):
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        return float(arr.ravel()[0])
    if np.all(arr == arr.ravel()[0]):
        return float(arr.ravel()[0])
    return note


def _counts(adata: AnnData, layer):
    """The checked counts: a dense float64 array, or a dask array as it is (checked in one pass)."""
    X = get_matrix(adata, layer)
    counts = X if is_dask(X) else dense(X)
    where = layer_name(layer)
    if counts.ndim != 2 or 0 in counts.shape:
        raise ValueError(f"the counts in {where} are empty (shape {counts.shape})")
    check_counts(counts, what=f"counts in {where}", integer=False)
    if looks_logged(counts):
        raise ValueError(
            f"the values in {where} look log-transformed (small and mostly fractional); edgeR needs counts: "
            "pass the layer holding raw (or estimated) counts"
        )
    return counts


def _check_libs(adata: AnnData, lib: np.ndarray) -> None:
    if np.any(lib <= 0):
        raise ValueError(
            f"samples with no counts: {adata.obs_names[lib <= 0].tolist()[:10]}; remove them first"
        )


def _table(r, index, **extra) -> pd.DataFrame:
    """One contrast's result table: the DE schema's columns, then the test's own."""
    cols = {"log2FoldChange": r.log2_fold_change, "stat": r.statistic, "pvalue": r.pvalue, "padj": r.padj}
    return pd.DataFrame({**cols, "logCPM": r.log_cpm, **extra}, index=index)


def _z_from_p(p, lfc):
    """``sign(logFC) * qnorm(p / 2, lower = FALSE)``: the normal score of a two-sided p-value, the
    ``stat`` of the tests that report none (``glmTreat``, ``exactTest``)."""
    from scipy import special

    return np.sign(lfc) * -special.ndtri(np.asarray(p, dtype=np.float64) / 2)


def _check_lfc(lfc) -> float:
    if isinstance(lfc, bool) or not isinstance(lfc, int | float | np.integer | np.floating):
        raise TypeError(f"lfc must be a number >= 0 (log2 fold change), got {lfc!r}")
    v = float(lfc)
    if not np.isfinite(v) or v < 0:
        raise ValueError(
            f"lfc must be a finite number >= 0 (log2 fold change; edgeR's glmTreat), got {lfc!r}"
        )
    return v


def _mask(adata: AnnData, mask_var) -> np.ndarray | None:
    """The genes to test: ``None`` (all), a boolean ``var`` column or a boolean array."""
    if mask_var is None:
        return None
    if isinstance(mask_var, str):
        if mask_var not in adata.var.columns:
            raise KeyError(
                f"mask_var={mask_var!r} is not a var column; var columns: {list(adata.var.columns)[:20]} "
                "(e.g. bk.pp.filter_by_expr writes var['filter_by_expr'])"
            )
        col = adata.var[mask_var]
        if not pd.api.types.is_bool_dtype(col.dtype) or col.isna().any():
            raise TypeError(
                f"var[{mask_var!r}] must be a boolean column without missing values, got {col.dtype}"
            )
        m = col.to_numpy(dtype=bool)
    else:
        m = np.asarray(mask_var)
        if m.dtype != bool or m.shape != (adata.n_vars,):
            raise TypeError(
                f"mask_var must be a var column name or a boolean array of length n_vars ({adata.n_vars}), "
                f"got {m.dtype} array of shape {m.shape}"
            )
    if not m.any():
        raise ValueError("mask_var selects no gene")
    return m


def _exact_pairs(adata: AnnData, design, cols, specs: dict) -> tuple[str, np.ndarray, list, dict]:
    """For ``test="exact"``: the factor of a one-factor formula design, each sample's group code,
    the levels and, per contrast, the ``(reference, test)`` level codes (``exactTest``'s pair)."""
    from .._design import _formula_variables, _parse_formula

    if not isinstance(design, str):
        raise ValueError(
            "test='exact' needs a one-factor formula design such as '~ condition' (edgeR's group)"
        )
    names = _formula_variables(_parse_formula(design))
    if len(names) != 1 or pd.api.types.is_numeric_dtype(adata.obs[names[0]].dtype):
        raise ValueError(
            f"test='exact' compares the groups of one factor (edgeR's DGEList group); design {design!r} has "
            f"{'the variables ' + str(names) if len(names) != 1 else 'a numeric variable'}. Use test='QL' (or "
            "'LRT') for designs with several factors or covariates"
        )
    fac = names[0]
    levels = levels_of(adata.obs[fac])
    if len(cols) != len(levels):
        raise ValueError(f"test='exact' needs the plain one-factor design '~ {fac}', got {design!r}")
    codes = np.array([levels.index(v) for v in adata.obs[fac]], dtype=np.intp)
    pairs = {}
    for name, spec in specs.items():
        if isinstance(spec, list) and len(spec) == 3 and spec[0] == fac:
            test, ref = spec[1], spec[2]
        elif isinstance(spec, str) and spec.startswith(f"{fac}[T.") and spec.endswith("]"):
            test, ref = spec[len(fac) + 3 : -1], str(levels[0])
        else:
            raise ValueError(
                f"test='exact' compares two groups: give the contrast as [{fac!r}, test_level, reference_level], "
                f"got {spec!r} for {name!r}"
            )
        lv = [str(v) for v in levels]
        pairs[name] = (lv.index(str(ref)), lv.index(str(test)))
    return fac, codes, levels, pairs


def _library(counts, mask, txi, norm: str):
    """Library sizes, normalisation factors, effective library sizes and the samples × genes
    offsets (``None`` without tximport lengths), all from every gene of ``adata``: the offsets of
    the tximport vignette (``calcNormFactors`` on the length-corrected counts, ``scaleOffset``),
    or the factors of the tested genes with the library sizes of all genes (R's ``y[keep, ]``)."""
    lib = counts.sum(axis=1)
    if txi.lengths is not None:
        off, nf = _tx.edger_length_offset(counts, txi.lengths, method=norm, return_norm_factors=True)
        return lib, nf, lib, off
    sub = counts if mask is None else counts[:, mask]
    nf, _ = _norm.calc_norm_factors(sub, lib_size=lib, method=norm)
    return lib, nf, lib * nf, None


def _ql_v4(yg, X, off, C, names, index, disp, robust, lfc, null, key):
    q4 = _ql.glm_ql_fit_v4(yg, X, off, disp.ave_log_cpm, robust=robust)
    tables = {}
    for j, name in enumerate(names):
        if lfc > 0:
            r = _treat.glm_treat(q4.glm, yg, X, off, C[:, j], disp.ave_log_cpm, lfc, ql=q4, null=null)
            tables[name] = _treat_table(r, index)
        else:
            r = _ql.glm_ql_ftest_v4(q4, yg, X, off, C[:, j], disp.ave_log_cpm)
            tables[name] = _table(r, index, F=r.statistic, df_total=r.df_total)
    return (tables, *_ql_v4_outputs(q4, yg.shape[0], key))


def _ql_v4_outputs(q4, g: int, key: str):
    """The ``var`` columns and parameters of edgeR 4's QL fit."""
    var_cols = {
        "ql_dispersion": q4.s2,
        "ql_dispersion_prior": np.broadcast_to(np.asarray(q4.var_prior, dtype=np.float64), (g,)),
        "ql_dispersion_post": q4.var_post,
        "df_residual": q4.df_residual_adj,
        "df_prior": np.broadcast_to(np.asarray(q4.df_prior, dtype=np.float64), (g,)),
        "deviance_adj": q4.deviance_adj,
    }
    params = {
        "ql_df_prior": _scalar_or_note(q4.df_prior, f"per gene: var['{key}_df_prior']"),
        "ql_dispersion_prior": _scalar_or_note(q4.var_prior, f"per gene: var['{key}_ql_dispersion_prior']"),
        "ql_nb_dispersion": float(q4.dispersion),
        "average_ql_dispersion": q4.average_ql_dispersion,
        "top_proportion": float(q4.top_proportion),
        "abundance_trend": True,
        "poisson_bound": False,
    }
    return var_cols, params


def _ql_legacy(yg, X, off, C, names, index, disp, robust, lfc, null, key):
    ql = _edger.glm_ql_fit(yg, X, disp.trended, off, disp.ave_log_cpm, robust=robust)
    tables = {}
    for j, name in enumerate(names):
        if lfc > 0:
            r = _treat.glm_treat(ql.glm, yg, X, off, C[:, j], disp.ave_log_cpm, lfc, ql=ql, null=null)
            tables[name] = _treat_table(r, index)
        else:
            r = _edger.glm_ql_ftest(ql, yg, X, off, C[:, j], disp.ave_log_cpm)
            tables[name] = _table(r, index, F=r.statistic, df_total=r.df_total)
    return (tables, *_ql_legacy_outputs(ql, yg.shape[0], key))


def _ql_legacy_outputs(ql, g: int, key: str):
    """The ``var`` columns and parameters of edgeR 3's QL fit."""
    var_cols = {
        "ql_dispersion": ql.s2,
        "ql_dispersion_prior": np.broadcast_to(np.asarray(ql.var_prior, dtype=np.float64), (g,)),
        "ql_dispersion_post": ql.var_post,
        "df_residual": ql.df_residual_zeros,
        "df_prior": np.broadcast_to(np.asarray(ql.df_prior, dtype=np.float64), (g,)),
    }
    params = {
        "ql_df_prior": _scalar_or_note(ql.df_prior, f"per gene: var['{key}_df_prior']"),
        "ql_dispersion_prior": _scalar_or_note(ql.var_prior, f"per gene: var['{key}_ql_dispersion_prior']"),
        "abundance_trend": True,
        "poisson_bound": True,
    }
    return var_cols, params


def _lrt(yg, X, off, C, names, index, disp, lfc, null):
    fit = _edger.glm_fit_genes(yg, X, disp.tagwise, off, prior_count=0.125)
    tables = {}
    for j, name in enumerate(names):
        if lfc > 0:
            r = _treat.glm_treat(fit, yg, X, off, C[:, j], disp.ave_log_cpm, lfc, null=null)
            tables[name] = _treat_table(r, index)
        else:
            r = _edger.glm_lrt(fit, yg, X, off, C[:, j], disp.ave_log_cpm)
            tables[name] = _table(r, index, LR=r.statistic)
    return tables, {}, {}


def _dask_route(
    counts, lib, detected, mask, X, C, names, index, norm, test, exact, robust, legacy, lfc, treat_null, key
):  # fmt: skip
    """edgeR on a dask matrix, block by block of genes (:mod:`bulkpy._stats.edger.blocked`):
    the normalisation factors, ``estimateDisp`` and the QL or LR tests; per-gene vectors only."""
    sub = counts if mask is None else counts[:, mask]
    nf = norm_factors(sub, lib, norm, detected if mask is None or detected is None else detected[mask])
    eff = lib * nf
    if exact is not None:
        return (nf, eff, *_dask_exact(counts, mask, eff, exact, index, robust))
    m = _blocked.Model(mask, X, np.log(eff))
    blocks = _blocked.gene_blocks_of(counts)
    disp, rowsum = _blocked.estimate_disp(
        counts, m, blocks, robust=robust, legacy_span=legacy, squeeze_legacy=True if legacy else None
    )
    if test == "QL" and legacy:
        ql, results = _blocked.ql_legacy(counts, m, blocks, disp, C, robust=robust, lfc=lfc, null=treat_null)
        var_cols, test_params = _ql_legacy_outputs(ql, disp.ave_log_cpm.size, key)
    elif test == "QL":
        q4, results = _blocked.ql_v4(counts, m, blocks, disp.ave_log_cpm, rowsum, C, robust=robust, lfc=lfc, null=treat_null)
        var_cols, test_params = _ql_v4_outputs(q4, disp.ave_log_cpm.size, key)
    else:
        results = _blocked.lrt(counts, m, blocks, disp, C, lfc=lfc, null=treat_null)
        var_cols, test_params = {}, {}
    tables = {}
    for name, r in zip(names, results, strict=True):
        if lfc > 0:
            tables[name] = _treat_table(r, index)
        elif test == "QL":
            tables[name] = _table(r, index, F=r.statistic, df_total=r.df_total)
        else:
            tables[name] = _table(r, index, LR=r.statistic)
    return nf, eff, disp, tables, var_cols, test_params


def _exact_outputs(results, exact, index):
    """The exact tests' tables (``stat``: the normal score of the p-value), no ``var`` columns,
    and the parameters of the classic mode."""
    fac, _, levels, pairs = exact
    tables = {}
    for name, r in zip(pairs, results, strict=True):
        cols_ = {"log2FoldChange": r.log2_fold_change, "stat": _z_from_p(r.pvalue, r.log2_fold_change)}
        tables[name] = pd.DataFrame({**cols_, "pvalue": r.pvalue, "padj": r.padj, "logCPM": r.log_cpm}, index=index)
    test_params = {
        "group": fac,
        "pairs": {n: [str(levels[a]), str(levels[b])] for n, (a, b) in pairs.items()},
        "rejection_region": "doubletail",
        "big_count": 900,
    }
    return tables, {}, test_params


def _dask_exact(counts, mask, eff, exact, index, robust):
    """The classic mode on a dask matrix: ``estimateDisp`` without a design and ``exactTest``."""
    _, codes, _, pairs = exact
    k = int(codes.max()) + 1
    X = (codes[:, None] == np.arange(k)[None, :]).astype(np.float64)
    X[:, 0] = 1.0  # model.matrix(~ group)
    m = _blocked.Model(mask, X, np.log(eff), eff)
    blocks = _blocked.gene_blocks_of(counts)
    disp = _blocked.estimate_disp_classic(counts, m, blocks, codes, robust=robust)
    return (disp, *_exact_outputs(_blocked.exact_tests(counts, m, blocks, codes, pairs.values(), disp), exact, index))


def _refuse_on_dask(txi) -> None:
    if txi.lengths is not None:
        raise ValueError(
            f"tximport lengths ({txi.lengths_source}: genes x samples offsets) are not available on a dask layer "
            "yet: they are not computed silently. Pass lengths=None, or load the layers first: "
            "adata.layers[key] = adata.layers[key].compute()"
        )


def _treat_table(r, index) -> pd.DataFrame:
    """glmTreat's table: the shrunk logFC, the signed normal score of the p-value as ``stat``,
    and the unshrunk logFC (``unshrunk.logFC``) that decided which side of the interval a gene is."""
    cols = {"log2FoldChange": r.log2_fold_change, "stat": _z_from_p(r.pvalue, r.log2_fold_change)}
    return pd.DataFrame(
        {
            **cols,
            "pvalue": r.pvalue,
            "padj": r.padj,
            "logCPM": r.log_cpm,
            "unshrunk_log2FoldChange": r.statistic,
        },
        index=index,
    )


def _expand(values, mask, n: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if mask is None:
        return v
    out = np.full(n, np.nan)
    out[mask] = v
    return out


def _mask_note(mask_var, mask) -> str | None:
    if mask is None:
        return None
    if isinstance(mask_var, str):
        return f"var['{mask_var}']"
    return f"boolean array ({int(mask.sum())} genes)"


def _validate(adata, key_added, test, norm, robust, legacy, lfc, treat_null, progress):
    check_adata(adata)
    check_key(key_added, "key_added")
    check_choice(test, _TESTS, "test")
    check_choice(norm, _NORM_METHODS, "norm")
    check_choice(treat_null, _treat.TREAT_NULLS, "treat_null")
    robust = check_bool(robust, "robust")
    legacy = check_bool(legacy, "legacy")
    lfc = _check_lfc(lfc)
    if test == "exact" and lfc > 0:
        raise ValueError(
            "edgeR's exact test has no fold-change threshold (glmTreat tests a GLM fit): use test='QL' or "
            "test='LRT' with lfc"
        )
    if test == "exact" and legacy:
        raise ValueError(
            "legacy=True switches edgeR 3's QL and dispersion trend; the exact test has no legacy mode"
        )
    return robust, legacy, lfc, check_progress(progress)


@doc_params(
    adata=doc_adata, design=DOC_DESIGN, contrast=DOC_CONTRAST, copy=doc_copy, split=DOC_SPLIT,
    split_returns=DOC_SPLIT_RETURNS,
)
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
    lfc: float = 0.0,
    treat_null: str = "interval",
    lengths: str | None = "auto",
    mask_var: str | np.ndarray | None = None,
    progress: bool | None = None,
    split_by: str | None = None,
    filter_groups: bool | dict = True,
    key_added: str = "edger",
    copy: bool = False,
) -> AnnData | None:
    """Differential expression of counts with edgeR: quasi-likelihood F tests, likelihood-ratio
    tests, tests against a fold-change threshold (``glmTreat``) or the classic exact test.

    edgeR 4.10's pipeline (Bioconductor 3.23): ``calcNormFactors`` → ``estimateDisp`` (common,
    trended and tagwise negative binomial dispersions; Cox-Reid adjusted profile likelihood on a
    grid, locfit trend in AveLogCPM with span ``chooseLowessSpan``, weighted likelihood empirical
    Bayes) → either

    - ``test="QL"``: ``glmQLFit`` (edgeR 4, ``legacy = FALSE``: one NB dispersion estimated from
      the most abundant genes, deviances and residual df adjusted for low counts, their ratio
      squeezed towards a trend in AveLogCPM by limma 3.68's ``fitFDistUnequalDF1``) →
      ``glmQLFTest``, the recommended test;
    - ``test="LRT"``: ``glmFit`` with the tagwise dispersions → ``glmLRT``; or
    - ``test="exact"``: edgeR's classic analysis of one factor: ``estimateDisp`` without a design
      (quantile-adjusted conditional likelihood on pseudo-counts) → ``exactTest`` (two-sided
      "doubletail" NB exact test of the pair, beta approximation above 900 counts per group).
      The design must be ``"~ factor"`` and each contrast ``[factor, test, reference]``.

    With ``lfc > 0`` the QL or LRT fit is tested with ``glmTreat(fit, lfc = lfc)`` instead:
    ``|log2FC| > lfc`` (interval null by default, as edgeR 4; ``treat_null="worst.case"`` is edgeR
    3's rule). ``legacy=True`` reproduces edgeR 3.40 (Bioconductor 3.16): ``estimateDisp``'s old
    trend span and prior df estimator, and ``glmQLFit(legacy = TRUE)`` (the trended dispersions,
    residual df reduced for fitted zeros, Poisson bound in ``glmQLFTest`` and ``glmTreat``).

    Log fold changes are ``glmFit``'s, shrunk by a prior count of 0.125 (``predFC``). Library
    sizes are the column sums of the genes in ``adata``, so filter first (e.g.
    :func:`bulkpy.pp.filter_by_expr` with ``subset=True``) to reproduce edgeR's
    ``y[keep, , keep.lib.sizes=FALSE]``; or keep all genes and pass the filter as ``mask_var``
    (R's ``y[keep, ]``: library sizes of all genes, only the masked genes modelled). Non-integer
    counts (e.g. estimated counts) are accepted, as edgeR accepts them.

    Counts from :func:`bulkpy.io.read_quant` (salmon, kallisto, RSEM with
    ``counts_from_abundance="no"``) are modelled as the tximport vignette's edgeR route does: a
    gene × sample offset from the average transcript lengths in ``layers["length"]``
    (``normMat`` = lengths over their geometric mean per gene; ``calcNormFactors`` on counts /
    ``normMat``; ``scaleOffset``), computed on **all** genes of ``adata`` before the ``mask_var``
    filter, as in R. Filter with ``mask_var`` (not ``subset=True``) on this route.

    A dask-backed counts layer runs block by block of genes, never gathered: every per-gene step is
    the in-memory code's and the global steps (common dispersion, trends, ``squeezeVar``) run on
    per-gene vectors between passes, so the numbers are the same; the per-gene results are computed
    within the call. ``dask.compute`` calls on dask input: the one-pass check of the counts (shared
    with other functions reading the same array), the library sizes, the normalisation factors
    (TMM: 2, ``norm="none"``: 0), then

    - ``test="QL"``: 3 for ``estimateDisp``, 1 reading the most abundant genes of ``glmQLFit``'s
      NB dispersion (``top.proportion`` of them, held by the scheduler), 1 per evaluation of R's
      ``optimize`` over them (about 15), 2 for the average quasi-dispersion, 1 for the fit and
      tests: about 25 in all; with ``legacy=True``: 3, and 2 for the fit and tests and the Poisson
      bound (9 in all);
    - ``test="LRT"``: 3 for ``estimateDisp``, 1 for the fit and tests (8 in all);
    - ``test="exact"``: 1 per evaluation of ``optimize`` for the first common dispersion (about
      15, the pseudo-counts recomputed in each task), 1 for the grid likelihoods, 2 for the trend
      and prior, 1 for the tests (about 27 in all).

    Tximport lengths are refused on dask input.

    Parameters
    ----------
    {adata}
    {design}
    {contrast}
    test
        ``"QL"`` (quasi-likelihood F test), ``"LRT"`` (likelihood-ratio test) or ``"exact"``
        (classic exact test; one-factor designs only).
    layer
        Layer of raw counts (finite, >= 0); ``None`` uses ``adata.X``.
    norm
        Normalisation factors computed here with edgeR's ``calcNormFactors``: ``"TMM"``,
        ``"TMMwsp"``, ``"RLE"``, ``"upperquartile"``, or ``"none"`` (factors of 1). With tximport
        lengths, the method applied to the length-corrected counts inside the offsets.
    robust
        Robust empirical Bayes (``robust=TRUE`` of ``estimateDisp`` and ``glmQLFit``): genes with
        outlying dispersions are shrunk less.
    legacy
        ``False`` (default): edgeR 4.10's behaviour, as R's ``glmQLFit(legacy = FALSE)`` after
        edgeR 4's ``estimateDisp``; ``True``: edgeR 3.40's (Bioconductor 3.16) throughout.
    lfc
        ``0`` (default): the tests above. A positive log2 fold change: ``glmTreat(fit, lfc =
        lfc)`` on the QL or LRT fit (``log2(1.5)`` ≈ 0.585 is common), testing ``|log2FC| > lfc``;
        the same argument as :func:`bulkpy.tl.limma`'s ``treat``.
    treat_null
        ``glmTreat``'s ``null``: ``"interval"`` (edgeR 4's default: the p-value averaged over
        true fold changes in ``[-lfc, lfc]``) or ``"worst.case"`` (edgeR 3: the fold change at
        the end of the interval).
    lengths
        Average transcript lengths for the tximport offsets: ``"auto"`` uses ``layers["length"]``
        of counts from :func:`bulkpy.io.read_quant` with ``counts_from_abundance="no"`` (other
        counts: none); ``None`` uses no lengths; a layer name uses those lengths (samples ×
        genes, positive). Counts made from abundance already account for length and are refused
        with a layer name.
    mask_var
        Genes to test: ``None`` (all), the name of a boolean ``var`` column (e.g.
        ``"filter_by_expr"`` from :func:`bulkpy.pp.filter_by_expr`) or a boolean array. Library
        sizes and tximport offsets come from all genes; the other genes get ``NaN`` results.
    progress
        Show a progress bar (tqdm; a widget in Jupyter) over the dispersion grid of
        ``estimateDisp``, the long step; ``None`` shows it for inputs of 10 million counts or more.
        Interrupting leaves ``adata`` unchanged. On dask input the passes are dask computations:
        follow them with dask's own progress (``dask.diagnostics.ProgressBar``, the distributed
        dashboard).
    {split}
    key_added
        Key of the result: tables in ``varm[f"{{key_added}}_{{contrast}}"]``, parameters in
        ``uns[key_added]``, per-gene model columns in ``var`` and library sizes in ``obs``
        prefixed ``f"{{key_added}}_"``.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``varm[f"{{key_added}}_{{contrast}}"]``: one table per contrast, indexed like ``var_names``
      (``NaN`` for genes outside ``mask_var``), with ``log2FoldChange`` (edgeR's logFC), ``stat``,
      ``pvalue``, ``padj`` (Benjamini–Hochberg FDR), ``logCPM`` (AveLogCPM) and the test's own
      columns: ``F`` and ``df_total`` (QL; ``stat`` is F), ``LR`` (LRT; ``stat`` is LR);
      with ``lfc > 0``, ``unshrunk_log2FoldChange`` (glmTreat's ``unshrunk.logFC``), and for
      glmTreat and the exact test, which report no statistic, ``stat`` is the signed normal score
      of the two-sided p-value, ``sign(logFC) * qnorm(p / 2, lower = FALSE)``;
    - ``var``: the negative binomial dispersions ``{{key_added}}_common_dispersion``,
      ``_trended_dispersion`` and ``_tagwise_dispersion``; with ``test="QL"`` also
      ``_ql_dispersion`` (deviance / residual df), ``_ql_dispersion_prior``,
      ``_ql_dispersion_post`` (squeezed), ``_df_residual`` and ``_df_prior``; the deviance and df
      are edgeR 4's adjusted ones (``deviance.adj``, also stored as ``_deviance_adj``, and
      ``df.residual.adj``), with ``legacy=True`` the raw deviance and the df reduced for fitted
      zeros;
    - ``obs``: ``{{key_added}}_lib_size`` (effective library size = sum × factor; with tximport
      offsets the ``DGEList``'s library size, the sum) and ``{{key_added}}_norm_factors`` (with
      tximport offsets: the factors of the length-corrected counts inside the offsets);
    - ``layers[f"{{key_added}}_offset"]``: with tximport lengths only, the log offsets (samples ×
      genes, edgeR's ``y$offset`` after ``scaleOffset``);
    - ``uns[key_added]``: ``contrasts`` (names) and ``params``: method, test, design and its
      columns, the contrast vectors, normalisation, robust, legacy, ``lfc`` and ``treat_null``,
      the common dispersion, the prior df of the tagwise and QL shrinkage, the trend span, layer,
      ``offset`` (what the model offsets are), ``lengths``, ``tximport``, ``mask_var``,
      ``n_genes_tested``, the R release and the edgeR and limma versions followed; with edgeR 4's
      QL also the NB dispersion of the fit (``ql_nb_dispersion``), ``average_ql_dispersion`` and
      ``top_proportion``; with the exact test ``group``, ``pairs`` and ``rejection_region``.

    {split_returns}

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

    Genes changing by more than 1.5-fold (``glmTreat``), and the classic exact test:

    >>> bk.tl.edger(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             lfc=0.585, key_added="treat")
    >>> int((bk.get.de_df(adata, "treat")["padj"] < 0.05).sum()) < int((df["padj"] < 0.05).sum())
    True
    >>> bk.tl.edger(adata, design="~ condition", contrast=["condition", "treated", "untreated"], test="exact",
    ...             key_added="exact")
    >>> adata.uns["exact"]["params"]["test"]
    'exactTest'

    Estimated counts with average transcript lengths (as :func:`bulkpy.io.read_quant` writes them;
    there ``lengths="auto"`` finds them): tximport's offsets on all genes, then the filter:

    >>> import numpy as np
    >>> adata = bk.datasets.pasilla()
    >>> adata.layers["length"] = np.random.default_rng(0).uniform(500, 3000, adata.shape)
    >>> bk.pp.filter_by_expr(adata, design="~ type + condition")
    >>> bk.tl.edger(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             lengths="length", mask_var="filter_by_expr")
    >>> adata.uns["edger"]["params"]["offset"]
    "scaleOffset(layers['length'])"
    """
    if split_by is not None:
        return run_grouped(
            edger, adata, split_by=split_by, filter_groups=filter_groups, filter_layer=layer,
            kwargs=split_arguments(locals()), key_added=key_added, copy=copy,
        )  # fmt: skip
    check_unsplit(filter_groups)
    robust, legacy, lfc, progress = _validate(
        adata, key_added, test, norm, robust, legacy, lfc, treat_null, progress
    )
    counts_all = _counts(adata, layer)
    lib_all, detected = _library_sizes(counts_all)
    _check_libs(adata, lib_all)
    X, cols = parse_design(adata, design, what_needs_df="the dispersions")
    if X.shape[1] < 2:
        raise ValueError(
            f"the design has a single column ({cols}); edgeR's tests compare it with a model without the "
            "tested effect, so the design needs at least two columns (e.g. '~ condition')"
        )
    names, C, specs = parse_contrasts(adata, design, cols, contrast)
    exact = _exact_pairs(adata, design, cols, specs) if test == "exact" else None
    txi = quant_counts(adata, layer, lengths, counts_all.shape, caller="bk.tl.edger", log=logger)
    if exact is not None and txi.lengths is not None:
        raise ValueError(
            "edgeR's exactTest uses library sizes only and can not take the gene × sample offsets of tximport "
            "lengths; use test='QL' (the tximport vignette's route) or lengths=None"
        )
    mask = _mask(adata, mask_var)
    if is_dask(counts_all):
        _refuse_on_dask(txi)
        index = adata.var_names if mask is None else adata.var_names[mask]
        lib, off_all = lib_all, None
        nf, eff, disp, tables, var_cols, test_params = _dask_route(
            counts_all, lib, detected, mask, X, C, names, index, norm, test, exact, robust, legacy, lfc, treat_null,
            key_added,
        )  # fmt: skip
        n_tested = int(disp.ave_log_cpm.size)
    else:
        lib, nf, eff, off_all, disp, tables, var_cols, test_params, n_tested = _in_memory(
            counts_all, mask, txi, norm, X, C, names, adata.var_names, exact, test, robust, legacy, lfc, treat_null,
            key_added, progress,
        )  # fmt: skip
    var_cols = {
        "common_dispersion": np.full(n_tested, disp.common),
        "trended_dispersion": disp.trended,
        "tagwise_dispersion": disp.tagwise,
        **var_cols,
    }
    if mask is not None:
        tables = {k: t.reindex(adata.var_names) for k, t in tables.items()}
    return _write(
        adata, copy, key_added, tables, var_cols, mask, eff, nf, off_all, test, lfc, design, cols, names, C, specs, layer,
        norm, robust, legacy, treat_null, txi, mask_var, n_tested, disp, counts_all.shape[0], test_params,
    )  # fmt: skip


def _in_memory(counts_all, mask, txi, norm, X, C, names, var_names, exact, test, robust, legacy, lfc, treat_null,
               key_added, progress):  # fmt: skip
    """edgeR on counts in memory: normalisation, ``estimateDisp`` (or the classic mode) and the tests."""
    lib, nf, eff, off_all = _library(counts_all, mask, txi, norm)
    counts = counts_all if mask is None else counts_all[:, mask]
    offset = None if off_all is None else (off_all if mask is None else off_all[:, mask])
    model_off = np.log(eff) if offset is None else np.ascontiguousarray(offset.T)
    index = var_names if mask is None else var_names[mask]
    yg = np.ascontiguousarray(counts.T)

    if exact is not None:
        fac, codes, levels, pairs = exact
        disp = _exact.estimate_disp_classic(counts, codes, eff, robust=robust)
        results = [_exact.exact_test(counts, codes, pair, eff, disp.tagwise, disp.ave_log_cpm) for pair in pairs.values()]
        tables, var_cols, test_params = _exact_outputs(results, exact, index)
    else:
        n_fits = (
            int((counts.sum(axis=0) >= 5).sum()) * 21
        )  # estimate_disp's defaults: min_row_sum 5, 21 points
        with progress_bar(n_fits, "edgeR: dispersion grid", progress, counts.size, unit="fit") as bar:
            disp = _edger.estimate_disp(
                counts, X, eff, robust=robust, legacy_span=legacy, squeeze_legacy=True if legacy else None,
                offset=offset, on_progress=bar.update,
            )  # fmt: skip
        if test == "QL" and legacy:
            tables, var_cols, test_params = _ql_legacy(
                yg, X, model_off, C, names, index, disp, robust, lfc, treat_null, key_added
            )
        elif test == "QL":
            tables, var_cols, test_params = _ql_v4(
                yg, X, model_off, C, names, index, disp, robust, lfc, treat_null, key_added
            )
        else:
            tables, var_cols, test_params = _lrt(yg, X, model_off, C, names, index, disp, lfc, treat_null)
    return lib, nf, eff, off_all, disp, tables, var_cols, test_params, int(yg.shape[0])


def _write(adata, copy, key_added, tables, var_cols, mask, eff, nf, off_all, test, lfc, design, cols, names, C, specs, layer,
           norm, robust, legacy, treat_null, txi, mask_var, n_tested, disp, n_samples, test_params):  # fmt: skip
    """Write the results (the AnnData is touched only here)."""
    adata = start(adata, copy)
    for k, v in var_cols.items():
        adata.var[f"{key_added}_{k}"] = _expand(v, mask, adata.n_vars)
    adata.obs[f"{key_added}_lib_size"] = eff
    adata.obs[f"{key_added}_norm_factors"] = nf
    if off_all is not None:
        adata.layers[f"{key_added}_offset"] = off_all
    method_test = {"QL": "glmQLFTest", "LRT": "glmLRT", "exact": "exactTest"}[test]
    params = {
        "method": f"edgeR-{test}",
        "test": "glmTreat" if lfc > 0 else method_test,
        "design": describe_design(design),
        "design_columns": cols,
        "contrasts": {name: C[:, j] for j, name in enumerate(names)},
        "contrast_specs": specs,
        "layer": layer,
        "norm": norm,
        "robust": robust,
        "legacy": legacy,
        "lfc": lfc,
        "treat_null": treat_null if lfc > 0 else None,
        "offset": "log(lib_size * norm_factors)" if off_all is None else f"scaleOffset({txi.lengths_source})",
        "lengths": txi.lengths_source,
        "tximport": txi.mode,
        "mask_var": _mask_note(mask_var, mask),
        "n_genes_tested": n_tested,
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
        "n_samples": int(n_samples),
        "n_genes": int(adata.n_vars),
        **test_params,
    }
    write_de(adata, key_added, tables, params)
    return finish(adata, copy)


__all__ = ["edger"]
