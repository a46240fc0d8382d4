"""What :func:`bulkpy.tl.classify`, :func:`bulkpy.tl.regress`, :func:`bulkpy.tl.survival`,
:func:`bulkpy.get.classifier` and :func:`bulkpy.tl.predict` share: reading and checking the
training data and the target, the hyper-parameter grid, nested cross-validation, the metrics of
each task and the fingerprint that ties a stored result to the data it was made from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._validate import check_counts, check_unique_names, dense, get_matrix, obs_column
from .pipeline import SVM_CALIBRATION_FOLDS, default_grid, model_prefix

#: The ``uns[key]["params"]["method"]`` of a stored classifier.
METHOD = "bulkpy nested cross-validated classifier"
#: ... of a stored regression and survival model.
METHOD_REGRESSION = "bulkpy nested cross-validated regressor"
METHOD_SURVIVAL = "bulkpy nested cross-validated penalised Cox model"
METHODS = {METHOD: "classification", METHOD_REGRESSION: "regression", METHOD_SURVIVAL: "survival"}
#: The function that made each task's results (for messages).
TOOL = {"classification": "bk.tl.classify", "regression": "bk.tl.regress", "survival": "bk.tl.survival"}


def labels(adata, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Class labels as strings and the sorted classes; raises for missing labels and one class."""
    col = obs_column(adata, label, what="label")
    missing = col.isna().to_numpy()
    if missing.any():
        names = adata.obs_names[missing].tolist()
        raise ValueError(
            f"obs[{label!r}] is missing for {int(missing.sum())} samples (e.g. {names[:5]}); subset to the "
            "labelled samples (adata[adata.obs[label].notna()]) and predict the others with bk.tl.predict"
        )
    y = col.astype(str).to_numpy().astype(object)
    classes = np.array(sorted(set(y)), dtype=object)
    if classes.size < 2:
        raise ValueError(f"obs[{label!r}] has a single class ({classes.tolist()}); a classifier needs at least two")
    bad = [c for c in classes if "/" in c or c == ""]
    if bad:
        raise ValueError(f"class names {bad} can not be stored in h5ad (empty or containing '/'); rename the levels")
    return y, classes


def numeric_column(adata, key: str, *, what: str) -> np.ndarray:
    """A numeric ``obs`` column as float64: no missing values, finite (raises otherwise)."""
    col = obs_column(adata, key, what=what)
    if isinstance(col.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)
    ):
        raise TypeError(
            f"obs[{key!r}] ({what}) is not numeric (dtype {col.dtype}); convert it with pd.to_numeric"
            + ("; for class labels use bk.tl.classify" if what == "target" else "")
        )
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        names = adata.obs_names[bad].tolist()
        raise ValueError(
            f"obs[{key!r}] ({what}) is missing or not finite for {int(bad.sum())} samples (e.g. {names[:5]}); subset "
            "to the samples where it is known and predict the others with bk.tl.predict"
        )
    return values


def target(adata, key: str) -> np.ndarray:
    """A continuous target: numeric, finite, not constant."""
    y = numeric_column(adata, key, what="target")
    if np.ptp(y) == 0:
        raise ValueError(f"obs[{key!r}] is constant ({y[0]}); there is nothing to predict")
    return y


def survival_outcome(adata, time: str, event: str) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up times (> 0) and event indicators (bool) from ``obs``."""
    t = numeric_column(adata, time, what="time")
    if (t <= 0).any():
        names = adata.obs_names[t <= 0].tolist()
        raise ValueError(f"obs[{time!r}] has {int((t <= 0).sum())} times <= 0 (e.g. {names[:5]}); follow-up times must be > 0")
    col = obs_column(adata, event, what="event")
    if col.isna().any():
        raise ValueError(f"obs[{event!r}] is missing for {int(col.isna().sum())} samples; the event indicator must be known")
    if pd.api.types.is_bool_dtype(col.dtype):
        e = col.to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
        v = col.to_numpy(dtype=np.float64)
        if not np.isin(v, (0.0, 1.0)).all():
            raise ValueError(f"obs[{event!r}] must be True/False or 1 (event) / 0 (censored), got values {sorted(set(v))[:5]}")
        e = v == 1.0
    else:
        raise TypeError(f"obs[{event!r}] must be boolean or 0/1 (1 = event, 0 = censored), got dtype {col.dtype}")
    if e.sum() < 2:
        raise ValueError(f"obs[{event!r}] has {int(e.sum())} events; a Cox model needs events (at least 2, and one per fold)")
    return t, e


def matrix(adata, layer: str | None, normalization: str) -> np.ndarray:
    """The dense samples × genes input, checked for what ``normalization`` needs."""
    X = get_matrix(adata, layer)
    where = "X" if layer is None else f"layer {layer!r}"
    if normalization == "none":
        Xd = dense(X)
        if Xd.size == 0 or not np.all(np.isfinite(Xd)):
            raise ValueError(f"the values in {where} must be finite (normalization='none' uses them as they are)")
        return Xd
    check_counts(X, what=f"counts in {where}", integer=normalization != "log_cpm")
    return dense(X)


def frame(X: np.ndarray, adata) -> pd.DataFrame:
    """Samples × genes DataFrame whose column names the fitted pipeline remembers."""
    check_unique_names(adata)
    return pd.DataFrame(X, index=adata.obs_names.astype(str), columns=adata.var_names.astype(str))


def fingerprint(X: np.ndarray, y: np.ndarray, obs_names, var_names) -> str:
    """SHA-256 of the training matrix, labels and names (ties a stored classifier to its data)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    for part in (fingerprint_target(np.asarray(y)), list(map(str, obs_names)), list(map(str, var_names))):
        h.update(json.dumps(part).encode())
    return h.hexdigest()


def resolve_grid(model, param_grid, task: str = "classification") -> tuple[dict, str]:
    """Pipeline-level grid (model parameters prefixed) and its JSON text as given by the user."""
    grid = default_grid(model, task) if param_grid is None else param_grid
    prefix = model_prefix(task, model)
    if not isinstance(grid, Mapping):
        raise TypeError(f"param_grid must be a dict of lists (or None for the default), got {type(grid).__name__}")
    out = {}
    for k, v in grid.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"param_grid keys must be parameter names, got {k!r}")
        values = list(v) if isinstance(v, list | tuple | np.ndarray) else None
        if not values:
            raise ValueError(f"param_grid[{k!r}] must be a non-empty list of values, got {v!r}")
        values = [x.item() if isinstance(x, np.generic) else x for x in values]
        out[k if "__" in k else prefix + k] = values
    try:
        text = json.dumps({k: out[k] for k in sorted(out)})
    except TypeError as err:
        raise TypeError(
            f"param_grid values must be numbers, strings, booleans, None or lists of them, so that the chosen "
            f"model can be stored in h5ad and rebuilt ({err})"
        ) from None
    if not isinstance(model, str):
        valid = set(model.get_params(deep=True))
        unknown = sorted(k[len("model__"):] for k in out if k.startswith("model__") and k[len("model__"):] not in valid)
        if unknown:
            raise ValueError(
                f"param_grid names {unknown}, which {type(model).__name__} does not have; its parameters: {sorted(valid)}"
            )
    return out, text


def check_fold_sizes(n: int, *, cv: int, inner_cv: int, tune: bool, what: str = "samples") -> None:
    """Enough samples (or events) for ``cv`` outer folds and ``inner_cv`` inner folds."""
    if n < cv:
        raise ValueError(f"{n} {what} are fewer than cv={cv} folds; lower cv")
    if tune and train_size(n, cv) < inner_cv:
        raise ValueError(
            f"{n} {what} leave {train_size(n, cv)} in an outer training fold, fewer than inner_cv={inner_cv}; lower "
            "inner_cv or cv, or pass param_grid={} to skip tuning"
        )


def train_size(n: int, folds: int) -> int:
    """Smallest training part of ``n`` samples of one class in stratified ``folds``-fold CV."""
    return n - int(np.ceil(n / folds))


def check_class_sizes(y: np.ndarray, classes: np.ndarray, *, cv: int, inner_cv: int, model: str, tune: bool) -> None:
    counts = pd.Series(y).value_counts().reindex(classes)
    small = counts[counts < cv]
    if len(small):
        raise ValueError(
            f"classes {small.to_dict()} have fewer samples than cv={cv} folds; every outer test fold needs each "
            f"class: lower cv to at most {int(counts.min())} or gather more samples"
        )
    n_min = int(counts.min())
    outer_train = train_size(n_min, cv)
    if tune and outer_train < inner_cv:
        raise ValueError(
            f"the smallest class ({counts.idxmin()!r}, {n_min} samples) leaves {outer_train} in an outer training "
            f"fold, fewer than inner_cv={inner_cv}; lower inner_cv or cv, or pass param_grid={{}} to skip tuning"
        )
    if model == "svm":
        inner_train = train_size(outer_train, inner_cv) if tune else outer_train
        if inner_train < SVM_CALIBRATION_FOLDS:
            raise ValueError(
                f"the SVM's probability calibration uses {SVM_CALIBRATION_FOLDS} internal folds, but the smallest class "
                f"has only {inner_train} samples in the innermost training sets; lower cv/inner_cv or use another model"
            )


def check_knn_grid(grid: dict, y: np.ndarray, *, cv: int, inner_cv: int, tune: bool) -> dict:
    """Drop ``n_neighbors`` values larger than the smallest training set."""
    key = "model__n_neighbors"
    n = len(y)
    smallest = n - int(np.ceil(n / cv))
    if tune:
        smallest -= int(np.ceil(smallest / inner_cv))
    if key in grid:
        keep = [v for v in grid[key] if isinstance(v, int) and v <= smallest]
        if not keep:
            raise ValueError(f"every n_neighbors in the grid exceeds the smallest training set ({smallest} samples)")
        grid = {**grid, key: keep}
    return grid


def _score(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """ROC AUC of class probabilities (columns in ``classes`` order); macro one-vs-rest for more
    than two classes."""
    from sklearn.metrics import roc_auc_score

    if classes.size == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(classes)))


def splitter(task: str, folds: int, seed: int):
    """Shuffled folds: stratified by class (classification) or by the event indicator
    (survival, so that every fold has events); plain k-fold for regression."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "regression":
        return KFold(folds, shuffle=True, random_state=seed)
    return StratifiedKFold(folds, shuffle=True, random_state=seed)


def strata(task: str, y: np.ndarray) -> np.ndarray | None:
    """What the folds are stratified on."""
    if task == "classification":
        return y
    if task == "survival":
        return y["event"]
    return None


def _inner_score(task: str, est, x_test, y_test, classes) -> float:
    """The tuning criterion: ROC AUC, R² or Harrell's concordance index."""
    from .._stats import ml as eng

    if task == "classification":
        return _score(y_test, proba_frame(est, x_test, classes), classes)
    pred = np.asarray(est.predict(x_test), dtype=np.float64)
    if task == "regression":
        return eng.regression_scores(y_test, pred)["r2"]
    c = eng.harrell_c(y_test["time"], y_test["event"], pred)
    return 0.5 if np.isnan(c) else c


def fit_tuned(pipe, grid: dict, X: np.ndarray, y: np.ndarray, *, inner_cv: int, seed: int, task: str = "classification"):
    """Fit ``pipe`` with the hyper-parameters that score best in inner CV (ROC AUC for
    classification, R² for regression, Harrell's C for survival); returns the fitted pipeline and
    the chosen parameters (``{}`` without a grid).

    Equivalent to scikit-learn's ``GridSearchCV(pipe, grid, scoring=...)`` with ``refit=True``
    (the first best candidate in ``ParameterGrid`` order wins ties), but the preprocessing steps
    are fitted once per inner split and parameter setting of their own, not once per model
    candidate: normalisation and feature selection dominate the cost."""
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid

    if not grid:
        return clone(pipe).fit(X, y), {}
    candidates = list(ParameterGrid(grid))
    if len(candidates) == 1:  # nothing to choose
        return clone(pipe).set_params(**candidates[0]).fit(X, y), dict(candidates[0])
    classes = np.array(sorted(set(y)), dtype=object) if task == "classification" else None
    splits = list(splitter(task, inner_cv, seed).split(X, strata(task, y)))
    groups: dict[str, list[int]] = {}
    for i, cand in enumerate(candidates):
        pre = {k: v for k, v in cand.items() if not k.startswith("model__")}
        groups.setdefault(json.dumps(pre, sort_keys=True, default=str), []).append(i)
    scores = np.zeros((len(candidates), len(splits)))
    for members in groups.values():
        pre_params = {k: v for k, v in candidates[members[0]].items() if not k.startswith("model__")}
        for j, (train, test) in enumerate(splits):
            pre = clone(pipe[:-1]).set_params(**pre_params)
            x_train = pre.fit_transform(X[train], y[train])
            x_test = pre.transform(X[test])
            for i in members:
                model_params = {k[len("model__"):]: v for k, v in candidates[i].items() if k.startswith("model__")}
                est = clone(pipe[-1]).set_params(**model_params).fit(x_train, y[train])
                scores[i, j] = _inner_score(task, est, x_test, y[test], classes)
    best = candidates[int(np.argmax(np.nan_to_num(scores, nan=-np.inf).mean(axis=1)))]
    return clone(pipe).set_params(**best).fit(X, y), dict(best)


def cross_validate(pipe, grid: dict, X: np.ndarray, y: np.ndarray, *, task: str, cv: int, inner_cv: int, seed: int,
                   predict, n_out: int) -> dict:
    """Nested cross-validation: per outer fold, tune on the training part (:func:`fit_tuned`),
    then ``predict(fitted, X_test)`` (``n_out`` columns). Returns the out-of-fold predictions,
    the fold of each sample (1..cv), how many folds selected each gene, the chosen parameters
    (JSON per fold), the fitted fold pipelines and the fold index arrays; then the final pipeline
    tuned and fitted on all samples. Runs with one BLAS thread: small fits are faster without
    thread start-up, and the results can not depend on how a machine splits a reduction."""
    from threadpoolctl import threadpool_limits

    from .pipeline import selected_genes

    n, g = X.shape
    out = np.full((n, n_out), np.nan)
    fold_of = np.zeros(n, dtype=np.int64)
    selected = np.zeros(g)
    params, fitted, tests = [], [], []
    with threadpool_limits(limits=1):
        for i, (train, test) in enumerate(splitter(task, cv, seed).split(X, strata(task, y)), start=1):
            fit, best = fit_tuned(pipe, grid, X[train], y[train], inner_cv=inner_cv, seed=seed, task=task)
            out[test] = np.asarray(predict(fit, X[test]), dtype=np.float64).reshape(len(test), n_out)
            fold_of[test] = i
            selected[selected_genes(fit, g)] += 1
            params.append(json.dumps(best, sort_keys=True))
            fitted.append((fit, train, test))
            tests.append(test)
        final, final_best = fit_tuned(pipe, grid, X, y, inner_cv=inner_cv, seed=seed, task=task)
    return {"predictions": out, "fold": fold_of, "selected": selected, "fold_params": params, "fitted": fitted,
            "tests": tests, "final": final, "final_params": final_best}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """R², RMSE, Spearman and Pearson correlation, number of samples."""
    from .._stats import ml as eng

    return {**eng.regression_scores(y, pred), "n_samples": int(len(y))}


def survival_metrics(y: np.ndarray, risk: np.ndarray) -> dict:
    """Harrell's concordance index, number of samples and of events."""
    from .._stats import ml as eng

    return {"concordance": eng.harrell_c(y["time"], y["event"], risk), "n_samples": int(len(y)),
            "n_events": int(np.sum(y["event"]))}


def proba_frame(pipe, X: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    """Class probabilities with columns in the order of ``classes``."""
    p = pipe.predict_proba(X)
    order = [list(pipe.classes_).index(c) for c in classes]
    return np.asarray(p, dtype=np.float64)[:, order]


def metrics(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict:
    """ROC AUC (macro one-vs-rest for more than two classes; NaN when ``y`` has a single class),
    accuracy and balanced accuracy of the class with the largest probability."""
    from sklearn.metrics import roc_auc_score

    pred = classes[np.argmax(proba, axis=1)]
    present = np.unique(y)
    if present.size < 2:
        auc = np.nan
    elif classes.size == 2:
        auc = float(roc_auc_score(y == classes[1], proba[:, 1]))
    elif present.size == classes.size:
        auc = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(classes)))
    else:  # one-vs-rest over the classes present
        auc = float(np.mean([roc_auc_score(y == c, proba[:, list(classes).index(c)]) for c in present]))
    acc = float(np.mean(pred == y))
    recalls = [np.mean(pred[y == c] == c) for c in present]
    return {"roc_auc": auc, "accuracy": acc, "balanced_accuracy": float(np.mean(recalls)), "n_samples": int(len(y))}


def stored_params(adata, key: str) -> dict:
    """``uns[key]["params"]`` of a :func:`bulkpy.tl.classify`, :func:`bulkpy.tl.regress` or
    :func:`bulkpy.tl.survival` result (raises when absent), with ``task`` filled in."""
    from .._validate import check_adata

    check_adata(adata)
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, got {type(key).__name__}")
    entry = adata.uns.get(key)
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping) or params.get("method") not in METHODS:
        found = [
            k for k, v in adata.uns.items()
            if isinstance(v, Mapping) and isinstance(v.get("params"), Mapping) and v["params"].get("method") in METHODS
        ]
        raise KeyError(
            f"no bk.tl.classify, bk.tl.regress or bk.tl.survival result under uns[{key!r}]; models in this object: "
            f"{found or 'none'}"
        )
    return {**dict(params), "task": METHODS[params["method"]]}


def pipeline_task(pipe) -> str:
    """The task of a fitted pipeline, from its final step."""
    from sklearn.base import is_classifier

    from .survival import PenalizedCox

    est = pipe.steps[-1][1]
    if isinstance(est, PenalizedCox):
        return "survival"
    if is_classifier(est) or hasattr(est, "predict_proba"):
        return "classification"
    return "regression"


def model_spec(params: Mapping):
    """The ``model`` argument of :func:`make_pipeline` from stored params: the name of a built-in
    model, or the estimator rebuilt from its stored class path and parameters."""
    from .estimators import rebuild

    if str(params["model"]) != "estimator":
        return str(params["model"])
    return rebuild(str(params["estimator"]), str(params["estimator_params"]))


def training_target(adata, params: Mapping) -> np.ndarray:
    """The target a stored model was trained on, read again from ``obs``."""
    task = params.get("task", "classification")
    if task == "classification":
        label = str(params["label"])
        if label not in adata.obs.columns:
            raise KeyError(f"the label column obs[{label!r}] used by classify is no longer in adata.obs")
        return labels(adata, label)[0]
    if task == "regression":
        return target(adata, str(params["target"]))
    from .survival import survival_target

    t, e = survival_outcome(adata, str(params["time"]), str(params["event"]))
    return survival_target(t, e)


def fingerprint_target(y: np.ndarray) -> list:
    """The target as a list of strings for :func:`fingerprint` (exact for floats)."""
    if y.dtype.names:
        return [f"{bool(e)}:{float(t)!r}" for e, t in zip(y["event"], y["time"], strict=True)]
    if y.dtype.kind == "f":
        return [repr(float(v)) for v in y]
    return list(map(str, y))


def stored_labelled(adata, key: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """The stored params, true labels (strings) and classes of a classification or prediction."""
    from .._validate import check_adata

    check_adata(adata)
    entry = adata.uns.get(key) if isinstance(key, str) else None
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping) or "classes" not in params:
        found = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and isinstance(v.get("params"), Mapping)
                 and "classes" in v["params"]]
        raise KeyError(f"no bk.tl.classify / bk.tl.predict result under uns[{key!r}]; results here: {found or 'none'}")
    classes = np.asarray([str(c) for c in np.atleast_1d(params["classes"])], dtype=object)
    label = params.get("label")
    if label is None or str(label) == "None":
        raise ValueError(f"the result {key!r} was made without true labels (predict(..., label=None)); nothing to compare")
    label = str(label)
    if label not in adata.obs.columns:
        raise KeyError(f"the true labels obs[{label!r}] used by {key!r} are no longer in adata.obs")
    y = adata.obs[label].astype(str).to_numpy().astype(object)
    return dict(params), y, classes
