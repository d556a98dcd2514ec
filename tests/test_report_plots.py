"""The figures: PSNR against scale, the PU grid, the advice plot; text drawn literally."""

from __future__ import annotations

import re
import sys

import matplotlib
import numpy as np
import pytest
import xarray as xr
from advice_cases import load_img_true, rounded_pu, run_advise, write_predictions
from matplotlib.figure import Figure
from PIL import Image
from tricky import DOLLAR, tricky_stores

from pupsnr_dask import query
from pupsnr_dask.cli import main
from pupsnr_dask.experiment import VARIANTS
from pupsnr_dask.grid import pu_grid
from pupsnr_dask.report import plots
from pupsnr_dask.report.advice_plot import plot_advice
from pupsnr_dask.store.zarr_io import open_store

COFFEE = "skimage/coffee.png"


@pytest.fixture(scope="module")
def results(results_store) -> xr.Dataset:
    return open_store(str(results_store), "psnr")


@pytest.fixture(scope="module")
def tricky(tmp_path_factory):
    return tricky_stores(tmp_path_factory.mktemp("tricky"))


def drawn_literally(text) -> bool:
    """matplotlib draws this Text as written: no mathtext, every character shown."""
    return not text._preprocess_math(text.get_text())[1]


# --- the PU grid ------------------------------------------------------------------------------


def test_tile_grid_places_each_cell_without_decoration(images_store):
    grid = pu_grid(str(images_store), COFFEE, variants=("gray", "mosaic"), scales=(4, 16))
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


@pytest.mark.parametrize("command", ["report", "grid", "advise"])
def test_a_picture_format_matplotlib_cannot_write_is_refused_before_any_work(
    command, images_store, results_store, tmp_path, capsys
):
    """``.txt`` reached savefig after the work and failed there as an internal error."""
    out = tmp_path / "picture.txt"
    argv = {
        "report": ["report", str(results_store), "--plot", str(out), "-q"],
        "grid": ["grid", str(images_store), "--image", COFFEE, "-o", str(out)],
        "advise": [
            "advise",
            str(results_store),
            "--output-psnr",
            "30",
            "--variant",
            "gray",
            "--plot",
            str(out),
            "-q",
        ],
    }[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pupsnr: error: cannot draw a picture as ")
    assert ".png" in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before the table or the advice is printed
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["report --plot", "report --html", "grid", "advise"])
def test_a_file_pupsnr_did_not_write_is_never_replaced_and_its_own_is(
    command, images_store, results_store, tmp_path, capsys
):
    """A user's picture or page at the output path is refused (one line, exit 2, its bytes
    kept); what pupsnr wrote there itself (a marked PNG, a page with its generator tag) is
    replaced by a rerun."""
    out = tmp_path / ("page.html" if command == "report --html" else "picture.png")
    argv = {
        "report --plot": ["report", str(results_store), "--plot", str(out), "-q"],
        "report --html": ["report", str(results_store), "--html", str(out), "-q"],
        "grid": ["grid", str(images_store), "--image", COFFEE, "-o", str(out)],
        "advise": [
            *("advise", str(results_store), "--output-psnr", "30", "--variant", "gray"),
            *("--plot", str(out), "-q"),
        ],
    }[command]
    mine = b"<html><body>my notes</body></html>" if out.suffix == ".html" else PNG_OF_MINE
    out.write_bytes(mine)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pupsnr: error: {str(out)!r} exists and pupsnr did not write it")
    assert err.count("\n") == 1
    assert out.read_bytes() == mine
    out.unlink()
    assert main(argv) == 0  # written by pupsnr ...
    out.write_bytes(out.read_bytes() + b"EDITED")  # still pupsnr's (bytes after PNG's end)
    assert main(argv) == 0  # ... so a rerun replaces it
    assert b"EDITED" not in out.read_bytes()


#: A PNG of the user's own (made with Pillow: no pupsnr mark).
PNG_OF_MINE = (lambda buf: (Image.new("RGB", (4, 4), "red").save(buf, "PNG"), buf.getvalue())[1])(
    __import__("io").BytesIO()
)


def test_figure_path_adds_png_and_accepts_what_matplotlib_writes(tmp_path):
    assert plots.figure_path(tmp_path / "a") == tmp_path / "a.png"
    assert plots.figure_path(tmp_path / "a.PDF") == tmp_path / "a.PDF"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plots.figure_path(tmp_path / "missing" / "a.png")


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


# --- text from data is drawn as written --------------------------------------------------------


def test_grid_of_a_source_with_dollars_is_drawn_literally(tricky, tmp_path, capsys):
    images, _ = tricky
    out = tmp_path / "grid.png"
    assert main(["grid", str(images), "--image", DOLLAR, "-o", str(out)]) == 0
    assert DOLLAR in capsys.readouterr().out and out.stat().st_size > 1000
    fig = plots.plot_grid(str(images), DOLLAR)
    title = fig._suptitle
    assert drawn_literally(title) and DOLLAR in title._preprocess_math(title.get_text())[0]


def test_psnr_figure_draws_variant_names_and_titles_literally(tricky):
    _, results = tricky
    cube = query.load_cube(open_store(str(results), "psnr"), progress=False)
    cube = cube.assign_coords(variant=["$x$", "gray", "mo$a$ic"])
    fig = plots.psnr_figure(cube, title="cost $5 and $6")
    texts = [fig._suptitle, *fig.texts]
    for ax in fig.axes[:2]:
        texts += ax.get_legend().get_texts()
    assert all(drawn_literally(t) for t in texts)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "\\$x\\$" in labels
    plots.png_bytes(fig)  # draws without a mathtext error


# --- the advice plot --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def advice(images_store, results_store, tmp_path_factory):
    pixels, sources = load_img_true(images_store)
    folder = tmp_path_factory.mktemp("pred")
    write_predictions(folder, sources, rounded_pu(pixels, "gray", 8))
    return run_advise(str(results_store), str(folder), variant="gray")


def test_plot_advice_writes_a_png(advice, tmp_path):
    fig = plot_advice(advice, str(tmp_path / "advice.png"))
    with Image.open(tmp_path / "advice.png") as img:
        assert img.format == "PNG" and img.size[0] > 1000
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert "depth" in fig.axes[0].get_xlabel()


def test_plot_advice_leaves_the_backend_and_pyplot_alone(advice, monkeypatch):
    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")  # a user's backend
    had_pyplot = "matplotlib.pyplot" in sys.modules
    plot_advice(advice)
    assert matplotlib.rcParams["backend"] == "svg"
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules


def test_plot_advice_draws_the_variant_literally(advice, tmp_path):
    odd = advice.copy()
    odd.attrs = {**advice.attrs, "variant": "a$\\foo$b"}
    fig = plot_advice(odd, tmp_path / "odd.png")
    assert drawn_literally(fig._suptitle) and (tmp_path / "odd.png").exists()
