"""The PU grid of one image as data: its variants, PU-transformed at every scale.

The cells of the grid (rows: variants, columns: scales, "original" = scale 1)::

                original   scale 2   scale 4   ...   scale 32
    true        [img]      [PU 2]    [PU 4]          [PU 32]
    gray        [gray]     [PU 2]    [PU 4]          [PU 32]
    mosaic      [mosaic]   [PU 2]    [PU 4]          [PU 32]

:func:`pu_grid` reads one image of an images store; :func:`pu_cells` computes the cells of an
image in memory. Drawing them is :mod:`pupsnr_dask.report.plots`' job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.experiment import SCALES, VARIANTS, resolve_selection
from pupsnr_dask.kernels.metrics import psnr_kernel
from pupsnr_dask.kernels.variants import pu_kernel
from pupsnr_dask.query import strings
from pupsnr_dask.store.zarr_io import open_store


def find_image(ds: xr.Dataset, image: int | str) -> int:
    """Position along ``image`` of an image given by its index or its source path.

    Parameters
    ----------
    ds : xr.Dataset
        An images or results store.
    image : int or str
        The image's stable index (``ds.image``), its ``source`` path, or a suffix of the path
        after a ``/`` that matches one image only (``"coffee.png"``). A string of digits is an
        index.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        When no image, or more than one, matches.
    """
    index = ds[schema.IMAGE].values
    key = image.strip() if isinstance(image, str) else image
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        hits = np.flatnonzero(index == key)
        if hits.size:
            return int(hits[0])
        raise ValueError(
            f"image must be an index in {int(index.min())}..{int(index.max())} or a source path, "
            f"got {image!r}"
        )
    if not isinstance(key, str):
        raise TypeError(f"image must be an int or a str, got {type(image).__name__}")
    sources = strings(ds[schema.SOURCE].values)
    hits = np.flatnonzero(sources == key)
    if hits.size == 0:
        hits = np.flatnonzero(np.char.endswith(sources, "/" + key.lstrip("/")))
    if hits.size == 1:
        return int(hits[0])
    if hits.size > 1:
        some = ", ".join(repr(str(s)) for s in sources[hits[:2]])
        raise ValueError(f"image {image!r} matches {hits.size} sources, e.g. {some}")
    examples = ", ".join(repr(str(s)) for s in sources[:3])
    raise ValueError(
        f"image {image!r} is neither an index nor a source in the store (sources: {examples}, ...)"
    )


def pu_grid(
    images: xr.Dataset | str,
    image: int | str,
    variants: Sequence[str] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
) -> xr.DataArray:
    """The PU-transformed variants of one image, the cells of the visual grid.

    Parameters
    ----------
    images : xr.Dataset or str
        An images store (a dataset or its path).
    image : int or str
        The image, as :func:`find_image` takes it.
    variants : sequence of str
        Rows, keys of :data:`pupsnr_dask.experiment.VARIANTS`.
    scales : sequence of int
        Columns; scale 1 (the variant itself, "original") is put first whether listed or not.

    Returns
    -------
    xr.DataArray
        ``pu``, uint8, dims ``(variant, scale, y, x, channel)``: ``rint(pu_kernel(variant(img),
        scale))`` clipped to 0..255, in memory. Coordinates: ``resolution`` by scale and
        ``psnr`` (dB, of the unrounded transform against img_true, as in the results store) by
        variant x scale; attrs ``image``, ``source``, ``split``.
    """
    if isinstance(images, str):
        images = open_store(images, "images")
    schema.validate(images, "images", name="images")
    pos = find_image(images, image)
    one = images.isel({schema.IMAGE: pos})
    (pixels, coords) = compute(
        one[schema.IMAGES], one.reset_coords()[list(schema.IMAGE_COORDS)], progress=False
    )
    attrs = {
        "image": int(images[schema.IMAGE].values[pos]),
        "source": str(coords[schema.SOURCE].values),
        "split": str(coords[schema.SPLIT].values),
        "color_score": float(coords[schema.COLOR_SCORE].values),
    }
    return pu_cells(np.asarray(pixels.values), variants, scales, attrs=attrs)


def pu_cells(
    img_true: np.ndarray,
    variants: Sequence[str] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
    *,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """The cells of the PU grid of one image in memory; see :func:`pu_grid`.

    Parameters
    ----------
    img_true : np.ndarray
        Shape ``(size, size, 3)``, uint8.
    variants, scales : sequence
        As :func:`pu_grid`.
    attrs : dict, optional
        Attributes of the result (image, source, ...). Its ``source`` is the key that seeds
        ``noise<sigma>`` inputs, as in the run (``""`` when missing).
    """
    img_true = np.asarray(img_true)
    if img_true.ndim != 3 or img_true.shape[2] != 3 or img_true.dtype != np.uint8:
        raise ValueError(
            "img_true must be a (size, size, 3) uint8 image, got shape "
            f"{img_true.shape} {img_true.dtype}"
        )
    size = img_true.shape[0]
    scales = (1, *[int(s) for s in scales if int(s) != 1])
    specs, scales, _ = resolve_selection(variants, scales, size)
    variants = tuple(spec.name for spec in specs)
    keys = [str((attrs or {}).get(schema.SOURCE, ""))]
    batch = img_true[None]
    cells = np.empty((len(variants), len(scales), size, size, 3), dtype=np.uint8)
    psnr = np.empty((len(variants), len(scales)))
    for j, spec in enumerate(specs):
        view = spec.apply(batch, keys)
        for k, s in enumerate(scales):
            pooled = pu_kernel(view, s)
            psnr[j, k] = psnr_kernel(batch, pooled)[0]
            cells[j, k] = np.clip(np.rint(pooled[0]), 0, 255).astype(np.uint8)
    return xr.DataArray(
        cells,
        dims=(schema.VARIANT, schema.SCALE, schema.Y, schema.X, schema.CHANNEL),
        coords={
            schema.VARIANT: list(variants),
            schema.SCALE: np.array(scales, dtype=np.int64),
            schema.RESOLUTION: (schema.SCALE, np.array([size // s for s in scales])),
            schema.PSNR: ((schema.VARIANT, schema.SCALE), psnr, {"units": "dB"}),
        },
        name="pu",
        attrs=dict(attrs or {}),
    )
