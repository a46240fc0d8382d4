"""DESeq2's regularised logarithm (``rlog``, ``rlogData``; DESeq2 1.52), vectorised over genes.

Arrays are samples × genes. The transformation is a ridge-penalised negative binomial GLM per
gene with one coefficient per sample on top of an intercept; the fitted linear predictor, on the
log2 scale, is the transformed value. The steps follow DESeq2 1.52's ``rlog``:

1. dispersions as ``rlog`` obtains them: gene-wise Cox-Reid estimates for the design (``~ 1``
   when blind) and the dispersion-mean trend (:mod:`.dispersion`; a failed parametric trend falls
   back to the local fit, as DESeq2 does); only the trend (``dispFit``) is used further;
2. the prior variance of the sample coefficients (:func:`rlog_prior_variance`): the log fold
   changes ``log2(q + 0.5) - log2(baseMean + 0.5)`` of every normalised count ``q`` over its
   gene's mean, weighted by ``1 / (1 / baseMean + dispFit)``, and the variance of the zero-centred
   normal whose 97.5% quantile equals their weighted 95% quantile of absolute values
   (``matchWeightedUpperQuantileForVariance``);
3. the fit (:func:`sample_design`, :func:`rlog_fit`): the design ``Intercept + sample_1 + ... +
   sample_n`` (rank ``n``, one column more than samples), a ridge penalty ``1 / betaPriorVar`` on
   every sample column and ``1e-6`` on the intercept, the dispersions fixed at the trend,
   DESeq2's IRLS with ``betaTol = 1e-4`` and no optimiser fallback for genes that merely did not
   converge (``useOptim = FALSE``). The iterations are those of :func:`~.nbinom.fit_nb_glm`, but
   each step is solved in closed form (:func:`rlog_irls`: the penalised normal equations of this
   design are an arrowhead system), O(samples) per gene instead of a dense solve with samples + 1
   unknowns; genes with non-finite coefficients go to :func:`~.nbinom.fit_nb_glm` and its
   optimiser, as ``fitNbinomGLMs`` refits them;
4. the transformed values ``X beta`` on the log2 scale; genes with only zero counts get 0 (and
   an intercept of ``-inf``).

``sparse_fraction`` reproduces ``sparseTest``: the fraction of genes with a sum of normalised
counts above 100 whose largest normalised count is more than 90% of that sum (DESeq2 warns above
10%).

Genes are independent in steps 1 (gene-wise part) and 3: both walk blocks of genes through the
gene-block driver; steps 1 (trend) and 2 need all genes and use per-gene vectors (and, for the
quantile of step 2, the log fold changes, one value per matrix element).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.stats as sst

from .._blocks import for_each_block, gene_blocks, is_dask, read_block
from .deseq import weighted_upper_quantile
from .dispersion import DispersionTrend, estimate_gene_dispersions, fit_dispersion_trend
from .nbinom import _LARGE, LOG2E, fit_nb_glm, nb_logpmf

#: DESeq2's ``rlogData`` convergence tolerance on the relative change of the deviance, and
#: ``fitNbinomGLMs``' iteration limit
RLOG_BETA_TOL, RLOG_MAXIT = 1e-4, 100
#: the (very wide) ridge penalty on the intercept, log2 scale
INTERCEPT_LAMBDA = 1e-6
#: ``sparseTest(x, p = 0.9, t1 = 100, t2 = 0.1)``
SPARSE_SHARE, SPARSE_MIN_SUM, SPARSE_WARN = 0.9, 100.0, 0.1


@dataclass
class RlogResult:
    """Output of :func:`rlog`.

    Attributes
    ----------
    rlog
        Transformed values, samples × genes, log2 scale (0 for genes with only zero counts).
    intercept
        Fitted intercept per gene, log2 scale (DESeq2's ``rlogIntercept``; ``-inf`` for all-zero genes).
    beta_prior_var
        Variance of the normal prior on the sample coefficients (DESeq2's ``betaPriorVar``).
    trend
        The dispersion-mean trend (``fit_type`` is the one actually fitted).
    base_mean
        Mean of the normalised counts per gene.
    disp_gene_est
        Gene-wise dispersion estimates (NaN for all-zero genes).
    disp_fit
        The trend at each gene's mean: the dispersions of the fit (NaN for all-zero genes).
    all_zero
        Genes with only zero counts.
    converged
        Genes whose IRLS converged within 100 iterations (all-zero genes count as converged).
    optimized
        Genes refitted by the direct optimiser (non-finite coefficients or non-positive variances).
    sparse_fraction
        ``sparseTest``'s fraction (NaN when no gene has a sum of normalised counts above 100).
    """

    rlog: np.ndarray
    intercept: np.ndarray
    beta_prior_var: float
    trend: DispersionTrend
    base_mean: np.ndarray
    disp_gene_est: np.ndarray
    disp_fit: np.ndarray
    all_zero: np.ndarray
    converged: np.ndarray
    optimized: np.ndarray
    sparse_fraction: float


def n_blocks(n_genes: int, n_samples: int, block_genes: int | None = None) -> int:
    """Number of gene blocks each pass of :func:`rlog` walks (for progress bars)."""
    return len(gene_blocks(n_genes, n_samples, block_genes=block_genes))


def sample_design(n_samples: int) -> np.ndarray:
    """``rlogData``'s design: an intercept column followed by one indicator column per sample
    (``n × (n + 1)``, rank ``n``; identifiable only through the penalty)."""
    n = int(n_samples)
    return np.hstack([np.ones((n, 1)), np.eye(n)])


def rlog_lambda(n_samples: int, beta_prior_var: float) -> np.ndarray:
    """Ridge penalties (log2 scale) for :func:`sample_design`: ``1e-6`` on the intercept and
    ``1 / beta_prior_var`` on every sample column."""
    return np.concatenate([[INTERCEPT_LAMBDA], np.full(int(n_samples), 1.0 / float(beta_prior_var))])


def rlog_prior_variance(abs_lfc: np.ndarray, weights: np.ndarray, *, upper_quantile: float = 0.05) -> float:
    """DESeq2's ``matchWeightedUpperQuantileForVariance``: the variance of a zero-centred normal
    whose ``1 - upper_quantile / 2`` quantile equals the weighted ``1 - upper_quantile`` quantile
    (Hmisc's ``wtd.quantile`` with normalised weights) of the absolute values ``abs_lfc``."""
    q = weighted_upper_quantile(np.ravel(abs_lfc), np.ravel(weights), 1.0 - upper_quantile)
    return float((q / sst.norm.ppf(1.0 - upper_quantile / 2)) ** 2)


def rlog_fit(
    y: np.ndarray,
    disp_fit: np.ndarray,
    beta_prior_var: float,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The penalised fit of ``rlogData`` for a block of genes that are not all zero (``y`` and
    ``norm_factors`` genes × samples).

    DESeq2's IRLS (``fitBeta``) on :func:`sample_design`, run by :func:`rlog_irls`, which solves
    each step in closed form; genes whose coefficients end up non-finite are refitted by the
    general engine (:func:`~.nbinom.fit_nb_glm`, which then uses its optimiser, as
    ``fitNbinomGLMs`` does for them). Returns the coefficients (genes × (1 + samples), natural
    log, intercept first), convergence and which genes the optimiser refitted."""
    g, n = y.shape
    nf = np.asarray(size_factors, dtype=np.float64)[None, :] if norm_factors is None else norm_factors
    beta, iters = rlog_irls(y, nf, disp_fit, beta_prior_var)
    converged = iters < RLOG_MAXIT
    optimized = np.zeros(g, dtype=bool)
    bad = ~np.isfinite(beta).all(axis=1)
    if bad.any():
        fit = fit_nb_glm(
            y[bad], sample_design(n), disp_fit[bad], size_factors=size_factors,
            norm_factors=None if norm_factors is None else norm_factors[bad],
            lambda_=rlog_lambda(n, beta_prior_var), beta_tol=RLOG_BETA_TOL, maxit=RLOG_MAXIT, use_optim=False,
            loglik=False, gene_major=True,
        )  # fmt: skip
        beta[bad], converged[bad], optimized[bad] = fit.beta, fit.converged, fit.optimized
    return beta, converged, optimized


def rlog_irls(
    y: np.ndarray,
    nf: np.ndarray,
    alpha: np.ndarray,
    beta_prior_var: float,
    *,
    beta_tol: float = RLOG_BETA_TOL,
    maxit: int = RLOG_MAXIT,
    minmu: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """DESeq2's ``fitBeta`` for :func:`sample_design`, all genes at once (genes × samples ``y``;
    ``nf`` genes × samples or one row for all genes).

    The same iterations as :func:`~.nbinom.fit_nb_glm` (start at the log mean normalised count
    and zero sample coefficients; weights ``mu / (1 + alpha mu)`` at means bounded below by
    ``minmu``; stop when the relative change of the deviance drops below ``beta_tol``, not on the
    first iteration; a coefficient beyond ±30 or a NaN deviance stops the gene as not
    converged), but each step's penalised normal equations are solved in closed form: with an
    intercept ``b0`` and sample coefficients ``b_j``, the matrix ``X'WX + Λ`` is an arrowhead,
    so ``b0 = Σ w z r / (λ0 + Σ w r)`` with ``r = λ / (w + λ)`` and ``b_j = w_j (z_j - b0) /
    (w_j + λ)`` (``z`` the working response, ``λ0``/``λ`` the natural-log penalties). That is
    O(samples) per gene and step instead of a dense solve with samples + 1 unknowns.

    Returns the coefficients (genes × (1 + samples), natural log) and the iterations per gene
    (``maxit`` for genes that did not converge)."""
    g, n = y.shape
    lam0 = INTERCEPT_LAMBDA * LOG2E**2
    lam = LOG2E**2 / float(beta_prior_var)
    alpha = np.asarray(alpha, dtype=np.float64)
    shared = nf.shape[0] == 1
    with np.errstate(divide="ignore"):
        b0 = np.log((y / nf).mean(axis=1))
    b = np.zeros((g, n))
    iters = np.zeros(g, dtype=np.int64)
    dev_old = np.zeros(g)
    active = np.arange(g)

    def bounded_means(rows, b0_r, b_r):
        f = nf if shared else nf[rows]
        return np.maximum(f * np.exp(b0_r[:, None] + b_r), minmu), f

    mu, f = bounded_means(active, b0, b)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t in range(maxit):
            if active.size == 0:
                break
            yy, a = y[active], alpha[active]
            iters[active] += 1
            w = mu / (1.0 + a[:, None] * mu)
            z = np.log(mu / f) + (yy - mu) / mu
            r = lam / (w + lam)
            nb0 = (w * z * r).sum(axis=1) / (lam0 + (w * r).sum(axis=1))
            nb = w * (z - nb0[:, None]) / (w + lam)
            b0[active], b[active] = nb0, nb
            large = ~((np.abs(nb0) <= _LARGE) & (np.abs(nb) <= _LARGE).all(axis=1))
            mu, f = bounded_means(active, nb0, nb)
            dev = -2.0 * nb_logpmf(yy, mu, a[:, None]).sum(axis=1)
            conv = np.abs(dev - dev_old[active]) / (np.abs(dev) + 0.1)
            stop = large | np.isnan(conv)
            iters[active[stop]] = maxit
            done = stop | ((t > 0) & (conv < beta_tol))
            dev_old[active] = dev
            keep = ~done
            active, mu = active[keep], mu[keep]
            f = f if shared else f[keep]
    return np.column_stack([b0, b]), iters


class _Blocks:
    """Reads blocks of the counts (and normalisation factors) genes × samples."""

    def __init__(self, counts, size_factors, norm_factors, block_genes):
        n, g = counts.shape
        self.counts, self.nf = counts, norm_factors
        self.sf = None if size_factors is None else np.asarray(size_factors, dtype=np.float64).ravel()
        if self.sf is None and self.nf is None:
            self.sf = np.ones(n)
        self.n, self.g = n, g
        self.blocks = gene_blocks(g, n, block_genes=block_genes)

    def y(self, sl, keep=None) -> np.ndarray:
        return read_block(self.counts, sl, gene_major=True, keep=keep)

    def nf_block(self, sl, keep=None) -> np.ndarray | None:
        return None if self.nf is None else read_block(self.nf, sl, gene_major=True, keep=keep)

    def normalised(self, sl, keep=None) -> np.ndarray:
        nf = self.nf_block(sl, keep)
        return self.y(sl, keep) / (self.sf[None, :] if nf is None else nf)


@dataclass
class _Dispersions:
    base_mean: np.ndarray
    disp_gene_est: np.ndarray
    all_zero: np.ndarray
    sparse_fraction: float


def _xim(b: _Blocks, nz: np.ndarray) -> float:
    """DESeq2's ``momentsDispEstimate`` constant: ``mean(1 / sizeFactors)``, or with normalisation
    factors ``mean(1 / colMeans(normalizationFactors))`` over the genes that are not all zero."""
    if b.nf is None:
        return float(np.mean(1.0 / b.sf))
    if not is_dask(b.nf):
        nf = np.asarray(b.nf, dtype=np.float64)
        return float(np.mean(1.0 / nf[:, nz].mean(axis=1)))
    total = np.zeros(b.n)
    for sl in b.blocks:
        total += b.nf_block(sl, nz[sl]).sum(axis=0)
    return float(np.mean(1.0 / (total / nz.sum())))


def _gene_dispersions(b: _Blocks, design: np.ndarray, on_block) -> _Dispersions:
    """Step 1, per block: base means, gene-wise dispersions for ``design`` and ``sparseTest``'s counts."""
    all_zero = np.zeros(b.g, dtype=bool)
    for sl in b.blocks:
        all_zero[sl] = b.y(sl).sum(axis=1) == 0
    nz = ~all_zero
    if not nz.any():
        raise ValueError("every gene is zero in all samples")
    xim = _xim(b, nz)
    base_mean, disp = np.empty(b.g), np.full(b.g, np.nan)
    n_sum, n_sparse = 0, 0

    def one_block(sl):
        nonlocal n_sum, n_sparse
        ge = estimate_gene_dispersions(
            b.y(sl), design, size_factors=b.sf, norm_factors=b.nf_block(sl), xim=xim, gene_major=True
        )
        base_mean[sl], disp[sl] = ge.base_mean, ge.disp_gene_est
        q = b.normalised(sl)
        rs = q.sum(axis=1)
        big = rs > SPARSE_MIN_SUM
        n_sum += int(big.sum())
        n_sparse += int((q[big].max(axis=1) / rs[big] > SPARSE_SHARE).sum())

    for_each_block(one_block, b.blocks, on_block=on_block, stage="gene-wise dispersions")
    frac = n_sparse / n_sum if n_sum else np.nan
    return _Dispersions(base_mean=base_mean, disp_gene_est=disp, all_zero=all_zero, sparse_fraction=frac)


def _prior_variance(b: _Blocks, d: _Dispersions, disp_fit: np.ndarray) -> float:
    """Step 2: ``betaPriorVar`` from the log fold changes of every normalised count over its
    gene's mean (genes that are not all zero)."""
    nz = ~d.all_zero
    lfcs, wts = [], []
    for sl in b.blocks:
        keep = nz[sl]
        if not keep.any():
            continue
        bm = d.base_mean[sl][keep]
        lfc = np.log2(b.normalised(sl, keep) + 0.5) - np.log2(bm + 0.5)[:, None]
        lfcs.append(np.abs(lfc).ravel())
        w = 1.0 / (1.0 / bm + disp_fit[sl][keep])
        wts.append(np.repeat(w, b.n))
    return rlog_prior_variance(np.concatenate(lfcs), np.concatenate(wts))


def rlog(
    counts,
    design: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors=None,
    fit_type: str = "parametric",
    beta_prior_var: float | None = None,
    block_genes: int | None = None,
    on_block: Callable[[str], None] | None = None,
) -> RlogResult:
    """DESeq2's ``rlog``: dispersions for ``design``, the prior variance, the penalised fit.

    ``blind = TRUE`` is an intercept-only ``design``; with ``blind = FALSE`` DESeq2 uses the
    trend fitted on the design's dispersions (as after ``DESeq``), which is what a full ``design``
    gives here. The design only enters the dispersions: the fit itself always uses
    :func:`sample_design`.

    Parameters
    ----------
    counts
        Raw counts, samples × genes (numpy, scipy sparse or dask; read block by block).
    design
        Design matrix for the dispersions, samples × coefficients.
    size_factors, norm_factors
        Size factors (n,) or normalisation factors (samples × genes); ones if both are ``None``.
    fit_type
        Dispersion trend: ``"parametric"``, ``"local"`` or ``"mean"``.
    beta_prior_var
        Prior variance of the sample coefficients (DESeq2's ``betaPriorVar``); estimated when ``None``.
    block_genes
        Genes per block (default: the block driver's rule).
    on_block
        Called with a stage name after each block (progress).

    Returns
    -------
    :class:`RlogResult`
    """
    if counts.ndim != 2:
        raise ValueError(f"counts must be samples × genes, got {counts.ndim} dimensions")
    b = _Blocks(counts, size_factors, norm_factors, block_genes)
    X = np.asarray(design, dtype=np.float64)
    d = _gene_dispersions(b, X, on_block)
    nz = ~d.all_zero
    trend = fit_dispersion_trend(d.base_mean, d.disp_gene_est, fit_type=fit_type)
    disp_fit = np.full(b.g, np.nan)
    disp_fit[nz] = trend(d.base_mean[nz])
    if beta_prior_var is None:
        beta_prior_var = _prior_variance(b, d, disp_fit)
    elif not (np.isfinite(beta_prior_var) and beta_prior_var > 0):
        raise ValueError(f"beta_prior_var must be a finite positive number, got {beta_prior_var!r}")

    out = np.zeros((b.n, b.g))
    intercept = np.full(b.g, -np.inf)
    converged = np.ones(b.g, dtype=bool)
    optimized = np.zeros(b.g, dtype=bool)
    Xs = sample_design(b.n)

    def one_block(sl):
        keep = nz[sl]
        if not keep.any():
            return
        idx = np.flatnonzero(keep) + sl.start
        beta, conv, opt = rlog_fit(
            b.y(sl, keep), disp_fit[idx], beta_prior_var, size_factors=b.sf if b.nf is None else None,
            norm_factors=b.nf_block(sl, keep),
        )  # fmt: skip
        beta = beta * LOG2E
        out[:, idx] = Xs @ beta.T
        intercept[idx] = beta[:, 0]
        converged[idx], optimized[idx] = conv, opt

    for_each_block(one_block, b.blocks, on_block=on_block, stage="rlog fit")
    return RlogResult(
        rlog=out, intercept=intercept, beta_prior_var=float(beta_prior_var), trend=trend, base_mean=d.base_mean,
        disp_gene_est=d.disp_gene_est, disp_fit=disp_fit, all_zero=d.all_zero, converged=converged,
        optimized=optimized, sparse_fraction=float(d.sparse_fraction),
    )  # fmt: skip
