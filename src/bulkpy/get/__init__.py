"""Tidy DataFrames out of an AnnData analysed with bulkpy (pure: nothing is written)."""

from ._de import de_df, de_stats
from ._enrichment import dispersions, enrichment, gsea_running_score
from ._expression import expression, rle, sample_distances
from ._ml import classification_metrics, classifier, confusion_matrix, consensus_matrix, roc_curve
from ._samples import pca, sample_qc

__all__ = ["de_df", "de_stats", "dispersions", "enrichment", "gsea_running_score", "expression", "rle", "sample_distances", "classification_metrics", "classifier", "confusion_matrix", "consensus_matrix", "roc_curve", "pca", "sample_qc"]
