"""ComBat batch correction for log-scale data (sva's ``ComBat``, Johnson, Li & Rabinovic 2007).

Arrays are samples × genes, like ``AnnData.X``. The engine follows sva 3.46 step by step:

1. genes that are constant within any batch of two or more samples are left as they are;
2. a least-squares fit of batch indicators plus covariates gives the grand mean (batch
   coefficients weighted by batch size, or the reference batch's coefficient) and the pooled
   residual variance; the data are standardised with them;
3. per batch, the location ``gamma_hat`` (least squares on the batch indicators) and the scale
   ``delta_hat`` (within-batch variance of the standardised data) are estimated for each gene;
4. empirical Bayes: a normal prior for ``gamma`` and an inverse-gamma prior for ``delta`` fitted
   across genes (method of moments), then either the parametric posterior, found by iterating
   the two posterior means until the relative change is at most ``conv`` (sva's ``it.sol``), or
   the non-parametric posterior (sva's ``int.eprior``), a likelihood-weighted average of the
   estimates of all *other* genes (deterministic: no random numbers are drawn);
5. the standardised data are shifted by ``gamma_star``, divided by ``sqrt(delta_star)`` and put
   back on the original scale.

Missing values (NaN) are handled as sva does: each gene is fitted on its observed samples, the
pooled variance becomes the (n - 1)-denominator variance of the residuals, and NaN stays NaN.

:func:`combat_seq` is sva's ``ComBat_seq`` for counts (negative binomial model); the edgeR
dispersion and GLM machinery it needs lives in :mod:`bulkpy._stats.edger.nb`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from .edger import nb

#: sva's convergence criterion for the parametric iteration (``it.sol(conv = .0001)``)
CONV = 1e-4


@dataclass
class CombatResult:
    """Output of :func:`combat`; per-batch arrays are batches × genes (all genes; genes that
    were not adjusted hold NaN)."""

    corrected: np.ndarray
    adjusted_genes: np.ndarray  # bool (G,): False for genes constant within a batch
    gamma_hat: np.ndarray
    delta_hat: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    gamma_bar: np.ndarray  # (B,)
    t2: np.ndarray  # (B,)
    a_prior: np.ndarray  # (B,)
    b_prior: np.ndarray  # (B,)
    var_pooled: np.ndarray  # (G,)
    iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (B,) it.sol rounds
    mean_only: bool = False
    missing: bool = False


def batch_design(batch: np.ndarray, n_batch: int, mod: np.ndarray | None, ref: int | None) -> tuple[np.ndarray, int]:
    """sva's design: batch indicators (the reference batch's column set to all ones) then the
    covariate columns, with every all-ones column other than the reference batch's dropped.

    Returns the design and the number of batch columns (always ``n_batch``)."""
    n = batch.shape[0]
    bm = np.zeros((n, n_batch))
    bm[np.arange(n), batch] = 1.0
    if ref is not None:
        bm[:, ref] = 1.0
    if mod is None or mod.shape[1] == 0:
        return bm, n_batch
    mod = np.asarray(mod, dtype=np.float64)
    keep = ~np.all(mod == 1.0, axis=0)
    design = np.hstack([bm, mod[:, keep]])
    if ref is None:
        # an all-ones batch column only happens with a single batch; sva drops it too
        drop = np.all(design == 1.0, axis=0)
        drop[n_batch:] = False
        if drop.any():
            raise ValueError("ComBat needs at least two batches")
    return design, n_batch


def confounding_message(design: np.ndarray, n_batch: int) -> str | None:
    """sva's three confounding diagnoses, or None when the design has full column rank."""
    rank = np.linalg.matrix_rank(design)
    if rank >= design.shape[1]:
        return None
    if design.shape[1] == n_batch + 1:
        return "the covariate is confounded with batch"
    cov = design[:, n_batch:]
    if cov.shape[1] and np.linalg.matrix_rank(cov) < cov.shape[1]:
        return "the covariates are confounded with each other"
    if design.shape[1] <= n_batch:
        return "the batch indicators are redundant"
    return "at least one covariate is confounded with batch"


def constant_within_batch(x: np.ndarray, batch: np.ndarray, n_batch: int) -> np.ndarray:
    """Genes whose values are all equal (sva: ``var(x) == 0``) within some batch of >= 2 samples.

    As in R, a gene with a missing value in that batch is not flagged (its variance is NA)."""
    flag = np.zeros(x.shape[1], dtype=bool)
    for b in range(n_batch):
        sub = x[batch == b]
        if sub.shape[0] < 2:
            continue
        with np.errstate(invalid="ignore"):
            const = np.all(sub == sub[:1], axis=0)
        flag |= const & ~np.isnan(sub).any(axis=0)
    return flag


def _masked_lstsq(design: np.ndarray, y: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-gene least squares on the observed samples (sva's ``Beta.NA``), vectorised.

    ``design`` n × p, ``y`` n × G (NaN where missing), ``observed`` n × G bool. Returns p × G."""
    w = observed.astype(np.float64)
    xtx = np.einsum("np,nq,ng->gpq", design, design, w, optimize=True)
    xty = np.einsum("np,ng->gp", design, np.where(observed, y, 0.0), optimize=True)
    try:
        beta = np.linalg.solve(xtx, xty[..., None])[..., 0]
    except np.linalg.LinAlgError:
        rank = np.linalg.matrix_rank(xtx)
        bad = np.flatnonzero(rank < design.shape[1])
        raise ValueError(
            f"{bad.size} genes have too many missing values to estimate the batch and covariate effects "
            f"(e.g. gene positions {bad[:5].tolist()}); remove them or impute"
        ) from None
    return beta.T


def _row_var(x: np.ndarray) -> np.ndarray:
    """Column-wise variance with the n - 1 denominator, ignoring NaN (genefilter's ``rowVars``)."""
    n = np.sum(~np.isnan(x), axis=0).astype(np.float64)
    n[n <= 1] = np.nan
    m = np.nansum(x, axis=0) / n
    return np.nansum((x - m) ** 2, axis=0) / (n - 1)


def _moments_prior(delta_hat: np.ndarray) -> tuple[float, float]:
    """Inverse-gamma hyper-parameters (shape a, scale b) by the method of moments (sva's aprior/bprior)."""
    m = float(np.mean(delta_hat))
    s2 = float(np.var(delta_hat, ddof=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (2 * s2 + m * m) / s2, (m * s2 + m**3) / s2


def _postmean(g_hat, g_bar, n, d_star, t2):
    return (t2 * n * g_hat + d_star * g_bar) / (t2 * n + d_star)


def _postvar(sum2, n, a, b):
    return (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)


def it_sol(sdat, g_hat, d_hat, g_bar, t2, a, b, *, conv: float = CONV, max_iter: int = 100_000):
    """Parametric posterior of (gamma, delta) for one batch: sva's ``it.sol``.

    ``sdat`` is samples-in-batch × genes (NaN allowed). Alternates the two posterior means
    until ``max(|new - old| / old)`` over both vectors (signed denominators, as in sva) is at
    most ``conv``. Returns ``(gamma_star, delta_star, iterations)``."""
    obs = ~np.isnan(sdat)
    n = obs.sum(axis=0).astype(np.float64)
    g_old = g_hat
    d_old = d_hat
    for it in range(1, max_iter + 1):
        g_new = _postmean(g_hat, g_bar, n, d_old, t2)
        r = np.where(obs, sdat - g_new, 0.0)
        sum2 = np.sum(r * r, axis=0)
        d_new = _postvar(sum2, n, a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            change = max(np.nanmax(np.abs(g_new - g_old) / g_old), np.nanmax(np.abs(d_new - d_old) / d_old))
        g_old = g_new
        d_old = d_new
        if not change > conv:
            return g_new, d_new, it
    raise RuntimeError(f"ComBat's parametric iteration did not converge in {max_iter} rounds")


def int_eprior(sdat, g_hat, d_hat, *, block_elements: int = 8_000_000):
    """Non-parametric posterior of (gamma, delta) for one batch: sva's ``int.eprior``.

    For each gene i, the posterior means are averages of the other genes' ``g_hat`` and ``d_hat``
    weighted by the normal likelihood of gene i's standardised data under each of them. The
    integration is over the empirical distribution of the estimates, with no random draws.

    Vectorised over blocks of genes (about ``block_elements`` doubles at a time): the
    log-likelihood of gene i's ``n_i`` observations under gene j's ``(g_j, d_j)`` is

        -n_i/2 log(2 pi d_j) - (SS_i + n_i (xbar_i - g_j)^2) / (2 d_j),

    bilinear in per-i and per-j terms, so a block is one matrix product. Each row is shifted by
    its maximum possible value (the likelihood at ``g = xbar_i, d = SS_i / n_i``) before taking
    exponentials, so nothing overflows; the weights then agree with sva's wherever sva's do not
    underflow to zero."""
    obs = ~np.isnan(sdat)
    n = obs.sum(axis=0).astype(np.float64)
    x0 = np.where(obs, sdat, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xbar = x0.sum(axis=0) / n
    ss = np.sum(np.where(obs, sdat - xbar, 0.0) ** 2, axis=0)
    G = sdat.shape[1]
    g = np.asarray(g_hat, dtype=np.float64)
    d = np.asarray(d_hat, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0) & np.isfinite(g)
    dv = np.where(valid, d, 1.0)
    h = np.where(valid, 0.5 / dv, 0.0)
    logd = np.log(2 * np.pi * dv)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -0.5 * n * np.log(2 * np.pi * ss / n) - 0.5 * n
    bound = np.where(np.isfinite(bound), bound, 0.0)
    # shifted loglh[i, j] = A[i] @ B[:, j]
    A = np.column_stack([n, n * xbar, -(ss + n * xbar * xbar), -bound])
    B = np.vstack([-0.5 * logd - h * g * g, 2.0 * h * g, h, np.ones(G)])
    V = np.column_stack([np.where(valid, g, 0.0), np.where(valid, d, 0.0), np.ones(G)])
    invalid = np.flatnonzero(~valid)
    g_star = np.empty(G)
    d_star = np.empty(G)
    block = max(16, int(block_elements // max(G, 1)))
    for s in range(0, G, block):
        e = min(G, s + block)
        w = A[s:e] @ B
        w[np.arange(e - s), np.arange(s, e)] = -np.inf  # leave gene i out
        if invalid.size:
            w[:, invalid] = -np.inf
        redo = np.flatnonzero(~(np.max(w, axis=1) > -700.0))  # bound far above the maximum
        if redo.size:
            w[redo] -= np.max(w[redo], axis=1, keepdims=True)
        np.exp(w, out=w)
        sums = w @ V
        g_star[s:e] = sums[:, 0] / sums[:, 2]
        d_star[s:e] = sums[:, 1] / sums[:, 2]
    return g_star, d_star


def combat(
    x: np.ndarray,
    batch: np.ndarray,
    mod: np.ndarray | None = None,
    *,
    parametric: bool = True,
    mean_only: bool = False,
    ref_batch: int | None = None,
    conv: float = CONV,
) -> CombatResult:
    """ComBat-adjust ``x`` (samples × genes, log scale).

    Parameters
    ----------
    x
        Samples × genes, float; NaN marks a missing value.
    batch
        Integer batch codes ``0 .. B-1`` per sample (every code present).
    mod
        Samples × k covariate model matrix (an intercept column is dropped, as sva does), or None.
    parametric, mean_only, ref_batch, conv
        As sva's ``par.prior``, ``mean.only``, ``ref.batch`` (a batch code) and ``it.sol``'s ``conv``.

    The caller checks confounding (:func:`confounding_message`) and one-sample batches (sva
    switches to ``mean.only`` for them).
    """
    x = np.asarray(x, dtype=np.float64)
    batch = np.asarray(batch, dtype=np.intp)
    n, G = x.shape
    n_batch = int(batch.max()) + 1
    sizes = np.bincount(batch, minlength=n_batch)
    if (sizes == 1).any():
        mean_only = True

    skip = constant_within_batch(x, batch, n_batch)
    keep = ~skip
    dat = x if not skip.any() else x[:, keep]

    design, nb = batch_design(batch, n_batch, mod, ref_batch)
    missing = bool(np.isnan(dat).any())
    obs = ~np.isnan(dat)

    # 1. standardise across genes; 2. batch effect estimates; 3. their priors; 4. empirical Bayes
    s, stand_mean, sd, var_pooled = _standardise(dat, design, nb, batch, sizes, ref_batch, obs, missing)
    gamma_hat, delta_hat = _batch_effects(s, design[:, :nb], batch, n_batch, obs, missing, mean_only)
    gamma_bar = gamma_hat.mean(axis=1)
    t2 = gamma_hat.var(axis=1, ddof=1)
    if mean_only:
        a_prior = np.full(n_batch, np.nan)
        b_prior = np.full(n_batch, np.nan)
    else:
        ab = np.array([_moments_prior(delta_hat[b]) for b in range(n_batch)])
        a_prior, b_prior = ab[:, 0], ab[:, 1]
    gamma_star, delta_star, iterations = _shrink_batch_effects(
        s, batch, gamma_hat, delta_hat, gamma_bar, t2, a_prior, b_prior,
        parametric=parametric, mean_only=mean_only, conv=conv,
    )  # fmt: skip
    if ref_batch is not None:
        gamma_star[ref_batch] = 0.0
        delta_star[ref_batch] = 1.0

    adj = (s - gamma_star[batch]) / np.sqrt(delta_star[batch])
    adj = adj * sd[None, :] + stand_mean
    if ref_batch is not None:
        r = batch == ref_batch
        adj[r] = dat[r]

    out = x.copy()
    out[:, keep] = adj

    def full(a):
        f = np.full((a.shape[0], G), np.nan)
        f[:, keep] = a
        return f

    vp = np.full(G, np.nan)
    vp[keep] = var_pooled
    return CombatResult(
        corrected=out,
        adjusted_genes=keep,
        gamma_hat=full(gamma_hat),
        delta_hat=full(delta_hat),
        gamma_star=full(gamma_star),
        delta_star=full(delta_star),
        gamma_bar=gamma_bar,
        t2=t2,
        a_prior=a_prior,
        b_prior=b_prior,
        var_pooled=vp,
        iterations=iterations,
        mean_only=mean_only,
        missing=missing,
    )


def _standardise(dat, design, nb, batch, sizes, ref_batch, obs, missing):
    """sva's standardisation: the pooled fit of batches and covariates, the grand mean (or the
    reference batch's), the pooled variance, and the standardised data."""
    n, g = dat.shape
    if not missing:
        beta = np.linalg.solve(design.T @ design, design.T @ dat)
    else:
        beta = _masked_lstsq(design, dat, obs)
    if ref_batch is not None:
        grand_mean = beta[ref_batch]
    else:
        grand_mean = (sizes / n) @ beta[:nb]
    # fitted = batch part + covariate part; stand_mean = grand mean + covariate part
    cov_part = design[:, nb:] @ beta[nb:] if design.shape[1] > nb else np.zeros((1, g))
    resid = dat - design[:, :nb] @ beta[:nb] - cov_part
    if ref_batch is not None:
        rs = resid[batch == ref_batch]
        var_pooled = _row_var(rs) if missing else np.einsum("ng,ng->g", rs, rs) / rs.shape[0]
    else:
        var_pooled = _row_var(resid) if missing else np.einsum("ng,ng->g", resid, resid) / n
    del resid
    stand_mean = grand_mean[None, :] + cov_part
    sd = np.sqrt(var_pooled)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (dat - stand_mean) / sd[None, :]
    return s, stand_mean, sd, var_pooled


def _batch_effects(s, bdes, batch, n_batch, obs, missing, mean_only):
    """Per batch and gene: the additive effect (least squares on the batch indicators) and the
    multiplicative one (the within-batch variance; 1 with ``mean_only``)."""
    if not missing:
        gamma_hat = np.linalg.solve(bdes.T @ bdes, bdes.T @ s)
    else:
        gamma_hat = _masked_lstsq(bdes, s, obs)
    if mean_only:
        delta_hat = np.ones((n_batch, s.shape[1]))
    else:
        delta_hat = np.vstack([_row_var(s[batch == b]) for b in range(n_batch)])
    return gamma_hat, delta_hat


def _shrink_batch_effects(s, batch, gamma_hat, delta_hat, gamma_bar, t2, a_prior, b_prior, *, parametric, mean_only, conv):
    """The empirical Bayes estimates per batch: ``it.sol`` (parametric), the posterior mean only
    (``mean.only``) or ``int.eprior`` (non-parametric)."""
    n_batch, g = gamma_hat.shape
    gamma_star = np.empty((n_batch, g))
    delta_star = np.empty((n_batch, g))
    iterations = np.zeros(n_batch, dtype=int)
    for b in range(n_batch):
        sb = s[batch == b]
        if parametric:
            if mean_only:
                gamma_star[b] = _postmean(gamma_hat[b], gamma_bar[b], 1.0, 1.0, t2[b])
                delta_star[b] = 1.0
            else:
                gamma_star[b], delta_star[b], iterations[b] = it_sol(
                    sb, gamma_hat[b], delta_hat[b], gamma_bar[b], t2[b], a_prior[b], b_prior[b], conv=conv
                )
        else:
            gamma_star[b], delta_star[b] = int_eprior(sb, gamma_hat[b], delta_hat[b])
    return gamma_star, delta_star, iterations


# ============================================================================================
# ComBat-seq (sva's ComBat_seq, Zhang, Parmigiani & Johnson 2020)


@dataclass
class CombatSeqResult:
    """Output of :func:`combat_seq`; per-batch arrays are batches × genes (NaN for genes that
    were not adjusted, i.e. all-zero in some batch)."""

    corrected: np.ndarray
    adjusted_genes: np.ndarray
    gamma_hat: np.ndarray
    gamma_star: np.ndarray
    phi_hat: np.ndarray
    phi_star: np.ndarray  # (G,)
    common_dispersion: np.ndarray  # (B,)
    dispersion_design: list  # per batch: "covariates" or "intercept"


def seq_design(batch, n_batch, group=None, covar_mod=None, *, full_mod: bool = True):
    """ComBat-seq's designs: ``mod`` (intercept, group indicators when ``full_mod`` and the
    group has two or more levels, covariate columns that are not all ones) and the full design
    (batch indicators + ``mod`` without its all-ones columns)."""
    n = batch.shape[0]
    bm = np.zeros((n, n_batch))
    bm[np.arange(n), batch] = 1.0
    cols = [np.ones((n, 1))]
    if group is not None:
        group = np.asarray(group)
        levels = np.unique(group)
        if full_mod and levels.size > 1:
            cols.append(np.column_stack([(group == lv).astype(np.float64) for lv in levels[1:]]))
    if covar_mod is not None and np.size(covar_mod):
        cm = np.asarray(covar_mod, dtype=np.float64).reshape(n, -1)
        cols.append(cm[:, ~np.all(cm == 1.0, axis=0)])
    mod = np.hstack(cols)
    design = np.hstack([bm, mod])
    design = design[:, ~np.all(design == 1.0, axis=0)]
    return mod, design


def _dnbinom_log(x, size, mu):
    """log of R's ``dnbinom(x, size, mu = mu)`` (lgamma form)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (
            special.gammaln(x + size)
            - special.gammaln(size)
            - special.gammaln(x + 1.0)
            + size * np.log(size / (size + mu))
            + x * np.log(mu / (size + mu))
        )
    # x * log(...) is 0 * -inf = NaN when x == 0 and mu == 0
    return np.where((x == 0) & (mu == 0), 0.0, out)


def monte_carlo_int_nb(dat, mu, gamma, phi, *, gene_subset_n: int | None = None, rng=None, block: int = 256):
    """sva's ``monte_carlo_int_NB`` for one batch (genes × samples-in-batch arrays).

    For gene i the posterior means of gamma and phi are averages over the other genes j,
    weighted by ``prod_k dnbinom(x_ik; mu_jk, 1/phi_j)`` (sva multiplies densities, as here via
    the exponential of the summed log densities). A gene whose weights are all zero keeps its
    own estimates. ``gene_subset_n`` draws that many other genes at random per gene (``rng``)."""
    G, nb = dat.shape
    size = 1.0 / phi
    g_star = np.empty(G)
    p_star = np.empty(G)
    rng = np.random.default_rng(rng)
    for s in range(0, G, block):
        e = min(G, s + block)
        m = e - s
        if gene_subset_n is None:
            loglh = np.zeros((m, G))
            for k in range(nb):
                loglh += _dnbinom_log(dat[s:e, k, None], size[None, :], mu[None, :, k])
            loglh[np.arange(m), np.arange(s, e)] = -np.inf
            with np.errstate(over="ignore"):
                lh = np.exp(loglh)
            lh[np.isnan(lh)] = 0.0
            sw = lh.sum(axis=1)
            gs = (lh @ gamma) / np.where(sw > 0, sw, 1.0)
            ps = (lh @ phi) / np.where(sw > 0, sw, 1.0)
        else:
            keys = rng.random((m, G))
            keys[np.arange(m), np.arange(s, e)] = np.inf
            idx = np.argpartition(keys, gene_subset_n - 1, axis=1)[:, :gene_subset_n]
            loglh = np.zeros(idx.shape)
            for k in range(nb):
                loglh += _dnbinom_log(dat[s:e, k, None], size[idx], mu[idx, k])
            with np.errstate(over="ignore"):
                lh = np.exp(loglh)
            lh[np.isnan(lh)] = 0.0
            sw = lh.sum(axis=1)
            gs = np.sum(lh * gamma[idx], axis=1) / np.where(sw > 0, sw, 1.0)
            ps = np.sum(lh * phi[idx], axis=1) / np.where(sw > 0, sw, 1.0)
        fallback = ~(np.isfinite(sw) & (sw > 0))
        g_star[s:e] = np.where(fallback, gamma[s:e], gs)
        p_star[s:e] = np.where(fallback, phi[s:e], ps)
    return g_star, p_star


def match_quantiles(counts, old_mu, old_phi, new_mu, new_phi):
    """sva's ``match_quantiles``: each count above 1 is mapped to the new NB distribution at the
    same cumulative probability, ``1 + qnbinom(pnbinom(y - 1; old), new)``; counts of 0 or 1 and
    counts whose probability is within 1e-4 of 1 are kept. Arrays genes × samples."""
    out = counts.astype(np.float64, copy=True)
    m = counts > 1
    if not m.any():
        return out
    y = counts[m]
    p = nb.pnbinom(y - 1, 1.0 / old_phi[m], old_mu[m])
    same = np.abs(p - 1) < 1e-4
    newv = y.copy()
    q = nb.qnbinom(p[~same], 1.0 / new_phi[m][~same], new_mu[m][~same])
    newv[~same] = 1 + q
    out[m] = newv
    return out


def combat_seq(
    counts: np.ndarray,
    batch: np.ndarray,
    group: np.ndarray | None = None,
    covar_mod: np.ndarray | None = None,
    *,
    full_mod: bool = True,
    shrink: bool = False,
    shrink_disp: bool = False,
    gene_subset_n: int | None = None,
    rng=None,
) -> CombatSeqResult:
    """ComBat-seq-adjust a count matrix (samples × genes), as sva 3.46's ``ComBat_seq``.

    1. genes that are all zero in some batch are returned unchanged;
    2. per batch, edgeR's Cox-Reid common dispersion and (``prior.df = 0``) gene-wise
       dispersions, with the within-batch covariate model when it has residual degrees of
       freedom and full rank, else the common dispersion of an intercept-only model for all genes;
    3. an NB GLM of batch + covariates (edgeR ``glmFit``, ``prior.count = 1e-4``) gives the gene
       background as the batch-size-weighted mean of the batch coefficients; a second fit with
       that background in the offset gives ``gamma_hat`` and the fitted means;
    4. optionally (``shrink``) empirical Bayes posterior means by integration over genes;
    5. the batch-free means ``mu / exp(gamma)`` and the mean dispersion across batches define
       the target distribution; counts are mapped by quantile matching.
    """
    x = np.asarray(counts, dtype=np.float64)
    batch = np.asarray(batch, dtype=np.intp)
    n, G = x.shape
    n_batch = int(batch.max()) + 1
    sizes = np.bincount(batch, minlength=n_batch)
    if (sizes <= 1).any():
        raise ValueError("ComBat-seq needs at least two samples in every batch")
    allzero = np.zeros(G, dtype=bool)
    for b in range(n_batch):
        allzero |= np.all(x[batch == b] == 0, axis=0)
    keep = ~allzero
    y = x[:, keep].T.copy()  # genes × samples
    g = y.shape[0]
    lib = y.sum(axis=0)
    log_lib = np.log(lib)

    mod, design = seq_design(batch, n_batch, group, covar_mod, full_mod=full_mod)
    msg = confounding_message(design, n_batch)
    if msg is not None:
        raise ValueError(msg)
    n_cov = design.shape[1] - n_batch

    phi_hat = np.empty((g, n_batch))
    common = np.empty(n_batch)
    how = []
    for b in range(n_batch):
        j = batch == b
        mb = mod[j]
        if sizes[b] <= n_cov + 1 or np.linalg.matrix_rank(mb) < mod.shape[1]:
            common[b] = nb.common_dispersion(y[:, j], None)
            phi_hat[:, b] = common[b]
            how.append("intercept")
        else:
            common[b] = nb.common_dispersion(y[:, j], mb)
            phi_hat[:, b] = nb.tagwise_dispersion(y[:, j], mb, common[b])
            how.append("covariates")
    phi_mat = phi_hat[:, batch]

    coef1, _, _ = nb.glm_fit(y, design, phi_mat, log_lib, prior_count=1e-4)
    alpha = coef1[:, :n_batch] @ (sizes / n)
    new_offset = log_lib[None, :] + alpha[:, None]
    coef2, mu_hat, _ = nb.glm_fit(y, design, phi_mat, new_offset, prior_count=1e-4)
    gamma_hat = coef2[:, :n_batch]

    if shrink:
        gamma_star = np.empty_like(gamma_hat)
        phi_star_mat = np.empty_like(phi_hat)
        for b in range(n_batch):
            j = batch == b
            gamma_star[:, b], phi_star_mat[:, b] = monte_carlo_int_nb(
                y[:, j], mu_hat[:, j], gamma_hat[:, b], phi_hat[:, b], gene_subset_n=gene_subset_n, rng=rng
            )
        if not shrink_disp:
            phi_star_mat = phi_hat
    else:
        gamma_star = gamma_hat
        phi_star_mat = phi_hat

    mu_star = np.exp(np.log(mu_hat) - gamma_star[:, batch])
    phi_star = phi_star_mat.mean(axis=1)
    adj = match_quantiles(y, mu_hat, phi_mat, mu_star, np.broadcast_to(phi_star[:, None], y.shape))

    out = x.copy()
    out[:, keep] = adj.T

    def full(a):
        f = np.full((a.shape[1], G), np.nan)
        f[:, keep] = a.T
        return f

    ps = np.full(G, np.nan)
    ps[keep] = phi_star
    return CombatSeqResult(
        corrected=out,
        adjusted_genes=keep,
        gamma_hat=full(gamma_hat),
        gamma_star=full(gamma_star),
        phi_hat=full(phi_hat),
        phi_star=ps,
        common_dispersion=common,
        dispersion_design=how,
    )
