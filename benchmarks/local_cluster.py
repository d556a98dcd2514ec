"""`pupsnr run` as a process with a local cluster of processes or of threads (issue 12, item 3).

    python benchmarks/local_cluster.py --workdir DIR [--n 14,1000] [--rounds 2]

For each N: N 256 x 256 variations of the packaged sample photos (``bench_data.variations``,
resized, so ingest needs no resize), ingested once with ``pupsnr ingest``. Then, ``--rounds``
times, interleaved: ``pupsnr run STORE --overwrite -q --processes`` and ``--threads``, wall
and CPU (user + system of the process and its children), the load average beside each; the
psnr and mse bytes of both compared. Last, the fixed cost of the default (``pupsnr run``
without either flag) on the largest N: the process against ``run_experiment`` on a warm
in-process cluster (after a warm-up run), interleaved.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_data import variations
from PIL import Image


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(*args: str) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the children) of ``pupsnr ARGS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["pupsnr", *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_store(workdir: Path, n: int) -> Path:
    src, store = workdir / f"src{n}", workdir / f"images{n}.zarr"
    if not store.exists():
        src.mkdir(parents=True, exist_ok=True)
        for i, (_, img) in enumerate(variations(n)):
            img.resize((256, 256), Image.Resampling.LANCZOS).save(src / f"{i:05d}.png")
        subprocess.run(["pupsnr", "ingest", str(src), "-o", str(store), "-q"], check=True)
    return store


def same_bytes(a: Path, b: Path) -> bool:
    import zarr

    return all(
        zarr.open_array(f"{a}/{v}", mode="r")[:].tobytes()
        == zarr.open_array(f"{b}/{v}", mode="r")[:].tobytes()
        for v in ("psnr", "mse")
    )


def fixed_cost(workdir: Path, store: Path, rounds: int) -> None:
    from pupsnr_dask import run_experiment
    from pupsnr_dask.cluster import connect

    for r in range(1, rounds + 1):
        wall, _ = timed("run", str(store), "-o", str(workdir / "fixed.zarr"), "--overwrite", "-q")
        with connect(processes=False, quiet=True, dashboard_address=":0"):
            run_experiment(str(store), str(workdir / "warmup.zarr"), overwrite=True, progress=False)
            t0 = time.perf_counter()
            run_experiment(str(store), str(workdir / "warm.zarr"), overwrite=True, progress=False)
            warm = time.perf_counter() - t0
        print(f"round {r}: process (default) {wall:.2f} s, warm in-process cluster {warm:.2f} s, "
              f"fixed cost {wall - warm:.2f} s, process/warm {wall / warm:.2f}; load {load()}",
              flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/local_cluster.py", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", default="14,1000", help="images per store [default: 14,1000]")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.n.split(",")]
    stores = {n: make_store(args.workdir, n) for n in sizes}
    print(f"cores {len(os.sched_getaffinity(0))}; load {load()}", flush=True)
    for r in range(1, args.rounds + 1):
        for n, store in stores.items():
            for mode in ("processes", "threads"):
                out = args.workdir / f"psnr{n}-{mode}.zarr"
                wall, cpu = timed(
                    "run", str(store), "-o", str(out), "--overwrite", "-q", f"--{mode}"
                )
                print(f"round {r}, {n} images, --{mode}: wall {wall:.2f} s, CPU {cpu:.2f} s; "
                      f"load {load()}", flush=True)  # fmt: skip
    for n in sizes:
        a, b = (args.workdir / f"psnr{n}-{m}.zarr" for m in ("processes", "threads"))
        print(f"{n} images: psnr and mse bit-identical: {same_bytes(a, b)}")
    fixed_cost(args.workdir, stores[max(sizes)], args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
