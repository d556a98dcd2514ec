"""``advise/dataset.py``: the advice Dataset over ``scale`` built from in-memory p_i values.

The end-to-end runs (predictions on disk, models, the command line) are in ``test_advise*.py``;
these pin the module's own contract on small hand-made selections of a results cube: which
variant it reads, the per-depth statistics (against NumPy and ``scipy.stats``), the ``depth``
coordinate, the crossover attributes, the conclusions, and the one-number mode.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as stats
import xarray as xr

from pupsnr_dask.advise.compare import FEW_IMAGES, NO_INTERVAL
from pupsnr_dask.advise.dataset import DEPTH, advise_number, advise_paired, p_values
from pupsnr_dask.advise.matching import match_predictions

SIZE = 32
SCALES = [1, 2, 4, 8]
RESOLUTIONS = [SIZE // s for s in SCALES]


def _mse(psnr_db: np.ndarray) -> np.ndarray:
    """The MSE whose PSNR is ``psnr_db`` (0 where +inf), by the textbook formula."""
    with np.errstate(over="ignore"):
        return 255.0**2 / np.power(10.0, psnr_db / 10.0)


def selection(gray_db: np.ndarray, *, scales=SCALES, size: int = SIZE, **extra) -> xr.Dataset:
    """A results cube (image, variant, scale) whose ``gray`` p_i are ``gray_db``.

    The ``true`` variant holds other values (10 dB higher), so reading the wrong variant shows.
    ``extra`` adds more metrics, each ``(image, scale)`` for ``gray``.
    """
    gray_db = np.asarray(gray_db, np.float64)
    n = gray_db.shape[0]
    psnr = np.stack([gray_db + 10.0, gray_db], axis=1)
    data = {
        "psnr": (("image", "variant", "scale"), psnr),
        "mse": (("image", "variant", "scale"), _mse(psnr)),
    }
    for name, values in extra.items():
        data[name] = (("image", "variant", "scale"), np.stack([values + 0.5, values], axis=1))
    return xr.Dataset(
        data,
        coords={
            "image": np.arange(n) * 3,
            "variant": ["true", "gray"],
            "scale": np.asarray(scales),
            "resolution": ("scale", [size // s for s in scales]),
            "source": ("image", [f"d/{i}.png" for i in range(n)]),
        },
        attrs={"size": size},
    )


def matching_for(ds: xr.Dataset):
    sources = [str(s) for s in ds["source"].values]
    return match_predictions(sources, [s.replace(".png", ".webp") for s in sources])


def paired(ds: xr.Dataset, output: np.ndarray, confidence=0.95, margin_db=0.1) -> xr.Dataset:
    return advise_paired(ds, output, "gray", "test", matching_for(ds), confidence, margin_db)


def ceiling_db(size: int) -> float:
    """PSNR of one value off by one in a size x size x 3 uint8 image."""
    return 10 * math.log10(255.0**2 * size * size * 3)


@pytest.fixture(scope="module")
def staircase() -> tuple[np.ndarray, np.ndarray]:
    """p_i of 12 images: above the output at depth 0, level at 1, below at 2 and 3."""
    rng = np.random.default_rng(7)
    output = 30 + rng.normal(0, 0.5, 12)
    levels = np.array([40.0, 30.0, 20.0, 10.0])
    return output, levels + rng.normal(0, 0.5, (12, 4))


def test_p_values_reads_the_named_variant_as_float64_image_by_scale():
    gray = np.arange(8, dtype=np.float32).reshape(2, 4) + 20
    ds = selection(gray)
    ds["psnr"] = ds["psnr"].astype(np.float32)
    out = p_values(ds, "gray")
    assert out.dtype == np.float64 and out.shape == (2, 4)
    np.testing.assert_array_equal(out, gray)
    np.testing.assert_array_equal(p_values(ds, "true"), gray + 10)


def test_paired_statistics_equal_numpy_and_scipy_t_interval(staircase):
    output, p = staircase
    ds = paired(selection(p), output, confidence=0.9)
    np.testing.assert_allclose(ds["p_mean_db"], [np.mean(p[:, k]) for k in range(4)])
    mean_mse = [np.mean(_mse(p[:, k])) for k in range(4)]
    np.testing.assert_allclose(ds["p_of_mean_mse_db"], 10 * np.log10(255.0**2 / np.array(mean_mse)))
    assert float(ds["output_mean_db"]) == pytest.approx(np.mean(output))
    for k in range(4):
        d = output - p[:, k]
        low, high = stats.t.interval(0.9, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert float(ds["diff_mean_db"][k]) == pytest.approx(d.mean())
        assert float(ds["diff_ci_low_db"][k]) == pytest.approx(low)
        assert float(ds["diff_ci_high_db"][k]) == pytest.approx(high)
        assert float(ds["share_output_le_p"][k]) == pytest.approx(np.mean(output <= p[:, k]))
    assert ds["beaten"].values.tolist() == [False, False, True, True]


def test_paired_keeps_each_image_with_its_source_and_values(staircase):
    output, p = staircase
    sel = selection(p)
    ds = paired(sel, output)
    np.testing.assert_array_equal(ds["image"], sel["image"])
    assert ds["source"].values.tolist() == sel["source"].values.tolist()
    np.testing.assert_array_equal(ds["output_psnr_db"], output)
    np.testing.assert_array_equal(ds["p_psnr_db"], p)
    assert ds["p_psnr_db"].dims == ("image", "scale")


def test_depth_is_log2_of_scale_and_resolution_rides_along(staircase):
    output, p = staircase
    ds = paired(selection(p), output)
    assert ds[DEPTH].values.tolist() == [0, 1, 2, 3]
    assert ds[DEPTH].dtype.kind == "i" and ds[DEPTH].dims == ("scale",)
    assert ds["resolution"].values.tolist() == RESOLUTIONS
    odd = paired(selection(p, scales=[1, 2, 3, 4], size=12), output)  # 3 is no power of two
    np.testing.assert_allclose(odd[DEPTH], np.log2([1, 2, 3, 4]))


def test_crossover_attributes_name_the_first_beaten_depth_and_the_one_above(staircase):
    output, p = staircase
    ds = paired(selection(p), output)
    assert ds.attrs["crossover_depth"] == 2 and ds.attrs["crossover_scale"] == 4
    assert ds.attrs["skip_depth"] == 1
    assert ds.attrs["conclusion"].startswith("Crossover at depth 2 (8 px)")
    assert ds.attrs["n_images"] == 12 and ds.attrs["variant"] == "gray"


def test_no_beaten_depth_skips_at_the_deepest_and_all_beaten_skips_none(staircase):
    output, p = staircase
    nothing = paired(selection(p + 50), output)
    assert nothing.attrs["crossover_depth"] is None and nothing.attrs["crossover_scale"] is None
    assert nothing.attrs["skip_depth"] == 3
    assert "does not beat even the deepest skip copy (depth 3, 4 px)" in nothing.attrs["conclusion"]
    everything = paired(selection(p - 50), output)
    assert everything.attrs["crossover_depth"] == 0 and everything.attrs["crossover_scale"] == 1
    assert everything.attrs["skip_depth"] is None


def test_a_depth_beaten_above_an_unbeaten_one_is_no_crossover(staircase):
    output, p = staircase
    p = p.copy()
    p[:, 3] = 40.0  # the deepest depth is not beaten: no depth is beaten with all deeper ones
    ds = paired(selection(p), output)
    assert ds["beaten"].values.tolist() == [False, False, True, False]
    assert ds.attrs["crossover_depth"] is None and ds.attrs["skip_depth"] == 3


def test_one_image_has_no_interval_and_says_so(staircase):
    output, p = staircase
    ds = paired(selection(p[:1]), output[:1])
    assert ds.attrs["conclusion"] == FEW_IMAGES
    assert set(ds["verdict"].values.tolist()) == {NO_INTERVAL}
    assert np.isnan(ds["diff_ci_low_db"]).all()


def test_identical_images_count_as_infinite_and_are_capped_at_the_ceiling(staircase):
    output, p = staircase
    p = p.copy()
    p[:2, 0] = np.inf
    out = output.copy()
    out[0] = np.inf
    ds = paired(selection(p), out)
    assert ds["p_n_infinite"].values.tolist() == [2, 0, 0, 0]
    assert np.isposinf(ds["p_mean_db"][0]) and np.isposinf(ds["output_mean_db"])
    ceiling = ceiling_db(SIZE)
    assert ds.attrs["ceiling_db"] == pytest.approx(ceiling)
    capped = np.minimum(out, ceiling) - np.minimum(p[:, 0], ceiling)
    assert float(ds["diff_mean_db"][0]) == pytest.approx(capped.mean())
    assert f"{ceiling:.2f} dB" in ds.attrs["advice_method"]


def test_paired_attributes_record_the_run(staircase):
    output, p = staircase
    sel = selection(p)
    ds = paired(sel, output, confidence=0.8, margin_db=0.25)
    assert ds.attrs["mode"] == "predictions" and ds.attrs["split"] == "test"
    assert ds.attrs["confidence"] == 0.8 and ds.attrs["margin_db"] == 0.25
    assert "80% Student t-interval" in ds.attrs["advice_method"]
    assert ds.attrs["matching"]["n_matched"] == 12 and ds.attrs["matching"]["n_missing"] == 0
    assert ds.attrs["matching_report"] == matching_for(sel).lines()


def test_size_attribute_sets_the_ceiling():
    p = np.full((3, 4), 30.0) + np.arange(3)[:, None]
    ds = paired(selection(p, size=8, scales=[1, 2, 4, 8]), np.full(3, np.inf))
    assert ds.attrs["ceiling_db"] == pytest.approx(ceiling_db(8))
    assert float(ds["diff_mean_db"][0]) == pytest.approx(ceiling_db(8) - 31.0)


def test_another_metric_has_no_p_of_mean_mse(staircase):
    output, p = staircase
    ssim = np.clip(p / 50, 0, 1)
    sel = selection(p, ssim=ssim)
    ds = advise_paired(sel, output / 50, "gray", "all", matching_for(sel), 0.95, 0.0, "ssim")
    assert ds.attrs["metric"] == "ssim"
    assert np.isnan(ds["p_of_mean_mse_db"]).all()
    np.testing.assert_allclose(ds["p_mean_db"], ssim.mean(axis=0))
    np.testing.assert_array_equal(ds["p_psnr_db"], ssim)


def test_number_is_compared_with_the_mean_p_without_interval(staircase):
    _, p = staircase
    ds = advise_number(selection(p), "gray", 25.0, "train", 0.5)
    np.testing.assert_allclose(ds["diff_mean_db"], 25.0 - p.mean(axis=0))
    for name in ("diff_ci_low_db", "diff_ci_high_db", "share_output_le_p"):
        assert np.isnan(ds[name]).all()
    assert ds["beaten"].values.tolist() == [False, False, True, True]
    assert float(ds["output_mean_db"]) == 25.0
    assert ds.attrs["mode"] == "output_psnr" and ds.attrs["split"] == "train"
    assert ds.attrs["margin_db"] == 0.5 and "0.5 dB" in ds.attrs["advice_method"]
    assert "no confidence interval" in ds.attrs["limits"]
    assert ds.attrs["crossover_depth"] == 2 and ds.attrs["skip_depth"] == 1
    assert ds.attrs["conclusion"].startswith("By the mean p_i (one number, no interval), crossover")
    assert "p_i of mean MSE instead" not in ds.attrs["conclusion"]


def test_number_notes_when_the_p_of_mean_mse_moves_the_crossover():
    # two images 20 dB apart: the mean p_i is 30 dB, the p_i of their mean MSE about 23 dB
    p = np.array([[60.0, 50.0, 40.0, 30.0], [60.0, 50.0, 20.0, 10.0]])
    ds = advise_number(selection(p), "gray", 27.0, "all", 0.0)
    mean_mse = _mse(p).mean(axis=0)
    np.testing.assert_allclose(ds["p_of_mean_mse_db"], 10 * np.log10(255.0**2 / mean_mse))
    assert ds["beaten"].values.tolist() == [False, False, False, True]  # by the mean p_i
    text = ds.attrs["conclusion"]
    assert "crossover at depth 3 (4 px)" in text
    assert "Against the p_i of mean MSE instead: crossover at depth 2 (8 px)" in text


def test_number_with_another_metric_compares_the_mean_only():
    p = np.array([[60.0, 50.0, 40.0, 30.0], [60.0, 50.0, 20.0, 10.0]])
    ds = advise_number(selection(p, ssim=p / 100), "gray", 0.27, "all", 0.0, "ssim")
    assert np.isnan(ds["p_of_mean_mse_db"]).all()
    assert ds["beaten"].values.tolist() == [False, False, False, True]
    assert "mean MSE" not in ds.attrs["conclusion"]


def test_number_that_is_nan_is_refused():
    with pytest.raises(ValueError, match="output_psnr must be a number of dB, got nan"):
        advise_number(selection(np.full((2, 4), 30.0)), "gray", float("nan"), "all", 0.1)
