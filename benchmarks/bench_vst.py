"""VST speed: ``bk.pp.vst`` vs PyDESeq2's ``DeseqDataSet.vst`` on airway (blind, parametric trend).

    python benchmarks/bench_vst.py                # airway (8 samples x 64,102 genes)
    python benchmarks/bench_vst.py --repeat 3 --skip-pydeseq2

Both start from raw counts and estimate size factors, gene-wise dispersions with the
intercept-only design, the parametric trend and the transformation. bulkpy's numba kernels are
compiled (or loaded from numba's cache) by a warm-up call on pasilla before timing; bulkpy's time
is the best of ``--repeat`` calls, PyDESeq2's is one call (it takes long). Also timed: bulkpy's
full DESeq2 dispersion fit (gene-wise, trend, prior, MAP) with the design ``~ cell + dex``.
Agreement with DESeq2's ``varianceStabilizingTransformation(dds, blind=TRUE)`` (from
``../shared/data/airway/r_reference`` when present) is printed for both packages.

``bk.pp.rlog`` (DESeq2's ``rlog``, blind) is timed on pasilla, airway and geuvadis85 beside DESeq2
1.52's time for ``rlog(dds, blind = TRUE)`` from ``../shared/data/<dataset>/r_current/timings_r.csv.gz``
(where the reference script ran it; PyDESeq2 has no rlog). ``--skip-rlog`` leaves it out.
Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import ver

import bulkpy as bk

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REF = SHARED / "airway" / "r_reference"


def r_vst(adata) -> np.ndarray | None:
    p = REF / "deseq2_vst_blind.csv.gz"
    if not p.exists():
        return None
    return pd.read_csv(p, index_col=0).loc[adata.var_names, adata.obs_names].to_numpy().T


def agreement(x: np.ndarray, r: np.ndarray | None) -> str:
    if r is None:
        return "n/a (no R reference)"
    d = np.abs(np.asarray(x, dtype=float) - r)
    return f"|diff| vs DESeq2: 99th pct {np.quantile(d, 0.99):.2e}, max {d.max():.2e}"


def r_rlog_seconds(dataset: str) -> float | None:
    p = SHARED / dataset / "r_current" / "timings_r.csv.gz"
    if not p.exists():
        return None
    t = pd.read_csv(p)
    row = t[t.iloc[:, 0] == "deseq2_rlog"]
    return None if row.empty else float(row.iloc[0, 1])


def bench_rlog(repeat: int) -> None:
    for name in ("pasilla", "airway", "geuvadis85"):
        adata = getattr(bk.datasets, name)()
        times = []
        for _ in range(repeat):
            a = adata.copy()
            t = time.perf_counter()
            bk.pp.rlog(a, progress=False)
            times.append(time.perf_counter() - t)
        t_bk, t_r = min(times), r_rlog_seconds(name)
        vs = "R: n/a" if t_r is None else f"DESeq2 1.52 rlog: {t_r:8.2f} s   speed-up {t_r / t_bk:.0f}x"
        print(f"bulkpy   bk.pp.rlog (blind) {name} {adata.n_obs} x {adata.n_vars}: {t_bk:6.2f} s   {vs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-pydeseq2", action="store_true")
    ap.add_argument("--skip-rlog", action="store_true")
    args = ap.parse_args()

    adata = bk.datasets.airway()
    print(f"airway: {adata.n_obs} samples x {adata.n_vars} genes; bulkpy {ver('bulkpy')}, pydeseq2 {ver('pydeseq2')}")
    ref = r_vst(adata)

    bk.pp.vst(bk.datasets.pasilla())  # compile / load the numba kernels
    times = []
    for _ in range(args.repeat):
        a = adata.copy()
        t = time.perf_counter()
        bk.pp.vst(a)
        times.append(time.perf_counter() - t)
    t_bk = min(times)
    print(f"bulkpy   bk.pp.vst (blind, parametric): {t_bk:8.2f} s   {agreement(a.layers['vst'], ref)}")

    from bulkpy._stats.deseq2.dispersion import estimate_dispersions
    from bulkpy._stats.deseq2.size_factors import deseq2_size_factors

    X = np.column_stack(
        [np.ones(adata.n_obs)]
        + [(adata.obs["cell"] == c).to_numpy(float) for c in sorted(adata.obs["cell"].unique())[1:]]
        + [(adata.obs["dex"] == "trt").to_numpy(float)]
    )
    counts = np.asarray(adata.layers["counts"])
    sf = deseq2_size_factors(counts)
    t = time.perf_counter()
    estimate_dispersions(counts, X, size_factors=sf)
    print(f"bulkpy   full dispersion fit (~ cell + dex, gene-wise + trend + prior + MAP): {time.perf_counter() - t:6.2f} s")

    if not args.skip_rlog:
        bench_rlog(args.repeat)
    if args.skip_pydeseq2:
        return
    from pydeseq2.dds import DeseqDataSet

    counts_df = pd.DataFrame(counts.astype(int), index=adata.obs_names, columns=adata.var_names)
    meta = adata.obs.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        dds = DeseqDataSet(counts=counts_df, metadata=meta, design="~ dex", quiet=True)
        dds.vst(use_design=False, fit_type="parametric")
        t_py = time.perf_counter() - t
    print(f"PyDESeq2 DeseqDataSet.vst (blind, parametric): {t_py:8.2f} s   {agreement(dds.layers['vst_counts'], ref)}")
    print(f"speed-up bulkpy / PyDESeq2: {t_py / t_bk:.1f}x")


if __name__ == "__main__":
    main()
