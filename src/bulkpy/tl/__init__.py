"""Tools: differential expression, enrichment, machine learning."""

__all__: list[str] = []
