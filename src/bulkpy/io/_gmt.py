"""GMT gene set files (Gene Matrix Transposed, the format of MSigDB, Reactome, Enrichr)."""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._genesets import (
    DEFAULT_DESCRIPTION,
    GeneSets,
    _as_path,
    _check_gene_list,
    _split_targets,
    as_gene_sets,
    parse_gmt,
)
from .._genesets import (
    open_text as _open_text,  # noqa: F401 (kept for readers of compressed text in io)
)


def read_gmt(path) -> GeneSets:
    """Read a GMT gene set file.

    Each line of a GMT file is one gene set: its name, a description (MSigDB puts a URL there,
    Reactome the stable id, some files ``NA`` or nothing), then its genes, all separated by tabs.
    Names may contain spaces (Reactome's do); only tabs separate fields.

    Parameters
    ----------
    path
        The GMT file; gzipped files (recognised by their content, whatever the name) are read too.

    Returns
    -------
    The gene sets as an ordered ``dict`` of set name -> list of genes, in file order. It is a
    ``GeneSets``, a ``dict`` subclass that also carries ``.descriptions`` (set name ->
    description, the file's second column) and ``.to_frame()``, which gives decoupler's long
    format (``source``, ``target``, ``weight``) for ``decoupler.mt.*``. Genes repeated within a
    line are kept once; blank lines are skipped; a line with a name and description but no genes
    gives an empty set.

    Examples
    --------
    >>> import bulkpy as bk
    >>> from bulkpy.datasets._counts import data_path
    >>> sets = bk.io.read_gmt(data_path("ReactomePathways_2024-09-18.gmt.gz"))
    >>> len(sets), sets["5-Phosphoribose 1-diphosphate biosynthesis"]
    (2694, ['PRPS1', 'PRPS1L1', 'PRPS2'])
    >>> sets.descriptions["5-Phosphoribose 1-diphosphate biosynthesis"]
    'R-HSA-73843'
    """
    return parse_gmt(path)


def _check_field(value: str, what: str) -> str:
    if any(c in value for c in "\t\n\r"):
        raise ValueError(f"{what} {value!r} contains a tab or newline, which GMT can not store")
    return value


def write_gmt(gene_sets, path, *, descriptions=None) -> None:
    """Write gene sets to a GMT file.

    Parameters
    ----------
    gene_sets
        A ``dict`` of set name -> list of genes (e.g. from :func:`bulkpy.io.read_gmt`), or
        decoupler's long ``DataFrame`` with ``source`` and ``target`` columns. GMT has no weights:
        a ``weight`` column that is not all 1 is dropped with a warning.
    path
        File to write; a name ending in ``.gz`` writes it gzipped. An existing file is replaced.
    descriptions
        The second column: a ``dict`` set name -> description, or one string for every set.
        ``None`` uses ``gene_sets.descriptions`` when present (so read and write round-trip) and
        ``"NA"`` for sets without one. Empty descriptions are written as ``"NA"`` as well, because
        readers that split lines on any whitespace would take the first gene for the description.

    Returns
    -------
    ``None``; the file is written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import bulkpy as bk
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "sets.gmt"
    >>> bk.io.write_gmt({"up": ["A", "B"], "down": ["C"]}, out, descriptions="my signature")
    >>> out.read_text().splitlines()[0]
    'up\\tmy signature\\tA\\tB'
    >>> dict(bk.io.read_gmt(out))
    {'up': ['A', 'B'], 'down': ['C']}
    """
    p = _as_path(path, "path")
    if p.is_dir():
        raise IsADirectoryError(f"path {str(p)!r} is a directory; pass a file name such as 'sets.gmt'")
    if not p.parent.exists():
        raise FileNotFoundError(f"the folder {str(p.parent)!r} does not exist")
    if isinstance(gene_sets, pd.DataFrame):
        net = as_gene_sets(gene_sets)
        if not np.allclose(net["weight"].to_numpy(), 1.0):
            warnings.warn(
                "GMT files have no weights: the 'weight' column is dropped", UserWarning, stacklevel=2
            )
        sets: Mapping = dict(zip(*_split_targets(net), strict=True))
    elif isinstance(gene_sets, Mapping):
        sets = gene_sets
    else:
        raise TypeError(
            "gene_sets must be a dict of set name -> list of genes or a DataFrame with 'source' and 'target' "
            f"columns; got {type(gene_sets).__name__}"
        )
    if len(sets) == 0:
        raise ValueError("gene_sets is empty; there is nothing to write")
    if descriptions is None:
        desc_of = getattr(gene_sets, "descriptions", None) or {}
    elif isinstance(descriptions, str):
        desc_of = None
    elif isinstance(descriptions, Mapping):
        desc_of = descriptions
    else:
        raise TypeError(f"descriptions must be a dict, a string or None, got {type(descriptions).__name__}")

    lines = []
    for name, genes in sets.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"gene set names must be non-empty strings, got {name!r}")
        _check_field(name, "gene set name")
        gl = list(dict.fromkeys(_check_gene_list(name, genes)))
        for g in gl:
            if not g.strip():
                raise ValueError(f"gene set {name!r} contains an empty gene id")
            _check_field(g, f"gene id in set {name!r}:")
        d = descriptions if desc_of is None else desc_of.get(name, "")
        d = str(d).strip() or DEFAULT_DESCRIPTION
        _check_field(d, f"description of {name!r}:")
        lines.append("\t".join([name, d, *gl]))
    text = "\n".join(lines) + "\n"
    if p.name.lower().endswith(".gz"):
        with gzip.open(p, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
