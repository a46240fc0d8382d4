"""The documentation site builds without warnings, and its pages render: one page per public
function with its parameters, returns and examples, every image a file that exists, the tables
there, the tutorials executed without errors; a few pages opened in headless Chromium.

The build goes into a temporary folder; notebook outputs come from the cache in
``docs/_build/.jupyter_cache`` when CI's docs step (``.ci/run``) filled it first, else the tutorials
are executed (about two minutes on two cores). Set ``BULKPY_DOCS_SCREENSHOTS=<folder>`` to keep the
screenshots.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from conftest import ROOT

import bulkpy as bk

pytestmark = pytest.mark.slow

NAMESPACES = ("io", "pp", "tl", "pl", "get", "datasets")
TUTORIALS = ("quickstart", "salmon_to_pathways", "microarray_batch", "sample_classification", "pseudobulk")
# pages opened in Chromium, and how many images / tables each must at least show
BROWSER_PAGES = {
    "index.html": (0, 0),
    "tutorials/salmon_to_pathways.html": (7, 3),
    "tutorials/pseudobulk.html": (3, 3),
    "speed.html": (0, 5),
    "gallery.html": (7, 0),
    "api/generated/bulkpy.tl.deseq.html": (0, 0),
}


class _Tags(HTMLParser):
    """Collects <img> sources, the number of <table>s and the text of a page."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tables = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        elif tag == "table":
            self.tables += 1

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def _missing_images(page: Path, sources: list[str]) -> list[str]:
    """Image sources of ``page`` that are not files on disk (data: URIs count as present)."""
    missing = []
    for src in sources:
        if src.startswith("data:image/"):
            continue
        url = urlparse(src)
        if url.scheme in ("http", "https") or not src:
            missing.append(src)  # the site must not depend on the network
            continue
        path = Path(unquote(url.path)) if url.scheme == "file" else (page.parent / unquote(url.path))
        if not path.is_file() or path.stat().st_size == 0:
            missing.append(src)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="sphinx is in the 'docs' extra")
    pytest.importorskip("myst_nb", reason="myst-nb is in the 'docs' extra")
    pytest.importorskip("sphinx_book_theme", reason="sphinx-book-theme is in the 'docs' extra")
    tmp = tmp_path_factory.mktemp("docs")
    out = tmp / "html"
    res = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-d", str(tmp / "doctrees"),
         str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, cwd=tmp,
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-10000:]
    return out


def test_one_api_page_per_public_function(site):
    for ns in NAMESPACES:
        for name in getattr(bk, ns).__all__:
            page = site / "api" / "generated" / f"bulkpy.{ns}.{name}.html"
            assert page.is_file(), f"no API page for bk.{ns}.{name}"
            text = " ".join(_parse(page.read_text()).text)
            assert "Parameters" in text or not _takes_parameters(ns, name), f"bk.{ns}.{name}: no Parameters"
            assert "Returns" in text, f"bk.{ns}.{name}: no Returns section"
            assert "Examples" in text, f"bk.{ns}.{name}: no Examples section"


def _takes_parameters(ns: str, name: str) -> bool:
    import inspect

    return bool(inspect.signature(getattr(getattr(bk, ns), name)).parameters)


def test_every_image_is_a_file_and_tutorials_ran(site):
    pages = sorted(site.rglob("*.html"))
    assert pages
    for page in pages:
        missing = _missing_images(page, _parse(page.read_text()).images)
        assert not missing, f"{page.relative_to(site)}: images without a file: {missing}"
    for name in TUTORIALS:
        page = site / "tutorials" / f"{name}.html"
        html = page.read_text()
        tags = _parse(html)
        assert len(tags.images) >= 2, f"{name}: {len(tags.images)} figures rendered"
        assert "Traceback" not in html and "output error" not in html, f"{name}: a cell failed"
    # the speed page: its tables and the machine they were measured on
    speed = _parse((site / "speed.html").read_text())
    assert speed.tables >= 5
    assert "AMD EPYC" in " ".join(" ".join(speed.text).split())


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "no chromium on PATH (Debian package 'chromium'): pages not opened in a browser"
        print(msg)
        pytest.skip(msg)
    return exe


def _chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rel", list(BROWSER_PAGES))
def test_pages_render_in_chromium(site, chromium, rel, tmp_path):
    page = site / rel
    assert page.is_file()
    url = page.as_uri()
    profile = tmp_path / "profile"
    shots = Path(os.environ.get("BULKPY_DOCS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / (rel.replace("/", "_").removesuffix(".html") + ".png")

    dom = _chromium(chromium, profile, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    tags = _parse(dom.stdout)
    n_images, n_tables = BROWSER_PAGES[rel]
    assert len(tags.images) >= n_images, f"{rel}: {len(tags.images)} images in the rendered page"
    assert tags.tables >= n_tables, f"{rel}: {tags.tables} tables in the rendered page"
    missing = _missing_images(page, tags.images)
    assert not missing, f"{rel}: images without a file: {missing}"

    shot = _chromium(chromium, profile, "--window-size=1280,1600", f"--screenshot={png}", url)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-3000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1200
    # a blank or single-colour page would have (almost) no variation
    assert float(np.std(pixels[..., :3])) > 0.02, f"{rel}: the screenshot is (nearly) blank"
