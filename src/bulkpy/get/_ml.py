"""Tables (and the fitted classifier) out of ``bk.tl.classify``, ``bk.tl.predict`` and
``bk.tl.cluster`` results. Nothing is written to the AnnData."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._validate import check_adata


def classifier(adata, *, key: str = "classify"):
    """The final pipeline of a :func:`bulkpy.tl.classify` run, rebuilt and fitted.

    The pipeline is not kept inside the AnnData (a pickled object would not survive h5ad, nor
    open without bulkpy). Instead ``classify`` stores the settings, the hyper-parameters it chose
    and a fingerprint of the training data; this function rebuilds the pipeline from them and
    fits it on the same samples, which gives the identical model (every step is deterministic
    given the seed). It works the same on an object read back from h5ad. The data (layer, labels,
    sample and gene names) must be unchanged since ``classify``; otherwise a ``ValueError`` says so.

    Parameters
    ----------
    adata
        The AnnData :func:`bulkpy.tl.classify` was run on.
    key
        The ``key_added`` of that run.

    Returns
    -------
    A fitted :class:`sklearn.pipeline.Pipeline` (steps ``filter``, ``normalize``, ``select``,
    ``scale``, ``model``; some may be absent) taking a samples × genes DataFrame of the training
    genes (its ``feature_names_in_``); ``classes_`` are the class names. Use it with
    :func:`bulkpy.tl.predict`.

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
    label = str(p["label"])
    layer = None if str(p["layer"]) == "None" else str(p["layer"])
    normalization = str(p["normalization"])
    if label not in adata.obs.columns:
        raise KeyError(f"the label column obs[{label!r}] used by classify is no longer in adata.obs")
    y, _ = tr.labels(adata, label)
    X = tr.matrix(adata, layer, normalization)
    if tr.fingerprint(X, y, adata.obs_names, adata.var_names) != str(p["fingerprint"]):
        raise ValueError(
            f"the data differ from those bk.tl.classify(key={key!r}) was trained on (layer {layer!r}, obs[{label!r}], "
            "or the sample / gene names changed); rebuild the classifier from the object classify ran on"
        )
    pipe = make_pipeline(
        model=str(p["model"]),
        normalization=normalization,
        features=str(p["features"]),
        n_features=int(p["n_features"]),
        filter_genes=bool(p["filter_genes"]),
        seed=int(p["seed"]),
    )
    best = json.loads(str(p["final_params"]))
    if best:
        pipe.set_params(**best)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return pipe.fit(tr.frame(X, adata), y)


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
    check_adata(adata)
    entry = adata.uns.get(key) if isinstance(key, str) else None
    if not isinstance(entry, Mapping) or "metrics" not in entry:
        found = [k for k, v in adata.uns.items() if isinstance(v, Mapping) and "metrics" in v]
        raise KeyError(f"no classification metrics under uns[{key!r}]; results with metrics: {found or 'none'}")
    df = pd.DataFrame(entry["metrics"]).copy()
    df["n_samples"] = df["n_samples"].astype(int)
    return df


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
