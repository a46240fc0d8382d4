"""The package layout stays as CONVENTIONS.md and ``_stats/README.md`` describe it.

* engines (``bulkpy._stats``) know nothing about AnnData or the public namespaces: they import the
  scientific stack and each other only;
* adapters (``pp``, ``tl``, ``pl``, ``get``, ``io``, ``datasets``, ``_ml``) reach the engines through
  the family packages and shared modules, never through a private file (compiled kernels);
* every engine family says in its docstring which R function each of its files follows;
* ``io`` depends on the core modules, never the reverse (no import cycles through ``_genesets``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bulkpy

PKG = Path(bulkpy.__file__).parent
STATS = PKG / "_stats"
FAMILIES = ("deseq2", "edger", "limma", "enrichment")
ADAPTERS = ("pp", "tl", "pl", "get", "io", "datasets", "_ml")
# what an engine may import from outside bulkpy._stats
# dask: chunked input; zarr: the temporary row-major copy of the block driver (issue 15)
ENGINE_THIRD_PARTY = {"numpy", "scipy", "numba", "pandas", "sklearn", "dask", "zarr"}
# bulkpy modules outside _stats that engines may use: design-matrix rank logic, no AnnData
ENGINE_BULKPY_ALLOWED = {"bulkpy._design"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            # ``from .pkg import module`` imports a module too
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def _py_files(root: Path):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


ENGINE_FILES = _py_files(STATS)


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_engines_import_no_anndata_and_no_adapters(path):
    for mod in _imports(path):
        top = mod.split(".")[0]
        if top == "bulkpy":
            if mod.startswith("bulkpy._stats"):
                continue
            # ``from ..._design import x`` yields both the module and ``bulkpy._design.x``
            assert any(mod == m or mod.startswith(m + ".") for m in ENGINE_BULKPY_ALLOWED), (
                f"{path.relative_to(PKG)} imports {mod}: engines must not depend on adapters or AnnData"
            )
        else:
            import sys

            if top in sys.stdlib_module_names or top == "__future__":
                continue
            assert top in ENGINE_THIRD_PARTY, f"{path.relative_to(PKG)} imports {mod} (engines use {ENGINE_THIRD_PARTY})"


ADAPTER_FILES = [p for a in ADAPTERS for p in _py_files(PKG / a)]


@pytest.mark.parametrize("path", ADAPTER_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_adapters_use_engines_through_families(path):
    for mod in _imports(path):
        if not mod.startswith("bulkpy._stats"):
            continue
        private = [part for part in mod.split(".")[2:] if part.startswith("_")]
        assert not private, (
            f"{path.relative_to(PKG)} imports {mod}: adapters call the engines' public modules, not their "
            "private kernels"
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_families_name_their_r_functions(family):
    doc = ast.get_docstring(ast.parse((STATS / family / "__init__.py").read_text(encoding="utf-8")))
    assert doc, f"_stats/{family}/__init__.py has no docstring"
    for f in _py_files(STATS / family):
        if f.name != "__init__.py":
            assert f"``{f.name}``" in doc, f"_stats/{family}/__init__.py does not say what {f.name} follows"
        assert ast.get_docstring(ast.parse(f.read_text(encoding="utf-8"))), f"{f.relative_to(PKG)} has no docstring"


def test_stats_readme_lists_every_family():
    text = (STATS / "README.md").read_text(encoding="utf-8")
    for family in FAMILIES:
        assert f"{family}/" in text
    for f in STATS.glob("*.py"):
        if f.name != "__init__.py":
            assert f.name in text, f"_stats/README.md does not mention {f.name}"


def test_core_modules_do_not_import_io():
    for name in ("_genesets.py", "_design.py", "_slots.py", "_validate.py"):
        for mod in _imports(PKG / name):
            assert not mod.startswith("bulkpy.io"), f"{name} imports {mod}: io depends on the core, not the reverse"
