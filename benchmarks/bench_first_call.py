"""First-call latency: how long the first call of each public function takes in a fresh process.

bulkpy's engines are numba functions compiled on first use and cached on disk (``cache=True``).
For each function this script runs two fresh Python processes sharing one numba cache folder
(``NUMBA_CACHE_DIR``, created empty): the first compiles ("cold"), the second loads the cache
("warm"). Only the call is timed (data loading and ``import bulkpy`` are timed apart), on the bundled
pasilla data (7 samples × 14,599 genes; airway's 8 samples for the gene-set functions).

    python benchmarks/bench_first_call.py                  # every function, then the demo
    python benchmarks/bench_first_call.py --only pp.vst tl.deseq --repeat 3
    python benchmarks/bench_first_call.py --compiles        # also the slowest numba compilations

``--compiles`` lists, for each cold call, the numba functions compiled and their compile time
(numba's compile events), which shows where the cold time goes. ``--demo`` times ``bulkpy demo``
cold and warm. Timings on a shared machine are noisy: use ``--repeat`` and read the ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# setup (not timed) and call (timed) of each case; ``a`` is the AnnData the call works on
_PASILLA = (
    "a = bk.datasets.pasilla(); bk.pp.filter_by_expr(a, design='~ type + condition', subset=True)"
)
_AIRWAY_DE = (
    "a = bk.datasets.airway(); bk.pp.filter_by_expr(a, design='~ cell + dex', subset=True); "
    "bk.pp.annotate_genes(a); a.layers['logc'] = np.log2(a.layers['counts'] + 1.0); "
    "bk.tl.limma(a, design='~ cell + dex', contrast=['dex', 'trt', 'untrt'], layer='logc'); "
    "sets = bk.datasets.reactome()"
)
_WALD = "design='~ type + condition', contrast=['condition', 'treated', 'untreated']"

CASES: dict[str, tuple[str, str]] = {
    "pp.qc_metrics": (_PASILLA, "bk.pp.qc_metrics(a)"),
    "pp.filter_by_expr": ("a = bk.datasets.pasilla()", "bk.pp.filter_by_expr(a, design='~ type + condition')"),
    "pp.size_factors": (_PASILLA, "bk.pp.size_factors(a)"),
    "pp.norm_factors": (_PASILLA, "bk.pp.norm_factors(a, method='TMM')"),
    "pp.normalize": (_PASILLA, "bk.pp.normalize(a, method='tmm', log=True)"),
    "pp.vst": (_PASILLA, "bk.pp.vst(a)"),
    "pp.rlog": (_PASILLA, "bk.pp.rlog(a, progress=False)"),
    "pp.quantile_normalize": (_PASILLA + "; bk.pp.normalize(a, log=True, key_added='log_cpm')",
                              "bk.pp.quantile_normalize(a)"),
    "pp.combat": (_PASILLA + "; bk.pp.normalize(a, log=True, key_added='log_cpm')",
                  "bk.pp.combat(a, batch='type', layer='log_cpm')"),
    "pp.combat_seq": (_PASILLA, "bk.pp.combat_seq(a, batch='type', group='condition')"),
    "tl.deseq": (_PASILLA, f"bk.tl.deseq(a, {_WALD})"),
    "tl.deseq(apeglm)": (_PASILLA, "bk.tl.deseq(a, design='~ type + condition', "
                                   "contrast=['condition', 'untreated', 'treated'], shrink='apeglm')"),
    "tl.edger": (_PASILLA, f"bk.tl.edger(a, {_WALD})"),
    "tl.edger(LRT)": (_PASILLA, f"bk.tl.edger(a, {_WALD}, test='LRT')"),
    "tl.voom": (_PASILLA, f"bk.tl.voom(a, {_WALD})"),
    "tl.limma": (_PASILLA + "; bk.pp.normalize(a, method='tmm', log=True, key_added='logc')",
                 f"bk.tl.limma(a, {_WALD}, layer='logc', trend=True)"),
    "tl.rank_test": (_PASILLA + "; bk.pp.normalize(a, log=True, key_added='logc')",
                     "bk.tl.rank_test(a, groupby='condition', group='treated', reference='untreated', layer='logc')"),
    "tl.gsea": (_AIRWAY_DE, "bk.tl.gsea(a, key='limma', gene_sets=sets, gene_symbols='symbol', seed=0)"),
    "tl.ora": (_AIRWAY_DE, "bk.tl.ora(a, key='limma', gene_sets=sets, gene_symbols='symbol')"),
    "tl.score(gsva)": (_AIRWAY_DE, "bk.tl.score(a, gene_sets=sets, method='gsva', layer='logc', gene_symbols='symbol')"),
    "tl.camera": (_AIRWAY_DE, "bk.tl.camera(a, sets, key='limma', gene_symbols='symbol')"),
    "io.write_report": (_PASILLA + f"; bk.tl.deseq(a, {_WALD}); import tempfile, pathlib; "
                        "out = pathlib.Path(tempfile.mkdtemp()) / 'r.html'",
                        "bk.io.write_report(a, out)"),
}

_CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
compiles = []
if os.environ.get("_BENCH_COMPILES"):
    from numba.core import event

    class _L(event.Listener):
        def on_start(self, ev):
            self.t = getattr(self, "t", {})
            self.t[id(ev.data["dispatcher"]), str(ev.data["args"])] = time.perf_counter()
        def on_end(self, ev):
            k = (id(ev.data["dispatcher"]), str(ev.data["args"]))
            d = ev.data["dispatcher"]
            compiles.append((f"{d.py_func.__module__}.{d.py_func.__qualname__}", time.perf_counter() - self.t.pop(k, time.perf_counter())))
    event.register("numba:compile", _L())
import numpy as np
import bulkpy as bk
t1 = time.perf_counter()
exec(sys.argv[1])
t2 = time.perf_counter()
exec(sys.argv[2])
t3 = time.perf_counter()
print("@@" + json.dumps({"import": t1 - t0, "setup": t2 - t1, "call": t3 - t2, "compiles": compiles}))
"""


def _run(setup: str, call: str, cache: str, compiles: bool) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    if compiles:
        env["_BENCH_COMPILES"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, setup, call], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{call!r} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:6.1f}" if len(values) == 1 or hi - lo < 0.05 else f"{lo:6.1f}–{hi:<5.1f}"


def _time_demo(repeat: int) -> None:
    cold, warm = [], []
    for _ in range(repeat):
        cache = tempfile.mkdtemp(prefix="bulkpy_numba_")
        out = tempfile.mkdtemp(prefix="bulkpy_demo_")
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for store in (cold, warm):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bulkpy", "demo", "--out", out], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            store.append(time.perf_counter() - t)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n  {'bulkpy demo (whole process)':<28s}{_span(cold):>13s} {_span(warm):>13s}   ratio "
          f"{min(cold) / min(warm):.1f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help=f"functions to time (default all): {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=1, help="cold/warm pairs per function (fresh cache each)")
    parser.add_argument("--compiles", action="store_true", help="list the slowest numba compilations of cold calls")
    parser.add_argument("--demo", action="store_true", help="also time `bulkpy demo` cold and warm")
    parser.add_argument("--no-functions", action="store_true", help="time only the demo")
    args = parser.parse_args(argv)
    names = args.only or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown functions {unknown}; choose from {list(CASES)}")

    import numba

    import bulkpy

    print(f"bulkpy {bulkpy.__version__}, numba {numba.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, numba threads {numba.config.NUMBA_NUM_THREADS}")
    print("data: pasilla 7 samples × 8,066 genes after filterByExpr; airway 8 samples × ~16,900 genes (gene sets)")
    print(f"\n  {'function':<28s}{'cold call s':>13s} {'warm call s':>13s}  {'import s':>9s}  compiled")
    if not args.no_functions:
        for name in names:
            setup, call = CASES[name]
            cold, warm, imp, comp = [], [], [], []
            for _ in range(args.repeat):
                cache = tempfile.mkdtemp(prefix="bulkpy_numba_")
                try:
                    c = _run(setup, call, cache, args.compiles)
                    w = _run(setup, call, cache, False)
                except RuntimeError as err:
                    print(f"  {name:<28s} failed: {str(err).splitlines()[-1]}", flush=True)
                    break
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
                cold.append(c["call"])
                warm.append(w["call"])
                imp.append(w["import"])
                comp = c["compiles"]
            if not cold:
                continue
            n_comp = f"{len(comp)} functions, {sum(t for _, t in comp):.1f} s" if args.compiles else ""
            print(f"  {name:<28s}{_span(cold):>13s} {_span(warm):>13s}  {min(imp):9.1f}  {n_comp}", flush=True)
            if args.compiles:
                # compile events nest (a kernel compiles the functions it calls): list the outermost
                for fn, t in sorted(comp, key=lambda x: -x[1])[:8]:
                    print(f"      {t:6.2f} s  {fn}")
    if args.demo or args.no_functions:
        _time_demo(args.repeat)


if __name__ == "__main__":
    main()
