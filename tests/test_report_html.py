"""The HTML page: self-contained, tables from the one renderer, every value escaped."""

from __future__ import annotations

import base64
import fnmatch
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import dask
import numpy as np
import pytest
import tomllib
import xarray as xr
from conftest import random_photo, write_image
from PIL import Image
from tricky import DOLLAR, MARKUP, tricky_stores

import pupsnr_dask as pp
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
        self.defs: dict[str, str] = {}  # id -> data URI of each SVG <image>
        self.uses: list[str] = []  # href of each SVG <use>
        self.captions: list[tuple[str, str]] = []  # (title, caption) of each thumbnail
        self._title: str | None = None
        self._name: list[str] | None = None
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
        elif tag == "image":
            self.defs[attrs["id"]] = attrs.get("href", "")
        elif tag == "use":
            self.uses.append(attrs.get("href", ""))
        elif tag == "a":
            self.hrefs.append(attrs.get("href", ""))
        if "thumb" in (attrs.get("class") or "").split():
            self._title = attrs.get("title")
        elif tag == "span" and attrs.get("class") == "name":
            self._name = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._name is not None:
            self._name.append(data)

    def handle_endtag(self, tag):
        if tag == "span" and self._name is not None:
            self.captions.append((self._title or "", "".join(self._name)))
            self._name = None
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


#: What the page's pictures may be: lossless WebP or PNG, lossy WebP or JPEG.
FORMATS = {"webp": "WEBP", "png": "PNG", "jpeg": "JPEG"}


def _decode(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    fmt = re.fullmatch(r"data:image/(\w+);base64", head).group(1)
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    assert img.format == FORMATS[fmt]
    img.load()
    return img


def test_html_report_is_self_contained(html_page):
    text, page = html_page
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    uris = [*page.srcs, *page.defs.values()]
    assert all(re.match(r"data:image/(webp|png|jpeg);base64,", u) for u in uris)
    assert all(h.startswith("#") for h in page.hrefs)  # only links inside the page
    assert all(h.removeprefix("#") in page.defs for h in page.uses)  # every <use> resolves
    assert len(page.srcs) > 50  # the plot, grid cells
    for uri in uris[:5]:
        assert min(_decode(uri).size) >= 8


def test_html_embeds_each_picture_once_at_the_size_shown(html_page, results):
    """One data URI per thumbnail however often the image is shown; sizes as drawn."""
    text, page = html_page
    uris = [*page.srcs, *page.defs.values()]
    assert len(uris) == len(set(uris)) and text.count("data:image/") == len(uris)
    assert len(page.uses) > len(page.defs)  # some images are shown more than once
    shown = {i for pair in html._extremes(results, 2).values() for a in pair or () for i in
             a.image.values.tolist()}  # fmt: skip
    assert set(page.defs) == {f"thumb-{i}" for i in shown}
    for uri in page.defs.values():
        assert _decode(uri).size == (html.THUMBNAIL_PX, html.THUMBNAIL_PX)
    sizes = {_decode(uri).size for uri in page.srcs[1:]}  # page.srcs[0]: the plot
    assert sizes == {(html.GRID_CELL_PX, html.GRID_CELL_PX), *((256 // s,) * 2 for s in
                     (4, 8, 16, 32))}  # fmt: skip


def test_grid_cells_are_the_pu_transform_exactly(images_store):
    """Cells at a scale's own resolution: each pixel is the block mean, as NumPy computes it."""
    from pupsnr_dask import grid

    images = open_store(str(images_store), "images")
    pixels = images["images"][1].values
    cells = grid.pu_cells(pixels, ["true", "gray"], [16, 32])
    context = html.grid_context(cells)
    gray = np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.float64)
    for (variant, row), base in zip(
        context["rows"], (pixels.astype(np.float64), gray), strict=True
    ):
        for cell in row:
            s = cell["scale"]
            if s == 1:
                continue
            got = np.asarray(_decode(cell["src"]))
            blocks = base.reshape(256 // s, s, 256 // s, s, -1).mean(axis=(1, 3))
            want = np.rint(blocks).astype(np.uint8).squeeze()
            if got.ndim == 3 and want.ndim == 2:  # gray may be stored as RGB
                got = got[..., 0]
            np.testing.assert_array_equal(got, want, err_msg=f"{variant} at scale {s}")


def test_captions_keep_folder_and_name_and_tell_images_apart(tmp_path):
    """Same file names in long folders: captions cut in the middle, the index where needed."""
    rng = np.random.default_rng(3)
    folders = ["holiday_2019/camera_one/day_1", "holiday_2019/camera_one/day_2", "short"]
    for folder in folders:
        for name in ("beach_sunset.png", "x.png"):
            write_image(tmp_path / "src" / folder / name, random_photo(rng, 48, 48))
    images, results = tmp_path / "d.zarr", tmp_path / "r.zarr"
    with dask.config.set(scheduler="sync"):
        pp.ingest_folder(str(tmp_path / "src"), str(images), size=32, progress=False)
        pp.run_experiment(str(images), str(results), scales=(1, 2), progress=False)
    ds = open_store(str(results), "psnr")
    text = html.build_html(ds, open_store(str(images), "images"), top=6, progress=False)
    page = _page(text)
    by_image = {}
    for title, shown in page.captions:  # one caption an image, wherever it is shown
        image, source = re.fullmatch(r"image (\d+): (.*), PSNR .*", title).groups()
        assert by_image.setdefault(image, (source, shown)) == (source, shown)
    assert len(by_image) == 6  # every image shown
    assert len({shown for _, shown in by_image.values()}) == 6  # no two read the same
    for source, shown in by_image.values():
        assert len(shown) <= html.CAPTION_CHARS
        assert shown == source or "…" in shown or shown.startswith("#")
        if len(source) > html.CAPTION_CHARS:
            name = source.rsplit("/", 1)[-1]
            assert shown.split(" ", 1)[-1].startswith(source[:3])  # the folder's start
            assert shown.endswith("/" + name)  # and the whole name
    cut = [s for _, s in by_image.values() if "beach_sunset" in s and "…" in s]
    assert len(cut) == 2 and all(
        s.startswith("#") for s in cut
    )  # same caption: the index tells them


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
    assert len(page.srcs) == 1 and not page.defs  # only the plot
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
    assert all(re.match(r"data:image/(webp|png|jpeg);base64,", u) for u in page.srcs)
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
