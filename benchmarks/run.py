"""pupsnr benchmark: every figure of issue 3 from one run, printed as one table.

    python benchmarks/run.py [--n N] [--workers W] [--quick] [--workdir DIR]

N real images (the packaged sample photos, cropped, flipped and rotated deterministically; see
``bench_data.py``) are written as JPEG files, ingested, and the PSNR cube (3 variants x 6
scales) is computed in each of these ways, side by side:

1. ``pupsnr run``'s default path (exact block sums), end to end from the Zarr store to the
   results store, on a warm W-worker LocalCluster; also as a ``pupsnr run`` process that
   starts its own cluster, and on the threaded scheduler (1 process, W threads);
2. the literal coarsen-mean + ``dask.array.repeat`` graph, written as the design reads
   naively (below, :func:`naive_cube`), and ``pupsnr run --method literal``;
3. a plain per-image NumPy + Pillow loop in one process (:func:`hand_loop`);
4. the floor: reading the store once plus the gray and mosaic preprocessing alone;
5. ingest: ``pupsnr ingest`` with 1 and W workers against a serial Pillow decode+resize loop;
6. the default path again on 10 x N images (the N images, flipped and shifted): wall time on
   the warm cluster, and peak memory of ``pupsnr run`` processes at N and 10 N (RSS summed
   over the client, scheduler, nannies and workers, sampled with psutil every 50 ms; timed
   rows are not sampled, sampling costs CPU).

Every Dask method is checked to give the same PSNR as the default path (to 1e-9 dB) before
its time is reported. The naive graph runs on the first ``--naive-n`` images only (64 by
default: ~7,700 tasks and ~30 s per chunk of 32 on 2 cores). ``--quick`` is a smoke run.

Then the section of ``user_runs.py`` on ``--user-files`` real photo files (2,000 by default;
12,443 is the source's scale, 0 leaves it out): ``pupsnr ingest`` and ``pupsnr run`` as
processes against their floors and serial loops, peak disk, the experiment end to end, and
the instant answers.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data
import user_runs

from pupsnr_dask.cluster import compute
from pupsnr_dask.store.zarr_io import create_store, open_store

SCALES = (1, 2, 4, 8, 16, 32)


def write_store(ds: Any, store: str, *, progress: bool | None = None) -> None:
    """Write a whole lazy dataset as a pupsnr-style store (create_store, then one compute)."""
    compute(create_store(ds, store), progress=progress)


# --------------------------------------------------------------------------- measuring


class RssSampler:
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def total(self) -> int:
        import psutil

        procs = [self.root]
        with contextlib.suppress(psutil.Error):
            procs += self.root.children(recursive=True)
        rss = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
        return rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.total()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())


@dataclass
class Row:
    key: str
    what: str
    images: int
    seconds: float
    tasks: int | None = None
    chunks: int | None = None
    peak_rss: int | None = None

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def best_of(reps: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of ``reps`` calls, and the last result."""
    best, out = math.inf, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- the methods


def naive_cube(images: Any, scales: tuple[int, ...] = SCALES) -> Any:
    """The literal PSNR cube as the design reads naively: lazy coarsen-mean, then
    ``dask.array.repeat`` back up, subtract, square, mean; ``(image, variant, scale)`` dB.
    """
    import dask.array as da

    from pupsnr_dask.kernels.metrics import psnr_from_mse
    from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel

    x = images["images"].data
    truth = x.astype(np.float64)
    views = {
        "true": x,
        "gray": x.map_blocks(gray_kernel, dtype=np.uint8),
        "mosaic": x.map_blocks(mosaic_kernel, dtype=np.uint8),
    }
    per_variant = []
    for view in views.values():
        v = view.astype(np.float64)
        per_scale = []
        for s in scales:
            up = v
            if s > 1:
                pooled = da.coarsen(np.mean, v, {1: s, 2: s})
                up = da.repeat(da.repeat(pooled, s, axis=1), s, axis=2)
            mse = ((up - truth) ** 2).mean(axis=(1, 2, 3))
            per_scale.append(mse.map_blocks(psnr_from_mse, dtype=np.float64))
        per_variant.append(da.stack(per_scale, axis=1))
    return da.stack(per_variant, axis=1)


def hand_loop(store: str, scales: tuple[int, ...] = SCALES) -> np.ndarray:
    """What one writes by hand: per image, NumPy pooling + ``np.repeat``, Pillow gray/blur.

    Reads the store a chunk at a time (reading image by image would decompress each chunk
    once per image), one process, no Dask.
    """
    import zarr
    from PIL import Image, ImageFilter

    arr = zarr.open_array(f"{store}/images", mode="r")
    n, h, w, c = arr.shape
    step = arr.chunks[0]
    out = np.empty((n, 3, len(scales)))
    blur = ImageFilter.GaussianBlur(radius=4)
    for start in range(0, n, step):
        for i, img in enumerate(arr[start : start + step], start):
            gray = np.asarray(Image.fromarray(img).convert("L"))
            gray = np.repeat(gray[:, :, None], 3, axis=2)
            pooled = img.reshape(h // 16, 16, w // 16, 16, c).mean(axis=(1, 3))
            square = np.rint(np.repeat(np.repeat(pooled, 16, axis=0), 16, axis=1))
            mosaic = np.asarray(Image.fromarray(square.astype(np.uint8)).filter(blur))
            x = img.astype(np.float64)
            for j, view in enumerate((img, gray, mosaic)):
                for k, s in enumerate(scales):
                    p = view.reshape(h // s, s, w // s, s, c).mean(axis=(1, 3))
                    up = np.repeat(np.repeat(p, s, axis=0), s, axis=1)
                    mse = np.mean((up - x) ** 2)
                    out[i, j, k] = 10 * math.log10(255.0**2 / mse) if mse else math.inf
    return out


def _floor_kernel(chunk: np.ndarray) -> np.ndarray:
    from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel

    gray = gray_kernel(chunk)
    mosaic = mosaic_kernel(chunk)
    return gray[:, 0, 0, 0].astype(np.int64) + mosaic[:, 0, 0, 0]


def floor_graph(images: Any) -> Any:
    """Read every chunk once and make its gray and mosaic variants; a tiny result per image."""
    x = images["images"].data
    return x.map_blocks(_floor_kernel, drop_axis=[1, 2, 3], dtype=np.int64, name="floor")


def serial_ingest(files: list[Path], size: int = 256, threshold: float = 0.995) -> int:
    """A serial Pillow loop: decode, colour test (np.corrcoef), LANCZOS resize, in memory."""
    from PIL import Image, ImageOps

    kept = []
    for path in files:
        with Image.open(path) as img:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
        values = np.asarray(rgb).reshape(-1, 3).T.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            score = float(np.mean(np.corrcoef(values)))
        if score < threshold:
            kept.append(np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS)))
    return len(kept)


def cli(*args: str) -> tuple[float, int]:
    """Run ``pupsnr ARGS`` as a new process; wall seconds and peak RSS of its process tree."""
    env = {k: v for k, v in os.environ.items() if k != "PUPSNR_SCHEDULER"}
    cmd = [sys.executable, "-m", "pupsnr_dask", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with RssSampler(proc.pid) as rss:
        _out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, rss.peak


def replicate_store(store: str, target: str, copies: int) -> None:
    """An images store of ``copies`` x the images: copy k flipped (odd k) and shifted by 8k
    pixels, labels ``copyK/source``; same chunking and codec as ``store``."""
    import dask
    import dask.array as da
    import xarray as xr

    src = open_store(store, "images")
    x = src["images"].data
    parts = []
    for k in range(copies):
        part = x[:, :, ::-1] if k % 2 else x
        parts.append(da.roll(part, 8 * k, axis=1) if k else part)
    pixels = da.concatenate(parts).rechunk((x.chunks[0][0], -1, -1, -1))
    n = len(src["image"])
    coords = {"image": np.arange(copies * n)}
    for name in ("source", "color_score", "split", "original_width", "original_height"):
        values = src[name].values
        if name == "source":
            values = np.array([f"copy{k}/{s}" for k in range(copies) for s in values], object)
        else:
            values = np.concatenate([values] * copies)
        coords[name] = ("image", values)
    ds = xr.Dataset({"images": (src["images"].dims, pixels)}, coords=coords, attrs=src.attrs)
    enc = src["images"].encoding
    ds["images"].encoding = {k: enc[k] for k in ("compressors", "filters") if k in enc}
    with dask.config.set(scheduler="threads"):
        write_store(ds, target, progress=False)


@contextlib.contextmanager
def local_cluster(n_workers: int, processes: bool = True) -> Iterator[Any]:
    """The LocalCluster ``pupsnr`` starts (:func:`pupsnr_dask.cluster.connect`), or with
    ``processes=False`` workers as threads of this process (quick smoke runs)."""
    from distributed import Client, LocalCluster

    from pupsnr_dask.cluster import connect

    if processes:
        with connect(None, n_workers=n_workers, dashboard_address=":0", quiet=True) as client:
            yield client
        return
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False) as cluster,
        Client(cluster) as client,
    ):
        yield client


def count_tasks(client: Any, fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """Wall time, tasks the scheduler ran, and result of ``fn()``."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    return wall, len(ts.data), out


# --------------------------------------------------------------------------- the run


def run_benchmark(
    n: int, workers: int, quick: bool, naive_n: int, workdir: Path, say: Callable
) -> dict:
    import dask
    import xarray as xr

    from pupsnr_dask import experiment
    from pupsnr_dask.ingest import ingest_folder as ingest

    reps = 1 if quick else 2
    rows: dict[str, Row] = {}
    checks: list[str] = []
    src = workdir / "src"
    files = bench_data.write_images(src, n)
    say(f"wrote {n} JPEG files ({sum(f.stat().st_size for f in files) / 1e6:.0f} MB)")
    store = str(workdir / "data.zarr")
    results = str(workdir / "psnr.zarr")

    # 5. ingest
    t, kept = best_of(1, lambda: serial_ingest(files))
    rows["5a"] = Row("5a", "ingest: serial Pillow loop (decode, colour test, resize)", n, t)
    if not quick:  # a cluster of its own: ~2-5 s to start
        with local_cluster(1):
            t, _ = best_of(1, lambda: ingest(str(src), str(workdir / "one.zarr"), progress=False))
            rows["5b"] = Row("5b", "ingest: pupsnr ingest, 1 worker, warm cluster", n, t)
    shutil.rmtree(workdir / "one.zarr", ignore_errors=True)

    def default_run() -> Any:
        return experiment.run_experiment(store, results, overwrite=True, progress=False)

    def cube_only() -> Any:
        out = str(workdir / "cube.zarr")
        shutil.rmtree(out, ignore_errors=True)
        cube = experiment.build_psnr_cube(open_store(store, "images"))
        return write_store(cube, out, progress=False)

    def floor_run() -> Any:
        return floor_graph(open_store(store, "images")).compute()

    with local_cluster(workers, processes=not quick) as client:
        say(f"{workers}-worker cluster up")
        t, _ = best_of(1, lambda: ingest(str(src), store, progress=False))
        rows["5c"] = Row("5c", f"ingest: pupsnr ingest, {workers} workers, warm cluster", n, t)
        images = open_store(store, "images")
        n_img = images.sizes["image"]
        n_chunks = images["images"].data.numblocks[0]
        if kept != n_img:
            raise RuntimeError(f"serial loop kept {kept} images, ingest {n_img}")
        say(f"ingested {n_img} images in {n_chunks} chunks")

        # 1 and 4 interleaved, so that a burst of load from elsewhere hits both alike
        best = {"1": (math.inf, 0, 0), "1d": (math.inf, 0, 0), "4": (math.inf, 0, 0)}
        for _ in range(reps):
            for key, fn in (("1", default_run), ("1d", cube_only), ("4", floor_run)):
                t, tasks, _ = count_tasks(client, fn)
                if t < best[key][0]:
                    best[key] = (t, tasks, None)
        reference = xr.open_zarr(results)["psnr"].values
        checks.append(
            check(
                "cube written without pupsnr run's bookkeeping",
                xr.open_zarr(workdir / "cube.zarr")["psnr"].values,
                reference,
            )
        )
        what = {
            "1": f"default path: pupsnr run, warm cluster ({workers} workers)",
            "1d": "  the same cube, plain to_zarr (no lock, plan, markers, checks)",
            "4": "floor: read store + gray + mosaic only",
        }
        for key, (t, tasks, peak) in best.items():
            rows[key] = Row(key, what[key], n_img, t, tasks, n_chunks, peak)
        say("default path and floor done")

        # 2. literal graphs; the naive one on the first naive_n images (it is slow)
        m = min(naive_n, n_img)
        scales = (1, 2) if quick else SCALES
        naive = naive_cube(open_store(store, "images").isel(image=slice(0, m)), scales)
        naive_tasks = len(dict(naive.__dask_graph__()))
        naive_chunks = naive.numblocks[0]
        t, _, got = count_tasks(client, naive.compute)
        checks.append(check("naive coarsen+repeat graph", got, reference[:m, :, : len(scales)]))
        note = f", first {m} images" if m < n_img else ""
        note += ", scales 1-2" if quick else ""
        rows["2"] = Row(
            "2",
            f"literal coarsen-mean + da.repeat graph (naive{note})",
            m,
            t,
            naive_tasks,
            naive_chunks,
        )
        say(f"naive graph done: {naive_tasks} tasks")
        literal = str(workdir / "literal.zarr")
        t, tasks, _ = count_tasks(
            client,
            lambda: experiment.run_experiment(
                store, literal, method="literal", overwrite=True, progress=False
            ),
        )
        checks.append(check("--method literal", xr.open_zarr(literal)["psnr"].values, reference))
        rows["2b"] = Row(
            "2b", "pupsnr run --method literal (one task per chunk)", n_img, t, tasks, n_chunks
        )
        say("literal method done")

        # 6. N and 10 N on the warm cluster
        big = str(workdir / "data10.zarr")
        replicate_store(store, big, 10)
        say("10 N store written")
        sampler = RssSampler(os.getpid()) if quick else contextlib.nullcontext()
        with sampler as rss:
            t, _ = best_of(reps, default_run)
        rows["6a"] = Row(
            "6a", "default path, warm cluster, N images", n_img, t, peak_rss=rss and rss.peak
        )
        sampler = RssSampler(os.getpid()) if quick else contextlib.nullcontext()
        with sampler as rss:
            t, _ = best_of(
                1,
                lambda: experiment.run_experiment(
                    big, str(workdir / "psnr10.zarr"), overwrite=True, progress=False
                ),
            )
        rows["6b"] = Row(
            "6b",
            "default path, warm cluster, 10 N images",
            10 * n_img,
            t,
            peak_rss=rss and rss.peak,
        )
        say("10 N on the warm cluster done")

    say("cluster closed")
    # 1c: threads instead of processes
    with dask.config.set(scheduler="threads", num_workers=workers):
        t, _ = best_of(reps, default_run)
    rows["1c"] = Row(
        "1c", f"default path, threaded scheduler (1 process, {workers} threads)", n_img, t
    )

    # 3. the hand-written loop
    t, got = best_of(1, lambda: hand_loop(store))
    checks.append(check("per-image loop", got, reference))
    rows["3"] = Row("3", "per-image NumPy + Pillow loop (1 process)", n_img, t)
    say("per-image loop done")

    if not quick:  # `pupsnr` processes, each starting its own cluster: what a user waits for
        nw = ("--n-workers", str(workers))
        t, rss = cli("ingest", str(src), "-o", str(workdir / "cli.zarr"), "-q", *nw)
        rows["5d"] = Row(
            "5d", f"`pupsnr ingest` process ({workers} workers, own cluster)", n, t, peak_rss=rss
        )
        t, rss = cli("run", store, "-o", results, "--overwrite", "-q", *nw)
        rows["6c"] = Row(
            "6c",
            f"`pupsnr run` process, N images ({workers} workers, own cluster)",
            n_img,
            t,
            peak_rss=rss,
        )
        t, rss = cli("run", big, "-o", str(workdir / "psnr10.zarr"), "--overwrite", "-q", *nw)
        rows["6d"] = Row("6d", "`pupsnr run` process, 10 N images", 10 * n_img, t, peak_rss=rss)
        say("pupsnr processes done")
    return {"rows": rows, "checks": checks, "n_chunks": n_chunks, "quick": quick}


def check(name: str, got: np.ndarray, reference: np.ndarray) -> str:
    """Same PSNR as the default path (to 1e-9 dB, +inf where it is +inf)?"""
    finite = np.isfinite(reference)
    same_inf = np.array_equal(np.isposinf(got), np.isposinf(reference))
    diff = float(np.max(np.abs(got[finite] - reference[finite]), initial=0.0))
    if not same_inf or diff > 1e-9:
        raise RuntimeError(f"{name} disagrees with the default path: max {diff:.3g} dB")
    return f"{name}: max |dB difference| vs default path = {diff:.1e}"


# --------------------------------------------------------------------------- the table


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def render(out: dict, n: int, workers: int, loads: tuple[str, str], seconds: float) -> str:
    rows: dict[str, Row] = out["rows"]
    base = rows["1"]
    lines = [
        f"pupsnr benchmark: N = {n} real images (256 x 256 RGB), 3 variants x 6 scales, "
        f"{workers} workers, {out['n_chunks']} chunks",
        f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"load average before {loads[0]}, after {loads[1]}; total {seconds:.0f} s",
        "",
        f"{'#':3s} {'what':68s} {'images':>6s} {'wall s':>8s} {'images/s':>9s} "
        f"{'default x':>9s} {'tasks/chunk':>11s} {'peak RSS MB':>11s}",
    ]
    order = ["1", "1d", "1c", "2", "2b", "3", "4", "5a", "5b", "5c", "5d", "6a", "6b", "6c", "6d"]
    for key in [k for k in order if k in rows]:
        row = rows[key]
        speed = base.rate / row.rate if key[0] in "1234" else float("nan")
        tpc = f"{row.tasks / row.chunks:11.1f}" if row.tasks and row.chunks else f"{'':11s}"
        rss = f"{row.peak_rss / 1e6:11.0f}" if row.peak_rss else f"{'':11s}"
        ratio = f"{speed:9.2f}" if not math.isnan(speed) else f"{'':9s}"
        lines.append(
            f"{key:3s} {row.what:68s} {row.images:6d} {row.seconds:8.2f} {row.rate:9.1f} "
            f"{ratio} {tpc} {rss}"
        )
    lines.append("(default x = how many times faster the default path (row 1) is)")
    naive = rows["2"]
    lines.append(
        f"naive graph: {naive.tasks} tasks for {naive.chunks} chunks "
        f"({naive.tasks / naive.chunks:.0f} per chunk); default path: {base.tasks} tasks run"
    )
    r_loop = base.rate / rows["3"].rate
    r_naive = base.rate / naive.rate
    r_floor = base.seconds / rows["4"].seconds
    tpc = base.tasks / base.chunks
    r_time = rows["6b"].seconds / rows["6a"].seconds
    mem = ("6c", "6d") if "6d" in rows else ("6a", "6b")
    r_rss = rows[mem[1]].peak_rss / rows[mem[0]].peak_rss
    r_ingest = rows["5c"].rate / rows["5b"].rate if "5b" in rows else math.nan
    r_serial = rows["5c"].rate / rows["5a"].rate
    lines += [
        "",
        "targets (ratios from this run)"
        + (": --quick, a smoke run at tiny N, means nothing" if out["quick"] else ":"),
        f"  default vs per-image loop   {r_loop:7.1f}x  (>= 10x)   {verdict(r_loop >= 10)}",
        f"  default vs naive graph      {r_naive:7.1f}x  (>= 20x)   {verdict(r_naive >= 20)}",
        f"  default time / floor time   {r_floor:7.2f}   (<= 1.5)   {verdict(r_floor <= 1.5)}",
        f"  tasks per chunk (run)       {tpc:7.1f}   (<= 10)    {verdict(tpc <= 10)}",
        f"  10 N time / N time          {r_time:7.2f}   (<= 11)    {verdict(r_time <= 11)}",
        f"  10 N peak RSS / N peak RSS  {r_rss:7.2f}   (<= 1.2)   {verdict(r_rss <= 1.2)}"
        f"  (rows {mem[0]}, {mem[1]})",
        f"  ingest {workers} workers / 1 worker  {r_ingest:7.2f}x  (>= 1.7x)  ".replace(
            "nanx", "n/a "
        )
        + (verdict(r_ingest >= 1.7) if "5b" in rows else "not measured (--quick)"),
        f"  ingest {workers} workers / serial loop  {r_serial:5.2f}x",
        "",
        "checks:",
        *(f"  {c}" for c in out["checks"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--n", type=int, default=512, help="images [default: 512]")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers [default: 2]")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: time everything once, naive graph at scales 1-2 only, workers as "
        "threads of this process, no 1-worker ingest and no `pupsnr` processes",
    )
    parser.add_argument(
        "--naive-n",
        type=int,
        default=64,
        help="images for the naive graph, ~1 min per chunk of 32 on 2 cores [default: 64]",
    )
    parser.add_argument(
        "--user-files",
        type=int,
        default=2000,
        help="corpus files of the section 'as users run it' (user_runs.py); 0 leaves it out "
        f"[default: 2000; --quick: {user_runs.QUICK_FILES}]",
    )
    parser.add_argument(
        "--user-rounds",
        type=int,
        default=user_runs.DEFAULT_ROUNDS,
        help="times that section's per-file loop and ingest are timed, in turn "
        f"[default: {user_runs.DEFAULT_ROUNDS}; --quick: 1]",
    )
    parser.add_argument("--corpus-cache", type=Path, default=None, help="keep the corpus here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    parser.add_argument("--verbose", "-v", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    if min(args.n, args.workers, args.naive_n, args.user_rounds) < 1:
        parser.error("--n, --workers, --naive-n and --user-rounds must be at least 1")

    def say(line: str) -> None:
        if args.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    os.environ.pop("PUPSNR_SCHEDULER", None)  # always a local cluster
    with contextlib.ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pupsnr-b-")))
        workdir.mkdir(parents=True, exist_ok=True)
        before, t0 = load(), time.perf_counter()
        out = run_benchmark(args.n, args.workers, args.quick, args.naive_n, workdir, say)
        print(render(out, args.n, args.workers, (before, load()), time.perf_counter() - t0))
        n_files = user_runs.QUICK_FILES if args.quick and args.user_files else args.user_files
        if n_files:
            users = workdir / "user-runs"
            users.mkdir(exist_ok=True)
            cache = args.corpus_cache or users / "corpus"
            rounds = 1 if args.quick else args.user_rounds
            fig = user_runs.measure(n_files, cache, users, args.workers, say, args.quick, rounds)
            print("\n" + user_runs.render(fig, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
