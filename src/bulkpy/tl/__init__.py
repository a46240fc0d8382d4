"""Tools: differential expression, enrichment, machine learning."""

from ._enrichment import gsea, ora, score
from ._limma import limma, voom
from ._ml import classify, cluster, predict

__all__ = ["gsea", "ora", "score", "limma", "voom", "classify", "cluster", "predict"]
