"""advise_depths end to end: pairing, reading, the graph, one number, the command line."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from advice_cases import (
    load_img_true,
    rounded_pu,
    run_advise,
    write_prediction_store,
    write_predictions,
)
from conftest import write_image
from PIL import Image

import pupsnr_dask as pp
from pupsnr_dask.advise import build_advice_graph, plan_advice, run_advice
from pupsnr_dask.advise.compare import AS_GOOD
from pupsnr_dask.cli import main
from pupsnr_dask.kernels.image import EXTENSION_FORMATS, resize_lanczos
from pupsnr_dask.kernels.metrics import psnr_kernel
from pupsnr_dask.report.advice import format_advice


@pytest.fixture(scope="module")
def img_true(images_store):
    return load_img_true(images_store)


@pytest.fixture(scope="module")
def p_gray(results_store):
    return xr.open_zarr(results_store)["psnr"].sel(variant="gray").values


def refuse_to_compute(dsk, keys, **kwargs):
    """A dask scheduler that fails when called: nothing may compute under it."""
    raise AssertionError(f"computed {keys} while only building a graph")


# --- the graph ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "store"])
def test_building_the_advise_graph_computes_nothing(
    kind, img_true, results_store, images_store, tmp_path
):
    pixels, sources = img_true
    outputs = rounded_pu(pixels, "gray", 8)
    if kind == "folder":
        predictions = write_predictions(tmp_path / "pred", sources, outputs)
    else:
        predictions = write_prediction_store(tmp_path / "pred.zarr", sources, outputs)
    plan = plan_advice(
        str(results_store), str(predictions), variant="gray", images=str(images_store)
    )
    with dask.config.set(scheduler=refuse_to_compute):
        tasks, names = build_advice_graph(plan, batch_size=4)
        with pytest.raises(AssertionError, match="while only building a graph"):
            dask.compute(*tasks)  # the guard is live
    assert len(tasks) == math.ceil(len(sources) / 4) and len(names) == len(sources)
    with dask.config.set(scheduler="sync"):
        parts = dask.compute(*tasks)
        ds = run_advice(plan, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([p for p, _ in parts]), ds["output_psnr_db"])


def test_advise_is_a_deprecated_alias_of_advise_depths(results_store, p_gray):
    number = float(p_gray.mean(axis=0)[3])
    with pytest.warns(DeprecationWarning, match="advise_depths"):
        old = pp.advise(str(results_store), output_psnr=number, variant="gray")
    new = pp.advise_depths(str(results_store), output_psnr=number, variant="gray")
    xr.testing.assert_identical(old, new)


# --- mismatches -------------------------------------------------------------------------------


def test_mismatched_predictions_are_reported_and_the_rest_analysed(
    img_true, results_store, tmp_path
):
    pixels, sources = img_true
    outputs = rounded_pu(pixels, "gray", 8)
    folder = write_predictions(tmp_path / "pred", sources, outputs)
    missing, small, broken, doubled = sources[0], sources[1], sources[2], sources[3]
    next(folder.glob(Path(missing).with_suffix(".*").as_posix())).unlink()
    small_file = next(folder.glob(Path(small).with_suffix(".*").as_posix()))
    small_image = np.asarray(Image.open(small_file).convert("RGB").resize((100, 80)))
    write_image(small_file, small_image)
    broken_file = next(folder.glob(Path(broken).with_suffix(".*").as_posix()))
    broken_file.write_bytes(b"not an image")
    write_image(folder / Path(doubled).with_suffix(".gif"), outputs[3])
    write_image(folder / "other/unknown.png", outputs[4])
    (folder / "README.txt").write_text("model outputs")

    ds = run_advise(str(results_store), str(folder), variant="gray")
    m = ds.attrs["matching"]
    assert (
        m["n_images"] == len(sources) and m["n_matched"] == len(sources) - 3 == ds.attrs["n_images"]
    )
    assert m["missing"] == [missing]
    kind = EXTENSION_FORMATS[broken_file.suffix][0]  # opened as its extension says, only
    assert m["unreadable"] == [
        f"{broken_file.relative_to(folder).as_posix()}: cannot decode: not a {kind} file "
        f"(the extension says {broken_file.suffix})"
    ]
    assert len(m["ambiguous"]) == 1 and m["ambiguous"][0].startswith(f"{doubled} <- ")
    assert m["extra"] == ["other/unknown.png"] and m["ignored"] == ["README.txt"]
    assert m["resized"] == [f"{small_file.relative_to(folder).as_posix()} (100x80)"]
    kept = [s for s in sources if s not in (missing, broken, doubled)]
    assert list(ds["source"].values) == kept
    refit = resize_lanczos(Image.fromarray(small_image), 256)
    got = float(ds["output_psnr_db"].sel(image=ds["source"] == small).values[0])
    assert got == float(psnr_kernel(pixels[1:2], refit[None])[0])
    text = format_advice(ds)
    assert f"predictions: {len(kept)} of {len(sources)} images matched" in text
    for line in ("missing 1", "unreadable 1", "ambiguous 1", "extra 1", "resized 1", "ignored 1"):
        assert line in text
    with pytest.raises(ValueError, match="no prediction matches"):
        run_advise(str(results_store), str(folder / "other"), variant="gray")


def test_a_prediction_store_pairs_by_source(img_true, results_store, images_store, tmp_path):
    pixels, sources = img_true
    outputs = rounded_pu(pixels, "gray", 8)
    order = np.random.default_rng(0).permutation(len(sources))[:-1]  # shuffled, one missing
    names = np.array([sources[i] for i in order], dtype=object)
    write_prediction_store(tmp_path / "pred.zarr", names.tolist(), outputs[order])
    ds = run_advise(
        str(results_store),
        str(tmp_path / "pred.zarr"),
        variant="gray",
        images=str(images_store),
        batch_size=3,
    )
    (left_out,) = set(range(len(sources))) - set(order.tolist())
    assert ds.attrs["matching"]["missing"] == [sources[left_out]]
    expected = psnr_kernel(pixels, outputs)
    np.testing.assert_array_equal(ds["output_psnr_db"].values, expected[ds["image"].values])
    store = xr.Dataset(
        {"images": (("image", "y", "x", "channel"), outputs[order])},
        coords={"source": ("image", names)},
    )
    store["images"] = store["images"].chunk({"image": 4})
    in_memory = run_advise(xr.open_zarr(results_store), store, variant="gray")
    xr.testing.assert_identical(in_memory.drop_attrs(), ds.drop_attrs())
    # A store of another size: every image is LANCZOS-resized, and reported.
    small = np.stack([np.asarray(Image.fromarray(x).resize((64, 64))) for x in outputs[order]])
    small_store = xr.Dataset(
        {"images": (("image", "y", "x", "channel"), small)}, coords={"source": ("image", names)}
    )
    resized = run_advise(str(results_store), small_store, variant="gray")
    assert resized.attrs["matching"]["n_resized"] == len(order)
    assert f"resized {len(order)}: " in "\n".join(resized.attrs["matching_report"])
    assert all(r.endswith(" (64x64)") for r in resized.attrs["matching"]["resized"])
    refit = np.stack([resize_lanczos(Image.fromarray(x), 256) for x in small])
    expected = dict(zip(names, psnr_kernel(pixels[order], refit), strict=True))
    got = dict(zip(resized["source"].values, resized["output_psnr_db"].values, strict=True))
    assert got == expected


def test_results_without_their_images_store_need_images(
    img_true, results_store, images_store, tmp_path
):
    pixels, sources = img_true
    folder = write_predictions(tmp_path / "pred", sources[:1], pixels[:1])
    results = xr.open_zarr(results_store)
    del results.attrs["images_store"], results.attrs["images_store_relative"]
    with pytest.raises(ValueError, match="--images STORE"):
        run_advise(results, str(folder), variant="gray")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_advise(results, str(folder), variant="gray", images=str(tmp_path / "nowhere.zarr"))
    one = run_advise(results, str(folder), variant="gray", images=str(images_store))
    assert one.attrs["n_images"] == 1 and one.attrs["crossover_depth"] is None
    assert one.attrs["conclusion"].startswith("Fewer than 2 paired images")


# --- one number -------------------------------------------------------------------------------


def test_output_psnr_number_is_compared_with_mean_p(results_store, p_gray):
    mean_p = p_gray.mean(axis=0)
    number = (mean_p[2] + mean_p[3]) / 2
    ds = pp.advise_depths(str(results_store), output_psnr=number, variant="gray")
    assert ds.attrs["mode"] == "output_psnr" and "output_psnr_db" not in ds
    np.testing.assert_allclose(ds["diff_mean_db"], number - mean_p)
    assert ds["diff_ci_low_db"].isnull().all() and ds["share_output_le_p"].isnull().all()
    assert ds.attrs["crossover_scale"] == 8 and "no interval" in ds.attrs["conclusion"]
    assert "no confidence interval" in ds.attrs["limits"]
    text = format_advice(ds)
    assert "p_i of mean MSE" in text and "CI" not in text.splitlines()[3]
    rows = json.loads(format_advice(ds, "json"))["rows"]
    assert rows[0]["diff_ci_low_db"] is None and rows[3]["beaten"] is True


# --- command line ----------------------------------------------------------------------------


def test_cli_on_a_real_cluster(img_true, results_store, local_cluster, tmp_path, capsys):
    pixels, sources = img_true
    folder = write_predictions(tmp_path / "pred", sources[:-1], rounded_pu(pixels, "gray", 8)[:-1])
    address = local_cluster.scheduler.address
    common = ["advise", str(results_store), "--variant", "gray", "-q"]
    argv = [*common, "--predictions", str(folder), "--scheduler", address, "--batch-size", "4"]
    assert main([*argv, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["crossover_scale"] == 16 and doc["matching"]["missing"] == [sources[-1]]
    assert doc["n_images"] == len(sources) - 1 and doc["rows"][3]["verdict"] == AS_GOOD
    plot = tmp_path / "number.png"
    assert main([*common, "--output-psnr", "16.3", "--format", "csv", "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert len(list(csv.DictReader(io.StringIO(captured.out)))) == 6
    assert not captured.out.endswith("\n\n")  # no blank line after the CSV
    assert f"plot written to {plot}" in captured.err and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "gray"], "exactly one of --predictions, --output-psnr and --model"),
        (["--variant", "gray", "--output-psnr", "15", "--predictions", "{tmp}"], "exactly one"),
        (["--variant", "sepia", "--output-psnr", "15"], "the results' variants ('true', 'gray'"),
        (["--variant", "gray", "--predictions", "{tmp}/nothing"], "is not a folder or a store"),
        (["--variant", "gray", "--predictions", "{tmp}/empty"], "no prediction matches"),
        (["--variant", "gray", "--predictions", "{results}"], "must hold 'images'"),
        (
            ["--variant", "gray", "--predictions", "{tmp}/one", "--images", "{tmp}/no.zarr"],
            "does not exist",
        ),
        (["--variant", "gray", "--output-psnr", "15", "--confidence", "1.5"], "--confidence"),
    ],
)
def test_cli_usage_errors_exit_2(args, message, results_store, img_true, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "one" / img_true[1][0], img_true[0][0])
    argv = [
        "advise",
        str(results_store),
        *(a.format(tmp=tmp_path, results=results_store) for a in args),
        "--n-workers",
        "1",
        "-q",
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_defaults_are_the_library_constants():
    from pupsnr_dask.advise import DEFAULT_BATCH_SIZE, DEFAULT_CONFIDENCE, DEFAULT_MARGIN_DB
    from pupsnr_dask.cli import cli
    from pupsnr_dask.report import html, plots

    def default(command: str, option: str):
        params = {p.name: p for p in cli.get_command(None, command).params}
        return params[option].default

    assert default("advise", "confidence") == DEFAULT_CONFIDENCE
    assert default("advise", "batch_size") == DEFAULT_BATCH_SIZE
    assert default("advise", "margin_db") == DEFAULT_MARGIN_DB
    assert default("report", "top") == html.DEFAULT_TOP
    assert default("grid", "dpi") == plots.DEFAULT_DPI
    assert {p.name: p for p in cli.get_command(None, "grid").params}["dpi"].help
