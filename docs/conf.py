"""Sphinx configuration for the bulkpy documentation.

MyST markdown pages, MyST markdown notebooks (``docs/tutorials``) executed by myst-nb at build
time with a cache, one API page per public function (autosummary, ``_templates/autosummary``), the
plot gallery drawn by ``_gallery.py``, and sphinx-book-theme as scverse packages use.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``. Notebook outputs are
cached in ``docs/_build/.jupyter_cache`` (gitignored): a notebook is executed again only when its
code changes. ``-D nb_execution_mode=off`` builds without executing anything.
"""

import runpy
from pathlib import Path

import bulkpy

HERE = Path(__file__).resolve().parent

project = "bulkpy"
author = "bulkpy developers"
copyright = "bulkpy developers"
release = bulkpy.__version__
version = bulkpy.__version__

extensions = [
    "myst_nb",  # MyST markdown (it loads myst_parser) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]

# --- API reference: one page per function (autosummary + _templates/autosummary/function.rst)
templates_path = ["_templates"]
autosummary_generate = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_param = True

# --- MyST pages and notebooks
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
# .rst first: autosummary writes its stubs (api/generated/) with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "tutorials/_*"]

# tutorials are executed at build time; outputs are cached by the notebook's code, so a rebuild
# only re-runs the notebooks that changed. Any cell error fails the build (raise_on_error).
nb_execution_mode = "cache"
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_execution_excludepatterns = []

# --- HTML
html_theme = "sphinx_book_theme"
html_title = f"bulkpy {version}"
html_static_path = ["_static"]
html_css_files = ["css/custom.css"]
html_theme_options = {
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_show_sourcelink = True
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# no network at build time (CI has none): no intersphinx inventories are fetched
intersphinx_mapping = {}
nitpicky = False

# the plot gallery (gallery.md) shows pictures drawn now by _gallery.py, from the code it shows;
# they go to _static/gallery/ (not committed)
runpy.run_path(str(HERE / "_gallery.py"), run_name="bulkpy_gallery")["main"]()
