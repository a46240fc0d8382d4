"""Estimators given as objects (``model=`` any scikit-learn estimator): checking them, and
describing them in h5ad-safe text from which :func:`bulkpy.get.classifier` rebuilds them.

An estimator is described by its class's import path and its ``get_params(deep=False)`` as JSON.
Parameters that are themselves estimators are described the same way (nested); tuples are kept as
tuples; numpy scalars become numbers. A parameter JSON can not hold (a function, an array) makes
the description incomplete: the run still works and is stored, but the model can not be rebuilt
from the file, and :func:`bulkpy.get.classifier` says so."""

from __future__ import annotations

import importlib
import json

import numpy as np


class NotDescribable(TypeError):
    """A parameter that JSON can not hold."""


def check_estimator(model, task: str, seed: int):
    """An unfitted clone of ``model``, checked for what ``task`` needs, with ``random_state``
    set to ``seed`` when the estimator has one left at ``None`` (so that results are repeatable)."""
    from sklearn.base import clone, is_classifier, is_regressor

    if isinstance(model, type):
        raise TypeError(f"model must be an estimator object, not the class {model.__name__}; pass {model.__name__}()")
    name = type(model).__name__
    if not callable(getattr(model, "fit", None)):
        raise TypeError(f"model={name} has no fit method; pass a scikit-learn estimator (or one of the model names)")
    if not callable(getattr(model, "get_params", None)):
        raise TypeError(f"model={name} has no get_params; it must follow the scikit-learn estimator API (BaseEstimator)")
    if task == "classification":
        if is_regressor(model):
            raise TypeError(f"model={name} is a regressor; use bk.tl.regress for a continuous target")
        if not callable(getattr(model, "predict_proba", None)):
            raise TypeError(
                f"model={name} has no predict_proba; classify scores class probabilities (ROC AUC): use a "
                "probabilistic classifier, or wrap it in sklearn.calibration.CalibratedClassifierCV"
            )
    else:
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"model={name} has no predict method")
        if is_classifier(model):
            raise TypeError(f"model={name} is a classifier; use bk.tl.classify for class labels")
    try:
        est = clone(model)
    except Exception as err:  # scikit-learn raises several types for estimators it can not clone
        raise TypeError(f"model={name} can not be cloned by sklearn.base.clone ({err}); pass an unfitted estimator") from None
    params = est.get_params(deep=False)
    if "random_state" in params and params["random_state"] is None:
        est.set_params(random_state=seed)
    return est


def class_path(cls) -> str:
    """Import path of a class, through the shortest public module that exports it
    (``sklearn.svm.SVC`` rather than ``sklearn.svm._classes.SVC``)."""
    module, name = cls.__module__, cls.__qualname__
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i])
        if any(p.startswith("_") for p in parts[1:i]):
            break
        try:
            if getattr(importlib.import_module(candidate), name, None) is cls:
                return f"{candidate}.{name}"
        except ImportError:
            continue
    return f"{module}.{name}"


def _encode(value):
    from sklearn.base import BaseEstimator

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, int | float):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotDescribable(f"a dict with non-string keys ({value!r})")
        return {"__dict__": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, BaseEstimator):
        return {"__estimator__": class_path(type(value)), "params": _encode_params(value)}
    raise NotDescribable(f"{type(value).__name__} value {value!r}")


def _encode_params(est) -> dict:
    return {k: _encode(v) for k, v in sorted(est.get_params(deep=False).items())}


def describe(est) -> dict:
    """``{"estimator": import path, "estimator_params": JSON text, "rebuildable": bool}``; when a
    parameter can not be described the text holds the ``repr`` of every parameter instead."""
    path = class_path(type(est))
    try:
        text = json.dumps(_encode_params(est), sort_keys=True)
        ok = True
    except NotDescribable as err:
        text = json.dumps({"__unstorable__": str(err),
                           "repr": {k: repr(v) for k, v in sorted(est.get_params(deep=False).items())}})
        ok = False
    return {"estimator": path, "estimator_params": text, "rebuildable": ok}


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: _decode(v) for k, v in value["__dict__"].items()}
        if "__estimator__" in value:
            return _build(value["__estimator__"], value["params"])
    return value


def _import(path: str):
    module, _, name = path.rpartition(".")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"the estimator class {path} can not be imported here ({err}); install the package that defines it, "
            "or define the class in an importable module (not inside a function)"
        ) from None
    return obj


def _build(path: str, params: dict):
    return _import(path)(**{k: _decode(v) for k, v in params.items()})


def rebuild(path: str, params_json: str):
    """The unfitted estimator described by :func:`describe`."""
    params = json.loads(params_json)
    if "__unstorable__" in params:
        raise ValueError(
            f"the estimator {path} had a parameter that can not be stored in h5ad ({params['__unstorable__']}), so it "
            "can not be rebuilt from the stored parameters; refit it yourself on the same data"
        )
    return _build(path, params)
