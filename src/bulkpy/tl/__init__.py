"""Tools: differential expression, enrichment, machine learning."""

from ._edger import edger
from ._enrichment import gsea, ora, score
from ._limma import limma, voom
from ._ml import classify, cluster, predict
from ._rank_test import rank_test

__all__ = ["edger", "gsea", "ora", "score", "limma", "voom", "classify", "cluster", "predict", "rank_test"]
