"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/bench_<step>.py``; this
folder is then on ``sys.path``): package versions, best-of-n timing, the table row format, R
references and timings from ``../shared``, and the simulated two-group cohort of the linear-model
benchmarks."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AIRWAY_REF = SHARED / "airway" / "r_reference"
AIRWAY_CURRENT = SHARED / "airway" / "r_current"  # Bioconductor 3.23 (bulkpy's defaults)


def ver(name: str) -> str:
    """Installed version of a distribution, or ``"not installed"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def best(fn, repeat: int) -> tuple[float, object]:
    """(fastest wall time of ``repeat`` calls, the last result)."""
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def max_rel(ours, ref) -> float:
    """Largest relative difference (NaN ignored)."""
    ours = np.asarray(ours, dtype=float)
    ref = np.asarray(ref, dtype=float)
    return float(np.nanmax(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-300)))


def row(label, seconds, bulkpy_seconds, agree=""):
    """Print one line: tool, seconds, ratio to bulkpy, agreement."""
    ratio = f"{seconds / bulkpy_seconds:8.1f}x" if seconds and bulkpy_seconds else "        "
    s = "   n/a  " if seconds is None else f"{seconds:8.3f}"
    print(f"  {label:<44s}{s} s  {ratio}  {agree}")


def r_seconds(name: str, ref: Path = AIRWAY_REF) -> float | None:
    """R's time for step ``name`` from ``timings_r.csv.gz`` (None where absent)."""
    p = ref / "timings_r.csv.gz"
    if not p.exists():
        return None
    t = pd.read_csv(p, index_col=0)["seconds"]
    return float(t[name]) if name in t.index else None


def r_table(name: str, ref: Path = AIRWAY_REF) -> pd.DataFrame | None:
    """An R reference table (None where ``../shared`` is absent)."""
    p = ref / name
    return pd.read_csv(p, index_col=0) if p.exists() else None


def simulate_two_groups(n_genes: int, n_samples: int, seed: int = 0) -> ad.AnnData:
    """NB counts: two groups (10% of genes change), a continuous covariate ``age``, varying library
    sizes; ``layers["counts"]`` and ``X`` hold the counts."""
    rng = np.random.default_rng(seed)
    group = np.repeat(["A", "B"], n_samples // 2 + 1)[:n_samples]
    age = rng.normal(50, 10, n_samples)
    base = np.exp(rng.normal(3, 2, n_genes))
    lfc = np.where(rng.uniform(size=n_genes) < 0.1, rng.normal(0, 1.5, n_genes), 0.0)
    lib = rng.uniform(0.5, 1.5, n_samples)
    mu = base[None, :] * lib[:, None] * np.exp(np.outer(group == "B", lfc))
    disp = 0.05 + 1 / (base + 1)
    counts = rng.negative_binomial(1 / disp[None, :], 1 / (1 + mu * disp[None, :])).astype(np.float64)
    obs = pd.DataFrame(
        {"group": pd.Categorical(group, categories=["A", "B"]), "age": age}, index=[f"s{i}" for i in range(n_samples)]
    )
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.layers["counts"] = counts
    return adata
