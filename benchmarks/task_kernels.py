"""CPU time of the task-input and quality kernels on one chunk of real images, side by side.

    python benchmarks/task_kernels.py [--n 32] [--reps 3]

Rows: each task input kernel (what one added input costs before scoring), then scoring one
input at 6 scales: the exact PSNR path of today (``metrics.pu_mse_kernel``) against
``kernels.quality.pu_quality_kernel`` for each metric set, as a ratio to the former. Best of
``reps`` CPU times (``time.process_time``, one thread).

Last rows: the fused task that ``run`` executes per image chunk
(``experiment.quality_cube_kernel``: make the inputs, exact MSE of all, extra metrics), for the
default three inputs and with each task input added, then with every input and each extra
metric; ratios to the default task, so the cost of one added input or of SSIM is read off.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data

from pupsnr_dask.experiment import SCALES, quality_cube_kernel
from pupsnr_dask.kernels.metrics import pu_mse_kernel
from pupsnr_dask.kernels.quality import pu_quality_kernel
from pupsnr_dask.kernels.task_variants import blur_kernel, jpeg_kernel, noise_kernel, sr_kernel
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel


def cpu_ms(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images in the chunk [default: 32]")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    x = bench_data.resized_array(args.n)
    keys = [f"{i}.png" for i in range(len(x))]
    print(f"CPU ms per chunk of {args.n} real 256 x 256 images (best of {args.reps})")
    print("\ninput kernel          ms")
    for name, fn in (
        ("gray", lambda: gray_kernel(x)),
        ("mosaic", lambda: mosaic_kernel(x)),
        ("sr4", lambda: sr_kernel(x, 4)),
        ("jpeg20", lambda: jpeg_kernel(x, 20)),
        ("noise25", lambda: noise_kernel(x, keys, 25)),
        ("blur2", lambda: blur_kernel(x, 2)),
    ):
        print(f"{name:16s} {cpu_ms(fn, args.reps):8.1f}")
    view = sr_kernel(x, 4)
    base = cpu_ms(lambda: pu_mse_kernel(x, [view], SCALES), args.reps)
    print(f"\nscoring one input at scales {SCALES}       ms   x pu_mse_kernel")
    print(f"{'metrics.pu_mse_kernel (exact psnr)':40s} {base:8.1f} {1:8.1f}")
    for metrics in (("psnr",), ("psnr_y",), ("ssim",), ("psnr", "psnr_y", "ssim")):
        t = cpu_ms(lambda m=metrics: pu_quality_kernel(x, view, SCALES, m), args.reps)
        print(f"{'pu_quality_kernel ' + ','.join(metrics):40s} {t:8.1f} {t / base:8.1f}")
    fused_rows(x, keys, args.reps)
    return 0


def fused_rows(x, keys, reps: int) -> None:
    """The per-chunk task of ``run``: default inputs, + each task input, + each metric."""
    default = ["true", "gray", "mosaic"]
    every = [*default, "sr4", "jpeg20", "noise25", "blur2"]

    def task(variants, extra=()):
        run = quality_cube_kernel
        return cpu_ms(lambda: run(x, keys, variants, SCALES, "moments", extra), reps)

    base = task(default)
    print(f"\nfused chunk task (quality_cube_kernel), scales {SCALES}   ms   x default")
    print(f"{'true,gray,mosaic (psnr: the default run)':44s} {base:8.1f} {1:8.2f}")
    for added in every[3:]:
        t = task([*default, added])
        print(f"{'+ ' + added:44s} {t:8.1f} {t / base:8.2f}")
    t_all = task(every)
    print(f"{'all 7 inputs (psnr)':44s} {t_all:8.1f} {t_all / base:8.2f}")
    for extra in (("psnr_y",), ("ssim",), ("psnr_y", "ssim")):
        t = task(every, extra)
        print(f"{'all 7 inputs, psnr + ' + ','.join(extra):44s} {t:8.1f} {t / base:8.2f}")


if __name__ == "__main__":
    sys.exit(main())
