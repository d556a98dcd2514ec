"""``pupsnr advise --model``: real ONNX models whose answer is known (tests/onnx_models.py),
run on the Dask workers, compared with p_i; outputs kept as an images store, resumable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask
import killhook.sitecustomize as killhook
import numpy as np
import onnx_models as om
import pytest
import xarray as xr
from advice_cases import load_img_true, rounded_pu, verdicts
from clusters import process_cluster
from conftest import random_photo, write_image

import pupsnr_dask as pp
from pupsnr_dask.advise.compare import AS_GOOD, BEATEN, WORSE
from pupsnr_dask.cli import main
from pupsnr_dask.kernels import quality
from pupsnr_dask.kernels.metrics import psnr_kernel
from pupsnr_dask.registry import resolve_variant
from pupsnr_dask.schema import json_attr
from pupsnr_dask.store.fs import lock_path, partial_path

UNIT = ["--input-range", "unit", "--output-range", "unit"]
UNIT_OPTIONS = {"input_range": "unit", "output_range": "unit"}


@pytest.fixture(scope="module")
def img_true(images_store):
    return load_img_true(images_store)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        "pu8": om.save(om.pu_model(8), root / "pu8.onnx"),
        "pu8_nhwc": om.save(om.pu_model(8, layout="NHWC"), root / "pu8_nhwc.onnx"),
        "pu8_uint8": om.save(om.pu_model(8, dtype="uint8"), root / "pu8_uint8.onnx"),
        "identity": om.save(om.identity_model(), root / "identity.onnx"),
        "constant": om.save(om.constant_model(0.5), root / "constant.onnx"),
        "small": om.save(om.downsample_model(), root / "small.onnx"),
    }


def advise_json(argv: list[str], capsys) -> dict:
    assert main([*argv, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def on(local_cluster) -> list[str]:
    return ["--scheduler", local_cluster.scheduler.address, "-q"]


def saved_pixels(store: Path) -> tuple[np.ndarray, list[str]]:
    ds = xr.open_zarr(store)
    return ds["images"].values, [str(s) for s in ds["source"].values]


# --- models whose answer is known, through the command line ----------------------------------


def test_pu_graph_on_gray_is_no_better_than_depth_3_and_saves_rounded_pu(
    img_true, results_store, models, local_cluster, tmp_path, capsys
):
    pixels, sources = img_true
    saved = tmp_path / "outputs.zarr"
    common = ["advise", str(results_store), "--variant", "gray", *on(local_cluster)]
    doc = advise_json(
        [
            *common,
            "--model",
            models["pu8"],
            *UNIT,
            "--save-outputs",
            str(saved),
            "--batch-size",
            "4",
        ],
        capsys,
    )
    # Crossover at depth 4: the output is the depth-3 skip copy, rounded to uint8.
    assert doc["crossover_depth"] == 4 and doc["skip_depth"] == 3
    by_depth = {row["depth"]: row["verdict"] for row in doc["rows"]}
    assert by_depth[3] in (AS_GOOD, WORSE) and by_depth[4] == by_depth[5] == BEATEN
    assert by_depth[0] == by_depth[1] == by_depth[2] == WORSE
    assert doc["model"]["layout"] == "NCHW" and doc["model"]["input"] == "gray"
    assert "rounded half to even" in doc["model"]["outputs"]
    # The saved outputs are run's PU(gray, 8), rounded, pixel for pixel, an images store.
    out, names = saved_pixels(saved)
    assert names == sources
    np.testing.assert_array_equal(out, rounded_pu(pixels, "gray", 8))
    store = pp.open_images(str(saved))
    assert json_attr(store.attrs, "model_outputs")["variant"] == "gray"
    assert store.attrs["size"] == 256 and store["images"].encoding["chunks"][0] == 4
    assert not Path(partial_path(str(saved))).exists()  # finished: journal and lock gone
    assert not Path(lock_path(str(saved))).exists()
    # --predictions reads them back to the same advice; a second run does not infer again.
    again = advise_json([*common, "--predictions", str(saved)], capsys)
    assert again["rows"] == doc["rows"]
    assert main([*common, "--model", models["pu8"], *UNIT, "--save-outputs", str(saved)]) == 0
    assert "already holds these outputs" in capsys.readouterr().err


def test_identity_on_true_ties_with_depth_0_and_beats_the_rest(
    results_store, models, local_cluster, capsys
):
    argv = ["advise", str(results_store), "--variant", "true", "--model", models["identity"]]
    doc = advise_json([*argv, *on(local_cluster)], capsys)
    assert doc["model"]["input_range"] == "uint8" and doc["model"]["layout"] == "NHWC"
    by_depth = {row["depth"]: row for row in doc["rows"]}
    assert by_depth[0]["verdict"] == AS_GOOD and by_depth[0]["diff_mean_db"] == 0.0
    assert all(by_depth[d]["verdict"] == BEATEN for d in (1, 2, 3, 4, 5))
    assert doc["crossover_depth"] == 1


def test_a_constant_mid_gray_is_beaten_by_every_depth(
    img_true, results_store, models, local_cluster, capsys
):
    pixels, _ = img_true
    argv = ["advise", str(results_store), "--variant", "gray", "--model", models["constant"]]
    doc = advise_json([*argv, *UNIT, *on(local_cluster)], capsys)
    assert all(row["verdict"] == WORSE for row in doc["rows"])
    assert doc["crossover_depth"] is None
    gray128 = np.full_like(pixels, 128)  # 0.5 * 255 = 127.5, rounded half to even
    expected = psnr_kernel(pixels, gray128).mean()
    assert doc["rows"][0]["output_mean_db"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["pu8_nhwc", "pu8_uint8"])
def test_other_layouts_and_types_give_the_same_outputs(name, img_true, results_store, models):
    pixels, _ = img_true
    ranges = {} if name.endswith("uint8") else {"input_range": "unit", "output_range": "unit"}
    with dask.config.set(scheduler="sync"):
        ds = pp.advise_depths(
            str(results_store), model=models[name], model_options=ranges, variant="gray"
        )
    expected = psnr_kernel(pixels, rounded_pu(pixels, "gray", 8))
    np.testing.assert_array_equal(ds["output_psnr_db"].values, expected)
    assert ds.attrs["crossover_depth"] == 4


def test_wrong_output_size_and_unknown_conventions_are_one_line_errors(
    results_store, models, capsys
):
    base = ["advise", str(results_store), "--variant", "gray", "-q", "--n-workers", "1"]
    assert main([*base, "--model", models["small"], *UNIT]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "output shape (n, 3, 128, 128)" in err
    assert "does not match (n, 3, 256, 256)" in err
    assert main([*base, "--model", models["pu8"]]) == 2  # a float model: which range?
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--input-range" in err and "--output-range" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "gray"], "exactly one of --predictions, --output-psnr and --model"),
        (["--variant", "gray", "--model", "{pu8}", "--output-psnr", "15"], "exactly one of"),
        (["--variant", "gray", "--output-psnr", "15", "--layout", "NHWC"], "--layout needs"),
        (["--variant", "gray", "--output-psnr", "15", "--save-outputs", "x"], "needs --model"),
        (
            ["--variant", "sepia", "--output-psnr", "15"],
            "variant must be one of the results' variants ('true', 'gray', 'mosaic'), got 'sepia'",
        ),
        (["--variant", "gray", "--model", "{tmp}/none.onnx"], "does not exist"),
        (["--variant", "gray", "--model", "{pu8}", "--providers", "GPU"], "provider names"),
        (
            ["--variant", "gray", "--output-psnr", "15", "--metric", "ssim"],
            "rerun `pupsnr run --metrics psnr,ssim`",
        ),
        (["--variant", "gray", "--model", "{pu8}", *UNIT, "--save-outputs", "{images}"], "is"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args, message, results_store, images_store, models, tmp_path, capsys
):
    fill = {"tmp": tmp_path, "pu8": models["pu8"], "images": images_store}
    argv = ["advise", str(results_store), *(a.format(**fill) for a in args)]
    assert main([*argv, "--n-workers", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err  # one line (after click's usage lines for a usage error)
    assert err[-1].startswith("Error: ") or len(err) == 1, err


def test_save_outputs_never_replaces_a_store_it_did_not_write(
    results_store, images_store, models, tmp_path, capsys
):
    """An images store, or outputs of another model, at --save-outputs: refused, untouched."""
    before = sorted(p.name for p in Path(images_store).rglob("*"))
    argv = ["advise", str(results_store), "--variant", "gray", "--n-workers", "1", "-q"]
    assert main([*argv, "--model", models["pu8"], *UNIT, "--save-outputs", str(images_store)]) == 2
    assert "--save-outputs" in capsys.readouterr().err
    assert sorted(p.name for p in Path(images_store).rglob("*")) == before


def test_the_variant_option_takes_the_variants_the_results_hold(
    images_store, models, tmp_path, capsys
):
    results = tmp_path / "gray-only.zarr"
    with dask.config.set(scheduler="sync"):
        pp.run_experiment(str(images_store), str(results), variants=["gray"], progress=False)
        ds = pp.advise_depths(
            str(results),
            model=models["pu8"],
            model_options=UNIT_OPTIONS,
            variant="gray",
            batch_size=5,
        )
    assert ds.attrs["crossover_depth"] == 4
    argv = ["advise", str(results), "--variant", "true", "--output-psnr", "15", "-q"]
    assert main(argv) == 2
    assert "the results' variants ('gray',), got 'true'" in capsys.readouterr().err


def test_help_lists_the_model_options(capsys):
    assert main(["advise", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in (
        "--model",
        "--layout",
        "--input-range",
        "--output-range",
        "--providers",
        "--save-outputs",
        "--metric",
        "rounded to uint8",
    ):
        assert option in text


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "atol"), [("ssim", 2e-3), ("psnr_y", 0.02)])
def test_other_metrics_score_the_outputs_with_the_same_kernel_as_p_i(
    metric, atol, img_true, results_store, models
):
    """A results cube with a ``ssim`` or ``psnr_y`` variable (as `run --metrics` writes it):
    the PU graph's outputs score what that kernel gives them, at the depth-3 skip copy's."""
    pixels, _ = img_true
    results = xr.open_zarr(results_store).load()
    scales = [int(s) for s in results["scale"].values]
    variants = [str(v) for v in results["variant"].values]
    scores = np.full(results["psnr"].shape, np.nan)  # only gray is compared: the rest unused
    view = resolve_variant("gray").apply(pixels)
    scores[:, variants.index("gray")] = quality.pu_quality_kernel(pixels, view, scales, [metric])[
        ..., 0
    ]
    results[metric] = (("image", "variant", "scale"), scores)
    with dask.config.set(scheduler="sync"):
        ds = pp.advise_depths(
            results, model=models["pu8"], model_options=UNIT_OPTIONS, variant="gray", metric=metric
        )
    expected = getattr(quality, metric)(pixels, rounded_pu(pixels, "gray", 8))
    np.testing.assert_array_equal(ds["output_psnr_db"].values, expected)
    np.testing.assert_allclose(ds["p_psnr_db"].sel(scale=8).values, expected, atol=atol)
    assert ds.attrs["metric"] == metric and ds["p_of_mean_mse_db"].isnull().all()
    v = verdicts(ds)
    assert v[16] == v[32] == BEATEN and v[1] == v[2] == WORSE
    assert ds.attrs["crossover_depth"] == 4


# --- chunkings, resume, a real process cluster -------------------------------------------------

SIZE, CHUNK = 32, 3


@pytest.fixture(scope="module")
def small_stores(tmp_path_factory) -> tuple[Path, Path, str]:
    """A 32 px images store of 10 generated photos (chunks of 3), its results, a PU-8 model."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(7)
    for k in range(10):
        write_image(root / "src" / f"img{k:02d}.png", random_photo(rng, 48, 40))
    store, results = root / "data.zarr", root / "psnr.zarr"
    with dask.config.set(scheduler="sync"):
        pp.ingest_folder(str(root / "src"), str(store), size=SIZE, chunk_size=CHUNK, progress=False)
        pp.run_experiment(str(store), str(results), scales=[1, 2, 8], progress=False)
    return store, results, om.save(om.pu_model(8, size=SIZE), root / "pu8.onnx")


def small_argv(results: Path, model: str, saved: Path, batch: int) -> list[str]:
    return [
        "advise",
        str(results),
        "--variant",
        "gray",
        "--model",
        model,
        *UNIT,
        "--save-outputs",
        str(saved),
        "--batch-size",
        str(batch),
        "--format",
        "json",
    ]


def test_saved_outputs_are_bit_identical_across_batch_sizes(
    small_stores, local_cluster, tmp_path, capsys
):
    store, results, model = small_stores
    pixels = xr.open_zarr(store)["images"].values
    expected = rounded_pu(pixels, "gray", 8)
    docs = []
    for batch in (1, 3, 4):
        saved = tmp_path / f"out{batch}.zarr"
        assert main([*small_argv(results, model, saved, batch), *on(local_cluster)]) == 0
        docs.append(json.loads(capsys.readouterr().out)["rows"])
        out, _ = saved_pixels(saved)
        assert out.tobytes() == expected.tobytes(), batch
    assert docs[0] == docs[1] == docs[2]


KILLED = (  # `advise --model --save-outputs` in Python, on the synchronous scheduler (no cluster)
    "import dask, sys; dask.config.set(scheduler='sync'); import pupsnr_dask as pp; "
    "pp.advise_depths(sys.argv[1], model=sys.argv[2], variant='gray', batch_size=3, "
    "model_options={'input_range': 'unit', 'output_range': 'unit'}, save_outputs=sys.argv[3], "
    "progress=False)"
)


def test_a_killed_inference_resumes_to_identical_outputs(
    small_stores, local_cluster, tmp_path, capsys
):
    store, results, model = small_stores
    saved = tmp_path / "out.zarr"
    argv = [sys.executable, "-c", KILLED, str(results), model, str(saved)]
    env = killhook.env(**{killhook.KILL_AT_ENV: "advise:unit:1"})
    proc = subprocess.run(
        argv, env=env, start_new_session=True, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    journal = Path(partial_path(str(saved)))
    assert journal.exists()  # killed mid-way: the journal is there, unit 1 and others done
    done = sorted(p.name for p in (journal / "done").iterdir())
    assert "00000001.json" in done and len(done) < 4, done
    # The command line resumes it (on a cluster), writing only the chunks left.
    argv = [*small_argv(results, model, saved, 3), *on(local_cluster)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"resumed an interrupted inference: {len(done)} of 4 chunks written" in captured.err
    assert not journal.exists() and not Path(lock_path(str(saved))).exists()
    pixels = xr.open_zarr(store)["images"].values
    out, _ = saved_pixels(saved)
    assert out.tobytes() == rounded_pu(pixels, "gray", 8).tobytes()
    with dask.config.set(scheduler="sync"):  # never interrupted, no outputs kept
        clean = pp.advise_depths(
            str(results), model=model, model_options=UNIT_OPTIONS, variant="gray"
        )
    got = [row["diff_mean_db"] for row in json.loads(captured.out)["rows"]]
    assert got == clean["diff_mean_db"].values.tolist()


@pytest.mark.slow
def test_on_a_real_process_cluster_one_session_per_worker(small_stores, tmp_path, capsys):
    from distributed import Client

    from pupsnr_dask import model as M

    store, results, model = small_stores
    saved = tmp_path / "out.zarr"
    with process_cluster(tmp_path / "cluster") as cluster:
        argv = [*small_argv(results, model, saved, 2), "--scheduler", cluster.address, "-q"]
        assert main(argv) == 0
        rows = json.loads(capsys.readouterr().out)["rows"]
        with Client(cluster.address) as client:
            counts = client.run(M.session_count)
    assert len(counts) == 2 and set(counts.values()) <= {0, 1} and sum(counts.values()) >= 1
    pixels = xr.open_zarr(store)["images"].values
    out, _ = saved_pixels(saved)
    assert out.tobytes() == rounded_pu(pixels, "gray", 8).tobytes()
    with dask.config.set(scheduler="sync"):
        local = pp.advise_depths(
            str(results),
            model=model,
            model_options=UNIT_OPTIONS,
            variant="gray",
        )
    got = [row["diff_mean_db"] for row in rows]
    assert got == local["diff_mean_db"].values.tolist()
