"""apeglm shrinkage speed: bulkpy vs PyDESeq2's ``DeseqStats.lfc_shrink`` vs R's ``lfcShrink(type = "apeglm")``.

    python benchmarks/bench_apeglm.py                          # airway and sim100
    python benchmarks/bench_apeglm.py --datasets airway --run-r --r-chroot /work/bioc
    python benchmarks/bench_apeglm.py --skip-pydeseq2

What is timed is the shrinkage step alone, on a model each tool has already fitted (DESeq2's
``lfcShrink(dds, coef, type = "apeglm")`` after ``DESeq()``): for bulkpy the apeglm engine that
``bk.tl.deseq(shrink="apeglm")`` calls (prior scale from the MLEs, the posterior mode and SD of every
gene), for PyDESeq2 ``DeseqStats.lfc_shrink(coeff)`` after ``summary()`` (``n_cpus=2``), for R the
``lfcShrink`` call (apeglm 1.27, ``method = "nbinomCR"``). bulkpy's kernels are compiled (or loaded
from numba's cache) by a warm-up on 300 pasilla genes first, not timed; the whole
``bk.tl.deseq(..., shrink="apeglm")`` is timed too. Agreement: the 99th percentile and maximum of
|Δ shrunken log2FC| against DESeq2 1.52 (``r_current/deseq2_shrink_apeglm`` for airway; against the
R run of ``--run-r`` for the simulated cohort).

Datasets: airway (8 × 64,102, ``~ cell + dex``, coefficient ``dex_trt_vs_untrt``) and ``simN``:
20,000 genes × N samples from ``bench_deseq.simulate`` (``~ batch + condition``, coefficient
``condition_B_vs_A``; numpy seed 0). ``--run-r`` times R here on the same counts (``Rscript``, or
``chroot <dir> Rscript`` with ``--r-chroot``; inputs written under the chroot's ``/tmp``); without it
R's ``lfcShrink`` time on airway from ``r_current/timings_r.csv.gz`` is printed. Not a test:
numbers are printed.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import SHARED, ver

DATASETS = {"airway": ("~ cell + dex", "dex", "trt", "untrt")}
SIM = ("~ batch + condition", "condition", "B", "A")

R_SCRIPT = r"""
suppressMessages({library(DESeq2); library(apeglm)})
a <- commandArgs(trailingOnly = TRUE)
d <- a[1]; design <- as.formula(a[2]); fac <- a[3]; test <- a[4]; ref <- a[5]
counts <- as.matrix(read.csv(file.path(d, "counts.csv.gz"), row.names = 1, check.names = FALSE))
cd <- read.csv(file.path(d, "coldata.csv"), row.names = 1, stringsAsFactors = TRUE)
cd[[fac]] <- relevel(cd[[fac]], ref = ref)
dds <- DESeq(DESeqDataSetFromMatrix(t(counts), cd, design), quiet = TRUE)
coef <- paste(fac, test, "vs", ref, sep = "_")
t <- system.time(res <- lfcShrink(dds, coef = coef, type = "apeglm", quiet = TRUE))[["elapsed"]]
write.csv(data.frame(log2FoldChange = res$log2FoldChange, row.names = rownames(res)), gzfile(file.path(d, "res.csv.gz")))
writeLines(format(t), file.path(d, "seconds.txt"))
"""


def load(name: str):
    import bulkpy as bk

    if name.startswith("sim"):
        from bench_deseq import simulate

        a = simulate(int(name[3:]))
        a.obs["condition"] = a.obs["condition"].cat.reorder_categories(["A", "B"])
        return a, SIM
    design, fac, test, ref = DATASETS[name]
    a = getattr(bk.datasets, name)()
    # R's levels (stringsAsFactors sorts them; relevel puts the reference first): apeglm's N(0, 15^2)
    # prior on the other coefficients makes the result depend (a little) on their parametrisation
    for c in a.obs.columns:
        lv = sorted(a.obs[c].astype(str).unique())
        if c == fac:
            lv = [ref] + [x for x in lv if x != ref]
        a.obs[c] = pd.Categorical(a.obs[c].astype(str), categories=lv)
    return a, (design, fac, test, ref)


def run_bulkpy(a, spec):
    """(seconds of the shrinkage step, seconds of the whole bk.tl.deseq(shrink="apeglm"), shrunken log2FC)."""
    import bulkpy as bk
    from bulkpy._design import deseq_design
    from bulkpy._stats.deseq2.apeglm import apeglm_shrink

    design, fac, test, ref = spec
    coef = f"{fac}_{test}_vs_{ref}"
    full = a.copy()
    t = time.perf_counter()
    bk.tl.deseq(full, design=design, contrast=coef, shrink="apeglm")
    t_full = time.perf_counter() - t
    d = deseq_design(full.obs, design)
    j = list(d.names).index(coef)
    counts = np.asarray(full.layers["counts"], dtype=np.float64)
    lfc = full.varm["deseq_coefficients"].iloc[:, j].to_numpy()
    se = full.varm["deseq_coefficients_se"].iloc[:, j].to_numpy()
    now_zero = full.var["deseq_replace"].to_numpy() & (full.var["deseq_baseMean"].to_numpy() == 0)
    mle = math.log(2.0) * np.column_stack([np.where(now_zero, 0, lfc), np.where(now_zero, 0, se)])
    disp = full.var["deseq_dispersion"].to_numpy()
    sf = full.obs["deseq_size_factors"].to_numpy()
    t = time.perf_counter()
    f = apeglm_shrink(counts, d.X, j, disp, size_factors=sf, mle=mle)
    t_shrink = time.perf_counter() - t
    shrunk = bk.get.de_df(full, "deseq")["log2FoldChange_shrunk"]
    assert np.allclose(f.map[:, j] / math.log(2.0), shrunk.to_numpy(), rtol=1e-12, equal_nan=True)  # the same step
    return t_shrink, t_full, shrunk, int(f.refit.sum())


def run_pydeseq2(a, spec):
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    design, fac, test, ref = spec
    counts = pd.DataFrame(np.asarray(a.layers["counts"]).astype(int), index=a.obs_names, columns=a.var_names)
    meta = a.obs.copy()  # categoricals with the reference level first: formulaic's treatment coding
    inf = DefaultInference(n_cpus=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(counts=counts, metadata=meta, design=design, inference=inf, quiet=True)
        dds.deseq2()
        st = DeseqStats(dds, contrast=[fac, test, ref], inference=inf, quiet=True)
        st.summary()
        coeff = [c for c in st.LFC.columns if c.startswith(fac) and test in c][0]
        t = time.perf_counter()
        st.lfc_shrink(coeff=coeff)
        t_py = time.perf_counter() - t
    return t_py, st.results_df["log2FoldChange"].reindex(a.var_names)


def run_r(a, spec, chroot: str | None):
    """(seconds of lfcShrink, its log2FC) from R run here, or None without R."""
    if chroot is None and shutil.which("Rscript") is None:
        print("  (no Rscript on PATH; pass --r-chroot)")
        return None
    base = Path(chroot) / "tmp" if chroot else Path(tempfile.gettempdir())
    d = Path(tempfile.mkdtemp(prefix="bench_apeglm_", dir=base))
    design, fac, test, ref = spec
    pd.DataFrame(np.asarray(a.layers["counts"]).astype(int), index=a.obs_names, columns=a.var_names).to_csv(
        d / "counts.csv.gz"
    )
    a.obs.astype(str).to_csv(d / "coldata.csv")
    (d / "run.R").write_text(R_SCRIPT)
    inside = "/" + str(d.relative_to(chroot)) if chroot else str(d)
    cmd = (["chroot", chroot] if chroot else []) + ["Rscript", f"{inside}/run.R", inside, design, fac, test, ref]
    subprocess.run(cmd, check=True)
    secs = float((d / "seconds.txt").read_text())
    res = pd.read_csv(d / "res.csv.gz", index_col=0)["log2FoldChange"]
    shutil.rmtree(d, ignore_errors=True)
    return secs, res


def agree(ours: pd.Series, ref: pd.Series | None) -> str:
    if ref is None:
        return ""
    d = np.abs(ours.to_numpy() - ref.reindex(ours.index).to_numpy())
    d = d[~np.isnan(d)]
    return f"|Δ log2FC| vs R: p99 {np.percentile(d, 99):.1e}, max {d.max():.1e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["airway", "sim100"])
    ap.add_argument("--skip-pydeseq2", action="store_true")
    ap.add_argument("--run-r", action="store_true")
    ap.add_argument("--r-chroot", default=None, help="run R as `chroot DIR Rscript` (e.g. /work/bioc)")
    args = ap.parse_args()

    import bulkpy as bk

    print(f"bulkpy {ver('bulkpy')}, pydeseq2 {ver('pydeseq2')}; shrinkage step only (model already fitted)")
    w = bk.datasets.pasilla()[:, :300].copy()
    w.obs["condition"] = w.obs["condition"].cat.reorder_categories(["untreated", "treated"])
    bk.tl.deseq(w, design="~ type + condition", contrast="condition_treated_vs_untreated", shrink="apeglm")
    for name in args.datasets:
        a, spec = load(name)
        print(f"\n{name}: {a.n_obs} samples x {a.n_vars} genes, design {spec[0]}, coefficient {spec[1]}_{spec[2]}_vs_{spec[3]}")
        r_ref = None
        p = SHARED / name / "r_current" / "deseq2_shrink_apeglm.csv.gz"
        if p.exists():
            r_ref = pd.read_csv(p, index_col=0)["log2FoldChange"]
        t_r = None
        if args.run_r:
            out = run_r(a, spec, args.r_chroot)
            if out is not None:
                t_r, r_ref = out
        elif (SHARED / name / "r_current" / "timings_r.csv.gz").exists():
            tm = pd.read_csv(SHARED / name / "r_current" / "timings_r.csv.gz", index_col=0)["seconds"]
            t_r = float(tm["deseq2_apeglm"]) if "deseq2_apeglm" in tm.index else None
        t_bk, t_full, shrunk, n_refit = run_bulkpy(a, spec)
        print(f"  {'bulkpy apeglm engine (' + str(n_refit) + ' BFGS refits)':<46s}{t_bk:8.2f} s   {agree(shrunk, r_ref)}")
        print(f"  {'bulkpy bk.tl.deseq(shrink=apeglm), whole':<46s}{t_full:8.2f} s")
        if t_r is not None:
            src = "here" if args.run_r else "r_current timings"
            print(f"  {'R lfcShrink(type=apeglm) (' + src + ')':<46s}{t_r:8.2f} s   {t_r / t_bk:6.1f}x bulkpy's time")
        if not args.skip_pydeseq2:
            t_py, lfc_py = run_pydeseq2(a, spec)
            print(f"  {'PyDESeq2 DeseqStats.lfc_shrink':<46s}{t_py:8.2f} s   {t_py / t_bk:6.1f}x bulkpy's time   {agree(lfc_py, r_ref)}")


if __name__ == "__main__":
    main()
