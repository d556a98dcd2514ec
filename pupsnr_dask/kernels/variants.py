"""The variants of img_true (``true``, ``gray``, ``mosaic``) and the PU transform, as kernels.

Every kernel takes and returns a batch of whole images, shape ``(n, size, size, 3)``; the
lazy wrappers are in :mod:`pupsnr_dask.transforms`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from pupsnr_dask.kernels.blocks import block_mean, upsample_nearest

MOSAIC_SCALE = 16


MOSAIC_BLUR_RADIUS = 4


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
