"""The API reference lists every public function (the site build itself: tests/test_docs_site.py)."""

from __future__ import annotations

import re

from conftest import ROOT

import bulkpy as bk

NAMESPACES = ("io", "pp", "tl", "pl", "get", "datasets")


def test_api_reference_lists_every_public_function():
    text = (ROOT / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^\s+((?:io|pp|tl|pl|get|datasets)\.\w+)\s*$", text, re.M))
    public = {f"{ns}.{name}" for ns in NAMESPACES for name in getattr(bk, ns).__all__}
    assert public - listed == set(), f"missing from docs/api.md: {sorted(public - listed)}"
    assert listed - public == set(), f"docs/api.md lists functions that are not public: {sorted(listed - public)}"


# the site build (Sphinx with warnings as errors, tutorials executed) and its rendering in a browser:
# tests/test_docs_site.py
