"""Tools: differential expression, enrichment, machine learning."""

from ._deseq import deseq
from ._edger import edger
from ._enrichment import gsea, ora, score
from ._limma import limma, voom
from ._ml import classify, cluster, predict
from ._rank_test import rank_test

__all__ = [
    "classify", "cluster", "deseq", "edger", "gsea", "limma", "ora", "predict", "rank_test", "score",
    "voom",
]
