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
from conftest import write_image
from PIL import Image

import pupsnr_dask as pp
from pupsnr_dask.advise import (
    AS_GOOD,
    BEATEN,
    NO_INTERVAL,
    WORSE,
    advise,
    compare_paired,
    crossover_index,
    format_advice,
    match_predictions,
    plot_advice,
    psnr_ceiling_db,
)
from pupsnr_dask.cli import main
from pupsnr_dask.kernels.image import EXTENSION_FORMATS, resize_lanczos
from pupsnr_dask.kernels.metrics import psnr_kernel
from pupsnr_dask.kernels.variants import pu_kernel
from pupsnr_dask.stats import t_half_width, t_quantile

FORMATS = (".png", ".tif", ".bmp", ".webp")  # lossless; ".webp" saved with lossless=True


@pytest.fixture(scope="module")
def truth(images_store):
    ds = xr.open_zarr(images_store)
    return ds["images"].values, [str(s) for s in ds["source"].values]


@pytest.fixture(scope="module")
def p_gray(results_store):
    return xr.open_zarr(results_store)["psnr"].sel(variant="gray").values


def write_predictions(folder: Path, sources: list[str], pixels: np.ndarray) -> Path:
    """Save each image under its source path, extension changed, formats in rotation."""
    for k, (source, image) in enumerate(zip(sources, pixels, strict=True)):
        ext = FORMATS[k % len(FORMATS)]
        path = (folder / source).with_suffix(ext)
        write_image(path, image, **({"lossless": True} if ext == ".webp" else {}))
    return folder


def rounded_pu(pixels: np.ndarray, variant: str, scale: int) -> np.ndarray:
    view = pp.VARIANTS[variant](pixels)
    return np.clip(np.rint(pu_kernel(view, scale)), 0, 255).astype(np.uint8)


def run_advise(*args, **kwargs) -> xr.Dataset:
    with dask.config.set(scheduler="sync"):
        return advise(*args, **kwargs)


def verdicts(ds: xr.Dataset) -> dict[int, str]:
    return dict(zip(ds["scale"].values.tolist(), ds["verdict"].values.tolist(), strict=True))


# --- pairing -------------------------------------------------------------------------------------


def test_matching_rule_exact_then_extension_free():
    sources = ["a/x.jpg", "b.jpg", "c.jpg", "d.jpg", "e.png", "e.jpg", "f.jpg", "f.png"]
    names = ["a/x.png", "b.jpg", "b.png", "d.png", "d.webp", "e.png", "e.bmp", "f.tif", "z.png"]
    m = match_predictions(sources, names)
    # e.png is taken by its exact match, so e.bmp is the only candidate left for e.jpg.
    assert m.pairs == [(0, "a/x.png"), (1, "b.jpg"), (4, "e.png"), (5, "e.bmp")]
    assert m.missing == ["c.jpg"]
    # d: two candidates; f.jpg and f.png share the stem and both lack an exact match.
    assert m.ambiguous == ["d.jpg <- d.png, d.webp", "f.jpg <- f.tif", "f.png <- f.tif"]
    assert m.extra == ["b.png", "z.png"]
    assert match_predictions(["A.jpg"], ["a.png"]).missing == ["A.jpg"]  # case-sensitive


def test_matching_report_lists_a_few_names():
    m = match_predictions([f"{i}.jpg" for i in range(9)], ["0.png", "x.png"])
    lines = m.lines()
    assert lines[0] == "predictions: 1 of 9 images matched"
    assert "missing 8" in lines[1] and "1.jpg" in lines[1] and "(3 more)" in lines[1]
    assert "extra 1" in lines[2] and "x.png" in lines[2]
    assert m.as_dict()["n_missing"] == 8 and len(m.as_dict()["missing"]) == 5


# --- statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 9, 13, 30, 50, 101, 1000, 2000])
@pytest.mark.parametrize("q", [0.025, 0.2, 0.8, 0.975, 0.995])
def test_t_quantile_matches_scipy(df, q):
    import scipy.stats as stats

    assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)


def test_t_quantile_rejects_bad_arguments_and_gives_the_interval_half_width():
    import scipy.stats as stats

    assert t_quantile(0.5, 7) == 0.0
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="q must be"):
            t_quantile(q, 5)
    for df in (0, -1, 2.5):
        with pytest.raises(ValueError, match="df must be"):
            t_quantile(0.975, df)
    std = np.array([1.0, 2.5])
    want = stats.t.ppf(0.95, 9) * std / math.sqrt(10)
    np.testing.assert_allclose(t_half_width(std, 10, 0.9), want, rtol=1e-9)


def test_interval_is_the_student_t_interval_of_paired_differences():
    import scipy.stats as stats

    inf, ceiling = math.inf, psnr_ceiling_db(256)
    output = np.array([20.0, 21.5, inf, 19.0, 23.0])
    p = np.array([[inf, 19.0], [22.0, 20.0], [inf, 17.0], [18.0, 18.5], [21.0, 16.0]])
    got = compare_paired(output, p, size=256, confidence=0.9)
    d = np.minimum(output, ceiling)[:, None] - np.minimum(p, ceiling)
    assert d[2, 0] == 0.0  # identical output and identical copy tie
    half = stats.t.ppf(0.95, 4) * d.std(axis=0, ddof=1) / math.sqrt(5)
    np.testing.assert_allclose(got["diff_mean_db"], d.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(got["diff_ci_low_db"], d.mean(axis=0) - half, rtol=1e-9)
    np.testing.assert_allclose(got["diff_ci_high_db"], d.mean(axis=0) + half, rtol=1e-9)
    np.testing.assert_array_equal(got["share_output_le_p"], [0.6, 0.0])  # inf <= inf counts
    one = compare_paired(output[:1], p[:1], size=256)
    assert np.isnan(one["diff_ci_low_db"]).all() and one["crossover"] is None
    assert set(one["verdict"]) == {NO_INTERVAL}
    same = compare_paired(np.full(3, 20.0), np.full((3, 1), 19.0), size=256)
    assert same["diff_ci_low_db"][0] == same["diff_ci_high_db"][0] == 1.0  # no spread


def test_crossover_is_the_shallowest_level_beaten_with_all_deeper_ones():
    assert crossover_index([False, True, False, True, True]) == 3
    assert crossover_index([True, True]) == 0
    assert crossover_index([True, True, False]) is None


def test_psnr_ceiling_is_one_value_off_by_one():
    a = np.zeros((1, 256, 256, 3), np.uint8)
    b = a.copy()
    b[0, 5, 7, 1] = 1
    assert psnr_ceiling_db(256) == pytest.approx(float(psnr_kernel(a, b)[0]), abs=1e-12)


# --- known answers on the sample photos ----------------------------------------------------------


@pytest.mark.parametrize("variant", ["true", "gray", "mosaic"])
def test_outputs_equal_to_pu8_are_no_better_than_depth_3(variant, truth, results_store, tmp_path):
    pixels, sources = truth
    outputs = rounded_pu(pixels, variant, 8)
    folder = write_predictions(tmp_path / "pred", sources, outputs)
    ds = run_advise(str(results_store), str(folder), variant=variant)
    assert ds.attrs["n_images"] == len(sources) and ds.attrs["matching"]["n_missing"] == 0
    np.testing.assert_array_equal(ds["output_psnr_db"].values, psnr_kernel(pixels, outputs))
    # Rounding to uint8 moves each PSNR away from p_3 by far less than 0.01 dB.
    p3 = ds["p_psnr_db"].sel(scale=8).values
    assert np.abs(ds["output_psnr_db"].values - p3).max() < 0.01
    v = verdicts(ds)
    assert v[8] in (AS_GOOD, WORSE)  # no better than the skip copy at depth 3
    if variant != "mosaic":  # mosaic's input was pooled at 16: its p_3 and p_4 nearly coincide
        assert v[16] == v[32] == BEATEN
        assert v[2] == v[4] == WORSE
        assert ds.attrs["crossover_scale"] == 16 and ds.attrs["skip_level"] == 3
    assert not ds["beaten"].sel(scale=[1, 2, 4, 8]).any()


def test_outputs_equal_to_img_true_beat_every_depth(truth, results_store, tmp_path):
    pixels, sources = truth
    folder = write_predictions(tmp_path / "pred", sources, pixels)
    gray = run_advise(str(results_store), str(folder), variant="gray")
    assert np.isposinf(gray["output_psnr_db"].values).all()
    assert gray["beaten"].all() and gray.attrs["crossover_level"] == 0
    assert gray.attrs["skip_level"] is None and "beats every skip copy" in gray.attrs["conclusion"]
    ceiling = psnr_ceiling_db(256)
    expected = (ceiling - gray["p_psnr_db"]).mean("image")
    np.testing.assert_allclose(gray["diff_mean_db"], expected, rtol=1e-12)
    assert (gray["share_output_le_p"] == 0).all()
    # With the true image as input, scale 1 is the identity: an identical output only ties.
    true = run_advise(str(results_store), str(folder), variant="true")
    assert verdicts(true)[1] == AS_GOOD and float(true["diff_mean_db"].sel(scale=1)) == 0.0
    assert true["beaten"].sel(scale=[2, 4, 8, 16, 32]).all()
    assert true.attrs["crossover_level"] == 1
    assert float(true["share_output_le_p"].sel(scale=1)) == 1.0


def noisy(image: np.ndarray, target_db: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` + Gaussian noise, rounded and clipped, with a PSNR within 0.01 dB of target."""
    x = image.astype(np.float64)
    z = rng.standard_normal(image.shape)
    target_mse = 255.0**2 / 10 ** (target_db / 10)
    sigma = math.sqrt(target_mse)
    for _ in range(20):
        out = np.clip(np.rint(x + sigma * z), 0, 255).astype(np.uint8)
        mse = np.mean((out.astype(np.float64) - x) ** 2)
        if abs(10 * math.log10(target_mse / mse)) < 0.005:
            return out
        sigma *= math.sqrt(target_mse / mse)
    raise AssertionError("noise calibration did not converge")


@pytest.mark.parametrize(("offset_db", "crossover_scale"), [(0.3, 8), (-0.3, 16)])
def test_noisy_outputs_sit_where_their_psnr_puts_them(
    offset_db, crossover_scale, truth, p_gray, results_store, tmp_path
):
    pixels, sources = truth
    rng = np.random.default_rng(42)
    targets = p_gray[:, 3] + offset_db  # each image 0.3 dB above / below its own p_3
    outputs = np.stack([noisy(x, t, rng) for x, t in zip(pixels, targets, strict=True)])
    folder = write_predictions(tmp_path / "pred", sources, outputs)
    ds = run_advise(str(results_store), str(folder), variant="gray")
    np.testing.assert_allclose(ds["output_psnr_db"], targets, atol=0.01)
    d3 = ds.sel(scale=8)
    assert float(d3["diff_mean_db"]) == pytest.approx(offset_db, abs=0.01)
    assert float(d3["diff_ci_high_db"]) - float(d3["diff_ci_low_db"]) < 0.02
    assert float(d3["share_output_le_p"]) == (1.0 if offset_db < 0 else 0.0)
    assert ds.attrs["crossover_scale"] == crossover_scale
    assert not ds["beaten"].sel(scale=slice(None, crossover_scale // 2)).any()
    assert ds["beaten"].sel(scale=slice(crossover_scale, None)).all()


# --- mismatches -------------------------------------------------------------------------------


def test_mismatched_predictions_are_reported_and_the_rest_analysed(truth, results_store, tmp_path):
    pixels, sources = truth
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


def test_a_prediction_store_pairs_by_source(truth, results_store, images_store, tmp_path):
    pixels, sources = truth
    outputs = rounded_pu(pixels, "gray", 8)
    order = np.random.default_rng(0).permutation(len(sources))[:-1]  # shuffled, one missing
    names = np.array([sources[i] for i in order], dtype=object)
    store = xr.Dataset(
        {"images": (("image", "y", "x", "channel"), outputs[order])},
        coords={"source": ("image", names)},
    )
    store["images"] = store["images"].chunk({"image": 4})
    store.to_zarr(tmp_path / "pred.zarr", consolidated=False)
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
    truth, results_store, images_store, tmp_path
):
    pixels, sources = truth
    folder = write_predictions(tmp_path / "pred", sources[:1], pixels[:1])
    results = xr.open_zarr(results_store)
    del results.attrs["images_store"], results.attrs["images_store_relative"]
    with pytest.raises(ValueError, match="--images STORE"):
        run_advise(results, str(folder), variant="gray")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_advise(results, str(folder), variant="gray", images=str(tmp_path / "nowhere.zarr"))
    one = run_advise(results, str(folder), variant="gray", images=str(images_store))
    assert one.attrs["n_images"] == 1 and one.attrs["crossover_level"] is None
    assert one.attrs["conclusion"].startswith("Fewer than 2 paired images")


# --- one number -------------------------------------------------------------------------------


def test_output_psnr_number_is_compared_with_mean_p(results_store, p_gray):
    mean_p = p_gray.mean(axis=0)
    number = (mean_p[2] + mean_p[3]) / 2
    ds = advise(str(results_store), output_psnr=number, variant="gray")
    assert ds.attrs["mode"] == "output_psnr" and "output_psnr_db" not in ds
    np.testing.assert_allclose(ds["diff_mean_db"], number - mean_p)
    assert ds["diff_ci_low_db"].isnull().all() and ds["share_output_le_p"].isnull().all()
    assert ds.attrs["crossover_scale"] == 8 and "no interval" in ds.attrs["conclusion"]
    assert "no confidence interval" in ds.attrs["limits"]
    text = format_advice(ds)
    assert "p_i of mean MSE" in text and "CI" not in text.splitlines()[3]
    rows = json.loads(format_advice(ds, "json"))["rows"]
    assert rows[0]["diff_ci_low_db"] is None and rows[3]["beaten"] is True


# --- tables, figure, command line ------------------------------------------------------------


def test_tables_and_plot(truth, results_store, tmp_path):
    pixels, sources = truth
    folder = write_predictions(tmp_path / "pred", sources, rounded_pu(pixels, "gray", 8))
    ds = run_advise(str(results_store), str(folder), variant="gray")
    rows = list(csv.DictReader(io.StringIO(format_advice(ds, "csv"))))
    assert [int(r["scale"]) for r in rows] == [1, 2, 4, 8, 16, 32]
    assert [int(r["level"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    assert float(rows[4]["diff_ci_low_db"]) == pytest.approx(float(ds["diff_ci_low_db"][4]))
    markdown = format_advice(ds, "markdown")
    assert "| level | scale | resolution | p_i mean | output mean |" in markdown
    assert "Crossover at level 4 (16 px)" in markdown
    with pytest.raises(ValueError, match="format must be one of"):
        format_advice(ds, "html")
    plot_advice(ds, str(tmp_path / "advice.png"))
    with Image.open(tmp_path / "advice.png") as img:
        assert img.format == "PNG" and img.size[0] > 1000


def test_cli_on_a_real_cluster(truth, results_store, local_cluster, tmp_path, capsys):
    pixels, sources = truth
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
    assert f"plot written to {plot}" in captured.err and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "gray"], "exactly one of --predictions and --output-psnr"),
        (["--variant", "gray", "--output-psnr", "15", "--predictions", "{tmp}"], "exactly one"),
        (["--variant", "sepia", "--output-psnr", "15"], "Invalid value for '--variant'"),
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
def test_cli_usage_errors_exit_2(args, message, results_store, truth, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "one" / truth[1][0], truth[0][0])
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
