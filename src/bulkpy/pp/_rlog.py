"""Regularised log transformation (DESeq2's ``rlog``)."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .._design import describe_design
from .._docs import doc_adata, doc_copy, doc_copy_returns, doc_params
from .._progress import check_progress, progress_bar
from .._slots import write_params
from .._stats.deseq2 import rlog as _rlog
from .._stats.deseq2.dispersion import FIT_TYPES
from .._utils import finish, start
from .._validate import (
    check_bool,
    check_choice,
    check_positive,
)
from ._vst import _dispersion_design, _normalisation, _raw_counts

logger = logging.getLogger(__name__)

#: the DESeq2 release whose ``rlog`` this follows, and its Bioconductor release
DESEQ2_VERSION = "1.52.0"
R_RELEASE = "Bioconductor 3.23"

SPARSE_WARNING = (
    "rlog assumes counts close to a negative binomial distribution; here {pct:.1f}% of the genes with a sum "
    "of normalised counts above 100 have more than 90% of that sum in a single sample (DESeq2's sparsity "
    "check warns above 10%). Such many-zeros-few-large-counts genes suit the VST (bk.pp.vst) or a shifted "
    "log better."
)


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def rlog(
    adata,
    *,
    blind: bool = True,
    design=None,
    fit_type: str = "parametric",
    beta_prior_var: float | None = None,
    layer: str | None = "counts",
    key_added: str = "rlog",
    progress: bool | None = None,
    copy: bool = False,
):
    """Regularised log transformation of counts, as DESeq2's ``rlog``.

    For every gene, fits a negative binomial GLM with an intercept and one coefficient per
    sample, the sample coefficients shrunk towards zero by a normal prior, and returns the fitted
    ``log2`` of the normalised counts (intercept plus sample coefficient). Low counts, which carry
    little information, are pulled towards the gene's mean; high counts are hardly changed. The
    result is on the log2 scale and, like :func:`bulkpy.pp.vst`, has a variance that depends little
    on the mean; it is more robust than the VST when size factors vary widely, but slower.

    As DESeq2 (1.52): dispersions are fitted gene-wise (Cox-Reid) and then as a trend over the
    mean (``fit_type``; a failed parametric trend warns and falls back to the local fit); only the
    trend is used. The prior variance of the sample coefficients matches the weighted upper 5%
    quantile of the log fold changes ``log2(q + 0.5) - log2(mean + 0.5)`` of the normalised counts
    ``q`` (weights ``1 / (1 / mean + trend)``). The fit runs DESeq2's ridge-penalised IRLS with
    ``betaTol = 1e-4``, without the optimiser fallback for genes that did not converge
    (``useOptim = FALSE``). Genes with only zero counts are 0.

    Normalisation as :func:`bulkpy.pp.vst`: ``layers["norm_factors"]`` when present, else
    ``obs["size_factors"]``, else median-of-ratios size factors computed here (``poscounts`` when
    every gene has a zero somewhere).

    Parameters
    ----------
    {adata}
    blind
        Estimate dispersions with an intercept-only design (``~ 1``), blind to the sample groups,
        as DESeq2's default for quality assessment. With ``False`` the dispersions come from
        ``design`` (as ``rlog(dds, blind = FALSE)`` after ``estimateDispersions``), so that group
        differences are not counted as noise.
    design
        Design for ``blind=False``: a formula on ``obs`` (``"~ type + condition"``) or a numeric
        matrix with one row per sample. Not allowed with ``blind=True``.
    fit_type
        Dispersion trend: ``"parametric"``, ``"local"`` or ``"mean"``.
    beta_prior_var
        Variance of the normal prior on the sample coefficients (log2 scale; DESeq2's
        ``betaPriorVar``), e.g. ``uns["rlog"]["beta_prior_var"]`` of another data set; ``None``
        estimates it from the data.
    layer
        Layer holding raw integer counts; ``None`` uses ``adata.X``.
    key_added
        Layer to write and prefix of the ``var`` columns and ``uns`` entry.
    progress
        Show a progress bar over the blocks of genes; ``None`` shows it for large inputs.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``layers[key_added]``: the transformed values, samples × genes (log2 scale; 0 for genes
          with only zero counts). Dask counts are read block by block, but the result is computed
          into memory: rlog is meant for small cohorts (DESeq2 advises vst beyond ~30 samples,
          and :func:`bulkpy.pp.vst` keeps a lazy layer);
        - ``var[key_added + "_intercept"]``: the fitted intercept, log2 of a typical normalised
          count (DESeq2's ``rlogIntercept``; ``-inf`` for all-zero genes);
        - ``var[key_added + "_gene_dispersion"]``: gene-wise dispersion estimates (``dispGeneEst``;
          NaN for all-zero genes);
        - ``var[key_added + "_fitted_dispersion"]``: the trend at each gene's mean, the dispersions
          the fit uses (``dispFit``; NaN for all-zero genes);
        - ``uns[key_added]["beta_prior_var"]``: the prior variance of the sample coefficients;
        - ``uns[key_added]["params"]``: blind, design, requested and used fit type, layer, where
          the size factors and the prior variance came from, the number of genes whose fit did
          not converge, DESeq2 and Bioconductor release, versions;
        - ``uns[key_added]["trend"]``: the dispersion trend (as :func:`bulkpy.pp.vst` records it);
        - ``uns[key_added]["size_factors"]``: the size factors used (absent with normalisation
          factors).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.rlog(adata)
    >>> adata.layers["rlog"].shape
    (7, 14599)
    >>> round(adata.uns["rlog"]["beta_prior_var"], 4)
    0.074
    >>> bk.pp.rlog(adata, blind=False, design="~ type + condition", key_added="rlog_design")
    >>> adata.uns["rlog_design"]["params"]["design"]
    '~ type + condition'
    """
    blind = check_bool(blind, "blind")
    check_bool(copy, "copy")
    progress = check_progress(progress)
    check_choice(fit_type, FIT_TYPES, "fit_type")
    if beta_prior_var is not None:
        beta_prior_var = check_positive(beta_prior_var, "beta_prior_var")
    counts = _raw_counts(adata, layer, key_added, "rlog", lazy=True)
    mm, columns = _dispersion_design(adata, blind, design)
    sf, nf, sf_source = _normalisation(adata, counts)

    res = _run_rlog(counts, mm, sf, nf, fit_type=fit_type, beta_prior_var=beta_prior_var, progress=progress)
    if res.sparse_fraction > _rlog.SPARSE_WARN:
        warnings.warn(SPARSE_WARNING.format(pct=100 * res.sparse_fraction), UserWarning, stacklevel=2)
    n_not_converged = int((~res.converged).sum())
    if n_not_converged:
        logger.info(
            "rlog: the fit of %d genes did not converge in 100 iterations (kept, as DESeq2)", n_not_converged
        )

    params = {
        "method": "DESeq2 rlog",
        "blind": blind,
        "design": "~ 1" if blind else describe_design(design),
        "design_columns": columns,
        "fit_type": fit_type,
        "fit_type_used": res.trend.fit_type,
        "layer": layer,
        "size_factors": sf_source,
        "beta_prior_var": "given" if beta_prior_var is not None else "estimated",
        "n_not_converged": n_not_converged,
        "deseq2_version": DESEQ2_VERSION,
        "r_release": R_RELEASE,
    }
    adata = start(adata, copy)
    adata.layers[key_added] = res.rlog
    adata.var[f"{key_added}_intercept"] = res.intercept
    adata.var[f"{key_added}_gene_dispersion"] = res.disp_gene_est
    adata.var[f"{key_added}_fitted_dispersion"] = res.disp_fit
    extra = {
        "trend": {"fit_type": res.trend.fit_type, **res.trend.params},
        "beta_prior_var": res.beta_prior_var,
    }
    if sf is not None:
        extra["size_factors"] = np.asarray(sf, dtype=np.float64)
    elif key_added in adata.uns and isinstance(adata.uns[key_added], dict):
        adata.uns[key_added].pop("size_factors", None)
    write_params(adata, key_added, params, **extra)
    return finish(adata, copy)


def _run_rlog(counts, mm, sf, nf, *, fit_type, beta_prior_var, progress):
    """``rlog`` on the engine, with a progress bar over its two passes of gene blocks."""
    n, g = counts.shape
    n_blk = _rlog.n_blocks(g, n)
    with progress_bar(2 * n_blk, "rlog", progress, counts.size) as bar:

        def on_block(stage: str) -> None:
            bar.set_description(f"rlog: {stage}")
            bar.update(1)

        return _rlog.rlog(
            counts, mm, size_factors=sf, norm_factors=nf, fit_type=fit_type, beta_prior_var=beta_prior_var,
            on_block=on_block,
        )  # fmt: skip
