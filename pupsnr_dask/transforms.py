"""Image transforms: NumPy kernels and their lazy, block-wise Dask wrappers.

Every kernel takes and returns a batch of whole images, shape ``(n, size, size, 3)``; every
lazy wrapper is one ``map_blocks`` over a Dask array chunked along the image axis only, so a
chunk is a handful of tasks whatever the scale.

The PU transform at scale ``s`` (average-Pool, then Upsample by nearest neighbour)::

    a a b b              A A B B       A = mean(a-block), B = mean(b-block), ...
    a a b b   pool s=2   A A B B
    c c d d  --------->  C C D D       each s x s block replaced by its mean
    c c d d              C C D D
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.base import tokenize
from PIL import Image, ImageFilter

MOSAIC_SCALE = 16
MOSAIC_BLUR_RADIUS = 4


def check_scale(scale: int, size: int) -> None:
    """Raise ValueError unless ``scale`` is a positive integer dividing ``size``."""
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer):
        raise TypeError(f"scale must be an int, got {type(scale).__name__}")
    if scale < 1 or size % scale:
        raise ValueError(
            f"scale must be a positive divisor of the image size {size}, got {scale!r}"
        )


def sum_dtype(bound: int) -> np.dtype:
    """The smallest of uint16, int32 and int64 that holds every integer in ``[0, bound]``.

    Examples
    --------
    >>> sum_dtype(255 * 16 * 16), sum_dtype(255 * 32 * 32)
    (dtype('uint16'), dtype('int32'))
    """
    if bound <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if bound <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def fold_blocks(a: np.ndarray, f: int, dtype: np.dtype, *, planar: bool) -> np.ndarray:
    """Exact integer sums of ``f x f`` blocks, returned channel-planar ``(n, c, h/f, w/f)``.

    Parameters
    ----------
    a : np.ndarray
        Integer images, ``(n, c, h, w)`` when ``planar`` else ``(n, h, w, c)``; ``h`` and
        ``w`` divisible by ``f``.
    f : int
        Block side, at least 2.
    dtype : np.dtype
        Integer type that holds every block sum (see :func:`sum_dtype`): no overflow check.
    planar : bool
        Layout of ``a``.

    Returns
    -------
    np.ndarray
        ``(n, c, h/f, w/f)``, ``dtype``, C-contiguous.

    Notes
    -----
    Pairs of whole rows are added first (long contiguous runs), then columns at stride ``f``
    straight into the planar output. A ``reshape(...).sum(axis=(2, 4))`` gives the same
    integers but is ~10x slower, its inner reduction running over 3-element strides.
    """
    if planar:
        n, c, h, w = a.shape
        rows = a.reshape(n, c, h // f, f, w)
        acc = np.add(rows[:, :, :, 0], rows[:, :, :, 1], dtype=dtype)
        for k in range(2, f):
            np.add(acc, rows[:, :, :, k], out=acc)
        cols = [acc[..., k::f] for k in range(f)]
    else:
        n, h, w, c = a.shape
        rows = a.reshape(n, h // f, f, w * c)
        acc = np.add(rows[:, :, 0], rows[:, :, 1], dtype=dtype)
        for k in range(2, f):
            np.add(acc, rows[:, :, k], out=acc)
        blocks = acc.reshape(n, h // f, w // f, f, c)
        cols = [blocks[:, :, :, k, :].transpose(0, 3, 1, 2) for k in range(f)]
    out = np.empty((n, c, h // f, w // f), dtype=dtype)
    np.add(cols[0], cols[1], out=out)
    for col in cols[2:]:
        np.add(out, col, out=out)
    return out


def block_mean(images: np.ndarray, scale: int) -> np.ndarray:
    """Average-pool non-overlapping ``scale x scale`` blocks of each channel.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, c)``, any real dtype; ``h`` and ``w`` divisible by ``scale``.
    scale : int
        Block side in pixels.

    Returns
    -------
    np.ndarray
        Shape ``(n, h // scale, w // scale, c)``, float64, not rounded.

    Examples
    --------
    >>> img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    >>> block_mean(img, 2)[0, :, :, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    n, h, w, c = images.shape
    check_scale(scale, h)
    check_scale(scale, w)
    if scale > 1 and images.dtype in (np.uint8, np.uint16):
        # Exact integer block sums (fast path); the float64 of each is the same number the
        # float64 sum below gives, so the means are bit-identical.
        bound = np.iinfo(images.dtype).max * scale * scale
        sums = fold_blocks(images, scale, sum_dtype(bound), planar=False)
        out = np.empty((n, h // scale, w // scale, c))
        np.divide(sums.transpose(0, 2, 3, 1), float(scale * scale), out=out)
        return out
    blocks = images.reshape(n, h // scale, scale, w // scale, scale, c)
    # Block sums of integers are exact in float64, and scale**2 is a power of two for the
    # usual scales, so these means are exact: nothing depends on summation order.
    return blocks.sum(axis=(2, 4), dtype=np.float64) / float(scale * scale)


def upsample_nearest(pooled: np.ndarray, scale: int) -> np.ndarray:
    """Repeat each pixel ``scale x scale`` times: ``(n, h, w, c) -> (n, h*s, w*s, c)``.

    Columns are repeated first (on ``1/scale`` of the output), then whole rows are copied:
    ~10x faster than one broadcast over both axes, whose inner copies are ``c`` values long.
    """
    n, h, w, c = pooled.shape
    rows = np.broadcast_to(pooled[:, :, :, None, :], (n, h, w, scale, c)).reshape(n, h, 1, -1)
    return np.broadcast_to(rows, (n, h, scale, w * scale * c)).reshape(n, h * scale, w * scale, c)


def pu_kernel(images: np.ndarray, scale: int) -> np.ndarray:
    """PU transform of a batch: average-pool by ``scale``, nearest-neighbour back up.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, c)``, any real dtype.
    scale : int
        Pooling factor, a divisor of ``h`` and ``w``; 1 is the identity (as float64).

    Returns
    -------
    np.ndarray
        Same shape as ``images``, float64, not rounded.

    Examples
    --------
    >>> img = np.array([[0, 2], [4, 6]], dtype=np.uint8).reshape(1, 2, 2, 1)
    >>> pu_kernel(img, 2)[0, :, :, 0]
    array([[3., 3.],
           [3., 3.]])
    """
    return upsample_nearest(block_mean(images, scale), scale)


def gray_kernel(images: np.ndarray) -> np.ndarray:
    """Grayscale by Pillow's ``convert("L")`` (ITU-R 601-2 luma), kept as 3 equal channels.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, 3)``, uint8 RGB.

    Returns
    -------
    np.ndarray
        Shape ``(n, h, w, 3)``, uint8, a read-only view in which the three channels are one
        luma plane (channel stride 0): nothing is copied three times, and
        :func:`pupsnr_dask.metrics.pu_mse_kernel` sums that plane once. Use ``np.array(...)``
        for a writable copy.
    """
    luma = np.empty((*images.shape[:3], 1), dtype=np.uint8)
    for i, img in enumerate(images):
        luma[i, :, :, 0] = Image.fromarray(np.ascontiguousarray(img), mode="RGB").convert("L")
    return np.broadcast_to(luma, images.shape)


def mosaic_kernel(images: np.ndarray) -> np.ndarray:
    """Mosaic: PU at scale 16 rounded to uint8, then Pillow ``GaussianBlur(radius=4)``.

    Rounding is to the nearest integer, ties to even (``np.rint``).

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, 3)``, uint8 RGB, ``h`` and ``w`` divisible by 16.

    Returns
    -------
    np.ndarray
        Shape ``(n, h, w, 3)``, uint8.
    """
    # Round the pooled means, then upsample the uint8 values: the same pixels as rounding
    # pu_kernel's float64 image, without building it.
    pooled = np.rint(block_mean(images, MOSAIC_SCALE)).astype(np.uint8)
    up = upsample_nearest(pooled, MOSAIC_SCALE)
    blur = ImageFilter.GaussianBlur(radius=MOSAIC_BLUR_RADIUS)
    out = np.empty_like(images)
    for i, img in enumerate(up):
        out[i] = np.asarray(Image.fromarray(img, mode="RGB").filter(blur))
    return out


def true_kernel(images: np.ndarray) -> np.ndarray:
    """The ``true`` variant: img_true itself."""
    return images


def _check_lazy(images: da.Array) -> None:
    if not isinstance(images, da.Array):
        raise TypeError(f"images must be a dask array, got {type(images).__name__}")
    if images.ndim != 4 or any(len(c) != 1 for c in images.chunks[1:]):
        raise ValueError(
            "images must be 4-D (image, y, x, channel) and chunked along the image axis only, "
            f"got chunks {images.chunks}"
        )


def pu(images: da.Array, scale: int) -> da.Array:
    """Lazy PU transform, one task per chunk; see :func:`pu_kernel`.

    Parameters
    ----------
    images : dask.array.Array
        Shape ``(n, h, w, c)``, chunked along the image axis only.
    scale : int
        Divisor of ``h``.

    Returns
    -------
    dask.array.Array
        Same shape and chunks, float64, lazy.
    """
    _check_lazy(images)
    check_scale(scale, images.shape[1])
    name = f"pupsnr-pu{scale}-{tokenize(images, scale)}"
    return da.map_blocks(pu_kernel, images, scale, dtype=np.float64, name=name)


def gray(images: da.Array) -> da.Array:
    """Lazy gray variant, one task per chunk; see :func:`gray_kernel`."""
    _check_lazy(images)
    name = f"pupsnr-gray-{tokenize(images)}"
    return da.map_blocks(gray_kernel, images, dtype=np.uint8, name=name)


def mosaic(images: da.Array) -> da.Array:
    """Lazy mosaic variant, one task per chunk; see :func:`mosaic_kernel`."""
    _check_lazy(images)
    check_scale(MOSAIC_SCALE, images.shape[1])
    name = f"pupsnr-mosaic-{tokenize(images)}"
    return da.map_blocks(mosaic_kernel, images, dtype=np.uint8, name=name)
