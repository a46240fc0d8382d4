"""Engines for machine learning on samples: reference-based normalisation of new samples, gene
scores for feature selection, and consensus clustering (Monti et al. 2003).

Arrays are samples × genes, like ``AnnData.X``; nothing here knows about AnnData or scikit-learn.

* :func:`tmm_factors_against` — edgeR's TMM factor of each sample against a fixed reference
  profile (the training fold's reference sample), so that a new sample is normalised without
  looking at the other new samples;
* :func:`moderated_f` — limma's moderated F statistic of a one-way layout (for two groups the
  square of the moderated t), from :func:`bulkpy._stats.limma.squeeze_var.squeeze_var`;
* :func:`correlation_distance`, :func:`cut_average_linkage` — hierarchical clustering of samples;
* :func:`consensus_matrices`, :func:`consensus_cdf_area`, :func:`pac` — consensus clustering and
  the criteria to choose the number of clusters.
"""

from __future__ import annotations

import numpy as np

from .normalization import _tmm

#: edgeR's TMM defaults (``logratioTrim``, ``sumTrim``, ``doWeighting``, ``Acutoff``).
TMM_DEFAULTS = {"logratio_trim": 0.3, "sum_trim": 0.05, "do_weighting": True, "a_cutoff": -1e10}


# --------------------------------------------------------------------------------------------
# normalisation of new samples against a training reference
# --------------------------------------------------------------------------------------------


def tmm_factors_against(counts: np.ndarray, lib_size: np.ndarray, ref_counts: np.ndarray, ref_lib: float) -> np.ndarray:
    """TMM factors (not yet rescaled) of every sample of ``counts`` against one reference profile.

    This is edgeR's ``.calcFactorTMM(obs = sample, ref = reference)`` with the default trims and
    weighting, computed for all samples at once. ``ref_counts`` is one count vector over the same
    genes and ``ref_lib`` its library size. A sample identical to the reference gets exactly 1.
    """
    x = np.asarray(counts, dtype=np.float64)
    ref = np.asarray(ref_counts, dtype=np.float64).ravel()
    if x.ndim != 2 or ref.shape != (x.shape[1],):
        raise ValueError(f"counts ({x.shape}) and the reference ({ref.shape}) must cover the same genes")
    stacked = np.vstack([x, ref[None, :]])
    lib = np.append(np.asarray(lib_size, dtype=np.float64), float(ref_lib))
    return _tmm(stacked, lib, stacked.shape[0] - 1, **TMM_DEFAULTS)[:-1]


# --------------------------------------------------------------------------------------------
# gene scores for feature selection
# --------------------------------------------------------------------------------------------


def moderated_f(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """limma's moderated F statistic per gene for a one-way layout (``~ 0 + group``).

    The residual variances of the group-means model are squeezed towards a common prior by
    empirical Bayes (limma ``squeezeVar``, no trend); the statistic is the between-group mean
    square over the posterior variance. With two groups it equals the square of limma's
    moderated t of the group difference. Genes with no variance at all score 0.

    Parameters
    ----------
    x
        Log-scale expression, samples × genes.
    codes
        Integer group codes (>= 0), one per sample; at least two groups and more samples than groups.
    """
    from .limma.squeeze_var import squeeze_var

    x = np.asarray(x, dtype=np.float64)
    codes = np.asarray(codes)
    levels, inv = np.unique(codes, return_inverse=True)
    g, n = levels.size, x.shape[0]
    if g < 2:
        raise ValueError("a one-way F statistic needs at least two groups")
    if n <= g:
        raise ValueError(f"{n} samples in {g} groups leave no residual degrees of freedom")
    onehot = np.zeros((n, g))
    onehot[np.arange(n), inv] = 1.0
    sizes = onehot.sum(axis=0)
    means = (onehot.T @ x) / sizes[:, None]
    resid = x - means[inv]
    df_res = n - g
    s2 = (resid**2).sum(axis=0) / df_res
    grand = x.mean(axis=0)
    ms_between = (sizes[:, None] * (means - grand) ** 2).sum(axis=0) / (g - 1)
    ok = s2 > 0
    f = np.zeros(x.shape[1])
    if ok.sum() >= 2:
        s2_post, _, _ = squeeze_var(s2[ok], np.full(int(ok.sum()), float(df_res)))
        f[ok] = ms_between[ok] / s2_post
    elif ok.any():
        f[ok] = ms_between[ok] / s2[ok]
    return f


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest scores, best first (ties: the earlier gene first)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return order[: min(int(n), scores.size)]


# --------------------------------------------------------------------------------------------
# clustering of samples
# --------------------------------------------------------------------------------------------


def correlation_distance(x: np.ndarray) -> np.ndarray:
    """``1 - Pearson correlation`` between the samples (rows) of ``x``; a constant sample has
    correlation 0 with every other sample."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt((xc**2).sum(axis=1))
    norm[norm == 0] = np.inf
    xs = xc / norm[:, None]
    r = np.clip(xs @ xs.T, -1.0, 1.0)
    d = 1.0 - r
    np.fill_diagonal(d, 0.0)
    return (d + d.T) / 2


def relabel_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster labels 0, 1, ... in the order they first appear."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    mapping = {lab: i for i, lab in enumerate(order)}
    return np.array([mapping[lab] for lab in labels], dtype=np.int64)


def cut_average_linkage(dist: np.ndarray, k: int) -> np.ndarray:
    """Average-linkage hierarchical clustering of a square distance matrix cut into (at most) ``k``
    clusters; labels 0..k-1 in order of first appearance."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = dist.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    z = linkage(squareform(dist, checks=False), method="average")
    return relabel_first_appearance(fcluster(z, t=k, criterion="maxclust"))


CONSENSUS_ALGORITHMS = ("hierarchical", "kmeans")


def consensus_matrices(
    x: np.ndarray,
    ks,
    *,
    n_resamples: int,
    subsample: float,
    rng: np.random.Generator,
    algorithm: str = "hierarchical",
) -> dict[int, np.ndarray]:
    """Consensus matrices of Monti et al. (2003) for each ``k`` in ``ks``.

    In each of ``n_resamples`` rounds, ``floor(subsample * n)`` samples (rows of ``x``, the
    gene-centred data) are drawn without replacement (the genes are not resampled) and clustered
    into each ``k``: ``"hierarchical"`` cuts one average-linkage tree on ``1 - Pearson
    correlation`` (:func:`correlation_distance`) per round, ConsensusClusterPlus' default;
    ``"kmeans"`` runs Lloyd's k-means with one random start (seeded from ``rng``) per round and
    ``k``, as ConsensusClusterPlus' ``"km"``. The consensus of two samples is the number of rounds
    in which they fell in the same cluster over the number in which both were drawn (0 if never
    drawn together; the diagonal is 1).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if algorithm not in CONSENSUS_ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r} is not supported; choose one of {list(CONSENSUS_ALGORITHMS)}")
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    m = int(np.floor(subsample * n))
    ks = [int(k) for k in ks]
    if m < 2 or max(ks) > m:
        raise ValueError(f"{m} samples per resample can not be split into {max(ks)} clusters")
    dist = correlation_distance(x) if algorithm == "hierarchical" else None
    together = {k: np.zeros((n, n)) for k in ks}
    sampled = np.zeros((n, n))
    for _ in range(int(n_resamples)):
        idx = np.sort(rng.choice(n, size=m, replace=False))
        sampled[np.ix_(idx, idx)] += 1.0
        if algorithm == "hierarchical":
            z = linkage(squareform(dist[np.ix_(idx, idx)], checks=False), method="average")
        for k in ks:
            if k >= m:
                lab = np.arange(m)
            elif algorithm == "hierarchical":
                lab = fcluster(z, t=k, criterion="maxclust")
            else:
                from sklearn.cluster import KMeans

                seed = int(rng.integers(0, 2**31 - 1))
                lab = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x[idx])
            together[k][np.ix_(idx, idx)] += lab[:, None] == lab[None, :]
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            c = np.where(sampled > 0, together[k] / sampled, 0.0)
            np.fill_diagonal(c, 1.0)
            out[k] = c
    return out


def _upper_values(consensus: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(consensus.shape[0], k=1)
    return np.asarray(consensus[iu], dtype=np.float64)


def consensus_cdf_area(consensus: np.ndarray) -> float:
    """Area under the empirical CDF of the off-diagonal consensus values (Monti et al. 2003):
    ``sum_i (x_i - x_{i-1}) CDF(x_i)`` over the sorted distinct values."""
    v = np.sort(_upper_values(consensus))
    if v.size == 0:
        return 0.0
    xs, counts = np.unique(v, return_counts=True)
    cdf = np.cumsum(counts) / v.size
    return float(np.sum(np.diff(xs) * cdf[1:]))


def delta_area(areas: np.ndarray) -> np.ndarray:
    """Monti's relative increase of the CDF area: the first area itself, then
    ``(A(k) - A(k-1)) / A(k-1)`` for consecutive ``k``."""
    a = np.asarray(areas, dtype=np.float64)
    out = np.empty_like(a)
    if a.size:
        out[0] = a[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[1:] = (a[1:] - a[:-1]) / a[:-1]
    return out


def pac(consensus: np.ndarray, *, lower: float = 0.1, upper: float = 0.9) -> float:
    """Proportion of ambiguous clustering (Şenbabaoğlu et al. 2014): the fraction of sample pairs
    whose consensus lies in ``(lower, upper)``; low is stable."""
    v = _upper_values(consensus)
    if v.size == 0:
        return 0.0
    return float(np.mean((v > lower) & (v < upper)))


# --------------------------------------------------------------------------------------------
# VST of new samples with a training fit (local dispersion trend)
# --------------------------------------------------------------------------------------------


def local_vst_map(train_norm_counts: np.ndarray, trend, size_factors: np.ndarray) -> dict:
    """The numerical VST of DESeq2's ``getVarianceStabilizedData`` for a local (or any callable)
    dispersion trend, frozen on the training data so that it can be applied to new samples.

    The integral of ``1 / sqrt(alpha(q) q^2 + xim q)`` is tabulated on 999 points spaced evenly in
    ``asinh`` up to the largest training normalised count and interpolated by R's ``fmm`` spline;
    the scaling to ``log2`` uses the 95% and 99.9% quantiles of the training gene means. On the
    training data this is exactly :func:`bulkpy._stats.deseq2.vst.vst_local`. Returns the pieces used by
    :func:`apply_local_vst_map`.
    """
    from .deseq2.vst import fmm_eval, fmm_spline

    nc = np.asarray(train_norm_counts, dtype=np.float64)
    xg = np.sinh(np.linspace(np.arcsinh(0.0), np.arcsinh(nc.max()), 1000))[1:]
    xim = np.mean(1.0 / np.asarray(size_factors, dtype=np.float64))
    integrand = 1.0 / np.sqrt(trend(xg) * xg**2 + xim * xg)
    knots = np.arcsinh((xg[1:] + xg[:-1]) / 2)
    values = np.cumsum((xg[1:] - xg[:-1]) * (integrand[1:] + integrand[:-1]) / 2)
    coefs = fmm_spline(knots, values)
    h1, h2 = np.quantile(nc.mean(axis=0), [0.95, 0.999])
    s1, s2 = fmm_eval(knots, values, coefs, np.arcsinh([h1, h2]))
    eta = (np.log2(h2) - np.log2(h1)) / (s2 - s1)
    xi = np.log2(h1) - eta * s1
    return {"knots": knots, "values": values, "coefs": coefs, "eta": float(eta), "xi": float(xi)}


def apply_local_vst_map(norm_counts: np.ndarray, vmap: dict) -> np.ndarray:
    """Apply :func:`local_vst_map` to normalised counts. Beyond the last training knot the map
    continues along its tangent in ``asinh`` scale (the integral grows like ``log q`` there)
    rather than along the end cubic of the spline."""
    from .deseq2.vst import fmm_eval

    knots, values, coefs = vmap["knots"], vmap["values"], vmap["coefs"]
    u = np.arcsinh(np.asarray(norm_counts, dtype=np.float64))
    top = knots[-1]
    inner = fmm_eval(knots, values, coefs, np.minimum(u, top))
    slope = coefs[0][-1]
    out = np.where(u > top, values[-1] + slope * (u - top), inner)
    return vmap["eta"] * out + vmap["xi"]
