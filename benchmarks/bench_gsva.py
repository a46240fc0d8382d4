"""GSVA and ssGSEA on large cohorts: bulkpy vs R's GSVA 2.6 and decoupler, time and memory.

    python benchmarks/bench_gsva.py                                  # bulkpy and decoupler, default grid
    python benchmarks/bench_gsva.py --run-r --bioc /work/bioc        # and R (a chroot with GSVA 2.6)
    python benchmarks/bench_gsva.py --genes 5000 --samples 1000 --cases gsva-gaussian

Data: simulated log-expression, ``--genes`` x ``--samples`` (genes with different means, unit
noise, and a shared programme on each set's genes), and 50 sets with Hallmark's sizes (32-200
genes). The same matrix (float64) is read by every tool.

Cases:

* ``gsva-auto``: GSVA with its default kernel choice. GSVA 2.6 (``gsvaParam(kcdf = "auto")``) and
  bulkpy use the empirical CDF from 200 samples on (``kcdf="none"``), so for these cohorts this
  is a rank transform, linear in the number of samples; decoupler is run with ``kcdf=None``.
* ``gsva-gaussian``: the Gaussian kernel CDF (GSVA 1.46's default, ``kcdf="gaussian"``; decoupler's
  default). It sums a kernel over every pair of samples for every gene: time grows with
  ``genes x samples^2``.
* ``ssgsea``: ``ssgseaParam`` defaults (alpha 0.25, normalised). decoupler has no ssGSEA.

Each (tool, case, size) runs in its own process, once (the cohorts are large enough that one run is
several seconds; the numba kernels are compiled on small data first and not timed). Memory is the
process's peak resident set size (``VmHWM``) after the call, and the increase over the peak before
it (data loaded, packages imported): the working memory of the call. R's time is
``system.time(gsva(...))["elapsed"]``. Agreement: largest |bulkpy - R| (``--run-r``) or
|bulkpy - decoupler| score. Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CASES = ("gsva-auto", "gsva-gaussian", "ssgsea")
R_SCRIPT = r"""
args <- commandArgs(TRUE)
case <- args[1]; d <- args[2]
suppressPackageStartupMessages(library(GSVA))
dims <- scan(file.path(d, "dims.txt"), quiet = TRUE)
x <- matrix(readBin(file.path(d, "x.f64"), "double", n = dims[1] * dims[2]), nrow = dims[2])
genes <- readLines(file.path(d, "genes.txt"))
rownames(x) <- genes
colnames(x) <- paste0("s", seq_len(ncol(x)) - 1)
sets <- lapply(strsplit(readLines(file.path(d, "sets.gmt")), "\t"), function(v) v[-(1:2)])
names(sets) <- sapply(strsplit(readLines(file.path(d, "sets.gmt")), "\t"), `[`, 1)
hwm <- function() as.numeric(sub("[^0-9]*([0-9]+).*", "\\1",
                                 grep("VmHWM", readLines("/proc/self/status"), value = TRUE))) / 1024
param <- switch(case,
  "gsva-auto" = gsvaParam(x, sets, minSize = 5, maxSize = 500),
  "gsva-gaussian" = gsvaParam(x, sets, kcdf = "Gaussian", minSize = 5, maxSize = 500),
  "ssgsea" = ssgseaParam(x, sets, minSize = 5, maxSize = 500))
before <- hwm()
invisible(gc(reset = TRUE))
tm <- system.time(res <- gsva(param, verbose = FALSE))["elapsed"]
g <- gc()
after <- hwm()
write.csv(t(res), file.path(d, paste0("r_", case, ".csv")))
cat(sprintf('{"seconds": %.3f, "peak_mb": %.1f, "extra_mb": %.1f, "r_heap_max_mb": %.1f, "version": "%s"}\n',
            tm, after, after - before, sum(g[, ncol(g)]), as.character(packageVersion("GSVA"))))
"""


def simulate(n_genes: int, n_samples: int, seed: int = 0):
    """Log-expression (samples x genes) and 50 sets of Hallmark's sizes."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    x = rng.normal(size=(n_samples, n_genes)) + rng.gamma(2.0, 2.0, size=n_genes)
    sets = {}
    for i in range(50):
        k = int(rng.integers(32, 201))
        idx = rng.choice(n_genes, size=k, replace=False)
        x[:, idx] += rng.normal(size=(n_samples, 1)) * 0.5
        sets[f"set{i}"] = [genes[j] for j in idx]
    return x, genes, sets


def write_data(d: Path, n_genes: int, n_samples: int) -> None:
    if (d / "x.f64").exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    x, genes, sets = simulate(n_genes, n_samples)
    # samples x genes in C order = genes x samples in R's column-major order
    np.ascontiguousarray(x).tofile(d / "x.f64")
    (d / "dims.txt").write_text(f"{n_samples} {n_genes}\n")
    (d / "genes.txt").write_text("\n".join(genes) + "\n")
    (d / "sets.gmt").write_text("".join(f"{k}\tna\t" + "\t".join(v) + "\n" for k, v in sets.items()))


def read_data(d: Path):
    n_samples, n_genes = (int(v) for v in (d / "dims.txt").read_text().split())
    x = np.fromfile(d / "x.f64", dtype=np.float64).reshape(n_samples, n_genes)
    genes = (d / "genes.txt").read_text().split()
    sets = {}
    for line in (d / "sets.gmt").read_text().splitlines():
        f = line.split("\t")
        sets[f[0]] = f[2:]
    return x, genes, sets


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(tool: str, case: str, d: Path) -> None:
    """One timed call in this process; prints a JSON line."""
    import anndata as ad

    x, genes, sets = read_data(d)
    obs = pd.DataFrame(index=[f"s{i}" for i in range(x.shape[0])])
    if tool == "bulkpy":
        import bulkpy as bk

        small = ad.AnnData(X=x[:12, :300].copy(), var=pd.DataFrame(index=genes[:300]), obs=obs.iloc[:12])
        warm = {k: [g for g in v if g in set(genes[:300])] for k, v in sets.items()}
        for m, kw in (("gsva", {"kcdf": "gaussian"}), ("gsva", {"kcdf": "none"}), ("ssgsea", {})):
            bk.tl.score(small, gene_sets=warm, method=m, min_size=1, **kw)
        adata = ad.AnnData(X=x, var=pd.DataFrame(index=genes), obs=obs)
        method, kw = {
            "gsva-auto": ("gsva", {}),
            "gsva-gaussian": ("gsva", {"kcdf": "gaussian"}),
            "ssgsea": ("ssgsea", {}),
        }[case]
        before = _hwm_mb()
        t = time.perf_counter()
        bk.tl.score(adata, gene_sets=sets, method=method, min_size=5, max_size=500, **kw)
        sec = time.perf_counter() - t
        res = adata.obsm[f"score_{method}"]
        version = bk.__version__
    else:
        import decoupler as dc

        net = pd.DataFrame([(k, g) for k, v in sets.items() for g in v], columns=["source", "target"])
        df = pd.DataFrame(x, index=obs.index, columns=genes)
        kcdf = None if case == "gsva-auto" else "gaussian"
        dc.mt.gsva(df.iloc[:12, :300], net[net["target"].isin(genes[:300])], tmin=1, kcdf=kcdf)
        before = _hwm_mb()
        t = time.perf_counter()
        res, _ = dc.mt.gsva(df, net, tmin=5, kcdf=kcdf)
        sec = time.perf_counter() - t
        version = dc.__version__
    after = _hwm_mb()
    res.to_csv(d / f"{tool}_{case}.csv")
    print(json.dumps({"seconds": sec, "peak_mb": after, "extra_mb": after - before, "version": version}))


def run_child(args: list[str], timeout: float) -> dict:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"> {timeout:.0f} s (stopped)"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(lines[-1])


def max_diff(d: Path, a: str, b: str) -> float:
    pa, pb = d / f"{a}.csv", d / f"{b}.csv"
    if not (pa.exists() and pb.exists()):
        return float("nan")
    x = pd.read_csv(pa, index_col=0)
    y = pd.read_csv(pb, index_col=0)
    return float(np.abs(x.to_numpy() - y.loc[x.index, x.columns].to_numpy()).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=int, nargs="+", default=[2000, 5000])
    ap.add_argument("--samples", type=int, nargs="+", default=[250, 1000, 2000])
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument(
        "--tools", nargs="+", choices=["bulkpy", "decoupler", "r"], default=["bulkpy", "decoupler"]
    )
    ap.add_argument("--run-r", action="store_true", help="also time R's GSVA (adds 'r' to --tools)")
    ap.add_argument("--bioc", default="/work/bioc", help="root of a chroot with R and GSVA 2.6")
    ap.add_argument("--workdir", default=None, help="where the simulated data go (default: a temp folder)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is stopped")
    ap.add_argument("--child", nargs=3, metavar=("TOOL", "CASE", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], Path(a.child[2]))
        return
    tools = list(dict.fromkeys(a.tools + (["r"] if a.run_r else [])))
    if "r" in tools:
        root = Path(a.bioc) / "tmp" / "bench_gsva"
    else:
        root = Path(a.workdir or (Path(os.environ.get("TMPDIR", "/tmp")) / "bench_gsva"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.R").write_text(R_SCRIPT)

    import numba
    from _common import ver

    print(
        f"bulkpy {ver('bulkpy')}, decoupler {ver('decoupler')}, numpy {ver('numpy')}, numba {ver('numba')} "
        f"({numba.get_num_threads()} threads); {os.cpu_count()} CPUs; load average "
        + " ".join(f"{v:.1f}" for v in os.getloadavg())
    )
    rows = []
    for g in a.genes:
        for n in a.samples:
            d = root / f"{g}x{n}"
            write_data(d, g, n)
            for case in a.cases:
                res = {}
                for tool in tools:
                    if tool == "decoupler" and case == "ssgsea":
                        continue
                    if tool == "r":
                        cmd = [
                            "chroot",
                            a.bioc,
                            "Rscript",
                            "/tmp/bench_gsva/run.R",
                            case,
                            f"/tmp/bench_gsva/{g}x{n}",
                        ]
                        if shutil.which("chroot") is None:
                            continue
                    else:
                        cmd = [sys.executable, __file__, "--child", tool, case, str(d)]
                    res[tool] = out = run_child(cmd, a.timeout)
                    agree = ""
                    if tool != "bulkpy" and "error" not in out:
                        other = "r_" + case if tool == "r" else f"decoupler_{case}"
                        agree = f"max|bulkpy - {tool}| {max_diff(d, f'bulkpy_{case}', other):.1e}"
                    rows.append(
                        {
                            "genes": g,
                            "samples": n,
                            "case": case,
                            "tool": tool,
                            "seconds": out.get("seconds", np.nan),
                            "x bulkpy": out.get("seconds", np.nan) / res["bulkpy"].get("seconds", np.nan)
                            if "bulkpy" in res
                            else np.nan,
                            "peak MB": out.get("peak_mb", np.nan),
                            "call MB": out.get("extra_mb", np.nan),
                            "notes": out.get("error", agree),
                        }
                    )
                    print(
                        pd.DataFrame([rows[-1]]).to_string(
                            index=False, header=len(rows) == 1, float_format=lambda v: f"{v:.2f}"
                        ),
                        flush=True,
                    )
    out = pd.DataFrame(rows)
    print()
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(out.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(
        "x bulkpy: the tool's seconds / bulkpy's (>1: slower than bulkpy). call MB: peak resident memory "
        "during the call minus the peak before it (data loaded, packages imported)."
    )


if __name__ == "__main__":
    main()
