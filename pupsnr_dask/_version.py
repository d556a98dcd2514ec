"""The version of pupsnr_dask: what every store it writes is stamped with."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pupsnr-dask")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
