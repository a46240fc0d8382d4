"""limma's ``removeBatchEffect`` (limma 3.68.5): batch effects fitted with a linear model and
subtracted, for display and clustering.

The batch factors are sum-to-zero coded (``contr.sum``: the effects removed are deviations from
the average batch), covariates are centred, and both are fitted per gene together with the design
of interest (:func:`lm_fit`, with its weights, missing values and optional block correlation);
the fitted batch and covariate terms are subtracted and everything else (the effects of interest
and the residuals) stays. Columns of the batch terms that the design already explains are not
estimable; limma then leaves them in (coefficient 0), and so does this engine.
"""

from __future__ import annotations

import numpy as np

from .lmfit import _check_design, _estimable_columns, lm_fit


def sum_coded(labels) -> np.ndarray:
    """``model.matrix(~ batch)[, -1]`` with ``contr.sum`` contrasts: one column per level but the
    last (levels sorted), 1 for the level, -1 for the last level's samples."""
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"a batch must be one label per sample, got shape {lab.shape}")
    _, codes = np.unique(lab, return_inverse=True)
    codes = np.asarray(codes).ravel()
    k = int(codes.max()) + 1
    M = (codes[:, None] == np.arange(k - 1)[None, :]).astype(np.float64)
    M[codes == k - 1] = -1.0
    return M


def batch_terms(n: int, *, batch=None, batch2=None, covariates=None) -> np.ndarray:
    """``X.batch`` of ``removeBatchEffect``: the sum-coded batches and the centred covariates."""
    parts = []
    for name, b in (("batch", batch), ("batch2", batch2)):
        if b is not None:
            if np.size(b) != n:
                raise ValueError(f"{name} must have one label per sample ({n}), got {np.size(b)}")
            parts.append(sum_coded(b))
    if covariates is not None:
        cv = np.asarray(covariates, dtype=np.float64)
        if cv.ndim == 1:
            cv = cv[:, None]
        if cv.ndim != 2 or cv.shape[0] != n or not np.all(np.isfinite(cv)):
            raise ValueError(f"covariates must be a finite samples x k matrix with {n} rows, got shape {cv.shape}")
        parts.append(cv - cv.mean(axis=0))
    return np.hstack(parts) if parts else np.zeros((n, 0))


def remove_batch_effect(
    x,
    *,
    batch=None,
    batch2=None,
    covariates=None,
    design=None,
    weights=None,
    block=None,
    correlation: float | None = None,
) -> np.ndarray:
    """``x`` (samples × genes, log-scale) without the batch and covariate effects (limma
    ``removeBatchEffect(t(x), batch, batch2, covariates, design)``).

    ``design`` (samples × k, default the intercept alone) holds the effects to keep; ``weights``,
    ``block`` and ``correlation`` go to the linear model as in limma's ``...``. Returns a new
    samples × genes array (NaN where ``x`` is missing).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-d samples x genes array, got shape {x.shape}")
    n = x.shape[0]
    Xb = batch_terms(n, batch=batch, batch2=batch2, covariates=covariates)
    if Xb.shape[1] == 0:
        return x.copy()
    D = np.ones((n, 1)) if design is None else _check_design(design, n)
    full = np.hstack([D, Xb])
    est = _estimable_columns(full)
    fit = lm_fit(x, full[:, est], weights=weights, block=block, correlation=correlation)
    beta = np.zeros((full.shape[1], x.shape[1]))
    beta[est] = np.nan_to_num(fit.coefficients, nan=0.0)
    return x - Xb @ beta[D.shape[1] :]
