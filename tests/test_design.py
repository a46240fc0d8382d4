"""Design matrices (bulkpy._design): formulas on obs, numeric matrices, rank checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bulkpy._design import (
    check_full_rank,
    confounded_columns,
    describe_design,
    design_matrix,
    non_estimable,
)


@pytest.fixture
def obs():
    return pd.DataFrame(
        {
            "condition": pd.Categorical(["ctrl", "ctrl", "trt", "trt", "ctrl", "trt"]),
            "batch": pd.Categorical(["a", "b", "a", "b", "a", "b"]),
            "age": [30.0, 41.0, 52.0, 38.0, 45.0, 60.0],
            "donor": ["d1", "d2", "d3", "d1", "d2", "d3"],
        },
        index=[f"s{i}" for i in range(6)],
    )


# --- formulas --------------------------------------------------------------------------------


def test_formula_on_real_obs(pasilla):
    X, names = design_matrix(pasilla.obs, "~ type + condition")
    assert names == ["Intercept", "type[T.single_read]", "condition[T.untreated]"]
    assert X.dtype == np.float64 and X.shape == (7, 3)
    np.testing.assert_array_equal(X[:, 0], 1.0)
    np.testing.assert_array_equal(X[:, 1], (pasilla.obs["type"] == "single_read").to_numpy(float))
    np.testing.assert_array_equal(X[:, 2], (pasilla.obs["condition"] == "untreated").to_numpy(float))


def test_formula_numeric_and_no_intercept(obs):
    X, names = design_matrix(obs, "~ 0 + condition + age")
    assert names == ["condition[ctrl]", "condition[trt]", "age"]
    np.testing.assert_array_equal(X[:, 2], obs["age"].to_numpy())
    np.testing.assert_array_equal(X[:, :2].sum(axis=1), 1.0)
    X1, n1 = design_matrix(obs, "~ 1")
    assert n1 == ["Intercept"] and X1.shape == (6, 1)
    # no tilde is read as the right-hand side
    X2, n2 = design_matrix(obs, "condition")
    assert n2 == ["Intercept", "condition[T.trt]"] and X2.shape == (6, 2)


def test_formula_transforms_and_string_columns(obs):
    X, names = design_matrix(obs, "~ np.log(age) + donor")
    assert names == ["Intercept", "np.log(age)", "donor[T.d2]", "donor[T.d3]"]
    np.testing.assert_allclose(X[:, 1], np.log(obs["age"]))


def test_reference_level_follows_category_order(obs):
    o = obs.copy()
    o["condition"] = o["condition"].cat.reorder_categories(["trt", "ctrl"])
    _, names = design_matrix(o, "~ condition")
    assert names == ["Intercept", "condition[T.ctrl]"]
    _, names = design_matrix(obs, "~ C(condition, contr.treatment('trt'))")
    assert names[1].endswith("[T.ctrl]")


def test_unused_levels_are_dropped(obs):
    sub = obs.iloc[:4].copy()
    sub["batch"] = sub["batch"].cat.add_categories(["never"])
    X, names = design_matrix(sub, "~ batch + condition")
    assert names == ["Intercept", "batch[T.b]", "condition[T.trt]"]
    assert not (X == 0).all(axis=0).any()
    X, names = design_matrix(sub, "~ batch", drop_unused_levels=False)
    assert names[-1] == "batch[T.never]" and (X[:, -1] == 0).all()
    # obs itself is not changed
    assert "never" in sub["batch"].cat.categories


def test_formula_does_not_see_caller_locals(obs):
    secret = np.arange(6.0)  # noqa: F841  (a local that a formula must not pick up)
    with pytest.raises(KeyError, match="secret"):
        design_matrix(obs, "~ secret")


def test_missing_column_lists_obs_columns(obs):
    with pytest.raises(KeyError, match=r"'treatment'.*columns are: \['condition', 'batch', 'age', 'donor'\]"):
        design_matrix(obs, "~ batch + treatment")
    with pytest.raises(KeyError, match="'x', 'y'"):
        design_matrix(obs, "~ x + y")
    with pytest.raises(KeyError, match="'agee'"):  # inside a stateful transform
        design_matrix(obs, "~ condition + center(agee)")


def test_missing_values_in_covariates(obs):
    o = obs.copy()
    o.loc["s2", "age"] = np.nan
    with pytest.raises(ValueError, match=r"'age'.*1 missing values.*s2"):
        design_matrix(o, "~ age + condition")
    o = obs.copy()
    o["donor"] = o["donor"].astype(object)
    o.loc["s4", "donor"] = None
    with pytest.raises(ValueError, match=r"'donor'.*missing.*s4"):
        design_matrix(o, "~ donor")
    o = obs.copy()
    o["condition"] = o["condition"].cat.add_categories("x")
    o.loc["s0", "condition"] = np.nan
    with pytest.raises(ValueError, match="'condition'.*missing"):
        design_matrix(o, "~ condition")
    # a column with NaN that the formula does not use is fine
    o = obs.copy()
    o.loc["s1", "age"] = np.nan
    assert design_matrix(o, "~ condition")[0].shape == (6, 2)


def test_non_finite_covariates(obs):
    o = obs.copy()
    o.loc["s3", "age"] = np.inf
    with pytest.raises(ValueError, match="non-finite.*s3"):
        design_matrix(o, "~ age")
    o = obs.copy()
    o.loc["s3", "age"] = 0.0
    with pytest.raises(ValueError, match=r"non-finite values in columns \['np.log\(age\)'\]"):
        design_matrix(o, "~ np.log(age)")


@pytest.mark.parametrize(
    ("formula", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("y ~ condition", "left-hand side"),
        ("~ condition | batch", "several parts"),
        ("~ condition +* batch", "could not parse"),
    ],
)
def test_bad_formulas(obs, formula, match):
    with pytest.raises(ValueError, match=match):
        design_matrix(obs, formula)


# --- matrices --------------------------------------------------------------------------------


def test_numeric_matrix_forms(obs):
    X0, names0 = design_matrix(obs, "~ batch + condition")
    X, names = design_matrix(obs, X0)
    np.testing.assert_array_equal(X, X0)
    assert names == ["x0", "x1", "x2"]
    X, names = design_matrix(obs, X0.astype(int).tolist())
    np.testing.assert_array_equal(X, X0)
    df = pd.DataFrame(X0, index=obs.index, columns=names0)
    X, names = design_matrix(obs, df)
    np.testing.assert_array_equal(X, X0)
    assert names == names0
    X, _ = design_matrix(obs, df.reset_index(drop=True))  # RangeIndex: taken in obs order
    np.testing.assert_array_equal(X, X0)


def test_matrix_errors(obs):
    X0, names0 = design_matrix(obs, "~ batch + condition")
    df = pd.DataFrame(X0, index=obs.index, columns=names0)
    with pytest.raises(ValueError, match="different order"):
        design_matrix(obs, df.iloc[::-1])
    with pytest.raises(ValueError, match="does not match adata.obs_names"):
        design_matrix(obs, df.set_axis([f"t{i}" for i in range(6)]))
    with pytest.raises(ValueError, match="5 rows but there are 6 samples"):
        design_matrix(obs, X0[:5])
    with pytest.raises(ValueError, match="1-dimensional"):
        design_matrix(obs, X0[:, 1])
    with pytest.raises(ValueError, match="no columns"):
        design_matrix(obs, np.zeros((6, 0)))
    bad = X0.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values in columns \['x1'\]"):
        design_matrix(obs, bad)
    with pytest.raises(TypeError, match="not numeric"):
        design_matrix(obs, df.assign(lab=list("abcdef")))
    with pytest.raises(TypeError, match="dtype"):
        design_matrix(obs, np.array([["a"]] * 6))
    with pytest.raises(TypeError, match="formula string"):
        design_matrix(obs, None)
    with pytest.raises(TypeError, match="formula string"):
        design_matrix(obs, 3.5)
    with pytest.raises(TypeError, match="DataFrame"):
        design_matrix(obs.to_numpy(), "~ condition")
    with pytest.raises(ValueError, match="duplicated column names"):
        design_matrix(obs, pd.DataFrame(X0, index=obs.index, columns=["a", "a", "b"]))


# --- rank ------------------------------------------------------------------------------------


def test_full_rank_passes(obs):
    X, names = design_matrix(obs, "~ batch + condition + age")
    assert non_estimable(X, names) == []
    assert confounded_columns(X, names) == {}
    assert check_full_rank(X, names) is None


def test_confounded_columns_are_named(obs):
    o = obs.copy()
    o["group"] = o["condition"].map({"ctrl": "g1", "trt": "g2"}).astype("category")  # = condition
    X, names = design_matrix(o, "~ batch + condition + group")
    assert non_estimable(X, names) == ["group[T.g2]"]
    assert confounded_columns(X, names) == {"group[T.g2]": ["condition[T.trt]"]}
    with pytest.raises(ValueError, match=r"not of full rank \(3 < 4.*'group\[T.g2\]' is a linear combination of 'condition\[T.trt\]'"):
        check_full_rank(X, names, what="design '~ batch + condition + group'")


def test_combination_of_several_columns():
    X = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0.0]])
    X[:, 3] = X[:, 0] - X[:, 1] - X[:, 2]  # the last level = intercept - the others
    conf = confounded_columns(X, ["Intercept", "a", "b", "c"])
    assert conf == {"c": ["Intercept", "a", "b"]}
    assert non_estimable(X) == ["x3"]


def test_zero_column_and_numerical_tolerance():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(8), rng.normal(size=8), np.zeros(8)])
    assert confounded_columns(X, ["i", "x", "z"]) == {"z": []}
    with pytest.raises(ValueError, match="'z' is all zero"):
        check_full_rank(X, ["i", "x", "z"])
    # a column that differs from a combination by far more than R's 1e-7 is estimable, one within it is not
    Y = np.column_stack([X[:, :2], X[:, 0] + 2 * X[:, 1] + 1e-4 * rng.normal(size=8)])
    assert non_estimable(Y) == []
    Y[:, 2] = X[:, 0] + 2 * X[:, 1] + 1e-10 * rng.normal(size=8)
    assert non_estimable(Y) == ["x2"]


def test_names_length_checked():
    with pytest.raises(ValueError, match="2 column names for a matrix with 3 columns"):
        non_estimable(np.eye(3), ["a", "b"])


def test_describe_design(obs):
    assert describe_design(" ~ condition ") == "~ condition"
    assert describe_design(None) == "None"
    assert describe_design(np.zeros((6, 2))) == "matrix 6x2"
    assert describe_design(pd.DataFrame(np.zeros((6, 2)))) == "DataFrame 6x2"


def test_design_spec_encodes_new_rows_like_the_design(obs):
    from bulkpy._design import design_spec

    X, names = design_matrix(obs, "~ batch + condition + center(age)")
    spec = design_spec(obs, "~ batch + condition + center(age)")
    again = spec.get_model_matrix(obs)
    assert list(again.columns) == names
    np.testing.assert_allclose(again.to_numpy(dtype=float), X)  # centring uses the original mean
    row = obs.iloc[[0]].assign(condition=pd.Categorical(["trt"], categories=["ctrl", "trt"]))
    np.testing.assert_allclose(spec.get_model_matrix(row).to_numpy(dtype=float), [[1, 0, 1, X[0, 3]]])
    with pytest.raises(TypeError, match="formula string"):
        design_spec(obs, X)
