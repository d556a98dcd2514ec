"""psnr / psnr_y / ssim kernels and the fused PU kernel, against plain formulas and skimage."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFilter
from skimage.metrics import structural_similarity

from pupsnr_dask.kernels.metrics import psnr_from_mse, pu_mse_kernel
from pupsnr_dask.kernels.quality import METRIC_NAMES, psnr, psnr_y, pu_quality_kernel, ssim

SCALES = (1, 2, 4, 8, 16, 32)


@pytest.fixture(scope="module")
def photos(images_store) -> np.ndarray:
    return xr.open_zarr(images_store)["images"].values


# --- independent references, one image at a time ---------------------------------------------


def ref_pu(img: np.ndarray, s: int) -> np.ndarray:
    h, w, c = img.shape
    pooled = img.astype(np.float64).reshape(h // s, s, w // s, s, c).mean(axis=(1, 3))
    return np.repeat(np.repeat(pooled, s, axis=0), s, axis=1)


def ref_gray(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(img).convert("L"))[:, :, None], 3, axis=2)


def ref_mosaic(img: np.ndarray) -> np.ndarray:
    square = Image.fromarray(np.rint(ref_pu(img, 16)).astype(np.uint8))
    return np.asarray(square.filter(ImageFilter.GaussianBlur(radius=4)))


REF_VARIANTS = {"true": lambda x: x, "gray": ref_gray, "mosaic": ref_mosaic}


def ref_psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB rgb2ycbcr's Y on 0-255 values, PSNR with peak 255; a plain loop-free formula."""

    def y(img):
        img = np.asarray(img, dtype=np.float64)
        return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255

    mse = float(np.mean((y(a) - y(b)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        np.asarray(a, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )


def assert_psnr_close(got: float, want: float) -> None:
    if math.isinf(want):
        assert got == want
    else:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


# --- the per-image metrics -------------------------------------------------------------------


def test_psnr_y_by_hand():
    a = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[..., 1] = 255  # pure green: Y differs by 128.553 everywhere
    assert psnr_y(a, b)[0] == pytest.approx(10 * math.log10(255**2 / 128.553**2), rel=1e-14)
    assert psnr(a, b)[0] == pytest.approx(10 * math.log10(255**2 / (255**2 / 3)), rel=1e-14)


def test_psnr_y_is_the_plain_formula_on_real_images(photos):
    for name, make in REF_VARIANTS.items():
        variants = np.stack([make(img) for img in photos])
        got = psnr_y(photos, variants)
        for i, img in enumerate(photos):
            assert_psnr_close(got[i], ref_psnr_y(img, variants[i])), name


def test_psnr_y_is_near_basicsr_float32_y():
    """BasicSR computes Y the same way in float32: the dB agree to well under 0.01."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)

    def basicsr_y(img):  # basicsr.utils.color_util.rgb2ycbcr(y_only=True), * 255
        x = img.astype(np.float32) / 255.0
        return (np.dot(x, np.float32([65.481, 128.553, 24.966])) + 16.0) / 255.0 * 255.0

    mse = np.mean((basicsr_y(a[0]).astype(np.float64) - basicsr_y(b[0])) ** 2)
    assert psnr_y(a, b)[0] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-2)


def test_ssim_is_skimage_on_real_images(photos):
    for make in REF_VARIANTS.values():
        variants = np.stack([make(img) for img in photos[:6]])
        got = ssim(photos[:6], variants)
        for i, img in enumerate(photos[:6]):
            assert abs(got[i] - ref_ssim(img, variants[i])) < 1e-6


def test_identical_images_score_inf_and_one_without_warnings(photos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isposinf(psnr(photos[:2], photos[:2])))
        assert np.all(np.isposinf(psnr_y(photos[:2], photos[:2])))
        assert ssim(photos[:2], photos[:2]).tolist() == [1.0, 1.0]
        out = pu_quality_kernel(photos[:2], photos[:2], [1], METRIC_NAMES)
    assert out[:, 0].tolist() == [[math.inf, math.inf, 1.0]] * 2


# --- the fused kernel: every scale, every variant, against the references ---------------------


@pytest.fixture(scope="module")
def fused(photos):
    """Six real photos (SSIM references are slow), their true, gray and mosaic inputs, and
    pu_quality_kernel of each input for all metrics and scales."""
    from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel

    some = photos[:6]
    views = {"true": some, "gray": gray_kernel(some), "mosaic": mosaic_kernel(some)}
    scores = {name: pu_quality_kernel(some, v, SCALES, METRIC_NAMES) for name, v in views.items()}
    return some, views, scores


def test_fused_ssim_is_skimage_of_the_pu_image_at_every_scale(fused):
    photos, _, scores = fused
    j = METRIC_NAMES.index("ssim")
    worst = 0.0
    for name, make in REF_VARIANTS.items():
        for i, img in enumerate(photos):
            view = make(img)
            for k, s in enumerate(SCALES):
                worst = max(worst, abs(scores[name][i, k, j] - ref_ssim(img, ref_pu(view, s))))
    assert worst < 1e-6


def test_fused_psnr_y_is_the_formula_on_the_pu_image(fused):
    photos, _, scores = fused
    j = METRIC_NAMES.index("psnr_y")
    for name, make in REF_VARIANTS.items():
        for i, img in enumerate(photos):
            view = make(img)
            for k, s in enumerate(SCALES):
                assert_psnr_close(scores[name][i, k, j], ref_psnr_y(img, ref_pu(view, s)))


def test_fused_psnr_is_bit_identical_to_the_exact_moment_path(fused):
    photos, views, scores = fused
    j = METRIC_NAMES.index("psnr")
    for name, view in views.items():
        exact = psnr_from_mse(pu_mse_kernel(photos, [view], SCALES))[:, 0, :]
        assert scores[name][..., j].tobytes() == exact.tobytes(), name


def test_fused_scores_do_not_depend_on_the_batch(fused):
    photos, views, scores = fused
    view = views["mosaic"]
    for start, stop in ((0, 1), (1, 4), (4, len(photos))):
        part = pu_quality_kernel(photos[start:stop], view[start:stop], SCALES, METRIC_NAMES)
        assert part.tobytes() == scores["mosaic"][start:stop].tobytes()
    picked = pu_quality_kernel(photos, view, (32, 2), ("ssim", "psnr"))  # any order, any subset
    np.testing.assert_array_equal(picked[:, 0, 0], scores["mosaic"][:, 5, 2])
    np.testing.assert_array_equal(picked[:, 1, 1], scores["mosaic"][:, 1, 0])


def test_metrics_fall_as_the_scale_grows(fused):
    _, _, scores = fused
    means = scores["true"][:, 1:].mean(axis=0)  # (scales 2 ... 32, metrics)
    assert np.all(np.diff(means, axis=0) < 0)


_sizes = st.sampled_from([12, 16, 24, 32])


@given(
    arrays(np.uint8, st.tuples(st.integers(1, 2), _sizes, _sizes, st.just(3))),
    st.integers(0, 2**32 - 1),
)
def test_fused_kernel_on_generated_images(truth, seed):
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 41, truth.shape)
    variant = np.clip(truth.astype(int) + noise, 0, 255).astype(np.uint8)
    scales = [s for s in (1, 2, 4) if truth.shape[1] % s == 0 and truth.shape[2] % s == 0]
    out = pu_quality_kernel(truth, variant, scales, METRIC_NAMES)
    exact = psnr_from_mse(pu_mse_kernel(truth, [variant], scales))[:, 0, :]
    assert out[..., 0].tobytes() == exact.tobytes()
    for i in range(len(truth)):
        for k, s in enumerate(scales):
            pu = ref_pu(variant[i], s)
            assert_psnr_close(out[i, k, 1], ref_psnr_y(truth[i], pu))
            assert abs(out[i, k, 2] - ref_ssim(truth[i], pu)) < 1e-6
    assert np.array_equal(ssim(truth, variant), out[:, 0, 2])


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metrics": ["psnr", "lpips"]}, ValueError, "metric must be one of .* got 'lpips'"),
        ({"metrics": ["ssim", "ssim"]}, ValueError, "at most once"),
        ({"metrics": []}, ValueError, "at most once"),
        ({"scales": [3]}, ValueError, "dividing the image sides 16 x 16, got 3"),
        ({"scales": []}, ValueError, "at least one scale"),
        ({"variant": np.zeros((1, 16, 16, 3))}, ValueError, "uint8 of shape .* float64"),
        ({"variant": np.zeros((1, 16, 8, 3), np.uint8)}, ValueError, "differs from img_true"),
        ({"variant": [[0]]}, TypeError, "numpy array, got list"),
        ({"truth": np.zeros((1, 8, 8, 3), np.uint8)}, ValueError, "ssim needs images of at least"),
    ],
)
def test_bad_arguments_are_refused_naming_the_value(kwargs, error, message):
    truth = kwargs.get("truth", np.zeros((1, 16, 16, 3), np.uint8))
    variant = kwargs.get("variant", truth)
    with pytest.raises(error, match=message):
        pu_quality_kernel(
            truth, variant, kwargs.get("scales", [1, 2]), kwargs.get("metrics", ["ssim"])
        )
