"""Real example data bundled with bulkpy (no network needed; only ``msigdb`` downloads, on request)."""

from ._counts import airway, geuvadis85, pasilla
from ._genesets import go, msigdb, progeny, reactome

__all__ = [
    "airway", "geuvadis85", "go", "msigdb", "pasilla", "progeny", "reactome",
]
