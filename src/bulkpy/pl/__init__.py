"""Plots. Each takes ``ax=`` (or returns a multi-panel Figure), returns what it drew, never shows or saves."""

from ._samples import pca, qc

__all__ = ["pca", "qc"]
