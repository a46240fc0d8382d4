"""Sphinx configuration for the bulkpy documentation (myst markdown + autosummary API reference)."""

import runpy
from pathlib import Path

import bulkpy

project = "bulkpy"
author = "bulkpy developers"
release = bulkpy.__version__
version = bulkpy.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
autosummary_generate = True
autodoc_typehints = "signature"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
myst_enable_extensions = ["colon_fence", "deflist"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "api/generated/*.md"]
templates_path = []
html_theme = "alabaster"
intersphinx_mapping = {}
nitpicky = False

# the plot gallery (gallery.md) shows pictures drawn now by _gallery.py, from the code it shows;
# they go to _static/gallery/ (not committed)
runpy.run_path(str(Path(__file__).resolve().parent / "_gallery.py"), run_name="bulkpy_gallery")["main"]()
