"""Machine learning on samples: leak-free cross-validated classification (``bk.tl.classify``),
prediction of new samples (``bk.tl.predict``) and (consensus) clustering (``bk.tl.cluster``).

The fitted scikit-learn pipeline is not stored in the AnnData (pickled objects do not round-trip
through h5ad and would not open without bulkpy). ``bk.tl.classify`` stores everything needed to
rebuild it — the data fingerprint, the settings and the hyper-parameters chosen — and
:func:`bulkpy.get.classifier` refits the identical pipeline from them on demand.
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


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns, key_added=_doc_key_classify)
def classify(
    adata,
    *,
    label: str,
    layer: str | None = "counts",
    model: str = "logistic",
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

    Parameters
    ----------
    {adata}
    label
        ``obs`` column with the class of every sample (two or more classes; values are compared
        as strings; missing values are an error).
    layer
        Layer with raw counts (``None`` for ``X``); with ``normalization="none"`` a layer already
        on a log scale (e.g. ``"vst"``; then that transformation saw all samples).
    model
        ``"logistic"`` (L2 logistic regression), ``"random_forest"``, ``"svm"`` (linear SVM with
        sigmoid-calibrated probabilities, scikit-learn's ``CalibratedClassifierCV``) or ``"knn"``.
    features
        Gene selection in each training fold: ``"variance"`` (most variable genes after
        normalisation), ``"de"`` (largest limma moderated F / squared moderated t between the
        classes) or ``"all"``.
    n_features
        Number of genes selected.
    normalization
        ``"log_cpm"`` (edgeR TMM log-CPM, prior count 2), ``"vst"`` (DESeq2 VST; slow on many
        genes), ``"log_norm"`` (DESeq2 ``normTransform``: log2 of size-factor normalised counts
        + 1) or ``"none"`` (``layer`` used as it is).
    filter_genes
        Apply ``filterByExpr`` in each training fold (count normalisations only).
    cv
        Number of outer folds; every class needs at least ``cv`` samples.
    inner_cv
        Number of inner folds for the hyper-parameter search.
    param_grid
        Hyper-parameter grid ``{{name: [values]}}``; names without ``"__"`` are parameters of the
        model (``C``, ``n_estimators``, ``max_depth``, ``n_neighbors``...), names with it
        address pipeline steps (``"select__n_features"``). ``None`` uses the defaults (logistic:
        ``C`` in 0.001–1; random forest: ``n_estimators`` 100/300 × ``max_depth`` None/5; SVM:
        ``C`` in 0.001–1; k-NN: ``n_neighbors`` 3–9); ``{{}}`` fits without tuning. Values must be
        JSON-serialisable so that the choice can be stored.
    seed
        Seed of the fold assignment and of the models' randomness.
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
          not selected; NaN for k-NN, which has none);
        - ``var[f"{{key_added}}_selected_fraction"]``: fraction of the outer folds that selected the gene;
        - ``uns[key_added]["metrics"]``: ROC AUC, accuracy, balanced accuracy and size of every
          outer fold and of all out-of-fold predictions pooled (row ``"overall"``);
        - ``uns[key_added]["params"]``: the settings, the classes, the hyper-parameters chosen per
          fold and for the final model (JSON text), the data fingerprint and versions.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.tl.classify(adata, label="condition", cv=3, inner_cv=2, n_features=100)
    >>> adata.obsm["classify_proba"].columns.tolist()
    ['treated', 'untreated']
    >>> bk.get.classification_metrics(adata).columns.tolist()
    ['roc_auc', 'accuracy', 'balanced_accuracy', 'n_samples']
    """
    from .. import _ml
    from .._ml import training as tr

    check_adata(adata)
    check_bool(copy, "copy")
    check_bool(filter_genes, "filter_genes")
    check_key(key_added, "key_added")
    check_choice(model, _ml.MODELS, "model")
    check_choice(features, _ml.FEATURES, "features")
    check_choice(normalization, _ml.NORMALIZATIONS, "normalization")
    n_features = _check_int(n_features, "n_features", 1)
    cv = _check_int(cv, "cv", 2)
    inner_cv = _check_int(inner_cv, "inner_cv", 2)
    seed = _check_int(seed, "seed", 0)
    y, classes = tr.labels(adata, label)
    grid, grid_json = tr.resolve_grid(model, param_grid)
    tune = bool(grid)
    tr.check_class_sizes(y, classes, cv=cv, inner_cv=inner_cv, model=model, tune=tune)
    if model == "knn":
        grid = tr.check_knn_grid(grid, y, cv=cv, inner_cv=inner_cv, tune=tune)
    X = tr.matrix(adata, layer, normalization)
    check_unique_names(adata)
    n, g = X.shape

    from sklearn.model_selection import StratifiedKFold

    proba = np.full((n, classes.size), np.nan)
    fold_of = np.zeros(n, dtype=np.int64)
    selected = np.zeros(g)
    fold_params, fold_rows = [], {}
    settings = {"model": model, "normalization": normalization, "features": features, "n_features": n_features,
                "filter_genes": filter_genes, "seed": seed}
    pipe = _ml.make_pipeline(**settings)
    # one BLAS thread: small model fits are far faster without thread start-up and contention, and
    # the results can not depend on how the machine splits a reduction between threads
    with threadpool_limits(limits=1):
        outer = StratifiedKFold(cv, shuffle=True, random_state=seed)
        for i, (train, test) in enumerate(outer.split(X, y), start=1):
            fitted, best = tr.fit_tuned(pipe, grid, X[train], y[train], inner_cv=inner_cv, seed=seed)
            proba[test] = tr.proba_frame(fitted, X[test], classes)
            fold_of[test] = i
            selected[_ml.pipeline.selected_genes(fitted, g)] += 1
            fold_params.append(json.dumps(best, sort_keys=True))
            fold_rows[f"fold_{i}"] = tr.metrics(y[test], proba[test], classes)
        final, final_best = tr.fit_tuned(pipe, grid, X, y, inner_cv=inner_cv, seed=seed)
        importance = _ml.gene_importances(final, g)
        n_selected = int(_ml.pipeline.selected_genes(final, g).size)
    fold_rows["overall"] = tr.metrics(y, proba, classes)
    table = pd.DataFrame.from_dict(fold_rows, orient="index")[["roc_auc", "accuracy", "balanced_accuracy", "n_samples"]]
    pred = pd.Categorical(classes[np.argmax(proba, axis=1)], categories=list(classes))

    params = {
        "method": tr.METHOD,
        "label": label,
        "layer": layer,
        **settings,
        "cv": cv,
        "inner_cv": inner_cv,
        "param_grid": grid_json,
        "scoring": "roc_auc" if classes.size == 2 else "roc_auc_ovr (macro)",
        "classes": list(classes),
        "best_params_per_fold": fold_params,
        "final_params": json.dumps(final_best, sort_keys=True),
        "n_genes_final_model": n_selected,
        "fingerprint": tr.fingerprint(X, y, adata.obs_names, adata.var_names),
    }

    adata = start(adata, copy)
    adata.obs[f"{key_added}_prediction"] = pd.Categorical(pred, categories=list(classes))
    adata.obs[f"{key_added}_fold"] = fold_of
    adata.obsm[f"{key_added}_proba"] = pd.DataFrame(proba, index=adata.obs_names, columns=[str(c) for c in classes])
    adata.var[f"{key_added}_importance"] = importance
    adata.var[f"{key_added}_selected_fraction"] = selected / cv
    adata.uns.pop(key_added, None)
    write_params(adata, key_added, params, metrics=table)
    return finish(adata, copy)


@doc_params(adata=doc_adata, copy=doc_copy, copy_returns=doc_copy_returns)
def predict(
    adata,
    *,
    model,
    model_key: str = "classify",
    layer: str | None = "counts",
    label: str | None = None,
    key_added: str = "predict",
    copy: bool = False,
):
    """Predict the class of new samples with a classifier trained by :func:`bulkpy.tl.classify`.

    The pipeline normalises each new sample against what it learnt from the training samples
    (the TMM reference sample, the DESeq2 geometric means, the dispersion trend), so a sample's
    prediction does not depend on the other new samples. The genes are matched by name: every
    training gene must be present in ``adata`` (others are ignored).

    Parameters
    ----------
    {adata}
    model
        A fitted pipeline from :func:`bulkpy.get.classifier`, or the AnnData that
        :func:`bulkpy.tl.classify` was run on (its classifier is rebuilt first).
    model_key
        The ``key_added`` of the classification when ``model`` is an AnnData.
    layer
        Layer of ``adata`` holding the same kind of values the model was trained on (raw counts
        for the count normalisations); ``None`` uses ``X``.
    label
        Optional ``obs`` column with the true classes; when given, the metrics are stored too.
    key_added
        Key of the result.
    {copy}

    Returns
    -------
    AnnData | None
        {copy_returns}
        Writes

        - ``obs[f"{{key_added}}_prediction"]``: the predicted class (categorical);
        - ``obsm[f"{{key_added}}_proba"]``: class probabilities, one column per class;
        - ``uns[key_added]["params"]``: the model's classes and settings, ``label``, layer, versions;
        - ``uns[key_added]["metrics"]``: with ``label``, ROC AUC, accuracy and balanced accuracy
          (row ``"overall"``).

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
    if isinstance(model, AnnData):
        source = f"bk.get.classifier(model, key={model_key!r})"
        info = tr.stored_params(model, model_key)
        info = {k: info[k] for k in ("label", "model", "normalization", "features", "n_features", "final_params")}
        model = get.classifier(model, key=model_key)
    elif isinstance(model, Pipeline):
        info = {}
    else:
        raise TypeError(
            f"model must be a fitted pipeline from bk.get.classifier or an AnnData analysed with bk.tl.classify, "
            f"got {type(model).__name__}"
        )
    check_is_fitted(model)
    genes = getattr(model, "feature_names_in_", None)
    if genes is None:
        raise TypeError("the pipeline was not fitted on named genes; build it with bk.get.classifier")
    genes = np.asarray(genes).astype(str)
    pos = pd.Index(adata.var_names.astype(str)).get_indexer(genes)
    if (pos < 0).any():
        missing = genes[pos < 0]
        raise KeyError(
            f"{missing.size} of the {genes.size} genes the classifier was trained on are not in adata.var_names "
            f"(e.g. {missing[:5].tolist()}); the new samples need the same gene identifiers"
        )
    if not adata.var_names.is_unique:
        raise ValueError("adata.var_names are not unique; make them unique before predicting")
    X = dense(get_matrix(adata, layer))[:, pos]
    Xdf = pd.DataFrame(X, index=adata.obs_names.astype(str), columns=genes)
    classes = np.asarray(model.classes_).astype(str).astype(object)
    y = None
    if label is not None:
        col = obs_column(adata, label, what="label")
        if col.isna().any():
            raise ValueError(f"obs[{label!r}] has {int(col.isna().sum())} missing values; drop label= or fill them")
        y = col.astype(str).to_numpy().astype(object)
        unknown = sorted(set(y) - set(classes))
        if unknown:
            raise ValueError(f"obs[{label!r}] has classes {unknown} the model was not trained on (it knows {list(classes)})")
    with threadpool_limits(limits=1):
        proba = tr.proba_frame(model, Xdf, classes)

    params = {"method": "bulkpy classifier prediction", "model": source, "classes": list(classes), "layer": layer,
              "label": label, "n_genes": int(genes.size)}
    params.update({f"trained_{k}": v for k, v in info.items()})
    extra = {}
    if y is not None:
        extra["metrics"] = pd.DataFrame.from_dict({"overall": tr.metrics(y, proba, classes)}, orient="index")
    adata = start(adata, copy)
    adata.obs[f"{key_added}_prediction"] = pd.Categorical(classes[np.argmax(proba, axis=1)], categories=list(classes))
    adata.obsm[f"{key_added}_proba"] = pd.DataFrame(proba, index=adata.obs_names, columns=[str(c) for c in classes])
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
