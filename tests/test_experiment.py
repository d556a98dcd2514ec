from __future__ import annotations

import dask
import numpy as np
import pytest
import reference
import xarray as xr
from conftest import images_dataset
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from storefiles import files

from pupsnr_dask import build_psnr_cube, open_images, open_results, summarize
from pupsnr_dask import run_experiment as run
from pupsnr_dask.experiment import SCALES, VARIANTS, chunks_per_task_for


def test_results_layout(results_store):
    ds = xr.open_zarr(results_store)
    for var in ("psnr", "mse"):
        assert ds[var].dims == ("image", "variant", "scale")
        assert ds[var].dtype == np.float64
    assert list(ds["variant"].values) == ["true", "gray", "mosaic"]
    assert list(ds["scale"].values) == [1, 2, 4, 8, 16, 32]
    assert list(ds["resolution"].values) == [256, 128, 64, 32, 16, 8]
    assert ds["source"].dims == ("image",) and ds["split"].dims == ("image",)
    assert ds.attrs["data_range"] == 255 and "+inf" in ds.attrs["psnr_definition"]
    assert ds["psnr"].attrs["units"] == "dB"
    open_results(str(results_store))


def test_cube_equals_the_reference_loop_on_real_photos(results_store, sample_dir):
    ds = xr.open_zarr(results_store).load()
    for i, source in enumerate(ds["source"].values):
        img = reference.img_true(reference.load_rgb(sample_dir / source))
        expected = reference.psnr_table(img)
        for (variant, scale), value in expected.items():
            got = float(ds["psnr"].sel(variant=variant, scale=scale).values[i])
            if np.isinf(value):
                assert np.isposinf(got)
            else:
                assert abs(got - value) < 1e-9, (source, variant, scale)


def test_literal_method_agrees_and_results_do_not_depend_on_chunking(images_store):
    images = open_images(str(images_store))
    base = build_psnr_cube(images).compute(scheduler="sync")
    literal = build_psnr_cube(images, method="literal").compute(scheduler="threads")
    finite = np.isfinite(base["psnr"].values)
    assert np.array_equal(finite, np.isfinite(literal["psnr"].values))
    assert np.max(np.abs(base["psnr"].values[finite] - literal["psnr"].values[finite])) < 1e-9
    pixels = images["images"].values
    for chunk in (1, 3, len(pixels)):
        other = build_psnr_cube(images_dataset(pixels, chunk)).compute(scheduler="threads")
        assert other["psnr"].values.tobytes() == base["psnr"].values.tobytes()
        assert other["mse"].values.tobytes() == base["mse"].values.tobytes()


# The CI profile's 200 examples (tests/conftest.py), like every @given test here.
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(64), st.just(64), st.just(3))),
    st.integers(1, 3),
)
def test_random_images_match_the_reference(pixels, chunk):
    scales = (1, 2, 4, 16)
    cube = build_psnr_cube(images_dataset(pixels, chunk), scales=scales).compute(scheduler="sync")
    for i, img in enumerate(pixels):
        expected = reference.psnr_table(img, scales)
        for (variant, scale), value in expected.items():
            got = float(cube["psnr"].sel(variant=variant, scale=scale).values[i])
            assert got == value or abs(got - value) < 1e-9


def test_graph_has_a_few_tasks_per_chunk(images_store):
    images = open_images(str(images_store))
    cube = build_psnr_cube(images)
    n_chunks = images["images"].data.numblocks[0]
    tasks = len(dict(cube["psnr"].data.__dask_graph__()))
    assert tasks <= 4 * n_chunks


def test_bad_selection_is_refused(images_store):
    images = open_images(str(images_store))
    with pytest.raises(ValueError, match="variant must be one of"):
        build_psnr_cube(images, variants=["sepia"])
    with pytest.raises(ValueError, match="positive divisor of the image size 256"):
        build_psnr_cube(images, scales=[3])
    with pytest.raises(ValueError, match="method must be one of"):
        build_psnr_cube(images, method="fast")


def test_summary_matches_numpy(results_store):
    ds = xr.open_zarr(results_store)
    summary = summarize(ds)
    psnr = ds["psnr"].values
    mse = ds["mse"].values
    n = psnr.shape[0]
    assert int(summary["n_images"]) == n
    for j in range(len(VARIANTS)):
        for k in range(len(SCALES)):
            col = psnr[:, j, k]
            got = float(summary["mean_psnr_db"].values[j, k])
            if np.isinf(col).any():
                assert np.isposinf(got)
            else:
                assert got == pytest.approx(col.mean(), abs=1e-12)
                assert float(summary["std_psnr_db"].values[j, k]) == pytest.approx(col.std(ddof=1))
            with np.errstate(divide="ignore"):  # MSE 0 (scale 1 of "true"): +inf dB
                want = 10 * np.log10(255**2 / mse[:, j, k].mean())
            assert float(summary["psnr_of_mean_mse_db"].values[j, k]) == pytest.approx(
                want, abs=1e-12
            )
    # the shape SPEC.md tells to expect on any data set
    true = summary["mean_psnr_db"].sel(variant="true").values[1:]
    assert np.all(np.diff(true) < 0)
    gray = summary["mean_psnr_db"].sel(variant="gray").values
    assert np.all(gray[1:] < true)


def test_split_selection(images_store, tmp_path):
    results = tmp_path / "r.zarr"
    with dask.config.set(scheduler="sync"):
        run(str(images_store), str(results), variants=["true"], scales=[2], progress=False)
    ds = open_results(str(results))
    assert summarize(ds, "train")["n_images"] == ds.sizes["image"]
    with pytest.raises(ValueError, match="no images in split 'test'"):
        summarize(ds, "test")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(str(images_store), str(results), progress=False)


def test_distributed_cluster_gives_bit_identical_results(
    local_cluster, images_store, results_store, tmp_path
):
    out = tmp_path / "cluster.zarr"
    with local_cluster.as_current():
        run(str(images_store), str(out), progress=False)
    a = xr.open_zarr(results_store).load()
    b = xr.open_zarr(out).load()
    assert a["psnr"].values.tobytes() == b["psnr"].values.tobytes()
    assert a["mse"].values.tobytes() == b["mse"].values.tobytes()


@pytest.mark.parametrize("group", [1, 2, 3])
def test_results_do_not_depend_on_the_chunks_per_task(group, images_store, results_store, tmp_path):
    """Each task computing and writing 1, 2 or 3 chunks gives the default run's store, byte
    for byte (chunks of 5 images: the last group is short)."""
    out = tmp_path / "grouped.zarr"
    with dask.config.set(scheduler="threads"):
        run(str(images_store), str(out), progress=False, chunks_per_task=group)
    assert files(out) == files(results_store)


def test_chunks_per_task_keep_the_graph_small_only_past_today_s_sizes():
    assert [chunks_per_task_for(n) for n in (1, 3_125, 20_000, 20_001, 312_500)] == [1, 1, 1, 2, 16]
    with pytest.raises(ValueError, match="chunks_per_task must be at least 1"):
        run("unused.zarr", "unused-psnr.zarr", chunks_per_task=0)


def test_the_old_names_run_and_ingest_still_work_and_warn(tmp_path, images_store):
    import pupsnr_dask
    from pupsnr_dask import experiment

    with pytest.warns(DeprecationWarning, match="use run_experiment"):
        old = pupsnr_dask.run(str(images_store), str(tmp_path / "a.zarr"), scales=[2],
                              progress=False)  # fmt: skip
    with pytest.warns(DeprecationWarning, match="use run_experiment"):
        experiment.run(str(images_store), str(tmp_path / "b.zarr"), scales=[2], progress=False)
    new = run(str(images_store), str(tmp_path / "c.zarr"), scales=[2], progress=False)
    assert new.psnr.equals(old.psnr)
    src = tmp_path / "src"
    src.mkdir()
    with pytest.warns(DeprecationWarning, match="use ingest_folder"), pytest.raises(ValueError):
        pupsnr_dask.ingest(str(src), str(tmp_path / "d.zarr"))  # empty SRC: the new one's error


@pytest.mark.parametrize(
    ("variants", "scales", "method", "metrics"),
    [
        (VARIANTS, SCALES, "moments", ("psnr",)),
        (("mosaic", "sr4", "jpeg20"), (2, 8), "literal", ("ssim", "psnr_y")),
        (("task_plugins:invert", "gray"), (1, 32), "moments", ("psnr", "ssim")),
    ],
)
def test_the_plan_of_a_selection_is_the_plan_of_its_cube(
    images_store, tmp_path, variants, scales, method, metrics
):
    """What an up-to-date run is checked against (the plan from the images' labels, no cube
    built) is what the cube's own plan would be; a bad selection is refused the same way."""
    from pupsnr_dask import experiment
    from pupsnr_dask.store.zarr_io import images_store_attrs, open_store

    results = str(tmp_path / "r.zarr")
    labels = open_store(str(images_store), "images", lazy=False)
    got = experiment.selection_plan(
        labels, str(images_store), results, variants, scales, method, metrics
    )
    cube = build_psnr_cube(
        open_images(str(images_store)), variants, scales, method=method, metrics=metrics
    )
    cube.attrs.update(images_store_attrs(str(images_store), results))
    assert got == experiment._run_plan(cube)
    assert got.images_store and got.n_images == labels.sizes["image"]
    for bad, match in [({"method": "fast"}, "method must be one of"), ({"scales": [3]}, "divisor")]:
        args = {"variants": variants, "scales": scales, "method": method, **bad}
        with pytest.raises(ValueError, match=match):
            experiment.selection_plan(labels, str(images_store), results, metrics=metrics, **args)
        with pytest.raises(ValueError, match=match):
            build_psnr_cube(open_images(str(images_store)), **args, metrics=metrics)
