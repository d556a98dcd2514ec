"""The ONNX inference layer, on real ONNX models built by tests/onnx_models.py (nothing is
downloaded) and the real sample photos of the images store."""

from __future__ import annotations

import dataclasses
import os
import sys

import dask
import dask.array as da
import numpy as np
import onnx_models as om
import pytest
import xarray as xr
from clusters import process_cluster

from pupsnr_dask import model as M
from pupsnr_dask.kernels.variants import gray_kernel, pu_kernel

UNIT = {"input_range": "unit", "output_range": "unit"}


@pytest.fixture(scope="module")
def truth(images_store) -> np.ndarray:
    """img_true of the sample photos, in memory: (n, 256, 256, 3) uint8."""
    return xr.open_zarr(images_store)["images"].values


def lazy(pixels: np.ndarray, chunk: int) -> da.Array:
    return da.from_array(pixels, chunks=(chunk, -1, -1, -1))


def small(truth: np.ndarray, size: int = 32) -> np.ndarray:
    """The sample photos cut to ``size`` x ``size``: cheap for graphs that only pass pixels."""
    return np.ascontiguousarray(truth[:, :size, :size])


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --- models whose answer is known -----------------------------------------------------------------


def test_pu_graph_outputs_equal_run_pu_of_gray_rounded(truth):
    spec = M.inspect_model(om.pu_model(8), **UNIT)
    assert (spec.layout, spec.input_range, spec.output_range) == ("NCHW", "unit", "unit")
    out = M.predict(lazy(truth, 5), spec, "gray").compute(scheduler="sync")
    expected = np.rint(pu_kernel(gray_kernel(truth), 8)).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == truth.shape
    np.testing.assert_array_equal(out, expected)
    # Not a vacuous comparison: the gray inputs differ from their PU, and ties (x.5) exist,
    # which only a decoding that rounds half to even in float32 gets right.
    assert not np.array_equal(expected, gray_kernel(truth))
    assert (pu_kernel(gray_kernel(truth), 8) % 1 == 0.5).any()


def test_a_pu_graph_pooling_float_values_moves_only_ties(truth):
    """Pooling the [0, 1] values themselves (float32 sums a few ulps off) changes only the
    pixels whose exact PU value is a tie x.5, by one: why the exact graph recovers integers."""
    spec = M.inspect_model(om.pu_model(8, exact=False), **UNIT)
    out = M.run_model_kernel(np.asarray(gray_kernel(truth)), spec).astype(int)
    exact = pu_kernel(gray_kernel(truth), 8)
    differ = out != np.rint(exact)
    assert np.all(exact[differ] % 1 == 0.5)
    assert np.all(np.abs(out - np.rint(exact))[differ] == 1)


@pytest.mark.parametrize("layout, dtype", [("NHWC", "float"), ("NCHW", "uint8"), ("NHWC", "uint8")])
def test_pu_graph_in_other_layouts_and_types(truth, layout, dtype):
    ranges = UNIT if dtype == "float" else {}
    spec = M.inspect_model(om.pu_model(8, layout=layout, dtype=dtype), **ranges)
    assert spec.layout == layout
    out = M.predict(lazy(truth, 4), spec, "gray").compute(scheduler="sync")
    np.testing.assert_array_equal(out, np.rint(pu_kernel(gray_kernel(truth), 8)))


def test_identity_graph_on_true_returns_the_inputs(truth):
    spec = M.inspect_model(om.identity_model(layout="NHWC", dtype="uint8"))
    assert (spec.layout, spec.input_range, spec.output_range) == ("NHWC", "uint8", "uint8")
    out = M.predict(lazy(truth, 3), spec, "true").compute(scheduler="threads")
    np.testing.assert_array_equal(out, truth)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(
    "dtype, value_range",
    [
        ("float", "unit"),
        ("float", "signed"),
        ("float", "uint8"),
        ("double", "signed"),
        ("uint8", "uint8"),
    ],
)
def test_identity_round_trips_every_encoding(truth, layout, dtype, value_range):
    """Encode then decode in the same range: every pixel value comes back unchanged."""
    every_value = np.arange(256 * 3, dtype=np.uint8).reshape(1, 16, 16, 3)
    pixels = np.concatenate([small(truth, 16), every_value])
    ranges = {"input_range": value_range, "output_range": value_range}
    spec = M.inspect_model(om.identity_model(16, layout=layout, dtype=dtype), size=16, **ranges)
    assert spec.layout == layout
    np.testing.assert_array_equal(M.run_model_kernel(pixels, spec), pixels)


def test_input_and_output_ranges_are_independent(truth):
    """A model taking [0, 1] and answering the same image in [-1, 1]."""
    spec = M.inspect_model(
        om.swap_range_model(32), size=32, input_range="unit", output_range="signed"
    )
    np.testing.assert_array_equal(M.run_model_kernel(small(truth), spec), small(truth))
    wrong = M.inspect_model(om.swap_range_model(32), size=32, **UNIT)
    assert not np.array_equal(M.run_model_kernel(small(truth), wrong), small(truth))


@pytest.mark.parametrize("dtype, value", [("float", 0.5), ("uint8", 128)])
def test_constant_model_answers_mid_gray_whatever_the_input(truth, dtype, value):
    ranges = UNIT if dtype == "float" else {}
    spec = M.inspect_model(om.constant_model(value, dtype=dtype), **ranges)
    out = M.predict(lazy(truth, 5), spec, "mosaic").compute(scheduler="sync")
    # 0.5 * 255 = 127.5 rounds half to even: 128, as the uint8 model says.
    assert out.shape == truth.shape and np.all(out == 128)


# --- what is read from the graph, its metadata, or the options ------------------------------------


def test_ranges_declared_in_the_metadata_are_used():
    meta = {"pupsnr.input_range": "signed", "pupsnr.output_range": "unit"}
    spec = M.inspect_model(
        om.identity_model(16, layout="NCHW", dtype="float", metadata=meta), size=16
    )
    assert (spec.input_range, spec.output_range) == ("signed", "unit")
    # An option overrides the metadata.
    spec = M.inspect_model(
        om.identity_model(16, layout="NCHW", dtype="float", metadata=meta), size=16,
        input_range="unit",
    )  # fmt: skip
    assert (spec.input_range, spec.output_range) == ("unit", "unit")


def test_metadata_declares_the_layout_of_a_shape_that_does_not_tell(truth):
    meta = {"pupsnr.layout": "NHWC"}
    spec = M.inspect_model(om.identity_model(32, layout="?", metadata=meta), size=32)
    assert spec.layout == "NHWC"
    np.testing.assert_array_equal(M.run_model_kernel(small(truth), spec), small(truth))


def test_a_bad_metadata_value_is_one_line_error_naming_key_and_option():
    meta = {"pupsnr.input_range": "0-1"}
    with pytest.raises(ValueError) as err:
        M.inspect_model(om.identity_model(16, dtype="float", metadata=meta), size=16)
    text = one_line_error(err)
    assert "pupsnr.input_range='0-1'" in text and "--input-range" in text


def test_ambiguous_float_model_without_ranges_is_one_line_error_naming_the_options():
    with pytest.raises(ValueError) as err:
        M.inspect_model(om.pu_model(8))
    text = one_line_error(err)
    assert "input range" in text and "--input-range" in text
    assert "output range" in text and "--output-range" in text
    assert "'unit'" in text and "'signed'" in text and "--layout" not in text
    with pytest.raises(ValueError) as err:  # the output's alone
        M.inspect_model(om.pu_model(8), input_range="unit")
    assert "--output-range" in one_line_error(err) and "--input-range" not in str(err.value)


def test_a_layout_the_shape_does_not_tell_is_one_line_error_naming_the_option():
    with pytest.raises(ValueError) as err:
        M.inspect_model(om.identity_model(16, layout="?"), size=16)
    text = one_line_error(err)
    assert "layout" in text and "--layout" in text and "(n, a, b, c)" in text
    # 3 in position 1 and last too: ambiguous.
    with pytest.raises(ValueError, match="--layout"):
        M.inspect_model(om.identity_model(3, layout="NCHW"), size=3)
    assert M.inspect_model(om.identity_model(3, layout="NCHW"), size=3, layout="NCHW")


@pytest.mark.parametrize("static", [True, False], ids=["static-shape", "probe-run"])
def test_wrong_output_size_is_one_line_error_naming_both_shapes(static):
    with pytest.raises(ValueError) as err:
        M.inspect_model(om.downsample_model(64, static=static), size=64, **UNIT)
    text = one_line_error(err)
    assert "(n, 3, 64, 64)" in text
    assert ("(n, 3, 32, 32)" if static else "(1, 3, 32, 32)") in text
    assert static or "probe" in text


def test_an_input_of_another_size_is_an_error_naming_both_shapes():
    with pytest.raises(ValueError) as err:
        M.inspect_model(om.identity_model(224, layout="NHWC"), size=256)
    text = one_line_error(err)
    assert "(n, 224, 224, 3)" in text and "(n, 256, 256, 3)" in text


def test_overrides_that_contradict_the_graph_are_refused():
    with pytest.raises(ValueError, match="uint8 input: it can only be 'uint8'"):
        M.inspect_model(om.identity_model(16, dtype="uint8"), size=16, input_range="unit")
    with pytest.raises(ValueError, match=r"layout must be one of \('NCHW', 'NHWC'\), got 'CHW'"):
        M.inspect_model(om.identity_model(16), size=16, layout="CHW")
    with pytest.raises(ValueError, match="does not match"):  # NHWC model told NCHW
        M.inspect_model(om.identity_model(16, layout="NHWC"), size=16, layout="NCHW")


def test_bad_model_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        M.inspect_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="onnxruntime cannot load the model") as err:
        M.inspect_model(tmp_path / "junk.onnx")
    assert "\n" not in str(err.value)


def test_a_path_is_kept_absolute_and_a_changed_file_is_refused(tmp_path, monkeypatch, truth):
    monkeypatch.chdir(tmp_path)
    om.save(om.identity_model(32), tmp_path / "m.onnx")
    spec = M.inspect_model("m.onnx", size=32)
    assert spec.model == str(tmp_path / "m.onnx")
    # A process that has no session for it yet reads the file again: it must be the same.
    changed = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(ValueError, match="changed since it was inspected"):
        M.run_model_kernel(small(truth), changed)


def test_providers_are_checked_by_name_and_used_when_available(truth):
    with pytest.raises(ValueError, match="provider names"):
        M.inspect_model(om.identity_model(32), size=32, providers=("cuda",))
    # A GPU provider is accepted by name (the workers may have it); without it, CPU is used.
    spec = M.inspect_model(
        om.identity_model(32), size=32, providers=("CUDAExecutionProvider", "CPUExecutionProvider")
    )
    np.testing.assert_array_equal(M.run_model_kernel(small(truth), spec), small(truth))
    gpu_only = dataclasses.replace(spec, providers=("CUDAExecutionProvider",))
    with pytest.raises(ValueError, match="none of the providers"):
        M.run_model_kernel(small(truth), gpu_only)


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "pupsnr-dask\[model\]"'):
        M.inspect_model(om.identity_model(16), size=16)


# --- the kernel -----------------------------------------------------------------------------------


def test_decoding_clips_and_rounds_half_to_even_in_the_outputs_type():
    y = np.array([-0.2, 0.0, 0.5, 1.5 / 255, 2.5 / 255, 1.0, 7.0, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(M.decode_output(y, "unit"), [0, 0, 128, 2, 2, 255, 255, 0])
    s = np.array([-3, -1, 0, 1, 3], dtype=np.float16)
    np.testing.assert_array_equal(M.decode_output(s, "signed"), [0, 0, 128, 255, 255])
    f = np.array([-1, 0.5, 1.5, 2.5, 254.5, 300], dtype=np.float64)
    np.testing.assert_array_equal(M.decode_output(f, "uint8"), [0, 0, 2, 2, 254, 255])


def test_a_fixed_batch_model_runs_in_batches_with_the_last_padded(truth):
    pixels = small(truth)[:5]
    for batch in (1, 2):
        spec = M.inspect_model(om.identity_model(32, batch=batch), size=32)
        assert spec.batch == batch
        out = M.predict(lazy(pixels, 3), spec).compute(scheduler="sync")
        np.testing.assert_array_equal(out, pixels)


def test_predict_builds_a_deterministic_graph_and_computes_nothing(truth):
    spec = M.inspect_model(om.identity_model(32), size=32)
    images = lazy(small(truth), 5)

    def refuse(*args, **kwargs):
        raise AssertionError("building the graph computed something")

    with dask.config.set(scheduler=refuse):
        a = M.predict(images, spec, "gray")
        b = M.predict(images, M.inspect_model(om.identity_model(32), size=32), "gray")
        c = M.predict(images, spec, "true")
        other = M.inspect_model(om.identity_model(32, batch=1), size=32)
        d = M.predict(images, other, "gray")
    assert a.name == b.name and a.name.startswith("pupsnr-predict-")
    assert len({a.name, c.name, d.name}) == 3
    assert a.dtype == np.uint8 and a.chunks == images.chunks
    assert len(a.__dask_graph__().layers[a.name]) == images.numblocks[0]


def test_predict_validates_its_images():
    spec = M.inspect_model(om.identity_model(32), size=32)
    with pytest.raises(ValueError, match=r"shape \(n, 32, 32, 3\)"):
        M.predict(da.zeros((2, 16, 16, 3), dtype=np.uint8), spec)
    with pytest.raises(ValueError, match="chunked along the image axis only"):
        M.predict(da.zeros((2, 32, 32, 3), dtype=np.uint8, chunks=(1, 16, 32, 3)), spec)
    with pytest.raises(TypeError, match="uint8"):
        M.predict(da.zeros((2, 32, 32, 3), dtype=np.float32), spec)
    with pytest.raises(ValueError, match="variant must be one of"):
        M.predict(da.zeros((2, 32, 32, 3), dtype=np.uint8), spec, "sepia")


# --- chunkings, schedulers, one session per worker process ----------------------------------------


def test_bit_identical_across_chunkings_and_schedulers_one_session_per_worker(truth, tmp_path):
    """A conv net on the sample photos: chunks of 1, 3 and 5 images on the sync and threaded
    schedulers and on a real `dask scheduler` + 2 `dask worker` processes give the same bytes,
    and each worker process creates exactly one session across all its tasks."""
    from distributed import Client

    path = om.save(om.conv_model(channels=8, n_convs=3), tmp_path / "conv.onnx")
    spec = M.inspect_model(path, **UNIT)
    reference = M.run_model_kernel(truth, spec)  # one batch of all the images
    assert len(np.unique(reference)) > 50  # a real image, not a constant
    arrays = {chunk: M.predict(lazy(truth, chunk), spec, "gray") for chunk in (1, 3, 5)}
    gray_reference = M.run_model_kernel(np.asarray(gray_kernel(truth)), spec)
    for chunk, array in arrays.items():
        for scheduler in ("sync", "threads"):
            out = array.compute(scheduler=scheduler)
            assert out.tobytes() == gray_reference.tobytes(), (chunk, scheduler)
    with process_cluster(tmp_path / "cluster") as cluster, Client(cluster.address) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2
        assert client.run(M.session_count) == dict.fromkeys(workers, 0)
        for chunk, array in arrays.items():
            out = client.compute(array).result()
            assert out.tobytes() == gray_reference.tobytes(), (chunk, "cluster")
        for k, worker in enumerate(workers):  # every worker process runs many tasks
            pinned = M.predict(lazy(truth, 1 + k), spec, "true")  # new keys for each
            out = client.compute(pinned, workers=[worker], allow_other_workers=False).result()
            assert out.tobytes() == reference.tobytes()
        assert client.run(M.session_count) == dict.fromkeys(workers, 1)
        assert len(set(client.run(os.getpid).values())) == 2


def test_a_variant_seeded_from_the_image_source_gets_each_image_its_key(truth):
    """``noise<sigma>`` seeds its noise from each image's source: ``predict`` passes the keys of
    each chunk's images, so the model sees what ``run`` computes, whatever the chunking."""
    from pupsnr_dask.registry import resolve_variant

    spec = M.inspect_model(om.identity_model(32), size=32)
    pixels = small(truth)
    keys = [f"photos/{i:03d}.png" for i in range(len(pixels))]
    expected = resolve_variant("noise25").apply(pixels, keys)
    assert not np.array_equal(expected, pixels)
    for chunk in (1, 4, len(pixels)):
        out = M.predict(lazy(pixels, chunk), spec, "noise25", keys).compute(scheduler="sync")
        np.testing.assert_array_equal(out, expected)
    shuffled = M.predict(lazy(pixels, 4), spec, "noise25", keys[::-1]).compute(scheduler="sync")
    assert not np.array_equal(shuffled, expected)  # the keys, not the positions, seed it
    with pytest.raises(ValueError, match="needs keys"):
        M.predict(lazy(pixels, 4), spec, "noise25")
