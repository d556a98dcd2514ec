"""The colour test's score is exact: bit for bit what the float64 BLAS version gave, and the
same decision as ``np.corrcoef`` in float64 (SPEC.md, "Data preparation", step 2).

``old_color_score`` below is the implementation before issue 12 (float64 sums over (n, 3)
blocks, exact because every partial sum is an integer below 2**53), kept here as the
reference whose exact value the fast one must reproduce.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from pupsnr_dask.ingest import DEFAULT_THRESHOLD
from pupsnr_dask.kernels.image import color_score, decode_rgb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def old_color_score(rgb: np.ndarray) -> float:
    """pupsnr_dask.ingest.color_score as it was before issue 12 (the exact value to keep)."""
    pixels = rgb.reshape(-1, 3)
    n = len(pixels)
    sums = np.zeros(3)
    products = np.zeros((3, 3))
    step = 1 << 20
    for start in range(0, n, step):
        block = pixels[start : start + step].astype(np.float64)
        sums += np.ones(len(block)) @ block
        products += block.T @ block
    s = [int(v) for v in sums]
    cov = [[n * int(products[i, j]) - s[i] * s[j] for j in range(3)] for i in range(3)]
    if any(cov[i][i] == 0 for i in range(3)):
        return math.nan
    corr = [
        [1.0 if i == j else cov[i][j] / math.sqrt(cov[i][i] * cov[j][j]) for j in range(3)]
        for i in range(3)
    ]
    return float(np.mean(corr))


def corrcoef_score(rgb: np.ndarray) -> float:
    """SPEC's definition in float64: the mean of ``np.corrcoef`` of R, G, B (NaN: undefined)."""
    values = np.asarray(rgb).reshape(-1, 3).T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one pixel: no degrees of freedom
        return float(np.mean(np.corrcoef(values)))


def is_colour(score: float, threshold: float = DEFAULT_THRESHOLD) -> bool:
    return not math.isnan(score) and score < threshold


def assert_exact(rgb: np.ndarray) -> float:
    """color_score(rgb) equals the old implementation's value exactly (NaN for NaN), gives the
    corrcoef reference's decision, and does so for the array and for the Pillow image alike."""
    got = color_score(rgb)
    old = old_color_score(rgb)
    assert (math.isnan(got) and math.isnan(old)) or got == old, (got, old)
    ref = corrcoef_score(rgb)
    if math.isnan(ref) or math.isnan(got):
        assert math.isnan(ref) == math.isnan(got), (got, ref)
    else:
        assert got == pytest.approx(ref, abs=1e-12)
        if abs(ref - DEFAULT_THRESHOLD) > 1e-12:  # corrcoef's own rounding cannot decide it
            assert is_colour(got) == is_colour(ref), (got, ref)
    if rgb.ndim == 3 and rgb.shape[0] and rgb.shape[1]:
        via_image = color_score(Image.fromarray(np.ascontiguousarray(rgb), "RGB"))
        assert (math.isnan(got) and math.isnan(via_image)) or via_image == got
    return got


def test_sample_photos_score_exactly_as_before(sample_dir):
    scores = [assert_exact(np.asarray(decode_rgb(str(p)))) for p in sorted(sample_dir.rglob("*.*"))]
    assert len(scores) >= 10
    assert any(is_colour(s) for s in scores) and any(not is_colour(s) for s in scores)


def test_corpus_images_score_exactly_as_before():
    """Photos of the benchmark corpus (0.5-1.2 megapixels: crops, flips, LANCZOS upscales),
    made in memory; the whole corpus is checked by benchmarks/color_score.py."""
    import corpus

    for i in range(0, 400, 29):  # every source photo, several transforms
        _, img, _ = corpus.make_image(i, seed=0)
        assert img.width * img.height >= corpus.MIN_PIXELS
        assert_exact(np.asarray(img))


def test_gray_and_constant_channels():
    rng = np.random.default_rng(3)
    plane = rng.integers(0, 256, (37, 41, 1), dtype=np.uint8)
    assert assert_exact(np.repeat(plane, 3, axis=2)) == 1.0
    img = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    for c in range(3):
        const = img.copy()
        const[..., c] = 200
        assert math.isnan(assert_exact(const))
    assert math.isnan(assert_exact(np.zeros((5, 5, 3), np.uint8)))
    assert math.isnan(assert_exact(np.full((5, 5, 3), 255, np.uint8)))
    assert math.isnan(color_score(np.zeros((0, 7, 3), np.uint8)))


def test_extreme_values_of_a_large_image_do_not_overflow():
    """4 megapixels of 0/255 checkerboard-like values: the largest sums of squares per pixel."""
    rng = np.random.default_rng(5)
    img = (rng.integers(0, 2, (2048, 2048, 3), dtype=np.uint8) * 255).astype(np.uint8)
    img[::2, ::2, 1] = img[::2, ::2, 0]  # correlated, not identical
    assert_exact(img)


def test_views_and_other_dtypes():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    img[..., 1] = img[..., 0] // 2 + img[..., 1] // 2
    for view in (img[::-1], img[:, ::3], img[10:40, 5:45], img.transpose(1, 0, 2)):
        assert not view.flags.c_contiguous or view is img
        assert_exact(view)
    for dtype in (np.uint16, np.int64, np.float64):  # the float64 path, as before
        assert color_score(img.astype(dtype)) == old_color_score(img.astype(dtype))


def test_image_input_must_be_rgb():
    with pytest.raises(ValueError, match="mode 'L'"):
        color_score(Image.new("L", (4, 4)))


def _photo_like(draw) -> np.ndarray:
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    base = draw(arrays(np.uint8, (h, w, 1)))
    noise = draw(arrays(np.uint8, (h, w, 3), elements=st.integers(0, 3)))
    kind = draw(st.sampled_from(["random", "near-gray", "gray", "extremes"]))
    if kind == "random":
        return draw(arrays(np.uint8, (h, w, 3)))
    if kind == "near-gray":
        return np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
    if kind == "gray":
        return np.repeat(base, 3, axis=2)
    return draw(arrays(np.uint8, (h, w, 3), elements=st.sampled_from([0, 1, 254, 255])))


@given(st.composite(_photo_like)())
def test_generated_images_score_exactly_as_before(rgb):
    assert_exact(rgb)


def test_near_threshold_decisions_match_corrcoef():
    """Images whose score is near 0.995 (mostly gray, a little colour): same decision."""
    rng = np.random.default_rng(11)
    seen = set()
    for k in range(60):
        base = rng.integers(0, 256, (64, 64, 1)).astype(np.int64)
        amount = 1 + k % 12
        noise = rng.integers(-amount, amount + 1, (64, 64, 3))
        rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
        seen.add(is_colour(assert_exact(rgb)))
    assert seen == {True, False}
