"""Killed, repeated and concurrent writers: nothing lost, nothing twice, bit for bit.

Each interruption kills a real process with SIGKILL at a named moment (the test hook
``PUPSNR_KILL_AT`` of ``tests/killhook/sitecustomize.py``, at a durable moment that
:func:`pupsnr_dask.store.journal.durable_moment` logs), with its local Dask workers,
then runs the same command again and compares every file of the store with those of a run
that was never interrupted.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dask
import killhook.sitecustomize as killhook
import numpy as np
import pytest
import xarray as xr
from conftest import random_photo, write_image
from storefiles import files

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask.cli import main
from pupsnr_dask.schema import json_attr
from pupsnr_dask.store.fs import lock_path, partial_path
from pupsnr_dask.store.journal import done_units
from pupsnr_dask.store.lock import StoreLock, StoreLockedError

SIZE, CHUNK = 32, 3
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")

API = {  # the same work as `pupsnr ingest/run`, on the synchronous scheduler (no cluster)
    "ingest": "import dask, sys; dask.config.set(scheduler='sync'); from pupsnr_dask import "
    f"ingest_folder; ingest_folder(sys.argv[1], sys.argv[2], size={SIZE}, "
    f"chunk_size={CHUNK}, progress=False)",
    "run": "import dask, sys; dask.config.set(scheduler='sync'); from pupsnr_dask import "
    "run_experiment; run_experiment(sys.argv[1], sys.argv[2], scales=[1, 2, 8], progress=False)",
}


def cli_ingest(src: Path, store: Path) -> list[str]:
    return ["ingest", str(src), "-o", str(store), "--size", str(SIZE), "--chunk-size", str(CHUNK)]


def cli_run(store: Path, results: Path) -> list[str]:
    return ["run", str(store), "-o", str(results), "--scales", "1,2,8"]


def api_ingest(src: Path, store: Path):
    with dask.config.set(scheduler="sync"):
        return ingest(str(src), str(store), size=SIZE, chunk_size=CHUNK, progress=False)


def api_run(store: Path, results: Path, notes: list[str] | None = None):
    with dask.config.set(scheduler="sync"):
        return run(
            str(store),
            str(results),
            scales=[1, 2, 8],
            progress=False,
            notify=notes.append if notes is not None else None,
        )


def kill_at(point: str, argv: list[str]) -> None:
    """Run ``argv`` in a session of its own until the kill point SIGKILLs it and its workers."""
    env = killhook.env(**{killhook.KILL_AT_ENV: point})
    proc = subprocess.run(
        argv, env=env, start_new_session=True, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.stderr[-2000:]}"


def killed_cli(point: str, args: list[str]) -> None:
    kill_at(point, [sys.executable, "-m", "pupsnr_dask", *args, "--n-workers", "1", "-q"])


def killed_api(point: str, kind: str, *paths: Path) -> None:
    kill_at(point, [sys.executable, "-c", API[kind], *map(str, paths)])


def stamps(store: Path) -> dict[str, int]:
    return {p.relative_to(store).as_posix(): p.stat().st_mtime_ns for p in store.rglob("*")}


def assert_finished(store: Path, reference: Path) -> None:
    assert files(store) == files(reference)
    assert not Path(partial_path(str(store))).exists()
    assert not Path(lock_path(str(store))).exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """SRC (14 colour images, 1 gray, 1 broken: 6 batches of 3) and uninterrupted stores."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(21)
    for i in range(14):
        write_image(root / "src" / f"d{i % 3}" / f"img{i:02d}.png", random_photo(rng, 30, 40))
    write_image(root / "src" / "gray.png", random_photo(rng, 30, 40)[..., 0])
    (root / "src" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    api_ingest(root / "src", root / "images.zarr")
    api_run(root / "images.zarr", root / "psnr.zarr")
    return root


@pytest.mark.parametrize(
    ("point", "how"),
    [
        ("ingest:batch:2", "cli"),  # staging: some batches recorded, others in flight
        ("ingest:staged", "api"),  # every batch staged, final store not begun
        ("ingest:final-created", "api"),  # final store's metadata and labels, no pixels
        ("ingest:final-unit:1", "cli"),  # final store half written
        ("ingest:finalized", "api"),  # final store complete, journal not yet removed
    ],
)
def test_killed_ingest_rerun_equals_an_uninterrupted_one(point, how, world, tmp_path, capsys):
    store = tmp_path / "images.zarr"
    if how == "cli":
        killed_cli(point, cli_ingest(world / "src", store))
    else:
        killed_api(point, "ingest", world / "src", store)
    assert Path(partial_path(str(store))).exists()
    if point == "ingest:final-unit:1":  # the very command again (the others: the same function)
        assert main([*cli_ingest(world / "src", store), "--n-workers", "1", "-q"]) == 0
        out = capsys.readouterr().out
    else:
        out = "\n".join(api_ingest(world / "src", store).lines())
    assert "16 files, 14 colour images stored" in out
    if point.startswith("ingest:batch"):
        assert "resumed an interrupted ingest" in out
    assert_finished(store, world / "images.zarr")


def test_rerunning_a_finished_ingest_changes_nothing(world, tmp_path):
    store = tmp_path / "images.zarr"
    shutil.copytree(world / "images.zarr", store)
    before = stamps(store)
    summary = api_ingest(world / "src", store)
    assert summary.n_files == 0 and summary.n_total == 14
    assert "is up to date with SRC: no new files, 14 images; nothing changed" in summary.lines()[0]
    assert stamps(store) == before
    assert_finished(store, world / "images.zarr")


@pytest.fixture(scope="module")
def grown(world, tmp_path_factory):
    """SRC plus 3 files, and the store after an uninterrupted incremental ingest."""
    root = tmp_path_factory.mktemp("grown")
    shutil.copytree(world / "src", root / "src")
    api_ingest(root / "src", root / "before.zarr")
    rng = np.random.default_rng(99)
    write_image(root / "src" / "aa_first.png", random_photo(rng, 30, 40))  # sorts first
    write_image(root / "src" / "zz_last.png", random_photo(rng, 30, 40))
    write_image(root / "src" / "d1" / "new_gray.png", random_photo(rng, 30, 40)[..., 1])
    shutil.copytree(root / "before.zarr", root / "after.zarr")
    summary = api_ingest(root / "src", root / "after.zarr")
    assert summary.lines()[0] == (
        f"3 new files, 2 colour images appended to {root / 'after.zarr'} (16 images in all)"
    )
    return root


def test_incremental_ingest_appends_only_new_files_keeping_indices(world, grown):
    old = xr.open_zarr(world / "images.zarr").load()
    new = xr.open_zarr(grown / "after.zarr").load()
    assert new.sizes["image"] == 16
    assert list(new["image"].values) == list(range(16))
    xr.testing.assert_identical(
        new.isel(image=slice(0, 14)).drop_vars("split").drop_attrs(),
        old.drop_vars("split").drop_attrs(),
    )
    assert list(new["source"].values[14:]) == ["aa_first.png", "zz_last.png"]
    assert new.attrs["n_files"] == 19
    rejected = [r["source"] for r in json_attr(new.attrs, "rejected")]
    assert rejected == ["broken.jpg", "gray.png", "d1/new_gray.png"]
    api_ingest(grown / "src", grown / "fresh.zarr")  # all at once: same images, other order
    fresh = xr.open_zarr(grown / "fresh.zarr").load()
    for i, source in enumerate(new["source"].values):
        j = list(fresh["source"].values).index(source)
        np.testing.assert_array_equal(new["images"][i].values, fresh["images"][j].values)
        assert new["split"][i].item() == fresh["split"][j].item()
    again = api_ingest(grown / "src", grown / "after.zarr")
    assert again.n_files == 0 and again.n_total == 16


@pytest.mark.parametrize("point", ["ingest:final-created", "ingest:final-unit:0"])
def test_killed_incremental_ingest_rerun_equals_an_uninterrupted_one(point, grown, tmp_path):
    store = tmp_path / "images.zarr"
    shutil.copytree(grown / "before.zarr", store)
    killed_api(point, "ingest", grown / "src", store)
    summary = api_ingest(grown / "src", store)
    assert summary.n_files == 3 and summary.n_total == 16
    assert_finished(store, grown / "after.zarr")


@pytest.fixture(scope="module")
def all_kept(tmp_path_factory):
    """SRC of 8 colour images (batches of 3, 3, 2: every file kept) and its store."""
    root = tmp_path_factory.mktemp("all-kept")
    rng = np.random.default_rng(8)
    for i in range(8):
        write_image(root / "src" / f"img{i}.png", random_photo(rng, 30, 40))
    api_ingest(root / "src", root / "images.zarr")
    return root


def moves_seen(src: Path, store: Path) -> list[str]:
    """Ingest ``src`` into ``store`` on the synchronous scheduler; the chunk-file moves logged."""
    import logging

    seen: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.pupsnr_event.startswith("ingest:final-moved:"):
                seen.append(record.pupsnr_event)

    logger = logging.getLogger("pupsnr_dask.journal")
    handler, level = Seen(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        api_ingest(src, store)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return seen


def test_a_fully_kept_batch_is_moved_as_the_chunk_zarr_would_write(all_kept, tmp_path):
    """Each batch whose files were all kept (the short last one too) becomes its final chunk
    by moving the staged file, undecoded; each such file is, byte for byte, what Zarr
    writes for those pixels. Where a rejection shifts the rows, nothing is moved."""
    import zarr

    store = tmp_path / "images.zarr"
    assert sorted(moves_seen(all_kept / "src", store)) == [
        f"ingest:final-moved:{b}" for b in range(3)
    ]
    assert files(store) == files(all_kept / "images.zarr")
    final = zarr.open_array(str(store / "images"), mode="r")
    again = zarr.create_array(
        str(tmp_path / "again.zarr"),
        shape=final.shape,
        chunks=final.chunks,
        dtype=final.dtype,
        fill_value=final.fill_value,
        serializer=final.serializer,
        compressors=final.compressors,
        filters=final.filters,
    )
    again[:] = final[:]
    for k in range(3):
        key = f"c/{k}/0/0/0"
        assert (store / "images" / key).read_bytes() == (tmp_path / "again.zarr" / key).read_bytes()
    shifted = tmp_path / "shifted"
    shutil.copytree(all_kept / "src", shifted)
    rng = np.random.default_rng(9)
    write_image(shifted / "img0a.png", random_photo(rng, 30, 40)[..., 0])  # gray, in batch 0
    assert moves_seen(shifted, tmp_path / "shifted.zarr") == []


def test_killed_between_moving_a_chunk_file_and_marking_it_the_rerun_equals(all_kept, tmp_path):
    """Killed once a staged chunk file is in the final store but its unit has no marker:
    the rerun stages that batch again (its staged chunk is gone) and ends bit for bit."""
    store = tmp_path / "images.zarr"
    killed_api("ingest:final-moved:1", "ingest", all_kept / "src", store)
    assert Path(partial_path(str(store))).exists()
    summary = api_ingest(all_kept / "src", store)
    assert summary.n_files == 8
    assert_finished(store, all_kept / "images.zarr")


def test_files_vanishing_or_changing_while_an_ingest_is_down(world, tmp_path):
    src, store = tmp_path / "src", tmp_path / "images.zarr"
    shutil.copytree(world / "src", src)
    killed_api("ingest:planned", "ingest", src, store)  # listed, nothing decoded yet
    (src / "d0" / "img00.png").unlink()
    changed = random_photo(np.random.default_rng(3), 20, 20)
    write_image(src / "d1" / "img01.png", changed)
    summary = api_ingest(src, store)
    assert (summary.n_files, summary.n_images) == (16, 13)  # all planned files, one vanished
    assert "  rejected 1: cannot read: not found (it vanished, or is a broken symbolic link)" in (
        summary.lines()
    )
    ds = xr.open_zarr(store)
    assert "d0/img00.png" not in list(ds["source"].values)
    i = list(ds["source"].values).index("d1/img01.png")
    assert (int(ds["original_width"][i]), int(ds["original_height"][i])) == (20, 20)


@pytest.mark.parametrize(("point", "how"), [("run:created", "api"), ("run:unit:1", "cli")])
def test_killed_run_rerun_equals_an_uninterrupted_one(point, how, world, tmp_path, capsys):
    results = tmp_path / "psnr.zarr"
    if how == "cli":
        killed_cli(point, cli_run(world / "images.zarr", results))
    else:
        killed_api(point, "run", world / "images.zarr", results)
    notes: list[str] = []
    api_run(world / "images.zarr", results, notes)
    if point == "run:unit:1":
        assert any(n.startswith("resumed an interrupted run: ") for n in notes), notes
    assert_finished(results, world / "psnr.zarr")
    before = stamps(results)
    notes = []
    api_run(world / "images.zarr", results, notes)
    assert notes == [
        f"{results} is already complete for these images and parameters: nothing recomputed"
    ]
    assert stamps(results) == before
    with (
        pytest.raises(FileExistsError, match=r"other scales .*--overwrite"),
        dask.config.set(scheduler="sync"),
    ):
        run(str(world / "images.zarr"), str(results), scales=[1, 2], progress=False)


def test_a_killed_grouped_run_resumes_under_another_grouping(world, tmp_path):
    """Killed between the two chunks of a 2-chunk task; resumed with 3 chunks a task."""
    results = tmp_path / "psnr.zarr"
    grouped = API["run"].replace("progress=False)", "progress=False, chunks_per_task=2)")
    assert grouped != API["run"]
    kill_at("run:unit:2", [sys.executable, "-c", grouped, str(world / "images.zarr"), str(results)])
    bounds = {k: {"start": 3 * k, "stop": min(3 * k + 3, 14)} for k in range(5)}
    done = done_units(str(results), bounds)
    assert 2 in done and 3 not in done  # the task of chunks 2 and 3 wrote one of them
    notes: list[str] = []
    with dask.config.set(scheduler="sync"):
        run(str(world / "images.zarr"), str(results), scales=[1, 2, 8], progress=False,
            notify=notes.append, chunks_per_task=3)  # fmt: skip
    assert f"resumed an interrupted run: {len(done)} of 5 chunks were already written" in notes
    assert_finished(results, world / "psnr.zarr")


@pytest.fixture(scope="module")
def many_chunks(tmp_path_factory):
    """130 colour images stored one a chunk (130 chunks, more than MIN_RESULT_CHUNKS = 64)
    and their uninterrupted results: chunks of 2 images (130 // 64)."""
    root = tmp_path_factory.mktemp("many-chunks")
    rng = np.random.default_rng(5)
    for i in range(130):
        write_image(root / "src" / f"img{i:03d}.png", random_photo(rng, 30, 40))
    with dask.config.set(scheduler="sync"):
        ingest(str(root / "src"), str(root / "images.zarr"), size=SIZE, chunk_size=1,
               progress=False)  # fmt: skip
    api_run(root / "images.zarr", root / "psnr.zarr")
    return root


def test_results_of_many_image_chunks_are_stored_several_images_a_chunk(many_chunks):
    """Fewer, larger result chunks than image chunks (reading results costs per chunk), the
    values those of the per-image reference loop."""
    import reference
    import zarr

    images = xr.open_zarr(many_chunks / "images.zarr")
    results = xr.open_zarr(many_chunks / "psnr.zarr").load()
    assert images["images"].encoding["chunks"][0] == 1
    for name in ("psnr", "mse"):
        stored = zarr.open_array(str(many_chunks / "psnr.zarr" / name), mode="r")
        assert stored.chunks == (2, 3, 3), name
    pixels = images["images"].values
    for i in range(130):
        expected = reference.psnr_table(pixels[i], [1, 2, 8])
        got = results["psnr"].isel(image=i)
        for (variant, scale), value in expected.items():
            assert got.sel(variant=variant, scale=scale).item() == pytest.approx(value, abs=1e-9)


def test_result_chunks_keep_their_images_within_the_block_budget(
    many_chunks, tmp_path, monkeypatch
):
    """The same run with a budget of one 32 x 32 image a block: chunks of one image again."""
    import zarr

    from pupsnr_dask import experiment

    monkeypatch.setattr(experiment, "MAX_RESULT_BLOCK_BYTES", 32 * 32 * 3)
    api_run(many_chunks / "images.zarr", tmp_path / "psnr.zarr")
    stored = zarr.open_array(str(tmp_path / "psnr.zarr" / "psnr"), mode="r")
    assert stored.chunks == (1, 3, 3)
    expected = xr.open_zarr(many_chunks / "psnr.zarr")["psnr"].values
    assert xr.open_zarr(tmp_path / "psnr.zarr")["psnr"].values.tobytes() == expected.tobytes()


def test_a_killed_run_of_several_images_a_chunk_resumes_chunk_by_chunk(many_chunks, tmp_path):
    results = tmp_path / "psnr.zarr"
    killed_api("run:unit:20", "run", many_chunks / "images.zarr", results)
    bounds = {k: {"start": 2 * k, "stop": 2 * k + 2} for k in range(65)}
    done = done_units(str(results), bounds)
    assert 20 in done and len(done) < 65, sorted(done)
    notes: list[str] = []
    api_run(many_chunks / "images.zarr", results, notes)
    assert f"resumed an interrupted run: {len(done)} of 65 chunks were already written" in notes
    assert_finished(results, many_chunks / "psnr.zarr")


def test_resume_refuses_other_parameters_and_overwrite_starts_again(world, tmp_path):
    store = tmp_path / "images.zarr"
    killed_api("ingest:staged", "ingest", world / "src", store)
    with pytest.raises(ValueError, match=r"interrupted ingest with other parameters \(size=32"):
        ingest(str(world / "src"), str(store), size=64, chunk_size=CHUNK, progress=False)
    with dask.config.set(scheduler="sync"):
        summary = ingest(
            str(world / "src"),
            str(store),
            size=SIZE,
            chunk_size=CHUNK,
            overwrite=True,
            progress=False,
        )
    assert not any("resumed" in line for line in summary.lines())
    assert_finished(store, world / "images.zarr")
    with pytest.raises(ValueError, match=r"was ingested with size=32.*use --overwrite"):
        ingest(str(world / "src"), str(store), size=64, chunk_size=CHUNK, progress=False)


HOLD = (
    "import sys, time\nfrom pupsnr_dask.store.lock import StoreLock\n"
    "lock = StoreLock(sys.argv[1]).__enter__()\nprint('locked', flush=True)\ntime.sleep(600)\n"
)


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(world, tmp_path):
    store, results = tmp_path / "images.zarr", tmp_path / "psnr.zarr"
    holders = [
        subprocess.Popen([sys.executable, "-c", HOLD, str(p)], stdout=subprocess.PIPE, text=True)
        for p in (store, results)
    ]
    try:
        for holder in holders:
            assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=rf"pid {holders[0].pid} on host '.+' since"):
            api_ingest(world / "src", store)
        with pytest.raises(StoreLockedError, match="is being written by another process"):
            api_run(world / "images.zarr", results)
        assert issubclass(StoreLockedError, OSError)  # the CLI: one line, exit status 2
        assert not store.exists() and not results.exists()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait(timeout=60)
    assert Path(lock_path(str(store))).exists()  # left behind by the dead holder
    summary = api_ingest(world / "src", store)
    assert f"took over the lock of a process that died (pid {holders[0].pid}" in summary.lines()[0]
    assert_finished(store, world / "images.zarr")


def test_lock_on_an_object_store_filesystem():
    import fsspec

    url = "memory://locks/data.zarr"
    with StoreLock(url):
        with pytest.raises(StoreLockedError, match="being written"), StoreLock(url):
            pass
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    holder = f'{{"pid": {int(dead.stdout)}, "host": "{socket.gethostname()}", "started": "x"}}'
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/locks/data.zarr.lock", holder.encode())
    with StoreLock(url) as lock:
        assert lock.taken_over["pid"] == int(dead.stdout)
    assert not fs.exists("/locks/data.zarr.lock")
    fs.pipe_file("/locks/data.zarr.lock", b'{"pid": 1, "host": "elsewhere", "started": "x"}')
    with pytest.raises(StoreLockedError, match="pid 1 on host 'elsewhere'"), StoreLock(url):
        pass


def test_incremental_ingest_run_and_verify_over_an_fsspec_url(world):
    import io

    import fsspec
    from PIL import Image

    from pupsnr_dask.verify import verify_store

    fs = fsspec.filesystem("memory")
    rng = np.random.default_rng(4)
    for name in ("a.png", "b.png", "c.png", "d/e.png"):
        buf = io.BytesIO()
        Image.fromarray(random_photo(rng, 30, 40)).save(buf, format="PNG")
        fs.pipe_file(f"/inc/src/{name}", buf.getvalue())
    src, store, results = "memory://inc/src", "memory://inc/d.zarr", "memory://inc/r.zarr"
    with dask.config.set(scheduler="sync"):
        first = ingest(src, store, size=SIZE, chunk_size=CHUNK, progress=False)
        fs.pipe_file("/inc/src/b2.png", fs.cat_file("/inc/src/a.png"))
        fs.pipe_file("/inc/src/zz.txt", b"note")
        second = ingest(src, store, size=SIZE, chunk_size=CHUNK, progress=False)
        run(src.replace("src", "d.zarr"), results, scales=[1, 4], progress=False)
        assert verify_store(store, progress=False).ok and verify_store(results).ok
    assert (first.n_images, second.n_files, second.n_images, second.n_total) == (4, 2, 1, 5)
    ds = xr.open_zarr(store)
    assert list(ds["source"].values) == ["a.png", "b.png", "c.png", "d/e.png", "b2.png"]
    assert not fs.exists("/inc/d.zarr.partial") and not fs.exists("/inc/d.zarr.lock")
    fs.rm("/inc", recursive=True)


def disk_use(*folders: Path) -> int:
    return sum(p.stat().st_size for f in folders if f.exists() for p in f.rglob("*") if p.is_file())


@pytest.mark.parametrize("grow", [False, True], ids=["new", "incremental"])
def test_peak_disk_use_is_at_most_one_tenth_more_than_the_store(tmp_path, grow):
    """The journal and the store together, at every durable moment of a real ingest (where
    the disk use peaks: after each write, before the staged pixels it consumed are deleted),
    never hold more than 1.1x the finished store (issue 12, item 2)."""
    import logging

    rng = np.random.default_rng(12)
    src, store = tmp_path / "src", tmp_path / "images.zarr"
    for i in range(80):  # every 5th file gray: batches with nothing kept, units across batches
        photo = random_photo(rng, 48, 64)
        write_image(src / f"img{i:03d}.png", photo[..., 0] if i % 5 == 3 else photo)
    if grow:
        with dask.config.set(scheduler="sync"):
            ingest(str(src), str(store), size=64, chunk_size=2, progress=False)
        for i in range(80, 160):
            write_image(src / f"img{i:03d}.png", random_photo(rng, 48, 64))
    partial = Path(partial_path(str(store)))
    before = disk_use(store)
    seen: dict[str, int] = {}

    class Measure(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen[record.pupsnr_event] = disk_use(store, partial)

    logger = logging.getLogger("pupsnr_dask.journal")
    handler, level = Measure(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with dask.config.set(scheduler="sync"):
            ingest(str(src), str(store), size=64, chunk_size=2, progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    final = disk_use(store)
    assert not partial.exists()
    assert {"ingest:planned", "ingest:final-created", "ingest:final-unit:0"} <= set(seen)
    assert sum(k.startswith("ingest:final-unit:") for k in seen) == (40 if grow else 32)
    peak = max(seen.values())
    assert peak <= 1.1 * final, (peak / final, max(seen, key=seen.get))
    assert final > 2 * before if grow else final > 0
