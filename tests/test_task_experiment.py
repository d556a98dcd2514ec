"""Issue 13 end to end: task inputs and metrics through build_psnr_cube, `pupsnr run`, report.

References are independent of the library: Pillow calls and plain NumPy loops per image
(tests/reference.py, tests/test_task_variants.py) and scikit-image's SSIM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import reference
import xarray as xr
from clusters import process_cluster
from conftest import images_dataset, random_photo
from skimage.metrics import structural_similarity
from stores import write_store
from test_task_variants import ref_blur, ref_jpeg, ref_noise, ref_sr

from pupsnr_dask import build_psnr_cube, open_images, open_results
from pupsnr_dask.cli import main
from pupsnr_dask.experiment import ExperimentPlan, run_experiment
from pupsnr_dask.schema import json_attr

TESTS = Path(__file__).parent
TASK_VARIANTS = ["true", "gray", "mosaic", "sr4", "jpeg20", "noise25", "blur2"]
PLUGIN = "task_plugins:invert"
METRICS = ["psnr", "psnr_y", "ssim"]
SCALES = (1, 2, 4, 8, 16, 32)


def ref_view(name: str, img: np.ndarray, key: str) -> np.ndarray:
    """The input ``name`` of one image, made with Pillow / NumPy directly."""
    makers = {
        "true": lambda: img,
        "gray": lambda: reference.gray(img),
        "mosaic": lambda: reference.mosaic(img),
        "sr4": lambda: ref_sr(img, 4),
        "jpeg20": lambda: ref_jpeg(img, 20, subsampling="4:2:0"),
        "noise25": lambda: ref_noise(img, key, 25.0),
        "blur2": lambda: ref_blur(img, 2.0),
        PLUGIN: lambda: 255 - img,
    }
    return makers[name]()


def ref_pu(img: np.ndarray, s: int) -> np.ndarray:
    """PU at scale s with plain NumPy: block means in float64, then np.repeat back up."""
    h, w, c = img.shape
    pooled = img.astype(np.float64).reshape(h // s, s, w // s, s, c).mean(axis=(1, 3))
    return np.repeat(np.repeat(pooled, s, axis=0), s, axis=1)


def test_ref_pu_is_the_loop_of_reference_py():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for s in (1, 2, 8):
        assert np.allclose(ref_pu(img, s), reference.pu(img, s), rtol=0, atol=1e-12)


def ref_psnr_y(truth: np.ndarray, other: np.ndarray) -> float:
    """The plain formula: BT.601 Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, float64."""

    def luma(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255

    mse = float(np.mean((luma(truth) - luma(other)) ** 2))
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ref_ssim(truth: np.ndarray, other: np.ndarray) -> float:
    return structural_similarity(
        truth.astype(np.float64),
        other.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )


@pytest.fixture(scope="module")
def few_photos(images_store, tmp_path_factory) -> Path:
    """3 real sample photos in an images store of chunks of 2 (uneven)."""
    images = open_images(str(images_store)).isel(image=slice(0, 3)).load()
    for var in images.variables.values():
        var.encoding = {}
    images = images.chunk({"image": 2})
    store = tmp_path_factory.mktemp("few") / "few.zarr"
    with dask.config.set(scheduler="threads"):
        write_store(images, str(store), progress=False)
    return store


@pytest.fixture(scope="module")
def task_results(few_photos, tmp_path_factory) -> Path:
    """`pupsnr run` with every built-in input, a plug-in and every metric, on real photos."""
    results = tmp_path_factory.mktemp("task") / "task.zarr"
    argv = ["run", str(few_photos), "-o", str(results), "-q", "--threads"]
    argv += ["--variants", ",".join(TASK_VARIANTS), "--metrics", ",".join(METRICS)]
    argv += ["--variant-plugin", PLUGIN]
    with dask.config.set(scheduler="threads"):
        assert main(argv) == 0
    return results


def test_every_input_and_metric_via_the_cli_equals_a_per_image_reference(task_results):
    ds = xr.open_zarr(task_results).load()
    assert list(ds["variant"].values) == [*TASK_VARIANTS, PLUGIN]
    for name in METRICS:
        assert ds[name].dims == ("image", "variant", "scale") and ds[name].dtype == np.float64
    images = open_images(ds.attrs["images_store"]).load()
    worst = {"psnr": 0.0, "psnr_y": 0.0, "ssim": 0.0}
    for i, key in enumerate(ds["source"].values):
        img = images["images"].values[i]
        for variant in ds["variant"].values:
            view = ref_view(str(variant), img, str(key))
            for s in SCALES:
                up = ref_pu(view, s)
                cell = ds.sel(variant=variant, scale=s).isel(image=i)
                for metric, want in (
                    ("psnr", reference.psnr(img, up)),
                    ("psnr_y", ref_psnr_y(img, up)),
                    ("ssim", ref_ssim(img, up)),
                ):
                    got = float(cell[metric])
                    if np.isinf(want):
                        assert np.isposinf(got), (key, variant, s, metric)
                        continue
                    worst[metric] = max(worst[metric], abs(got - want))
                    tolerance = 1e-6 if metric == "ssim" else 1e-9
                    assert abs(got - want) < tolerance, (key, variant, s, metric, got, want)
    assert worst["ssim"] < 1e-6 and worst["psnr"] < 1e-9  # every value was compared


def test_results_record_every_definition_as_flat_strings(task_results):
    ds = open_results(str(task_results))  # validates: task variants are known labels
    assert json_attr(ds.attrs, "metrics") == METRICS  # JSON text in the store (netCDF-safe)
    params = [json.loads(p) for p in json_attr(ds.attrs, "variant_parameters")]
    assert params[3] == {"family": "sr", "factor": 4}
    assert params[5] == {"family": "noise", "sigma": 25.0}
    assert params[-1] == {"family": "plugin", "function": PLUGIN}
    defs = json_attr(ds.attrs, "variant_definitions")
    assert len(defs) == ds.sizes["variant"] and "JPEG" in defs[4] and "negative" in defs[-1]
    assert "BT.601" in json_attr(ds.attrs, "metric_definitions")[1]
    assert ds["ssim"].attrs["units"] == "1" and ds["psnr_y"].attrs["units"] == "dB"
    for key in ("variant_definitions", "variant_parameters", "metrics", "metric_definitions"):
        assert all(isinstance(v, str) for v in ds.attrs[key])


def test_the_default_run_is_unchanged_by_extra_metrics(few_photos, tmp_path):
    """psnr/mse bytes of a default run equal those of a run that also asks for ssim."""
    images = open_images(str(few_photos))
    base = build_psnr_cube(images).compute(scheduler="sync")
    more = build_psnr_cube(images, metrics=["ssim", "psnr"]).compute(scheduler="sync")
    assert list(base.data_vars) == ["psnr", "mse"] and "ssim" in more
    for var in ("psnr", "mse"):
        assert base[var].values.tobytes() == more[var].values.tobytes()


def synthetic(n: int = 8, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(13)
    pixels = np.stack([random_photo(rng, size, size) for _ in range(n)])
    pixels[3] = pixels[2]  # identical pixels under another source: other noise
    return pixels


DETERMINISM_VARIANTS = ["noise25", "noise2.5", "sr4", "jpeg20", "blur2", PLUGIN]


def test_results_are_bit_identical_across_chunkings_schedulers_and_reruns():
    pixels = synthetic()
    runs = {}
    for chunk in (1, 5, 32):
        for scheduler in ("sync", "threads", "processes"):
            if chunk != 5 and scheduler != "threads":
                continue  # every chunking on threads, every scheduler on chunks of 5
            cube = build_psnr_cube(
                images_dataset(pixels, chunk), DETERMINISM_VARIANTS, metrics=METRICS
            )
            runs[chunk, scheduler] = cube.compute(scheduler=scheduler)
    rerun = build_psnr_cube(images_dataset(pixels, 5), DETERMINISM_VARIANTS, metrics=METRICS)
    runs["rerun"] = rerun.compute(scheduler="threads")
    first = runs[1, "threads"]
    for key, other in runs.items():
        for var in ("psnr", "mse", "psnr_y", "ssim"):
            assert other[var].values.tobytes() == first[var].values.tobytes(), (key, var)
    noise = first["mse"].sel(variant="noise25", scale=1).values
    assert noise[2] != noise[3]  # same pixels, other source: other noise (documented)


@pytest.mark.slow
def test_a_plugin_runs_on_a_real_process_cluster(few_photos, tmp_path, monkeypatch):
    """Workers import task_plugins from tests/ on their PYTHONPATH; same bits as locally."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    results = tmp_path / "r.zarr"
    argv = ["run", str(few_photos), "-o", str(results), "-q", "--variants", "noise25,gray"]
    argv += ["--variant-plugin", PLUGIN, "--metrics", "psnr,ssim", "--timeout", "30"]
    with process_cluster(tmp_path / "cluster", n_workers=2) as cluster:
        assert main([*argv, "--scheduler", cluster.address]) == 0
    remote = xr.open_zarr(results).load()
    local = build_psnr_cube(
        open_images(str(few_photos)), ["noise25", "gray", PLUGIN], metrics=["psnr", "ssim"]
    ).compute(scheduler="threads")
    for var in ("psnr", "mse", "ssim"):
        assert remote[var].values.tobytes() == local[var].values.tobytes(), var
    img = open_images(str(few_photos))["images"].values[0]
    want = reference.psnr(img, reference.pu(255 - img, 4))
    assert abs(float(remote["psnr"].sel(variant=PLUGIN, scale=4)[0]) - want) < 1e-9


@pytest.mark.parametrize(
    "plugin, says",
    [
        ("task_plugins:wrong_shape", "returned shape (2, 128, 256, 3) uint8; expected"),
        ("task_plugins:wrong_dtype", "returned shape (2, 256, 256, 3) float32; expected"),
        ("task_plugins:explode", "raised RuntimeError: the model file is missing"),
        ("task_plugins:not_there", "has no attribute 'not_there'"),
    ],
)
def test_a_broken_plugin_fails_with_one_line_and_writes_nothing(
    few_photos, tmp_path, capsys, plugin, says
):
    out = tmp_path / "out"
    out.mkdir()
    results = out / "r.zarr"
    argv = ["run", str(few_photos), "-o", str(results), "-q", "--variant-plugin", plugin]
    with dask.config.set(scheduler="sync"):
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and plugin in err and says in err, err
    assert list(out.iterdir()) == []  # no results, no .partial, no .lock


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--variants", "true,sepia", "'module:function'"),
        ("--variants", "jpeg0", "jpeg<q>: q an integer quality 1 ... 100"),
        ("--variants", "sr3", "sr3' needs a size divisible by 3"),
        ("--metrics", "psnr,lpips", "metric must be one of ('psnr', 'psnr_y', 'ssim')"),
    ],
)
def test_unknown_names_give_one_line_with_the_choices(
    few_photos, tmp_path, capsys, option, value, says
):
    argv = ["run", str(few_photos), "-o", str(tmp_path / "r.zarr"), option, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err, err
    assert not (tmp_path / "r.zarr").exists()


def test_other_metrics_than_the_complete_results_are_refused(task_results, few_photos):
    variants = [*TASK_VARIANTS, PLUGIN]
    with pytest.raises(FileExistsError, match="already exist with other metrics"):
        run_experiment(str(few_photos), str(task_results), variants=variants, metrics=["psnr"])
    with dask.config.set(scheduler="sync"):  # the same: complete, nothing recomputed
        same = run_experiment(
            str(few_photos), str(task_results), variants=variants, metrics=METRICS
        )
    assert json_attr(same.attrs, "metrics") == METRICS


def test_plans_record_metrics_and_read_old_plans_as_psnr_only():
    plan = ExperimentPlan(
        "d.zarr", 3, "abc", ("true", "sr4"), (1, 2), "moments", metrics=tuple(METRICS)
    )
    doc = json.loads(json.dumps(plan.to_json()))
    assert doc["metrics"] == METRICS and ExperimentPlan.from_json(doc) == plan
    old = {k: v for k, v in doc.items() if k != "metrics"}
    assert ExperimentPlan.from_json(old).metrics == ("psnr",)
    assert plan.changed(ExperimentPlan.from_json(old)) == {"metrics": ("psnr",)}


def test_report_every_metric_with_its_own_statistics(task_results, capsys, tmp_path):
    ds = xr.open_zarr(task_results).load()
    assert main(["report", str(task_results), "--metric", "ssim", "-q"]) == 0
    text = capsys.readouterr().out
    assert "Mean SSIM" in text and "Standard deviation of SSIM" in text
    assert "mean MSE" not in text.split("dataset figure")[1].replace("no SSIM of a mean MSE", "")
    mean = float(ds["ssim"].sel(variant="sr4", scale=2).mean())
    assert f"{mean:.4f}" in text
    assert main(["report", str(task_results), "--metric", "psnr_y", "--format", "csv"]) == 0
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert set(rows["metric"]) == {"psnr_y"} and "psnr_of_mean_mse_db" not in rows
    row = rows[(rows.variant == "jpeg20") & (rows.scale == 4)].iloc[0]
    assert row["mean_psnr_y_db"] == float(ds["psnr_y"].sel(variant="jpeg20", scale=4).mean())
    assert main(["report", str(task_results), "-q"]) == 0  # default: psnr as before
    assert "PSNR of the mean MSE (dB)" in capsys.readouterr().out
    plot = tmp_path / "ssim.png"
    assert main(["report", str(task_results), "--metric", "ssim", "--plot", str(plot), "-q"]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_report_of_a_metric_not_computed_says_how_to_get_it(results_store, capsys):
    assert main(["report", str(results_store), "--metric", "ssim"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "('psnr',)" in err and "--metrics psnr,ssim" in err


def test_ssim_figure_labels_its_axes_with_the_metric(task_results):
    pytest.importorskip("matplotlib")
    from pupsnr_dask.report import plots

    fig = plots.plot_psnr(open_results(str(task_results)), metric="ssim", progress=False)
    left, right = fig.axes[:2]
    assert left.get_ylabel() == "SSIM" and right.get_ylabel() == "SSIM"
    assert "SSIM" in fig._suptitle.get_text()


def test_export_writes_every_metric_present(task_results, tmp_path):
    out = tmp_path / "t.csv"
    assert main(["export", str(task_results), "-o", str(out), "-q"]) == 0
    table = pd.read_csv(out)
    ds = xr.open_zarr(task_results).load()
    for metric in ("psnr", "mse", "psnr_y", "ssim"):
        assert metric in table
    row = table[(table.variant == "blur2") & (table.scale == 8) & (table.image == 1)].iloc[0]
    assert row["ssim"] == float(ds["ssim"].sel(variant="blur2", scale=8, image=1))


def test_run_experiment_takes_callables_and_probes_them_first(few_photos, tmp_path):
    import task_plugins

    results = tmp_path / "r.zarr"
    with pytest.raises(ValueError, match="'task_plugins:explode' raised RuntimeError"):
        run_experiment(str(few_photos), str(results), variants=[task_plugins.explode])
    assert not results.exists() and not list(tmp_path.iterdir())
    ds = run_experiment(str(few_photos), str(results), variants=["true", task_plugins.invert])
    assert list(ds["variant"].values) == ["true", "task_plugins:invert"]


def test_a_plugin_failing_mid_run_leaves_a_run_that_refuses_other_metrics(few_photos, tmp_path):
    """Chunks of 2 of 3 images: the probe passes, the last chunk fails; the journal says so."""
    results = tmp_path / "r.zarr"
    variants = ["true", "task_plugins:odd_batches"]
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match="'task_plugins:odd_batches' raised ValueError"):
            run_experiment(str(few_photos), str(results), variants=variants)
        with pytest.raises(ValueError, match=r"interrupted run with other parameters \(metrics="):
            run_experiment(str(few_photos), str(results), variants=variants, metrics=["ssim"])


def test_every_metric_of_a_chunk_comes_from_one_task(few_photos):
    from collections import Counter

    from dask.utils import key_split

    images = open_images(str(few_photos))
    cube = build_psnr_cube(images, ["true", "sr4", "noise25", PLUGIN], metrics=METRICS)
    n_chunks = images["images"].data.numblocks[0]
    graph = dict(cube[["psnr", "mse", "psnr_y", "ssim"]].__dask_graph__())
    counts = Counter(key_split(k) for k in graph)
    assert counts["pupsnr-scores"] == n_chunks  # the one computing task per chunk
    for name in ("pupsnr-mse", "pupsnr-psnr", "pupsnr-psnry", "pupsnr-ssim"):
        assert counts[name] == n_chunks, counts  # each a pick (or log10) of its block
    assert sum(counts.values()) <= 8 * n_chunks + 4, counts


@pytest.mark.slow
def test_the_html_report_of_a_task_run_draws_every_input(task_results, tmp_path):
    page = tmp_path / "r.html"
    assert main(["report", str(task_results), "--html", str(page), "-q"]) == 0
    text = page.read_text()
    for variant in [*TASK_VARIANTS, PLUGIN]:
        assert f">{variant}<" in text, variant


def test_the_html_page_of_ssim_has_its_tables_extremes_and_no_mean_mse(task_results, tmp_path):
    """``report --html --metric ssim``: the page is about SSIM (title, tables with 4 decimals,
    extremes ranked by SSIM), with no "PSNR of the mean MSE" table, and PSNR stays the default."""
    from pupsnr_dask import query
    from pupsnr_dask.report.summary import statistic_frame
    from pupsnr_dask.report.tables import render

    page = tmp_path / "ssim.html"
    assert main(["report", str(task_results), "--html", str(page), "--metric", "ssim", "-q"]) == 0
    text = page.read_text()
    assert "<h1>pupsnr: SSIM of the PU transform</h1>" in text
    assert "PSNR of the mean MSE" not in text and "Mean PSNR" not in text
    ds = open_results(str(task_results))
    summary = query.summarize(ds, metric="ssim")
    for stat in ("mean_ssim", "std_ssim"):
        assert render(statistic_frame(summary, stat), "html") in text, stat
    assert "Mean of the finite SSIM values [95% interval]" in text
    values = xr.open_zarr(task_results)["ssim"].sel(variant="jpeg20", scale=2).values
    worst = query.extremes(ds, "jpeg20", 2, n=3, metric="ssim", progress=False)
    assert worst.values.tolist() == sorted(values)[:3]
    for image, value in zip(worst.image.values.tolist(), worst.values.tolist(), strict=True):
        assert f"image {image}: " in text and f"SSIM {value:.4f}" in text
    psnr_page = tmp_path / "psnr.html"
    assert main(["report", str(task_results), "--html", str(psnr_page), "-q"]) == 0
    assert "PSNR of the mean MSE" in psnr_page.read_text()


def test_extremes_of_any_metric_are_its_sorted_ends(task_results):
    from pupsnr_dask import query

    ds = open_results(str(task_results))
    values = xr.open_zarr(task_results)["ssim"].sel(variant="jpeg20", scale=2).values
    worst = query.extremes(ds, "jpeg20", 2, n=2, metric="ssim", progress=False)
    best = query.extremes(ds, "jpeg20", 2, n=2, lowest=False, metric="ssim", progress=False)
    assert worst.values.tolist() == sorted(values)[:2]
    assert best.values.tolist() == sorted(values)[::-1][:2]
    with pytest.raises(ValueError, match="metric must be one of"):
        query.extremes(open_results(str(task_results)), "true", 1, metric="lpips")


def test_verify_recomputes_a_task_run_noise_included(task_results, capsys):
    """verify recomputes every chunk exactly: noise25 is seeded from each image's source."""
    assert main(["verify", str(task_results), "--recompute", "all", "-q", "--threads"]) == 0
    out = capsys.readouterr().out
    assert "noise25" in [str(v) for v in xr.open_zarr(task_results)["variant"].values]
    assert out.startswith("OK: ") and "3 images recomputed" in out, out


def test_pupsnr_run_probes_a_plug_in_once(images_store, tmp_path, monkeypatch):
    """The plug-in is run once on the first chunk before anything is computed (not once by the
    command line and again by run_experiment): on complete results that is its only call."""
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PUPSNR_TEST_CALLS", str(calls))
    argv = ["run", str(images_store), "-o", str(tmp_path / "r.zarr"), "--scales", "1,2"]
    argv += ["--variants", "task_plugins:counted", "-q", "--threads", "--n-workers", "1"]
    assert main(argv) == 0
    assert calls.read_text().splitlines()[0] == "5"  # the probe: the first chunk of 5 images
    calls.unlink()
    assert main(argv) == 0  # complete: nothing computed
    assert calls.read_text().splitlines() == ["5"]
