"""Questions of a results store, on the ingested sample photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as stats
import xarray as xr

from pupsnr_dask import query
from pupsnr_dask.store.zarr_io import open_store


@pytest.fixture(scope="module")
def results(results_store) -> xr.Dataset:
    return open_store(str(results_store), "psnr")


@pytest.fixture(scope="module")
def images(images_store) -> xr.Dataset:
    return open_store(str(images_store), "images")


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 9, 13, 30, 50, 101, 1000, 2000])
@pytest.mark.parametrize("confidence", [0.6, 0.95, 0.99])
def test_t_half_width_is_scipys_student_t_interval(df, confidence):
    std = np.array([1.0, 2.5])
    want = stats.t.ppf(0.5 + confidence / 2, df) * std / math.sqrt(df + 1)
    np.testing.assert_allclose(query.t_half_width(std, df + 1, confidence), want, rtol=1e-12)


def test_t_half_width_rejects_bad_arguments_and_is_nan_below_two_values():
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence must be in"):
            query.t_half_width(1.0, 5, confidence)
    for n in (-1, 2.5):
        with pytest.raises(ValueError, match="n must be counts"):
            query.t_half_width(1.0, n, 0.95)
    assert np.isnan(query.t_half_width(1.0, 1, 0.95))
    got = query.t_half_width(np.ones(3), np.array([0, 1, 11]), 0.95)
    assert np.isnan(got[:2]).all() and got[2] == pytest.approx(0.6718, abs=1e-4)


def test_summary_table_extends_summarize_with_the_spread_of_finite_values(results):
    table = query.summary_table(results, progress=False)
    base = query.summarize(results)
    for name in base.data_vars:
        xr.testing.assert_equal(table[name], base[name])
    psnr = results.psnr.values
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


def test_select_split_keeps_one_split_and_rejects_others(results):
    labels = ["test" if i % 4 == 0 else "train" for i in range(results.sizes["image"])]
    split = results.assign_coords(split=("image", labels))
    assert query.select_split(split, "test").sizes["image"] == labels.count("test")
    assert query.select_split(split, "all") is split
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\)"):
        query.select_split(split, "val")


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


def test_images_store_of_says_where_the_store_came_from(results, images_store, tmp_path):
    ds, where, note = query.images_store_of(results)
    assert ds is not None and where == results.attrs["images_store"]
    assert "found by its path relative to the results" in note  # locations.find_images_store
    absolute_only = results.copy()
    absolute_only.attrs = {k: v for k, v in results.attrs.items() if k != "images_store_relative"}
    ds, where, note = query.images_store_of(absolute_only)
    assert ds is not None and where == results.attrs["images_store"] and "recorded" in note
    ds, where, note = query.images_store_of(results, str(images_store))
    assert ds is not None and where == str(images_store) and "(given)" in note
    with pytest.raises(FileNotFoundError, match="no store at"):
        query.images_store_of(results, str(tmp_path / "nowhere.zarr"))
    unrecorded = results.copy()
    link = ("images_store", "images_store_relative")
    unrecorded.attrs = {k: v for k, v in results.attrs.items() if k not in link}
    assert query.images_store_of(unrecorded)[:2] == (None, None)
    moved = results.copy()
    moved.attrs = {**results.attrs, "images_store": str(tmp_path / "moved.zarr")}
    del moved.attrs["images_store_relative"]  # else found relative to the results, as it should
    ds, where, note = query.images_store_of(moved)
    assert ds is None and where.endswith("moved.zarr") and "cannot be opened" in note
