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
3. :mod:`~pupsnr_dask.advise.compare` -- per depth: mean p_i, mean output PSNR, paired
   differences with a Student t-interval, the share of images where the output is at or below
   p_i, a verdict, and the crossover depth.

:func:`advise_depths` runs them all and returns an ``xr.Dataset``: :func:`plan_advice` (open,
check, pair; no pixel read) then :func:`run_advice` (build the graph with
:func:`build_advice_graph`, compute it on the active scheduler, compare), which the command line
calls apart so that bad input fails before a cluster starts. Tables and the figure are in
:mod:`pupsnr_dask.report` (``format_advice``, ``plot_advice``); the Dataset is assembled in
:mod:`~pupsnr_dask.advise.dataset`.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import query, schema
from pupsnr_dask.advise.compare import DEFAULT_CONFIDENCE, DEFAULT_MARGIN_DB, check_confidence
from pupsnr_dask.advise.dataset import DEPTH, advise_number, advise_paired
from pupsnr_dask.advise.matching import Matching, examples, match_predictions
from pupsnr_dask.advise.predictions import (
    DEFAULT_BATCH_SIZE,
    build_output_psnr,
    compute_output_psnr,
    pair_predictions,
)
from pupsnr_dask.defaults import Split
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
    "plan_advice",
    "run_advice",
]


def advise_depths(
    results: str | xr.Dataset,
    predictions: str | xr.Dataset | None = None,
    *,
    variant: str,
    output_psnr: float | None = None,
    images: str | xr.Dataset | None = None,
    split: Split = "all",
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = DEFAULT_MARGIN_DB,
    batch_size: int = DEFAULT_BATCH_SIZE,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Which U-Net depths does a model really use? Compare its outputs with p_i at every depth.

    Give either ``predictions`` (the model's output images) or ``output_psnr`` (one number).

    Parameters
    ----------
    results : str or xr.Dataset
        A results store (``pupsnr run``), path or dataset.
    predictions : str or xr.Dataset, optional
        A folder of the model's output images, any format Pillow reads, paired with the dataset
        by relative path (:func:`match_predictions`); decoded, converted to RGB and resized to
        the dataset's size with LANCZOS as ingest does (no colour test). Or a store in the
        layout of an images store, paired by ``source``.
    variant : str
        The input the model sees (a variant of ``results``): "gray" for colourisation,
        "mosaic" for mosaic removal, ...
    output_psnr : float, optional
        The model's mean output PSNR (dB), e.g. from a training log, instead of predictions.
    images : str or xr.Dataset, optional
        The images store holding img_true; by default the path recorded in ``results``.
    split : {"all", "train", "test"}
        Which images of the dataset to compare on.
    confidence : float
        Level of the t-intervals.
    margin_db : float
        How much (dB) the output must beat p_i by to count (default 0: any significant gain).
    batch_size : int
        Images per task when computing the output PSNR.
    storage_options : dict, optional
        fsspec options for stores and folders in object storage.
    progress : bool, optional
        Progress bar on standard error; by default only when it is a terminal.

    Returns
    -------
    xr.Dataset
        Over ``scale`` (with ``depth`` and ``resolution``): ``p_mean_db``, ``p_of_mean_mse_db``,
        ``diff_mean_db``, ``diff_ci_low_db``, ``diff_ci_high_db``, ``share_output_le_p``,
        ``beaten``, ``verdict``; the scalar ``output_mean_db``; with predictions, per image
        ``output_psnr_db`` and ``p_psnr_db`` (image, scale). Attributes: ``variant``, ``split``,
        ``mode``, ``n_images``, ``crossover_depth``/``crossover_scale`` (None when no depth is
        beaten), ``skip_depth``, ``conclusion``, ``advice_method``, ``matching`` (counts and
        example names).
    """
    if (predictions is None) == (output_psnr is None):
        raise ValueError("give exactly one of predictions and output_psnr")
    check_confidence(confidence, margin_db)
    if output_psnr is not None:
        selected = _select(_open_results(results, storage_options), variant, split)
        return advise_number(selected, variant, float(output_psnr), split, margin_db)
    assert predictions is not None  # exactly one of the two, checked above
    plan = plan_advice(
        results,
        predictions,
        variant=variant,
        images=images,
        split=split,
        storage_options=storage_options,
    )
    return run_advice(
        plan,
        confidence=confidence,
        margin_db=margin_db,
        batch_size=batch_size,
        progress=progress,
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
    predictions: str | xr.Dataset  #: a folder, or an opened prediction store
    matching: Matching
    variant: str
    split: str
    storage_options: dict[str, Any] | None = None


def plan_advice(
    results: str | xr.Dataset,
    predictions: str | xr.Dataset,
    *,
    variant: str,
    images: str | xr.Dataset | None = None,
    split: Split = "all",
    storage_options: dict[str, Any] | None = None,
) -> AdvicePlan:
    """Open and check the stores, pair the predictions with the images; read no pixel.

    Parameters are those of :func:`advise_depths`. Raises ValueError when no prediction
    matches.
    """
    results_ds = _open_results(results, storage_options)
    # Labels in memory now, so that building the graph later reads nothing.
    selected = query.load_coords(_select(results_ds, variant, split))
    images_ds = query.load_coords(_open_images(results_ds, images, storage_options))
    sources = [str(s) for s in selected[schema.SOURCE].values]
    absent = sorted(set(sources) - {str(s) for s in images_ds[schema.SOURCE].values})
    if absent:
        raise ValueError(
            f"the images store does not hold the images of the results, e.g. {examples(absent)}"
        )
    matching, preds = pair_predictions(sources, predictions, storage_options)
    if not matching.pairs:
        raise ValueError("no prediction matches a dataset image: " + "; ".join(matching.lines()))
    return AdvicePlan(selected, images_ds, preds, matching, variant, split, storage_options)


def build_advice_graph(
    plan: AdvicePlan, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[list[Any], list[str]]:
    """The lazy tasks of a plan's output PSNRs, and the prediction of each matched image.

    Nothing is computed: :func:`run_advice` computes the tasks.
    """
    sources = [str(s) for s in plan.selected[schema.SOURCE].values]
    position = {str(s): i for i, s in enumerate(plan.images[schema.SOURCE].values)}
    rows = np.array([position[sources[i]] for i, _ in plan.matching.pairs], dtype=np.int64)
    names = [name for _, name in plan.matching.pairs]
    img_true = plan.images[schema.IMAGES].data[rows]
    tasks = build_output_psnr(
        img_true,
        plan.predictions,
        names,
        batch_size=batch_size,
        storage_options=plan.storage_options,
    )
    return tasks, names


def run_advice(
    plan: AdvicePlan,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = DEFAULT_MARGIN_DB,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
) -> xr.Dataset:
    """Compute the output PSNR of a plan's predictions on the active scheduler and compare.

    Parameters and result are those of :func:`advise_depths`.
    """
    check_confidence(confidence, margin_db)
    matching = copy.deepcopy(plan.matching)
    tasks, names = build_advice_graph(plan, batch_size)
    output = compute_output_psnr(tasks, names, matching, batch_size, progress)
    usable = ~np.isnan(output)
    matching.pairs = [pair for pair, ok in zip(matching.pairs, usable, strict=True) if ok]
    if not matching.pairs:
        raise ValueError("no prediction could be decoded: " + "; ".join(matching.lines()))
    paired = plan.selected.isel({schema.IMAGE: [i for i, _ in matching.pairs]})
    return advise_paired(
        paired, output[usable], plan.variant, plan.split, matching, confidence, margin_db
    )


def _select(results: xr.Dataset, variant: str, split: Split) -> xr.Dataset:
    variants = tuple(str(v) for v in results[schema.VARIANT].values)
    if variant not in variants:
        raise ValueError(
            f"variant must be one of the results' variants {variants}, got {variant!r}"
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
    results: xr.Dataset, images: str | xr.Dataset | None, storage_options: dict[str, Any] | None
) -> xr.Dataset:
    """The images store holding img_true: ``images``, or the one recorded in ``results``."""
    if isinstance(images, xr.Dataset):
        schema.validate(images, "images", name="images")
        found = images
    else:
        found = _find_images(results, images, storage_options)
    size = results.attrs.get("size")
    if size is not None and found.sizes[schema.Y] != size:
        raise ValueError(
            f"images store has size {found.sizes[schema.Y]}, the results were computed at {size}"
        )
    return found


def _find_images(
    results: xr.Dataset, images: str | None, storage_options: dict[str, Any] | None
) -> xr.Dataset:
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
    return ds
