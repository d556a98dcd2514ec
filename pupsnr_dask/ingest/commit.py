"""Writing the final store: its labels and attributes, then its pixels in file order.

Each step leaves a marker in the journal (:mod:`pupsnr_dask.store.journal`): the store created
(or grown) for this plan, then each unit (chunk or shard) of pixels copied with the digests of
its images, so that a resumed ingest redoes only what has no marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import dask
import numpy as np
from dask.base import tokenize

from pupsnr_dask import schema
from pupsnr_dask._version import __version__
from pupsnr_dask.cluster import compute, parallelism
from pupsnr_dask.ingest.plan import COPIED, CREATED, STAGED, Job, batches, pixels_compressors
from pupsnr_dask.ingest.stage import StagedBatch
from pupsnr_dask.kernels.image import Record, pixel_digests
from pupsnr_dask.store.codecs import quiet_zarr_warnings
from pupsnr_dask.store.fs import remove_store, url_to_fs
from pupsnr_dask.store.journal import (
    DONE_FOLDER,
    IngestPlan,
    done_units,
    durable_moment,
    mark_done,
    read_done,
    remove_partial,
)
from pupsnr_dask.store.zarr_io import create_store, unit_bounds, write_unit


@dataclass(frozen=True)
class CopiedUnit:
    """The journal's marker of a unit of final pixels written: where, and its images' digests."""

    start: int
    stop: int
    digests: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The marker's JSON document."""
        return {"start": self.start, "stop": self.stop, "digests": list(self.digests)}

    @classmethod
    def from_json(cls, doc: Any) -> CopiedUnit | None:
        """The marker in ``doc``; None when it is not one."""
        try:
            if not isinstance(doc["digests"], list):
                return None
            unit = cls(int(doc["start"]), int(doc["stop"]), tuple(str(d) for d in doc["digests"]))
        except (KeyError, TypeError, ValueError):
            return None
        return unit if len(unit.digests) == unit.stop - unit.start else None


def assign_split(sources: list[str], test_count: int) -> np.ndarray:
    """Deterministic hold-out: the ``test_count`` sources with the smallest SHA-256 are "test".

    Examples
    --------
    >>> assign_split(["a.png", "b.png", "c.png"], 1).tolist()
    ['train', 'train', 'test']
    """
    if test_count < 0 or test_count > len(sources):
        raise ValueError(f"test_count must be between 0 and {len(sources)}, got {test_count!r}")
    order = sorted(range(len(sources)), key=lambda i: hashlib.sha256(sources[i].encode()).digest())
    split = np.full(len(sources), "train", dtype=object)
    split[order[:test_count]] = "test"
    return split


def finalize(job: Job, plan: IngestPlan, records: list[Record]) -> list[str]:
    """Write the accepted images and their labels into the store, in file order.

    Returns warnings about the images of this plan whose resized pixels are identical.
    """
    accepted = [i for i, r in enumerate(records) if r.accepted]
    kept = [records[i] for i in accepted]
    rejected = [r for r in records if not r.accepted]
    n0 = plan.base.images
    storage_options = job.storage_options
    created = _created_doc(records)
    if not done_units(job.store, {0: created}, storage_options, step=CREATED):
        # Pixels copied for another outcome of the staging (a file changed meanwhile): stale.
        remove_partial(job.store, storage_options, kind="images", entry=f"{DONE_FOLDER}/{COPIED}")
        if n0 == 0:
            if not accepted:
                remove_partial(job.store, storage_options, kind="images")
                reasons = Counter(r.reason for r in rejected)
                raise ValueError(
                    f"SRC {job.src!r} holds no colour images: "
                    + "; ".join(f"rejected {n}: {why}" for why, n in sorted(reasons.items()))
                )
            _create_store(job, kept, rejected, len(records))
        else:
            _extend_store(job, plan, kept, rejected, len(records))
        mark_done(job.store, 0, created, storage_options, step=CREATED)
    durable_moment("ingest:final-created")
    digests = _copy_images(job, plan, accepted, n0)
    if n0:
        _consolidate(job)
    durable_moment("ingest:finalized")
    return duplicate_warnings([r.source for r in kept], digests)


def _created_doc(records: list[Record]) -> dict[str, Any]:
    """The marker of the store created for these records: one made for others is redone."""
    text = json.dumps([asdict(r) for r in records], allow_nan=True)
    n_kept = sum(r.accepted for r in records)
    return {"images": n_kept, "records": hashlib.sha256(text.encode()).hexdigest()}


def duplicate_warnings(sources: list[str], digests: list[str]) -> list[str]:
    """One ``warning:`` line per group of images with identical pixels (all of them kept).

    Examples
    --------
    >>> duplicate_warnings(["a.jpg", "b.png", "a.png"], ["x", "y", "x"])
    ['warning: identical pixels in 2 images (all kept): a.jpg, a.png']
    """
    groups: dict[str, list[str]] = {}
    for source, digest in zip(sources, digests, strict=True):
        groups.setdefault(digest, []).append(source)
    out = []
    for names in sorted(g for g in groups.values() if len(g) > 1):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        out.append(f"warning: identical pixels in {len(names)} images (all kept): {shown}")
    return out


def _columns(kept: list[Record], start: int) -> dict[str, np.ndarray]:
    return {
        schema.IMAGE: np.arange(start, start + len(kept), dtype=np.int64),
        schema.SOURCE: np.array([r.source for r in kept], dtype=object),
        schema.COLOR_SCORE: np.array([r.color_score for r in kept], dtype=np.float64),
        schema.ORIGINAL_WIDTH: np.array([r.width for r in kept], dtype=np.int64),
        schema.ORIGINAL_HEIGHT: np.array([r.height for r in kept], dtype=np.int64),
    }


def _create_store(job: Job, kept: list[Record], rejected: list[Record], n_files: int) -> None:
    """A new store: metadata, labels and attributes; the pixels are copied afterwards."""
    import dask.array as da  # here, not at the top: ingest's argument errors answer without it
    import xarray as xr

    size, chunk = job.params.size, job.params.chunk_size
    columns = _columns(kept, 0)
    split = assign_split(list(columns[schema.SOURCE]), job.test_count)
    placeholder = da.zeros((len(kept), size, size, 3), dtype=np.uint8, chunks=(chunk, -1, -1, -1))
    coords: dict[str, Any] = {schema.IMAGE: columns.pop(schema.IMAGE)}
    coords.update({name: (schema.IMAGE, values) for name, values in columns.items()})
    coords[schema.SPLIT] = (schema.IMAGE, split)
    ds = xr.Dataset({schema.IMAGES: (schema.IMAGE_DIMS, placeholder)}, coords=coords)
    ds[schema.IMAGES].encoding["compressors"] = pixels_compressors()
    ds.attrs.update(_store_attrs(job, n_files, rejected))
    # An unfinished earlier attempt: ours, as the plan (made when STORE did not exist) says.
    remove_store(job.store, job.storage_options, kind="images", ours=True)
    create_store(ds, job.store, storage_options=job.storage_options)


def _extend_store(
    job: Job, plan: IngestPlan, kept: list[Record], rejected: list[Record], n_files: int
) -> None:
    """Grow a finished store by the new images: sizes, labels, attributes (repeatable)."""
    import zarr

    base = plan.base
    n0, total = base.images, base.images + len(kept)
    with quiet_zarr_warnings():
        group = zarr.open_group(
            job.store, mode="r+", storage_options=job.storage_options, use_consolidated=False
        )
    arrays = dict(group.arrays())
    per_image = {name: arr for name, arr in arrays.items() if _dims(arr)[:1] == (schema.IMAGE,)}
    columns = _columns(kept, n0)
    unknown = set(per_image) - {schema.IMAGES, schema.SPLIT, *columns}
    n_now = arrays[schema.IMAGES].shape[0]
    if unknown or n_now not in (n0, total):
        raise schema.StoreError(
            f"{job.store!r} changed since this ingest was planned ({n_now} images, expected "
            f"{n0} or {total}; unknown per-image arrays: {sorted(unknown)}): "
            "use --overwrite to rebuild it"
        )
    old_sources = np.asarray(arrays[schema.SOURCE][:n0])
    sources = [str(s) for s in old_sources] + list(columns[schema.SOURCE])
    split = assign_split(sources, job.test_count)
    for arr in per_image.values():
        if arr.shape[0] != total:
            arr.resize((total, *arr.shape[1:]))
    for name, values in columns.items():
        if len(values):
            arrays[name].with_config({"write_empty_chunks": True})[n0:total] = values
    arrays[schema.SPLIT].with_config({"write_empty_chunks": True})[:] = split.astype(str)
    old_rejected: list[Any] = list(schema.json_attr(group.attrs, schema.REJECTED_ATTR, []))
    group.attrs.update(
        schema.encode_attrs(
            {
                schema.REJECTED_ATTR: [
                    *old_rejected[: base.rejected],
                    *_rejected_entries(rejected),
                ],
                "n_files": base.files + n_files,
            }
        )
    )


def _dims(arr: Any) -> tuple[str, ...]:
    names = getattr(arr.metadata, "dimension_names", None)
    if names is None:  # Zarr format 2
        names = arr.attrs.get("_ARRAY_DIMENSIONS", ())
    return tuple(names or ())


def _consolidate(job: Job) -> None:
    import zarr

    with quiet_zarr_warnings():
        group = zarr.open_group(
            job.store, mode="r+", storage_options=job.storage_options, use_consolidated=False
        )
        zarr.consolidate_metadata(group.store, path=group.path or None)


def _copy_images(job: Job, plan: IngestPlan, accepted: list[int], n0: int) -> list[str]:
    """Copy the accepted staged images to ``images[n0:]``, by chunk or shard.

    Units with a marker are not copied again. A unit that is one staged chunk as it is (a
    batch whose files were all kept) has that chunk's file moved into place, undecoded; these
    take no room, so they all run at once, in as many tasks as the scheduler runs at a time
    (:func:`~pupsnr_dask.cluster.parallelism`). The others, one task each, run in waves as
    wide as the scheduler, in order; after each wave, the staged chunks
    whose images are all in marked units are deleted, so that the staging and the store
    together never hold much more than the store (issue 12: peak disk <= 1.1x).
    Returns the :func:`pixel_digests` of the images of this plan, in order.
    """
    import zarr

    storage_options = job.storage_options
    final = zarr.open_array(job.url(schema.IMAGES), mode="r", storage_options=storage_options)
    bounds = unit_bounds(n0, n0 + len(accepted), write_unit(final))
    done = _copied_units(job, bounds)
    last = _last_use(accepted, bounds, n0, plan.params.chunk_size)
    n_batches = len(batches(plan))
    dropped: set[int] = set()

    def drop_consumed() -> None:
        gone = consumed(last, done, n_batches) - dropped
        _drop_staged(job, sorted(gone))
        dropped.update(gone)

    drop_consumed()
    todo = [k for k in range(len(bounds)) if k not in done]
    token = tokenize(job.store, accepted, n0)
    task = dask.delayed(_copy_units, pure=True)
    staging = zarr.open_array(job.staging, mode="r", storage_options=storage_options)
    same = _same_chunk_bytes(staging, final)
    plan_batches = batches(plan)
    chunk = staging.chunks[0]  # a batch's files; the final chunks' too, when ``same``
    whole = {}
    for k in todo:
        rows = accepted[bounds[k][0] - n0 : bounds[k][1] - n0]
        batch = _whole_staged_chunk(rows, bounds[k], plan_batches, final.shape[0], chunk)
        whole[k] = batch if same else None
    # Moved chunk files take no more room: all in one go, one task for each of ``width``
    # runs of them (a move takes ~1 ms, a task's round trip to the scheduler 2-5 ms); the
    # others one task per unit, in waves, in order.
    moved = [k for k in todo if whole[k] is not None]
    width = parallelism()
    n, runs = len(moved), min(width, len(moved))
    waves = [[moved[i * n // runs : (i + 1) * n // runs] for i in range(runs)]] if runs else []
    rest = [k for k in todo if whole[k] is None]
    waves += [[[k] for k in rest[i : i + width]] for i in range(0, len(rest), width)]
    for wave in waves:
        tasks = [
            task(
                job,
                [
                    (accepted[bounds[k][0] - n0 : bounds[k][1] - n0], bounds[k][0], k, whole[k])
                    for k in units
                ],
                dask_key_name=f"pupsnr-copy-{token}-{units[0]:08d}-{len(units)}",
            )
            for units in wave
        ]
        for units, copied in zip(wave, compute(*tasks, progress=False), strict=True):
            done.update(zip(units, copied, strict=True))
        drop_consumed()
    return [d for k in range(len(bounds)) for d in done[k].digests]


def _copied_units(job: Job, bounds: list[tuple[int, int]]) -> dict[int, CopiedUnit]:
    """The units of ``bounds`` whose marker says they are copied, by unit number."""
    found = read_done(job.store, range(len(bounds)), job.storage_options, step=COPIED)
    done: dict[int, CopiedUnit] = {}
    for k, doc in found.items():
        unit = CopiedUnit.from_json(doc)
        if unit is not None and (unit.start, unit.stop) == bounds[k]:
            done[k] = unit
    return done


def _last_use(
    accepted: list[int], bounds: list[tuple[int, int]], n0: int, chunk: int
) -> dict[int, int]:
    """The last unit that reads each staged batch (batches with no accepted image: none)."""
    last = {}
    for k, (a, b) in enumerate(bounds):
        for row in accepted[a - n0 : b - n0]:
            last[row // chunk] = k
    return last


def consumed(last: dict[int, int], done: Iterable[int], n_batches: int) -> set[int]:
    """The staged batches no unit still to copy reads: every unit up to their last is done.

    Examples
    --------
    >>> sorted(consumed({0: 0, 1: 1, 3: 2}, {0, 2}, 4))
    [0, 2]
    """
    marked = set(done)
    prefix = 0
    while prefix in marked:
        prefix += 1
    return {b for b in range(n_batches) if b not in last or last[b] < prefix}


def consumed_batches(job: Job, plan: IngestPlan, records: list[Record]) -> set[int]:
    """The staged batches whose pixels this plan no longer needs, given its records.

    Those with no accepted image, and, once the store is created for exactly these records,
    those whose images are all in copied units: a resume neither checks nor restages them.
    """
    import zarr

    accepted = [i for i, r in enumerate(records) if r.accepted]
    n_batches = len(batches(plan))
    n0, chunk = plan.base.images, plan.params.chunk_size
    storage_options = job.storage_options
    if not done_units(job.store, {0: _created_doc(records)}, storage_options, step=CREATED):
        return consumed(_last_use(accepted, [(n0, n0 + len(accepted))], n0, chunk), (), n_batches)
    try:
        final = zarr.open_array(job.url(schema.IMAGES), mode="r", storage_options=storage_options)
    except Exception:  # not there after all: every batch with images is needed
        return consumed(_last_use(accepted, [(n0, n0 + len(accepted))], n0, chunk), (), n_batches)
    bounds = unit_bounds(n0, n0 + len(accepted), write_unit(final))
    done = _copied_units(job, bounds)
    return consumed(_last_use(accepted, bounds, n0, chunk), done, n_batches)


def _drop_staged(job: Job, gone: list[int]) -> None:
    """Delete the staged chunks of the batches ``gone`` (ours: inside ``STORE.partial``)."""
    if not gone:
        return
    import zarr

    staging = zarr.open_array(job.staging, mode="r", storage_options=job.storage_options)
    fs, root = url_to_fs(job.staging, job.storage_options)
    paths = [f"{root}/{staging.metadata.encode_chunk_key((b, 0, 0, 0))}" for b in gone]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)


#: The metadata that makes two Zarr arrays' chunks the same bytes for the same pixels.
_CHUNK_BYTES_KEYS = ("zarr_format", "data_type", "dtype", "chunk_grid", "chunks", "fill_value",
                     "codecs", "compressor", "filters", "order", "chunk_key_encoding",
                     "dimension_separator", "storage_transformers")  # fmt: skip


def _same_chunk_bytes(staging: Any, final: Any) -> bool:
    """Whether a chunk of ``staging`` is, byte for byte, the chunk ``final`` stores for it.

    True when both are unsharded and their data type, chunk shape, fill value and codecs are
    the same: Zarr then encodes the same pixels (padded alike at the edge) to the same bytes.
    """
    if getattr(staging, "shards", None) or getattr(final, "shards", None):
        return False
    a, b = staging.metadata.to_dict(), final.metadata.to_dict()
    return all(a.get(key) == b.get(key) for key in _CHUNK_BYTES_KEYS)


def _whole_staged_chunk(
    rows: list[int],
    bounds: tuple[int, int],
    plan_batches: list[list[str]],
    n_final: int,
    chunk: int,
) -> int | None:
    """The staged batch whose chunk is the unit's final chunk as it is, or None.

    It is when the unit is one final chunk (it starts at a boundary of the final chunks of
    ``chunk`` rows, and ends at the next one or at the end, ``n_final``) and its rows are all
    the rows of one staged batch (batches of ``chunk`` files), in order: every file of that
    batch kept.
    """
    start, stop = bounds
    batch, offset = divmod(rows[0], chunk)
    whole = (
        not offset
        and start % chunk == 0
        and len(plan_batches[batch]) == stop - start
        and rows[-1] - rows[0] == stop - start - 1
        and (stop - start == chunk or stop == n_final)
    )
    return batch if whole else None


def _copy_units(job: Job, units: list[tuple[list[int], int, int, int | None]]) -> list[CopiedUnit]:
    """Worker task: :func:`_copy_unit` for each ``(rows, start, unit, whole)``, in order."""
    return [_copy_unit(job, rows, start, unit, whole) for rows, start, unit, whole in units]


def _copy_unit(
    job: Job, rows: list[int], start: int, unit: int, whole: int | None = None
) -> CopiedUnit:
    """Worker task: copy staged ``rows`` to ``images[start:start + len(rows)]``, mark it.

    ``whole``: the staged batch whose chunk is this unit's final chunk byte for byte
    (:func:`_whole_staged_chunk`); its file is moved into place as it is, without decoding
    and encoding it again, when its marker and its file are there.
    (Interrupted between the move and the marker, a resume finds the staged chunk gone and
    stages the batch again.)
    """
    import zarr

    storage_options = job.storage_options
    staging = zarr.open_array(job.staging, mode="r", storage_options=storage_options)
    final = zarr.open_array(job.url(schema.IMAGES), mode="r+", storage_options=storage_options)
    digests = None if whole is None else _move_chunk_file(job, staging, final, whole, start)
    if digests is None:
        first = rows[0]
        span = staging[first : rows[-1] + 1]  # whole chunks, one read each: no orthogonal copy
        block = span[np.asarray(rows, dtype=np.int64) - first]
        final.with_config({"write_empty_chunks": True})[start : start + len(rows)] = block
        digests = pixel_digests(block)
    done = CopiedUnit(start, start + len(rows), tuple(digests))
    mark_done(job.store, unit, done.to_json(), storage_options, step=COPIED)
    durable_moment(f"ingest:final-unit:{unit}")
    return done


def _move_chunk_file(
    job: Job, staging: Any, final: Any, batch: int, start: int
) -> list[str] | None:
    """Move staged ``batch``'s chunk file to the final chunk at row ``start``; its digests.

    None, moving nothing, when the batch's marker or its file is missing.
    """
    docs = read_done(job.store, [batch], job.storage_options, step=STAGED)
    marker = StagedBatch.from_json(docs.get(batch))
    if marker is None:
        return None
    fs, staging_root = url_to_fs(job.staging, job.storage_options)
    final_root = url_to_fs(job.url(schema.IMAGES), job.storage_options)[1]
    tail = (0,) * (final.ndim - 1)
    source = f"{staging_root}/{staging.metadata.encode_chunk_key((batch, *tail))}"
    target = f"{final_root}/{final.metadata.encode_chunk_key((start // final.chunks[0], *tail))}"
    if not fs.exists(source):  # lost since it was checked: decode what Zarr reads instead
        return None
    fs.makedirs(posixpath.dirname(target), exist_ok=True)  # Zarr makes folders as it writes
    fs.mv(source, target)
    durable_moment(f"ingest:final-moved:{batch}")  # in place, not yet marked
    return list(marker.digests)


def _rejected_entries(rejected: list[Record]) -> list[dict[str, Any]]:
    def finite(x: float) -> float | None:
        return None if math.isnan(x) else x

    return [
        {"source": r.source, "reason": r.reason, "color_score": finite(r.color_score)}
        for r in rejected
    ]


def _store_attrs(job: Job, n_files: int, rejected: list[Record]) -> dict[str, Any]:
    return {
        schema.KIND_ATTR: "images",
        schema.VERSION_ATTR: __version__,
        "src": job.params.src,
        "size": job.params.size,
        "threshold": job.params.threshold,
        "test_count": job.test_count,
        "chunk_size": job.params.chunk_size,
        "resample": "LANCZOS",
        "n_files": n_files,
        schema.REJECTED_ATTR: _rejected_entries(rejected),
    }
