"""``kernels/blocks.py``: scale checks, the sum dtype, exact block sums, block means, upsampling.

The PU transform built on these (``pu_kernel``, ``pu_mse_kernel``) is tested against the
reference loop in ``test_transforms.py``, ``test_metrics.py`` and ``test_speed_paths.py``;
these hold each function of the module to its own contract, against plain NumPy loops over
the blocks of real photos (scikit-image's) and of the extreme values.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from pupsnr_dask.kernels import blocks


def _photos() -> np.ndarray:
    """Three real photos cropped to 48 x 72 (divisible by 2, 3, 4, 6, 8, 12, 24), uint8 RGB."""
    crops = [data.astronaut()[100:148, 150:222], data.chelsea()[50:98, 100:172]]
    crops.append(data.coffee()[200:248, 300:372])
    return np.stack(crops)


PHOTOS = _photos()


def _loop_block_sums(images: np.ndarray, f: int) -> np.ndarray:
    """Block sums ``(n, c, h/f, w/f)`` of ``(n, h, w, c)`` images, one block at a time, in int."""
    n, h, w, c = images.shape
    out = np.zeros((n, c, h // f, w // f), dtype=np.int64)
    for k in range(n):
        for ch in range(c):
            for i in range(h // f):
                for j in range(w // f):
                    block = images[k, i * f : (i + 1) * f, j * f : (j + 1) * f, ch]
                    out[k, ch, i, j] = sum(int(v) for v in block.ravel())
    return out


def _loop_upsample(pooled: np.ndarray, s: int) -> np.ndarray:
    n, h, w, c = pooled.shape
    out = np.zeros((n, h * s, w * s, c), dtype=pooled.dtype)
    for y in range(h * s):
        for x in range(w * s):
            out[:, y, x, :] = pooled[:, y // s, x // s, :]
    return out


# -- check_scale ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1, 2, 3, 4, 6, 8, 12, 24, 48, np.int64(4), np.uint8(3)])
def test_check_scale_accepts_every_positive_divisor_python_or_numpy_int(scale):
    blocks.check_scale(scale, 48)  # returns None, raises nothing


@pytest.mark.parametrize(("scale", "shown"), [(0, "0"), (-2, "-2"), (5, "5"), (96, "96")])
def test_check_scale_refuses_non_divisors_naming_size_and_scale(scale, shown):
    with pytest.raises(
        ValueError, match=rf"^scale must be a positive divisor of the image size 48, got {shown}$"
    ):
        blocks.check_scale(scale, 48)


@pytest.mark.parametrize(
    ("scale", "kind"), [(True, "bool"), (2.0, "float"), ("2", "str"), (None, "NoneType")]
)
def test_check_scale_refuses_non_integers_and_bools_with_a_type_error(scale, kind):
    with pytest.raises(TypeError, match=rf"^scale must be an int, got {kind}$"):
        blocks.check_scale(scale, 48)


# -- sum_dtype ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bound", "dtype"),
    [
        (0, np.uint16),
        (255 * 16 * 16, np.uint16),
        (65_535, np.uint16),
        (65_536, np.int32),
        (255 * 32 * 32, np.int32),
        (2**31 - 1, np.int32),
        (2**31, np.int64),
        (65_535 * 2**20, np.int64),
    ],
)
def test_sum_dtype_is_the_smallest_type_holding_the_bound(bound, dtype):
    got = blocks.sum_dtype(bound)
    assert got == np.dtype(dtype) and isinstance(got, np.dtype)
    assert np.iinfo(got).max >= bound


# -- fold_blocks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("f", [2, 3, 4, 6, 8, 24])
@pytest.mark.parametrize("planar", [False, True])
def test_fold_blocks_equals_a_loop_over_the_blocks_of_real_photos(f, planar):
    expected = _loop_block_sums(PHOTOS, f)
    a = np.ascontiguousarray(PHOTOS.transpose(0, 3, 1, 2)) if planar else PHOTOS
    dtype = blocks.sum_dtype(255 * f * f)
    got = blocks.fold_blocks(a, f, dtype, planar=planar)
    assert got.shape == (3, 3, 48 // f, 72 // f)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("planar", [False, True])
def test_fold_blocks_is_exact_at_the_extreme_values_in_the_dtype_given(planar):
    rng = np.random.default_rng(1)
    wide = rng.choice(np.array([0, 65_535], np.uint16), size=(2, 32, 16, 1))
    wide[0] = 65_535  # every block of image 0 sums to 65535 * 16 * 16, past uint16 and float32
    a = np.ascontiguousarray(wide.transpose(0, 3, 1, 2)) if planar else wide
    dtype = blocks.sum_dtype(65_535 * 16 * 16)
    assert dtype == np.int32
    got = blocks.fold_blocks(a, 16, dtype, planar=planar)
    assert got.dtype == np.int32
    assert (got[0] == 65_535 * 256).all()
    np.testing.assert_array_equal(got, _loop_block_sums(wide, 16))
    assert blocks.fold_blocks(a, 16, np.dtype(np.int64), planar=planar).dtype == np.int64


def test_fold_blocks_one_channel_and_both_layouts_agree():
    gray = PHOTOS[..., :1]
    interleaved = blocks.fold_blocks(gray, 4, np.dtype(np.uint16), planar=False)
    planar = blocks.fold_blocks(
        np.ascontiguousarray(gray.transpose(0, 3, 1, 2)), 4, np.dtype(np.uint16), planar=True
    )
    assert interleaved.shape == (3, 1, 12, 18)
    np.testing.assert_array_equal(interleaved, planar)
    np.testing.assert_array_equal(interleaved, _loop_block_sums(gray, 4))


# -- block_mean -----------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8, 12, 24])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_block_mean_is_the_float64_mean_of_each_block_for_any_real_dtype(scale, dtype):
    images = PHOTOS.astype(dtype)
    if dtype == np.uint16:
        images = images * np.uint16(257)  # the whole 16-bit range
    elif dtype == np.int16:
        images = images.astype(np.int16) - 128  # negative values too
    elif dtype == np.float32:
        images = images / np.float32(7)  # values that are not integers
    got = blocks.block_mean(images, scale)
    assert got.shape == (3, 48 // scale, 72 // scale, 3) and got.dtype == np.float64
    n, h, w, c = images.shape
    expected = np.zeros(got.shape)
    for k in range(n):
        for i in range(h // scale):
            for j in range(w // scale):
                block = images[k, i * scale : (i + 1) * scale, j * scale : (j + 1) * scale]
                expected[k, i, j] = block.astype(np.float64).reshape(-1, c).mean(axis=0)
    if dtype == np.float32:  # sums of non-integers: equal up to the order of the additions
        np.testing.assert_allclose(got, expected, rtol=1e-14)
    else:  # integer sums are exact: the same float64 numbers, bit for bit
        assert got.tobytes() == expected.tobytes()


def test_block_mean_is_not_rounded():
    img = np.array([[0, 1], [1, 1]], np.uint8).reshape(1, 2, 2, 1)
    assert blocks.block_mean(img, 2)[0, 0, 0, 0] == 0.75
    three = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0]], np.uint8).reshape(1, 3, 3, 1)
    assert blocks.block_mean(three, 3)[0, 0, 0, 0] == 1 / 9


def test_block_mean_of_a_batch_is_the_block_mean_of_each_image_alone():
    whole = blocks.block_mean(PHOTOS, 4)
    for k in range(len(PHOTOS)):
        assert whole[k].tobytes() == blocks.block_mean(PHOTOS[k : k + 1], 4)[0].tobytes()


def test_block_mean_checks_the_scale_against_width_and_height_alike():
    tall = np.zeros((1, 48, 10, 3), np.uint8)  # 4 divides the height, not the width
    with pytest.raises(ValueError, match="positive divisor of the image size 10, got 4"):
        blocks.block_mean(tall, 4)
    wide = np.zeros((1, 10, 48, 3), np.uint8)
    with pytest.raises(ValueError, match="positive divisor of the image size 10, got 4"):
        blocks.block_mean(wide, 4)
    with pytest.raises(TypeError, match="scale must be an int, got float"):
        blocks.block_mean(PHOTOS, 2.0)


# -- upsample_nearest -----------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1, 2, 3, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_upsample_nearest_repeats_each_pixel_in_a_scale_by_scale_block(scale, channels):
    pooled = blocks.block_mean(PHOTOS[..., :channels], 4)  # (3, 12, 18, c), float64
    got = blocks.upsample_nearest(pooled, scale)
    assert got.shape == (3, 12 * scale, 18 * scale, channels) and got.dtype == np.float64
    np.testing.assert_array_equal(got, _loop_upsample(pooled, scale))


def test_upsample_nearest_keeps_the_dtype_and_returns_its_own_pixels():
    got = blocks.upsample_nearest(PHOTOS, 2)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _loop_upsample(PHOTOS, 2))
    got[0, 0, 0, 0] ^= 0xFF  # a result one may write to, not a view of its input
    assert got[0, 1, 1, 0] == PHOTOS[0, 0, 0, 0] != got[0, 0, 0, 0]


def test_upsample_after_block_mean_is_the_pu_transform_on_its_blocks():
    s = 6
    pu = blocks.upsample_nearest(blocks.block_mean(PHOTOS, s), s)
    assert pu.shape == PHOTOS.shape
    for i in range(0, 48, s):
        for j in range(0, 72, s):
            block = pu[:, i : i + s, j : j + s]
            mean = PHOTOS[:, i : i + s, j : j + s].astype(np.float64).mean(axis=(1, 2))
            np.testing.assert_array_equal(block, np.broadcast_to(mean[:, None, None], block.shape))
