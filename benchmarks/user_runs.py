"""Speed as a user runs it (issue 12): `pupsnr` as a process, cluster start included.

    python benchmarks/user_runs.py [--files 2000] [--cache DIR] [--workers 2] [--rounds 3] [--quick]
    python benchmarks/user_runs.py --files 12443          # the source's scale (item 5)

On a corpus of real photo files like a user's folder (``corpus.py``: 0.5-1.2 megapixel
JPEGs and PNGs made from the packaged sample photos), side by side in one run:

- the per-file stage (decode, colour test, resize: ``kernels.image.load_resized``) as a plain
  loop in this process, and that loop divided by the cores (the floor of ingest);
- ``pupsnr ingest`` as a process; the loop and the ingest are timed in turn, ``--rounds``
  times (3 by default), and the ingest's ratios are the medians of the rounds' ratios: the
  speed of this shared machine drifts by 10-20 % within minutes, and a ratio of two figures
  taken minutes apart carries that drift. So each round's loop runs in two halves around its
  ingest (every other file before it, the others after it: the halves are alike), the files
  read once beforehand so that neither meets them first;
- in a further ingest of the same files (so that the sampling does not slow the timed ones),
  the peak disk use of the store and its journal (file sizes summed every 0.1 s) against
  the final store;
- ``pupsnr run`` as a process, against ``run_experiment`` on a warm cluster started before;
- the whole experiment end to end (ingest + run processes) against a serial per-image loop
  (the per-file stage, then all 18 PSNRs of each kept image computed literally: Pillow gray,
  mosaic, average-pool and nearest upsampling, one image at a time);
- instant answers: ``--help``, argument and store errors, up-to-date reruns and ``report``,
  each as a process (import time included).

Every figure is a wall time in seconds from this run; the targets are ratios within it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

from pupsnr_dask.defaults import DEFAULT_SCALES, DEFAULT_SIZE, DEFAULT_THRESHOLD
from pupsnr_dask.kernels.image import load_resized
from pupsnr_dask.kernels.metrics import mse_kernel, psnr_from_mse
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel, pu_kernel

QUICK_FILES = 6
#: Rounds of (per-file loop, ``pupsnr ingest``) timed in turn (``--rounds``).
DEFAULT_ROUNDS = 3
#: The instant answers a --quick run times (each is a process: seconds apiece).
QUICK_ANSWERS = (
    "pupsnr --help",
    "ingest: SRC missing",
    "run: a results store as STORE",
    "run rerun, up to date",
    "report (text)",
)


def tree_bytes(*roots: Path) -> int:
    """Sum of the sizes of the files below ``roots`` (missing roots count 0)."""
    total = 0
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(folder, name)).st_size
    return total


class DiskSampler:
    """Peak of :func:`tree_bytes` of some folders, sampled in a thread."""

    def __init__(self, *roots: Path, interval: float = 0.1) -> None:
        self.roots, self.interval, self.peak = roots, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_bytes(*self.roots))
            self._stop.wait(self.interval)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_bytes(*self.roots))


def pupsnr(*args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``pupsnr ARGS`` as a new process (as a user does); wall seconds and the result."""
    # As on a user's machine: Python caches the bytecode it compiles. PYTHONDONTWRITEBYTECODE
    # (set on the machines this was measured on) made each process, and each of ingest's
    # workers, compile pupsnr_dask anew: `pupsnr run` up to date took 1.70 s against 1.61 s
    # with the cache (means of three, interleaved; benchmarks/RESULTS.md).
    drop = ("PUPSNR_SCHEDULER", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pupsnr_dask", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if check and proc.returncode:
        raise RuntimeError(f"pupsnr {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return wall, proc


def per_file_loop(files: list[Path]) -> tuple[float, list[np.ndarray | None]]:
    """The per-file stage of ingest as a plain loop; seconds and each file's image (None:
    rejected)."""
    images = []
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb") as fp:
            img, _record = load_resized(fp, path.name, DEFAULT_SIZE, DEFAULT_THRESHOLD)
        images.append(img)
    return time.perf_counter() - t0, images


def loop_around(files: list[Path], between: Callable[[], float]) -> tuple[float, float, list]:
    """:func:`per_file_loop` in two halves, every other file before ``between()`` and the
    others after it: the loop's seconds, ``between``'s, and the kept images in file order."""
    before, evens = per_file_loop(files[0::2])
    middle = between()
    after, odds = per_file_loop(files[1::2])
    images: list[np.ndarray | None] = [None] * len(files)
    images[0::2], images[1::2] = evens, odds
    return before + after, middle, [img for img in images if img is not None]


def psnr_loop(images: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """All 18 PSNRs of each image, literally, one image at a time; seconds and the values."""
    out = np.empty((len(images), 3, len(DEFAULT_SCALES)))
    t0 = time.perf_counter()
    for i, img in enumerate(images):
        one = img[None]
        for j, view in enumerate((one, gray_kernel(one), mosaic_kernel(one))):
            for k, s in enumerate(DEFAULT_SCALES):
                out[i, j, k] = psnr_from_mse(mse_kernel(one, pu_kernel(view, s)))[0]
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def warm_cluster(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def measure(
    n_files: int,
    cache: Path,
    workdir: Path,
    workers: int,
    say: Callable[[str], None],
    quick: bool = False,
    rounds: int = DEFAULT_ROUNDS,
) -> dict[str, Any]:
    """Every figure of the section; see the module docstring.

    ``rounds``: how many times the per-file loop and ``pupsnr ingest`` are timed, in turn;
    ``fig["rounds"]`` holds each round's (loop, ingest) seconds, ``fig["loop"]`` and
    ``fig["ingest"]`` their medians.
    """
    import xarray as xr

    from pupsnr_dask.experiment import run_experiment

    folder = corpus.build(cache, n=n_files, jobs=workers)
    files = corpus.files(folder)
    say(f"corpus of {len(files)} files in {folder}")
    fig: dict[str, Any] = {"files": len(files), "workers": workers}
    store, results = workdir / "data.zarr", workdir / "psnr.zarr"
    nw = ("--n-workers", str(workers), "-q")
    fig["rounds"] = []
    for path in files:  # in the page cache for the loop and the ingest alike
        path.read_bytes()
    for r in range(rounds):
        if r:  # the store of the last round is the one the run reads
            shutil.rmtree(store)
        loop, ingest, kept = loop_around(
            files, lambda: pupsnr("ingest", str(folder), "-o", str(store), *nw)[0]
        )
        say(f"round {r + 1}: per-file loop {loop:.1f} s, pupsnr ingest {ingest:.1f} s")
        fig["rounds"].append((loop, ingest))
    fig["loop"] = float(np.median([loop for loop, _ in fig["rounds"]]))
    fig["ingest"] = float(np.median([ingest for _, ingest in fig["rounds"]]))
    fig["kept"] = len(kept)
    fig["psnr_loop"], loop_psnr = psnr_loop(kept)
    say(f"18-PSNR loop {fig['psnr_loop']:.1f} s")
    # The peak disk in an ingest of its own: walking the files every 0.1 s takes CPU from the
    # two workers (12,443 files: 135.7 s timed beside the sampler, 117.9 s alone).
    disk_store = workdir / "disk.zarr"
    with DiskSampler(disk_store, Path(f"{disk_store}.partial")) as disk:
        pupsnr("ingest", str(folder), "-o", str(disk_store), *nw)
    fig["disk_peak"], fig["disk_final"] = disk.peak, tree_bytes(disk_store)
    shutil.rmtree(disk_store)
    fig["run"], _ = pupsnr("run", str(store), "-o", str(results), *nw)
    say(f"pupsnr run {fig['run']:.1f} s")
    got = xr.open_zarr(results)["psnr"].values
    if got.shape != loop_psnr.shape or not np.array_equal(np.isinf(got), np.isinf(loop_psnr)):
        raise RuntimeError("pupsnr run and the serial loop disagree")
    finite = np.isfinite(got)
    fig["max_db_diff"] = float(np.max(np.abs(got[finite] - loop_psnr[finite]), initial=0.0))
    if fig["max_db_diff"] > 1e-9:
        raise RuntimeError(f"pupsnr run is {fig['max_db_diff']:.3g} dB off the serial loop")
    with warm_cluster(workers):
        t0 = time.perf_counter()
        run_experiment(str(store), str(workdir / "warm.zarr"), progress=False)
        fig["warm_run"] = time.perf_counter() - t0
    say(f"warm run {fig['warm_run']:.1f} s")
    fig["instant"] = instant_answers(
        folder, store, results, workdir, QUICK_ANSWERS if quick else None
    )
    return fig


def instant_answers(
    folder: Path, store: Path, results: Path, workdir: Path, only: tuple[str, ...] | None = None
) -> list[tuple]:
    """(what, wall s, CPU s, exit status) of each answer that needs no computation (or ``only``).

    The CPU time (user + system of the process) is the figure to compare on a loaded machine.
    """
    missing = str(workdir / "no-such-folder")
    cases = [
        ("pupsnr --help", ("--help",)),
        ("pupsnr ingest --help", ("ingest", "--help")),
        ("ingest: SRC missing", ("ingest", missing, "-o", str(workdir / "x.zarr"))),
        ("ingest: --size 7", ("ingest", str(folder), "-o", str(workdir / "x.zarr"), "--size", "7")),
        ("run: STORE missing", ("run", missing, "-o", str(workdir / "x.zarr"))),
        ("run: a results store as STORE", ("run", str(results), "-o", str(workdir / "y.zarr"))),
        ("run: a folder that is no store", ("run", str(folder), "-o", str(workdir / "y.zarr"))),
        ("ingest rerun, up to date", ("ingest", str(folder), "-o", str(store), "-q")),
        ("run rerun, up to date", ("run", str(store), "-o", str(results), "-q")),
        ("report (text)", ("report", str(results))),
        ("report --format csv", ("report", str(results), "--format", "csv")),
        ("report --format json", ("report", str(results), "--format", "json")),
    ]
    rows = []
    for what, args in cases:
        if only is not None and what not in only:
            continue
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds, proc = pupsnr(*args, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows.append((what, seconds, cpu, proc.returncode))
    return rows


def round_ratios(fig: dict[str, Any]) -> tuple[float, float]:
    """Median over the rounds of (loop / ingest, ingest / floor), each round its own pair."""
    cores = fig["workers"]
    speedups = [loop / ingest for loop, ingest in fig["rounds"]]
    to_floor = [ingest / (loop / cores) for loop, ingest in fig["rounds"]]
    return float(np.median(speedups)), float(np.median(to_floor))


def render(fig: dict[str, Any], quick: bool) -> str:
    cores = fig["workers"]
    floor = fig["loop"] / cores
    speedup, to_floor = round_ratios(fig)
    n = len(fig["rounds"])
    medians = f" (median of {n} rounds)" if n > 1 else ""
    e2e = fig["ingest"] + fig["run"]
    serial = fig["loop"] + fig["psnr_loop"]
    lines = [
        f"### As users run it: {fig['files']} files (0.5-1.2 MP JPEG/PNG), {fig['kept']} kept, "
        f"{cores} workers",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| per-file stage, plain loop in one process{medians} | {fig['loop']:.1f} |",
        f"| floor of ingest: that loop / {cores} cores | {floor:.1f} |",
        f"| `pupsnr ingest` process (cluster start included){medians} | {fig['ingest']:.1f} |",
        *(
            f"| round {r + 1}: loop, ingest | {loop:.1f}, {ingest:.1f} |"
            for r, (loop, ingest) in enumerate(fig["rounds"])
            if n > 1
        ),
        f"| 18 PSNRs per kept image, literal loop in one process | {fig['psnr_loop']:.1f} |",
        f"| `pupsnr run` process (cluster start included) | {fig['run']:.1f} |",
        f"| `run_experiment` on a warm {cores}-worker cluster | {fig['warm_run']:.1f} |",
        f"| end to end: ingest + run processes | {e2e:.1f} |",
        f"| end to end: serial per-image loop (per-file stage + 18 PSNRs) | {serial:.1f} |",
        "",
        "| target | measured | goal | |",
        "|---|---:|---:|---|",
        _target(f"ingest process vs serial per-file loop{medians}", speedup, ">=", 1.6),
        _target(f"ingest process / floor{medians}", to_floor, "<=", 1.2),
        _target("ingest peak disk / final store", fig["disk_peak"] / fig["disk_final"], "<=", 1.1),
        _target("run process / warm cluster", fig["run"] / fig["warm_run"], "<=", 1.3),
        _target("end to end vs serial loop", serial / e2e, ">=", 2.0),
        f"| fixed cost of a `pupsnr run` process (process - warm), s | "
        f"{fig['run'] - fig['warm_run']:.1f} | | |",
        f"| max dB difference, pupsnr run vs the literal loop | {fig['max_db_diff']:.1e} | | |",
        "",
        "| instant answer (a process, import included) | seconds | CPU s | exit | < 1.5 s |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {what} | {seconds:.2f} | {cpu:.2f} | {code} | "
            f"{'met' if seconds < 1.5 else 'NOT met'} |"
            for what, seconds, cpu, code in fig["instant"]
        ),
    ]
    if quick:
        lines.insert(1, "(--quick: a smoke run on a few files; the ratios mean nothing)")
    return "\n".join(lines)


def _target(what: str, value: float, op: str, goal: float) -> str:
    ok = value >= goal if op == ">=" else value <= goal
    return f"| {what} | {value:.2f} | {op} {goal:g} | {'met' if ok else 'NOT met'} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/user_runs.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--files", type=int, default=2000, help="corpus files [default: 2000]")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers [default: 2]")
    parser.add_argument("--cache", type=Path, default=None, help="corpus cache [default: temp]")
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help="times the loop and ingest are timed, in turn "
        f"[default: {DEFAULT_ROUNDS}; --quick: 1]",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FILES} files, a smoke run")
    parser.add_argument("--verbose", "-v", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    n_files = QUICK_FILES if args.quick else args.files
    rounds = 1 if args.quick else args.rounds
    if n_files < 1 or args.workers < 1 or rounds < 1:
        parser.error("--files, --workers and --rounds must be at least 1")

    def say(line: str) -> None:
        if args.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pupsnr-u-")))
        cache = args.cache or workdir / "corpus"
        fig = measure(n_files, cache, workdir, args.workers, say, args.quick, rounds)
        print(render(fig, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
