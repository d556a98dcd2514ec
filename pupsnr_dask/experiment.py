"""The experiment as data: variants, scales, metrics, and the lazy PSNR cube.

``build_psnr_cube`` turns the images store into a lazy ``(image, variant, scale)`` cube of MSE
and PSNR (and of every extra metric asked for: ``psnr_y``, ``ssim``); ``run_experiment`` writes
it to a Zarr store (its summaries are in :mod:`pupsnr_dask.query`). Variants and metrics are
resolved by :mod:`pupsnr_dask.registry`: the inputs of SPEC.md, the task families ``sr<k>``,
``jpeg<q>``, ``noise<sigma>``, ``blur<radius>``, user functions and installed entry points.

Every metric of one image chunk is computed by ONE task (:func:`quality_cube_kernel`): the
variants are made once, the MSE of every uint8 variant comes from exact integer block sums
(:func:`pupsnr_dask.kernels.metrics.pu_mse_kernel`, the default ``"moments"`` method), and the
extra metrics from :func:`pupsnr_dask.kernels.quality.pu_quality_kernel`; no upsampled image is
ever a Dask array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from dask.base import tokenize

from pupsnr_dask import registry, schema
from pupsnr_dask._version import __version__
from pupsnr_dask.cluster import check_workers_see, compute
from pupsnr_dask.defaults import DEFAULT_SCALES, Method
from pupsnr_dask.kernels.blocks import check_scale
from pupsnr_dask.kernels.metrics import DATA_RANGE, mse_kernel, psnr_from_mse, pu_mse_kernel
from pupsnr_dask.kernels.quality import pu_quality_kernel
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel, pu_kernel, true_kernel
from pupsnr_dask.registry import MetricSpec, VariantPluginError, VariantSpec
from pupsnr_dask.store.fs import (
    check_store_output,
    lock_path,
    parse_storage_options,
    partial_path,
    relation,
    remove_store,
    store_exists,
    why_not_removable,
)
from pupsnr_dask.store.integrity import damage_message
from pupsnr_dask.store.journal import (
    RunPlan,
    discard,
    done_units,
    durable_moment,
    forget,
    mark_done,
    other_parameters,
    partial_is_ours,
    read_plan,
    remove_partial,
    start_partial,
    write_plan,
)
from pupsnr_dask.store.lock import StoreLock, StoreLockedError
from pupsnr_dask.store.zarr_io import (
    create_store,
    images_store_attrs,
    images_store_of,
    open_store,
    unit_bounds,
    write_unit,
)

if TYPE_CHECKING:
    import dask.array as da

Kernel = Callable[[np.ndarray], np.ndarray]
VariantLike = str | Callable[[np.ndarray], Any]

#: The inputs a U-Net would see, each a NumPy kernel on a batch of uint8 images.
VARIANTS: dict[str, Kernel] = {
    "true": true_kernel,
    "gray": gray_kernel,
    "mosaic": mosaic_kernel,
}
#: PU scales: 256 -> 256, 128, 64, 32, 16, 8 pixels (U-Net depth 0 ... 5).
SCALES: tuple[int, ...] = DEFAULT_SCALES
METHODS = schema.METHODS
#: The metric every results store holds (with ``mse``); the others are added on request.
BASE_METRIC = "psnr"
assert tuple(VARIANTS) == schema.VARIANT_NAMES, "schema.VARIANT_NAMES names the kernels of VARIANTS"


def check_selection(
    variants: Sequence[str], scales: Sequence[int], size: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validate names of :data:`VARIANTS` (the inputs of SPEC.md) and scales for ``size``."""
    variants = tuple(variants)
    scales = tuple(int(s) for s in scales)
    if not variants:
        raise ValueError("variants must name at least one variant")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {v!r}")
    if not scales:
        raise ValueError("scales must name at least one scale")
    for s in scales:
        check_scale(s, size)
    if len(set(variants)) != len(variants) or len(set(scales)) != len(scales):
        raise ValueError(f"variants and scales must not repeat, got {variants} and {scales}")
    return variants, scales


def resolve_selection(
    variants: Sequence[VariantLike],
    scales: Sequence[int],
    size: int,
    metrics: Sequence[str] = (BASE_METRIC,),
) -> tuple[tuple[VariantSpec, ...], tuple[int, ...], tuple[MetricSpec, ...]]:
    """Resolve variants and metrics (:mod:`pupsnr_dask.registry`) and check them for ``size``.

    ``psnr`` is always computed (every results store holds ``psnr`` and ``mse``): it comes
    first, whether named or not. Raises ValueError naming the value and the choices.
    """
    specs = registry.resolve_variants(variants)
    for spec in specs:
        factor = spec.params.get("factor") if spec.family == "sr" else None
        if factor is not None and size % factor:
            raise ValueError(
                f"variant {spec.name!r} needs a size divisible by {factor}, got {size}"
            )
    if not scales:
        raise ValueError("scales must name at least one scale")
    scales = tuple(int(s) for s in scales)
    for s in scales:
        check_scale(s, size)
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales must not repeat, got {scales}")
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, got the str {metrics!r}")
    names = (BASE_METRIC, *(m for m in metrics if m != BASE_METRIC))
    if len(tuple(metrics)) != len(set(metrics)):
        raise ValueError(f"metrics must not repeat, got {tuple(metrics)}")
    return specs, scales, registry.resolve_metrics(names)


def _as_specs(variants: Sequence[VariantLike | VariantSpec]) -> tuple[VariantSpec, ...]:
    return tuple(v if isinstance(v, VariantSpec) else registry.resolve_variant(v) for v in variants)


def quality_cube_kernel(
    images: np.ndarray,
    keys: Sequence[str] | None,
    variants: Sequence[VariantLike | VariantSpec],
    scales: Sequence[int],
    method: Method,
    extra: Sequence[str] = (),
) -> np.ndarray:
    """Every metric of every (variant, scale) for a batch, in one call.

    Parameters
    ----------
    images : np.ndarray
        ``(n, h, w, 3)`` uint8 img_true, in memory.
    keys : sequence of str or None
        The images' ``source`` strings, needed by ``noise<sigma>`` (its seed).
    variants : sequence
        Variant specs, names or callables (:func:`pupsnr_dask.registry.resolve_variant`).
    scales : sequence of int
        PU scales.
    method : {"moments", "literal"}
        How the MSE is computed (:func:`build_psnr_cube`).
    extra : sequence of str
        Metrics besides the MSE: names of ``pupsnr_dask.kernels.quality.METRIC_NAMES`` but
        ``psnr``.

    Returns
    -------
    np.ndarray
        ``(n, V, S, 1 + len(extra))`` float64: the MSE first, then each extra metric.
    """
    specs = _as_specs(variants)
    views = [spec.apply(images, keys) for spec in specs]
    out = np.empty((len(images), len(specs), len(scales), 1 + len(extra)))
    if method == "moments":
        out[..., 0] = pu_mse_kernel(images, views, scales)
    else:
        for j, view in enumerate(views):
            for k, s in enumerate(scales):
                out[:, j, k, 0] = mse_kernel(images, pu_kernel(view, s))
    if extra:
        for j, view in enumerate(views):
            out[:, j, :, 1:] = pu_quality_kernel(images, view, scales, extra)
    return out


def cube_kernel(
    images: np.ndarray,
    variants: Sequence[VariantLike | VariantSpec],
    scales: Sequence[int],
    method: Method,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """MSE of every (variant, scale) for a batch: ``(n, h, w, 3)`` uint8 -> ``(n, V, S)``.

    ``keys`` (the images' ``source`` strings) is needed for ``noise<sigma>`` variants.
    """
    return quality_cube_kernel(images, keys, variants, scales, method)[..., 0]


def build_psnr_cube(
    images: xr.Dataset,
    variants: Sequence[VariantLike] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
    *,
    method: Method = "moments",
    metrics: Sequence[str] = (BASE_METRIC,),
) -> xr.Dataset:
    """Lazy cube of MSE, PSNR and any extra metric by image x variant x scale.

    Parameters
    ----------
    images : xr.Dataset
        An images store (see :mod:`pupsnr_dask.schema`), lazy.
    variants : sequence of str or callable
        Names (``"true"``, ``"gray"``, ``"mosaic"``, ``"sr4"``, ``"jpeg20"``, ``"noise25"``,
        ``"blur2"``, ``"module:function"``, an installed entry point) or functions
        ``f(images) -> images`` on ``(n, h, w, 3)`` uint8; see :mod:`pupsnr_dask.registry`.
    scales : sequence of int
        PU scales, each dividing the image size.
    method : {"moments", "literal"}
        ``"moments"``: exact block sums, one pass (default); ``"literal"``: upsample and
        subtract, the reference. For the MSE and PSNR only.
    metrics : sequence of str
        Of ``psnr``, ``psnr_y``, ``ssim`` (:data:`pupsnr_dask.registry.METRICS`); ``psnr``
        (with ``mse``) is always computed.

    Returns
    -------
    xr.Dataset
        ``psnr``, ``mse`` and one variable per extra metric, float64, dims ``(image, variant,
        scale)``, dask-backed, one computing task per image chunk. Nothing is computed. The
        attributes record every variant's definition and parameters and every metric's
        definition.
    """
    import dask.array as da  # here: an up-to-date run answers without it (0.4 s of import)

    schema.validate(images, "images")
    _check_method(method)
    size = images.sizes[schema.Y]
    specs, scales, metric_specs = resolve_selection(variants, scales, size, metrics)
    extra = tuple(m.name for m in metric_specs[1:])
    pixels = images[schema.IMAGES].data
    if not isinstance(pixels, da.Array):
        pixels = da.from_array(pixels, chunks=(schema.DEFAULT_CHUNK_SIZE, -1, -1, -1))
    pixels = pixels.rechunk({1: -1, 2: -1, 3: -1})
    args: list[Any] = [pixels, "iyxc"]
    if any(spec.needs_keys for spec in specs):
        sources = np.array([str(s) for s in images[schema.SOURCE].values], dtype=object)
        args += [da.from_array(sources, chunks=(pixels.chunks[0],)), "i"]
    kernel = _with_keys if len(args) == 4 else _without_keys
    names = [(spec.name, _params_json(spec)) for spec in specs]
    token = tokenize(pixels, names, scales, method, extra)
    # Without extra metrics the task returns the MSE itself, as before extra metrics existed.
    scores = da.blockwise(
        kernel,
        "ivsm" if extra else "ivs",
        *args,
        new_axes={"v": len(specs), "s": len(scales), **({"m": 1 + len(extra)} if extra else {})},
        concatenate=True,
        dtype=np.float64,
        variants=specs,
        scales=scales,
        method=method,
        extra=extra,
        name=f"pupsnr-{'scores' if extra else 'mse'}-{token}",
    )
    if extra:
        mse = scores.map_blocks(_pick, 0, drop_axis=3, dtype=np.float64, name=f"pupsnr-mse-{token}")
        others = {
            name: scores.map_blocks(
                _pick,
                1 + e,
                drop_axis=3,
                dtype=np.float64,
                name=f"pupsnr-{name.replace('_', '')}-{token}",
            )
            for e, name in enumerate(extra)
        }
    else:
        mse, others = scores, {}
    psnr = mse.map_blocks(psnr_from_mse, dtype=np.float64, name=f"pupsnr-psnr-{tokenize(mse)}")
    ds = _label_cube(images, psnr, mse, tuple(s.name for s in specs), scales, size, method)
    for spec in metric_specs[1:]:
        ds[spec.name] = (schema.CUBE_DIMS, others[spec.name], _metric_attrs(spec))
    ds.attrs.update(_definitions(specs, metric_specs))
    return ds


def _with_keys(images: np.ndarray, keys: np.ndarray, **kwargs: Any) -> np.ndarray:
    return _squeeze(quality_cube_kernel(images, [str(k) for k in keys], **kwargs), kwargs)


def _without_keys(images: np.ndarray, **kwargs: Any) -> np.ndarray:
    return _squeeze(quality_cube_kernel(images, None, **kwargs), kwargs)


def _squeeze(scores: np.ndarray, kwargs: dict[str, Any]) -> np.ndarray:
    """The MSE alone ``(n, V, S)`` when no extra metric was asked for."""
    return scores if kwargs["extra"] else scores[..., 0]


def _pick(scores: np.ndarray, k: int) -> np.ndarray:
    return scores[..., k]


def _params_json(spec: VariantSpec) -> str:
    """``{"family": ..., **params}`` as one JSON string (a flat attribute, netCDF-safe)."""
    return json.dumps({"family": spec.family, **spec.params}, sort_keys=True)


def _metric_attrs(spec: MetricSpec) -> dict[str, str]:
    return {
        "units": spec.units,
        "long_name": spec.long_name,
        "definition": spec.definition,
        "aggregate": spec.aggregate,
        "higher_is_better": "yes" if spec.higher_is_better else "no",
    }


def _definitions(
    specs: Sequence[VariantSpec], metric_specs: Sequence[MetricSpec]
) -> dict[str, list[str]]:
    """The attributes that say what each variant and metric is: lists of strings.

    One entry per variant in the order of the ``variant`` coordinate, one per metric in the
    order of the ``metrics`` attribute.
    """
    return {
        "variant_definitions": [spec.definition for spec in specs],
        "variant_parameters": [_params_json(spec) for spec in specs],
        "metrics": [m.name for m in metric_specs],
        "metric_definitions": [m.definition for m in metric_specs],
    }


def metrics_of(results: xr.Dataset) -> tuple[str, ...]:
    """The metrics a results store holds: its ``metrics`` attribute, ``("psnr",)`` before it."""
    recorded = schema.json_attr(results.attrs, "metrics")  # JSON text, or a list before
    if isinstance(recorded, str):
        recorded = [recorded]
    if not recorded:
        return (BASE_METRIC,)
    return tuple(str(m) for m in recorded)


def probe_variants(images: xr.Dataset, variants: Sequence[VariantSpec]) -> None:
    """Run each plug-in variant once, on the first image chunk, before any result is written.

    A plug-in that raises, or returns the wrong shape, dtype or type, raises its one-line
    :class:`pupsnr_dask.registry.VariantPluginError` here, in the client.
    """
    plugins = [spec for spec in variants if spec.family in ("plugin", "entry_point")]
    if not plugins or images.sizes[schema.IMAGE] == 0:
        return
    pixels = images[schema.IMAGES]
    if pixels.chunks:  # dask-backed: its first block
        first = int(pixels.chunks[0][0])
    else:  # read into NumPy when used: the store's first chunk
        first = int((pixels.encoding.get("chunks") or (schema.DEFAULT_CHUNK_SIZE,))[0])
    block = np.asarray(images[schema.IMAGES][:first].values)
    keys = [str(s) for s in images[schema.SOURCE].values[:first]]
    for spec in plugins:
        spec.apply(block, keys)


def _label_cube(
    images: xr.Dataset,
    psnr: da.Array,
    mse: da.Array,
    variants: tuple[str, ...],
    scales: tuple[int, ...],
    size: int,
    method: str,
) -> xr.Dataset:
    coords = {
        schema.IMAGE: images[schema.IMAGE].values,
        schema.VARIANT: np.array(variants, dtype=object),
        schema.SCALE: np.array(scales, dtype=np.int64),
        schema.RESOLUTION: (schema.SCALE, np.array([size // s for s in scales], dtype=np.int64)),
        schema.SOURCE: (schema.IMAGE, images[schema.SOURCE].values),
        schema.SPLIT: (schema.IMAGE, images[schema.SPLIT].values),
    }
    ds = xr.Dataset(
        {
            schema.PSNR: (schema.CUBE_DIMS, psnr, {"units": "dB", "long_name": "PSNR"}),
            schema.MSE: (schema.CUBE_DIMS, mse, {"long_name": "mean squared error"}),
        },
        coords=coords,
    )
    ds.attrs = {
        schema.KIND_ATTR: "psnr",
        schema.VERSION_ATTR: __version__,
        "size": size,
        "method": method,
        "data_range": DATA_RANGE,
        "mse_definition": "mean over H x W x C of (PU(variant, scale) - img_true)**2, float64",
        "psnr_definition": "10*log10(data_range**2 / mse) in dB; +inf for identical images",
        "pu_definition": "average-pool scale x scale blocks (float), nearest-neighbour upsample",
        "images_store_attrs": {k: v for k, v in images.attrs.items() if k != schema.REJECTED_ATTR},
    }
    return ds


def run_experiment(
    store: str,
    results: str,
    *,
    variants: Sequence[VariantLike] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
    method: Method = "moments",
    metrics: Sequence[str] = (BASE_METRIC,),
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    notify: Callable[[str], None] | None = None,
    chunks_per_task: int | None = None,
    lazy: bool = True,
) -> xr.Dataset:
    """Compute the PSNR cube of an images store and write it to ``results``.

    Resumable: the store's metadata is created first, then each chunk (or shard) of images is
    computed and written by one task, which leaves a marker in ``RESULTS.partial``; a run that
    was killed resumes from the chunks already written, and ends bit-identical to a run that
    was not. Results that are complete for the same images and parameters are not recomputed;
    for others, ``overwrite`` is needed. ``RESULTS.lock`` keeps a second writer out.

    Parameters
    ----------
    store : str
        The images store (path or fsspec URL).
    results : str
        Where to write the cube.
    variants, scales, method, metrics
        As for :func:`build_psnr_cube`. A plug-in variant is first run on the first image
        chunk, in this process: one that fails fails the run before anything is written.
    overwrite : bool
        Replace existing results (and discard an interrupted run) instead of refusing.
    storage_options : dict, optional
        fsspec options for object storage.
    progress : bool, optional
        Progress bars on standard error; by default only when it is a terminal.
    notify : callable, optional
        Called with a line of text about resumed or skipped work.
    chunks_per_task : int, optional
        Result chunks (or shards) computed and written by each task, their images read as one
        block. Default 1, or as many as keep the run within :data:`MAX_WRITE_TASKS` tasks
        (more than 5,120,000 images in chunks of 32: result chunks of 256, see
        :func:`results_chunk_length`). The results do not depend on it.
    lazy : bool
        Return the results dask-backed (True), or as lazily indexed NumPy arrays (False:
        complete results are then answered without importing dask.array).

    Returns
    -------
    xr.Dataset
        The results store, reopened (its data not read).
    """
    if chunks_per_task is not None and chunks_per_task < 1:
        raise ValueError(f"chunks_per_task must be at least 1, got {chunks_per_task!r}")
    storage_options = parse_storage_options(storage_options)  # credentials hidden in logs
    check_store_output(
        results,
        store,
        output_name="RESULTS",
        source_name="the images store",
        overwrite=overwrite,
        storage_options=storage_options,
    )
    # Labels and attributes in NumPy first: complete results are answered from them and from
    # the results' own labels, without dask.array (an instant answer, issue 12).
    labels = open_store(store, "images", storage_options=storage_options, lazy=False)
    plan = selection_plan(labels, store, results, variants, scales, method, metrics)
    probe_variants(labels, _as_specs(variants))
    say = notify or (lambda line: None)
    done = None if overwrite else _complete_already(results, plan, storage_options, say)
    if done is not None:  # opened without dask.array, as ``lazy=False`` asks
        return open_store(results, "psnr", storage_options=storage_options) if lazy else done
    images = open_store(store, "images", storage_options=storage_options)
    cube = build_psnr_cube(images, variants, scales, method=method, metrics=metrics)
    # Where img_true lives, for tools that need the pixels again (advise, HTML report, verify):
    # absolute, and relative to the results (a moved or copied pair keeps its link).
    cube.attrs.update(images_store_attrs(store, results))
    with StoreLock(results, storage_options) as lock:
        if lock.takeover_note:
            say(lock.takeover_note)
        check_workers_see(
            {"the images store": store, "the folder of RESULTS": lock_path(results)},
            storage_options,
        )
        if overwrite:
            discard(results, "psnr", storage_options)
        if not _prepare_results(cube, results, storage_options, say):
            return open_store(results, "psnr", storage_options=storage_options, lazy=lazy)

        def regrouped(n_images: int) -> xr.Dataset:  # the same cube, read n_images a block
            grouped = _images_in_blocks(images, store, n_images, storage_options)
            return build_psnr_cube(grouped, variants, scales, method=method, metrics=metrics)

        try:
            _write_cube(cube, results, storage_options, progress, say, regrouped, chunks_per_task)
        except (ConnectionError, StoreLockedError, VariantPluginError):
            raise
        except Exception as err:  # a damaged chunk fails deep inside zarr's codecs
            found = damage_message([store], storage_options)
            if not found:
                raise  # not the input's fault: a bug, shown as one (cli.main)
            raise schema.StoreError(f"computing the PSNR failed: {found}") from err
        forget(results, storage_options, kind="psnr")
    return open_store(results, "psnr", storage_options=storage_options, lazy=lazy)


@dataclasses.dataclass(frozen=True)
class ExperimentPlan(RunPlan):
    """A :class:`~pupsnr_dask.store.journal.RunPlan` that also records the metrics.

    A plan written before metrics were recorded reads as ``metrics=("psnr",)``.
    """

    metrics: tuple[str, ...] = (BASE_METRIC,)

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``plan.json``, with ``metrics`` as a list."""
        return {**super().to_json(), "metrics": list(self.metrics)}

    @classmethod
    def from_json(cls, doc: Any) -> ExperimentPlan | None:
        """The plan in ``doc``; None when it is not a run plan of the journal's version."""
        if isinstance(doc, dict) and "metrics" not in doc:
            doc = {**doc, "metrics": [BASE_METRIC]}
        plan = super().from_json(doc)
        if plan is None or not isinstance(plan.metrics, list | tuple):
            return None
        return dataclasses.replace(plan, metrics=tuple(str(m) for m in plan.metrics))


def _run_plan(cube: xr.Dataset) -> ExperimentPlan:
    """What identifies a run (or its results): images, variants, scales, method and metrics."""
    return _plan(
        cube,
        images_store=cube.attrs.get("images_store"),
        variants=tuple(str(v) for v in cube[schema.VARIANT].values),
        scales=tuple(int(s) for s in cube[schema.SCALE].values),
        method=cube.attrs.get("method"),
        metrics=metrics_of(cube),
    )


def selection_plan(
    images: xr.Dataset,
    store: str,
    results: str,
    variants: Sequence[VariantLike],
    scales: Sequence[int],
    method: str,
    metrics: Sequence[str],
) -> ExperimentPlan:
    """The plan of the cube that :func:`build_psnr_cube` would make, without making it.

    From the images' labels alone (no dask.array); the selection is checked as
    ``build_psnr_cube`` checks it. Equal to the plan of that cube once
    :func:`~pupsnr_dask.store.zarr_io.images_store_attrs` are added to it (tested).
    """
    _check_method(method)
    specs, scales, metric_specs = resolve_selection(
        variants, scales, images.sizes[schema.Y], metrics
    )
    return _plan(
        images,
        images_store=images_store_attrs(store, results).get("images_store"),
        variants=tuple(spec.name for spec in specs),
        scales=scales,
        method=method,
        metrics=tuple(m.name for m in metric_specs),
    )


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _complete_note(results: str) -> str:
    return f"{results} is already complete for these images and parameters: nothing recomputed"


def _plan(labelled: xr.Dataset, **fields: Any) -> ExperimentPlan:
    """The plan of a run over the images that ``labelled`` names (its ``source`` labels)."""
    sources = "\n".join(str(s) for s in labelled[schema.SOURCE].values)
    return ExperimentPlan(
        n_images=labelled.sizes[schema.IMAGE],
        sources_sha256=hashlib.sha256(sources.encode()).hexdigest(),
        **fields,
    )


def _complete_already(
    results: str,
    plan: ExperimentPlan,
    storage_options: dict[str, Any] | None,
    say: Callable[[str], None],
) -> xr.Dataset | None:
    """The results (and says so) when they are complete for ``plan``, checked under the lock.

    Raises as :func:`_check_complete` when they exist for other parameters or are damaged;
    None when there are none, or an interrupted run to resume.
    """
    if store_exists(partial_path(results), storage_options) or not store_exists(
        results, storage_options
    ):
        return None
    with StoreLock(results, storage_options) as lock:
        if lock.takeover_note:
            say(lock.takeover_note)
        if store_exists(partial_path(results), storage_options) or not store_exists(
            results, storage_options
        ):  # begun or removed meanwhile: the full path decides
            return None
        done = _check_complete(results, storage_options, plan)
    say(_complete_note(results))
    return done


def _prepare_results(
    cube: xr.Dataset,
    results: str,
    storage_options: dict[str, Any] | None,
    say: Callable[[str], None],
) -> bool:
    """Make ``results`` ready for :func:`_write_cube`; False when it is complete already."""
    partial = partial_path(results)
    plan = _run_plan(cube)
    if store_exists(partial, storage_options):
        old = ExperimentPlan.from_json(read_plan(results, storage_options))
        if old == plan:
            if not _results_ready(cube, results, storage_options):
                _create_results(cube, results, storage_options)
            return True
        if old is not None:
            raise other_parameters(results, "run", plan.changed(old))
        # No usable plan: leftovers of a run that never began. RESULTS is ours when our
        # journal (begun while RESULTS did not exist) is there, or when its attribute says so.
        ours = partial_is_ours(results, "psnr", storage_options)
        remove_store(results, storage_options, kind="psnr", ours=ours)
    elif store_exists(results, storage_options):
        _check_complete(results, storage_options, plan)
        say(_complete_note(results))
        return False
    start_partial(results, "psnr", storage_options)  # discards an earlier journal of ours
    write_plan(results, plan, storage_options)
    _create_results(cube, results, storage_options)
    return True


def _check_complete(
    results: str, storage_options: dict[str, Any] | None, plan: ExperimentPlan
) -> xr.Dataset:
    """The complete ``results`` of ``plan`` (read into NumPy when used); raises otherwise."""
    try:  # labels and every result chunk checked, read into NumPy: no dask.array
        done = open_store(results, "psnr", storage_options=storage_options, verify=True, lazy=False)
    except schema.StoreError as err:
        why = why_not_removable(results, "psnr", storage_options)
        hint = f"it {why}: move it away" if why else "use --overwrite"
        raise FileExistsError(
            f"results {results!r} already exist but are not usable ({err}) ({hint})"
        ) from err
    changed = sorted(plan.changed(_run_plan(done)))
    if changed == ["images_store"]:  # moved or copied with its images store: the same link?
        found, _ = images_store_of(done.attrs, results, storage_options)
        given = plan.images_store
        if found and given and relation(found, given, storage_options) == "same":
            changed = []
    if changed:
        raise FileExistsError(
            f"results {results!r} already exist with other {', '.join(changed)} "
            "(use --overwrite to replace them)"
        )
    return done


def _results_ready(cube: xr.Dataset, results: str, storage_options: dict[str, Any] | None) -> bool:
    """True when an interrupted run's results store has all its metadata and labels."""
    try:
        ds = xr.open_zarr(results, storage_options=storage_options, consolidated=True)
        schema.validate(ds, "psnr", name=results)
    except Exception:  # missing, half-created or foreign: create it again
        return False
    return ds[schema.PSNR].shape == cube[schema.PSNR].shape and all(
        np.array_equal(ds[c].values, cube[c].values) for c in cube.coords
    )


def _create_results(cube: xr.Dataset, results: str, storage_options: dict[str, Any] | None) -> None:
    """A new results store: metadata and labels; forget the chunks marked as written.

    Called with the run's plan in ``RESULTS.partial``: anything at RESULTS was created by this
    run (the plan was written while RESULTS did not exist), so it may be replaced. Its chunks
    hold :func:`results_chunk_length` images.
    """
    remove_partial(results, storage_options, kind="psnr", entry="done")
    remove_store(results, storage_options, kind="psnr", ours=True)
    create_store(_in_result_chunks(cube), results, storage_options=storage_options)
    durable_moment("run:created")


#: Result chunks grow past the images' chunk only once there would be more than this many ...
MIN_RESULT_CHUNKS = 64
#: ... and their images are at most this many bytes (one task's block of pixels when computed):
#: 256 images of 256 x 256 x 3, a kernel peak of ~224 MiB (benchmarks/RESULTS.md).
MAX_RESULT_BLOCK_BYTES = 256 * 256 * 256 * 3


def results_chunk_length(n_images: int, image_chunk: int, image_bytes: int = 256 * 256 * 3) -> int:
    """Images per chunk of a new results store: a multiple of the images store's chunk.

    Reading results costs about 0.5 ms a chunk whatever its size (zarr's work per chunk):
    12,443 images in chunks of 32 are 389 chunks a variable, 0.4 s of ``pupsnr report`` for
    the two it reads (``psnr`` and ``mse``). So a chunk holds ``k`` image chunks, ``k`` as
    large as keeps at least :data:`MIN_RESULT_CHUNKS` chunks (tasks to share among workers,
    and what a killed run resumes by) and their pixels (``image_bytes`` an image) within
    :data:`MAX_RESULT_BLOCK_BYTES`. It depends on the images alone, never on the workers, so
    that the store is the same wherever it is computed.

    Examples
    --------
    >>> results_chunk_length(2_000, 32), results_chunk_length(12_443, 32)
    (32, 192)
    >>> results_chunk_length(10_000_000, 32), results_chunk_length(12_443, 500)
    (256, 500)
    >>> results_chunk_length(12_443, 32, 512 * 512 * 3)  # 64 images of 512 x 512 at most
    64
    """
    if image_chunk < 1 or image_bytes < 1:
        raise ValueError(
            f"image_chunk and image_bytes must be >= 1, got {image_chunk, image_bytes}"
        )
    n_chunks = -(-n_images // image_chunk)
    k = min(n_chunks // MIN_RESULT_CHUNKS, MAX_RESULT_BLOCK_BYTES // (image_chunk * image_bytes))
    return image_chunk * max(1, k)


def _block_length(cube: xr.Dataset) -> int:
    """Images per dask block of the cube: those of the images store's chunks."""
    return int(cube[schema.MSE].data.chunks[0][0])


def _in_result_chunks(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` with its data variables in blocks of :func:`results_chunk_length` images.

    What :func:`~pupsnr_dask.store.zarr_io.create_store` makes the chunks of; the labels stay
    in memory (they are written now).
    """
    side = int(cube[schema.RESOLUTION].values[0]) * int(cube[schema.SCALE].values[0])
    unit = results_chunk_length(cube.sizes[schema.IMAGE], _block_length(cube), side * side * 3)
    out = cube.copy()
    for name in cube.data_vars:
        var = cube[name].variable
        axis = var.dims.index(schema.IMAGE)
        out[name] = var.copy(deep=False, data=var.data.rechunk({axis: unit}))
    return out


#: At most this many write tasks per run (each with its read and compute tasks, ~3 in all): past
#: it, each task computes and writes several chunks (benchmarks/SCALEOUT.md: one scheduler
#: handles ~100 k tasks well; 10 million images in chunks of 32 are 39,063 result chunks of 256).
MAX_WRITE_TASKS = 20_000


def chunks_per_task_for(n_units: int) -> int:
    """Result chunks per task for a run of ``n_units`` chunks: 1 up to :data:`MAX_WRITE_TASKS`.

    Examples
    --------
    >>> chunks_per_task_for(31), chunks_per_task_for(20_000), chunks_per_task_for(312_500)
    (1, 1, 16)
    """
    return max(1, -(-n_units // MAX_WRITE_TASKS))


def _images_in_blocks(
    images: xr.Dataset, store: str, n_images: int, storage_options: dict[str, Any] | None
) -> xr.Dataset:
    """``images`` with its pixels read ``n_images`` a dask block (one read task per block)."""
    import dask.array as da
    import zarr

    array = zarr.open_array(
        f"{store.rstrip('/')}/{schema.IMAGES}", mode="r", storage_options=storage_options
    )
    pixels = da.from_zarr(array, chunks=(n_images, -1, -1, -1))
    variable = images[schema.IMAGES]
    return images.assign({schema.IMAGES: (variable.dims, pixels, variable.attrs)})


def _write_cube(
    cube: xr.Dataset,
    results: str,
    storage_options: dict[str, Any] | None,
    progress: bool | None,
    say: Callable[[str], None],
    regrouped: Callable[[int], xr.Dataset],
    chunks_per_task: int | None = None,
) -> None:
    """Compute and write the chunks (or shards) that have no marker yet, a group per task.

    A group is ``chunks_per_task`` consecutive chunks (default :func:`chunks_per_task_for`):
    with more than one, the images are read as ``regrouped`` gives them, a group a block. Each
    chunk keeps its own marker, so a run resumes chunk by chunk whatever the grouping.
    """
    import zarr

    target = zarr.open_array(
        f"{results.rstrip('/')}/{schema.PSNR}", mode="r", storage_options=storage_options
    )
    unit = write_unit(target)
    bounds = unit_bounds(0, cube.sizes[schema.IMAGE], unit)
    done = done_units(
        results, {k: {"start": a, "stop": b} for k, (a, b) in enumerate(bounds)}, storage_options
    )
    if done:
        say(f"resumed an interrupted run: {len(done)} of {len(bounds)} chunks were already written")
    tasks = _write_tasks(cube, results, unit, done, regrouped, chunks_per_task, storage_options)
    compute(*tasks, progress=progress, label=f"computing and writing {len(tasks)} result chunks")


def _write_tasks(
    cube: xr.Dataset,
    results: str,
    unit: int,
    done: set[int],
    regrouped: Callable[[int], xr.Dataset],
    chunks_per_task: int | None,
    storage_options: dict[str, Any] | None,
) -> list[Any]:
    """The delayed tasks of :func:`_write_cube`, for write units of ``unit`` images.

    None is built for a group whose units are all in ``done``; benchmarks/scaleout_graph.py
    measures this graph.
    """
    import dask
    import dask.array as da

    n = cube.sizes[schema.IMAGE]
    bounds = unit_bounds(0, n, unit)
    group = chunks_per_task or chunks_per_task_for(len(bounds))
    # One read of the images per task: the cube's own blocks when a task writes one of them,
    # else the images read ``group * unit`` a block (result chunks of several image chunks).
    block = group * unit
    source = cube if block == _block_length(cube) else regrouped(block)
    groups = unit_bounds(0, n, group * unit)  # unit k is in group k // group
    # One array of every variable, so that each block's metrics are computed once for all.
    names = _stored_variables(cube)
    parts = [source[v].data.rechunk((tuple(b - a for a, b in groups), -1, -1)) for v in names]
    every = da.map_blocks(
        _stack, *parts, new_axis=0, dtype=np.float64, name=f"pupsnr-stack-{tokenize(*parts)}"
    )
    blocks = every.to_delayed().ravel()
    token = tokenize(results, every.name)
    task = dask.delayed(_write_units, pure=True)
    tasks = []
    for g, (start, _) in enumerate(groups):
        members = range(g * group, min((g + 1) * group, len(bounds)))
        todo = [(k, *bounds[k]) for k in members if k not in done]
        if todo:
            key = f"pupsnr-write-{token}-{g:08d}"
            tasks.append(
                task(results, todo, start, blocks[g], storage_options, names, dask_key_name=key)
            )
    return tasks


def _stored_variables(cube: xr.Dataset) -> tuple[str, ...]:
    """``mse``, ``psnr`` and the extra metrics of ``cube``, in the order they are written."""
    return (schema.MSE, schema.PSNR, *(m for m in metrics_of(cube) if m != BASE_METRIC))


def _stack(*blocks: np.ndarray) -> np.ndarray:
    return np.stack(blocks)


def _write_units(
    results: str,
    units: Sequence[tuple[int, int, int]],
    start: int,
    stacked: np.ndarray,
    storage_options: dict[str, Any] | None,
    names: Sequence[str],
) -> None:
    """Worker task: write each ``(unit, start, stop)`` of the block of images from ``start``."""
    for unit, a, b in units:
        _write_unit(results, unit, a, b, stacked[:, a - start : b - start], storage_options, names)


def _write_unit(
    results: str,
    unit: int,
    start: int,
    stop: int,
    stacked: np.ndarray,
    storage_options: dict[str, Any] | None,
    names: Sequence[str] = (schema.MSE, schema.PSNR),
) -> None:
    """Worker task: write one chunk (or shard) of every variable ``names``, then its marker."""
    import zarr

    for name, block in zip(names, stacked, strict=True):
        url = f"{results.rstrip('/')}/{name}"
        array = zarr.open_array(url, mode="r+", storage_options=storage_options)
        array.with_config({"write_empty_chunks": True})[start:stop] = block
    mark_done(results, unit, {"start": start, "stop": stop}, storage_options)
    durable_moment(f"run:unit:{unit}")


def run(*args: Any, **kwargs: Any) -> xr.Dataset:
    """Deprecated alias of :func:`run_experiment`, kept for one release."""
    warnings.warn(
        "pupsnr_dask.run / experiment.run is deprecated: use run_experiment",
        DeprecationWarning,
        stacklevel=2,
    )
    return run_experiment(*args, **kwargs)
