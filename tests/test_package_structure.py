"""Every public function follows the conventions (in the spirit of scanpy's test_package_structure).

* at most three positional parameters, and no positional booleans;
* functions of ``pp``/``tl`` that take an AnnData first work in place and accept ``copy=`` (keyword
  only), except those listed in ``RETURNS_NEW`` which build a new object;
* plot functions take ``ax=`` (or are in ``MULTI_PANEL``) and have no ``show``/``save``;
* a numpydoc docstring that documents every parameter and has Returns and Examples sections.
"""

from __future__ import annotations

import inspect
import re

import pytest

import bulkpy as bk

NAMESPACES = {"pp": bk.pp, "tl": bk.tl, "pl": bk.pl, "get": bk.get, "io": bk.io, "datasets": bk.datasets}
# functions that build and return a new AnnData rather than modifying the one they are given
RETURNS_NEW = {"pp.pseudobulk"}
# plots that draw several panels and return a Figure
MULTI_PANEL = {"pl.qc", "pl.sample_distances", "pl.heatmap", "pl.gsea"}


def _public():
    for ns_name, ns in NAMESPACES.items():
        for name in getattr(ns, "__all__", []):
            obj = getattr(ns, name)
            if inspect.isfunction(obj):
                yield f"{ns_name}.{name}", obj


PUBLIC = dict(_public())


def test_namespaces_have_functions():
    assert len(PUBLIC) >= 5
    for ns_name, ns in NAMESPACES.items():
        for name in getattr(ns, "__all__", []):
            assert hasattr(ns, name), f"{ns_name}.__all__ names {name!r} which does not exist"


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_signature(qualname):
    fn = PUBLIC[qualname]
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{qualname} has {len(positional)} positional parameters"
    for p in positional:
        assert not isinstance(p.default, bool), f"{qualname}: positional boolean {p.name!r}"
    ns = qualname.split(".")[0]
    takes_adata = bool(positional) and positional[0].name == "adata"
    if ns in ("pp", "tl") and takes_adata and qualname not in RETURNS_NEW:
        copy = sig.parameters.get("copy")
        assert copy is not None, f"{qualname} takes adata but has no copy= parameter"
        assert copy.kind == copy.KEYWORD_ONLY and copy.default is False, f"{qualname}: copy must be keyword-only, default False"
    if ns == "pl":
        assert "show" not in sig.parameters and "save" not in sig.parameters, f"{qualname} must not show or save"
        if qualname not in MULTI_PANEL:
            assert "ax" in sig.parameters, f"{qualname} must take ax="


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_docstring(qualname):
    fn = PUBLIC[qualname]
    doc = inspect.getdoc(fn)
    assert doc, f"{qualname} has no docstring"
    for section in ("Returns", "Examples"):
        assert re.search(rf"^{section}\n-+$", doc, re.M), f"{qualname} docstring lacks a {section} section"
    params = [p for p in inspect.signature(fn).parameters if p not in ("args", "kwargs")]
    if params:
        assert re.search(r"^Parameters\n-+$", doc, re.M), f"{qualname} docstring lacks a Parameters section"
        for p in params:
            assert re.search(rf"^{p}\b", doc, re.M), f"{qualname}: parameter {p!r} is not documented"
