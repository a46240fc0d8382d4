"""Preprocessing: QC, filtering, pseudobulk, gene annotation, normalisation."""

from ._annotate import annotate_genes
from ._combat import combat, combat_seq
from ._filter import filter_by_expr
from ._normalize import norm_factors, normalize, quantile_normalize, size_factors, zscore
from ._pseudobulk import pseudobulk
from ._qc import qc_metrics
from ._vst import vst

__all__ = [
    "annotate_genes", "combat", "combat_seq", "filter_by_expr", "norm_factors", "normalize",
    "pseudobulk", "qc_metrics", "quantile_normalize", "size_factors", "vst", "zscore",
]
