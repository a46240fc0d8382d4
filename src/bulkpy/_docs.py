"""Parameter descriptions shared by many docstrings (written once, like scanpy's ``_doc_params``)."""

from __future__ import annotations

doc_adata = """\
adata
    Annotated data matrix, samples in ``obs`` and genes in ``var``."""

doc_layer_counts = """\
layer
    Layer holding raw counts; ``None`` uses ``adata.X``."""

doc_copy = """\
copy
    Return a modified copy instead of writing into ``adata``."""

doc_copy_returns = """\
    ``None`` when ``copy=False`` (``adata`` is modified in place), else the modified copy."""


def doc_params(**kwds):
    """Substitute the shared parameter text into a docstring's ``{name}`` fields."""

    def dec(obj):
        obj.__doc__ = obj.__doc__.format(**kwds) if obj.__doc__ else obj.__doc__
        return obj

    return dec
