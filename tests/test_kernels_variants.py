"""``kernels/variants.py``: the gray, mosaic, true and PU kernels on batches of real photos.

``test_transforms.py`` checks the kernels on one square image each, on random arrays and
through the lazy wrappers; these check the module's own promises on batches of scikit-image
photos, image by image against a plain Pillow/NumPy loop: non-square sizes, other dtypes
(the uint16 fast path and the float one), the read-only one-plane gray view, mosaic's rounding
ties to even, and inputs that are not C-contiguous.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference
import skimage.data
from PIL import Image, ImageFilter

from pupsnr_dask.kernels.variants import (
    MOSAIC_BLUR_RADIUS,
    MOSAIC_SCALE,
    gray_kernel,
    mosaic_kernel,
    pu_kernel,
    true_kernel,
)

HEIGHT, WIDTH = 96, 160  # not square, both divisible by 16 and 32


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Three real photos, resized to 96 x 160 (height x width), uint8 RGB."""
    names = ("chelsea", "coffee", "astronaut")
    return np.stack(
        [
            np.asarray(Image.fromarray(getattr(skimage.data, n)()).resize((WIDTH, HEIGHT)))
            for n in names
        ]
    )


@pytest.mark.parametrize("scale", [1, 2, 4, 16, 32])
def test_pu_equals_the_per_image_loop_on_non_square_photos(photos, scale):
    out = pu_kernel(photos, scale)
    assert out.dtype == np.float64 and out.shape == photos.shape
    for img, got in zip(photos, out, strict=True):
        np.testing.assert_array_equal(got, reference.pu(img, scale))


def test_pu_of_uint16_photos_is_exact_on_the_integer_fast_path(photos):
    deep = photos.astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16)  # full 16-bit range
    out = pu_kernel(deep, 8)
    for img, got in zip(deep, out, strict=True):
        np.testing.assert_array_equal(got, reference.pu(img, 8))


def test_pu_of_float_and_signed_inputs_matches_the_loop(photos):
    floats = photos.astype(np.float32) / 255.0
    for img, got in zip(floats, pu_kernel(floats, 4), strict=True):
        np.testing.assert_allclose(got, reference.pu(img, 4), rtol=1e-12)
    signed = photos.astype(np.int16) - 128
    for img, got in zip(signed, pu_kernel(signed, 2), strict=True):
        np.testing.assert_array_equal(got, reference.pu(img, 2))


def test_pu_at_a_scale_that_is_no_power_of_two_matches_the_loop(photos):
    img = photos[:, :48, :96]  # 48 x 96: divisible by 3 (and a non-contiguous view)
    for one, got in zip(img, pu_kernel(img, 3), strict=True):
        np.testing.assert_array_equal(got, reference.pu(one, 3))


def test_pu_leaves_its_input_unchanged(photos):
    before = photos.copy()
    pu_kernel(photos, 4)
    np.testing.assert_array_equal(photos, before)


def test_gray_is_pillow_luma_of_each_photo_in_three_channels(photos):
    out = gray_kernel(photos)
    assert out.shape == photos.shape and out.dtype == np.uint8
    for img, got in zip(photos, out, strict=True):
        luma = np.asarray(Image.fromarray(img).convert("L"))
        for c in range(3):
            np.testing.assert_array_equal(got[..., c], luma)


def test_gray_is_a_read_only_single_plane_view_and_a_copy_is_writable(photos):
    out = gray_kernel(photos)
    assert out.strides[-1] == 0  # one luma plane seen three times
    assert not out.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        out[0, 0, 0, 0] = 1
    copy = np.array(out)
    value = 255 - int(out[0, 0, 0, 0])
    copy[0, 0, 0, 0] = value  # its own three channels now
    assert copy[0, 0, 0, 0] == value and copy[0, 0, 0, 1] == out[0, 0, 0, 1] != value


def test_gray_of_a_non_contiguous_batch_equals_that_of_a_copy(photos):
    view = photos[::-1, ::2, ::-2]  # reversed batch, strided and mirrored
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(gray_kernel(view), gray_kernel(np.ascontiguousarray(view)))
    for img, got in zip(view, gray_kernel(view), strict=True):
        np.testing.assert_array_equal(
            got[..., 0], np.asarray(Image.fromarray(img.copy()).convert("L"))
        )


def test_mosaic_equals_a_per_image_pillow_loop_on_non_square_photos(photos):
    out = mosaic_kernel(photos)
    assert out.shape == photos.shape and out.dtype == np.uint8
    blur = ImageFilter.GaussianBlur(radius=4)
    for img, got in zip(photos, out, strict=True):
        pooled = np.rint(reference.pu(img, 16)).astype(np.uint8)
        np.testing.assert_array_equal(got, np.asarray(Image.fromarray(pooled).filter(blur)))
    assert (MOSAIC_SCALE, MOSAIC_BLUR_RADIUS) == (16, 4)  # SPEC.md's mosaic


def test_mosaic_rounds_block_means_half_way_to_even():
    # one 16 x 16 block per image, half of it v and half v + 1: a mean of v + 0.5
    images = np.zeros((4, 16, 16, 3), np.uint8)
    for i, v in enumerate((0, 1, 2, 253)):
        images[i, :8] = v
        images[i, 8:] = v + 1
    out = mosaic_kernel(images)  # the blur of a flat image is flat
    assert [int(o[0, 0, 0]) for o in out] == [0, 2, 2, 254]
    assert all((o == o[0, 0, 0]).all() for o in out)


def test_mosaic_of_a_non_contiguous_batch_equals_that_of_a_copy(photos):
    view = photos[::-1, :, ::-1]
    np.testing.assert_array_equal(mosaic_kernel(view), mosaic_kernel(np.ascontiguousarray(view)))


def test_mosaic_images_of_a_batch_do_not_bleed_into_each_other(photos):
    together = mosaic_kernel(photos)
    for i in range(len(photos)):
        np.testing.assert_array_equal(together[i], mosaic_kernel(photos[i : i + 1])[0])


def test_true_is_the_batch_itself(photos):
    assert true_kernel(photos) is photos
