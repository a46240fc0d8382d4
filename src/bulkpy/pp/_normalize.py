"""Normalisation: DESeq2 size factors, edgeR normalisation factors, CPM/TPM/normalised counts,
z-scores and quantile normalisation."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_adata, doc_copy, doc_params
from .._slots import COUNTS, check_key, write_params
from .._stats import normalization as _norm
from .._stats.deseq2 import size_factors as _sf
from .._tximport import READ_QUANT_COUNT_LAYERS, read_quant_params, round_counts
from .._utils import finish, start
from .._validate import (
    check_adata,
    check_bool,
    check_choice,
    dask_summary,
    dense,
    get_matrix,
    is_dask,
    layer_name,
    looks_logged,
)

logger = logging.getLogger(__name__)

LENGTH = "length"
NORM_FACTORS_LAYER = "norm_factors"
LIB_SIZE = "lib_size"
_SIZE_FACTOR_METHODS = ("ratio", "poscounts", "iterate")
_NORMALIZE_METHODS = ("cpm", "tmm", "size_factors", "tpm")


# --------------------------------------------------------------------------------------------
# shared checks
# --------------------------------------------------------------------------------------------


def _check_number(value, name: str, *, lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return v


def _dtype_kind(x) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        dt = np.asarray(x).dtype
    return np.dtype(dt).kind


def _counts(adata: AnnData, layer: str | None):
    """Dense float64 counts of ``layer`` (a dask matrix is returned as it is, checked in one pass);
    raises for non-numeric, non-finite, log-like or negative values."""
    x = get_matrix(adata, layer)
    if _dtype_kind(x) not in "biuf":
        raise TypeError(f"{layer_name(layer)} must be numeric, got dtype {getattr(x, 'dtype', type(x).__name__)}")
    lazy = is_dask(x)
    arr = x if lazy else dense(x)
    if 0 in arr.shape:
        raise ValueError(f"{layer_name(layer)} is empty (shape {arr.shape})")
    s = dask_summary(x) if lazy else None  # a dask matrix: one pass for every check (remembered)
    n_bad = s["nonfinite"] if lazy else int((~np.isfinite(arr)).sum())
    if n_bad:
        raise ValueError(f"{layer_name(layer)} contains {n_bad} non-finite values (NaN or inf); counts must be finite")
    if looks_logged(arr):
        raise ValueError(
            f"{layer_name(layer)} looks log-transformed (negative or small non-integer values), but raw counts are "
            f"needed here; pass the layer that holds the counts (layers: {list(adata.layers.keys())})"
        )
    n_neg = s["negative"] if lazy else int((arr < 0).sum())
    if n_neg:
        raise ValueError(f"{layer_name(layer)} contains {n_neg} negative values; counts must be >= 0")
    return arr


def _values(adata: AnnData, layer: str | None, *, allow_nan: bool) -> np.ndarray:
    x = get_matrix(adata, layer)
    if _dtype_kind(x) not in "biuf":
        raise TypeError(f"{layer_name(layer)} must be numeric, got dtype {getattr(x, 'dtype', type(x).__name__)}")
    arr = dense(x)
    if arr.size == 0:
        raise ValueError(f"{layer_name(layer)} is empty (shape {arr.shape})")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        what = "infinite" if allow_nan else "non-finite (NaN or inf)"
        raise ValueError(f"{layer_name(layer)} contains {int(bad.sum())} {what} values")
    return arr


def _positive_obs(adata: AnnData, key: str, what: str) -> np.ndarray:
    v = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"adata.obs[{key!r}] ({what}) must hold finite positive numbers for every sample")
    return v


def _lengths(adata: AnnData, length_key: str | None) -> tuple[np.ndarray, str]:
    """Gene lengths as samples × genes (from a layer) or one per gene (from a var column)."""
    if length_key is None:
        if LENGTH in adata.layers:
            length_key = LENGTH
        else:
            cols = [c for c in adata.var.columns if str(c).lower() == LENGTH]
            if not cols:
                raise KeyError(
                    "TPM needs gene lengths: no layers['length'] (e.g. from tximport) and no var column 'length'/'Length' "
                    f"(e.g. from featureCounts); layers: {list(adata.layers.keys())}, var columns: {list(adata.var.columns)}. "
                    "Pass length_key= naming the layer or var column that holds them"
                )
            length_key = str(cols[0])
    if not isinstance(length_key, str):
        raise TypeError(f"length_key must be a layer or var column name, got {type(length_key).__name__}")
    if length_key in adata.layers:
        lens = adata.layers[length_key]
        source = f"layers[{length_key!r}]"
        if is_dask(lens):  # checked in the TPM pass
            return lens, source
        lens = dense(lens)
    elif length_key in adata.var.columns:
        lens = pd.to_numeric(adata.var[length_key], errors="coerce").to_numpy(dtype=np.float64)[None, :]
        source = f"var[{length_key!r}]"
    else:
        raise KeyError(
            f"length_key {length_key!r} is neither a layer ({list(adata.layers.keys())}) nor a var column ({list(adata.var.columns)})"
        )
    if not np.all(np.isfinite(lens)) or np.any(lens <= 0):
        raise ValueError(f"gene lengths in {source} must be finite and positive for every gene")
    return lens, source


def _control_mask(adata: AnnData, control_genes) -> np.ndarray | None:
    if control_genes is None:
        return None
    if isinstance(control_genes, str):
        if control_genes not in adata.var.columns:
            raise KeyError(
                f"control_genes {control_genes!r} is not a var column; pass a boolean var column or a list of gene names "
                f"(var columns: {list(adata.var.columns)})"
            )
        col = adata.var[control_genes]
        if col.dtype != bool:
            raise TypeError(f"var[{control_genes!r}] must be boolean to select control genes, got dtype {col.dtype}")
        mask = col.to_numpy()
    elif isinstance(control_genes, Sequence | np.ndarray | pd.Index):
        names = [str(g) for g in control_genes]
        missing = [g for g in names if g not in adata.var_names]
        if missing:
            raise KeyError(f"{len(missing)} control genes are not in var_names, e.g. {missing[:5]}")
        mask = adata.var_names.isin(names)
    else:
        raise TypeError(f"control_genes must be a var column name or a list of gene names, got {type(control_genes).__name__}")
    if not mask.any():
        raise ValueError("control_genes selects no genes")
    return mask


def _previous_param(adata: AnnData, key: str, name: str):
    entry = adata.uns.get(key)
    params = entry.get("params") if isinstance(entry, Mapping) else None
    return params.get(name) if isinstance(params, Mapping) else None


# --------------------------------------------------------------------------------------------
# size factors (DESeq2)
# --------------------------------------------------------------------------------------------


_BAD_LENGTHS = "layers['length'] must hold finite positive lengths for every sample and gene; pass use_lengths=False to ignore it"


def _size_factor_lengths(adata: AnnData, counts):
    """``layers["length"]``: dense and checked here, or (dask counts or lengths) as it is, checked in
    the engine's first pass."""
    lens = adata.layers[LENGTH]
    if is_dask(counts) or is_dask(lens):
        return lens
    lens = dense(lens)
    if not np.all(np.isfinite(lens)) or np.any(lens <= 0):
        raise ValueError(_BAD_LENGTHS)
    return lens


def _rounded(counts, layer):
    """read_quant's estimated counts rounded as DESeqDataSetFromTximport does (lazily for dask)."""
    if not is_dask(counts):
        return round_counts(counts, where=layer_name(layer), caller="bk.pp.size_factors", log=logger)[0]
    logger.info("bk.pp.size_factors: rounding the estimated counts in %s to integers, as DESeqDataSetFromTximport does", layer_name(layer))
    return counts.map_blocks(np.round)


@doc_params(adata=doc_adata, copy=doc_copy)
def size_factors(
    adata: AnnData,
    *,
    method: str = "ratio",
    layer: str | None = COUNTS,
    control_genes: str | Sequence[str] | None = None,
    key_added: str = "size_factors",
    use_lengths: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """DESeq2 size factors (``estimateSizeFactors``), with tximport length correction.

    ``"ratio"`` is the median-of-ratios method (the median over genes without zeros of each
    sample's count over the gene's geometric mean); ``"poscounts"`` uses the geometric mean of the
    positive counts, so genes with zeros take part (DESeq2's choice for sparse data); ``"iterate"``
    is DESeq2's ``estimateSizeFactorsIterate``, which alternates a dispersion fit of the ``~ 1``
    model with maximising its likelihood over the size factors.

    With ``layers["length"]`` (average transcript lengths from tximport) and ``use_lengths``,
    ``"ratio"`` and ``"poscounts"`` produce gene × sample normalisation factors exactly as
    ``DESeqDataSetFromTximport`` + ``estimateSizeFactors`` do: the lengths divided by their
    per-gene geometric mean form ``normMatrix``, size factors are computed from
    ``counts / normMatrix``, multiplied back, and each gene's factors scaled to geometric mean 1.

    Counts that :func:`bulkpy.io.read_quant` wrote (``layer`` ``"counts"`` or ``None``) are
    rounded first, as ``DESeqDataSetFromTximport`` rounds them, so the factors are those DESeq2
    and :func:`bulkpy.tl.deseq` use; when read_quant made them from abundance
    (``counts_from_abundance`` ``"scaledTPM"`` or ``"lengthScaledTPM"``) they already account for
    length and ``layers["length"]`` is not used (tximport's vignette).

    A dask counts layer (or length layer) is read chunk by chunk with the same arithmetic per gene
    and per sample, so ``"ratio"`` and ``"poscounts"`` give the same factors as in memory: on dask
    input, 3 passes over the matrix (``dask.compute`` calls: the count check, 1 if it was checked
    before; the per-gene geometric means; the per-sample medians), and ``layers["norm_factors"]``
    stays a lazy dask array. ``"iterate"`` needs the counts in memory (a dask layer raises a
    ``TypeError``).

    Parameters
    ----------
    {adata}
    method
        ``"ratio"``, ``"poscounts"`` or ``"iterate"``.
    layer
        Layer holding raw counts; ``None`` uses ``adata.X``.
    control_genes
        Genes to compute the factors from (DESeq2's ``controlGenes``, e.g. spike-ins or housekeeping
        genes): the name of a boolean ``var`` column or a list of gene names. ``None`` uses all genes.
        Not used by ``"iterate"``.
    key_added
        ``obs`` column for the size factors and ``uns`` key for the parameters.
    use_lengths
        Use ``layers["length"]`` when present to make gene × sample normalisation factors (not for
        read_quant counts from abundance, see above). ``"iterate"`` ignores lengths, as DESeq2
        does.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``obs[key_added]``: the size factors (with lengths: those of ``counts / normMatrix``);
    - ``layers["norm_factors"]`` (only with lengths): samples × genes normalisation factors, which
      take precedence over the size factors in :func:`bulkpy.pp.normalize` (a later call under
      the same ``key_added`` without lengths removes that layer again);
    - ``uns[key_added]["params"]``: method, layer, whether lengths were used, whether the counts
      were rounded (``counts_rounded``, read_quant's ``tximport`` mode), control genes count.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.size_factors(adata)
    >>> adata.obs["size_factors"].round(4).tolist()
    [1.1383, 1.793, 0.6495, 0.7517, 1.6356, 0.7613, 0.8327]
    """
    check_adata(adata)
    check_choice(method, _SIZE_FACTOR_METHODS, "method")
    check_key(key_added, "key_added")
    use_lengths = check_bool(use_lengths, "use_lengths")
    counts = _counts(adata, layer)
    control = _control_mask(adata, control_genes)
    if method == "iterate" and control is not None:
        raise ValueError("control_genes can not be used with method='iterate' (DESeq2's iterative estimator uses all genes)")
    if method == "iterate" and is_dask(counts):
        raise TypeError(
            f"method='iterate' needs the counts in memory, but {layer_name(layer)} is a dask array (it is not computed "
            "silently); 'ratio' and 'poscounts' run chunk by chunk on dask. To use 'iterate', load the layer first: "
            "adata.layers[key] = adata.layers[key].compute()"
        )

    txi = read_quant_params(adata) if layer in READ_QUANT_COUNT_LAYERS else None
    mode = None if txi is None else str(txi["counts_from_abundance"])
    from_abundance = mode not in (None, "no")
    lengths_used = use_lengths and LENGTH in adata.layers and method != "iterate" and not from_abundance
    lens = _size_factor_lengths(adata, counts) if lengths_used else None
    if from_abundance and use_lengths and LENGTH in adata.layers:
        logger.info(
            "bk.pp.size_factors: layers['length'] not used: counts_from_abundance=%r already accounts for transcript length",
            mode,
        )
    if mode is not None:
        counts = _rounded(counts, layer)
    nf = None
    if lengths_used:
        try:
            sf, nf = _sf.estimate_norm_factors(counts, lens, method=method, control=control)
        except ValueError as err:
            if "lengths must be finite" not in str(err):
                raise
            raise ValueError(_BAD_LENGTHS) from None
    elif method == "iterate":
        sf = _sf.deseq2_size_factors_iterate(counts)
    else:
        sf = _sf.deseq2_size_factors(counts, method=method, control=control)

    adata = start(adata, copy)
    adata.obs[key_added] = sf
    if nf is not None:
        adata.layers[NORM_FACTORS_LAYER] = nf
    elif NORM_FACTORS_LAYER in adata.layers and _previous_param(adata, key_added, "lengths_used"):
        # stale gene x sample factors from an earlier call with lengths would preempt the new size factors
        del adata.layers[NORM_FACTORS_LAYER]
    write_params(
        adata,
        key_added,
        {
            "method": method,
            "layer": layer,
            "lengths_used": bool(lengths_used),
            "norm_factors_layer": NORM_FACTORS_LAYER if lengths_used else None,
            "tximport": mode,
            "counts_rounded": mode is not None,
            "n_control_genes": int(control.sum()) if control is not None else None,
            "reference": "DESeq2 estimateSizeFactors" + ("Iterate" if method == "iterate" else ""),
        },
    )
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# normalisation factors (edgeR)
# --------------------------------------------------------------------------------------------


def _library_sizes(counts) -> tuple[np.ndarray, np.ndarray | None]:
    """The column sums (and, for a dask matrix, which genes have a positive count: one pass)."""
    if is_dask(counts):
        return _norm.library_sizes_blocks(counts)
    return counts.sum(axis=1), None


def _calc_norm_factors(counts, lib: np.ndarray, detected: np.ndarray | None, **kw) -> tuple[np.ndarray, dict]:
    if is_dask(counts):
        return _norm.calc_norm_factors_blocks(counts, lib_size=lib, detected=detected, **kw)
    return _norm.calc_norm_factors(counts, lib_size=lib, **kw)


@doc_params(adata=doc_adata, copy=doc_copy)
def norm_factors(
    adata: AnnData,
    *,
    method: str = "TMM",
    layer: str | None = COUNTS,
    ref_column: int | str | None = None,
    logratio_trim: float = 0.3,
    sum_trim: float = 0.05,
    do_weighting: bool = True,
    a_cutoff: float = -1e10,
    p: float = 0.75,
    key_added: str = "norm_factors",
    copy: bool = False,
) -> AnnData | None:
    """edgeR normalisation factors (``calcNormFactors``): TMM, TMMwsp, RLE, upper quartile.

    Factors are computed on the genes of ``adata`` with library sizes equal to their column sums,
    so filtering genes first (e.g. with the keep column of ``filterByExpr``) and then calling this
    gives edgeR's ``y[keep, , keep.lib.sizes=FALSE]`` followed by ``calcNormFactors``. Genes with
    no positive count are ignored; the factors multiply to one.

    A dask counts layer is read chunk by chunk (per-sample steps on blocks of whole samples, with
    the same arithmetic, so the same factors as in memory): on dask input, at most 4 passes over
    the matrix (``dask.compute`` calls: the count check, 1 if it was checked before; the library
    sizes; then TMM/TMMwsp 2, or 1 with ``ref_column``; RLE 2; upper quartile 1; none 0).

    Parameters
    ----------
    {adata}
    method
        ``"TMM"`` (trimmed mean of M values), ``"TMMwsp"`` (TMM with singleton pairing, for data
        with many zeros), ``"RLE"`` (relative log expression, DESeq-like), ``"upperquartile"``
        or ``"none"``.
    layer
        Layer holding raw counts; ``None`` uses ``adata.X``.
    ref_column
        Reference sample for TMM/TMMwsp, as an index or an ``obs_names`` entry. By default edgeR's
        choice: for TMM the sample whose upper-quartile factor is closest to their mean, for TMMwsp
        the sample with the largest sum of square-root counts.
    logratio_trim
        Fraction of genes trimmed from each end of the log-ratio (M) distribution, in [0, 0.5).
    sum_trim
        Fraction trimmed from each end of the average log expression (A) distribution, in [0, 0.5).
    do_weighting
        Weight the trimmed mean by inverse asymptotic variances.
    a_cutoff
        Genes with average log2 expression at or below this are not used (TMM only).
    p
        Quantile for ``"upperquartile"``, in (0, 1).
    key_added
        ``obs`` column for the factors and ``uns`` key for the parameters.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``obs[key_added]``: the normalisation factors;
    - ``obs["lib_size"]``: the library sizes they refer to (column sums of ``layer``); the
      effective library size is their product;
    - ``uns[key_added]["params"]``: method, layer, reference sample and the trimming settings.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.norm_factors(adata, method="TMM")
    >>> adata.obs["norm_factors"].round(4).tolist()
    [0.9996, 1.0082, 0.9844, 0.9525, 1.0652, 0.9957, 0.9979]
    """
    check_adata(adata)
    check_choice(method, _norm.NORM_FACTOR_METHODS, "method")
    check_key(key_added, "key_added")
    if key_added == LIB_SIZE:
        raise ValueError(f"key_added can not be {LIB_SIZE!r}, which holds the library sizes")
    logratio_trim = _check_number(logratio_trim, "logratio_trim", lo=0.0, hi=0.5, hi_open=True)
    sum_trim = _check_number(sum_trim, "sum_trim", lo=0.0, hi=0.5, hi_open=True)
    do_weighting = check_bool(do_weighting, "do_weighting")
    a_cutoff = _check_number(a_cutoff, "a_cutoff")
    p = _check_number(p, "p", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    ref = None
    if ref_column is not None:
        if isinstance(ref_column, str):
            if ref_column not in adata.obs_names:
                raise KeyError(f"ref_column {ref_column!r} is not a sample name; samples: {list(adata.obs_names[:20])}")
            ref = int(adata.obs_names.get_loc(ref_column))
        elif isinstance(ref_column, int | np.integer) and not isinstance(ref_column, bool):
            if not 0 <= int(ref_column) < adata.n_obs:
                raise ValueError(f"ref_column must be a sample index in [0, {adata.n_obs - 1}], got {ref_column}")
            ref = int(ref_column)
        else:
            raise TypeError(f"ref_column must be a sample index, a sample name or None, got {ref_column!r}")
    counts = _counts(adata, layer)
    lib, detected = _library_sizes(counts)
    if method != "none" and np.any(lib <= 0):
        empty = adata.obs_names[lib <= 0].tolist()
        raise ValueError(f"samples with no counts can not be normalised: {empty[:10]}; remove them first")
    f, info = _calc_norm_factors(
        counts,
        lib,
        detected,
        method=method,
        ref_column=ref,
        logratio_trim=logratio_trim,
        sum_trim=sum_trim,
        do_weighting=do_weighting,
        a_cutoff=a_cutoff,
        p=p,
    )
    ref_name = adata.obs_names[info["ref_column"]] if info["ref_column"] >= 0 else None

    adata = start(adata, copy)
    adata.obs[key_added] = f
    adata.obs[LIB_SIZE] = lib
    write_params(
        adata,
        key_added,
        {
            "method": method,
            "layer": layer,
            "ref_column": ref_name,
            "logratio_trim": logratio_trim,
            "sum_trim": sum_trim,
            "do_weighting": do_weighting,
            "a_cutoff": a_cutoff,
            "p": p,
            "lib_size_key": LIB_SIZE,
            "reference": "edgeR calcNormFactors",
        },
    )
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# normalised layers
# --------------------------------------------------------------------------------------------


def _no_empty_samples(adata: AnnData, lib: np.ndarray) -> None:
    if np.any(lib <= 0):
        raise ValueError(f"samples with no counts can not be normalised: {adata.obs_names[lib <= 0].tolist()[:10]}")


def _cpm_layer(adata: AnnData, counts, method: str, log: bool, prior_count: float, params: dict):
    """edgeR's ``cpm`` with library sizes times the stored or computed TMM factors (lazy for dask)."""
    stored = method == "tmm" and "norm_factors" in adata.obs.columns
    lib = detected = None
    lib_source = "column sums"
    if not (stored and LIB_SIZE in adata.obs.columns):
        lib, detected = _library_sizes(counts)
    nf = np.ones(adata.n_obs)
    if stored:
        nf = _positive_obs(adata, "norm_factors", "normalisation factors")
        params["norm_factors"] = "obs['norm_factors']"
        if LIB_SIZE in adata.obs.columns:
            lib = _positive_obs(adata, LIB_SIZE, "library sizes")
            lib_source = f"obs[{LIB_SIZE!r}]"
    elif method == "tmm":
        _no_empty_samples(adata, lib)
        nf, _ = _calc_norm_factors(counts, lib, detected, method="TMM")
        params["norm_factors"] = "computed (TMM)"
    _no_empty_samples(adata, lib)
    params["lib_size"] = lib_source
    return _norm.cpm(counts, lib * nf, log=log, prior_count=prior_count)


def _deseq2_factors(adata: AnnData, counts):
    """DESeq2's normalisation factors (samples × genes) or size factors (samples × 1) and their source."""
    if NORM_FACTORS_LAYER in adata.layers:
        return _checked_factor_layer(adata.layers[NORM_FACTORS_LAYER]), f"layers[{NORM_FACTORS_LAYER!r}]"
    if "size_factors" in adata.obs.columns:
        return _positive_obs(adata, "size_factors", "size factors")[:, None], "obs['size_factors']"
    if LENGTH in adata.layers:
        lens = adata.layers[LENGTH]
        if not (is_dask(counts) or is_dask(lens)):
            lens = dense(lens)
            if not np.all(np.isfinite(lens)) or np.any(lens <= 0):
                raise ValueError(_BAD_LENGTHS_NORMALIZE)
        try:
            return _sf.deseq2_norm_factors(counts, lens, method="ratio"), "computed (ratio, with lengths)"
        except ValueError as err:
            if "lengths must be finite" not in str(err):
                raise
            raise ValueError(_BAD_LENGTHS_NORMALIZE) from None
    return _sf.deseq2_size_factors(counts, method="ratio")[:, None], "computed (ratio)"


_BAD_LENGTHS_NORMALIZE = "layers['length'] must hold finite positive lengths; compute size factors with use_lengths=False first"


def _checked_factor_layer(fac):
    """``layers["norm_factors"]``, checked finite and positive (a dask layer: one pass)."""
    if is_dask(fac):
        import dask.array as da

        n_bad = int(da.count_nonzero(~(da.isfinite(fac) & (fac > 0))).compute())
    else:
        fac = dense(fac)
        n_bad = int((~(np.isfinite(fac) & (fac > 0))).sum())
    if n_bad:
        raise ValueError(f"layers[{NORM_FACTORS_LAYER!r}] must hold finite positive factors")
    return fac


def _tpm_layer(counts, lens, log: bool, prior_count: float):
    """TPM (then ``log2(x + prior_count)``); lazy for a dask matrix."""
    if is_dask(counts) or is_dask(lens):
        return _norm.tpm_blocks(counts, lens, log=log, prior_count=prior_count)
    if np.any(counts.sum(axis=1) <= 0):
        raise ValueError("samples with no counts have no TPM; remove them first")
    out = _norm.tpm(counts, lens)
    return np.log2(out + prior_count) if log else out


def _default_key(method: str, log: bool) -> str:
    base = {"cpm": "cpm", "tmm": "tmm_cpm", "tpm": "tpm", "size_factors": "normalized"}[method]
    return f"log_{base}" if log else base


@doc_params(adata=doc_adata, copy=doc_copy)
def normalize(
    adata: AnnData,
    *,
    method: str = "cpm",
    log: bool = False,
    prior_count: float = 2,
    layer: str | None = COUNTS,
    length_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Normalised expression as a new layer: CPM, TMM-CPM, TPM or DESeq2 normalised counts.

    - ``"cpm"``: counts per million of the library size (column sums), edgeR's ``cpm`` with
      norm factors 1;
    - ``"tmm"``: edgeR's ``cpm`` with effective library sizes ``lib_size * norm_factors``, using
      ``obs["norm_factors"]`` (and ``obs["lib_size"]``) from :func:`bulkpy.pp.norm_factors` when
      present, else computing TMM factors on ``layer``;
    - ``"size_factors"``: DESeq2's ``counts(dds, normalized=TRUE)``: counts divided by
      ``layers["norm_factors"]`` or ``obs["size_factors"]`` (from :func:`bulkpy.pp.size_factors`),
      else by freshly computed median-of-ratios factors (length-corrected when
      ``layers["length"]`` exists);
    - ``"tpm"``: transcripts per million from gene lengths.

    With ``log=True``, CPM and TMM values are edgeR's ``cpm(log=TRUE, prior.count=prior_count)``
    (each sample gets ``prior_count`` scaled by its library size over the mean library size, and
    twice that is added to its library size); the others are ``log2(x + prior_count)``.

    A dask counts layer is read chunk by chunk and the new layer is a lazy dask array (computed
    when used or written), with the same values as in memory. On dask input, the passes over the
    matrix (``dask.compute`` calls) are: the count check (1, none if it was checked before); then
    ``"cpm"`` 1 (library sizes); ``"tmm"`` 1 with stored factors (none when ``obs["lib_size"]``
    is there too), else 3 (library sizes and TMM); ``"size_factors"`` none with
    ``obs["size_factors"]``, 1 with a dask ``layers["norm_factors"]`` (its check), else 2 (median
    of ratios); ``"tpm"`` 1 (per-sample totals). At most 4 in all.

    Parameters
    ----------
    {adata}
    method
        ``"cpm"``, ``"tmm"``, ``"size_factors"`` or ``"tpm"``.
    log
        Return log2 values.
    prior_count
        Pseudo-count for ``log=True`` (edgeR's ``prior.count``), >= 0.
    layer
        Layer holding raw counts; ``None`` uses ``adata.X``.
    length_key
        For ``"tpm"``: a layer (samples × genes) or ``var`` column holding gene lengths. By
        default ``layers["length"]`` (tximport), else a ``var`` column named ``length``/``Length``
        (featureCounts).
    key_added
        Layer to write, also the ``uns`` key for the parameters; by default ``"cpm"``,
        ``"tmm_cpm"``, ``"tpm"`` or ``"normalized"``, prefixed with ``"log_"`` when ``log=True``.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``layers[key_added]``: the normalised values (samples × genes);
    - ``uns[key_added]["params"]``: method, log, prior count, input layer and where the library
      sizes, factors or lengths came from.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.normalize(adata, method="tmm", log=True)
    >>> adata.layers["log_tmm_cpm"].shape
    (7, 14599)
    """
    check_adata(adata)
    check_choice(method, _NORMALIZE_METHODS, "method")
    log = check_bool(log, "log")
    prior_count = _check_number(prior_count, "prior_count", lo=0.0)
    if key_added is None:
        key_added = _default_key(method, log)
    check_key(key_added, "key_added")
    if key_added == layer:
        raise ValueError(f"key_added={key_added!r} would overwrite the input layer; choose another name")
    counts = _counts(adata, layer)
    params: dict = {"method": method, "log": log, "prior_count": prior_count, "layer": layer}

    if method in ("cpm", "tmm"):
        out = _cpm_layer(adata, counts, method, log, prior_count, params)
    elif method == "size_factors":
        fac, params["factors"] = _deseq2_factors(adata, counts)
        out = _norm.divided(counts, fac, log, prior_count)
    else:
        lens, source = _lengths(adata, length_key)
        params["lengths"] = source
        out = _tpm_layer(counts, lens, log, prior_count)

    adata = start(adata, copy)
    adata.layers[key_added] = out
    write_params(adata, key_added, params)
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# transforms of a (log) expression layer
# --------------------------------------------------------------------------------------------


@doc_params(adata=doc_adata, copy=doc_copy)
def zscore(adata: AnnData, *, layer: str | None = "log_cpm", key_added: str = "zscore", copy: bool = False) -> AnnData | None:
    """Z-scores per gene across samples: ``(x - mean) / sd`` (n - 1 standard deviation, as R's
    ``scale``). Genes with no variance get 0.

    Parameters
    ----------
    {adata}
    layer
        Layer of (typically log-scale) expression; ``None`` uses ``adata.X``.
    key_added
        Layer to write and ``uns`` key for the parameters.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with
    ``layers[key_added]`` (samples × genes) and ``uns[key_added]["params"]``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.normalize(adata, method="tmm", log=True, key_added="log_cpm")
    >>> bk.pp.zscore(adata, layer="log_cpm")
    >>> abs(float(adata.layers["zscore"][:, 0].mean())) < 1e-12
    True
    """
    check_adata(adata)
    check_key(key_added, "key_added")
    if key_added == layer:
        raise ValueError(f"key_added={key_added!r} would overwrite the input layer; choose another name")
    x = _values(adata, layer, allow_nan=False)
    if x.shape[0] < 2:
        raise ValueError("z-scores need at least two samples")
    z = _norm.zscore(x)
    adata = start(adata, copy)
    adata.layers[key_added] = z
    write_params(adata, key_added, {"layer": layer, "ddof": 1, "zero_variance": 0.0})
    return finish(adata, copy)


@doc_params(adata=doc_adata, copy=doc_copy)
def quantile_normalize(
    adata: AnnData, *, layer: str | None = "log_cpm", key_added: str = "quantile", copy: bool = False
) -> AnnData | None:
    """Quantile normalisation of the samples, equal to preprocessCore's ``normalize.quantiles``.

    Every sample is given the same distribution: the mean over samples of the sorted values.
    Ties get the average rank, and a rank ending in .5 takes the mean of the two neighbouring
    target values (preprocessCore's rule). Missing values (``NaN``) are kept and handled by
    preprocessCore's interpolation.

    Parameters
    ----------
    {adata}
    layer
        Layer of (typically log-scale) expression; ``None`` uses ``adata.X``.
    key_added
        Layer to write and ``uns`` key for the parameters.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with
    ``layers[key_added]`` (samples × genes) and ``uns[key_added]["params"]``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.normalize(adata, method="tmm", log=True, key_added="log_cpm")
    >>> bk.pp.quantile_normalize(adata, layer="log_cpm")
    >>> q = adata.layers["quantile"]
    >>> len(set(q.max(axis=1).round(9)))  # every sample now has the same largest value
    1
    """
    check_adata(adata)
    check_key(key_added, "key_added")
    if key_added == layer:
        raise ValueError(f"key_added={key_added!r} would overwrite the input layer; choose another name")
    x = _values(adata, layer, allow_nan=True)
    if x.shape[0] < 2:
        raise ValueError("quantile normalisation needs at least two samples")
    q = _norm.quantile_normalize(x)
    adata = start(adata, copy)
    adata.layers[key_added] = q
    write_params(adata, key_added, {"layer": layer, "reference": "preprocessCore normalize.quantiles"})
    return finish(adata, copy)
