"""The API reference lists every public function, and the docs build without warnings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

import bulkpy as bk

NAMESPACES = ("io", "pp", "tl", "pl", "get", "datasets")


def test_api_reference_lists_every_public_function():
    text = (ROOT / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^\s+((?:io|pp|tl|pl|get|datasets)\.\w+)\s*$", text, re.M))
    public = {f"{ns}.{name}" for ns in NAMESPACES for name in getattr(bk, ns).__all__}
    assert public - listed == set(), f"missing from docs/api.md: {sorted(public - listed)}"
    assert listed - public == set(), f"docs/api.md lists functions that are not public: {sorted(listed - public)}"


@pytest.mark.slow
def test_sphinx_build(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is in the 'docs' extra")
    pytest.importorskip("myst_parser", reason="myst-parser is in the 'docs' extra")
    out = tmp_path / "html"
    res = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-d", str(tmp_path / "doctrees"),
         str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    generated = ROOT / "docs" / "api" / "generated"
    if generated.exists():
        shutil.rmtree(generated)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "api.html").exists()
