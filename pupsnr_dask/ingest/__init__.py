"""From a folder of images to one chunked Zarr store of colour images at 256 x 256.

Steps (SPEC.md, "Data preparation"), each a small function:

1. :func:`list_files` — every file below SRC, as sorted ``/``-separated relative paths;
2. :func:`decode_rgb` — first frame, EXIF orientation applied, Pillow ``convert("RGB")``;
3. :func:`color_score` — mean of the 3 x 3 correlation matrix of R, G, B (NaN when a channel
   is constant); colour when below the threshold;
4. :func:`resize_lanczos` — 256 x 256, Pillow LANCZOS, aspect ratio not kept.

:func:`ingest_folder` runs steps 2-4 in parallel, one task per batch of files, on the active Dask
scheduler. Each task writes its resized images straight into a staging array next to the
store (``STORE.partial``) and returns only small records, so nothing large passes through the
client; the accepted images are then gathered, in file order, into the final store, chunk by
chunk, and each staged batch is deleted as soon as its images are all in the store: the
staging and the store together never hold much more than the finished store (1.1x at most
on the tests' stores of 30 chunks and more).

The stages, one module each: :mod:`~pupsnr_dask.ingest.listing` (SRC's files),
:mod:`~pupsnr_dask.ingest.plan` (the typed plan, the new files, the existing store's check),
:mod:`~pupsnr_dask.ingest.stage` (the batch tasks) and :mod:`~pupsnr_dask.ingest.commit`
(the final store and its attributes).

Ingest is resumable and incremental through the journal that ``run`` uses too
(:mod:`pupsnr_dask.store.journal`): a plan (the file list and the parameters) and a done-marker
per staged batch, for the final store created and per unit of its pixels written are kept in
``STORE.partial``, so a run that was killed resumes where it stopped; a finished store is
extended with the files that are new in SRC, appended after the existing images, whose
indices never change. ``STORE.lock`` keeps a second writer out.

Every file gets an answer: kept, or rejected with a reason recorded in the store. Folders
reached through symbolic links are not followed (no loops); symbolic links to files are.
Named pipes, sockets and devices are never opened (no hang). A file is opened only as the
formats its extension allows, and rejected before any pixel is decoded when it declares too
many pixels (decompression bombs), has too many JPEG scans (a JPEG that decodes for minutes),
or would need more memory than a decode may take (:mod:`pupsnr_dask.kernels.image`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pupsnr_dask.cluster import check_workers_see
from pupsnr_dask.defaults import DEFAULT_CHUNK_SIZE, DEFAULT_SIZE, DEFAULT_THRESHOLD
from pupsnr_dask.ingest.commit import (
    assign_split,
    consumed_batches,
    duplicate_warnings,
    finalize,
    pixel_digests,
)
from pupsnr_dask.ingest.listing import canonical_src, list_files, skipped_note, source_url
from pupsnr_dask.ingest.plan import (
    PIXELS_ZSTD_LEVEL,
    Job,
    batches,
    check_ingest_args,
    interrupted_plan,
    pixels_compressors,
    plan_new_files,
)
from pupsnr_dask.ingest.stage import (
    KILLED_WORKER_REASON,
    LOGGER,
    load_source,
    staged_markers,
    staged_records,
)
from pupsnr_dask.kernels.image import Record
from pupsnr_dask.store.fs import check_store_output, lock_path, parse_storage_options
from pupsnr_dask.store.journal import (
    IngestParams,
    IngestPlan,
    discard,
    durable_moment,
    forget,
)
from pupsnr_dask.store.lock import StoreLock


@dataclass
class IngestSummary:
    """Counts reported after an ingest.

    ``n_files`` and ``n_images`` count what this call processed (none when the store was
    already up to date); ``n_total`` is the number of images in the store afterwards.
    """

    store: str
    n_files: int
    n_images: int
    rejected: Counter[str] = field(default_factory=Counter)
    n_total: int = 0
    appended: bool = False
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact a line."""
        out = list(self.notes)
        if not self.n_files:
            out.append(
                f"{self.store} is up to date with SRC: no new files, {self.n_total} images; "
                "nothing changed"
            )
        elif self.appended:
            out.append(
                f"{self.n_files} new files, {self.n_images} colour images appended to "
                f"{self.store} ({self.n_total} images in all)"
            )
        else:
            out.append(
                f"{self.n_files} files, {self.n_images} colour images stored in {self.store}"
            )
        for reason, count in sorted(self.rejected.items()):
            out.append(f"  rejected {count}: {reason}")
        return out

    def add(self, records: list[Record], n_total: int, appended: bool) -> None:
        """Count the records of one finished plan."""
        self.n_files += len(records)
        self.n_images += sum(r.accepted for r in records)
        self.rejected.update(r.reason for r in records if not r.accepted)
        self.n_total = n_total
        self.appended = self.appended or appended


def ingest_folder(
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

    Resumable and incremental: see the module's description. Every file gets an answer, kept
    or rejected with a reason; :class:`pupsnr_dask.store.lock.StoreLock` keeps other writers out.

    Parameters
    ----------
    src : str
        Folder (path or fsspec URL) searched recursively for images, or an archive file
        (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``) read in place
        without unpacking: its member paths are the ``source`` of each image, and the store
        records the archive's absolute path as ``src``.
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
        Discard the store and any interrupted ingest into it, and start again. Otherwise an
        interrupted ingest is resumed, and a finished store gets the files new in ``src``
        appended (after checking that it was made with the same parameters).
    storage_options : dict or str, optional
        fsspec options for SRC and STORE in object storage (a dict or a JSON object), passed to
        the workers with the tasks; credentials in them are hidden from logs and never stored.
        Credentials are best left to the environment of the client and the workers.
    progress : bool, optional
        Show progress bars on standard error; by default only when it is a terminal.

    Returns
    -------
    IngestSummary
        Counts of files, stored images and rejections by reason.
    """
    check_ingest_args(size, threshold, test_count, chunk_size)
    storage_options = parse_storage_options(storage_options)  # credentials hidden in logs
    check_store_output(
        store,
        src,
        output_name="STORE",
        source_name="SRC",
        overwrite=overwrite,
        refuse_inside=False,
        storage_options=storage_options,
    )
    skipped: list[str] = []
    sources = list_files(src, storage_options, skipped=skipped)
    if not sources:
        raise ValueError(f"SRC {src!r} contains no files")
    params = IngestParams(canonical_src(src, storage_options), size, threshold, chunk_size)
    job = Job(
        source_url(src, storage_options), store, params, test_count, storage_options, progress
    )
    summary = IngestSummary(store, 0, 0)
    if skipped:
        summary.notes.append(skipped_note(skipped))
    with StoreLock(store, storage_options) as lock:
        if lock.takeover_note:
            summary.notes.append(lock.takeover_note)
        check_workers_see({"SRC": src, "the folder of STORE": lock_path(store)}, storage_options)
        if overwrite:
            discard(store, "images", storage_options)
        plan = interrupted_plan(job, summary.notes)
        if plan is not None:
            _execute(job, plan, summary)
        planned = plan_new_files(job, sources, summary.notes)
        if isinstance(planned, IngestPlan):
            _execute(job, planned, summary)
        else:
            summary.n_total = planned
    return summary


def _execute(job: Job, plan: IngestPlan, summary: IngestSummary) -> None:
    """Stage what is not staged yet, write the store, forget the plan."""
    found = staged_markers(job, plan)
    before: list[Record] = []
    unneeded: set[int] = set()
    if len(found) == len(batches(plan)):  # a resume: some staged pixels may be gone already
        before = [r for b in sorted(found) for r in found[b].records]
        unneeded = consumed_batches(job, plan, before)
    records = staged_records(job, plan, summary.notes, found, unneeded)
    if unneeded and records != before:  # a file changed under a partly written store
        records = staged_records(job, plan, [], staged_markers(job, plan))
    durable_moment("ingest:staged")
    summary.notes += finalize(job, plan, records)
    n_images = plan.base.images + sum(r.accepted for r in records)
    summary.add(records, n_images, appended=plan.base.images > 0)
    forget(job.store, job.storage_options, kind="images")  # plan.json first, marker last


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SIZE",
    "DEFAULT_THRESHOLD",
    "KILLED_WORKER_REASON",
    "LOGGER",
    "PIXELS_ZSTD_LEVEL",
    "IngestSummary",
    "assign_split",
    "canonical_src",
    "duplicate_warnings",
    "ingest_folder",
    "list_files",
    "load_source",
    "pixel_digests",
    "pixels_compressors",
    "skipped_note",
]
