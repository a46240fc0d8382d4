"""Tools: differential expression, enrichment, machine learning."""

from ._limma import limma, voom
from ._ml import classify, cluster, predict

__all__ = ["limma", "voom", "classify", "cluster", "predict"]
