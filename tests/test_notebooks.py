"""The quick-start tutorial (a MyST markdown notebook, docs/tutorials/quickstart.md) runs from top to
bottom. The other tutorials are executed by the documentation build (.ci/run, tests/test_docs_site.py)."""

from __future__ import annotations

import pytest
from conftest import ROOT

QUICKSTART = ROOT / "docs" / "tutorials" / "quickstart.md"


@pytest.mark.slow
def test_quickstart_notebook_runs():
    read = pytest.importorskip("myst_nb.core.read", reason="myst-nb (the 'docs' extra) reads MyST notebooks")
    nbclient = pytest.importorskip("nbclient")
    nb = read.read_myst_markdown_notebook(QUICKSTART.read_text())
    # run where the docs build runs it, so relative paths are the same
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(QUICKSTART.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 3, "the quick start's figures were not displayed"
    saved = [o for o in outputs if "'method': 'DESeq2 varianceStabilizingTransformation'" in o.get("data", {}).get("text/plain", "")]
    assert saved, "the h5ad round trip did not print the VST parameters"
