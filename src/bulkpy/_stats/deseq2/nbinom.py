"""Negative binomial GLM engine (DESeq2's ``fitNbinomGLMs``), vectorised over genes.

Public arrays are samples × genes, like ``AnnData.X``; internally the engine works gene-major
(genes × samples) so that every per-gene quantity is a contiguous row, and the per-gene
iterations run inside compiled kernels (:mod:`bulkpy._stats.deseq2._kernels`, numba), not in Python.
Every function works on any block of genes (nothing couples genes), so it can be mapped over
chunks of a large matrix.

The fit follows DESeq2 1.38 (``fitNbinomGLMs`` and the C++ ``fitBeta``):

* coefficients on the natural-log scale; a ridge penalty ``lambda`` given, as in DESeq2, on the
  log2 scale (default ``1e-6`` per coefficient, i.e. a very wide normal prior);
* iteratively reweighted least squares from the least-squares fit of ``log(normalised + 0.1)``,
  weights ``mu / (1 + alpha mu)``, fitted means bounded below by ``minmu`` (each step solves the
  ridge normal equations by Cholesky where DESeq2 uses a QR of the augmented weighted design:
  the same solution to rounding); convergence when the
  relative change of the deviance ``|dev - dev_old| / (|dev| + 0.1)`` drops below ``beta_tol``
  (not on the first iteration), at most ``maxit`` iterations; a coefficient beyond ±30 stops the
  gene and marks it not converged (DESeq2's "large beta" rule);
* standard errors from the sandwich ``(X'WX + Λ)^-1 X'WX (X'WX + Λ)^-1`` and hat diagonals of
  ``W^½ X (X'WX + Λ)^-1 X' W^½``;
* genes that did not converge (or gave NaN / non-positive variances) are refitted by maximising
  the penalised likelihood directly (DESeq2: ``optim(method="L-BFGS-B")`` per gene, box ±30 on the
  log2 scale). Here that fallback is a vectorised projected Newton ascent on the same objective
  (the negative binomial log-likelihood is concave in the coefficients, so both find the same
  optimum; ours is solved to a tighter tolerance than L-BFGS-B's default ``factr``);
* an intercept-only design with no real penalty skips the iterations, as DESeq2 does:
  ``beta = log(mean of normalised counts)``.

The log-likelihood uses R's saddle-point form of the negative binomial density
(``dnbinom_mu``: Loader's ``stirlerr``/``bd0``), so deviances agree with R to rounding and stay
accurate for dispersions as small as 1e-8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._kernels import design_cells, irls_kernel_par, log_norm_counts_par, n_chunks, nb_logpmf_flat_par

LOG2E = 1.0 / np.log(2.0)
_LARGE = 30.0


def nb_logpmf(y: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Log density of the negative binomial with mean ``mu`` and dispersion ``alpha``
    (variance ``mu + alpha mu^2``), elementwise with broadcasting; as R's
    ``dnbinom(y, mu=mu, size=1/alpha, log=TRUE)`` (Loader's saddle-point form)."""
    y, mu, alpha = np.broadcast_arrays(
        np.asarray(y, dtype=np.float64), np.asarray(mu, dtype=np.float64), np.asarray(alpha, dtype=np.float64)
    )
    shape = y.shape
    out = np.empty(y.size)
    nb_logpmf_flat_par(
        np.ascontiguousarray(y).ravel(), np.ascontiguousarray(mu).ravel(), np.ascontiguousarray(alpha).ravel(), out
    )
    return out.reshape(shape)


def nb_loglik(y: np.ndarray, mu: np.ndarray, alpha: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-gene negative binomial log-likelihood; ``y``/``mu`` genes × samples, ``alpha`` per gene."""
    ll = nb_logpmf(y, mu, np.asarray(alpha, dtype=np.float64)[:, None])
    if weights is not None:
        ll = ll * weights
    return ll.sum(axis=1)


@dataclass
class NBGLMFit:
    """Result of :func:`fit_nb_glm`. Matrices of samples × genes follow ``AnnData.X``.

    Attributes
    ----------
    beta
        Coefficients, genes × coefficients, natural-log scale (multiply by ``1/log(2)`` for log2).
    beta_se
        Their standard errors (sandwich), natural-log scale.
    mu
        Fitted means ``nf * exp(X beta)``, samples × genes (not bounded by ``minmu``, as DESeq2).
    hat_diagonals
        Diagonal of the hat matrix, samples × genes (from the IRLS fit, as DESeq2 keeps them).
    log_like
        Log-likelihood per gene at the fitted means (bounded by ``minmu`` in the IRLS branch).
    deviance
        ``-2 * log_like``.
    iterations
        IRLS iterations per gene (``maxit`` when stopped by a large or non-finite coefficient).
    converged
        Convergence per gene after the fallback optimisation.
    optimized
        Genes refitted by the fallback optimiser.
    """

    beta: np.ndarray
    beta_se: np.ndarray
    mu: np.ndarray
    hat_diagonals: np.ndarray
    log_like: np.ndarray
    deviance: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    optimized: np.ndarray


def norm_factor_matrix(n_samples: int, n_genes: int, size_factors=None, norm_factors=None) -> np.ndarray:
    """Genes × samples matrix of normalisation factors from size factors (n,) or factors (n × g)."""
    if norm_factors is not None:
        nf = np.asarray(norm_factors, dtype=np.float64)
        if nf.shape != (n_samples, n_genes):
            raise ValueError(f"norm_factors must have shape (samples, genes) = {(n_samples, n_genes)}, got {nf.shape}")
        return np.ascontiguousarray(nf.T)
    if size_factors is None:
        return np.ones((n_genes, n_samples))
    sf = np.asarray(size_factors, dtype=np.float64).ravel()
    if sf.shape != (n_samples,):
        raise ValueError(f"size_factors must have one value per sample ({n_samples}), got shape {sf.shape}")
    return np.broadcast_to(sf, (n_genes, n_samples))


def _xtwx(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Batched X' diag(w_g) X for every row of ``w`` (genes × samples) -> genes × p × p."""
    n, p = X.shape
    xx = (X[:, :, None] * X[:, None, :]).reshape(n, p * p)
    return (w @ xx).reshape(w.shape[0], p, p)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve of a (g, p, p) x = b (g, p)."""
    return np.linalg.solve(a, b[..., None])[..., 0]


def _initial_beta(y: np.ndarray, nf: np.ndarray, X: np.ndarray, *, shared: bool = False) -> np.ndarray:
    """Least-squares fit of ``log(normalised counts + 0.1)`` (DESeq2's starting values); with
    ``shared`` ``nf`` is one row of factors for every gene."""
    q, r = np.linalg.qr(X)
    ly = np.empty(y.shape)
    log_norm_counts_par(np.ascontiguousarray(y), np.ascontiguousarray(nf), shared, ly)
    return np.linalg.solve(r, q.T @ ly.T).T


def _penalised_loglik(y, nf, X, alpha, lam_nat, beta, weights=None):
    mu = nf * np.exp(beta @ X.T)
    ll = nb_logpmf(y, mu, alpha[:, None])
    if weights is not None:
        ll = ll * weights
    ll = ll.sum(axis=1) - 0.5 * (beta * beta * lam_nat).sum(axis=1)
    return np.where(np.isfinite(ll), ll, -np.inf)


def _newton_fallback(y, nf, X, alpha, lam_nat, beta0, *, maxit=200, tol=1e-12):
    """Maximise the ridge-penalised NB log-likelihood (DESeq2's optim fallback) by projected
    Newton ascent with step halving, all rows at once; box |beta| <= 30 log2 units."""
    g = y.shape[0]
    bound = _LARGE / LOG2E
    beta = np.clip(beta0, -bound, bound)
    obj = _penalised_loglik(y, nf, X, alpha, lam_nat, beta)
    converged = np.zeros(g, dtype=bool)
    active = np.arange(g)
    for _ in range(maxit):
        if active.size == 0:
            break
        b = beta[active]
        yy, ff, aa = y[active], nf[active], alpha[active]
        mu = ff * np.exp(b @ X.T)
        denom = 1.0 + aa[:, None] * mu
        grad = ((yy - mu) / denom) @ X - lam_nat * b
        # observed information; the NB log-likelihood is concave in eta
        wobs = mu * (1.0 + aa[:, None] * yy) / denom**2
        hess = _xtwx(wobs, X) + np.diag(lam_nat)
        try:
            step = _solve(hess, grad)
        except np.linalg.LinAlgError:
            step = grad / np.maximum(np.einsum("gii->gi", hess), 1e-12)
        old = obj[active]
        t = np.ones(active.size)
        accepted = np.zeros(active.size, dtype=bool)
        new_b = b.copy()
        new_obj = old.copy()
        for _h in range(40):
            todo = ~accepted
            if not todo.any():
                break
            cand = np.clip(b[todo] + t[todo, None] * step[todo], -bound, bound)
            val = _penalised_loglik(yy[todo], ff[todo], X, aa[todo], lam_nat, cand)
            good = val >= old[todo] - 1e-12 * np.abs(old[todo])
            idx = np.flatnonzero(todo)[good]
            new_b[idx] = cand[good]
            new_obj[idx] = val[good]
            accepted[idx] = True
            t[todo] *= 0.5
        beta[active] = new_b
        obj[active] = new_obj
        delta = np.abs(new_obj - old)
        done = ~accepted | (delta <= tol * (np.abs(old) + tol)) | (np.abs(new_b - b).max(axis=1) < 1e-12)
        converged[active[done & accepted]] = True
        converged[active[done & ~accepted]] = True  # no ascent direction left: at the optimum
        active = active[~done]
    return beta, converged


def fit_nb_glm(
    counts: np.ndarray,
    design: np.ndarray,
    dispersions: np.ndarray,
    *,
    size_factors: np.ndarray | None = None,
    norm_factors: np.ndarray | None = None,
    lambda_: np.ndarray | float | None = None,
    beta_tol: float = 1e-8,
    maxit: int = 100,
    use_optim: bool = True,
    minmu: float = 0.5,
    intercept_shortcut: bool = True,
    loglik: bool = True,
    gene_major: bool = False,
) -> NBGLMFit:
    """Fit a negative binomial GLM with log link to every gene (DESeq2's ``fitNbinomGLMs``).

    Parameters
    ----------
    counts
        Raw counts, samples × genes.
    design
        Design matrix, samples × coefficients, full column rank.
    dispersions
        One dispersion per gene (variance ``mu + alpha mu^2``).
    size_factors
        Per-sample size factors (n,), or ``None``.
    norm_factors
        Normalisation factors, samples × genes (overrides ``size_factors``), or ``None``.
    lambda_
        Ridge penalty per coefficient on the log2 scale (DESeq2's ``lambda``); default ``1e-6``.
        When given, the design may be rank deficient (DESeq2's expanded model matrices for the
        normal prior on fold changes): the fit then starts from zero coefficients (the intercept
        column, if any, at the log mean of the normalised counts), as DESeq2 does.
    beta_tol
        Convergence tolerance on the relative change of the deviance.
    maxit
        Maximum number of IRLS iterations.
    use_optim
        Refit genes that did not converge with the direct optimiser (DESeq2's ``useOptim``);
        genes with NaN coefficients or non-positive variances are always refitted.
    minmu
        Lower bound on fitted means inside the iterations.
    intercept_shortcut
        For an intercept-only design with ``lambda_ <= 1e-6`` use the closed form, as DESeq2.
    loglik
        Compute the log-likelihood and deviance (NaN otherwise; the fit for the gene-wise
        dispersions needs only the means).
    gene_major
        ``counts``, ``norm_factors`` and the returned ``mu`` and ``hat_diagonals`` are genes ×
        samples (the engines' layout: no transposed copies).

    Returns
    -------
    :class:`NBGLMFit`
    """
    y = np.asarray(counts, dtype=np.float64)
    y = np.ascontiguousarray(y if gene_major else y.T)
    X = np.asarray(design, dtype=np.float64)
    g, n = y.shape
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"design must be samples × coefficients with {n} rows, got shape {X.shape}")
    p = X.shape[1]
    alpha = np.asarray(dispersions, dtype=np.float64).ravel()
    if alpha.shape != (g,):
        raise ValueError(f"dispersions must have one value per gene ({g}), got shape {alpha.shape}")
    if not (np.all(np.isfinite(alpha)) and np.all(alpha > 0)):
        raise ValueError("dispersions must be finite and positive (leave out all-zero genes, whose dispersion is NaN)")
    if gene_major and norm_factors is not None:
        norm_factors = np.asarray(norm_factors, dtype=np.float64).T
    nf_shared = norm_factors is None  # the same factors for every gene: kept as one row (1 × n)
    if nf_shared:
        nf = np.ascontiguousarray(norm_factor_matrix(n, 1, size_factors, None))
    else:
        nf = np.ascontiguousarray(norm_factor_matrix(n, g, size_factors, norm_factors))

    def out_layout(a):
        return a if gene_major else a.T.copy()

    lam = np.full(p, 1e-6) if lambda_ is None else np.broadcast_to(np.asarray(lambda_, dtype=np.float64), (p,)).copy()
    lam_nat = lam * LOG2E**2  # lambda / log(2)^2

    if intercept_shortcut and p == 1 and np.all(X == 1) and np.all(lam <= 1e-6):
        fit = _intercept_only_fit(y, nf, alpha, loglik=loglik)
    else:
        beta0 = _starting_coefficients(y, nf, X, nf_shared=nf_shared, penalised=lambda_ is not None)
        fit, var = _irls(y, nf, nf_shared, X, alpha, lam_nat, beta0, beta_tol=beta_tol, maxit=maxit, minmu=minmu)
        if not loglik:
            fit.log_like[:] = np.nan
        stable = np.isfinite(fit.beta).all(axis=1)
        var_pos = (var > 0).all(axis=1)
        redo = (~fit.converged | ~stable | ~var_pos) if use_optim else (~stable | ~var_pos)
        if redo.any():
            _optim_refit(fit, np.flatnonzero(redo), y, nf, nf_shared, X, alpha, lam_nat, beta0, minmu=minmu, loglik=loglik)
        fit.deviance = -2 * fit.log_like
    fit.mu, fit.hat_diagonals = out_layout(fit.mu), out_layout(fit.hat_diagonals)
    return fit


def _intercept_only_fit(y, nf, alpha, *, loglik: bool) -> NBGLMFit:
    """The closed form DESeq2 uses for ``~ 1`` with no penalty: log of the mean normalised count."""
    g = y.shape[0]
    with np.errstate(divide="ignore"):
        b = np.log((y / nf).mean(axis=1))[:, None]
    mu = nf * np.exp(b)
    ll = nb_loglik(y, mu, alpha) if loglik else np.full(g, np.nan)
    w = 1.0 / (1.0 / mu + alpha[:, None])
    xtwx = w.sum(axis=1)
    return NBGLMFit(
        beta=b, beta_se=np.sqrt(1.0 / xtwx)[:, None], mu=mu, hat_diagonals=w / xtwx[:, None], log_like=ll,
        deviance=-2 * ll, iterations=np.ones(g, dtype=np.int64), converged=np.ones(g, dtype=bool),
        optimized=np.zeros(g, dtype=bool),
    )  # fmt: skip


def _starting_coefficients(y, nf, X, *, nf_shared: bool, penalised: bool) -> np.ndarray:
    """IRLS starting values: DESeq2's least-squares start, or for a rank-deficient penalised design
    (the expanded model matrices of the normal prior) zeros with the log mean normalised count in the
    intercept column."""
    g, p = y.shape[0], X.shape[1]
    if np.linalg.matrix_rank(X) == p:
        return _initial_beta(y, nf, X, shared=nf_shared)
    if not penalised:
        raise ValueError("the design matrix is not of full column rank; remove redundant or all-zero columns")
    beta0 = np.zeros((g, p))
    ones = np.flatnonzero(np.all(X == 1.0, axis=0))
    if ones.size:
        with np.errstate(divide="ignore"):
            beta0[:, ones[0]] = np.log((y / nf).mean(axis=1))
    else:
        beta0[:] = 1.0
    return beta0


def _irls(y, nf, nf_shared, X, alpha, lam_nat, beta0, *, beta_tol, maxit, minmu) -> tuple[NBGLMFit, np.ndarray]:
    """DESeq2's ridge-penalised IRLS for every gene in the compiled kernel (genes × samples); also
    returns the coefficients' variances (genes × coefficients)."""
    g, n = y.shape
    p = X.shape[1]
    beta = beta0.copy()
    mu, hat = np.empty((g, n)), np.empty((g, n))
    iters = np.zeros(g, dtype=np.int64)
    var, dev, ll = np.empty((g, p)), np.empty(g), np.empty(g)
    cell, XC = design_cells(X)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        irls_kernel_par(
            y, nf, nf_shared, cell, XC, alpha, lam_nat, beta, float(beta_tol), int(maxit), float(minmu),
            mu, iters, hat, var, dev, ll, n_chunks(g),
        )  # fmt: skip
    fit = NBGLMFit(
        beta=beta, beta_se=np.sqrt(np.maximum(var, 0.0)), mu=mu, hat_diagonals=hat, log_like=ll, deviance=dev,
        iterations=iters, converged=iters < maxit, optimized=np.zeros(g, dtype=bool),
    )  # fmt: skip
    return fit, var


def _optim_refit(fit: NBGLMFit, idx, y, nf, nf_shared, X, alpha, lam_nat, beta0, *, minmu, loglik) -> None:
    """DESeq2's ``useOptim``: genes that did not converge (or have unusable coefficients or
    variances) are refitted by direct optimisation, started at the IRLS estimate when usable."""
    n = y.shape[1]
    start = fit.beta[idx].copy()
    bad = ~(np.isfinite(start).all(axis=1) & (np.abs(start * LOG2E) < _LARGE).all(axis=1))
    start[bad] = beta0[idx][bad]
    nf_idx = np.broadcast_to(nf, (idx.size, n)) if nf_shared else nf[idx]
    b_opt, conv_opt = _newton_fallback(y[idx], nf_idx, X, alpha[idx], lam_nat, start)
    fit.beta[idx] = b_opt
    fit.converged[idx] = fit.converged[idx] | conv_opt
    mu_row = nf_idx * np.exp(b_opt @ X.T)
    fit.mu[idx] = mu_row
    mu_c = np.maximum(mu_row, minmu)
    w_o = 1.0 / (1.0 / mu_c + alpha[idx, None])
    xtwx_o = _xtwx(w_o, X)
    inv_o = np.linalg.inv(xtwx_o + np.diag(lam_nat))
    sig_o = inv_o @ xtwx_o @ inv_o
    fit.beta_se[idx] = np.sqrt(np.maximum(np.einsum("gii->gi", sig_o), 0.0))
    if loglik:
        fit.log_like[idx] = nb_loglik(y[idx], mu_c, alpha[idx])
    fit.optimized[idx] = True
