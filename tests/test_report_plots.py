"""Plots, the PU grid, the HTML report and the query helpers, on the ingested sample photos."""

from __future__ import annotations

import base64
import io
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from pupsnr_dask import html_report, plots, query, report
from pupsnr_dask.cli import main
from pupsnr_dask.experiment import VARIANTS, summarize
from pupsnr_dask.kernels.variants import pu_kernel
from pupsnr_dask.store.zarr_io import open_store

COFFEE = "skimage/coffee.png"


@pytest.fixture(scope="module")
def results(results_store) -> xr.Dataset:
    return open_store(str(results_store), "psnr")


@pytest.fixture(scope="module")
def images(images_store) -> xr.Dataset:
    return open_store(str(images_store), "images")


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


# --- query helpers ----------------------------------------------------------------------------


def test_summary_table_extends_summarize_with_the_spread_of_finite_values(results):
    table = query.summary_table(results, progress=False)
    base = summarize(results)
    for name in base.data_vars:
        xr.testing.assert_equal(table[name], base[name])
    psnr = results.psnr.values
    from scipy import stats

    for j, variant in enumerate(results.variant.values.tolist()):
        for k, scale in enumerate(results.scale.values.tolist()):
            cell = table.sel(variant=variant, scale=scale)
            values = _finite(psnr[:, j, k])
            assert int(cell.n_finite) == values.size
            if values.size == 0:  # true at scale 1: every image identical
                assert np.isnan(float(cell.finite_mean_psnr_db))
                continue
            half = stats.t.ppf(0.975, values.size - 1) * stats.sem(values)
            assert float(cell.finite_mean_psnr_db) == pytest.approx(values.mean())
            assert float(cell.ci95_low_db) == pytest.approx(values.mean() - half, rel=1e-9)
            assert float(cell.ci95_high_db) == pytest.approx(values.mean() + half, rel=1e-9)
            assert float(cell.p10_psnr_db) == pytest.approx(np.percentile(values, 10))
            assert float(cell.p90_psnr_db) == pytest.approx(np.percentile(values, 90))
            assert float(cell.median_psnr_db) == pytest.approx(np.median(values))
    assert int(table.n_finite.sel(variant="true", scale=1)) == 0


@pytest.mark.parametrize(("variant", "scale"), [("gray", 8), ("mosaic", 32), ("true", 2)])
def test_extremes_are_the_sorted_ends_of_the_cube(results, variant, scale):
    values = results.psnr.sel(variant=variant, scale=scale).values
    index = results.image.values
    worst = query.extremes(results, variant, scale, n=4, progress=False)
    best = query.extremes(results, variant, scale, n=4, lowest=False, progress=False)
    assert list(worst.image.values) == list(index[np.argsort(values, kind="stable")[:4]])
    assert list(best.image.values) == list(index[np.argsort(-values, kind="stable")[:4]])
    np.testing.assert_array_equal(worst.values, np.sort(values)[:4])
    sources = results.source.values.tolist()
    assert worst.source.values.tolist() == [sources[int(i)] for i in worst.image.values]
    everything = query.extremes(results, variant, scale, n=1000, progress=False)
    assert everything.sizes["image"] == results.sizes["image"]


def test_extremes_rejects_bad_arguments(results):
    with pytest.raises(ValueError, match=r"variant must be one of .*'sepia'"):
        query.extremes(results, "sepia", 2)
    with pytest.raises(ValueError, match="scale must be one of"):
        query.extremes(results, "gray", 3)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        query.extremes(results, "gray", 2, n=0)


def test_with_image_coords_joins_the_images_store(results_store, images, images_store):
    results = open_store(str(results_store), "psnr")
    joined = query.with_image_coords(results, str(images_store))
    assert joined.psnr.chunks is not None  # the cube stays lazy
    for name in ("color_score", "original_width", "original_height", "source", "split"):
        np.testing.assert_array_equal(
            np.asarray(joined[name].values.tolist()), np.asarray(images[name].values.tolist())
        )
    xr.testing.assert_equal(
        joined.psnr.reset_coords(drop=True), results.psnr.reset_coords(drop=True)
    )
    shuffled = images.assign_coords(source=("image", images.source.values[::-1].tolist()))
    with pytest.raises(ValueError, match="not the store these results were computed from"):
        query.with_image_coords(results, shuffled)


def test_by_split_summarises_each_split(results):
    n = results.sizes["image"]
    labels = ["test" if i % 3 == 0 else "train" for i in range(n)]
    split = results.assign_coords(split=("image", labels))
    out = query.by_split(split, progress=False)
    assert out.split.values.tolist() == ["train", "test"]
    assert out.n_images.values.tolist() == [labels.count("train"), labels.count("test")]
    gray8 = results.psnr.sel(variant="gray", scale=8).values
    test_mean = gray8[np.array(labels) == "test"].mean()
    assert float(out.finite_mean_psnr_db.sel(split="test", variant="gray", scale=8)) == (
        pytest.approx(test_mean)
    )


def test_find_image_by_index_source_and_path_end(images):
    sources = images.source.values.tolist()
    pos = sources.index(COFFEE)
    assert query.find_image(images, COFFEE) == pos
    assert query.find_image(images, "coffee.png") == pos
    assert query.find_image(images, str(int(images.image.values[pos]))) == pos
    assert query.find_image(images, int(images.image.values[pos])) == pos
    with pytest.raises(ValueError, match="neither an index nor a source"):
        query.find_image(images, "nope.png")
    with pytest.raises(ValueError, match="must be an index in"):
        query.find_image(images, 999)


# --- the PU grid ------------------------------------------------------------------------------


def test_pu_grid_cells_are_the_pu_transformed_variants(images_store, images, results):
    grid = query.pu_grid(str(images_store), COFFEE)
    pos = images.source.values.tolist().index(COFFEE)
    true = images.images.values[pos][None]
    assert grid.dims == ("variant", "scale", "y", "x", "channel") and grid.dtype == np.uint8
    assert grid.variant.values.tolist() == list(VARIANTS)
    assert grid.scale.values.tolist() == [1, 2, 4, 8, 16, 32]
    for name, kernel in VARIANTS.items():
        view = kernel(true)
        for scale in grid.scale.values.tolist():
            expected = np.clip(np.rint(pu_kernel(view, scale)[0]), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(grid.sel(variant=name, scale=scale).values, expected)
    np.testing.assert_array_equal(grid.sel(variant="true", scale=1).values, true[0])
    # the PSNR in each cell title is the one of the results store
    stored = results.psnr.sel(image=int(images.image.values[pos])).values
    np.testing.assert_allclose(grid.psnr.values, stored, rtol=0, atol=1e-9)
    assert grid.attrs["source"] == COFFEE


def test_tile_grid_places_each_cell_without_decoration(images_store):
    grid = query.pu_grid(str(images_store), COFFEE, variants=("gray", "mosaic"), scales=(4, 16))
    assert grid.scale.values.tolist() == [1, 4, 16]  # the original column comes first
    gap = 3
    mosaic = plots.tile_grid(grid, gap=gap)
    h = grid.sizes["y"]
    assert mosaic.shape == (2 * h + gap, 3 * h + 2 * gap, 3)
    for j in range(2):
        for k in range(3):
            cell = mosaic[j * (h + gap) : j * (h + gap) + h, k * (h + gap) : k * (h + gap) + h]
            np.testing.assert_array_equal(cell, grid.values[j, k])
    assert (mosaic[h : h + gap] == 255).all()


def test_grid_command_writes_a_labelled_png(images_store, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["grid", str(images_store), "--image", COFFEE, "-o", str(out)]) == 0
    assert "skimage/coffee.png" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (1210, 720)  # 6 columns x 3 rows of 1.9 in, + margins, at 100 dpi
        pixels = np.asarray(img.convert("RGB"))
    # the cells fill most of the picture; the coffee photo brings many colours
    assert (pixels < 240).any(axis=2).mean() > 0.5
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5000
    # the labels were drawn: the grid figure has the row and column labels and PSNR titles
    fig = plots.plot_grid(str(images_store), COFFEE)
    axes = fig.axes
    assert len(axes) == 18
    assert [ax.get_ylabel() for ax in axes[::6]] == ["true", "gray", "mosaic"]
    assert axes[0].get_title() == "PSNR ∞ (identical)"
    assert re.fullmatch(r"PSNR \d+\.\d\d dB", axes[7].get_title())
    heads = [t.get_text() for ax in axes[:6] for t in ax.texts]
    assert heads[0].startswith("original") and heads[5].startswith("scale 32 · 8 px")


@pytest.mark.parametrize(
    ("image", "message"),
    [("nope.png", "neither an index nor a source"), ("999", "must be an index in")],
)
def test_grid_command_unknown_image_is_one_line_exit_2(
    images_store, tmp_path, capsys, image, message
):
    out = tmp_path / "grid.png"
    assert main(["grid", str(images_store), "--image", image, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


# --- the PSNR plot ----------------------------------------------------------------------------


def test_report_plot_writes_a_png_with_every_variant(results_store, tmp_path, capsys):
    out = tmp_path / "psnr.png"
    assert main(["report", str(results_store), "--plot", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert "Mean PSNR (dB)" in captured.out  # the table is still printed
    assert "plot written to" in captured.err
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (1300, 580)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    for color in ("#1f77b4", "#ff7f0e", "#2ca02c"):  # tab10 C0..C2: true, gray, mosaic lines
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=1) < 10).sum() > 300, color
    assert len(np.unique(pixels, axis=0)) > 200


def test_psnr_figure_draws_the_summary_and_notes_infinite_values(results):
    fig = plots.plot_psnr(results, progress=False)
    means, boxes = fig.axes[:2]
    table = query.summary_table(results, progress=False)
    lines = {line.get_label(): line for line in means.get_lines()}
    for variant in VARIANTS:
        expected = table.finite_mean_psnr_db.sel(variant=variant).values
        np.testing.assert_allclose(lines[variant].get_ydata(), expected)
    for ax in (means, boxes):
        assert ax.get_title() and ax.get_legend() is not None
        assert "(dB)" in ax.get_ylabel() and ax.get_xlabel()
    assert [t.get_text() for t in means.get_legend().get_texts()][:3] == list(VARIANTS)
    top = [a for a in means.child_axes if a.get_xlabel()]
    assert top and "U-Net depth" in top[0].get_xlabel()
    labels = [t.get_text() for t in top[0].get_xticklabels()]
    assert labels[0] == "256 px\ndepth 0" and labels[-1] == "8 px\ndepth 5"
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "true at scale 1: all" in notes and "+∞" in notes
    assert fig._suptitle.get_text().endswith(f"{results.sizes['image']} images")


def test_plot_without_matplotlib_says_how_to_install(results_store, tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "psnr.png"
    assert main(["report", str(results_store), "--plot", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "pupsnr-dask[plot]"' in err and "Traceback" not in err
    assert not out.exists()


# --- the HTML report --------------------------------------------------------------------------


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
    summary = summarize(results)
    for k, stat in enumerate(report.STATISTICS):
        header, rows = report._rows(summary, stat)
        assert page.tables[k] == [header, *rows], stat
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
    text = html_report.build_html(results, None, images_note="no images here", progress=False)
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
