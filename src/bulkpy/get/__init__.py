"""Tidy DataFrames out of an AnnData analysed with bulkpy (pure: nothing is written)."""

from ._samples import pca, sample_qc

__all__ = ["pca", "sample_qc"]
