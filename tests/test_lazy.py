"""Building the lazy work computes nothing: the PSNR cube and the advise graph.

Each is built under a Dask scheduler that fails when called, so that a ``.values``, a
``compute()`` or a ``bool()`` of a dask array slipped into the building code fails here.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from advice_cases import load_img_true, rounded_pu, write_prediction_store

from pupsnr_dask.advise import build_advice_graph, plan_advice
from pupsnr_dask.experiment import build_psnr_cube
from pupsnr_dask.store.zarr_io import open_store


def refuse_to_compute(dsk, keys, **kwargs):
    """A Dask scheduler that fails when called: nothing may compute under it."""
    raise AssertionError(f"computed {len(keys)} keys while only building a graph")


def test_the_guard_is_live():
    with dask.config.set(scheduler=refuse_to_compute):
        with pytest.raises(AssertionError, match="while only building a graph"):
            dask.array.ones(3).sum().compute()


@pytest.mark.parametrize("method", ["moments", "literal"])
def test_building_the_psnr_cube_computes_nothing(images_store, results_store, method):
    with dask.config.set(scheduler=refuse_to_compute):
        # opening reads the labels itself (synchronously, no Dask scheduler), no pixel
        images = open_store(str(images_store), "images")
        cube = build_psnr_cube(images, ("true", "gray", "mosaic"), (1, 2, 8), method=method)
        assert isinstance(cube["psnr"].data, dask.array.Array)
        with pytest.raises(AssertionError, match="while only building a graph"):
            cube["psnr"].values  # noqa: B018 - the guard holds on what was built
    # and what was built is the cube that ``pupsnr run`` stores, bit for bit
    with dask.config.set(scheduler="sync"):
        psnr = cube["psnr"].values
    stored = xr.open_zarr(results_store)["psnr"].sel(
        variant=["true", "gray", "mosaic"], scale=[1, 2, 8]
    )
    np.testing.assert_array_equal(psnr, stored.values)


def test_building_the_advise_graph_computes_nothing(images_store, results_store, tmp_path):
    pixels, sources = load_img_true(images_store)
    predictions = write_prediction_store(
        tmp_path / "pred.zarr", sources, rounded_pu(pixels, "gray", 8)
    )
    # planning reads the labels and pairs the files (query.load_coords): not under the guard
    plan = plan_advice(
        str(results_store), str(predictions), variant="gray", images=str(images_store)
    )
    with dask.config.set(scheduler=refuse_to_compute):
        tasks, names = build_advice_graph(plan, batch_size=4)
        with pytest.raises(AssertionError, match="while only building a graph"):
            dask.compute(*tasks)
    assert len(names) == len(sources) and tasks


@pytest.mark.parametrize("first", ["compute", "values"])
def test_a_lazy_connection_starts_its_cluster_at_the_first_computation(
    images_store, results_store, first
):
    from pupsnr_dask.cluster import compute, connect

    before = dask.config.get("scheduler", None)
    options = {"n_workers": 1, "processes": False, "dashboard_address": ":0", "quiet": True}
    with connect(lazy=True, **options) as connection:
        cube = build_psnr_cube(open_store(str(images_store), "images"))
        assert not connection.started  # opened, built: nothing to compute yet
        if first == "compute":  # pupsnr's own compute() ...
            (psnr,) = compute(cube["psnr"], progress=False)
            psnr = psnr.values
        else:  # ... or any Dask computation, here xarray's
            psnr = cube["psnr"].values
        assert connection.started
        assert connection.client.scheduler_info()["workers"]  # a real cluster ran it
        assert dask.config.get("scheduler") == "dask.distributed"
    assert dask.config.get("scheduler", None) == before
    stored = xr.open_zarr(results_store)["psnr"].values
    np.testing.assert_array_equal(psnr, stored)


def test_a_lazy_connection_that_computes_nothing_starts_nothing(images_store):
    from pupsnr_dask.cluster import connect

    with connect(lazy=True, n_workers=1, quiet=True, dashboard_address=":0") as connection:
        open_store(str(images_store), "images")
    assert not connection.started
