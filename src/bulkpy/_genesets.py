"""Gene set collections: one container and one canonical table for every enrichment method.

Users hold gene sets in three shapes: a ``dict`` of gene lists (what GSEA tools and
:func:`bulkpy.io.read_gmt` use), a GMT file, or decoupler's long ``DataFrame`` with ``source``,
``target`` and optionally ``weight`` columns. :func:`as_gene_sets` turns any of them into one
canonical long table, which the enrichment code (ORA, GSEA, sample scores) builds on:

=========  ========  ==================================================
column     dtype     meaning
=========  ========  ==================================================
source     object    gene set name (str)
target     object    gene id (str)
weight     float64   1.0 for plain sets; the weight of weighted nets
=========  ========  ==================================================

Rows keep the input order (sets in order of first appearance, genes in their set's order) and a
(source, target) pair occurs once. The helpers restrict a net to the genes of the data, filter
sets by size, map symbols to ``var_names`` through a ``var`` column, and build a sparse
set x gene membership matrix for vectorised engines.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

#: Columns of the canonical long table, in order.
NET_COLUMNS = ("source", "target", "weight")

#: Description written for sets that have none: GMT needs a non-empty second field, because
#: several readers split lines on any whitespace and would take the first gene as the description.
DEFAULT_DESCRIPTION = "NA"


class GeneSets(dict):
    """Gene sets as an ordered ``dict`` of set name -> list of genes, with their descriptions.

    A plain ``dict`` in every respect (indexing, iteration, ``len``, equality), plus

    * ``descriptions``: ``dict`` of set name -> description (the GMT file's second column);
    * :meth:`to_frame`: decoupler's long format (``source``, ``target``, ``weight``), which
      ``decoupler.mt.*`` takes as ``net``.
    """

    def __init__(self, sets: Mapping | Iterable = (), descriptions: Mapping[str, str] | None = None):
        super().__init__(sets)
        self.descriptions: dict[str, str] = dict(descriptions) if descriptions is not None else {}

    def to_frame(self) -> pd.DataFrame:
        """The sets in decoupler's long format: ``source``, ``target``, ``weight`` (all 1.0)."""
        return as_gene_sets(self)

    def copy(self) -> GeneSets:
        return GeneSets({k: list(v) for k, v in self.items()}, self.descriptions)

    def __repr__(self) -> str:
        if not self:
            return "GeneSets with 0 gene sets"
        sizes = [len(v) for v in self.values()]
        return f"GeneSets with {len(self):,} gene sets of {min(sizes):,}-{max(sizes):,} genes"

    def __reduce__(self):
        return (self.__class__, (dict(self), self.descriptions))


def _check_gene_list(name, genes) -> list[str]:
    if isinstance(genes, str | bytes):
        raise TypeError(
            f"gene set {name!r} is a single string ({genes[:40]!r}); give each set as a list of gene ids"
        )
    try:
        items = list(genes)
    except TypeError:
        raise TypeError(
            f"gene set {name!r} must be a list of gene ids (or a dict gene -> weight), got {type(genes).__name__}"
        ) from None
    if set(map(type, items)) <= {str}:
        return items
    out = []
    for g in items:
        if g is None or (isinstance(g, float) and np.isnan(g)):
            raise ValueError(f"gene set {name!r} contains a missing gene id")
        out.append(g if isinstance(g, str) else str(g))
    return out


def _from_mapping(obj: Mapping) -> pd.DataFrame:
    names: list[str] = []
    lengths: list[int] = []
    targets: list[str] = []
    weights: list[float] = []
    for name, genes in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"gene set names must be strings, got {name!r} ({type(name).__name__})")
        if isinstance(genes, pd.Series) and genes.dtype.kind in "biuf":
            genes = genes.to_dict()  # weights indexed by gene
        if isinstance(genes, Mapping):
            seen: dict[str, float] = {}
            for g, w in genes.items():
                g = g if isinstance(g, str) else str(g)
                try:
                    seen[g] = float(w)
                except (TypeError, ValueError):
                    raise TypeError(f"gene set {name!r}: weight of {g!r} is not a number ({w!r})") from None
                if not np.isfinite(seen[g]):
                    raise ValueError(f"gene set {name!r}: weight of {g!r} is not finite ({w!r})")
            gl, wl = list(seen), list(seen.values())
        else:
            gl = list(dict.fromkeys(_check_gene_list(name, genes)))
            wl = None
        names.append(name)
        lengths.append(len(gl))
        targets.extend(gl)
        weights.extend([1.0] * len(gl) if wl is None else wl)
    source = np.repeat(np.asarray(names, dtype=object), np.asarray(lengths, dtype=np.int64))
    return pd.DataFrame(
        {
            "source": source,
            "target": np.asarray(targets, dtype=object),
            "weight": np.asarray(weights, dtype=np.float64),
        }
    )


def _from_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("source", "target") if c not in df.columns]
    if missing:
        raise KeyError(
            f"a gene set DataFrame needs 'source' (set name) and 'target' (gene) columns, as decoupler uses; "
            f"missing {missing}, columns are {list(map(str, df.columns))}. Rename with df.rename(columns={{...}})"
        )
    out = pd.DataFrame(index=pd.RangeIndex(df.shape[0]))
    for col in ("source", "target"):
        s = df[col].reset_index(drop=True)
        if s.isna().any():
            raise ValueError(f"column {col!r} of the gene set table has {int(s.isna().sum())} missing values")
        out[col] = s.astype(str).astype(object).to_numpy()
    if "weight" in df.columns:
        w = pd.to_numeric(df["weight"], errors="coerce").reset_index(drop=True)
        bad = ~np.isfinite(w.to_numpy(dtype=np.float64))
        if bad.any():
            raise ValueError(
                f"column 'weight' of the gene set table has {int(bad.sum())} missing, non-numeric or infinite values"
            )
        out["weight"] = w.to_numpy(dtype=np.float64)
    else:
        out["weight"] = 1.0
    dup = out.duplicated(["source", "target"])
    if dup.any():
        ex = out.loc[dup, ["source", "target"]].head(3).to_records(index=False).tolist()
        raise ValueError(
            f"the gene set table repeats {int(dup.sum())} (source, target) pairs, e.g. {ex}; "
            "drop them with df.drop_duplicates(['source', 'target'])"
        )
    return out


def as_gene_sets(obj) -> pd.DataFrame:
    """Canonical long table (``source``, ``target``, ``weight``) from any gene set input.

    Parameters
    ----------
    obj
        * a ``dict`` (or :class:`GeneSets`) of set name -> list of gene ids (repeated genes
          within a set are kept once), or set name -> ``dict`` gene -> weight;
        * a path to a GMT file (plain or gzipped);
        * a ``DataFrame`` with ``source`` and ``target`` columns and optionally ``weight``
          (decoupler's format; other columns such as ``padj`` are dropped).

    Returns
    -------
    A new DataFrame with columns ``source`` (str), ``target`` (str), ``weight`` (float64) and a
    RangeIndex. Sets without genes have no rows.
    """
    if isinstance(obj, pd.DataFrame):
        net = _from_frame(obj)
    elif isinstance(obj, Mapping):
        net = _from_mapping(obj)
    elif isinstance(obj, str | os.PathLike):
        net = _from_mapping(parse_gmt(obj))
    else:
        raise TypeError(
            "gene sets must be a dict of set name -> list of genes, a GMT file path, or a DataFrame with "
            f"'source' and 'target' columns (decoupler's format); got {type(obj).__name__}"
        )
    if net.shape[0] == 0:
        raise ValueError("the gene sets are empty: no (set, gene) pairs")
    return net


def to_dict(net) -> GeneSets:
    """Gene sets as :class:`GeneSets` (set name -> list of genes, in table order); weights are dropped."""
    net = as_gene_sets(net)
    return GeneSets(zip(*_split_targets(net), strict=True))


def _split_targets(net: pd.DataFrame) -> tuple[pd.Index, list[list[str]]]:
    """Set names (order of first appearance) and each set's targets, in table order."""
    codes, names = pd.factorize(net["source"], sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(names)))[:-1]
    parts = np.split(net["target"].to_numpy()[order], bounds)
    return names, [p.tolist() for p in parts]


def set_sizes(net) -> pd.Series:
    """Number of genes per set (index = set name, in order of first appearance)."""
    net = as_gene_sets(net)
    return net.groupby("source", sort=False).size().rename("size")


def filter_gene_sets(net, *, genes=None, min_size: int = 1, max_size: int | None = None) -> pd.DataFrame:
    """Restrict ``net`` to ``genes`` (e.g. ``adata.var_names``), then keep sets with ``min_size`` to
    ``max_size`` genes left (both inclusive, as fgsea's ``minSize``/``maxSize``).

    Raises ``ValueError`` when no set is left, saying how large the biggest overlap was.
    """
    return _filter_canonical(as_gene_sets(net), genes=genes, min_size=min_size, max_size=max_size)


def _filter_canonical(net: pd.DataFrame, *, genes, min_size: int, max_size: int | None) -> pd.DataFrame:
    """:func:`filter_gene_sets` of a table :func:`as_gene_sets` already returned."""
    for v, name in ((min_size, "min_size"), (max_size, "max_size")):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0):
            raise TypeError(f"{name} must be a non-negative integer, got {v!r}")
    if max_size is not None and max_size < min_size:
        raise ValueError(f"max_size ({max_size}) is smaller than min_size ({min_size})")
    if genes is not None:
        universe = pd.Index(np.asarray(genes, dtype=object).astype(str))
        hit = net["target"].isin(universe)
        if not hit.any():
            ex_g = list(universe[:3])
            n_total = net["source"].nunique()
            raise ValueError(
                f"no gene of the {n_total} gene sets is among the {len(universe)} genes of the data (e.g. {ex_g}). "
                "Are both the same kind of id (symbols vs Ensembl ids)? bulkpy.pp.annotate_genes adds symbols."
            )
        if not hit.all():
            net = net.loc[hit]
    sizes = net.groupby("source", sort=False).size()
    keep = sizes >= min_size
    if max_size is not None:
        keep &= sizes <= max_size
    if not keep.any():
        raise ValueError(
            f"no gene set has between {min_size} and {max_size if max_size is not None else 'any number of'} genes "
            f"among the data's genes (set sizes range from {sizes.min()} to {sizes.max()}); change min_size/max_size"
        )
    return net.loc[net["source"].isin(sizes.index[keep])].reset_index(drop=True)


def to_var_names(
    net, var: pd.DataFrame, gene_symbols: str | None = None, *, multi: str = "first"
) -> pd.DataFrame:
    """Translate set targets (e.g. symbols) into ``var_names`` (e.g. Ensembl ids) through a ``var`` column.

    ``gene_symbols`` names the column of ``var`` holding the ids the sets use; ``None`` returns the
    net unchanged (targets are matched to ``var_names`` directly). A symbol shared by several genes
    (e.g. two Ensembl ids with one symbol) maps to the first of them in ``var`` order
    (``multi="first"``) or to all of them (``multi="all"``). Targets with no gene are dropped;
    missing or empty entries of the column are ignored.
    """
    return _to_var_names_canonical(as_gene_sets(net), var, gene_symbols, multi=multi)


def _to_var_names_canonical(net: pd.DataFrame, var, gene_symbols, *, multi: str = "first") -> pd.DataFrame:
    """:func:`to_var_names` of a table :func:`as_gene_sets` already returned."""
    if gene_symbols is None:
        return net
    if multi not in ("first", "all"):
        raise ValueError(f"multi={multi!r} is not supported; choose one of ['first', 'all']")
    if not isinstance(gene_symbols, str):
        raise TypeError(
            f"gene_symbols must be the name of a var column (a string), got {type(gene_symbols).__name__}"
        )
    if gene_symbols not in var.columns:
        raise KeyError(
            f"gene_symbols {gene_symbols!r} is not a column of adata.var; columns are: {list(var.columns)}"
        )
    col = var[gene_symbols]
    ok = col.notna().to_numpy() & (col.astype(str).to_numpy() != "")
    lookup = pd.DataFrame(
        {"target": col.astype(str).to_numpy()[ok], "var_name": np.asarray(var.index)[ok].astype(str)}
    )
    if multi == "first":
        lookup = lookup.drop_duplicates("target", keep="first")
    merged = net.merge(lookup, on="target", how="inner", sort=False)
    if merged.shape[0] == 0:
        raise ValueError(
            f"no gene set target is found in adata.var[{gene_symbols!r}] (e.g. targets {net['target'].head(3).tolist()}, "
            f"column values {lookup['target'].head(3).tolist()})"
        )
    out = merged[["source", "var_name", "weight"]].rename(columns={"var_name": "target"})
    return out.drop_duplicates(["source", "target"]).reset_index(drop=True)


def membership_matrix(net, genes) -> tuple[sparse.csr_matrix, pd.Index]:
    """Sparse sets x genes matrix of weights (0 = not a member), columns in the order of ``genes``.

    Targets not in ``genes`` are dropped; sets left without genes keep an empty row. Returns the
    matrix and the set names (row order = order of first appearance in ``net``).
    """
    return _membership_canonical(as_gene_sets(net), genes)


def _membership_canonical(net: pd.DataFrame, genes) -> tuple[sparse.csr_matrix, pd.Index]:
    """:func:`membership_matrix` of a table :func:`as_gene_sets` already returned."""
    genes = pd.Index(np.asarray(genes, dtype=object).astype(str))
    if not genes.is_unique:
        raise ValueError("genes must be unique (make var_names unique first)")
    rows, sources = pd.factorize(net["source"], sort=False)
    cols = genes.get_indexer(net["target"])
    hit = cols >= 0
    mat = sparse.csr_matrix(
        (net["weight"].to_numpy()[hit], (rows[hit], cols[hit])),
        shape=(len(sources), len(genes)),
        dtype=np.float64,
    )
    return mat, pd.Index(sources, name="source")


def _as_path(path, what: str = "GMT file") -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


def _hint_columns(targets, var: pd.DataFrame | None) -> list[str]:
    """The ``var`` columns holding some of ``targets`` (most matches first)."""
    if var is None:
        return []
    tset = pd.Index(pd.unique(np.asarray(targets, dtype=object)))
    found = []
    for col in var.columns:
        s = var[col]
        if not (
            s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s)
        ):
            continue
        hits = int(tset.isin(s.dropna().astype(str)).sum())
        if hits:
            found.append((hits, str(col)))
    return [c for _, c in sorted(found, key=lambda t: -t[0])]


def sets_for_genes(
    gene_sets,
    genes,
    *,
    var: pd.DataFrame | None = None,
    gene_symbols: str | None = None,
    min_size: int = 1,
    max_size: int | None = None,
    what: str = "adata.var_names",
    validated: bool = False,
) -> tuple[sparse.csr_matrix, pd.Index, pd.DataFrame]:
    """Gene sets ready for an engine: mapped (through ``var[gene_symbols]`` if given) to
    ``genes``, restricted to them and filtered by size.

    Returns the sets x ``genes`` membership matrix, the set names (row order) and the filtered
    long table. Raises ``ValueError`` when no set target is among ``genes`` (naming the ``var``
    columns that hold the targets, for ``gene_symbols=``) or when no set passes the size filter
    (giving the range of sizes). ``validated``: ``gene_sets`` is a table :func:`as_gene_sets`
    returned (the caller's own, not the user's), so it is not checked again.
    """
    net = gene_sets if validated else as_gene_sets(gene_sets)
    genes = pd.Index(np.asarray(genes, dtype=object).astype(str))
    if gene_symbols is not None:
        if var is None:
            raise ValueError("gene_symbols= names a column of adata.var; it needs an AnnData input")
        var = var.loc[var.index.isin(genes)] if not var.index.equals(genes) else var
        net = _to_var_names_canonical(net, var, gene_symbols)
    hit = net["target"].isin(genes)
    if not hit.any():
        cols = _hint_columns(net["target"], var) if gene_symbols is None else []
        ex_t = net["target"].drop_duplicates().head(3).tolist()
        ex_g = list(genes[:3])
        hint = (
            f" The sets' genes are in adata.var[{cols[0]!r}]: pass gene_symbols={cols[0]!r}."
            if cols
            else " Are both the same kind of id (symbols vs Ensembl ids)? bulkpy.pp.annotate_genes adds symbols "
            "to var, then pass gene_symbols='symbol'."
        )
        raise ValueError(
            f"no gene of the {net['source'].nunique()} gene sets (e.g. {ex_t}) is among the {len(genes)} genes "
            f"of {what} (e.g. {ex_g}).{hint}"
        )
    # the table is canonical from here on: no second validation
    net = _filter_canonical(
        net if hit.all() else net.loc[hit], genes=None, min_size=min_size, max_size=max_size
    )
    mat, names = _membership_canonical(net, genes)
    return mat, names, net


# --------------------------------------------------------------------------------------------
# the GMT format (bk.io.read_gmt reads through this; kept here so that io depends on this module,
# never the reverse)

_GZIP_MAGIC = b"\x1f\x8b"


def open_text(p: Path):
    """A text handle on ``p``, gunzipped when its content is gzip (whatever its name)."""
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


def parse_gmt(path, keep=None) -> GeneSets:
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
        with open_text(p) as fh:
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
