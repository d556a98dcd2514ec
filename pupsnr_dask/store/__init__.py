"""Storage: the only layer that imports fsspec and zarr at top level.

:mod:`~pupsnr_dask.store.fs` (filesystems, credentials, safe deletion),
:mod:`~pupsnr_dask.store.lock` (``STORE.lock``), :mod:`~pupsnr_dask.store.journal`
(``STORE.partial``), :mod:`~pupsnr_dask.store.integrity` (cheap probes) and
:mod:`~pupsnr_dask.store.zarr_io` (open, create, region writes).
"""
