"""Over-representation analysis: one-sided hypergeometric test of selected genes in gene sets.

For a set with ``n`` genes in a universe of ``M`` genes of which ``N`` are selected, the number
``k`` of selected genes in the set is hypergeometric under independence; the p-value is
``P(X >= k) = hypergeom.sf(k - 1, M, n, N)`` (R's ``phyper(k - 1, n, M - n, N,
lower.tail = FALSE)``, as clusterProfiler's ``enricher`` and GOstats use). Vectorised over sets
through the sparse sets x genes membership matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats

from ..multitest import p_adjust_bh


def ora(member: sparse.csr_matrix, selected: np.ndarray) -> dict[str, np.ndarray]:
    """Test every set (rows of ``member``, columns = the universe's genes) for over-representation
    of the ``selected`` genes (boolean over the columns).

    Returns a dict of per-set arrays: ``size`` (set genes in the universe), ``overlap`` (selected
    set genes), ``expected`` (``size * N / M``), ``fold_enrichment`` (``(k / N) / (n / M)``),
    ``pvalue`` and ``padj`` (Benjamini-Hochberg over the sets), plus scalars ``n_selected`` and
    ``n_universe``.
    """
    member = sparse.csr_matrix(member)
    selected = np.asarray(selected, dtype=bool)
    if selected.shape != (member.shape[1],):
        raise ValueError(
            f"selected must have one entry per gene ({member.shape[1]}), got shape {selected.shape}"
        )
    ind = member.copy()
    ind.data = np.ones_like(ind.data)
    size = np.asarray(ind.sum(axis=1)).ravel()
    overlap = ind @ selected.astype(np.float64)
    m_universe = float(member.shape[1])
    n_sel = float(selected.sum())
    expected = size * n_sel / m_universe
    with np.errstate(divide="ignore", invalid="ignore"):
        fold = np.where(expected > 0, overlap / expected, np.nan)
    pvalue = stats.hypergeom.sf(overlap - 1, m_universe, size, n_sel)
    pvalue = np.clip(pvalue, 0.0, 1.0)
    return {
        "size": size.astype(np.int64),
        "overlap": np.rint(overlap).astype(np.int64),
        "expected": expected,
        "fold_enrichment": fold,
        "pvalue": pvalue,
        "padj": p_adjust_bh(pvalue),
        "n_selected": int(n_sel),
        "n_universe": int(m_universe),
    }
