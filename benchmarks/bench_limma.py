"""limma speed: bulkpy's voom + limma vs R and the Python ports a user would pick instead.

    python benchmarks/bench_limma.py                 # airway + simulated 20,000 genes x 1,000 samples
    python benchmarks/bench_limma.py --repeat 5 --n-samples 200

Compared, each call including the package's own input handling:

- airway (8 samples, the 16,860 genes edgeR's ``filterByExpr`` keeps, design ``~ cell + dex``):
  ``bk.tl.voom(adata, design=..., contrast=["dex", "trt", "untrt"])`` (computes TMM too) vs
  R's ``voom`` + ``lmFit`` + ``eBayes`` (seconds from ``r_reference/timings_r.csv.gz``, one run on a
  2-core machine of this kind, TMM not included) vs pylimma (``voom`` + ``lm_fit`` + ``e_bayes``
  + ``top_table`` on the same TMM library sizes, with its ``adaptive_span=False`` and
  ``legacy=True``, i.e. limma 3.54's behaviour, so its agreement line is against 3.54);
- airway limma-trend (``eBayes(lmFit(logCPM), trend=TRUE)``) and robust: ``bk.tl.limma`` vs
  inmoose (``lmFit`` + ``eBayes`` + ``topTable``) and pylimma; inmoose has no voom;
- simulated negative binomial counts, 20,000 genes x 1,000 samples, two groups and a continuous
  covariate: ``bk.tl.voom`` vs pylimma (``--no-sim`` skips, ``--sim-others`` also times the ports
  on it, which may take minutes).

Agreement with limma 3.68 (``r_current/limma_*_toptable.csv.gz``, bulkpy's defaults) is printed as
the largest relative difference of the moderated t (pylimma: against limma 3.54's ``r_reference``). Times are wall-clock seconds of one call, best of
``--repeat``. Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from _common import AIRWAY_REF, SHARED, best, max_rel, r_seconds, r_table, row, ver
from _common import simulate_two_groups as simulate

import bulkpy as bk
from bulkpy._stats.normalization import calc_norm_factors, cpm

REF = AIRWAY_REF
#: limma 3.68 (Bioconductor 3.23) tables: what bulkpy's defaults follow
CURRENT = SHARED / "airway" / "r_current"


def airway_filtered() -> ad.AnnData:
    adata = bk.datasets.airway()
    keep_file = REF / "edger_filter_by_expr.csv.gz"
    if keep_file.exists():
        keep = pd.read_csv(keep_file, index_col=0)["keep"]
        adata = adata[:, keep.reindex(adata.var_names).fillna(False).to_numpy(dtype=bool)].copy()
    else:
        bk.pp.filter_by_expr(adata, design="~ cell + dex", subset=True)
    adata.obs["dex"] = adata.obs["dex"].cat.reorder_categories(["untrt", "trt"])
    return adata


def pylimma_voom(counts_gxs, design, lib_size, coef):
    import pylimma

    v = pylimma.voom(counts_gxs, design, lib_size=lib_size, adaptive_span=False)
    fit = pylimma.lm_fit(v, design)
    fit = pylimma.e_bayes(fit, legacy=True)
    return pylimma.top_table(fit, coef=coef, number=np.inf, sort_by="none")


def pylimma_trend(logcpm_gxs, design, coef, **kw):
    import pylimma

    fit = pylimma.lm_fit(logcpm_gxs, design)
    fit = pylimma.e_bayes(fit, legacy=True, **kw)
    return pylimma.top_table(fit, coef=coef, number=np.inf, sort_by="none")


def inmoose_trend(logcpm_gxs: pd.DataFrame, design, coef, **kw):
    from inmoose import limma

    # lmFit + eBayes only: inmoose 0.9.1's topTable fails on this input (its result table wants a
    # pvalue column), so the moderated t is read from the fit
    fit = limma.eBayes(limma.lmFit(logcpm_gxs, design), **kw)
    return pd.DataFrame({"t": fit.t.iloc[:, coef].to_numpy()}, index=logcpm_gxs.index)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-genes", type=int, default=20_000)
    ap.add_argument("--n-samples", type=int, default=1_000)
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--sim-others", action="store_true", help="also time pylimma on the simulated data")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"bulkpy {ver('bulkpy')}, pylimma {ver('pylimma')}, inmoose {ver('inmoose')}, numpy {ver('numpy')}")

    adata = airway_filtered()
    counts = adata.layers["counts"]
    n, g = counts.shape
    lib = counts.sum(axis=1)
    nf, _ = calc_norm_factors(counts, lib_size=lib, method="TMM")
    X, _ = bk._design.design_matrix(adata.obs, "~ cell + dex")
    dex = X.shape[1] - 1
    print(f"\nairway: {n} samples x {g} genes, design ~ cell + dex (limma 3.68 in R; R times from limma 3.54)")

    # voom + lmFit + eBayes ------------------------------------------------------------------
    kw = {"design": "~ cell + dex", "contrast": ["dex", "trt", "untrt"]}
    t_bk, out = best(lambda: bk.tl.voom(adata, **kw, copy=True), args.repeat)
    ref = r_table("limma_voom_toptable.csv.gz", CURRENT)
    res = bk.get.de_df(out, "voom")
    agree = (
        "" if ref is None else f"max rel diff of t vs R {max_rel(res.loc[ref.index, 'stat'], ref['t']):.1e}"
    )
    print("voom + lmFit + eBayes")
    row("bulkpy bk.tl.voom (incl. TMM)", t_bk, t_bk, agree)
    row("R limma voom + lmFit + eBayes (timings_r)", r_seconds("limma_voom"), t_bk)
    if ver("pylimma") != "not installed":
        t_py, tab = best(lambda: pylimma_voom(counts.T, X, lib * nf, dex), args.repeat)
        ref_old = r_table("limma_voom_toptable.csv.gz")
        agree = "" if ref_old is None else f"max rel diff of t vs R 3.54 {max_rel(tab['t'].to_numpy(), ref_old['t']):.1e}"
        row("pylimma voom + lm_fit + e_bayes", t_py, t_bk, agree)

    # limma-trend / robust on log-CPM ----------------------------------------------------------
    logcpm = cpm(counts, lib * nf, log=True, prior_count=3)
    adata.layers["logcpm"] = logcpm
    gxs = pd.DataFrame(logcpm.T, index=adata.var_names)
    for label, opts, refname in (
        ("limma-trend", {"trend": True}, "limma_trend_toptable.csv.gz"),
        ("limma robust", {"robust": True}, "limma_robust_toptable.csv.gz"),
    ):
        print(f"{label}: lmFit + eBayes on log-CPM (prior.count 3)")
        t_bk, out = best(
            lambda opts=opts: bk.tl.limma(adata, **kw, layer="logcpm", copy=True, **opts), args.repeat
        )
        ref = r_table(refname, CURRENT)
        res = bk.get.de_df(out, "limma")
        agree = (
            ""
            if ref is None
            else f"max rel diff of t vs R {max_rel(res.loc[ref.index, 'stat'], ref['t']):.1e}"
        )
        row("bulkpy bk.tl.limma", t_bk, t_bk, agree)
        if ver("inmoose") != "not installed":
            try:
                t_in, tab = best(lambda opts=opts: inmoose_trend(gxs, X, dex, **opts), args.repeat)
                agree = (
                    ""
                    if ref is None
                    else f"max rel diff of t vs R {max_rel(tab['t'].to_numpy(), ref['t']):.1e}"
                )
                row("inmoose lmFit + eBayes (no topTable)", t_in, t_bk, agree)
            except Exception as err:  # report and go on (e.g. robust is not implemented)
                print(f"  inmoose failed: {type(err).__name__}: {err}")
        if ver("pylimma") != "not installed":
            t_py, tab = best(lambda opts=opts: pylimma_trend(logcpm.T, X, dex, **opts), args.repeat)
            agree = (
                "" if ref is None else f"max rel diff of t vs R {max_rel(tab['t'].to_numpy(), ref['t']):.1e}"
            )
            row("pylimma lm_fit + e_bayes", t_py, t_bk, agree)

    if args.no_sim:
        return
    sim = simulate(args.n_genes, args.n_samples)
    print(f"\nsimulated: {sim.n_obs} samples x {sim.n_vars} genes (NB counts), design ~ group + age")
    skw = {"design": "~ group + age", "contrast": ["group", "B", "A"]}
    reps = max(1, min(args.repeat, 2))
    t_all, _ = best(lambda: bk.tl.voom(sim, **skw, copy=True), reps)
    t_tmm, _ = best(lambda: bk.pp.norm_factors(sim, method="TMM"), reps)
    t_bk, _ = best(
        lambda: bk.tl.voom(sim, **skw, norm="none", norm_factors_key="norm_factors", copy=True), reps
    )
    print("voom + lmFit + eBayes (R not timed on this size: no R here)")
    row("bulkpy bk.tl.voom (TMM factors given)", t_bk, t_bk)
    row("bulkpy bk.pp.norm_factors (TMM) alone", t_tmm, t_bk)
    row("bulkpy bk.tl.voom (incl. TMM)", t_all, t_bk)
    if args.sim_others and ver("pylimma") != "not installed":
        c = sim.layers["counts"]
        slib = c.sum(axis=1)
        snf, _ = calc_norm_factors(c, lib_size=slib, method="TMM")
        SX, _ = bk._design.design_matrix(sim.obs, "~ group + age")
        t_py, _ = best(lambda: pylimma_voom(c.T, SX, slib * snf, 1), 1)
        row("pylimma voom + lm_fit + e_bayes", t_py, t_bk)


if __name__ == "__main__":
    main()
