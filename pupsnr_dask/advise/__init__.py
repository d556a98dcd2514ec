"""Which U-Net depths does a model really use? Its output PSNR against the p_i yardstick.

A U-Net decoder at depth *i* (scale ``2**i``, resolution ``size / 2**i``) gets a skip
connection; p_i, the PSNR of the input variant PU-transformed at scale ``2**i``, is what copying
that skip achieves in the pixel domain (SPEC.md, "Why anyone wants these numbers"). p_i falls as
the depth grows, so a model's output beats the coarse (deep) copies first::

    PSNR
     |  p_0
     |     p_1
     |        p_2
     |- - - - - - - - - - - - - - - - output PSNR
     |           p_3
     |              p_4
     |                 p_5
     +--+--+--+--+--+--+----> depth (deeper = coarser skip)
        0  1  2  3  4  5
        as good | beaten: the output holds more than that skip copy
                ^ crossover = 3 (shallowest depth beaten with all deeper ones);
                  skip depth 2: the depths below it are not needed to explain the PSNR

Steps, each in its module:

1. :mod:`~pupsnr_dask.advise.matching` -- pair the dataset's images with the model's outputs
   by relative path; missing, extra and ambiguous ones are reported;
2. :mod:`~pupsnr_dask.advise.predictions` -- one lazy task per batch: decode each output like
   ingest does and measure its PSNR against img_true;
   or, with a model, :mod:`~pupsnr_dask.advise.inference` -- one fused task per batch: the
   input variant (as ``run`` builds it), the ONNX model, outputs rounded to uint8, their score
   against img_true, and (``save_outputs``) the write of the outputs to a resumable store;
3. :mod:`~pupsnr_dask.advise.compare` -- per depth: mean p_i, mean output PSNR, paired
   differences with a Student t-interval, the share of images where the output is at or below
   p_i, a verdict, and the crossover depth.

:func:`advise_depths` runs them all and returns an ``xr.Dataset``: :func:`plan_advice` (open,
check, pair; no pixel read) then :func:`run_advice` (build the graph with
:func:`build_advice_graph`, compute it on the active scheduler, compare), which the command line
calls apart so that bad input (and a model that does not fit) fails before a cluster starts.
Tables and the figure are in :mod:`pupsnr_dask.report` (``format_advice``, ``plot_advice``);
the Dataset is assembled in :mod:`~pupsnr_dask.advise.dataset`.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import query, schema
from pupsnr_dask.advise.compare import DEFAULT_CONFIDENCE, DEFAULT_MARGIN_DB, check_confidence
from pupsnr_dask.advise.dataset import DEPTH, advise_number, advise_paired
from pupsnr_dask.advise.inference import (
    ROUNDING,
    ModelRun,
    OutputsJob,
    check_outputs_location,
    fused_tasks,
    outputs_plan,
    score_model,
)
from pupsnr_dask.advise.matching import Matching, examples, match_predictions
from pupsnr_dask.advise.predictions import (
    DEFAULT_BATCH_SIZE,
    build_output_psnr,
    compute_output_psnr,
    pair_predictions,
)
from pupsnr_dask.defaults import DEFAULT_METRIC, METRIC_NAMES, Split
from pupsnr_dask.kernels.metrics import psnr_kernel
from pupsnr_dask.model import ModelSpec, inspect_model, resolve_input
from pupsnr_dask.registry import METRICS
from pupsnr_dask.store.fs import parse_storage_options
from pupsnr_dask.store.zarr_io import open_store

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MARGIN_DB",
    "DEPTH",
    "AdvicePlan",
    "Matching",
    "advise",
    "advise_depths",
    "build_advice_graph",
    "match_predictions",
    "metric_kernel",
    "plan_advice",
    "run_advice",
]


def advise_depths(
    results: str | xr.Dataset,
    predictions: str | xr.Dataset | None = None,
    *,
    variant: str,
    output_psnr: float | None = None,
    model: str | bytes | ModelSpec | None = None,
    model_options: dict[str, Any] | None = None,
    save_outputs: str | None = None,
    images: str | xr.Dataset | None = None,
    split: Split = "all",
    metric: str = DEFAULT_METRIC,
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = DEFAULT_MARGIN_DB,
    batch_size: int = DEFAULT_BATCH_SIZE,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    notify: Any = None,
) -> xr.Dataset:
    """Which U-Net depths does a model really use? Compare its outputs with p_i at every depth.

    Give exactly one of ``predictions`` (the model's output images), ``output_psnr`` (one
    number) or ``model`` (an ONNX model, run on the Dask workers).

    Parameters
    ----------
    results : str or xr.Dataset
        A results store (``pupsnr run``), path or dataset.
    predictions : str or xr.Dataset, optional
        A folder of the model's output images, any format Pillow reads, paired with the dataset
        by relative path (:func:`match_predictions`); decoded, converted to RGB and resized to
        the dataset's size with LANCZOS as ingest does (no colour test). Or a store in the
        layout of an images store, paired by ``source`` (``save_outputs`` writes one).
    variant : str
        The input the model sees: any variant ``results`` holds ("gray" for colourisation,
        "mosaic" for mosaic removal, "sr4", ...).
    output_psnr : float, optional
        The model's mean output PSNR (dB), e.g. from a training log, instead of predictions.
    model : str, bytes or ModelSpec, optional
        An ONNX image-to-image model (path every worker sees, or bytes), or what
        :func:`pupsnr_dask.model.inspect_model` returned. ``img_true`` is turned into
        ``variant`` exactly as ``run`` does, fed to the model in batches of ``batch_size`` on
        the workers (one onnxruntime session per worker process), its outputs rounded to uint8
        as an image file stores them, and scored against img_true: inference and scoring in
        one task per batch.
    model_options : dict, optional
        For a model path or bytes: ``layout``, ``input_range``, ``output_range``,
        ``providers``, ``intra_op_threads`` of :func:`~pupsnr_dask.model.inspect_model`
        (what the graph does not tell).
    save_outputs : str, optional
        With ``model``: keep its outputs as an images store there (resumable; ``predictions``
        accepts it).
    images : str or xr.Dataset, optional
        The images store holding img_true; by default the path recorded in ``results``.
    split : {"all", "train", "test"}
        Which images of the dataset to compare on.
    metric : {"psnr", "psnr_y", "ssim"}
        The quality measure: the results must hold it (``pupsnr run --metrics``); the outputs
        are scored with the same kernel.
    confidence : float
        Level of the t-intervals.
    margin_db : float
        How much the output must beat p_i by to count (dB, or SSIM units; default 0: any
        significant gain).
    batch_size : int
        Images per task when reading predictions or running the model.
    storage_options : dict, optional
        fsspec options for stores and folders in object storage.
    progress : bool, optional
        Progress bar on standard error; by default only when it is a terminal.
    notify : callable, optional
        Called with a line about resumed or skipped work (``save_outputs``).

    Returns
    -------
    xr.Dataset
        Over ``scale`` (with ``depth`` and ``resolution``): ``p_mean_db``, ``p_of_mean_mse_db``,
        ``diff_mean_db``, ``diff_ci_low_db``, ``diff_ci_high_db``, ``share_output_le_p``,
        ``beaten``, ``verdict``; the scalar ``output_mean_db``; with predictions or a model, per
        image ``output_psnr_db`` and ``p_psnr_db`` (image, scale). The ``_db`` names are kept
        for every metric (for ``ssim`` the values are SSIM, unitless). Attributes:
        ``variant``, ``split``, ``metric``, ``mode``, ``n_images``,
        ``crossover_depth``/``crossover_scale`` (None when no depth is beaten),
        ``skip_depth``, ``conclusion``, ``advice_method``, ``matching`` (counts and example
        names); with a model, ``model`` (its file, SHA-256 and conventions).
    """
    given = [x is not None for x in (predictions, output_psnr, model)]
    if sum(given) != 1:
        raise ValueError("give exactly one of predictions, output_psnr and model")
    check_confidence(confidence, margin_db)
    if output_psnr is not None:
        check_metric(metric)
        selected = _select(_open_results(results, storage_options), variant, split, metric)
        return advise_number(selected, variant, float(output_psnr), split, margin_db, metric)
    plan = plan_advice(
        results,
        predictions,
        variant=variant,
        model=model,
        model_options=model_options,
        save_outputs=save_outputs,
        images=images,
        split=split,
        metric=metric,
        storage_options=storage_options,
    )
    return run_advice(
        plan,
        confidence=confidence,
        margin_db=margin_db,
        batch_size=batch_size,
        progress=progress,
        notify=notify,
    )


def advise(*args: Any, **kwargs: Any) -> xr.Dataset:
    """Deprecated alias of :func:`advise_depths` (kept for one release)."""
    warnings.warn(
        "pupsnr_dask.advise() is deprecated; use pupsnr_dask.advise_depths()",
        DeprecationWarning,
        stacklevel=2,
    )
    return advise_depths(*args, **kwargs)


@dataclass
class AdvicePlan:
    """What :func:`plan_advice` opened, checked and paired; no pixel has been read yet."""

    selected: xr.Dataset  #: the results of the split, scales in increasing order
    images: xr.Dataset  #: the images store holding img_true
    predictions: str | xr.Dataset | None  #: a folder, or an opened prediction store
    matching: Matching
    variant: str
    split: str
    storage_options: dict[str, Any] | None = None
    model: ModelRun | None = None  #: instead of predictions: the model to run
    metric: str = DEFAULT_METRIC


def check_metric(metric: str) -> None:
    """Raise ValueError unless ``metric`` is one of :data:`METRIC_NAMES`."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {METRIC_NAMES}, got {metric!r}")


def metric_kernel(metric: str) -> Any:
    """``kernel(img_true, outputs) -> (n,)`` float64 of a metric, the one ``run`` scores with.

    ``psnr``: :func:`pupsnr_dask.kernels.metrics.psnr_kernel`; ``psnr_y`` and ``ssim``: the
    kernels of :mod:`pupsnr_dask.kernels.quality` (through :data:`pupsnr_dask.registry.METRICS`).
    """
    check_metric(metric)
    return psnr_kernel if metric == "psnr" else METRICS[metric].kernel


def plan_advice(
    results: str | xr.Dataset,
    predictions: str | xr.Dataset | None = None,
    *,
    variant: str,
    model: str | bytes | ModelSpec | None = None,
    model_options: dict[str, Any] | None = None,
    save_outputs: str | None = None,
    images: str | xr.Dataset | None = None,
    split: Split = "all",
    metric: str = DEFAULT_METRIC,
    storage_options: dict[str, Any] | None = None,
) -> AdvicePlan:
    """Open and check the stores and the model, pair the predictions; read no pixel.

    Parameters are those of :func:`advise_depths` (one of ``predictions`` and ``model``).
    Raises ValueError when no prediction matches, or when the model does not fit the images
    (one line naming the option that fixes it).
    """
    if (predictions is None) == (model is None):
        raise ValueError("give exactly one of predictions and model")
    if save_outputs is not None and model is None:
        raise ValueError("save_outputs needs a model")
    check_metric(metric)
    storage_options = parse_storage_options(storage_options)
    results_ds = _open_results(results, storage_options)
    # Labels in memory now, so that building the graph later reads nothing.
    selected = query.load_coords(_select(results_ds, variant, split, metric))
    found, location = _open_images(results_ds, images, storage_options)
    images_ds = query.load_coords(found)
    sources = [str(s) for s in selected[schema.SOURCE].values]
    absent = sorted(set(sources) - {str(s) for s in images_ds[schema.SOURCE].values})
    if absent:
        raise ValueError(
            f"the images store does not hold the images of the results, e.g. {examples(absent)}"
        )
    common = {"variant": variant, "split": split, "storage_options": storage_options}
    if model is not None:
        run = _plan_model(
            model, model_options, variant, images_ds, sources, location, save_outputs, common
        )
        if save_outputs is not None and isinstance(results, str) and location is not None:
            check_outputs_location(save_outputs, location, results, storage_options)
        matching = Matching(len(sources), [(i, s) for i, s in enumerate(sources)])
        return AdvicePlan(selected, images_ds, None, matching, model=run, metric=metric, **common)
    assert predictions is not None  # exactly one of the two, checked above
    matching, preds = pair_predictions(sources, predictions, storage_options)
    if not matching.pairs:
        raise ValueError("no prediction matches a dataset image: " + "; ".join(matching.lines()))
    return AdvicePlan(selected, images_ds, preds, matching, metric=metric, **common)


def _plan_model(
    model: str | bytes | ModelSpec,
    options: dict[str, Any] | None,
    variant: str,
    images: xr.Dataset,
    sources: list[str],
    location: str | None,
    save_outputs: str | None,
    common: dict[str, Any],
) -> ModelRun:
    """Inspect the model for the images' size, resolve its input, plan the outputs store."""
    size = int(images.sizes[schema.Y])
    if isinstance(model, ModelSpec):
        if options:
            raise ValueError("model_options apply to a model path or bytes, not a ModelSpec")
        spec = model
        if spec.size != size:
            raise ValueError(f"the model spec is for {spec.size} px images, the images are {size}")
    else:
        spec = inspect_model(model, size=size, **(options or {}))
    kernel = resolve_input(variant)
    outputs = None
    if save_outputs is not None:
        position = {str(s): i for i, s in enumerate(images[schema.SOURCE].values)}
        rows = [position[s] for s in sources]
        outputs = OutputsJob(
            save_outputs,
            outputs_plan(location, sources, spec, kernel),
            images.isel({schema.IMAGE: rows}),
            batch_size=0,  # set by run_advice
            storage_options=common["storage_options"],
        )
    return ModelRun(spec, kernel, outputs)


def build_advice_graph(
    plan: AdvicePlan, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[list[Any], list[str]]:
    """The lazy tasks of a plan's output scores, and the prediction of each matched image.

    Nothing is computed: :func:`run_advice` computes the tasks. With a model, these are the
    fused tasks without ``save_outputs`` (the writer prepares its store before building them).
    """
    img_true, names = _matched_img_true(plan)
    metric = metric_kernel(plan.metric)
    if plan.model is not None:
        run = plan.model
        tasks = fused_tasks(img_true, names, run.spec, run.variant, metric, batch_size)
        return tasks, names
    assert plan.predictions is not None
    tasks = build_output_psnr(
        img_true,
        plan.predictions,
        names,
        batch_size=batch_size,
        storage_options=plan.storage_options,
        metric=metric,
    )
    return tasks, names


def _matched_img_true(plan: AdvicePlan) -> tuple[Any, list[str]]:
    sources = [str(s) for s in plan.selected[schema.SOURCE].values]
    position = {str(s): i for i, s in enumerate(plan.images[schema.SOURCE].values)}
    rows = np.array([position[sources[i]] for i, _ in plan.matching.pairs], dtype=np.int64)
    names = [name for _, name in plan.matching.pairs]
    return plan.images[schema.IMAGES].data[rows], names


def run_advice(
    plan: AdvicePlan,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = DEFAULT_MARGIN_DB,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    notify: Any = None,
) -> xr.Dataset:
    """Compute the output scores of a plan on the active scheduler and compare.

    Parameters and result are those of :func:`advise_depths`.
    """
    check_confidence(confidence, margin_db)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    matching = copy.deepcopy(plan.matching)
    if plan.model is not None:
        output = _run_model(plan, batch_size, progress, notify)
    else:
        tasks, names = build_advice_graph(plan, batch_size)
        output = compute_output_psnr(tasks, names, matching, batch_size, progress)
    usable = ~np.isnan(output)
    matching.pairs = [pair for pair, ok in zip(matching.pairs, usable, strict=True) if ok]
    if not matching.pairs:
        raise ValueError("no prediction could be decoded: " + "; ".join(matching.lines()))
    paired = plan.selected.isel({schema.IMAGE: [i for i, _ in matching.pairs]})
    ds = advise_paired(
        paired,
        output[usable],
        plan.variant,
        plan.split,
        matching,
        confidence,
        margin_db,
        plan.metric,
    )
    if plan.model is not None:
        ds.attrs["model"] = _model_attrs(plan.model)
    return ds


def _run_model(plan: AdvicePlan, batch_size: int, progress: bool | None, notify: Any) -> np.ndarray:
    assert plan.model is not None
    run = plan.model
    img_true, names = _matched_img_true(plan)
    outputs = run.outputs
    if outputs is not None:
        outputs = dataclasses.replace(outputs, batch_size=batch_size)
    sees = {"the model": run.spec.model} if isinstance(run.spec.model, str) else {}
    return score_model(
        img_true,
        names,
        run.spec,
        run.variant,
        metric_kernel(plan.metric),
        batch_size=batch_size,
        outputs=outputs,
        sources_of=sees,
        progress=progress,
        notify=notify,
    )


def _model_attrs(run: ModelRun) -> dict[str, Any]:
    spec = run.spec
    return {
        "model": spec.source,
        "sha256": spec.sha256,
        "layout": spec.layout,
        "input_range": spec.input_range,
        "output_range": spec.output_range,
        "providers": list(spec.providers),
        "input": run.variant.name,
        "input_definition": run.variant.definition,
        "outputs": ROUNDING,
        "saved_outputs": None if run.outputs is None else run.outputs.store,
    }


def _select(results: xr.Dataset, variant: str, split: Split, metric: str) -> xr.Dataset:
    variants = tuple(str(v) for v in results[schema.VARIANT].values)
    if variant not in variants:
        raise ValueError(
            f"variant must be one of the results' variants {variants}, got {variant!r}"
        )
    if metric not in results.data_vars:
        held = tuple(m for m in METRIC_NAMES if m in results.data_vars)
        raise ValueError(
            f"metric {metric!r} is not in the results (they hold {held}): rerun "
            f"`pupsnr run --metrics {','.join((*held, metric))}` to compute it"
        )
    selected = query.select_split(results, split).sortby(schema.SCALE)
    if selected.sizes[schema.IMAGE] == 0:
        raise ValueError(f"no images in split {split!r}")
    return selected


def _open_results(results: str | xr.Dataset, storage_options: dict[str, Any] | None) -> xr.Dataset:
    if isinstance(results, str):
        return open_store(results, "psnr", storage_options=storage_options)
    if not isinstance(results, xr.Dataset):
        raise TypeError(f"results must be a path or an xr.Dataset, got {type(results).__name__}")
    schema.validate(results, "psnr", name="results")
    return results


def _open_images(
    results: xr.Dataset,
    images: str | xr.Dataset | None,
    storage_options: dict[str, Any] | None,
) -> tuple[xr.Dataset, str | None]:
    """The images store holding img_true, and its location (None for a dataset given).

    ``images`` when given, else the one recorded in ``results``.
    """
    location = None
    if isinstance(images, xr.Dataset):
        schema.validate(images, "images", name="images")
        found = images
    else:
        found, location = _find_images(results, images, storage_options)
    size = results.attrs.get("size")
    if size is not None and found.sizes[schema.Y] != size:
        raise ValueError(
            f"images store has size {found.sizes[schema.Y]}, the results were computed at {size}"
        )
    return found, location


def _find_images(
    results: xr.Dataset, images: str | None, storage_options: dict[str, Any] | None
) -> tuple[xr.Dataset, str | None]:
    try:
        ds, where, note = query.images_store_of(results, images, storage_options=storage_options)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"the images store given, {images!r}, does not exist; pass it with --images STORE"
        ) from err
    if ds is None and where is None:
        raise ValueError(f"{note} (images=...)")
    if ds is None:
        raise FileNotFoundError(f"{note}; pass it with --images STORE")
    return ds, where
