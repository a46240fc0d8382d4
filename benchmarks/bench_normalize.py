"""Normalisation speed: bulkpy vs the Python packages a user would pick instead, on airway.

    python benchmarks/bench_normalize.py               # airway (8 samples x 64,102 genes), best of 5
    python benchmarks/bench_normalize.py --repeat 10

Compared (each on raw counts, including the package's own input handling):

- TMM factors: ``bk.pp.norm_factors(adata)`` vs ``rnanorm.TMM().fit(X).get_norm_factors(X)`` and
  ``conorm.tmm_norm_factors(df)`` (each of these ports edgeR's TMM);
- DESeq2 size factors: ``bk.pp.size_factors(adata)`` vs ``pydeseq2.preprocessing.deseq2_norm(X)``;
- log-CPM with TMM: ``bk.pp.normalize(adata, method="tmm", log=True)`` vs
  ``rnanorm.TMM().set_output(...).fit_transform`` followed by edgeR's prior (rnanorm has no log
  transform with edgeR's library-size scaled prior, so only the scaling is timed there).

Times are wall-clock seconds of one call, best of ``--repeat``. Agreement with edgeR's / DESeq2's
factors (from ``../shared/data/airway/r_reference`` when present) is printed next to each
package. Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import best, ver

import bulkpy as bk

REF = Path(__file__).resolve().parents[2] / "shared" / "data" / "airway" / "r_reference"


def ref(name: str, col: str, index) -> np.ndarray | None:
    p = REF / name
    return pd.read_csv(p, index_col=0).loc[index, col].to_numpy() if p.exists() else None


def err(x, r) -> str:
    if r is None:
        return "n/a"
    return f"{np.max(np.abs(np.asarray(x, dtype=float) / r - 1)):.1e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    adata = bk.datasets.airway()
    X = np.asarray(adata.layers["counts"])
    df = pd.DataFrame(X.T, index=adata.var_names, columns=adata.obs_names)  # genes x samples
    print(f"airway: {adata.n_obs} samples x {adata.n_vars} genes; best of {args.repeat}")
    print(f"bulkpy {bk.__version__}, rnanorm {ver('rnanorm')}, conorm {ver('conorm')}, pydeseq2 {ver('pydeseq2')}")
    rows = []

    tmm_ref = ref("edger_tmm_all_genes.csv.gz", "norm_factor", adata.obs_names)
    # bulkpy runs in place (its default); the AnnData's own bookkeeping is included in the time
    t_bk, _ = best(lambda: bk.pp.norm_factors(adata), args.repeat)
    rows.append(("TMM factors", "bulkpy", t_bk, err(adata.obs["norm_factors"], tmm_ref)))
    try:
        from rnanorm import TMM

        t, f = best(lambda: TMM().fit(X).get_norm_factors(X), args.repeat)
        rows.append(("TMM factors", "rnanorm", t, err(f, tmm_ref)))
    except ImportError:
        rows.append(("TMM factors", "rnanorm", np.nan, "not installed"))
    try:
        import conorm

        t, f = best(lambda: conorm.tmm_norm_factors(df), args.repeat)
        rows.append(("TMM factors", "conorm", t, err(np.asarray(f).ravel(), tmm_ref)))
    except ImportError:
        rows.append(("TMM factors", "conorm", np.nan, "not installed"))
    except TypeError as e:  # conorm 1.2 passes numpy's removed ``interpolation=`` keyword (numpy >= 2)
        rows.append(("TMM factors", "conorm", np.nan, f"fails: {str(e)[:40]}"))

    sf_ref = ref("deseq2_size_factors.csv.gz", "size_factor", adata.obs_names)
    t_sf, _ = best(lambda: bk.pp.size_factors(adata), args.repeat)
    rows.append(("size factors (ratio)", "bulkpy", t_sf, err(adata.obs["size_factors"], sf_ref)))
    try:
        from pydeseq2.preprocessing import deseq2_norm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, (_, sf) = best(lambda: deseq2_norm(X), args.repeat)
        rows.append(("size factors (ratio)", "pydeseq2", t, err(sf, sf_ref)))
    except ImportError:
        rows.append(("size factors (ratio)", "pydeseq2", np.nan, "not installed"))

    del adata.obs["norm_factors"]  # so that normalize computes the TMM factors itself, as rnanorm does
    t_lc, _ = best(lambda: bk.pp.normalize(adata, method="tmm", log=True), args.repeat)
    rows.append(("log-CPM (TMM, prior 2)", "bulkpy", t_lc, "-"))
    try:
        from rnanorm import TMM

        t, _ = best(lambda: np.log2(TMM().fit_transform(X) + 1), args.repeat)
        rows.append(("log-CPM (TMM, prior 2)", "rnanorm", t, "log2(TMM CPM + 1), not edgeR prior"))
    except ImportError:
        pass

    t_it, _ = best(lambda: bk.pp.size_factors(adata, method="iterate"), 1)
    it_ref = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "airway" / "deseq2_size_factors_iterate.csv.gz"
    r_it = pd.read_csv(it_ref, index_col=0).loc[adata.obs_names, "size_factor"].to_numpy() if it_ref.exists() else None
    rows.append(("size factors (iterate, 1 run)", "bulkpy", t_it, err(adata.obs["size_factors"], r_it)))

    res = pd.DataFrame(rows, columns=["task", "package", "seconds", "max rel. diff to R"])
    base = {task: s for task, pkg, s, _ in rows if pkg == "bulkpy"}
    res["x slower than bulkpy"] = [s / base.get(task, np.nan) if pkg != "bulkpy" else 1.0 for task, pkg, s, _ in rows]
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print(res.to_string(index=False))
    timings = REF / "timings_r.csv.gz"
    if timings.exists():
        print("R (timings_r.csv.gz, 2 cores):", pd.read_csv(timings, index_col=0)["seconds"].to_dict())


if __name__ == "__main__":
    main()
