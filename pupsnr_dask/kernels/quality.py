"""Quality metrics of an image against img_true, per image, float64: PSNR, Y-PSNR and SSIM.

``psnr``
    ``10 * log10(255**2 / MSE)`` in dB, MSE over all pixels and channels (SPEC.md).
``psnr_y``
    The same on the BT.601 luma of both images, as BasicSR and MATLAB's ``rgb2ycbcr`` give it
    (:func:`rgb_to_y`): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` on 0-255 values,
    kept in float64 without rounding, data range 255. BasicSR computes Y in float32 and
    usually crops ``scale`` pixels from each border first; here nothing is cropped.
``ssim``
    Wang et al. 2004: an 11 x 11 Gaussian window of sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
    data range 255, population (co)variances, the mean of the SSIM map after cropping the
    5-pixel border, then the mean over channels: exactly scikit-image's
    ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)``, whose Gaussian is
    ``scipy.ndimage.gaussian_filter(..., sigma=1.5, truncate=3.5, mode="reflect")`` over the
    two spatial axes. (The window's radius equals the crop, so no cropped value depends on
    the border mode.)

Every metric is higher-is-better; identical images give ``psnr = +inf`` and ``ssim = 1``.

:func:`pu_quality_kernel` scores PU(variant, s) (SPEC.md: average-pool ``s x s`` blocks in
float64, nearest-neighbour back up, no rounding) against img_true for many scales in one pass
over a batch, one image at a time. Its ``psnr`` is exact (from int64 block sums, the same
float64 as :func:`pupsnr_dask.metrics.pu_mse_kernel`); for ``ssim`` the truth's filtered terms
are computed once per image and reused at every scale, and the variant's are filtered along
``y`` on the pooled columns before being repeated along ``x``::

    G * up(p)  =  G_x * repeat_x( G_y * repeat_y(p) )     (G_y on w/s columns, not w)

which is the same arithmetic as filtering the upsampled image, so the same float64 numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The metrics, in the order of the registry; all higher-is-better.
METRIC_NAMES: tuple[str, ...] = ("psnr", "psnr_y", "ssim")
DATA_RANGE = 255.0
Y_OFFSET = 16.0
#: BT.601 luma weights (R, G, B) of MATLAB's ``rgb2ycbcr`` on 0-255 values, divided by 255.
Y_WEIGHTS = (65.481, 128.553, 24.966)
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's choice: an 11-tap window at sigma 1.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: window 2 * 5 + 1 = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_C1 = (SSIM_K1 * DATA_RANGE) ** 2
_C2 = (SSIM_K2 * DATA_RANGE) ** 2
_INT64_MAX = 2**63 - 1


def rgb_to_y(images: np.ndarray) -> np.ndarray:
    """BT.601 luma of 0-255 RGB in float64, not rounded (MATLAB ``rgb2ycbcr``'s Y).

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, evaluated in float64 as
    ``(R * 65.481 + G * 128.553 + B * 24.966) / 255 + 16``.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(..., 3)``, any real dtype, values on the 0-255 scale.

    Returns
    -------
    np.ndarray
        Shape ``images.shape[:-1]``, float64, in ``[16, 235]`` for values in ``[0, 255]``.

    Examples
    --------
    >>> rgb_to_y(np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8))
    array([ 16., 235.])
    """
    r, g, b = (np.asarray(images[..., k], dtype=np.float64) for k in range(3))
    wr, wg, wb = Y_WEIGHTS
    return (r * wr + g * wg + b * wb) / DATA_RANGE + Y_OFFSET


def psnr_from_mse(mse: np.ndarray | float) -> np.ndarray:
    """``10 * log10(255**2 / mse)`` in dB, +inf where ``mse == 0``."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / mse)


def _check_pair(img_true: np.ndarray, img_test: np.ndarray) -> None:
    for name, a in (("img_true", img_true), ("img_test", img_test)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
        if a.ndim != 4 or not (np.issubdtype(a.dtype, np.integer) or a.dtype.kind == "f"):
            raise ValueError(f"{name} must be real, shape (n, h, w, c), got {a.dtype} {a.shape}")
    if img_true.shape != img_test.shape:
        raise ValueError(
            f"img_true and img_test must have the same shape, got {img_true.shape} and "
            f"{img_test.shape}"
        )


def _check_rgb(img_true: np.ndarray) -> None:
    if img_true.shape[-1] != 3:
        raise ValueError(f"psnr_y needs RGB images (3 channels), got shape {img_true.shape}")


def _check_ssim_size(img_true: np.ndarray) -> None:
    h, w = img_true.shape[1:3]
    if min(h, w) < 2 * SSIM_RADIUS + 1:
        raise ValueError(
            f"ssim needs images of at least {2 * SSIM_RADIUS + 1} x {2 * SSIM_RADIUS + 1} "
            f"pixels (its window), got {h} x {w}"
        )


def psnr(img_true: np.ndarray, img_test: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB over all pixels and channels, data range 255.

    Parameters
    ----------
    img_true, img_test : np.ndarray
        Shape ``(n, h, w, c)``, any real dtype, 0-255 scale, in memory.

    Returns
    -------
    np.ndarray
        Shape ``(n,)``, float64; +inf for identical images.

    Examples
    --------
    >>> a = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    >>> psnr(a, a + 1), psnr(a, a)
    (array([48.13080361]), array([inf]))
    """
    _check_pair(img_true, img_test)
    out = np.empty(len(img_true))
    for i, (x, v) in enumerate(zip(img_true, img_test, strict=True)):
        diff = np.subtract(x, v, dtype=np.float64)
        out[i] = np.square(diff, out=diff).mean()
    return psnr_from_mse(out)


def psnr_y(img_true: np.ndarray, img_test: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of the BT.601 luma (:func:`rgb_to_y`), data range 255.

    Parameters
    ----------
    img_true, img_test : np.ndarray
        Shape ``(n, h, w, 3)``, any real dtype, RGB on the 0-255 scale, in memory.

    Returns
    -------
    np.ndarray
        Shape ``(n,)``, float64; +inf when the lumas are identical.
    """
    _check_pair(img_true, img_test)
    _check_rgb(img_true)
    out = np.empty(len(img_true))
    for i, (x, v) in enumerate(zip(img_true, img_test, strict=True)):
        diff = rgb_to_y(x) - rgb_to_y(v)
        out[i] = np.square(diff, out=diff).mean()
    return psnr_from_mse(out)


def _gauss(a: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    # Imported here: scipy.ndimage costs about 1 s to import (measured), which `pupsnr
    # variants` and every command importing the registry would pay for nothing.
    from scipy import ndimage

    return ndimage.gaussian_filter1d(
        a, SSIM_SIGMA, axis=axis, output=out, mode="reflect", truncate=SSIM_TRUNCATE
    )


def _gauss2(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``gaussian_filter(a, (1.5, 1.5, 0), truncate=3.5, mode="reflect")``, step by step.

    The same calls, in the same order, as ``scipy.ndimage.gaussian_filter``: ``y`` into
    ``out``, then ``x`` in place (SciPy filters each line from a copy).
    """
    out = _gauss(a, 0, out=out)
    return _gauss(out, 1, out=out)


class _SsimTruth:
    """img_true's SSIM terms for one ``(h, w, c)`` image, computed once and reused.

    Also holds the work buffers, so that scoring a scale allocates only small arrays (large
    temporaries cost a page fault per 4 KiB, as much as the arithmetic).
    """

    def __init__(self, x: np.ndarray) -> None:
        h, w, c = x.shape
        r = SSIM_RADIUS
        self.x = x
        self.crop = (slice(r, h - r), slice(r, w - r))
        ux = _gauss2(x)[self.crop]
        self.ux = np.ascontiguousarray(ux)
        self.two_ux = 2 * self.ux
        self.ux2 = self.ux**2
        self.vx = _gauss2(x * x)[self.crop] - self.ux * self.ux  # cov_norm 1.0: population
        self.full = [np.empty((h, w, c)) for _ in range(4)]  # uy, uyy, uxy, x * y
        self.part = [np.empty(self.ux.shape) for _ in range(4)]

    def score(self, uy: np.ndarray, uyy: np.ndarray, uxy: np.ndarray) -> float:
        """SSIM from the variant's filtered terms (full size), as scikit-image's formula.

        scikit-image, term by term: ``A1 = 2 * ux * uy + C1``, ``A2 = 2 * vxy + C2``,
        ``B1 = ux**2 + uy**2 + C1``, ``B2 = vx + vy + C2``, ``S = (A1 * A2) / (B1 * B2)``,
        evaluated left to right, here on the cropped window only and into buffers.
        """
        uy, uyy, uxy = uy[self.crop], uyy[self.crop], uxy[self.crop]
        b2, a2, a1, b1 = self.part
        np.multiply(uy, uy, out=b2)
        np.subtract(uyy, b2, out=b2)  # vy
        np.add(self.vx, b2, out=b2)
        np.add(b2, _C2, out=b2)  # B2
        np.multiply(self.ux, uy, out=a2)
        np.subtract(uxy, a2, out=a2)  # vxy
        np.multiply(a2, 2, out=a2)
        np.add(a2, _C2, out=a2)  # A2
        np.multiply(self.two_ux, uy, out=a1)
        np.add(a1, _C1, out=a1)  # A1
        np.multiply(uy, uy, out=b1)
        np.add(self.ux2, b1, out=b1)
        np.add(b1, _C1, out=b1)  # B1
        np.multiply(a1, a2, out=a1)
        np.multiply(b1, b2, out=b1)
        smap = np.divide(a1, b1, out=a1)
        return float(np.mean([smap[..., k].mean(dtype=np.float64) for k in range(smap.shape[-1])]))

    def score_image(self, y: np.ndarray) -> float:
        """SSIM of a full-size float64 image against the truth."""
        f_y, f_yy, f_xy, prod = self.full
        _gauss2(y, out=f_y)
        _gauss2(np.multiply(y, y, out=prod), out=f_yy)
        _gauss2(np.multiply(self.x, y, out=prod), out=f_xy)
        return self.score(f_y, f_yy, f_xy)

    def score_pooled(self, pooled: np.ndarray, s: int) -> float:
        """SSIM of ``pooled`` (float64 block means) upsampled by ``s`` against the truth.

        The variant's terms are filtered along ``y`` on the ``w/s`` pooled columns, then
        repeated along ``x`` and filtered along ``x``: the same numbers as filtering
        ``up(pooled)``. Only ``x * up(pooled)`` is built at full size.
        """
        if s == 1:
            return self.score_image(pooled)
        h, w, c = self.x.shape
        f_y, f_yy, f_xy, prod = self.full
        rows = np.repeat(pooled, s, axis=0)  # (h, w/s, c): upsampled along y only
        for term, out in ((rows, f_y), (rows * rows, f_yy)):
            out.reshape(h, w // s, s, c)[...] = _gauss(term, 0)[:, :, None, :]
            _gauss(out, 1, out=out)
        np.multiply(
            self.x.reshape(h, w // s, s, c), rows[:, :, None, :], out=prod.reshape(h, w // s, s, c)
        )
        _gauss2(prod, out=f_xy)
        return self.score(f_y, f_yy, f_xy)


def ssim(img_true: np.ndarray, img_test: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004) as scikit-image's Gaussian-window convention.

    ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)`` image by image: see the
    module docstring.

    Parameters
    ----------
    img_true, img_test : np.ndarray
        Shape ``(n, h, w, c)``, any real dtype, 0-255 scale, ``h`` and ``w`` at least 11, in
        memory.

    Returns
    -------
    np.ndarray
        Shape ``(n,)``, float64, at most 1 (1 for identical images).

    Examples
    --------
    >>> a = np.arange(16 * 16 * 3, dtype=np.float64).reshape(1, 16, 16, 3) % 256
    >>> ssim(a, a)
    array([1.])
    """
    _check_pair(img_true, img_test)
    _check_ssim_size(img_true)
    out = np.empty(len(img_true))
    for i, (x, v) in enumerate(zip(img_true, img_test, strict=True)):
        truth = _SsimTruth(np.asarray(x, dtype=np.float64))
        out[i] = truth.score_image(np.asarray(v, dtype=np.float64))
    return out


def _check_pu_args(
    img_true: np.ndarray,
    variant_images: np.ndarray,
    scales: Sequence[int],
    metrics: Sequence[str],
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    for name, a in (("img_true", img_true), ("variant_images", variant_images)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 of shape (n, h, w, 3), got {a.dtype} {a.shape}")
    if variant_images.shape != img_true.shape:
        raise ValueError(
            f"variant_images shape {variant_images.shape} differs from img_true shape "
            f"{img_true.shape}"
        )
    metrics = tuple(metrics)
    if not metrics or len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics must name each of {METRIC_NAMES} at most once, got {metrics}")
    for m in metrics:
        if m not in METRIC_NAMES:
            raise ValueError(f"metric must be one of {METRIC_NAMES}, got {m!r}")
    _, h, w, c = img_true.shape
    scales = tuple(scales)
    if not scales:
        raise ValueError("scales must name at least one scale")
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 or h % s or w % s:
            raise ValueError(
                f"scale must be a positive integer dividing the image sides {h} x {w}, got {s!r}"
            )
    if "ssim" in metrics:
        _check_ssim_size(img_true)
    if 4 * max(scales) ** 2 * h * w * c * 255**2 > _INT64_MAX:
        raise ValueError(f"images of {h} x {w} x {c} are too large for exact int64 PSNR sums")
    return tuple(int(s) for s in scales), metrics


def _block_sums(image: np.ndarray, scales: Sequence[int]) -> dict[int, np.ndarray]:
    """Exact integer sums of ``s x s`` blocks of one ``(h, w, c)`` image, by scale.

    Scale 1 is the image itself; each other scale is int64 ``(h/s, w/s, c)``, summed from the
    largest computed scale that divides it (integer sums: the order never matters).
    """
    h, w, c = image.shape
    sums = {1: image}
    for s in sorted(set(scales)):
        if s not in sums:
            base = max(t for t in sums if s % t == 0)
            f = s // base
            blocks = sums[base].reshape(h // s, f, w // s, f, c)
            sums[s] = blocks.sum(axis=(1, 3), dtype=np.int64)
    return sums


def _dot64(a: np.ndarray, b: np.ndarray) -> int:
    """Exact ``sum(a * b)`` of integer arrays, in int64 (no BLAS)."""
    return int(np.einsum("i,i->", a.ravel(), b.ravel(), dtype=np.int64))


def _exact_mse(x: np.ndarray, v: np.ndarray, x_sums: dict, v_sums: dict, x2: int, s: int) -> float:
    """MSE of PU(v, s) against x from exact integers, as :func:`metrics.pu_mse_kernel`.

    ``s**2 * P * MSE = s**2 * sum(x**2) - 2 * sum_b(Sx_b * Sv_b) + sum_b(Sv_b**2)``, with
    ``P`` pixels x channels; at scale 1, ``sum((x - v)**2)`` directly.
    """
    pixels = x.size
    if s == 1:
        diff = np.subtract(x, v, dtype=np.int64)
        numerator = _dot64(diff, diff)
    else:
        sx, sv = x_sums[s], v_sums[s]
        numerator = s * s * x2 - 2 * _dot64(sx, sv) + _dot64(sv, sv)
    return float(np.float64(numerator) / np.float64(s * s * pixels))


def _score_one_image(
    x: np.ndarray, v: np.ndarray, scales: tuple[int, ...], metrics: tuple[str, ...]
) -> np.ndarray:
    """``(len(scales), len(metrics))`` scores of one uint8 ``(h, w, 3)`` image."""
    h, w, _ = x.shape
    v_sums = _block_sums(v, scales)
    x_sums = _block_sums(x, scales) if "psnr" in metrics else {}
    x2 = _dot64(x, x) if "psnr" in metrics else 0
    y_true = rgb_to_y(x) if "psnr_y" in metrics else None
    truth = _SsimTruth(x.astype(np.float64)) if "ssim" in metrics else None
    out = np.empty((len(scales), len(metrics)))
    for k, s in enumerate(scales):
        pooled = v_sums[s] / float(s * s)  # float64 block means, as transforms.block_mean
        for j, m in enumerate(metrics):
            if m == "psnr":
                mse = _exact_mse(x, v, x_sums, v_sums, x2, s)
            elif m == "psnr_y":
                assert y_true is not None
                diff = y_true.reshape(h // s, s, w // s, s) - rgb_to_y(pooled)[:, None, :, None]
                mse = np.square(diff, out=diff).mean()
            else:
                assert truth is not None
                out[k, j] = truth.score_pooled(pooled, s)
                continue
            out[k, j] = psnr_from_mse(mse)
    return out


def pu_quality_kernel(
    img_true: np.ndarray,
    variant_images: np.ndarray,
    scales: Sequence[int],
    metrics: Sequence[str],
) -> np.ndarray:
    """Metrics of PU(variant, s) against img_true, for every image, scale and metric.

    One pass over the batch, one image at a time: per image, the block sums of both images at
    every scale (exact integers), the truth's terms of each metric once, then per scale the
    pooled float64 means of the variant and each metric. At most one full-size array derived
    from the upsampled variant exists at a time (for SSIM, ``img_true * up(pooled)``); no
    upsampled image is built for ``psnr`` or ``psnr_y``.

    Parameters
    ----------
    img_true : np.ndarray
        Shape ``(n, h, w, 3)``, uint8, in memory.
    variant_images : np.ndarray
        The variant (a task input) of the same images, shape ``(n, h, w, 3)``, uint8; a
        read-only or stride-0 view (e.g. the ``gray`` kernel's) is fine.
    scales : sequence of int
        PU scales, each a positive divisor of ``h`` and ``w``; 1 is the variant itself.
    metrics : sequence of str
        Names from :data:`METRIC_NAMES`, each at most once.

    Returns
    -------
    np.ndarray
        Shape ``(n, len(scales), len(metrics))``, float64. ``psnr`` is the float64 of an exact
        integer MSE (bit-identical to :func:`pupsnr_dask.metrics.pu_mse_kernel` through
        ``psnr_from_mse``); ``psnr_y`` and ``ssim`` are float64 computations whose result for
        an image depends only on that image, so they do not change with the batch.

    Examples
    --------
    >>> x = np.zeros((1, 16, 16, 3), dtype=np.uint8); x[:, ::2] = 200
    >>> scores = pu_quality_kernel(x, x, [1, 2], ["psnr", "ssim"])  # (1 image, 2, 2)
    >>> [[round(float(v), 3) for v in row] for row in scores[0]]
    [[inf, 1.0], [8.131, 0.006]]
    """
    scales, metrics = _check_pu_args(img_true, variant_images, scales, metrics)
    out = np.empty((len(img_true), len(scales), len(metrics)))
    for i in range(len(img_true)):
        out[i] = _score_one_image(img_true[i], variant_images[i], scales, metrics)
    return out
