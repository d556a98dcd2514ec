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
client; the accepted images are then gathered, in file order, into the final store.

Ingest is resumable and incremental (:mod:`pupsnr_dask.store.journal`): a plan (the file list and
the parameters) and one record per finished batch are kept in ``STORE.partial``, so a run that
was killed resumes where it stopped; a finished store is extended with the files that are new
in SRC, appended after the existing images, whose indices never change. ``STORE.lock`` keeps a
second writer out.

Every file gets an answer: kept, or rejected with a reason recorded in the store. Folders
reached through symbolic links are not followed (no loops); symbolic links to files are.
Named pipes, sockets and devices are never opened (no hang). A file is opened only as the
formats its extension allows (:data:`EXTENSION_FORMATS`), and rejected before any pixel is
decoded when it declares more than :data:`MAX_PIXELS` pixels (decompression bombs), has more
than :data:`MAX_JPEG_SCANS` scans (a JPEG that decodes for minutes), or would need more memory
than :func:`decode_budget` allows (:func:`decode_bytes`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import dask
import numpy as np
import xarray as xr
from dask.base import tokenize

from pupsnr_dask import schema
from pupsnr_dask._version import __version__
from pupsnr_dask.cluster import WORKER_DIED, check_workers_see, compute, compute_each
from pupsnr_dask.defaults import DEFAULT_CHUNK_SIZE, DEFAULT_SIZE, DEFAULT_THRESHOLD
from pupsnr_dask.experiment import SCALES
from pupsnr_dask.kernels.image import (
    IMAGE_EXTENSIONS,
    Record,
    _os_reason,
    escaped_name,
    image_extension,
    load_resized,
    name_failure,
    read_failure,
)
from pupsnr_dask.store.codecs import compressors, quiet_zarr_warnings
from pupsnr_dask.store.fs import (
    PARTIAL_SUFFIX,
    check_store_output,
    list_names,
    lock_path,
    parse_storage_options,
    partial_path,
    read_json,
    remove_store,
    store_exists,
    url_to_fs,
    why_not_removable,
    write_json,
)
from pupsnr_dask.store.journal import (
    EVENT,
    PARTIAL_ENTRIES,
    IngestBase,
    IngestParams,
    IngestPlan,
    discard,
    durable_moment,
    forget,
    other_parameters,
    read_plan,
    remove_partial,
    start_partial,
    write_plan,
)
from pupsnr_dask.store.lock import StoreLock, describe
from pupsnr_dask.store.zarr_io import create_store, open_store, unit_bounds, write_unit

#: zstd level of the stored pixels (staging and final). Measured on photos (see
#: benchmarks/RESULTS.md): level 1 keeps 95 % of the compression of zarr's default (level 3)
#: and writes ~3x, reads ~1.3x faster.
PIXELS_ZSTD_LEVEL = 1


#: The reason recorded for a file whose task kills its worker, even when run alone.
KILLED_WORKER_REASON = "killed its worker: out of memory, or a crash while decoding?"


#: Logs the start of each file's loading (the ``ingest:load`` event, ``source`` in ``extra``).
LOGGER = logging.getLogger("pupsnr_dask.ingest")


def pixels_compressors() -> tuple[Any, ...]:
    """The Zarr codecs of the pixel arrays: zstd at :data:`PIXELS_ZSTD_LEVEL`, a checksum."""
    return compressors(PIXELS_ZSTD_LEVEL)


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

    def add(self, records: list[dict[str, Any]], n_total: int, appended: bool) -> None:
        """Count the records of one finished plan."""
        self.n_files += len(records)
        self.n_images += sum(bool(r["accepted"]) for r in records)
        self.rejected.update(r["reason"] for r in records if not r["accepted"])
        self.n_total = n_total
        self.appended = self.appended or appended


def list_files(
    src: str,
    storage_options: dict[str, Any] | None = None,
    *,
    skipped: list[str] | None = None,
) -> list[str]:
    """Every file below ``src``, as sorted relative paths with ``/`` separators.

    Symbolic links are listed, not followed: a link to a folder is an entry of its own (ingest
    rejects it), so loops cannot make the walk endless. A folder that cannot be listed is an
    entry too, its path ending with ``/``, so that it is reported rather than skipped. A name
    that is not valid UTF-8 is listed as :func:`os.fsdecode` gives it (its undecodable bytes
    as lone surrogates, see :func:`escaped_name`): ingest rejects it and records its name
    escaped.

    Zarr stores below ``src`` (folders holding ``zarr.json``, ``.zgroup`` or ``.zarray``), pupsnr
    journals (``X.partial``) and the lock files ``X.lock`` next to them are not listed (a store
    written inside SRC is not a source of itself): their paths are appended to ``skipped``.

    Raises
    ------
    FileNotFoundError
        When ``src`` does not exist.
    NotADirectoryError
        When ``src`` is not a folder.
    """
    fs, root = url_to_fs(src, storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"SRC {src!r} does not exist")
    if not fs.isdir(root):
        raise NotADirectoryError(f"SRC {src!r} is not a folder")
    root = root.rstrip("/") or "/"
    entries: list[str] = []
    stores: list[str] = []
    folders = [root]
    while folders:  # fsspec's walk would skip unlistable subfolders silently
        folder = folders.pop()
        try:
            listing = fs.ls(folder, detail=True)
        except OSError:
            if folder == root:
                raise
            entries.append(posixpath.relpath(folder, root) + "/")
            continue
        if folder != root and _is_store_listing(folder, listing):
            stores.append(posixpath.relpath(folder, root))
            continue
        for info in listing:
            path = info["name"].rstrip("/")
            if path == folder:
                continue
            if info["type"] == "directory" and not info.get("islink"):
                folders.append(path)
            else:
                entries.append(posixpath.relpath(path, root))
    entries = _without_locks_of(entries, stores)
    if skipped is not None:
        skipped.extend(sorted(stores))
    return sorted(entries)


_STORE_MARKERS = frozenset({"zarr.json", ".zgroup", ".zarray"})


def _is_store_listing(folder: str, listing: list[dict[str, Any]]) -> bool:
    """True when a folder's listing is that of a Zarr store or of a pupsnr journal."""
    names = {posixpath.basename(info["name"].rstrip("/")) for info in listing}
    if names & _STORE_MARKERS:
        return True
    return folder.endswith(PARTIAL_SUFFIX) and bool(names) and names <= PARTIAL_ENTRIES


def _without_locks_of(entries: list[str], stores: list[str]) -> list[str]:
    """``entries`` less the lock files ``X.lock`` of skipped stores (``X`` or ``X.partial``)."""
    owners = {s[: -len(PARTIAL_SUFFIX)] if s.endswith(PARTIAL_SUFFIX) else s for s in stores}
    locks = {lock_path(owner) for owner in owners}
    return [e for e in entries if e not in locks]


def skipped_note(skipped: list[str]) -> str:
    """The summary line about the Zarr stores and journals found inside SRC and not listed."""
    n = len(skipped)
    shown = ", ".join(skipped[:5]) + (", ..." if n > 5 else "")
    return f"skipped {n} Zarr store{'s' if n != 1 else ''} inside SRC: {shown}"


def canonical_src(src: str, storage_options: dict[str, Any] | None = None) -> str:
    """SRC as recorded in a store: an absolute path, or a URL with its protocol."""
    from fsspec.implementations.local import LocalFileSystem

    fs, root = url_to_fs(src, storage_options)
    root = root.rstrip("/") or "/"
    return root if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(root)


def load_source(
    fs: Any, root: str, source: str, size: int, threshold: float
) -> tuple[np.ndarray | None, Record]:
    """Load one entry of :func:`list_files`; never raises, never blocks on a special file.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The filesystem of SRC.
    root : str
        SRC's path on ``fs``.
    source : str
        The entry, relative to ``root``.
    size, threshold
        As for :func:`load_resized`.
    """
    path = posixpath.join(root, source)
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


def _ingest_batch(
    src: str,
    sources: list[str],
    batch: int,
    partial: str,
    size: int,
    threshold: float,
    storage_options: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Worker task: load one batch of files, write its pixels to the staging array.

    The batch's record (with a SHA-256 of its pixels) is written after the pixels, atomically:
    a record that exists describes pixels that are all in place.
    """
    fs, root = url_to_fs(src, storage_options)
    root = root.rstrip("/") or "/"
    loaded = [_load_one(fs, root, source, size, threshold) for source in sources]
    return _write_batch(partial, batch, sources, loaded, size, storage_options)


def _ingest_file(
    src: str, source: str, size: int, threshold: float, storage_options: dict[str, Any] | None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Worker task: load one file of a batch whose worker died (see :func:`_stage`)."""
    fs, root = url_to_fs(src, storage_options)
    return _load_one(fs, root.rstrip("/") or "/", source, size, threshold)


def _load_one(
    fs: Any, root: str, source: str, size: int, threshold: float
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """One file's resized image (or None) and its record as a dict."""
    failure = name_failure(source)
    if failure is not None:
        return None, asdict(Record(escaped_name(source), False, failure))
    LOGGER.debug("loading %s", source, extra={EVENT: "ingest:load", "source": source})
    image, record = load_source(fs, root, source, size, threshold)
    return image, asdict(record)


def _write_batch(
    partial: str,
    batch: int,
    sources: list[str],
    loaded: list[tuple[np.ndarray | None, dict[str, Any]]],
    size: int,
    storage_options: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Write a batch's pixels to the staging array, then its record; return its rows."""
    import zarr

    pixels = np.zeros((len(sources), size, size, 3), dtype=np.uint8)
    for i, (image, _) in enumerate(loaded):
        if image is not None:
            pixels[i] = image
    staging = zarr.open_array(f"{partial}/pixels", mode="r+", storage_options=storage_options)
    start = batch * staging.chunks[0]
    staging[start : start + len(sources)] = pixels
    rows = [row for _, row in loaded]
    done = {"batch": batch, "sources": sources, "rows": rows, "sha256": _digest(pixels)}
    write_json(_record_path(partial, batch), done, storage_options)
    durable_moment(f"ingest:batch:{batch}")
    return rows


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def _record_path(partial: str, batch: int) -> str:
    return f"{partial}/records/{batch:08d}.json"


def _staged_intact(
    partial: str, batch: int, n: int, digest: str, storage_options: dict[str, Any] | None
) -> bool:
    """Worker task: True when the staged pixels of a finished batch still match its record."""
    import zarr

    try:
        staging = zarr.open_array(f"{partial}/pixels", mode="r", storage_options=storage_options)
        start = batch * staging.chunks[0]
        return _digest(np.asarray(staging[start : start + n])) == digest
    except Exception:  # an unreadable chunk: stage the batch again
        return False


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
    _check_ingest_args(size, threshold, test_count, chunk_size)
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
    job = _Job(src, store, params, test_count, storage_options, progress)
    summary = IngestSummary(store, 0, 0)
    if skipped:
        summary.notes.append(skipped_note(skipped))
    with StoreLock(store, storage_options) as lock:
        if lock.taken_over:
            summary.notes.append(
                f"took over the lock of a process that died ({describe(lock.taken_over)})"
            )
        check_workers_see({"SRC": src, "the folder of STORE": lock_path(store)}, storage_options)
        if overwrite:
            discard(store, "images", storage_options)
        plan = _interrupted_plan(job, summary)
        if plan is not None:
            _execute(job, plan, summary)
        plan = _plan_new_files(job, sources, summary)
        if plan is not None:
            _execute(job, plan, summary)
    return summary


@dataclass(frozen=True)
class _Job:
    """One call of :func:`ingest_folder`: from where, to where, with which parameters."""

    src: str
    store: str
    params: IngestParams  # fixed for the life of a store
    test_count: int
    storage_options: dict[str, Any] | None
    progress: bool | None

    @property
    def partial(self) -> str:
        return partial_path(self.store)

    def url(self, name: str) -> str:
        return f"{self.store.rstrip('/')}/{name}"


def _check_ingest_args(size: int, threshold: float, test_count: int, chunk_size: int) -> None:
    if size < 1 or any(size % s for s in SCALES):
        raise ValueError(
            f"size must be a positive multiple of {math.lcm(*SCALES)}, so that every default "
            f"scale {SCALES} divides it, got {size!r}"
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if test_count < 0:
        raise ValueError(f"test_count must be >= 0, got {test_count!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")


def _interrupted_plan(job: _Job, summary: IngestSummary) -> IngestPlan | None:
    """The plan of an interrupted ingest into the same store, if one can be resumed."""
    so = job.storage_options
    if not store_exists(job.partial, so):
        return None
    plan = IngestPlan.from_json(read_plan(job.store, so))
    if plan is None or not _staging_usable(job, plan):
        remove_partial(job.store, so, kind="images")
        summary.notes.append(f"discarded unusable leftovers of an earlier ingest: {job.partial}")
        return None
    old, new = asdict(plan.params), asdict(job.params)
    changed = {k: v for k, v in old.items() if new[k] != v}
    if changed:
        raise other_parameters(job.store, "ingest", changed)
    return plan


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def _staging_usable(job: _Job, plan: IngestPlan) -> bool:
    import zarr

    try:
        staging = zarr.open_array(
            f"{job.partial}/pixels", mode="r", storage_options=job.storage_options
        )
    except Exception:  # missing or half-created
        return False
    size, chunk = plan.params.size, plan.params.chunk_size
    return staging.shape == (len(plan.files), size, size, 3) and staging.chunks[0] == chunk


def _plan_new_files(job: _Job, sources: list[str], summary: IngestSummary) -> IngestPlan | None:
    """Plan the ingest of the files of SRC that the store does not know yet (None: up to date)."""
    found = _existing_store(job)
    if found is None:
        new, base = sources, IngestBase()
    else:
        base, known = found
        new = [s for s in sources if escaped_name(s) not in known]
        if not new:
            summary.n_total = base.images
            return None
    plan = IngestPlan(job.params, tuple(new), base)
    _start(job, plan)
    return plan


def _existing_store(job: _Job) -> tuple[IngestBase, set[str]] | None:
    """What a finished store at ``job.store`` holds (and the sources it knows), checked."""
    so = job.storage_options
    if not store_exists(job.store, so):
        return None
    try:
        ds = open_store(job.store, "images", storage_options=so)
    except schema.StoreError as err:
        why = why_not_removable(job.store, "images", so)
        # --overwrite deletes only stores that pupsnr wrote
        hint = f"it {why}: move it away" if why else "use --overwrite to replace it"
        raise FileExistsError(
            f"store {job.store!r} already exists but is not a usable pupsnr images store "
            f"({err}); {hint}"
        ) from err
    attrs = ds.attrs
    recorded = {
        "src": canonical_src(str(attrs.get("src", "")), so),
        "size": attrs.get("size"),
        "threshold": attrs.get("threshold"),
        "chunk_size": attrs.get("chunk_size", ds[schema.IMAGES].encoding.get("chunks", [0])[0]),
        "test_count": attrs.get("test_count"),
    }
    wanted = {**asdict(job.params), "test_count": job.test_count}
    changed = [k for k in wanted if recorded[k] != wanted[k]]
    if changed:
        raise ValueError(
            f"store {job.store!r} was ingested with {_kv({k: recorded[k] for k in changed})}, "
            f"this command asks for {_kv({k: wanted[k] for k in changed})}: "
            "use --overwrite to rebuild it"
        )
    sources = [str(s) for s in ds[schema.SOURCE].values]
    rejected = schema.json_attr(attrs, schema.REJECTED_ATTR, [])
    base = IngestBase(
        images=len(sources),
        files=int(attrs.get("n_files", len(sources) + len(rejected))),
        rejected=len(rejected),
    )
    return base, set(sources) | {r["source"] for r in rejected}


def _start(job: _Job, plan: IngestPlan) -> None:
    """Create ``STORE.partial``: the staging array, then the plan (its presence means usable)."""
    import zarr

    so = job.storage_options
    start_partial(job.store, "images", so)  # discards an earlier journal of ours
    fs, path = url_to_fs(job.partial, so)
    fs.makedirs(f"{path}/records", exist_ok=True)
    size, chunk = plan.params.size, plan.params.chunk_size
    zarr.create_array(
        f"{job.partial}/pixels",
        shape=(len(plan.files), size, size, 3),
        chunks=(chunk, size, size, 3),
        dtype="uint8",
        fill_value=0,
        compressors=pixels_compressors(),
        storage_options=so,
    )
    write_plan(job.store, plan, so)
    durable_moment("ingest:planned")


def _execute(job: _Job, plan: IngestPlan, summary: IngestSummary) -> None:
    """Stage what is not staged yet, write the store, forget the plan."""
    so = job.storage_options
    if read_json(f"{job.partial}/final.json", so) is None:
        records = _staged_records(job, plan, summary)
        durable_moment("ingest:staged")
        summary.notes += _finalize(job, plan, records)
        write_json(f"{job.partial}/final.json", {"n_records": len(records)}, so)
        durable_moment("ingest:finalized")
    else:  # only the clean-up was left
        found = _read_records(job, plan)
        records = [row for b in sorted(found) for row in found[b]["rows"]]
    n_images = plan.base.images + sum(bool(r["accepted"]) for r in records)
    summary.add(records, n_images, appended=plan.base.images > 0)
    forget(job.store, so, kind="images")  # plan.json first, marker last


def _batches(plan: IngestPlan) -> list[list[str]]:
    files, chunk = plan.files, plan.params.chunk_size
    return [list(files[b : b + chunk]) for b in range(0, len(files), chunk)]


def _staged_records(job: _Job, plan: IngestPlan, summary: IngestSummary) -> list[dict[str, Any]]:
    """Every file's record, staging the batches that have no intact record yet."""
    batches = _batches(plan)
    found = _read_records(job, plan)
    if found:
        tasks = [
            dask.delayed(_staged_intact, pure=True)(
                job.partial, b, len(batches[b]), found[b]["sha256"], job.storage_options
            )
            for b in sorted(found)
        ]
        intact = compute(*tasks, progress=False)
        found = {b: found[b] for b, ok in zip(sorted(found), intact, strict=True) if ok}
        summary.notes.append(
            f"resumed an interrupted ingest: {len(found)} of {len(batches)} batches were "
            "already staged"
        )
    rows = {b: rec["rows"] for b, rec in found.items()}
    pending = [b for b in range(len(batches)) if b not in rows]
    if pending:
        rows.update(_stage(job, plan, pending))
    return [row for b in range(len(batches)) for row in rows[b]]


def _read_records(job: _Job, plan: IngestPlan) -> dict[int, dict[str, Any]]:
    """The records of finished batches that match the plan, by batch number."""
    batches = _batches(plan)
    out = {}
    for name in list_names(f"{job.partial}/records", job.storage_options):
        stem, ext = posixpath.splitext(name)
        if ext != ".json" or not stem.isdigit() or int(stem) >= len(batches):
            continue
        b = int(stem)
        rec = read_json(_record_path(job.partial, b), job.storage_options)
        if (
            isinstance(rec, dict)
            and rec.get("sources") == batches[b]
            and len(rec.get("rows", ())) == len(batches[b])
        ):
            out[b] = rec
    return out


def _stage(job: _Job, plan: IngestPlan, pending: list[int]) -> dict[int, list[dict]]:
    """Decode, test and resize the pending batches in parallel into the staging array.

    A batch whose workers died (out of memory, a crash: Dask gives it up) is loaded again one
    file per task; a file whose task still kills its worker when run alone is rejected with
    :data:`KILLED_WORKER_REASON`, and the batch is written with the others' images and records
    exactly as the batch task would have written them.
    """
    batches = _batches(plan)
    token = tokenize(job.partial, plan.files)
    task = dask.delayed(_ingest_batch, pure=True)
    tasks = [
        task(
            job.src,
            batches[b],
            b,
            job.partial,
            plan.params.size,
            plan.params.threshold,
            job.storage_options,
            dask_key_name=f"pupsnr-ingest-{token}-{b:08d}",
        )
        for b in pending
    ]
    outcomes = dict(zip(pending, compute_each(tasks, progress=job.progress), strict=True))
    rows = {b: out for b, out in outcomes.items() if out is not WORKER_DIED}
    killed = [b for b in pending if outcomes[b] is WORKER_DIED]
    if killed:
        rows.update(_stage_file_by_file(job, plan, killed, token))
    return rows


def _stage_file_by_file(
    job: _Job, plan: IngestPlan, killed: list[int], token: str
) -> dict[int, list[dict]]:
    """The batches whose workers died, loaded one file per task, then written by the client."""
    batches = _batches(plan)
    size, threshold = plan.params.size, plan.params.threshold
    files = [(b, i) for b in killed for i in range(len(batches[b]))]

    def tasks(keys: list[tuple[int, int]], attempt: str) -> list[Any]:
        task = dask.delayed(_ingest_file, pure=False)
        return [
            task(
                job.src,
                batches[b][i],
                size,
                threshold,
                job.storage_options,
                dask_key_name=f"pupsnr-ingest-file-{attempt}-{token}-{b:08d}-{i:06d}",
            )
            for b, i in keys
        ]

    loaded = dict(zip(files, compute_each(tasks(files, "all"), job.progress), strict=True))
    # Dask counts a death against every task waiting on that worker: try each suspect alone.
    for key in [k for k in files if loaded[k] is WORKER_DIED]:
        (loaded[key],) = compute_each(tasks([key], "alone"), progress=False)
        if loaded[key] is WORKER_DIED:
            source = batches[key[0]][key[1]]
            loaded[key] = (None, asdict(Record(escaped_name(source), False, KILLED_WORKER_REASON)))
    return {
        b: _write_batch(
            job.partial,
            b,
            batches[b],
            [loaded[b, i] for i in range(len(batches[b]))],
            size,
            job.storage_options,
        )
        for b in killed
    }


def _finalize(job: _Job, plan: IngestPlan, records: list[dict[str, Any]]) -> list[str]:
    """Write the accepted images and their labels into the store, in file order.

    Returns warnings about the images of this plan whose resized pixels are identical.
    """
    accepted = [i for i, r in enumerate(records) if r["accepted"]]
    kept = [records[i] for i in accepted]
    rejected = [r for r in records if not r["accepted"]]
    n0 = plan.base.images
    if n0 == 0:
        if not accepted:
            remove_partial(job.store, job.storage_options, kind="images")
            reasons = Counter(r["reason"] for r in rejected)
            raise ValueError(
                f"SRC {job.src!r} holds no colour images: "
                + "; ".join(f"rejected {n}: {reason}" for reason, n in sorted(reasons.items()))
            )
        _create_store(job, kept, rejected, len(records))
    else:
        _extend_store(job, plan, kept, rejected, len(records))
    durable_moment("ingest:final-created")
    digests = _copy_images(job, accepted, n0)
    if n0:
        _consolidate(job)
    return duplicate_warnings([r["source"] for r in kept], digests)


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


def pixel_digests(block: np.ndarray) -> list[str]:
    """A digest of each image of a ``(n, h, w, 3)`` uint8 block: equal for equal pixels."""
    return [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).hexdigest()
            for im in block]  # fmt: skip


def _columns(kept: list[dict[str, Any]], start: int) -> dict[str, np.ndarray]:
    return {
        schema.IMAGE: np.arange(start, start + len(kept), dtype=np.int64),
        schema.SOURCE: np.array([r["source"] for r in kept], dtype=object),
        schema.COLOR_SCORE: np.array([r["color_score"] for r in kept], dtype=np.float64),
        schema.ORIGINAL_WIDTH: np.array([r["width"] for r in kept], dtype=np.int64),
        schema.ORIGINAL_HEIGHT: np.array([r["height"] for r in kept], dtype=np.int64),
    }


def _create_store(
    job: _Job, kept: list[dict[str, Any]], rejected: list[dict[str, Any]], n_files: int
) -> None:
    """A new store: metadata, labels and attributes; the pixels are copied afterwards."""
    import dask.array as da

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
    job: _Job,
    plan: IngestPlan,
    kept: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    n_files: int,
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


def _consolidate(job: _Job) -> None:
    import zarr

    with quiet_zarr_warnings():
        group = zarr.open_group(
            job.store, mode="r+", storage_options=job.storage_options, use_consolidated=False
        )
        zarr.consolidate_metadata(group.store, path=group.path or None)


def _copy_images(job: _Job, accepted: list[int], n0: int) -> list[str]:
    """Copy the accepted staged images to ``images[n0:]``, one task per chunk or shard.

    Returns the :func:`pixel_digests` of the copied images, in order.
    """
    import zarr

    final = zarr.open_array(job.url(schema.IMAGES), mode="r", storage_options=job.storage_options)
    bounds = unit_bounds(n0, n0 + len(accepted), write_unit(final))
    token = tokenize(job.store, accepted, n0)
    task = dask.delayed(_copy_unit, pure=True)
    tasks = [
        task(
            job.partial,
            job.url(schema.IMAGES),
            accepted[a - n0 : b - n0],
            a,
            k,
            job.storage_options,
            dask_key_name=f"pupsnr-copy-{token}-{k:08d}",
        )
        for k, (a, b) in enumerate(bounds)
    ]
    return [d for unit in compute(*tasks, progress=job.progress) for d in unit]


def _copy_unit(
    partial: str,
    target: str,
    rows: list[int],
    start: int,
    unit: int,
    storage_options: dict[str, Any] | None,
) -> list[str]:
    """Worker task: copy staged ``rows`` to ``target[start:start + len(rows)]``; their digests."""
    import zarr

    staging = zarr.open_array(f"{partial}/pixels", mode="r", storage_options=storage_options)
    block = staging.get_orthogonal_selection(np.asarray(rows, dtype=np.int64))
    final = zarr.open_array(target, mode="r+", storage_options=storage_options)
    final.with_config({"write_empty_chunks": True})[start : start + len(rows)] = block
    durable_moment(f"ingest:final-unit:{unit}")
    return pixel_digests(block)


def _rejected_entries(rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def finite(x: float) -> float | None:
        return None if math.isnan(x) else x

    return [
        {"source": r["source"], "reason": r["reason"], "color_score": finite(r["color_score"])}
        for r in rejected
    ]


def _store_attrs(job: _Job, n_files: int, rejected: list[dict[str, Any]]) -> dict[str, Any]:
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
