"""Model outputs for the advise tests: files written under each image's source path."""

from __future__ import annotations

import math
from pathlib import Path

import dask
import numpy as np
import xarray as xr
from conftest import write_image

import pupsnr_dask as pp
from pupsnr_dask.transforms import pu_kernel

FORMATS = (".png", ".tif", ".bmp", ".webp")  # lossless; ".webp" saved with lossless=True


def load_img_true(images_store) -> tuple[np.ndarray, list[str]]:
    ds = xr.open_zarr(images_store)
    return ds["images"].values, [str(s) for s in ds["source"].values]


def write_predictions(folder: Path, sources: list[str], pixels: np.ndarray) -> Path:
    """Save each image under its source path, extension changed, formats in rotation."""
    for k, (source, image) in enumerate(zip(sources, pixels, strict=True)):
        ext = FORMATS[k % len(FORMATS)]
        path = (folder / source).with_suffix(ext)
        write_image(path, image, **({"lossless": True} if ext == ".webp" else {}))
    return folder


def write_prediction_store(path: Path, sources: list[str], pixels: np.ndarray) -> Path:
    """A Zarr store in the layout of an images store (``images`` and ``source``), chunks of 4."""
    store = xr.Dataset(
        {"images": (("image", "y", "x", "channel"), pixels)},
        coords={"source": ("image", np.array(sources, dtype=object))},
    )
    store["images"] = store["images"].chunk({"image": 4})
    store.to_zarr(path, consolidated=False)
    return path


def rounded_pu(pixels: np.ndarray, variant: str, scale: int) -> np.ndarray:
    view = pp.VARIANTS[variant](pixels)
    return np.clip(np.rint(pu_kernel(view, scale)), 0, 255).astype(np.uint8)


def run_advise(*args, **kwargs) -> xr.Dataset:
    with dask.config.set(scheduler="sync"):
        return pp.advise_depths(*args, **kwargs)


def verdicts(ds: xr.Dataset) -> dict[int, str]:
    return dict(zip(ds["scale"].values.tolist(), ds["verdict"].values.tolist(), strict=True))


def noisy(image: np.ndarray, target_db: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` + Gaussian noise, rounded and clipped, with a PSNR within 0.01 dB of target."""
    x = image.astype(np.float64)
    z = rng.standard_normal(image.shape)
    target_mse = 255.0**2 / 10 ** (target_db / 10)
    sigma = math.sqrt(target_mse)
    for _ in range(20):
        out = np.clip(np.rint(x + sigma * z), 0, 255).astype(np.uint8)
        mse = np.mean((out.astype(np.float64) - x) ** 2)
        if abs(10 * math.log10(target_mse / mse)) < 0.005:
            return out
        sigma *= math.sqrt(target_mse / mse)
    raise AssertionError("noise calibration did not converge")
