"""Plots. Each takes ``ax=``, returns the Axes (or Figure), never shows or saves."""

__all__: list[str] = []
