"""Plots. Each takes ``ax=`` (or returns a multi-panel Figure), returns what it drew, never shows or saves."""

from ._de import ma, volcano
from ._diagnostics import pvalue_hist, rle, sample_distances
from ._enrichment import dispersion, enrichment, gsea, ora_bar
from ._expression import expression, heatmap
from ._groups import de_counts, enrichment_groups, fold_changes
from ._ml import confusion_matrix, consensus_matrix, kaplan_meier, predicted_vs_observed, roc
from ._samples import pca, qc

__all__ = [
    "confusion_matrix", "consensus_matrix", "de_counts", "dispersion", "enrichment", "enrichment_groups", "expression",
    "fold_changes", "gsea", "heatmap", "kaplan_meier", "ma", "ora_bar", "pca", "predicted_vs_observed", "pvalue_hist",
    "qc", "rle", "roc", "sample_distances", "volcano",
]
