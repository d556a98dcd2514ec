"""A slow, obviously-correct reference: SPEC.md followed word for word, one image at a time.

Deliberately shares no code with pupsnr_dask: plain Pillow and NumPy, np.corrcoef for the
colour test, np.repeat for the upsampling, an explicit per-pixel float64 MSE.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

SCALES = (1, 2, 4, 8, 16, 32)


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.seek(0)
        return ImageOps.exif_transpose(img).convert("RGB")


def is_colour(rgb: Image.Image, threshold: float = 0.995) -> tuple[bool, float]:
    values = np.asarray(rgb).reshape(-1, 3).T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(values)
    score = float(np.mean(corr))
    return (not math.isnan(score)) and score < threshold, score


def img_true(rgb: Image.Image, size: int = 256) -> np.ndarray:
    return np.asarray(rgb.resize((size, size), Image.LANCZOS))


def pu(img: np.ndarray, s: int) -> np.ndarray:
    h, w, c = img.shape
    pooled = np.zeros((h // s, w // s, c))
    for i in range(h // s):
        for j in range(w // s):
            pooled[i, j] = (
                img[i * s : (i + 1) * s, j * s : (j + 1) * s].astype(np.float64).mean(axis=(0, 1))
            )
    return np.repeat(np.repeat(pooled, s, axis=0), s, axis=1)


def gray(img: np.ndarray) -> np.ndarray:
    luma = np.asarray(Image.fromarray(img).convert("L"))
    return np.stack([luma] * 3, axis=-1)


def mosaic(img: np.ndarray) -> np.ndarray:
    pooled = np.rint(pu(img, 16)).astype(np.uint8)
    return np.asarray(Image.fromarray(pooled).filter(ImageFilter.GaussianBlur(radius=4)))


VARIANTS = {"true": lambda x: x, "gray": gray, "mosaic": mosaic}


def psnr(truth: np.ndarray, other: np.ndarray) -> float:
    mse = float(np.mean((truth.astype(np.float64) - other.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def psnr_table(img: np.ndarray, scales=SCALES) -> dict[tuple[str, int], float]:
    out = {}
    for name, make in VARIANTS.items():
        view = make(img)
        for s in scales:
            out[name, s] = psnr(img, pu(view, s))
    return out
