"""bk.pp.array_weights and bk.pp.remove_batch_effect (limma 3.68.5's ``arrayWeights`` and
``removeBatchEffect``) against R.

References: ``../shared/data/<dataset>/r_current`` (``limma_array_weights_logcpm``,
``limma_remove_batch_effect_logcpm``) and ``tests/fixtures/airway/r_current`` (trimmed copies and
``make_limma_block_refs.R``'s variants; PROVENANCE_limma.txt).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import roundtrip
from helpers import assert_adata_equal, rel_diff
from test_tl_limma import _filtered, _logcpm3, read_current
from test_tl_limma_block import DESIGNS, _airway, _na_layer

import bulkpy as bk
from bulkpy._stats import limma as lin


def _layer_frame(ad, key, ref):
    return pd.DataFrame(ad.layers[key].T, index=ad.var_names, columns=ad.obs_names).loc[ref.index, ref.columns]


@pytest.mark.parity
@pytest.mark.parametrize(
    ("ref", "kw", "layer"),
    [
        ("limma_remove_batch_effect_logcpm", {"design": "~ dex"}, "logcpm"),
        ("limma_remove_batch_effect_nodesign", {}, "logcpm"),
        ("limma_remove_batch_effect_covariate", {"design": "~ dex", "covariates": "x"}, "logcpm"),
        ("limma_remove_batch_effect_na", {"design": "~ dex"}, "na"),
    ],
)
def test_remove_batch_effect_matches_r(request, ref, kw, layer):
    # removeBatchEffect(logcpm, batch = cell, design = model.matrix(~ dex)) and variants; observed 6e-14
    r = read_current("airway", f"{ref}.csv.gz")
    ad = _airway(request)
    ad.obs["x"] = [1.5, 2, 0.3, 4, 2.2, 3.1, 0.7, 1.0]
    ad.layers["na"] = _na_layer(ad)
    bk.pp.remove_batch_effect(ad, batch="cell", layer=layer, **kw)
    ours = _layer_frame(ad, "remove_batch_effect", r).to_numpy()
    np.testing.assert_array_equal(np.isnan(ours), r.isna().to_numpy())
    np.testing.assert_allclose(ours, r.to_numpy(), rtol=0, atol=1e-10)
    p = ad.uns["remove_batch_effect"]["params"]
    assert p["batch"] == "cell" and "not for testing" in p["note"] and p["limma_version"] == "3.68.5"


def test_remove_batch_effect_removes_the_batch_means(request):
    ad = _airway(request)
    bk.pp.remove_batch_effect(ad, batch="cell", design="~ dex", layer="logcpm")
    out = ad.layers["remove_batch_effect"]
    cells = ad.obs["cell"].to_numpy()
    means = np.array([out[cells == c].mean(axis=0) for c in np.unique(cells)])
    np.testing.assert_allclose(means, np.broadcast_to(means.mean(axis=0), means.shape), atol=1e-10)
    # the treatment effect (balanced within cell lines) is kept
    lfc = lambda m: m[ad.obs["dex"] == "trt"].mean(axis=0) - m[ad.obs["dex"] == "untrt"].mean(axis=0)  # noqa: E731
    np.testing.assert_allclose(lfc(out), lfc(ad.layers["logcpm"]), atol=1e-10)
    # batch2 as a second factor, engine and adapter agree
    ad.obs["half"] = pd.Categorical(np.tile(["a", "b"], 4))
    bk.pp.remove_batch_effect(ad, batch="cell", batch2="half", layer="logcpm", key_added="two")
    direct = lin.remove_batch_effect(ad.layers["logcpm"], batch=cells, batch2=ad.obs["half"].to_numpy())
    np.testing.assert_allclose(ad.layers["two"], direct, rtol=0, atol=1e-12)


@pytest.mark.parity
@pytest.mark.parametrize("dataset", ["pasilla", "airway", "geuvadis85"])
def test_array_weights_match_r_current(request, dataset):
    # arrayWeights(cpm(y, log = TRUE, prior.count = 3), mm): REML (complete data); observed <= 3e-12
    formula = DESIGNS[dataset][0]
    ref = read_current(dataset, "limma_array_weights_logcpm.csv.gz")["array_weight"]
    ad = _filtered(request, dataset)
    ad.layers["logcpm"] = _logcpm3(ad)
    bk.pp.array_weights(ad, design=formula, layer="logcpm")
    r = rel_diff(ad.obs["array_weights"], ref.loc[ad.obs_names])
    assert r.max() < 1e-9, r.max()
    p = ad.uns["array_weights"]["params"]
    assert p["weights_method"] == "auto" and p["weights_method_used"] == "reml" and p["prior_n"] == 10


@pytest.mark.parity
@pytest.mark.parametrize(
    ("column", "kw", "data"),
    [
        ("genebygene_na", {}, "na"),
        ("genebygene", {"method": "genebygene"}, "logcpm"),
        ("var_group_dex", {"var_group": "dex"}, "logcpm"),
        ("prior_n_2", {"prior_n": 2}, "logcpm"),
        ("reml_prior_weights", {"method": "reml", "weights": "voom_weights"}, "voom_E"),
        ("genebygene_prior_weights", {"weights": "voom_weights"}, "voom_E"),
    ],
)
def test_array_weights_variants_match_r(request, column, kw, data):
    # make_limma_block_refs.R: arrayWeights(E, ~ cell + dex, ...) gene by gene (missing values,
    # prior weights from voom), var.group, prior.n, REML with prior weights; observed <= 1e-12
    ref = read_current("airway", "limma_array_weights_variants.csv")[column]
    ad = _airway(request)
    ad.layers["na"] = _na_layer(ad)
    bk.tl.voom(ad, design="~ cell + dex", contrast=["dex", "trt", "untrt"], norm="none", norm_factors_key="r_norm_factors")
    bk.pp.array_weights(ad, design="~ cell + dex", layer=data, **kw)
    r = rel_diff(ad.obs["array_weights"], ref.loc[ad.obs_names])
    assert r.max() < 1e-9, r.max()
    expected = "reml" if column.startswith("reml") or column in ("var_group_dex", "prior_n_2") else "genebygene"
    assert ad.uns["array_weights"]["params"]["weights_method_used"] == expected


def test_array_weights_roundtrip_and_copy(request, tmp_h5ad):
    ad = _airway(request)
    out = bk.pp.array_weights(ad, design="~ cell + dex", layer="logcpm", copy=True)
    assert "array_weights" not in ad.obs and "array_weights" in out.obs
    bk.pp.remove_batch_effect(out, batch="cell", design="~ dex", layer="logcpm")
    back = roundtrip(out, tmp_h5ad)
    np.testing.assert_array_equal(back.obs["array_weights"], out.obs["array_weights"])
    np.testing.assert_array_equal(back.layers["remove_batch_effect"], out.layers["remove_batch_effect"])
    for key in ("array_weights", "remove_batch_effect"):
        assert back.uns[key]["params"]["design"] == out.uns[key]["params"]["design"]
    assert back.uns["remove_batch_effect"]["params"]["batch2"] == "None"


def test_array_weights_few_residual_df_are_one():
    # limma returns weights of 1 with fewer than two residual df or fewer than two genes
    rng = np.random.default_rng(3)
    y = rng.normal(size=(3, 100))
    np.testing.assert_array_equal(lin.array_weights(y, np.column_stack([np.ones(3), [0, 1, 1.0]])), 1.0)
    np.testing.assert_array_equal(lin.array_weights(rng.normal(size=(6, 1))), 1.0)


@pytest.mark.parametrize(
    ("fn", "kwargs", "exc", "match"),
    [
        ("remove_batch_effect", {}, ValueError, "nothing to remove"),
        ("remove_batch_effect", {"batch": "nope"}, KeyError, "not a column of adata.obs"),
        ("remove_batch_effect", {"batch": "cell", "design": "~ cell + dex"}, ValueError, "confounded"),
        ("remove_batch_effect", {"batch": "cell", "covariates": ["dex"]}, TypeError, "batch2"),
        ("remove_batch_effect", {"batch": "cell", "layer": "counts"}, ValueError, "raw counts"),
        ("remove_batch_effect", {"batch": "one"}, ValueError, "single level"),
        ("remove_batch_effect", {"batch": "cell", "layer": "inf"}, ValueError, "infinite"),
        ("array_weights", {"method": "exact"}, ValueError, "genebygene"),
        ("array_weights", {"prior_n": -1}, ValueError, "prior_n"),
        ("array_weights", {"weights": "nolayer"}, KeyError, "available layers"),
        ("array_weights", {"var_group": "one"}, ValueError, "two variance groups"),
        ("array_weights", {"design": "~ nope"}, (KeyError, ValueError), "nope"),
        ("array_weights", {"key_added": "a/b"}, ValueError, "/"),
    ],
)
def test_bad_input_raises_and_leaves_adata_unchanged(request, fn, kwargs, exc, match):
    ad = _airway(request)
    ad.obs["one"] = "x"
    ad.layers["inf"] = np.where(ad.layers["logcpm"] > 12, np.inf, ad.layers["logcpm"])
    before = ad.copy()
    kwargs = {"layer": "logcpm", **kwargs}
    with pytest.raises(exc, match=match):
        getattr(bk.pp, fn)(ad, **kwargs)
    assert_adata_equal(ad, before)
