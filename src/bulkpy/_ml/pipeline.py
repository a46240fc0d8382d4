"""Assemble a leak-free pipeline: gene filter → normalisation → feature selection → scaling →
model, each step fitted on the samples given to ``fit`` only.

One pipeline serves the three tasks: ``"classification"`` (:func:`bulkpy.tl.classify`),
``"regression"`` (:func:`bulkpy.tl.regress`) and ``"survival"`` (:func:`bulkpy.tl.survival`); they
differ in the model at the end, in what the supervised gene selection scores, and in whether the
gene filter may use the target as groups (only class labels can)."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .transformers import VST, AsIs, FilterByExpr, LogCPM, LogNorm, SelectFeatures

TASKS = ("classification", "regression", "survival")
MODELS = ("logistic", "random_forest", "svm", "knn", "mlp")
REGRESSION_MODELS = ("elastic_net", "ridge", "random_forest", "mlp")
SURVIVAL_MODELS = ("coxnet",)
TASK_MODELS = {"classification": MODELS, "regression": REGRESSION_MODELS, "survival": SURVIVAL_MODELS}
NORMALIZATIONS = ("log_cpm", "vst", "log_norm", "none")
FEATURES = ("variance", "de", "all")
#: What ``SelectFeatures`` scores with ``features="de"`` for each task.
SELECT_TARGET = {"classification": "class", "regression": "continuous", "survival": "survival"}

#: Inner folds of the sigmoid calibration that gives the SVM its class probabilities.
SVM_CALIBRATION_FOLDS = 3

#: Hidden layer of the default multi-layer perceptron (one layer; small data need few weights).
MLP_HIDDEN = (32,)

_DEFAULT_GRIDS = {
    "classification": {
        "logistic": {"C": [0.001, 0.01, 0.1, 1.0]},
        "random_forest": {"n_estimators": [100, 300], "max_depth": [None, 5]},
        "svm": {"C": [0.001, 0.01, 0.1, 1.0]},
        "knn": {"n_neighbors": [3, 5, 7, 9]},
        "mlp": {"alpha": [1.0, 10.0, 100.0]},
    },
    "regression": {
        "elastic_net": {"alpha": [0.01, 0.03, 0.1, 0.3], "l1_ratio": [0.5]},
        "ridge": {"alpha": [1.0, 10.0, 100.0, 1000.0]},
        "random_forest": {"n_estimators": [300], "max_features": [0.1, 0.3]},
        "mlp": {"alpha": [1.0, 10.0, 100.0]},
    },
    "survival": {"coxnet": {"alpha": [0.01, 0.03, 0.1, 0.3], "l1_ratio": [0.5]}},
}


def model_prefix(task: str, model) -> str:
    """Where a model's own parameters live in the pipeline: ``C`` of the SVM is inside the
    calibration wrapper, a built-in regressor inside the target-standardising wrapper."""
    if not isinstance(model, str):
        return "model__"
    if task == "classification" and model == "svm":
        return "model__estimator__"
    if task == "regression":
        return "model__regressor__"
    return "model__"


def default_grid(model, task: str = "classification") -> dict:
    """The default hyper-parameter grid of ``model`` (a fresh copy; ``{}`` for an estimator object)."""
    if not isinstance(model, str):
        return {}
    return {k: list(v) for k, v in _DEFAULT_GRIDS[task][model].items()}


def _classifier(model: str, seed: int):
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
    if model == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=MLP_HIDDEN, solver="lbfgs", alpha=10.0, max_iter=5000, random_state=seed)
    raise ValueError(f"model={model!r} is not supported; choose one of {list(MODELS)}")


def _regressor(model: str, seed: int):
    """A built-in regressor that learns on the standardised target (so that the penalty grids
    mean the same whatever the target's unit) and predicts on the original scale."""
    from sklearn.compose import TransformedTargetRegressor

    if model == "elastic_net":
        from sklearn.linear_model import ElasticNet

        reg = ElasticNet(alpha=0.1, l1_ratio=0.5, max_iter=100_000, random_state=seed)
    elif model == "ridge":
        from sklearn.linear_model import Ridge

        reg = Ridge(alpha=10.0)
    elif model == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        reg = RandomForestRegressor(n_estimators=300, max_features=0.3, random_state=seed, n_jobs=1)
    elif model == "mlp":
        from sklearn.neural_network import MLPRegressor

        reg = MLPRegressor(hidden_layer_sizes=MLP_HIDDEN, solver="lbfgs", alpha=10.0, max_iter=5000, random_state=seed)
    else:
        raise ValueError(f"model={model!r} is not supported; choose one of {list(REGRESSION_MODELS)}")
    return TransformedTargetRegressor(regressor=reg, transformer=StandardScaler())


def estimator(model, task: str, seed: int):
    """The unfitted model step: a built-in one by name, or a clone of the estimator given."""
    from sklearn.base import clone

    if not isinstance(model, str):
        return clone(model)
    if task == "classification":
        return _classifier(model, seed)
    if task == "regression":
        return _regressor(model, seed)
    if model == "coxnet":
        from .survival import PenalizedCox

        return PenalizedCox()
    raise ValueError(f"model={model!r} is not supported; choose one of {list(SURVIVAL_MODELS)}")


def make_pipeline(
    *,
    model="logistic",
    normalization: str = "log_cpm",
    features: str = "variance",
    n_features: int = 500,
    filter_genes: bool = True,
    seed: int = 0,
    task: str = "classification",
) -> Pipeline:
    """An unfitted pipeline; steps ``filter`` (count normalisations with ``filter_genes``),
    ``normalize``, ``select`` (unless ``features="all"``), ``scale`` (not for random forests) and
    ``model`` (a name of ``TASK_MODELS[task]`` or an unfitted scikit-learn estimator, cloned)."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not supported; choose one of {list(TASKS)}")
    steps = []
    if normalization != "none" and filter_genes:
        # only class labels make groups for filterByExpr; a continuous or survival target does not
        steps.append(("filter", FilterByExpr(use_groups=task == "classification")))
    norm = {"log_cpm": LogCPM, "vst": VST, "log_norm": LogNorm, "none": AsIs}[normalization]()
    steps.append(("normalize", norm))
    if features != "all":
        steps.append(("select", SelectFeatures(method=features, n_features=n_features, target=SELECT_TARGET[task])))
    if model != "random_forest":
        steps.append(("scale", StandardScaler()))
    steps.append(("model", estimator(model, task, seed)))
    return Pipeline(steps)


def _model_importance(est) -> np.ndarray:
    """|coefficients| (mean over classes or class pairs) or impurity importances; NaN for models
    with neither (k-NN, neural networks, most estimators given as objects)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import TransformedTargetRegressor

    if isinstance(est, CalibratedClassifierCV):
        est = est.calibrated_classifiers_[0].estimator
    if isinstance(est, TransformedTargetRegressor):
        est = est.regressor_
    if hasattr(est, "feature_importances_"):
        return np.asarray(est.feature_importances_, dtype=np.float64)
    coef = getattr(est, "coef_", None)
    if coef is not None and np.size(coef):
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        if coef.shape[-1] == est.n_features_in_:
            return np.abs(coef).mean(axis=0)
    return np.full(est.n_features_in_, np.nan)


def selected_genes(pipe: Pipeline, n_genes: int) -> np.ndarray:
    """Indices (into the pipeline's input genes) of the genes that reach the model."""
    idx = np.arange(n_genes)
    for name in ("filter", "select"):
        if name in pipe.named_steps:
            idx = idx[pipe.named_steps[name].support_]
    return idx


def gene_importances(pipe: Pipeline, n_genes: int) -> np.ndarray:
    """The fitted model's importance of every input gene, 0 for genes it never saw (NaN when
    the model has no importances)."""
    raw = _model_importance(pipe.named_steps["model"])
    out = np.zeros(n_genes) if np.isfinite(raw).all() else np.full(n_genes, np.nan)
    out[selected_genes(pipe, n_genes)] = raw
    return out
