"""Shared test fixtures.

Real data comes from two places:

* ``tests/fixtures/`` (committed): compact real data and trimmed R references, so the core tests
  run on a fresh clone anywhere;
* ``../shared/data`` beside the checkout (or ``$BULKPY_SHARED_DATA``): the full datasets and R
  references used by the parity suite. Tests that need it skip with the reason printed
  (``pytest -ra``) when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(os.environ.get("BULKPY_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path inside ``../shared/data``; skips the test (with the reason) when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p} (set BULKPY_SHARED_DATA or place shared/ beside the checkout)")
    return p


def ref_path(dataset: str, name: str) -> Path:
    """An R reference file: the full one from ``../shared/data/<dataset>/r_reference`` when present,
    else the trimmed copy committed in ``tests/fixtures/<dataset>``; skip if neither exists."""
    full = SHARED / dataset / "r_reference" / name
    if full.exists():
        return full
    local = FIXTURES / dataset / name
    if local.exists():
        return local
    pytest.skip(f"reference {dataset}/{name} not available in {SHARED} nor in {FIXTURES}")


def read_ref(dataset: str, name: str, **kw) -> pd.DataFrame:
    """Read an R reference CSV (index = first column, R's ``NA`` as NaN)."""
    return pd.read_csv(ref_path(dataset, name), index_col=0, **kw)


@pytest.fixture(scope="session")
def _pasilla():
    import bulkpy as bk

    return bk.datasets.pasilla()


@pytest.fixture
def pasilla(_pasilla):
    return _pasilla.copy()


@pytest.fixture(scope="session")
def _airway():
    import bulkpy as bk

    return bk.datasets.airway()


@pytest.fixture
def airway(_airway):
    return _airway.copy()


@pytest.fixture(scope="session")
def _geuvadis85():
    import bulkpy as bk

    return bk.datasets.geuvadis85()


@pytest.fixture
def geuvadis85(_geuvadis85):
    return _geuvadis85.copy()


@pytest.fixture
def tmp_h5ad(tmp_path):
    return tmp_path / "roundtrip.h5ad"


def roundtrip(adata, path):
    """Write and read back an AnnData as h5ad."""
    import anndata as ad

    adata.write_h5ad(path)
    return ad.read_h5ad(path)


@pytest.fixture
def dask_client():
    """A ``distributed.LocalCluster`` of two worker processes of one thread each (as the 2-core CI
    machine has), its Client the default only during the test (closed afterwards, so that later
    tests run on their own schedulers)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit="3GiB"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
