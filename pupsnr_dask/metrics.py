"""PSNR and MSE: NumPy kernels, per image, against img_true.

``MSE = mean over H x W x C of (a - b)**2`` in float64, and
``PSNR = 10 * log10(255**2 / MSE)`` in dB, +inf when the images are identical.

Two ways to the MSE of a PU-transformed variant at scale ``s`` are provided:

* :func:`mse_kernel` — the literal one: subtract the upsampled image pixel by pixel;
* :func:`pu_mse_kernel` — from block sums, with no upsampled image. With ``x`` = img_true,
  ``v`` = the variant, ``Sx_b`` and ``Sv_b`` their sums over block ``b`` and ``P`` pixels x
  channels, ``s**2 * P * MSE_s = s**2 * sum(x**2) - 2 * sum_b(Sx_b * Sv_b) + sum_b(Sv_b**2)``.
  For uint8 images every term is an integer, so it is computed exactly in int64 and the MSE is
  the correctly rounded float64 of the true value: bit-identical whatever the chunking or
  scheduler. Block sums at scale ``2s`` are 2 x 2 sums of those at ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pupsnr_dask.schema import DATA_RANGE
from pupsnr_dask.transforms import check_scale


def mse_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean squared error.

    Parameters
    ----------
    a, b : np.ndarray
        Shape ``(n, h, w, c)``, any real dtype, same shape.

    Returns
    -------
    np.ndarray
        Shape ``(n,)``, float64.

    Examples
    --------
    >>> a = np.zeros((1, 2, 2, 1)); b = np.full((1, 2, 2, 1), 2.0)
    >>> mse_kernel(a, b)
    array([4.])
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    return np.square(diff).reshape(len(diff), -1).mean(axis=1)


def psnr_from_mse(mse: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """PSNR in dB from MSE: ``10 * log10(data_range**2 / mse)``, +inf where ``mse == 0``.

    Examples
    --------
    >>> psnr_from_mse(np.array([0.0, 65025.0]))
    array([inf,  0.])
    """
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / mse)


def psnr_kernel(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """Per-image PSNR in dB of ``b`` against ``a``; shapes as :func:`mse_kernel`."""
    return psnr_from_mse(mse_kernel(a, b), data_range)


def _block_sums(pixels: np.ndarray, scales: Sequence[int]) -> dict[int, np.ndarray]:
    """Integer block sums at each scale, each built from the coarsest finer scale dividing it."""
    sums = {1: pixels}
    for s in sorted(set(scales)):
        if s in sums:
            continue
        base = max(t for t in sums if s % t == 0)
        f = s // base
        src = sums[base]
        n, h, w, c = src.shape
        sums[s] = src.reshape(n, h // f, f, w // f, f, c).sum(axis=(2, 4))
    return sums


def pu_mse_kernel(
    truth: np.ndarray, variants: Sequence[np.ndarray], scales: Sequence[int]
) -> np.ndarray:
    """MSE of PU(variant, s) against ``truth`` for every variant and scale, exactly.

    Parameters
    ----------
    truth : np.ndarray
        Shape ``(n, h, w, c)``, uint8: img_true.
    variants : sequence of np.ndarray
        Each shape ``(n, h, w, c)``, uint8.
    scales : sequence of int
        Each a divisor of ``h`` and ``w``.

    Returns
    -------
    np.ndarray
        Shape ``(n, len(variants), len(scales))``, float64.

    Examples
    --------
    >>> x = np.array([[0, 2], [4, 6]], dtype=np.uint8).reshape(1, 2, 2, 1)
    >>> pu_mse_kernel(x, [x], [1, 2])  # scale 2: every pixel becomes 3
    array([[[0., 5.]]])
    """
    n, h, w, c = truth.shape
    for s in scales:
        check_scale(int(s), h)
        check_scale(int(s), w)
    for v in variants:
        if v.shape != truth.shape:
            raise ValueError(f"variant shape {v.shape} differs from truth shape {truth.shape}")
    if truth.dtype != np.uint8 or any(v.dtype != np.uint8 for v in variants):
        raise TypeError("pu_mse_kernel needs uint8 images (exact integer arithmetic)")
    pixels = h * w * c
    x = truth.astype(np.int64)
    sx = _block_sums(x, scales)
    sum_x2 = np.einsum("nhwc,nhwc->n", x, x)
    out = np.empty((n, len(variants), len(scales)), dtype=np.float64)
    for j, v in enumerate(variants):
        sv = _block_sums(v.astype(np.int64), scales)
        for k, s in enumerate(scales):
            cross = np.einsum("nhwc,nhwc->n", sx[s], sv[s])
            sv2 = np.einsum("nhwc,nhwc->n", sv[s], sv[s])
            numerator = s * s * sum_x2 - 2 * cross + sv2  # exact, int64
            out[:, j, k] = numerator.astype(np.float64) / float(s * s * pixels)
    return out
