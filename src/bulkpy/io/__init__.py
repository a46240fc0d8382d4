"""Reading the formats people have: counts tables, transcript quantifications, GTF annotations, gene set files; writing
gene sets and a study report."""

from ._counts import read_counts
from ._gmt import read_gmt, write_gmt
from ._gtf import read_gtf
from ._quant import read_quant
from ._report import write_report

__all__ = [
    "read_counts", "read_gmt", "read_gtf", "read_quant", "write_gmt", "write_report",
]
