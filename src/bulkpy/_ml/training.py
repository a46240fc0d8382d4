"""What :func:`bulkpy.tl.classify`, :func:`bulkpy.get.classifier` and :func:`bulkpy.tl.predict`
share: reading and checking the training data, the hyper-parameter grid, nested cross-validation
and the fingerprint that ties a stored result to the data it was made from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._validate import check_counts, check_unique_names, dense, get_matrix, obs_column
from .pipeline import MODEL_PREFIX, SVM_CALIBRATION_FOLDS, default_grid

#: The ``uns[key]["params"]["method"]`` of a stored classifier.
METHOD = "bulkpy nested cross-validated classifier"


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
    for part in (list(map(str, y)), list(map(str, obs_names)), list(map(str, var_names))):
        h.update(json.dumps(part).encode())
    return h.hexdigest()


def resolve_grid(model: str, param_grid) -> tuple[dict, str]:
    """Pipeline-level grid (model parameters prefixed) and its JSON text as given by the user."""
    grid = default_grid(model) if param_grid is None else param_grid
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
        out[k if "__" in k else MODEL_PREFIX[model] + k] = values
    try:
        text = json.dumps({k: out[k] for k in sorted(out)})
    except TypeError as err:
        raise TypeError(
            f"param_grid values must be numbers, strings, booleans, None or lists of them, so that the chosen "
            f"model can be stored in h5ad and rebuilt ({err})"
        ) from None
    return out, text


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


def fit_tuned(pipe, grid: dict, X: np.ndarray, y: np.ndarray, *, inner_cv: int, seed: int):
    """Fit ``pipe`` with the hyper-parameters that score best (ROC AUC) in stratified inner CV;
    returns the fitted pipeline and the chosen parameters (``{}`` without a grid).

    Equivalent to scikit-learn's ``GridSearchCV(pipe, grid, scoring="roc_auc"/"roc_auc_ovr")``
    with ``refit=True`` (the first best candidate in ``ParameterGrid`` order wins ties), but the
    preprocessing steps are fitted once per inner split and parameter setting of their own, not
    once per model candidate: normalisation and feature selection dominate the cost."""
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid, StratifiedKFold

    if not grid:
        return clone(pipe).fit(X, y), {}
    candidates = list(ParameterGrid(grid))
    if len(candidates) == 1:  # nothing to choose
        return clone(pipe).set_params(**candidates[0]).fit(X, y), dict(candidates[0])
    classes = np.array(sorted(set(y)), dtype=object)
    splits = list(StratifiedKFold(inner_cv, shuffle=True, random_state=seed).split(X, y))
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
                scores[i, j] = _score(y[test], proba_frame(est, x_test, classes), classes)
    best = candidates[int(np.argmax(scores.mean(axis=1)))]
    return clone(pipe).set_params(**best).fit(X, y), dict(best)


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
    """``uns[key]["params"]`` of a :func:`bulkpy.tl.classify` result (raises when absent)."""
    from .._validate import check_adata

    check_adata(adata)
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, got {type(key).__name__}")
    entry = adata.uns.get(key)
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping) or params.get("method") != METHOD:
        found = [
            k for k, v in adata.uns.items()
            if isinstance(v, Mapping) and isinstance(v.get("params"), Mapping) and v["params"].get("method") == METHOD
        ]
        raise KeyError(f"no bk.tl.classify result under uns[{key!r}]; classifications in this object: {found or 'none'}")
    return dict(params)


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
