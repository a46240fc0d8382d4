"""Pseudobulk DE per cell type, from cells to results: accuracy on simulated truth, and speed.

    python benchmarks/bench_pseudobulk_de.py truth                # FDR and power per method and cell type
    python benchmarks/bench_pseudobulk_de.py speed --cells 200000 --genes 10000 --donors 20 --cell-types 10

The data come from ``tests/sim_pseudobulk.py``: donors with random effects (each with a control and a
stimulated sample), unequal cells per unit, cell type-specific DE with known log2 fold changes.

``truth``: for each cell type, the false discovery proportion (FDP) and power (true positives / all
true DE genes of the cell type, so genes too weakly expressed to pass the filter count as missed) at
``padj < 0.05`` of ``bk.tl.deseq``, ``bk.tl.edger`` (QL) and ``bk.tl.voom``, each with
``split_by="cell_type"`` and the paired design ``~ donor + condition``, and of PyDESeq2 run in
decoupler's pseudobulk tutorial loop (``dc.pp.pseudobulk`` → per cell type ``dc.pp.filter_by_expr``
→ ``DeseqDataSet`` → ``DeseqStats``) on the same data, averaged over ``--reps`` simulations.

``speed``: wall time and traced peak memory (``tracemalloc``: numpy/scipy buffers, not numba's) of
``bk.pp.pseudobulk`` + ``bk.tl.deseq(split_by=)`` against ``decoupler.pp.pseudobulk`` + the
PyDESeq2 loop, in separate processes, on one simulated data set. Not a test: numbers are printed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import ver
from sim_pseudobulk import fdr_power, simulate

import bulkpy as bk

CONTRAST = ["condition", "stim", "ctrl"]
DESIGN = "~ donor + condition"


def bulkpy_all(cells, methods=("deseq", "edger", "voom")) -> dict[str, pd.DataFrame]:
    """Cells → pseudobulk → every method per cell type; long tables (group, gene, padj...)."""
    pb = bk.pp.pseudobulk(cells, sample_key="sample", groups_key="cell_type")
    out = {}
    for m in methods:
        getattr(bk.tl, m)(pb, design=DESIGN, contrast=CONTRAST, split_by="cell_type")
        out[m] = bk.get.de_df(pb, m, group="all")
    return out


def pydeseq2_loop(cells, n_cpus: int = 2) -> pd.DataFrame:
    """decoupler's pseudobulk tutorial: pseudobulk, then per cell type filter and PyDESeq2."""
    import decoupler as dc
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    pdata = dc.pp.pseudobulk(cells, sample_col="sample", groups_col="cell_type", mode="sum")
    dc.pp.filter_samples(pdata, min_cells=10, min_counts=0)
    frames = []
    for ct in pdata.obs["cell_type"].cat.categories if hasattr(pdata.obs["cell_type"], "cat") else sorted(pdata.obs["cell_type"].unique()):
        sub = pdata[pdata.obs["cell_type"] == ct].copy()
        dc.pp.filter_by_expr(sub, group="condition", min_count=10, min_total_count=15)
        counts = pd.DataFrame(np.asarray(sub.X).astype(int), index=sub.obs_names, columns=sub.var_names)
        inf = DefaultInference(n_cpus=n_cpus)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dds = DeseqDataSet(counts=counts, metadata=sub.obs.copy(), design=DESIGN, quiet=True, inference=inf)
            dds.deseq2()
            st = DeseqStats(dds, contrast=CONTRAST, quiet=True, inference=inf)
            st.summary()
        res = st.results_df.copy()
        res.insert(0, "gene", res.index.astype(str))
        res.insert(0, "group", str(ct))
        frames.append(res.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def truth(args) -> None:
    rows = []
    for rep in range(args.reps):
        cells = simulate(
            n_donors=args.donors, n_cell_types=args.cell_types, n_genes=args.genes, mean_cells=args.mean_cells,
            seed=100 + rep,
        )  # fmt: skip
        results = bulkpy_all(cells)
        if not args.skip_pydeseq2:
            results["PyDESeq2 (decoupler loop)"] = pydeseq2_loop(cells)
        for method, long in results.items():
            for ct, part in long.groupby("group"):
                q = pd.Series(pd.to_numeric(part["padj"], errors="coerce").to_numpy(), index=part["gene"])
                called = (q.reindex(cells.var_names) < args.alpha).to_numpy()
                fdp, power, n = fdr_power(called, cells.var[f"de_{ct}"].to_numpy())
                rows.append({"rep": rep, "method": method, "cell_type": ct, "FDP": fdp, "power": power, "calls": n})
        print(f"  replicate {rep + 1}/{args.reps} done", flush=True)
    df = pd.DataFrame(rows)
    table = df.groupby(["method", "cell_type"], sort=False)[["FDP", "power", "calls"]].mean()
    print(f"\nFDR (mean FDP) and power at padj < {args.alpha}, {args.reps} simulations of {args.donors} donors x 2 "
          f"conditions x {args.cell_types} cell types x {args.genes} genes (mean {args.mean_cells} cells per unit), "
          f"design {DESIGN}:")  # fmt: skip
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
        print(table.to_string())
        print("\nall cell types:")
        print(df.groupby("method", sort=False)[["FDP", "power", "calls"]].mean().to_string())


def _speed_worker(tool: str, args, q) -> None:
    logging.disable(logging.WARNING)
    cells = simulate(
        n_donors=args.donors, n_cell_types=args.cell_types, n_genes=args.genes, mean_cells=args.mean_cells,
        umis_per_cell=args.umis, seed=1,
    )  # fmt: skip
    if tool == "bulkpy":  # compile the numba kernels first, as a session would have
        small = simulate(n_donors=3, n_cell_types=2, n_genes=300, mean_cells=30, seed=2)
        bulkpy_all(small, methods=("deseq",))
    tracemalloc.start()
    t = time.perf_counter()
    if tool == "bulkpy":
        res = bulkpy_all(cells, methods=("deseq",))["deseq"]
    else:
        res = pydeseq2_loop(cells)
    wall = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    q.put({"tool": tool, "seconds": wall, "peak_mb": peak, "cells": cells.n_obs, "genes": cells.n_vars,
           "nnz": int(cells.X.nnz), "tested": int(res["padj"].notna().sum())})  # fmt: skip


def speed(args) -> None:
    ctx = mp.get_context("spawn")
    print(f"bulkpy {ver('bulkpy')}, decoupler {ver('decoupler')}, pydeseq2 {ver('pydeseq2')}; "
          f"{args.donors} donors x 2 conditions x {args.cell_types} cell types, {args.genes} genes")  # fmt: skip
    out = []
    for tool in ("bulkpy", "pydeseq2"):
        if tool == "pydeseq2" and args.skip_pydeseq2:
            continue
        q = ctx.Queue()
        p = ctx.Process(target=_speed_worker, args=(tool, args, q))
        p.start()
        r = q.get()
        p.join()
        out.append(r)
        print(f"  {tool:<10s} {r['seconds']:8.1f} s  peak {r['peak_mb']:8.0f} MB  ({r['cells']} cells, {r['nnz']} "
              f"non-zeros, {r['tested']} gene x cell type padj)", flush=True)  # fmt: skip
    if len(out) == 2:
        print(f"  PyDESeq2 loop / bulkpy: {out[1]['seconds'] / out[0]['seconds']:.1f}x time, "
              f"{out[1]['peak_mb'] / out[0]['peak_mb']:.1f}x peak memory")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["truth", "speed"])
    ap.add_argument("--donors", type=int, default=None)
    ap.add_argument("--cell-types", type=int, default=None)
    ap.add_argument("--genes", type=int, default=None)
    ap.add_argument("--mean-cells", type=float, default=None)
    ap.add_argument("--cells", type=int, default=None, help="speed: about this many cells (sets --mean-cells)")
    ap.add_argument("--umis", type=float, default=1500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--skip-pydeseq2", action="store_true")
    args = ap.parse_args()
    defaults = {"truth": (8, 5, 4000, 150), "speed": (20, 10, 10000, 500)}[args.mode]
    for name, d in zip(("donors", "cell_types", "genes", "mean_cells"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, d)
    if args.cells is not None:
        args.mean_cells = args.cells / (2 * args.donors * args.cell_types)
    (truth if args.mode == "truth" else speed)(args)


if __name__ == "__main__":
    main()
