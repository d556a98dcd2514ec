from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import reference
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from pupsnr_dask.kernels.blocks import block_mean
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel, pu_kernel
from pupsnr_dask.transforms import gray, mosaic, pu


def test_pu_on_a_4x4_image_pooled_by_hand():
    img = np.array(
        [[0, 2, 10, 10], [4, 6, 10, 10], [1, 1, 0, 0], [1, 1, 0, 255]], dtype=np.uint8
    ).reshape(1, 4, 4, 1)
    expected2 = np.array(
        [[3, 3, 10, 10], [3, 3, 10, 10], [1, 1, 63.75, 63.75], [1, 1, 63.75, 63.75]]
    )
    np.testing.assert_array_equal(pu_kernel(img, 2)[0, :, :, 0], expected2)
    expected4 = np.full((4, 4), (0 + 2 + 10 + 10 + 4 + 6 + 10 + 10 + 4 + 255) / 16)
    np.testing.assert_array_equal(pu_kernel(img, 4)[0, :, :, 0], expected4)
    assert pu_kernel(img, 2).dtype == np.float64


def test_pu_pools_each_channel_separately():
    img = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    img[..., 0] = [[0, 4], [8, 12]]
    img[..., 2] = 200
    out = pu_kernel(img, 2)
    np.testing.assert_array_equal(out[0, 0, 0], [6.0, 0.0, 200.0])


def test_scale_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="scale must be a positive divisor"):
        block_mean(np.zeros((1, 6, 6, 3), np.uint8), 4)


@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(8), st.just(8), st.just(3))))
def test_scale_one_is_the_identity_and_shapes_are_kept(images):
    out = pu_kernel(images, 1)
    np.testing.assert_array_equal(out, images.astype(np.float64))
    for s in (2, 4, 8):
        assert pu_kernel(images, s).shape == images.shape


@given(
    arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(16), st.just(16), st.just(3))),
    st.sampled_from([2, 4, 8, 16]),
)
def test_pu_matches_the_reference_loop(images, s):
    for i, img in enumerate(images):
        np.testing.assert_array_equal(pu_kernel(images, s)[i], reference.pu(img, s))


def test_gray_is_pillow_convert_L_in_three_channels(sample_dir):
    path = next(sample_dir.rglob("astronaut.png"))
    img = np.asarray(Image.open(path).convert("RGB").resize((64, 64)))
    out = gray_kernel(img[None])[0]
    luma = np.asarray(Image.fromarray(img).convert("L"))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], luma)
    assert out.dtype == np.uint8


def test_mosaic_matches_the_reference(sample_dir):
    path = next(sample_dir.rglob("chelsea.png"))
    img = reference.img_true(reference.load_rgb(path))
    np.testing.assert_array_equal(mosaic_kernel(img[None])[0], reference.mosaic(img))


def test_lazy_wrappers_equal_the_kernels_on_uneven_chunks():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    lazy = da.from_array(images, chunks=((3, 1, 3), 32, 32, 3))
    np.testing.assert_array_equal(gray(lazy).compute(), gray_kernel(images))
    np.testing.assert_array_equal(mosaic(lazy).compute(), mosaic_kernel(images))
    np.testing.assert_array_equal(pu(lazy, 8).compute(), pu_kernel(images, 8))
    # one task per chunk on top of the input
    assert len(pu(lazy, 8).dask) == 2 * lazy.numblocks[0]


def test_lazy_wrapper_refuses_spatial_chunks():
    lazy = da.zeros((2, 32, 32, 3), dtype=np.uint8, chunks=(1, 16, 32, 3))
    with pytest.raises(ValueError, match="chunked along the image axis only"):
        pu(lazy, 2)
    with pytest.raises(TypeError, match="dask array"):
        pu(np.zeros((1, 4, 4, 3)), 2)
