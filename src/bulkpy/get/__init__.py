"""Tidy DataFrames out of an AnnData analysed with bulkpy (pure: nothing is written)."""

from ._de import de_df, de_stats
from ._samples import pca, sample_qc

__all__ = ["de_df", "de_stats", "pca", "sample_qc"]
