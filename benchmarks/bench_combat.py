"""ComBat speed: bulkpy vs scanpy on bladderbatch, and bulkpy's ComBat-seq on pasilla.

    python benchmarks/bench_combat.py              # best of 5
    python benchmarks/bench_combat.py --repeat 10

Compared on bladderbatch (22,283 probes x 57 arrays, log2 RMA, 5 batches; from
``../shared/data/bladderbatch``), each call including the package's own input handling:

- ``bk.pp.combat(adata, batch="batch")`` vs ``scanpy.pp.combat(adata, key="batch", inplace=False)``;
- the same with the covariate ``cancer`` kept (sva: ``mod = model.matrix(~cancer)``);
- bulkpy's non-parametric ComBat (scanpy has none).

ComBat-seq (``bk.pp.combat_seq`` on pasilla, 9,819 genes with row sum > 10 x 7 samples,
batch = type, group = condition) is timed alone: no Python package a user would pick instead is
installed here besides inmoose, whose ``pycombat_norm`` / ``pycombat_seq`` ports of sva are timed
when it is importable.

Agreement with sva 3.46 (``r_reference/combat_parametric.csv.gz``, ``ComBat(e, batch,
model.matrix(~cancer))``) is printed as the maximum absolute difference. Times are wall-clock
seconds of one call, best of ``--repeat``. Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from _common import SHARED, best, ver

import bulkpy as bk


def load_bladderbatch() -> ad.AnnData:
    d = SHARED / "bladderbatch"
    if not (d / "expression_log2.csv.gz").exists():
        sys.exit(f"bladderbatch not found in {d}; place shared/ beside the checkout")
    e = pd.read_csv(d / "expression_log2.csv.gz", index_col=0)
    ph = pd.read_csv(d / "pheno.csv", index_col=0)
    obs = pd.DataFrame(
        {"batch": pd.Categorical(ph["batch"].astype(str)), "cancer": pd.Categorical(ph["cancer"].astype(str))},
        index=ph.index.astype(str),
    )
    a = ad.AnnData(X=e.T.to_numpy(dtype=np.float64), obs=obs)
    a.var_names = e.index.astype(str)
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import scanpy as sc

    a = load_bladderbatch()
    ref_p = SHARED / "bladderbatch" / "r_reference" / "combat_parametric.csv.gz"
    ref = pd.read_csv(ref_p, index_col=0).T.to_numpy() if ref_p.exists() else None
    print(f"bladderbatch: {a.n_vars:,} genes x {a.n_obs} samples, {a.obs['batch'].nunique()} batches")
    print(f"bulkpy {bk.__version__}, scanpy {ver('scanpy')}, numpy {np.__version__}\n")

    def bk_run(**kw):
        return bk.pp.combat(a, batch="batch", copy=True, **kw).layers["combat"]

    def sc_run(**kw):
        b = a.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sc.pp.combat(b, key="batch", inplace=False, **kw)

    rows = []
    t_bk, r_bk = best(lambda: bk_run(), args.repeat)
    t_sc, r_sc = best(lambda: sc_run(), args.repeat)
    rows.append(("parametric, batch only", t_bk, t_sc, f"bulkpy vs scanpy max |diff| {np.abs(r_bk - r_sc).max():.1e}"))
    t_bk, r_bk = best(lambda: bk_run(covariates=["cancer"]), args.repeat)
    t_sc, r_sc = best(lambda: sc_run(covariates=["cancer"]), args.repeat)
    note = ""
    if ref is not None:
        note = f"vs sva: bulkpy {np.abs(r_bk - ref).max():.1e}, scanpy {np.abs(r_sc - ref).max():.1e}"
    rows.append(("parametric, covariate cancer", t_bk, t_sc, note))
    t_np, _ = best(lambda: bk_run(covariates=["cancer"], parametric=False), max(1, min(args.repeat, 2)))
    rows.append(("non-parametric, covariate cancer", t_np, float("nan"), "scanpy: not available"))

    print(f"{'ComBat':36s} {'bulkpy s':>9s} {'scanpy s':>9s} {'scanpy/bulkpy':>14s}  notes")
    for name, tb, ts, note in rows:
        ratio = ts / tb if np.isfinite(ts) else float("nan")
        print(f"{name:36s} {tb:9.3f} {ts:9.3f} {ratio:14.1f}  {note}")

    try:
        from inmoose.pycombat import pycombat_norm, pycombat_seq
    except ImportError:
        pycombat_norm = pycombat_seq = None
        print("\ninmoose (pycombat_norm, pycombat_seq): not installed")
    if pycombat_norm is not None:
        e = a.X.T.copy()
        batch = a.obs["batch"].to_numpy()
        cancer = a.obs["cancer"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_in, r_in = best(lambda: np.asarray(pycombat_norm(e, batch, covar_mod=cancer)).T, args.repeat)
        note = f"vs sva {np.abs(r_in - ref).max():.1e}" if ref is not None else ""
        print(
            f"\ninmoose {ver('inmoose')} pycombat_norm, covariate cancer: {t_in:.3f} s "
            f"(ratio to bulkpy {t_in / rows[1][1]:.1f}); {note}"
        )

    p = bk.datasets.pasilla()
    p = p[:, p.layers["counts"].sum(axis=0) > 10].copy()
    print(f"\npasilla (ComBat-seq): {p.n_vars:,} genes x {p.n_obs} samples, batch = type, group = condition")
    t_seq, out = best(lambda: bk.pp.combat_seq(p, batch="type", group="condition", copy=True), max(1, min(args.repeat, 3)))
    line = f"bk.pp.combat_seq: {t_seq:.2f} s"
    seq_ref = SHARED / "pasilla" / "r_reference" / "combat_seq_type_condition_rowsum10.csv.gz"
    if seq_ref.exists():
        r = pd.read_csv(seq_ref, index_col=0)
        got = pd.DataFrame(out.layers["combat_seq"].T, index=p.var_names, columns=p.obs_names).loc[r.index, r.columns]
        line += f"; counts equal to sva's: {(got.to_numpy() == r.to_numpy()).mean():.4%}"
    print(line)
    if pycombat_seq is not None:
        counts = p.layers["counts"].T.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_in, r_in = best(
                lambda: np.asarray(
                    pycombat_seq(counts, p.obs["type"].astype(str).to_numpy(), covar_mod=p.obs["condition"].astype(str).to_numpy())
                ),
                1,
            )
        line = f"inmoose {ver('inmoose')} pycombat_seq (group as covar_mod): {t_in:.2f} s (ratio to bulkpy {t_in / t_seq:.1f})"
        if seq_ref.exists():
            got = pd.DataFrame(r_in, index=p.var_names, columns=p.obs_names).loc[r.index, r.columns]
            line += f"; counts equal to sva's: {(got.to_numpy() == r.to_numpy()).mean():.4%}"
        print(line)


if __name__ == "__main__":
    main()
