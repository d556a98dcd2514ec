"""pupsnr_dask: how much image quality survives at each depth of a U-Net, at dataset scale."""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray

    from pupsnr_dask.ingest import IngestSummary

from pupsnr_dask._version import __version__

#: The public names, by the module that defines them. They are imported on first use
#: (PEP 562), so that ``import pupsnr_dask`` -- and the ``pupsnr`` command's ``--help`` and
#: argument errors -- cost no dask, xarray or zarr import.
_EXPORTS: dict[str, str] = {
    "advise": "pupsnr_dask.advise",
    "advise_depths": "pupsnr_dask.advise",
    "compute": "pupsnr_dask.cluster",
    "connect": "pupsnr_dask.cluster",
    "SCALES": "pupsnr_dask.experiment",
    "VARIANTS": "pupsnr_dask.experiment",
    "build_psnr_cube": "pupsnr_dask.experiment",
    "run_experiment": "pupsnr_dask.experiment",
    "pu_grid": "pupsnr_dask.grid",
    "IngestSummary": "pupsnr_dask.ingest",
    "ingest_folder": "pupsnr_dask.ingest",
    "color_score": "pupsnr_dask.kernels.image",
    "load_resized": "pupsnr_dask.kernels.image",
    "mse_kernel": "pupsnr_dask.kernels.metrics",
    "psnr_from_mse": "pupsnr_dask.kernels.metrics",
    "psnr_kernel": "pupsnr_dask.kernels.metrics",
    "pu_mse_kernel": "pupsnr_dask.kernels.metrics",
    "gray_kernel": "pupsnr_dask.kernels.variants",
    "mosaic_kernel": "pupsnr_dask.kernels.variants",
    "pu_kernel": "pupsnr_dask.kernels.variants",
    "by_split": "pupsnr_dask.query",
    "extremes": "pupsnr_dask.query",
    "select_split": "pupsnr_dask.query",
    "summarize": "pupsnr_dask.query",
    "summary_table": "pupsnr_dask.query",
    "with_image_coords": "pupsnr_dask.query",
    "StoreError": "pupsnr_dask.schema",
    "open_store": "pupsnr_dask.store.zarr_io",
    "gray": "pupsnr_dask.transforms",
    "mosaic": "pupsnr_dask.transforms",
    "pu": "pupsnr_dask.transforms",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """The package module, whose ``ingest`` and ``advise`` stay the deprecated functions.

    Importing the submodule ``pupsnr_dask.ingest`` would otherwise rebind the attribute to
    the module (it did not when this file imported everything eagerly).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ALIASES and isinstance(value, types.ModuleType):
            return  # the module stays in sys.modules, where ``from ... import`` finds it
        super().__setattr__(name, value)


def ingest(*args: Any, **kwargs: Any) -> IngestSummary:
    """Deprecated alias of :func:`ingest_folder`, kept for one release.

    ``pupsnr_dask.ingest`` names this function, as it always did; the module is reached as
    ``import pupsnr_dask.ingest`` / ``from pupsnr_dask.ingest import ...``.
    """
    warnings.warn(
        "pupsnr_dask.ingest() is deprecated: use ingest_folder", DeprecationWarning, stacklevel=2
    )
    return _lib("pupsnr_dask.ingest").ingest_folder(*args, **kwargs)


def run(*args: Any, **kwargs: Any) -> xarray.Dataset:
    """Deprecated alias of :func:`run_experiment`, kept for one release."""
    warnings.warn(
        "pupsnr_dask.run() is deprecated: use run_experiment", DeprecationWarning, stacklevel=2
    )
    return _lib("pupsnr_dask.experiment").run_experiment(*args, **kwargs)


def open_images(
    store: str, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> xarray.Dataset:
    """Open an images store lazily (see :mod:`pupsnr_dask.schema`); fsspec ``storage_options``."""
    return _lib("pupsnr_dask.store.zarr_io").open_store(
        store, "images", storage_options=_options(storage_options, kwargs)
    )


def open_results(
    store: str, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> xarray.Dataset:
    """Open a PSNR results store lazily (see :mod:`pupsnr_dask.schema`); fsspec options."""
    return _lib("pupsnr_dask.store.zarr_io").open_store(
        store, "psnr", storage_options=_options(storage_options, kwargs)
    )


def _lib(module: str) -> types.ModuleType:
    return importlib.import_module(module)


def _options(options: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``storage_options``, or the deprecated keyword spelling of them (with a warning)."""
    if kwargs and options is not None:
        raise TypeError("give storage_options={...} or keyword options, not both")
    if kwargs:
        warnings.warn("pass fsspec options as storage_options={...}; keyword options are "
                      "deprecated", DeprecationWarning, stacklevel=3)  # fmt: skip
    return options if options is not None else kwargs or None


_ALIASES = ("advise", "ingest", "run")  # also the names of submodules (but run)
sys.modules[__name__].__class__ = _Package

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
