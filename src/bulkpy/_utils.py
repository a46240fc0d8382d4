"""Small helpers for the adapters: the copy/in-place protocol."""

from __future__ import annotations


def start(adata, copy: bool):
    """Return the object to write into: a copy when ``copy`` else ``adata`` itself.

    Adapters validate and compute *before* calling this so that an error leaves ``adata`` untouched.
    """
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    return adata.copy() if copy else adata


def finish(adata, copy: bool):
    return adata if copy else None
