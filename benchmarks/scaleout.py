"""Scale-out figures: throughput with 1 and 2 worker processes; tasks and graph size as N grows.

    python benchmarks/scaleout.py                    # N = 2 chunks of the default chunk size
    python benchmarks/scaleout.py --n 64 --chunk-size 16 --throughput-images 256

Prints a markdown report on standard output (benchmarks/SCALEOUT.md holds one):

1. Throughput of ``ingest`` and ``run`` (images/s) on a LocalCluster of 1 and then 2
   single-threaded worker processes (the CLI's cluster), on the same real images: the packaged
   sample photos, cropped and flipped by ``bench_data.write_images``. Each cluster first runs a
   small warm-up job, so worker start-up and imports are not timed.
2. For N, 2N, 4N, 8N images: every graph that ``ingest`` and ``run`` compute, recorded as a
   local scheduler receives it (the optimized, materialized graph; a distributed client sends
   the same one): its number of tasks, tasks per chunk, and its pickled size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
from bench_data import write_images

from pupsnr_dask import experiment
from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask.ingest import DEFAULT_CHUNK_SIZE


class GraphRecorder:
    """A dask scheduler (``get`` function) that records each graph, then runs it (threads)."""

    def __init__(self) -> None:
        self.graphs: list[tuple[int, int]] = []  # (tasks, pickled bytes)

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        import cloudpickle

        graph = dict(dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk)
        try:
            size = len(pickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # lambdas and local functions need cloudpickle
            size = len(cloudpickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL))
        self.graphs.append((len(graph), size))
        return dask.threaded.get(dsk, keys, **kwargs)

    @property
    def tasks(self) -> int:
        return sum(t for t, _ in self.graphs)

    @property
    def nbytes(self) -> int:
        return sum(b for _, b in self.graphs)


@contextlib.contextmanager
def local_cluster(n_workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def worker_cpu_seconds() -> float:
    """CPU time (user + system) of this process so far; run on each worker."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(client: Any, fn: Callable[[], Any]) -> tuple[float, float, float]:
    """Wall seconds of ``fn()``; CPU seconds all workers spent meanwhile; task seconds.

    Task seconds: the summed durations of all tasks (from the scheduler's task stream); divided
    by the wall time, how many tasks ran at once on average.
    """
    from distributed import get_task_stream

    before = client.run(worker_cpu_seconds)
    with get_task_stream(client) as stream:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    after = client.run(worker_cpu_seconds)
    busy = sum(
        s["stop"] - s["start"]
        for task in stream.data
        for s in task["startstops"]
        if s["action"] == "compute"
    )
    return wall, sum(after[w] - before[w] for w in before), busy


def link_first(files: list[Path], n: int, dest: Path) -> str:
    """A folder holding the first ``n`` files (hard links), for an ingest of exactly n."""
    dest.mkdir(parents=True)
    for f in files[:n]:
        os.link(f, dest / f.name)
    return str(dest)


def throughput(files: list[Path], n: int, chunk: int, workdir: Path) -> list[dict[str, Any]]:
    """Images/s of ingest and run on 1 and 2 worker processes, same n images."""
    src = link_first(files, n, workdir / f"tp-src-{n}")
    warm = link_first(files, chunk, workdir / "tp-warm")
    rows = []
    for workers in (1, 2):
        store, results = workdir / f"tp-{workers}.zarr", workdir / f"tp-{workers}.psnr.zarr"
        with local_cluster(workers) as client:
            ingest(warm, str(workdir / f"warm-{workers}.zarr"), chunk_size=chunk, progress=False)
            experiment.run_experiment(
                str(workdir / f"warm-{workers}.zarr"),
                str(workdir / f"warm-{workers}.psnr.zarr"),
                progress=False,
            )
            ingest_s, ingest_cpu, ingest_busy = timed(
                client, lambda s=store: ingest(src, str(s), chunk_size=chunk, progress=False)
            )
            run_s, run_cpu, run_busy = timed(
                client,
                lambda s=store, r=results: experiment.run_experiment(
                    str(s), str(r), progress=False
                ),
            )
        rows.append(
            {
                "workers": workers,
                "ingest_s": ingest_s,
                "ingest_cpu": ingest_cpu,
                "ingest_busy": ingest_busy,
                "run_s": run_s,
                "run_cpu": run_cpu,
                "run_busy": run_busy,
            }
        )
    return rows


def graph_growth(files: list[Path], n: int, chunk: int, workdir: Path) -> list[dict[str, Any]]:
    """Tasks and pickled graph bytes of ingest and run for n, 2n, 4n, 8n images."""
    rows = []
    for m in (1, 2, 4, 8):
        src = link_first(files, m * n, workdir / f"g-src-{m}")
        store, results = workdir / f"g-{m}.zarr", workdir / f"g-{m}.psnr.zarr"
        rec_ingest, rec_run = GraphRecorder(), GraphRecorder()
        with dask.config.set(scheduler=rec_ingest):
            ingest(src, str(store), chunk_size=chunk, progress=False)
        with dask.config.set(scheduler=rec_run):
            experiment.run_experiment(str(store), str(results), progress=False)
        n_chunks = -(-m * n // chunk)
        rows.append(
            {
                "images": m * n,
                "chunks": n_chunks,
                "ingest_graphs": len(rec_ingest.graphs),
                "ingest_tasks": rec_ingest.tasks,
                "ingest_bytes": rec_ingest.nbytes,
                "run_graphs": len(rec_run.graphs),
                "run_tasks": rec_run.tasks,
                "run_bytes": rec_run.nbytes,
                "run_largest": max(t for t, _ in rec_run.graphs),
            }
        )
    return rows


def machine() -> str:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{n} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def render(tp: list[dict], growth: list[dict], n_tp: int, chunk: int, loads: list[str]) -> str:
    one, two = tp
    out = [
        "## Scale-out (issue 4)",
        "",
        f"Machine: {machine()}; load average (1/5/15 min) at start {loads[0]}, end {loads[1]}.",
        "Command: `python benchmarks/scaleout.py "
        f"--throughput-images {n_tp} --n {growth[0]['images']} --chunk-size {chunk}`.",
        "",
        f"### Throughput, {n_tp} real images, chunks of {chunk}, LocalCluster of 1-thread "
        "worker processes",
        "",
        "CPU s: user + system time of the worker processes during the step; cores obtained = "
        "CPU s / wall s (what the machine gave the workers); tasks at once = summed task "
        "durations / wall s (from the task stream).",
        "",
        "| workers | ingest images/s | ingest CPU s | ingest cores obtained | ingest tasks at once "
        "| run images/s | run CPU s | run cores obtained | run tasks at once |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in tp:
        out.append(
            f"| {row['workers']} | {n_tp / row['ingest_s']:.1f} | {row['ingest_cpu']:.1f} | "
            f"{row['ingest_cpu'] / row['ingest_s']:.2f} | "
            f"{row['ingest_busy'] / row['ingest_s']:.2f} | {n_tp / row['run_s']:.1f} | "
            f"{row['run_cpu']:.1f} | {row['run_cpu'] / row['run_s']:.2f} | "
            f"{row['run_busy'] / row['run_s']:.2f} |"
        )
    out += [
        f"| 2 vs 1 | {one['ingest_s'] / two['ingest_s']:.2f}x | "
        f"{two['ingest_cpu'] / one['ingest_cpu']:.2f}x | | | {one['run_s'] / two['run_s']:.2f}x | "
        f"{two['run_cpu'] / one['run_cpu']:.2f}x | | |",
        "",
        "### Graphs as N grows (every graph computed, as the scheduler receives it)",
        "",
        "| images | chunks | ingest graphs | ingest tasks | ingest tasks/chunk | ingest KiB "
        "| run graphs | run tasks | run tasks/chunk | run KiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in growth:
        out.append(
            f"| {r['images']} | {r['chunks']} | {r['ingest_graphs']} | {r['ingest_tasks']} | "
            f"{r['ingest_tasks'] / r['chunks']:.2f} | {r['ingest_bytes'] / 1024:.1f} | "
            f"{r['run_graphs']} | {r['run_tasks']} | {r['run_tasks'] / r['chunks']:.2f} | "
            f"{r['run_bytes'] / 1024:.1f} |"
        )
    first, last = growth[0], growth[-1]
    dc = last["chunks"] - first["chunks"]
    out += [
        "",
        f"Increments from {first['images']} to {last['images']} images ({dc} more chunks): "
        f"ingest +{(last['ingest_tasks'] - first['ingest_tasks']) / dc:.2f} tasks and "
        f"+{(last['ingest_bytes'] - first['ingest_bytes']) / dc / 1024:.2f} KiB per chunk; "
        f"run +{(last['run_tasks'] - first['run_tasks']) / dc:.2f} tasks and "
        f"+{(last['run_bytes'] - first['run_bytes']) / dc / 1024:.2f} KiB per chunk.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2 * DEFAULT_CHUNK_SIZE, help="N, in images")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--throughput-images", type=int, default=8 * DEFAULT_CHUNK_SIZE)
    args = parser.parse_args(argv)
    loads = [load()]
    with tempfile.TemporaryDirectory(prefix="pupsnr-scaleout-") as tmp:
        workdir = Path(tmp)
        n_files = max(8 * args.n, args.throughput_images, args.chunk_size)
        print(f"writing {n_files} real images ...", file=sys.stderr)
        files = write_images(workdir / "images", n_files)
        print("throughput with 1 and 2 workers ...", file=sys.stderr)
        tp = throughput(files, args.throughput_images, args.chunk_size, workdir)
        print("graphs for N, 2N, 4N, 8N ...", file=sys.stderr)
        growth = graph_growth(files, args.n, args.chunk_size, workdir)
    loads.append(load())
    print(render(tp, growth, args.throughput_images, args.chunk_size, loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
