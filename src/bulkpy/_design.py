"""Design matrices for the models (filterByExpr, DESeq2, edgeR, limma), built in one place.

A design is given either as a formula string evaluated on ``adata.obs`` with
`formulaic <https://matthewwardrop.github.io/formulaic/>`_ (``"~ batch + condition"``, R's
``model.matrix`` conventions: treatment contrasts, an intercept unless ``0 +``/``- 1``), or as a
ready numeric matrix (ndarray or DataFrame, one row per sample, in the order of ``obs``).

Functions
---------
:func:`design_matrix`
    formula or matrix → ``(float64 ndarray samples × coefficients, column names)``, with clear
    errors for missing obs columns (listing those that exist), missing values in covariates,
    non-finite or non-numeric entries and a wrong number of rows.
:func:`design_spec`
    the formulaic ``ModelSpec`` of a formula design, to encode new rows (contrasts) identically.
:func:`non_estimable`
    the columns that are linear combinations of earlier ones (limma's ``nonEstimable``: the
    columns a pivoted QR with R's tolerance ``1e-7`` moves out of the rank).
:func:`confounded_columns`
    the same columns, each with the earlier columns it is a combination of.
:func:`check_full_rank`
    raise a ``ValueError`` that names the confounded columns.
:func:`describe_design`
    an h5ad-safe description of a design argument for ``uns[...]["params"]``.
:func:`deseq_design`, :func:`formula_terms`, :func:`deseq_coefficient_names`, :func:`expanded_model_matrix`
    a design as DESeq2 sees it: ``resultsNames`` (``condition_treated_vs_untreated``), the factor
    terms with their levels and reference, and the expanded model matrix of ``lfcShrink``.

Notes
-----
Levels of a categorical obs column that no sample has (left over after subsetting an AnnData)
are dropped before the formula is evaluated, so they do not produce all-zero columns. The
reference level of a factor is its first category (pandas category order; sorted for strings);
choose another with ``C(condition, contr.treatment("untreated"))`` in the formula or by reordering
the categories of the obs column.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "DESeqDesign",
    "check_full_rank",
    "confounded_columns",
    "deseq_coefficient_names",
    "deseq_design",
    "describe_design",
    "design_matrix",
    "design_spec",
    "expanded_model_matrix",
    "formula_terms",
    "non_estimable",
]

#: R's ``qr()`` (LINPACK ``dqrdc2``) tolerance: a column whose norm, after removing its projection on
#: the earlier columns, is below ``RANK_TOL`` times its original norm counts as linearly dependent.
RANK_TOL = 1e-7


def _python_names(expr: str) -> set[str]:
    """Data names in a Python factor expression such as ``center(age)`` or ``np.log(x + 1)``:
    every bare name that is not (part of) a called function and not ``np``."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return set()
    in_func = {id(n) for call in ast.walk(tree) if isinstance(call, ast.Call) for n in ast.walk(call.func)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in in_func and n.id != "np"}


def _formula_variables(formula) -> list[str]:
    """Names of the data columns a formulaic formula reads (not functions such as ``np.log``).

    formulaic's ``required_variables`` misses the arguments of stateful transforms
    (``center(age)``), so the factor expressions are also read directly.
    """
    names = set()
    for v in formula.required_variables:
        roles = {getattr(r, "value", str(r)) for r in getattr(v, "roles", ())}
        if not roles or "value" in roles:
            names.add(str(v))
    for term in formula:
        for factor in term.factors:
            method = getattr(getattr(factor, "eval_method", None), "value", "")
            if method == "lookup":
                names.add(str(factor.expr))
            elif method == "python":
                names |= _python_names(str(factor.expr))
    return sorted(names)


def _parse_formula(design: str):
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    text = design.strip()
    if not text:
        raise ValueError("design formula is empty; pass e.g. '~ condition' or '~ batch + condition'")
    try:
        formula = Formula(text)
    except (FormulaicError, SyntaxError, ValueError) as err:
        raise ValueError(f"could not parse the design formula {design!r}: {err}") from None
    if hasattr(formula, "lhs") and hasattr(formula, "rhs"):
        raise ValueError(
            f"design formula {design!r} has a left-hand side; pass a one-sided formula such as "
            f"'~ {str(formula.rhs).replace('1 + ', '', 1)}' (the response is the expression matrix)"
        )
    if type(formula).__name__ == "StructuredFormula":
        raise ValueError(f"design formula {design!r} has several parts ('|'); pass one formula such as '~ a + b'")
    return formula


def _check_obs_columns(obs: pd.DataFrame, design: str, names: list[str]) -> None:
    missing = [n for n in names if n not in obs.columns]
    if missing:
        raise KeyError(
            f"design {design!r} uses {', '.join(repr(m) for m in missing)}, not "
            f"{'a column' if len(missing) == 1 else 'columns'} of adata.obs; columns are: {list(obs.columns)}"
        )
    for n in names:
        col = obs[n]
        na = pd.isna(col).to_numpy()
        if na.any():
            samples = list(map(str, obs.index[na][:10]))
            raise ValueError(
                f"obs column {n!r} used in design {design!r} has {int(na.sum())} missing values "
                f"(samples {samples}{', ...' if na.sum() > 10 else ''}); fill them in or drop those samples first"
            )
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            bad = ~np.isfinite(col.to_numpy(dtype=np.float64))
            if bad.any():
                samples = list(map(str, obs.index[bad][:10]))
                raise ValueError(f"obs column {n!r} used in design {design!r} has non-finite values (samples {samples})")


def _from_formula(obs: pd.DataFrame, design: str, *, drop_unused_levels: bool):
    """``(X, columns, model_spec)`` for a formula on ``obs``."""
    import formulaic
    from formulaic.errors import FormulaicError

    formula = _parse_formula(design)
    names = _formula_variables(formula)
    _check_obs_columns(obs, design, names)
    data = obs.copy()  # whole obs: a name we could not see in the formula is still found
    if drop_unused_levels:
        for n in data.columns:
            if isinstance(data[n].dtype, pd.CategoricalDtype):
                data[n] = data[n].cat.remove_unused_categories()
    # a fixed evaluation context: the formula sees obs, numpy as ``np`` and formulaic's transforms,
    # never the local variables of whoever called us
    # numpy's warnings from transforms (log of 0) are silenced: the non-finite check below names them
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mm = formulaic.model_matrix(formula, data, na_action="raise", context={"np": np})
    except (FormulaicError, ValueError, TypeError, NameError) as err:
        raise ValueError(f"could not build a design matrix from {design!r} on adata.obs: {err}") from None
    columns = [str(c) for c in mm.columns]
    X = np.asarray(mm.to_numpy(dtype=np.float64))
    if X.shape[0] != obs.shape[0]:
        raise ValueError(
            f"the design matrix from {design!r} has {X.shape[0]} rows for {obs.shape[0]} samples "
            "(formulaic dropped rows); check the covariates for missing values"
        )
    bad = ~np.isfinite(X)
    if bad.any():
        cols = sorted({columns[j] for j in np.nonzero(bad.any(axis=0))[0]})
        raise ValueError(
            f"design {design!r} gives non-finite values in columns {cols} (e.g. the log of 0); "
            "transform the covariate differently"
        )
    return X, columns, mm.model_spec


def _from_matrix(obs: pd.DataFrame, design) -> tuple[np.ndarray, list[str]]:
    n = obs.shape[0]
    if isinstance(design, pd.DataFrame):
        if not isinstance(design.index, pd.RangeIndex) and not design.index.equals(obs.index):
            idx = design.index.astype(str)
            if set(idx) == set(obs.index.astype(str)):
                raise ValueError(
                    "the rows of the design DataFrame are the samples in a different order; "
                    "reorder them as adata.obs_names (design.loc[adata.obs_names])"
                )
            raise ValueError(
                "the index of the design DataFrame does not match adata.obs_names; give one row per "
                "sample indexed by the sample names, or a default RangeIndex in obs order"
            )
        if not design.columns.is_unique:
            dup = sorted({str(c) for c in design.columns[design.columns.duplicated()]})
            raise ValueError(f"design has duplicated column names {dup}")
        non_numeric = [str(c) for c in design.columns if not pd.api.types.is_numeric_dtype(design[c])]
        if non_numeric:
            raise TypeError(
                f"design DataFrame columns {non_numeric} are not numeric; pass a numeric model matrix, "
                "or a formula string such as '~ condition' to encode factors"
            )
        columns = [str(c) for c in design.columns]
        X = design.to_numpy(dtype=np.float64)
    else:
        from scipy import sparse

        if sparse.issparse(design):
            design = design.toarray()
        arr = np.asarray(design)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"design must be a formula string or a numeric matrix; got an array of dtype {arr.dtype}"
            )
        if arr.ndim == 1:
            raise ValueError(
                f"design is 1-dimensional (shape {arr.shape}); pass a 2-D matrix with one row per sample "
                "(e.g. x[:, None]) or a formula string"
            )
        if arr.ndim != 2:
            raise ValueError(f"design must be 2-dimensional (samples x coefficients), got shape {arr.shape}")
        X = arr.astype(np.float64)
        columns = [f"x{j}" for j in range(X.shape[1])]
    if X.shape[0] != n:
        raise ValueError(f"design has {X.shape[0]} rows but there are {n} samples; give one row per sample")
    if X.shape[1] == 0:
        raise ValueError("design has no columns; use '~ 1' for an intercept-only model")
    bad = ~np.isfinite(X)
    if bad.any():
        cols = sorted({columns[j] for j in np.nonzero(bad.any(axis=0))[0]})
        raise ValueError(f"design has missing or non-finite values in columns {cols}")
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"design has duplicated column names {dup}")
    return X, columns


def design_matrix(obs: pd.DataFrame, design, *, drop_unused_levels: bool = True) -> tuple[np.ndarray, list[str]]:
    """Build the model matrix for ``design`` on the sample table ``obs``.

    Parameters
    ----------
    obs
        Sample annotation, one row per sample (``adata.obs``).
    design
        A formula string evaluated on ``obs`` by formulaic (``"~ batch + condition"``; R's
        ``model.matrix`` conventions), or a numeric matrix: an ndarray (or scipy sparse matrix)
        with one row per sample, or a DataFrame indexed by the sample names (or by a RangeIndex,
        taken in obs order).
    drop_unused_levels
        Drop the categories of categorical obs columns that no sample has before evaluating a
        formula (as subsetting an AnnData leaves them behind), so they make no all-zero columns.

    Returns
    -------
    ``(X, columns)``: the float64 matrix, samples × coefficients, and the column names
    (formulaic's, e.g. ``"Intercept"``, ``"condition[T.untreated]"``; ``x0, x1, …`` for an
    unnamed array).

    Raises
    ------
    KeyError
        A formula names a column that is not in ``obs`` (the message lists the columns).
    ValueError
        Missing or non-finite covariate values, an unparsable or two-sided formula, a wrong
        number of rows, an empty or non-finite matrix.
    TypeError
        ``design`` is neither a string nor numeric.

    Examples
    --------
    >>> import bulkpy as bk
    >>> from bulkpy._design import design_matrix
    >>> X, names = design_matrix(bk.datasets.pasilla().obs, "~ type + condition")
    >>> X.shape, names
    ((7, 3), ['Intercept', 'type[T.single_read]', 'condition[T.untreated]'])
    """
    if not isinstance(obs, pd.DataFrame):
        raise TypeError(f"obs must be a pandas DataFrame (adata.obs), got {type(obs).__name__}")
    if isinstance(design, str):
        X, columns, _ = _from_formula(obs, design, drop_unused_levels=drop_unused_levels)
        return X, columns
    if design is None:
        raise TypeError("design is None; pass a formula string such as '~ condition' or a numeric matrix")
    if isinstance(design, (pd.DataFrame, np.ndarray, list, tuple)) or hasattr(design, "__array__") or hasattr(
        design, "toarray"
    ):
        return _from_matrix(obs, design)
    raise TypeError(
        f"design must be a formula string (e.g. '~ condition') or a numeric matrix, got {type(design).__name__}"
    )


def design_spec(obs: pd.DataFrame, design: str, *, drop_unused_levels: bool = True):
    """The formulaic ``ModelSpec`` of a formula design, to encode other rows the same way.

    ``design_spec(obs, f).get_model_matrix(new_rows)`` gives rows with exactly the columns (levels,
    reference levels, transform states) of ``design_matrix(obs, f)``; used to build contrasts
    from named factor levels. ``new_rows`` must hold the formula's columns (categoricals with the
    same categories).

    Parameters
    ----------
    obs
        Sample annotation, one row per sample (``adata.obs``).
    design
        A formula string (validated as in :func:`design_matrix`).
    drop_unused_levels
        As in :func:`design_matrix`.

    Returns
    -------
    A ``formulaic.ModelSpec``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> from bulkpy._design import design_spec
    >>> obs = bk.datasets.pasilla().obs
    >>> spec = design_spec(obs, "~ type + condition")
    >>> spec.get_model_matrix(obs.iloc[:1]).to_numpy().tolist()
    [[1.0, 1.0, 1.0]]
    """
    if not isinstance(design, str):
        raise TypeError(f"design_spec needs a formula string, got {type(design).__name__}")
    if not isinstance(obs, pd.DataFrame):
        raise TypeError(f"obs must be a pandas DataFrame (adata.obs), got {type(obs).__name__}")
    return _from_formula(obs, design, drop_unused_levels=drop_unused_levels)[2]


def _greedy_rank(X: np.ndarray, tol: float) -> tuple[list[int], list[int], np.ndarray]:
    """Walk the columns in order keeping those not spanned by the kept ones (R's limited pivoting).

    Returns the kept and the dependent column indices and an orthonormal basis of the kept columns.
    """
    n, p = X.shape
    Q = np.zeros((n, 0))
    kept: list[int] = []
    dependent: list[int] = []
    for j in range(p):
        v = X[:, j].astype(np.float64)
        norm0 = np.linalg.norm(v)
        if norm0 == 0:
            dependent.append(j)
            continue
        r = v.copy()
        for _ in range(2):  # Gram-Schmidt twice is enough for orthogonality to working precision
            r = r - Q @ (Q.T @ r)
        nr = np.linalg.norm(r)
        if nr <= tol * norm0:
            dependent.append(j)
        else:
            Q = np.column_stack([Q, r / nr])
            kept.append(j)
    return kept, dependent, Q


def _names(columns: Sequence[str] | None, p: int) -> list[str]:
    if columns is None:
        return [f"x{j}" for j in range(p)]
    columns = [str(c) for c in columns]
    if len(columns) != p:
        raise ValueError(f"{len(columns)} column names for a matrix with {p} columns")
    return columns


def non_estimable(X, columns: Sequence[str] | None = None, *, tol: float = RANK_TOL) -> list[str]:
    """Names of the columns of ``X`` that are linear combinations of earlier columns.

    As limma's ``nonEstimable``: the columns R's pivoted QR (tolerance ``1e-7``) moves past the
    rank, taking columns in their order. An empty list means ``X`` has full column rank.

    Parameters
    ----------
    X
        Design matrix, samples × coefficients.
    columns
        Column names (default ``x0, x1, …``).
    tol
        Relative tolerance on the residual norm of a column.

    Returns
    -------
    The dependent column names, in column order.

    Examples
    --------
    >>> import numpy as np
    >>> from bulkpy._design import non_estimable
    >>> X = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1.0]])
    >>> non_estimable(X, ["Intercept", "a", "b"])
    ['b']
    """
    X = np.asarray(X, dtype=np.float64)
    names = _names(columns, X.shape[1])
    _, dependent, _ = _greedy_rank(X, tol)
    return [names[j] for j in dependent]


def confounded_columns(X, columns: Sequence[str] | None = None, *, tol: float = RANK_TOL) -> dict[str, list[str]]:
    """Each column of ``X`` that depends linearly on earlier columns, with those columns.

    Parameters
    ----------
    X
        Design matrix, samples × coefficients.
    columns
        Column names (default ``x0, x1, …``).
    tol
        Relative tolerance on the residual norm of a column.

    Returns
    -------
    A dict ``{dependent column: [earlier columns it is a combination of]}``; an all-zero column
    maps to an empty list. Empty when ``X`` has full column rank.

    Examples
    --------
    >>> import numpy as np
    >>> from bulkpy._design import confounded_columns
    >>> X = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1.0]])
    >>> confounded_columns(X, ["Intercept", "a", "b"])
    {'b': ['Intercept', 'a']}
    """
    X = np.asarray(X, dtype=np.float64)
    names = _names(columns, X.shape[1])
    kept, dependent, _ = _greedy_rank(X, tol)
    out: dict[str, list[str]] = {}
    if not dependent:
        return out
    B = X[:, kept]
    scale = np.linalg.norm(B, axis=0) if kept else np.zeros(0)
    for j in dependent:
        if not kept or not np.any(X[:, j]):
            out[names[j]] = []
            continue
        coef, *_ = np.linalg.lstsq(B, X[:, j], rcond=None)
        # a coefficient matters if its term contributes a visible share of the column
        contrib = np.abs(coef) * scale
        used = contrib > 1e-8 * max(np.linalg.norm(X[:, j]), 1e-300)
        out[names[j]] = [names[kept[i]] for i in np.nonzero(used)[0]]
    return out


def check_full_rank(X, columns: Sequence[str] | None = None, *, what: str = "design", tol: float = RANK_TOL) -> None:
    """Raise a ``ValueError`` naming the confounded columns unless ``X`` has full column rank.

    Parameters
    ----------
    X
        Design matrix, samples × coefficients.
    columns
        Column names used in the message.
    what
        What to call the matrix in the message (e.g. ``"design '~ batch + condition'"``).
    tol
        Relative tolerance on the residual norm of a column.

    Returns
    -------
    ``None``; raises when the matrix is rank deficient.

    Examples
    --------
    >>> import numpy as np
    >>> from bulkpy._design import check_full_rank
    >>> check_full_rank(np.eye(3), ["a", "b", "c"])
    """
    X = np.asarray(X, dtype=np.float64)
    names = _names(columns, X.shape[1])
    conf = confounded_columns(X, names, tol=tol)
    if not conf:
        return
    parts = []
    for col, deps in conf.items():
        if not deps:
            parts.append(f"{col!r} is all zero (a level or combination no sample has?)")
        else:
            parts.append(f"{col!r} is a linear combination of {', '.join(repr(d) for d in deps)}")
    rank = X.shape[1] - len(conf)
    raise ValueError(
        f"the {what} matrix is not of full rank ({rank} < {X.shape[1]} columns), so its coefficients "
        f"can not be estimated: {'; '.join(parts)}. The variables are confounded: remove a term "
        "from the design, or combine the confounded factors into one"
    )


def describe_design(design) -> str:
    """An h5ad-safe description of a ``design`` argument: the formula, or the matrix shape."""
    if design is None:
        return "None"
    if isinstance(design, str):
        return design.strip()
    shape = getattr(design, "shape", None)
    kind = "DataFrame" if isinstance(design, pd.DataFrame) else "matrix"
    return f"{kind} {shape[0]}x{shape[1]}" if shape is not None and len(shape) == 2 else kind


# --------------------------------------------------------------------------------------------
# DESeq2's view of a design: resultsNames, factor terms, expanded model matrices
# --------------------------------------------------------------------------------------------


@dataclass
class DESeqDesign:
    """A design as DESeq2 sees it: the matrix, its columns, DESeq2's ``resultsNames`` and the
    description of each formula term (intercept, factor with its levels and reference, numeric,
    interaction), which decides the default contrast, factor contrasts and the expanded model
    matrices of ``lfcShrink(type = \"normal\")``."""

    X: np.ndarray
    columns: list[str]  # formulaic / user column names
    names: list[str]  # DESeq2-style names (resultsNames)
    formula: str | None
    spec: object  # formulaic ModelSpec (formula designs)
    terms: list  # per term: dict(kind=..., var=..., levels=..., base=..., cols=[indices])
    variables: list[str]


def expr_variable(expr: str, obs: pd.DataFrame) -> str | None:
    """The obs column a factor expression reads (``condition`` or ``C(condition, ...)``)."""
    if expr in obs.columns:
        return expr
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in obs.columns}
    return names.pop() if len(names) == 1 else None


def formula_terms(obs: pd.DataFrame, spec, columns: list[str]) -> list[dict]:
    """Describe each term of a formulaic model: intercept, single factor, numeric, or other."""
    fc = {str(f): st for f, st in spec.factor_contrasts.items()}
    out = []
    for st in spec.structure:
        term = st.term
        factors = [str(f) for f in term.factors]
        cols = [columns.index(c) for c in st.columns]
        if factors == ["1"]:
            out.append({"kind": "intercept", "cols": cols})
        elif len(factors) == 1 and factors[0] in fc:
            cs = fc[factors[0]]
            base = getattr(cs.contrasts, "base", None)
            levels = [str(x) for x in cs.levels]
            if base is None or type(base).__name__ == "Sentinel":  # formulaic's UNSET: the first level
                base = levels[0]
            base = str(base)
            out.append(
                {"kind": "factor", "expr": factors[0], "var": expr_variable(factors[0], obs), "levels": levels,
                 "base": base, "cols": cols, "colnames": list(st.columns)}
            )  # fmt: skip
        elif len(factors) == 1:
            out.append({"kind": "numeric", "cols": cols})
        else:
            out.append({"kind": "interaction", "cols": cols})
    return out


def deseq_coefficient_names(columns: list[str], terms: list[dict]) -> list[str]:
    """DESeq2's ``resultsNames``: ``Intercept``, ``factor_level_vs_reference`` for treatment-coded
    factors, ``factorlevel`` for a factor coded without reference (no intercept)."""
    names = [c.replace("/", "_") for c in columns]
    for t in terms:
        if t["kind"] == "intercept":
            names[t["cols"][0]] = "Intercept"
        elif t["kind"] == "factor" and t["var"] is not None:
            for j, cname in zip(t["cols"], t["colnames"], strict=True):
                lvl = cname[len(t["expr"]) :]
                if lvl.startswith("[T.") and lvl.endswith("]"):
                    names[j] = f"{t['var']}_{lvl[3:-1]}_vs_{t['base']}".replace("/", "_")
                elif lvl.startswith("[") and lvl.endswith("]"):
                    names[j] = f"{t['var']}{lvl[1:-1]}".replace("/", "_")
    if len(set(names)) != len(names):  # pragma: no cover - formulaic names are unique
        names = [c.replace("/", "_") for c in columns]
    return names


def deseq_design(obs: pd.DataFrame, design, what: str = "design") -> DESeqDesign:
    """Build and check a design for DESeq2: a formula on ``obs`` or a numeric matrix."""
    if design is None:
        raise TypeError(f"{what} is required: a formula such as '~ condition' or a numeric matrix (one row per sample)")
    X, columns = design_matrix(obs, design)
    label = f"{what} {design!r}" if isinstance(design, str) else what
    if isinstance(design, str):
        spec = design_spec(obs, design)
        for f, st in spec.factor_contrasts.items():
            if len(st.levels) < 2:
                raise ValueError(
                    f"{label}: the factor {str(f)!r} has a single level ({list(map(str, st.levels))}) among the samples; "
                    "a factor needs at least two levels to be estimated: remove it from the design"
                )
        terms = formula_terms(obs, spec, columns)
        variables = _formula_variables(_parse_formula(design))
        formula = design.strip()
    else:
        spec, formula, variables = None, None, []
        terms = [{"kind": "numeric", "cols": [j]} for j in range(X.shape[1])]
    check_full_rank(X, columns, what=label)
    names = deseq_coefficient_names(columns, terms) if formula is not None else list(columns)
    return DESeqDesign(X, columns, names, formula, spec, terms, variables)


def expanded_model_matrix(obs: pd.DataFrame, d: DESeqDesign) -> tuple[np.ndarray, list[str], dict[tuple, list[int]]]:
    """DESeq2's expanded model matrix of a formula design (every level of every factor gets a
    column, as ``lfcShrink(type = "normal")`` fits it): the matrix, its column names, and per
    formula term (the tuple of its factor names) the indices of its columns."""
    import formulaic

    data = obs.copy()
    for col in data.columns:
        if isinstance(data[col].dtype, pd.CategoricalDtype):
            data[col] = data[col].cat.remove_unused_categories()
    mm = formulaic.model_matrix(d.formula, data, ensure_full_rank=False, na_action="raise", context={"np": np})
    Xe = np.asarray(mm.to_numpy(dtype=np.float64))
    ecols = [str(c) for c in mm.columns]
    eterms = {tuple(str(f) for f in st.term.factors): [ecols.index(c) for c in st.columns] for st in mm.model_spec.structure}
    return Xe, ecols, eterms
