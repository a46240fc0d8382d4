"""GMT gene set files (Gene Matrix Transposed, the format of MSigDB, Reactome, Enrichr)."""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .._genesets import (
    DEFAULT_DESCRIPTION,
    GeneSets,
    _as_path,
    _check_gene_list,
    _split_targets,
    as_gene_sets,
)

_GZIP_MAGIC = b"\x1f\x8b"


def _open_text(p: Path):
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


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
    return _parse_gmt(path)


def _parse_gmt(path, keep=None) -> GeneSets:
    """The reader behind :func:`read_gmt`; ``keep(description) -> bool`` selects lines before their genes are parsed."""
    p = _as_path(path)
    if not p.exists():
        raise FileNotFoundError(f"GMT file not found: {str(p)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"GMT path {str(p)!r} is a directory; pass the .gmt file")
    sets = GeneSets()
    lines_of: dict[str, int] = {}
    pool: dict[str, str] = {}  # one string object per distinct gene keeps big collections small
    try:
        with _open_text(p) as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2:
                    raise ValueError(
                        f"{p.name}, line {lineno}: not a GMT record. Expected 'name<TAB>description<TAB>gene<TAB>...' "
                        f"but found no tab: {line[:80]!r}"
                    )
                name = fields[0].strip()
                if not name:
                    raise ValueError(f"{p.name}, line {lineno}: the gene set name (first field) is empty")
                if name in lines_of:
                    raise ValueError(
                        f"{p.name}: gene set {name!r} appears twice (lines {lines_of[name]} and {lineno}); "
                        "GMT set names must be unique"
                    )
                lines_of[name] = lineno
                if keep is not None and not keep(fields[1].strip()):
                    continue
                genes = {}
                for g in fields[2:]:
                    g = g.strip()
                    if g:
                        genes[pool.setdefault(g, g)] = None
                sets[name] = list(genes)
                sets.descriptions[name] = fields[1].strip()
    except UnicodeDecodeError:
        raise ValueError(f"{str(p)!r} is not a text GMT file (it is not UTF-8 text)") from None
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise ValueError(f"could not read {str(p)!r} as a (gzipped) GMT file: {e}") from None
    if not sets:
        raise ValueError(f"GMT file {str(p)!r} holds no gene sets")
    return sets


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
            warnings.warn("GMT files have no weights: the 'weight' column is dropped", UserWarning, stacklevel=2)
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
