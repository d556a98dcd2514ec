"""PSNR and MSE: NumPy kernels, per image, against img_true.

``MSE = mean over H x W x C of (a - b)**2`` in float64, and
``PSNR = 10 * log10(255**2 / MSE)`` in dB, +inf when the images are identical.

Two ways to the MSE of a PU-transformed variant at scale ``s`` are provided:

* :func:`mse_kernel` — the literal one: subtract the upsampled image pixel by pixel;
* :func:`pu_mse_kernel` — from block sums, with no upsampled image. With ``x`` = img_true,
  ``v`` = the variant, ``Sx_b`` and ``Sv_b`` their sums over block ``b`` and ``P`` pixels x
  channels, ``s**2 * P * MSE_s = s**2 * sum(x**2) - 2 * sum_b(Sx_b * Sv_b) + sum_b(Sv_b**2)``.
  For uint8 images every term is an integer, so it is computed exactly (int64) and the MSE is
  the float64 of that integer divided by ``s**2 * P`` (both below ``2**53`` up to
  ``s**2 * P < 1.3e11``, e.g. 4096 x 4096 pixels at scale 32, so one correct rounding):
  bit-identical whatever the chunking or scheduler. Block sums at scale ``2s`` are 2 x 2
  sums of those at ``s``.

How :func:`pu_mse_kernel` stays exact and fast (each step is integer arithmetic, so the
order in which NumPy adds never matters):

* block sums are kept in the smallest integer type that holds ``255 * s**2`` (uint16 up to
  scale 16, int32 above), laid out channel-planar ``(n, c, h/s, w/s)`` so that every addition
  runs over contiguous or evenly strided memory;
* a sum of products ``sum(a * b)`` is accumulated in int32 over runs short enough that
  ``run * max(a) * max(b) < 2**31`` (a bound from the dtypes' value ranges, never from the
  data), and the int32 run sums are added in int64; where no such run exists, int64
  throughout;
* the ``true`` variant (the truth array itself) needs no cross term:
  ``s**2 * P * MSE_s = s**2 * sum(x**2) - sum_b(Sx_b**2)``;
* a variant whose channels are one plane ``g`` repeated (the ``gray`` kernel returns such a
  read-only view, channel stride 0; a single-channel array counts the same) is summed on that
  plane only: with ``y`` = the sum of the truth's channels,
  ``sum_bc(Sx_bc * Sv_bc) = sum_b(Sy_b * Sg_b)`` and ``sum_bc(Sv_bc**2) = c * sum_b(Sg_b**2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pupsnr_dask.kernels.blocks import check_scale, fold_blocks, sum_dtype

#: The range of uint8 pixel values: PSNR's peak signal.
DATA_RANGE = 255


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


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_MAX_VALUE = 255  # uint8
_MIN_RUN = 16  # shortest int32 run worth using; shorter runs go to int64 directly


def _block_sums(pixels: np.ndarray, scales: Sequence[int]) -> dict[int, np.ndarray]:
    """Exact integer block sums of uint8 ``(n, h, w, c)`` images at each scale.

    Scale 1 is ``pixels`` itself (interleaved); every other scale is channel-planar
    ``(n, c, h/s, w/s)``, built from the coarsest computed scale that divides it.
    """
    sums = {1: pixels}
    for s in sorted(set(scales)):
        if s in sums:
            continue
        base = max(t for t in sums if s % t == 0)
        dtype = sum_dtype(_MAX_VALUE * s * s)
        sums[s] = fold_blocks(sums[base], s // base, dtype, planar=base > 1)
    return sums


def _dot(a: np.ndarray, b: np.ndarray, max_product: int) -> np.ndarray:
    """Per-image ``sum(a * b)`` as exact int64; ``a`` and ``b`` integer, same layout.

    Every product ``a * b`` must lie in ``[0, max_product]`` (a bound from the dtypes' value
    ranges, never from the data). Products are accumulated in int32 over runs of ``run``
    values with ``run * max_product < 2**31``, then the run sums in int64: no partial sum can
    overflow, so the result is exact whatever order NumPy adds in.
    """
    n = len(a)
    a = a.reshape(n, -1)
    b = b.reshape(n, -1)
    per_run = _INT32_MAX // max_product
    run = math.gcd(a.shape[1], 1 << (per_run.bit_length() - 1)) if per_run else 0
    if run >= _MIN_RUN:
        parts = np.einsum(
            "nrk,nrk->nr", a.reshape(n, -1, run), b.reshape(n, -1, run), dtype=np.int32
        )
        return parts.sum(axis=1, dtype=np.int64)
    return np.einsum("ij,ij->i", a, b, dtype=np.int64)


def _channel_sums(x_sums: dict[int, np.ndarray], s: int) -> np.ndarray:
    """Sum over channels of the truth's block sums at scale ``s``, same layout, one channel."""
    xs = x_sums[s]
    if s == 1:  # interleaved (n, h, w, c)
        c = xs.shape[-1]
        if c == 1:
            return xs
        y = np.add(xs[..., :1], xs[..., 1:2], dtype=sum_dtype(_MAX_VALUE * c))
        for k in range(2, c):
            np.add(y, xs[..., k : k + 1], out=y)
        return y
    c = xs.shape[1]
    return xs.sum(axis=1, keepdims=True, dtype=sum_dtype(_MAX_VALUE * c * s * s))


def _one_plane(view: np.ndarray) -> np.ndarray | None:
    """The single plane of a variant whose channels are one array repeated, else None."""
    if view.shape[-1] == 1 or view.strides[-1] == 0:
        return np.ascontiguousarray(view[..., :1])
    return None


def _check_pu_mse_args(
    truth: np.ndarray, variants: Sequence[np.ndarray], scales: Sequence[int]
) -> None:
    n, h, w, c = truth.shape
    for s in scales:
        check_scale(int(s), h)
        check_scale(int(s), w)
    for v in variants:
        if v.shape != truth.shape and v.shape != (n, h, w, 1):
            raise ValueError(
                f"variant shape {v.shape} differs from truth shape {truth.shape} "
                f"(and from the one-channel shape {(n, h, w, 1)})"
            )
    if truth.dtype != np.uint8 or any(v.dtype != np.uint8 for v in variants):
        raise TypeError("pu_mse_kernel needs uint8 images (exact integer arithmetic)")
    s = max((int(t) for t in scales), default=1)
    if 4 * s * s * h * w * c * _MAX_VALUE**2 > _INT64_MAX:
        raise ValueError(
            f"images of {h} x {w} x {c} at scale {s} are too large for exact int64 sums"
        )


def pu_mse_kernel(
    truth: np.ndarray, variants: Sequence[np.ndarray], scales: Sequence[int]
) -> np.ndarray:
    """MSE of PU(variant, s) against ``truth`` for every variant and scale, exactly.

    Parameters
    ----------
    truth : np.ndarray
        Shape ``(n, h, w, c)``, uint8: img_true.
    variants : sequence of np.ndarray
        Each uint8, shape ``(n, h, w, c)``, or ``(n, h, w, 1)`` for a plane repeated in every
        channel. ``truth`` itself (the same object) and arrays whose channel stride is 0 take
        cheaper exact paths (see the module docstring).
    scales : sequence of int
        Each a divisor of ``h`` and ``w``.

    Returns
    -------
    np.ndarray
        Shape ``(n, len(variants), len(scales))``, float64: each the float64 of an exact
        integer numerator divided by ``s**2 * h * w * c``.

    Examples
    --------
    >>> x = np.array([[0, 2], [4, 6]], dtype=np.uint8).reshape(1, 2, 2, 1)
    >>> pu_mse_kernel(x, [x], [1, 2])  # scale 2: every pixel becomes 3
    array([[[0., 5.]]])
    """
    _check_pu_mse_args(truth, variants, scales)
    scales = [int(s) for s in scales]
    n, h, w, c = truth.shape
    pixels = h * w * c
    x_sums = _block_sums(truth, scales)
    x2 = {1: _dot(truth, truth, _MAX_VALUE**2)}  # sum_b(Sx_b**2) by scale, filled on demand
    out = np.empty((n, len(variants), len(scales)), dtype=np.float64)
    for j, view in enumerate(variants):
        numerators = _numerators(truth, view, x_sums, x2, scales)
        for k, s in enumerate(scales):
            out[:, j, k] = numerators[k].astype(np.float64) / float(s * s * pixels)
    return out


def _truth_squares(x_sums: dict[int, np.ndarray], x2: dict[int, np.ndarray], s: int) -> np.ndarray:
    """``sum_b(Sx_b**2)`` at scale ``s``, computed once per batch."""
    if s not in x2:
        x2[s] = _dot(x_sums[s], x_sums[s], (_MAX_VALUE * s * s) ** 2)
    return x2[s]


def _numerators(
    truth: np.ndarray,
    view: np.ndarray,
    x_sums: dict[int, np.ndarray],
    x2: dict[int, np.ndarray],
    scales: list[int],
) -> list[np.ndarray]:
    """Exact int64 ``s**2 * P * MSE_s`` of one variant at each scale, each shape ``(n,)``."""
    c = truth.shape[-1]
    if view is truth:
        return [s * s * x2[1] - _truth_squares(x_sums, x2, s) for s in scales]
    out = []
    plane = _one_plane(view)
    if plane is not None:
        g_sums = _block_sums(plane, scales)
        for s in scales:
            g, vmax = g_sums[s], _MAX_VALUE * s * s
            cross = _dot(_channel_sums(x_sums, s), g, c * vmax * vmax)
            out.append(s * s * x2[1] - 2 * cross + c * _dot(g, g, vmax * vmax))
        return out
    v_sums = _block_sums(view, [t for t in scales if t > 1])
    for s in scales:
        if s == 1:  # sum((x - v)**2) directly: one pass over the pixels instead of two
            diff = np.subtract(truth, view, dtype=np.int16)
            out.append(_dot(diff, diff, _MAX_VALUE**2))
            continue
        v, vmax = v_sums[s], _MAX_VALUE * s * s
        cross = _dot(x_sums[s], v, vmax * vmax)
        out.append(s * s * x2[1] - 2 * cross + _dot(v, v, vmax * vmax))
    return out
