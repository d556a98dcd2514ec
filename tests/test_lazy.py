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


def test_work_for_when_the_cluster_has_started_waits_for_it_or_is_dropped():
    """``when_started``: after the lazy start (not competing with it), never without one."""
    import threading

    from pupsnr_dask.cluster import connect, when_started

    go = threading.Event()
    seen: list[bool] = []

    def probe_when_started():  # blocks until told: its thread is visible while it waits
        seen.append(connection.started)
        go.wait(60)

    def waiting() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "pupsnr-probe_when_started"]

    options = {"n_workers": 1, "processes": False, "dashboard_address": ":0", "quiet": True}
    try:
        with connect(lazy=True, **options) as connection:
            when_started(probe_when_started)
            assert not waiting() and not seen  # registered, not running: nothing started
            assert dask.delayed(int)("7").compute() == 7  # the first computation starts it
            (thread,) = waiting()
            go.set()
            thread.join(60)
            assert seen == [True]  # it ran, and only once the cluster was up
        with connect(lazy=True, **options) as connection:  # computes nothing: starts nothing
            when_started(probe_when_started)
        assert not connection.started and not waiting() and seen == [True]
    finally:
        go.set()
    started = threading.Event()
    when_started(started.set)  # no lazy cluster to wait for: at once
    assert started.wait(30)


# -- instant answers (issue 12, item 4): what a command imports and reads ----------------------

#: Run by a fresh interpreter: each command in turn, then which heavy modules it imported.
_IMPORT_PROBE = (
    "import contextlib, io, json, sys\n"
    "from pupsnr_dask.cli import main\n"
    "argv = json.loads(sys.argv[1])\n"
    "out, err = io.StringIO(), io.StringIO()\n"
    "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
    "    code = main(argv)\n"
    "heavy = ('xarray', 'zarr', 'dask', 'dask.array', 'distributed', 'pandas')\n"
    "found = sorted(m for m in heavy if m in sys.modules)\n"
    "print(json.dumps([code, found, err.getvalue(), out.getvalue()]))\n"
)


def _imports_of(argv: list[str], cwd) -> tuple[int, list[str], str]:
    """The exit code, the heavy modules imported and the standard error of a command."""
    return _probe(argv, cwd)[:3]


def _probe(argv: list[str], cwd) -> tuple[int, list[str], str, str]:
    """:func:`_imports_of` and the command's standard output."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps([str(a) for a in argv])],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    code, heavy, err, out = json.loads(proc.stdout.splitlines()[-1])
    return code, heavy, err, out


def test_store_errors_of_run_import_neither_xarray_nor_dask(results_store, tmp_path):
    """A missing store, a folder that is no store, a results store given as STORE: refused from
    the listing and the group's metadata, before xarray, zarr or dask are imported."""
    (tmp_path / "empty").mkdir()
    cases = {
        "missing": (tmp_path / "missing.zarr", "no store at"),
        "not a store": (tmp_path / "empty", "not a readable Zarr store"),
        "results as images": (
            results_store,
            "is a pupsnr 'psnr' store; expected a pupsnr 'images'",
        ),
    }
    for name, (store, message) in cases.items():
        code, heavy, err = _imports_of(["run", store, "-o", tmp_path / "r.zarr", "-q"], tmp_path)
        assert (code, heavy) == (2, []), (name, heavy, err)
        assert message in err, (name, err)


def test_argument_errors_of_ingest_import_neither_xarray_nor_dask_array(sample_dir, tmp_path):
    """A missing SRC and a --size that the scales do not divide: one line, exit 2, without
    xarray, zarr, dask.array or distributed (the ingest package imports them where it uses
    them)."""
    cases = {
        "missing SRC": (["ingest", tmp_path / "nope", "-o", tmp_path / "d.zarr"], "does not exist"),
        "size 7": (
            ["ingest", sample_dir, "-o", tmp_path / "d.zarr", "--size", "7"],
            "size must be a positive multiple of 32",
        ),
    }
    for name, (argv, message) in cases.items():
        code, heavy, err = _imports_of(argv, tmp_path)
        assert code == 2, (name, err)
        assert not set(heavy) & {"xarray", "zarr", "dask.array", "distributed"}, (name, heavy)
        assert message in err, (name, err)
    assert not (tmp_path / "d.zarr").exists()


def test_an_up_to_date_ingest_rerun_imports_neither_distributed_nor_dask_array(
    sample_dir, images_store, tmp_path
):
    """Rerunning the ingest of the same SRC into its finished store: the store's labels and
    attributes are read into NumPy (no dask.array, ~0.6 s of import with what it pulls in),
    no cluster starts, the store is left as it was."""
    before = sorted(
        (p.relative_to(images_store), p.stat().st_mtime_ns) for p in images_store.rglob("*")
    )
    argv = ["ingest", sample_dir, "-o", images_store, "--chunk-size", "5", "-q"]
    code, heavy, err = _imports_of(argv, tmp_path)
    assert code == 0, err
    assert not {"distributed", "dask.array"} & set(heavy), heavy
    assert "xarray" in heavy  # the store was opened (and checked) with xarray
    after = sorted(
        (p.relative_to(images_store), p.stat().st_mtime_ns) for p in images_store.rglob("*")
    )
    assert after == before


def test_an_up_to_date_run_rerun_imports_neither_distributed_nor_dask_array(
    images_store, results_store, tmp_path
):
    """``pupsnr run`` on complete RESULTS: answered from both stores' labels and the results'
    checked chunks, read into NumPy (no dask.array, no cluster), RESULTS left untouched; the
    same RESULTS asked for other scales are still refused."""

    def files() -> list[tuple[object, int]]:
        return sorted(
            (p.relative_to(results_store), p.stat().st_mtime_ns) for p in results_store.rglob("*")
        )

    before = files()
    code, heavy, err, out = _probe(["run", images_store, "-o", results_store], tmp_path)
    assert code == 0, err
    assert "already complete for these images and parameters: nothing recomputed" in out
    assert not {"distributed", "dask.array"} & set(heavy), heavy
    assert files() == before
    argv = ["run", images_store, "-o", results_store, "--scales", "1,2", "-q"]
    code, heavy, err = _imports_of(argv, tmp_path)
    assert code == 2 and "already exist with other scales" in err, err
    assert files() == before


@pytest.mark.parametrize("fmt", ["text", "csv", "json"])
def test_report_tables_import_neither_distributed_nor_dask_array(results_store, tmp_path, fmt):
    """``pupsnr report`` (no --plot, no --html) reads the results into NumPy and summarises
    them with NumPy: neither distributed nor dask.array is imported (xarray imports dask.array
    the first time it wraps NumPy data, so the table is built without such variables)."""
    code, heavy, err = _imports_of(["report", results_store, "--format", fmt], tmp_path)
    assert code == 0, err
    assert not {"distributed", "dask.array"} & set(heavy), heavy
    assert "xarray" in heavy  # the probe sees imports: the store was opened with xarray


def test_open_store_reads_no_data_chunk_unless_asked_to_verify(results_store, tmp_path):
    """The cheap default opens a results store with a damaged PSNR chunk (it reads no data
    chunk); ``verify=True`` finds the damage, naming the chunk; the data read later fails."""
    import shutil

    import zarr

    from pupsnr_dask.schema import StoreError

    damaged = tmp_path / "psnr.zarr"
    shutil.copytree(results_store, damaged)
    chunk = damaged / "psnr" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))

    ds = open_store(str(damaged), "psnr")  # no chunk of psnr or mse read: it opens
    assert ds.sizes == xr.open_zarr(results_store).sizes
    with pytest.raises(StoreError, match=r"chunk 'psnr/c/0/0/0' is damaged \(checksum mismatch\)"):
        open_store(str(damaged), "psnr", verify=True)
    with pytest.raises(Exception, match=r"(?i)checksum"):
        zarr.open_array(str(damaged / "psnr"), mode="r")[:]  # the damage is real
    open_store(str(results_store), "psnr", verify=True)  # a sound store passes the full check


def test_a_damaged_label_chunk_is_refused_by_the_cheap_open(results_store, tmp_path):
    """The labels are read when a store is opened: one that fails to decode is a StoreError."""
    import shutil

    from pupsnr_dask.schema import StoreError

    damaged = tmp_path / "psnr.zarr"
    shutil.copytree(results_store, damaged)
    chunk = damaged / "source" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    for lazy in (True, False):
        with pytest.raises(StoreError, match=r"chunk 'source/c/0' is damaged"):
            open_store(str(damaged), "psnr", lazy=lazy)


@pytest.mark.parametrize("split", ["all", "train"])
def test_a_results_store_read_without_dask_summarizes_bit_identically(results_store, split):
    """``lazy=False`` (what ``pupsnr report`` uses) gives NumPy-backed data and the same table,
    bit for bit, as the dask-backed store summarized on a scheduler."""
    from pupsnr_dask.query import summarize

    plain = open_store(str(results_store), "psnr", lazy=False)
    lazy = open_store(str(results_store), "psnr")
    assert plain["psnr"].chunks is None and lazy["psnr"].chunks is not None
    with dask.config.set(scheduler="sync"):
        expected = summarize(lazy, split)
    got = summarize(plain, split)
    xr.testing.assert_identical(got, expected)
    for name in expected.data_vars:
        np.testing.assert_array_equal(got[name].values, expected[name].values)
