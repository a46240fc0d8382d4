"""Tidy DataFrames out of an AnnData analysed with bulkpy (pure: nothing is written)."""

from ._de import de_df, de_stats
from ._enrichment import dispersions, enrichment, gsea_running_score
from ._expression import expression, rle, sample_distances
from ._ml import (
    classification_metrics,
    classifier,
    confusion_matrix,
    consensus_matrix,
    kaplan_meier,
    predictions,
    regression_metrics,
    roc_curve,
    survival_metrics,
)
from ._samples import pca, sample_qc

__all__ = [
    "classification_metrics", "classifier", "confusion_matrix", "consensus_matrix", "de_df", "de_stats",
    "dispersions", "enrichment", "expression", "gsea_running_score", "kaplan_meier", "pca", "predictions",
    "regression_metrics", "rle", "roc_curve", "sample_distances", "sample_qc", "survival_metrics",
]
