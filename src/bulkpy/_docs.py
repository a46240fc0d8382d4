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
    """Substitute the shared parameter text into a docstring's ``{name}`` fields.

    Continuation lines of the substituted text are indented like the line holding the field, so the
    shared text can be written flush-left once and used at any indentation.
    """
    import re

    def dec(obj):
        doc = obj.__doc__
        if not doc:
            return obj
        fields = {}
        for name, text in kwds.items():
            m = re.search(rf"^([ \t]*)\{{{name}\}}", doc, re.M)
            pad = m.group(1) if m else ""
            fields[name] = text.replace("\n", "\n" + pad)
        obj.__doc__ = doc.format(**fields)
        return obj

    return dec
