"""Real example data bundled with bulkpy (no network needed)."""

from ._counts import airway, pasilla

__all__ = ["airway", "pasilla"]
