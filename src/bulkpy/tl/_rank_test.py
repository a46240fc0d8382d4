"""Two-group rank (Wilcoxon) and Welch t tests per gene for large cohorts (``bk.tl.rank_test``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_adata, doc_copy, doc_params
from .._slots import check_key, write_de
from .._stats import rank as _rank
from .._stats.multitest import p_adjust_bh
from .._utils import finish, start
from .._validate import (
    check_adata,
    check_choice,
    dask_summary,
    dense,
    get_matrix,
    is_dask,
    layer_name,
    looks_logged,
    obs_column,
)
from ._grouped import DOC_SPLIT, DOC_SPLIT_RETURNS, check_unsplit, run_grouped, split_arguments

_TESTS = ("wilcoxon", "t-test")


def _check_log_scale(value) -> bool | None:
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    raise TypeError(f"log_scale must be True, False or None (guess), got {value!r}")


def _is_log_scale(adata: AnnData, layer, E) -> tuple[bool, str]:
    """Whether ``E`` holds log values: from the parameters bulkpy stored with the layer, else a guess."""
    entry = adata.uns.get(layer) if layer is not None else None
    if isinstance(entry, Mapping) and isinstance(entry.get("params"), Mapping) and "log" in entry["params"]:
        return bool(entry["params"]["log"]), f"uns[{layer!r}]['params']['log']"
    if is_dask(E):
        negative = dask_summary(E)["negative"] > 0
    else:
        finite = E[np.isfinite(E)]
        negative = bool(finite.size and finite.min() < 0)
    if negative:
        return True, "guessed (negative values)"
    return bool(looks_logged(E)), "guessed"


def _expression(adata: AnnData, layer):
    """The expression matrix, checked: in memory a dense float64 copy, a dask matrix as it is
    (checked in one pass over its chunks)."""
    X = get_matrix(adata, layer)
    E = X if is_dask(X) else dense(X)
    where = layer_name(layer)
    if E.ndim != 2 or 0 in E.shape:
        raise ValueError(f"the expression matrix in {where} is empty (shape {E.shape})")
    bad = dask_summary(E)["nonfinite"] if is_dask(E) else int((~np.isfinite(E)).sum())
    if bad:
        raise ValueError(
            f"the expression matrix in {where} has {bad} missing or infinite values; "
            "rank tests need finite values (use a log transform with a prior count, or drop those genes)"
        )
    return E


def _looks_like_counts(E) -> bool:
    if is_dask(E):
        s = dask_summary(E)
        return s["negative"] == 0 and s["nonint"] == 0 and s["max"] > 100
    return bool(E.min() >= 0 and np.all(E == np.round(E)) and E.max() > 100)


def _run_test(E, in_group, in_ref, test):
    """``(statistic, pvalue, extra, mean of group, mean of reference)`` per gene: in memory on the
    whole matrix, on dask block by block of genes in one pass (tasks return per-gene vectors)."""
    if is_dask(E):
        return _rank.two_group_blocks(E, in_group, in_ref, test)
    a, b = E[in_group], E[in_ref]
    res = _rank.wilcoxon(a, b) if test == "wilcoxon" else _rank.welch(a, b)
    return res.statistic, res.pvalue, res.extra, a.mean(axis=0), b.mean(axis=0)


@doc_params(adata=doc_adata, copy=doc_copy, split=DOC_SPLIT, split_returns=DOC_SPLIT_RETURNS)
def rank_test(
    adata: AnnData,
    *,
    groupby: str,
    group: str,
    reference: str,
    test: str = "wilcoxon",
    layer: str | None = None,
    log_scale: bool | None = None,
    split_by: str | None = None,
    filter_groups: bool | dict = True,
    key_added: str = "rank_test",
    copy: bool = False,
) -> AnnData | None:
    """Two-group differential expression by the Wilcoxon rank-sum test (or Welch's t test), per gene.

    For large cohorts (dozens of samples per group or more), where the parametric count models
    (DESeq2, edgeR) can exceed their nominal false discovery rate while the rank-sum test on
    normalised expression controls it (Li et al., *Genome Biology* 23:79, 2022). Each gene's
    normalised values of the ``group`` samples are compared with those of the ``reference``
    samples: the Wilcoxon rank-sum test with the normal approximation and tie and continuity
    corrections (R's ``wilcox.test(exact = FALSE)``, ``scipy.stats.mannwhitneyu(method =
    "asymptotic")``), or Welch's t test (``scipy.stats.ttest_ind(equal_var = False)``).
    Benjamini–Hochberg adjusted p-values. Use normalised values (e.g. TMM-CPM from
    :func:`bulkpy.pp.normalize` with ``method="tmm"``), not raw counts: ranks of raw counts
    reflect library sizes. With few samples per group the rank test has little power (its
    smallest two-sided p-value with 3 vs 3 samples is 0.05); use a count model there.

    A dask-backed layer is tested block by block of genes, never gathered: on dask input two passes
    over the matrix (one ``dask.compute`` each, the first shared with other functions reading the
    same array: the finite-values check), and the results are computed within the call.

    Parameters
    ----------
    {adata}
    groupby
        Column of ``adata.obs`` holding the groups.
    group
        The level tested (numerator of the fold change).
    reference
        The level compared against, or ``"rest"`` for all other samples (unless a level is
        named ``"rest"``).
    test
        ``"wilcoxon"`` (rank-sum) or ``"t-test"`` (Welch).
    layer
        Layer of normalised expression; ``None`` uses ``adata.X``.
    log_scale
        Whether the values are log2 expression: then the log2 fold change is the difference of
        the group means; otherwise it is ``log2`` of the ratio of the group means (as Li et al.
        compute it; infinite when one mean is zero). ``None`` reads it from the parameters
        bulkpy stored with the layer (``uns[layer]["params"]["log"]``) or guesses it (negative
        values, or small mostly fractional values, mean log scale).
    {split}
        Here the filter's groups are those of ``groupby`` (edgeR's ``group``), on
        ``layers["counts"]``.
    key_added
        Key of the result: the table in ``varm[f"{{key_added}}_{{group}}_vs_{{reference}}"]``,
        parameters in ``uns[key_added]``.
    {copy}

    Returns
    -------
    ``None`` (``adata`` modified in place) or, with ``copy=True``, the modified copy, with

    - ``varm[f"{{key_added}}_{{group}}_vs_{{reference}}"]``: indexed like ``var_names``, with
      ``log2FoldChange``, ``stat`` (the continuity-corrected ``z`` of the rank-sum test, or
      Welch's ``t``, positive when ``group`` is higher), ``pvalue``, ``padj``
      (Benjamini–Hochberg), ``mean_group``, ``mean_reference`` and ``U`` (the Mann–Whitney
      statistic of ``group``) or ``df`` (Welch's degrees of freedom);
    - ``uns[key_added]["contrasts"]`` and ``uns[key_added]["params"]``: method, groupby, group,
      reference, the number of samples in each, layer, log scale and versions.

    {split_returns}

    Examples
    --------
    >>> import numpy as np, bulkpy as bk
    >>> adata = bk.datasets.pasilla()
    >>> bk.pp.normalize(adata, method="tmm")
    >>> bk.tl.rank_test(adata, groupby="condition", group="treated", reference="untreated", layer="tmm_cpm")
    >>> df = bk.get.de_df(adata, "rank_test")
    >>> list(df.columns)
    ['log2FoldChange', 'stat', 'pvalue', 'padj', 'mean_group', 'mean_reference', 'U']
    >>> int((df["padj"] < 0.1).sum())  # 3 vs 4 samples: far too few for a rank test
    0
    """
    if split_by is not None:
        return run_grouped(
            rank_test, adata, split_by=split_by, filter_groups=filter_groups, filter_layer="counts",
            kwargs=split_arguments(locals()), key_added=key_added, copy=copy, filter_group=groupby,
        )  # fmt: skip
    check_unsplit(filter_groups)
    check_adata(adata)
    check_key(key_added, "key_added")
    check_choice(test, _TESTS, "test")
    log_scale = _check_log_scale(log_scale)
    col = obs_column(adata, groupby, what="groupby")
    labels = col.astype(object).where(col.notna(), None).to_numpy()
    levels = sorted({str(v) for v in labels if v is not None})
    for what, lev in (("group", group), ("reference", reference)):
        if not isinstance(lev, str | int | np.integer):
            raise TypeError(f"{what} must be a level of obs column {groupby!r} (a string), got {lev!r}")
    group, reference = str(group), str(reference)
    if group not in levels:
        raise ValueError(f"group {group!r} is not a level of obs column {groupby!r}; levels are: {levels}")
    str_labels = np.array([None if v is None else str(v) for v in labels], dtype=object)
    in_group = str_labels == group
    if reference == "rest" and "rest" not in levels:
        in_ref = (str_labels != group) & np.array([v is not None for v in str_labels])
    else:
        if reference not in levels:
            raise ValueError(
                f"reference {reference!r} is not a level of obs column {groupby!r}; levels are: {levels} (or 'rest')"
            )
        if reference == group:
            raise ValueError(f"group and reference are both {group!r}; give two different levels")
        in_ref = str_labels == reference
    n1, n2 = int(in_group.sum()), int(in_ref.sum())
    if n1 < 2 or n2 < 2:
        small = [f"{name!r} has {k} sample{'s' if k != 1 else ''}" for name, k in ((group, n1), (reference, n2)) if k < 2]
        raise ValueError(
            f"each group needs at least 2 samples for a two-group test: {'; '.join(small)} (obs column {groupby!r})"
        )
    check_key(f"{group}_vs_{reference}", "contrast name")
    E = _expression(adata, layer)
    where = layer_name(layer)
    if log_scale is None:
        log_scale, log_source = _is_log_scale(adata, layer, E)
    else:
        log_source = "given"
    if not log_scale and _looks_like_counts(E):
        warnings.warn(
            f"the values in {where} look like raw counts; ranks of raw counts reflect library sizes. Normalise "
            "first (e.g. bk.pp.normalize(adata, method='tmm')) and pass that layer",
            UserWarning,
            stacklevel=2,
        )
    stat, pvalue, extra, m1, m2 = _run_test(E, in_group, in_ref, test)
    if log_scale:
        lfc = m1 - m2
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            lfc = np.log2(m1 / m2)
    name = f"{group}_vs_{reference}"
    table = pd.DataFrame(
        {
            "log2FoldChange": lfc,
            "stat": stat,
            "pvalue": pvalue,
            "padj": p_adjust_bh(pvalue),
            "mean_group": m1,
            "mean_reference": m2,
            ("U" if test == "wilcoxon" else "df"): extra,
        },
        index=adata.var_names,
    )
    adata = start(adata, copy)
    params = {
        "method": "wilcoxon rank-sum" if test == "wilcoxon" else "Welch t-test",
        "test": test,
        "groupby": groupby,
        "group": group,
        "reference": reference,
        "n_group": n1,
        "n_reference": n2,
        "layer": layer,
        "log_scale": bool(log_scale),
        "log_scale_source": log_source,
        "correction": "tie and continuity corrected normal approximation" if test == "wilcoxon" else "none",
        "n_genes": int(E.shape[1]),
    }
    write_de(adata, key_added, {name: table}, params)
    return finish(adata, copy)


__all__ = ["rank_test"]
