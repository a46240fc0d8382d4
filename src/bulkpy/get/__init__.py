"""Tidy DataFrames out of an AnnData analysed with bulkpy."""

__all__: list[str] = []
