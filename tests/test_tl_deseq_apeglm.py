"""bk.tl.deseq(shrink="apeglm"): DESeq2 1.52's ``lfcShrink(type = "apeglm")`` with apeglm 1.27.0.

References: ``../shared/data/<dataset>/r_current/deseq2_shrink_apeglm{,_noadapt,_svalue_lfc1}``
(``../shared/refscripts/make_refs_current.R``: ``lfcShrink(dds, coef = "<factor>_<test>_vs_<ref>",
type = "apeglm")``, with ``apeAdapt = FALSE``, with ``lfcThreshold = 1``); for pasilla trimmed
copies (every 8th gene) in ``tests/fixtures/pasilla/r_current`` so the core test runs on a fresh
clone, with the extra references of ``make_apeglm_refs.R`` beside them (s-values of the false sign
rate, after the LRT, with normalisation factors; ``PROVENANCE_apeglm.txt``).

How close, and why not closer. bulkpy replays apeglm's optimisers step by step (RcppNumerical's
L-BFGS with its line search for the mode, R's ``optimHess`` for the Hessian, R's BFGS ``vmmin`` for
the genes apeglm refits), so most genes agree to rounding (99th percentile of |Δ| ~1e-9 for the
shrunken log2FC, ~1e-10 for its SE). What is left comes from the inputs: the maximum likelihood
fits and dispersions that feed apeglm agree with DESeq2's to ~1e-11 relative (DESeq2's IRLS and
dispersion line searches stop at tolerances), which moves the prior scale by ~1e-11 and the
starting points by as much; where one of L-BFGS's stopping tests (scaled objective changing by less
than 1e-8 relative) falls that close to its threshold the two stop one step apart, a difference
the tolerance bounds: measured maxima 2e-6 (pasilla), 8e-6 (airway), 9e-6 (geuvadis85) in log2FC.
The tests assert the 99th percentiles at 1e-6 and the maxima at 1e-4 (log2FC), 1e-3 (SE) and 0.01
(log10 s-value).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, SHARED, roundtrip
from helpers import assert_adata_equal
from scipy import sparse

import bulkpy as bk
from bulkpy._stats.deseq2 import apeglm as A

DESIGNS = {"pasilla": "~ type + condition", "airway": "~ cell + dex", "geuvadis85": "~ sex"}
COEF = {
    "pasilla": "condition_treated_vs_untreated",
    "airway": "dex_trt_vs_untrt",
    "geuvadis85": "sex_Male_vs_Female",
}
# R's factor levels (stringsAsFactors: alphabetical, then relevel to the reference)
R_LEVELS = {
    "pasilla": {"condition": ["untreated", "treated"], "type": ["paired_end", "single_read"]},
    "airway": {"dex": ["untrt", "trt"], "cell": ["N052611", "N061011", "N080611", "N61311"]},
    "geuvadis85": {"sex": ["Female", "Male"]},
}
# prior.control$prior.scale of lfcShrink(type = "apeglm", returnList = TRUE) in R (apeAdapt = TRUE)
R_PRIOR_SCALE = {"pasilla": 0.2088153137638335, "airway": 0.30209909640097238, "geuvadis85": 0.03882392510499412}
VARIANTS = {
    "adapt": ({}, "deseq2_shrink_apeglm"),
    "noadapt": ({"ape_adapt": False}, "deseq2_shrink_apeglm_noadapt"),
    "svalue_lfc1": ({"lfc_threshold": 1.0}, "deseq2_shrink_apeglm_svalue_lfc1"),
}
P99 = 1e-6
MAX_LFC, MAX_SE, MAX_LOG10_S = 1e-4, 1e-3, 0.01


def _ref(dataset: str, name: str) -> pd.DataFrame:
    """The full r_current reference from ``../shared/data``, else the trimmed pasilla fixture."""
    full = SHARED / dataset / "r_current" / f"{name}.csv.gz"
    if full.exists():
        return pd.read_csv(full, index_col=0)
    local = FIXTURES / dataset / "r_current" / f"{name}_every8.csv.gz"
    if local.exists():
        return pd.read_csv(local, index_col=0)
    pytest.skip(f"apeglm reference {dataset}/r_current/{name} not available in {SHARED} nor in {FIXTURES}")


def _fixture(name: str) -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "pasilla" / "r_current" / f"{name}_every8.csv.gz", index_col=0)


def _r_levels(adata, dataset):
    for col, levels in R_LEVELS[dataset].items():
        adata.obs[col] = pd.Categorical(adata.obs[col].astype(str), categories=levels)
    return adata


def make_norm_factors(n_samples: int, n_genes: int) -> np.ndarray:
    """The normalisation factors of the ``_normfactors`` reference (samples × genes; written for R
    as genes × samples with 17 significant digits)."""
    s = np.arange(n_samples)[:, None]
    j = np.arange(n_genes)[None, :]
    return np.round(np.exp(0.3 * np.sin(1.7 * s + 0.01 * j)) * (1.0 + s / 10.0), 6)


def _compare(
    df: pd.DataFrame, ref: pd.DataFrame, *, svalue: bool = False, lfc: bool = True, p99: float = P99, mx=(MAX_LFC, MAX_SE)
) -> dict:
    """|Δ| of the shrunken log2FC and SE (and log10 s-value) against R; the missing patterns must agree."""
    df = df.loc[ref.index]
    out = {}
    pairs = [("log2FoldChange_shrunk", "log2FoldChange", mx[0]), ("lfcSE_shrunk", "lfcSE", mx[1])] if lfc else []
    for col, rcol, tol in pairs:
        a, b = df[col].to_numpy(), ref[rcol].to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        d = np.abs(a - b)[~np.isnan(b)]
        out[col] = (np.percentile(d, 99), d.max())
        assert out[col][0] < p99, (col, out[col])
        assert out[col][1] < tol, (col, out[col])
    if svalue:
        a, b = df["svalue"].to_numpy(), ref["svalue"].to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(b)
        d = np.abs(np.log10(np.maximum(a[ok], 1e-300)) - np.log10(np.maximum(b[ok], 1e-300)))
        out["svalue"] = (np.percentile(d, 99), d.max())
        assert out["svalue"][0] < P99 and out["svalue"][1] < MAX_LOG10_S, out["svalue"]
    return out


@pytest.fixture(scope="module")
def pasilla_ape(_pasilla):
    a = _r_levels(_pasilla.copy(), "pasilla")
    bk.tl.deseq(a, design=DESIGNS["pasilla"], contrast=COEF["pasilla"], shrink="apeglm")
    return a


# --------------------------------------------------------------------------------------------
# parity with DESeq2 1.52 / apeglm 1.27
# --------------------------------------------------------------------------------------------


def test_pasilla_matches_apeglm(pasilla_ape):
    """The core check (runs on the committed fixture): default adaptive prior on pasilla."""
    df = bk.get.de_df(pasilla_ape, "deseq")
    _compare(df, _ref("pasilla", "deseq2_shrink_apeglm"))
    prior = pasilla_ape.uns["deseq"]["params"]["apeglm"][COEF["pasilla"]]
    assert prior["prior_scale"] == pytest.approx(R_PRIOR_SCALE["pasilla"], rel=1e-9)
    assert list(prior["no_shrink"]) == ["Intercept", "type_single_read_vs_paired_end"]
    # the MLE columns are results()'s; the test statistics are untouched by the shrinkage
    assert {"log2FoldChange", "lfcSE", "pvalue", "padj", "svalue"} <= set(df.columns)


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "dataset", ["pasilla", "geuvadis85", pytest.param("airway", marks=pytest.mark.slow)]
)
def test_matches_apeglm_r_current(request, dataset, variant):
    kw, name = VARIANTS[variant]
    ref = _ref(dataset, name)
    a = _r_levels(request.getfixturevalue(dataset), dataset)
    bk.tl.deseq(a, design=DESIGNS[dataset], contrast=COEF[dataset], shrink="apeglm", **kw)
    df = bk.get.de_df(a, "deseq")
    _compare(df, ref, svalue=variant == "svalue_lfc1", lfc="log2FoldChange" in ref.columns)
    prior = a.uns["deseq"]["params"]["apeglm"][COEF[dataset]]
    if variant == "noadapt":
        assert prior["prior_scale"] == 1.0 and "prior_var" not in prior
        assert list(prior["no_shrink"]) == ["Intercept"]
    else:
        assert prior["prior_scale"] == pytest.approx(R_PRIOR_SCALE[dataset], rel=1e-9)


def test_svalue_false_sign_rate_matches_apeglm(pasilla_ape):
    # lfcThreshold = 0: the s-values of the false sign rate (lfcShrink(svalue = TRUE))
    _compare(bk.get.de_df(pasilla_ape, "deseq"), _fixture("deseq2_shrink_apeglm_svalue"), svalue=True, lfc=False)
    assert pasilla_ape.uns["deseq"]["params"]["svalue"] == "false sign rate"


def test_after_lrt_matches_apeglm(pasilla):
    # DESeq2 shrinks after the LRT too: the full model's MLEs and SEs set the prior; stat/pvalue stay the LRT's
    a = _r_levels(pasilla, "pasilla")
    bk.tl.deseq(a, design=DESIGNS["pasilla"], contrast=COEF["pasilla"], test="LRT", reduced="~ type", shrink="apeglm")
    df = bk.get.de_df(a, "deseq")
    _compare(df, _fixture("deseq2_shrink_apeglm_lrt"))
    b = _r_levels(pasilla.copy(), "pasilla")
    bk.tl.deseq(b, design=DESIGNS["pasilla"], contrast=COEF["pasilla"], test="LRT", reduced="~ type")
    np.testing.assert_array_equal(df["pvalue"].to_numpy(), bk.get.de_df(b, "deseq")["pvalue"].to_numpy())


def test_normalisation_factors_match_apeglm(pasilla):
    # offsets log(normalizationFactors(dds)), gene by gene, with factors not scaled to geometric mean 1
    # per gene (unlike tximport's). The DESeq() fit upstream now takes DESeq2's starting values with
    # R's arithmetic (tests/test_tl_deseq_norm_factors.py), so this agrees as closely as with size
    # factors (measured: shrunken LFC p99 1.4e-10, max 1.6e-6; SE 6.9e-11).
    a = _r_levels(pasilla, "pasilla")
    a.layers["norm_factors"] = make_norm_factors(a.n_obs, a.n_vars)
    bk.tl.deseq(a, design=DESIGNS["pasilla"], contrast=COEF["pasilla"], shrink="apeglm")
    _compare(bk.get.de_df(a, "deseq"), _fixture("deseq2_shrink_apeglm_normfactors"))


# --------------------------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------------------------


def test_factor_contrast_that_is_a_coefficient(pasilla, pasilla_ape):
    # [factor, test, reference] with the design's reference level names the coefficient
    a = _r_levels(pasilla, "pasilla")
    bk.tl.deseq(a, design=DESIGNS["pasilla"], contrast=["condition", "treated", "untreated"], shrink="apeglm")
    got = bk.get.de_df(a, "deseq")
    exp = bk.get.de_df(pasilla_ape, "deseq")
    for col in ("log2FoldChange_shrunk", "lfcSE_shrunk", "svalue"):
        np.testing.assert_array_equal(got[col].to_numpy(), exp[col].to_numpy())


@pytest.mark.parametrize("adapt", [True, False])
def test_several_coefficients(pasilla, pasilla_ape, adapt):
    # each coefficient gets its own prior (adaptive) or all share Cauchy(0, 1) (one fit)
    a = _r_levels(pasilla, "pasilla")
    two = {"cond": COEF["pasilla"], "type": "type_single_read_vs_paired_end"}
    bk.tl.deseq(a, design=DESIGNS["pasilla"], contrast=two, shrink="apeglm", ape_adapt=adapt)
    for name, coef in two.items():
        b = _r_levels(pasilla.copy(), "pasilla")
        bk.tl.deseq(b, design=DESIGNS["pasilla"], contrast=coef, shrink="apeglm", ape_adapt=adapt)
        got, exp = bk.get.de_df(a, "deseq", contrast=name), bk.get.de_df(b, "deseq")
        for col in ("log2FoldChange_shrunk", "lfcSE_shrunk", "svalue"):
            np.testing.assert_array_equal(got[col].to_numpy(), exp[col].to_numpy())
    if adapt:
        p = a.uns["deseq"]["params"]["apeglm"]
        assert p["cond"]["prior_scale"] != p["type"]["prior_scale"]


def test_writes_and_round_trips(pasilla_ape, tmp_h5ad):
    a = pasilla_ape
    p = a.uns["deseq"]["params"]
    assert p["shrink"] == "apeglm" and p["apeglm_version"] == "1.27.0" and p["apeglm_method"] == "nbinomCR"
    assert p["ape_adapt"] is True or p["ape_adapt"] == np.True_
    prior = p["apeglm"][COEF["pasilla"]]
    assert set(prior) == {"coefficient", "prior_scale", "prior_var", "no_shrink", "no_shrink_scale", "n_not_converged", "n_refitted"}
    assert prior["n_refitted"] > 0  # pasilla has genes apeglm refits with R's BFGS (43)
    b = roundtrip(a, tmp_h5ad)
    assert_adata_equal(a, b)
    pd.testing.assert_frame_equal(bk.get.de_df(a, "deseq"), bk.get.de_df(b, "deseq"))
    q = b.uns["deseq"]["params"]["apeglm"][COEF["pasilla"]]
    assert q["prior_scale"] == prior["prior_scale"] and q["prior_var"] == prior["prior_var"]
    assert list(q["no_shrink"]) == list(prior["no_shrink"])


def test_all_zero_genes_are_missing(pasilla_ape):
    df = bk.get.de_df(pasilla_ape, "deseq")
    zero = np.asarray(pasilla_ape.layers["counts"].sum(axis=0)).ravel() == 0
    assert zero.any()
    assert df.loc[zero, ["log2FoldChange_shrunk", "lfcSE_shrunk", "svalue"]].isna().all().all()
    assert not df.loc[~zero, "log2FoldChange_shrunk"].isna().any()


# --------------------------------------------------------------------------------------------
# impossible requests: clear errors, the object untouched
# --------------------------------------------------------------------------------------------


def _bad(adata, exc, match, **kw):
    before = adata.copy()
    args = {"design": DESIGNS["pasilla"], "contrast": COEF["pasilla"], "shrink": "apeglm", **kw}
    with pytest.raises(exc, match=match):
        bk.tl.deseq(adata, **args)
    assert_adata_equal(adata, before)


def test_errors(pasilla):
    a = _r_levels(pasilla, "pasilla")
    # DESeq2: "type='apeglm' shrinkage only for use with 'coef'"
    _bad(a, ValueError, "apeglm' shrinks coefficients", contrast=[0.0, 1.0, -1.0])
    _bad(a, ValueError, "relevel the factor", contrast=["condition", "untreated", "treated"])
    _bad(a, ValueError, "first design column", contrast="Intercept")
    _bad(a, ValueError, "numeric contrast", contrast=[0.0, 0.5, 0.0])
    _bad(a, TypeError, "ape_adapt", ape_adapt="no")
    _bad(a, ValueError, "'ashr' is not available", shrink="ashr")
    # interactions: the coefficient of an interaction term can be shrunk, a combination can not
    a.obs["g2"] = pd.Categorical(np.tile(["u", "v"], 4)[: a.n_obs])
    _bad(a, ValueError, "shrinks coefficients", design="~ condition * g2", contrast=[0, 1.0, 0, 1.0])


def test_unit_numeric_contrast_is_a_coefficient(pasilla, pasilla_ape):
    a = _r_levels(pasilla, "pasilla")
    bk.tl.deseq(a, design=DESIGNS["pasilla"], contrast={"c": [0.0, 0.0, 1.0]}, shrink="apeglm")
    np.testing.assert_array_equal(
        bk.get.de_df(a, "deseq", contrast="c")["log2FoldChange_shrunk"].to_numpy(),
        bk.get.de_df(pasilla_ape, "deseq")["log2FoldChange_shrunk"].to_numpy(),
    )


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------


def test_svalue_is_apeglms():
    # sorted ascending, ties in order of appearance, running means; missing stays missing
    got = A.svalue(np.array([0.3, 0.1, np.nan, 0.1]))
    np.testing.assert_allclose(got, [(0.1 + 0.1 + 0.3) / 3, 0.1, np.nan, 0.1])


def test_prior_variance_floor_and_root():
    rng = np.random.default_rng(1)
    se = np.full(2000, 0.5)
    # effects with variance 0.09 observed with SE 0.5: the estimate is near 0.09
    mle = rng.normal(0, np.sqrt(0.09 + 0.25), size=se.size)
    v = A.prior_variance(mle, se)
    assert 0.05 < v < 0.15
    # Â(A) = A holds at the root to uniroot's tolerance
    w = 1 / (2 * (v + se**2) ** 2)
    assert abs(np.sum((mle**2 - se**2) * w) / np.sum(w) - v) < 1e-3
    # pure noise: the lower bound
    assert A.prior_variance(rng.normal(0, 0.5, se.size) * 0.1, se) == A.MIN_PRIOR_VAR


@pytest.mark.parametrize("array_type", ["numpy", "sparse"])
def test_engine_blocks_and_array_types(pasilla_ape, array_type):
    a = pasilla_ape
    from bulkpy._design import deseq_design

    d = deseq_design(a.obs, DESIGNS["pasilla"])
    counts = np.asarray(a.layers["counts"], dtype=np.float64)[:, :600]
    X = sparse.csr_matrix(counts) if array_type == "sparse" else counts
    disp = a.var["deseq_dispersion"].to_numpy()[:600]
    sf = a.obs["deseq_size_factors"].to_numpy()
    one = A.apeglm_shrink(counts, d.X, 2, disp, size_factors=sf)
    blocks = A.apeglm_shrink(X, d.X, 2, disp, size_factors=sf, block_genes=37)
    np.testing.assert_array_equal(one.map, blocks.map)
    np.testing.assert_array_equal(one.sd, blocks.sd)
    with pytest.raises(ValueError, match="other than the first"):
        A.apeglm_shrink(counts, d.X, 0, disp, size_factors=sf)
