"""Real example data bundled with bulkpy (no network needed; only ``msigdb`` downloads, on request)."""

from ._counts import airway, pasilla
from ._genesets import go, msigdb, progeny, reactome

__all__ = ["airway", "pasilla", "go", "msigdb", "progeny", "reactome"]
