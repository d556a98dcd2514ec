"""``store/lock.py``: one writer per store, on a local disk (flock) and elsewhere (a file).

The command-level cases (a second ``pupsnr run`` refused, a SIGKILLed holder taken over) are in
``test_resume.py`` and ``test_untrusted.py``; these hold the lock itself to its rules, with a
real second process where one is needed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from pupsnr_dask.store import lock as slock
from pupsnr_dask.store.fs import url_to_fs

HOLD = textwrap.dedent(
    """
    import sys, time
    from pupsnr_dask.store.lock import StoreLock
    with StoreLock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def _holding(store: str) -> subprocess.Popen:
    """Another process that holds the lock of ``store`` until a line on its stdin."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, store],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_live_holder_in_another_process_keeps_a_second_writer_out(tmp_path):
    store = str(tmp_path / "d.zarr")
    holder = _holding(store)
    try:
        with pytest.raises(slock.StoreLockedError, match=f"pid {holder.pid} on host"):
            with slock.StoreLock(store):
                pass
        assert slock.read_lock_holder(store)["pid"] == holder.pid
    finally:
        holder.communicate("\n", timeout=30)
    assert not os.path.exists(store + ".lock")  # released: the file is gone
    with slock.StoreLock(store) as lk:  # and the lock is free again
        assert lk.taken_over is None and lk.takeover_note is None


def test_a_killed_holder_leaves_a_lock_that_is_taken_over(tmp_path):
    store = str(tmp_path / "d.zarr")
    holder = _holding(store)
    holder.kill()
    holder.wait(timeout=30)
    with slock.StoreLock(store) as lk:
        assert lk.taken_over["pid"] == holder.pid
        assert lk.takeover_note.startswith(
            f"took over the lock of a process that died (pid {holder.pid} on host"
        )
        assert stat.S_IMODE(os.stat(store + ".lock").st_mode) == slock.LOCK_FILE_MODE


def test_an_up_to_date_run_takes_over_a_dead_writers_lock_and_says_so(images_store, results_store):
    """Complete RESULTS whose lock a killed writer left: the answer takes the lock over, says
    so, then says the results are complete; the lock is released, RESULTS untouched."""
    from pupsnr_dask import run_experiment

    store = str(results_store)
    before = sorted((p, p.stat().st_mtime_ns) for p in results_store.rglob("*"))
    holder = _holding(store)
    holder.kill()
    holder.wait(timeout=30)
    said: list[str] = []
    ds = run_experiment(str(images_store), store, notify=said.append, lazy=False)
    assert said[0].startswith(f"took over the lock of a process that died (pid {holder.pid}")
    assert said[1].endswith(
        "is already complete for these images and parameters: nothing recomputed"
    )
    assert len(said) == 2 and ds["psnr"].chunks is None  # lazy=False: NumPy-backed
    assert not os.path.exists(store + ".lock")
    assert sorted((p, p.stat().st_mtime_ns) for p in results_store.rglob("*")) == before


def test_the_lock_file_records_the_command_with_credentials_hidden(tmp_path, monkeypatch):
    store = str(tmp_path / "d.zarr")
    monkeypatch.setattr(
        sys, "argv", ["pupsnr", "run", "--storage-options", '{"secret": "hunter2"}', store]
    )
    with slock.StoreLock(store):
        text = open(store + ".lock").read()
    assert "hunter2" not in text and json.loads(text)["command"].startswith("pupsnr run")


@pytest.fixture
def memory_store():
    """A store location on fsspec's in-memory filesystem: no flock, the exclusive-file path."""
    url = f"memory://pupsnr-test-lock-{os.getpid()}/d.zarr"
    yield url
    fs, path = url_to_fs(url)
    if fs.exists(path + ".lock"):
        fs.rm_file(path + ".lock")


def _plant(url: str, data: bytes) -> None:
    fs, path = url_to_fs(url + ".lock")
    fs.pipe_file(path, data)


def test_exclusive_file_lock_refuses_a_live_holder(memory_store):
    _plant(memory_store, json.dumps({"pid": os.getppid(), "host": socket.gethostname()}).encode())
    with pytest.raises(slock.StoreLockedError, match="being written by another process"):
        with slock.StoreLock(memory_store):
            pass


@pytest.mark.parametrize(
    ("holder", "taken_over"),
    [
        (b"", slock.UNREADABLE_HOLDER),  # a writer that died while writing it
        (b"{not json", slock.UNREADABLE_HOLDER),
        (None, "dead"),  # a holder whose process is gone on this host
    ],
)
def test_exclusive_file_lock_takes_over_stale_holders(memory_store, holder, taken_over):
    if holder is None:
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead = {"pid": int(gone.stdout), "host": socket.gethostname()}
        holder, taken_over = json.dumps(dead).encode(), dead
    _plant(memory_store, holder)
    with slock.StoreLock(memory_store) as lk:
        assert lk.taken_over == taken_over
        assert slock.read_lock_holder(memory_store)["pid"] == os.getpid()
    assert slock.read_lock_holder(memory_store) is None


def test_a_holder_on_another_host_is_never_taken_over(memory_store):
    _plant(memory_store, json.dumps({"pid": 1, "host": "another-host.invalid"}).encode())
    with pytest.raises(slock.StoreLockedError, match=r"another-host\.invalid"):
        with slock.StoreLock(memory_store):
            pass
