"""GTF annotation files (GTF 2.2 / GFF2, as GENCODE and Ensembl publish them).

One reader serves three users: :func:`read_gtf` (a tidy table of one feature type), the
transcript -> gene table of ``bk.io.read_quant(tx2gene="genes.gtf.gz")`` (what R users build
with GenomicFeatures' ``makeTxDbFromGFF`` and ``select(txdb, keys, "GENEID", "TXNAME")`` in the
tximport vignette), and the gene table of ``bk.pp.annotate_genes(gtf=...)``.

The format (GTF 2.2, https://mblab.wustl.edu/GTF22.html; GENCODE's and Ensembl's data format
pages): one feature per line, nine tab-separated fields ``seqname source feature start end score
strand frame attributes``, coordinates 1-based and inclusive, ``.`` for an empty field; lines
starting with ``#`` are comments (GENCODE's ``##description:``, Ensembl's ``#!genome-build``).
The attributes are ``key "value";`` pairs separated by a space (GENCODE writes some numbers
unquoted: ``level 2;``); a key may repeat (``tag "basic"; tag "CCDS";``). GENCODE ids carry
their version (``ENSG00000223972.5``, ``..._PAR_Y`` for the chrY copies of PAR genes) and the
type is ``gene_type``; Ensembl ids have no version, which is given as ``gene_version`` /
``transcript_version``, and the type is ``gene_biotype``.

Speed: a GENCODE GTF has ~3.4 million lines (1.5 GB uncompressed). The file is read in blocks
of whole lines; in each block the lines of the wanted feature are found with numpy (the third
tab of every line), and only those are parsed (pandas' C reader). Attribute values are taken
with one regular expression per key over all selected lines at once, aligned to the lines.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import logging
import lzma
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: The eight fixed fields of a GTF line, before the attributes.
FIELDS = ("seqname", "source", "feature", "start", "end", "score", "strand", "frame")
_ALL_FIELDS = (*FIELDS, "attribute")
#: File names read as GTF whatever their content (after removing a compression suffix).
GTF_SUFFIXES = (".gtf", ".gtf2", ".gff", ".gff2")
_COMPRESSION_SUFFIXES = (".gz", ".bgz", ".bz2", ".xz")
_ACCEPTED = (
    "a GTF file (GTF 2.2 / GFF2, as GENCODE and Ensembl publish it: 9 tab-separated fields, "
    'attributes like gene_id "ENSG..."; transcript_id "ENST...";), plain or compressed with gzip, bz2 or xz'
)
_BLOCK = 1 << 26  # 64 MiB of text per block
_SNIFF_LINES = 200
_KEY = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_KEY_RE = re.compile(rf";[ \t]*({_KEY})[ \t]+(?=[^\s;])")


# --------------------------------------------------------------------------------------------
# files and blocks


def check_path(path, what: str = "gtf") -> Path:
    """``path`` as a Path of an existing file, or a clear error."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{what} must be the path of a GTF file (str or os.PathLike), got {type(path).__name__}"
        )
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {str(p)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"{what} path {str(p)!r} is a directory; pass a GTF file")
    return p


def _open(p: Path):
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(p, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(p, "rb")
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.open(p, "rb")
    if magic[:4] in (b"(\xb5/\xfd", b"PK\x03\x04"):
        raise ValueError(f"{str(p)!r} is zstd- or zip-compressed; expected {_ACCEPTED}")
    return open(p, "rb")


def _blocks(p: Path) -> Iterator[bytes | memoryview]:
    """The file's text in blocks of whole lines (the last may lack its newline)."""
    try:
        with _open(p) as fh:
            rest = b""
            while True:
                chunk = fh.read(_BLOCK)
                if not chunk:
                    if rest:
                        yield rest
                    return
                chunk = rest + chunk
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    rest = chunk
                    continue
                yield memoryview(chunk)[: cut + 1]  # no copy of the block
                rest = chunk[cut + 1 :]
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise ValueError(f"can not read {str(p)!r} ({err}); expected {_ACCEPTED}") from None


def has_gtf_suffix(p: Path) -> bool:
    name = p.name.lower()
    for ext in _COMPRESSION_SUFFIXES:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name.endswith(GTF_SUFFIXES)


def _first_lines(p: Path, n: int = _SNIFF_LINES) -> list[str]:
    try:
        with _open(p) as fh:
            head = fh.read(1 << 20)
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise ValueError(f"can not read {str(p)!r} ({err}); expected {_ACCEPTED}") from None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the end of the sample
            raise ValueError(f"{str(p)!r} is not a text file; expected {_ACCEPTED}") from None
        text = head[: err.start].decode("utf-8")
    lines = [line.removesuffix("\r") for line in text.split("\n")]  # not splitlines: only \n ends a line
    if len(head) == 1 << 20 and lines:
        lines = lines[:-1]  # the last line may be cut
    return lines[:n]


def _line_problem(line: str) -> str | None:
    """Why a (non-comment, non-blank) line is not a GTF line, or None."""
    fields = line.split("\t")
    if len(fields) != 9:
        return f"{len(fields)} tab-separated field(s) where a GTF line has 9"
    start, end, attrs = fields[3], fields[4], fields[8]
    if not (start.strip().isdigit() and end.strip().isdigit()):
        return f"start and end {start!r}, {end!r} are not whole numbers"
    if "=" in attrs and '"' not in attrs:
        return 'GFF3-style attributes (key=value); this reader takes GTF (key "value";)'
    if attrs.strip() and not _KEY_RE.search(";" + attrs):
        return f'attributes {attrs[:60]!r} are not key "value"; pairs'
    return None


def sniff(p: Path) -> list[str]:
    """Check the first lines; return the header (comment lines before the first feature).

    Raises a ValueError saying what is wrong when the file is not a GTF.
    """
    lines = _first_lines(p)
    header: list[str] = []
    n_data = 0
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            if n_data == 0:
                header.append(line)
                if line.lower().startswith("##gff-version 3"):
                    raise ValueError(
                        f"{str(p)!r} is a GFF3 file (##gff-version 3); expected {_ACCEPTED}. "
                        "GENCODE and Ensembl publish a GTF beside each GFF3"
                    )
            continue
        problem = _line_problem(line)
        if problem:
            raise ValueError(f"{str(p)!r} is not a GTF file: line {i} has {problem}. Expected {_ACCEPTED}")
        n_data += 1
        if n_data >= 20:
            break
    if n_data == 0:
        raise ValueError(
            f"{str(p)!r} holds no GTF feature line (empty, or only comments); expected {_ACCEPTED}"
        )
    return header


def looks_like_gtf(p: Path) -> bool:
    """True when ``p`` should go to the GTF reader: named like a GTF or GFF (a GFF3 then gets its
    own error), or its first feature line has nine tab-separated fields with numeric start and end
    (a two-column transcript -> gene table never does)."""
    if has_gtf_suffix(p) or has_gtf_suffix(p.with_name(p.name.lower().replace(".gff3", ".gff"))):
        return True
    try:
        lines = _first_lines(p, 50)
    except ValueError:
        return False
    for line in lines:
        if line.lower().startswith("##gff-version"):
            return True
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        return len(fields) == 9 and fields[3].strip().isdigit() and fields[4].strip().isdigit()
    return False


# --------------------------------------------------------------------------------------------
# selecting and parsing lines


def _select(block: bytes | memoryview, features: Sequence[bytes] | None) -> bytes | memoryview:
    """The lines of ``block`` whose third field is one of ``features`` (all lines for None)."""
    if features is None:
        return block
    a = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(a == 10)
    if len(ends) == 0 or ends[-1] != len(a) - 1:
        ends = np.append(ends, len(a))
    starts = np.concatenate(([0], ends[:-1] + 1))
    tabs = np.flatnonzero(a == 9)
    if len(tabs) < 2:
        return b""
    i = np.searchsorted(tabs, starts)
    t2 = tabs[np.minimum(i + 1, len(tabs) - 1)]  # the 2nd and 3rd tabs of each line
    t3 = tabs[np.minimum(i + 2, len(tabs) - 1)]
    ok = (i + 2 < len(tabs)) & (t3 < ends)
    keep = np.zeros(len(starts), dtype=bool)
    for f in features:
        cand = np.flatnonzero(ok & (t3 - t2 - 1 == len(f)))
        if len(cand) == 0:
            continue
        pos = t2[cand, None] + 1 + np.arange(len(f))
        same = (a[pos] == np.frombuffer(f, dtype=np.uint8)).all(axis=1)
        keep[cand[same]] = True
    sel = np.flatnonzero(keep)
    if len(sel) == 0:
        return b""
    s, e = starts[sel], np.minimum(ends[sel] + 1, len(a))
    return b"".join(block[x:y] for x, y in zip(s.tolist(), e.tolist(), strict=True))


def _data_lines(text: bytes, p: Path) -> bytes:
    """``text`` without comment and blank lines; a ValueError naming the first line that has not
    nine tab-separated fields."""
    a = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(a == 10)
    if len(ends) == 0 or ends[-1] != len(a) - 1:
        ends = np.append(ends, len(a))
    starts = np.concatenate(([0], ends[:-1] + 1))
    tabs = np.flatnonzero(a == 9)
    n_tabs = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts)
    first = a[np.minimum(starts, len(a) - 1)]
    length = ends - starts - (a[np.maximum(ends - 1, 0)] == 13)  # without a CR of CRLF
    data = (length > 0) & (first != ord("#"))
    bad = np.flatnonzero(data & (n_tabs != 8))
    if len(bad):
        i = bad[0]
        line = text[starts[i] : ends[i]].decode("utf-8", "replace").rstrip("\r")
        raise ValueError(
            f"{str(p)!r} is not a GTF file: the line {line[:120]!r} has {n_tabs[i] + 1} tab-separated "
            f"field(s) where a GTF line has 9 ({len(bad)} such line(s))"
        )
    if data.all():
        return text
    keep = np.flatnonzero(data)
    stop = np.minimum(ends[keep] + 1, len(a))
    return b"".join(text[x:y] for x, y in zip(starts[keep].tolist(), stop.tolist(), strict=True))


def _parse(text: bytes, p: Path) -> pd.DataFrame:
    """The nine fields of the selected lines as strings (comment and blank lines dropped)."""
    text = _data_lines(text, p) if text else text
    if not text:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in _ALL_FIELDS})
    try:
        df = pd.read_csv(
            io.BytesIO(text), sep="\t", header=None, names=list(_ALL_FIELDS), dtype=str,
            quoting=csv.QUOTE_NONE, na_filter=False, engine="c", encoding="utf-8",
        )  # fmt: skip
    except pd.errors.ParserError as err:  # e.g. a lone carriage return inside a line
        raise ValueError(
            f"{str(p)!r} is not a GTF file: {err} (a GTF line has 9 tab-separated fields)"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{str(p)!r} is not a UTF-8 text file; expected {_ACCEPTED}") from None
    return df


def _coordinates(df: pd.DataFrame, p: Path) -> pd.DataFrame:
    out = {}
    for col in ("start", "end"):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = v.isna() | (v < 0) | (v != v.round())
        if bad.any():
            row = df[bad.to_numpy()].iloc[0]
            raise ValueError(
                f"{str(p)!r}: {int(bad.sum())} line(s) have a {col} that is not a whole number, e.g. "
                f"{row[col]!r} in the line {chr(9).join(row.iloc[:8])[:120]!r}"
            )
        out[col] = v.to_numpy(dtype=np.int64)
    score = pd.to_numeric(df["score"].where(df["score"] != "."), errors="coerce").to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "seqname": pd.Categorical(df["seqname"].to_numpy()),
            "source": pd.Categorical(df["source"].to_numpy()),
            "feature": pd.Categorical(df["feature"].to_numpy()),
            "start": out["start"],
            "end": out["end"],
            "score": score,
            "strand": pd.Categorical(df["strand"].to_numpy()),
            "frame": pd.Categorical(df["frame"].to_numpy()),
        }
    )


# --------------------------------------------------------------------------------------------
# attributes


def _joined(attrs: pd.Series) -> str:
    return "\n".join(attrs.str.replace("\n", " ", regex=False).tolist())


def attribute_keys(text: str) -> Counter:
    """How often each attribute key occurs in the joined attribute text."""
    # a literal ';' first lets the regular expression engine skip ahead quickly
    return Counter(_KEY_RE.findall(";" + text.replace("\n", ";")))


def _occurrences(text: str, key: str) -> int:
    """Occurrences of ``key`` as an attribute, written the usual way (``; key value``)."""
    return text.count(f"; {key} ") + text.count(f"\n{key} ") + int(text.startswith(f"{key} "))


def attribute(text: str, n: int, key: str, *, repeated: bool | None = None) -> np.ndarray:
    """The value of ``key`` on each of the ``n`` lines of ``text`` (object array, NaN where absent).

    A key given several times on a line (``tag``) gives its values joined with ``,``;
    ``repeated=None`` finds out whether that happens, ``False`` takes the first value.
    """
    out = np.full(n, np.nan, dtype=object)
    if n == 0 or key not in text:
        return out
    k = re.escape(key)
    value = r'(?:"([^"\n]*)"|([^\s";]+))'
    rx = re.compile(rf"^(?:[^\n]*?(?:^|;)[ \t]*{k}[ \t]+{value})?[^\n]*$", re.M)
    found = rx.findall(text)
    if len(found) != n:  # pragma: no cover - the pattern matches every line once
        raise RuntimeError(f"attribute {key!r}: {len(found)} matches for {n} lines")
    vals = np.array([q or u for q, u in found], dtype=object)
    has = vals != ""
    out[has] = vals[has]
    if repeated is False or (repeated is None and _occurrences(text, key) <= int(has.sum())):
        return out
    # several values on some lines: every occurrence, with the line it is on
    rx = re.compile(rf"(?:^|;)[ \t]*{k}[ \t]+{value}|(\n)", re.M)
    arr = np.array(rx.findall(text), dtype=object).reshape(-1, 3)
    newline = arr[:, 2] == "\n"
    line = np.cumsum(newline)[~newline]
    vals = np.where(arr[~newline, 0] != "", arr[~newline, 0], arr[~newline, 1])
    keep = vals != ""
    return _by_line(line[keep], vals[keep], n)


_PAIR_RE = re.compile(rf';[ \t]*({_KEY})[ \t]+(?:"([^"\n]*)"|([^\s";]+))|(\n)')


def all_attributes(text: str, n: int) -> dict[str, np.ndarray]:
    """Every attribute of the ``n`` lines of ``text`` in one pass: key -> values (as :func:`attribute`)."""
    if n == 0:
        return {}
    # each line starts with ';' so that a literal leads the pattern (the engine skips ahead fast)
    found = _PAIR_RE.findall(";" + text.replace("\n", "\n;"))
    if not found:
        return {}
    arr = np.array(found, dtype=object).reshape(-1, 4)
    newline = arr[:, 3] == "\n"
    line = np.cumsum(newline)[~newline]
    arr = arr[~newline]
    vals = np.where(arr[:, 1] != "", arr[:, 1], arr[:, 2])
    given = vals != ""
    codes, keys = pd.factorize(arr[given, 0])
    line, vals = line[given], vals[given]
    order = np.argsort(codes, kind="stable")  # by key, then line
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))
    out = {}
    for c, key in enumerate(keys):
        idx = order[bounds[c] : bounds[c + 1]]
        out[str(key)] = _by_line(line[idx], vals[idx], n)
    return out


def _by_line(line: np.ndarray, vals: np.ndarray, n: int) -> np.ndarray:
    """Values placed on their (non-decreasing) lines; several on one line joined with ','."""
    col = np.full(n, np.nan, dtype=object)
    if len(line) == 0:
        return col
    first = np.r_[True, np.diff(line) != 0]
    if first.all():
        col[line] = vals
        return col
    starts = np.flatnonzero(first)
    joined = np.add.reduceat(vals.astype(object) + ",", starts)  # object arrays concatenate
    col[line[starts]] = pd.Series(joined, dtype=object).str[:-1].to_numpy(dtype=object)
    return col


# --------------------------------------------------------------------------------------------
# reading


def _features_arg(feature) -> list[str] | None:
    if feature is None:
        return None
    items = [feature] if isinstance(feature, str) else feature
    if not isinstance(items, list | tuple) or not items or not all(isinstance(f, str) and f for f in items):
        raise TypeError(
            f"feature must be a feature type (e.g. 'gene'), a list of them, or None for all lines, got {feature!r}"
        )
    bad = [f for f in items if "\t" in f or "\n" in f]
    if bad:
        raise ValueError(f"feature names can not contain tabs or newlines: {bad}")
    return list(dict.fromkeys(items))


def read_lines(p: Path, features: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The nine string fields of the lines of ``features`` (all for None) and the header."""
    header = sniff(p)
    want = None if features is None else [f.encode() for f in features]
    text = b"".join(_select(block, want) for block in _blocks(p))
    return _parse(text, p), header


def _features_seen(p: Path) -> list[str]:
    seen = []
    for line in _first_lines(p, 5000):
        fields = line.split("\t")
        if not line.startswith("#") and len(fields) > 2 and fields[2] not in seen:
            seen.append(fields[2])
    return seen


def frame_from_lines(
    lines: pd.DataFrame, p: Path, attributes: Sequence[str] | None, *, required: Sequence[str] = ()
) -> pd.DataFrame:
    """The tidy table of parsed lines: the eight fields, then one column per attribute
    (``attributes=None``: every key found)."""
    df = _coordinates(lines, p)
    text = _joined(lines["attribute"])
    n = len(lines)
    if attributes is None:
        values = all_attributes(text, n)
    else:
        values = {key: attribute(text, n, key) for key in dict.fromkeys(attributes)}
    for key, vals in values.items():
        df[key if key not in df.columns else f"{key}_attribute"] = vals
    missing = [k for k in required if k not in df.columns or df[k].isna().all()]
    if missing and n:
        found = list(attribute_keys(text))
        raise ValueError(
            f"{str(p)!r}: no {sorted(set(lines['feature']))} line has the attribute(s) {missing}; "
            f"attributes found: {found[:30]}"
        )
    return df


def read_gtf(path, *, feature="gene", attributes: Sequence[str] | None = None) -> pd.DataFrame:
    """Read the lines of one feature type of a GTF file as a tidy table.

    GTF (GTF 2.2 / GFF2) is the annotation format of GENCODE and Ensembl, for any organism: nine
    tab-separated fields per line, the last a list of ``key "value";`` attributes. Both GENCODE's
    attributes (``gene_type``, versioned ids such as ``ENSG00000223972.5``, ``..._PAR_Y``) and
    Ensembl's (``gene_biotype``, unversioned ids with ``gene_version``/``transcript_version``) are
    read as they are. Comment lines (``#``) are skipped; those at the top are kept in
    ``.attrs["gtf_header"]``. A 3-million-line GENCODE file reads in seconds: only the lines of
    the wanted feature are parsed.

    Parameters
    ----------
    path
        The GTF file (``.gtf``, or any name), plain or compressed with gzip, bz2 or xz
        (recognised by content).
    feature
        Feature type(s) to read, matched exactly (``"gene"``, ``"transcript"``, ``"exon"``, a
        list of them), or ``None`` for every line.
    attributes
        Attribute keys to read into columns; ``None`` reads all of them (slower for the millions
        of exon lines). Keys absent from a line give NaN there.

    Returns
    -------
    DataFrame with one row per line, in file order: ``seqname``, ``source``, ``feature``,
    ``strand`` and ``frame`` (categoricals), ``start`` and ``end`` (int64, 1-based, inclusive),
    ``score`` (float, NaN for ``.``), then one string column per attribute (NaN where absent; the
    values of a key given several times on a line, such as ``tag``, joined with ``,``). An
    attribute named like a field gets the suffix ``_attribute``. No line of the feature gives an
    empty table (the features present are logged).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import bulkpy as bk
    >>> gtf = pathlib.Path(tempfile.mkdtemp()) / "genes.gtf"
    >>> _ = gtf.write_text(
    ...     "##provider: GENCODE\\n"
    ...     'chr1\\tHAVANA\\tgene\\t11869\\t14409\\t.\\t+\\t.\\tgene_id "ENSG00000290825.1"; '
    ...     'gene_type "lncRNA"; gene_name "DDX11L2"; level 2;\\n'
    ...     'chr1\\tHAVANA\\ttranscript\\t11869\\t14409\\t.\\t+\\t.\\tgene_id "ENSG00000290825.1"; '
    ...     'transcript_id "ENST00000456328.2"; gene_type "lncRNA"; gene_name "DDX11L2"; '
    ...     'tag "basic"; tag "Ensembl_canonical";\\n'
    ... )
    >>> genes = bk.io.read_gtf(gtf)
    >>> genes[["seqname", "start", "end", "gene_id", "gene_type", "gene_name", "level"]]
      seqname  start    end            gene_id gene_type gene_name level
    0    chr1  11869  14409  ENSG00000290825.1    lncRNA   DDX11L2     2
    >>> bk.io.read_gtf(gtf, feature="transcript", attributes=["transcript_id", "tag"])["tag"].tolist()
    ['basic,Ensembl_canonical']
    """
    p = check_path(path)
    features = _features_arg(feature)
    if attributes is not None:
        if isinstance(attributes, str) or not all(isinstance(a, str) and a for a in attributes):
            raise TypeError(f"attributes must be a list of attribute keys or None, got {attributes!r}")
        attributes = list(attributes)
    lines, header = read_lines(p, features)
    if len(lines) == 0 and features is not None:
        logger.info("%s has no %s lines; features in its first lines: %s", p, features, _features_seen(p))
    df = frame_from_lines(lines, p, attributes)
    df.attrs["gtf_header"] = header
    return df


# --------------------------------------------------------------------------------------------
# the tables other functions need


def versioned(ids: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """``id.version`` where a version is given and the id does not already end with it."""
    out = np.asarray(ids, dtype=object).copy()
    v = pd.Series(versions, dtype=object)
    has = np.flatnonzero(v.notna().to_numpy())
    if len(has):
        base = out[has].astype(str)
        suffix = np.char.add(".", v.to_numpy()[has].astype(str))
        add = has[~np.char.endswith(base, suffix)]
        out[add] = np.char.add(out[add].astype(str), suffix[~np.char.endswith(base, suffix)]).astype(object)
    return out


def tx2gene(path) -> pd.DataFrame:
    """Transcript -> gene table (columns ``tx``, ``gene``) of a GTF, in file order.

    From the ``transcript`` lines, or the ``exon`` lines when there are none. Where the GTF gives
    ``transcript_version`` separately (Ensembl), the transcript id gets it appended
    (``ENST00000456328`` + ``2`` -> ``ENST00000456328.2``), as in the transcript FASTA that
    salmon and kallisto index; gene ids are kept as written.
    """
    p = check_path(path, "tx2gene")
    lines, _ = read_lines(p, ["transcript"])
    if len(lines) == 0:
        lines, _ = read_lines(p, ["exon"])
    if len(lines) == 0:
        raise ValueError(
            f"tx2gene GTF {str(p)!r} has no 'transcript' or 'exon' line to map transcripts to genes; "
            f"features in its first lines: {_features_seen(p)}"
        )
    df = frame_from_lines(
        lines, p, ["transcript_id", "gene_id", "transcript_version"], required=["transcript_id", "gene_id"]
    )
    df = df.dropna(subset=["transcript_id", "gene_id"])
    tx = versioned(df["transcript_id"].to_numpy(), df["transcript_version"].to_numpy())
    out = pd.DataFrame({"tx": tx, "gene": df["gene_id"].to_numpy(dtype=object)})
    return out.drop_duplicates().reset_index(drop=True)


GENE_COLUMNS = ("gene_id", "gene_name", "gene_type", "gene_version", "seqname", "start", "end", "strand")
_GENE_ATTRIBUTES = ("gene_id", "gene_name", "gene_type", "gene_biotype", "gene_version")


def _genes_of(df: pd.DataFrame) -> pd.DataFrame:
    """One row per gene from a tidy GTF table: its gene lines, else its other lines aggregated."""
    if "gene_id" not in df.columns:
        raise ValueError(
            f"the GTF table has no gene_id column (columns: {list(df.columns)[:20]}); "
            "pass a GTF file or a table from bk.io.read_gtf"
        )
    df = df[df["gene_id"].notna()]
    for col in ("gene_name", "gene_type", "gene_biotype", "gene_version"):
        if col not in df.columns:
            df = df.assign(**{col: np.nan})
    gene_type = df["gene_type"].where(df["gene_type"].notna(), df["gene_biotype"])
    df = df.assign(gene_type=gene_type)
    for col in ("seqname", "strand"):
        if col not in df.columns:
            df = df.assign(**{col: np.nan})
    for col in ("start", "end"):
        if col not in df.columns:
            df = df.assign(**{col: pd.array([pd.NA] * len(df), dtype="Int64")})
    feature = df["feature"].astype(str) if "feature" in df.columns else pd.Series("gene", index=df.index)
    genes = df[(feature == "gene").to_numpy()]
    if len(genes) == 0 and len(df):
        # e.g. UCSC's GTFs: exon/CDS lines only; a gene spans its lines
        genes = df.groupby(df["gene_id"].astype(str), sort=False, observed=True).agg(
            seqname=("seqname", "first"), start=("start", "min"), end=("end", "max"),
            strand=("strand", "first"), gene_name=("gene_name", "first"),
            gene_type=("gene_type", "first"), gene_version=("gene_version", "first"),
        ).reset_index()  # fmt: skip

    def text(col: str) -> np.ndarray:
        s = genes[col].astype(object)
        return s.where(s.notna(), np.nan).to_numpy(dtype=object)

    return pd.DataFrame(
        {
            "gene_id": genes["gene_id"].astype(str).to_numpy(dtype=object),
            **{c: text(c) for c in ("gene_name", "gene_type", "gene_version", "seqname")},
            "start": pd.array(genes["start"].to_numpy(), dtype="Int64"),
            "end": pd.array(genes["end"].to_numpy(), dtype="Int64"),
            "strand": text("strand"),
        }
    )


def gene_table(gtf) -> tuple[pd.DataFrame, str]:
    """Genes of a GTF file (or of a table from :func:`read_gtf`) with :data:`GENE_COLUMNS`, and a
    description of the source for the parameters."""
    if isinstance(gtf, pd.DataFrame):
        return _genes_of(gtf), "GTF table (DataFrame)"
    p = check_path(gtf)
    for features in (["gene"], ["transcript"], ["exon"]):
        lines, header = read_lines(p, features)
        if len(lines):
            break
    else:
        raise ValueError(
            f"{str(p)!r} has no gene, transcript or exon line; features seen: {_features_seen(p)}"
        )
    df = frame_from_lines(lines, p, _GENE_ATTRIBUTES, required=["gene_id"])
    desc = [h.lstrip("#!").strip() for h in header if h.strip("#! ")][:3]
    source = f"GTF {p.name}" + (f" ({'; '.join(desc)})" if desc else "")
    return _genes_of(df), source
