"""Engines for machine learning on samples: reference-based normalisation of new samples, gene
scores for feature selection, and consensus clustering (Monti et al. 2003).

Arrays are samples × genes, like ``AnnData.X``; nothing here knows about AnnData or scikit-learn.

* :func:`tmm_factors_against` — edgeR's TMM factor of each sample against a fixed reference
  profile (the training fold's reference sample), so that a new sample is normalised without
  looking at the other new samples;
* :func:`moderated_f` — limma's moderated F statistic of a one-way layout (for two groups the
  square of the moderated t), from :func:`bulkpy._stats.limma.squeeze_var.squeeze_var`;
* :func:`moderated_t_slope` — limma's moderated t of the slope of ``expression ~ target`` (a
  continuous covariate), the same empirical Bayes;
* :func:`cox_score_statistic` — the univariate Cox proportional-hazards score test of every gene
  (Breslow's handling of tied times), R ``survival::coxph``'s score test at beta = 0;
* :func:`kaplan_meier` — the Kaplan–Meier estimate with its numbers at risk
  (``survival::survfit``);
* :func:`regression_scores`, :func:`harrell_c` — R², RMSE, Spearman and Pearson correlation of
  predictions; Harrell's concordance index of risk scores (``survival::concordance``, ties in the
  score counted one half);
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


def moderated_t_slope(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """limma's moderated t statistic per gene of the slope in ``expression ~ 1 + target``.

    Residual variances (``n - 2`` degrees of freedom) are squeezed towards a common prior by
    empirical Bayes (limma ``squeezeVar``, no trend), as ``eBayes(lmFit(x, model.matrix(~ target)))``
    gives for the ``target`` coefficient. Genes with no residual variance score 0.

    Parameters
    ----------
    x
        Log-scale expression, samples × genes.
    target
        One number per sample, not all equal; at least three samples.
    """
    from .limma.squeeze_var import squeeze_var

    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"a slope with residual degrees of freedom needs at least 3 samples, got {n}")
    tc = t - t.mean()
    sxx = float(tc @ tc)
    if sxx <= 0:
        raise ValueError("the target is constant; a slope can not be estimated")
    xc = x - x.mean(axis=0)
    b = (tc @ xc) / sxx
    resid = xc - np.outer(tc, b)
    s2 = (resid**2).sum(axis=0) / (n - 2)
    ok = s2 > 1e-300
    out = np.zeros(x.shape[1])
    if ok.sum() >= 2:
        s2_post, _, _ = squeeze_var(s2[ok], np.full(int(ok.sum()), float(n - 2)))
    else:
        s2_post = s2[ok]
    out[ok] = b[ok] / np.sqrt(s2_post / sxx)
    return out


def cox_score_statistic(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Signed z of the Cox proportional-hazards score test of every gene on its own at beta = 0.

    ``U / sqrt(I)`` with ``U = sum over events (x_i - mean of x over the risk set)`` and ``I`` the
    sum over events of the variance of ``x`` over the risk set (Breslow's ties: every event at a
    time sees all samples with ``time >=`` it), as R's ``coxph(Surv(time, event) ~ x)$score``
    gives for ``ties = "breslow"``. Vectorised over genes by cumulative sums over the samples sorted
    by time. Genes constant in every risk set score 0; with no event everything is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    order = np.argsort(time, kind="stable")
    ts, xs, es = time[order], x[order], event[order]
    # suffix sums over the samples at or after each position: the risk set of a time is its suffix
    s0 = np.arange(ts.size, 0, -1, dtype=np.float64)
    xm = xs - xs.mean(axis=0)  # centring does not change the statistic and keeps the sums accurate
    s1 = np.cumsum(xm[::-1], axis=0)[::-1]
    s2 = np.cumsum((xm**2)[::-1], axis=0)[::-1]
    first = np.searchsorted(ts, ts[es], side="left")
    n_risk = s0[first][:, None]
    mean = s1[first] / n_risk
    u = (xm[es] - mean).sum(axis=0)
    info = (s2[first] / n_risk - mean**2).sum(axis=0)
    out = np.zeros(x.shape[1])
    ok = info > 1e-12 * np.maximum(1.0, (xm**2).sum(axis=0))
    out[ok] = u[ok] / np.sqrt(info[ok])
    return out


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> dict[str, np.ndarray]:
    """Kaplan–Meier estimate at every distinct time (R ``survfit(Surv(time, event) ~ 1)``).

    Returns arrays ``time`` (sorted distinct times), ``n_risk`` (samples with ``time >=`` it),
    ``n_event``, ``n_censor`` and ``survival`` (the product-limit estimate just after the time).
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    ut, inv = np.unique(time, return_inverse=True)
    n_event = np.bincount(inv, weights=event.astype(np.float64), minlength=ut.size)
    n_all = np.bincount(inv, minlength=ut.size).astype(np.float64)
    n_risk = n_all[::-1].cumsum()[::-1]
    surv = np.cumprod(1.0 - n_event / n_risk)
    return {"time": ut, "n_risk": n_risk.astype(np.int64), "n_event": n_event.astype(np.int64),
            "n_censor": (n_all - n_event).astype(np.int64), "survival": surv}


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index of risk scores (higher risk, earlier event).

    Over the comparable pairs (the earlier time is an event; pairs tied in time are not
    comparable), the fraction in which the earlier failure has the higher risk, ties in the risk
    counted one half; NaN without a comparable pair. Equals R ``survival::concordance`` (with
    ``timewt = "n"``) and scikit-survival's ``concordance_index_censored`` when times are untied.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk, dtype=np.float64)
    ti, ri = time[event][:, None], risk[event][:, None]
    comparable = ti < time[None, :]
    n = comparable.sum()
    if n == 0:
        return float("nan")
    conc = (comparable & (ri > risk[None, :])).sum() + 0.5 * (comparable & (ri == risk[None, :])).sum()
    return float(conc / n)


def logrank_test(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """The log-rank test of equal survival between groups (R ``survival::survdiff``, rho = 0):
    chi-squared statistic and p-value on (number of groups - 1) degrees of freedom."""
    from scipy import stats

    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    k = int(g.max()) + 1 if g.size else 0
    if k < 2:
        return float("nan"), float("nan")
    ut, inv = np.unique(time, return_inverse=True)
    d = np.zeros((ut.size, k))
    n_at = np.zeros((ut.size, k))
    np.add.at(d, (inv, g), event.astype(np.float64))
    np.add.at(n_at, (inv, g), 1.0)
    r = n_at[::-1].cumsum(axis=0)[::-1]  # at risk per group
    rt, dt = r.sum(axis=1), d.sum(axis=1)
    keep = rt > 0
    r, d, rt, dt = r[keep], d[keep], rt[keep], dt[keep]
    expected = r * (dt / rt)[:, None]
    o_e = (d - expected).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(rt > 1, dt * (rt - dt) / (rt * rt * (rt - 1)), 0.0)
    v = np.einsum("t,ti,tj->ij", w, r, r) * -1.0
    v[np.diag_indices(k)] += (w[:, None] * r * rt[:, None]).sum(axis=0)
    stat = float(o_e[:-1] @ np.linalg.pinv(v[:-1, :-1]) @ o_e[:-1])
    return stat, float(stats.chi2.sf(stat, k - 1))


def regression_scores(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """R² (1 - residual sum of squares / total sum of squares around the observed mean; can be
    negative), RMSE, Spearman's and Pearson's correlation of predictions with the observed values
    (NaN for fewer than two samples or a constant vector)."""
    from scipy import stats

    y = np.asarray(observed, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    n = y.size
    ss_tot = float(((y - y.mean()) ** 2).sum()) if n else 0.0
    ss_res = float(((y - p) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    varies = n >= 2 and np.ptp(y) > 0 and np.ptp(p) > 0
    spearman = float(stats.spearmanr(y, p).statistic) if varies else float("nan")
    pearson = float(np.corrcoef(y, p)[0, 1]) if varies else float("nan")
    return {"r2": r2, "rmse": float(np.sqrt(ss_res / n)) if n else float("nan"), "spearman": spearman,
            "pearson": pearson}


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
