"""From a folder of images to one chunked Zarr store of colour images at 256 x 256.

Steps (SPEC.md, "Data preparation"), each a small function:

1. :func:`list_files` — every file below SRC, as sorted ``/``-separated relative paths;
2. :func:`decode_rgb` — first frame, EXIF orientation applied, Pillow ``convert("RGB")``;
3. :func:`color_score` — mean of the 3 x 3 correlation matrix of R, G, B (NaN when a channel
   is constant); colour when below the threshold;
4. :func:`resize_lanczos` — 256 x 256, Pillow LANCZOS, aspect ratio not kept.

:func:`ingest` runs steps 2-4 in parallel, one task per batch of files, on the active Dask
scheduler. Each task writes its resized images straight into a staging array next to the
store (``STORE.partial``) and returns only small records, so nothing large passes through the
client; the accepted images are then gathered, in file order, into the final store.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import dask
import numpy as np
import xarray as xr
from PIL import Image, ImageOps

from pupsnr_dask import schema
from pupsnr_dask.cluster import compute

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
DEFAULT_SIZE = 256
DEFAULT_THRESHOLD = 0.995
DEFAULT_CHUNK_SIZE = 32
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class Record:
    """What ingest learned about one source file."""

    source: str
    accepted: bool
    reason: str = ""
    color_score: float = math.nan
    width: int = 0
    height: int = 0


@dataclass
class IngestSummary:
    """Counts reported after an ingest."""

    store: str
    n_files: int
    n_images: int
    rejected: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact a line."""
        out = [f"{self.n_files} files, {self.n_images} colour images stored in {self.store}"]
        for reason, count in sorted(self.rejected.items()):
            out.append(f"  rejected {count}: {reason}")
        return out


def list_files(src: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every file below ``src``, as sorted relative paths with ``/`` separators.

    Raises
    ------
    FileNotFoundError
        When ``src`` does not exist.
    NotADirectoryError
        When ``src`` is not a folder.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(src, **(storage_options or {}))
    if not fs.exists(root):
        raise FileNotFoundError(f"SRC {src!r} does not exist")
    if not fs.isdir(root):
        raise NotADirectoryError(f"SRC {src!r} is not a folder")
    root = root.rstrip("/")
    found = fs.find(root, withdirs=False)
    return sorted(posixpath.relpath(p, root) for p in found)


def decode_rgb(fp: str | IO[bytes]) -> Image.Image:
    """Decode the first frame of an image file, apply its EXIF orientation, convert to RGB.

    Palette, RGBA (alpha dropped), CMYK, 16-bit and other modes become RGB exactly as Pillow's
    ``convert("RGB")`` makes them.
    """
    with Image.open(fp) as img:
        img.seek(0)
        upright = ImageOps.exif_transpose(img)
        return upright.convert("RGB")


def color_score(rgb: np.ndarray) -> float:
    """Mean of the nine entries of the correlation matrix of the R, G and B values.

    Sums are accumulated in float64 over integer values, which is exact, so the score does not
    depend on how the pixels are visited. A constant channel makes the correlation undefined:
    the score is then NaN (never colour).

    Parameters
    ----------
    rgb : np.ndarray
        Shape ``(h, w, 3)``, uint8.

    Examples
    --------
    >>> gray = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2)
    >>> color_score(gray)
    1.0
    """
    pixels = rgb.reshape(-1, 3)
    n = len(pixels)
    sums = np.zeros(3)
    products = np.zeros((3, 3))
    step = 1 << 20
    for start in range(0, n, step):
        block = pixels[start : start + step].astype(np.float64)
        sums += block.sum(axis=0)
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


def resize_lanczos(img: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size x size`` with Pillow LANCZOS; returns uint8 ``(size, size, 3)``."""
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def load_resized(
    fp: str | IO[bytes], source: str, size: int, threshold: float
) -> tuple[np.ndarray | None, Record]:
    """Decode, colour-test and resize one file; never raises for a bad file.

    Returns
    -------
    (np.ndarray or None, Record)
        The resized uint8 image when accepted, else None; and the record saying why.
    """
    try:
        rgb = decode_rgb(fp)
        width, height = rgb.size
        score = color_score(np.asarray(rgb))
    except Exception as err:  # any decoder failure is a rejection, not a crash
        return None, Record(source, False, f"cannot decode: {type(err).__name__}")
    if math.isnan(score):
        return None, Record(
            source, False, "not colour: a channel is constant", score, width, height
        )
    if score >= threshold:
        reason = f"not colour: score >= {threshold}"
        return None, Record(source, False, reason, score, width, height)
    return resize_lanczos(rgb, size), Record(source, True, "", score, width, height)


def _ingest_batch(
    src: str,
    sources: list[str],
    batch: int,
    partial: str,
    size: int,
    threshold: float,
    storage_options: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Worker task: load one batch of files, write its pixels to the staging array."""
    import fsspec
    import zarr

    fs, root = fsspec.core.url_to_fs(src, **(storage_options or {}))
    pixels = np.zeros((len(sources), size, size, 3), dtype=np.uint8)
    records = []
    for i, source in enumerate(sources):
        ext = posixpath.splitext(source)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            records.append(Record(source, False, "not an image file extension"))
            continue
        try:
            with fs.open(posixpath.join(root.rstrip("/"), source), "rb") as fp:
                image, record = load_resized(fp, source, size, threshold)
        except OSError as err:
            image, record = None, Record(source, False, f"cannot read: {type(err).__name__}")
        if image is not None:
            pixels[i] = image
        records.append(record)
    staging = zarr.open_array(f"{partial}/pixels", mode="r+", storage_options=storage_options)
    start = batch * staging.chunks[0]
    staging[start : start + len(sources)] = pixels
    rows = [asdict(r) for r in records]
    pfs, ppath = fsspec.core.url_to_fs(partial, **(storage_options or {}))
    with pfs.open(f"{ppath}/records/{batch:08d}.json", "w") as fh:
        json.dump(rows, fh)
    return rows


def assign_split(sources: list[str], test_count: int) -> np.ndarray:
    """Deterministic hold-out: the ``test_count`` sources with the smallest SHA-256 are "test".

    Examples
    --------
    >>> assign_split(["a.png", "b.png", "c.png"], 1).tolist()
    ['train', 'test', 'train']
    """
    if test_count < 0 or test_count > len(sources):
        raise ValueError(f"test_count must be between 0 and {len(sources)}, got {test_count!r}")
    order = sorted(range(len(sources)), key=lambda i: hashlib.sha256(sources[i].encode()).digest())
    split = np.full(len(sources), "train", dtype=object)
    split[order[:test_count]] = "test"
    return split


def ingest(
    src: str,
    store: str,
    *,
    size: int = DEFAULT_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    test_count: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> IngestSummary:
    """Ingest the colour images below ``src`` into a Zarr store at ``store``.

    Parameters
    ----------
    src : str
        Folder (path or fsspec URL) searched recursively for images.
    store : str
        Path or fsspec URL of the Zarr store to write.
    size : int
        Side of the square output images, in pixels.
    threshold : float
        An image is colour when its :func:`color_score` is below this.
    test_count : int
        How many accepted images to mark ``split="test"`` (see :func:`assign_split`).
    chunk_size : int
        Images per Zarr chunk and per parallel task.
    overwrite : bool
        Replace an existing store instead of refusing.
    storage_options : dict, optional
        fsspec options for object storage.
    progress : bool, optional
        Show progress bars on standard error; by default only when it is a terminal.

    Returns
    -------
    IngestSummary
        Counts of files, stored images and rejections by reason.
    """
    _check_ingest_args(size, threshold, test_count, chunk_size)
    sources = list_files(src, storage_options)
    if not sources:
        raise ValueError(f"SRC {src!r} contains no files")
    _prepare_target(store, overwrite, storage_options)
    partial = store.rstrip("/") + PARTIAL_SUFFIX
    records = _stage(src, sources, partial, size, threshold, chunk_size, storage_options, progress)
    accepted = [i for i, r in enumerate(records) if r["accepted"]]
    rejected = [r for r in records if not r["accepted"]]
    summary = IngestSummary(
        store, len(records), len(accepted), Counter(r["reason"] for r in rejected)
    )
    if not accepted:
        schema.remove_store(partial, storage_options)
        raise ValueError(f"SRC {src!r} holds no colour images: " + "; ".join(summary.lines()[1:]))
    ds = _final_dataset(partial, records, accepted, test_count, chunk_size, storage_options)
    ds.attrs.update(_store_attrs(src, size, threshold, test_count, records, rejected))
    schema.write_store(ds, store, storage_options=storage_options, progress=progress)
    schema.remove_store(partial, storage_options)
    return summary


def _check_ingest_args(size: int, threshold: float, test_count: int, chunk_size: int) -> None:
    if size < 16 or size % 16:
        raise ValueError(f"size must be a positive multiple of 16, got {size!r}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if test_count < 0:
        raise ValueError(f"test_count must be >= 0, got {test_count!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")


def _prepare_target(store: str, overwrite: bool, storage_options: dict[str, Any] | None) -> None:
    if schema.store_exists(store, storage_options):
        if not overwrite:
            raise FileExistsError(f"store {store!r} already exists (use --overwrite to replace it)")
        schema.remove_store(store, storage_options)
    schema.remove_store(store.rstrip("/") + PARTIAL_SUFFIX, storage_options)


def _stage(
    src: str,
    sources: list[str],
    partial: str,
    size: int,
    threshold: float,
    chunk_size: int,
    storage_options: dict[str, Any] | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """Decode, test and resize every file in parallel into the staging array."""
    import fsspec
    import zarr

    fs, path = fsspec.core.url_to_fs(partial, **(storage_options or {}))
    fs.makedirs(f"{path}/records", exist_ok=True)
    zarr.create_array(
        f"{partial}/pixels",
        shape=(len(sources), size, size, 3),
        chunks=(chunk_size, size, size, 3),
        dtype="uint8",
        fill_value=0,
        storage_options=storage_options,
    )
    task = dask.delayed(_ingest_batch, pure=True)
    tasks = [
        task(
            src,
            sources[b : b + chunk_size],
            b // chunk_size,
            partial,
            size,
            threshold,
            storage_options,
            dask_key_name=f"pupsnr-ingest-{b // chunk_size:08d}",
        )
        for b in range(0, len(sources), chunk_size)
    ]
    batches = compute(*tasks, progress=progress)
    return [row for rows in batches for row in rows]


def _final_dataset(
    partial: str,
    records: list[dict[str, Any]],
    accepted: list[int],
    test_count: int,
    chunk_size: int,
    storage_options: dict[str, Any] | None,
) -> xr.Dataset:
    import dask.array as da

    staging = da.from_zarr(f"{partial}/pixels", storage_options=storage_options)
    images = staging[np.asarray(accepted)].rechunk((chunk_size, -1, -1, -1))
    kept = [records[i] for i in accepted]
    sources = [r["source"] for r in kept]
    coords = {
        schema.IMAGE: np.arange(len(kept), dtype=np.int64),
        schema.SOURCE: (schema.IMAGE, np.array(sources, dtype=object)),
        schema.COLOR_SCORE: (schema.IMAGE, np.array([r["color_score"] for r in kept])),
        schema.SPLIT: (schema.IMAGE, assign_split(sources, test_count)),
        schema.ORIGINAL_WIDTH: (schema.IMAGE, np.array([r["width"] for r in kept], np.int64)),
        schema.ORIGINAL_HEIGHT: (schema.IMAGE, np.array([r["height"] for r in kept], np.int64)),
    }
    return xr.Dataset({schema.IMAGES: (schema.IMAGE_DIMS, images)}, coords=coords)


def _store_attrs(
    src: str,
    size: int,
    threshold: float,
    test_count: int,
    records: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
) -> dict[str, Any]:
    from pupsnr_dask import __version__

    def finite(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        schema.KIND_ATTR: "images",
        schema.VERSION_ATTR: __version__,
        "src": src,
        "size": size,
        "threshold": threshold,
        "test_count": test_count,
        "resample": "LANCZOS",
        "n_files": len(records),
        schema.REJECTED_ATTR: [
            {"source": r["source"], "reason": r["reason"], "color_score": finite(r["color_score"])}
            for r in rejected
        ],
    }
