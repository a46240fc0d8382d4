"""Scale-out: ``bk.tl.deseq`` (Wald) and ``bk.tl.voom`` on cohorts that are never whole in memory.

    python benchmarks/bench_scale.py                                  # 10k samples, threaded and LocalCluster
    python benchmarks/bench_scale.py --samples 10000 30000 100000 --schedulers threads cluster
    python benchmarks/bench_scale.py --samples 10000 --layouts genes samples  # also from a sample-chunked store
    python benchmarks/bench_scale.py --samples 10000 --check-memory            # and the in-memory run, compared

The cohort is bench_deseq's model (20,000 genes, negative binomial, log-normal means, dispersions
``0.05 + 2 / mean`` with noise, 4 batches, two conditions, 10% of genes changed; ``~ batch +
condition``), generated block by block: each chunk of genes draws its genes' parameters and counts
from its own seed, so the matrix exists only a chunk at a time and every run sees the same numbers.
It is written once (not timed; drawing negative binomial counts costs more than the analysis) to
zarr stores under ``--store``: gene-major (all samples × 500 genes per chunk, the layout
docs/scaling.md recommends) and, with ``--layouts samples``, sample-major (1,000 samples × all
genes per chunk, the layout of a store that grew by adding samples). The runs read them lazily.

Each run is a fresh subprocess: with the threaded scheduler (``dask.config.set(scheduler="threads")``,
2 threads) or on a ``distributed.LocalCluster`` of 2 worker processes × 1 thread with a 4 GB memory
limit each. Printed per run: wall time, peak resident memory of the client process (``ru_maxrss``)
and, on the cluster, of each worker process. ``--check-memory`` also runs the in-memory call on the
same counts and reports the largest difference (expected: 0, bitwise). Not a test: numbers are
printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

N_GENES = 20_000
GENE_CHUNK = 500
SEED = 0


def _chunk_counts(n_samples: int, lo: int, hi: int, seed: int) -> np.ndarray:
    """Counts of genes ``lo:hi`` (samples × genes, int32) from the chunk's own seed."""
    g = hi - lo
    rng = np.random.default_rng([seed, lo])
    srng = np.random.default_rng([seed, 10**9])  # per-sample quantities, the same in every chunk
    cond_b = (np.arange(n_samples) % 2) == 1
    batch = np.minimum(np.arange(n_samples) * 4 // n_samples, 3)
    sf = np.exp(srng.normal(0.0, 0.2, n_samples))
    mean = np.exp(rng.normal(4.0, 2.0, g))
    disp = (0.05 + 2.0 / mean) * np.exp(rng.normal(0.0, 0.5, g))
    lfc = np.where(rng.random(g) < 0.1, rng.normal(0.0, 1.0, g), 0.0)
    beff = rng.normal(0.0, 0.2, (4, g))
    mu = sf[:, None] * mean[None, :] * np.exp(np.log(2) * lfc[None, :] * cond_b[:, None] + beff[batch])
    r = 1.0 / disp
    return rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + mu)).astype(np.int32)


def cohort(n_samples: int, *, seed: int = SEED):
    """The simulated cohort as AnnData with a lazy dask ``layers["counts"]`` (genes in chunks)."""
    import anndata as ad
    import dask.array as da
    from dask import delayed

    cols = []
    for lo in range(0, N_GENES, GENE_CHUNK):
        hi = min(N_GENES, lo + GENE_CHUNK)
        part = delayed(_chunk_counts, pure=True)(n_samples, lo, hi, seed)
        cols.append(da.from_delayed(part, shape=(n_samples, hi - lo), dtype=np.int32))
    counts = da.concatenate(cols, axis=1)
    cond = np.where(np.arange(n_samples) % 2 == 1, "B", "A")
    batch = np.minimum(np.arange(n_samples) * 4 // n_samples, 3)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(cond), "batch": pd.Categorical([f"b{b}" for b in batch])},
        index=[f"s{i}" for i in range(n_samples)],
    )
    adata = ad.AnnData(obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    adata.layers["counts"] = counts
    return adata


def store_path(store: str, n_samples: int, layout: str) -> str:
    return os.path.join(store, f"{layout}_{n_samples}.zarr")


def write_store(n_samples: int, store: str, layout: str) -> float:
    """The cohort written to a zarr store (gene- or sample-major) unless it exists; seconds taken."""
    import dask
    import dask.array as da

    path = store_path(store, n_samples, layout)
    if os.path.exists(os.path.join(path, ".zarray")) or os.path.exists(os.path.join(path, "zarr.json")):
        return 0.0
    t = time.perf_counter()
    x = cohort(n_samples).layers["counts"]
    x = x if layout == "genes" else x.rechunk((1000, N_GENES))
    with dask.config.set(scheduler="threads", num_workers=2):
        da.to_zarr(x, path, overwrite=True)
    return time.perf_counter() - t


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(method: str, adata):
    import bulkpy as bk

    if method == "deseq":
        bk.tl.deseq(adata, design="~ batch + condition", contrast=["condition", "B", "A"], progress=False)
        return bk.get.de_df(adata, "deseq")
    bk.tl.voom(adata, design="~ batch + condition", contrast=["condition", "B", "A"])
    return bk.get.de_df(adata, "voom")


def worker(args) -> dict:
    import dask
    import dask.array as da

    adata = cohort(args.n)
    if args.zarr:
        adata.layers["counts"] = da.from_zarr(args.zarr)
    out = {"n": args.n, "method": args.method, "scheduler": args.scheduler, "source": args.layout or "generated"}
    if args.scheduler == "cluster":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="4GB", dashboard_address=":0") as cl,
            Client(cl) as client,
        ):
            t = time.perf_counter()
            res = _run(args.method, adata)
            out["seconds"] = time.perf_counter() - t
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            out["worker_peak_mb"] = sorted(round(v) for v in peaks.values())
    else:
        with dask.config.set(scheduler="threads", num_workers=2):
            t = time.perf_counter()
            res = _run(args.method, adata)
            out["seconds"] = time.perf_counter() - t
    out["client_peak_mb"] = round(_peak_mb())
    if args.check_memory:
        mem = cohort(args.n)
        mem.layers["counts"] = adata.layers["counts"].compute()
        ref = _run(args.method, mem)
        num = res.select_dtypes("number").to_numpy(float)
        rnum = ref.select_dtypes("number").to_numpy(float)
        same = np.array_equal(num, rnum, equal_nan=True)
        out["in_memory_equal"] = bool(same)
        with np.errstate(all="ignore"):
            out["in_memory_max_rel"] = float(np.nanmax(np.abs(num - rnum) / np.maximum(np.abs(rnum), 1e-300)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[10_000])
    ap.add_argument("--methods", nargs="+", default=["deseq", "voom"], choices=["deseq", "voom"])
    ap.add_argument("--schedulers", nargs="+", default=["threads", "cluster"], choices=["threads", "cluster"])
    ap.add_argument("--layouts", nargs="+", default=["genes"], choices=["genes", "samples"])
    ap.add_argument("--store", default="/tmp/bulkpy_bench_scale", help="where the zarr stores are written (once)")
    ap.add_argument("--check-memory", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--scheduler", help=argparse.SUPPRESS)
    ap.add_argument("--zarr", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layout", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from importlib.metadata import version

    print(f"bulkpy {version('bulkpy')}, dask {version('dask')}, distributed {version('distributed')}, {os.cpu_count()} CPUs")
    print(f"{'samples':>8} {'genes':>6} {'method':>6} {'scheduler':>9} {'source':>9} {'seconds':>8} {'client MB':>9} "
          f"{'worker MB':>12} {'= in memory':>11}")  # fmt: skip
    os.makedirs(args.store, exist_ok=True)
    for n in args.samples:
        for layout in args.layouts:
            took = write_store(n, args.store, layout)
            if took:
                print(f"(the {layout}-major store of {n} samples written in {took:.0f} s, not timed below)", flush=True)
        for method in args.methods:
            for sched in args.schedulers:
                for layout in args.layouts:
                    cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--method", method, "--scheduler", sched,
                           "--zarr", store_path(args.store, n, layout), "--layout", layout]  # fmt: skip
                    if args.check_memory and sched == "threads" and layout == "genes":
                        cmd.append("--check-memory")
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode:
                        print(f"{n:>8} {N_GENES:>6} {method:>6} {sched:>9} failed: {p.stderr.strip().splitlines()[-1:]}")
                        continue
                    r = json.loads(p.stdout.strip().splitlines()[-1])
                    eq = r.get("in_memory_equal")
                    eq_s = "" if eq is None else ("bitwise" if eq else f"{r['in_memory_max_rel']:.1e}")
                    print(
                        f"{n:>8} {N_GENES:>6} {method:>6} {sched:>9} {r['source']:>9} {r['seconds']:>8.1f} "
                        f"{r['client_peak_mb']:>9} {str(r.get('worker_peak_mb', '')):>12} {eq_s:>11}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
