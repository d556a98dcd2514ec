"""The run's graph at 10 million images, built but never computed (issue 12, item 7).

    python benchmarks/scaleout_graph.py --workdir DIR [--n 10000000] [--group 1,auto]
        [--scheduler-n 320000,1280000]

1. Creates an images store of ``--n`` images of 256 x 256 x 3 in chunks of 32 whose chunks
   are never written: Zarr metadata, and the ``image`` index (xarray writes dimension
   coordinates), nothing else. Unwritten chunks read as the fill value.
2. Opens it as ``pupsnr run`` does after its checks (``xr.open_zarr``, consolidated, then
   ``schema.validate``; ``open_store`` itself refuses a store whose chunks are missing,
   so its key listing is timed apart, on the same store).
3. Builds the run's graph with ``experiment._write_tasks`` (what ``_write_cube`` computes)
   and materialises it as the client does before sending it: construction time, task count,
   the client's memory (tracemalloc peak of the Python objects, and RSS growth of this
   process).
4. With ``--group G``: ``G`` result chunks per task (``run_experiment(chunks_per_task=G)``),
   each of ``experiment.results_chunk_length`` images (in chunks of 32: 32 up to 4,064 images,
   256 past 16,352), the images read as one dask block a task; ``auto`` is what
   ``run_experiment`` chooses (``experiment.chunks_per_task_for``).
5. Scheduler memory: the graph of ``--scheduler-n`` images is submitted to a real ``dask
   scheduler`` process on 127.0.0.1 that has no worker (so nothing is computed); its RSS
   growth once it holds every task gives bytes per task, measured at two sizes.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import dask
import numpy as np

CHUNK = 32
SIZE = 256


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 1e6


def make_store(path: Path, n: int) -> float:
    """A metadata-only images store of ``n`` images; returns seconds."""
    import dask.array as da
    import xarray as xr

    from pupsnr_dask import __version__, schema
    from pupsnr_dask.ingest import PIXELS_ZSTD_LEVEL
    from pupsnr_dask.store.codecs import compressors
    from pupsnr_dask.store.zarr_io import create_store

    def pixels_compressors():
        return compressors(PIXELS_ZSTD_LEVEL)

    t0 = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    lazy = {
        schema.SOURCE: da.full(n, "", dtype=object, chunks=1 << 20),
        schema.COLOR_SCORE: da.zeros(n, dtype=np.float64, chunks=1 << 20),
        schema.SPLIT: da.full(n, "", dtype=object, chunks=1 << 20),
        schema.ORIGINAL_WIDTH: da.zeros(n, dtype=np.int64, chunks=1 << 20),
        schema.ORIGINAL_HEIGHT: da.zeros(n, dtype=np.int64, chunks=1 << 20),
    }
    pixels = da.zeros((n, SIZE, SIZE, 3), dtype=np.uint8, chunks=(CHUNK, -1, -1, -1))
    coords = {schema.IMAGE: np.arange(n, dtype=np.int64)}
    coords.update({k: (schema.IMAGE, v) for k, v in lazy.items()})
    ds = xr.Dataset({schema.IMAGES: (schema.IMAGE_DIMS, pixels)}, coords=coords)
    ds[schema.IMAGES].encoding["compressors"] = pixels_compressors()
    ds.attrs.update(
        {
            schema.KIND_ATTR: "images",
            schema.VERSION_ATTR: __version__,
            "size": SIZE,
            "chunk_size": CHUNK,
            "threshold": 0.995,
            "test_count": 0,
            "n_files": n,
            schema.REJECTED_ATTR: [],
        }
    )
    create_store(ds, str(path))  # metadata and in-memory variables only
    return time.perf_counter() - t0


def open_images(path: Path):
    """The store as ``pupsnr run`` opens it after its checks."""
    import xarray as xr

    from pupsnr_dask import schema

    ds = xr.open_zarr(str(path), consolidated=True)
    schema.validate(ds, "images", name=str(path))
    return ds


def run_graph(images, path: Path, results: str, group: int | None) -> list:
    """The delayed tasks of ``experiment._write_cube`` (its ``_write_tasks``), for write
    units of the result chunks a run creates (``experiment.results_chunk_length``: 256 images
    at 10 M) and ``group`` of them per task (None: the library's choice)."""
    from pupsnr_dask import experiment

    cube = experiment.build_psnr_cube(images)

    def regrouped(n_images: int):
        return experiment.build_psnr_cube(
            experiment._images_in_blocks(images, str(path), n_images, None)
        )

    unit = experiment.results_chunk_length(cube.sizes["image"], CHUNK)
    return experiment._write_tasks(cube, results, unit, set(), regrouped, group, None)


def measure_client(path: Path, group: int | None) -> dict:
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr
    from distributed.protocol import pickle

    gc.collect()
    rss0 = rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    images = open_images(path)
    t1 = time.perf_counter()
    tasks = run_graph(images, path, "/nonexistent/psnr.zarr", group)
    t2 = time.perf_counter()
    expr = FinalizeCompute(collections_to_expr(tasks, True)).optimize()  # as Client.compute
    t3 = time.perf_counter()
    sent = len(pickle.dumps(expr))  # what the client sends (distributed.protocol.pickle)
    t4 = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = rss_mb()
    graph = expr.__dask_graph__()  # what the scheduler materialises from it
    n_tasks = len(graph)
    t5 = time.perf_counter()
    out = {
        "group": group,
        "open_s": t1 - t0,
        "build_s": t2 - t1,
        "expr_s": t3 - t2,
        "pickle_s": t4 - t3,
        "pickled_mb": sent / 1e6,
        "materialise_s": t5 - t4,
        "tasks": n_tasks,
        "write_units": len(tasks),
        "client_tracemalloc_peak_mb": peak / 1e6,
        "client_rss_growth_mb": rss1 - rss0,
        "materialised_rss_growth_mb": rss_mb() - rss1,
    }
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    del graph, tasks, images, expr
    gc.collect()
    return out


def measure_listing(path: Path) -> float:
    """Seconds of ``store.integrity.list_keys`` (what ``open_store`` runs before opening)."""
    from pupsnr_dask.store import integrity

    t0 = time.perf_counter()
    integrity.list_keys(str(path), None)
    return time.perf_counter() - t0


def measure_scheduler(path: Path, group: int | None) -> dict:
    """Submit the graph to a worker-less ``dask scheduler``; its RSS growth holding it."""
    import socket

    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
            "--no-show",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = Client(f"tcp://127.0.0.1:{port}", timeout=60)
        idle = rss_mb(proc.pid)
        # Built here, not on the scheduler: the cube reads its labels as it is built, which
        # would wait forever for a worker of the worker-less scheduler.
        with dask.config.set(scheduler="sync"):
            images = open_images(path)
            tasks = run_graph(images, path, "/nonexistent/psnr.zarr", group)
        t0 = time.perf_counter()
        futures = client.compute(tasks)
        while True:
            held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            if held and held >= len(tasks):
                break
            time.sleep(0.2)
        submit = time.perf_counter() - t0
        time.sleep(1.0)
        held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        busy = rss_mb(proc.pid)
        client.cancel(futures)
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "scheduler_tasks": held,
        "submit_s": submit,
        "scheduler_idle_mb": idle,
        "scheduler_rss_mb": busy,
        "bytes_per_task": (busy - idle) * 1e6 / held,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/scaleout_graph.py", description=__doc__
    )
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument(
        "--group",
        default="1,auto",
        help="chunks per task to try; auto: the library's choice (experiment.chunks_per_task_for) "
        "[default: 1,auto]",
    )
    parser.add_argument("--scheduler-n", default="320000,1280000")
    parser.add_argument("--skip-scheduler", action="store_true")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    groups = [None if g == "auto" else int(g) for g in args.group.split(",")]
    print(f"load {load()}; {args.n} images, chunks of {CHUNK}", flush=True)
    store = args.workdir / f"images-{args.n}.zarr"
    print(f"metadata-only store: {make_store(store, args.n):.1f} s; load {load()}", flush=True)
    print(f"verify.list_keys of it: {measure_listing(store):.2f} s", flush=True)
    for g in groups:
        print(f"client, group {g}: {measure_client(store, g)}; load {load()}", flush=True)
    if not args.skip_scheduler:
        for n in [int(x) for x in args.scheduler_n.split(",")]:
            small = args.workdir / f"images-{n}.zarr"
            make_store(small, n)
            for g in groups:
                res = measure_scheduler(small, g)
                print(f"scheduler, {n} images, group {g}: {res}; load {load()}", flush=True)
            shutil.rmtree(small, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
