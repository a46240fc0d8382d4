"""Tables (and the fitted model) out of ``bk.tl.classify``, ``bk.tl.regress``,
``bk.tl.survival``, ``bk.tl.predict`` and ``bk.tl.cluster`` results. Nothing is written to the
AnnData."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._validate import check_adata


def classifier(adata, *, key: str = "classify"):
    """The final pipeline of a :func:`bulkpy.tl.classify`, :func:`bulkpy.tl.regress` or
    :func:`bulkpy.tl.survival` run, rebuilt and fitted.

    The pipeline is not kept inside the AnnData (a pickled object would not survive h5ad, nor
    open without bulkpy). Instead the run stores the settings, the model (a built-in name, or an
    estimator object's class path and parameters), the hyper-parameters it chose and a
    fingerprint of the training data; this function rebuilds the pipeline from them and fits it on
    the same samples, which gives the identical model (every step is deterministic given the
    seed). It works the same on an object read back from h5ad. The data (layer, target, sample
    and gene names) must be unchanged since the run; otherwise a ``ValueError`` says so. An
    estimator object is rebuilt by importing its class by the stored path, which must be
    importable here (a class defined inside a function is not), and from its stored parameters
    (an ``ImportError`` or ``ValueError`` says when that is impossible).

    Parameters
    ----------
    adata
        The AnnData the model was trained on.
    key
        The ``key_added`` of that run.

    Returns
    -------
    A fitted :class:`sklearn.pipeline.Pipeline` (steps ``filter``, ``normalize``, ``select``,
    ``scale``, ``model``; some may be absent) taking a samples × genes DataFrame of the training
    genes (its ``feature_names_in_``); for a classifier ``classes_`` are the class names. Use it
    with :func:`bulkpy.tl.predict`.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, param_grid={}, n_features=100)
    >>> pipe = bk.get.classifier(adata)
    >>> [name for name, _ in pipe.steps]
    ['filter', 'normalize', 'select', 'scale', 'model']
    """
    from .._ml import make_pipeline
    from .._ml import training as tr

    p = tr.stored_params(adata, key)
    task = p["task"]
    layer = None if str(p["layer"]) == "None" else str(p["layer"])
    normalization = str(p["normalization"])
    y = tr.training_target(adata, p)
    X = tr.matrix(adata, layer, normalization)
    if tr.fingerprint(X, y, adata.obs_names, adata.var_names) != str(p["fingerprint"]):
        what = {"classification": f"obs[{str(p.get('label'))!r}]", "regression": f"obs[{str(p.get('target'))!r}]",
                "survival": f"obs[{str(p.get('time'))!r}]/obs[{str(p.get('event'))!r}]"}[task]
        raise ValueError(
            f"the data differ from those {tr.TOOL[task]}(key={key!r}) was trained on (layer {layer!r}, {what}, "
            "or the sample / gene names changed); rebuild the model from the object it was trained on"
        )
    pipe = make_pipeline(
        model=tr.model_spec(p),
        normalization=normalization,
        features=str(p["features"]),
        n_features=int(p["n_features"]),
        filter_genes=bool(p["filter_genes"]),
        seed=int(p["seed"]),
        task=task,
    )
    best = json.loads(str(p["final_params"]))
    if best:
        pipe.set_params(**best)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return pipe.fit(tr.frame(X, adata), y)


def _metrics(adata, key: str, what: str, columns: list[str]) -> pd.DataFrame:
    check_adata(adata)
    entry = adata.uns.get(key) if isinstance(key, str) else None
    ok = isinstance(entry, Mapping) and "metrics" in entry
    if ok:
        df = pd.DataFrame(entry["metrics"]).copy()
        ok = set(columns) <= set(df.columns)
    if not ok:
        found = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and "metrics" in v
                 and set(columns) <= set(pd.DataFrame(v["metrics"]).columns)]
        raise KeyError(f"no {what} metrics under uns[{key!r}]; results with {what} metrics: {found or 'none'}")
    for c in ("n_samples", "n_events"):
        if c in df.columns:
            df[c] = df[c].astype(int)
    return df


def regression_metrics(adata, *, key: str = "regress") -> pd.DataFrame:
    """Cross-validated performance of a :func:`bulkpy.tl.regress` run (or of
    :func:`bulkpy.tl.predict` of a regression model with true values).

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run.

    Returns
    -------
    DataFrame with one row per outer fold (``fold_1``...) and ``overall`` (all out-of-fold
    predictions pooled), columns ``r2`` (1 - residual / total sum of squares; 0 is predicting
    the mean, negative is worse), ``rmse``, ``spearman``, ``pearson`` and ``n_samples``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.obs["depth"] = adata.layers["counts"].sum(axis=1) / 1e6
    >>> bk.tl.regress(adata, target="depth", model="ridge", cv=3, param_grid={}, n_features=50)
    >>> bk.get.regression_metrics(adata).index.tolist()
    ['fold_1', 'fold_2', 'fold_3', 'overall']
    """
    return _metrics(adata, key, "regression", ["r2", "rmse", "spearman", "n_samples"])


def survival_metrics(adata, *, key: str = "survival") -> pd.DataFrame:
    """Cross-validated performance of a :func:`bulkpy.tl.survival` run (or of
    :func:`bulkpy.tl.predict` of a survival model with observed times).

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run.

    Returns
    -------
    DataFrame with one row per outer fold (``fold_1``...) and ``overall`` (all out-of-fold risk
    scores pooled), columns ``concordance`` (Harrell's C: 0.5 is chance, 1 a perfect ordering),
    ``n_samples``, ``n_events`` and, in the ``overall`` row of a ``tl.survival`` run,
    ``logrank_chi2`` and ``logrank_p`` of the cross-validated risk groups.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.geuvadis85()[:, :300].copy()
    >>> rng = np.random.default_rng(0)
    >>> adata.obs["months"], adata.obs["died"] = rng.exponential(24, 85) + 1, rng.random(85) < 0.7
    >>> bk.tl.survival(adata, time="months", event="died", cv=3, n_features=20, param_grid={})
    >>> bk.get.survival_metrics(adata).index.tolist()
    ['fold_1', 'fold_2', 'fold_3', 'overall']
    """
    return _metrics(adata, key, "survival", ["concordance", "n_samples"])


def predictions(adata, *, key: str = "regress") -> pd.DataFrame:
    """Observed and (out-of-fold) predicted values of a :func:`bulkpy.tl.regress` run, or of
    :func:`bulkpy.tl.predict` of a regression model with true values.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run.

    Returns
    -------
    DataFrame indexed by sample with columns ``observed``, ``predicted`` and (for
    ``tl.regress``) ``fold``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.obs["depth"] = adata.layers["counts"].sum(axis=1) / 1e6
    >>> bk.tl.regress(adata, target="depth", model="ridge", cv=3, param_grid={}, n_features=50)
    >>> bk.get.predictions(adata).columns.tolist()
    ['observed', 'predicted', 'fold']
    """
    check_adata(adata)
    entry = adata.uns.get(key) if isinstance(key, str) else None
    params = entry.get("params") if isinstance(entry, Mapping) else None
    column = None
    if isinstance(params, Mapping):
        if params.get("method") == "bulkpy nested cross-validated regressor":
            column = params.get("target")
        elif params.get("method") == "bulkpy regression prediction":
            column = params.get("label")
            if column is None or str(column) == "None":
                raise ValueError(f"the prediction {key!r} was made without true values (label=None); nothing to compare")
    if column is None:
        raise KeyError(f"no bk.tl.regress result (or regression prediction with label=) under uns[{key!r}]")
    column = str(column)
    if column not in adata.obs.columns:
        raise KeyError(f"the observed values obs[{column!r}] used by {key!r} are no longer in adata.obs")
    out = pd.DataFrame({"observed": pd.to_numeric(adata.obs[column]).to_numpy(dtype=np.float64),
                        "predicted": adata.obs[f"{key}_prediction"].to_numpy(dtype=np.float64)},
                       index=adata.obs_names.copy())
    if f"{key}_fold" in adata.obs.columns:
        out["fold"] = adata.obs[f"{key}_fold"].to_numpy()
    return out


def kaplan_meier(adata, *, key: str = "survival", groupby: str | None = None) -> pd.DataFrame:
    """Kaplan–Meier estimates of the risk groups of a :func:`bulkpy.tl.survival` run (or of any
    ``obs`` grouping), with the numbers at risk, as R's ``survfit(Surv(time, event) ~ group)``.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the survival run (its ``time`` and ``event`` columns are used).
    groupby
        ``obs`` column defining the groups; ``None`` uses the cross-validated risk groups
        ``obs[f"{key}_risk_group"]``.

    Returns
    -------
    Long DataFrame with columns ``group`` (categorical), ``time`` (0, then every distinct time of
    the group), ``n_risk``, ``n_event``, ``n_censor`` and ``survival`` (the estimate just after
    that time).

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.geuvadis85()[:, :300].copy()
    >>> rng = np.random.default_rng(0)
    >>> adata.obs["months"], adata.obs["died"] = rng.exponential(24, 85) + 1, rng.random(85) < 0.7
    >>> bk.tl.survival(adata, time="months", event="died", cv=3, n_features=20, param_grid={})
    >>> bk.get.kaplan_meier(adata).columns.tolist()
    ['group', 'time', 'n_risk', 'n_event', 'n_censor', 'survival']
    """
    from .._ml import training as tr
    from .._stats import ml as eng
    from .._validate import obs_column

    p = tr.stored_params(adata, key)
    if p["task"] != "survival":
        raise KeyError(f"uns[{key!r}] holds a {p['task']} result, not a bk.tl.survival one")
    t, e = tr.survival_outcome(adata, str(p["time"]), str(p["event"]))
    col = obs_column(adata, f"{key}_risk_group" if groupby is None else groupby, what="group column")
    if col.isna().any():
        raise ValueError(f"obs[{col.name!r}] has missing values; every sample needs a group")
    levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.astype(str).unique())
    values = col.astype(str).to_numpy()
    parts = []
    for lev in levels:
        m = values == str(lev)
        if not m.any():
            continue
        km = eng.kaplan_meier(t[m], e[m])
        part = pd.DataFrame(km)[["time", "n_risk", "n_event", "n_censor", "survival"]]
        start = pd.DataFrame({"time": [0.0], "n_risk": [int(m.sum())], "n_event": [0], "n_censor": [0], "survival": [1.0]})
        part = pd.concat([start, part], ignore_index=True)
        part.insert(0, "group", str(lev))
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["group"] = pd.Categorical(out["group"], categories=[str(v) for v in levels if (values == str(v)).any()])
    return out


def classification_metrics(adata, *, key: str = "classify") -> pd.DataFrame:
    """Cross-validated performance of a :func:`bulkpy.tl.classify` run (or of
    :func:`bulkpy.tl.predict` with true labels).

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the run.

    Returns
    -------
    DataFrame with one row per outer fold (``fold_1``...) and ``overall`` (all out-of-fold
    predictions pooled), columns ``roc_auc`` (macro one-vs-rest for more than two classes),
    ``accuracy``, ``balanced_accuracy`` and ``n_samples``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, param_grid={}, n_features=100)
    >>> bk.get.classification_metrics(adata).index.tolist()
    ['fold_1', 'fold_2', 'fold_3', 'overall']
    """
    return _metrics(adata, key, "classification", ["roc_auc", "accuracy", "n_samples"])


def _proba(adata, key: str, classes: np.ndarray) -> np.ndarray:
    name = f"{key}_proba"
    if name not in adata.obsm:
        raise KeyError(f"obsm[{name!r}] is missing; run bk.tl.classify or bk.tl.predict with key_added={key!r}")
    p = pd.DataFrame(adata.obsm[name], index=adata.obs_names)
    return p[list(classes)].to_numpy(dtype=np.float64)


def roc_curve(adata, *, key: str = "classify") -> pd.DataFrame:
    """ROC curves of the out-of-fold class probabilities of a classification (or of predictions
    made with true labels).

    Two classes give one curve, for the second class (in sorted order) against the first; more
    classes give one one-vs-rest curve per class.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of :func:`bulkpy.tl.classify` or :func:`bulkpy.tl.predict`.

    Returns
    -------
    Long DataFrame with columns ``class``, ``fpr``, ``tpr``, ``threshold`` and ``auc`` (the area
    under that class's curve).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, param_grid={}, n_features=100)
    >>> bk.get.roc_curve(adata).columns.tolist()
    ['class', 'fpr', 'tpr', 'threshold', 'auc']
    """
    from sklearn.metrics import auc as _auc
    from sklearn.metrics import roc_curve as _roc

    from .._ml import training as tr

    _, y, classes = tr.stored_labelled(adata, key)
    proba = _proba(adata, key, classes)
    which = [classes.size - 1] if classes.size == 2 else list(range(classes.size))
    parts = []
    for j in which:
        truth = y == classes[j]
        if truth.all() or not truth.any():
            continue
        fpr, tpr, thr = _roc(truth, proba[:, j], drop_intermediate=False)
        parts.append(pd.DataFrame({"class": str(classes[j]), "fpr": fpr, "tpr": tpr, "threshold": thr,
                                   "auc": float(_auc(fpr, tpr))}))
    if not parts:
        raise ValueError(f"the true labels of {key!r} contain a single class; no ROC curve can be drawn")
    out = pd.concat(parts, ignore_index=True)
    out["class"] = pd.Categorical(out["class"], categories=[str(classes[j]) for j in which])
    return out


def confusion_matrix(adata, *, key: str = "classify", normalize: str | None = None) -> pd.DataFrame:
    """Confusion matrix of the (out-of-fold) predictions against the true labels.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of :func:`bulkpy.tl.classify` or :func:`bulkpy.tl.predict`.
    normalize
        ``None`` (counts), ``"true"`` (rows sum to one), ``"pred"`` (columns sum to one) or ``"all"``.

    Returns
    -------
    DataFrame with the true classes as rows (index named ``true``) and the predicted classes as
    columns (named ``predicted``).

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, param_grid={}, n_features=100)
    >>> bk.get.confusion_matrix(adata).to_numpy().sum()
    np.int64(7)
    """
    from .._ml import training as tr

    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize={normalize!r} is not supported; choose None, 'true', 'pred' or 'all'")
    _, y, classes = tr.stored_labelled(adata, key)
    name = f"{key}_prediction"
    if name not in adata.obs.columns:
        raise KeyError(f"obs[{name!r}] is missing; run bk.tl.classify or bk.tl.predict with key_added={key!r}")
    pred = adata.obs[name].astype(str).to_numpy()
    rows = list(classes) + sorted(set(y) - set(classes))
    idx_t = pd.Index(rows).get_indexer(y)
    idx_p = pd.Index(list(classes)).get_indexer(pred)
    m = np.zeros((len(rows), classes.size), dtype=np.int64)
    np.add.at(m, (idx_t, idx_p), 1)
    df = pd.DataFrame(m, index=pd.Index(rows, name="true"), columns=pd.Index(list(classes), name="predicted"))
    if normalize is None:
        return df
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            return df.div(df.sum(axis=1), axis=0)
        if normalize == "pred":
            return df.div(df.sum(axis=0), axis=1)
        return df / df.to_numpy().sum()


def consensus_matrix(adata, *, key: str = "cluster") -> pd.DataFrame:
    """The consensus matrix of a :func:`bulkpy.tl.cluster` run with ``method="consensus"``.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        The ``key_added`` of the clustering.

    Returns
    -------
    Samples × samples DataFrame of consensus values in [0, 1] (the fraction of resamples that
    clustered two samples together among those that drew both), in ``obs`` order.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.vst(adata)
    >>> bk.tl.cluster(adata, layer="vst", k=2, n_resamples=20)
    >>> bk.get.consensus_matrix(adata).shape
    (7, 7)
    """
    check_adata(adata)
    name = f"{key}_consensus" if isinstance(key, str) else None
    if name is None or name not in adata.obsp:
        found = [k[: -len("_consensus")] for k in adata.obsp.keys() if k.endswith("_consensus")]
        raise KeyError(f"no consensus matrix for key {key!r} (obsp[{name!r}]); consensus clusterings here: {found or 'none'}")
    m = adata.obsp[name]
    m = m.toarray() if hasattr(m, "toarray") else np.asarray(m)
    return pd.DataFrame(m, index=adata.obs_names.copy(), columns=adata.obs_names.copy())
