"""Variance stabilising transformation (DESeq2's ``varianceStabilizingTransformation``)."""

from __future__ import annotations

import numpy as np

from .._design import check_full_rank, describe_design, design_matrix
from .._docs import doc_adata, doc_copy, doc_copy_returns, doc_params
from .._slots import check_key, write_params
from .._stats.deseq2 import size_factors as _sf
from .._stats.deseq2 import vst as _vst
from .._stats.deseq2.dispersion import FIT_TYPES
from .._stats.deseq2.size_factors import deseq2_size_factors
from .._utils import finish, start
from .._validate import check_choice, check_counts, dense, get_matrix, is_dask, looks_logged

NORM_FACTORS_LAYER = "norm_factors"
SIZE_FACTORS = "size_factors"


_BAD_NF = (
    f"layers[{NORM_FACTORS_LAYER!r}] must hold finite positive normalisation factors "
    "(samples × genes); remove it to use size factors instead"
)


def _normalisation(adata, counts):
    """Size or normalisation factors as DESeq2 would use them, and where they came from (a dask
    factor layer, or any with dask counts, is checked in the engine's first pass)."""
    if NORM_FACTORS_LAYER in adata.layers:
        nf = adata.layers[NORM_FACTORS_LAYER]
        lazy = is_dask(nf) or is_dask(counts)
        if not lazy:
            nf = dense(nf)
        if nf.shape != counts.shape or (not lazy and (not np.all(np.isfinite(nf)) or np.any(nf <= 0))):
            raise ValueError(_BAD_NF)
        return None, nf, f"layers[{NORM_FACTORS_LAYER!r}]"
    if SIZE_FACTORS in adata.obs.columns:
        try:
            sf = adata.obs[SIZE_FACTORS].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"obs[{SIZE_FACTORS!r}] must be numeric") from None
        if not np.all(np.isfinite(sf)) or np.any(sf <= 0):
            raise ValueError(
                f"obs[{SIZE_FACTORS!r}] must hold finite positive size factors for every sample; "
                "recompute them with bk.pp.size_factors or delete the column"
            )
        return sf, None, f"obs[{SIZE_FACTORS!r}]"
    if is_dask(counts):
        return _default_size_factors_blocks(adata, counts)
    if (counts > 0).all(axis=0).any():
        return deseq2_size_factors(counts, method="ratio"), None, "computed (median of ratios)"
    if not (counts > 0).any(axis=1).all():
        empty = np.flatnonzero(~(counts > 0).any(axis=1))
        raise ValueError(f"samples {adata.obs_names[empty].tolist()[:10]} have no counts; remove them first")
    return deseq2_size_factors(counts, method="poscounts"), None, "computed (poscounts: every gene has a zero)"


def _default_size_factors_blocks(adata, counts):
    """:func:`_normalisation`'s computed size factors for a dask matrix: the per-gene geometric
    means of both methods in one pass, the medians in another."""
    means = _sf.gene_log_means_blocks(counts)
    if np.isfinite(means["ratio"]).any():
        return _sf.size_factors_from_means(counts, means, method="ratio"), None, "computed (median of ratios)"
    if not means["sample_pos"].all():
        empty = np.flatnonzero(~means["sample_pos"])
        raise ValueError(f"samples {adata.obs_names[empty].tolist()[:10]} have no counts; remove them first")
    sf = _sf.size_factors_from_means(counts, means, method="poscounts")
    return sf, None, "computed (poscounts: every gene has a zero)"


def _transform(counts, mm, sf, nf, fit_type):
    if is_dask(counts) or is_dask(nf):
        try:
            return _vst.variance_stabilizing_transformation_blocks(counts, mm, size_factors=sf, norm_factors=nf, fit_type=fit_type)
        except ValueError as err:
            if "normalisation factors must be finite" in str(err):
                raise ValueError(_BAD_NF) from None
            raise
    return _vst.variance_stabilizing_transformation(counts, mm, size_factors=sf, norm_factors=nf, fit_type=fit_type)


def _raw_counts(adata, layer, key_added: str, what: str, *, lazy: bool = False):
    """The raw counts ``vst``/``rlog`` transform: checked as integer counts that do not look
    log-transformed, with ``key_added`` a valid name that does not overwrite the input layer.
    Dense in memory; with ``lazy`` (vst) a dask matrix is returned as it is (checked in one pass)."""
    check_key(key_added, "key_added")
    if layer is not None and key_added == layer:
        raise ValueError(f"key_added={key_added!r} would overwrite the input layer; choose another name")
    X = get_matrix(adata, layer)
    where = "X" if layer is None else f"layer {layer!r}"
    check_counts(X, what=f"counts in {where}", integer=True)
    if looks_logged(X):
        raise ValueError(f"the values in {where} look log-transformed; {what} needs raw counts")
    return X if lazy and is_dask(X) else dense(X)


def _dispersion_design(adata, blind: bool, design) -> tuple[np.ndarray, list[str]]:
    """The design DESeq2's transformations estimate dispersions with: ``~ 1`` when blind, else
    ``design`` (full rank, with residual degrees of freedom); and its column names."""
    if blind:
        if design is not None:
            raise ValueError(
                "design is only used with blind=False (blind=True always estimates dispersions with ~ 1); "
                "drop design= or pass blind=False"
            )
        mm, columns = np.ones((adata.n_obs, 1)), ["Intercept"]
    else:
        if design is None:
            raise ValueError("blind=False needs a design, e.g. design='~ condition'")
        mm, columns = design_matrix(adata.obs, design)
        check_full_rank(mm, columns)
    if mm.shape[0] <= mm.shape[1]:
        raise ValueError(
            f"{mm.shape[0]} samples and {mm.shape[1]} design coefficients leave no replicates to estimate "
            "dispersions; use a design with fewer coefficients (or blind=True)"
        )
    return mm, list(columns)


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def vst(
    adata,
    *,
    blind: bool = True,
    design=None,
    fit_type: str = "parametric",
    layer: str | None = "counts",
    key_added: str = "vst",
    copy: bool = False,
):
    """Variance stabilising transformation of counts, as DESeq2's ``varianceStabilizingTransformation``.

    Fits gene-wise dispersions (Cox-Reid adjusted, as DESeq2's ``estimateDispersionsGeneEst``) and
    a dispersion-mean trend, then maps each normalised count through the integral of
    ``1 / sqrt(mu / s + alpha(mu) mu^2)``, which gives values on a log2-like scale whose variance
    hardly depends on the mean. ``fit_type="parametric"`` (``alpha = asymptDisp + extraPois /
    mu``) uses DESeq2's closed form; ``"mean"`` (a constant) also; ``"local"`` (locfit-style local
    regression of log dispersions on log means) integrates numerically, as DESeq2 does. When the
    parametric trend can not be fitted a warning is issued and the local fit is used (DESeq2's
    fallback).

    Normalisation follows DESeq2: ``layers["norm_factors"]`` (samples × genes) when present, else
    ``obs["size_factors"]`` (from :func:`bulkpy.pp.size_factors`), else median-of-ratios size
    factors computed here (``poscounts`` when every gene has a zero somewhere, as DESeq2 advises).

    A dask counts layer is read chunk by chunk and ``layers[key_added]`` is a lazy dask array (the
    dispersion trend is fitted on per-gene vectors from one pass), with the same values as in
    memory. On dask input, at most 4 passes over the matrix (``dask.compute`` calls): the count
    check (none if it was checked before), the size factors when they are computed here (2; none
    with ``obs["size_factors"]``, or 1 for the ``xim`` of ``layers["norm_factors"]``, whose values
    then agree with memory to ~1e-12 rather than bitwise), and the gene-wise dispersions (1).

    Parameters
    ----------
    {adata}
    blind
        Estimate dispersions with an intercept-only design (``~ 1``), blind to the sample groups,
        as DESeq2's default for quality assessment. With ``False`` the dispersions come from
        ``design``, so that group differences are not counted as noise.
    design
        Design for ``blind=False``: a formula on ``obs`` (``"~ type + condition"``, evaluated with
        formulaic) or a numeric matrix with one row per sample. Not allowed with ``blind=True``.
    fit_type
        Dispersion trend: ``"parametric"``, ``"local"`` or ``"mean"``.
    layer
        Layer holding raw integer counts; ``None`` uses ``adata.X``.
    key_added
        Layer to write and prefix of the ``var`` columns and ``uns`` entry.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``layers[key_added]``: the transformed values, samples × genes (log2-like scale);
        - ``var[key_added + "_gene_dispersion"]``: gene-wise dispersion estimates (DESeq2's
          ``dispGeneEst``; NaN for genes with only zero counts);
        - ``var[key_added + "_fitted_dispersion"]``: the trend at each gene's mean of normalised
          counts (``dispFit``; NaN for all-zero genes);
        - ``uns[key_added]["params"]``: blind, design, requested and used fit type, layer, where
          the size factors came from, versions;
        - ``uns[key_added]["trend"]``: the trend (``fit_type`` and ``asymptDisp``/``extraPois``,
          ``mean``, or the local fit's settings);
        - ``uns[key_added]["size_factors"]``: the size factors used (absent with
          normalisation factors).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.vst(adata)
    >>> adata.layers["vst"].shape
    (7, 14599)
    >>> trend = adata.uns["vst"]["trend"]
    >>> trend["fit_type"], round(trend["asymptDisp"], 4), round(trend["extraPois"], 2)
    ('parametric', 0.0221, 2.27)
    >>> bk.pp.vst(adata, blind=False, design="~ type + condition", key_added="vst_design")
    >>> round(float(adata.layers["vst_design"][0, 1]), 3)
    7.997
    """
    if not isinstance(blind, bool):
        raise TypeError(f"blind must be True or False, got {blind!r}")
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    check_choice(fit_type, FIT_TYPES, "fit_type")
    counts = _raw_counts(adata, layer, key_added, "vst", lazy=True)

    mm, columns = _dispersion_design(adata, blind, design)
    sf, nf, sf_source = _normalisation(adata, counts)
    res = _transform(counts, mm, sf, nf, fit_type)

    trend = {"fit_type": res.trend.fit_type, **res.trend.params}
    params = {
        "method": "DESeq2 varianceStabilizingTransformation",
        "blind": blind,
        "design": "~ 1" if blind else describe_design(design),
        "design_columns": columns,
        "fit_type": fit_type,
        "fit_type_used": res.trend.fit_type,
        "layer": layer,
        "size_factors": sf_source,
    }

    adata = start(adata, copy)
    adata.layers[key_added] = res.vst
    adata.var[f"{key_added}_gene_dispersion"] = res.gene.disp_gene_est
    adata.var[f"{key_added}_fitted_dispersion"] = res.disp_fit
    extra = {"trend": trend}
    if sf is not None:
        extra["size_factors"] = np.asarray(sf, dtype=np.float64)
    elif key_added in adata.uns and isinstance(adata.uns[key_added], dict):
        adata.uns[key_added].pop("size_factors", None)
    write_params(adata, key_added, params, **extra)
    return finish(adata, copy)
