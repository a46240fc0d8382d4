"""Preprocessing: QC, filtering, pseudobulk, gene annotation, normalisation."""

__all__: list[str] = []
