"""Nothing hangs, one bad file never stops a run: real processes, real kills, real signals.

- a file whose decoding kills its worker (out of memory under a nanny's memory limit, or a
  SIGKILL from the test hook ``PUPSNR_KILL_WORKER_ON`` of ``tests/killhook``) is rejected,
  alone; the rest is kept;
- a file name that is not valid UTF-8 is rejected, its name stored escaped;
- a cluster left without workers ends the command after ``--no-worker-timeout``, resumably;
- Ctrl-C (SIGINT to the whole process group) and an unreachable S3 endpoint: one line;
- a bug is shown as one, with its traceback; a user error stays one line.

Every process is started in a session of its own and killed in ``finally``; every wait is
bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import dask
import killhook.sitecustomize as killhook
import numpy as np
import pytest
import xarray as xr
from clusters import (
    IMAGE_VARS,
    RUN_TIMEOUT,
    assert_same_bits,
    chunk_files,
    dask_command,
    free_port,
    kill_group,
    process_cluster,
    wait_for_workers,
    wait_until,
)
from conftest import random_photo, write_image
from distributed.diagnostics.plugin import WorkerPlugin
from storefiles import files

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask import schema
from pupsnr_dask.cli import main, user_error_message
from pupsnr_dask.cluster import NoWorkerError, compute, connect
from pupsnr_dask.ingest import KILLED_WORKER_REASON
from pupsnr_dask.store.fs import lock_path, parse_storage_options, partial_path

SIZE, CHUNK = 32, 3
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")


def pupsnr(*args: str) -> list[str]:
    return [sys.executable, "-m", "pupsnr_dask", *args]


def sync_ingest(src: Path, store: Path, **kwargs):
    with dask.config.set(scheduler="sync"):
        return ingest(str(src), str(store), progress=False, **kwargs)


def write_solid_png(path: Path, width: int, height: int) -> Path:
    """A 16-bit RGBA PNG of one colour: a few MB on disk, ``width * height * 8`` bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = (b"\x00" + struct.pack(">4H", 9000, 30000, 50000, 65535) * width) * 100
    compressor = zlib.compressobj(1)
    data = b"".join(compressor.compress(rows) for _ in range(height // 100)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height // 100 * 100, 16, 6, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def good_images(src: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(src / f"d{i % 2}" / f"img{i:02d}.png", random_photo(rng, 30, 40))


def assert_same_except(store: Path, reference: Path, guilty: str, reason: str) -> None:
    """``store`` holds what ``reference`` (SRC without ``guilty``) holds, plus its rejection."""
    got, ref = xr.open_zarr(store), xr.open_zarr(reference)
    assert_same_bits(got, ref, IMAGE_VARS)
    assert files(store / schema.IMAGES) == files(reference / schema.IMAGES)
    skip = {"src", "n_files", schema.REJECTED_ATTR}
    assert {k: v for k, v in got.attrs.items() if k not in skip} == {
        k: v for k, v in ref.attrs.items() if k not in skip
    }
    assert got.attrs["n_files"] == ref.attrs["n_files"] + 1
    entry = {"source": guilty, "reason": reason, "color_score": None}
    ref_rejected = schema.json_attr(ref.attrs, schema.REJECTED_ATTR)
    expected = sorted([*ref_rejected, entry], key=lambda r: r["source"])
    assert schema.json_attr(got.attrs, schema.REJECTED_ATTR) == expected


# --- a file that kills its worker --------------------------------------------------------------


@pytest.fixture(scope="module")
def oom_world(tmp_path_factory):
    """SRC: 8 colour images and a 3 MB PNG that needs 648 MB to decode; SRC without it, ingested."""
    root = tmp_path_factory.mktemp("oom")
    good_images(root / "src", 8, seed=5)
    write_solid_png(root / "src" / "d0" / "img03_huge.png", 9000, 9000)  # in batch 1 of 3
    shutil.copytree(root / "src", root / "without", ignore=shutil.ignore_patterns("*huge*"))
    sync_ingest(root / "without", root / "reference.zarr", size=SIZE, chunk_size=CHUNK)
    return root


class _NoDecodeBudget(WorkerPlugin):
    """Worker plugin: lift ingest's decode-memory estimate on every worker it reaches."""

    def setup(self, worker):
        import importlib

        ingest_module = importlib.import_module("pupsnr_dask.kernels.image")
        ingest_module.MAX_DECODE_BYTES = 1 << 50
        ingest_module.DECODE_MEMORY_FRACTION = 1 << 20


def test_a_file_that_runs_its_worker_out_of_memory_is_rejected_and_the_rest_kept(
    oom_world, tmp_path
):
    """A nanny kills its worker at its memory limit while one PNG decodes: only that PNG lost."""
    from distributed import Client, LocalCluster

    store = tmp_path / "images.zarr"
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="350MB",
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        # The decode-memory estimate would reject the PNG unread (test_untrusted.py covers
        # that): switch it off on every worker, restarted ones too, so the nanny kills it.
        client.register_plugin(_NoDecodeBudget(), name="no-decode-budget")
        summary = ingest(str(oom_world / "src"), str(store), size=SIZE, chunk_size=CHUNK,
                         progress=False)  # fmt: skip
        again = ingest(str(oom_world / "src"), str(store), size=SIZE, chunk_size=CHUNK,
                       progress=False)  # fmt: skip
    assert f"  rejected 1: {KILLED_WORKER_REASON}" in summary.lines()
    assert (summary.n_files, summary.n_images) == (9, 8)
    assert again.n_files == 0 and again.n_total == 8  # the rerun does not decode it again
    assert not Path(partial_path(str(store))).exists()
    assert_same_except(store, oom_world / "reference.zarr", "d0/img03_huge.png",
                       KILLED_WORKER_REASON)  # fmt: skip


@pytest.fixture(scope="module")
def crash_world(tmp_path_factory):
    """SRC: 9 colour images (3 batches of 3); SRC without d0/img04.png, ingested."""
    root = tmp_path_factory.mktemp("crash")
    good_images(root / "src", 9, seed=8)
    shutil.copytree(root / "src", root / "without", ignore=shutil.ignore_patterns("img04.png"))
    sync_ingest(root / "without", root / "reference.zarr", size=SIZE, chunk_size=CHUNK)
    return root


def test_a_file_that_crashes_its_worker_is_rejected_by_the_cli(crash_world, tmp_path):
    """`pupsnr ingest` on a local cluster whose worker SIGKILLs itself on one file: exit 0."""
    store = tmp_path / "images.zarr"
    env = killhook.env(
        **{killhook.KILL_WORKER_ENV: "d0/img04.png"},
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0",
    )
    argv = pupsnr("ingest", str(crash_world / "src"), "-o", str(store), "--size", str(SIZE),
                  "--chunk-size", str(CHUNK), "--n-workers", "2", "-q")  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          start_new_session=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "9 files, 8 colour images stored" in proc.stdout
    assert f"rejected 1: {KILLED_WORKER_REASON}" in proc.stdout
    assert_same_except(store, crash_world / "reference.zarr", "d0/img04.png", KILLED_WORKER_REASON)
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                           start_new_session=True)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "is up to date with SRC: no new files, 8 images" in rerun.stdout


def test_a_file_that_crashes_its_process_under_the_processes_scheduler(
    crash_world, tmp_path, monkeypatch
):
    """Dask's local `processes` scheduler: a dead process breaks the pool, not the ingest."""
    monkeypatch.setenv(killhook.KILL_WORKER_ENV, "d0/img04.png")
    monkeypatch.setenv("PYTHONPATH", killhook.env()["PYTHONPATH"])  # the pool's processes
    store = tmp_path / "images.zarr"
    with dask.config.set(scheduler="processes", num_workers=2):
        summary = ingest(str(crash_world / "src"), str(store), size=SIZE, chunk_size=CHUNK,
                         progress=False)  # fmt: skip
    assert f"  rejected 1: {KILLED_WORKER_REASON}" in summary.lines()
    assert_same_except(store, crash_world / "reference.zarr", "d0/img04.png", KILLED_WORKER_REASON)


# --- a file name that is not valid UTF-8 -------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_rejected_and_the_ingest_goes_on(tmp_path, capsys):
    src, store = tmp_path / "src", tmp_path / "images.zarr"
    good_images(src, 4, seed=3)
    rng = np.random.default_rng(4)
    (src / "d1").mkdir(exist_ok=True)
    bad = os.path.join(os.fsencode(src / "d1"), b"bad\xff\xfe.png")
    write_image(Path(os.fsdecode(bad)), random_photo(rng, 30, 40))
    argv = ["ingest", str(src), "-o", str(store), "--size", str(SIZE), "--chunk-size", "2"]
    assert main([*argv, "--n-workers", "1", "-q"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    escaped = "d1/bad\\xff\\xfe.png"
    reason = f"file name is not valid UTF-8: stored escaped as '{escaped}'"
    assert "5 files, 4 colour images stored" in out
    assert f"  rejected 1: {reason}" in out
    metadata = json.loads((store / "zarr.json").read_text(encoding="utf-8"))
    assert schema.json_attr(metadata["attributes"], schema.REJECTED_ATTR) == [
        {"source": escaped, "reason": reason, "color_score": None}
    ]
    assert main([*argv, "--n-workers", "1", "-q"]) == 0  # the rerun: nothing new, no error
    assert "is up to date with SRC: no new files, 4 images" in capsys.readouterr().out


# --- a cluster without workers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def long_store(tmp_path_factory) -> Path:
    """40 colour images in chunks of 2: 20 results chunks, 0.1-0.5 s each with --method literal."""
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(11)
    for i in range(40):
        write_image(root / "src" / f"{i:03d}.png", random_photo(rng, 48, 40))
    sync_ingest(root / "src", root / "data.zarr", chunk_size=2)
    with dask.config.set(scheduler="threads"):
        run(str(root / "data.zarr"), str(root / "psnr.zarr"), method="literal", progress=False)
    return root


def start_worker(address: str, tmp: Path, name: str) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen(
        [*dask_command(), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
         "--name", name, "--local-directory", str(tmp / name)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def test_run_with_no_worker_left_stops_after_the_timeout_and_resumes(long_store, tmp_path):
    """SIGKILL the only worker mid-run: one line and exit 2 after 3 s; a new worker finishes it."""
    results = tmp_path / "psnr.zarr"
    with process_cluster(tmp_path / "cluster", n_workers=1) as cluster:
        argv = pupsnr(
            "run",
            str(long_store / "data.zarr"),
            "-o",
            str(results),
            "--method",
            "literal",
            "--scheduler",
            cluster.address,
            "--no-worker-timeout",
            "3",
            "-q",
        )
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            done = Path(partial_path(str(results))) / "done"  # a chunk is done once marked
            wait_until(lambda: done.is_dir() and any(done.glob("*.json")), "a chunk's marker")
            kill_group(cluster.workers[0])
            written = chunk_files(results)
            _, err = proc.communicate(timeout=RUN_TIMEOUT)  # a hang fails here
        finally:
            kill_group(proc)
        assert written < 20, "the run ended before the worker was killed"
        assert proc.returncode == 2, err
        assert err.strip().splitlines() == [
            f"pupsnr: error: no Dask worker for 3 s: the scheduler at '{cluster.address}' has "
            "none left (did they die? out of memory?); start workers, then rerun the command "
            "to resume"
        ]
        assert Path(partial_path(str(results))).exists()
        assert not Path(lock_path(str(results))).exists()
        cluster.workers.append(start_worker(cluster.address, tmp_path / "cluster", "new"))
        wait_for_workers(cluster.address, [], 1)
        again = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert "resumed an interrupted run" in again.stdout
    assert files(results) == files(long_store / "psnr.zarr")
    assert not Path(partial_path(str(results))).exists()


def test_compute_with_no_worker_at_all_gives_up_after_no_worker_timeout(tmp_path, monkeypatch):
    """A scheduler that never had a worker: compute() raises NoWorkerError, also via $ENV."""
    with process_cluster(tmp_path / "cluster", n_workers=0) as cluster:
        with connect(cluster.address, quiet=True, no_worker_timeout=1):
            with pytest.raises(NoWorkerError, match=r"^no Dask worker for 1 s: the scheduler"):
                compute(dask.delayed(sum)([1, 2]), progress=False)
        monkeypatch.setenv("PUPSNR_NO_WORKER_TIMEOUT", "0.5")
        with connect(cluster.address, quiet=True):
            with pytest.raises(NoWorkerError, match=r"^no Dask worker for 0.5 s"):
                compute(dask.delayed(sum)([1, 2]), progress=False)
        monkeypatch.setenv("PUPSNR_NO_WORKER_TIMEOUT", "soon")
        with pytest.raises(ValueError, match=r"PUPSNR_NO_WORKER_TIMEOUT must be a positive"):
            with connect(cluster.address, quiet=True):
                pass


# --- Ctrl-C ------------------------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted(argv: list[str], started, log: Path) -> tuple[int, str, str]:
    """Run ``argv`` in a session of its own; once ``started()``, SIGINT its whole group.

    The child starts with SIGINT at its default, as a job in the foreground of a terminal does:
    started in the background by a shell without job control (``cmd &`` in a script, as CI
    runners and ``nohup`` do), the tests would hand down an *ignored* SIGINT, which Python keeps
    ignoring, and the command would rightly run to its end.

    Returns the exit status, all of standard error, and what it printed after the signal.
    """
    with open(log, "w+b") as err:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        try:
            wait_until(lambda: started() or proc.poll() is not None, "the work", RUN_TIMEOUT)
            assert proc.poll() is None, "it ended before it could be interrupted"
            err.flush()
            before = os.path.getsize(log)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group
            proc.wait(timeout=RUN_TIMEOUT)
        finally:
            kill_group(proc)
        text = log.read_text()
    return proc.returncode, text, log.read_bytes()[before:].decode()


def assert_interrupted(outcome: tuple[int, str, str]) -> None:
    returncode, stderr, after = outcome
    assert returncode == 130, stderr[-3000:]
    assert after.splitlines() == ["pupsnr: interrupted; rerun the same command to resume"], after
    assert "Traceback" not in stderr


def test_ctrl_c_during_ingest_is_one_line_and_the_rerun_resumes(sample_dir, tmp_path):
    store = tmp_path / "data.zarr"
    src = tmp_path / "src"  # four copies of the samples: enough work left when the signal comes
    for k in range(4):
        shutil.copytree(sample_dir, src / f"copy{k}")
    sync_ingest(src, tmp_path / "reference.zarr", chunk_size=2)
    records = Path(partial_path(str(store))) / "done" / "batch"  # staged batches' markers
    argv = pupsnr("ingest", str(src), "-o", str(store), "--chunk-size", "2",
                  "--n-workers", "2")  # fmt: skip
    log = tmp_path / "stderr.txt"
    assert_interrupted(interrupted(argv, lambda: records.is_dir() and any(records.iterdir()), log))
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed an interrupted ingest" in rerun.stdout
    assert files(store) == files(tmp_path / "reference.zarr")


def test_ctrl_c_during_run_is_one_line_and_the_rerun_resumes(sample_dir, tmp_path):
    store, results = tmp_path / "data.zarr", tmp_path / "psnr.zarr"
    sync_ingest(sample_dir, store, chunk_size=2)
    with dask.config.set(scheduler="threads"):
        run(str(store), str(tmp_path / "reference-psnr.zarr"), method="literal", progress=False)
    log = tmp_path / "stderr.txt"
    argv = pupsnr("run", str(store), "-o", str(results), "--method", "literal", "--n-workers", "2")
    assert_interrupted(interrupted(argv, lambda: chunk_files(results), log))
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert files(results) == files(tmp_path / "reference-psnr.zarr")


# --- object storage that cannot be reached -----------------------------------------------------


def test_an_unreachable_s3_endpoint_is_one_line_naming_it_and_no_secret(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    options = {"endpoint_url": endpoint, "key": "AKIAPUPSNRHANGS00001", "secret": "hangs-s3cr3t"}
    proc = subprocess.run(
        pupsnr("ingest", "s3://bucket/src", "-o", str(tmp_path / "d.zarr"), "-q",
               "--storage-options", json.dumps(options)),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
        # No "port 8787 is already in use" from the local cluster's dashboard: not ours to count.
        env={**os.environ, "AWS_CONFIG_FILE": str(tmp_path / "none"),
             "PYTHONWARNINGS": "ignore::UserWarning"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith("pupsnr: error: object storage at ")
    assert endpoint in proc.stderr
    assert "AKIAPUPSNRHANGS00001" not in proc.stderr and "hangs-s3cr3t" not in proc.stderr


# --- user errors and bugs ----------------------------------------------------------------------


def raised(call) -> BaseException:
    try:
        call()
    except Exception as err:
        return err
    raise AssertionError("nothing raised")


def test_user_errors_are_one_line_and_bugs_are_not():
    from botocore.exceptions import EndpointConnectionError

    from pupsnr_dask.experiment import check_selection

    ours = raised(lambda: check_selection(["sepia"], [1], 256))
    assert (
        user_error_message(ours) == "variant must be one of ('true', 'gray', 'mosaic'), got 'sepia'"
    )
    missing = raised(lambda: open("/nonexistent/pupsnr"))
    assert "No such file or directory" in user_error_message(missing)
    endpoint = EndpointConnectionError(endpoint_url="http://user:pa55@127.0.0.1:9/b/k?sig=x")
    message = user_error_message(endpoint)
    assert message.startswith("object storage at http://127.0.0.1:9/b/k: Could not connect")
    assert "pa55" not in message and "sig=x" not in message
    for bug in (
        raised(lambda: np.zeros(3) + np.zeros(4)),  # a ValueError raised inside numpy
        raised(lambda: parse_storage_options(42)),  # a TypeError: wrong kind passed
        raised(lambda: hashlib.sha256(os.fsdecode(b"\xff").encode())),  # UnicodeEncodeError
        raised(lambda: {}["key"]),
    ):
        assert user_error_message(bug) is None, bug
