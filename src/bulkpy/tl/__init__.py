"""Tools: differential expression, enrichment, machine learning."""

from ._camera import camera, fry
from ._deseq import deseq
from ._edger import edger
from ._enrichment import gsea, ora, score
from ._limma import limma, voom
from ._ml import classify, cluster, predict, regress, survival
from ._rank_test import rank_test

__all__ = [
    "camera", "classify", "cluster", "deseq", "edger", "fry", "gsea", "limma", "ora", "predict", "rank_test", "regress",
    "score", "survival", "voom",
]
