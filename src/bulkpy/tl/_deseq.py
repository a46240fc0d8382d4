"""DESeq2 differential expression (``bk.tl.deseq``): ``DESeq()`` + ``results()`` + ``lfcShrink``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import DESeqDesign, describe_design, deseq_design, expanded_model_matrix
from .._docs import doc_adata, doc_copy, doc_params
from .._progress import check_progress, progress_bar
from .._slots import check_key, write_de
from .._stats.deseq2 import apeglm as _ape
from .._stats.deseq2 import deseq as _de
from .._stats.deseq2.dispersion import FIT_TYPES
from .._stats.deseq2.size_factors import (
    deseq2_size_factors,
    deseq2_size_factors_iterate,
    estimate_norm_factors,
)
from .._tximport import QuantCounts, non_integer_error, quant_counts, round_counts
from .._utils import finish, start
from .._validate import check_adata, check_counts, dask_summary, dense, get_matrix, is_dask
from ._contrasts import DESeqContrast, check_deseq_shrinkable, deseq_contrasts, levels_of
from ._grouped import DOC_SPLIT, DOC_SPLIT_RETURNS, check_unsplit, run_grouped, split_arguments

logger = logging.getLogger(__name__)

#: DESeq2 version whose behaviour the engine follows (its default path gives the same numbers as 1.38).
DESEQ2_VERSION = "1.52.0"
#: the Bioconductor release the defaults follow
R_RELEASE = "Bioconductor 3.23"
NORM_FACTORS_LAYER = "norm_factors"
SIZE_FACTORS_OBS = "size_factors"
_SF_METHODS = ("ratio", "poscounts", "iterate")
_SHRINK = (None, "normal", "apeglm")
_RESERVED = ("coefficients", "coefficients_se", "cooks", "size_factors")


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_options(test, reduced, fit_type, alpha, lfc_threshold, alt_hypothesis, cooks_cutoff, min_rep, shrink):
    if test not in _de.TESTS:
        raise ValueError(f"test={test!r} is not supported; choose one of {list(_de.TESTS)}")
    if test == "LRT" and reduced is None:
        raise ValueError("test='LRT' needs a reduced design, e.g. reduced='~ 1' or reduced='~ batch'")
    if test == "Wald" and reduced is not None:
        raise ValueError("reduced= is only used with test='LRT'; drop it or pass test='LRT'")
    if fit_type not in FIT_TYPES:
        raise ValueError(f"fit_type={fit_type!r} is not supported; choose one of {list(FIT_TYPES)}")
    a = _number(alpha, "alpha")
    if not 0 < a < 1:
        raise ValueError(f"alpha must be between 0 and 1 (the FDR for independent filtering), got {alpha!r}")
    t = _number(lfc_threshold, "lfc_threshold")
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"lfc_threshold must be a finite number >= 0 (log2 fold change), got {lfc_threshold!r}")
    if alt_hypothesis not in _de.ALT_HYPOTHESES:
        raise ValueError(f"alt_hypothesis={alt_hypothesis!r} is not supported; choose one of {list(_de.ALT_HYPOTHESES)}")
    if alt_hypothesis == "lessAbs" and t == 0:
        raise ValueError("alt_hypothesis='lessAbs' tests |log2FC| < lfc_threshold; set lfc_threshold to a positive value")
    if test == "LRT" and not (t == 0 and alt_hypothesis == "greaterAbs"):
        raise ValueError("tests of log fold change above or below a threshold must be Wald tests (test='Wald')")
    if cooks_cutoff is not None and not isinstance(cooks_cutoff, bool | np.bool_):
        c = _number(cooks_cutoff, "cooks_cutoff")
        if not c > 0:
            raise ValueError(f"cooks_cutoff must be positive, True/None (DESeq2's default) or False (off), got {cooks_cutoff!r}")
    m = _number(min_rep, "min_replicates_for_replace")
    if not (m >= 3):
        raise ValueError(
            "min_replicates_for_replace must be >= 3 (at least 3 replicates are needed to call a count an "
            f"outlier) or float('inf') to never replace outliers, got {min_rep!r}"
        )
    if shrink not in _SHRINK:
        raise ValueError(
            f"shrink={shrink!r} is not supported; choose None, 'normal' or 'apeglm' (DESeq2's lfcShrink types; "
            "'ashr' is not available)"
        )
    return a, t, m


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------


def _normalisation(adata: AnnData, counts: np.ndarray, size_factors, lengths: np.ndarray | None = None, checks=None):
    """``(size factors or None, normalisation factors or None, description)`` as DESeq2 uses them.

    Factors already in ``adata`` (``layers["norm_factors"]``, ``obs["size_factors"]``) are used as
    ``DESeq()`` uses pre-existing ones; otherwise they are estimated here, from tximport's average
    transcript ``lengths`` when given (``estimateSizeFactors`` with the ``avgTxLength`` assay)."""
    n, g = counts.shape
    chk = _count_checks(counts) if checks is None else checks
    empty, any_positive_gene = chk.empty_samples, chk.positive_gene
    if empty.any():
        raise ValueError(
            f"samples {adata.obs_names[empty].tolist()[:10]} have no counts (all genes zero), so their size factor "
            "is 0; remove them first"
        )
    if size_factors is None:
        if NORM_FACTORS_LAYER in adata.layers:
            nf = adata.layers[NORM_FACTORS_LAYER]
            nf = nf if is_dask(nf) else dense(nf)
            if nf.shape != counts.shape or not _finite_positive(nf):
                raise ValueError(
                    f"layers[{NORM_FACTORS_LAYER!r}] must hold finite positive normalisation factors (samples × genes); "
                    "remove it, or pass size_factors= to use size factors instead"
                )
            return None, nf, f"layers[{NORM_FACTORS_LAYER!r}]"
        if SIZE_FACTORS_OBS in adata.obs.columns:
            return _obs_factors(adata, SIZE_FACTORS_OBS), None, f"obs[{SIZE_FACTORS_OBS!r}]"
        if any_positive_gene:
            return *_estimated(counts, "ratio", lengths), "ratio" + _LENGTHS_NOTE * (lengths is not None)
        logger.warning(
            "every gene has a zero in at least one sample, so the median-of-ratios size factors can not be "
            "computed; using DESeq2's 'poscounts' size factors instead"
        )
        return *_estimated(counts, "poscounts", lengths), "poscounts (every gene has a zero)" + _LENGTHS_NOTE * (
            lengths is not None
        )
    if isinstance(size_factors, str):
        if size_factors in _SF_METHODS:
            if size_factors == "iterate":  # DESeq2's iterative estimator ignores the lengths
                return deseq2_size_factors_iterate(counts), None, "iterate"
            if size_factors == "ratio" and not any_positive_gene:
                raise ValueError(
                    "every gene has a zero in at least one sample, so size_factors='ratio' can not be computed; use "
                    "size_factors='poscounts' (DESeq2's choice for sparse data)"
                )
            return *_estimated(counts, size_factors, lengths), size_factors + _LENGTHS_NOTE * (lengths is not None)
        if size_factors in adata.obs.columns:
            return _obs_factors(adata, size_factors), None, f"obs[{size_factors!r}]"
        raise KeyError(
            f"size_factors={size_factors!r} is neither a method ({list(_SF_METHODS)}) nor a column of adata.obs "
            f"(columns: {list(adata.obs.columns)})"
        )
    try:
        sf = np.asarray(size_factors, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(
            "size_factors must be None, a method name, an obs column name or one number per sample"
        ) from None
    if sf.shape != (n,) or not np.all(np.isfinite(sf)) or np.any(sf <= 0):
        raise ValueError(f"size_factors must be {n} finite positive numbers (one per sample), got shape {sf.shape}")
    return sf, None, "given"


_LENGTHS_NOTE = ", with tximport lengths (normalisation factors)"


@dataclass(frozen=True)
class _CountChecks:
    """What DESeq() checks of the counts before the model (one computation on dask input)."""

    all_equal: bool  # every gene has equal values in all samples
    any_gene: bool  # some gene is not zero in every sample
    empty_samples: np.ndarray  # samples with no counts
    positive_gene: bool  # some gene is positive in every sample (median-of-ratios factors exist)


def _count_checks(counts) -> _CountChecks:
    parts = (
        (counts == counts[:1, :]).all(), (counts.sum(axis=0) > 0).any(), counts.sum(axis=1) == 0,
        (counts > 0).all(axis=0).any(),
    )  # fmt: skip
    if is_dask(counts):
        import dask

        parts = dask.compute(*parts)
    return _CountChecks(bool(parts[0]), bool(parts[1]), np.asarray(parts[2]), bool(parts[3]))


def _finite_positive(nf) -> bool:
    ok = np.isfinite(nf).all() & (nf > 0).all()
    return bool(ok.compute() if is_dask(ok) else ok)


def _estimated(counts: np.ndarray, method: str, lengths: np.ndarray | None):
    """``(size factors, None)``, or with ``lengths`` ``(None, normalisation factors)``."""
    if lengths is None:
        return deseq2_size_factors(counts, method=method), None
    return None, estimate_norm_factors(counts, lengths, method=method)[1]


def _quant_counts(adata: AnnData, layer, lengths, X_raw) -> tuple[np.ndarray, QuantCounts, int | None]:
    """The counts DESeq2 models: tximport's estimated counts rounded (``DESeqDataSetFromTximport``),
    other counts as they are (integers required); the lengths to correct for; values rounded."""
    where = "X" if layer is None else f"layer {layer!r}"
    txi = quant_counts(adata, layer, lengths, X_raw.shape, caller="bk.tl.deseq", log=logger)
    check_counts(X_raw, what=f"counts in {where}", integer=False)
    if is_dask(X_raw):
        return _quant_counts_dask(adata, X_raw, txi, where)
    counts = dense(X_raw)
    if txi.from_tximport:
        counts, n_rounded = round_counts(counts, where=where, caller="bk.tl.deseq", log=logger)
        return counts, txi, n_rounded
    # an integer matrix holds integers: the check (a rounded copy of the matrix) is for floats
    err = None if np.issubdtype(X_raw.dtype, np.integer) else non_integer_error(adata, counts, where)
    if err is not None:
        raise err
    return counts, txi, None


def _quant_counts_dask(adata: AnnData, X_raw, txi: QuantCounts, where: str):
    """:func:`_quant_counts` for a dask matrix: rounding stays lazy (R's round, halves to even,
    chunk by chunk); the number of values changed comes from the one-pass check of the matrix."""
    if txi.lengths is not None and is_dask(txi.lengths):
        raise TypeError(
            "bk.tl.deseq on dask counts with tximport lengths needs the lengths (layers['length']) in memory; "
            "load them with adata.layers['length'] = adata.layers['length'].compute()"
        )
    counts = X_raw.astype(np.float64)
    n_nonint = dask_summary(X_raw)["nonint"]
    if txi.from_tximport:
        logger.info(
            "bk.tl.deseq: rounding the estimated counts in %s to integers, as DESeqDataSetFromTximport does "
            "(%d values changed)", where, n_nonint,
        )  # fmt: skip
        return counts.map_blocks(np.round, dtype=np.float64), txi, n_nonint
    if n_nonint:
        check_counts(X_raw, what=f"counts in {where}", integer=True)
    return counts, txi, None


def _obs_factors(adata: AnnData, key: str) -> np.ndarray:
    try:
        sf = adata.obs[key].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"obs[{key!r}] must be numeric size factors") from None
    if not np.all(np.isfinite(sf)) or np.any(sf <= 0):
        raise ValueError(
            f"obs[{key!r}] must hold finite positive size factors for every sample; recompute them with "
            "bk.pp.size_factors, or delete the column"
        )
    return sf


# --------------------------------------------------------------------------------------------
# shrinkage designs (lfcShrink type = "normal")
# --------------------------------------------------------------------------------------------


def _shrink(adata, counts, fit, d: DESeqDesign, contrasts: list[DESeqContrast], sf, nf, names_by_col):
    """Shrunken LFC/SE per contrast and the prior variances used."""
    nz = ~fit.all_zero
    B = fit.beta[nz] * _de.LOG2E
    bm, dfit = fit.base_mean[nz], fit.disp_fit[nz]
    out_lfc, out_se, priors = {}, {}, {}
    std_prior = _de.beta_prior_variance(B, bm, dfit)
    for j, nm in enumerate(d.names):
        if nm in ("Intercept", "(Intercept)"):
            std_prior[j] = 1e6
    coef_cs = [c for c in contrasts if c.kind == "coef"]
    if coef_cs:
        C = np.column_stack([c.vector for c in coef_cs])
        lfc, se = _de.shrink_normal(counts, fit, d.X, std_prior, C, size_factors=sf, norm_factors=nf)
        for i, c in enumerate(coef_cs):
            out_lfc[c.name], out_se[c.name] = lfc[:, i], se[:, i]
            priors[c.name] = {names_by_col[j]: float(v) for j, v in enumerate(std_prior)}
    fac_cs = [c for c in contrasts if c.kind == "factor"]
    if fac_cs:
        Xe, ecols, eterms = expanded_model_matrix(adata.obs, d)
        eprior = np.full(len(ecols), np.nan)
        for t in d.terms:
            if t["kind"] == "intercept":
                eprior[eterms[("1",)]] = 1e6
            elif t["kind"] == "factor":
                # averagePriorsOverLevels: one prior for every level of the factor
                eprior[eterms[(t["expr"],)]] = _de.factor_prior_variance(B, bm, dfit, t["cols"])
            else:  # a numeric covariate keeps its own prior variance (same column in both matrices)
                for j in t["cols"]:
                    if d.columns[j] in ecols:
                        eprior[ecols.index(d.columns[j])] = std_prior[j]
        if np.isnan(eprior).any() or np.any(eprior <= 0):  # pragma: no cover - every column is covered above
            raise ValueError(f"could not set the beta prior for the expanded columns {ecols}")
        Ce = np.zeros((len(ecols), len(fac_cs)))
        for i, c in enumerate(fac_cs):
            t = d.terms[c.factor[0]]
            cols = eterms[(t["expr"],)]
            for lvl, sign in ((c.factor[1], 1.0), (c.factor[2], -1.0)):
                Ce[cols[t["levels"].index(lvl)], i] = sign
        # DESeq2's results() on the expanded fit: contrastAllZeroNumeric over the expanded matrix
        # (fold change 0 where the samples of the contrast's columns are all zero)
        compared = [(Xe @ (Ce[:, i] != 0).astype(np.float64)) != 0 for i in range(len(fac_cs))]
        lfc, se = _de.shrink_normal(counts, fit, Xe, eprior, Ce, size_factors=sf, norm_factors=nf, contrast_samples=compared)
        for i, c in enumerate(fac_cs):
            out_lfc[c.name], out_se[c.name] = lfc[:, i], se[:, i]
            priors[c.name] = {ecols[j]: float(v) for j, v in enumerate(eprior)}
    return out_lfc, out_se, priors



# --------------------------------------------------------------------------------------------
# lfcShrink(type = "apeglm")
# --------------------------------------------------------------------------------------------


def _apeglm_coefficients(d: DESeqDesign, contrasts: list[DESeqContrast]) -> dict[str, int]:
    """The design column each contrast names, as ``lfcShrink(coef = )`` needs one: apeglm shrinks a
    coefficient, never a contrast of several, and never the first column (the intercept)."""
    out = {}
    for c in contrasts:
        v = np.asarray(c.vector, dtype=np.float64)
        nz = np.flatnonzero(v)
        if nz.size != 1 or v[nz[0]] != 1.0:
            what = "the numeric contrast" if c.kind == "numeric" else "the contrast"
            raise ValueError(
                f"shrink='apeglm' shrinks coefficients (DESeq2's lfcShrink(coef=)), and {what} {c.name!r} is not one: "
                f"use a coefficient name (one of {d.names[1:]}) or relevel the factor so that the comparison is a "
                "coefficient (its reference level first among the categories), or use shrink='normal'"
            )
        if nz[0] == 0:
            raise ValueError(
                f"shrink='apeglm' does not shrink the first design column {d.names[0]!r} (apeglm's intercept); choose "
                f"one of {d.names[1:]}"
            )
        out[c.name] = int(nz[0])
    return out


def _apeglm(counts, fit, d: DESeqDesign, coefs: dict[str, int], sf, nf, *, adapt: bool, lfc_threshold: float, progress):
    """``lfcShrink(dds, coef = j, type = "apeglm", apeAdapt = adapt, lfcThreshold = t)`` for every
    contrast: shrunken log2 fold change, posterior SD, s-value and what the prior was."""
    threshold = lfc_threshold * math.log(2.0) if lfc_threshold > 0 else None
    fits: dict[tuple[int, bool], _ape.ApeglmFit] = {}
    todo = sorted({j for j in coefs.values()}) if adapt else [min(coefs.values())]
    n_blk = _de.n_blocks(counts.shape[1], counts.shape[0])
    with progress_bar(n_blk * len(todo), "DESeq2: apeglm", progress, counts.size) as bar:
        for j in todo:
            mle = None
            if adapt:  # results(dds, name = coef): the MLE and its SE, 0 where the replaced counts are all zero
                now_zero = fit.replace & (fit.base_mean == 0)
                lfc = np.where(now_zero, 0.0, fit.beta[:, j] * _de.LOG2E)
                se = np.where(now_zero, 0.0, fit.beta_se[:, j] * _de.LOG2E)
                mle = math.log(2.0) * np.column_stack([lfc, se])
            fits[(j, adapt)] = _ape.apeglm_shrink(
                counts, d.X, j, fit.dispersion, size_factors=sf, norm_factors=nf, mle=mle, threshold=threshold,
                on_block=lambda _stage: bar.update(1),
            )
    lfc_s, se_s, sval, info = {}, {}, {}, {}
    for name, j in coefs.items():
        f = fits[(j, adapt)] if adapt else fits[(todo[0], False)]
        lfc_s[name] = _de.LOG2E * f.map[:, j]
        se_s[name] = _de.LOG2E * f.sd[:, j]
        # with a threshold: FSOS s-values; the noadapt fit shares one prior, its tail probabilities per coefficient
        if f.coef == j:
            sval[name] = f.svalue
        else:
            sval[name] = _ape.tail_svalue(f.map[:, j], f.sd[:, j], threshold)
        prior = {
            "coefficient": d.names[j],
            "prior_scale": f.prior_scale,
            "no_shrink": [d.names[k] for k in f.no_shrink],
            "no_shrink_scale": _ape.NO_SHRINK_SCALE,
            "n_not_converged": int(np.sum(f.conv == -1)),
            "n_refitted": int(f.refit.sum()),
        }
        if f.prior_var is not None:
            prior["prior_var"] = f.prior_var
        info[name] = prior
    return lfc_s, se_s, sval, info


# --------------------------------------------------------------------------------------------
# the steps of bk.tl.deseq
# --------------------------------------------------------------------------------------------


def _designs(adata: AnnData, design, reduced, test: str):
    """The full design (and the reduced one for the LRT), checked as DESeq() checks them."""
    d = deseq_design(adata.obs, design)
    n, p = d.X.shape
    if n <= p:
        raise ValueError(
            f"the design has {p} coefficients for {n} samples: there are no replicates to estimate the dispersion; "
            "use a design with fewer coefficients"
        )
    red = None
    if test == "LRT":
        red = deseq_design(adata.obs, reduced, what="reduced design")
        if red.X.shape[1] >= p:
            raise ValueError(
                f"the reduced design has {red.X.shape[1]} coefficients, the full one {p}: the reduced model must have "
                "fewer (less than one degree of freedom, perhaps full and reduced are swapped)"
            )
        if d.formula is not None and red.formula is not None:
            extra = sorted(set(red.variables) - set(d.variables))
            if extra:
                raise ValueError(f"the reduced design uses variables not in the full design: {extra}")
    return d, red


def _two_level_rule(adata: AnnData, d: DESeqDesign) -> bool:
    """Whether DESeq2's Cook's rule for a design of one two-level factor applies."""
    if d.formula is not None and len(d.variables) == 1:
        col = adata.obs[d.variables[0]]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            return len(levels_of(col)) == 2
    return False


def _run_deseq(counts, d: DESeqDesign, red, contrasts, sf, nf, *, test, fit_type, min_rep, progress):
    """``DESeq()`` on the engine, with a progress bar over its gene blocks."""
    C = np.column_stack([c.vector for c in contrasts])
    n_blk = _de.n_blocks(counts.shape[1], counts.shape[0])
    with progress_bar(2 * n_blk + 1, "DESeq2", progress, counts.size) as bar:

        def on_block(stage: str) -> None:
            bar.set_description(f"DESeq2: {stage}")
            bar.update(1)

        return _de.deseq(
            counts, d.X, size_factors=sf, norm_factors=nf, contrasts=C, contrast_samples=[c.samples for c in contrasts],
            test=test, reduced=None if red is None else red.X, fit_type=fit_type, min_replicates_for_replace=min_rep,
            on_block=on_block,
        )  # fmt: skip


def _result_tables(adata: AnnData, fit, contrasts, *, two_level, **results_kw):
    """``results()`` per contrast: the tables, and independent filtering's curve and threshold."""
    tables, filtering, filt_thr, filt_theta = {}, {}, {}, {}
    for j, c in enumerate(contrasts):
        r = _de.results(
            fit, j, lfc_threshold=results_kw["lfc_threshold"], alt_hypothesis=results_kw["alt_hypothesis"],
            cooks_cutoff=results_kw["cooks_cutoff"], two_level_rule=two_level,
            independent_filtering_=results_kw["independent_filtering"], alpha=results_kw["alpha"],
        )  # fmt: skip
        tables[c.name] = pd.DataFrame(
            {"baseMean": r.base_mean, "log2FoldChange": r.log2_fold_change, "lfcSE": r.lfc_se, "stat": r.stat,
             "pvalue": r.pvalue, "padj": r.padj},
            index=adata.var_names,
        )  # fmt: skip
        if r.filtering is not None:
            filt_thr[c.name] = r.filtering.filter_threshold
            filt_theta[c.name] = r.filtering.filter_theta
            filtering[c.name] = pd.DataFrame(
                {"theta": r.filtering.theta, "num_rej": r.filtering.num_rej, "lowess": r.filtering.lowess_fit}
            )
    return tables, filtering, filt_thr, filt_theta


def _write_fit(adata: AnnData, key: str, fit, d: DESeqDesign, sf, nf_lengths) -> None:
    """The per-gene columns of ``mcols(dds)``, coefficients, Cook's distances and factors."""
    var_cols = {
        "baseMean": fit.base_mean, "baseVar": fit.base_var, "allZero": fit.all_zero, "dispGeneEst": fit.disp_gene_est,
        "dispGeneIter": fit.disp_gene_iter, "dispFit": fit.disp_fit, "dispMAP": fit.disp_map,
        "dispersion": fit.dispersion, "dispIter": fit.disp_iter, "dispOutlier": fit.disp_outlier,
        "betaConv": fit.beta_conv, "betaIter": fit.beta_iter, "deviance": fit.deviance, "maxCooks": fit.max_cooks,
        "replace": fit.replace,
    }  # fmt: skip
    for k, v in var_cols.items():
        adata.var[f"{key}_{k}"] = np.asarray(v)
    adata.varm[f"{key}_coefficients"] = pd.DataFrame(fit.beta * _de.LOG2E, index=adata.var_names, columns=d.names)
    adata.varm[f"{key}_coefficients_se"] = pd.DataFrame(fit.beta_se * _de.LOG2E, index=adata.var_names, columns=d.names)
    adata.layers[f"{key}_cooks"] = fit.cooks
    if sf is not None:
        adata.obs[f"{key}_size_factors"] = sf
    elif f"{key}_size_factors" in adata.obs.columns:
        del adata.obs[f"{key}_size_factors"]
    if nf_lengths is not None:
        adata.layers[f"{key}_norm_factors"] = nf_lengths
    elif f"{key}_norm_factors" in adata.layers:
        del adata.layers[f"{key}_norm_factors"]


# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------

_doc_contrast = """\
contrast
    What to report (the model is fitted once; each contrast gets its own table):

    - ``[factor, test_level, reference_level]``: the log2 fold change of ``test_level`` over
      ``reference_level`` of an obs column of the design, whichever level is the design's
      reference (DESeq2 ``results(contrast = c(...))``; coefficient differences), named
      ``"{{factor}}_{{test}}_vs_{{reference}}"``;
    - a coefficient name: DESeq2's ``resultsNames`` (``"condition_treated_vs_untreated"``) or the
      design column (``"condition[T.treated]"``);
    - a numeric vector with one weight per coefficient, named ``"contrast"`` (``"contrast1"``, ...);
    - a list of these, or a dict ``{{name: any of the above}}`` to choose the names.

    ``None`` reports the last coefficient, as ``results(dds)``."""


@doc_params(adata=doc_adata, copy=doc_copy, contrast=_doc_contrast, split=DOC_SPLIT, split_returns=DOC_SPLIT_RETURNS)
def deseq(
    adata: AnnData,
    *,
    design,
    contrast=None,
    test: str = "Wald",
    reduced=None,
    layer: str | None = "counts",
    lengths: str | None = "auto",
    fit_type: str = "parametric",
    size_factors=None,
    alpha: float = 0.1,
    lfc_threshold: float = 0.0,
    alt_hypothesis: str = "greaterAbs",
    independent_filtering: bool = True,
    cooks_cutoff: float | bool | None = None,
    min_replicates_for_replace: float = 7,
    shrink: str | None = None,
    ape_adapt: bool = True,
    progress: bool | None = None,
    split_by: str | None = None,
    filter_groups: bool | dict = True,
    key_added: str = "deseq",
    copy: bool = False,
) -> AnnData | None:
    """Differential expression with DESeq2 (``DESeq()`` + ``results()``, optionally ``lfcShrink``).

    Follows DESeq2 1.38: size factors (median of ratios), gene-wise dispersions (Cox–Reid adjusted
    profile likelihood), the dispersion–mean trend and maximum a posteriori dispersions, a
    negative binomial GLM per gene, then the Wald test (standard errors from the sandwich,
    p-values from the normal) or the likelihood ratio test against ``reduced``. Cook's distances
    flag outlier counts: with seven or more samples in a cell of the design they are replaced by
    the trimmed mean and the gene refitted (``min_replicates_for_replace``), otherwise a gene with
    an outlier gets no p-value (``cooks_cutoff``). ``results()``'s independent filtering on the
    mean of normalised counts chooses the genes whose p-values are adjusted
    (Benjamini–Hochberg); the others get ``padj`` NaN. Genes with only zero counts get NaN
    everywhere but ``baseMean`` (0).

    Counts (and normalisation factors) may be dask arrays (docs/scaling.md): the model runs as one
    dask graph of gene blocks per pass on the active scheduler — a check of the counts, DESeq()'s
    input checks, the size factors, the gene-wise dispersions, the fit (and one pass per
    shrinkage) — with results bitwise equal to the in-memory call.

    Normalisation as DESeq2: ``layers["norm_factors"]`` (samples × genes, e.g. from
    :func:`bulkpy.pp.size_factors` with tximport lengths) when present, else
    ``obs["size_factors"]`` (from :func:`bulkpy.pp.size_factors`), else factors computed here:
    median-of-ratios size factors (DESeq2's ``poscounts`` when every gene has a zero, with a
    logged warning), or, with tximport lengths (``lengths``), gene × sample normalisation factors
    as ``estimateSizeFactors`` makes them from the ``avgTxLength`` assay (each gene's lengths over
    their geometric mean form ``normMatrix``; size factors of ``counts / normMatrix`` multiplied
    back; each gene's factors scaled to geometric mean 1). ``size_factors=`` overrides this.

    Salmon, kallisto and RSEM quantifications read with :func:`bulkpy.io.read_quant` need no
    separate step: as ``DESeqDataSetFromTximport``, their estimated counts are rounded to integers
    (logged, recorded in ``params``) and, with ``counts_from_abundance="no"``, ``layers["length"]``
    gives the normalisation factors; counts from abundance (``"scaledTPM"``,
    ``"lengthScaledTPM"``) already account for length and are only rounded. Other non-integer
    counts are an error.

    Parameters
    ----------
    {adata}
    design
        The full model: a formula on ``adata.obs`` such as ``"~ batch + condition"`` (formulaic,
        R's ``model.matrix`` conventions; the reference level of a factor is its first category,
        sorted for string columns), or a numeric matrix with one row per sample. Full column rank.
    {contrast}
    test
        ``"Wald"`` (``nbinomWaldTest``) or ``"LRT"`` (``nbinomLRT``; the fold changes then come
        from the full model and ``stat``/``pvalue`` from the likelihood ratio test, the same for
        every contrast).
    reduced
        The reduced model for ``test="LRT"`` (formula or matrix), nested in ``design``.
    layer
        Layer of raw integer counts (or tximport's estimated counts, see ``lengths``); ``None``
        uses ``adata.X``.
    lengths
        Average transcript lengths to correct for, as ``DESeqDataSetFromTximport`` does.
        ``"auto"``: when ``adata`` comes from :func:`bulkpy.io.read_quant` and ``layer`` holds the
        counts it wrote (``"counts"`` or ``None``), the counts are rounded and, if they are the
        estimated counts (``counts_from_abundance="no"``), ``layers["length"]`` is used; otherwise
        nothing is done. The name of a layer: round the counts and use those lengths (samples ×
        genes, positive), e.g. for tximport output assembled by hand; refused for counts from
        abundance (the vignette's advice: they would be corrected twice). ``None``: no length
        correction (read_quant counts are still rounded). The lengths are only used when the
        factors are estimated here (see above); factors already in ``adata`` or given by
        ``size_factors`` take precedence, as in DESeq2.
    fit_type
        Dispersion trend: ``"parametric"`` (``asymptDisp + extraPois / mean``; falls back to
        ``"local"`` with a warning when it can not be fitted, as DESeq2), ``"local"`` or ``"mean"``.
    size_factors
        ``None`` (see above), ``"ratio"``, ``"poscounts"`` or ``"iterate"`` (computed here), the
        name of an obs column, or one number per sample.
    alpha
        FDR level the independent filtering optimises the number of rejections for.
    lfc_threshold
        Test ``|log2FC|`` against this threshold instead of 0 (Wald only). With
        ``shrink="apeglm"`` the ``svalue`` column then holds DESeq2's FSOS s-values (false sign or
        ``|log2FC|`` below the threshold, ``lfcShrink(lfcThreshold = )``); with 0, the s-values of
        the false sign rate (``lfcShrink(svalue = TRUE)``).
    alt_hypothesis
        With ``lfc_threshold``: ``"greaterAbs"`` (``|LFC| > t``), ``"lessAbs"`` (``|LFC| < t``),
        ``"greater"`` (``LFC > t``) or ``"less"`` (``LFC < -t``).
    independent_filtering
        Filter on ``baseMean`` before adjusting (DESeq2's ``independentFiltering``); ``False``
        adjusts all p-values.
    cooks_cutoff
        ``None`` or ``True``: DESeq2's default ``qf(0.99, p, m - p)``; ``False``: no outlier
        filtering; a number: that cutoff on the maximum Cook's distance (over samples in cells of
        three or more). For a design of a single two-level factor DESeq2 keeps the p-value of an
        outlier gene when three or more samples have a larger count, and so does this function.
    min_replicates_for_replace
        Replace outliers in samples whose cell (identical design row) has at least this many
        samples, and refit those genes (DESeq2's ``minReplicatesForReplace``); ``float("inf")``
        never replaces.
    shrink
        ``"normal"``: add DESeq2's ``lfcShrink(type = "normal")`` fold changes (a zero-centred
        normal prior whose variance matches the upper quantile of the MLE fold changes; for a
        ``[factor, a, b]`` contrast the prior is on the expanded model matrix, as DESeq2) as the
        extra columns ``log2FoldChange_shrunk`` and ``lfcSE_shrunk``. ``log2FoldChange`` stays the
        maximum likelihood estimate that the tests use. Numeric contrasts and designs with
        interactions are not supported (as DESeq2).
        ``"apeglm"``: DESeq2's recommended ``lfcShrink(coef = ..., type = "apeglm")`` (apeglm 1.27,
        Zhu, Ibrahim & Love 2018): the posterior mode under a heavy-tailed Cauchy prior on the
        coefficient (wide normal priors, SD 15, on the others), whose scale is estimated from the
        maximum likelihood fold changes and their standard errors (see ``ape_adapt``), with the
        posterior SD from the Hessian at the mode; written as ``log2FoldChange_shrunk`` and
        ``lfcSE_shrunk`` with an ``svalue`` column (see ``lfc_threshold``). apeglm shrinks
        coefficients only: every contrast must be a coefficient other than the first — a name of
        ``resultsNames``, ``[factor, test, reference]`` with the design's reference level, or a
        unit vector —, otherwise relevel the factor (as DESeq2, which refuses ``contrast=``).
        Works after ``test="LRT"`` too (the full model's estimates set the prior).
    ape_adapt
        With ``shrink="apeglm"`` (apeglm's ``apeAdapt``): ``True`` (default) estimates the Cauchy
        scale from the data (``min(sqrt(A), 1)``, ``A`` the variance of a normal–normal model of
        the estimates, apeglm's ``priorVar``); ``False`` uses scale 1 and shrinks every coefficient
        but the intercept.
    progress
        Show a progress bar (tqdm; a widget in Jupyter) over the blocks of genes; ``None`` shows
        it for inputs of 10 million counts or more. Interrupting leaves ``adata`` unchanged.
    {split}
    key_added
        Key of the result: tables in ``varm[f"{{key_added}}_{{contrast}}"]``, per-gene values in
        ``var`` prefixed ``f"{{key_added}}_"``, parameters in ``uns[key_added]``.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``varm[f"{{key_added}}_{{contrast}}"]``: per contrast, ``baseMean``, ``log2FoldChange``,
      ``lfcSE``, ``stat`` (Wald statistic or LRT deviance difference), ``pvalue``, ``padj`` (plus
      ``log2FoldChange_shrunk`` and ``lfcSE_shrunk`` with ``shrink="normal"`` or ``"apeglm"``,
      and ``svalue`` with ``"apeglm"``), as DESeq2's ``results()`` and ``lfcShrink()`` (read
      them with :func:`bulkpy.get.de_df`);
    - ``varm[f"{{key_added}}_coefficients"]`` and ``varm[f"{{key_added}}_coefficients_se"]``: the
      log2 coefficients and their standard errors (DESeq2's ``coef(dds)``; columns named as
      ``resultsNames``);
    - ``var``: ``{{key_added}}_baseMean``, ``_baseVar``, ``_allZero``, ``_dispGeneEst``,
      ``_dispGeneIter``, ``_dispFit``, ``_dispMAP``, ``_dispersion``, ``_dispIter``,
      ``_dispOutlier``, ``_betaConv``, ``_betaIter``, ``_deviance``, ``_maxCooks``, ``_replace``
      (DESeq2's ``mcols(dds)``; after outlier replacement, as DESeq2 reports them);
    - ``layers[f"{{key_added}}_cooks"]``: Cook's distances, samples × genes (of the first fit,
      as ``assays(dds)[["cooks"]]``; a lazy dask array when the counts are one);
    - ``obs[f"{{key_added}}_size_factors"]``: the size factors used (not with normalisation
      factors);
    - ``layers[f"{{key_added}}_norm_factors"]``: the normalisation factors computed here from
      tximport lengths, samples × genes (DESeq2's ``normalizationFactors(dds)``);
    - ``uns[key_added]``: ``contrasts`` (names), ``params`` (design and its columns, coefficient
      names, contrast vectors, test, options, the normalisation used, the tximport handling
      (``tximport``: read_quant's ``counts_from_abundance`` or ``None``, ``lengths``: where the
      lengths came from or ``None``, ``counts_rounded``, ``n_counts_rounded``), the dispersion
      trend, its prior variance, filter thresholds per contrast, Cook's cutoff, outlier
      replacement, beta prior variances (``shrink="normal"``), versions; with ``shrink="apeglm"``:
      ``apeglm_version``, ``apeglm_method`` (``"nbinomCR"``), ``ape_adapt``, ``svalue`` (what the
      s-values are) and ``apeglm``, per contrast the ``coefficient`` shrunk, ``prior_scale``,
      ``prior_var`` (adaptive prior only), ``no_shrink`` (the coefficients under the normal
      prior), ``no_shrink_scale``, ``n_not_converged`` and ``n_refitted`` (genes whose L-BFGS
      fits failed or disagreed, refitted with BFGS as apeglm does))
      and ``filtering`` (per contrast: ``theta``, ``num_rej`` and its ``lowess`` fit).

    {split_returns}

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.deseq(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    >>> df = bk.get.de_df(adata, "deseq")
    >>> list(df.columns)
    ['baseMean', 'log2FoldChange', 'lfcSE', 'stat', 'pvalue', 'padj']
    >>> int((df["padj"] < 0.1).sum())
    1330
    >>> round(adata.uns["deseq"]["params"]["filter_threshold"]["condition_treated_vs_untreated"], 3)
    3.898

    apeglm shrinks a coefficient: make ``untreated`` the reference level so that treated vs
    untreated is one, and ask for s-values of ``|log2FC| > 1``:

    >>> adata.obs["condition"] = adata.obs["condition"].cat.reorder_categories(["untreated", "treated"])
    >>> bk.tl.deseq(
    ...     adata, design="~ type + condition", contrast="condition_treated_vs_untreated",
    ...     shrink="apeglm", lfc_threshold=1, key_added="ape",
    ... )
    >>> df = bk.get.de_df(adata, "ape")
    >>> list(df.columns[-3:])
    ['log2FoldChange_shrunk', 'lfcSE_shrunk', 'svalue']
    >>> round(adata.uns["ape"]["params"]["apeglm"]["condition_treated_vs_untreated"]["prior_scale"], 4)
    0.2088
    >>> int((df["svalue"] < 0.005).sum())
    82
    """
    if split_by is not None:
        return run_grouped(
            deseq, adata, split_by=split_by, filter_groups=filter_groups, filter_layer=layer,
            kwargs=split_arguments(locals()), key_added=key_added, copy=copy,
        )  # fmt: skip
    check_unsplit(filter_groups)
    check_adata(adata)
    check_key(key_added, "key_added")
    copy = _check_bool(copy, "copy")
    independent_filtering = _check_bool(independent_filtering, "independent_filtering")
    ape_adapt = _check_bool(ape_adapt, "ape_adapt")
    progress = check_progress(progress)
    alpha, lfc_threshold, min_rep = _check_options(
        test, reduced, fit_type, alpha, lfc_threshold, alt_hypothesis, cooks_cutoff, min_replicates_for_replace, shrink
    )
    if layer is not None and key_added == layer:
        raise ValueError(f"key_added={key_added!r} is the input layer; choose another name")
    X_raw = get_matrix(adata, layer)
    counts, txi, n_rounded = _quant_counts(adata, layer, lengths, X_raw)
    if adata.n_obs < 2 or adata.n_vars < 1:
        raise ValueError(f"need at least two samples and one gene, got {adata.n_obs} x {adata.n_vars}")
    d, red = _designs(adata, design, reduced, test)
    contrasts = deseq_contrasts(adata.obs, d, contrast, test, reserved=_RESERVED)
    if shrink == "normal":
        check_deseq_shrinkable(d, contrasts)
    ape_coefs = _apeglm_coefficients(d, contrasts) if shrink == "apeglm" else {}
    chk = _count_checks(counts)
    if chk.all_equal:
        raise ValueError("all genes have equal values for all samples; differential analysis is not possible")
    if not chk.any_gene:
        raise ValueError("every gene is zero in all samples")
    sf, nf, sf_source = _normalisation(adata, counts, size_factors, txi.lengths, chk)
    lengths_used = txi.lengths is not None and sf_source.endswith(_LENGTHS_NOTE)
    if txi.lengths is not None and not lengths_used:
        logger.info(
            "bk.tl.deseq: %s not used: the normalisation comes from %s (as DESeq() uses factors it already has)",
            txi.lengths_source,
            sf_source,
        )

    fit = _run_deseq(counts, d, red, contrasts, sf, nf, test=test, fit_type=fit_type, min_rep=min_rep, progress=progress)
    cutoff = None if cooks_cutoff is None else (bool(cooks_cutoff) if isinstance(cooks_cutoff, bool | np.bool_) else float(cooks_cutoff))
    tables, filtering, filt_thr, filt_theta = _result_tables(
        adata, fit, contrasts, two_level=_two_level_rule(adata, d), lfc_threshold=lfc_threshold,
        alt_hypothesis=alt_hypothesis, cooks_cutoff=cutoff, independent_filtering=independent_filtering, alpha=alpha,
    )  # fmt: skip
    priors = {}
    if shrink == "normal":
        lfc_s, se_s, priors = _shrink(adata, counts, fit, d, contrasts, sf, nf, d.names)
        for c in contrasts:
            tables[c.name]["log2FoldChange_shrunk"] = lfc_s[c.name]
            tables[c.name]["lfcSE_shrunk"] = se_s[c.name]
    ape_info = {}
    if shrink == "apeglm":
        lfc_s, se_s, sval, ape_info = _apeglm(
            counts, fit, d, ape_coefs, sf, nf, adapt=ape_adapt, lfc_threshold=lfc_threshold, progress=progress
        )
        for c in contrasts:
            tables[c.name]["log2FoldChange_shrunk"] = lfc_s[c.name]
            tables[c.name]["lfcSE_shrunk"] = se_s[c.name]
            tables[c.name]["svalue"] = sval[c.name]

    used_cutoff = fit.cooks_cutoff if cutoff is None or cutoff is True else cutoff
    params = {
        "method": "DESeq2",
        "deseq2_version": DESEQ2_VERSION,
        "r_release": R_RELEASE,
        "test": test,
        "design": describe_design(design),
        "design_columns": d.columns,
        "coefficients": d.names,
        "reduced": describe_design(reduced) if test == "LRT" else None,
        "reduced_columns": red.columns if red is not None else None,
        "lrt_df": fit.lrt_df,
        "contrasts": {c.name: c.vector for c in contrasts},
        "contrast_specs": {c.name: c.spec for c in contrasts},
        "layer": layer,
        "tximport": txi.mode,
        "lengths": txi.lengths_source if lengths_used else None,
        "counts_rounded": txi.from_tximport,
        "n_counts_rounded": n_rounded,
        "size_factors": sf_source,
        "fit_type": fit_type,
        "fit_type_used": fit.trend.fit_type,
        "trend": {"fit_type": fit.trend.fit_type, **fit.trend.params},
        "var_log_disp_ests": fit.var_log_disp_ests,
        "disp_prior_var": fit.prior_var,
        "alpha": alpha,
        "lfc_threshold": lfc_threshold,
        "alt_hypothesis": alt_hypothesis,
        "independent_filtering": independent_filtering,
        "filter_threshold": filt_thr,
        "filter_theta": filt_theta,
        "cooks_cutoff": float(used_cutoff) if used_cutoff is not False else False,
        "min_replicates_for_replace": min_rep,
        "replaceable_samples": list(adata.obs_names[fit.replaceable]),
        "n_genes_replaced": int(fit.replace.sum()),
        "outliers_refitted": bool(fit.refitted),
        "shrink": shrink,
        "beta_prior_var": priors,
        **(
            {
                "apeglm_version": _ape.APEGLM_VERSION,
                "apeglm_method": _ape.APEGLM_METHOD,
                "ape_adapt": ape_adapt,
                "svalue": (f"FSOS (false sign or |log2FC| < {lfc_threshold:g})" if lfc_threshold > 0 else "false sign rate"),
                "apeglm": ape_info,
            }
            if shrink == "apeglm"
            else {}
        ),
        "n_samples": int(d.X.shape[0]),
        "n_genes": int(adata.n_vars),
    }

    adata = start(adata, copy)
    _write_fit(adata, key_added, fit, d, sf, nf if lengths_used else None)
    write_de(adata, key_added, tables, params, filtering=filtering)
    return finish(adata, copy)


__all__ = ["deseq"]
