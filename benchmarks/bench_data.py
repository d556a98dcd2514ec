"""Real benchmark images: the packaged sample photos, cropped, flipped and rotated
deterministically until there are as many as asked for.

Used by ``run.py`` and ``choose_chunks.py``; nothing here is timed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from pupsnr_dask.ingest import DEFAULT_THRESHOLD
from pupsnr_dask.kernels.image import color_score, decode_rgb, resize_lanczos
from pupsnr_dask.samples import sample_paths

#: JPEG quality of the generated files (what photo data sets typically hold).
JPEG_QUALITY = 90
_TRANSPOSES = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_TOP_BOTTOM,
)


def colour_sources() -> list[tuple[str, Image.Image]]:
    """``(name, RGB image)`` of every packaged sample photo that passes the colour test."""
    out = []
    for _, path in sample_paths():
        rgb = decode_rgb(str(path))
        score = color_score(np.asarray(rgb))
        if not math.isnan(score) and score < DEFAULT_THRESHOLD:
            out.append((path.stem, rgb))
    if not out:
        raise ImportError("no colour sample photos: pip install 'pupsnr-dask[demo]'")
    return out


def augment(img: Image.Image, seed: int) -> Image.Image:
    """A deterministic variation: a crop of 50-100 % of each side, then a flip or rotation."""
    rng = np.random.default_rng(seed)
    w, h = img.size
    cw = max(32, int(w * rng.uniform(0.5, 1.0)))
    ch = max(32, int(h * rng.uniform(0.5, 1.0)))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    out = img.crop((left, top, left + cw, top + ch))
    transpose = _TRANSPOSES[int(rng.integers(len(_TRANSPOSES)))]
    return out if transpose is None else out.transpose(transpose)


def variations(n: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """``n`` images: each sample photo once as it is, then augmented copies in turn."""
    sources = colour_sources()
    out = []
    for i in range(n):
        name, img = sources[i % len(sources)]
        if i >= len(sources):
            img = augment(img, seed * 1_000_003 + i)
        out.append((f"{i:06d}_{name}", img))
    return out


def write_images(dest: str | Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` JPEG files into ``dest``; return their paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in variations(n, seed):
        path = dest / f"{name}.jpg"
        img.save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths


def resized_array(n: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` uint8: the variations resized as ingest does (LANCZOS)."""
    return np.stack([resize_lanczos(img, size) for _, img in variations(n, seed)])
