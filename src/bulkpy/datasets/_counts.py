"""Bundled real count data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from anndata import AnnData

DATA = "bulkpy.datasets"


def data_path(name: str) -> Path:
    """Path of a file bundled in ``bulkpy/datasets/data``."""
    p = Path(str(resources.files(DATA).joinpath("data", name)))
    if not p.exists():
        raise FileNotFoundError(f"bundled data file {name!r} is missing from the installation ({p})")
    return p


def pasilla() -> AnnData:
    """Pasilla knock-down in *Drosophila* S2 cells: 7 samples × 14,599 genes, raw counts.

    Brooks et al. (2011) Genome Research 21:193, via the Bioconductor ``pasilla`` package (LGPL).
    Sample names are the cleaned ones that match the counts (the Bioconductor annotation file
    names them ``untreated1fb`` etc.). ``obs`` has ``condition`` (treated/untreated) and ``type``
    (single_read/paired_end); the design used by DESeq2's vignette is ``~ type + condition``.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers["counts"]``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> bk.datasets.pasilla().obs["condition"].value_counts().sort_index().tolist()
    [3, 4]
    """
    from ..io import read_counts

    return read_counts(data_path("pasilla_counts.tsv.gz"), samples=data_path("pasilla_coldata.csv"))


def airway() -> AnnData:
    """Airway smooth muscle cells treated with dexamethasone: 8 samples × 64,102 genes, raw counts.

    Himes et al. (2014) PLoS One 9:e99625, via the Bioconductor ``airway`` package (LGPL).
    Four cell lines (``cell``), each untreated and treated (``dex``: untrt/trt); the usual design is
    ``~ cell + dex``. Genes are Ensembl ids: use :func:`bulkpy.pp.annotate_genes` for symbols.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers["counts"]``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> bk.datasets.airway().shape
    (8, 64102)
    """
    from ..io import read_counts

    return read_counts(data_path("airway_counts.tsv.gz"), samples=data_path("airway_coldata.csv"))


def geuvadis85() -> AnnData:
    """GEUVADIS lymphoblastoid cell lines: 85 samples × 10,101 genes, raw counts, with sex.

    Lappalainen et al. (2013) Nature 501:506, as the Bioconductor DEGreport package's
    ``humanGender`` data (MIT): 85 individuals (41 female, 44 male), genes pre-filtered by
    DEGreport. A cohort large enough for cross-validated classification (sex is predictable from
    Y-linked genes) and for DE with outlier replacement (DESeq2 replaces Cook's outliers at ≥ 7
    replicates); the usual design is ``~ sex``.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers["counts"]`` and ``obs["sex"]``.

    Examples
    --------
    >>> import bulkpy as bk
    >>> adata = bk.datasets.geuvadis85()
    >>> adata.shape, adata.obs["sex"].value_counts().sort_index().tolist()
    ((85, 10101), [41, 44])
    """
    from ..io import read_counts

    return read_counts(data_path("geuvadis85_counts.tsv.gz"), samples=data_path("geuvadis85_coldata.csv"))
