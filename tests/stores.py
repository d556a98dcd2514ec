"""Test helper: write a whole lazy dataset as a pupsnr-style Zarr store (not library API)."""

from __future__ import annotations

from typing import Any

import xarray as xr

from pupsnr_dask.cluster import compute
from pupsnr_dask.store.zarr_io import create_store


def write_store(
    ds: xr.Dataset,
    store: str,
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> None:
    """Write a lazy dataset to a new Zarr store the way pupsnr does, computing it.

    :func:`pupsnr_dask.store.zarr_io.create_store` (metadata consolidated, every chunk
    written, checksummed codecs, blocks realigned to shards), then one compute.
    """
    compute(create_store(ds, store, storage_options=storage_options), progress=progress)
