"""pupsnr_dask: how much image quality survives at each depth of a U-Net, at dataset scale."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray

from pupsnr_dask._version import __version__
from pupsnr_dask.advise import advise, advise_depths
from pupsnr_dask.cluster import compute, connect
from pupsnr_dask.experiment import SCALES, VARIANTS, build_psnr_cube, run_experiment
from pupsnr_dask.grid import pu_grid
from pupsnr_dask.ingest import IngestSummary, ingest_folder
from pupsnr_dask.kernels.image import color_score, load_resized
from pupsnr_dask.kernels.metrics import mse_kernel, psnr_from_mse, psnr_kernel, pu_mse_kernel
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel, pu_kernel
from pupsnr_dask.query import (
    by_split,
    extremes,
    select_split,
    summarize,
    summary_table,
    with_image_coords,
)
from pupsnr_dask.schema import StoreError
from pupsnr_dask.store.zarr_io import open_store
from pupsnr_dask.transforms import gray, mosaic, pu


def ingest(*args: Any, **kwargs: Any) -> IngestSummary:
    """Deprecated alias of :func:`ingest_folder`, kept for one release.

    ``pupsnr_dask.ingest`` names this function, as it always did; the module is reached as
    ``import pupsnr_dask.ingest`` / ``from pupsnr_dask.ingest import ...``.
    """
    warnings.warn(
        "pupsnr_dask.ingest() is deprecated: use ingest_folder", DeprecationWarning, stacklevel=2
    )
    return ingest_folder(*args, **kwargs)


def run(*args: Any, **kwargs: Any) -> xarray.Dataset:
    """Deprecated alias of :func:`run_experiment`, kept for one release."""
    warnings.warn(
        "pupsnr_dask.run() is deprecated: use run_experiment", DeprecationWarning, stacklevel=2
    )
    return run_experiment(*args, **kwargs)


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
    "ingest_folder",
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
    "run_experiment",
    "select_split",
    "summarize",
    "summary_table",
    "with_image_coords",
]
