"""The storage contract: dimension, variable, coordinate and attribute names; open and validate.

Two kinds of store are written by pupsnr_dask, both Zarr groups that ``xr.open_zarr`` opens:

``images`` store (written by :func:`pupsnr_dask.ingest.ingest`)::

    images   (image, y, x, channel)  uint8     img_true, chunked along ``image`` only
    image    (image,)                int64     stable index of each image
    source   (image,)                str       path relative to SRC, "/" separators
    color_score (image,)             float64   mean of the 3x3 RGB correlation matrix
    split    (image,)                str       "train" or "test"
    original_width, original_height (image,)   int64

``psnr`` store (written by :func:`pupsnr_dask.experiment.run`)::

    psnr     (image, variant, scale) float64   dB, +inf for identical images
    mse      (image, variant, scale) float64   mean over H x W x C against img_true
    variant  (variant,)              str       "true", "gray", "mosaic", ...
    scale    (scale,)                int64     1, 2, 4, 8, 16, 32
    resolution (scale,)              int64     size // scale
    source, split (image,)                     carried over from the images store
"""

from __future__ import annotations

import json
from typing import Any, Literal

import xarray as xr

IMAGE = "image"
Y = "y"
X = "x"
CHANNEL = "channel"
VARIANT = "variant"
SCALE = "scale"

IMAGE_DIMS = (IMAGE, Y, X, CHANNEL)
CUBE_DIMS = (IMAGE, VARIANT, SCALE)

IMAGES = "images"
PSNR = "psnr"
MSE = "mse"

SOURCE = "source"
COLOR_SCORE = "color_score"
SPLIT = "split"
ORIGINAL_WIDTH = "original_width"
ORIGINAL_HEIGHT = "original_height"
RESOLUTION = "resolution"
IMAGE_COORDS = (SOURCE, COLOR_SCORE, SPLIT, ORIGINAL_WIDTH, ORIGINAL_HEIGHT)

SPLITS = ("train", "test")
DATA_RANGE = 255

KIND_ATTR = "pupsnr_kind"
VERSION_ATTR = "pupsnr_version"
REJECTED_ATTR = "rejected"

StoreKind = Literal["images", "psnr"]


class StoreError(ValueError):
    """A store exists but is not a valid pupsnr store of the expected kind."""


def parse_storage_options(storage_options: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """Return fsspec storage options from a dict, a JSON string, or None."""
    if storage_options is None or isinstance(storage_options, dict):
        return storage_options
    try:
        parsed = json.loads(storage_options)
    except json.JSONDecodeError as err:
        raise ValueError(f"storage_options must be a JSON object, got {storage_options!r}") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"storage_options must be a JSON object, got {storage_options!r}")
    return parsed


def open_store(
    store: str,
    kind: StoreKind,
    *,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Open a pupsnr store lazily and check that it is of the expected kind.

    Parameters
    ----------
    store : str
        Path or fsspec URL of the Zarr store.
    kind : {"images", "psnr"}
        The kind of store expected.
    storage_options : dict, optional
        fsspec options for object storage (endpoint, credentials).

    Returns
    -------
    xr.Dataset
        The store's dataset, dask-backed (lazy).

    Raises
    ------
    FileNotFoundError
        When nothing is stored at ``store``.
    StoreError
        When the store is not a pupsnr store of that kind, or its layout is wrong.
    """
    if kind not in ("images", "psnr"):
        raise ValueError(f"kind must be one of ('images', 'psnr'), got {kind!r}")
    if not store_exists(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    try:
        ds = xr.open_zarr(store, storage_options=storage_options, consolidated=None)
    except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
        raise StoreError(f"{store!r} is not a readable Zarr store: {err}") from err
    validate(ds, kind, name=store)
    return ds


def validate(ds: xr.Dataset, kind: StoreKind, *, name: str = "dataset") -> None:
    """Raise :class:`StoreError` unless ``ds`` follows the layout of a ``kind`` store."""
    found = ds.attrs.get(KIND_ATTR)
    if found != kind:
        what = f"a pupsnr {found!r} store" if found else "not a pupsnr store"
        raise StoreError(f"{name!r} is {what}; expected a pupsnr {kind!r} store")
    if kind == "images":
        _check_var(ds, IMAGES, IMAGE_DIMS, "uint8", name)
        if ds[IMAGES].sizes[CHANNEL] != 3:
            raise StoreError(f"{name!r}: {IMAGES} must have 3 channels")
        if ds[IMAGES].sizes[Y] != ds[IMAGES].sizes[X]:
            raise StoreError(f"{name!r}: {IMAGES} must be square")
        coords: tuple[str, ...] = IMAGE_COORDS
    else:
        _check_var(ds, PSNR, CUBE_DIMS, "float64", name)
        _check_var(ds, MSE, CUBE_DIMS, "float64", name)
        coords = (VARIANT, SCALE, RESOLUTION, SOURCE, SPLIT)
    missing = [c for c in coords if c not in ds.coords]
    if missing:
        raise StoreError(f"{name!r} lacks coordinates {missing}")


def _check_var(ds: xr.Dataset, var: str, dims: tuple[str, ...], dtype: str, name: str) -> None:
    if var not in ds.data_vars:
        raise StoreError(f"{name!r} has no variable {var!r}")
    if ds[var].dims != dims:
        raise StoreError(f"{name!r}: {var} has dims {ds[var].dims}, expected {dims}")
    if ds[var].dtype != dtype:
        raise StoreError(f"{name!r}: {var} has dtype {ds[var].dtype}, expected {dtype}")


def write_store(
    ds: xr.Dataset,
    store: str,
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> None:
    """Write a lazy dataset to a new Zarr store (refusing to overwrite), computing it.

    Metadata is consolidated so that a plain ``xr.open_zarr(store)`` opens it in one read.
    """
    import warnings

    from pupsnr_dask.cluster import compute

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        delayed = ds.to_zarr(
            store, mode="w-", compute=False, consolidated=True, storage_options=storage_options
        )
        compute(delayed, progress=progress)


def remove_store(store: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete ``store`` (a path or fsspec URL) and everything below it, if it exists."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def store_exists(store: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when something exists at ``store`` (a path or fsspec URL)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
    return bool(fs.exists(path))
