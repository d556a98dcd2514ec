"""Throughput of ONNX inference + comparison with img_true: ``model.predict`` on a LocalCluster
of 2 single-threaded worker processes against the same onnxruntime session in a plain loop in
one process.

    python benchmarks/model_inference.py [--n 256] [--chunk-size 32] [--channels 16] [--convs 3]

The model: a small image-to-image conv net (``--convs`` 3x3 convolutions of ``--channels``
channels, ReLU, sigmoid; NCHW float32 [0, 1]) built with onnx by tests/onnx_models.py, at
256 x 256. The images: the packaged sample photos, cropped and flipped by bench_data, resized
as ingest does, in a Zarr array on disk that the workers read. Both sides compute the same
thing per chunk: gray variant, model, rounding to uint8, PSNR per image against img_true; the
PSNRs are checked bit-identical. Before timing, each process (the loop's, each worker) creates
its session (with the spec's options: one intra-op thread) and does the per-chunk work once
on a chunk of zeros.
The cluster is the command line's (``cluster.connect``: its worker environment included). A
second loop gives the session 2 intra-op threads, the other way to use both cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_data  # noqa: E402
import onnx_models  # noqa: E402

from pupsnr_dask import model  # noqa: E402
from pupsnr_dask.kernels.metrics import psnr_kernel  # noqa: E402
from pupsnr_dask.kernels.variants import gray_kernel  # noqa: E402


def warm_up(spec: model.ModelSpec, chunk: int) -> int:
    """Create this process's session and run the whole per-chunk work once on zeros: the
    session's first run allocates, and the kernels' modules get imported."""
    zeros = np.zeros((chunk, spec.size, spec.size, 3), dtype=np.uint8)
    psnr_kernel(zeros, model.predict_kernel(zeros, spec, gray_kernel))
    return model.session_count()


def plain_loop(
    truth: np.ndarray, spec: model.ModelSpec, chunk: int
) -> tuple[np.ndarray, float, float]:
    """The same work in one process, chunk by chunk: PSNRs, wall and CPU seconds."""
    warm_up(spec, chunk)
    wall, cpu = time.perf_counter(), time.process_time()
    psnr = [
        psnr_kernel(part, model.run_model_kernel(np.asarray(gray_kernel(part)), spec))
        for part in (truth[i : i + chunk] for i in range(0, len(truth), chunk))
    ]
    return np.concatenate(psnr), time.perf_counter() - wall, time.process_time() - cpu


def _workers_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def on_cluster(
    store: str, spec: model.ModelSpec, chunk: int
) -> dict[str, tuple[np.ndarray, float, float]]:
    """On the command line's LocalCluster of 2 single-threaded workers: ``predict`` then a
    ``map_blocks`` PSNR (as a caller would write it), and the tasks of ``pupsnr advise
    --model`` (:func:`pupsnr_dask.advise.inference.fused_tasks`: variant, model, rounding and
    PSNR in one task per chunk). PSNRs, wall seconds, and CPU seconds of the worker processes,
    of each."""
    from pupsnr_dask.advise.inference import fused_tasks
    from pupsnr_dask.cluster import connect
    from pupsnr_dask.registry import resolve_variant

    out = {}
    with connect(n_workers=2, dashboard_address="127.0.0.1:0", quiet=True) as client:
        client.run(warm_up, spec, chunk)  # one session per worker, before timing
        truth = da.from_zarr(store)
        outputs = model.predict(truth, spec, "gray")
        graphs = {
            "predict + PSNR, LocalCluster 2 x 1": da.map_blocks(
                psnr_kernel, truth, outputs, drop_axis=[1, 2, 3], dtype=np.float64
            ),
        }
        keys = [str(k) for k in range(len(truth))]  # gray needs no keys; noise<s> would
        tasks = fused_tasks(truth, keys, spec, resolve_variant("gray"), psnr_kernel, chunk)
        for label, psnr in graphs.items():
            wall, cpu = time.perf_counter(), _workers_cpu(client)
            values = client.compute(psnr).result()
            out[label] = values, time.perf_counter() - wall, _workers_cpu(client) - cpu
        label = "advise --model tasks, LocalCluster 2 x 1"
        wall, cpu = time.perf_counter(), _workers_cpu(client)
        parts = client.gather(client.compute(tasks))
        values = np.concatenate([p for p, _ in parts])
        out[label] = values, time.perf_counter() - wall, _workers_cpu(client) - cpu
        assert client.run(model.session_count) == dict.fromkeys(client.run(os.getpid), 1)
    return out


def _load(values: tuple[float, ...] | None = None) -> str:
    return " ".join(f"{x:.2f}" for x in (values or os.getloadavg()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--convs", type=int, default=3)
    args = parser.parse_args(argv)
    import zarr

    load_before = os.getloadavg()

    truth = bench_data.resized_array(args.n)
    with tempfile.TemporaryDirectory(prefix="pupsnr-model-bench-") as tmp:
        path = onnx_models.save(
            onnx_models.conv_model(channels=args.channels, n_convs=args.convs),
            Path(tmp) / "conv.onnx",
        )
        spec = model.inspect_model(path, input_range="unit", output_range="unit")
        store = f"{tmp}/truth.zarr"
        array = zarr.create_array(
            store, shape=truth.shape, chunks=(args.chunk_size, 256, 256, 3), dtype=np.uint8
        )
        array[:] = truth
        runs = {"plain loop, 1 process, 1 thread": plain_loop(truth, spec, args.chunk_size)}
        two = model.inspect_model(path, input_range="unit", output_range="unit", intra_op_threads=2)
        runs["plain loop, 1 process, 2 ORT threads"] = plain_loop(truth, two, args.chunk_size)
        runs.update(on_cluster(store, spec, args.chunk_size))
    (loop, *_), (two_threads, *_), (cluster, *_), (fused, *_) = runs.values()
    assert cluster.tobytes() == loop.tobytes() == fused.tobytes(), "PSNRs differ"
    n = args.n
    print(f"model: {args.convs} 3x3 convs, {args.channels} channels, 256x256, NCHW float32")
    print(f"images: {n}, chunk size {args.chunk_size}, variant gray; cores {os.cpu_count()}")
    print(f"load average (1, 5, 15 min) before: {_load(load_before)}; after: {_load()}")
    print(f"{'':38s} {'wall s':>7s} {'images/s':>9s} {'CPU s':>7s} {'CPU ms/image':>13s}")
    for label, (_, wall, cpu) in runs.items():
        print(f"{label:38s} {wall:7.2f} {n / wall:9.1f} {cpu:7.2f} {1000 * cpu / n:13.1f}")
    walls = [wall for _, wall, _ in runs.values()]
    print(f"ratio images/s predict on the cluster / loop (1 thread): {walls[0] / walls[2]:.2f}")
    print(
        f"ratio images/s predict on the cluster / loop (2 ORT threads): {walls[1] / walls[2]:.2f}"
    )
    print(
        f"ratio images/s advise --model tasks on the cluster / loop (1 thread): "
        f"{walls[0] / walls[3]:.2f}"
    )
    same = two_threads.tobytes() == loop.tobytes()
    print(
        f"PSNRs bit-identical: cluster = fused = loop; loop with 2 ORT threads = 1 thread: {same}"
    )
    print(f"mean PSNR of the outputs: {np.mean(cluster):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
