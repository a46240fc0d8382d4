"""Two-group tests per gene for large cohorts: Wilcoxon rank-sum and Welch's t test.

Arrays are samples × genes (like ``AnnData.X``); both tests are vectorised over genes.

:func:`wilcoxon` — the Wilcoxon rank-sum (Mann-Whitney) test with the normal approximation,
tie correction and continuity correction, as R's ``wilcox.test(x, y, exact = FALSE,
correct = TRUE)`` and ``scipy.stats.mannwhitneyu(x, y, method="asymptotic")``:
``U = R1 - n1 (n1 + 1) / 2`` from average ranks, ``sigma^2 = n1 n2 / 12 * ((n + 1) -
sum(t^3 - t) / (n (n - 1)))`` over the tie groups, ``z = (U - n1 n2 / 2 - sign * 0.5) / sigma``,
two-sided ``p = 2 * Phi(-|z|)`` (at most 1). Genes whose values are all tied have ``sigma = 0``
and get ``z = 0``, ``p = 1`` (R reports NaN there; scipy 1).

:func:`welch` — Welch's unequal-variance t test (``scipy.stats.ttest_ind(equal_var=False)``,
R's ``t.test``), two-sided, Welch–Satterthwaite degrees of freedom.

:func:`two_group_blocks` — either test on a matrix read block by block of genes (dask input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class TwoGroupResult:
    """Per-gene statistics of a two-group test.

    Attributes
    ----------
    statistic
        Signed statistic, positive when the test group is higher: the continuity-corrected
        ``z`` of the rank-sum test, or Welch's ``t``.
    pvalue
        Two-sided p-values.
    extra
        ``U`` (rank-sum statistic of the test group) or ``df`` (Welch df).
    """

    statistic: np.ndarray
    pvalue: np.ndarray
    extra: np.ndarray


def _tie_sums(values: np.ndarray) -> np.ndarray:
    """``sum(t^3 - t)`` over the groups of tied values of each column."""
    s = np.sort(values, axis=0)
    n, g = s.shape
    new = np.ones((n, g), dtype=bool)
    new[1:] = s[1:] != s[:-1]
    run = np.cumsum(new, axis=0) - 1  # run index within the column
    starts = np.concatenate([[0], np.cumsum(new.sum(axis=0))[:-1]])
    gid = (run + starts[None, :]).ravel(order="F")
    counts = np.bincount(gid).astype(np.float64)
    col_of_run = np.repeat(np.arange(g), new.sum(axis=0))
    return np.bincount(col_of_run, weights=counts**3 - counts, minlength=g)


def wilcoxon(x_test, x_ref) -> TwoGroupResult:
    """Two-sided Wilcoxon rank-sum test of every column of ``x_test`` (n1 × genes) against
    ``x_ref`` (n2 × genes), normal approximation with tie and continuity corrections."""
    a = np.asarray(x_test, dtype=np.float64)
    b = np.asarray(x_ref, dtype=np.float64)
    n1, n2 = a.shape[0], b.shape[0]
    n = n1 + n2
    both = np.concatenate([a, b], axis=0)
    ranks = stats.rankdata(both, axis=0)
    u = ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    ties = _tie_sums(both)
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    sigma = np.sqrt(np.maximum(var, 0.0))
    d = u - mu
    corr = 0.5 * np.sign(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, (d - corr) / sigma, 0.0)
    p = np.minimum(2.0 * stats.norm.sf(np.abs(z)), 1.0)
    return TwoGroupResult(z, p, u)


def welch(x_test, x_ref) -> TwoGroupResult:
    """Two-sided Welch t test of every column of ``x_test`` against ``x_ref``. Genes with no
    variance in either group get NaN (as scipy and R)."""
    a = np.asarray(x_test, dtype=np.float64)
    b = np.asarray(x_ref, dtype=np.float64)
    n1, n2 = a.shape[0], b.shape[0]
    m1, m2 = a.mean(axis=0), b.mean(axis=0)
    v1 = a.var(axis=0, ddof=1) / n1
    v2 = b.var(axis=0, ddof=1) / n2
    se2 = v1 + v2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (m1 - m2) / np.sqrt(se2)
        df = se2**2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    bad = ~(se2 > 0)
    t = np.where(bad, np.nan, t)
    df = np.where(bad, np.nan, df)
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return TwoGroupResult(t, p, df)


def _two_group_block(blk, in_group, in_ref, test):
    E = blk.read(0)
    a, b = E[in_group], E[in_ref]
    res = wilcoxon(a, b) if test == "wilcoxon" else welch(a, b)
    return res.statistic, res.pvalue, res.extra, a.mean(axis=0), b.mean(axis=0)


def two_group_blocks(E, in_group, in_ref, test: str):
    """:func:`wilcoxon` or :func:`welch` (``test``) of the samples ``in_group`` against ``in_ref``
    and the two group means, per gene, from a samples × genes matrix read block by block of genes
    (a dask array: one pass, each task returning per-gene vectors): ``(statistic, pvalue, extra,
    mean of group, mean of reference)``, the numbers of the whole-matrix functions."""
    from ._blocks import blocks_for, map_gene_blocks

    parts = map_gene_blocks(_two_group_block, [E], blocks_for(E, E.shape[0]), args=(in_group, in_ref, test))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(5))
