"""The batch tasks: decode, colour-test and resize a batch of files on a worker, stage it.

Each task writes its batch's resized images into the staging array ``STORE.partial/pixels``
(one chunk a batch, file order) and then its :class:`StagedBatch` marker in the journal, so
nothing large passes through the client and a batch whose marker exists is never redone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import Any

import dask
import numpy as np
from dask.base import tokenize

from pupsnr_dask.cluster import WORKER_DIED, compute, compute_each, when_started
from pupsnr_dask.ingest.listing import member_path, src_root
from pupsnr_dask.ingest.plan import STAGED, Job, batches
from pupsnr_dask.kernels.image import (
    IMAGE_EXTENSIONS,
    Record,
    _os_reason,
    escaped_name,
    image_extension,
    load_resized,
    name_failure,
    pixel_digests,
    read_failure,
)
from pupsnr_dask.store.journal import EVENT, IngestPlan, durable_moment, mark_done, read_done

#: The reason recorded for a file whose task kills its worker, even when run alone.
KILLED_WORKER_REASON = "killed its worker: out of memory, or a crash while decoding?"


#: Logs the start of each file's loading (the ``ingest:load`` event, ``source`` in ``extra``).
LOGGER = logging.getLogger("pupsnr_dask.ingest")


@dataclass(frozen=True)
class StagedBatch:
    """The journal's marker of a staged batch: its files, what each gave, its rows' digests.

    ``digests`` are the :func:`pixel_digests` of its rows (markers written before they were
    recorded, with a ``sha256`` of the whole batch instead, are not taken for markers: such
    a batch is staged again).
    """

    sources: tuple[str, ...]
    records: tuple[Record, ...]
    digests: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The marker's JSON document."""
        return {
            "sources": list(self.sources),
            "rows": [asdict(r) for r in self.records],
            "digests": list(self.digests),
        }

    @classmethod
    def from_json(cls, doc: Any) -> StagedBatch | None:
        """The marker in ``doc``; None when it is not one (an older or a damaged document)."""
        try:
            records = tuple(Record(**row) for row in doc["rows"])
            if not isinstance(doc["digests"], list):
                return None
            digests = tuple(str(d) for d in doc["digests"])
            batch = cls(tuple(str(s) for s in doc["sources"]), records, digests)
        except (KeyError, TypeError):
            return None
        ok = len(batch.records) == len(batch.sources) == len(batch.digests) and all(
            isinstance(r.accepted, bool) and isinstance(r.color_score, float | int)
            for r in batch.records
        )
        return batch if ok else None


def load_source(
    fs: Any, root: str, source: str, size: int, threshold: float
) -> tuple[np.ndarray | None, Record]:
    """Load one entry of :func:`~pupsnr_dask.ingest.list_files`; never raises or blocks.

    Special files (pipes, sockets, devices) are never opened.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The filesystem of SRC.
    root : str
        SRC's path on ``fs``.
    source : str
        The entry, relative to ``root``.
    size, threshold
        As for :func:`~pupsnr_dask.kernels.image.load_resized`.
    """
    path = member_path(root, source)
    if source.endswith("/"):
        try:
            fs.ls(path.rstrip("/"))
        except OSError as err:
            return None, Record(source, False, f"cannot list folder: {_os_reason(err)}")
        return None, Record(source, False, "cannot list folder: it failed while SRC was listed")
    try:
        info = fs.info(path)  # follows symbolic links
    except OSError as err:
        return None, Record(source, False, read_failure(err))
    if info["type"] == "directory":
        return None, Record(source, False, "symbolic link to a folder: not followed")
    if info["type"] != "file":
        return None, Record(source, False, "not a regular file (named pipe, socket or device)")
    if image_extension(source) not in IMAGE_EXTENSIONS:
        return None, Record(source, False, "not an image file extension")
    if not info.get("size"):
        return None, Record(source, False, "cannot decode: empty file")
    try:
        with fs.open(path, "rb") as fp:
            return load_resized(fp, source, size, threshold)
    except OSError as err:
        return None, Record(source, False, read_failure(err))


Loaded = tuple[np.ndarray | None, Record]


def _ingest_batch(
    src: str,
    sources: list[str],
    batch: int,
    job: Job,
) -> tuple[Record, ...]:
    """Worker task: load one batch of files, write its pixels to the staging array.

    The batch's marker (with each row's :func:`pixel_digests`) is written after the pixels,
    atomically: a marker that exists describes pixels that are all in place.
    """
    fs, root = src_root(src, job.storage_options)
    size, threshold = job.params.size, job.params.threshold
    loaded = [_load_one(fs, root, source, size, threshold) for source in sources]
    return _write_batch(job, batch, sources, loaded)


def _ingest_file(src: str, source: str, job: Job) -> Loaded:
    """Worker task: load one file of a batch whose worker died (see :func:`stage`)."""
    fs, root = src_root(src, job.storage_options)
    return _load_one(fs, root, source, job.params.size, job.params.threshold)


def _load_one(fs: Any, root: str, source: str, size: int, threshold: float) -> Loaded:
    """One file's resized image (or None) and its record."""
    failure = name_failure(source)
    if failure is not None:
        return None, Record(escaped_name(source), False, failure)
    LOGGER.debug("loading %s", source, extra={EVENT: "ingest:load", "source": source})
    return load_source(fs, root, source, size, threshold)


def _write_batch(
    job: Job, batch: int, sources: list[str], loaded: list[Loaded]
) -> tuple[Record, ...]:
    """Write a batch's pixels to the staging array, then its marker; return its records."""
    import zarr

    size = job.params.size
    pixels = np.zeros((len(sources), size, size, 3), dtype=np.uint8)
    for i, (image, _) in enumerate(loaded):
        if image is not None:
            pixels[i] = image
    staging = zarr.open_array(job.staging, mode="r+", storage_options=job.storage_options)
    start = batch * staging.chunks[0]
    # Every chunk is written: testing each for emptiness costs more than writing it.
    staging.with_config({"write_empty_chunks": True})[start : start + len(sources)] = pixels
    records = tuple(record for _, record in loaded)
    marker = StagedBatch(tuple(sources), records, tuple(pixel_digests(pixels)))
    mark_done(job.store, batch, marker.to_json(), job.storage_options, step=STAGED)
    durable_moment(f"ingest:batch:{batch}")
    return records


def _staged_intact(job: Job, batch: int, digests: tuple[str, ...]) -> bool:
    """Worker task: True when the staged pixels of a finished batch still have its digests."""
    import zarr

    try:
        staging = zarr.open_array(job.staging, mode="r", storage_options=job.storage_options)
        start = batch * staging.chunks[0]
        pixels = np.asarray(staging[start : start + len(digests)])
        return tuple(pixel_digests(pixels)) == digests
    except Exception:  # an unreadable chunk: stage the batch again
        return False


def staged_records(
    job: Job,
    plan: IngestPlan,
    notes: list[str],
    found: dict[int, StagedBatch],
    unneeded: frozenset[int] | set[int] = frozenset(),
) -> list[Record]:
    """Every planned file's record, staging the batches that have no intact marker yet.

    ``found``: the batches' markers (:func:`staged_markers`); those in ``unneeded``, whose
    pixels are needed no more (already in the final store, or none kept), are not checked.
    """
    plan_batches = batches(plan)
    if found:
        check = sorted(set(found) - set(unneeded))
        tasks = [dask.delayed(_staged_intact, pure=True)(job, b, found[b].digests) for b in check]
        intact = compute(*tasks, progress=False) if tasks else ()
        failed = {b for b, ok in zip(check, intact, strict=True) if not ok}
        found = {b: marker for b, marker in found.items() if b not in failed}
        notes.append(
            f"resumed an interrupted ingest: {len(found)} of {len(plan_batches)} batches were "
            "already staged"
        )
    records = {b: marker.records for b, marker in found.items()}
    pending = [b for b in range(len(plan_batches)) if b not in records]
    if pending:
        records.update(stage(job, plan, pending))
    return [r for b in range(len(plan_batches)) for r in records[b]]


def staged_markers(job: Job, plan: IngestPlan) -> dict[int, StagedBatch]:
    """The markers of staged batches that match the plan, by batch number."""
    plan_batches = batches(plan)
    docs = read_done(job.store, range(len(plan_batches)), job.storage_options, step=STAGED)
    out = {}
    for b, doc in docs.items():
        marker = StagedBatch.from_json(doc)
        if marker is not None and list(marker.sources) == plan_batches[b]:
            out[b] = marker
    return out


def stage(job: Job, plan: IngestPlan, pending: list[int]) -> dict[int, tuple[Record, ...]]:
    """Decode, test and resize the pending batches in parallel into the staging array.

    A batch whose workers died (out of memory, a crash: Dask gives it up) is loaded again one
    file per task; a file whose task still kills its worker when run alone is rejected with
    :data:`KILLED_WORKER_REASON`, and the batch is written with the others' images and records
    exactly as the batch task would have written them.
    """
    plan_batches = batches(plan)
    token = tokenize(job.partial, plan.files)
    task = dask.delayed(_ingest_batch, pure=True)
    tasks = [
        task(job.src, plan_batches[b], b, job, dask_key_name=f"pupsnr-ingest-{token}-{b:08d}")
        for b in pending
    ]
    n_files = sum(len(plan_batches[b]) for b in pending)
    label = f"decoding, colour-testing and resizing {n_files} files ({len(tasks)} batches)"
    # What creating the final store imports (~0.6 s): while the workers stage, not after, and
    # not while the cluster starts (it would hold the GIL the lazy start needs: +0.5 s).
    when_started(_import_store_writers)
    outcomes = dict(zip(pending, compute_each(tasks, job.progress, label=label), strict=True))
    records = {b: out for b, out in outcomes.items() if out is not WORKER_DIED}
    killed = [b for b in pending if outcomes[b] is WORKER_DIED]
    if killed:
        records.update(_stage_file_by_file(job, plan, killed, token))
    return records


def _import_store_writers() -> None:
    with contextlib.suppress(Exception):  # imported again where needed: it fails there, once
        import dask.array  # noqa: F401
        import xarray  # noqa: F401


def _stage_file_by_file(
    job: Job, plan: IngestPlan, killed: list[int], token: str
) -> dict[int, tuple[Record, ...]]:
    """The batches whose workers died, loaded one file per task, then written by the client."""
    plan_batches = batches(plan)
    files = [(b, i) for b in killed for i in range(len(plan_batches[b]))]

    def tasks(keys: list[tuple[int, int]], attempt: str) -> list[Any]:
        task = dask.delayed(_ingest_file, pure=False)
        return [
            task(
                job.src,
                plan_batches[b][i],
                job,
                dask_key_name=f"pupsnr-ingest-file-{attempt}-{token}-{b:08d}-{i:06d}",
            )
            for b, i in keys
        ]

    loaded = dict(zip(files, compute_each(tasks(files, "all"), job.progress), strict=True))
    # Dask counts a death against every task waiting on that worker: try each suspect alone.
    for key in [k for k in files if loaded[k] is WORKER_DIED]:
        (loaded[key],) = compute_each(tasks([key], "alone"), progress=False)
        if loaded[key] is WORKER_DIED:
            source = plan_batches[key[0]][key[1]]
            loaded[key] = (None, Record(escaped_name(source), False, KILLED_WORKER_REASON))
    return {
        b: _write_batch(
            job, b, plan_batches[b], [loaded[b, i] for i in range(len(plan_batches[b]))]
        )
        for b in killed
    }
