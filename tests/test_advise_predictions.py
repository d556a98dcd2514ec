"""``advise/predictions.py``: finding, checking, pairing and scoring a model's outputs.

``advise_depths`` end to end (with results stores, the command line) is in ``test_advise*.py``;
these pin the module's own contract on real files and real Zarr stores in ``tmp_path``, with
scikit-image photos reduced to 32 px: what counts as a store, what a prediction store must hold,
what pairing returns, and that the lazy per-batch tasks give the PSNR of a plain NumPy loop
over Pillow-decoded files, with resized and unreadable files noted under the right names.
"""

from __future__ import annotations

import math
import shutil

import dask
import dask.array as da
import numpy as np
import pytest
import skimage.data
import xarray as xr
import zarr
from advice_cases import write_prediction_store
from conftest import write_image
from dask.delayed import Delayed
from PIL import Image

from pupsnr_dask.advise.matching import Matching
from pupsnr_dask.advise.predictions import (
    build_output_psnr,
    compute_output_psnr,
    is_zarr_store,
    open_prediction_store,
    pair_predictions,
)
from pupsnr_dask.schema import StoreError

SIZE = 32
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def _small(photo: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def img_true() -> np.ndarray:
    """Five real photos at 32 x 32, uint8 RGB."""
    return np.stack([_small(getattr(skimage.data, name)(), SIZE) for name in PHOTOS])


@pytest.fixture(scope="module")
def outputs(img_true) -> np.ndarray:
    """A model's outputs: each photo with its own amount of noise, rounded to uint8."""
    rng = np.random.default_rng(3)
    sigma = np.array([2.0, 5.0, 9.0, 14.0, 20.0])[:, None, None, None]
    noisy = img_true + sigma * rng.standard_normal(img_true.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def run(tasks):
    with dask.config.set(scheduler="sync"):
        return dask.compute(*tasks)


# --- what a store is -------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_group_of_either_format_is_a_store(tmp_path, zarr_format):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    assert is_zarr_store(str(tmp_path / "g.zarr"))
    assert is_zarr_store(f"file://{tmp_path}/g.zarr/")


def test_a_folder_of_images_or_a_missing_path_is_not_a_store(tmp_path, img_true):
    write_image(tmp_path / "pred" / "a.png", img_true[0])
    assert not is_zarr_store(str(tmp_path / "pred"))
    assert not is_zarr_store(str(tmp_path / "nowhere"))


def test_open_prediction_store_reads_sources_and_leaves_pixels_lazy(tmp_path, outputs):
    path = write_prediction_store(tmp_path / "p.zarr", ["b.png", "a.png", "c/d.png"], outputs[:3])
    ds = open_prediction_store(str(path))
    assert ds["images"].chunks is not None  # dask-backed: no pixel read yet
    for name in ("source", "images"):
        assert (path / name).is_dir()
    shutil.rmtree(path / "source")  # the sources were read when opened: still there
    assert ds["source"].values.tolist() == ["b.png", "a.png", "c/d.png"]
    np.testing.assert_array_equal(ds["images"].values, outputs[:3])


def _store(pixels, sources=("a", "b"), dims=("image", "y", "x", "channel")) -> xr.Dataset:
    return xr.Dataset({"images": (dims, pixels)}, coords={"source": ("image", list(sources))})


@pytest.mark.parametrize(
    ("ds", "message"),
    [
        (_store(np.zeros((2, 4, 4, 3), np.float32)), "must hold 'images'"),
        (
            _store(np.zeros((2, 4, 4, 3), np.uint8), dims=("image", "x", "y", "channel")),
            "must hold",
        ),
        (
            xr.Dataset(
                {"pixels": (("image", "y", "x", "channel"), np.zeros((2, 4, 4, 3), np.uint8))}
            ),
            "must hold 'images'",
        ),
        (_store(np.zeros((2, 4, 4, 4), np.uint8)), "need 3 channels"),
        (_store(np.zeros((2, 4, 4, 3), np.uint8)).drop_vars("source"), "'source' coordinate"),
        (_store(np.zeros((2, 4, 4, 3), np.uint8), sources=("a", "a")), "repeat some 'source'"),
    ],
    ids=["float32", "x-before-y", "no-images", "4-channels", "no-source", "repeated-source"],
)
def test_open_prediction_store_refuses_what_is_not_an_images_layout(ds, message):
    with pytest.raises(StoreError, match=message):
        open_prediction_store(ds)


def test_a_folder_that_is_no_zarr_store_cannot_be_opened_as_one(tmp_path):
    with pytest.raises(StoreError, match="is not a readable Zarr store"):
        open_prediction_store(str(tmp_path))


# --- pairing ---------------------------------------------------------------------------------


def test_pairing_a_folder_returns_the_folder_and_ignores_non_images(tmp_path, outputs):
    folder = tmp_path / "pred"
    write_image(folder / "x" / "a.png", outputs[0])
    write_image(folder / "b.tif", outputs[1])
    (folder / "notes.txt").write_text("not a prediction")
    (folder / "x" / "log.csv").write_text("1,2")
    matching, preds = pair_predictions(["x/a.jpg", "b.jpg", "c.jpg"], str(folder), None)
    assert preds == str(folder)
    assert matching.pairs == [(0, "x/a.png"), (1, "b.tif")]
    assert matching.missing == ["c.jpg"] and matching.extra == []
    assert matching.ignored == ["notes.txt", "x/log.csv"]


def test_pairing_a_store_path_opens_it_and_pairs_by_source(tmp_path, outputs):
    path = write_prediction_store(tmp_path / "p.zarr", ["b.jpg", "z.png", "a.jpg"], outputs[:3])
    matching, preds = pair_predictions(["a.jpg", "b.jpg", "c.jpg"], str(path), None)
    assert isinstance(preds, xr.Dataset)
    assert preds["source"].values.tolist() == ["b.jpg", "z.png", "a.jpg"]
    assert matching.pairs == [(0, "a.jpg"), (1, "b.jpg")]
    assert matching.missing == ["c.jpg"] and matching.extra == ["z.png"]
    again, same = pair_predictions(["a.jpg"], preds, None)  # an opened store works as well
    assert same is not None and again.pairs == [(0, "a.jpg")]


def test_pairing_a_missing_folder_or_another_type_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder or a store"):
        pair_predictions(["a.jpg"], str(tmp_path / "nowhere"), None)
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is not a folder or a store"):
        pair_predictions(["a.jpg"], str(tmp_path / "f.png"), None)
    with pytest.raises(TypeError, match=r"must be a path or an xr\.Dataset, got PosixPath"):
        pair_predictions(["a.jpg"], tmp_path, None)


def test_pairing_a_number_says_predictions_must_be_a_path():
    with pytest.raises(TypeError, match=r"must be a path or an xr\.Dataset, got int"):
        pair_predictions(["a.jpg"], 5, None)


# --- scoring ---------------------------------------------------------------------------------


def test_build_refuses_a_bad_batch_size_or_a_name_count_unlike_the_images(img_true, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        build_output_psnr(img_true, str(tmp_path), ["a"] * 5, batch_size=0)
    with pytest.raises(ValueError, match="got 4 for 5 images"):
        build_output_psnr(img_true, str(tmp_path), ["a"] * 4)


def test_folder_tasks_read_nothing_until_computed_and_match_a_numpy_loop(
    img_true, outputs, tmp_path
):
    folder = tmp_path / "later"
    names = ["p0.png", "sub/p1.bmp", "p2.tif", "p3.webp", "p4.png"]
    tasks = build_output_psnr(img_true, str(folder), names, batch_size=2)
    assert len(tasks) == 3 and all(isinstance(t, Delayed) for t in tasks)
    for name, image in zip(names, outputs, strict=True):  # written after the graph was built
        write_image(folder / name, image, **({"lossless": True} if name.endswith("webp") else {}))
    parts = run(tasks)
    assert [len(p) for p, _ in parts] == [2, 2, 1]
    got = np.concatenate([p for p, _ in parts])
    np.testing.assert_allclose(got, [psnr(t, o) for t, o in zip(img_true, outputs, strict=True)])
    assert all(notes == [] for _, notes in parts)
    assert np.all(np.diff(got) < 0)  # more noise, lower PSNR: the images were not shuffled


def test_same_inputs_give_the_same_task_keys_and_another_folder_other_ones(img_true, tmp_path):
    names = [f"{i}.png" for i in range(5)]
    one = build_output_psnr(img_true, str(tmp_path / "a"), names, batch_size=2)
    two = build_output_psnr(img_true, str(tmp_path / "a"), names, batch_size=2)
    other = build_output_psnr(img_true, str(tmp_path / "b"), names, batch_size=2)
    assert [t.key for t in one] == [t.key for t in two]
    assert len({t.key for t in one}) == 3
    assert not {t.key for t in one} & {t.key for t in other}


def test_a_file_of_another_size_is_lanczos_resized_and_an_undecodable_one_is_nan(
    img_true, outputs, tmp_path
):
    folder = tmp_path / "pred"
    names = [f"p{i}.png" for i in range(5)]
    big = _small(outputs[3], 48)
    for k, name in enumerate(names):
        write_image(folder / name, big if k == 3 else outputs[k])
    (folder / "p2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    tasks = build_output_psnr(img_true, str(folder), names, batch_size=2)
    matching = Matching(5, list(enumerate(names)))
    got = compute_output_psnr(tasks, names, matching, 2, progress=False)
    expected = [psnr(img_true[k], outputs[k]) for k in range(5)]
    expected[2] = math.nan
    expected[3] = psnr(img_true[3], _small(big, SIZE))  # as ingest resizes: Pillow LANCZOS
    np.testing.assert_allclose(got, expected)
    assert matching.resized == ["p3.png (48x48)"]  # second batch, second image
    assert len(matching.unreadable) == 1 and matching.unreadable[0].startswith("p2.png: ")
    assert "cannot decode" in matching.unreadable[0]


def test_store_tasks_take_the_rows_named_whatever_the_store_order(img_true, outputs, tmp_path):
    sources = ["e", "d", "c", "b", "a", "extra"]
    stored = np.concatenate([outputs[::-1], np.zeros_like(outputs[:1])])
    store = open_prediction_store(str(write_prediction_store(tmp_path / "p.zarr", sources, stored)))
    names = ["a", "b", "c", "d", "e"]  # image k is stored under names[k]
    tasks = build_output_psnr(img_true, store, names, batch_size=3)
    assert len(tasks) == 2
    matching = Matching(5, list(enumerate(names)))
    got = compute_output_psnr(tasks, names, matching, 3, progress=False)
    np.testing.assert_allclose(got, [psnr(t, o) for t, o in zip(img_true, outputs, strict=True)])
    assert matching.resized == [] and matching.unreadable == []


def test_stored_predictions_of_another_size_are_resized_and_noted(img_true, outputs, tmp_path):
    big = np.stack([_small(o, 40) for o in outputs])
    path = write_prediction_store(tmp_path / "big.zarr", list("vwxyz"), big)
    names = list("vwxyz")
    tasks = build_output_psnr(img_true, open_prediction_store(str(path)), names, batch_size=4)
    matching = Matching(5, list(enumerate(names)))
    got = compute_output_psnr(tasks, names, matching, 4, progress=False)
    expected = [psnr(t, _small(b, SIZE)) for t, b in zip(img_true, big, strict=True)]
    np.testing.assert_allclose(got, expected)
    assert matching.resized == [f"{n} (40x40)" for n in names]


def test_another_metric_is_used_in_place_of_psnr(img_true, outputs, tmp_path):
    def mean_abs(a, b):
        return np.abs(a.astype(np.float64) - b).reshape(len(a), -1).mean(axis=1)

    path = write_prediction_store(tmp_path / "p.zarr", list("abcde"), outputs)
    store = open_prediction_store(str(path))
    (folder := tmp_path / "f").mkdir()
    for name, image in zip("abcde", outputs, strict=True):
        write_image(folder / f"{name}.png", image)
    expected = [np.abs(t.astype(float) - o).mean() for t, o in zip(img_true, outputs, strict=True)]
    for preds, names in ((store, list("abcde")), (str(folder), [f"{n}.png" for n in "abcde"])):
        tasks = build_output_psnr(img_true, preds, names, batch_size=2, metric=mean_abs)
        got = np.concatenate([p for p, _ in run(tasks)])
        np.testing.assert_allclose(got, expected)


def test_lazy_img_true_of_uneven_chunks_is_rebatched(img_true, outputs, tmp_path):
    folder = tmp_path / "pred"
    names = [f"{i}.png" for i in range(5)]
    for name, image in zip(names, outputs, strict=True):
        write_image(folder / name, image)
    lazy = da.from_array(img_true, chunks=((1, 4), -1, -1, -1))
    tasks = build_output_psnr(lazy, str(folder), names, batch_size=2)
    assert len(tasks) == 3
    got = np.concatenate([p for p, _ in run(tasks)])
    np.testing.assert_allclose(got, [psnr(t, o) for t, o in zip(img_true, outputs, strict=True)])
