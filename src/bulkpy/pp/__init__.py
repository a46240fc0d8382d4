"""Preprocessing: QC, filtering, pseudobulk, gene annotation, normalisation."""

from ._annotate import annotate_genes
from ._combat import combat, combat_seq
from ._filter import filter_by_expr
from ._limma import array_weights, remove_batch_effect
from ._normalize import norm_factors, normalize, quantile_normalize, size_factors, zscore
from ._pseudobulk import pseudobulk
from ._qc import qc_metrics
from ._rlog import rlog
from ._vst import vst

__all__ = [
    "annotate_genes", "array_weights", "combat", "combat_seq", "filter_by_expr", "norm_factors", "normalize",
    "pseudobulk", "qc_metrics", "quantile_normalize", "remove_batch_effect", "rlog", "size_factors", "vst", "zscore",
]
