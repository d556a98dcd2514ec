"""The PU grid of one image as data, on the ingested sample photos."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pupsnr_dask import grid
from pupsnr_dask.experiment import VARIANTS
from pupsnr_dask.store.zarr_io import open_store
from pupsnr_dask.transforms import pu_kernel

COFFEE = "skimage/coffee.png"


@pytest.fixture(scope="module")
def results(results_store) -> xr.Dataset:
    return open_store(str(results_store), "psnr")


@pytest.fixture(scope="module")
def images(images_store) -> xr.Dataset:
    return open_store(str(images_store), "images")


def test_find_image_by_index_source_and_path_end(images):
    sources = images.source.values.tolist()
    pos = sources.index(COFFEE)
    assert grid.find_image(images, COFFEE) == pos
    assert grid.find_image(images, "coffee.png") == pos
    assert grid.find_image(images, str(int(images.image.values[pos]))) == pos
    assert grid.find_image(images, int(images.image.values[pos])) == pos
    with pytest.raises(ValueError, match="neither an index nor a source"):
        grid.find_image(images, "nope.png")
    with pytest.raises(ValueError, match="must be an index in"):
        grid.find_image(images, 999)
    with pytest.raises(TypeError, match="must be an int or a str"):
        grid.find_image(images, 2.5)


def test_pu_grid_cells_are_the_pu_transformed_variants(images_store, images, results):
    cells = grid.pu_grid(str(images_store), COFFEE)
    pos = images.source.values.tolist().index(COFFEE)
    img_true = images.images.values[pos][None]
    assert cells.dims == ("variant", "scale", "y", "x", "channel") and cells.dtype == np.uint8
    assert cells.variant.values.tolist() == list(VARIANTS)
    assert cells.scale.values.tolist() == [1, 2, 4, 8, 16, 32]
    for name, kernel in VARIANTS.items():
        view = kernel(img_true)
        for scale in cells.scale.values.tolist():
            expected = np.clip(np.rint(pu_kernel(view, scale)[0]), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(cells.sel(variant=name, scale=scale).values, expected)
    np.testing.assert_array_equal(cells.sel(variant="true", scale=1).values, img_true[0])
    # the PSNR in each cell title is the one of the results store
    stored = results.psnr.sel(image=int(images.image.values[pos])).values
    np.testing.assert_allclose(cells.psnr.values, stored, rtol=0, atol=1e-9)
    assert cells.attrs["source"] == COFFEE


def test_pu_cells_put_the_original_first_and_reject_a_wrong_image():
    img_true = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cells = grid.pu_cells(img_true, ("gray",), (4, 2))
    assert cells.scale.values.tolist() == [1, 4, 2]
    assert cells.resolution.values.tolist() == [32, 8, 16]
    with pytest.raises(ValueError, match=r"img_true must be a \(size, size, 3\) uint8 image"):
        grid.pu_cells(img_true.astype(np.float64))


def test_grid_of_task_inputs_matches_their_run_and_a_pillow_reference(images_store, tmp_path):
    """`pupsnr grid --variants sr4,jpeg20,noise25,blur2`: a picture; each cell's PSNR equals
    what `pupsnr run` stored for that image (noise seeded from the image, as in the run), and
    the sr4 cell at scale 1 is Pillow's BICUBIC down by 4 and back up, pixel for pixel."""
    import dask
    from PIL import Image

    from pupsnr_dask import run_experiment
    from pupsnr_dask.cli import main

    task = ["sr4", "jpeg20", "noise25", "blur2"]
    picture = tmp_path / "g.png"
    argv = ["grid", str(images_store), "--image", "1", "--variants", ",".join(task)]
    assert main([*argv, "-o", str(picture)]) == 0
    assert Image.open(picture).size[0] > 0
    results = tmp_path / "task.zarr"
    with dask.config.set(scheduler="threads"):
        run_experiment(str(images_store), str(results), variants=task, progress=False)
    stored = open_store(str(results), "psnr").load()
    cells = grid.pu_grid(open_store(str(images_store), "images"), 1, task)
    np.testing.assert_array_equal(
        cells["psnr"].values, stored["psnr"].sel(variant=task, scale=cells.scale).values[1]
    )
    img = open_store(str(images_store), "images")["images"].values[1]
    size = img.shape[0]
    low = Image.fromarray(img).resize((size // 4, size // 4), Image.Resampling.BICUBIC)
    expected = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(cells.sel(variant="sr4", scale=1).values, expected)


def test_grid_of_a_plugin_input_matches_its_run_and_the_plugin_itself(images_store, tmp_path):
    """`pupsnr grid --variants gray,task_plugins:invert`: the plug-in's row at scale 1 is the
    plug-in applied to the image (255 - img_true), each of its PU cells is that negative
    pooled and upsampled, and each cell's PSNR equals what `pupsnr run` stored for it."""
    import dask
    from PIL import Image

    from pupsnr_dask import run_experiment
    from pupsnr_dask.cli import main

    plugin = "task_plugins:invert"
    picture = tmp_path / "g.png"
    argv = ["grid", str(images_store), "--image", "2", "--variants", f"gray,{plugin}"]
    assert main([*argv, "-o", str(picture)]) == 0
    assert Image.open(picture).size[0] > 0
    results = tmp_path / "plugin.zarr"
    with dask.config.set(scheduler="threads"):
        run_experiment(str(images_store), str(results), variants=[plugin], progress=False)
    stored = open_store(str(results), "psnr").load()
    cells = grid.pu_grid(open_store(str(images_store), "images"), 2, ["gray", plugin])
    np.testing.assert_array_equal(
        cells["psnr"].sel(variant=plugin).values,
        stored["psnr"].sel(variant=plugin, scale=cells.scale).values[2],
    )
    img = open_store(str(images_store), "images")["images"].values[2]
    negative = 255 - img
    np.testing.assert_array_equal(cells.sel(variant=plugin, scale=1).values, negative)
    for s in cells.scale.values[1:]:
        size = img.shape[0] // int(s)
        means = negative.reshape(size, int(s), size, int(s), 3).astype(np.float64).mean((1, 3))
        expected = np.clip(np.rint(np.repeat(np.repeat(means, s, 0), s, 1)), 0, 255)
        np.testing.assert_array_equal(cells.sel(variant=plugin, scale=s).values, expected)
