"""The HTML page: self-contained, tables from the one renderer, every value escaped."""

from __future__ import annotations

import base64
import fnmatch
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import tomllib
import xarray as xr
from PIL import Image
from tricky import DOLLAR, MARKUP, tricky_stores

from pupsnr_dask import query
from pupsnr_dask.cli import main
from pupsnr_dask.report import html
from pupsnr_dask.report.summary import STATISTICS, statistic_frame
from pupsnr_dask.schema import StoreError
from pupsnr_dask.store.zarr_io import open_store


@pytest.fixture(scope="module")
def results(results_store) -> xr.Dataset:
    return open_store(str(results_store), "psnr")


class _Page(HTMLParser):
    """Tables (as lists of rows of cell text), image sources, links and tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.ids: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.srcs.append(attrs.get("src", ""))
        elif tag == "a":
            self.hrefs.append(attrs.get("href", ""))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None


@pytest.fixture(scope="module")
def html_page(results_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(results_store), "--html", str(out), "-q", "--top", "2"]) == 0
    text = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page


def test_html_report_is_self_contained(html_page):
    text, page = html_page
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(src.startswith("data:image/png;base64,") for src in page.srcs)
    assert all(h.startswith("#") for h in page.hrefs)  # only links inside the page
    assert len(page.srcs) > 50  # the plot, thumbnails, grid cells
    for src in page.srcs[:5]:
        png = base64.b64decode(src.split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and min(img.size) > 10


def test_html_tables_match_summarize(html_page, results):
    _, page = html_page
    summary = query.summarize(results)
    for k, stat in enumerate(STATISTICS):
        frame = statistic_frame(summary, stat)
        assert page.tables[k] == [list(frame.columns), *frame.to_numpy().tolist()], stat
    assert page.tables[0][1][2] == "—"  # true at scale 1: every image identical


def test_html_shows_extremes_with_grids_and_provenance(html_page, results):
    text, page = html_page
    worst = query.extremes(results, "gray", 8, n=2, progress=False)
    best = query.extremes(results, "mosaic", 32, n=2, lowest=False, progress=False)
    for image in [*worst.image.values.tolist(), *best.image.values.tolist()]:
        assert f"image-{image}" in page.ids
        assert f"#image-{image}" in page.hrefs
    assert f"{float(worst[0]):.2f} dB" in text
    grid_tables = [t for t in page.tables if t and t[0][1:2] == ["original256 px · depth 0"]]
    assert grid_tables and len(grid_tables[0]) == 4  # header + true / gray / mosaic
    n = results.sizes["image"]
    assert f"all {n} images identical to the target" in text
    for item in (
        "images in the results",
        f"{n} (train: {n}, test: 0)",
        "moments",
        "LANCZOS",
        "version of xarray",
        "results written",
        "report generated",
    ):
        assert item in text, item


def test_html_without_images_store_says_so(results):
    text = html.build_html(results, None, images_note="no images here", progress=False)
    page = _Page()
    page.feed(text)
    assert "No thumbnails: no images here" in text and "No grids" in text
    assert len(page.srcs) == 1  # only the plot
    assert not any(i.startswith("image-") for i in page.ids)


def test_report_option_errors_exit_2(results_store, images_store, tmp_path, capsys):
    assert main(["report", str(results_store), "--images", str(images_store)]) == 2
    assert "--images is used only with --html" in capsys.readouterr().err
    out = tmp_path / "r.html"
    argv = ["report", str(results_store), "--html", str(out), "--images", str(tmp_path / "no")]
    assert main(argv) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["report", str(results_store), "--plot", str(tmp_path / "no" / "p.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def test_sources_names_and_attributes_are_escaped(tmp_path):
    images, results = tricky_stores(tmp_path)
    ds = open_store(str(results), "psnr")
    ds.attrs["mse_definition"] = "<img src=x onerror=alert(1)>"  # "method" is checked: one known
    text = html.build_html(
        ds,
        open_store(str(images), "images"),
        top=1,
        results_name="<script>alert(1)</script>",
        images_name=str(images),
        images_note="given",
        progress=False,
    )
    page = _page(text)
    assert "script" not in page.tags and "i" not in page.tags
    assert all(src.startswith("data:image/png;base64,") for src in page.srcs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert DOLLAR in text  # HTML leaves $ and backslashes alone
    assert "&lt;i&gt;&amp;amp;&#34;q&#39;.png" in text and MARKUP not in text
    text = html.build_html(ds, None, images_note="none <here>", progress=False)
    assert "none &lt;here&gt;" in text and "<here>" not in text
    odd = ds.assign_coords(variant=["true", "<b>gray</b>", "mosaic"])
    with pytest.raises(StoreError, match="unknown variant '<b>gray</b>'"):
        html.build_html(odd, None, progress=False)  # a store of unknown variants is damaged


def test_template_and_style_sheet_are_package_data():
    """Every file of the templates folder is matched by pyproject's package-data globs.

    (A wheel built with ``pip wheel . --no-deps`` was checked to carry them; building needs
    setuptools from the index, so it is not a test.)
    """
    root = Path(__file__).parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["pupsnr_dask"]
    templates = root / "pupsnr_dask" / "report" / "templates"
    files = [p.relative_to(root / "pupsnr_dask").as_posix() for p in templates.iterdir()]
    assert {"report/templates/report.html.j2", "report/templates/report.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name
