"""Gene set collections: bundled (Reactome, GO, PROGENy) and downloaded on demand (MSigDB)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from .._genesets import GeneSets
from ._counts import data_path

logger = logging.getLogger(__name__)

REACTOME_FILE = "ReactomePathways_2024-09-18.gmt.gz"
GO_FILE = "go_human_orgHs3.16_2022-09.gmt.gz"
PROGENY_FILES = {"human": "progeny_human_top500.tsv.gz", "mouse": "progeny_mouse_top500.tsv.gz"}
_GO_ONTOLOGIES = ("BP", "MF", "CC")

MSIGDB_BASE_URL = "https://data.broadinstitute.org/gsea-msigdb/msigdb/release"
MSIGDB_DEFAULT_VERSION = "2025.1"
_MSIGDB_SPECIES = {"human": "Hs", "mouse": "Mm"}


def reactome() -> GeneSets:
    """Reactome pathways, human (release of 2024-09-18): 2,694 gene sets of gene symbols.

    ``ReactomePathways.gmt`` as downloaded from https://reactome.org/download-data on 2024-09-18:
    every human pathway (top-level and nested) with the symbols of its participating genes.
    Infection pathways also list a few pathogen genes (e.g. HIV ``gag``, ``vpr``). The
    descriptions hold the Reactome stable ids (``R-HSA-...``).

    Licence: Creative Commons Attribution 4.0 (CC BY 4.0), https://reactome.org/license. Cite
    Milacic et al. (2024) The Reactome Pathway Knowledgebase 2024. Nucleic Acids Res 52:D672.

    Returns
    -------
    The pathways as a ``GeneSets``: an ordered ``dict`` pathway name -> list of gene symbols with
    ``.descriptions`` (name -> stable id) and ``.to_frame()`` (decoupler's long format), as
    :func:`bulkpy.io.read_gmt` returns.

    Examples
    --------
    >>> import bulkpy as bk
    >>> sets = bk.datasets.reactome()
    >>> len(sets), sets.descriptions["Glycolysis"]
    (2694, 'R-HSA-70171')
    >>> sets.to_frame().columns.tolist()
    ['source', 'target', 'weight']
    """
    from ..io import read_gmt

    return read_gmt(data_path(REACTOME_FILE))


def go(ontology: str = "BP") -> GeneSets:
    """Gene Ontology gene sets, human, from org.Hs.eg.db 3.16 (NCBI Gene 2022-09, GO 2022-07).

    One set per GO term with the symbols of the genes annotated to the term *or any of its
    descendants* (annotations propagated up the ontology, as ``org.Hs.egGO2ALLEGS`` does, all
    evidence codes), kept when it has 5 to 2,000 genes. Set names are ``"GO:0006096 glycolytic
    process"`` (id and term from GO.db 3.16); the descriptions hold the ontology. Built from
    Bioconductor's org.Hs.eg.db 3.16 and GO.db 3.16 (R 4.2) with Entrez ids mapped to symbols by
    org.Hs.eg.db.

    Sets per ontology: biological process (BP) 9,373; molecular function (MF) 1,963;
    cellular component (CC) 1,195.

    Licence: GO annotations and terms are CC BY 4.0 (http://geneontology.org/docs/go-citation-policy/;
    cite the Gene Ontology Consortium (2023) Genetics 224:iyad031); NCBI Gene data are public domain.

    Parameters
    ----------
    ontology
        ``"BP"`` (biological process), ``"MF"`` (molecular function) or ``"CC"`` (cellular component).

    Returns
    -------
    The terms of that ontology as a ``GeneSets`` (ordered ``dict`` term -> list of gene symbols,
    with ``.descriptions`` and ``.to_frame()``), in GO id order.

    Examples
    --------
    >>> import bulkpy as bk
    >>> mf = bk.datasets.go("MF")
    >>> len(mf), set(mf.descriptions.values())
    (1963, {'MF'})
    """
    from .._genesets import parse_gmt as _parse_gmt

    if not isinstance(ontology, str) or ontology.upper() not in _GO_ONTOLOGIES:
        raise ValueError(f"ontology={ontology!r} is not a GO ontology; choose one of {list(_GO_ONTOLOGIES)}")
    ontology = ontology.upper()
    return _parse_gmt(data_path(GO_FILE), keep=lambda description: description == ontology)


def progeny(organism: str = "human", *, top: int = 500, thr_padj: float = 0.05) -> pd.DataFrame:
    """PROGENy pathway footprints: 14 signalling pathways, weighted target genes (symbols).

    The footprint models of PROGENy (Schubert et al. 2018, Nat Commun 9:20; Holland et al. 2020,
    BBA Gene Regul Mech 1863:194431): for each pathway (Androgen, EGFR, Estrogen, Hypoxia,
    JAK-STAT, MAPK, NFkB, p53, PI3K, TGFb, TNFa, Trail, VEGF, WNT) the genes most responsive to
    its perturbation, with the fitted z-score as weight. Bundled: the 500 genes per pathway with
    the smallest p-values from ``model_human_full`` / ``model_mouse_full`` of Bioconductor
    ``progeny`` 1.20 (Debian r-bioc-progeny 1.20.0+ds-1). Licence: Apache-2.0, copyright
    2017-2021 M. Schubert, A. Valdeolivas, C. H. Holland, I. Bulanov, A. Dugourd.

    The table is decoupler's (``decoupler.op.progeny``, decoupler 2.2), so it feeds
    ``decoupler.mt.ulm`` / ``mlm`` directly: per pathway the ``top`` genes with the smallest
    p-values (a stable sort, so ties keep the bundled order; R's ``getModel`` would keep every gene
    tied at the cut-off), then those with p-value below ``thr_padj`` (decoupler's default 0.05;
    R's ``progeny`` does not filter: pass ``thr_padj=1`` to get all ``top`` genes).

    Parameters
    ----------
    organism
        ``"human"`` or ``"mouse"``.
    top
        Genes per pathway, 1 to 500 (only the top 500 are bundled; PROGENy's recommended model).
    thr_padj
        Keep genes with ``padj`` (the model's p-value) strictly below this, in (0, 1].

    Returns
    -------
    A DataFrame with columns ``source`` (pathway), ``target`` (gene symbol), ``weight`` and
    ``padj`` (the p-value of the gene in the model), sorted by pathway then p-value. With the
    defaults, human: 6,571 rows (12 pathways with 500 genes, Trail 294, WNT 277); with
    ``thr_padj=1``, 14 x 500 rows.

    Examples
    --------
    >>> import bulkpy as bk
    >>> net = bk.datasets.progeny(thr_padj=1)
    >>> net.shape, net["source"].nunique()
    ((7000, 4), 14)
    >>> bk.datasets.progeny(top=10).head(2)[["source", "target"]].values.tolist()
    [['Androgen', 'TMPRSS2'], ['Androgen', 'NKX3-1']]
    """
    if not isinstance(organism, str) or organism.lower() not in PROGENY_FILES:
        raise ValueError(f"organism={organism!r} is not available for PROGENy; choose one of {list(PROGENY_FILES)}")
    if isinstance(top, bool) or not isinstance(top, int | np.integer):
        raise TypeError(f"top must be an integer from 1 to 500, got {top!r}")
    if not 1 <= top <= 500:
        raise ValueError(f"top={top} is out of range: 1 to 500 genes per pathway are bundled")
    if isinstance(thr_padj, bool) or not isinstance(thr_padj, int | float | np.integer | np.floating):
        raise TypeError(f"thr_padj must be a number in (0, 1], got {thr_padj!r}")
    if not 0 < thr_padj <= 1:
        raise ValueError(f"thr_padj={thr_padj} is out of range; use a number in (0, 1]")
    raw = pd.read_csv(data_path(PROGENY_FILES[organism.lower()]), sep="\t", dtype={"gene": str, "pathway": str})
    net = raw.rename(columns={"pathway": "source", "gene": "target", "p.value": "padj"})
    net = net.sort_values("padj", kind="stable").groupby("source", sort=False).head(int(top))
    net = net.sort_values(["source", "padj"], kind="stable")
    net = net.loc[net["padj"] < thr_padj, ["source", "target", "weight", "padj"]]
    net = net.drop_duplicates(["source", "target"]).reset_index(drop=True)
    net["source"] = net["source"].astype(object)
    net["target"] = net["target"].astype(object)
    return net


# --------------------------------------------------------------------------------------------
# MSigDB, downloaded on demand


def default_cache_dir() -> Path:
    """``$BULKPY_CACHE_DIR``, else ``$XDG_CACHE_HOME/bulkpy``, else ``~/.cache/bulkpy``."""
    env = os.environ.get("BULKPY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bulkpy"


def msigdb_url(collection: str, version: str = MSIGDB_DEFAULT_VERSION, species: str = "human") -> str:
    """The public URL of an MSigDB gene-symbol GMT file (checked arguments, no network)."""
    if not isinstance(collection, str) or not re.fullmatch(r"[a-z][a-z0-9]*(\.[a-z0-9_]+)+", collection):
        hint = f" (did you mean {collection.lower() + '.all'!r}?)" if isinstance(collection, str) and "." not in collection else ""
        raise ValueError(
            f"collection={collection!r} is not an MSigDB collection file name{hint}; use e.g. 'h.all', "
            "'c2.cp.reactome', 'c2.cp.kegg_medicus', 'c5.go.bp', 'c7.all' (mouse: 'mh.all', 'm2.cp.reactome', ...)"
        )
    if not isinstance(species, str) or species.lower() not in _MSIGDB_SPECIES:
        raise ValueError(f"species={species!r} is not available from MSigDB; choose one of {list(_MSIGDB_SPECIES)}")
    species = species.lower()
    if not isinstance(version, str):
        raise TypeError(f"version must be a string such as {MSIGDB_DEFAULT_VERSION!r}, got {version!r}")
    new = re.fullmatch(r"(\d{4})\.(\d+)", version)
    old = re.fullmatch(r"[1-7]\.\d+(\.\d+)?", version)
    if not (new or old):
        raise ValueError(
            f"version={version!r} is not an MSigDB release; use e.g. {MSIGDB_DEFAULT_VERSION!r} "
            "(releases since 2022.1, human 'Hs' and mouse 'Mm') or '7.5.1' (older, human only)"
        )
    if species == "mouse" and not collection.startswith("m"):
        raise ValueError(
            f"mouse MSigDB collections start with 'm' (e.g. 'mh.all', 'm2.cp.reactome'); got {collection!r}. "
            f"Did you mean {'m' + collection[1:] if collection.startswith('c') else 'm' + collection!r}?"
        )
    if species == "human" and collection.startswith("m"):
        raise ValueError(f"{collection!r} is a mouse collection; pass species='mouse' (human collections: 'h.all', 'c2...')")
    if old:
        if species != "human":
            raise ValueError(f"MSigDB {version} has human collections only; mouse collections start with release 2022.1")
        return f"{MSIGDB_BASE_URL}/{version}/{collection}.v{version}.symbols.gmt"
    tag = f"{version}.{_MSIGDB_SPECIES[species]}"
    return f"{MSIGDB_BASE_URL}/{tag}/{collection}.v{tag}.symbols.gmt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Fetch ``url`` into ``dest`` through a temporary file, so an interrupted download leaves no cache entry."""
    from .. import __version__

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    req = urllib.request.Request(url, headers={"User-Agent": f"bulkpy/{__version__}"})
    logger.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise ValueError(
            f"could not download {url} (HTTP {e.code} {e.reason}); check the collection and version names "
            "on https://www.gsea-msigdb.org/gsea/msigdb, or pass url= (a file:// URL works for a local copy)"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        if urllib.parse.urlparse(url).scheme == "file":
            raise FileNotFoundError(f"could not read {url}: {reason}") from None
        raise ConnectionError(
            f"could not download {url}: {reason}. Without network, download the GMT elsewhere and pass "
            "url='file:///path/to/file.gmt' (or copy it into the cache folder)"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def msigdb(
    collection: str,
    *,
    version: str = MSIGDB_DEFAULT_VERSION,
    species: str = "human",
    cache_dir=None,
    url: str | None = None,
    sha256: str | None = None,
) -> GeneSets:
    """Download (once) and read an MSigDB gene set collection (gene symbols).

    The GMT file is fetched from MSigDB's public URL,
    ``https://data.broadinstitute.org/gsea-msigdb/msigdb/release/<version>.<Hs|Mm>/<collection>.v<version>.<Hs|Mm>.symbols.gmt``
    (releases before 2022.1: ``release/<version>/<collection>.v<version>.symbols.gmt``), stored in
    ``cache_dir`` and read from there on later calls. The file is written through a temporary file,
    so an interrupted download leaves nothing behind. Nothing is bundled: check the MSigDB licence
    terms for the collection you use (https://www.gsea-msigdb.org/gsea/msigdb_license_terms.jsp;
    most collections are CC BY 4.0, some, e.g. KEGG, are not) and cite Liberzon et al. (2015)
    Cell Syst 1:417 and Subramanian et al. (2005) PNAS 102:15545.

    Parameters
    ----------
    collection
        The collection's file name stem: ``"h.all"`` (Hallmark), ``"c2.cp.reactome"``,
        ``"c5.go.bp"``, ``"c7.all"``, ...; mouse collections start with ``m`` (``"mh.all"``).
    version
        MSigDB release, e.g. ``"2025.1"`` (the default; releases from 2022.1 exist for human and
        mouse) or ``"7.5.1"`` (older releases, human only). Pin it for reproducible results.
    species
        ``"human"`` or ``"mouse"``.
    cache_dir
        Folder for downloaded files; default ``$BULKPY_CACHE_DIR``, else
        ``$XDG_CACHE_HOME/bulkpy``, else ``~/.cache/bulkpy``. Files go to its ``msigdb`` subfolder.
    url
        Download from here instead (any URL urllib opens, including ``file://`` for a local copy);
        ``collection``, ``version`` and ``species`` are then not used to find the file.
    sha256
        Expected SHA-256 of the file (64 hex digits). Checked after the download and on every
        cached read; on a mismatch the cached file is removed and a ``ValueError`` raised.

    Returns
    -------
    The collection as a ``GeneSets`` (ordered ``dict`` set name -> list of gene symbols, with
    ``.descriptions`` holding MSigDB's URL of each set and ``.to_frame()``), as
    :func:`bulkpy.io.read_gmt` returns.

    Examples
    --------
    Read a local GMT through the cache (``url=`` accepts ``file://``; without it the file is
    downloaded from MSigDB):

    >>> import tempfile, pathlib
    >>> import bulkpy as bk
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> bk.io.write_gmt({"HALLMARK_TOY": ["A", "B", "C"]}, tmp / "toy.gmt")
    >>> sets = bk.datasets.msigdb("h.all", url=(tmp / "toy.gmt").as_uri(), cache_dir=tmp / "cache")
    >>> sets["HALLMARK_TOY"]
    ['A', 'B', 'C']
    """
    from ..io import read_gmt

    if url is None:
        src = msigdb_url(collection, version, species)
        fname = src.rsplit("/", 1)[1]
    else:
        if not isinstance(url, str) or not urllib.parse.urlparse(url).scheme:
            raise ValueError(f"url must be a full URL such as 'https://...' or 'file:///path/file.gmt', got {url!r}")
        src = url
        base = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]) or "download.gmt"
        fname = hashlib.sha1(url.encode()).hexdigest()[:12] + "-" + re.sub(r"[^A-Za-z0-9._-]", "_", base)
    if sha256 is not None:
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
        sha256 = sha256.lower()
    folder = (default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()) / "msigdb"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fname

    if path.exists() and sha256 is not None and _sha256(path) != sha256:
        logger.warning("cached %s does not match the expected sha256; downloading it again", path)
        path.unlink()
    if not path.exists():
        _download(src, path)
        if sha256 is not None:
            got = _sha256(path)
            if got != sha256:
                path.unlink()
                raise ValueError(
                    f"sha256 mismatch for {src}: expected {sha256}, got {got}. The file was removed from the "
                    "cache; check the hash (MSigDB may have re-issued the file) or the URL."
                )
    try:
        return read_gmt(path)
    except ValueError as e:
        path.unlink()
        raise ValueError(f"{src} did not give a valid GMT file ({e}); the cached copy was removed") from None
