"""Exact block arithmetic on batches of images: the pooling half of the PU transform.

The PU transform at scale ``s`` (average-Pool, then Upsample by nearest neighbour)::

    a a b b              A A B B       A = mean(a-block), B = mean(b-block), ...
    a a b b   pool s=2   A A B B
    c c d d  --------->  C C D D       each s x s block replaced by its mean
    c c d d              C C D D

Block sums are integers in the smallest dtype that holds them (:func:`sum_dtype`), so every
result is exact whatever order NumPy adds in.
"""

from __future__ import annotations

import numpy as np


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
