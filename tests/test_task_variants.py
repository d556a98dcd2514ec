"""Task inputs (sr, jpeg, noise, blur) against per-image Pillow/NumPy references written here."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFilter

from pupsnr_dask.kernels.task_variants import (
    FAMILIES,
    blur_kernel,
    jpeg_kernel,
    noise_kernel,
    parse_variant,
    sr_kernel,
)


@pytest.fixture(scope="module")
def photos(images_store) -> tuple[np.ndarray, list[str]]:
    """The real sample photos as img_true, (n, 256, 256, 3) uint8, and their sources."""
    ds = xr.open_zarr(images_store)
    return ds["images"].values, [str(s) for s in ds["source"].values]


# --- independent references: one image at a time, plain Pillow / NumPy ------------------------


def ref_sr(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[:2]
    low = Image.fromarray(img, "RGB").resize((w // k, h // k), Image.BICUBIC)
    return np.asarray(low.resize((w, h), Image.BICUBIC))


def ref_jpeg(img: np.ndarray, q: int, **options) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=q, **options)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def ref_blur(img: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img, "RGB").filter(ImageFilter.GaussianBlur(radius)))


def ref_noise(img: np.ndarray, key: str, sigma: float) -> np.ndarray:
    """The documented definition, word for word."""
    message = b"pupsnr_dask.noise/v1"
    for part in (
        key.encode("utf-8"),
        repr(float(sigma)).encode(),
        "{},{},{}".format(*img.shape).encode(),
        img.tobytes(),
    ):
        message += len(part).to_bytes(8, "little") + part
    seed = int.from_bytes(hashlib.blake2b(message, digest_size=32).digest(), "little")
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(img.shape)
    return np.clip(np.rint(img.astype(np.float64) + sigma * z), 0, 255).astype(np.uint8)


# --- every built-in input against its reference, on the real photos ---------------------------


@pytest.mark.parametrize("k", [2, 4, 8])
def test_sr_is_pillow_bicubic_down_and_up(photos, k):
    images, _ = photos
    out = sr_kernel(images, k)
    assert out.dtype == np.uint8 and out.shape == images.shape
    for img, got in zip(images, out, strict=True):
        np.testing.assert_array_equal(got, ref_sr(img, k))


@pytest.mark.parametrize("q", [5, 20, 75, 100])
def test_jpeg_is_a_pillow_round_trip_with_4_2_0_chroma(photos, q):
    images, _ = photos
    out = jpeg_kernel(images, q)
    for img, got in zip(images, out, strict=True):
        np.testing.assert_array_equal(got, ref_jpeg(img, q, subsampling="4:2:0"))
        # 4:2:0 is Pillow's own default today, as the docstring states
        np.testing.assert_array_equal(got, ref_jpeg(img, q))
    assert any(
        not np.array_equal(got, ref_jpeg(img, q, subsampling="4:4:4"))
        for img, got in zip(images, out, strict=True)
    )


@pytest.mark.parametrize("radius", [0.5, 2, 3.5])
def test_blur_is_pillow_gaussian_blur(photos, radius):
    images, _ = photos
    out = blur_kernel(images, radius)
    for img, got in zip(images, out, strict=True):
        np.testing.assert_array_equal(got, ref_blur(img, radius))


@pytest.mark.parametrize("sigma", [25, 2.5])
def test_noise_is_the_documented_seeded_gaussian(photos, sigma):
    images, keys = photos
    out = noise_kernel(images, keys, sigma)
    for img, key, got in zip(images, keys, out, strict=True):
        np.testing.assert_array_equal(got, ref_noise(img, key, sigma))
    assert not np.array_equal(out, images)


def test_noise_of_an_image_does_not_depend_on_its_batch(photos):
    images, keys = photos
    whole = noise_kernel(images, keys, 25)
    alone = np.stack([noise_kernel(images[i : i + 1], keys[i : i + 1], 25)[0] for i in range(3)])
    np.testing.assert_array_equal(alone, whole[:3])
    order = np.random.default_rng(1).permutation(len(images))
    shuffled = noise_kernel(images[order], [keys[i] for i in order], 25)
    np.testing.assert_array_equal(shuffled, whole[order])
    for start, stop in ((0, 5), (5, 6), (6, len(images))):  # uneven chunks
        part = noise_kernel(images[start:stop], keys[start:stop], 25)
        np.testing.assert_array_equal(part, whole[start:stop])
    np.testing.assert_array_equal(noise_kernel(images, keys, 25), whole)  # a rerun


def test_noise_differs_between_keys_pixels_and_sigmas(photos):
    images, _ = photos
    img = images[:1]
    a = noise_kernel(img, ["a.png"], 25)
    assert not np.array_equal(a, noise_kernel(img, ["b.png"], 25))
    assert not np.array_equal(a, noise_kernel(img, ["a.png"], 24.9))
    brighter = img.copy()
    brighter[0, 0, 0] ^= 1
    noise_a = a.astype(int) - img
    noise_b = noise_kernel(brighter, ["a.png"], 25).astype(int) - brighter
    assert np.mean(noise_a == noise_b) < 0.2  # one pixel changed: a new seed, new noise


@pytest.mark.parametrize("sigma", [25.0, 2.5])
def test_noise_on_mid_gray_has_mean_0_and_std_sigma(sigma):
    gray = np.full((2, 256, 256, 3), 128, dtype=np.uint8)
    noise = noise_kernel(gray, ["x", "y"], sigma).astype(np.float64) - 128
    # 393216 samples: standard errors 0.04 (mean) and 0.03 (std) at sigma 25
    assert abs(noise.mean()) < 0.5
    assert abs(noise.std() - np.sqrt(sigma**2 + 1 / 12)) < 0.5
    assert np.all(noise == np.rint(noise))


def test_noise_needs_one_str_key_per_image():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="2 images"):
        noise_kernel(images, ["only one"], 5)
    with pytest.raises(TypeError, match="keys must be str"):
        noise_kernel(images, ["a", 3], 5)


def test_sr_refuses_a_factor_that_does_not_divide_the_size():
    images = np.zeros((1, 12, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"sr5 needs image sides divisible by 5, got 12 x 12"):
        sr_kernel(images, 5)
    with pytest.raises(ValueError, match="sr factor must be an integer >= 2, got 1"):
        sr_kernel(images, 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: jpeg_kernel(x, 0), "quality must be an integer in 1 ... 100, got 0"),
        (lambda x: jpeg_kernel(x, 101), "got 101"),
        (lambda x: blur_kernel(x, 0), "blur radius must be a positive finite number, got 0.0"),
        (lambda x: noise_kernel(x, ["k"], -1), "noise sigma must be a positive finite number"),
        (lambda x: blur_kernel(x.astype(np.float32), 1), "must be uint8 of shape"),
    ],
)
def test_bad_parameters_are_refused_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.zeros((1, 8, 8, 3), dtype=np.uint8))


_batches = arrays(np.uint8, st.tuples(st.integers(1, 3), st.sampled_from([8, 16, 24]),
                                      st.sampled_from([8, 16, 32]), st.just(3)))  # fmt: skip


@given(_batches)
def test_every_input_keeps_shape_and_dtype_and_equals_its_reference(images):
    keys = [f"{i}.png" for i in range(len(images))]
    for out, ref in (
        (sr_kernel(images, 4), lambda i: ref_sr(images[i], 4)),
        (jpeg_kernel(images, 30), lambda i: ref_jpeg(images[i], 30)),
        (blur_kernel(images, 1.5), lambda i: ref_blur(images[i], 1.5)),
        (noise_kernel(images, keys, 10), lambda i: ref_noise(images[i], keys[i], 10)),
    ):
        assert out.shape == images.shape and out.dtype == np.uint8
        for i in range(len(images)):
            np.testing.assert_array_equal(out[i], ref(i))


# --- the grammar of names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "params"),
    [
        ("sr2", "sr", {"factor": 2}),
        ("sr16", "sr", {"factor": 16}),
        ("jpeg1", "jpeg", {"quality": 1}),
        ("jpeg100", "jpeg", {"quality": 100}),
        ("noise25", "noise", {"sigma": 25.0}),
        ("noise2.5", "noise", {"sigma": 2.5}),
        ("noise0.05", "noise", {"sigma": 0.05}),
        ("blur2", "blur", {"radius": 2.0}),
        ("blur1.25", "blur", {"radius": 1.25}),
    ],
)
def test_names_parse_to_family_and_parameter(name, family, params):
    got_family, got_params = parse_variant(name)
    assert (got_family, got_params) == (family, params)
    assert type(got_params[FAMILIES[family].param]) is type(next(iter(params.values())))


@pytest.mark.parametrize(
    ("name", "grammar"),
    [
        ("sr1", "sr<k>: k an integer >= 2"),
        ("sr", "sr<k>"),
        ("sr02", "sr<k>"),
        ("sr4.0", "sr<k>"),
        ("jpeg0", "jpeg<q>: q an integer quality 1 ... 100"),
        ("jpeg101", "jpeg<q>"),
        ("noise0", "noise<sigma>: sigma a positive decimal number"),
        ("noise25.0", "noise<sigma>"),
        ("noise025", "noise<sigma>"),
        ("noise.5", "noise<sigma>"),
        ("noise-1", "noise<sigma>"),
        ("noise1e2", "noise<sigma>"),
        ("blur0.0", "blur<radius>"),
        ("blur 2", "blur<radius>"),
        ("sharpen2", "sr<k>: .*jpeg<q>: .*noise<sigma>: .*blur<radius>: "),
    ],
)
def test_bad_names_are_refused_naming_value_and_grammar(name, grammar):
    with pytest.raises(ValueError, match=f"variant {name!r}") as info:
        parse_variant(name)
    assert len(str(info.value).splitlines()) == 1
    assert re.search(grammar, str(info.value)), str(info.value)
