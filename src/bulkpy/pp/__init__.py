"""Preprocessing: QC, filtering, pseudobulk, gene annotation, normalisation."""

from ._annotate import annotate_genes
from ._filter import filter_by_expr
from ._qc import qc_metrics

__all__ = ["annotate_genes", "filter_by_expr", "qc_metrics"]
