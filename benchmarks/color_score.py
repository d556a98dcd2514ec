"""The colour test on a whole corpus: exact against the old float64 version, and its cost.

    python benchmarks/color_score.py CORPUS_FOLDER [--limit N]

For every file of a corpus folder (``benchmarks/corpus.py``): decode it as ingest does, then
check that ``pupsnr_dask.ingest.color_score`` gives the old float64-BLAS implementation's
score bit for bit (NaN for NaN), from the array and from the Pillow image alike, and the same
decision as ``np.corrcoef`` in float64 (SPEC's definition). Prints CPU milliseconds per file
(``time.process_time``, so other load on the machine counts less than in wall time) of
decoding, of each score, and of the LANCZOS resize, with the BLAS thread count in force.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

from pupsnr_dask.ingest import DEFAULT_THRESHOLD
from pupsnr_dask.kernels.image import color_score, decode_rgb, resize_lanczos


def old_color_score(rgb: np.ndarray) -> float:
    """``color_score`` before issue 12: float64 BLAS sums over (n, 3) blocks."""
    pixels = rgb.reshape(-1, 3)
    n = len(pixels)
    sums = np.zeros(3)
    products = np.zeros((3, 3))
    step = 1 << 20
    for start in range(0, n, step):
        block = pixels[start : start + step].astype(np.float64)
        sums += np.ones(len(block)) @ block
        products += block.T @ block
    s = [int(v) for v in sums]
    cov = [[n * int(products[i, j]) - s[i] * s[j] for j in range(3)] for i in range(3)]
    if any(cov[i][i] == 0 for i in range(3)):
        return math.nan
    corr = [
        [1.0 if i == j else cov[i][j] / math.sqrt(cov[i][i] * cov[j][j]) for j in range(3)]
        for i in range(3)
    ]
    return float(np.mean(corr))


def corrcoef_score(rgb: np.ndarray) -> float:
    values = rgb.reshape(-1, 3).T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.mean(np.corrcoef(values)))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def colour(score: float) -> bool:
    return not math.isnan(score) and score < DEFAULT_THRESHOLD


def timed(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/color_score.py", description=__doc__)
    parser.add_argument("folder", type=Path, help="a corpus folder made by benchmarks/corpus.py")
    parser.add_argument("--limit", type=int, default=0, help="first N files only")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_info

    paths = corpus.files(args.folder)
    if args.limit:
        paths = paths[: args.limit]
    cost = dict.fromkeys(("decode", "asarray", "old", "new_array", "new_image", "resize"), 0.0)
    mismatches, decisions, n_colour, pixels = [], [], 0, 0
    load0 = os.getloadavg()
    for path in paths:
        img, t = timed(decode_rgb, str(path))
        cost["decode"] += t
        rgb, t = timed(np.asarray, img)
        cost["asarray"] += t
        old, t = timed(old_color_score, rgb)
        cost["old"] += t
        new, t = timed(color_score, rgb)
        cost["new_array"] += t
        via_image, t = timed(color_score, img)
        cost["new_image"] += t
        _, t = timed(resize_lanczos, img, 256)
        cost["resize"] += t
        ref = corrcoef_score(rgb)
        pixels += img.width * img.height
        n_colour += colour(new)
        if not (same(new, old) and same(via_image, old)):
            mismatches.append((path.name, old, new, via_image))
        if colour(new) != colour(ref) and abs(ref - DEFAULT_THRESHOLD) > 1e-12:
            decisions.append((path.name, new, ref))
    n = len(paths)
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())
    print(
        f"{n} files of {args.folder} ({pixels / n / 1e6:.2f} megapixels on average, "
        f"{n_colour} colour); load {'/'.join(f'{x:.1f}' for x in load0)} before, "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} after; {blas}"
    )
    print("CPU ms per file:")
    for key, label in (
        ("decode", "decode_rgb"),
        ("asarray", "np.asarray(image)"),
        ("old", "old color_score (float64 BLAS)"),
        ("new_array", "color_score(array) (histograms)"),
        ("new_image", "color_score(image) (histograms)"),
        ("resize", "resize_lanczos"),
    ):
        print(f"  {label:34s} {cost[key] / n * 1e3:7.2f}")
    print(f"old / new (array): {cost['old'] / cost['new_array']:.2f}x")
    print(f"scores different from the old implementation: {len(mismatches)}")
    print(f"decisions different from np.corrcoef: {len(decisions)}")
    for row in (mismatches + decisions)[:10]:
        print("  ", row)
    return 1 if mismatches or decisions else 0


if __name__ == "__main__":
    sys.exit(main())
