"""Gene set enrichment speed: bulkpy vs GSEApy and decoupler, side by side.

    python benchmarks/bench_gsea.py                # everything (several minutes: GSEApy is slow)
    python benchmarks/bench_gsea.py --part prerank # only the preranked GSEA parts
    python benchmarks/bench_gsea.py --part scores --samples 1000
    python benchmarks/bench_gsea.py --part prerank --repeat 3 --no-permutation

Compared:

1. Preranked GSEA on fgsea's example (12,000 genes, 1,457 mouse Reactome sets, 586 with 15-500
   genes): ``bk.tl.gsea`` (fgsea's multilevel p-values) vs ``gseapy.prerank`` with 1,000
   permutations (``method="permutation"``) and with its own multilevel (``method="multilevel"``,
   GSEApy >= 1.1), and ``decoupler.mt.gsea`` (1,000 permutations). Agreement with fgsea 1.31
   (``../shared/data/fgsea_example/r_reference``, or the copy in tests/fixtures) is printed: NES
   correlation and median |log10 p - log10 p_fgsea| (permutation p-values cannot go below
   1/1000, so their error is large for strong sets by construction).
2. The same on 10,000 genes x 1,000 random sets (sizes log-uniform in 15-500; in 5% of them a
   quarter of the genes come from the top 10% of the ranking, so that some p-values are small).
3. Reactome (``bk.datasets.reactome()``, 2,694 sets) on a real DESeq2 statistic: airway's Wald
   statistic mapped to symbols (``../shared/data/airway/r_reference/wald_stat_by_symbol``, the
   input of fgsea's reference ``fgsea_reactome_wald_stat``, whose agreement is printed).
4. Per-sample scores on ``--samples`` samples x 5,000 genes x 50 sets (synthetic log-expression):
   ``bk.tl.score`` GSVA / ssGSEA / ulm / AUCell vs ``decoupler.mt.gsva`` / ``ulm`` / ``aucell``
   (decoupler has no ssGSEA). bulkpy's GSVA follows R's GSVA 1.46 exactly; decoupler's differs
   from it by up to ~6e-4 on geuvadis85 (see tests/test_tl_score.py).

Times are wall-clock seconds, the best of ``--repeat`` calls (default 3) in this one process, after a
warm-up call on small data (numba compilation is not timed), on this machine's threads (GSEApy
gets ``--threads``). The load average is printed: on a shared machine, compare ratios measured side
by side, not seconds across runs. For large cohorts of per-sample scores see ``bench_gsva.py``.
Not a test: run by hand, numbers are printed.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _common import AIRWAY_REF, best, ver

import bulkpy as bk

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fgsea_example"
FIXTURE = ROOT / "tests" / "fixtures" / "fgsea_example"


REPEAT = 3


def timed(fn):
    """(best wall time of ``REPEAT`` calls, the last result)."""
    return best(fn, REPEAT)


def fgsea_example():
    def find(name):
        p = SHARED / name
        return p if p.exists() else FIXTURE / f"{name}.gz"

    rnk = pd.read_csv(find("naive.vs.th1.rnk"), sep="\t", dtype={"ID": str})
    stats = pd.Series(rnk["t"].to_numpy(), index=rnk["ID"].to_numpy())
    sets = dict(bk.io.read_gmt(find("mouse.reactome.gmt")))
    ref_p = SHARED / "r_reference" / "fgsea_multilevel.csv.gz"
    ref_p = ref_p if ref_p.exists() else FIXTURE / "fgsea_multilevel.csv.gz"
    ref = pd.read_csv(ref_p).set_index("pathway") if ref_p.exists() else None
    return stats, sets, ref


def airway_reactome():
    stat = pd.read_csv(AIRWAY_REF / "wald_stat_by_symbol.csv.gz")
    stats = pd.Series(stat["stat"].to_numpy(), index=stat["symbol"].astype(str).to_numpy())
    ref_p = AIRWAY_REF / "fgsea_reactome_wald_stat.csv.gz"
    ref = pd.read_csv(ref_p).set_index("pathway") if ref_p.exists() else None
    return stats, dict(bk.datasets.reactome()), ref


def synthetic_prerank(n_genes=10_000, n_sets=1_000, seed=0):
    rng = np.random.default_rng(seed)
    genes = np.array([f"g{i}" for i in range(n_genes)], dtype=object)
    stats = pd.Series(rng.standard_t(5, size=n_genes) * 2, index=genes).sort_values(ascending=False)
    sizes = np.exp(rng.uniform(np.log(15), np.log(500), size=n_sets)).astype(int)
    sets = {}
    top = stats.index[:1000]
    for i, k in enumerate(sizes):
        genes_i = list(rng.choice(stats.index, size=k, replace=False))
        if i % 20 == 0:  # enriched: a quarter of the genes from the top 10% of the ranking
            extra = [g for g in rng.choice(top, size=k // 4, replace=False) if g not in set(genes_i)]
            genes_i = extra + genes_i[: k - len(extra)]
        sets[f"set{i}"] = genes_i
    return stats.sample(frac=1, random_state=seed), sets


def agreement(res: pd.DataFrame, ref: pd.DataFrame | None, nes: str, p: str) -> str:
    if ref is None:
        return "n/a"
    common = res.index.intersection(ref.index)
    r = res.loc[common]
    pv = r[p].astype(float).clip(lower=1e-300)
    d = np.abs(np.log10(pv) - np.log10(ref.loc[common, "pval"]))
    c = np.corrcoef(r[nes].astype(float), ref.loc[common, "NES"])[0, 1]
    return (
        f"NES r={c:.5f}, |dlog10 p| median {np.median(d):.3f}, 90% {np.percentile(d, 90):.2f}, "
        f"sets={len(common)}"
    )


def run_prerank(
    label: str, stats: pd.Series, sets: dict, ref, threads: int, methods=("permutation", "multilevel")
) -> list[tuple]:
    rows = []
    t, res = timed(lambda: bk.tl.gsea(stats, gene_sets=sets, min_size=15, max_size=500, seed=1))
    rows.append((label, "bulkpy gsea (multilevel)", t, agreement(res, ref, "NES", "pvalue")))
    t_bk = t
    try:
        import gseapy as gp

        for method in methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t, r = timed(
                    lambda method=method: gp.prerank(
                        rnk=stats, gene_sets=sets, min_size=15, max_size=500, permutation_num=1000,
                        threads=threads, seed=1, outdir=None, no_plot=True, method=method, eps=0.0,
                    )
                )  # fmt: skip
            res2 = r.res2d.set_index("Term")
            pcol = "NOM p-val"
            rows.append(
                (label, f"gseapy prerank ({method}, 1000 perm)", t, agreement(res2, ref, "NES", pcol))
            )
    except ImportError:
        rows.append((label, "gseapy", np.nan, "not installed"))
    import decoupler as dc

    long = pd.DataFrame(
        [(k, g) for k, v in sets.items() for g in dict.fromkeys(v) if g in stats.index],
        columns=["source", "target"],
    )
    size = long.groupby("source").size()
    long = long[long["source"].isin(size.index[(size >= 15) & (size <= 500)])]
    df = pd.DataFrame([stats.to_numpy()], index=["ranking"], columns=stats.index)
    t, (es, pv) = timed(lambda: dc.mt.gsea(df, long, tmin=15, times=1000, seed=1))
    resd = pd.DataFrame({"NES": es.iloc[0], "p": pv.iloc[0]})
    rows.append((label, "decoupler gsea (1000 perm)", t, agreement(resd, ref, "NES", "p")))
    return [(a, b, t, t / t_bk, d) for a, b, t, d in rows]


def synthetic_expression(n_samples: int, n_genes=5_000, n_sets=50, seed=0):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    x = rng.normal(size=(n_samples, n_genes)) + rng.gamma(2.0, 2.0, size=n_genes)
    sets = {}
    for i in range(n_sets):
        k = int(rng.integers(15, 200))
        idx = rng.choice(n_genes, size=k, replace=False)
        x[:, idx] += rng.normal(size=(n_samples, 1)) * 0.5  # a shared programme per set
        sets[f"set{i}"] = [genes[j] for j in idx]
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=[f"s{i}" for i in range(n_samples)]),
        var=pd.DataFrame(index=genes),
    )
    return adata, sets


def run_scores(n_samples: int) -> list[tuple]:
    import decoupler as dc

    adata, sets = synthetic_expression(n_samples)
    net = pd.DataFrame([(k, g) for k, v in sets.items() for g in v], columns=["source", "target"])
    df = pd.DataFrame(adata.X, index=adata.obs_names, columns=adata.var_names)
    label = f"{adata.n_obs} samples x {adata.n_vars} genes x {len(sets)} sets"
    rows = []
    for method, dc_name in (("gsva", "gsva"), ("ssgsea", None), ("ulm", "ulm"), ("aucell", "aucell")):
        t_bk, _ = timed(lambda method=method: bk.tl.score(adata, gene_sets=sets, method=method, min_size=5))
        ours = adata.obsm[f"score_{method}"]
        if dc_name is None:
            rows.append(
                (label, f"{method}: bulkpy / decoupler (none)", t_bk, np.nan, "decoupler has no ssGSEA")
            )
            continue
        t_dc, (es, _) = timed(lambda dc_name=dc_name: getattr(dc.mt, dc_name)(df, net, tmin=5))
        diff = np.abs(ours.to_numpy() - es.loc[ours.index, ours.columns].to_numpy()).max()
        rows.append(
            (
                label,
                f"{method}: bulkpy / decoupler",
                t_bk,
                t_dc / t_bk,
                f"decoupler {t_dc:.2f} s, max|diff| {diff:.1e}",
            )
        )
    return rows


def warm_up():
    stats, sets = synthetic_prerank(n_genes=500, n_sets=20, seed=9)
    bk.tl.gsea(stats, gene_sets=sets, min_size=15, max_size=500)
    adata, s = synthetic_expression(12, n_genes=300, n_sets=5)
    for m in ("gsva", "ssgsea", "ulm", "aucell"):
        bk.tl.score(adata, gene_sets=s, method=m, min_size=5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["all", "prerank", "scores"], default="all")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="GSEApy threads")
    ap.add_argument("--repeat", type=int, default=3, help="calls per tool; the best time is shown")
    ap.add_argument("--no-permutation", action="store_true", help="skip GSEApy's permutation method")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    import os

    import numba

    print(
        f"bulkpy {bk.__version__}, gseapy {ver('gseapy')}, decoupler {ver('decoupler')}, numba {ver('numba')} "
        f"({numba.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
        + " ".join(f"{v:.1f}" for v in os.getloadavg())
        + f"; best of {REPEAT} calls"
    )
    methods = ("multilevel",) if args.no_permutation else ("permutation", "multilevel")
    warm_up()
    rows = []
    if args.part in ("all", "prerank"):
        stats, sets, ref = fgsea_example()
        rows += run_prerank(
            f"fgsea example: {stats.size} genes, {len(sets)} sets", stats, sets, ref, args.threads, methods
        )
        stats, sets = synthetic_prerank()
        rows += run_prerank(
            f"synthetic: {stats.size} genes, {len(sets)} sets", stats, sets, None, args.threads, methods
        )
        if (AIRWAY_REF / "wald_stat_by_symbol.csv.gz").exists():
            stats, sets, ref = airway_reactome()
            rows += run_prerank(
                f"airway Wald stat: {stats.size} genes, Reactome {len(sets)} sets",
                stats, sets, ref, args.threads, methods,
            )  # fmt: skip
    if args.part in ("all", "scores"):
        rows += run_scores(args.samples)
    out = pd.DataFrame(rows, columns=["data", "tool", "seconds", "ratio", "notes"])
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(out.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(
        "ratio: prerank rows = seconds / bulkpy's seconds on the same data (>1: slower than bulkpy); "
        "score rows = decoupler's seconds / bulkpy's"
    )


if __name__ == "__main__":
    main()
