"""Machine learning on samples: leak-free classification (bk.tl.classify / predict, bk.get.classifier)
and (consensus) clustering (bk.tl.cluster), their transformers, tables and plots.

Real data: GEUVADIS lymphoblastoid lines (sex), from the compact fixture
``tests/fixtures/geuvadis85`` (85 samples × 300 genes, see its PROVENANCE.txt) and, when
``../shared`` is present, the full 85 × 10,101 counts; airway (dexamethasone) bundled with bulkpy;
pasilla R references for the transformers. Synthetic counts only for the three-class case.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, read_ref
from helpers import assert_adata_equal

import bulkpy as bk
from bulkpy._ml import VST, FilterByExpr, LogCPM, LogNorm, SelectFeatures
from bulkpy._stats import ml as eng

Y_GENES = [  # RPS4Y1, DDX3Y, KDM5D, UTY, EIF1AY, USP9Y, ZFY, NLGN4Y
    "ENSG00000129824", "ENSG00000067048", "ENSG00000012817", "ENSG00000183878",
    "ENSG00000198692", "ENSG00000114374", "ENSG00000067646", "ENSG00000165246",
]
FAST = {"cv": 3, "inner_cv": 2}


@pytest.fixture(scope="session")
def _geuv300():
    return bk.io.read_counts(FIXTURES / "geuvadis85" / "counts_300genes.tsv.gz",
                             samples=FIXTURES / "geuvadis85" / "coldata.csv")


@pytest.fixture
def geuv300(_geuv300):
    return _geuv300.copy()


@pytest.fixture(scope="module")
def sex_fit(_geuv300):
    """One default classification of sex on the fixture, shared by the read-only tests."""
    a = _geuv300.copy()
    bk.tl.classify(a, label="sex")
    return a


def _counts(a):
    return np.asarray(a.layers["counts"], dtype=float)


# ----------------------------------------------------------------------------------------------
# transformers: on the training samples they are the R originals
# ----------------------------------------------------------------------------------------------


def test_transformers_match_r_on_training_samples(pasilla):
    X = _counts(pasilla)
    keep = read_ref("pasilla", "edger_filter_by_expr.csv.gz")["keep"].reindex(pasilla.var_names, fill_value=False).to_numpy(bool)
    lc = LogCPM().fit(X[:, keep])
    tmm = read_ref("pasilla", "edger_tmm_filtered.csv.gz")
    np.testing.assert_allclose(lc.norm_factors_, tmm.loc[pasilla.obs_names, "norm_factor"], rtol=1e-12)
    ref = read_ref("pasilla", "edger_logcpm_filtered.csv.gz").T
    out = pd.DataFrame(lc.transform(X[:, keep]), index=pasilla.obs_names, columns=pasilla.var_names[keep])
    np.testing.assert_allclose(out.loc[ref.index, ref.columns], ref, rtol=0, atol=1e-12)
    # the same numbers through fit_transform (which reuses the training factors)
    np.testing.assert_allclose(LogCPM().fit_transform(X[:, keep]), lc.transform(X[:, keep]), rtol=0, atol=1e-12)

    vst = read_ref("pasilla", "deseq2_vst_blind.csv.gz").T
    out = pd.DataFrame(VST().fit(X).transform(X), index=pasilla.obs_names, columns=pasilla.var_names)
    np.testing.assert_allclose(out.loc[vst.index, vst.columns], vst, rtol=0, atol=1e-8)

    vst_local = read_ref("pasilla", "deseq2_vst_blind_local.csv.gz").T
    out = pd.DataFrame(VST(fit_type="local").fit(X).transform(X), index=pasilla.obs_names, columns=pasilla.var_names)
    np.testing.assert_allclose(out.loc[vst_local.index, vst_local.columns], vst_local, rtol=0, atol=1e-7)

    nc = read_ref("pasilla", "deseq2_normalized_counts.csv.gz").T
    out = pd.DataFrame(LogNorm().fit(X).transform(X), index=pasilla.obs_names, columns=pasilla.var_names)
    np.testing.assert_allclose(out.loc[nc.index, nc.columns], np.log2(nc + 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [LogCPM, LogNorm, VST])
def test_new_samples_are_normalised_against_training_only(geuv300, cls):
    X = _counts(geuv300)
    held_out = np.arange(geuv300.n_obs) % 3 == 0
    train, new = X[~held_out], X[held_out]
    t = cls().fit(train)
    batch = t.transform(new)
    alone = np.vstack([t.transform(new[i : i + 1]) for i in range(new.shape[0])])
    np.testing.assert_allclose(alone, batch, rtol=1e-12, atol=1e-12)  # no dependence on other new samples
    # a training sample passed again is transformed exactly as in training
    np.testing.assert_allclose(t.transform(train[:5]), t.transform(train)[:5], rtol=1e-12, atol=1e-12)
    # doubling a library (same composition) leaves log-CPM / normalised values nearly unchanged
    if cls is not VST:
        d = np.abs(t.transform(2 * new) - batch)
        assert np.median(d) < 0.05


def test_training_reference_tmm_equals_edger_on_the_training_samples(geuv300):
    from bulkpy._stats.normalization import calc_norm_factors

    X = _counts(geuv300)[:50]
    lc = LogCPM().fit(X)
    nf, _ = calc_norm_factors(X)
    np.testing.assert_allclose(lc.norm_factors_, nf, rtol=1e-13)
    np.testing.assert_allclose(lc.norm_factors(X), nf, rtol=1e-13)


def test_local_vst_map_extends_smoothly_beyond_training_range(pasilla):
    X = _counts(pasilla)
    t = VST(fit_type="local").fit(X)
    top = float((X / t.size_factors(X)[:, None]).max())
    q = np.array([[top * 0.5, top, top * 1.001, top * 4]])
    v = eng.apply_local_vst_map(q, t.local_map_)[0]
    assert np.all(np.diff(v) > 0)
    assert v[2] - v[1] < 0.01  # continuous at the edge
    assert 1.5 < v[3] - v[1] < 2.5  # about log2(4) further


def test_moderated_f_is_limma_moderated_t_squared(geuv300):
    from bulkpy._stats import limma as linear

    Z = LogCPM().fit_transform(_counts(geuv300))
    g = (geuv300.obs["sex"] == "Male").to_numpy().astype(int)
    design = np.column_stack([np.ones_like(g), g]).astype(float)
    eb = linear.ebayes(linear.lm_fit(Z, design))
    np.testing.assert_allclose(eng.moderated_f(Z, g), eb.t[1] ** 2, rtol=1e-10)
    # the DE selector picks the Y genes first
    sel = SelectFeatures(method="de", n_features=8).fit(Z, geuv300.obs["sex"].to_numpy())
    assert set(geuv300.var_names[sel.support_]) == set(Y_GENES)


def test_filter_by_expr_uses_training_labels(geuv300):
    X = _counts(geuv300)
    y = geuv300.obs["sex"].to_numpy()
    f = FilterByExpr().fit(X[:40], y[:40])
    assert f.info_["min_group_size"] == min(np.unique(y[:40], return_counts=True)[1])
    assert f.transform(X).shape == (85, int(f.support_.sum()))


# ----------------------------------------------------------------------------------------------
# classification on real data
# ----------------------------------------------------------------------------------------------


def test_classify_sex_full_geuvadis85(geuvadis85):
    bk.tl.classify(geuvadis85, label="sex")
    m = bk.get.classification_metrics(geuvadis85)
    assert m.loc["overall", "roc_auc"] > 0.95
    assert m.loc["overall", "balanced_accuracy"] > 0.95
    top = geuvadis85.var["classify_importance"].nlargest(8).index
    assert len(set(top) & set(Y_GENES)) >= 6


def test_classify_sex_fixture_slots(sex_fit):
    a = sex_fit
    m = bk.get.classification_metrics(a)
    assert list(m.index) == [f"fold_{i}" for i in range(1, 6)] + ["overall"]
    assert m.loc["overall", "roc_auc"] > 0.95
    assert m["n_samples"].iloc[:5].sum() == 85 and m.loc["overall", "n_samples"] == 85
    assert (m.loc["fold_1":"fold_5", "roc_auc"] > 0.9).all()
    p = a.obsm["classify_proba"]
    assert list(p.columns) == ["Female", "Male"]
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    pred = a.obs["classify_prediction"]
    assert list(pred.cat.categories) == ["Female", "Male"]
    np.testing.assert_array_equal(pred.astype(str), np.array(["Female", "Male"])[np.argmax(p.to_numpy(), axis=1)])
    assert sorted(a.obs["classify_fold"].unique()) == [1, 2, 3, 4, 5]
    assert np.isclose(m.loc["overall", "accuracy"], np.mean(pred.astype(str) == a.obs["sex"].astype(str)))
    imp = a.var["classify_importance"]
    assert (imp >= 0).all() and (imp > 0).sum() == a.uns["classify"]["params"]["n_genes_final_model"]
    assert set(imp.nlargest(8).index) == set(Y_GENES)
    frac = a.var["classify_selected_fraction"]
    assert frac.between(0, 1).all() and (frac[Y_GENES] == 1).all()
    params = a.uns["classify"]["params"]
    assert params["label"] == "sex" and params["model"] == "logistic" and params["cv"] == 5
    assert json.loads(params["param_grid"]) == {"model__C": [0.001, 0.01, 0.1, 1.0]}
    assert len(params["best_params_per_fold"]) == 5
    assert "model__C" in json.loads(params["final_params"])


def test_shuffled_labels_score_at_chance_and_leaky_selection_does_not(geuv300):
    """The same pipeline on shuffled labels is at chance; selecting genes by DE on all samples
    before cross-validation (the classic leak) makes the same model look predictive."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = _counts(geuv300)
    rng = np.random.default_rng(1)
    free, leaky = [], []
    for _ in range(3):
        y = rng.permutation(geuv300.obs["sex"].to_numpy().astype(str))
        geuv300.obs["shuffled"] = y
        bk.tl.classify(geuv300, label="shuffled", features="de", n_features=10, param_grid={"C": [1.0]},
                       key_added="free")
        free.append(bk.get.classification_metrics(geuv300, key="free").loc["overall", "roc_auc"])
        # leaky: filter, normalise and select the 10 best DE genes on all samples, then cross-validate
        Z = LogCPM().fit_transform(FilterByExpr().fit_transform(X, y))
        top = SelectFeatures(method="de", n_features=10).fit(Z, y).support_
        p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=1.0)), Z[:, top], y,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
        leaky.append(roc_auc_score(y == "Male", p[:, 1]))
    assert all(0.3 < f < 0.7 for f in free), free
    assert np.mean(leaky) > np.mean(free) + 0.1, (leaky, free)


def test_shuffled_labels_default_pipeline_at_chance(geuv300):
    geuv300.obs["shuffled"] = np.random.default_rng(0).permutation(geuv300.obs["sex"].to_numpy())
    bk.tl.classify(geuv300, label="shuffled", **FAST)
    auc = bk.get.classification_metrics(geuv300).loc["overall", "roc_auc"]
    assert 0.3 < auc < 0.7


@pytest.mark.parametrize(
    ("kw", "min_auc"),
    [
        ({"model": "random_forest", "param_grid": {"n_estimators": [50], "max_depth": [None, 3]}}, 0.95),
        ({"model": "svm", "param_grid": {"C": [0.01, 0.1]}}, 0.95),
        ({"model": "knn", "n_features": 20}, 0.85),
        ({"normalization": "vst", "features": "de", "n_features": 20, "param_grid": {"C": [0.1]}}, 0.95),
        ({"normalization": "log_norm", "features": "all", "filter_genes": False, "param_grid": {}}, 0.95),
    ],
)
def test_models_and_normalisations(geuv300, kw, min_auc):
    bk.tl.classify(geuv300, label="sex", **FAST, **kw)
    m = bk.get.classification_metrics(geuv300)
    assert m.loc["overall", "roc_auc"] > min_auc
    imp = geuv300.var["classify_importance"]
    if kw.get("model") == "knn":
        assert imp.isna().all()
    else:
        assert imp.idxmax() in Y_GENES


def test_normalization_none_on_a_log_layer(geuv300):
    bk.pp.normalize(geuv300, method="tmm", log=True)
    bk.tl.classify(geuv300, label="sex", layer="log_tmm_cpm", normalization="none", n_features=50, **FAST)
    assert bk.get.classification_metrics(geuv300).loc["overall", "roc_auc"] > 0.95
    assert [s for s, _ in bk.get.classifier(geuv300).steps] == ["normalize", "select", "scale", "model"]


def test_three_classes_synthetic():
    import anndata as ad

    rng = np.random.default_rng(3)
    n_per, g = 12, 200
    mu = rng.gamma(2.0, 50.0, size=g)
    y = np.repeat(["a", "b", "c"], n_per)
    counts = np.empty((3 * n_per, g))
    for j, cls in enumerate("abc"):
        m = mu.copy()
        m[j * 5 : j * 5 + 5] *= 4.0  # five marker genes per class
        counts[y == cls] = rng.negative_binomial(5, 5 / (5 + m), size=(n_per, g))
    a = ad.AnnData(obs=pd.DataFrame({"group": y}, index=[f"s{i}" for i in range(3 * n_per)]),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(g)]))
    a.layers["counts"] = counts
    bk.tl.classify(a, label="group", features="de", n_features=30, **FAST)
    m = bk.get.classification_metrics(a)
    assert m.loc["overall", "roc_auc"] > 0.95
    assert list(a.obsm["classify_proba"].columns) == ["a", "b", "c"]
    assert a.uns["classify"]["params"]["scoring"].startswith("roc_auc_ovr")
    roc = bk.get.roc_curve(a)
    assert list(roc["class"].cat.categories) == ["a", "b", "c"]
    cm = bk.get.confusion_matrix(a)
    assert cm.shape == (3, 3) and cm.to_numpy().sum() == 36
    np.testing.assert_allclose(bk.get.confusion_matrix(a, normalize="true").sum(axis=1), 1.0)
    assert len(set(a.var["classify_importance"].nlargest(15).index) & {f"g{i}" for i in range(15)}) >= 12


# ----------------------------------------------------------------------------------------------
# the fitted classifier: rebuilt from h5ad-safe slots; prediction of new samples
# ----------------------------------------------------------------------------------------------


def test_classifier_rebuild_is_the_final_model(sex_fit):
    from bulkpy._ml import gene_importances

    pipe = bk.get.classifier(sex_fit)
    np.testing.assert_allclose(gene_importances(pipe, sex_fit.n_vars), sex_fit.var["classify_importance"], rtol=1e-12)
    assert list(pipe.feature_names_in_) == list(sex_fit.var_names)
    assert list(pipe.classes_) == ["Female", "Male"]
    assert pipe.named_steps["model"].C == json.loads(sex_fit.uns["classify"]["params"]["final_params"])["model__C"]


def test_classifier_refuses_changed_data(sex_fit):
    a = sex_fit.copy()
    a.layers["counts"] = np.asarray(a.layers["counts"]) + 1
    with pytest.raises(ValueError, match="differ from those"):
        bk.get.classifier(a)
    with pytest.raises(ValueError, match="differ from those"):
        bk.get.classifier(sex_fit[:, :-1].copy())
    with pytest.raises(KeyError, match="no bk.tl.classify, bk.tl.regress or bk.tl.survival result"):
        bk.get.classifier(sex_fit, key="nothing")


def test_predict_new_samples(geuv300):
    held_out = np.arange(geuv300.n_obs) % 3 == 0  # 29 samples of both sexes
    train, new = geuv300[~held_out].copy(), geuv300[held_out].copy()
    bk.tl.classify(train, label="sex", **FAST)
    # genes in another order and an extra gene are fine
    order = np.random.default_rng(0).permutation(new.n_vars)
    shuffled = new[:, order].copy()
    bk.tl.predict(shuffled, model=train, label="sex")
    m = bk.get.classification_metrics(shuffled, key="predict")
    assert m.loc["overall", "roc_auc"] > 0.95 and m.loc["overall", "accuracy"] > 0.9
    pipe = bk.get.classifier(train)
    bk.tl.predict(new, model=pipe)
    pd.testing.assert_frame_equal(new.obsm["predict_proba"], shuffled.obsm["predict_proba"].loc[new.obs_names])
    assert "metrics" not in new.uns["predict"]
    # one sample alone gets the same prediction as in the batch
    one = new[:1].copy()
    bk.tl.predict(one, model=pipe)
    np.testing.assert_allclose(one.obsm["predict_proba"].to_numpy(), new.obsm["predict_proba"].to_numpy()[:1], rtol=1e-12)
    assert bk.get.confusion_matrix(shuffled, key="predict").to_numpy().sum() == 29
    with pytest.raises(ValueError, match="without true labels"):
        bk.get.roc_curve(new, key="predict")


def test_predict_bad_input(geuv300, sex_fit):
    pipe = bk.get.classifier(sex_fit)
    missing = geuv300[:, 5:].copy()
    before = missing.copy()
    with pytest.raises(KeyError, match="5 of the 300 genes"):
        bk.tl.predict(missing, model=pipe)
    assert_adata_equal(missing, before)
    with pytest.raises(TypeError, match="fitted pipeline"):
        bk.tl.predict(geuv300, model="classify")
    geuv300.obs["other"] = "Unknown"
    with pytest.raises(ValueError, match="not trained on"):
        bk.tl.predict(geuv300, model=pipe, label="other")
    neg = geuv300.copy()
    neg.layers["counts"] = -np.asarray(neg.layers["counts"])
    with pytest.raises(ValueError, match="negative"):
        bk.tl.predict(neg, model=pipe)


def test_roundtrip_h5ad(sex_fit, tmp_h5ad):
    from conftest import roundtrip

    a = sex_fit.copy()
    bk.tl.predict(a, model=sex_fit, label="sex")
    bk.pp.vst(a)
    bk.tl.cluster(a, layer="vst", n_top_genes=50, n_resamples=20)
    b = roundtrip(a, tmp_h5ad)
    pd.testing.assert_frame_equal(bk.get.classification_metrics(b), bk.get.classification_metrics(a))
    pd.testing.assert_frame_equal(bk.get.classification_metrics(b, key="predict"), bk.get.classification_metrics(a, key="predict"))
    pd.testing.assert_frame_equal(pd.DataFrame(b.obsm["classify_proba"]), pd.DataFrame(a.obsm["classify_proba"]))
    pd.testing.assert_series_equal(b.obs["classify_prediction"], a.obs["classify_prediction"])
    pd.testing.assert_series_equal(b.var["classify_importance"], a.var["classify_importance"])
    assert b.uns["classify"]["params"]["final_params"] == a.uns["classify"]["params"]["final_params"]
    pd.testing.assert_frame_equal(bk.get.consensus_matrix(b), bk.get.consensus_matrix(a))
    pd.testing.assert_series_equal(b.obs["cluster"], a.obs["cluster"])
    pd.testing.assert_frame_equal(b.uns["cluster"]["criteria"], a.uns["cluster"]["criteria"])
    # the classifier rebuilt from the file predicts exactly as the one from memory
    c, d = sex_fit[:10].copy(), sex_fit[:10].copy()
    bk.tl.predict(c, model=b)
    bk.tl.predict(d, model=sex_fit)
    pd.testing.assert_frame_equal(c.obsm["predict_proba"], d.obsm["predict_proba"])


def test_same_seed_same_result_and_copy(geuv300, sex_fit):
    out = bk.tl.classify(geuv300, label="sex", copy=True)
    assert "classify" not in geuv300.uns  # copy=True leaves the input alone
    pd.testing.assert_frame_equal(out.obsm["classify_proba"], sex_fit.obsm["classify_proba"], check_exact=True)
    pd.testing.assert_frame_equal(bk.get.classification_metrics(out), bk.get.classification_metrics(sex_fit))
    np.testing.assert_array_equal(out.var["classify_importance"], sex_fit.var["classify_importance"])
    other = bk.tl.classify(geuv300, label="sex", seed=1, param_grid={}, copy=True)
    assert not np.array_equal(other.obs["classify_fold"], out.obs["classify_fold"])


def test_classify_bad_input(geuv300):
    a = geuv300
    cases = [
        (KeyError, "is not a column of adata.obs", {"label": "nope"}),
        (ValueError, "model='tree' is not supported", {"label": "sex", "model": "tree"}),
        (ValueError, "normalization='tpm'", {"label": "sex", "normalization": "tpm"}),
        (ValueError, "fewer samples than cv=5", {"label": "small"}),
        (ValueError, "fewer than inner_cv=5", {"label": "small5", "inner_cv": 5}),
        (ValueError, "single class", {"label": "one"}),
        (ValueError, "missing for 2 samples", {"label": "holes"}),
        (TypeError, "JSON|h5ad", {"label": "sex", "param_grid": {"C": [object()]}}),
        (ValueError, "non-empty list", {"label": "sex", "param_grid": {"C": []}}),
        (TypeError, "cv must be an integer", {"label": "sex", "cv": 2.5}),
        (ValueError, "cv must be >= 2", {"label": "sex", "cv": 1}),
        (TypeError, "copy must be True or False", {"label": "sex", "copy": 1}),
        (KeyError, "layer 'vst' not found", {"label": "sex", "layer": "vst"}),
        (ValueError, "contains '/'", {"label": "sex", "key_added": "a/b"}),
        (ValueError, "SVM's probability calibration", {"label": "small5", "model": "svm"}),
    ]
    a.obs["small"] = np.where(np.arange(85) < 4, "rare", "common")
    a.obs["small5"] = np.where(np.arange(85) < 5, "rare", "common")
    a.obs["one"] = "x"
    a.obs["holes"] = a.obs["sex"].astype(object)
    a.obs.iloc[:2, a.obs.columns.get_loc("holes")] = np.nan
    before = a.copy()
    for err, msg, kw in cases:
        with pytest.raises(err, match=msg):
            bk.tl.classify(a, **kw)
        assert_adata_equal(a, before)
    neg = a.copy()
    neg.layers["counts"] = np.asarray(neg.layers["counts"]) - 1.0
    with pytest.raises(ValueError, match="negative"):
        bk.tl.classify(neg, label="sex")
    frac = a.copy()
    frac.layers["counts"] = np.asarray(frac.layers["counts"]) + 0.5
    with pytest.raises(ValueError, match="non-integer"):
        bk.tl.classify(frac, label="sex", normalization="vst")


# ----------------------------------------------------------------------------------------------
# clustering
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _airway_vst(_airway):
    expressed = np.asarray(_airway.layers["counts"]).sum(axis=0) >= 10  # 22,369 of the 64,102 genes
    a = _airway[:, expressed].copy()
    bk.pp.vst(a)
    return a


def test_cluster_airway_separates_treatment(_airway_vst):
    """k-means with k=2 on the VST of airway splits treated from untreated samples (the first
    principal component); hierarchical clustering first isolates the N080611 pair of samples,
    which stands apart from the other cell lines, and then splits by treatment."""
    from sklearn.metrics import adjusted_rand_score

    a = _airway_vst.copy()
    bk.tl.cluster(a, layer="vst", method="kmeans", k=2)
    assert adjusted_rand_score(a.obs["dex"], a.obs["cluster"]) == 1.0
    bk.tl.cluster(a, layer="vst", method="hierarchical", k=3)
    lab = a.obs["cluster"].astype(str)
    pair = a.obs["cell"] == "N080611"
    assert lab[pair].nunique() == 1 and not lab[~pair].isin(lab[pair]).any()
    assert adjusted_rand_score(a.obs["dex"][~pair], lab[~pair]) == 1.0
    assert "cluster_consensus" not in a.obsp


@pytest.mark.parametrize("consensus_method", ["hierarchical", "kmeans"])
def test_consensus_clustering_finds_sex(geuv300, consensus_method):
    from sklearn.metrics import adjusted_rand_score

    bk.pp.vst(geuv300)
    bk.tl.cluster(geuv300, layer="vst", n_top_genes=100, n_resamples=40, consensus_method=consensus_method)
    assert geuv300.uns["cluster"]["params"]["k"] == 2
    assert adjusted_rand_score(geuv300.obs["sex"], geuv300.obs["cluster"]) == 1.0
    crit = geuv300.uns["cluster"]["criteria"]
    assert list(crit.index) == ["2", "3", "4", "5", "6"] and crit["pac"].idxmin() == "2"
    c = bk.get.consensus_matrix(geuv300)
    assert c.shape == (85, 85)
    m = c.to_numpy()
    np.testing.assert_array_equal(m, m.T)
    assert np.all(np.diag(m) == 1) and m.min() >= 0 and m.max() <= 1
    same = geuv300.obs["sex"].to_numpy()[:, None] == geuv300.obs["sex"].to_numpy()[None, :]
    assert m[same].mean() > 0.95 and m[~same].mean() < 0.05
    assert geuv300.var["cluster_gene"].sum() == 100
    assert list(geuv300.obs["cluster"].cat.categories) == ["1", "2"]


def test_consensus_engine_counts():
    # two well separated groups: consensus 1 within, 0 between, PAC 0, CDF area as defined
    x = np.vstack([np.tile([5.0, 0, 0, 1], (5, 1)), np.tile([0, 5.0, 1, 0], (5, 1))])
    x = x + np.random.default_rng(0).normal(scale=0.01, size=x.shape)
    x -= x.mean(axis=0)
    c = eng.consensus_matrices(x, [2, 3], n_resamples=30, subsample=0.8, rng=np.random.default_rng(0))
    block = np.kron(np.eye(2), np.ones((5, 5)))
    np.testing.assert_array_equal(c[2], block)
    assert eng.pac(c[2]) == 0.0 and eng.pac(c[3]) >= 0.0
    # 45 pairs: 20 at 1, 25 at 0 -> CDF(0) = 25/45, area = 1 * CDF(1) = 1
    assert eng.consensus_cdf_area(c[2]) == 1.0
    np.testing.assert_allclose(eng.delta_area([0.5, 0.75, 0.75]), [0.5, 0.5, 0.0])


def test_cluster_deterministic_and_copy(_airway_vst):
    a = _airway_vst.copy()
    out1 = bk.tl.cluster(a, layer="vst", k_range=(2, 4), n_resamples=30, copy=True)
    out2 = bk.tl.cluster(a, layer="vst", k_range=(2, 4), n_resamples=30, copy=True)
    assert "cluster" not in a.obs
    np.testing.assert_array_equal(out1.obsp["cluster_consensus"], out2.obsp["cluster_consensus"])
    pd.testing.assert_frame_equal(out1.uns["cluster"]["criteria"], out2.uns["cluster"]["criteria"])


def test_cluster_bad_input(_airway_vst):
    a = _airway_vst.copy()
    before = a.copy()
    cases = [
        (ValueError, "too many for 8 samples", {"layer": "vst", "k": 9}),
        (ValueError, "need more than the 6 samples", {"layer": "vst", "k": 6}),
        (ValueError, "goes beyond the 8 samples", {"layer": "vst", "k_range": (2, 9)}),
        (ValueError, r"need more than the 6 samples drawn per resample", {"layer": "vst"}),  # default k_range (2, 6)
        (ValueError, "look like raw counts", {"layer": "counts", "k": 2}),
        (ValueError, "method='pam'", {"layer": "vst", "method": "pam"}),
        (ValueError, "subsample must be in", {"layer": "vst", "k": 2, "subsample": 1.5}),
        (ValueError, "consensus_method='pam'", {"layer": "vst", "k": 2, "consensus_method": "pam"}),
        (TypeError, "k_range must be", {"layer": "vst", "k_range": 3}),
        (ValueError, "k must be >= 2", {"layer": "vst", "k": 1}),
        (KeyError, "layer 'nope' not found", {"layer": "nope"}),
    ]
    for err, msg, kw in cases:
        with pytest.raises(err, match=msg):
            bk.tl.cluster(a, **kw)
        assert_adata_equal(a, before)
    with pytest.raises(KeyError, match="no consensus matrix"):
        bk.get.consensus_matrix(a)


# ----------------------------------------------------------------------------------------------
# tables and plots
# ----------------------------------------------------------------------------------------------


def test_tables(sex_fit):
    roc = bk.get.roc_curve(sex_fit)
    assert list(roc.columns) == ["class", "fpr", "tpr", "threshold", "auc"]
    assert list(roc["class"].cat.categories) == ["Male"]
    assert np.isclose(roc["auc"].iloc[0], bk.get.classification_metrics(sex_fit).loc["overall", "roc_auc"])
    cm = bk.get.confusion_matrix(sex_fit)
    assert cm.index.name == "true" and cm.columns.name == "predicted"
    assert cm.to_numpy().sum() == 85
    truth = sex_fit.obs["sex"].astype(str)
    assert cm.loc["Male", "Male"] == int(((sex_fit.obs["classify_prediction"] == "Male") & (truth == "Male")).sum())
    with pytest.raises(ValueError, match="normalize="):
        bk.get.confusion_matrix(sex_fit, normalize="rows")
    with pytest.raises(KeyError, match="no classification metrics"):
        bk.get.classification_metrics(sex_fit, key="nothing")


def test_plots(sex_fit, _airway_vst):
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    n_before = len(plt.get_fignums())
    ax = bk.pl.roc(sex_fit)
    assert isinstance(ax, Axes) and len(ax.get_lines()) == 2
    ax = bk.pl.confusion_matrix(sex_fit, normalize="true")
    assert isinstance(ax, Axes) and len(ax.texts) == 4
    a = _airway_vst.copy()
    bk.tl.cluster(a, layer="vst", k=2, n_resamples=20)
    ax = bk.pl.consensus_matrix(a)
    assert isinstance(ax, Axes) and ax.images[0].get_array().shape == (8, 8)
    fig = plt.figure()
    try:
        given = fig.add_subplot()
        assert bk.pl.roc(sex_fit, ax=given) is given
    finally:
        plt.close(fig)
    assert len(plt.get_fignums()) == n_before
