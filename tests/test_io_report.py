"""bk.io.write_report: one self-contained HTML file with the samples, QC, sample structure, every DE
and enrichment result and the parameters that made them; the AnnData is never modified."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bulkpy as bk

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Parses the page and records tags, ids, attributes with URLs, and unbalanced tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.imgs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            if a.get(name) is not None:
                self.urls.append((tag, name, a[name]))
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


def _parse(text: str) -> _Checker:
    p = _Checker()
    p.feed(text)
    p.close()
    return p


def _snapshot(adata) -> dict:
    return {
        "obs": adata.obs.copy(), "var": adata.var.copy(), "uns": sorted(adata.uns), "layers": sorted(adata.layers),
        "varm": sorted(adata.varm), "obsm": sorted(adata.obsm), "X": np.asarray(adata.X).copy(),
        "params": {k: sorted(v["params"]) for k, v in adata.uns.items() if isinstance(v, dict) and "params" in v},
    }


def _same(a: dict, b: dict) -> None:
    pd.testing.assert_frame_equal(a["obs"], b["obs"])
    pd.testing.assert_frame_equal(a["var"], b["var"])
    for k in ("uns", "layers", "varm", "obsm", "params"):
        assert a[k] == b[k], k
    np.testing.assert_array_equal(a["X"], b["X"])


@pytest.fixture(scope="module")
def analysed():
    """pasilla, 1,500 expressed genes: DESeq2 Wald test, VST and an ORA on two gene sets (a few seconds)."""
    adata = bk.datasets.pasilla()
    bk.pp.filter_by_expr(adata, design="~ type + condition", subset=True)
    adata = adata[:, :1500].copy()
    adata.var["symbol"] = [f"sym{i}" for i in range(adata.n_vars)]
    bk.pp.vst(adata)
    bk.tl.deseq(adata, design="~ type + condition", contrast=["condition", "treated", "untreated"])
    de = bk.get.de_df(adata, "deseq").sort_values("pvalue")
    sets = {"top_genes": list(de.index[:60]), "other_genes": list(de.index[-80:])}
    bk.tl.ora(adata, key="deseq", gene_sets=sets, direction="both", min_size=5)
    return adata


@pytest.fixture(scope="module")
def report(analysed, tmp_path_factory):
    adata = analysed.copy()
    before = _snapshot(adata)
    path = bk.io.write_report(adata, tmp_path_factory.mktemp("report") / "study.html", title="pasilla test")
    _same(before, _snapshot(adata))  # nothing written to the AnnData
    return path, analysed


def test_report_is_self_contained(report):
    path, _ = report
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    external = [u for u in page.urls if not (u[2].startswith("#") or u[2].startswith("data:"))]
    assert external == [], f"references outside the file: {external[:5]}"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "@import" not in text and "url(http" not in text
    assert page.imgs and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert "link" not in page.tags  # style inline
    assert "<script src" not in text  # script inline


def test_report_parses_and_has_every_section(report):
    path, adata = report
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    assert page.errors == [] and page.stack == [], (page.errors[:5], page.stack)
    for section in ("samples", "structure", "de", "enrichment", "parameters"):
        assert section in page.ids, section
    assert "de-deseq-condition-treated-vs-untreated" in page.ids
    assert "enr-ora-deseq" in page.ids
    assert len(set(page.ids)) == len(page.ids), "duplicated ids"
    assert "<title>pasilla test</title>" in text
    # 2 QC/structure figures + QC + volcano + MA + enrichment dot plot
    assert len(page.imgs) == 6
    # counts of significant genes at the run's alpha (DESeq2: 0.1), up and down
    de = bk.get.de_df(adata, "deseq")
    sig = de["padj"] < 0.1
    up, down = int((sig & (de["log2FoldChange"] > 0)).sum()), int((sig & (de["log2FoldChange"] < 0)).sum())
    assert f'<td class="up">{up}</td><td class="down">{down}</td>' in text
    # the top-genes table carries symbols; the samples table the QC computed on the fly
    assert ">sym" in text and "total_counts" in text and "computed for this report" in text
    # parameters and versions that made each result
    from importlib.metadata import version

    assert f"anndata {version('anndata')}" in text and f"numpy {version('numpy')}" in text
    assert "~ type + condition" in text and "DESeq2" in text
    # the sorting and searching script is inline
    assert "table.sortable" in text and 'type="search"' in text


def test_report_without_results(pasilla, tmp_path):
    before = _snapshot(pasilla)
    path = bk.io.write_report(pasilla, tmp_path / "bare.html")
    _same(before, _snapshot(pasilla))
    text = path.read_text(encoding="utf-8")
    page = _parse(text)
    assert page.errors == []
    assert "No differential expression result" in text and "No enrichment result" in text
    assert "untreated" in text  # the samples table
    assert "log-CPM" in text  # sample structure computed on a copy
    assert "total_counts" not in pasilla.obs


def test_report_log_scale_matrix_without_counts(tmp_path):
    """A microarray-like object: log-scale X, no counts; no QC figure, structure on X."""
    rng = np.random.default_rng(0)
    import anndata as ad

    adata = ad.AnnData(
        X=rng.normal(8, 1, size=(6, 200)),
        obs=pd.DataFrame({"group": ["a", "a", "a", "b", "b", "b"]}, index=[f"s{i}" for i in range(6)]),
    )
    path = bk.io.write_report(adata, tmp_path / "array.html")
    text = path.read_text(encoding="utf-8")
    assert "No raw counts" in text and "Computed on X" in text
    assert "group" in text


def test_report_errors_leave_nothing(pasilla, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bk.io.write_report(pasilla, tmp_path / "missing" / "r.html")
    with pytest.raises(IsADirectoryError):
        bk.io.write_report(pasilla, tmp_path)
    with pytest.raises(KeyError, match="groupby"):
        bk.io.write_report(pasilla, tmp_path / "r.html", groupby="nope")
    with pytest.raises(KeyError, match="available layers"):
        bk.io.write_report(pasilla, tmp_path / "r.html", layer="nope")
    with pytest.raises(ValueError, match="n_top"):
        bk.io.write_report(pasilla, tmp_path / "r.html", n_top=0)
    with pytest.raises(TypeError, match="AnnData"):
        bk.io.write_report(pasilla.X, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_report_unwritable_folder(pasilla, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="write permission"):
            bk.io.write_report(pasilla, ro / "r.html")
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------------------------
# rendering in a real browser
# ------------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(exe: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_chromium(report, tmp_path):
    exe = _chromium()
    if exe is None:
        print("chromium not found (install it: apt-get install -y chromium); skipping the rendering test")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    path, _ = report
    url = path.resolve().as_uri()

    # the DOM after the script ran: images decoded from their data: URIs, tables made sortable
    dom = _browser(exe, ["--virtual-time-budget=10000", "--dump-dom", url], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', html)
    assert m, "the page's script did not run to the load event"
    assert m.group(1) == m.group(2) and int(m.group(2)) == 6, m.group(0)
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", html)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)

    shot = tmp_path / "report.png"
    res = _browser(exe, [f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=10000", url],
                   tmp_path / "profile2")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from matplotlib import image

    img = image.imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1280)
    ink = (img.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert ink > 0.05, f"screenshot nearly blank ({ink:.1%} non-white pixels)"
    # colour: the figures (QC bars, PCA dots) are drawn, not only black text
    colourful = (img.max(axis=2) - img.min(axis=2) > 0.25).mean()
    assert colourful > 0.002, f"no figures visible ({colourful:.2%} coloured pixels)"
