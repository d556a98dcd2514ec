"""The plan of an ingest: its typed parameters, the new files of SRC, the store it extends.

An ingest is planned once (:func:`plan_new_files`) and its plan written to the journal
``STORE.partial`` (:mod:`pupsnr_dask.store.journal`) before any file is decoded; a later call
finds it (:func:`interrupted_plan`) and finishes it first, with the same parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pupsnr_dask import schema
from pupsnr_dask.defaults import DEFAULT_SCALES as SCALES
from pupsnr_dask.ingest.listing import canonical_src
from pupsnr_dask.kernels.image import escaped_name
from pupsnr_dask.store.codecs import compressors
from pupsnr_dask.store.fs import partial_path, store_exists, why_not_removable
from pupsnr_dask.store.journal import (
    IngestBase,
    IngestParams,
    IngestPlan,
    durable_moment,
    other_parameters,
    read_plan,
    remove_partial,
    start_partial,
    write_plan,
)
from pupsnr_dask.store.zarr_io import open_store

#: zstd level of the stored pixels (staging and final). Measured on photos (see
#: benchmarks/RESULTS.md): level 1 keeps 95 % of the compression of zarr's default (level 3)
#: and writes ~3x, reads ~1.3x faster.
PIXELS_ZSTD_LEVEL = 1


#: The journal's steps of an ingest (``STORE.partial/done/STEP/UNIT.json``): a batch of
#: files staged, the final store created (or grown), a unit of the final store's pixels copied.
STAGED, CREATED, COPIED = "batch", "store", "unit"


def pixels_compressors() -> tuple[Any, ...]:
    """The Zarr codecs of the pixel arrays: zstd at :data:`PIXELS_ZSTD_LEVEL`, a checksum."""
    return compressors(PIXELS_ZSTD_LEVEL)


@dataclass(frozen=True)
class Job:
    """One call of :func:`~pupsnr_dask.ingest.ingest_folder`: from where, to where, how."""

    src: str
    store: str
    params: IngestParams  # fixed for the life of a store
    test_count: int
    storage_options: dict[str, Any] | None
    progress: bool | None

    @property
    def partial(self) -> str:
        """The journal, ``STORE.partial``."""
        return partial_path(self.store)

    @property
    def staging(self) -> str:
        """The staging array of the resized images of every planned file, in file order."""
        return f"{self.partial}/pixels"

    def url(self, name: str) -> str:
        """The URL of the store's array ``name``."""
        return f"{self.store.rstrip('/')}/{name}"


def batches(plan: IngestPlan) -> list[list[str]]:
    """The plan's files in batches of ``chunk_size``: one staging chunk and one task each."""
    files, chunk = plan.files, plan.params.chunk_size
    return [list(files[b : b + chunk]) for b in range(0, len(files), chunk)]


#: At most this many bytes of pixels in one chunk (one task's batch): 1 GiB. A mistyped
#: ``--size 100000`` otherwise asks each worker for 30 GB an image, and its nanny restarts it
#: again and again at its memory limit.
MAX_CHUNK_BYTES = 2**30


def check_ingest_args(size: int, threshold: float, test_count: int, chunk_size: int) -> None:
    """Raise ``ValueError`` naming the first parameter out of its range."""
    if size < 1 or any(size % s for s in SCALES):
        raise ValueError(
            f"size must be a positive multiple of {math.lcm(*SCALES)}, so that every default "
            f"scale {SCALES} divides it, got {size!r}"
        )
    if chunk_size >= 1 and chunk_size * size * size * 3 > MAX_CHUNK_BYTES:
        fits = MAX_CHUNK_BYTES // (size * size * 3)
        step = math.lcm(*SCALES)
        largest = math.isqrt(MAX_CHUNK_BYTES // (3 * chunk_size)) // step * step
        hint = f"a chunk size of at most {fits}, or a size" if fits else "a size"
        raise ValueError(
            f"size {size} with chunk_size {chunk_size}: a chunk of {chunk_size} images of "
            f"{size} x {size} x 3 is {chunk_size * size * size * 3 / 2**30:.2f} GiB, more than "
            f"the {MAX_CHUNK_BYTES // 2**30} GiB one task may hold; use {hint} of at most "
            f"{largest}"
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if test_count < 0:
        raise ValueError(f"test_count must be >= 0, got {test_count!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")


def interrupted_plan(job: Job, notes: list[str]) -> IngestPlan | None:
    """The plan of an interrupted ingest into the same store, if one can be resumed."""
    storage_options = job.storage_options
    if not store_exists(job.partial, storage_options):
        return None
    plan = IngestPlan.from_json(read_plan(job.store, storage_options))
    if plan is None or not _staging_usable(job, plan):
        remove_partial(job.store, storage_options, kind="images")
        notes.append(f"discarded unusable leftovers of an earlier ingest: {job.partial}")
        return None
    old, new = asdict(plan.params), asdict(job.params)
    changed = {k: v for k, v in old.items() if new[k] != v}
    if changed:
        raise other_parameters(job.store, "ingest", changed)
    return plan


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def _staging_usable(job: Job, plan: IngestPlan) -> bool:
    import zarr

    try:
        staging = zarr.open_array(job.staging, mode="r", storage_options=job.storage_options)
    except Exception:  # missing or half-created
        return False
    size, chunk = plan.params.size, plan.params.chunk_size
    return staging.shape == (len(plan.files), size, size, 3) and staging.chunks[0] == chunk


def plan_new_files(job: Job, sources: list[str], notes: list[str]) -> IngestPlan | int:
    """Plan and begin the ingest of the files of SRC that the store does not know yet.

    Returns the plan, or the number of images of a store that is up to date with SRC.
    """
    found = existing_store(job)
    if found is None:
        new, base = sources, IngestBase()
    else:
        base, known = found
        new = [s for s in sources if escaped_name(s) not in known]
        if not new:
            return base.images
    plan = IngestPlan(job.params, tuple(new), base)
    _start(job, plan)
    return plan


def existing_store(job: Job) -> tuple[IngestBase, set[str]] | None:
    """What a finished store at ``job.store`` holds (and the sources it knows), checked."""
    storage_options = job.storage_options
    if not store_exists(job.store, storage_options):
        return None
    try:
        # lazy=False: only labels and attributes are read; no dask.array (an instant answer)
        ds = open_store(job.store, "images", storage_options=storage_options, lazy=False)
    except schema.StoreError as err:
        why = why_not_removable(job.store, "images", storage_options)
        # --overwrite deletes only stores that pupsnr wrote
        hint = f"it {why}: move it away" if why else "use --overwrite to replace it"
        raise FileExistsError(
            f"store {job.store!r} already exists but is not a usable pupsnr images store "
            f"({err}); {hint}"
        ) from err
    attrs = ds.attrs
    recorded = {
        "src": canonical_src(str(attrs.get("src", "")), storage_options),
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


def _start(job: Job, plan: IngestPlan) -> None:
    """Create ``STORE.partial``: the staging array, then the plan (its presence means usable)."""
    import zarr

    storage_options = job.storage_options
    start_partial(job.store, "images", storage_options)  # discards an earlier journal of ours
    size, chunk = plan.params.size, plan.params.chunk_size
    zarr.create_array(
        job.staging,
        shape=(len(plan.files), size, size, 3),
        chunks=(chunk, size, size, 3),
        dtype="uint8",
        fill_value=0,
        compressors=pixels_compressors(),
        storage_options=storage_options,
    )
    write_plan(job.store, plan, storage_options)
    durable_moment("ingest:planned")
