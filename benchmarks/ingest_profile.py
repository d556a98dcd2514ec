"""Where ingest's time goes, against its floor (issue 12, item 1).

    python benchmarks/ingest_profile.py CORPUS_FOLDER --workdir DIR [--only WHAT,...]

WHAT (default: all, in this order):

- ``serial``: the per-file stage (``decode_rgb`` + ``color_score`` + ``resize_lanczos``) as a
  plain loop in this process; wall and CPU seconds, and the CPU of each step;
- ``mp2``: the same loop split over 2 processes (multiprocessing, fork): the floor;
- ``parts``: what ingest adds per chunk of 32 resized images, timed alone in this process:
  ``np.zeros`` + filling the batch, zstd-1 encode, the staging write (zarr, one chunk), the
  SHA-256 of the batch, reading the staged chunk back and the copy into the final array;
- ``process``: ``pupsnr ingest`` as a process (its own LocalCluster); wall, and user and
  system CPU of the whole process tree (``RUSAGE_CHILDREN``, workers included);
- ``disk``: the peak disk use of the store and its journal during an ingest, as a ratio to
  the finished store (measured at every durable moment, on a threaded cluster here);
- ``threads``: ``ingest()`` in this process on a ``LocalCluster(processes=False)`` of 2
  threads (a prototype of a threaded default), and on a 2-process LocalCluster started here,
  each with the cluster's start time apart.

Load averages are printed with every figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

from pupsnr_dask.ingest import DEFAULT_THRESHOLD
from pupsnr_dask.kernels.image import color_score, decode_rgb, resize_lanczos


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {line}", flush=True)


def stage(path: Path) -> tuple[float, float, float, bool]:
    """CPU seconds of decode, colour score and resize for one file; and whether kept."""
    t0 = time.process_time()
    rgb = decode_rgb(str(path))
    t1 = time.process_time()
    score = color_score(rgb)  # the Pillow image, as ingest scores it
    t2 = time.process_time()
    kept = score < DEFAULT_THRESHOLD
    if kept:
        resize_lanczos(rgb, 256)
    return t1 - t0, t2 - t1, time.process_time() - t2, bool(kept)


def _stage_many(paths: list[Path]) -> int:
    return sum(stage(p)[3] for p in paths)


def run_serial(paths: list[Path]) -> float:
    w0, c0 = time.perf_counter(), time.process_time()
    parts = np.array([stage(p) for p in paths])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(paths)
    say(
        f"serial loop: {n} files, wall {wall:.1f} s, CPU {cpu:.1f} s ({wall / n * 1e3:.1f} ms a "
        f"file); CPU ms a file: decode {parts[:, 0].mean() * 1e3:.2f}, color_score "
        f"{parts[:, 1].mean() * 1e3:.2f}, resize {parts[:, 2].mean() * 1e3:.2f}; "
        f"kept {int(parts[:, 3].sum())}"
    )
    return wall


def run_mp(paths: list[Path], procs: int = 2) -> float:
    chunks = [paths[i::procs] for i in range(procs)]
    w0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        kept = sum(pool.map(_stage_many, chunks))
    wall = time.perf_counter() - w0
    say(f"loop over {procs} processes: wall {wall:.1f} s (kept {kept}): the floor")
    return wall


def run_parts(paths: list[Path], workdir: Path) -> None:
    import hashlib

    import zarr
    from zarr.codecs import ZstdCodec

    from pupsnr_dask.ingest import pixels_compressors

    batch = [resize_lanczos(decode_rgb(str(p)), 256) for p in paths[:32]]
    reps = 10
    t: dict[str, float] = {}

    def clock(name: str, fn):
        t0 = time.process_time()
        w0 = time.perf_counter()
        for _ in range(reps):
            out = fn()
        t[name] = ((time.process_time() - t0) / reps, (time.perf_counter() - w0) / reps)
        return out

    def fill() -> np.ndarray:
        pixels = np.zeros((32, 256, 256, 3), np.uint8)
        for i, img in enumerate(batch):
            pixels[i] = img
        return pixels

    pixels = clock("np.zeros + fill 32 images", fill)
    codec = ZstdCodec(level=1)
    import numcodecs

    z = numcodecs.Zstd(level=1)
    clock("zstd-1 encode (numcodecs)", lambda: z.encode(pixels))
    enc = z.encode(pixels)
    clock("zstd-1 decode (numcodecs)", lambda: z.decode(enc))
    clock("sha256 of the batch", lambda: hashlib.sha256(pixels.tobytes()).hexdigest())
    store = workdir / "parts.zarr"
    shutil.rmtree(store, ignore_errors=True)
    arr = zarr.create_array(
        str(store),
        shape=(32 * reps, 256, 256, 3),
        chunks=(32, 256, 256, 3),
        dtype="uint8",
        compressors=pixels_compressors(),
    )
    k = iter(range(reps))
    written = arr.with_config({"write_empty_chunks": True})  # as ingest's tasks write

    def write() -> None:
        i = next(k)
        written[32 * i : 32 * i + 32] = pixels

    clock("zarr write of one chunk (zstd-1)", write)
    clock("zarr read of one chunk", lambda: arr[0:32])
    rows = np.arange(32)
    clock("orthogonal read of 32 rows", lambda: arr.get_orthogonal_selection(rows))
    del codec
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / reps
    say(
        "per chunk of 32 resized images (CPU ms / wall ms), one process: "
        + "; ".join(f"{name} {c * 1e3:.1f}/{w * 1e3:.1f}" for name, (c, w) in t.items())
        + f"; stored chunk {size / 1e6:.2f} MB of {pixels.nbytes / 1e6:.2f}"
    )


def run_process(folder: Path, workdir: Path, extra: list[str]) -> float:
    store = workdir / "proc.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(str(store) + ".partial", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PUPSNR_SCHEDULER"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pupsnr_dask",
            "ingest",
            str(folder),
            "-o",
            str(store),
            "-q",
            *extra,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    say(
        f"`pupsnr ingest {' '.join(extra)}` process: wall {wall:.1f} s, user {user:.1f} s, "
        f"sys {sys_:.1f} s"
    )
    return wall


def run_threads(folder: Path, workdir: Path) -> None:
    from distributed import Client, LocalCluster

    from pupsnr_dask.cluster import connect
    from pupsnr_dask.ingest import ingest_folder as ingest

    for label in ("threads", "processes"):
        store = workdir / f"{label}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if label == "threads":
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
                    )
                )
                stack.enter_context(Client(cluster))
            else:
                stack.enter_context(connect(None, n_workers=2, dashboard_address=":0", quiet=True))
            up = time.perf_counter() - w0
            ingest(str(folder), str(store), progress=False)
            wall = time.perf_counter() - w0
        total = time.perf_counter() - w0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        user = c1.ru_utime - c0.ru_utime + k1.ru_utime - k0.ru_utime
        sys_ = c1.ru_stime - c0.ru_stime + k1.ru_stime - k0.ru_stime
        say(
            f"ingest() on a LocalCluster of 2 {label}: start {up:.1f} s, ingest {wall - up:.1f} s, "
            f"with close {total:.1f} s; user {user:.1f} s, sys {sys_:.1f} s"
        )


def _disk_use(*folders: Path) -> int:
    return sum(p.stat().st_size for f in folders if f.exists() for p in f.rglob("*") if p.is_file())


def run_disk(folder: Path, workdir: Path) -> None:
    """Peak disk use of the store and its journal, measured at every durable moment."""
    import logging

    from distributed import Client, LocalCluster

    from pupsnr_dask.ingest import ingest_folder as ingest

    store = workdir / "disk.zarr"
    partial = Path(f"{store}.partial")
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    seen: dict[str, int] = {}

    class Measure(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen[getattr(record, "pupsnr_event", "?")] = _disk_use(store, partial)

    logger = logging.getLogger("pupsnr_dask.journal")
    logger.addHandler(Measure(logging.DEBUG))
    logger.setLevel(logging.DEBUG)
    # Threads in this process, so that the durable moments of the tasks are logged here.
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        ingest(str(folder), str(store), progress=False)
    final = _disk_use(store)
    peak = max(seen, key=seen.__getitem__)
    say(
        f"disk: store {final / 1e6:.1f} MB; peak of store + journal {seen[peak] / 1e6:.1f} MB "
        f"= {seen[peak] / final:.3f}x the store, at {peak} ({len(seen)} moments measured)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/ingest_profile.py", description=__doc__
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--only", default="serial,mp2,parts,process,threads,disk")
    parser.add_argument("--process-args", default="", help="extra args of `pupsnr ingest`")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = corpus.files(args.folder)
    say(
        f"{len(paths)} files in {args.folder}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )
    walls: dict[str, float] = {}
    for what in args.only.split(","):
        if what == "serial":
            walls[what] = run_serial(paths)
        elif what == "mp2":
            walls[what] = run_mp(paths)
        elif what == "parts":
            run_parts(paths, args.workdir)
        elif what == "process":
            walls[what] = run_process(args.folder, args.workdir, args.process_args.split())
        elif what == "threads":
            run_threads(args.folder, args.workdir)
        elif what == "disk":
            run_disk(args.folder, args.workdir)
        else:
            parser.error(f"--only: unknown {what!r}")
    if "serial" in walls:
        for what in ("mp2", "process"):
            if what in walls:  # the target: `pupsnr ingest` >= 1.6x the serial loop (2 cores)
                say(f"serial loop / {what}: {walls['serial'] / walls[what]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
