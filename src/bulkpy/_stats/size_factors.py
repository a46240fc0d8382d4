"""Library size factors (DESeq2's median-of-ratios family).

Arrays are samples × genes, like ``AnnData.X``.
"""

from __future__ import annotations

import numpy as np


def log_geometric_means(counts: np.ndarray, *, method: str = "ratio") -> np.ndarray:
    """Per-gene log geometric mean across samples.

    ``"ratio"``: the ordinary geometric mean (``-inf`` when a gene has a zero).
    ``"poscounts"``: DESeq2's ``poscounts`` variant, the product of the positive counts to the
    power 1/n (all samples in the denominator), ``-inf`` only for all-zero genes.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[0]
    if method == "ratio":
        # a zero anywhere makes the mean -inf; only genes without zeros need the logarithm
        out = np.full(counts.shape[1], -np.inf)
        nz = (counts > 0).all(axis=0)
        out[nz] = np.log(counts[:, nz]).mean(axis=0)
        return out
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
    supplied; ratio factors are not.
    """
    counts = np.asarray(counts, dtype=np.float64)
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
        # genes with a finite log geometric mean have no zero: one log of the used genes suffices
        with np.errstate(divide="ignore"):
            logc = np.log(counts[:, usable])
        return np.exp(np.median(logc - lgm[usable], axis=1))
    sf = median_of_ratios(counts, lgm, control=control)
    if method == "poscounts":
        sf = sf / np.exp(np.mean(np.log(sf)))
    return sf


def length_norm_matrix(lengths: np.ndarray) -> np.ndarray:
    """DESeq2's ``normMatrix`` from average transcript lengths: each gene's lengths divided by their
    geometric mean across samples (samples × genes in, samples × genes out)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return lengths / np.exp(np.mean(np.log(lengths), axis=0))


def deseq2_norm_factors(
    counts: np.ndarray,
    lengths: np.ndarray,
    *,
    method: str = "ratio",
    control: np.ndarray | None = None,
) -> np.ndarray:
    """Gene × sample normalisation factors as ``estimateSizeFactors`` makes them for a
    ``DESeqDataSetFromTximport`` object (DESeq2's ``estimateNormFactors``).

    ``lengths`` (samples × genes, all positive) is turned into ``normMatrix`` by
    :func:`length_norm_matrix`; size factors are then computed from ``counts / normMatrix``
    (for ``"poscounts"`` the geometric means are those of the raw counts, passed to DESeq2 as
    ``geoMeans``, and the factors are scaled to geometric mean 1), multiplied back into
    ``normMatrix``, and each gene's factors divided by their geometric mean. Returns samples × genes.
    """
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
    return nf / np.exp(np.mean(np.log(nf), axis=0))


# --------------------------------------------------------------------------------------------
# DESeq2's estimateSizeFactorsIterate
#
# It alternates DESeq2's dispersion estimation for the intercept-only design (``fitType="mean"``)
# with maximising the (trimmed) likelihood over the size factors. For ``~ 1`` DESeq2 takes the
# fitted means from the linear model of the normalised counts (no GLM iterations), so only the
# dispersion line search of DESeq2's C++ ``fitDisp`` (and its grid fallback) is needed; a local,
# intercept-only version of both is implemented here, vectorised over genes.
# --------------------------------------------------------------------------------------------

_MIN_DISP = 1e-8


def _log_post_intercept(log_alpha, y, mu, prior_mean=None, prior_var=None):
    """DESeq2's ``log_posterior`` (Cox-Reid adjusted) for a ``~ 1`` design; ``y``/``mu`` samples × genes,
    ``log_alpha`` per gene (or broadcastable rows of candidate values)."""
    from scipy.special import gammaln

    alpha = np.exp(log_alpha)
    inv = 1.0 / alpha
    ll = (gammaln(y + inv) - gammaln(inv) - y * np.log(mu + inv) - inv * np.log(1.0 + mu * alpha)).sum(axis=0)
    cr = -0.5 * np.log((1.0 / (1.0 / mu + alpha)).sum(axis=0))
    out = ll + cr
    if prior_mean is not None:
        out = out - 0.5 * (log_alpha - prior_mean) ** 2 / prior_var
    return out


def _dlog_post_intercept(log_alpha, y, mu, prior_mean=None, prior_var=None):
    """Derivative of :func:`_log_post_intercept` with respect to ``log_alpha``."""
    from scipy.special import digamma

    alpha = np.exp(log_alpha)
    inv = 1.0 / alpha
    w = 1.0 / (1.0 / mu + alpha)
    dw = -1.0 / (1.0 / mu + alpha) ** 2
    cr = -0.5 * dw.sum(axis=0) / w.sum(axis=0)
    ll = inv**2 * (
        digamma(inv) + np.log(1.0 + mu * alpha) - mu * alpha / (1.0 + mu * alpha) - digamma(y + inv) + y / (mu + inv)
    ).sum(axis=0)
    out = (ll + cr) * alpha
    if prior_mean is not None:
        out = out - (log_alpha - prior_mean) / prior_var
    return out


def _fit_disp_intercept(y, mu, log_alpha, *, prior_mean=None, prior_var=None, min_log_alpha, kappa_0=1.0, tol=1e-6, maxit=100):
    """DESeq2's ``fitDisp`` Armijo line search on log dispersion, all genes at once.

    Returns ``log_alpha``, iterations, initial and last log posterior (as the C++ code)."""
    g = y.shape[1]

    def lp_at(a, idx):
        pm = None if prior_mean is None else prior_mean[idx]
        return _log_post_intercept(a, y[:, idx], mu[:, idx], pm, prior_var)

    def dlp_at(a, idx):
        pm = None if prior_mean is None else prior_mean[idx]
        return _dlog_post_intercept(a, y[:, idx], mu[:, idx], pm, prior_var)

    a = np.array(log_alpha, dtype=np.float64)
    allidx = np.arange(g)
    lp = lp_at(a, allidx)
    dlp = dlp_at(a, allidx)
    initial_lp = lp.copy()
    kappa = np.full(g, float(kappa_0))
    iters = np.zeros(g, dtype=np.int64)
    accepts = np.zeros(g, dtype=np.int64)
    active = np.ones(g, dtype=bool)
    eps = 1.0e-4
    for _ in range(maxit):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        iters[idx] += 1
        ai, di, ki = a[idx], dlp[idx], kappa[idx]
        prop = ai + ki * di
        with np.errstate(divide="ignore", invalid="ignore"):
            ki = np.where(prop < -30.0, (-30.0 - ai) / di, ki)
            ki = np.where(prop > 10.0, (10.0 - ai) / di, ki)
        a_new = ai + ki * di
        theta = -lp_at(a_new, idx)
        theta_hat = -lp[idx] - ki * eps * di**2
        acc = theta <= theta_hat
        # rejected: halve the step
        kappa[idx[~acc]] = ki[~acc] / 2.0
        if acc.any():
            ia = idx[acc]
            accepts[ia] += 1
            a[ia] = a_new[acc]
            lpnew = -theta[acc]
            change = lpnew - lp[ia]
            small = change < tol
            lp[ia[small]] = lpnew[small]
            active[ia[small]] = False
            low = ~small & (a[ia] < min_log_alpha)
            active[ia[low]] = False  # lp keeps its previous value, as in the C++ code
            go = ~small & ~low
            ig = ia[go]
            lp[ig] = lpnew[go]
            if ig.size:
                dlp[ig] = dlp_at(a[ig], ig)
                k = np.minimum(ki[acc][go] * 1.1, kappa_0)
                k = np.where(accepts[ig] % 5 == 0, k / 2.0, k)
                kappa[ig] = k
    return a, iters, initial_lp, lp


def _fit_disp_grid_intercept(y, mu, *, prior_mean=None, prior_var=None, n_samples: int):
    """DESeq2's ``fitDispGrid``: a 20-point grid on log dispersion, then a finer one around the best."""
    grid = np.linspace(np.log(1e-8), np.log(max(10, n_samples)), 20)
    delta = grid[1] - grid[0]

    def best(candidates):  # candidates: k × genes
        vals = np.stack([_log_post_intercept(c, y, mu, prior_mean, prior_var) for c in candidates])
        return candidates[np.argmax(vals, axis=0), np.arange(y.shape[1])]

    g = y.shape[1]
    a_hat = best(np.repeat(grid[:, None], g, axis=1))
    fine = np.linspace(a_hat - delta, a_hat + delta, 20)
    return np.exp(best(fine))


def _r_trimmed_mean(x: np.ndarray, trim: float) -> float:
    n = x.size
    lo = int(np.floor(n * trim)) + 1
    hi = n + 1 - lo
    xs = np.sort(x)[lo - 1 : hi]
    return float(np.mean(xs))


def _r_mad(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _dispersions_intercept_mean(counts: np.ndarray, sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DESeq2 ``estimateDispersions(fitType="mean")`` for the design ``~ 1`` on genes that are not all
    zero. Returns the final dispersions and the (bounded) fitted means, samples × genes."""
    from scipy.special import polygamma

    m = counts.shape[0]
    if m < 2:
        raise ValueError("the iterative size factor estimator needs at least two samples")
    maxdisp = max(10.0, float(m))
    norm = counts / sf[:, None]
    base_mean = norm.mean(axis=0)
    base_var = norm.var(axis=0, ddof=1)
    # rough and moments estimates
    mu_lin = np.maximum(1.0, base_mean)
    rough = np.maximum((((norm - mu_lin) ** 2 - mu_lin) / mu_lin**2).sum(axis=0) / (m - 1), 0.0)
    xim = np.mean(1.0 / sf)
    moments = (base_var - xim * base_mean) / base_mean**2
    alpha_init = np.clip(np.minimum(rough, moments), _MIN_DISP, maxdisp)
    mu = base_mean[None, :] * sf[:, None]
    mu = np.where(mu < 0.5, 0.5, mu)

    log_a, iters, lp0, lp1 = _fit_disp_intercept(counts, mu, np.log(alpha_init), min_log_alpha=np.log(_MIN_DISP / 10))
    disp_gene = np.minimum(np.exp(log_a), maxdisp)
    no_increase = lp1 < lp0 + np.abs(lp0) / 1e6
    disp_gene = np.where(no_increase, alpha_init, disp_gene)
    conv = (iters < 100) & (iters != 1)
    refit = ~conv & (disp_gene > _MIN_DISP * 10)
    if refit.any():
        disp_gene[refit] = _fit_disp_grid_intercept(counts[:, refit], mu[:, refit], n_samples=m)
    disp_gene = np.clip(disp_gene, _MIN_DISP, maxdisp)

    if not (disp_gene > 100 * _MIN_DISP).any():
        raise ValueError("all gene-wise dispersion estimates are near the minimum; the iterative size factors can not be estimated")
    use_mean = disp_gene > 10 * _MIN_DISP
    disp_fit = _r_trimmed_mean(disp_gene[use_mean], 0.001)
    above = disp_gene >= _MIN_DISP * 100
    resid = np.log(disp_gene) - np.log(disp_fit)
    var_log = _r_mad(resid[above]) ** 2
    p = 1
    if m - p <= 3:
        raise ValueError(
            "the iterative size factor estimator needs at least 5 samples here: with 4 or fewer DESeq2 estimates the "
            "dispersion prior by a random simulation that is not reproduced; use method='ratio' or 'poscounts'"
        )
    prior_var = max(var_log - float(polygamma(1, (m - p) / 2)), 0.25)
    init = np.where(disp_gene > 0.1 * disp_fit, disp_gene, disp_fit)
    prior_mean = np.full(disp_gene.shape, np.log(disp_fit))
    log_a, iters, _, _ = _fit_disp_intercept(
        counts, mu, np.log(init), prior_mean=prior_mean, prior_var=prior_var, min_log_alpha=np.log(_MIN_DISP / 10)
    )
    disp_map = np.exp(log_a)
    refit = iters >= 100
    if refit.any():
        disp_map[refit] = _fit_disp_grid_intercept(
            counts[:, refit], mu[:, refit], prior_mean=prior_mean[refit], prior_var=prior_var, n_samples=m
        )
    disp_map = np.clip(disp_map, _MIN_DISP, maxdisp)
    outlier = np.log(disp_gene) > np.log(disp_fit) + 2.0 * np.sqrt(var_log)
    return np.where(outlier, disp_gene, disp_map), mu


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
