"""Per-kernel CPU time on one chunk of 32 real images: the optimised kernels against the plain
forms they replaced (same results, bit for bit; checked here).

    python benchmarks/kernels.py [--n 32] [--reps 7]

Best of ``reps`` CPU times (``time.process_time``, one thread), so other load on the machine
disturbs it less than wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data

from pupsnr_dask.experiment import SCALES, cube_kernel
from pupsnr_dask.kernels.metrics import pu_mse_kernel
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel


def plain_gray(images: np.ndarray) -> np.ndarray:
    """Pillow luma copied into 3 channels."""
    out = np.empty_like(images)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).convert("L"))[:, :, None]
    return out


def plain_mosaic(images: np.ndarray) -> np.ndarray:
    """Float64 reshape-mean pooling, one broadcast upsample, rint, Pillow blur."""
    n, h, w, c = images.shape
    s = 16
    pooled = images.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4), dtype=np.float64) / 256
    up = np.broadcast_to(pooled[:, :, None, :, None, :], (n, h // s, s, w // s, s, c))
    square = np.rint(up.reshape(images.shape)).astype(np.uint8)
    blur = ImageFilter.GaussianBlur(radius=4)
    return np.stack([np.asarray(Image.fromarray(img).filter(blur)) for img in square])


def plain_pu_mse(truth: np.ndarray, views: list[np.ndarray], scales) -> np.ndarray:
    """The moment form with int64 reshape-sums and int64 einsum, no shortcut."""
    n, h, w, c = truth.shape
    x = truth.astype(np.int64)
    out = np.empty((n, len(views), len(scales)))
    sx = {s: x.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4)) for s in scales}
    x2 = np.einsum("nhwc,nhwc->n", x, x)
    for j, view in enumerate(views):
        v = np.asarray(view).astype(np.int64)
        for k, s in enumerate(scales):
            sv = v.reshape(n, h // s, s, w // s, s, c).sum(axis=(2, 4))
            num = (
                s * s * x2
                - 2 * np.einsum("nhwc,nhwc->n", sx[s], sv)
                + np.einsum("nhwc,nhwc->n", sv, sv)
            )
            out[:, j, k] = num.astype(np.float64) / float(s * s * h * w * c)
    return out


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
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    x = bench_data.resized_array(args.n)
    gray, mosaic = gray_kernel(x), mosaic_kernel(x)
    assert np.array_equal(gray, plain_gray(x)) and np.array_equal(mosaic, plain_mosaic(x))
    fast = pu_mse_kernel(x, [x, gray, mosaic], SCALES)
    assert fast.tobytes() == plain_pu_mse(x, [x, gray, mosaic], SCALES).tobytes()
    gray_copy = np.array(gray)  # a plain 3-channel array
    variants = ("true", "gray", "mosaic")
    rows = [
        ("gray", lambda: plain_gray(x), lambda: gray_kernel(x)),
        ("mosaic", lambda: plain_mosaic(x), lambda: mosaic_kernel(x)),
        (
            "pu_mse (3 variants x 6 scales)",
            lambda: plain_pu_mse(x, [x, gray_copy, mosaic], SCALES),
            lambda: pu_mse_kernel(x, [x, gray, mosaic], SCALES),
        ),
        (
            "cube_kernel (all of it)",
            None,
            lambda: cube_kernel(x, variants, SCALES, "moments"),
        ),
        (
            "cube_kernel, method literal",
            None,
            lambda: cube_kernel(x, variants, SCALES, "literal"),
        ),
    ]
    print(f"CPU ms per chunk of {args.n} real 256 x 256 images (best of {args.reps})")
    print(f"{'kernel':32s} {'plain':>8s} {'now':>8s} {'speed-up':>8s}")
    for name, plain, now in rows:
        t_now = cpu_ms(now, args.reps)
        if plain is None:
            print(f"{name:32s} {'':>8s} {t_now:8.1f}")
            continue
        t_plain = cpu_ms(plain, max(2, args.reps // 3))
        print(f"{name:32s} {t_plain:8.1f} {t_now:8.1f} {t_plain / t_now:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
