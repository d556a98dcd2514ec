from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import reference
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import peak_signal_noise_ratio

from pupsnr_dask.kernels.metrics import mse_kernel, psnr_from_mse, psnr_kernel, pu_mse_kernel
from pupsnr_dask.kernels.variants import pu_kernel

batches = arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(32), st.just(32), st.just(3)))


def test_mse_and_psnr_by_hand():
    a = np.zeros((1, 2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 12  # one value off by 12 among 12 values: MSE 12
    assert mse_kernel(a, b).tolist() == [12.0]
    assert psnr_kernel(a, b)[0] == pytest.approx(10 * math.log10(255**2 / 12))


def test_identical_images_give_inf_without_a_warning():
    a = np.full((4, 8, 8, 3), 7, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = psnr_kernel(a, a)
        assert np.all(np.isposinf(out))
        assert np.all(np.isposinf(psnr_from_mse(pu_mse_kernel(a, [a], [1, 2, 4]))))


@given(batches, batches)
def test_psnr_is_inf_exactly_for_identical_images(a, b):
    b = b[: len(a)] if len(b) >= len(a) else np.concatenate([b] * len(a))[: len(a)]
    out = psnr_kernel(a, b)
    same = np.all(a == b, axis=(1, 2, 3))
    assert np.array_equal(np.isinf(out), same)


@given(batches, st.lists(st.sampled_from([1, 2, 4, 8, 16, 32]), min_size=1, unique=True))
def test_moment_form_equals_the_literal_upsampling(images, scales):
    rng = np.random.default_rng(len(images))
    other = rng.integers(0, 256, images.shape, dtype=np.uint8)
    fast = pu_mse_kernel(images, [images, other], scales)
    for j, view in enumerate([images, other]):
        for k, s in enumerate(scales):
            literal = mse_kernel(images, pu_kernel(view, s))
            np.testing.assert_allclose(fast[:, j, k], literal, rtol=1e-12, atol=1e-9)
            with np.errstate(divide="ignore", invalid="ignore"):
                db = np.abs(psnr_from_mse(fast[:, j, k]) - psnr_from_mse(literal))
            assert np.all((db < 1e-9) | np.isnan(db))


def test_moment_form_is_exact_on_integers():
    """Every MSE is k / (s**2 * P) for an integer k: check against Python fractions."""
    from fractions import Fraction

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    v = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    got = pu_mse_kernel(x, [v], [4])
    for i in range(2):
        total = Fraction(0)
        xb = x[i].astype(int)
        vb = v[i].astype(int)
        for by in range(2):
            for bx in range(2):
                for c in range(3):
                    blk = vb[by * 4 : by * 4 + 4, bx * 4 : bx * 4 + 4, c]
                    m = Fraction(int(blk.sum()), 16)
                    for px in xb[by * 4 : by * 4 + 4, bx * 4 : bx * 4 + 4, c].ravel():
                        total += (px - m) ** 2
        assert got[i, 0, 0] == float(total / 192)


def test_true_variant_agrees_with_scikit_image(sample_dir):
    for path in sorted(sample_dir.rglob("*.*"))[:6]:
        img = reference.img_true(reference.load_rgb(path))
        for s in (2, 8, 32):
            up = pu_kernel(img[None], s)[0]
            ours = psnr_from_mse(pu_mse_kernel(img[None], [img[None]], [s]))[0, 0, 0]
            theirs = peak_signal_noise_ratio(img.astype(np.float64), up, data_range=255)
            assert abs(ours - theirs) < 1e-9


def test_moment_kernel_refuses_float_input():
    with pytest.raises(TypeError, match="uint8"):
        pu_mse_kernel(np.zeros((1, 4, 4, 3)), [np.zeros((1, 4, 4, 3))], [2])
