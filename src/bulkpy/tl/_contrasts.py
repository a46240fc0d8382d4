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
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._design import DESeqDesign, check_full_rank, design_matrix, design_spec
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


# --------------------------------------------------------------------------------------------
# DESeq2's contrasts (results(contrast=, name=), its all-zero rules, lfcShrink's limits)
# --------------------------------------------------------------------------------------------


@dataclass
class DESeqContrast:
    """One DESeq2 contrast: its name, vector over the design columns and what decides its all-zero rule."""

    name: str
    vector: np.ndarray  # over the design columns
    kind: str  # "factor", "coef", "numeric"
    samples: np.ndarray | None  # samples deciding DESeq2's all-zero rule
    spec: object
    factor: tuple | None = None  # (term index, test level, reference level) for factor contrasts
    coef: int | None = None


def _deseq_factor_contrast(obs: pd.DataFrame, d: DESeqDesign, spec) -> DESeqContrast:
    factor, test, ref = (str(spec[0]), str(spec[1]), str(spec[2]))
    if d.formula is None:
        raise ValueError(
            f"contrast {list(spec)!r} names levels of an obs column, which needs a formula design; with a matrix "
            f"design pass a coefficient name (one of {d.names}) or a numeric vector"
        )
    col = obs[factor]
    levels = [str(v) for v in levels_of(col)]
    missing = [x for x in (test, ref) if x not in levels]
    if missing:
        raise ValueError(
            f"contrast {list(spec)!r}: {', '.join(repr(m) for m in missing)} "
            f"{'is not a level' if len(missing) == 1 else 'are not levels'} of obs column {factor!r}; levels are: {levels}"
        )
    if test == ref:
        raise ValueError(f"contrast {list(spec)!r} compares a level with itself; give two different levels")
    hits = [i for i, t in enumerate(d.terms) if t["kind"] == "factor" and t["var"] == factor]
    inter = [t for t in d.terms if t["kind"] == "interaction"]
    if not hits:
        raise ValueError(f"contrast {list(spec)!r}: obs column {factor!r} is not a factor of the design {d.formula!r}")
    if inter:
        raise ValueError(
            f"contrast {list(spec)!r}: the design {d.formula!r} has interactions, so the effect of {factor!r} depends on "
            f"other terms; pass a coefficient name (one of {d.names}) or a numeric vector over those coefficients"
        )
    ti = hits[0]
    t = d.terms[ti]
    vec = np.zeros(d.X.shape[1])
    for lvl, sign in ((test, 1.0), (ref, -1.0)):
        cname = f"{t['expr']}[T.{lvl}]"
        full = f"{t['expr']}[{lvl}]"
        for j, c in zip(t["cols"], t["colnames"], strict=True):
            if c in (cname, full):
                vec[j] += sign
    if not np.any(vec):  # pragma: no cover - two different levels always differ
        raise ValueError(f"contrast {list(spec)!r} gives a zero contrast vector")
    samples = np.asarray(col.astype(str).isin([test, ref]).to_numpy(), dtype=bool)
    return DESeqContrast(f"{factor}_{test}_vs_{ref}".replace("/", "_"), vec, "factor", samples, [factor, test, ref], (ti, test, ref))


def _is_deseq_factor_spec(obs: pd.DataFrame, spec) -> bool:
    return (
        isinstance(spec, list | tuple)
        and len(spec) == 3
        and all(isinstance(s, str) for s in spec)
        and spec[0] in obs.columns
    )


def _one_deseq_contrast(obs: pd.DataFrame, d: DESeqDesign, spec, default_name: str) -> DESeqContrast:
    p = d.X.shape[1]
    if isinstance(spec, str):
        if spec in d.names:
            j = d.names.index(spec)
        elif spec in d.columns:
            j = d.columns.index(spec)
        else:
            raise KeyError(f"contrast {spec!r} is not a coefficient of the design; coefficients are: {d.names}")
        vec = np.zeros(p)
        vec[j] = 1.0
        return DESeqContrast(d.names[j], vec, "coef", None, spec, coef=j)
    if _is_deseq_factor_spec(obs, spec):
        return _deseq_factor_contrast(obs, d, spec)
    if is_numeric_vector(spec):
        vec = numeric_contrast(spec, d.names)
        samples = None
        if np.any(vec > 0) and np.any(vec < 0):  # DESeq2's contrastAllZeroNumeric
            samples = (d.X @ (vec != 0).astype(np.float64)) != 0
        return DESeqContrast(default_name, vec, "numeric", samples, [float(v) for v in vec])
    if isinstance(spec, list | tuple) and len(spec) == 3 and all(isinstance(s, str) for s in spec):
        raise KeyError(
            f"contrast {list(spec)!r}: {spec[0]!r} is not a column of adata.obs (columns: {list(obs.columns)}); "
            "give [obs column, test level, reference level]"
        )
    raise TypeError(
        f"could not read contrast {spec!r}: give [factor, test_level, reference_level], a coefficient name, a numeric "
        "vector over the coefficients, a list of these, or a dict {name: contrast}"
    )


def deseq_default_contrast(obs: pd.DataFrame, d: DESeqDesign, test: str):
    """DESeq2's ``results(dds)``: the last coefficient, or, for a Wald test of a design without
    intercept and without interactions whose last variable is a factor, last level vs first."""
    has_intercept = any(t["kind"] == "intercept" for t in d.terms) or d.formula is None
    if test == "Wald" and d.formula is not None and not has_intercept and not any(t["kind"] == "interaction" for t in d.terms):
        last = d.terms[-1]
        if last["kind"] == "factor" and last["var"] is not None:
            lv = levels_of(obs[last["var"]])
            return [last["var"], str(lv[-1]), str(lv[0])]
    return d.names[-1]


def deseq_contrasts(obs: pd.DataFrame, d: DESeqDesign, contrast, test: str, *, reserved=()) -> list[DESeqContrast]:
    """DESeq2's contrasts: the contrast argument read with the shared parser, each spec turned into
    a :class:`DESeqContrast` (``results(contrast=)`` / ``results(name=)`` semantics)."""
    if contrast is None:
        contrast = deseq_default_contrast(obs, d, test)
    items = contrast_items(contrast, d.names + d.columns)

    def one(spec, default):
        c = _one_deseq_contrast(obs, d, spec, default)
        return c.name, c

    out = []
    for name, c in collect_contrasts(items, one, reserved=reserved):
        c.name = name
        out.append(c)
    return out




def check_deseq_shrinkable(d: DESeqDesign, contrasts: list[DESeqContrast]) -> None:
    for c in contrasts:
        if c.kind == "numeric":
            raise ValueError(
                f"shrink='normal' supports contrasts given as [factor, test, reference] or as a coefficient name (as "
                f"DESeq2's lfcShrink with contrast= or coef=), not the numeric contrast {c.name!r}"
            )
    if any(c.kind == "factor" for c in contrasts):
        if any(t["kind"] == "interaction" for t in d.terms):
            raise ValueError("shrink='normal' is not implemented for designs with interactions (as in DESeq2)")
        if not any(t["kind"] == "intercept" for t in d.terms):
            raise ValueError(
                "shrink='normal' with a [factor, test, reference] contrast needs a design with an intercept (as DESeq2's "
                "beta prior); use a coefficient name, or a design with an intercept"
            )
        if any(t["kind"] == "factor" and t["var"] is None for t in d.terms):
            raise ValueError("shrink='normal' needs every factor of the design to be an obs column")
