"""A simulated multi-donor single-cell data set with known differential expression per cell type.

Used by ``tests/test_tl_grouped.py`` (small) and ``benchmarks/bench_pseudobulk_de.py`` (FDR and
power per method and cell type; speed from cells to results). The model, per gene ``g``:

- each cell type ``k`` has its own expression profile: a log-normal base abundance shared by all
  cell types, a cell type-specific log-normal deviation, and a fraction of genes switched (almost)
  off in each cell type;
- donors are random effects: ``N(0, donor_sd)`` on the log scale per donor × cell type × gene,
  shared by a donor's samples, plus ``N(0, sample_sd)`` per sample × cell type × gene;
- each donor gives a ``ctrl`` and a ``stim`` sample (paired, ``paired=True``) or one of the two
  (half the donors each);
- the stimulation changes a fraction ``de_frac`` of each cell type's genes by a log2 fold change
  drawn uniformly from ``±[lfc_min, lfc_max]``; half of those genes are shared by every cell
  type (with cell type-specific sizes), half are specific to the cell type;
- cells per unit (sample × cell type) are negative binomial around a cell type abundance times a
  donor factor (unequal, some units small), UMIs per cell log-normal; a cell's counts are a
  multinomial draw of its UMIs from its unit's profile.

The truth is in ``var[f"de_{cell_type}"]`` (bool) and ``var[f"lfc_{cell_type}"]`` (the true log2
fold change of stim over ctrl, 0 for non-DE genes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse


def simulate(
    *,
    n_donors: int = 8,
    n_cell_types: int = 4,
    n_genes: int = 2000,
    mean_cells: float = 150,
    umis_per_cell: float = 1500,
    paired: bool = True,
    de_frac: float = 0.1,
    lfc_min: float = 0.5,
    lfc_max: float = 2.0,
    donor_sd: float = 0.3,
    sample_sd: float = 0.2,
    seed: int = 0,
) -> AnnData:
    """Cells × genes raw UMI counts (CSR float32) with ``obs`` ``donor``, ``condition``,
    ``sample`` (donor_condition) and ``cell_type``; truth in ``var`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    G, K = n_genes, n_cell_types
    cell_types = [f"type{k}" for k in range(K)]
    donors = [f"d{i:02d}" for i in range(n_donors)]
    genes = [f"gene{g:05d}" for g in range(G)]

    base = rng.normal(0.0, 1.6, G)  # log abundance shared by all cell types
    profile = base[None, :] + rng.normal(0.0, 0.5, (K, G))
    off = rng.random((K, G)) < 0.15
    profile[off] -= 5.0

    lfc = np.zeros((K, G))
    n_de = int(round(de_frac * G))
    shared = rng.choice(G, n_de // 2, replace=False)
    for k in range(K):
        own = rng.choice(np.setdiff1d(np.arange(G), shared), n_de - shared.size, replace=False)
        idx = np.concatenate([shared, own])
        lfc[k, idx] = rng.uniform(lfc_min, lfc_max, idx.size) * rng.choice([-1.0, 1.0], idx.size)

    if paired:
        samples = [(d, c) for d in donors for c in ("ctrl", "stim")]
    else:
        samples = [(d, "ctrl" if i % 2 == 0 else "stim") for i, d in enumerate(donors)]
    donor_eff = rng.normal(0.0, donor_sd, (n_donors, K, G))
    donor_size = rng.lognormal(0.0, 0.4, n_donors)
    abundance = rng.dirichlet(np.full(K, 3.0)) * K

    blocks, obs_parts = [], []
    for donor, cond in samples:
        d = donors.index(donor)
        for k in range(K):
            mu = mean_cells * abundance[k] * donor_size[d]
            n = int(rng.negative_binomial(4, 4 / (4 + mu)))
            if n == 0:
                continue
            logp = profile[k] + donor_eff[d, k] + rng.normal(0.0, sample_sd, G)
            if cond == "stim":
                logp = logp + lfc[k] * np.log(2.0)
            p = np.exp(logp - logp.max())
            cdf = np.cumsum(p / p.sum())
            cdf[-1] = 1.0
            umis = np.maximum(rng.lognormal(np.log(umis_per_cell), 0.4, n).astype(np.int64), 1)
            gene = np.searchsorted(cdf, rng.random(int(umis.sum())), side="right")
            cell = np.repeat(np.arange(n), umis)
            dense = np.bincount(cell * G + gene, minlength=n * G).reshape(n, G)
            blocks.append(sparse.csr_matrix(dense.astype(np.float32)))
            obs_parts.append(pd.DataFrame({"donor": donor, "condition": cond, "cell_type": cell_types[k]}, index=range(n)))
    X = sparse.vstack(blocks, format="csr")
    obs = pd.concat(obs_parts, ignore_index=True)
    obs["sample"] = obs["donor"] + "_" + obs["condition"]
    for c, cats in (("donor", donors), ("condition", ["ctrl", "stim"]), ("cell_type", cell_types)):
        obs[c] = pd.Categorical(obs[c], categories=cats)
    obs["sample"] = pd.Categorical(obs["sample"])
    order = rng.permutation(X.shape[0])  # cells in random order, as a real object
    X, obs = X[order], obs.iloc[order].reset_index(drop=True)
    obs.index = [f"cell{i}" for i in range(X.shape[0])]
    var = pd.DataFrame(index=genes)
    for k, ct in enumerate(cell_types):
        var[f"de_{ct}"] = lfc[k] != 0
        var[f"lfc_{ct}"] = lfc[k]
    return AnnData(X=X, obs=obs, var=var)


def fdr_power(called: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    """False discovery proportion, power (true positives / true DE genes) and number of calls."""
    called, truth = np.asarray(called, dtype=bool), np.asarray(truth, dtype=bool)
    n = int(called.sum())
    fdp = float((called & ~truth).sum() / n) if n else 0.0
    power = float((called & truth).sum() / truth.sum()) if truth.any() else float("nan")
    return fdp, power, n
