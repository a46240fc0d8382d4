"""The compiled kernels follow ``bulkpy/_stats/_jit.py`` (what a first call compiles).

* every compiled function says its kind: ``@kernel`` (called from Python), ``@inner`` (called
  only from compiled code: no wrappers are compiled for it) or ``@inline`` (an inner function
  inlined into its callers); none uses ``parallel=True`` (a second compile of the same loop:
  engines run kernels on gene chunks in threads instead);
* no ``@inner`` or ``@inline`` function is referenced outside compiled code (it has no Python
  wrapper);
* a first compile (fresh numba cache) specialises no kernel to a literal integer and compiles no
  shape-error message (the two costs found in issue 17: seconds each on a first call).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import bulkpy

PKG = Path(bulkpy.__file__).parent
ROOT = PKG.parent.parent
KINDS = {"kernel", "inner", "inline"}


def _decorator_name(dec: ast.expr) -> str:
    return ast.unparse(dec.func if isinstance(dec, ast.Call) else dec)


def _compiled_functions() -> dict[tuple[str, str], str]:
    """(file, function) -> kind of every compiled function in the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                name = _decorator_name(dec)
                if name in KINDS or name.endswith("njit") or name.endswith("jit"):
                    out[(str(path.relative_to(PKG)), node.name)] = ast.unparse(dec)
    return out


def test_every_compiled_function_declares_its_kind():
    funcs = _compiled_functions()
    assert len(funcs) > 100
    bad = {k: v for k, v in funcs.items() if v not in KINDS}
    assert not bad, f"use @kernel, @inner or @inline from bulkpy._stats._jit: {bad}"


def _python_references(path: Path, compiled: set[str]) -> set[str]:
    """Names referenced in ``path`` outside the bodies of its compiled functions."""
    refs: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef) and node.name in compiled and node.decorator_list:
            return
        if isinstance(node, ast.Name):
            refs.add(node.id)
        elif isinstance(node, ast.Attribute):
            refs.add(node.attr)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return refs


def test_inner_functions_are_not_used_from_python():
    funcs = _compiled_functions()
    compiled = {name for _, name in funcs}
    inner = {name for (_, name), kind in funcs.items() if kind in ("inner", "inline")}
    files = [*PKG.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    used = {}
    for path in files:
        for name in _python_references(path, compiled) & inner:
            used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not used, f"@inner functions (no Python wrapper) referenced from Python, make them @kernel: {used}"


_CHILD = r"""
import json, sys
from numba.core import event
seen = []
class L(event.Listener):
    def on_start(self, ev):
        pass
    def on_end(self, ev):
        d = ev.data["dispatcher"]
        seen.append([d.py_func.__module__ + "." + d.py_func.__qualname__, [str(a) for a in ev.data["args"]]])
event.register("numba:compile", L())
import numpy as np
from bulkpy._stats.enrichment.gsea import gsea
from bulkpy._stats.limma.weighted_lowess import weighted_lowess
rng = np.random.default_rng(0)
stats = rng.normal(size=400)
sets = [rng.choice(400, k, replace=False) for k in (15, 15, 40, 80)]
indptr = np.cumsum([0] + [len(s) for s in sets])
gsea(stats, indptr, np.concatenate(sets), n_perm_simple=200, seed=1)
x = np.sort(rng.normal(size=300)); weighted_lowess(x, x + rng.normal(size=300), np.ones(300))
print("@@" + json.dumps(seen))
"""


def test_first_compile_has_no_literal_specialisation_or_error_message(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    seen = json.loads([x for x in out.stdout.splitlines() if x.startswith("@@")][-1][2:])
    ours = [(name, args) for name, args in seen if name.startswith("bulkpy.")]
    assert len(ours) > 10, "nothing was compiled: the cache was not fresh"
    literal = [(name, args) for name, args in ours if any("Literal" in a for a in args)]
    assert not literal, f"kernels specialised to literal arguments (pass _jit.I0/I1): {literal}"
    shape_msg = [name for name, _ in seen if "raise_with_shape_context" in name]
    assert not shape_msg, "a kernel assigns through a slice or index array (compiles numba's shape-error message)"
