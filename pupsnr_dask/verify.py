"""``pupsnr verify STORE``: is a store whole, well formed and consistent? A list of defects.

Checks, each only when the ones before it passed far enough to make sense:

1. nothing unfinished: no ``STORE.partial`` (an interrupted or running ingest or run);
2. every metadata document (``zarr.json``, ``.zarray``, ...) is valid JSON, and the
   consolidated metadata agrees with the arrays' own;
3. the layout of its kind (:func:`pupsnr_dask.schema.validate`): variables, dims, dtypes,
   coordinates;
4. shapes and labels: image index ``0 .. N-1``, unique sources, known splits, square images of
   the recorded size, chunked along ``image`` only, colour scores below the threshold, PSNR
   equal to ``10 log10(255² / MSE)``;
5. every chunk present (listed in the store) and readable (read and decoded), and no stored
   image all zeros (never written);
6. a results store against its images store: the same images (index, source, split), and the
   MSE of a sample of result chunks (or all of them) recomputed and compared exactly.

:func:`missing_chunks`, :func:`metadata_defects` and :func:`unfinished` are cheap (listings and
small reads); :func:`pupsnr_dask.store.zarr_io.open_store` uses them so that ``run`` and ``report``
refuse a damaged store with a message naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pupsnr_dask import schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.defaults import DEFAULT_RECOMPUTE
from pupsnr_dask.experiment import cube_kernel
from pupsnr_dask.ingest import duplicate_warnings, pixel_digests
from pupsnr_dask.kernels.metrics import psnr_from_mse
from pupsnr_dask.store.codecs import quiet_zarr_warnings
from pupsnr_dask.store.fs import store_exists
from pupsnr_dask.store.integrity import (
    _open_group,
    chunk_problem,
    chunk_regions,
    first_damaged_chunk,
    list_keys,
    metadata_defects,
    unfinished,
)
from pupsnr_dask.store.zarr_io import images_store_of, open_store


@dataclass
class VerifyReport:
    """What :func:`verify_store` found."""

    store: str
    kind: str | None = None
    defects: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: For a results store: the images store it was checked against, and how it was found.
    images_store: str | None = None
    images_store_note: str = ""
    #: Digest of each stored image's pixels, by index (images stores).
    digests: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when no defect was found."""
        return not self.defects

    def lines(self) -> list[str]:
        """Human-readable verdict: one line, then one line per defect."""
        done = ", ".join(f"{n} {what}" for what, n in self.checked.items())
        kind = f"pupsnr {self.kind!r} store" if self.kind else "store"
        extra = [f"warning: {w}" for w in self.warnings]
        if self.images_store:
            extra.insert(0, f"images store checked: {self.images_store} ({self.images_store_note})")
        if self.ok:
            return [f"OK: {self.store} is a sound {kind} ({done})", *extra]
        head = f"{len(self.defects)} defects in {kind} {self.store}"
        return [
            head + (f" ({done})" if done else ""),
            *(f"  - {d}" for d in self.defects),
            *extra,
        ]


def verify_store(
    store: str,
    *,
    images: str | None = None,
    recompute: int | None = DEFAULT_RECOMPUTE,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> VerifyReport:
    """Check a pupsnr store thoroughly; read every chunk.

    Parameters
    ----------
    store : str
        Path or fsspec URL of an images or results store.
    images : str, optional
        For a results store, its images store; by default the one recorded in its attributes.
    recompute : int or None
        For a results store, how many result chunks to recompute from the images and compare
        exactly (first, last, and evenly spaced between); None recomputes all, 0 none.
    storage_options : dict, optional
        fsspec options for object storage.
    progress : bool, optional
        Progress bars on standard error; by default only when it is a terminal.

    Returns
    -------
    VerifyReport
        The defects found (none when the store is sound) and counts of what was checked.

    Raises
    ------
    FileNotFoundError
        When nothing is stored at ``store``.
    """
    if recompute is not None and recompute < 0:
        raise ValueError(f"recompute must be >= 0 or None (all), got {recompute!r}")
    report = VerifyReport(store)
    note = unfinished(store, storage_options)
    if note:
        report.defects.append(note)
    if not store_exists(store, storage_options):
        if note:  # an ingest interrupted before it created the store
            return report
        raise FileNotFoundError(f"no store at {store!r}")
    keys = list_keys(store, storage_options)
    report.defects += metadata_defects(store, storage_options, keys)
    report.defects += _consolidation_defects(store, storage_options)
    ds = _open_dataset(store, storage_options, report)
    if ds is None:
        return report
    labels = schema.label_defects(ds, report.kind)  # type: ignore[arg-type]
    report.defects += labels
    chunks = _chunk_defects(store, storage_options, keys, report, progress)
    report.defects += chunks
    pixels_only = all(d.startswith((f"chunk '{schema.IMAGES}/", "image ")) for d in chunks)
    if labels or not pixels_only:
        return report  # the checks below read those attributes and labels
    if report.kind == "images":
        report.defects += _images_defects(ds)
        sources = [str(s) for s in ds[schema.SOURCE].values]
        if len(report.digests) == len(sources):
            report.warnings += duplicate_images(sources, report.digests)
    elif report.kind == "psnr":
        report.defects += _results_defects(ds, images, recompute, storage_options, report)
    return report


def _consolidation_defects(store: str, storage_options: dict[str, Any] | None) -> list[str]:
    """Arrays whose shape in the consolidated metadata differs from their own metadata."""
    try:
        own = {n: a.shape for n, a in _open_group(store, storage_options, False).arrays()}
        listed = {n: a.shape for n, a in _open_group(store, storage_options, True).arrays()}
    except Exception:  # no consolidated metadata, or unreadable metadata (reported already)
        return []
    return [
        f"consolidated metadata is stale for {name!r}: shape {listed.get(name)} there, "
        f"{own.get(name)} in its own metadata"
        for name in sorted(set(own) | set(listed))
        if own.get(name) != listed.get(name)
    ]


def _open_dataset(store: str, storage_options: dict[str, Any] | None, report: VerifyReport) -> Any:
    import xarray as xr

    try:
        with quiet_zarr_warnings():
            ds = xr.open_zarr(store, storage_options=storage_options, consolidated=None)
    except Exception as err:  # foreign or corrupt: say so, stop here
        report.defects.append(f"not a readable Zarr store: {type(err).__name__}: {err}")
        return None
    kind = ds.attrs.get(schema.KIND_ATTR)
    if kind not in ("images", "psnr"):
        report.defects.append(f"not a pupsnr store (attribute {schema.KIND_ATTR!r} is {kind!r})")
        return None
    report.kind = kind
    try:
        schema.check_layout(ds, kind, name=store)
    except schema.StoreError as err:
        report.defects.append(str(err))
        return None
    return ds


def _chunk_defects(
    store: str,
    storage_options: dict[str, Any] | None,
    keys: set[str],
    report: VerifyReport,
    progress: bool | None,
) -> list[str]:
    import dask

    try:
        arrays = sorted(_open_group(store, storage_options, consolidated=None).arrays())
    except Exception as err:
        return [f"cannot open the arrays: {type(err).__name__}: {err}"]
    out, tasks, starts = [], [], []
    for name, arr in arrays:
        own = f"{name}/zarr.json" if arr.metadata.zarr_format == 3 else f"{name}/.zarray"
        if own not in keys:
            out.append(f"metadata file {own!r} is missing")
            continue
        for pos, region in chunk_regions(arr):
            key = f"{name}/{arr.metadata.encode_chunk_key(pos)}"
            if key not in keys:
                out.append(f"chunk {key!r} is missing")
                continue
            check_zero = name == schema.IMAGES and report.kind == "images"
            starts.append(region[0].start)
            tasks.append(
                dask.delayed(_read_chunk, pure=True)(
                    f"{store.rstrip('/')}/{name}", key, region, check_zero, storage_options
                )
            )
    report.checked["chunks read"] = len(tasks)
    for (problems, digests), start in zip(compute(*tasks, progress=progress), starts, strict=True):
        out += problems
        report.digests.update((start + i, d) for i, d in enumerate(digests))
    return out


def _read_chunk(
    url: str,
    key: str,
    region: tuple[slice, ...],
    check_zero: bool,
    storage_options: dict[str, Any] | None,
) -> tuple[list[str], list[str]]:
    """Worker task: read and decode one stored object; report failures and blank images.

    With ``check_zero`` (the pixels of an images store), also returns the
    :func:`pupsnr_dask.ingest.pixel_digests` of its images, for the duplicate warning.
    """
    import zarr

    try:
        block = np.asarray(zarr.open_array(url, mode="r", storage_options=storage_options)[region])
    except Exception as err:
        return [chunk_problem(key, err)], []
    if check_zero:
        blank = np.flatnonzero(block.reshape(len(block), -1).max(axis=1) == 0)
        first = region[0].start
        found = [f"image {first + int(i)} is all zeros (never written?)" for i in blank]
        return found, pixel_digests(block)
    return [], []


def duplicate_images(sources: list[str], digests: dict[int, str]) -> list[str]:
    """Warnings about groups of stored images with identical pixels (not defects)."""
    order = sorted(digests)
    lines = duplicate_warnings([sources[i] for i in order], [digests[i] for i in order])
    return [line.removeprefix("warning: ").replace(" (all kept)", "") for line in lines]


def _images_defects(ds: Any) -> list[str]:
    out = []
    n = ds.sizes[schema.IMAGE]
    size = ds.attrs.get("size")
    images = ds[schema.IMAGES]
    if size is not None and images.shape[1:] != (size, size, 3):
        out.append(f"images have shape {images.shape[1:]}, expected {(size, size, 3)}")
    chunks = images.encoding.get("chunks")
    if chunks is not None and tuple(chunks[1:]) != tuple(images.shape[1:]):
        out.append(f"images are chunked {tuple(chunks)}; expected whole images per chunk")
    out += _index_defects(ds)
    sources = [str(s) for s in ds[schema.SOURCE].values]
    rejected = schema.json_attr(ds.attrs, schema.REJECTED_ATTR, [])  # checked: valid
    overlap = set(sources) & {r.get("source") for r in rejected}
    if overlap:
        out.append(f"{len(overlap)} sources are both stored and rejected, e.g. {min(overlap)!r}")
    n_files = ds.attrs.get("n_files")
    if n_files is not None and n_files != n + len(rejected):
        out.append(f"n_files is {n_files}, but {n} images + {len(rejected)} rejections")
    score = ds[schema.COLOR_SCORE].values
    threshold = ds.attrs.get("threshold", 1.0)
    bad = np.flatnonzero(~(score < threshold))
    if len(bad):
        out.append(f"{len(bad)} colour scores are not below {threshold}, e.g. image {bad[0]}")
    for name in (schema.ORIGINAL_WIDTH, schema.ORIGINAL_HEIGHT):
        bad = np.flatnonzero(ds[name].values < 1)
        if len(bad):
            out.append(f"{name} is not positive for {len(bad)} images, e.g. image {bad[0]}")
    test_count = ds.attrs.get("test_count")
    n_test = int((ds[schema.SPLIT].values == "test").sum())
    if test_count is not None and n_test != test_count:
        out.append(f"{n_test} images have split 'test', but test_count is {test_count}")
    return out


def _index_defects(ds: Any) -> list[str]:
    out = []
    n = ds.sizes[schema.IMAGE]
    index = ds[schema.IMAGE].values
    if not np.array_equal(index, np.arange(n)):
        out.append(f"the image index is not 0 .. {n - 1}")
    sources = [str(s) for s in ds[schema.SOURCE].values]
    if len(set(sources)) != len(sources):
        out.append(f"{len(sources) - len(set(sources))} sources appear more than once")
    splits = set(str(s) for s in ds[schema.SPLIT].values) - set(schema.SPLITS)
    if splits:
        out.append(f"unknown split values {sorted(splits)}; expected {schema.SPLITS}")
    return out


def _results_defects(
    ds: Any,
    images: str | None,
    recompute: int | None,
    storage_options: dict[str, Any] | None,
    report: VerifyReport,
) -> list[str]:
    out = _index_defects(ds)
    mse = ds[schema.MSE].values
    psnr = ds[schema.PSNR].values
    if np.isnan(mse).any() or (mse < 0).any():
        out.append(f"{int((np.isnan(mse) | (mse < 0)).sum())} MSE values are NaN or negative")
    elif not np.array_equal(psnr, psnr_from_mse(mse)):
        out.append("psnr is not 10*log10(255**2 / mse) everywhere")
    if images:
        report.images_store_note = "given"
    else:
        images, report.images_store_note = images_store_of(ds.attrs, report.store, storage_options)
    if not images:
        out.append("the images store is not recorded (attribute 'images_store'); pass --images")
        return out
    report.images_store = images
    try:
        pixels = open_store(images, "images", storage_options=storage_options)
    except (OSError, ValueError) as err:
        out.append(f"images store {images!r}: {err}")
        return out
    for name in (schema.IMAGE, schema.SOURCE, schema.SPLIT):
        if not np.array_equal(ds[name].values, pixels[name].values):
            out.append(f"{name} differs from the images store {images!r} (rerun `pupsnr run`)")
            return out
    out += _recomputed_defects(ds, images, recompute, storage_options, report)
    return out


def _sample(n: int, k: int | None) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    if k == 0:
        return []
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def _recomputed_defects(
    ds: Any,
    images: str,
    recompute: int | None,
    storage_options: dict[str, Any] | None,
    report: VerifyReport,
) -> list[str]:
    import dask

    n = ds.sizes[schema.IMAGE]
    step = int(ds[schema.MSE].encoding.get("chunks", (n,))[0]) or n
    starts = list(range(0, n, step))
    chosen = [starts[i] for i in _sample(len(starts), recompute)]
    variants = [str(v) for v in ds[schema.VARIANT].values]
    scales = [int(s) for s in ds[schema.SCALE].values]
    method = ds.attrs.get("method", "moments")
    sources = [str(s) for s in ds[schema.SOURCE].values]  # the keys of noise<sigma> inputs
    tasks = [
        dask.delayed(_recompute_chunk, pure=True)(
            images,
            ds[schema.MSE].values[a : a + step],
            a,
            variants,
            scales,
            method,
            storage_options,
            sources[a : a + step],
        )
        for a in chosen
    ]
    out = [d for found in compute(*tasks, progress=False) for d in found]
    report.checked["images recomputed"] = sum(min(step, n - a) for a in chosen)
    return out


def _recompute_chunk(
    images: str,
    stored: np.ndarray,
    start: int,
    variants: list[str],
    scales: list[int],
    method: str,
    storage_options: dict[str, Any] | None,
    keys: list[str],
) -> list[str]:
    """Worker task: the MSE of images ``start ..`` recomputed, compared with ``stored``.

    ``keys``: the images' ``source`` labels, which seed the ``noise<sigma>`` inputs.
    """
    import zarr

    url = f"{images.rstrip('/')}/{schema.IMAGES}"
    pixels = zarr.open_array(url, mode="r", storage_options=storage_options)
    try:
        block = np.asarray(pixels[start : start + len(stored)])
    except Exception as err:
        rows = (start, start + len(stored))
        found = first_damaged_chunk(images, storage_options, rows=rows) or f"{err}"
        return [
            f"images {start} .. {rows[1] - 1} cannot be recomputed: images store {images!r}: "
            f"{found}"
        ]
    fresh = cube_kernel(block, variants, scales, method, keys=keys)  # type: ignore[arg-type]
    differ = np.flatnonzero((fresh != stored).reshape(len(stored), -1).any(axis=1))
    return [f"image {start + int(i)}: stored MSE differs from the recomputed one" for i in differ]
