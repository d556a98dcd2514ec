"""The lazy, block-wise Dask wrappers of the image kernels (:mod:`pupsnr_dask.kernels.variants`).

Every wrapper is one ``map_blocks`` over a Dask array chunked along the image axis only, with
``dtype=`` and ``meta=`` given, so a chunk is a handful of tasks whatever the scale and building
the graph computes nothing.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.base import tokenize

from pupsnr_dask.kernels.blocks import check_scale
from pupsnr_dask.kernels.variants import MOSAIC_SCALE, gray_kernel, mosaic_kernel, pu_kernel


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
    return da.map_blocks(
        pu_kernel,
        images,
        scale,
        dtype=np.float64,
        meta=np.empty((0, 0, 0, 0), np.float64),
        name=name,
    )


def gray(images: da.Array) -> da.Array:
    """Lazy gray variant, one task per chunk; see :func:`gray_kernel`."""
    _check_lazy(images)
    name = f"pupsnr-gray-{tokenize(images)}"
    return da.map_blocks(
        gray_kernel, images, dtype=np.uint8, meta=np.empty((0, 0, 0, 0), np.uint8), name=name
    )


def mosaic(images: da.Array) -> da.Array:
    """Lazy mosaic variant, one task per chunk; see :func:`mosaic_kernel`."""
    _check_lazy(images)
    check_scale(MOSAIC_SCALE, images.shape[1])
    name = f"pupsnr-mosaic-{tokenize(images)}"
    return da.map_blocks(
        mosaic_kernel, images, dtype=np.uint8, meta=np.empty((0, 0, 0, 0), np.uint8), name=name
    )
