"""Assemble a leak-free classification pipeline: gene filter → normalisation → feature selection →
scaling → classifier, each step fitted on the samples given to ``fit`` only."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .transformers import VST, AsIs, FilterByExpr, LogCPM, LogNorm, SelectFeatures

MODELS = ("logistic", "random_forest", "svm", "knn")
NORMALIZATIONS = ("log_cpm", "vst", "log_norm", "none")
FEATURES = ("variance", "de", "all")

#: Where a model's own parameters live in the pipeline (``C`` of the SVM is inside the calibration wrapper).
MODEL_PREFIX = {"logistic": "model__", "random_forest": "model__", "svm": "model__estimator__", "knn": "model__"}

#: Inner folds of the sigmoid calibration that gives the SVM its class probabilities.
SVM_CALIBRATION_FOLDS = 3

_DEFAULT_GRIDS = {
    "logistic": {"C": [0.001, 0.01, 0.1, 1.0]},
    "random_forest": {"n_estimators": [100, 300], "max_depth": [None, 5]},
    "svm": {"C": [0.001, 0.01, 0.1, 1.0]},
    "knn": {"n_neighbors": [3, 5, 7, 9]},
}


def default_grid(model: str) -> dict:
    """The default hyper-parameter grid of ``model`` (a fresh copy)."""
    return {k: list(v) for k, v in _DEFAULT_GRIDS[model].items()}


def _estimator(model: str, seed: int):
    if model == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=1.0, max_iter=10_000, random_state=seed)
    if model == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1)
    if model == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.svm import SVC

        return CalibratedClassifierCV(
            SVC(kernel="linear", C=1.0),
            method="sigmoid",
            ensemble=False,
            cv=StratifiedKFold(SVM_CALIBRATION_FOLDS, shuffle=True, random_state=seed),
        )
    if model == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=5)
    raise ValueError(f"model={model!r} is not supported; choose one of {list(MODELS)}")


def make_pipeline(
    *,
    model: str = "logistic",
    normalization: str = "log_cpm",
    features: str = "variance",
    n_features: int = 500,
    filter_genes: bool = True,
    seed: int = 0,
) -> Pipeline:
    """An unfitted pipeline; steps ``filter`` (count normalisations with ``filter_genes``),
    ``normalize``, ``select`` (unless ``features="all"``), ``scale`` (not for random forests) and
    ``model``."""
    steps = []
    if normalization != "none" and filter_genes:
        steps.append(("filter", FilterByExpr()))
    norm = {"log_cpm": LogCPM, "vst": VST, "log_norm": LogNorm, "none": AsIs}[normalization]()
    steps.append(("normalize", norm))
    if features != "all":
        steps.append(("select", SelectFeatures(method=features, n_features=n_features)))
    if model != "random_forest":
        steps.append(("scale", StandardScaler()))
    steps.append(("model", _estimator(model, seed)))
    return Pipeline(steps)


def _model_importance(est) -> np.ndarray:
    """|coefficients| (mean over classes or class pairs) or impurity importances; NaN for k-NN."""
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(est, CalibratedClassifierCV):
        est = est.calibrated_classifiers_[0].estimator
    if hasattr(est, "feature_importances_"):
        return np.asarray(est.feature_importances_, dtype=np.float64)
    if hasattr(est, "coef_"):
        return np.abs(np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))).mean(axis=0)
    return np.full(est.n_features_in_, np.nan)


def selected_genes(pipe: Pipeline, n_genes: int) -> np.ndarray:
    """Indices (into the pipeline's input genes) of the genes that reach the model."""
    idx = np.arange(n_genes)
    for name in ("filter", "select"):
        if name in pipe.named_steps:
            idx = idx[pipe.named_steps[name].support_]
    return idx


def gene_importances(pipe: Pipeline, n_genes: int) -> np.ndarray:
    """The fitted model's importance of every input gene, 0 for genes it never saw (NaN for k-NN)."""
    raw = _model_importance(pipe.named_steps["model"])
    out = np.zeros(n_genes) if np.isfinite(raw).all() else np.full(n_genes, np.nan)
    out[selected_genes(pipe, n_genes)] = raw
    return out
