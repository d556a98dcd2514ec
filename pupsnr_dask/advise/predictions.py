"""A model's outputs: a folder of image files or a store, paired, decoded, scored lazily.

:func:`pair_predictions` lists them and pairs them with the dataset (no pixel is read);
:func:`build_output_psnr` builds one lazy task per batch that decodes each output as ingest
does (``decode_rgb``, then ``resize_lanczos`` when it is not ``size x size``) and measures its
PSNR against img_true; :func:`compute_output_psnr` runs those tasks on the active scheduler.
"""

from __future__ import annotations

import posixpath
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
import xarray as xr
from dask.base import tokenize
from PIL import Image

from pupsnr_dask import schema
from pupsnr_dask.advise.matching import Matching, match_predictions
from pupsnr_dask.cluster import compute
from pupsnr_dask.defaults import DEFAULT_BATCH_SIZE
from pupsnr_dask.ingest import list_files
from pupsnr_dask.kernels.image import (
    IMAGE_EXTENSIONS,
    decode_budget,
    decode_failure,
    decode_rgb,
    image_extension,
    resize_lanczos,
)
from pupsnr_dask.kernels.metrics import psnr_kernel

#: ``(index in batch, "resized" | "unreadable", detail)`` for each prediction of a batch.
Notes = list[tuple[int, str, str]]
#: ``metric(img_true, outputs) -> (n,)`` float64.
Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def is_zarr_store(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``path`` is the root of a Zarr group (v2 or v3)."""
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    root = root.rstrip("/")
    return bool(fs.exists(f"{root}/zarr.json") or fs.exists(f"{root}/.zgroup"))


def open_prediction_store(
    store: str | xr.Dataset, storage_options: dict[str, Any] | None = None
) -> xr.Dataset:
    """Open (lazily) and check a store of a model's outputs in the layout of an images store.

    It needs ``images`` ``(image, y, x, channel)`` uint8 with 3 channels and a ``source``
    coordinate; the other coordinates and the ``pupsnr_kind`` attribute are not required. The
    ``source`` coordinate is read into memory, the pixels stay lazy.
    """
    name = store if isinstance(store, str) else "predictions"
    ds = store if isinstance(store, xr.Dataset) else _open_zarr(store, storage_options)
    var = ds.get(schema.IMAGES)
    if var is None or var.dims != schema.IMAGE_DIMS or var.dtype != np.uint8:
        raise schema.StoreError(
            f"predictions {name!r} must hold {schema.IMAGES!r} {schema.IMAGE_DIMS} uint8, "
            "as an images store does"
        )
    if var.sizes[schema.CHANNEL] != 3 or schema.SOURCE not in ds.coords:
        raise schema.StoreError(f"predictions {name!r} need 3 channels and a 'source' coordinate")
    sources = np.asarray(ds[schema.SOURCE].values)
    if len(set(sources.tolist())) != len(sources):
        raise schema.StoreError(f"predictions {name!r} repeat some 'source' values")
    return ds.assign_coords({schema.SOURCE: (ds[schema.SOURCE].dims, sources)})


def _open_zarr(store: str, storage_options: dict[str, Any] | None) -> xr.Dataset:
    try:
        with warnings.catch_warnings():  # a model's outputs need no consolidated metadata
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with cons")
            return xr.open_zarr(store, storage_options=storage_options, consolidated=None)
    except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
        raise schema.StoreError(f"{store!r} is not a readable Zarr store: {err}") from err


def pair_predictions(
    sources: list[str], predictions: str | xr.Dataset, storage_options: dict[str, Any] | None
) -> tuple[Matching, str | xr.Dataset]:
    """Pair the images with a prediction store (by ``source``) or folder (by relative path).

    Returns the matching and the predictions to read: the folder, or the opened store.
    """
    if not isinstance(predictions, str | xr.Dataset):
        raise TypeError(
            f"predictions must be a path or an xr.Dataset, got {type(predictions).__name__}"
        )
    if isinstance(predictions, xr.Dataset) or is_zarr_store(predictions, storage_options):
        store = open_prediction_store(predictions, storage_options)
        return match_predictions(sources, [str(s) for s in store[schema.SOURCE].values]), store
    try:
        files = list_files(predictions, storage_options)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise type(err)(f"predictions {predictions!r} is not a folder or a store") from err
    images = [f for f in files if image_extension(f) in IMAGE_EXTENSIONS]
    matching = match_predictions(sources, images)
    matching.ignored = sorted(set(files) - set(images))
    return matching, predictions


def _fit(rgb: Image.Image, size: int) -> tuple[np.ndarray, str]:
    """The image at ``size x size`` (LANCZOS, as ingest) and, when resized, its old size."""
    if rgb.size == (size, size):
        return np.asarray(rgb, dtype=np.uint8), ""
    return resize_lanczos(rgb, size), f"{rgb.size[0]}x{rgb.size[1]}"


def _psnr_files_batch(
    img_true: np.ndarray,
    root: str,
    names: list[str],
    storage_options: dict[str, Any] | None,
    metric: Metric = psnr_kernel,
) -> tuple[np.ndarray, Notes]:
    """Worker task: decode one batch of prediction files, PSNR of each against img_true."""
    fs, base = fsspec.core.url_to_fs(root, **(storage_options or {}))
    preds = np.zeros_like(img_true)
    notes: Notes = []
    budget = decode_budget()
    for j, name in enumerate(names):
        try:  # the formats of its extension only, its size and memory checked first
            with fs.open(posixpath.join(base.rstrip("/"), name), "rb") as fp:
                rgb = decode_rgb(fp, name=name, max_bytes=budget)
                preds[j], resized = _fit(rgb, img_true.shape[1])
        except Exception as err:  # a bad file is reported, never a crash
            notes.append((j, "unreadable", decode_failure(err)))
            continue
        if resized:
            notes.append((j, "resized", resized))
    return _psnr_with_notes(img_true, preds, notes, metric)


def _psnr_array_batch(
    img_true: np.ndarray, preds: np.ndarray, metric: Metric = psnr_kernel
) -> tuple[np.ndarray, Notes]:
    """Worker task: score of one batch of stored predictions, resized when of another size."""
    if preds.shape == img_true.shape:
        return metric(img_true, preds), []
    fitted = np.empty_like(img_true)
    notes: Notes = []
    for j, pred in enumerate(preds):
        fitted[j], resized = _fit(Image.fromarray(pred), img_true.shape[1])
        notes.append((j, "resized", resized))
    return _psnr_with_notes(img_true, fitted, notes, metric)


def _psnr_with_notes(
    img_true: np.ndarray, preds: np.ndarray, notes: Notes, metric: Metric = psnr_kernel
) -> tuple[np.ndarray, Notes]:
    psnr = metric(img_true, preds)
    psnr[[j for j, kind, _ in notes if kind == "unreadable"]] = np.nan
    return psnr, notes


def build_output_psnr(
    img_true: Any,
    predictions: str | xr.Dataset,
    names: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    storage_options: dict[str, Any] | None = None,
    metric: Metric = psnr_kernel,
) -> list[Any]:
    """Lazy per-image PSNR (or ``metric``) of a model's outputs against img_true, per batch.

    Parameters
    ----------
    img_true : dask.array.Array or np.ndarray
        img_true of the matched images, shape ``(n, size, size, 3)``, uint8.
    predictions : str or xr.Dataset
        A folder of image files (path or fsspec URL), or a prediction store opened by
        :func:`open_prediction_store` (its ``source`` coordinate in memory).
    names : sequence of str
        For each of the ``n`` images, its prediction: a relative path in the folder, or a
        ``source`` of the store.
    batch_size : int
        Images per task.
    storage_options : dict, optional
        fsspec options for a folder in object storage.
    metric : callable
        ``metric(img_true, outputs) -> (n,)`` float64 (default: PSNR).

    Returns
    -------
    list of dask.delayed.Delayed
        One per batch, each computing ``(psnr, notes)``: PSNR in dB, float64 ``(b,)`` (NaN for an
        unreadable file) and ``(index in batch, "resized" | "unreadable", detail)`` notes.
        Nothing is computed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if len(names) != len(img_true):
        raise ValueError(
            f"names must name one prediction per image, got {len(names)} for {len(img_true)} images"
        )
    blocks = _as_dask(img_true, batch_size).rechunk((batch_size, -1, -1, -1))
    if isinstance(predictions, str):
        return _file_tasks(blocks, predictions, names, batch_size, storage_options, metric)
    return _store_tasks(blocks, predictions, names, batch_size, metric)


def _as_dask(pixels: Any, batch_size: int) -> da.Array:
    if isinstance(pixels, da.Array):
        return pixels
    return da.from_array(np.asarray(pixels), chunks=(batch_size, -1, -1, -1))


def _file_tasks(
    img_true: da.Array,
    folder: str,
    names: Sequence[str],
    batch_size: int,
    storage_options: dict[str, Any] | None,
    metric: Metric,
) -> list[Any]:
    token = tokenize(img_true.name, folder, list(names), metric)
    task = dask.delayed(_psnr_files_batch, pure=True)
    blocks = img_true.to_delayed().ravel()
    starts = range(0, len(names), batch_size)
    return [
        task(
            block,
            folder,
            list(names[b : b + batch_size]),
            storage_options,
            metric,
            dask_key_name=f"pupsnr-advise-{token}-{k:06d}",
        )
        for k, (block, b) in enumerate(zip(blocks, starts, strict=True))
    ]


def _store_tasks(
    img_true: da.Array, store: xr.Dataset, names: Sequence[str], batch_size: int, metric: Metric
) -> list[Any]:
    position = {str(s): i for i, s in enumerate(store[schema.SOURCE].values)}
    rows = np.array([position[n] for n in names], dtype=np.int64)
    pixels = _as_dask(store[schema.IMAGES].data, batch_size)[rows]
    pixels = pixels.rechunk((batch_size, -1, -1, -1))
    token = tokenize(img_true.name, pixels.name, metric)
    task = dask.delayed(_psnr_array_batch, pure=True)
    pairs = zip(img_true.to_delayed().ravel(), pixels.to_delayed().ravel(), strict=True)
    return [
        task(block, pred, metric, dask_key_name=f"pupsnr-advise-{token}-{k:06d}")
        for k, (block, pred) in enumerate(pairs)
    ]


def compute_output_psnr(
    tasks: list[Any],
    names: Sequence[str],
    matching: Matching,
    batch_size: int,
    progress: bool | None,
) -> np.ndarray:
    """Run the tasks of :func:`build_output_psnr` on the active scheduler.

    Returns the PSNR of each prediction (NaN when unreadable) and records the resized and
    unreadable ones in ``matching``.
    """
    parts = compute(*tasks, progress=progress)
    for k, (_, notes) in enumerate(parts):
        for j, kind, detail in notes:
            name = names[k * batch_size + j]
            if kind == "resized":
                matching.resized.append(f"{name} ({detail})")
            else:
                matching.unreadable.append(f"{name}: {detail}")
    return np.concatenate([psnr for psnr, _ in parts])
