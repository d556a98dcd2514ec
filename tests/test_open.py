"""`open_images` / `open_results` take ``storage_options=`` like every other opener."""

from __future__ import annotations

import warnings

import pytest
import xarray as xr
from test_s3 import BUCKET, s3  # noqa: F401  (the moto S3 server fixture)

import pupsnr_dask as pp


@pytest.fixture(scope="module")
def s3_stores(s3, images_store, results_store):  # noqa: F811
    """Copies of the sample images and results stores on the moto S3 server."""
    s3.fs.put(f"{images_store}/", f"{BUCKET}/open/data.zarr/", recursive=True)
    s3.fs.put(f"{results_store}/", f"{BUCKET}/open/psnr.zarr/", recursive=True)
    return f"s3://{BUCKET}/open/data.zarr", f"s3://{BUCKET}/open/psnr.zarr"


def test_openers_take_a_storage_options_dict(s3, s3_stores, images_store, results_store):  # noqa: F811
    images, results = s3_stores
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ds = pp.open_images(images, storage_options=s3.options())
        cube = pp.open_results(results, storage_options=s3.options())
    xr.testing.assert_identical(ds.load(), xr.open_zarr(images_store).load())
    xr.testing.assert_identical(cube.load(), xr.open_zarr(results_store).load())


def test_openers_keyword_options_still_work_with_a_deprecation_warning(s3, s3_stores):  # noqa: F811
    images, results = s3_stores
    with pytest.warns(DeprecationWarning, match="storage_options="):
        ds = pp.open_images(images, endpoint_url=s3.endpoint)
    with pytest.warns(DeprecationWarning, match="storage_options="):
        cube = pp.open_results(results, endpoint_url=s3.endpoint)
    assert ds.sizes["image"] == cube.sizes["image"]
    with pytest.raises(TypeError, match="not both"):
        pp.open_results(results, storage_options=s3.options(), endpoint_url=s3.endpoint)
