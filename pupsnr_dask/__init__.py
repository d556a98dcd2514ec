"""pupsnr_dask: how much image quality survives at each depth of a U-Net, at dataset scale."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray

try:
    __version__ = version("pupsnr-dask")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

from pupsnr_dask.advise import advise, advise_depths
from pupsnr_dask.cluster import compute, connect
from pupsnr_dask.experiment import SCALES, VARIANTS, build_psnr_cube, run
from pupsnr_dask.grid import pu_grid
from pupsnr_dask.ingest import color_score, ingest, load_resized
from pupsnr_dask.metrics import mse_kernel, psnr_from_mse, psnr_kernel, pu_mse_kernel
from pupsnr_dask.query import (
    by_split,
    extremes,
    select_split,
    summarize,
    summary_table,
    with_image_coords,
)
from pupsnr_dask.schema import StoreError, open_store
from pupsnr_dask.transforms import gray, gray_kernel, mosaic, mosaic_kernel, pu, pu_kernel


def open_images(
    store: str, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> xarray.Dataset:
    """Open an images store lazily (see :mod:`pupsnr_dask.schema`); fsspec ``storage_options``."""
    return open_store(store, "images", storage_options=_options(storage_options, kwargs))


def open_results(
    store: str, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> xarray.Dataset:
    """Open a PSNR results store lazily (see :mod:`pupsnr_dask.schema`); fsspec options."""
    return open_store(store, "psnr", storage_options=_options(storage_options, kwargs))


def _options(options: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``storage_options``, or the deprecated keyword spelling of them (with a warning)."""
    if kwargs and options is not None:
        raise TypeError("give storage_options={...} or keyword options, not both")
    if kwargs:
        warnings.warn("pass fsspec options as storage_options={...}; keyword options are "
                      "deprecated", DeprecationWarning, stacklevel=3)  # fmt: skip
    return options if options is not None else kwargs or None


__all__ = [
    "SCALES",
    "VARIANTS",
    "StoreError",
    "__version__",
    "advise",
    "advise_depths",
    "build_psnr_cube",
    "by_split",
    "color_score",
    "compute",
    "connect",
    "extremes",
    "gray",
    "gray_kernel",
    "ingest",
    "load_resized",
    "mosaic",
    "mosaic_kernel",
    "mse_kernel",
    "open_images",
    "open_results",
    "open_store",
    "psnr_from_mse",
    "psnr_kernel",
    "pu",
    "pu_grid",
    "pu_kernel",
    "pu_mse_kernel",
    "run",
    "select_split",
    "summarize",
    "summary_table",
    "with_image_coords",
]
