"""Pseudobulk speed and memory: bulkpy vs decoupler vs scanpy on a simulated sparse count matrix.

    python benchmarks/bench_pseudobulk.py                 # 200k cells x 20k genes, ~1,000 genes per cell
    python benchmarks/bench_pseudobulk.py --cells 50000   # smaller

Compared, each summing raw counts per sample x cell type:

- ``bk.pp.pseudobulk(adata, sample_key=..., groups_key=...)``;
- ``decoupler.pp.pseudobulk(adata, sample_col=..., groups_col=...)`` (decoupler 2.x);
- ``scanpy.get.aggregate(adata, by=[...], func="sum")``.

Times are wall-clock seconds of one call each (``--repeat`` for the best of several). With
``--memory`` each call is run once more under ``tracemalloc`` to report the peak of the memory it
allocates (numpy and scipy buffers) on top of the input matrix; the timed runs are not traced. The
results are checked to agree. Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import warnings
from importlib.metadata import version

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse


def simulate(n_cells: int, n_genes: int, genes_per_cell: int, n_samples: int, n_groups: int, seed: int) -> AnnData:
    """CSR float32 UMI-like counts: skewed gene popularity, cells in random order."""
    rng = np.random.default_rng(seed)
    nnz = n_cells * genes_per_cell
    # quadratic skew: low gene indices are detected far more often
    indices = np.floor(n_genes * rng.random(nnz, dtype=np.float32) ** 2).astype(np.int32)
    np.minimum(indices, n_genes - 1, out=indices)
    data = (1 + rng.geometric(0.6, nnz)).astype(np.float32)
    indptr = np.arange(0, nnz + 1, genes_per_cell, dtype=np.int64)
    X = sparse.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    X.sum_duplicates()  # canonical CSR (sorted, unique indices per cell)
    samples = np.array([f"donor{i:02d}" for i in range(n_samples)])
    groups = np.array([f"type{j:02d}" for j in range(n_groups)])
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(samples[rng.integers(0, n_samples, n_cells)], categories=samples),
            "cell_type": pd.Categorical(groups[rng.integers(0, n_groups, n_cells)], categories=groups),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    obs["condition"] = pd.Categorical(np.where(obs["sample"].cat.codes % 2 == 0, "ctrl", "stim"))
    return AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))


def run(fn, repeat: int, memory: bool):
    """Best wall time of ``repeat`` untraced calls, and the traced peak of one more call (``memory``)."""
    best, peak, out = np.inf, np.nan, None
    for _ in range(repeat):
        out = None
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    if memory:
        out = None
        gc.collect()
        tracemalloc.start()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out, best, peak


def matrix_of(adata: AnnData, layer: str | None) -> np.ndarray:
    x = adata.X if layer is None else adata.layers[layer]
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--genes-per-cell", type=int, default=1_000)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--groups", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", action="store_true", help="also trace the peak memory of each call")
    ap.add_argument("--skip", nargs="*", default=[], choices=["decoupler", "scanpy"])
    args = ap.parse_args()

    import bulkpy as bk

    t = time.perf_counter()
    adata = simulate(args.cells, args.genes, args.genes_per_cell, args.samples, args.groups, args.seed)
    X = adata.X
    mb = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
    print(
        f"data: {adata.n_obs:,} cells x {adata.n_vars:,} genes, CSR {X.dtype}, {X.nnz:,} non-zeros "
        f"({X.nnz / np.prod(X.shape):.1%}), {mb:,.0f} MB; {args.samples} samples x {args.groups} cell types "
        f"(simulated in {time.perf_counter() - t:.1f} s)"
    )

    results = {}
    res, sec, peak = run(
        lambda: bk.pp.pseudobulk(adata, sample_key="sample", groups_key="cell_type", min_cells=0), args.repeat, args.memory
    )
    ref = pd.DataFrame(matrix_of(res, "counts"), index=res.obs_names)
    results["bulkpy"] = (sec, peak, 0.0)

    if "decoupler" not in args.skip:
        import decoupler as dc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, sec, peak = run(
                lambda: dc.pp.pseudobulk(adata, sample_col="sample", groups_col="cell_type", mode="sum"), args.repeat, args.memory
            )
        m = pd.DataFrame(matrix_of(res, None), index=res.obs_names).loc[ref.index]
        results[f"decoupler {version('decoupler')}"] = (sec, peak, float(np.abs(m.to_numpy() - ref.to_numpy()).max()))

    if "scanpy" not in args.skip:
        import scanpy as sc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, sec, peak = run(lambda: sc.get.aggregate(adata, by=["sample", "cell_type"], func="sum"), args.repeat, args.memory)
        names = [f"{s}_{g}" for s, g in zip(res.obs["sample"], res.obs["cell_type"], strict=True)]
        m = pd.DataFrame(matrix_of(res, "sum"), index=names).loc[ref.index]
        results[f"scanpy {version('scanpy')}"] = (sec, peak, float(np.abs(m.to_numpy() - ref.to_numpy()).max()))

    base = results["bulkpy"][0]
    print(f"{'tool':<18}{'seconds':>10}{'x bulkpy':>10}{'peak MB':>10}  max |diff| vs bulkpy")
    for name, (sec, peak, diff) in results.items():
        print(f"{name:<18}{sec:>10.2f}{sec / base:>10.1f}{peak / 2**20:>10,.0f}  {diff:.3g}")


if __name__ == "__main__":
    main()
