"""bulkpy: bulk and pseudobulk expression analysis on AnnData.

``import bulkpy as bk``; then ``bk.io`` reads data, ``bk.pp`` preprocesses and normalises,
``bk.tl`` tests and scores, ``bk.pl`` plots, ``bk.get`` returns tidy tables and
``bk.datasets`` gives real example data.
"""

from . import datasets, get, io, pl, pp, tl
from ._version import __version__

__all__ = ["__version__", "datasets", "get", "io", "pl", "pp", "tl"]
