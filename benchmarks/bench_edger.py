"""edgeR quasi-likelihood speed: bulkpy's ``bk.tl.edger`` vs R's edgeR and inmoose's edgepy.

    python benchmarks/bench_edger.py                    # airway + simulated 20,000 genes x 1,000 samples
    python benchmarks/bench_edger.py --repeat 1 --n-samples 200 --r-sim

Compared, each call including the package's own input handling:

- airway (8 samples, the 16,860 genes edgeR's ``filterByExpr`` keeps, design ``~ cell + dex``):
  ``bk.tl.edger(adata, design=..., contrast=["dex", "trt", "untrt"])`` (TMM, ``estimateDisp``,
  ``glmQLFit``, ``glmQLFTest``) vs R's ``estimateDisp`` + ``glmQLFit`` + ``glmQLFTest`` (seconds from
  ``r_current/timings_r.csv.gz``, edgeR 4.10, one run on a 2-core machine of this kind, TMM not
  included; ``r_reference`` (edgeR 3.40) where ``r_current`` is absent) vs
  inmoose's edgepy (``DGEList`` with the same TMM factors, ``estimateGLMCommonDisp`` +
  ``estimateGLMTagwiseDisp`` (edgepy has no ``estimateDisp``), ``glmQLFit`` + ``glmQLFTest``; it is
  not the same pipeline, so its F statistics differ from edgeR's);
- simulated negative binomial counts, 20,000 genes x 1,000 samples, two groups and a continuous
  covariate, designs ``~ group + age`` (the Levenberg fits) and ``~ group`` (edgeR's one-way
  shortcut): ``bk.tl.edger``; with
  ``--r-sim`` also R's edgeR on the same counts when ``Rscript`` with edgeR is installed (timed by
  ``system.time`` inside R, reading the counts not included); ``--sim-others`` also times inmoose
  (hours at this size: use a small ``--n-samples``/``--n-genes``).

Agreement with edgeR 4.10 (``r_current/edger_qlf.csv.gz``, the default pipeline ``bk.tl.edger``
follows) is printed as the largest relative difference of the F statistic and of the p-value. Times are wall-clock seconds of one call, best of
``--repeat``. Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import AIRWAY_CURRENT, AIRWAY_REF, best, max_rel, r_seconds, r_table, row, ver
from _common import simulate_two_groups as simulate

import bulkpy as bk
from bulkpy._stats.normalization import calc_norm_factors

# Levenberg fits, and the one-way shortcut edgeR takes for a design of group indicators
SIM_DESIGNS = ("~ group + age", "~ group")
REF = AIRWAY_CURRENT if (AIRWAY_CURRENT / "edger_qlf.csv.gz").exists() else AIRWAY_REF
REF_LABEL = "edgeR 4.10.7" if REF == AIRWAY_CURRENT else "edgeR 3.40.2"

R_SIM = r"""
suppressMessages(library(edgeR))
a <- commandArgs(trailingOnly = TRUE)
y <- as.matrix(read.csv(a[1], row.names = 1, check.names = FALSE))
cd <- read.csv(a[2], row.names = 1, stringsAsFactors = TRUE)
cd$group <- relevel(cd$group, ref = "A")
mm <- model.matrix(as.formula(a[4]), cd)
tm <- system.time({
  d <- calcNormFactors(DGEList(y))
  d <- estimateDisp(d, mm)
  q <- glmQLFTest(glmQLFit(d, mm), coef = 2)
})[["elapsed"]]
write.csv(data.frame(F = q$table$F, row.names = rownames(d)), a[3])
cat(tm, "\n")
"""


def airway_filtered():
    adata = bk.datasets.airway()
    keep_file = REF / "edger_filter_by_expr.csv.gz"
    if keep_file.exists():
        keep = pd.read_csv(keep_file, index_col=0)["keep"]
        adata = adata[:, keep.reindex(adata.var_names).fillna(False).to_numpy(dtype=bool)].copy()
    else:
        bk.pp.filter_by_expr(adata, design="~ cell + dex", subset=True)
    # R's reference level (make_refs.R relevels dex to untrt)
    adata.obs["dex"] = adata.obs["dex"].cat.reorder_categories(["untrt", "trt"])
    return adata


def inmoose_ql(counts_sxg, obs, formula, coef):
    import patsy
    from inmoose.edgepy import DGEList, glmQLFTest

    lib = counts_sxg.sum(axis=1)
    nf, _ = calc_norm_factors(counts_sxg, lib_size=lib, method="TMM")
    X = patsy.dmatrix(formula, obs)
    d = DGEList(counts=counts_sxg.T, lib_size=lib, norm_factors=nf)
    d = d.estimateGLMCommonDisp(design=X)
    d = d.estimateGLMTagwiseDisp(design=X)
    fit = d.glmQLFit(design=X)
    return glmQLFTest(fit, coef=coef)


def r_sim_seconds(sim, design: str):
    """Run R's edgeR on the simulated counts with ``design``; returns (seconds, F) or (None, None)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        print("  (Rscript not found: R not timed on the simulated data)")
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        counts = os.path.join(tmp, "counts.csv")
        pd.DataFrame(sim.layers["counts"].T, index=sim.var_names, columns=sim.obs_names).to_csv(counts)
        sim.obs.to_csv(os.path.join(tmp, "obs.csv"))
        script = os.path.join(tmp, "sim.R")
        Path(script).write_text(R_SIM)
        out = os.path.join(tmp, "F.csv")
        res = subprocess.run(
            [rscript, script, counts, os.path.join(tmp, "obs.csv"), out, design], capture_output=True, text=True
        )
        if res.returncode != 0:
            print(f"  R failed: {res.stderr.strip().splitlines()[-1:]}")
            return None, None
        return float(res.stdout.split()[-1]), pd.read_csv(out, index_col=0)["F"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-genes", type=int, default=20_000)
    ap.add_argument("--n-samples", type=int, default=1_000)
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--no-inmoose", action="store_true", help="skip inmoose on airway (about a minute per call)")
    ap.add_argument("--r-sim", action="store_true", help="also run R's edgeR on the simulated data")
    ap.add_argument("--sim-others", action="store_true", help="also time inmoose on the simulated data")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"bulkpy {ver('bulkpy')}, inmoose {ver('inmoose')}, numpy {ver('numpy')}, numba {ver('numba')}")

    adata = airway_filtered()
    n, g = adata.shape
    print(f"\nairway: {n} samples x {g} genes, design ~ cell + dex ({REF_LABEL} in R)")
    kw = {"design": "~ cell + dex", "contrast": ["dex", "trt", "untrt"]}
    bk.tl.edger(adata[:, :50].copy(), **kw)  # compile (numba caches the kernels on disk)
    t_bk, out = best(lambda: bk.tl.edger(adata, **kw, copy=True, progress=False), args.repeat)
    ref = r_table("edger_qlf.csv.gz", REF)
    res = bk.get.de_df(out, "edger")
    agree = ""
    if ref is not None:
        agree = (
            f"max rel diff vs R: F {max_rel(res.loc[ref.index, 'F'], ref['F']):.1e}, "
            f"p {max_rel(res.loc[ref.index, 'pvalue'], ref['PValue']):.1e}"
        )
    print("estimateDisp + glmQLFit + glmQLFTest")
    row("bulkpy bk.tl.edger (incl. TMM)", t_bk, t_bk, agree)
    row(f"R {REF_LABEL} (timings_r)", r_seconds("edger_ql", REF), t_bk)
    if not args.no_inmoose and ver("inmoose") != "not installed":
        counts = np.asarray(adata.layers["counts"], dtype=float)
        t_in, tab = best(lambda: inmoose_ql(counts, adata.obs, "~ cell + dex", 4), 1)
        agree = ""
        if ref is not None:
            agree = f"max rel diff vs R: F {max_rel(tab['stat'].to_numpy(), ref['F']):.1e} (other pipeline)"
        row("inmoose edgepy (GLM common+tagwise, QL)", t_in, t_bk, agree)

    if args.no_sim:
        return
    sim = simulate(args.n_genes, args.n_samples)
    for design in SIM_DESIGNS:
        print(f"\nsimulated: {sim.n_obs} samples x {sim.n_vars} genes (NB counts), design {design}")
        skw = {"design": design, "contrast": ["group", "B", "A"]}
        t_bk, out = best(lambda skw=skw: bk.tl.edger(sim, **skw, copy=True, progress=False), max(1, min(args.repeat, 2)))
        print("estimateDisp + glmQLFit + glmQLFTest")
        row("bulkpy bk.tl.edger (incl. TMM)", t_bk, t_bk)
        if args.r_sim:
            t_r, f_r = r_sim_seconds(sim, design)
            if t_r is not None:
                agree = f"max rel diff of F vs this R run {max_rel(bk.get.de_df(out, 'edger')['F'], f_r):.1e}"
                row("R edgeR (run here, system.time)", t_r, t_bk, agree)
        if args.sim_others and ver("inmoose") != "not installed":
            t_in, _ = best(lambda design=design: inmoose_ql(np.asarray(sim.layers["counts"]), sim.obs, design, 1), 1)
            row("inmoose edgepy (GLM common+tagwise, QL)", t_in, t_bk)


if __name__ == "__main__":
    main()
