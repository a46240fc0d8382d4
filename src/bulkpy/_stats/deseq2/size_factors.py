"""Library size factors (DESeq2's median-of-ratios family): ``estimateSizeFactorsForMatrix``,
``estimateNormFactors`` (gene × sample factors from tximport's average transcript lengths) and
``estimateSizeFactorsIterate``.

Arrays are samples × genes, like ``AnnData.X``. A dask matrix (``"ratio"``, ``"poscounts"``, with or
without lengths) is read in two passes (two ``dask.compute`` calls): the per-gene log geometric
means over blocks of genes, then each sample's median of ratios over blocks of whole samples, with
the same arithmetic per gene and per sample as in memory (so the same bits); the gene × sample
normalisation factors are a lazy dask array.
"""

from __future__ import annotations

import math

import numpy as np

from .._blocks import blocks_for, is_dask, lazy_gene_map, map_gene_blocks, map_sample_blocks
from ..tximport import length_norm_matrix
from .dispersion import _by_rows  # DESeq2's normMatrix, shared with edgeR's offsets


def _ratio_logs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log geometric means for ``"ratio"`` (``-inf`` where a gene has a zero), the genes without
    zeros and the logarithms of their counts (samples × those genes), in numba's threads: only
    genes without zeros need the logarithm."""
    from ._kernels import log_columns_par

    out = np.full(counts.shape[1], -np.inf)
    cols = np.flatnonzero((counts > 0).all(axis=0))
    logc = np.empty((counts.shape[0], cols.size))
    log_columns_par(np.ascontiguousarray(counts), cols, logc)
    # R's rowMeans: a long double sum over the samples in order, divided in long double (numpy's
    # pairwise double sum can differ in the last bit, and DESeq2's line searches can turn one ulp of a
    # size factor into a different first step; tests/test_tl_deseq_local_trend.py has such a gene)
    # (one block of genes per thread: each gene's sum is unchanged, so the same bits)
    out[cols] = _by_rows(_long_double_means, logc.T)
    return out, cols, logc


def _long_double_means(x: np.ndarray) -> np.ndarray:
    """Row means of ``x`` as R's ``rowMeans``: a long double sum over the columns in order,
    divided in long double."""
    acc = np.zeros(x.shape[0], dtype=np.longdouble)
    for j in range(x.shape[1]):
        acc += x[:, j]
    return (acc / x.shape[1]).astype(np.float64)


def _exp_median_r(log_ratios: np.ndarray) -> np.ndarray:
    """``exp(median(x))`` per row as R computes it: the middle value, or the mean of the two middle
    values added in long double (R's ``mean``), and the C library's ``exp`` (numpy's vectorised exp
    may differ from it in the last bit). Large matrices: one block of rows per thread."""
    med = _by_rows(_median_r, log_ratios)
    return np.array([math.exp(v) for v in med])


def _median_r(log_ratios: np.ndarray) -> np.ndarray:
    m = log_ratios.shape[1]
    half = (m - 1) // 2
    if m % 2:
        med = np.partition(log_ratios, half, axis=1)[:, half]
    else:
        part = np.partition(log_ratios, (half, half + 1), axis=1)
        med = ((part[:, half].astype(np.longdouble) + part[:, half + 1]) / 2).astype(np.float64)
    return med


def log_geometric_means(counts: np.ndarray, *, method: str = "ratio") -> np.ndarray:
    """Per-gene log geometric mean across samples.

    ``"ratio"``: the ordinary geometric mean (``-inf`` when a gene has a zero).
    ``"poscounts"``: DESeq2's ``poscounts`` variant, the product of the positive counts to the
    power 1/n (all samples in the denominator), ``-inf`` only for all-zero genes.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[0]
    if method == "ratio":
        return _ratio_logs(counts)[0]
    with np.errstate(divide="ignore"):
        logc = np.log(counts)
    if method == "poscounts":
        s = np.where(counts > 0, logc, 0.0).sum(axis=0) / n
        return np.where((counts > 0).any(axis=0), s, -np.inf)
    raise ValueError(f"unknown geometric mean method {method!r}")


def median_of_ratios(counts: np.ndarray, log_geo_means: np.ndarray, *, control: np.ndarray | None = None) -> np.ndarray:
    """Median over genes of ``counts / geometric mean`` per sample, as DESeq2's
    ``estimateSizeFactorsForMatrix``: genes with a non-finite log geometric mean and zero counts
    of the sample are left out. ``control`` is an optional boolean mask of genes to use."""
    counts = np.asarray(counts, dtype=np.float64)
    use = np.isfinite(log_geo_means)
    if control is not None:
        use = use & np.asarray(control, dtype=bool)
    c = counts[:, use]
    pos = c > 0
    empty = ~pos.any(axis=1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} samples have no gene with a positive count among the genes used for size factors")
    lgm = log_geo_means[use]
    if pos.all():  # always so for "ratio": genes with a zero have an infinite log geometric mean
        return np.exp(np.median(np.log(c) - lgm, axis=1))
    # per sample, the genes with a positive count (a loop over samples, not genes)
    return np.exp(np.array([np.median(np.log(c[j, pos[j]]) - lgm[pos[j]]) for j in range(c.shape[0])]))


def deseq2_size_factors(counts: np.ndarray, *, method: str = "ratio", control: np.ndarray | None = None) -> np.ndarray:
    """DESeq2 size factors with ``method`` ``"ratio"`` or ``"poscounts"``.

    Poscounts factors are scaled to a geometric mean of 1, as DESeq2 does when geometric means are
    supplied; ratio factors are not. A dask matrix: two passes (:func:`size_factors_blocks`).
    """
    if is_dask(counts):
        return size_factors_blocks(counts, method=method, control=control)
    counts = np.asarray(counts, dtype=np.float64)
    if method == "ratio":
        lgm, cols, logc = _ratio_logs(counts)
    else:
        lgm = log_geometric_means(counts, method=method)
    usable = np.isfinite(lgm) if control is None else np.isfinite(lgm) & np.asarray(control, dtype=bool)
    if not usable.any():
        if method == "poscounts":
            raise ValueError("every gene (among the control genes) is zero in all samples; size factors can not be computed")
        raise ValueError(
            "every gene has a zero in at least one sample, so the median-of-ratios ('ratio') size factors "
            "can not be computed; use method='poscounts' (DESeq2's choice for sparse data such as single cells)"
        )
    if method == "ratio":
        # the genes with a finite log geometric mean have no zero and their logarithms are taken:
        # per-sample medians of the log ratios (numpy's selection; a numba kernel with np.median
        # cost ~10 s to compile on a first call, issue 17, for the same numbers)
        if control is not None:
            keep = usable[cols]
            logc, cols = logc[:, keep], cols[keep]
        return _exp_median_r(logc - lgm[cols])
    sf = median_of_ratios(counts, lgm, control=control)
    if method == "poscounts":
        sf = sf / np.exp(np.mean(np.log(sf)))
    return sf


def estimate_norm_factors(
    counts: np.ndarray,
    lengths: np.ndarray,
    *,
    method: str = "ratio",
    control: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """DESeq2's ``estimateNormFactors`` as ``estimateSizeFactors`` calls it for a
    ``DESeqDataSetFromTximport`` object (the ``avgTxLength`` assay): returns the size factors of
    ``counts / normMatrix`` (one per sample) and the normalisation factors (samples × genes).

    ``lengths`` (samples × genes, all positive) is turned into ``normMatrix`` by
    :func:`length_norm_matrix`; size factors are computed from ``counts / normMatrix`` (for
    ``"poscounts"`` the geometric means are those of the raw counts, passed to DESeq2 as
    ``geoMeans``, and the factors are scaled to geometric mean 1), multiplied back into
    ``normMatrix``, and each gene's factors divided by their geometric mean.

    With dask input: two passes (:func:`size_factors_blocks`), the factors a lazy dask array.
    """
    if is_dask(counts) or is_dask(lengths):
        return size_factors_blocks(counts, method=method, control=control, lengths=lengths)
    counts = np.asarray(counts, dtype=np.float64)
    nm = length_norm_matrix(lengths)
    scaled = counts / nm
    if method == "ratio":
        lgm = log_geometric_means(scaled, method="ratio")
    elif method == "poscounts":
        lgm = log_geometric_means(counts, method="poscounts")
    else:
        raise ValueError(f"unknown size factor method {method!r}; choose 'ratio' or 'poscounts'")
    usable = np.isfinite(lgm) if control is None else np.isfinite(lgm) & np.asarray(control, dtype=bool)
    if not usable.any():
        raise ValueError(
            "every gene has a zero in at least one sample, so the median-of-ratios ('ratio') size factors "
            "can not be computed; use method='poscounts' (DESeq2's choice for sparse data such as single cells)"
        )
    sf = median_of_ratios(scaled, lgm, control=control)
    if method == "poscounts":
        sf = sf / np.exp(np.mean(np.log(sf)))
    nf = nm * sf[:, None]
    return sf, nf / np.exp(np.mean(np.log(nf), axis=0))


def deseq2_norm_factors(
    counts: np.ndarray,
    lengths: np.ndarray,
    *,
    method: str = "ratio",
    control: np.ndarray | None = None,
) -> np.ndarray:
    """Gene × sample normalisation factors as ``estimateSizeFactors`` makes them for a
    ``DESeqDataSetFromTximport`` object (:func:`estimate_norm_factors` without the size factors).
    Returns samples × genes."""
    return estimate_norm_factors(counts, lengths, method=method, control=control)[1]


# --------------------------------------------------------------------------------------------
# dask: per-gene geometric means over blocks of genes, per-sample medians over blocks of samples
# --------------------------------------------------------------------------------------------
_NO_RATIO = (
    "every gene has a zero in at least one sample, so the median-of-ratios ('ratio') size factors "
    "can not be computed; use method='poscounts' (DESeq2's choice for sparse data such as single cells)"
)


def _gene_means_block(b, with_lengths: bool) -> dict:
    """One block of genes: log geometric means for ``"ratio"`` (of the length-scaled counts with
    lengths) and ``"poscounts"``, the lengths' log means and bad values, and which samples have a
    positive count."""
    x = b.read(0)
    out = {"poscounts": log_geometric_means(x, method="poscounts"), "sample_pos": (x > 0).any(axis=1)}
    if with_lengths:
        lens = b.read(1)
        out["bad_lengths"] = int((~np.isfinite(lens) | (lens <= 0)).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            out["log_len"] = np.mean(np.log(lens), axis=0)
            x = x / (lens / np.exp(out["log_len"]))
    out["ratio"] = _ratio_logs(x)[0]
    return out


def gene_log_means_blocks(counts, *, lengths=None) -> dict:
    """Pass 1 over a dask matrix: per gene, ``"ratio"`` and ``"poscounts"`` log geometric means
    (ratio: of ``counts / normMatrix`` when ``lengths`` are given), the lengths' log means
    (``"log_len"``) and count of non-positive or non-finite lengths (``"bad_lengths"``); per sample,
    whether it has a positive count (``"sample_pos"``). One ``dask.compute``."""
    mats = [counts] if lengths is None else [counts, lengths]
    parts = map_gene_blocks(_gene_means_block, mats, blocks_for(counts, counts.shape[0]), args=(lengths is not None,))
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("ratio", "poscounts")}
    out["sample_pos"] = np.logical_or.reduce([p["sample_pos"] for p in parts])
    if lengths is not None:
        out["log_len"] = np.concatenate([p["log_len"] for p in parts])
        out["bad_lengths"] = int(sum(p["bad_lengths"] for p in parts))
    return out


def _median_rows(rows, x, lens, lgm, cols, log_len, method, control):
    """The size factors of a block of whole samples (before poscounts' rescaling)."""
    if lens is not None:  # counts / normMatrix, as in memory
        x = x / (lens / np.exp(log_len))
    if method == "ratio" and lens is None:
        from ._kernels import log_columns_par

        logc = np.empty((x.shape[0], cols.size))
        log_columns_par(x, cols, logc)
        return _exp_median_r(logc - lgm[cols])
    return median_of_ratios(x, lgm, control=control)


def _norm_factors_block(b, sf):
    nf = length_norm_matrix(b.read(0)) * sf[:, None]
    return nf / np.exp(np.mean(np.log(nf), axis=0))


def size_factors_from_means(counts, means: dict, *, method: str, control=None, lengths=None):
    """Pass 2 over a dask matrix: the size factors (and, with ``lengths``, the lazy gene × sample
    normalisation factors) from the per-gene log means of :func:`gene_log_means_blocks`.
    One ``dask.compute``."""
    lgm = means[method]
    usable = np.isfinite(lgm) if control is None else np.isfinite(lgm) & np.asarray(control, dtype=bool)
    if not usable.any():
        if method == "poscounts":
            raise ValueError("every gene (among the control genes) is zero in all samples; size factors can not be computed")
        raise ValueError(_NO_RATIO)
    cols = np.flatnonzero(usable)
    args = (lgm, cols, means.get("log_len"), method, control)
    sf = np.concatenate(map_sample_blocks(_median_rows, [counts, lengths], args=args))
    if method == "poscounts":
        sf = sf / np.exp(np.mean(np.log(sf)))
    if lengths is None:
        return sf
    if not is_dask(lengths):
        import dask.array as da

        lengths = da.from_array(np.asarray(lengths, dtype=np.float64), chunks=counts.chunks if len(counts.chunks[0]) == 1 else "auto")
    return sf, lazy_gene_map(_norm_factors_block, [lengths], blocks_for(lengths, lengths.shape[0]), args=(sf,))


def size_factors_blocks(counts, *, method: str = "ratio", control=None, lengths=None):
    """:func:`deseq2_size_factors` (or, with ``lengths``, :func:`estimate_norm_factors`) of a dask
    matrix: two passes (two ``dask.compute`` calls), the same numbers as in memory."""
    if method not in ("ratio", "poscounts"):
        raise ValueError(f"unknown size factor method {method!r}; choose 'ratio' or 'poscounts'")
    means = gene_log_means_blocks(counts, lengths=lengths)
    if lengths is not None and means["bad_lengths"]:
        raise ValueError("lengths must be finite and positive for every sample and gene")
    return size_factors_from_means(counts, means, method=method, control=control, lengths=lengths)


# --------------------------------------------------------------------------------------------
# DESeq2's estimateSizeFactorsIterate
#
# It alternates DESeq2's dispersion estimation for the intercept-only design (``fitType="mean"``)
# with maximising the (trimmed) likelihood over the size factors. The dispersions come from the
# shared dispersion engine (:mod:`bulkpy._stats.deseq2.dispersion`), exactly as ``estimateDispersions``.
# --------------------------------------------------------------------------------------------


def _dispersions_intercept_mean(counts: np.ndarray, sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DESeq2 ``estimateDispersions(fitType="mean")`` for the design ``~ 1`` on genes that are not all
    zero. Returns the final dispersions and the (bounded) fitted means of the gene-wise step,
    samples × genes (DESeq2's ``assays(object)[["mu"]]``)."""
    from .dispersion import (
        dispersion_prior_variance,
        estimate_gene_dispersions,
        estimate_map_dispersions,
        fit_dispersion_trend,
        log_dispersion_residual_variance,
    )

    m = counts.shape[0]
    if m < 2:
        raise ValueError("the iterative size factor estimator needs at least two samples")
    X = np.ones((m, 1))
    ge = estimate_gene_dispersions(counts, X, size_factors=sf)
    try:
        trend = fit_dispersion_trend(ge.base_mean, ge.disp_gene_est, fit_type="mean")
    except ValueError:
        raise ValueError(
            "all gene-wise dispersion estimates are near the minimum; the iterative size factors can not be estimated"
        ) from None
    disp_fit = trend(ge.base_mean)
    var_log = log_dispersion_residual_variance(ge.disp_gene_est, disp_fit)
    prior_var = dispersion_prior_variance(ge.disp_gene_est, disp_fit, var_log, m, 1)
    mp = estimate_map_dispersions(counts, X, ge.mu, ge.disp_gene_est, disp_fit, prior_var, var_log)
    return mp.dispersion, ge.mu


def deseq2_size_factors_iterate(counts: np.ndarray, *, niter: int = 10, q: float = 0.05) -> np.ndarray:
    """DESeq2's ``estimateSizeFactors(type="iterate")`` (``estimateSizeFactorsIterate``).

    Starting from size factors of 1, each round estimates dispersions for the ``~ 1`` model
    (``fitType="mean"``) and then maximises, over the log size factors (centred), the summed
    negative binomial log-likelihood of the genes above the ``q`` quantile of per-gene
    log-likelihood, with L-BFGS-B and R's central-difference gradient (step 1e-3). Stops when the
    squared change of the log factors sums below 1e-4 (after the second round).
    """
    from scipy.optimize import minimize
    from scipy.special import betaln

    counts = np.asarray(counts, dtype=np.float64)
    m = counts.shape[0]
    idx = counts.sum(axis=0) > 0
    if not idx.any():
        raise ValueError("every gene is zero in all samples")
    cts = counts[:, idx]
    sf = np.ones(m)
    for i in range(1, niter + 1):
        disps, mu = _dispersions_intercept_mean(cts, sf)
        qmat = mu / sf[:, None]
        sf_old = sf

        size = 1.0 / disps
        # log NB density = log C(y + size - 1, y) + size log(size / (size + mu)) + y log(mu / (size + mu));
        # the binomial coefficient does not depend on the size factors, so it is computed once
        const = (-betaln(size[None, :], cts + 1.0) - np.log(size[None, :] + cts)).sum(axis=0)

        def objective(p, qmat=qmat, size=size, const=const):
            s = np.exp(p - np.mean(p))
            mu_new = qmat * s[:, None]
            lsm = np.log(size + mu_new)
            gene_ll = const + (-size * np.log1p(mu_new / size) + cts * (np.log(mu_new) - lsm)).sum(axis=0)
            thr = np.quantile(gene_ll, q)
            return -float(np.sum(gene_ll[gene_ll > thr]))

        def gradient(p, objective=objective):
            g = np.empty_like(p)
            for j in range(p.size):
                up = p.copy()
                up[j] += 1e-3
                dn = p.copy()
                dn[j] -= 1e-3
                g[j] = (objective(up) - objective(dn)) / 2e-3
            return g

        res = minimize(
            objective,
            np.log(sf_old),
            jac=gradient,
            method="L-BFGS-B",
            options={"maxcor": 5, "ftol": 1e7 * np.finfo(float).eps, "gtol": 0.0, "maxiter": 100},
        )
        if res.nit >= 100:
            raise ValueError("iterative size factor normalisation did not converge within an iteration")
        sf = np.exp(res.x - np.mean(res.x))
        if i > 1 and np.sum((np.log(sf_old) - np.log(sf)) ** 2) < 1e-4:
            break
        if i == niter:
            raise ValueError("iterative size factor normalisation did not converge")
    return sf
