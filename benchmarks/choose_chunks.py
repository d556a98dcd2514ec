"""Choose the Zarr codec and chunk size of the images store by measurement on real images.

    python benchmarks/choose_chunks.py [--n 256]

Part 1, codecs (one process, no Dask): for each candidate, write ``n`` real 256 x 256 images
in chunks of 32 and read them back; prints the compression ratio and MB/s of raw pixels.
Part 2, chunk sizes: ``pupsnr ingest`` of ``n`` real JPEG files with each chunk size on a
1-worker and a 2-worker LocalCluster, then ``pupsnr run``'s default path on the 2-worker
one; prints images/s and the tasks run per chunk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data


def codecs() -> dict[str, list]:
    """Candidate compressors: zarr-python's own (no extra dependency)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        "none": [],
        "zstd-0 (zarr default)": [ZstdCodec(level=0)],
        "zstd-1": [ZstdCodec(level=1)],
        "zstd-5": [ZstdCodec(level=5)],
        "blosc-lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)],
        "blosc-lz4hc": [BloscCodec(cname="lz4hc", clevel=5, shuffle="noshuffle", typesize=1)],
        "blosc-zstd-1": [BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle", typesize=1)],
        "blosc-zstd-1-bitshuffle": [
            BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=1)
        ],
    }


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_codecs(pixels: np.ndarray, workdir: Path, chunk: int = 32) -> list[tuple]:
    import zarr

    rows = []
    raw = pixels.nbytes
    for name, compressors in codecs().items():
        best_w = best_r = float("inf")
        for rep in range(3):
            path = workdir / f"codec-{rep}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            arr = zarr.create_array(
                str(path),
                shape=pixels.shape,
                chunks=(chunk, *pixels.shape[1:]),
                dtype="uint8",
                compressors=compressors,
            )
            arr[:] = pixels
            best_w = min(best_w, time.perf_counter() - t0)
            size = store_bytes(path)
            t0 = time.perf_counter()
            back = zarr.open_array(str(path), mode="r")[:]
            best_r = min(best_r, time.perf_counter() - t0)
            assert np.array_equal(back, pixels)
            shutil.rmtree(path)
        rows.append((name, raw / size, raw / best_w / 1e6, raw / best_r / 1e6))
    return rows


def measure_chunks(n: int, workdir: Path, chunks: list[int]) -> list[tuple]:
    """Per chunk size: ingest images/s with 1 and 2 workers, ``pupsnr run`` images/s (2
    workers) and the tasks it ran per chunk; ``n`` real JPEG files."""
    from distributed import get_task_stream
    from run import local_cluster

    from pupsnr_dask import experiment
    from pupsnr_dask.ingest import ingest_folder as ingest

    src = workdir / "src"
    bench_data.write_images(src, n)
    ingest_s: dict[tuple[int, int], float] = {}
    run_s: dict[int, tuple[float, int]] = {}
    for workers in (1, 2):
        with local_cluster(workers) as client:
            for chunk in chunks:
                store = workdir / f"chunk{chunk}.zarr"
                shutil.rmtree(store, ignore_errors=True)
                t0 = time.perf_counter()
                ingest(str(src), str(store), chunk_size=chunk, progress=False)
                ingest_s[workers, chunk] = time.perf_counter() - t0
                if workers == 1:
                    continue
                best, tasks = float("inf"), 0
                for _ in range(2):
                    with get_task_stream(client) as ts:
                        t0 = time.perf_counter()
                        experiment.run_experiment(
                            str(store), str(workdir / "r.zarr"), overwrite=True, progress=False
                        )
                        t = time.perf_counter() - t0
                    best, tasks = min(best, t), len(ts.data)
                run_s[chunk] = (best, tasks)
                shutil.rmtree(store)
    return [
        (
            c,
            -(-n // c),
            n / ingest_s[1, c],
            n / ingest_s[2, c],
            ingest_s[1, c] / ingest_s[2, c],
            n / run_s[c][0],
            run_s[c][1] / -(-n // c),
        )
        for c in chunks
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images [default: 256]")
    parser.add_argument("--chunks", default="16,32,64,128", help="chunk sizes to try")
    parser.add_argument("--no-codecs", action="store_true", help="skip part 1")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pupsnr-chunks-"))
    try:
        print(f"{args.n} real images; load {os.getloadavg()}")
        if not args.no_codecs:
            pixels = bench_data.resized_array(args.n)
            print(f"\n{'codec':26s} {'ratio':>6s} {'write MB/s':>11s} {'read MB/s':>10s}")
            for name, ratio, w, r in measure_codecs(pixels, workdir):
                print(f"{name:26s} {ratio:6.2f} {w:11.0f} {r:10.0f}")
        chunks = [int(c) for c in args.chunks.split(",")]
        print(
            f"\n{'chunk':>5s} {'chunks':>6s} {'ingest 1w/s':>11s} {'ingest 2w/s':>11s} "
            f"{'2w/1w':>6s} {'run images/s':>13s} {'tasks/chunk':>12s}"
        )
        for c, nc, i1, i2, r, ips, tpc in measure_chunks(args.n, workdir, chunks):
            print(f"{c:5d} {nc:6d} {i1:11.1f} {i2:11.1f} {r:6.2f} {ips:13.1f} {tpc:12.1f}")
        print(f"load {os.getloadavg()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
