"""DESeq2 speed: ``bk.tl.deseq`` vs PyDESeq2 (``DeseqDataSet.deseq2`` + ``DeseqStats.summary``).

    python benchmarks/bench_deseq.py                       # pasilla, airway, geuvadis85, sim100, sim1000, sim10000
    python benchmarks/bench_deseq.py --datasets pasilla sim100 --pydeseq2-timeout 600
    python benchmarks/bench_deseq.py --skip-pydeseq2
    python benchmarks/bench_deseq.py --datasets sim100 sim1000 --run-r   # also time R's DESeq2 here

Each run is a fresh subprocess (``--worker``) so that its wall time and peak memory (``ru_maxrss``
of that process; PyDESeq2's joblib workers are separate processes and not included) are its own.
Both tools start from raw counts in an AnnData and run the whole pipeline: size factors,
dispersions (gene-wise, trend, MAP), the GLM fit and Wald test, Cook's distances (and outlier
replacement with 7 or more replicates per cell), results for one contrast with independent
filtering. A warm-up call on 500 pasilla genes precedes the timed call in each worker (bulkpy's
numba kernels are loaded from numba's cache, PyDESeq2's joblib pool is started), and is not timed.
PyDESeq2 uses ``DefaultInference(n_cpus=2)``; bulkpy uses the two cores through a thread pool
running its GIL-free numba kernels on chunks of genes.

Datasets: pasilla (7 × 14,599, ``~ type + condition``), airway (8 × 64,102, ``~ cell + dex``),
geuvadis85 (85 × 10,101, ``~ sex``; needs ``../shared/data``), and simulated cohorts ``simN`` of
20,000 genes × N samples (negative binomial, log-normal means, dispersions ``0.05 + 2 / mean``
with noise, 4 batches, two conditions, 10% of genes changed; ``~ batch + condition``; numpy seed 0).
R's DESeq2 1.38 times (``timings_r.csv.gz`` in ``../shared/data/<dataset>/r_reference``,
``DESeq(dds)`` on a 2-core machine of this kind) are printed where they exist; with ``--run-r``
(needs ``Rscript`` with DESeq2, e.g. Debian's ``r-bioc-deseq2``) ``DESeq()`` + ``results()`` are
timed here on the same counts (up to ``--r-max-samples`` samples; reading the table is not
timed). PyDESeq2 runs are stopped after ``--pydeseq2-timeout`` seconds (printed as such). Not a
test: numbers are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import SHARED, ver

DESIGNS = {
    "pasilla": ("~ type + condition", ["condition", "treated", "untreated"]),
    "airway": ("~ cell + dex", ["dex", "trt", "untrt"]),
    "geuvadis85": ("~ sex", ["sex", "Male", "Female"]),
}
SIM = ("~ batch + condition", ["condition", "B", "A"])


def simulate(n_samples: int, n_genes: int = 20_000, seed: int = 0):
    """A seeded negative binomial cohort (see the module docstring)."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    mean = np.exp(rng.normal(4.0, 2.0, n_genes))
    disp = (0.05 + 2.0 / mean) * np.exp(rng.normal(0.0, 0.5, n_genes))
    cond = np.tile(["A", "B"], n_samples // 2 + 1)[:n_samples]
    batch = np.repeat(np.arange(4), n_samples // 4 + 1)[:n_samples]
    lfc = np.where(rng.random(n_genes) < 0.1, rng.normal(0.0, 1.0, n_genes), 0.0)
    beff = rng.normal(0.0, 0.2, (4, n_genes))
    sf = np.exp(rng.normal(0.0, 0.2, n_samples))
    mu = sf[:, None] * mean[None, :] * np.exp(np.log(2) * lfc[None, :] * (cond == "B")[:, None] + beff[batch])
    r = 1.0 / disp
    counts = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + mu)).astype(np.int32)
    del mu
    obs = pd.DataFrame(
        {"condition": pd.Categorical(cond), "batch": pd.Categorical([f"b{b}" for b in batch])},
        index=[f"s{i}" for i in range(n_samples)],
    )
    adata = ad.AnnData(X=None, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.layers["counts"] = counts
    return adata


def load(name: str):
    import bulkpy as bk

    if name == "pasilla":
        return bk.datasets.pasilla(), *DESIGNS[name]
    if name == "airway":
        return bk.datasets.airway(), *DESIGNS[name]
    if name == "geuvadis85":
        d = SHARED / "geuvadis85"
        return bk.io.read_counts(d / "counts.tsv.gz", samples=d / "coldata.csv"), *DESIGNS[name]
    if name.startswith("sim"):
        return simulate(int(name[3:])), *SIM
    raise ValueError(name)


def run_bulkpy(adata, design, contrast) -> dict:
    import bulkpy as bk

    warm = bk.datasets.pasilla()[:, :500].copy()
    bk.tl.deseq(warm, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    t = time.perf_counter()
    bk.tl.deseq(adata, design=design, contrast=contrast, progress=False)
    wall = time.perf_counter() - t
    df = bk.get.de_df(adata, "deseq")
    return {"seconds": wall, "padj": df["padj"].to_numpy().tolist(), "lfc": df["log2FoldChange"].to_numpy().tolist()}


def run_pydeseq2(adata, design, contrast) -> dict:
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    def once(a, des, ct):
        counts = pd.DataFrame(np.asarray(a.layers["counts"]).astype(int), index=a.obs_names, columns=a.var_names)
        inf = DefaultInference(n_cpus=2)
        dds = DeseqDataSet(counts=counts, metadata=a.obs.copy(), design=des, quiet=True, inference=inf)
        dds.deseq2()
        st = DeseqStats(dds, contrast=ct, quiet=True, inference=inf)
        st.summary()
        return st.results_df

    import bulkpy as bk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        once(bk.datasets.pasilla()[:, :500].copy(), "~ type + condition", ["condition", "treated", "untreated"])
        t = time.perf_counter()
        res = once(adata, design, contrast)
        wall = time.perf_counter() - t
    res = res.reindex(adata.var_names)
    return {"seconds": wall, "padj": res["padj"].to_numpy().tolist(), "lfc": res["log2FoldChange"].to_numpy().tolist()}


def worker(tool: str, name: str, out: str) -> None:
    adata, design, contrast = load(name)
    shape = list(adata.shape)
    res = (run_bulkpy if tool == "bulkpy" else run_pydeseq2)(adata, design, contrast)
    res["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["shape"] = shape
    Path(out).write_text(json.dumps(res))


R_SCRIPT = r"""
suppressMessages(library(DESeq2))
a <- commandArgs(TRUE)
cts <- as.matrix(read.delim(a[1], row.names = 1, check.names = FALSE))
cd <- read.csv(a[2], row.names = 1, stringsAsFactors = TRUE)
cd[[a[4]]] <- relevel(cd[[a[4]]], ref = a[6])
dds <- DESeqDataSetFromMatrix(cts, cd[colnames(cts), , drop = FALSE], as.formula(a[3]))
t <- system.time({
  dds <- DESeq(dds, quiet = TRUE)
  res <- results(dds, contrast = c(a[4], a[5], a[6]))
})[["elapsed"]]
write.csv(data.frame(padj = res$padj, lfc = res$log2FoldChange, row.names = rownames(res)), a[7])
cat(t, file = a[8])
"""


def run_r(name: str) -> dict | None:
    """Time R's DESeq2 on the dataset here (``--run-r``); None without Rscript."""
    import shutil
    import tempfile

    if shutil.which("Rscript") is None:
        return None
    adata, design, (factor, level, ref) = load(name)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        counts = pd.DataFrame(np.asarray(adata.layers["counts"]).T.astype(int), index=adata.var_names, columns=adata.obs_names)
        counts.to_csv(d / "counts.tsv", sep="\t")
        adata.obs.to_csv(d / "coldata.csv")
        (d / "run.R").write_text(R_SCRIPT)
        args = [str(d / "counts.tsv"), str(d / "coldata.csv"), design, factor, level, ref, str(d / "res.csv"), str(d / "t.txt")]
        subprocess.run(["Rscript", str(d / "run.R"), *args], check=True)
        res = pd.read_csv(d / "res.csv", index_col=0).reindex(adata.var_names)
        return {"seconds": float((d / "t.txt").read_text()), "padj": res["padj"].tolist(), "lfc": res["lfc"].tolist()}


def r_seconds(name: str) -> float | None:
    p = SHARED / name / "r_reference" / "timings_r.csv.gz"
    if not p.exists():
        return None
    t = pd.read_csv(p, index_col=0)["seconds"]
    return float(t.get("deseq2_wald", np.nan))


def spawn(tool: str, name: str, timeout: float | None) -> dict | None:
    out = Path(f"/tmp/bench_deseq_{os.getpid()}_{tool}_{name}.json")
    cmd = [sys.executable, __file__, "--worker", tool, name, str(out)]
    try:
        subprocess.run(cmd, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    res = json.loads(out.read_text())
    out.unlink()
    return res


def agreement(a: dict, b: dict) -> str:
    pa, pb = np.asarray(a["padj"], float), np.asarray(b["padj"], float)
    sa, sb = pa < 0.1, pb < 0.1
    j = (sa & sb).sum() / max(1, (sa | sb).sum())
    la, lb = np.asarray(a["lfc"], float), np.asarray(b["lfc"], float)
    ok = np.isfinite(la) & np.isfinite(lb)
    d = np.abs(la[ok] - lb[ok])
    return f"padj<0.1 Jaccard {j:.4f}; |LFC diff| 99th pct {np.quantile(d, 0.99):.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["pasilla", "airway", "geuvadis85", "sim100", "sim1000", "sim10000"])
    ap.add_argument("--skip-pydeseq2", action="store_true")
    ap.add_argument("--run-r", action="store_true", help="time R's DESeq2 here on the same counts (needs Rscript)")
    ap.add_argument("--r-max-samples", type=int, default=1000, help="with --run-r, not above this many samples")
    ap.add_argument("--pydeseq2-timeout", type=float, default=3600.0)
    ap.add_argument("--pydeseq2-max-samples", type=int, default=1000, help="do not run PyDESeq2 above this many samples")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    load1 = os.getloadavg()
    print(
        f"bulkpy {ver('bulkpy')}, pydeseq2 {ver('pydeseq2')}, numpy {ver('numpy')}, numba {ver('numba')}; "
        f"{os.cpu_count()} CPUs; load average at start {load1[0]:.1f}"
    )
    rows = []
    for name in args.datasets:
        if name == "geuvadis85" and not (SHARED / "geuvadis85").exists():
            print("geuvadis85: skipped (../shared/data not available)")
            continue
        b = spawn("bulkpy", name, None)
        n_samples = b["shape"][0]
        p = None
        if args.skip_pydeseq2:
            note = "skipped"
        elif n_samples > args.pydeseq2_max_samples:
            note = f"not run (> {args.pydeseq2_max_samples} samples)"
        else:
            p = spawn("pydeseq2", name, args.pydeseq2_timeout)
            note = f"stopped after {p['timeout']:.0f} s" if p and "timeout" in p else ""
        r = r_seconds(name)
        r_run = None
        if args.run_r and n_samples <= args.r_max_samples:
            r_run = run_r(name)
            if r_run is None:
                print("--run-r: Rscript not found; R timings only from ../shared")
            else:
                r = r_run["seconds"]
        row = {
            "dataset": name,
            "samples x genes": f"{b['shape'][0]} x {b['shape'][1]}",
            "bulkpy s": b["seconds"],
            "bulkpy peak MB": b["peak_mb"],
            "PyDESeq2 s": p["seconds"] if p and "seconds" in p else np.nan,
            "PyDESeq2 peak MB": p["peak_mb"] if p and "peak_mb" in p else np.nan,
            "DESeq2 (R) s": r if r is not None else np.nan,
        }
        row["PyDESeq2 / bulkpy"] = row["PyDESeq2 s"] / row["bulkpy s"]
        row["R / bulkpy"] = row["DESeq2 (R) s"] / row["bulkpy s"]
        rows.append(row)
        msg = f"{name} ({row['samples x genes']}): bulkpy {b['seconds']:.2f} s, {b['peak_mb']:.0f} MB"
        if p and "seconds" in p:
            msg += f"; PyDESeq2 {p['seconds']:.1f} s, {p['peak_mb']:.0f} MB; ratio {row['PyDESeq2 / bulkpy']:.1f}x; {agreement(b, p)}"
        elif note:
            msg += f"; PyDESeq2 {note}"
        if r is not None:
            msg += f"; R DESeq2 {r:.1f} s" + (" (timed here" + f"; {agreement(b, r_run)})" if r_run else "")
        print(msg, flush=True)
    load2 = os.getloadavg()
    print()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).set_index("dataset").round(2).to_string())
    print(f"\nload average at end {load2[0]:.1f} (1 min), {load2[1]:.1f} (5 min)")


if __name__ == "__main__":
    main()
