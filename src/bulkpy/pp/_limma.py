"""limma's preprocessing helpers on AnnData: sample quality weights (``arrayWeights``) and
``removeBatchEffect`` (limma 3.68.5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import describe_design
from .._docs import doc_adata, doc_copy, doc_params
from .._slots import check_key, write_params
from .._stats import limma as _lin
from .._utils import finish, start
from .._validate import check_adata, check_bool, dense, get_matrix, layer_name, obs_column

#: limma version whose behaviour these follow, and its Bioconductor release.
LIMMA_VERSION = "3.68.5"
R_RELEASE = "Bioconductor 3.23"

_METHODS = ("auto", "reml", "genebygene")


def _log_expression(adata: AnnData, layer) -> np.ndarray:
    x = get_matrix(adata, layer)
    kind = np.dtype(getattr(x, "dtype", np.asarray(x).dtype)).kind
    if kind not in "biuf":
        raise TypeError(f"{layer_name(layer)} must be numeric, got dtype {x.dtype}")
    x = dense(x)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{layer_name(layer)} is empty (shape {x.shape})")
    if np.isinf(x).any():
        raise ValueError(
            f"{layer_name(layer)} has {int(np.isinf(x).sum())} infinite values (the log of 0?); use a log transform "
            "with a prior count, or set them to NaN to treat them as missing"
        )
    finite = x[np.isfinite(x)]
    if finite.size and finite.min() >= 0 and finite.max() > 100 and np.all(finite == np.round(finite)):
        raise ValueError(
            f"{layer_name(layer)} holds non-negative integers up to {finite.max():.0f}: it looks like raw counts, and "
            "limma models log-expression; log-transform first (e.g. bk.pp.normalize to log-CPM) or pass layer="
        )
    return x


def _labels(adata: AnnData, key: str, what: str) -> np.ndarray:
    col = obs_column(adata, key, what=what)
    na = pd.isna(col).to_numpy()
    if na.any():
        raise ValueError(
            f"{what} column {key!r} has {int(na.sum())} missing values (samples "
            f"{list(map(str, adata.obs_names[na][:10]))}); give every sample a value"
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.remove_unused_categories().cat.codes.to_numpy()
    vals = col.to_numpy()
    return vals.astype(str) if vals.dtype == object else vals


def _design_or_intercept(adata: AnnData, design) -> tuple[np.ndarray, list[str]]:
    from .._design import check_full_rank, design_matrix

    if design is None:
        return np.ones((adata.n_obs, 1)), ["Intercept"]
    X, cols = design_matrix(adata.obs, design)
    check_full_rank(X, cols, what=f"design {design!r}" if isinstance(design, str) else "design")
    return X, cols


@doc_params(adata=doc_adata, copy=doc_copy)
def array_weights(
    adata: AnnData,
    *,
    design=None,
    layer: str | None = None,
    weights: str | None = None,
    var_group: str | None = None,
    prior_n: float = 10.0,
    method: str = "auto",
    maxiter: int = 50,
    tol: float = 1e-5,
    key_added: str = "array_weights",
    copy: bool = False,
) -> AnnData | None:
    """Sample quality weights of log-expression data (limma's ``arrayWeights``).

    Samples that fit the linear model worse than the others (noisier libraries, arrays of poor
    quality) get weights below 1, good ones above 1; pass them to :func:`bulkpy.tl.limma` as
    ``weights=key_added``. Equal to limma 3.68's ``arrayWeights(E, design, weights, var.group,
    prior.n, method)``: REML of the model ``var(y_gj) = sigma_g^2 / w_j`` shared by all genes,
    ``prior_n`` pseudo-genes squeezing the weights towards 1. ``method="auto"`` (limma's default)
    is REML scoring on all genes at once for complete data without prior weights, else the
    gene-by-gene update (missing values, ``weights``).

    Parameters
    ----------
    {adata}
    design
        Design of the linear model (a formula such as ``"~ condition"`` or a numeric matrix);
        ``None`` is the intercept alone, as in limma.
    layer
        Layer of log-expression values (log-CPM, microarray intensities); ``None`` uses
        ``adata.X``. NaN marks a missing value.
    weights
        Optional layer of prior observation weights (samples × genes, e.g. voom's); 0 marks an
        observation as missing.
    var_group
        ``obs`` column grouping samples that share one weight (limma's ``var.group``); ``None``
        gives every sample its own.
    prior_n
        Prior pseudo-genes pulling the weights towards 1 (limma's ``prior.n``).
    method
        ``"auto"``, ``"reml"`` or ``"genebygene"``.
    maxiter
        Iteration limit of the REML scoring.
    tol
        Convergence tolerance of the REML scoring.
    key_added
        Name of the ``obs`` column and of the ``uns`` entry.
    {copy}

    Returns
    -------
    ``None``, or the modified copy with ``copy=True``. Writes

    - ``obs[key_added]``: the sample weights (all 1 with fewer than two genes or two residual
      degrees of freedom, as in limma);
    - ``uns[key_added]["params"]``: design, layer, weights, var_group, prior_n, the method
      asked for and the one used, the R release followed.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 100].copy()
    >>> lib = adata.X.sum(axis=1, keepdims=True)
    >>> adata.layers["log_cpm"] = np.log2((adata.X + 0.5) / (lib + 1) * 1e6)
    >>> bk.pp.array_weights(adata, design="~ type + condition", layer="log_cpm")
    >>> adata.obs["array_weights"].round(2).tolist()  # untreated1 fits the model worst
    [0.26, 0.86, 0.58, 1.09, 1.85, 2.39, 1.57]
    >>> bk.tl.limma(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"],
    ...             layer="log_cpm", weights="array_weights", trend=True)
    """
    check_adata(adata)
    check_key(key_added, "key_added")
    check_bool(copy, "copy")
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {list(_METHODS)}")
    if isinstance(prior_n, bool) or not isinstance(prior_n, int | float | np.integer | np.floating) or not (
        np.isfinite(prior_n) and prior_n >= 0
    ):
        raise ValueError(f"prior_n must be a finite number >= 0, got {prior_n!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}")
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.integer | np.floating) or not tol > 0:
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    E = _log_expression(adata, layer)
    X, cols = _design_or_intercept(adata, design)
    W = None
    if weights is not None:
        if not isinstance(weights, str):
            raise TypeError(f"weights must be the name of a layer of observation weights, got {type(weights).__name__}")
        W = dense(get_matrix(adata, weights))
        if W.shape != E.shape or not np.all(np.isfinite(W)) or np.any(W < 0):
            raise ValueError(f"layer {weights!r} must hold finite weights >= 0 of shape {E.shape}")
    groups = None if var_group is None else _labels(adata, var_group, "var_group")
    if groups is not None and np.unique(groups).size < 2:
        raise ValueError(f"var_group {var_group!r} has a single level; it needs at least two variance groups")
    used = method
    if method == "auto":
        used = "genebygene" if W is not None or np.isnan(E).any() else "reml"
    aw = _lin.array_weights(
        E, X, weights=W, var_group=groups, prior_n=float(prior_n), method=used, maxiter=int(maxiter), tol=float(tol)
    )

    adata = start(adata, copy)
    adata.obs[key_added] = aw
    params = {
        "method": "arrayWeights",
        "design": "~ 1" if design is None else describe_design(design),
        "design_columns": cols,
        "layer": layer,
        "weights": "None" if weights is None else f"layers[{weights!r}]",
        "var_group": "None" if var_group is None else var_group,
        "prior_n": float(prior_n),
        "weights_method": method,
        "weights_method_used": used,
        "maxiter": int(maxiter),
        "tol": float(tol),
        "r_release": R_RELEASE,
        "limma_version": LIMMA_VERSION,
    }
    write_params(adata, key_added, params)
    return finish(adata, copy)


def _covariates(adata: AnnData, covariates) -> tuple[np.ndarray | None, list[str]]:
    if covariates is None:
        return None, []
    if isinstance(covariates, str):
        covariates = [covariates]
    if not isinstance(covariates, Sequence) or not all(isinstance(c, str) for c in covariates):
        raise TypeError(f"covariates must be an obs column name or a list of them, got {covariates!r}")
    if len(set(covariates)) != len(covariates):
        raise ValueError(f"covariates lists a column twice: {list(covariates)}")
    cols = []
    for c in covariates:
        col = obs_column(adata, c, what="covariate")
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise TypeError(
                f"covariate {c!r} must be numeric (limma centres covariates and removes their linear effect); "
                f"it has dtype {col.dtype}. Pass a categorical column as batch= or batch2= instead"
            )
        v = col.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"covariate {c!r} has missing or infinite values; give every sample a value")
        cols.append(v)
    return np.column_stack(cols), list(covariates)


@doc_params(adata=doc_adata, copy=doc_copy)
def remove_batch_effect(
    adata: AnnData,
    *,
    batch: str | None = None,
    batch2: str | None = None,
    covariates: str | Sequence[str] | None = None,
    design=None,
    layer: str | None = None,
    key_added: str = "remove_batch_effect",
    copy: bool = False,
) -> AnnData | None:
    """Remove batch effects from log-expression for display and clustering (limma's
    ``removeBatchEffect``).

    **For plots (PCA, heatmaps, clustering), not for testing.** The corrected values pretend the
    batch effects are known exactly and have used up degrees of freedom that a test would not know
    about; for differential expression put the batch in the design instead (e.g.
    ``bk.tl.limma(design="~ batch + condition")``), as limma's documentation says.

    Equal to limma 3.68's ``removeBatchEffect(x, batch, batch2, covariates, design)``: per gene, a
    linear model of the design of interest plus the batches (sum-to-zero coded, so the removed
    effects are deviations from the average batch) and the centred covariates; the fitted batch
    and covariate terms are subtracted, the effects in ``design`` and the residuals stay. Missing
    values (NaN) are allowed per gene and stay missing.

    Parameters
    ----------
    {adata}
    batch
        ``obs`` column with the batch of each sample.
    batch2
        A second, crossed batch factor (``obs`` column).
    covariates
        Numeric ``obs`` column(s) whose linear effects are removed too (centred first).
    design
        The effects to keep: a formula such as ``"~ condition"`` or a numeric matrix. ``None``
        keeps only the mean (limma's one-group default), which lets the batch absorb whatever
        differs between batches, biology included; pass the design whenever batches are not
        balanced across conditions.
    layer
        Layer of log-expression values (log-CPM, VST, intensities); ``None`` uses ``adata.X``.
    key_added
        Name of the output layer and of the ``uns`` entry.
    {copy}

    Returns
    -------
    ``None``, or the modified copy with ``copy=True``. Writes

    - ``layers[key_added]``: the corrected log-expression (samples × genes);
    - ``uns[key_added]["params"]``: batch, batch2, covariates, design and its columns, layer,
      the R release followed.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.airway()
    >>> adata = adata[:, adata.X.sum(axis=0) >= 200].copy()
    >>> lib = adata.X.sum(axis=1, keepdims=True)
    >>> adata.layers["log_cpm"] = np.log2((adata.X + 0.5) / (lib + 1) * 1e6)
    >>> bk.pp.remove_batch_effect(adata, batch="cell", design="~ dex", layer="log_cpm")
    >>> adata.layers["remove_batch_effect"].shape == adata.shape
    True
    """
    check_adata(adata)
    check_key(key_added, "key_added")
    check_bool(copy, "copy")
    if batch is None and batch2 is None and covariates is None:
        raise ValueError("nothing to remove: pass batch= (an obs column), batch2= and/or covariates=")
    x = _log_expression(adata, layer)
    if np.isnan(x).all(axis=0).any():
        raise ValueError(f"{int(np.isnan(x).all(axis=0).sum())} genes are missing (NaN) in every sample; remove them first")
    b1 = None if batch is None else _labels(adata, batch, "batch")
    b2 = None if batch2 is None else _labels(adata, batch2, "batch2")
    for name, key, b in (("batch", batch, b1), ("batch2", batch2, b2)):
        if b is not None and np.unique(b).size < 2:
            raise ValueError(f"{name} column {key!r} has a single level; there is no batch effect to remove")
    cov, cov_names = _covariates(adata, covariates)
    X, cols = _design_or_intercept(adata, design)
    Xb = _lin.batch_terms(adata.n_obs, batch=b1, batch2=b2, covariates=cov)
    from .._design import non_estimable

    full_cols = cols + [f"batch_term{i + 1}" for i in range(Xb.shape[1])]
    bad = non_estimable(np.hstack([X, Xb]), full_cols)
    if bad:
        raise ValueError(
            f"the batch terms are confounded with the design {cols}: {len(bad)} of their columns are explained by it, "
            "so those batch effects can not be told apart from the effects to keep (limma leaves them in). Drop "
            "the confounded factor from the design or from batch"
        )
    out = _lin.remove_batch_effect(x, batch=b1, batch2=b2, covariates=cov, design=X)

    adata = start(adata, copy)
    adata.layers[key_added] = out
    params = {
        "method": "removeBatchEffect",
        "batch": "None" if batch is None else batch,
        "batch2": "None" if batch2 is None else batch2,
        "covariates": cov_names,
        "design": "~ 1" if design is None else describe_design(design),
        "design_columns": cols,
        "layer": layer,
        "note": "for display and clustering, not for testing: model batch in the design of the test instead",
        "r_release": R_RELEASE,
        "limma_version": LIMMA_VERSION,
    }
    write_params(adata, key_added, params)
    return finish(adata, copy)


__all__ = ["array_weights", "remove_batch_effect"]
