"""A corpus of real photo files like a user's folder: 0.5-1.2 megapixels, mostly JPEG.

    python benchmarks/corpus.py CACHE [--n 2000] [--seed 0] [--jobs 2]
    python benchmarks/corpus.py CACHE --n 12443          # the source's scale (issue 12, item 5)

Every file is made from one of the packaged sample photos that pass the colour test
(``bench_data.colour_sources``): a crop of 50-100 % of each side, a flip or a rotation, and,
when the crop is outside 0.5-1.2 megapixels, a LANCZOS resize (up or down) to an area drawn in
that range, aspect ratio kept. 88 % are written as JPEG at a quality drawn in 85-95, 12 % as
PNG. Everything is drawn from ``numpy.random.default_rng((seed, i))``, so file ``i`` is the
same whatever ``--n`` and ``--jobs``: the 12,443-file corpus starts with the 2,000-file one.

The files are written once into ``CACHE/n<N>-s<seed>-v<VERSION>/`` (nothing else in it, so
that it is SRC as is); ``CACHE/n<N>-s<seed>-v<VERSION>.json``, written last, lists them, and a
later call with the same parameters returns at once.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Bump when the generator changes: a new cache folder is made.
VERSION = 1
MIN_PIXELS, MAX_PIXELS = 500_000, 1_200_000
PNG_SHARE = 0.12
_TRANSPOSES = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
)

_SOURCES: list[tuple[str, Image.Image]] = []


def _sources() -> list[tuple[str, Image.Image]]:
    if not _SOURCES:
        import bench_data

        _SOURCES.extend(bench_data.colour_sources())
    return _SOURCES


def make_image(i: int, seed: int) -> tuple[str, Image.Image, dict]:
    """File ``i`` of the corpus: ``(file name, RGB image, save options)``."""
    sources = _sources()
    rng = np.random.default_rng((seed, i))
    name, img = sources[i % len(sources)]
    w, h = img.size
    cw = max(64, int(w * rng.uniform(0.5, 1.0)))
    ch = max(64, int(h * rng.uniform(0.5, 1.0)))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    out = img.crop((left, top, left + cw, top + ch))
    transpose = _TRANSPOSES[int(rng.integers(len(_TRANSPOSES)))]
    if transpose is not None:
        out = out.transpose(transpose)
    area = out.width * out.height
    target = float(rng.uniform(MIN_PIXELS, MAX_PIXELS))
    if not MIN_PIXELS <= area <= MAX_PIXELS:
        k = math.sqrt(target / area)
        out = out.resize(
            (max(1, round(out.width * k)), max(1, round(out.height * k))),
            Image.Resampling.LANCZOS,
        )
    if rng.uniform() < PNG_SHARE:
        return f"{i:06d}_{name}.png", out, {"format": "PNG", "compress_level": 1}
    quality = int(rng.integers(85, 96))
    return f"{i:06d}_{name}.jpg", out, {"format": "JPEG", "quality": quality}


def _write_one(args: tuple[int, int, str]) -> tuple[str, int, int]:
    i, seed, folder = args
    name, img, options = make_image(i, seed)
    path = Path(folder) / name
    img.save(path, **options)
    return name, img.width, img.height


def build(cache: str | Path, n: int = 2000, seed: int = 0, jobs: int = 2) -> Path:
    """The corpus folder of ``n`` files in ``cache`` (made once); returns its path."""
    folder = Path(cache) / f"n{n}-s{seed}-v{VERSION}"
    manifest = _manifest(folder)
    if manifest.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    work = [(i, seed, str(folder)) for i in range(n)]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            rows = pool.map(_write_one, work, chunksize=16)
    else:
        rows = [_write_one(w) for w in work]
    meta = {
        "n": n,
        "seed": seed,
        "version": VERSION,
        "files": [{"name": r[0], "width": r[1], "height": r[2]} for r in rows],
    }
    manifest.write_text(json.dumps(meta))
    return folder


def _manifest(folder: Path) -> Path:
    return folder.with_name(folder.name + ".json")


def files(folder: str | Path) -> list[Path]:
    """The image files of a corpus folder built by :func:`build`, in order."""
    meta = json.loads(_manifest(Path(folder)).read_text())
    return [Path(folder) / f["name"] for f in meta["files"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/corpus.py", description=__doc__)
    parser.add_argument("cache", type=Path, help="folder that keeps the corpora")
    parser.add_argument("--n", type=int, default=2000, help="files [default: 2000]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="processes [default: 2]")
    args = parser.parse_args(argv)
    if args.n < 1 or args.jobs < 1:
        parser.error("--n and --jobs must be at least 1")
    t0 = time.perf_counter()
    folder = build(args.cache, args.n, args.seed, args.jobs)
    meta = json.loads(_manifest(folder).read_text())
    mp = [f["width"] * f["height"] / 1e6 for f in meta["files"]]
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    png = sum(f["name"].endswith(".png") for f in meta["files"])
    print(
        f"{folder}: {len(mp)} files ({png} PNG), {min(mp):.2f}-{max(mp):.2f} megapixels "
        f"(mean {np.mean(mp):.2f}), {size:.0f} MB, {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
