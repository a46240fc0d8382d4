"""limma's ``arrayWeights`` and ``voomWithQualityWeights`` (limma 3.68.5): sample quality weights.

Each sample gets a weight ``w_j = exp(-Z2 gamma)_j`` (``Z2`` the variance design: by default one
parameter per sample, sum-to-zero coded, ``contr.sum``), estimated by REML of the variance model
``var(y_gj) = sigma_g^2 / w_j`` shared by all genes, with ``prior.n = 10`` pseudo-genes pulling the
weights towards 1. Three estimators, as in limma (``method="auto"`` picks the first when the data
are complete and have no prior weights, else the second):

``"reml"``
    Fisher scoring on all genes at once (``.arrayWeightsREML``), vectorised over genes; with
    prior weights ``.arrayWeightsPrWtsREML`` (per-gene weighted fits, batched).
``"genebygene"``
    one scoring update per gene in gene order (``.arrayWeightsGeneByGene``), the choice for
    missing values or prior weights; sequential by construction, compiled
    (:func:`._kernels.array_weights_gene_by_gene`).

``voomWithQualityWeights``: voom, the gene-by-gene sample weights of its output, voom again with
those weights in its linear model, the sample weights again, and the final weights are voom's
times the sample weights.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._blocks import gene_blocks
from ._kernels import array_weights_gene_by_gene
from .lmfit import _check_design, _estimable_columns
from .voom import VoomResult, voom

_METHODS = ("auto", "genebygene", "reml")


def contr_sum(k: int) -> np.ndarray:
    """R's ``contr.sum(k)``: ``k × (k - 1)``, the identity above a last row of -1."""
    return np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])


def variance_design(n: int, *, var_design=None, var_group=None) -> np.ndarray:
    """``arrayWeights``' ``Z2``: sum-to-zero sample effects by default, the sum-coded groups of
    ``var_group``, or ``var_design`` with centred columns (aliased columns dropped)."""
    if var_group is not None:
        grp = np.asarray(var_group)
        if grp.ndim != 1 or grp.size != n:
            raise ValueError(f"var_group must have one value per sample ({n}), got shape {grp.shape}")
        _, codes = np.unique(grp, return_inverse=True)
        codes = np.asarray(codes).ravel()
        k = int(codes.max()) + 1
        if k < 2:
            raise ValueError("var_group needs at least two variance groups")
        return contr_sum(k)[codes]
    if var_design is None:
        return contr_sum(n)
    Z2 = np.asarray(var_design, dtype=np.float64)
    if Z2.ndim == 1:
        Z2 = Z2[:, None]
    if Z2.ndim != 2 or Z2.shape[0] != n or not np.all(np.isfinite(Z2)):
        raise ValueError(f"var_design must be a finite samples x columns matrix with {n} rows, got shape {Z2.shape}")
    Z2 = Z2 - Z2.mean(axis=0)
    return Z2[:, _estimable_columns(Z2)]


def _leverage_info(Q: np.ndarray, Z: np.ndarray):
    """Leverages ``h`` and ``t(Z) diag(1 - 2h) Z + t(Z) (H * H) Z`` (``H = Q Q'``; limma builds the
    second term from the products of the columns of ``Q``, which is the same matrix) for a thin
    orthonormal ``Q`` (``... × n × p``)."""
    H = Q @ np.swapaxes(Q, -1, -2)
    h = np.diagonal(H, axis1=-2, axis2=-1)
    info = np.swapaxes(Z, -1, -2) @ ((1 - 2 * h)[..., :, None] * Z) + np.swapaxes(Z, -1, -2) @ (H * H) @ Z
    return h, info


def _schur(info: np.ndarray) -> np.ndarray:
    """``info[-1, -1] - info[-1, 1] info[1, -1] / info[1, 1]`` (the intercept profiled out)."""
    return info[..., 1:, 1:] - info[..., 1:, :1] @ info[..., :1, 1:] / info[..., :1, :1]


def _reml(E: np.ndarray, X: np.ndarray, Z2: np.ndarray, prior_n: float, maxiter: int, tol: float) -> np.ndarray:
    """``.arrayWeightsREML``: ``E`` samples × genes, complete; ``X`` of full column rank."""
    n, p = X.shape
    ngam = Z2.shape[1]
    Z = np.column_stack([np.ones(n), Z2])
    w = np.ones(n)
    gam = np.zeros(ngam)

    def fit(wt):
        sw = np.sqrt(wt)
        Q, R = np.linalg.qr(sw[:, None] * X)
        beta = np.linalg.solve(R, Q.T @ (sw[:, None] * E))
        resid = E - X @ beta
        s2 = np.einsum("ng,ng->g", sw[:, None] * resid, sw[:, None] * resid) / (n - p)
        return Q, resid, s2

    Q, resid, s2 = fit(w)
    ok = s2 >= 1e-15
    if not ok.all():
        E = E[:, ok]
        if E.shape[1] < 2:
            return w
        resid, s2 = resid[:, ok], s2[ok]
    ngenes = E.shape[1]
    last = np.inf
    it = 0
    while True:
        it += 1
        if it > 1:
            Q, resid, s2 = fit(w)
        h, info = _leverage_info(Q, Z)
        info2 = ngenes * _schur(info) + prior_n * (Z2.T @ Z2)
        z = (w[:, None] * resid**2 / s2[None, :]).mean(axis=1) - (1 - h)
        z = ngenes * z + prior_n * (w - 1)
        dl = Z2.T @ z
        step = np.linalg.solve(info2, dl)
        crit = float(dl @ step) / ngam / (ngenes + prior_n)
        if not np.isfinite(crit) or crit >= last:
            warnings.warn("convergence tolerance not achievable, stopping prematurely", UserWarning, stacklevel=3)
            break
        last = crit
        gam = gam + step
        w = np.exp(-(Z2 @ gam))
        if crit < tol:
            break
        if it == maxiter:
            warnings.warn("iteration limit reached", UserWarning, stacklevel=3)
            break
    return w


def _reml_prior_weights(
    E: np.ndarray, X: np.ndarray, weights: np.ndarray, Z2: np.ndarray, prior_n: float, maxiter: int, tol: float
) -> np.ndarray:
    """``.arrayWeightsPrWtsREML``: per-gene weighted fits (batched over genes) in each iteration."""
    n, p = X.shape
    ngam = Z2.shape[1]
    Z = np.column_stack([np.ones(n), Z2])
    g = E.shape[1]
    w = np.ones(n)
    gam = np.zeros(ngam)
    it = 0
    while True:
        it += 1
        info2 = prior_n * (Z2.T @ Z2)
        z = prior_n * (w - 1)
        for sl in gene_blocks(g, n * n):
            ww = w[:, None] * weights[:, sl]  # n × genes
            sw = np.sqrt(ww)
            Q, R = np.linalg.qr(sw.T[:, :, None] * X[None])  # genes × n × p
            beta = np.linalg.solve(R, np.einsum("gnp,ng->gp", Q, sw * E[:, sl])[:, :, None])[:, :, 0]
            resid = E[:, sl] - (X @ beta.T)
            s2 = np.einsum("ng,ng->g", ww * resid, resid) / (n - p)
            h, info = _leverage_info(Q, Z[None])
            info2 = info2 + _schur(info).sum(axis=0)
            ok = s2 > 1e-15
            z = z + (ww[:, ok] * resid[:, ok] ** 2 / s2[ok] - (1 - h[ok]).T).sum(axis=1)
        info2 = info2 / (g + prior_n)
        z = z / (g + prior_n)
        dl = Z2.T @ z
        step = np.linalg.solve(info2, dl)
        gam = gam + step
        w = np.exp(-(Z2 @ gam))
        crit = float(dl @ step) / (g + prior_n) / ngam
        if not np.isfinite(crit):
            warnings.warn("convergence tolerance not achievable, stopping prematurely", UserWarning, stacklevel=3)
            break
        if crit < tol:
            break
        if it == maxiter:
            warnings.warn("iteration limit reached", UserWarning, stacklevel=3)
            break
    return w


def _check_weights(weights, shape) -> np.ndarray:
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim == 1 and W.shape[0] == shape[0]:
        W = np.broadcast_to(W[:, None], shape)
    if W.shape != shape:
        raise ValueError(f"dimensions of weights should match those of the expression matrix {shape}, got {W.shape}")
    if np.isnan(W).any():
        raise ValueError("NA weights not allowed")
    if (W < 0).any():
        raise ValueError("Negative weights not allowed")
    if np.isinf(W).any():
        raise ValueError("Infinite weights not allowed")
    return np.array(W, dtype=np.float64)


def array_weights(
    y,
    design=None,
    *,
    weights=None,
    var_design=None,
    var_group=None,
    prior_n: float = 10.0,
    method: str = "auto",
    maxiter: int = 50,
    tol: float = 1e-5,
) -> np.ndarray:
    """Sample (array) quality weights (limma ``arrayWeights``).

    Parameters
    ----------
    y
        Log-expression, samples × genes; NaN (or ±inf) marks a missing value.
    design
        Design matrix, samples × coefficients (aliased columns are dropped); ``None`` is the
        intercept alone.
    weights
        Optional prior observation weights (samples × genes, or one per sample); 0 marks an
        observation as missing.
    var_design, var_group
        The variance model: a samples × k matrix, or one group label per sample (sample weights
        equal within a group); by default every sample has its own weight.
    prior_n
        Prior pseudo-genes squeezing the weights towards 1.
    method
        ``"auto"`` (``"reml"`` for complete data without prior weights, else ``"genebygene"``),
        ``"reml"`` or ``"genebygene"``.
    maxiter, tol
        Iteration limit and convergence tolerance of the REML scoring.

    Returns
    -------
    ``(samples,)`` sample weights (all 1 with fewer than two genes or fewer than two residual
    degrees of freedom, as in limma).
    """
    E = np.array(y, dtype=np.float64)
    if E.ndim != 2:
        raise ValueError(f"y must be a 2-d samples x genes array, got shape {E.shape}")
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {list(_METHODS)}")
    n, g = E.shape
    ones = np.ones(n)
    if g < 2:
        return ones
    if design is None:
        X = np.ones((n, 1))
    else:
        X = _check_design(design, n)
        X = X[:, _estimable_columns(X)]
    p = X.shape[1]
    if n - p < 2:
        return ones
    W = None
    if weights is not None:
        W = _check_weights(weights, E.shape)
        zero = W == 0
        if zero.any():
            E[zero] = np.nan
            W[zero] = 1.0
    Z2 = variance_design(n, var_design=var_design, var_group=var_group)
    E[np.isinf(E)] = np.nan
    has_na = bool(np.isnan(E).any())
    if method == "auto":
        method = "genebygene" if has_na or W is not None else "reml"
    if method == "genebygene":
        Wg = np.ones((1, 1)) if W is None else np.ascontiguousarray(W.T)
        Z2 = np.ascontiguousarray(Z2)
        info2 = float(prior_n) * (Z2.T @ Z2)
        rows, cols = np.nonzero(Z2)
        zptr = np.searchsorted(rows, np.arange(n + 1)).astype(np.int64)
        return array_weights_gene_by_gene(
            np.ascontiguousarray(E.T),
            np.ascontiguousarray(X),
            Wg,
            W is not None,
            Z2,
            np.ascontiguousarray(info2),
            zptr,
            cols.astype(np.int64),
            np.ascontiguousarray(Z2[rows, cols]),
        )
    if has_na:
        keep = ~np.isnan(E).any(axis=0)
        E = E[:, keep]
        if W is not None:
            W = W[:, keep]
        if E.shape[1] < 2:
            return ones
    if W is None:
        return _reml(E, X, Z2, float(prior_n), int(maxiter), float(tol))
    return _reml_prior_weights(E, X, W, Z2, float(prior_n), int(maxiter), float(tol))


@dataclass
class QualityVoomResult:
    """Result of :func:`voom_with_quality_weights`: the second :class:`VoomResult` (its
    ``weights`` already multiplied by the sample weights) and the sample weights."""

    voom: VoomResult
    sample_weights: np.ndarray


def voom_with_quality_weights(
    counts,
    design,
    *,
    lib_size=None,
    span: float = 0.5,
    adaptive_span: bool = True,
    var_design=None,
    var_group=None,
    method: str = "genebygene",
    maxiter: int = 50,
    tol: float = 1e-5,
    block=None,
    correlation: float | None = None,
    **voom_kw,
) -> QualityVoomResult:
    """limma ``voomWithQualityWeights``: voom's observation weights times sample quality weights.

    ``block``/``correlation`` (and ``offset``...) go to both voom calls, as limma passes ``...``
    to ``voom``; the sample weights (``method``, ``var_design``, ``var_group``, ``maxiter``,
    ``tol``) are those of :func:`array_weights`, gene by gene by default.
    """
    kw = dict(lib_size=lib_size, span=span, adaptive_span=adaptive_span, block=block, correlation=correlation, **voom_kw)
    aw_kw = dict(var_design=var_design, var_group=var_group, method=method, maxiter=maxiter, tol=tol)
    v = voom(counts, design, **kw)
    aw = array_weights(v.E, design, weights=v.weights, **aw_kw)
    v = voom(counts, design, weights=aw, **kw)
    aw = array_weights(v.E, design, weights=v.weights, **aw_kw)
    v.weights = aw[:, None] * v.weights
    return QualityVoomResult(voom=v, sample_weights=aw)
