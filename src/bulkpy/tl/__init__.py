"""Tools: differential expression, enrichment, machine learning."""

__all__ = []
