"""Duplicated gene names (var_names) are refused by every function that keys results by gene.

One validator (``bulkpy._validate.check_unique_var_names``) raises a ValueError naming some of the
duplicates and the ways out; the adapters reach it through ``get_matrix`` (every one reads its
matrix there), through the DE-result lookup (``bk.get.de_df`` and ``bk.tl.ora``/``gsea``) or by
calling it directly. A refused call leaves the AnnData exactly as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import assert_adata_equal

import bulkpy as bk
from bulkpy._validate import check_unique_var_names

pytestmark = pytest.mark.filterwarnings(
    # anndata warns on duplicated names itself; these tests make them on purpose
    "ignore:Variable names are not unique:UserWarning"
)

CONTRAST = ["condition", "treated", "untreated"]
DUPLICATED = "FBgn0000003"


@pytest.fixture(scope="module")
def _duplicated():
    """Pasilla, 300 expressed genes, with a limma result, a VST and a fitted classifier made while
    the names were unique; then three genes renamed to one name."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    a = bk.datasets.pasilla()
    counts = np.asarray(a.layers["counts"])
    a = a[:, np.flatnonzero(counts.min(axis=0) >= 20)[:300]].copy()
    bk.pp.normalize(a, log=True)
    bk.tl.limma(a, design="~ condition", contrast=CONTRAST, layer="log_cpm")
    bk.pp.vst(a, fit_type="mean")
    x = pd.DataFrame(a.layers["log_cpm"], index=a.obs_names, columns=a.var_names)
    model = Pipeline([("lr", LogisticRegression())]).fit(x, a.obs["condition"].astype(str))
    # outcomes for the regression and survival models
    a.obs["score"] = np.linspace(0.0, 1.0, a.n_obs)
    a.obs["time"] = np.arange(1.0, a.n_obs + 1.0)
    a.obs["event"] = np.arange(a.n_obs) % 2 == 0
    names = a.var_names.tolist()
    names[1] = names[2] = names[0] = DUPLICATED
    a.var_names = names
    return a, model


@pytest.fixture
def duplicated(_duplicated):
    return _duplicated[0].copy(), _duplicated[1]


def _sets(a) -> dict[str, list[str]]:
    genes = a.var_names.tolist()
    return {f"set{i}": genes[i * 20 : i * 20 + 20] for i in range(10)}


CALLS = {
    "pp.annotate_genes": lambda a, m: bk.pp.annotate_genes(a),
    "pp.combat": lambda a, m: bk.pp.combat(a, batch="type", layer="log_cpm"),
    "pp.combat_seq": lambda a, m: bk.pp.combat_seq(a, batch="type"),
    "pp.filter_by_expr": lambda a, m: bk.pp.filter_by_expr(a, group="condition"),
    "pp.norm_factors": lambda a, m: bk.pp.norm_factors(a),
    "pp.normalize": lambda a, m: bk.pp.normalize(a, key_added="cpm2"),
    "pp.pseudobulk": lambda a, m: bk.pp.pseudobulk(a, sample_key="condition", layer="counts", min_cells=1),
    "pp.qc_metrics": lambda a, m: bk.pp.qc_metrics(a),
    "pp.quantile_normalize": lambda a, m: bk.pp.quantile_normalize(a),
    "pp.size_factors": lambda a, m: bk.pp.size_factors(a),
    "pp.vst": lambda a, m: bk.pp.vst(a, fit_type="mean", key_added="vst2"),
    "pp.rlog": lambda a, m: bk.pp.rlog(a, fit_type="mean"),
    "pp.remove_batch_effect": lambda a, m: bk.pp.remove_batch_effect(a, batch="type", layer="log_cpm"),
    "pp.array_weights": lambda a, m: bk.pp.array_weights(a, design="~ condition", layer="log_cpm"),
    "pp.zscore": lambda a, m: bk.pp.zscore(a),
    "tl.deseq": lambda a, m: bk.tl.deseq(a, design="~ condition"),
    "tl.edger": lambda a, m: bk.tl.edger(a, design="~ condition", contrast=CONTRAST),
    "tl.deseq(split_by=)": lambda a, m: bk.tl.deseq(a, design="~ condition", contrast=CONTRAST, split_by="type"),
    "tl.voom(split_by=)": lambda a, m: bk.tl.voom(a, design="~ condition", contrast=CONTRAST, split_by="type"),
    "tl.limma": lambda a, m: bk.tl.limma(
        a, design="~ condition", contrast=CONTRAST, layer="log_cpm", key_added="l2"
    ),
    "tl.voom": lambda a, m: bk.tl.voom(a, design="~ condition", contrast=CONTRAST),
    "tl.rank_test": lambda a, m: bk.tl.rank_test(
        a, groupby="condition", group="treated", reference="untreated", layer="log_cpm"
    ),
    "tl.ora": lambda a, m: bk.tl.ora(a, key="limma", gene_sets=_sets(a), min_size=5, padj=1.0),
    "tl.gsea": lambda a, m: bk.tl.gsea(a, key="limma", gene_sets=_sets(a), min_size=5),
    "tl.score": lambda a, m: bk.tl.score(a, gene_sets=_sets(a), layer="log_cpm"),
    "tl.classify": lambda a, m: bk.tl.classify(a, label="condition", cv=2, param_grid={}),
    "tl.regress": lambda a, m: bk.tl.regress(a, target="score", cv=2, param_grid={}),
    "tl.survival": lambda a, m: bk.tl.survival(a, time="time", event="event", cv=2, param_grid={}),
    "tl.camera": lambda a, m: bk.tl.camera(a, _sets(a), key="limma"),
    "tl.fry": lambda a, m: bk.tl.fry(a, _sets(a), key="limma"),
    "tl.predict": lambda a, m: bk.tl.predict(a, model=m, layer="log_cpm"),
    "get.de_df": lambda a, m: bk.get.de_df(a, "limma"),
    "get.de_stats": lambda a, m: bk.get.de_stats(a, "limma"),
    "get.dispersions": lambda a, m: bk.get.dispersions(a, "vst"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_duplicated_gene_names_refused(duplicated, name):
    a, model = duplicated
    before = a.copy()
    with pytest.raises(ValueError, match=r"gene names \(adata.var_names\) must be unique") as err:
        CALLS[name](a, model)
    msg = str(err.value)
    assert f"1 occur more than once, e.g. ['{DUPLICATED}']" in msg
    assert "adata.var_names_make_unique()" in msg and "scanpy.get.aggregate" in msg
    assert_adata_equal(a, before)


def test_every_gene_keyed_function_is_covered():
    """A new public pp/tl function must be added to CALLS (or to the per-sample list below)."""
    per_sample = {"tl.cluster"}  # refused too (it reads its matrix through get_matrix), not keyed by gene
    public = {f"{ns}.{n}" for ns in ("pp", "tl") for n in getattr(bk, ns).__all__}
    assert public - per_sample <= set(CALLS)


def test_per_sample_tables_still_work(duplicated):
    """Tables per sample do not depend on gene names and accept duplicated ones."""
    a, _ = duplicated
    assert bk.get.sample_distances(a, layer="log_cpm").shape == (7, 7)
    assert bk.get.pca(a, layer="log_cpm")[0].shape == (7, 2)
    assert bk.get.sample_qc(a).shape == (7, 2)
    assert bk.get.rle(a, layer="counts").shape[0] > 0
    # expression of a gene whose name is unique; the duplicated one is named as ambiguous
    other = a.var_names[5]
    assert bk.get.expression(a, [other], layer="log_cpm").shape == (7, 3)
    with pytest.raises(ValueError, match="match several genes"):
        bk.get.expression(a, [DUPLICATED], layer="log_cpm")


def test_validator_message_and_unique_names_pass(pasilla):
    check_unique_var_names(pasilla)  # unique: nothing happens
    a = pasilla[:, :4].copy()
    a.var_names = ["g1", "g2", "g1", "g2"]
    with pytest.raises(
        ValueError,
        match=r"^bk.x keys its results by gene: gene names .* 2 occur more than once, e.g. \['g1', 'g2'\]",
    ):
        check_unique_var_names(a, what="bk.x")
