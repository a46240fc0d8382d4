"""Library-size normalisation and expression transforms (edgeR, preprocessCore semantics).

Arrays are samples × genes, like ``AnnData.X``. Nothing here knows about AnnData.

* :func:`calc_norm_factors` — edgeR's ``calcNormFactors`` (TMM, TMMwsp, RLE, upper quartile);
* :func:`cpm` — edgeR's ``cpm`` including the library-size-scaled prior of ``log=TRUE``;
* :func:`tpm` — transcripts per million from counts and (effective) lengths;
* :func:`quantile_normalize` — preprocessCore's ``normalize.quantiles`` (its tie and NA rules);
* :func:`zscore` — per gene across samples.

A dask matrix goes through :func:`calc_norm_factors_blocks` (after :func:`library_sizes_blocks`),
which runs the same per-sample arithmetic on blocks of whole samples (and RLE's per-gene
geometric means on blocks of genes), so the factors are the same numbers as in memory.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ._blocks import _dense_rows, blocks_for, is_dask, lazy_gene_map, map_gene_blocks, map_sample_blocks
from .deseq2._kernels import run_chunks

NORM_FACTOR_METHODS = ("TMM", "TMMwsp", "RLE", "upperquartile", "none")

_LN_MILLION = np.log(1e6)
_LN_TWO = np.log(2.0)


# --------------------------------------------------------------------------------------------
# edgeR calcNormFactors
# --------------------------------------------------------------------------------------------


def _rank_window(v, idx, lo, hi, out):
    """``out[idx[t]]`` = whether the average rank (ties averaged, 1-based, as R's ``rank``) of
    ``v[idx[t]]`` among ``v[idx]`` lies in ``[lo, hi]``. Average ranks grow with the value, so the
    kept values form an interval between the ``lo``-th and ``hi``-th smallest: one selection (numpy's
    introselect, no sort) and a count at those two values decide it.

    Plain numpy rather than a numba kernel: ``np.partition`` compiled by numba cost ~30 s on a
    first call (issue 17) for a step that takes milliseconds."""
    m = idx.shape[0]
    if m == 0 or lo > hi or lo > m or hi < 1:
        out[idx] = False
        return
    vals = v[idx]
    k_lo, k_hi = int(lo) - 1, int(hi) - 1
    part = np.partition(vals, sorted({k_lo, k_hi}))
    a, b = part[k_lo], part[k_hi]
    rank_a = np.count_nonzero(vals < a) + (np.count_nonzero(vals == a) + 1) / 2.0
    rank_b = np.count_nonzero(vals < b) + (np.count_nonzero(vals == b) + 1) / 2.0
    keep_a = lo <= rank_a <= hi
    keep_b = lo <= rank_b <= hi
    out[idx] = np.where(vals == a, keep_a, np.where(vals == b, keep_b, (a < vals) & (vals < b)))


def _tmm_keep(log_r, abs_e, fin, lo_l, hi_l, lo_s, hi_s) -> np.ndarray:
    """Per sample (row): the genes whose log-ratio rank is in ``[lo_l, hi_l]`` and whose
    abundance rank is in ``[lo_s, hi_s]``, ranks taken among the row's finite genes (``fin``).
    A loop over samples (two selections each), not genes."""
    keep = np.zeros(fin.shape, dtype=np.bool_)
    kr = np.zeros(fin.shape[1], dtype=np.bool_)
    ke = np.zeros(fin.shape[1], dtype=np.bool_)
    for j in range(fin.shape[0]):
        idx = np.flatnonzero(fin[j])
        kr[:] = False
        ke[:] = False
        _rank_window(log_r[j], idx, lo_l[j], hi_l[j], kr)
        _rank_window(abs_e[j], idx, lo_s[j], hi_s[j], ke)
        np.logical_and(kr, ke, out=keep[j])
    return keep


def _upper_quantile(x: np.ndarray, lib_size: np.ndarray, p: float) -> np.ndarray:
    """``quantile(x[j, ], p) / lib_size[j]`` per sample (R's type 7 = numpy's linear)."""
    return np.quantile(x, p, axis=1) / lib_size


_RLE_IMPOSSIBLE = (
    "every gene has a zero count in at least one sample, so the RLE factors can not be computed; "
    "use method='TMM' or 'TMMwsp'"
)


def _rle(x: np.ndarray, lib_size: np.ndarray) -> np.ndarray:
    """Median ratio to the per-gene geometric mean over genes without zeros, over library size."""
    with np.errstate(divide="ignore"):
        gm = np.exp(np.log(x).mean(axis=0))
    use = gm > 0
    if not use.any():
        raise ValueError(_RLE_IMPOSSIBLE)
    return np.median(x[:, use] / gm[use], axis=1) / lib_size


def _tmm(
    x: np.ndarray,
    lib_size: np.ndarray,
    ref: int,
    *,
    logratio_trim: float,
    sum_trim: float,
    do_weighting: bool,
    a_cutoff: float,
) -> np.ndarray:
    """TMM factor of every sample against sample ``ref``, vectorised over samples.

    As edgeR's ``.calcFactorTMM``: log ratios M and average log expression A of the genes where
    both are finite (and A > ``a_cutoff``), ranked with average ties; genes whose M rank lies in
    ``[floor(n * logratio_trim) + 1, n - floor(n * logratio_trim)]`` and A rank likewise with
    ``sum_trim`` are kept and their M averaged with inverse asymptotic variance weights.
    """
    kw = {"logratio_trim": logratio_trim, "sum_trim": sum_trim, "do_weighting": do_weighting, "a_cutoff": a_cutoff}
    if x.size < _TMM_THREADED_SIZE:
        return _tmm_vs(x, lib_size, x[ref], lib_size[ref], **kw)
    # blocks of samples in threads (numpy releases the GIL; each sample's factor is its own row's).
    # The blocks depend on the matrix's size only, not on the thread count: numpy's log2 can
    # differ in the last bit with an element's position in memory (vector body or scalar edge),
    # so another partition may move a factor by one ulp (tests/test_stats_threaded.py)
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape[0])

    def block(lo, hi):
        out[lo:hi] = _tmm_vs(x[lo:hi], lib_size[lo:hi], x[ref], lib_size[ref], **kw)

    n_s = x.shape[0]
    run_chunks(block, n_s, min(n_s, -(-x.size // _TMM_BLOCK_SIZE)))
    return out


_TMM_THREADED_SIZE = 2_000_000  # samples x genes from which TMM runs on blocks of samples in threads
_TMM_BLOCK_SIZE = 500_000  # about this many counts per block (temporaries stay small)


def _tmm_vs(
    obs: np.ndarray,
    lib_size: np.ndarray,
    ref_row: np.ndarray,
    n_ref: float,
    *,
    logratio_trim: float,
    sum_trim: float,
    do_weighting: bool,
    a_cutoff: float,
) -> np.ndarray:
    """TMM factors of the samples ``obs`` (rows; library sizes ``lib_size``) against the reference
    sample's counts ``ref_row`` (library size ``n_ref``): :func:`_tmm` on any block of samples."""
    refc = ref_row[None, :]
    n_obs = lib_size[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = np.log2((obs / n_obs) / (refc / n_ref))
        abs_e = (np.log2(obs / n_obs) + np.log2(refc / n_ref)) / 2
        v = (n_obs - obs) / n_obs / obs + (n_ref - refc) / n_ref / refc
    fin = np.isfinite(log_r) & np.isfinite(abs_e) & (abs_e > a_cutoff)
    log_r = np.where(fin, log_r, np.nan)
    abs_e = np.where(fin, abs_e, np.nan)
    n = fin.sum(axis=1)

    lo_l = np.floor(n * logratio_trim) + 1
    hi_l = n + 1 - lo_l
    lo_s = np.floor(n * sum_trim) + 1
    hi_s = n + 1 - lo_s
    # ranks among each sample's finite genes (two selections per sample, no sort)
    keep = _tmm_keep(log_r, abs_e, fin, lo_l.astype(np.float64), hi_l.astype(np.float64),
                     lo_s.astype(np.float64), hi_s.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        if do_weighting:
            # na.rm=TRUE in edgeR: a gene whose variance is NaN drops out of both sums
            ok = keep & np.isfinite(v)
            vk = np.where(ok, v, 1.0)
            f = np.where(ok, log_r / vk, 0.0).sum(axis=1) / np.where(ok, 1.0 / vk, 0.0).sum(axis=1)
        else:
            f = np.where(keep, log_r, 0.0).sum(axis=1) / keep.sum(axis=1)
    f = np.where(np.isnan(f), 0.0, f)  # no shared positive genes: factor 1
    # "if(max(abs(logR)) < 1e-6) return(1)"; a sample with no finite log ratio errors in edgeR
    absmax = np.nanmax(np.abs(np.where(fin, log_r, 0.0)), axis=1, initial=0.0)
    f = np.where(absmax < 1e-6, 0.0, f)
    return 2.0**f


def _tmmwsp_one(
    obs: np.ndarray,
    ref: np.ndarray,
    lib_obs: float,
    lib_ref: float,
    *,
    logratio_trim: float,
    sum_trim: float,
    do_weighting: bool,
) -> float:
    """edgeR's ``.calcFactorTMMwsp`` for one sample: TMM with singleton positive counts paired."""
    eps = 1e-14
    pos_obs = obs > eps
    pos_ref = ref > eps
    npos = 2 * pos_obs.astype(np.int64) + pos_ref.astype(np.int64)
    keep0 = npos != 0
    obs, ref, npos = obs[keep0], ref[keep0], npos[keep0]

    zero_obs = npos == 1
    zero_ref = npos == 2
    k = zero_obs | zero_ref
    n_singles = min(int(zero_obs.sum()), int(zero_ref.sum()))
    if n_singles > 0:
        refk = np.sort(ref[k])[::-1][:n_singles]
        obsk = np.sort(obs[k])[::-1][:n_singles]
        obs = np.concatenate([obs[~k], obsk])
        ref = np.concatenate([ref[~k], refk])
    else:
        obs = obs[~k]
        ref = ref[~k]
    n = obs.size
    if n == 0:
        return 1.0
    obs_p = obs / lib_obs
    ref_p = ref / lib_ref
    m = np.log2(obs_p / ref_p)
    a = 0.5 * np.log2(obs_p * ref_p)
    if np.max(np.abs(m)) < 1e-6:
        return 1.0
    m_shrunk = np.log2(((obs + 0.5) / (lib_obs + 0.5)) / ((ref + 0.5) / (lib_ref + 0.5)))
    o_m = np.lexsort((m_shrunk, m))  # order(M, M.shrunk): stable, M first
    o_a = np.argsort(a, kind="stable")
    lo_m = int(n * logratio_trim) + 1
    hi_m = n + 1 - lo_m
    keep_m = np.zeros(n, dtype=bool)
    keep_m[o_m[lo_m - 1 : hi_m]] = True
    lo_a = int(n * sum_trim) + 1
    hi_a = n + 1 - lo_a
    keep_a = np.zeros(n, dtype=bool)
    keep_a[o_a[lo_a - 1 : hi_a]] = True
    keep = keep_m & keep_a
    m = m[keep]
    if do_weighting:
        op = obs_p[keep]
        rp = ref_p[keep]
        v = (1 - op) / op / lib_obs + (1 - rp) / rp / lib_ref
        w = (1 + 1e-6) / (v + 1e-6)
        tmm = np.sum(w * m) / np.sum(w)
    else:
        tmm = np.mean(m)
    return float(2.0**tmm)


def choose_ref_column(x: np.ndarray, lib_size: np.ndarray, method: str) -> int:
    """edgeR's default reference sample (``x`` without all-zero genes).

    TMM: the sample whose upper-quartile factor is closest to the mean of them (or, when the
    median of those is below 1e-20, the sample with the largest sum of square-root counts, which is
    TMMwsp's choice).
    """
    f75 = _upper_quantile(x, lib_size, 0.75) if method == "TMM" else None
    return _ref_from(f75, np.sqrt(x).sum(axis=1))


def _ref_from(f75: np.ndarray | None, sqrt_sums: np.ndarray) -> int:
    """edgeR's reference: upper-quartile factor closest to their mean, else the largest sum of
    square-root counts (``f75`` ``None``: TMMwsp's rule)."""
    if f75 is not None and np.median(f75) >= 1e-20:
        return int(np.argmin(np.abs(f75 - np.mean(f75))))
    return int(np.argmax(sqrt_sums))


def calc_norm_factors(
    counts: np.ndarray,
    *,
    lib_size: np.ndarray | None = None,
    method: str = "TMM",
    ref_column: int | None = None,
    logratio_trim: float = 0.3,
    sum_trim: float = 0.05,
    do_weighting: bool = True,
    a_cutoff: float = -1e10,
    p: float = 0.75,
) -> tuple[np.ndarray, dict]:
    """edgeR ``calcNormFactors`` (3.40): normalisation factors that multiply to one.

    ``counts`` is samples × genes; ``lib_size`` defaults to the per-sample totals. Genes with no
    positive count are removed first; with no genes left or a single sample the factors are 1.
    Returns the factors and a dict with the reference sample index used (``-1`` if none).
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"counts must be a 2-d samples x genes array, got shape {x.shape}")
    if method not in NORM_FACTOR_METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {list(NORM_FACTOR_METHODS)}")
    nsamples = x.shape[0]
    lib = x.sum(axis=1) if lib_size is None else np.asarray(lib_size, dtype=np.float64)
    if lib.shape != (nsamples,):
        raise ValueError(f"lib_size must have one value per sample ({nsamples}), got shape {lib.shape}")
    x = x[:, (x > 0).any(axis=0)]
    if x.shape[1] == 0 or nsamples == 1:
        method = "none"
    info = {"ref_column": -1}
    if method == "TMM" or method == "TMMwsp":
        ref = choose_ref_column(x, lib, method) if ref_column is None else int(ref_column)
        if not 0 <= ref < nsamples:
            raise ValueError(f"ref_column must be a sample index in [0, {nsamples - 1}], got {ref_column!r}")
        info["ref_column"] = ref
        kw = {"logratio_trim": logratio_trim, "sum_trim": sum_trim, "do_weighting": do_weighting}
        if method == "TMM":
            f = _tmm(x, lib, ref, a_cutoff=a_cutoff, **kw)
        else:
            f = np.array([_tmmwsp_one(x[i], x[ref], lib[i], lib[ref], **kw) for i in range(nsamples)])
    elif method == "RLE":
        f = _rle(x, lib)
    elif method == "upperquartile":
        f = _upper_quantile(x, lib, p)
        if np.min(f) == 0:
            _upper_quartile_error(f, p)
    else:
        f = np.ones(nsamples)
    f = f / np.exp(np.mean(np.log(f)))
    return f, info


# --------------------------------------------------------------------------------------------
# calcNormFactors on dask: passes over blocks of whole samples
# --------------------------------------------------------------------------------------------


def _lib_rows(rows, x):
    return x.sum(axis=1), (x > 0).any(axis=0)


def library_sizes_blocks(counts) -> tuple[np.ndarray, np.ndarray]:
    """Library sizes (the row sums, as ``counts.sum(axis=1)`` in memory) and which genes have a
    positive count, from one pass over blocks of samples (one ``dask.compute`` on dask input)."""
    parts = map_sample_blocks(_lib_rows, [counts])
    return np.concatenate([p[0] for p in parts]), np.logical_or.reduce([p[1] for p in parts])


def _ref_rows(rows, x, keep, lib, with_f75):
    x = x[:, keep]
    f75 = _upper_quantile(x, lib[rows], 0.75) if with_f75 else None
    return f75, np.sqrt(x).sum(axis=1)


def _factor_rows(rows, x, keep, lib, method, ref, ref_row, kw, p, gm):
    """The unscaled factors of a block of samples (``x``: its rows, every gene)."""
    x = x[:, keep]
    if method == "TMM":
        r = _dense_rows(ref_row).ravel()[keep]
        return _tmm_vs(x, lib[rows], r, lib[ref], **kw)
    if method == "TMMwsp":
        r = _dense_rows(ref_row).ravel()[keep]
        return np.array([_tmmwsp_one(x[i], r, lib[rows][i], lib[ref], **kw) for i in range(x.shape[0])])
    if method == "RLE":
        use = gm > 0
        return np.median(x[:, use] / gm[use], axis=1) / lib[rows]
    return _upper_quantile(x, lib[rows], p)


def _log_mean_block(b, keep):
    with np.errstate(divide="ignore"):
        return np.exp(np.log(b.read(0, keep=keep[b.sl])).mean(axis=0))


def calc_norm_factors_blocks(
    counts,
    *,
    lib_size: np.ndarray,
    detected: np.ndarray,
    method: str = "TMM",
    ref_column: int | None = None,
    logratio_trim: float = 0.3,
    sum_trim: float = 0.05,
    do_weighting: bool = True,
    a_cutoff: float = -1e10,
    p: float = 0.75,
) -> tuple[np.ndarray, dict]:
    """:func:`calc_norm_factors` of a dask (or any) matrix read in blocks: ``detected`` marks the
    genes with a positive count (:func:`library_sizes_blocks`). ``dask.compute`` calls: TMM and
    TMMwsp 2 (1 with ``ref_column``: the reference row is read in the factors' pass), RLE 2,
    upper quartile 1, none 0."""
    if method not in NORM_FACTOR_METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {list(NORM_FACTOR_METHODS)}")
    n = counts.shape[0]
    lib = np.asarray(lib_size, dtype=np.float64)
    keep = np.asarray(detected, dtype=bool)
    if not keep.any() or n == 1:
        method = "none"
    info, ref, ref_row, gm = {"ref_column": -1}, -1, None, None
    kw = {"logratio_trim": logratio_trim, "sum_trim": sum_trim, "do_weighting": do_weighting}
    if method in ("TMM", "TMMwsp"):
        ref = ref_column
        if ref is None:
            parts = map_sample_blocks(_ref_rows, [counts], args=(keep, lib, method == "TMM"))
            f75 = np.concatenate([q[0] for q in parts]) if method == "TMM" else None
            ref = _ref_from(f75, np.concatenate([q[1] for q in parts]))
        if not 0 <= int(ref) < n:
            raise ValueError(f"ref_column must be a sample index in [0, {n - 1}], got {ref_column!r}")
        info["ref_column"] = ref = int(ref)
        ref_row = counts[ref : ref + 1]
        if method == "TMM":
            kw["a_cutoff"] = a_cutoff
    elif method == "RLE":
        gm = np.concatenate(map_gene_blocks(_log_mean_block, [counts], blocks_for(counts, n), args=(keep,)))
        if not (gm > 0).any():
            raise ValueError(_RLE_IMPOSSIBLE)
    if method == "none":
        f = np.ones(n)
    else:
        f = np.concatenate(map_sample_blocks(_factor_rows, [counts], args=(keep, lib, method, ref, ref_row, kw, p, gm)))
    if method == "upperquartile" and np.min(f) == 0:
        _upper_quartile_error(f, p)
    f = f / np.exp(np.mean(np.log(f)))
    return f, info


def _upper_quartile_error(f: np.ndarray, p: float):
    zero = np.flatnonzero(f == 0).tolist()
    raise ValueError(
        f"the {p} quantile of the counts is zero in samples {zero[:10]}, so upper-quartile factors are "
        "undefined; use a larger p or method='TMM' / 'TMMwsp'"
    )


# --------------------------------------------------------------------------------------------
# CPM / TPM
# --------------------------------------------------------------------------------------------


def cpm(counts: np.ndarray, lib_size: np.ndarray, *, log: bool = False, prior_count: float = 2.0) -> np.ndarray:
    """edgeR's ``cpm.default`` with effective library sizes ``lib_size`` (per sample).

    With ``log=True`` each sample gets the prior ``prior_count * lib_size / mean(lib_size)`` added
    to its counts and twice that added to its library size before ``log2``. A dask ``counts``
    gives a lazy dask array (nothing computed).
    """
    lib = np.asarray(lib_size, dtype=np.float64)
    if not np.all(np.isfinite(lib)) or np.any(lib <= 0):
        raise ValueError("library sizes must be finite and positive")
    if is_dask(counts):  # a lazy dask array, block by block with the arithmetic below
        return lazy_gene_map(_cpm_block, [counts], blocks_for(counts, counts.shape[0]), args=(lib, log, prior_count))
    y = np.asarray(counts, dtype=np.float64)
    if not log:
        return y * (1e6 / lib)[:, None]
    prior = prior_count * lib / np.mean(lib)
    lib_adj = np.log(lib + 2 * prior)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = y + prior[:, None]
        out = (np.log(val) - lib_adj[:, None] + _LN_MILLION) / _LN_TWO
    return np.where(val > 0, out, np.nan)


def _cpm_block(b, lib, log, prior_count):
    return cpm(b.read(0), lib, log=log, prior_count=prior_count)


def _tpm_rows(rows, x, lens, lens_vec):
    L = lens if lens is not None else lens_vec
    with np.errstate(divide="ignore", invalid="ignore"):  # bad lengths are counted, then refused
        tot = (x / L).sum(axis=1)
    return tot, x.sum(axis=1), int((~np.isfinite(L) | (L <= 0)).sum())


def _tpm_block(b, lens_vec, tot, log, prior_count):
    L = b.read(1) if lens_vec is None else lens_vec[:, b.sl]
    out = b.read(0) / L / tot[:, None] * 1e6
    return np.log2(out + prior_count) if log else out


def tpm_blocks(counts, lengths, *, log: bool = False, prior_count: float = 1.0):
    """:func:`tpm` (then ``log2(x + prior_count)`` with ``log``) of a dask matrix: a lazy dask array
    after one pass over blocks of samples (one ``dask.compute``) for the per-sample totals.
    ``lengths``: one per gene (1 × genes) or samples × genes (numpy or dask); they and the
    library sizes are checked in that pass."""
    matrix = getattr(lengths, "ndim", 1) == 2 and tuple(lengths.shape) == tuple(counts.shape)
    vec = None if matrix else np.asarray(lengths, dtype=np.float64).reshape(1, -1)
    parts = map_sample_blocks(_tpm_rows, [counts, lengths if matrix else None], args=(vec,))
    if sum(q[2] for q in parts):
        raise ValueError("gene lengths must be finite and positive for every gene")
    tot, lib = np.concatenate([q[0] for q in parts]), np.concatenate([q[1] for q in parts])
    if np.any(lib <= 0) or np.any(tot <= 0):
        raise ValueError("samples with no counts have no TPM; remove them first")
    mats = [counts, lengths] if matrix else [counts]
    return lazy_gene_map(_tpm_block, mats, blocks_for(counts, counts.shape[0]), args=(vec, tot, log, prior_count))


def tpm(counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Transcripts per million: ``counts / length`` scaled to sum to one million per sample.

    ``lengths`` is samples × genes or one length per gene (broadcast).
    """
    y = np.asarray(counts, dtype=np.float64)
    rate = y / np.asarray(lengths, dtype=np.float64)
    tot = rate.sum(axis=1, keepdims=True)
    if np.any(tot <= 0):
        raise ValueError("a sample has no counts, so its TPM is undefined")
    return rate / tot * 1e6


# --------------------------------------------------------------------------------------------
# quantile normalisation (preprocessCore normalize.quantiles)
# --------------------------------------------------------------------------------------------


def _interp_index(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """preprocessCore's fractional position rule: ``1 + (n - 1) * pos`` split into a 1-based
    index and a fraction, fractions within 4 machine epsilons of an integer set to zero."""
    eps4 = 4 * np.finfo(np.float64).eps
    d = 1.0 + (n - 1.0) * pos
    fl = np.floor(d + eps4)
    frac = d - fl
    frac = np.where(np.abs(frac) <= eps4, 0.0, frac)
    return fl.astype(np.int64), frac


def _interp_values(sorted_vals: np.ndarray, idx: np.ndarray, frac: np.ndarray, limit: int) -> np.ndarray:
    """Value at 1-based ``idx + frac`` of ``sorted_vals`` with preprocessCore's edge rules."""
    n_vals = sorted_vals.size
    out = np.empty(idx.shape, dtype=np.float64)
    exact = frac == 0.0
    out[exact] = sorted_vals[idx[exact] - 1]
    one = frac == 1.0
    out[one] = sorted_vals[idx[one]]
    mid = ~exact & ~one
    i = idx[mid]
    f = frac[mid]
    inner = (i < limit) & (i > 0)
    res = np.empty(i.shape, dtype=np.float64)
    res[inner] = (1.0 - f[inner]) * sorted_vals[i[inner] - 1] + f[inner] * sorted_vals[i[inner]]
    res[i >= limit] = sorted_vals[n_vals - 1]
    res[i <= 0] = sorted_vals[0]
    out[mid] = res
    return out


def quantile_normalize(x: np.ndarray) -> np.ndarray:
    """preprocessCore 1.60 ``normalize.quantiles`` applied to the samples (rows) of ``x``.

    The target distribution is the mean over samples of each sample's sorted values. Each value is
    replaced by the target at its rank; tied values have an average rank, and a rank ending in .5
    takes the mean of the two neighbouring targets (preprocessCore's rule). ``NaN`` is treated as
    R's ``NA``: such samples contribute a linearly interpolated sorted distribution to the target,
    are mapped by interpolated quantiles, and keep their ``NaN``.
    """
    x = np.asarray(x, dtype=np.float64)
    ns, ng = x.shape
    nan = np.isnan(x)
    has_na = nan.any(axis=1)
    n_ok = (~nan).sum(axis=1)
    if np.any(has_na & (n_ok < 2)):
        bad = np.flatnonzero(has_na & (n_ok < 2)).tolist()
        raise ValueError(f"samples {bad[:10]} have fewer than two non-missing values; quantile normalisation needs more")

    # target distribution
    sorted_rows = np.sort(x, axis=1)  # NaN sorted last
    acc = np.zeros(ng)
    full = ~has_na
    if full.any():
        acc += (sorted_rows[full] / ns).sum(axis=0) if ns else 0.0
    for j in np.flatnonzero(has_na):
        vals = sorted_rows[j, : n_ok[j]]
        idx, frac = _interp_index(np.arange(ng) / (ng - 1.0), n_ok[j])
        acc += _interp_values(vals, idx, frac, ng) / ns
    target = acc

    out = np.empty_like(x)
    if full.any():
        ranks = rankdata(x[full], axis=1)  # average ranks, as R / preprocessCore
        fl = np.floor(ranks).astype(np.int64)
        half = (ranks - fl) > 0.4
        lo = target[fl - 1]
        hi = target[np.minimum(fl, ng - 1)]
        out[full] = np.where(half, 0.5 * (lo + hi), lo)
    for j in np.flatnonzero(has_na):
        ok = ~nan[j]
        r = rankdata(x[j, ok])
        idx, frac = _interp_index((r - 1.0) / (n_ok[j] - 1.0), ng)
        row = np.full(ng, np.nan)
        row[ok] = _interp_values(target, idx, frac, ng)
        out[j] = row
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    """Centre and scale each gene (column) across samples: ``(x - mean) / sd`` with the n - 1
    standard deviation (R's ``scale``); genes with zero variance get 0."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    sd = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - mu) / sd
    return np.where(sd > 0, z, 0.0)


def _divided_block(b, fac_vec, log: bool, prior_count: float):
    fac = fac_vec if fac_vec is not None else b.read(1)
    out = b.read(0) / fac
    return np.log2(out + prior_count) if log else out


def divided(counts, fac, log: bool, prior_count: float):
    """``counts / fac`` (then ``log2(x + prior_count)``): a lazy dask array when either is dask."""
    if not (is_dask(counts) or is_dask(fac)):
        out = counts / fac
        return np.log2(out + prior_count) if log else out
    matrix = fac.shape == counts.shape and fac.shape[1] > 1
    mats = [counts, fac] if matrix else [counts]
    return lazy_gene_map(_divided_block, mats, blocks_for(counts, counts.shape[0]), args=(None if matrix else fac, log, prior_count))
