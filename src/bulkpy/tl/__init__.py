"""Tools: differential expression, enrichment, machine learning."""

from ._ml import classify, cluster, predict

__all__ = ["classify", "cluster", "predict"]
