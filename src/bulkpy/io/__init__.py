"""Reading the formats people have: counts tables, transcript quantifications, gene set files."""

from ._counts import read_counts

__all__ = ["read_counts"]
