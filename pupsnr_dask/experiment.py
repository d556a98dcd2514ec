"""The experiment as data: variants, scales, the lazy PSNR cube, and its summaries.

``build_psnr_cube`` turns the images store into a lazy ``(image, variant, scale)`` cube of MSE
and PSNR; ``run`` writes it to a Zarr store; ``summarize`` reduces it over images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from pupsnr_dask import schema
from pupsnr_dask.metrics import mse_kernel, psnr_from_mse, pu_mse_kernel
from pupsnr_dask.transforms import check_scale, gray_kernel, mosaic_kernel, pu_kernel, true_kernel

Kernel = Callable[[np.ndarray], np.ndarray]

#: The inputs a U-Net would see, each a NumPy kernel on a batch of uint8 images.
VARIANTS: dict[str, Kernel] = {
    "true": true_kernel,
    "gray": gray_kernel,
    "mosaic": mosaic_kernel,
}
#: PU scales: 256 -> 256, 128, 64, 32, 16, 8 pixels (U-Net depth 0 ... 5).
SCALES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
METHODS = ("moments", "literal")
Method = Literal["moments", "literal"]
Split = Literal["train", "test", "all"]


def check_selection(
    variants: Sequence[str], scales: Sequence[int], size: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validate variant names and scales against the tables and the image size."""
    variants = tuple(variants)
    scales = tuple(int(s) for s in scales)
    if not variants:
        raise ValueError("variants must name at least one variant")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {v!r}")
    if not scales:
        raise ValueError("scales must name at least one scale")
    for s in scales:
        check_scale(s, size)
    if len(set(variants)) != len(variants) or len(set(scales)) != len(scales):
        raise ValueError(f"variants and scales must not repeat, got {variants} and {scales}")
    return variants, scales


def cube_kernel(
    images: np.ndarray, variants: Sequence[str], scales: Sequence[int], method: Method
) -> np.ndarray:
    """MSE of every (variant, scale) for a batch: ``(n, h, w, 3)`` uint8 -> ``(n, V, S)``."""
    views = [VARIANTS[v](images) for v in variants]
    if method == "moments":
        return pu_mse_kernel(images, views, scales)
    out = np.empty((len(images), len(views), len(scales)))
    for j, view in enumerate(views):
        for k, s in enumerate(scales):
            out[:, j, k] = mse_kernel(images, pu_kernel(view, s))
    return out


def build_psnr_cube(
    images: xr.Dataset,
    variants: Sequence[str] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
    *,
    method: Method = "moments",
) -> xr.Dataset:
    """Lazy cube of MSE and PSNR by image x variant x scale.

    Parameters
    ----------
    images : xr.Dataset
        An images store (see :mod:`pupsnr_dask.schema`), lazy.
    variants : sequence of str
        Keys of :data:`VARIANTS`.
    scales : sequence of int
        PU scales, each dividing the image size.
    method : {"moments", "literal"}
        ``"moments"``: exact block sums, one pass (default); ``"literal"``: upsample and
        subtract, the reference.

    Returns
    -------
    xr.Dataset
        ``psnr`` and ``mse``, float64, dims ``(image, variant, scale)``, dask-backed, one task
        per image chunk. Nothing is computed.
    """
    schema.validate(images, "images")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    size = images.sizes[schema.Y]
    variants, scales = check_selection(variants, scales, size)
    pixels = images[schema.IMAGES].data
    if not isinstance(pixels, da.Array):
        pixels = da.from_array(pixels, chunks=(schema_chunk(len(pixels)), -1, -1, -1))
    pixels = pixels.rechunk({1: -1, 2: -1, 3: -1})
    mse = da.blockwise(
        cube_kernel,
        "ivs",
        pixels,
        "iyxc",
        new_axes={"v": len(variants), "s": len(scales)},
        concatenate=True,
        dtype=np.float64,
        variants=variants,
        scales=scales,
        method=method,
        name=f"pupsnr-mse-{tokenize(pixels, variants, scales, method)}",
    )
    psnr = mse.map_blocks(psnr_from_mse, dtype=np.float64, name=f"pupsnr-psnr-{tokenize(mse)}")
    return _label_cube(images, psnr, mse, variants, scales, size, method)


def schema_chunk(n: int) -> int:
    """Default images per chunk for in-memory input."""
    return max(1, min(n, 32))


def _label_cube(
    images: xr.Dataset,
    psnr: da.Array,
    mse: da.Array,
    variants: tuple[str, ...],
    scales: tuple[int, ...],
    size: int,
    method: str,
) -> xr.Dataset:
    from pupsnr_dask import __version__

    coords = {
        schema.IMAGE: images[schema.IMAGE].values,
        schema.VARIANT: np.array(variants, dtype=object),
        schema.SCALE: np.array(scales, dtype=np.int64),
        schema.RESOLUTION: (schema.SCALE, np.array([size // s for s in scales], dtype=np.int64)),
        schema.SOURCE: (schema.IMAGE, images[schema.SOURCE].values),
        schema.SPLIT: (schema.IMAGE, images[schema.SPLIT].values),
    }
    ds = xr.Dataset(
        {
            schema.PSNR: (schema.CUBE_DIMS, psnr, {"units": "dB", "long_name": "PSNR"}),
            schema.MSE: (schema.CUBE_DIMS, mse, {"long_name": "mean squared error"}),
        },
        coords=coords,
    )
    ds.attrs = {
        schema.KIND_ATTR: "psnr",
        schema.VERSION_ATTR: __version__,
        "size": size,
        "method": method,
        "data_range": schema.DATA_RANGE,
        "mse_definition": "mean over H x W x C of (PU(variant, scale) - img_true)**2, float64",
        "psnr_definition": "10*log10(data_range**2 / mse) in dB; +inf for identical images",
        "pu_definition": "average-pool scale x scale blocks (float), nearest-neighbour upsample",
        "images_store_attrs": {k: v for k, v in images.attrs.items() if k != schema.REJECTED_ATTR},
    }
    return ds


def run(
    store: str,
    results: str,
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
    method: Method = "moments",
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Compute the PSNR cube of an images store and write it to ``results``.

    Returns
    -------
    xr.Dataset
        The results store, reopened lazily.
    """
    images = schema.open_store(store, "images", storage_options=storage_options)
    cube = build_psnr_cube(images, variants, scales, method=method)
    if schema.store_exists(results, storage_options):
        if not overwrite:
            raise FileExistsError(f"results {results!r} already exist (use --overwrite)")
        schema.remove_store(results, storage_options)
    schema.write_store(cube, results, storage_options=storage_options, progress=progress)
    return schema.open_store(results, "psnr", storage_options=storage_options)


def select_split(results: xr.Dataset, split: Split = "all") -> xr.Dataset:
    """The images of one split ("train", "test") or all of them."""
    if split == "all":
        return results
    if split not in schema.SPLITS:
        raise ValueError(f"split must be one of {(*schema.SPLITS, 'all')}, got {split!r}")
    return results.isel({schema.IMAGE: np.flatnonzero(results[schema.SPLIT].values == split)})


def summarize(results: xr.Dataset, split: Split = "all") -> xr.Dataset:
    """Dataset statistics by variant x scale, computed eagerly.

    Returns
    -------
    xr.Dataset
        Dims ``(variant, scale)``: ``mean_psnr_db`` (mean of per-image PSNR, the published
        figure; +inf when any image is identical), ``std_psnr_db``, ``psnr_of_mean_mse_db``,
        ``n_images``, ``n_infinite``.
    """
    sel = select_split(results, split)
    psnr = sel[schema.PSNR].load()
    mse = sel[schema.MSE].load()
    n = sel.sizes[schema.IMAGE]
    if n == 0:
        raise ValueError(f"no images in split {split!r}")
    with np.errstate(invalid="ignore"):
        out = xr.Dataset(
            {
                "mean_psnr_db": psnr.mean(schema.IMAGE),
                "std_psnr_db": psnr.std(schema.IMAGE, ddof=1)
                if n > 1
                else psnr.mean(schema.IMAGE) * np.nan,
                "psnr_of_mean_mse_db": xr.apply_ufunc(psnr_from_mse, mse.mean(schema.IMAGE)),
                "n_infinite": np.isinf(psnr).sum(schema.IMAGE),
            }
        )
    out["n_images"] = n
    out.attrs = {"split": split, "units": "dB"}
    return out.drop_vars([c for c in (schema.SOURCE, schema.SPLIT) if c in out.coords])
