"""The fast paths of issue 3 give exactly what the plain definitions give.

Covers the exact-integer kernel (int32 runs, uint16 block sums, the one-plane gray path, the
true-variant and scale-1 shortcuts) at its overflow edges, the fast block mean / upsampling /
gray / mosaic kernels, the task count of a whole run, and the benchmark script.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import reference
import xarray as xr
from conftest import images_dataset
from dask.callbacks import Callback
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pupsnr_dask import build_psnr_cube, open_images
from pupsnr_dask import run_experiment as run
from pupsnr_dask.kernels.blocks import block_mean, upsample_nearest
from pupsnr_dask.kernels.metrics import mse_kernel, pu_mse_kernel
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel, pu_kernel

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 2, 4, 8, 16, 32)


def plain_int64(truth: np.ndarray, views: list[np.ndarray], scales) -> np.ndarray:
    """The moment form written the obvious way: int64 reshape-sums, no shortcut."""
    n, h, w, c = truth.shape
    x = truth.astype(np.int64)
    out = np.empty((n, len(views), len(scales)))
    for j, view in enumerate(views):
        v = np.broadcast_to(view, truth.shape).astype(np.int64)
        for k, s in enumerate(scales):
            sx = x.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4))
            sv = v.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4))
            num = (
                s * s * (x * x).sum(axis=(1, 2, 3))
                - 2 * (sx * sv).sum(axis=(1, 2, 3))
                + (sv * sv).sum(axis=(1, 2, 3))
            )
            out[:, j, k] = num.astype(np.float64) / float(s * s * h * w * c)
    return out


def test_fast_kernel_is_bit_identical_to_the_plain_int64_form_on_real_photos(sample_dir):
    imgs = [reference.img_true(reference.load_rgb(p)) for p in sorted(sample_dir.rglob("*.*"))]
    x = np.stack(imgs[:6])
    gray, mosaic = gray_kernel(x), mosaic_kernel(x)
    assert gray.strides[-1] == 0  # the one-plane path is taken
    got = pu_mse_kernel(x, [x, gray, mosaic, np.array(gray)], SCALES)
    want = plain_int64(x, [x, gray, mosaic, np.array(gray)], SCALES)
    assert got.tobytes() == want.tobytes()
    # the gray plane path and the full 3-channel path give the same bits
    assert got[:, 1].tobytes() == got[:, 3].tobytes()


@pytest.mark.parametrize("size", [256, 512])
def test_extreme_values_do_not_overflow(size):
    """All-255 images maximise every sum and product: scale 32 of 256 and of 512 pixels."""
    full = np.full((1, size, size, 3), 255, np.uint8)
    zero = np.zeros_like(full)
    plane = np.broadcast_to(np.full((1, size, size, 1), 255, np.uint8), full.shape)
    mse = pu_mse_kernel(full, [full, full.copy(), plane, zero], SCALES)
    assert np.all(mse[:, :3] == 0.0)  # any overflow would leave a non-zero remainder
    assert np.all(mse[:, 3] == 255.0**2)
    # a 0/255 checkerboard of blocks: every block sum is large and the MSE is not zero
    yy, xx = np.mgrid[0:size, 0:size]
    board = np.where(((yy // 16) + (xx // 8)) % 2, 255, 0).astype(np.uint8)
    x = np.repeat(board[None, :, :, None], 3, axis=3)
    views = [
        x,
        np.ascontiguousarray(x[:, ::-1]),
        full,
        np.broadcast_to(board[None, :, :, None], x.shape),
    ]
    got = pu_mse_kernel(x, views, SCALES)
    assert got.tobytes() == plain_int64(x, views, SCALES).tobytes()
    for j, view in enumerate(views):
        for k, s in enumerate(SCALES):
            literal = mse_kernel(x, pu_kernel(np.array(view), s))
            assert got[0, j, k] == literal[0]


@given(
    arrays(
        np.uint8, st.tuples(st.integers(1, 3), st.just(48), st.just(48), st.sampled_from([1, 3]))
    ),
    st.lists(
        st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 24, 48]), min_size=1, max_size=4, unique=True
    ),
)
def test_any_divisor_scales_and_channel_counts(images, scales):
    """Non-power-of-two folds (3 x 3 blocks ...), 1-channel images and one-plane variants."""
    rng = np.random.default_rng(len(images))
    other = rng.integers(0, 256, images.shape, dtype=np.uint8)
    plane = rng.integers(0, 256, (*images.shape[:3], 1), dtype=np.uint8)
    views = [images, other, plane, np.broadcast_to(plane, images.shape)]
    got = pu_mse_kernel(images, views, scales)
    assert got.tobytes() == plain_int64(images, views, scales).tobytes()


def test_one_channel_variant_of_the_wrong_shape_is_refused():
    x = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="one-channel shape"):
        pu_mse_kernel(x, [np.zeros((2, 8, 8, 2), np.uint8)], [2])


@given(
    arrays(np.uint8, st.tuples(st.integers(1, 2), st.just(32), st.just(32), st.just(3))),
    st.sampled_from([2, 4, 8, 16, 32]),
)
def test_fast_block_mean_and_upsampling_equal_the_plain_numpy_forms(images, s):
    n, h, w, c = images.shape
    plain = images.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4), dtype=np.float64) / (s * s)
    got = block_mean(images, s)
    assert got.tobytes() == plain.tobytes() and got.flags.c_contiguous
    wide = images.astype(np.uint16) * 257
    plain16 = wide.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4), dtype=np.float64) / (s * s)
    assert block_mean(wide, s).tobytes() == plain16.tobytes()
    up = upsample_nearest(got, s)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(got, s, axis=1), s, axis=2))


def test_gray_is_a_read_only_single_plane_view(sample_dir):
    x = reference.img_true(reference.load_rgb(next(sample_dir.rglob("coffee.png"))))[None]
    gray = gray_kernel(x)
    assert gray.shape == x.shape and gray.dtype == np.uint8 and gray.strides[-1] == 0
    np.testing.assert_array_equal(gray[0], reference.gray(x[0]))
    with pytest.raises(ValueError, match="read-only"):
        gray[0, 0, 0, 0] = 1


def test_mosaic_equals_the_reference_on_several_photos(sample_dir):
    paths = sorted(sample_dir.rglob("*.*"))[:4]
    x = np.stack([reference.img_true(reference.load_rgb(p)) for p in paths])
    got = mosaic_kernel(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(got[i], reference.mosaic(x[i]))


def test_results_are_bit_identical_for_any_chunking_of_512_pixel_images():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (3, 512, 512, 3), dtype=np.uint8)
    base[0] = 255  # the overflow edge inside a real cube too
    cubes = []
    for chunk in (1, 2, 3):
        ds = images_dataset(base, chunk)
        cubes.append(build_psnr_cube(ds).compute(scheduler="sync"))
    for other in cubes[1:]:
        assert other["mse"].values.tobytes() == cubes[0]["mse"].values.tobytes()
    literal = build_psnr_cube(images_dataset(base, 3), method="literal").compute(scheduler="sync")
    a, b = cubes[0]["psnr"].values, literal["psnr"].values
    finite = np.isfinite(a)
    assert np.array_equal(finite, np.isfinite(b))
    assert np.max(np.abs(a[finite] - b[finite])) < 1e-9


class _CountTasks(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def _pretask(self, key, dsk, state) -> None:
        self.n += 1


def test_a_whole_run_takes_at_most_ten_tasks_per_chunk(images_store, tmp_path):
    """Reading, the cube and storing, every task the scheduler runs, counted."""
    n_chunks = open_images(str(images_store))["images"].data.numblocks[0]
    assert n_chunks >= 3
    counter = _CountTasks()
    with dask.config.set(scheduler="threads"), counter:
        run(str(images_store), str(tmp_path / "r.zarr"), progress=False)
    assert 0 < counter.n <= 10 * n_chunks, (counter.n, n_chunks)
    assert np.isfinite(xr.open_zarr(tmp_path / "r.zarr")["psnr"].values[:, 1:]).all()


def test_benchmark_script_prints_its_table(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--n",
            "4",
            "--quick",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for row in (
        "default path",
        "coarsen-mean + da.repeat",
        "per-image NumPy",
        "floor:",
        "serial Pillow loop",
        "2 workers",
        "10 N images",
        "tasks per chunk",
        "As users run it",
        "`pupsnr ingest` process",
        "ingest peak disk / final store",
        "run process / warm cluster",
        "end to end vs serial loop",
        "run rerun, up to date",
        "max dB difference, pupsnr run vs the literal loop",
    ):
        assert row in out, row
    assert "images/s" in out and "targets" in out
    assert "max |dB difference| vs default path = 0.0e+00" in out


def test_the_new_pages_script_times_each_round_and_leaves_nothing(tmp_path):
    """benchmarks/new_pages.py (what a new file costs, RESULTS.md): one line a round, a time
    each, and its files gone afterwards."""
    argv = ["--rounds", "3", "--files", "2", "--mb", "0.01"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "new_pages.py"), str(tmp_path), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["round 0", "round 1", "round 2"]
    assert all(float(line.split()[2]) >= 0 and "0.01 MB file (2 files)" in line for line in lines)
    assert list(tmp_path.iterdir()) == []


def _user_runs():
    """benchmarks/user_runs.py, imported as a module."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import user_runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return user_runs


def test_user_runs_takes_the_median_of_each_rounds_own_ratio():
    """benchmarks/user_runs.py: the ingest's targets are medians of per-round ratios, each
    round's ingest against the loop timed just before it (not ratios of medians)."""
    user_runs = _user_runs()
    fig = {
        "files": 2000,
        "kept": 2000,
        "workers": 2,
        # loop/ingest: 1.6, 1.2, 1.9; ingest/floor: 1.25, 5/3, 1.0526
        "rounds": [(40.0, 25.0), (30.0, 25.0), (38.0, 20.0)],
        "psnr_loop": 30.0,
        "run": 8.0,
        "warm_run": 9.0,
        "disk_peak": 100,
        "disk_final": 100,
        "max_db_diff": 0.0,
        "instant": [],
    }
    fig["loop"] = float(np.median([loop for loop, _ in fig["rounds"]]))
    fig["ingest"] = float(np.median([ingest for _, ingest in fig["rounds"]]))
    assert user_runs.round_ratios(fig) == pytest.approx((1.6, 1.25))
    table = user_runs.render(fig, quick=False)
    assert (
        "| ingest process vs serial per-file loop (median of 3 rounds) | 1.60 | >= 1.6 | met |"
        in table
    )
    assert "| ingest process / floor (median of 3 rounds) | 1.25 | <= 1.2 | NOT met |" in table
    assert "| round 2: loop, ingest | 30.0, 25.0 |" in table
    one = {**fig, "rounds": [(40.0, 25.0)], "loop": 40.0, "ingest": 25.0}
    assert "round 1" not in user_runs.render(one, quick=False)
    assert "| ingest process / floor | 1.25 | <= 1.2 | NOT met |" in user_runs.render(one, False)


def test_user_runs_loop_runs_in_two_halves_around_the_ingest(sample_dir, tmp_path, monkeypatch):
    """benchmarks/user_runs.py: every other file before the timed command, the others after
    it; the kept images come back in file order (a gray photo among them is rejected)."""
    from PIL import Image

    user_runs = _user_runs()
    photos = sorted(p for p in sample_dir.rglob("*") if p.is_file())
    colour = user_runs.per_file_loop(photos)[1]
    files = [p for p, img in zip(photos, colour, strict=True) if img is not None][:5]
    gray = tmp_path / "gray.png"
    Image.open(files[0]).convert("L").convert("RGB").save(gray)
    files.insert(2, gray)
    seen: list[str] = []
    real = user_runs.load_resized

    def logged(fp, name, *args):
        seen.append(name)
        return real(fp, name, *args)

    monkeypatch.setattr(user_runs, "load_resized", logged)
    loop, middle, kept = user_runs.loop_around(files, lambda: seen.append("ingest") or 7.5)
    names = [p.name for p in files]
    assert seen == [*names[0::2], "ingest", *names[1::2]]
    assert middle == 7.5 and loop > 0
    _, alone = user_runs.per_file_loop(files)
    want = [img for img in alone if img is not None]
    assert alone[2] is None and len(want) == len(files) - 1 == 5
    for got, image in zip(kept, want, strict=True):
        np.testing.assert_array_equal(got, image)
