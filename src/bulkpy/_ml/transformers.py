"""scikit-learn transformers around bulkpy's engines (samples × genes in, samples × genes out).

Each learns what it needs from the samples passed to ``fit`` and applies it, unchanged, to any
sample passed to ``transform``; a new sample's output never depends on the other new samples. In a
:class:`~sklearn.pipeline.Pipeline` evaluated by cross-validation this keeps every data-dependent
step inside the training folds.

How new samples are treated
---------------------------
:class:`LogCPM`
    edgeR's TMM with the reference sample chosen among the training samples
    (``calcNormFactors``' rule); a new sample's factor is its TMM against that reference, divided
    by the constant that made the training factors multiply to one, and its log-CPM prior is
    ``prior_count * effective library size / mean training effective library size``. On the
    training samples this is exactly ``cpm(calcNormFactors(y), log = TRUE, prior.count = 2)``.
:class:`LogNorm`, :class:`VST`
    DESeq2's median-of-ratios size factors with the geometric means of the training samples, as
    ``estimateSizeFactors(dds_new, geoMeans = ...)``, but without re-centring the new factors among
    the new samples (which would make one sample's factor depend on the others in its batch).
    :class:`VST` transforms with the dispersion trend fitted on the training samples (DESeq2's
    ``dispersionFunction(dds_new) <- dispersionFunction(dds_train)``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._stats import ml as _ml
from .._stats.deseq2.size_factors import log_geometric_means, median_of_ratios
from .._stats.filter import filter_by_expr
from .._stats.normalization import choose_ref_column


def _validate(est, X, *, reset: bool) -> np.ndarray:
    """scikit-learn-style input validation: a finite float64 2-d array. ``fit`` remembers the
    number of genes and, for a DataFrame with string column names, the gene names
    (``feature_names_in_``); ``transform`` checks them. (Done here rather than by scikit-learn's
    ``validate_data``, whose per-column dtype checks of wide DataFrames take seconds.)"""
    from sklearn.utils import check_array

    names = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        cols = np.asarray(X.columns, dtype=object)
        if all(isinstance(c, str) for c in cols):
            names = cols
        X = X.to_numpy(dtype=np.float64)
    X = check_array(X, dtype=np.float64)
    if reset:
        est.n_features_in_ = X.shape[1]
        if names is not None:
            est.feature_names_in_ = names
        elif hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        return X
    if X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} genes, but {type(est).__name__} was fitted on {est.n_features_in_}")
    fitted = getattr(est, "feature_names_in_", None)
    if names is not None and fitted is not None and not np.array_equal(names, fitted):
        raise ValueError(
            f"the gene names of X differ from those {type(est).__name__} was fitted on; select and order the "
            "columns as feature_names_in_"
        )
    return X


def _check_counts(X: np.ndarray, what: str) -> None:
    if (X < 0).any():
        raise ValueError(f"{what} needs counts >= 0; got {int((X < 0).sum())} negative values")


def _codes(y) -> np.ndarray:
    _, codes = np.unique(np.asarray(y).astype(str), return_inverse=True)
    return codes


class AsIs(TransformerMixin, BaseEstimator):
    """Pass finite values through unchanged (for data that is already on a log scale)."""

    def fit(self, X, y=None):
        _validate(self, X, reset=True)
        return self

    def transform(self, X):
        check_is_fitted(self, "n_features_in_")
        return _validate(self, X, reset=False)


class FilterByExpr(TransformerMixin, BaseEstimator):
    """edgeR's ``filterByExpr`` learnt on the training samples (the class labels ``y``, when
    given and ``use_groups`` is true, set the smallest group size); keeps the same genes for
    every sample passed to ``transform``.

    Parameters
    ----------
    min_count, min_total_count, large_n, min_prop
        edgeR's ``min.count``, ``min.total.count``, ``large.n``, ``min.prop``.
    use_groups
        Use the training labels as edgeR's ``group``.
    """

    def __init__(self, min_count=10, min_total_count=15, large_n=10, min_prop=0.7, use_groups=True):
        self.min_count = min_count
        self.min_total_count = min_total_count
        self.large_n = large_n
        self.min_prop = min_prop
        self.use_groups = use_groups

    def fit(self, X, y=None):
        X = _validate(self, X, reset=True)
        _check_counts(X, "filterByExpr")
        group = _codes(y) if (self.use_groups and y is not None) else None
        keep, info = filter_by_expr(
            X,
            group=group,
            min_count=self.min_count,
            min_total_count=self.min_total_count,
            large_n=self.large_n,
            min_prop=self.min_prop,
        )
        if not keep.any():
            raise ValueError("no gene passes filterByExpr on the training samples; lower min_count or turn the filter off")
        self.support_ = keep
        self.info_ = info
        return self

    def transform(self, X):
        check_is_fitted(self, "support_")
        X = _validate(self, X, reset=False)
        return X[:, self.support_]


class LogCPM(TransformerMixin, BaseEstimator):
    """edgeR's ``cpm(y, log = TRUE)`` with TMM factors, learnt on the training samples.

    Parameters
    ----------
    prior_count
        edgeR's ``prior.count`` (scaled by each library size over the mean training library size).
    norm_method
        ``"TMM"`` or ``"none"`` (library sizes only).
    """

    def __init__(self, prior_count=2.0, norm_method="TMM"):
        self.prior_count = prior_count
        self.norm_method = norm_method

    def _lib(self, X):
        lib = X.sum(axis=1)
        if np.any(lib <= 0):
            raise ValueError(f"{int((lib <= 0).sum())} samples have no counts; log-CPM needs positive library sizes")
        return lib

    def fit(self, X, y=None):
        if self.norm_method not in ("TMM", "none"):
            raise ValueError(f"norm_method={self.norm_method!r} is not supported; choose 'TMM' or 'none'")
        X = _validate(self, X, reset=True)
        _check_counts(X, "log-CPM")
        lib = self._lib(X)
        if self.norm_method == "TMM" and X.shape[0] > 1:
            nz = (X > 0).any(axis=0)
            ref = choose_ref_column(X[:, nz], lib, "TMM")
            self.ref_counts_ = X[ref].copy()
            self.ref_lib_ = float(lib[ref])
            raw = _ml.tmm_factors_against(X, lib, self.ref_counts_, self.ref_lib_)
            self.log_scale_ = float(np.mean(np.log(raw)))
            nf = raw / np.exp(self.log_scale_)
        else:
            self.ref_counts_ = None
            self.ref_lib_ = np.nan
            self.log_scale_ = 0.0
            nf = np.ones(X.shape[0])
        self.norm_factors_ = nf
        self.mean_lib_ = float(np.mean(lib * nf))
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then transform the training samples with the factors just computed (no second TMM)."""
        self.fit(X, y)
        X = _validate(self, X, reset=False)
        return self._log_cpm(X, self._lib(X), self.norm_factors_)

    def _log_cpm(self, X, lib, nf):
        eff = lib * nf
        prior = float(self.prior_count) * eff / self.mean_lib_
        return np.log2((X + prior[:, None]) / (eff + 2 * prior)[:, None] * 1e6)

    def norm_factors(self, X) -> np.ndarray:
        """TMM factors of the samples of ``X`` on the training scale."""
        check_is_fitted(self, "mean_lib_")
        X = _validate(self, X, reset=False)
        return self._norm_factors(X, self._lib(X))

    def _norm_factors(self, X, lib):
        if self.ref_counts_ is None:
            return np.ones(X.shape[0])
        return _ml.tmm_factors_against(X, lib, self.ref_counts_, self.ref_lib_) / np.exp(self.log_scale_)

    def transform(self, X):
        check_is_fitted(self, "mean_lib_")
        X = _validate(self, X, reset=False)
        _check_counts(X, "log-CPM")
        lib = self._lib(X)
        return self._log_cpm(X, lib, self._norm_factors(X, lib))


class _SizeFactorMixin:
    """DESeq2 median-of-ratios size factors with the training geometric means."""

    def _fit_size_factors(self, X) -> np.ndarray:
        lgm = log_geometric_means(X, method="ratio")
        self.geo_means_method_ = "ratio"
        if not np.isfinite(lgm).any():  # every gene has a zero: DESeq2's advice is poscounts
            lgm = log_geometric_means(X, method="poscounts")
            self.geo_means_method_ = "poscounts"
        if not np.isfinite(lgm).any():
            raise ValueError("every gene is zero in all training samples; size factors can not be computed")
        self.log_geo_means_ = lgm
        sf = median_of_ratios(X, lgm)
        self.sf_scale_ = 1.0 if self.geo_means_method_ == "ratio" else float(np.exp(np.mean(np.log(sf))))
        return sf / self.sf_scale_

    def size_factors(self, X) -> np.ndarray:
        """Size factors of the samples of ``X`` against the training geometric means."""
        check_is_fitted(self, "log_geo_means_")
        X = _validate(self, X, reset=False)
        return self._size_factors(X)

    def _size_factors(self, X) -> np.ndarray:
        return median_of_ratios(X, self.log_geo_means_) / self.sf_scale_


class LogNorm(_SizeFactorMixin, TransformerMixin, BaseEstimator):
    """DESeq2's ``normTransform``: ``log2(counts / size factor + pseudocount)``, size factors from
    the training geometric means.

    Parameters
    ----------
    pseudocount
        Added before the logarithm (DESeq2's ``pc``).
    """

    def __init__(self, pseudocount=1.0):
        self.pseudocount = pseudocount

    def fit(self, X, y=None):
        X = _validate(self, X, reset=True)
        _check_counts(X, "normTransform")
        self._fit_size_factors(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "log_geo_means_")
        X = _validate(self, X, reset=False)
        _check_counts(X, "normTransform")
        return np.log2(X / self._size_factors(X)[:, None] + float(self.pseudocount))


class VST(_SizeFactorMixin, TransformerMixin, BaseEstimator):
    """DESeq2's variance stabilising transformation with the dispersion trend of the training
    samples (gene-wise dispersions of the intercept-only model, i.e. ``blind = TRUE`` on the
    training samples).

    A parametric or mean trend is applied in closed form; a local trend through the numerical
    integral tabulated on the training samples (:func:`bulkpy._stats.ml.local_vst_map`). On the
    training samples the output equals ``varianceStabilizingTransformation(dds, blind = TRUE)``.

    Parameters
    ----------
    fit_type
        ``"parametric"``, ``"local"`` or ``"mean"`` (a failed parametric fit falls back to local
        with a warning, as DESeq2).
    """

    def __init__(self, fit_type="parametric"):
        self.fit_type = fit_type

    def fit(self, X, y=None):
        from .._stats.deseq2.dispersion import FIT_TYPES, estimate_gene_dispersions, fit_dispersion_trend

        if self.fit_type not in FIT_TYPES:
            raise ValueError(f"fit_type={self.fit_type!r} is not supported; choose one of {list(FIT_TYPES)}")
        X = _validate(self, X, reset=True)
        _check_counts(X, "the VST")
        n = X.shape[0]
        if n < 2:
            raise ValueError("the VST needs at least two training samples to estimate dispersions")
        sf = self._fit_size_factors(X)
        ge = estimate_gene_dispersions(X, np.ones((n, 1)), size_factors=sf)
        self.trend_ = fit_dispersion_trend(ge.base_mean, ge.disp_gene_est, fit_type=self.fit_type)
        self.local_map_ = None
        if self.trend_.fit_type == "local":
            self.local_map_ = _ml.local_vst_map(X / sf[:, None], self.trend_, sf)
        return self

    def transform(self, X):
        from .._stats.deseq2.vst import vst_mean, vst_parametric

        check_is_fitted(self, "trend_")
        X = _validate(self, X, reset=False)
        _check_counts(X, "the VST")
        norm = X / self._size_factors(X)[:, None]
        t = self.trend_
        if t.fit_type == "parametric":
            return vst_parametric(norm, t.params["asymptDisp"], t.params["extraPois"])
        if t.fit_type == "mean":
            return vst_mean(norm, t.params["mean"])
        return _ml.apply_local_vst_map(norm, self.local_map_)


class SelectFeatures(TransformerMixin, BaseEstimator):
    """Keep the ``n_features`` genes with the largest score on the training samples.

    Parameters
    ----------
    method
        ``"variance"`` (variance across the training samples, unsupervised) or ``"de"``
        (association with the training target ``y``, scored as ``target`` says).
    n_features
        Number of genes kept (all when there are fewer).
    target
        What ``y`` is, for ``method="de"``: ``"class"`` (limma's moderated F statistic of the
        classes; the squared moderated t for two classes), ``"continuous"`` (the squared limma
        moderated t of the slope of ``expression ~ y``) or ``"survival"`` (a structured array
        with fields ``event`` and ``time``: the univariate Cox score statistic, squared z).
    """

    def __init__(self, method="variance", n_features=500, target="class"):
        self.method = method
        self.n_features = n_features
        self.target = target

    def fit(self, X, y=None):
        if self.method not in ("variance", "de"):
            raise ValueError(f"method={self.method!r} is not supported; choose 'variance' or 'de'")
        if self.target not in ("class", "continuous", "survival"):
            raise ValueError(f"target={self.target!r} is not supported; choose 'class', 'continuous' or 'survival'")
        if isinstance(self.n_features, bool) or not isinstance(self.n_features, int | np.integer) or self.n_features < 1:
            raise ValueError(f"n_features must be a positive integer, got {self.n_features!r}")
        X = _validate(self, X, reset=True)
        if self.method == "variance":
            scores = X.var(axis=0, ddof=1) if X.shape[0] > 1 else np.zeros(X.shape[1])
        else:
            if y is None:
                raise ValueError("method='de' needs the target y")
            if self.target == "class":
                scores = _ml.moderated_f(X, _codes(y))
            elif self.target == "continuous":
                scores = _ml.moderated_t_slope(X, np.asarray(y, dtype=np.float64)) ** 2
            else:
                scores = _ml.cox_score_statistic(X, y["time"], y["event"]) ** 2
        keep = np.zeros(X.shape[1], dtype=bool)
        keep[_ml.top_indices(scores, int(self.n_features))] = True
        self.scores_ = scores
        self.support_ = keep
        return self

    def transform(self, X):
        check_is_fitted(self, "support_")
        X = _validate(self, X, reset=False)
        return X[:, self.support_]
