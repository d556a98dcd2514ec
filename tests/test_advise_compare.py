"""The statistics of advise: intervals against SciPy, and known answers on the sample photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as stats
import xarray as xr
from advice_cases import load_img_true, noisy, rounded_pu, run_advise, verdicts, write_predictions

from pupsnr_dask.advise.compare import (
    AS_GOOD,
    BEATEN,
    NO_INTERVAL,
    WORSE,
    compare_paired,
    crossover_index,
    psnr_ceiling_db,
)
from pupsnr_dask.kernels.metrics import psnr_kernel


@pytest.fixture(scope="module")
def img_true(images_store):
    return load_img_true(images_store)


@pytest.fixture(scope="module")
def p_gray(results_store):
    return xr.open_zarr(results_store)["psnr"].sel(variant="gray").values


# --- statistics ---------------------------------------------------------------------------------


def test_interval_is_the_student_t_interval_of_paired_differences():
    inf, ceiling = math.inf, psnr_ceiling_db(256)
    output = np.array([20.0, 21.5, inf, 19.0, 23.0])
    p = np.array([[inf, 19.0], [22.0, 20.0], [inf, 17.0], [18.0, 18.5], [21.0, 16.0]])
    got = compare_paired(output, p, size=256, confidence=0.9)
    d = np.minimum(output, ceiling)[:, None] - np.minimum(p, ceiling)
    assert d[2, 0] == 0.0  # identical output and identical copy tie
    half = stats.t.ppf(0.95, 4) * d.std(axis=0, ddof=1) / math.sqrt(5)
    np.testing.assert_allclose(got["diff_mean_db"], d.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(got["diff_ci_low_db"], d.mean(axis=0) - half, rtol=1e-9)
    np.testing.assert_allclose(got["diff_ci_high_db"], d.mean(axis=0) + half, rtol=1e-9)
    np.testing.assert_array_equal(got["share_output_le_p"], [0.6, 0.0])  # inf <= inf counts
    one = compare_paired(output[:1], p[:1], size=256)
    assert np.isnan(one["diff_ci_low_db"]).all() and one["crossover"] is None
    assert set(one["verdict"]) == {NO_INTERVAL}
    same = compare_paired(np.full(3, 20.0), np.full((3, 1), 19.0), size=256)
    assert same["diff_ci_low_db"][0] == same["diff_ci_high_db"][0] == 1.0  # no spread


def test_compare_rejects_bad_confidence_and_margin():
    with pytest.raises(ValueError, match="confidence must be in"):
        compare_paired(np.ones(3), np.ones((3, 1)), size=256, confidence=1.0)
    with pytest.raises(ValueError, match="margin_db must be >= 0"):
        compare_paired(np.ones(3), np.ones((3, 1)), size=256, margin_db=-1.0)


def test_crossover_is_the_shallowest_depth_beaten_with_all_deeper_ones():
    assert crossover_index([False, True, False, True, True]) == 3
    assert crossover_index([True, True]) == 0
    assert crossover_index([True, True, False]) is None


def test_psnr_ceiling_is_one_value_off_by_one():
    a = np.zeros((1, 256, 256, 3), np.uint8)
    b = a.copy()
    b[0, 5, 7, 1] = 1
    assert psnr_ceiling_db(256) == pytest.approx(float(psnr_kernel(a, b)[0]), abs=1e-12)


# --- known answers on the sample photos ----------------------------------------------------------


@pytest.mark.parametrize("variant", ["true", "gray", "mosaic"])
def test_outputs_equal_to_pu8_are_no_better_than_depth_3(
    variant, img_true, results_store, tmp_path
):
    pixels, sources = img_true
    outputs = rounded_pu(pixels, variant, 8)
    folder = write_predictions(tmp_path / "pred", sources, outputs)
    ds = run_advise(str(results_store), str(folder), variant=variant)
    assert ds.attrs["n_images"] == len(sources) and ds.attrs["matching"]["n_missing"] == 0
    np.testing.assert_array_equal(ds["output_psnr_db"].values, psnr_kernel(pixels, outputs))
    # Rounding to uint8 moves each PSNR away from p_3 by far less than 0.01 dB.
    p3 = ds["p_psnr_db"].sel(scale=8).values
    assert np.abs(ds["output_psnr_db"].values - p3).max() < 0.01
    v = verdicts(ds)
    assert v[8] in (AS_GOOD, WORSE)  # no better than the skip copy at depth 3
    if variant != "mosaic":  # mosaic's input was pooled at 16: its p_3 and p_4 nearly coincide
        assert v[16] == v[32] == BEATEN
        assert v[2] == v[4] == WORSE
        assert ds.attrs["crossover_scale"] == 16 and ds.attrs["skip_depth"] == 3
    assert not ds["beaten"].sel(scale=[1, 2, 4, 8]).any()
    assert ds["depth"].values.tolist() == [0, 1, 2, 3, 4, 5]


def test_outputs_equal_to_img_true_beat_every_depth(img_true, results_store, tmp_path):
    pixels, sources = img_true
    folder = write_predictions(tmp_path / "pred", sources, pixels)
    gray = run_advise(str(results_store), str(folder), variant="gray")
    assert np.isposinf(gray["output_psnr_db"].values).all()
    assert gray["beaten"].all() and gray.attrs["crossover_depth"] == 0
    assert gray.attrs["skip_depth"] is None and "beats every skip copy" in gray.attrs["conclusion"]
    ceiling = psnr_ceiling_db(256)
    expected = (ceiling - gray["p_psnr_db"]).mean("image")
    np.testing.assert_allclose(gray["diff_mean_db"], expected, rtol=1e-12)
    assert (gray["share_output_le_p"] == 0).all()
    # With the true image as input, scale 1 is the identity: an identical output only ties.
    true = run_advise(str(results_store), str(folder), variant="true")
    assert verdicts(true)[1] == AS_GOOD and float(true["diff_mean_db"].sel(scale=1)) == 0.0
    assert true["beaten"].sel(scale=[2, 4, 8, 16, 32]).all()
    assert true.attrs["crossover_depth"] == 1
    assert float(true["share_output_le_p"].sel(scale=1)) == 1.0


@pytest.mark.parametrize(("offset_db", "crossover_scale"), [(0.3, 8), (-0.3, 16)])
def test_noisy_outputs_sit_where_their_psnr_puts_them(
    offset_db, crossover_scale, img_true, p_gray, results_store, tmp_path
):
    pixels, sources = img_true
    rng = np.random.default_rng(42)
    targets = p_gray[:, 3] + offset_db  # each image 0.3 dB above / below its own p_3
    outputs = np.stack([noisy(x, t, rng) for x, t in zip(pixels, targets, strict=True)])
    folder = write_predictions(tmp_path / "pred", sources, outputs)
    ds = run_advise(str(results_store), str(folder), variant="gray")
    np.testing.assert_allclose(ds["output_psnr_db"], targets, atol=0.01)
    d3 = ds.sel(scale=8)
    assert float(d3["diff_mean_db"]) == pytest.approx(offset_db, abs=0.01)
    assert float(d3["diff_ci_high_db"]) - float(d3["diff_ci_low_db"]) < 0.02
    assert float(d3["share_output_le_p"]) == (1.0 if offset_db < 0 else 0.0)
    assert ds.attrs["crossover_scale"] == crossover_scale
    assert not ds["beaten"].sel(scale=slice(None, crossover_scale // 2)).any()
    assert ds["beaten"].sel(scale=slice(crossover_scale, None)).all()
