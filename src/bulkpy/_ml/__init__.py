"""scikit-learn building blocks that wrap bulkpy's engines so that every data-dependent step of
a classifier, regressor or survival model (gene filtering, normalisation, feature selection) is
learnt on training samples only.

:mod:`.transformers` holds the transformers, :mod:`.pipeline` assembles them with a model,
:mod:`.survival` wraps the penalised Cox model, :mod:`.estimators` checks and describes estimator
objects, :mod:`.training` runs the nested cross-validation.
"""

from .pipeline import (
    FEATURES,
    MODELS,
    NORMALIZATIONS,
    REGRESSION_MODELS,
    SURVIVAL_MODELS,
    TASK_MODELS,
    default_grid,
    gene_importances,
    make_pipeline,
)
from .transformers import VST, AsIs, FilterByExpr, LogCPM, LogNorm, SelectFeatures

__all__ = [
    "AsIs",
    "FEATURES",
    "FilterByExpr",
    "LogCPM",
    "LogNorm",
    "MODELS",
    "NORMALIZATIONS",
    "REGRESSION_MODELS",
    "SURVIVAL_MODELS",
    "TASK_MODELS",
    "SelectFeatures",
    "VST",
    "default_grid",
    "gene_importances",
    "make_pipeline",
]
