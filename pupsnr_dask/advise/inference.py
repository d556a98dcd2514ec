"""A model in the loop: run an ONNX model on the images on the workers and score its outputs.

One fused task per chunk of images (:func:`score_model`)::

    img_true chunk -> variant (as run builds it) -> model (one session per worker process)
        -> outputs rounded to uint8 -> metric against img_true -> scores
                                    +-> (save_outputs) write the chunk, then its done-marker

With ``save_outputs`` the outputs are kept as an images store (the layout and attributes of
the images store they were computed from, plus ``model_outputs``: what produced them), that
``advise --predictions`` reads back. The writer is resumable like ``run``: ``STORE.partial``
holds the plan and one marker per chunk written; a killed inference resumes from the chunks
already written (those are scored from the store, not inferred again), and complete outputs
of the same model, inputs and images are not recomputed. ``STORE.lock`` keeps a second writer
out. Nothing but what this writer provably created is ever deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from pupsnr_dask import schema
from pupsnr_dask._version import __version__
from pupsnr_dask.cluster import check_workers_see, compute
from pupsnr_dask.ingest import pixels_compressors
from pupsnr_dask.model import ModelSpec, predict_kernel
from pupsnr_dask.registry import VariantSpec
from pupsnr_dask.store.fs import (
    check_store_output,
    lock_path,
    partial_path,
    remove_store,
    store_exists,
)
from pupsnr_dask.store.journal import (
    PLAN_VERSION,
    done_units,
    durable_moment,
    forget,
    mark_done,
    other_parameters,
    read_plan,
    remove_partial,
    start_partial,
    write_plan,
)
from pupsnr_dask.store.lock import StoreLock
from pupsnr_dask.store.zarr_io import create_store, open_store, unit_bounds, write_unit

Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: The attribute of an outputs store recording what produced it (its plan).
OUTPUTS_ATTR = "model_outputs"
#: How the outputs are stored, for the store's attributes, help texts and the README.
ROUNDING = (
    "the model's outputs rounded to uint8 as an image file stores them: clipped to the "
    "output range, scaled to 0-255, rounded half to even"
)


@dataclass(frozen=True)
class OutputsPlan:
    """What identifies a model's outputs: the images, the model, its conventions, its input."""

    images_store: str | None
    n_images: int
    sources_sha256: str
    model_sha256: str
    model_token: str
    layout: str
    input_range: str
    output_range: str
    variant: str
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``plan.json`` and of the store's ``model_outputs``."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> OutputsPlan | None:
        """The plan in ``doc``; None when it is not an outputs plan of :data:`PLAN_VERSION`."""
        try:
            if doc["version"] != PLAN_VERSION:
                return None
            return cls(**{k: doc[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None

    def changed(self, other: OutputsPlan) -> dict[str, Any]:
        """The fields (but the version) where ``other`` differs: other's values."""
        return {
            k: getattr(other, k)
            for k in self.__dataclass_fields__
            if k not in ("version", "model_token") and getattr(self, k) != getattr(other, k)
        }


def outputs_plan(
    images_store: str | None, sources: Sequence[str], spec: ModelSpec, variant: VariantSpec
) -> OutputsPlan:
    """The plan of a model's outputs on these images."""
    digest = hashlib.sha256("\n".join(sources).encode()).hexdigest()
    return OutputsPlan(
        images_store=images_store,
        n_images=len(sources),
        sources_sha256=digest,
        model_sha256=spec.sha256,
        model_token=spec.token(),
        layout=spec.layout,
        input_range=spec.input_range,
        output_range=spec.output_range,
        variant=variant.name,
    )


# --- the tasks ------------------------------------------------------------------------------------


def infer_and_score(
    img_true: np.ndarray,
    keys: list[str],
    spec: ModelSpec,
    variant: VariantSpec,
    metric: Metric,
) -> tuple[np.ndarray, list]:
    """Worker task: the model's outputs on a chunk and their score against img_true.

    Returns ``(scores, [])``: float64 ``(n,)``, and no notes (the shape of
    :func:`pupsnr_dask.advise.predictions.compute_output_psnr`'s tasks).
    """
    outputs = predict_kernel(img_true, spec, variant, keys)
    return metric(img_true, outputs), []


def infer_write_score(
    img_true: np.ndarray,
    keys: list[str],
    spec: ModelSpec,
    variant: VariantSpec,
    metric: Metric,
    store: str,
    unit: int,
    start: int,
    stop: int,
    storage_options: dict[str, Any] | None,
) -> tuple[np.ndarray, list]:
    """Worker task: infer a chunk, write it to the outputs store, mark it done, score it."""
    import zarr

    outputs = predict_kernel(img_true, spec, variant, keys)
    array = zarr.open_array(
        f"{store.rstrip('/')}/{schema.IMAGES}", mode="r+", storage_options=storage_options
    )
    array.with_config({"write_empty_chunks": True})[start:stop] = outputs
    mark_done(store, unit, {"start": start, "stop": stop}, storage_options)
    durable_moment(f"advise:unit:{unit}")
    return metric(img_true, outputs), []


def score_saved(
    img_true: np.ndarray, outputs: np.ndarray, metric: Metric
) -> tuple[np.ndarray, list]:
    """Worker task: score a chunk of outputs already written (a resumed inference)."""
    return metric(img_true, outputs), []


def fused_tasks(
    img_true: da.Array,
    keys: Sequence[str],
    spec: ModelSpec,
    variant: VariantSpec,
    metric: Metric,
    batch_size: int,
) -> list[Any]:
    """One lazy task per batch of images: variant, model, rounding and score, fused.

    Parameters
    ----------
    img_true : dask.array.Array
        ``(n, size, size, 3)`` uint8, lazy.
    keys : sequence of str
        The ``n`` images' ``source``.

    Returns
    -------
    list of dask.delayed.Delayed
        Each computes ``(scores, [])``. Nothing is computed.
    """
    bounds = unit_bounds(0, len(keys), batch_size)
    blocks = img_true.rechunk((batch_size, -1, -1, -1)).to_delayed().ravel()
    token = tokenize(img_true.name, list(keys), spec.token(), variant.name, variant.params, metric)
    task = dask.delayed(infer_and_score, pure=True)
    return [
        task(
            block,
            list(keys[a:b]),
            spec,
            variant,
            metric,
            dask_key_name=f"pupsnr-model-{token}-{k:06d}",
        )
        for k, (block, (a, b)) in enumerate(zip(blocks, bounds, strict=True))
    ]


@dataclass(frozen=True)
class ModelRun:
    """A model to run in :func:`pupsnr_dask.advise.run_advice`: spec, input, outputs store."""

    spec: ModelSpec
    variant: VariantSpec
    outputs: OutputsJob | None = None


# --- the outputs store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputsJob:
    """Where and what :func:`score_model` writes when it keeps the outputs."""

    store: str
    plan: OutputsPlan
    images: xr.Dataset  #: the selected images' labels (in memory) and attributes
    batch_size: int
    storage_options: dict[str, Any] | None = None


def outputs_dataset(job: OutputsJob) -> xr.Dataset:
    """The outputs store's layout: that of the images store, pixels to be written by tasks."""
    images = job.images
    n, size = images.sizes[schema.IMAGE], images.sizes[schema.Y]
    pixels = da.zeros((n, size, size, 3), dtype=np.uint8, chunks=(job.batch_size, -1, -1, -1))
    coords: dict[str, Any] = {schema.IMAGE: np.asarray(images[schema.IMAGE].values)}
    for name in schema.IMAGE_COORDS:
        if name in images.coords:
            coords[name] = (schema.IMAGE, np.asarray(images[name].values))
    ds = xr.Dataset({schema.IMAGES: (schema.IMAGE_DIMS, pixels)}, coords=coords)
    ds[schema.IMAGES].encoding["compressors"] = pixels_compressors()
    ds.attrs = {
        **{k: v for k, v in images.attrs.items() if k != OUTPUTS_ATTR},
        schema.KIND_ATTR: "images",
        schema.VERSION_ATTR: __version__,
        "chunk_size": job.batch_size,
        OUTPUTS_ATTR: job.plan.to_json(),
        "model_outputs_rounding": ROUNDING,
    }
    return ds


def _create_outputs(job: OutputsJob) -> None:
    """A new outputs store (under our plan: anything at STORE was created by this writer)."""
    storage_options = job.storage_options
    remove_partial(job.store, storage_options, kind="images", entry="done")
    remove_store(job.store, storage_options, kind="images", ours=True)
    create_store(outputs_dataset(job), job.store, storage_options=storage_options)
    durable_moment("advise:created")


def _store_ready(job: OutputsJob) -> bool:
    try:
        ds = xr.open_zarr(job.store, storage_options=job.storage_options, consolidated=True)
        schema.validate(ds, "images", name=job.store)
    except Exception:  # missing, half-created or foreign: create it again
        return False
    recorded = schema.json_attr(ds.attrs, OUTPUTS_ATTR)
    return recorded == job.plan.to_json() and ds.sizes[schema.IMAGE] == job.plan.n_images


def prepare_outputs(job: OutputsJob, say: Callable[[str], None]) -> bool:
    """Make the outputs store ready to be written; False when it is complete already.

    Raises
    ------
    ValueError
        When ``STORE.partial`` holds another writer's journal, or an interrupted inference
        with other parameters.
    FileExistsError
        When STORE exists and is not these outputs (it is never deleted).
    """
    storage_options, store, plan = job.storage_options, job.store, job.plan
    if store_exists(partial_path(store), storage_options):
        doc = read_plan(store, storage_options)
        old = OutputsPlan.from_json(doc)
        if old == plan:
            if not _store_ready(job):
                _create_outputs(job)
            return True
        if old is not None:
            raise other_parameters(store, "advise --model", plan.changed(old))
        if doc is not None or store_exists(store, storage_options):
            raise FileExistsError(
                f"{partial_path(store)!r} is the journal of another pupsnr command (not of "
                "advise --model): finish it, or choose another --save-outputs"
            )
    elif store_exists(store, storage_options):
        _check_complete(job)
        say(f"{store} already holds these outputs: the model is not run again")
        return False
    start_partial(
        store, "images", storage_options
    )  # only a marker (a writer killed before its plan)
    write_plan(store, plan, storage_options)  # type: ignore[arg-type]
    _create_outputs(job)
    return True


def _check_complete(job: OutputsJob) -> None:
    try:
        done = open_store(job.store, "images", storage_options=job.storage_options)
    except (schema.StoreError, FileNotFoundError) as err:
        raise FileExistsError(
            f"--save-outputs {job.store!r} exists and is not a store of model outputs ({err}); "
            "choose another location"
        ) from err
    old = OutputsPlan.from_json(schema.json_attr(done.attrs, OUTPUTS_ATTR))
    if old is None:
        raise FileExistsError(
            f"--save-outputs {job.store!r} is an images store, not a model's outputs: "
            "choose another location"
        )
    changed = job.plan.changed(old)
    if changed or old != job.plan:
        what = ", ".join(f"{k}={v!r}" for k, v in changed.items()) or "other model settings"
        raise FileExistsError(
            f"--save-outputs {job.store!r} already holds outputs of other parameters ({what}): "
            "choose another location, or delete it yourself"
        )


def _write_tasks(
    job: OutputsJob,
    img_true: da.Array,
    keys: Sequence[str],
    spec: ModelSpec,
    variant: VariantSpec,
    metric: Metric,
    written: bool,
    say: Callable[[str], None],
) -> list[Any]:
    """One task per chunk of the store: infer, write, mark, score; or score what is written."""
    import zarr

    storage_options, store = job.storage_options, job.store
    target = zarr.open_array(
        f"{store.rstrip('/')}/{schema.IMAGES}", mode="r", storage_options=storage_options
    )
    bounds = unit_bounds(0, len(keys), write_unit(target))
    if written:
        done = set(range(len(bounds)))
    else:
        expected = {k: {"start": a, "stop": b} for k, (a, b) in enumerate(bounds)}
        done = done_units(store, expected, storage_options)
        if done:
            say(f"resumed an interrupted inference: {len(done)} of {len(bounds)} chunks written")
    sizes = tuple(b - a for a, b in bounds)
    blocks = img_true.rechunk((sizes, -1, -1, -1)).to_delayed().ravel()
    saved = da.from_zarr(target).rechunk((sizes, -1, -1, -1)).to_delayed().ravel()
    token = tokenize(img_true.name, store, job.plan.to_json(), metric)
    infer = dask.delayed(infer_write_score, pure=True)
    score = dask.delayed(score_saved, pure=True)
    tasks = []
    for k, (a, b) in enumerate(bounds):
        key = f"pupsnr-model-{token}-{k:06d}"
        if k in done:
            tasks.append(score(blocks[k], saved[k], metric, dask_key_name=key))
        else:
            args = (spec, variant, metric, store, k, a, b, storage_options)
            tasks.append(infer(blocks[k], list(keys[a:b]), *args, dask_key_name=key))
    return tasks


def score_model(
    img_true: da.Array,
    keys: Sequence[str],
    spec: ModelSpec,
    variant: VariantSpec,
    metric: Metric,
    *,
    batch_size: int,
    outputs: OutputsJob | None = None,
    sources_of: dict[str, str] | None = None,
    progress: bool | None = None,
    notify: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Run the model on the workers and score its outputs; keep them when ``outputs`` is given.

    Parameters
    ----------
    img_true : dask.array.Array
        ``(n, size, size, 3)`` uint8, lazy: the images, in the order of ``keys``.
    keys : sequence of str
        Each image's ``source``.
    spec : ModelSpec
        From :func:`pupsnr_dask.model.inspect_model`.
    variant : VariantSpec
        The model's input, built from img_true as ``run`` builds it.
    metric : callable
        ``metric(img_true, outputs) -> (n,)`` float64.
    batch_size : int
        Images per task (and per chunk of a new outputs store).
    outputs : OutputsJob, optional
        Keep the outputs there (resumable).
    sources_of : dict, optional
        Locations the workers must see (``{"the model": path, ...}``), checked first.
    progress : bool, optional
        Progress bar on standard error; by default only when it is a terminal.
    notify : callable, optional
        Called with a line about resumed or skipped work.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64 scores, in the order of ``keys``.
    """
    say = notify or (lambda line: None)
    if outputs is None:
        check_workers_see(sources_of or {})
        tasks = fused_tasks(img_true, keys, spec, variant, metric, batch_size)
        return _scores(compute(*tasks, progress=progress))
    storage_options = outputs.storage_options
    with StoreLock(outputs.store, storage_options) as lock:
        if lock.takeover_note:
            say(lock.takeover_note)
        check_workers_see(
            {**(sources_of or {}), "the folder of --save-outputs": lock_path(outputs.store)},
            storage_options,
        )
        fresh = prepare_outputs(outputs, say)
        tasks = _write_tasks(outputs, img_true, keys, spec, variant, metric, not fresh, say)
        scores = _scores(compute(*tasks, progress=progress))
        if fresh:
            forget(outputs.store, storage_options, kind="images")
    return scores


def _scores(parts: Sequence[tuple[np.ndarray, list]]) -> np.ndarray:
    return np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in parts])


def check_outputs_location(
    store: str, images_store: str, results: str, storage_options: dict[str, Any] | None
) -> None:
    """Refuse ``--save-outputs`` at (or around) the images store or the results."""
    for source, name in ((images_store, "the images store"), (results, "RESULTS")):
        check_store_output(
            store,
            source,
            output_name="--save-outputs",
            source_name=name,
            overwrite=False,
            storage_options=storage_options,
        )
