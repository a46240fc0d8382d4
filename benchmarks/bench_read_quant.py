"""bk.io.read_quant against pytximport (if installed) on the 6 GEUVADIS salmon samples.

Run: ``python benchmarks/bench_read_quant.py [path/to/shared/data]``. Prints the data size, the
best wall and CPU time of a few runs of each tool, and their largest relative difference from the
R tximport 1.26 reference (lengthScaledTPM counts).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bulkpy as bk

ROOT = Path(__file__).resolve().parents[1]
SHARED = (
    Path(sys.argv[1])
    if len(sys.argv) > 1
    else Path(os.environ.get("BULKPY_SHARED_DATA", ROOT.parent / "shared" / "data"))
)
D = SHARED / "geuvadis6_quant"
REPEATS = 3


def best_of(fn):
    walls, cpus, out = [], [], None
    for _ in range(REPEATS):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, min(walls), min(cpus)


def max_rel_diff(genes_by_samples: pd.DataFrame, ref: pd.DataFrame) -> float:
    got = genes_by_samples.loc[ref.index, ref.columns].to_numpy()
    want = ref.to_numpy()
    return float((np.abs(got - want) / np.maximum(np.abs(want), 1e-300)).max())


def main():
    if not D.exists():
        sys.exit(f"shared data not found: {D}")
    runs = pd.read_csv(D / "samples.txt", sep=" ")["run"].tolist()
    files = {r: D / "salmon" / r / "quant.sf.gz" for r in runs}
    t2g_path = D / "tx2gene_gencode_v27_derived_from_rsem.csv.gz"
    ref = pd.read_csv(D / "r_reference" / "salmon_lengthScaledTPM_counts.csv.gz", index_col=0)
    n_tx = sum(1 for _ in pd.read_csv(files[runs[0]], sep="\t", usecols=[0]).itertuples())
    print(
        f"data: {len(runs)} salmon samples x {n_tx:,} transcripts -> {len(ref):,} genes; load {os.getloadavg()[0]:.1f}"
    )

    adata, wall, cpu = best_of(
        lambda: bk.io.read_quant(
            files, type="salmon", tx2gene=t2g_path, counts_from_abundance="lengthScaledTPM"
        )
    )
    d = max_rel_diff(adata.to_df(layer="counts").T, ref)
    print(f"bulkpy     read_quant: wall {wall:.2f} s, cpu {cpu:.2f} s, max rel diff vs R {d:.1e}")

    try:
        from pytximport import tximport
    except ImportError:
        print("pytximport not installed: skipped")
        return
    logging.disable(logging.CRITICAL)
    t2g = pd.read_csv(t2g_path)
    t2g.columns = ["transcript_id", "gene_id"]
    res, wall2, cpu2 = best_of(
        lambda: tximport(
            [str(f) for f in files.values()],
            data_type="salmon",
            transcript_gene_map=t2g,
            counts_from_abundance="length_scaled_tpm",
            ignore_transcript_version=False,
            ignore_after_bar=False,
        )
    )
    df = pd.DataFrame(np.asarray(res.X), index=runs, columns=res.var_names).T
    d2 = max_rel_diff(df, ref)
    print(f"pytximport tximport:  wall {wall2:.2f} s, cpu {cpu2:.2f} s, max rel diff vs R {d2:.1e}")
    print(f"ratio (pytximport / bulkpy): wall {wall2 / wall:.2f}x, cpu {cpu2 / cpu:.2f}x")


if __name__ == "__main__":
    main()
