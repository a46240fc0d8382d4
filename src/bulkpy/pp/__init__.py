"""Preprocessing: QC, filtering, pseudobulk, gene annotation, normalisation."""

from ._annotate import annotate_genes

__all__ = ["annotate_genes"]
