"""scikit-learn building blocks that wrap bulkpy's engines so that every data-dependent step of
a classifier (gene filtering, normalisation, feature selection) is learnt on training samples only.

:mod:`.transformers` holds the transformers, :mod:`.pipeline` assembles them with a classifier.
"""

from .pipeline import FEATURES, MODELS, NORMALIZATIONS, default_grid, gene_importances, make_pipeline
from .transformers import VST, AsIs, FilterByExpr, LogCPM, LogNorm, SelectFeatures

__all__ = [
    "AsIs",
    "FEATURES",
    "FilterByExpr",
    "LogCPM",
    "LogNorm",
    "MODELS",
    "NORMALIZATIONS",
    "SelectFeatures",
    "VST",
    "default_grid",
    "gene_importances",
    "make_pipeline",
]
