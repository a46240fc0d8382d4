"""Designs and contrasts for the linear-model DE methods (one parser for all of them).

One parser reads the contrast argument of every DE method (``bk.tl.limma``, ``bk.tl.voom``,
``bk.tl.edger``, ``bk.tl.deseq``): :func:`contrast_items` splits it into (given name, spec) pairs and
:func:`collect_contrasts` names them (numeric vectors ``contrast``/``contrast1``..., dict keys,
duplicates refused); each method turns one spec into its contrast vector. The linear-model
methods use :func:`parse_contrasts`; DESeq2 adds its coefficient names and all-zero rules.

A contrast can be given as

- ``[factor, test_level, reference_level]``: the difference between two levels of an obs column
  used in a formula design (as in DESeq2), named ``"{test}_vs_{reference}"``;
- a coefficient (column) name of the design, named by itself;
- a numeric vector with one weight per design column, named ``"contrast"`` (``"contrast1"``,
  ``"contrast2"``, ... in a list);
- a list of these, or a dict ``{name: any of the above}`` to choose the names.

:func:`parse_design` builds and checks the design, :func:`parse_contrasts` turns the contrast
argument into names and a coefficients × contrasts matrix. The behaviour is that of
``bk.tl.limma``'s parser (same forms, same names, same errors).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import check_full_rank, design_matrix, design_spec
from .._slots import check_key

DOC_DESIGN = """\
design
    The model: a formula on ``adata.obs`` such as ``"~ batch + condition"`` (formulaic, R's
    ``model.matrix`` conventions; the reference level of a factor is its first category), or a
    numeric matrix with one row per sample (ndarray, or DataFrame indexed by ``obs_names``). It
    must have full column rank."""

DOC_CONTRAST = """\
contrast
    What to test; one of, or a list of (the model is fitted once and every contrast tested):

    - ``[factor, test_level, reference_level]``: the difference between two levels of an obs
      column used in a formula design (as in DESeq2), named ``"{test}_vs_{reference}"``;
    - a coefficient (column) name of the design, e.g. ``"condition[T.treated]"``, named by itself;
    - a numeric vector with one weight per design column, named ``"contrast"`` (``"contrast1"``,
      ``"contrast2"``, ... in a list);
    - a dict ``{name: any of the above}`` to choose the names."""


def parse_design(adata: AnnData, design, *, what_needs_df: str = "the variance") -> tuple[np.ndarray, list[str]]:
    """The design matrix and its column names; raises unless it has full rank and leaves
    residual degrees of freedom."""
    if design is None:
        raise TypeError("design is required: a formula such as '~ condition' or a numeric matrix (one row per sample)")
    X, cols = design_matrix(adata.obs, design)
    what = f"design {design!r}" if isinstance(design, str) else "design"
    check_full_rank(X, cols, what=what)
    if X.shape[0] <= X.shape[1]:
        raise ValueError(
            f"the design has {X.shape[1]} columns for {X.shape[0]} samples, which leaves no residual degrees of "
            f"freedom to estimate {what_needs_df}; use fewer terms or more samples"
        )
    return X, cols


def levels_of(col: pd.Series) -> list:
    """The levels of an obs column present in the data (categories in order, else sorted)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        used = set(col.dropna().unique())
        return [c for c in col.cat.categories if c in used]
    return sorted(col.dropna().unique().tolist(), key=str)


def _factor_contrast(adata: AnnData, design, cols: list[str], spec) -> tuple[str, np.ndarray]:
    factor, test, ref = (spec[0], spec[1], spec[2])
    if not isinstance(design, str):
        raise ValueError(
            f"contrast {list(spec)!r} names levels of an obs column, which needs a formula design; with a "
            f"matrix design pass a coefficient name (one of {cols}) or a numeric vector"
        )
    obs = adata.obs
    levels = levels_of(obs[factor])
    by_name = {str(v): v for v in levels}
    missing = [str(x) for x in (test, ref) if str(x) not in by_name]
    if missing:
        raise ValueError(
            f"contrast {list(spec)!r}: {', '.join(repr(m) for m in missing)} "
            f"{'is not a level' if len(missing) == 1 else 'are not levels'} of obs column {factor!r}; "
            f"levels are: {list(by_name)}"
        )
    if str(test) == str(ref):
        raise ValueError(f"contrast {list(spec)!r} compares a level with itself; give two different levels")
    data = obs.copy()
    for c in data.columns:
        if isinstance(data[c].dtype, pd.CategoricalDtype):
            data[c] = data[c].cat.remove_unused_categories()
    spec_ = design_spec(obs, design)

    def _rows(value):
        d = data.copy()
        if isinstance(data[factor].dtype, pd.CategoricalDtype):
            d[factor] = pd.Categorical([value] * len(d), categories=data[factor].cat.categories)
        else:
            d[factor] = pd.Series([value] * len(d), index=d.index, dtype=data[factor].dtype)
        return np.asarray(spec_.get_model_matrix(d).to_numpy(dtype=np.float64))

    D = _rows(by_name[str(test)]) - _rows(by_name[str(ref)])
    if D.shape[1] != len(cols):  # pragma: no cover - design_matrix and design_spec agree
        raise RuntimeError("internal error: the design columns could not be reproduced for the contrast")
    if not np.any(D != 0):
        raise ValueError(f"contrast {list(spec)!r}: obs column {factor!r} does not appear in the design {design!r}")
    if not np.allclose(D, D[0][None, :], rtol=0, atol=1e-12):
        raise ValueError(
            f"contrast {list(spec)!r}: in design {design!r} the effect of {factor!r} depends on other terms "
            f"(an interaction), so one difference between its levels is not defined; pass a coefficient name "
            f"(one of {cols}) or a numeric vector over those columns"
        )
    vec = D[0].copy()
    vec[np.abs(vec) < 1e-12] = 0.0
    return f"{test}_vs_{ref}", vec


def _is_factor_spec(adata: AnnData, spec, cols: list[str]) -> bool:
    return (
        isinstance(spec, list | tuple)
        and len(spec) == 3
        and all(isinstance(s, str) for s in spec)
        and spec[0] in adata.obs.columns
        and not all(s in cols for s in spec)
    )


def is_numeric_vector(spec) -> bool:
    """Whether a contrast spec is a vector of numbers (not a name or a factor triple)."""
    if isinstance(spec, np.ndarray):
        return spec.ndim == 1 and spec.dtype.kind in "biuf"
    if isinstance(spec, list | tuple | pd.Series) and len(spec) > 0:
        return all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in spec)
    return False


def _one_contrast(adata: AnnData, design, cols: list[str], spec, default_name: str) -> tuple[str, np.ndarray]:
    p = len(cols)
    if isinstance(spec, str):
        if spec not in cols:
            raise KeyError(f"contrast {spec!r} is not a coefficient of the design; coefficients are: {cols}")
        vec = np.zeros(p)
        vec[cols.index(spec)] = 1.0
        return spec, vec
    if _is_factor_spec(adata, spec, cols):
        return _factor_contrast(adata, design, cols, spec)
    if is_numeric_vector(spec):
        return default_name, numeric_contrast(spec, cols)
    if isinstance(spec, list | tuple) and len(spec) == 3 and all(isinstance(s, str) for s in spec):
        bad = [s for s in spec if s not in cols]
        raise KeyError(
            f"contrast {list(spec)!r} is neither [obs column, test level, reference level] ({spec[0]!r} is not a "
            f"column of adata.obs: {list(adata.obs.columns)}) nor coefficient names (not coefficients: {bad}; "
            f"coefficients are: {cols})"
        )
    raise TypeError(
        f"could not read contrast {spec!r}: give [factor, test_level, reference_level], a coefficient name, "
        "a numeric vector, a list of these, or a dict {name: contrast}"
    )


def numeric_contrast(spec, names: list[str]) -> np.ndarray:
    """A numeric contrast checked against the design's coefficient ``names``."""
    vec = np.asarray(spec, dtype=np.float64)
    if vec.shape != (len(names),):
        raise ValueError(f"a numeric contrast needs one weight per design column ({len(names)}: {names}), got {vec.size}")
    if not np.all(np.isfinite(vec)):
        raise ValueError("a numeric contrast must have finite weights")
    if not np.any(vec != 0):
        raise ValueError("a numeric contrast of all zeros tests nothing")
    return vec


def _looks_like_triple(spec, names) -> bool:
    """Three strings that are not all coefficient names: meant as [factor, test, reference]."""
    return (
        isinstance(spec, list | tuple)
        and len(spec) == 3
        and all(isinstance(s, str) for s in spec)
        and not all(s in names for s in spec)
    )


def contrast_items(contrast, names) -> list[tuple[str | None, object]]:
    """Split the contrast argument into (name given by a dict key or None, spec) pairs: a dict, a
    single spec (a name, a numeric vector, three strings that are not all coefficient ``names``)
    or a list of specs."""
    if isinstance(contrast, Mapping):
        if not contrast:
            raise ValueError("contrast is an empty dict")
        return [(str(k), v) for k, v in contrast.items()]
    if isinstance(contrast, str) or is_numeric_vector(contrast) or _looks_like_triple(contrast, names):
        # (a malformed [factor, test, reference] is one spec too: its parser says what is wrong)
        return [(None, contrast)]
    if isinstance(contrast, list | tuple):
        if len(contrast) == 0:
            raise ValueError("contrast is an empty list")
        return [(None, c) for c in contrast]
    raise TypeError(
        f"could not read contrast {contrast!r}: give [factor, test_level, reference_level], a coefficient name, "
        "a numeric vector, a list of these, or a dict {name: contrast}"
    )


def collect_contrasts(items, one, *, reserved=()) -> list[tuple[str, object]]:
    """``(name, one(spec, default_name)[1])`` per item: ``one`` returns (its own name, payload);
    numeric vectors default to ``contrast`` (``contrast1``, ``contrast2``, ... when there are
    several), a dict key overrides the name, and names must be valid, unique and not ``reserved``."""
    n_numeric = sum(1 for _, s in items if is_numeric_vector(s))
    k_numeric = 0
    out: list[tuple[str, object]] = []
    for given, spec in items:
        default = "contrast"
        if is_numeric_vector(spec) and n_numeric > 1:
            k_numeric += 1
            default = f"contrast{k_numeric}"
        name, payload = one(spec, default)
        name = given if given is not None else name
        check_key(name, "contrast name")
        if name in reserved:
            raise ValueError(f"contrast name {name!r} is reserved; name the contrasts with a dict {{name: contrast}}")
        if any(o == name for o, _ in out):
            raise ValueError(f"contrast name {name!r} is used twice; name the contrasts with a dict {{name: contrast}}")
        out.append((name, payload))
    return out


def parse_contrasts(adata: AnnData, design, cols: list[str], contrast) -> tuple[list[str], np.ndarray, dict]:
    """Names, the coefficients × contrasts matrix and an h5ad-safe record of the specs."""
    if contrast is None:
        raise TypeError(
            f"contrast is required: e.g. ['condition', 'treated', 'untreated'] or a coefficient name (one of {cols})"
        )
    items = contrast_items(contrast, cols)
    pairs = collect_contrasts(items, lambda spec, default: _one_contrast(adata, design, cols, spec, default))
    names = [n for n, _ in pairs]
    specs = {
        n: spec if isinstance(spec, str) else [str(s) for s in np.atleast_1d(np.asarray(spec, dtype=object))]
        for n, (_, spec) in zip(names, items, strict=True)
    }
    return names, np.column_stack([v for _, v in pairs]), specs


__all__ = [
    "DOC_CONTRAST",
    "DOC_DESIGN",
    "collect_contrasts",
    "contrast_items",
    "is_numeric_vector",
    "levels_of",
    "numeric_contrast",
    "parse_contrasts",
    "parse_design",
]
