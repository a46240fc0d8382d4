"""Machine learning on samples: leak-free cross-validated classification (``bk.tl.classify``),
regression (``bk.tl.regress``) and survival (``bk.tl.survival``, penalised Cox), prediction of new
samples (``bk.tl.predict``) and (consensus) clustering (``bk.tl.cluster``).

The three supervised tools share one pipeline (:mod:`bulkpy._ml`) and one nested
cross-validation (:func:`bulkpy._ml.training.cross_validate`). The fitted scikit-learn pipeline is
not stored in the AnnData (pickled objects do not round-trip through h5ad and would not open
without bulkpy). Each tool stores everything needed to rebuild it — the data fingerprint, the
settings (for an estimator object its class path and parameters) and the hyper-parameters chosen —
and :func:`bulkpy.get.classifier` refits the identical pipeline from them on demand.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .._docs import doc_adata, doc_copy, doc_copy_returns, doc_params
from .._slots import check_key, write_params
from .._stats import ml as _ml
from .._utils import finish, start
from .._validate import (
    check_adata,
    check_bool,
    check_choice,
    check_unique_names,
    dense,
    get_matrix,
    obs_column,
)

_doc_key_classify = """\
key_added
    Key of the result: ``obs[f"{{key_added}}_prediction"]``, ``obsm[f"{{key_added}}_proba"]``,
    ``uns[key_added]``."""


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


_doc_pipeline = """\
layer
    Layer with raw counts (``None`` for ``X``); with ``normalization="none"`` a layer already
    on a log scale (e.g. ``"vst"``; then that transformation saw all samples).
features
    Gene selection in each training fold: ``"variance"`` (most variable genes after
    normalisation), ``"de"`` (genes most associated with the target in the training fold: limma's
    moderated F between classes, the squared moderated t of the slope of a continuous target, or
    the squared univariate Cox score statistic for survival) or ``"all"``.
n_features
    Number of genes selected.
normalization
    ``"log_cpm"`` (edgeR TMM log-CPM, prior count 2), ``"vst"`` (DESeq2 VST; slow on many
    genes), ``"log_norm"`` (DESeq2 ``normTransform``: log2 of size-factor normalised counts
    + 1) or ``"none"`` (``layer`` used as it is).
filter_genes
    Apply ``filterByExpr`` in each training fold (count normalisations only).
cv
    Number of outer folds.
inner_cv
    Number of inner folds for the hyper-parameter search.
seed
    Seed of the fold assignment and of the models' randomness (an estimator object whose
    ``random_state`` is ``None`` gets ``seed``)."""

_doc_estimator = """\
An estimator object (any scikit-learn compatible estimator, unfitted; it is cloned) takes the
place of the built-in model: it gets the same per-fold filtering, normalisation, selection and
scaling. Its ``param_grid`` names its own parameters; without one it is fitted as given. The
stored parameters describe it (``estimator``: the import path of its class,
``estimator_params``: its ``get_params(deep=False)`` as JSON, nested estimators included), and
:func:`bulkpy.get.classifier` rebuilds it from them when the class can be imported by that path."""


def _check_common(adata, *, copy, filter_genes, key_added, features, normalization, n_features, cv, inner_cv, seed):
    from .. import _ml

    check_adata(adata)
    check_bool(copy, "copy")
    check_bool(filter_genes, "filter_genes")
    check_key(key_added, "key_added")
    check_choice(features, _ml.FEATURES, "features")
    check_choice(normalization, _ml.NORMALIZATIONS, "normalization")
    return (_check_int(n_features, "n_features", 1), _check_int(cv, "cv", 2), _check_int(inner_cv, "inner_cv", 2),
            _check_int(seed, "seed", 0))


def _resolve_model(model, task: str, seed: int) -> tuple[object, dict]:
    """The model for the pipeline (a name, or a checked clone of an estimator object) and the
    params that describe it."""
    from .._ml import TASK_MODELS
    from .._ml.estimators import check_estimator, describe

    if isinstance(model, str):
        check_choice(model, TASK_MODELS[task], "model")
        return model, {"model": model}
    est = check_estimator(model, task, seed)
    d = describe(est)
    return est, {"model": "estimator", "estimator": d["estimator"], "estimator_params": d["estimator_params"],
                 "estimator_rebuildable": d["rebuildable"]}


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns, key_added=_doc_key_classify,
            pipeline=_doc_pipeline, estimator=_doc_estimator)
def classify(
    adata,
    *,
    label: str,
    layer: str | None = "counts",
    model="logistic",
    features: str = "variance",
    n_features: int = 500,
    normalization: str = "log_cpm",
    filter_genes: bool = True,
    cv: int = 5,
    inner_cv: int = 3,
    param_grid: dict | None = None,
    seed: int = 0,
    key_added: str = "classify",
    copy: bool = False,
):
    """Predict a sample label from expression with nested, leak-free cross-validation.

    Every data-dependent step is a scikit-learn transformer inside one
    :class:`~sklearn.pipeline.Pipeline`, so it is learnt on the training samples of each fold
    only: edgeR's ``filterByExpr`` (training labels as groups), the normalisation (TMM factors
    against a training reference sample, DESeq2 size factors with training geometric means, the
    VST with the training dispersion trend), the choice of genes (variance, or limma's moderated
    F of the training labels), standardisation and the classifier. Selecting genes by
    differential expression on all samples before cross-validation leaks the test labels into
    training and inflates the scores; here that cannot happen.

    The samples are split into ``cv`` stratified folds (shuffled with ``seed``); for each, the
    hyper-parameters are chosen by an inner stratified ``inner_cv``-fold grid search on the
    training part (ROC AUC; macro one-vs-rest for more than two classes), the pipeline refitted
    on the whole training part, and the held-out samples predicted. A final pipeline is tuned and
    fitted the same way on all samples; its gene importances are stored, and
    :func:`bulkpy.get.classifier` rebuilds it (for :func:`bulkpy.tl.predict`). Results do not
    depend on the number of threads: everything runs with ``n_jobs=1`` and fixed seeds.

    {estimator}

    Parameters
    ----------
    {adata}
    label
        ``obs`` column with the class of every sample (two or more classes; values are compared
        as strings; missing values are an error). Every class needs at least ``cv`` samples.
    model
        ``"logistic"`` (L2 logistic regression), ``"random_forest"``, ``"svm"`` (linear SVM with
        sigmoid-calibrated probabilities, scikit-learn's ``CalibratedClassifierCV``), ``"knn"``,
        ``"mlp"`` (scikit-learn's ``MLPClassifier``: one hidden layer of 32 ReLU units, L-BFGS,
        L2 penalty ``alpha`` tuned), or a classifier object with ``predict_proba``.
    param_grid
        Hyper-parameter grid ``{{name: [values]}}``; names without ``"__"`` are parameters of the
        model (``C``, ``n_estimators``, ``max_depth``, ``n_neighbors``, ``alpha``...), names with
        it address pipeline steps (``"select__n_features"``). ``None`` uses the defaults
        (logistic: ``C`` in 0.001–1; random forest: ``n_estimators`` 100/300 × ``max_depth``
        None/5; SVM: ``C`` in 0.001–1; k-NN: ``n_neighbors`` 3–9; MLP: ``alpha`` 1/10/100; an
        estimator object: no tuning); ``{{}}`` fits without tuning. Values must be
        JSON-serialisable so that the choice can be stored.
    {pipeline}
    {key_added}
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``obs[f"{{key_added}}_prediction"]``: out-of-fold predicted class (categorical);
        - ``obs[f"{{key_added}}_fold"]``: the outer fold (1..cv) in which each sample was tested;
        - ``obsm[f"{{key_added}}_proba"]``: out-of-fold class probabilities, one column per class;
        - ``var[f"{{key_added}}_importance"]``: importance of each gene in the final model
          (mean absolute coefficient of the standardised gene, or impurity importance; 0 for genes
          not selected; NaN for models without either: k-NN, MLP, many estimator objects);
        - ``var[f"{{key_added}}_selected_fraction"]``: fraction of the outer folds that selected the gene;
        - ``uns[key_added]["metrics"]``: ROC AUC, accuracy, balanced accuracy and size of every
          outer fold and of all out-of-fold predictions pooled (row ``"overall"``);
        - ``uns[key_added]["params"]``: the settings, the model (or the estimator's class path and
          parameters), the classes, the hyper-parameters chosen per fold and for the final model
          (JSON text), the data fingerprint and versions.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, inner_cv=2, n_features=100)
    >>> adata.obsm["classify_proba"].columns.tolist()
    ['treated', 'untreated']
    >>> bk.get.classification_metrics(adata).columns.tolist()
    ['roc_auc', 'accuracy', 'balanced_accuracy', 'n_samples']

    Any scikit-learn classifier with ``predict_proba`` fits into the same pipeline:

    >>> from sklearn.linear_model import LogisticRegression
    >>> bk.tl.classify(adata, label="condition", model=LogisticRegression(C=0.1), cv=3, n_features=100,
    ...                key_added="lr")
    >>> adata.uns["lr"]["params"]["estimator"]
    'sklearn.linear_model.LogisticRegression'
    """
    from .. import _ml
    from .._ml import training as tr

    n_features, cv, inner_cv, seed = _check_common(
        adata, copy=copy, filter_genes=filter_genes, key_added=key_added, features=features,
        normalization=normalization, n_features=n_features, cv=cv, inner_cv=inner_cv, seed=seed)
    est, model_params = _resolve_model(model, "classification", seed)
    y, classes = tr.labels(adata, label)
    grid, grid_json = tr.resolve_grid(est, param_grid, "classification")
    tune = bool(grid)
    tr.check_class_sizes(y, classes, cv=cv, inner_cv=inner_cv, model=model if isinstance(model, str) else "", tune=tune)
    if model == "knn":
        grid = tr.check_knn_grid(grid, y, cv=cv, inner_cv=inner_cv, tune=tune)
    X = tr.matrix(adata, layer, normalization)
    check_unique_names(adata)
    g = X.shape[1]

    settings = {"normalization": normalization, "features": features, "n_features": n_features,
                "filter_genes": filter_genes, "seed": seed}
    pipe = _ml.make_pipeline(model=est, **settings)
    res = tr.cross_validate(pipe, grid, X, y, task="classification", cv=cv, inner_cv=inner_cv, seed=seed,
                            predict=lambda fit, x: tr.proba_frame(fit, x, classes), n_out=classes.size)
    proba = res["predictions"]
    final = res["final"]
    fold_rows = {f"fold_{i}": tr.metrics(y[t], proba[t], classes) for i, t in enumerate(res["tests"], start=1)}
    fold_rows["overall"] = tr.metrics(y, proba, classes)
    table = pd.DataFrame.from_dict(fold_rows, orient="index")[["roc_auc", "accuracy", "balanced_accuracy", "n_samples"]]
    pred = pd.Categorical(classes[np.argmax(proba, axis=1)], categories=list(classes))

    params = {
        "method": tr.METHOD,
        "label": label,
        "layer": layer,
        **model_params,
        **settings,
        "cv": cv,
        "inner_cv": inner_cv,
        "param_grid": grid_json,
        "scoring": "roc_auc" if classes.size == 2 else "roc_auc_ovr (macro)",
        "classes": list(classes),
        "best_params_per_fold": res["fold_params"],
        "final_params": json.dumps(res["final_params"], sort_keys=True),
        "n_genes_final_model": int(_ml.pipeline.selected_genes(final, g).size),
        "fingerprint": tr.fingerprint(X, y, adata.obs_names, adata.var_names),
    }

    adata = start(adata, copy)
    adata.obs[f"{key_added}_prediction"] = pred
    adata.obs[f"{key_added}_fold"] = res["fold"]
    adata.obsm[f"{key_added}_proba"] = pd.DataFrame(proba, index=adata.obs_names, columns=[str(c) for c in classes])
    adata.var[f"{key_added}_importance"] = _ml.gene_importances(final, g)
    adata.var[f"{key_added}_selected_fraction"] = res["selected"] / cv
    adata.uns.pop(key_added, None)
    write_params(adata, key_added, params, metrics=table)
    return finish(adata, copy)


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns, pipeline=_doc_pipeline,
            estimator=_doc_estimator)
def regress(
    adata,
    *,
    target: str,
    layer: str | None = "counts",
    model="elastic_net",
    features: str = "variance",
    n_features: int = 500,
    normalization: str = "log_cpm",
    filter_genes: bool = True,
    cv: int = 5,
    inner_cv: int = 3,
    param_grid: dict | None = None,
    seed: int = 0,
    key_added: str = "regress",
    copy: bool = False,
):
    """Predict a continuous sample outcome (age, a score, a dose...) from expression with
    nested, leak-free cross-validation.

    The pipeline of :func:`bulkpy.tl.classify`, with a regressor at the end: ``filterByExpr``
    (without groups), the normalisation, the gene selection (variance, or the squared limma
    moderated t of the slope of ``expression ~ target`` in the training fold) and the
    standardisation are all learnt on the training samples of each fold only. The samples are
    split into ``cv`` shuffled folds; in each, the hyper-parameters are chosen by an inner
    ``inner_cv``-fold grid search on the training part (mean R² over the inner folds), the
    pipeline refitted on the whole training part and the held-out samples predicted. A final
    pipeline is tuned and fitted the same way on all samples (gene importances;
    :func:`bulkpy.get.classifier` rebuilds it for :func:`bulkpy.tl.predict`). The built-in models
    learn the standardised target (scikit-learn's ``TransformedTargetRegressor``), so that the
    default penalty grids suit any unit; predictions are on the target's scale.

    {estimator}

    Parameters
    ----------
    {adata}
    target
        Numeric ``obs`` column to predict (finite for every sample; NaN is an error: subset to
        the samples where it is known).
    model
        ``"elastic_net"`` (``ElasticNet``, ``alpha`` tuned, ``l1_ratio`` 0.5), ``"ridge"``,
        ``"random_forest"`` (``RandomForestRegressor``, 300 trees, ``max_features`` tuned),
        ``"mlp"`` (``MLPRegressor``: one hidden layer of 32 ReLU units, L-BFGS, ``alpha``
        tuned), or a regressor object.
    param_grid
        Hyper-parameter grid ``{{name: [values]}}`` (names without ``"__"`` are the model's
        parameters, with it pipeline steps). ``None`` uses the defaults (elastic net: ``alpha``
        0.01–0.3; ridge: ``alpha`` 1–1000; random forest: ``max_features`` 0.1/0.3; MLP:
        ``alpha`` 1/10/100; an estimator object: no tuning); ``{{}}`` fits without tuning.
    {pipeline}
    key_added
        Key of the result.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``obs[f"{{key_added}}_prediction"]``: out-of-fold prediction of the target;
        - ``obs[f"{{key_added}}_fold"]``: the outer fold (1..cv) in which each sample was tested;
        - ``var[f"{{key_added}}_importance"]``: importance of each gene in the final model
          (absolute coefficient of the standardised gene, or impurity importance; 0 for genes not
          selected; NaN for models without either, such as the MLP);
        - ``var[f"{{key_added}}_selected_fraction"]``: fraction of the outer folds that selected the gene;
        - ``uns[key_added]["metrics"]``: ``r2``, ``rmse``, ``spearman``, ``pearson`` and
          ``n_samples`` of every outer fold and of all out-of-fold predictions pooled (row
          ``"overall"``);
        - ``uns[key_added]["params"]``: the settings, the model (or the estimator's class path and
          parameters), the hyper-parameters chosen per fold and for the final model (JSON text),
          the data fingerprint and versions.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> adata.obs["depth"] = adata.layers["counts"].sum(axis=1) / 1e6
    >>> bk.tl.regress(adata, target="depth", model="ridge", cv=3, param_grid={{}}, n_features=50)
    >>> bk.get.regression_metrics(adata).columns.tolist()
    ['r2', 'rmse', 'spearman', 'pearson', 'n_samples']
    """
    from .. import _ml
    from .._ml import training as tr

    n_features, cv, inner_cv, seed = _check_common(
        adata, copy=copy, filter_genes=filter_genes, key_added=key_added, features=features,
        normalization=normalization, n_features=n_features, cv=cv, inner_cv=inner_cv, seed=seed)
    est, model_params = _resolve_model(model, "regression", seed)
    y = tr.target(adata, target)
    grid, grid_json = tr.resolve_grid(est, param_grid, "regression")
    tr.check_fold_sizes(y.size, cv=cv, inner_cv=inner_cv, tune=bool(grid))
    X = tr.matrix(adata, layer, normalization)
    check_unique_names(adata)
    g = X.shape[1]

    settings = {"normalization": normalization, "features": features, "n_features": n_features,
                "filter_genes": filter_genes, "seed": seed}
    pipe = _ml.make_pipeline(model=est, task="regression", **settings)
    res = tr.cross_validate(pipe, grid, X, y, task="regression", cv=cv, inner_cv=inner_cv, seed=seed,
                            predict=lambda fit, x: fit.predict(x), n_out=1)
    pred = res["predictions"][:, 0]
    final = res["final"]
    rows = {f"fold_{i}": tr.regression_metrics(y[t], pred[t]) for i, t in enumerate(res["tests"], start=1)}
    rows["overall"] = tr.regression_metrics(y, pred)
    table = pd.DataFrame.from_dict(rows, orient="index")[["r2", "rmse", "spearman", "pearson", "n_samples"]]

    params = {
        "method": tr.METHOD_REGRESSION,
        "target": target,
        "layer": layer,
        **model_params,
        **settings,
        "cv": cv,
        "inner_cv": inner_cv,
        "param_grid": grid_json,
        "scoring": "r2",
        "best_params_per_fold": res["fold_params"],
        "final_params": json.dumps(res["final_params"], sort_keys=True),
        "n_genes_final_model": int(_ml.pipeline.selected_genes(final, g).size),
        "fingerprint": tr.fingerprint(X, y, adata.obs_names, adata.var_names),
    }
    adata = start(adata, copy)
    adata.obs[f"{key_added}_prediction"] = pred
    adata.obs[f"{key_added}_fold"] = res["fold"]
    adata.var[f"{key_added}_importance"] = _ml.gene_importances(final, g)
    adata.var[f"{key_added}_selected_fraction"] = res["selected"] / cv
    adata.uns.pop(key_added, None)
    write_params(adata, key_added, params, metrics=table)
    return finish(adata, copy)


def _risk_thresholds(train_risk: np.ndarray, n_groups: int) -> list[float]:
    """Cut points of the risk groups: the ``1/n_groups`` quantiles of the training risk scores."""
    return [float(q) for q in np.quantile(train_risk, np.arange(1, n_groups) / n_groups)]


def risk_group_names(n_groups: int) -> list[str]:
    """``low``/``high``, ``low``/``intermediate``/``high``, else ``risk_1``...``risk_k``."""
    return {2: ["low", "high"], 3: ["low", "intermediate", "high"]}.get(n_groups, [f"risk_{i}" for i in range(1, n_groups + 1)])


def assign_risk_groups(risk: np.ndarray, thresholds) -> np.ndarray:
    """Group index of each risk score (0 = lowest risk); a score equal to a cut goes below it."""
    return np.searchsorted(np.asarray(thresholds, dtype=np.float64), risk, side="left")


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns, pipeline=_doc_pipeline)
def survival(
    adata,
    *,
    time: str,
    event: str,
    layer: str | None = "counts",
    features: str = "variance",
    n_features: int = 500,
    normalization: str = "log_cpm",
    filter_genes: bool = True,
    cv: int = 5,
    inner_cv: int = 3,
    param_grid: dict | None = None,
    n_groups: int = 2,
    seed: int = 0,
    key_added: str = "survival",
    copy: bool = False,
):
    """Predict survival (time to an event, with censoring) from expression with a penalised Cox
    model and nested, leak-free cross-validation.

    The pipeline of :func:`bulkpy.tl.classify` with an elastic-net penalised Cox
    proportional-hazards model at the end (scikit-survival's coxnet, the model of R's
    ``glmnet(family = "cox")``), fitted along a warm-started path down to the penalty ``alpha``:
    ``filterByExpr`` (without groups), the normalisation, the gene selection (variance, or the
    squared univariate Cox score statistic in the training fold) and the standardisation are all
    learnt on the training samples of each fold only. The folds are stratified by the event
    indicator; the penalty is chosen by an inner grid search on Harrell's concordance index.

    Each held-out sample gets a risk score (the linear predictor, log relative hazard) from its
    fold's model, and a risk group by that fold's cut points: the quantiles of the *training*
    samples' risk scores (the median for two groups), so the groups are cross-validated too
    (Simon et al. 2011, J Natl Cancer Inst 103:1-10). The concordance index of the out-of-fold
    risk scores is reported per fold and pooled; the log-rank test of the cross-validated risk
    groups is reported beside it (its p-value is approximate: the groups come from different fold
    models).

    Needs scikit-survival (``pip install "bulkpy[survival]"``).

    Parameters
    ----------
    {adata}
    time
        Numeric ``obs`` column with the follow-up time (> 0): time to the event, or to the last
        contact for censored samples.
    event
        ``obs`` column with the event indicator: ``True``/1 for an event, ``False``/0 for censored.
    param_grid
        Hyper-parameter grid ``{{name: [values]}}`` of the Cox model (``alpha``, the penalty on
        standardised genes, and ``l1_ratio`` in (0, 1], 1 being the lasso) or of pipeline steps
        (names with ``"__"``). ``None`` uses ``alpha`` in 0.01–0.3 with ``l1_ratio`` 0.5; ``{{}}``
        fits ``alpha=0.1`` without tuning.
    n_groups
        Number of risk groups (2: ``low``/``high`` at the training median; 3: tertiles
        ``low``/``intermediate``/``high``).
    {pipeline}
    key_added
        Key of the result.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``obs[f"{{key_added}}_risk"]``: out-of-fold risk score (higher: earlier event);
        - ``obs[f"{{key_added}}_risk_group"]``: cross-validated risk group (categorical, lowest first);
        - ``obs[f"{{key_added}}_fold"]``: the outer fold (1..cv) in which each sample was tested;
        - ``var[f"{{key_added}}_coef"]``: log hazard ratio per standard deviation of each gene in
          the final model (0 for genes not selected or shrunk to zero);
        - ``var[f"{{key_added}}_importance"]``: its absolute value;
        - ``var[f"{{key_added}}_selected_fraction"]``: fraction of the outer folds that selected the gene;
        - ``uns[key_added]["metrics"]``: ``concordance`` (Harrell's C), ``n_samples`` and
          ``n_events`` of every outer fold and pooled (``"overall"``), with ``logrank_chi2`` and
          ``logrank_p`` of the risk groups in the ``"overall"`` row;
        - ``uns[key_added]["params"]``: the settings, the hyper-parameters chosen per fold and for
          the final model (JSON text), the final model's risk cut points, whether every Cox fit
          converged, the data fingerprint and versions.

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.geuvadis85()[:, :300].copy()
    >>> rng = np.random.default_rng(0)
    >>> adata.obs["months"] = rng.exponential(24, adata.n_obs) + 1
    >>> adata.obs["died"] = rng.random(adata.n_obs) < 0.7
    >>> bk.tl.survival(adata, time="months", event="died", cv=3, n_features=20, param_grid={{}})
    >>> adata.obs["survival_risk_group"].cat.categories.tolist()
    ['low', 'high']
    >>> bk.get.survival_metrics(adata).columns.tolist()
    ['concordance', 'n_samples', 'n_events', 'logrank_chi2', 'logrank_p']
    """
    from .. import _ml
    from .._ml import training as tr
    from .._ml.survival import require_sksurv, survival_target
    from .._stats import ml as eng

    n_features, cv, inner_cv, seed = _check_common(
        adata, copy=copy, filter_genes=filter_genes, key_added=key_added, features=features,
        normalization=normalization, n_features=n_features, cv=cv, inner_cv=inner_cv, seed=seed)
    n_groups = _check_int(n_groups, "n_groups", 2)
    t, e = tr.survival_outcome(adata, time, event)
    y = survival_target(t, e)
    grid, grid_json = tr.resolve_grid("coxnet", param_grid, "survival")
    tr.check_fold_sizes(int(e.sum()), cv=cv, inner_cv=inner_cv, tune=bool(grid), what="events")
    X = tr.matrix(adata, layer, normalization)
    check_unique_names(adata)
    require_sksurv()
    g = X.shape[1]

    settings = {"normalization": normalization, "features": features, "n_features": n_features,
                "filter_genes": filter_genes, "seed": seed}
    pipe = _ml.make_pipeline(model="coxnet", task="survival", **settings)
    res = tr.cross_validate(pipe, grid, X, y, task="survival", cv=cv, inner_cv=inner_cv, seed=seed,
                            predict=lambda fit, x: fit.predict(x), n_out=1)
    risk = res["predictions"][:, 0]
    group = np.zeros(t.size, dtype=np.int64)
    for fit, train, test in res["fitted"]:
        group[test] = assign_risk_groups(risk[test], _risk_thresholds(fit.predict(X[train]), n_groups))
    final = res["final"]
    rows = {f"fold_{i}": tr.survival_metrics(y[k], risk[k]) for i, k in enumerate(res["tests"], start=1)}
    rows["overall"] = tr.survival_metrics(y, risk)
    table = pd.DataFrame.from_dict(rows, orient="index")[["concordance", "n_samples", "n_events"]]
    chi2, p = eng.logrank_test(t, e, group)
    table["logrank_chi2"] = np.nan
    table["logrank_p"] = np.nan
    table.loc["overall", ["logrank_chi2", "logrank_p"]] = [chi2, p]
    coef = np.zeros(g)
    coef[_ml.pipeline.selected_genes(final, g)] = final.named_steps["model"].coef_
    converged = all(f.named_steps["model"].converged_ for f, _, _ in res["fitted"]) and final.named_steps["model"].converged_
    names = risk_group_names(n_groups)

    params = {
        "method": tr.METHOD_SURVIVAL,
        "time": time,
        "event": event,
        "layer": layer,
        "model": "coxnet",
        **settings,
        "cv": cv,
        "inner_cv": inner_cv,
        "param_grid": grid_json,
        "scoring": "harrell_c",
        "n_groups": n_groups,
        "risk_groups": names,
        "risk_thresholds": _risk_thresholds(final.predict(X), n_groups),
        "converged": bool(converged),
        "best_params_per_fold": res["fold_params"],
        "final_params": json.dumps(res["final_params"], sort_keys=True),
        "n_genes_final_model": int(np.count_nonzero(coef)),
        "fingerprint": tr.fingerprint(X, y, adata.obs_names, adata.var_names),
    }
    adata = start(adata, copy)
    adata.obs[f"{key_added}_risk"] = risk
    adata.obs[f"{key_added}_risk_group"] = pd.Categorical([names[i] for i in group], categories=names)
    adata.obs[f"{key_added}_fold"] = res["fold"]
    adata.var[f"{key_added}_coef"] = coef
    adata.var[f"{key_added}_importance"] = np.abs(coef)
    adata.var[f"{key_added}_selected_fraction"] = res["selected"] / cv
    adata.uns.pop(key_added, None)
    write_params(adata, key_added, params, metrics=table)
    return finish(adata, copy)


_PREDICTION_METHOD = {"classification": "bulkpy classifier prediction", "regression": "bulkpy regression prediction",
                      "survival": "bulkpy survival prediction"}


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def predict(
    adata,
    *,
    model,
    model_key: str = "classify",
    layer: str | None = "counts",
    label: str | None = None,
    time: str | None = None,
    event: str | None = None,
    key_added: str = "predict",
    copy: bool = False,
):
    """Apply a model trained by :func:`bulkpy.tl.classify`, :func:`bulkpy.tl.regress` or
    :func:`bulkpy.tl.survival` to new samples.

    The pipeline normalises each new sample against what it learnt from the training samples
    (the TMM reference sample, the DESeq2 geometric means, the dispersion trend), so a sample's
    prediction does not depend on the other new samples. The genes are matched by name: every
    training gene must be present in ``adata`` (others are ignored). A survival model's risk
    groups use the cut points of the final model's training risk scores.

    Parameters
    ----------
    {adata}
    model
        A fitted pipeline from :func:`bulkpy.get.classifier`, or the AnnData the model was
        trained on (the model is rebuilt first).
    model_key
        The ``key_added`` of the training run when ``model`` is an AnnData.
    layer
        Layer of ``adata`` holding the same kind of values the model was trained on (raw counts
        for the count normalisations); ``None`` uses ``X``.
    label
        Optional ``obs`` column with the true classes (classification) or the true values
        (regression); when given, the metrics are stored too.
    time
        Optional ``obs`` column with the observed follow-up time of the new samples (survival
        models; with ``event``); when given, the concordance index is stored.
    event
        Optional ``obs`` column with the observed event indicator of the new samples (with ``time``).
    key_added
        Key of the result.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``obs[f"{{key_added}}_prediction"]``: the predicted class (categorical) or value;
        - ``obsm[f"{{key_added}}_proba"]``: (classification) class probabilities, one column per class;
        - ``obs[f"{{key_added}}_risk"]``, ``obs[f"{{key_added}}_risk_group"]``: (survival) risk
          score and risk group;
        - ``uns[key_added]["params"]``: the task, the model's classes and settings, ``label``
          (or ``time``/``event``), layer, versions;
        - ``uns[key_added]["metrics"]``: with true values, the metrics of the task (row
          ``"overall"``): ROC AUC, accuracy and balanced accuracy; R², RMSE, Spearman, Pearson;
          or concordance.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> train, new = adata[adata.obs_names != "treated1"].copy(), adata[["treated1"]].copy()
    >>> bk.tl.classify(train, label="condition", cv=2, param_grid={{}}, n_features=100)
    >>> bk.tl.predict(new, model=train)
    >>> new.obsm["predict_proba"].columns.tolist()
    ['treated', 'untreated']
    """
    from anndata import AnnData
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    from .. import get
    from .._ml import training as tr

    check_adata(adata)
    check_unique_names(adata)
    check_bool(copy, "copy")
    check_key(key_added, "key_added")
    source = "pipeline"
    thresholds = None
    if isinstance(model, AnnData):
        source = f"bk.get.classifier(model, key={model_key!r})"
        info = tr.stored_params(model, model_key)
        task = info["task"]
        keep = ["model", "normalization", "features", "n_features", "final_params"]
        keep += {"classification": ["label"], "regression": ["target"], "survival": ["time", "event"]}[task]
        keep += ["estimator"] if info["model"] == "estimator" else []
        if task == "survival":
            thresholds = np.atleast_1d(np.asarray(info["risk_thresholds"], dtype=np.float64))
            group_names = [str(v) for v in np.atleast_1d(info["risk_groups"])]
        info = {k: info[k] for k in keep}
        model = get.classifier(model, key=model_key)
    elif isinstance(model, Pipeline):
        info = {}
        task = tr.pipeline_task(model)
    else:
        raise TypeError(
            f"model must be a fitted pipeline from bk.get.classifier or an AnnData analysed with bk.tl.classify, "
            f"bk.tl.regress or bk.tl.survival, got {type(model).__name__}"
        )
    check_is_fitted(model)
    if label is not None and task == "survival":
        raise ValueError("a survival model is compared with the truth through time= and event=, not label=")
    if (time is not None or event is not None) and task != "survival":
        raise ValueError(f"time= and event= are for survival models; this is a {task} model (use label=)")
    if (time is None) != (event is None):
        raise ValueError("give both time= and event= (or neither)")
    genes = getattr(model, "feature_names_in_", None)
    if genes is None:
        raise TypeError("the pipeline was not fitted on named genes; build it with bk.get.classifier")
    genes = np.asarray(genes).astype(str)
    pos = pd.Index(adata.var_names.astype(str)).get_indexer(genes)
    if (pos < 0).any():
        missing = genes[pos < 0]
        raise KeyError(
            f"{missing.size} of the {genes.size} genes the model was trained on are not in adata.var_names "
            f"(e.g. {missing[:5].tolist()}); the new samples need the same gene identifiers"
        )
    X = dense(get_matrix(adata, layer))[:, pos]
    Xdf = pd.DataFrame(X, index=adata.obs_names.astype(str), columns=genes)
    truth = None
    classes = None
    if task == "classification":
        classes = np.asarray(model.classes_).astype(str).astype(object)
        if label is not None:
            col = obs_column(adata, label, what="label")
            if col.isna().any():
                raise ValueError(f"obs[{label!r}] has {int(col.isna().sum())} missing values; drop label= or fill them")
            truth = col.astype(str).to_numpy().astype(object)
            unknown = sorted(set(truth) - set(classes))
            if unknown:
                raise ValueError(f"obs[{label!r}] has classes {unknown} the model was not trained on (it knows {list(classes)})")
    elif task == "regression" and label is not None:
        truth = tr.numeric_column(adata, label, what="target")
    elif task == "survival" and time is not None:
        from .._ml.survival import survival_target

        truth = survival_target(*tr.survival_outcome(adata, time, event))
    with threadpool_limits(limits=1):
        out = tr.proba_frame(model, Xdf, classes) if task == "classification" else np.asarray(model.predict(Xdf), float)

    params = {"method": _PREDICTION_METHOD[task], "task": task, "model": source, "layer": layer,
              "n_genes": int(genes.size)}
    if task == "classification":
        params.update({"classes": list(classes), "label": label})
    elif task == "regression":
        params["label"] = label
    else:
        params.update({"time": time, "event": event})
    params.update({f"trained_{k}": v for k, v in info.items()})
    extra = {}
    if truth is not None:
        row = {"classification": lambda: tr.metrics(truth, out, classes),
               "regression": lambda: tr.regression_metrics(truth, out),
               "survival": lambda: tr.survival_metrics(truth, out)}[task]()
        extra["metrics"] = pd.DataFrame.from_dict({"overall": row}, orient="index")
    adata = start(adata, copy)
    if task == "classification":
        adata.obs[f"{key_added}_prediction"] = pd.Categorical(classes[np.argmax(out, axis=1)], categories=list(classes))
        adata.obsm[f"{key_added}_proba"] = pd.DataFrame(out, index=adata.obs_names, columns=[str(c) for c in classes])
    elif task == "regression":
        adata.obs[f"{key_added}_prediction"] = out
    else:
        adata.obs[f"{key_added}_risk"] = out
        if thresholds is not None:
            group = assign_risk_groups(out, thresholds)
            adata.obs[f"{key_added}_risk_group"] = pd.Categorical([group_names[i] for i in group], categories=group_names)
    adata.uns.pop(key_added, None)
    write_params(adata, key_added, params, **extra)
    return finish(adata, copy)


# --------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------

CLUSTER_METHODS = ("hierarchical", "kmeans", "consensus")


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def cluster(
    adata,
    *,
    layer: str | None = None,
    method: str = "consensus",
    k: int | None = None,
    n_top_genes: int | None = 500,
    k_range=(2, 6),
    n_resamples: int = 100,
    subsample: float = 0.8,
    consensus_method: str = "hierarchical",
    seed: int = 0,
    key_added: str = "cluster",
    copy: bool = False,
):
    """Cluster samples on their most variable genes; consensus clustering chooses the number of
    clusters by stability.

    The ``n_top_genes`` genes with the largest variance across samples in ``layer`` (a log-scale
    layer such as ``"vst"`` or ``"log_cpm"``) are centred gene by gene. Then

    - ``"hierarchical"``: average-linkage clustering on ``1 - Pearson correlation`` between samples;
    - ``"kmeans"``: k-means on the centred values (10 starts, seeded);
    - ``"consensus"``: Monti et al. (2003) as ConsensusClusterPlus does: ``n_resamples`` times, a
      fraction ``subsample`` of the samples is drawn and clustered for each ``k`` with
      ``consensus_method`` (hierarchical as above, ConsensusClusterPlus' default, or k-means with
      one random start); the consensus of two samples is how often they fell in the same cluster
      among the draws that contained both; the final clusters cut the average-linkage tree of
      ``1 - consensus``.

    With ``k=None`` the number of clusters is chosen in ``k_range`` (inclusive): for
    ``"consensus"`` the ``k`` with the smallest PAC (proportion of ambiguous clustering: sample
    pairs with consensus in (0.1, 0.9); Şenbabaoğlu et al. 2014), for the others the largest
    mean silhouette width (on the distance the method clusters by); ties go to the smaller ``k``.

    Parameters
    ----------
    {adata}
    layer
        Layer of log-scale expression; ``None`` uses ``X``. Raw counts are refused.
    method
        ``"consensus"``, ``"hierarchical"`` or ``"kmeans"``.
    k
        Number of clusters; ``None`` chooses it in ``k_range``.
    n_top_genes
        Number of most variable genes used (``None`` for all).
    k_range
        ``(smallest, largest)`` number of clusters tried when ``k`` is ``None``.
    n_resamples
        Resampling rounds of consensus clustering.
    subsample
        Fraction of the samples drawn in each round (``floor(subsample * n)`` samples, which must
        exceed the largest ``k``: with ``k`` equal to it every sample is alone in every round).
    consensus_method
        Clustering of each resample: ``"hierarchical"`` or ``"kmeans"``.
    seed
        Seed of the resampling and of k-means.
    key_added
        Key of the result.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``obs[key_added]``: cluster labels ``"1"``, ``"2"``, ... (categorical, numbered in the
          order clusters first appear among the samples);
        - ``obsp[f"{{key_added}}_consensus"]``: the consensus matrix at the chosen ``k``
          (``"consensus"`` only; an earlier one under the same key is removed otherwise);
        - ``var[f"{{key_added}}_gene"]``: whether a gene was among those clustered;
        - ``uns[key_added]["criteria"]``: per ``k`` tried, ``pac``, ``cdf_area`` and
          ``delta_area`` (Monti's relative increase of the area under the consensus CDF) for
          consensus clustering, ``silhouette`` otherwise;
        - ``uns[key_added]["params"]``: method, chosen ``k``, criterion, settings, versions.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.vst(adata)
    >>> bk.tl.cluster(adata, layer="vst", k_range=(2, 4), n_resamples=50)
    >>> adata.uns["cluster"]["criteria"].index.tolist()
    ['2', '3', '4']
    >>> adata.obs["cluster"].tolist()  # the treated samples (last three) apart
    ['1', '1', '1', '1', '2', '2', '2']
    """
    # Over 100 lines on purpose: every argument is validated here, in the docstring's order, before
    # anything is computed or written (a failing call leaves the AnnData as it was), then one engine
    # call and the writes; the checks are short and read best in one place.
    check_adata(adata)
    check_bool(copy, "copy")
    check_key(key_added, "key_added")
    check_choice(method, CLUSTER_METHODS, "method")
    seed = _check_int(seed, "seed", 0)
    X = get_matrix(adata, layer)
    n = adata.n_obs
    if n < 3:
        raise ValueError(f"clustering needs at least 3 samples, got {n}")
    if k is not None:
        k = _check_int(k, "k", 2)
        if k > n - 1:
            raise ValueError(f"k={k} clusters is too many for {n} samples; choose k <= {n - 1}")
        ks = [k]
    else:
        if not isinstance(k_range, list | tuple) or len(k_range) != 2:
            raise TypeError(f"k_range must be a (smallest, largest) pair of integers, got {k_range!r}")
        lo = _check_int(k_range[0], "k_range[0]", 2)
        hi = _check_int(k_range[1], "k_range[1]", lo)
        limit = n - 1
        if hi > limit:
            raise ValueError(f"k_range={tuple(k_range)} goes beyond the {n} samples; the largest k here is {limit}")
        ks = list(range(lo, hi + 1))
    if method == "consensus":
        n_resamples = _check_int(n_resamples, "n_resamples", 1)
        try:
            subsample = float(subsample)
        except (TypeError, ValueError):
            raise TypeError(f"subsample must be a number in (0, 1], got {subsample!r}") from None
        if not 0 < subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1], got {subsample}")
        check_choice(consensus_method, _ml.CONSENSUS_ALGORITHMS, "consensus_method")
        m = int(np.floor(subsample * n))
        if max(ks) >= m:
            raise ValueError(
                f"k={max(ks)} clusters need more than the {m} samples drawn per resample "
                f"(subsample={subsample} of {n}); lower k (or the top of k_range) below {m} or raise subsample"
            )
    Xd = dense(X)
    where = "X" if layer is None else f"layer {layer!r}"
    if not np.all(np.isfinite(Xd)):
        raise ValueError(f"the values in {where} must be finite")
    if Xd.size and (Xd >= 0).all() and (Xd == np.round(Xd)).all() and Xd.max() > 1000:
        raise ValueError(
            f"the values in {where} look like raw counts; cluster a log-scale layer "
            "(bk.pp.vst or bk.pp.normalize(method='log_cpm'))"
        )
    if n_top_genes is not None:
        n_top_genes = _check_int(n_top_genes, "n_top_genes", 2)
    var = Xd.var(axis=0, ddof=1)
    top = _ml.top_indices(var, Xd.shape[1] if n_top_genes is None else n_top_genes)
    top = np.sort(top[var[top] > 0])
    if top.size < 2:
        raise ValueError(f"fewer than two genes vary across the samples in {where}")
    Z = Xd[:, top] - Xd[:, top].mean(axis=0)

    consensus = {}
    if method == "consensus":
        rng = np.random.default_rng(seed)
        with threadpool_limits(limits=1):
            consensus = _ml.consensus_matrices(
                Z, ks, n_resamples=n_resamples, subsample=subsample, rng=rng, algorithm=consensus_method
            )
        areas = np.array([_ml.consensus_cdf_area(consensus[kk]) for kk in ks])
        crit = pd.DataFrame(
            {"pac": [_ml.pac(consensus[kk]) for kk in ks], "cdf_area": areas, "delta_area": _ml.delta_area(areas)},
            index=[str(kk) for kk in ks],
        )
        best = ks[int(np.argmin(crit["pac"].to_numpy()))]
        labels = _ml.cut_average_linkage(1.0 - consensus[best], best)
        criterion = "minimum PAC (consensus in (0.1, 0.9))"
    else:
        from sklearn.metrics import silhouette_score

        if method == "hierarchical":
            dist = _ml.correlation_distance(Z)
            labs = {kk: _ml.cut_average_linkage(dist, kk) for kk in ks}
        else:
            from scipy.spatial.distance import pdist, squareform
            from sklearn.cluster import KMeans

            dist = squareform(pdist(Z))
            with threadpool_limits(limits=1):
                labs = {
                    kk: _ml.relabel_first_appearance(KMeans(n_clusters=kk, n_init=10, random_state=seed).fit_predict(Z))
                    for kk in ks
                }
        sil = []
        for kk in ks:
            lab = labs[kk]
            ok = 2 <= np.unique(lab).size <= n - 1
            sil.append(float(silhouette_score(dist, lab, metric="precomputed")) if ok else np.nan)
        crit = pd.DataFrame({"silhouette": sil}, index=[str(kk) for kk in ks])
        s = np.where(np.isnan(sil), -np.inf, sil)
        best = ks[int(np.argmax(s))]
        labels = labs[best]
        criterion = "maximum mean silhouette width"
    if k is not None:
        criterion = "given"

    params = {
        "method": method,
        "layer": layer,
        "k": best,
        "k_given": k is not None,
        "k_range": ks,
        "criterion": criterion,
        "n_top_genes": int(top.size),
        "distance": "1 - Pearson correlation" if method == "hierarchical" or (
            method == "consensus" and consensus_method == "hierarchical") else "euclidean",
        "seed": seed,
    }
    if method == "consensus":
        params.update({"n_resamples": n_resamples, "subsample": subsample, "consensus_method": consensus_method,
                       "final_clustering": "average linkage on 1 - consensus"})

    adata = start(adata, copy)
    names = [str(i + 1) for i in range(int(labels.max()) + 1)]
    adata.obs[key_added] = pd.Categorical([names[i] for i in labels], categories=names)
    gene = np.zeros(adata.n_vars, dtype=bool)
    gene[top] = True
    adata.var[f"{key_added}_gene"] = gene
    if method == "consensus":
        adata.obsp[f"{key_added}_consensus"] = consensus[best]
    else:
        adata.obsp.pop(f"{key_added}_consensus", None)
    adata.uns.pop(key_added, None)
    write_params(adata, key_added, params, criteria=crit)
    return finish(adata, copy)
