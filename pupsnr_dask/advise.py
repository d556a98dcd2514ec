"""Which U-Net depths does a model really use? Its output PSNR against the p_i yardstick.

A U-Net decoder at level *i* (scale ``2**i``, resolution ``size / 2**i``) gets a skip
connection; p_i, the PSNR of the input variant PU-transformed at scale ``2**i``, is what copying
that skip achieves in the pixel domain (SPEC.md, "Why anyone wants these numbers"). p_i falls as
the level deepens, so a model's output beats the coarse (deep) copies first::

    PSNR
     |  p_0
     |     p_1
     |        p_2
     |- - - - - - - - - - - - - - - - output PSNR
     |           p_3
     |              p_4
     |                 p_5
     +--+--+--+--+--+--+----> level (deeper = coarser skip)
        0  1  2  3  4  5
        as good | beaten: the output holds more than that skip copy
                ^ crossover = 3 (shallowest level beaten with all deeper ones);
                  skip level 2: the levels below it are not needed to explain the PSNR

Steps, each a small function:

1. :func:`match_predictions` — pair the dataset's images with the model's outputs by relative
   path (see its docstring for the rule); missing, extra and ambiguous ones are reported;
2. :func:`build_output_psnr` — one lazy task per batch: decode each output like ingest does
   (``decode_rgb``, then ``resize_lanczos`` when it is not ``size x size``), PSNR against
   img_true; nothing is computed;
3. :func:`compare_paired` / :func:`compare_number` — per level: mean p_i, mean output PSNR,
   paired differences with a Student t-interval, the share of images where the output is at or
   below p_i, a verdict, and the crossover level;
4. :func:`format_advice` and :func:`plot_advice` — tables and a figure.

:func:`advise` runs them all and returns an ``xr.Dataset``: :func:`plan_advice` (open, check,
pair; no pixel read) then :func:`run_advice` (compute on the active scheduler, compare), which the
command line calls apart so that bad input fails before a cluster starts.
"""

from __future__ import annotations

import copy
import math
import posixpath
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dask
import numpy as np
import xarray as xr
from dask.base import tokenize
from PIL import Image

from pupsnr_dask import plots, schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.experiment import Split, select_split
from pupsnr_dask.ingest import list_files
from pupsnr_dask.kernels.image import (
    IMAGE_EXTENSIONS,
    decode_budget,
    decode_failure,
    decode_rgb,
    image_extension,
    resize_lanczos,
)
from pupsnr_dask.kernels.metrics import DATA_RANGE, psnr_from_mse, psnr_kernel
from pupsnr_dask.report import FORMATS, Format, format_value, records_to_csv
from pupsnr_dask.stats import t_half_width
from pupsnr_dask.store.zarr_io import images_store_of, open_store

DEFAULT_CONFIDENCE = 0.95
DEFAULT_BATCH_SIZE = 32
#: How many names a report lists for each kind of mismatch.
N_EXAMPLES = 5

BEATEN = "beaten: the output holds more than this skip carries"
AS_GOOD = "as good: a skip copy at this depth would do as well"
WORSE = "worse: a skip copy at this depth would do better"
ABOVE = "above mean p_i (a single number: no interval)"
NOT_ABOVE = "not above mean p_i: a skip copy would do as well (a single number: no interval)"
NO_INTERVAL = "undecided: fewer than 2 images, no interval"

METHOD = (
    "Per image, d_i = PSNR(output) - p_i, both against img_true. +inf (identical images) is "
    "replaced by the ceiling {ceiling:.2f} dB, the PSNR of the smallest non-zero error between "
    "uint8 images of this size (one value off by 1), before subtracting: an identical output "
    "beats every finite p_i and ties (d = 0) with an identical skip copy. Mean of d_i with a "
    "{pct:g}% Student t-interval (mean +- t * sd / sqrt(n), n - 1 degrees of freedom). Verdict: "
    "beaten when the lower bound > margin ({margin:g} dB), worse when the upper bound < -margin, "
    "else as good. Crossover: the shallowest level beaten together with every deeper level."
)
NUMBER_LIMITS = (
    "Only one number: no per-image pairing, so no confidence interval, no share of images, "
    "and no way to tell a model that is better on every image from one that is better on "
    "average. The number is read as the mean of per-image PSNRs (dB, against the stored "
    "img_true of these images); if the training log averages the MSE over images or batches before "
    "taking the log, compare it with the 'p_i of mean MSE' column instead, which is lower."
)


@dataclass
class Matching:
    """How a model's outputs were paired with the dataset's images.

    Attributes
    ----------
    n_images : int
        Dataset images considered (after the split).
    pairs : list of (int, str)
        Position among those images, and the name of its prediction (a relative path in a
        folder, or a ``source`` in a store), in dataset order.
    missing, extra, ambiguous, ignored, resized, unreadable : list of str
        Dataset images with no prediction; predictions with no dataset image; dataset images
        with several candidate predictions (``"a/b.jpg <- a/b.png, a/b.webp"``); files without
        an image extension; predictions resized to the dataset's size (``"name (w x h)"``);
        predictions that could not be decoded (``"name: reason"``).
    """

    n_images: int
    pairs: list[tuple[int, str]]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def n_matched(self) -> int:
        """Images with a usable prediction."""
        return len(self.pairs)

    def lines(self) -> list[str]:
        """Human-readable report, one kind of mismatch a line, with a few names each."""
        out = [f"predictions: {self.n_matched} of {self.n_images} images matched"]
        kinds = (
            ("missing", "without a prediction", self.missing),
            ("extra", "predictions without a dataset image (ignored)", self.extra),
            ("ambiguous", "images with several candidate predictions (left out)", self.ambiguous),
            ("unreadable", "predictions that cannot be decoded (left out)", self.unreadable),
            ("resized", "predictions of another size, LANCZOS-resized (kept)", self.resized),
            ("ignored", "files without an image extension (ignored)", self.ignored),
        )
        for label, what, names in kinds:
            if names:
                out.append(f"  {label} {len(names)}: {what}, e.g. {_examples(names)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """Counts and up to :data:`N_EXAMPLES` names of each kind (JSON-ready)."""
        d = asdict(self)
        out: dict[str, Any] = {"n_images": self.n_images, "n_matched": self.n_matched}
        for key in ("missing", "extra", "ambiguous", "ignored", "resized", "unreadable"):
            out[f"n_{key}"] = len(d[key])
            out[key] = d[key][:N_EXAMPLES]
        return out


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(names[:N_EXAMPLES])
    return shown + (f", ... ({len(names) - N_EXAMPLES} more)" if len(names) > N_EXAMPLES else "")


def _stem(path: str) -> str:
    ext = image_extension(path)  # as ingest reads it: "..png" is a PNG named "."
    return path[: len(path) - len(ext)] if ext else path


def match_predictions(sources: Sequence[str], names: Sequence[str]) -> Matching:
    """Pair dataset images with predictions by relative path.

    The rule: a prediction whose name equals an image's ``source`` is its prediction. Otherwise
    a prediction with the same path up to the extension is (``a/b.jpg`` <- ``a/b.png``), when
    exactly one such prediction is left and no other unmatched image shares that stem; when
    several are, the image is reported as ambiguous and left out. Paths are case-sensitive.

    Parameters
    ----------
    sources : sequence of str
        The dataset images' ``source`` paths, in dataset order.
    names : sequence of str
        Relative paths (``/`` separators) of the predictions.

    Returns
    -------
    Matching
        Pairs in dataset order, and the images and predictions left unpaired.

    Examples
    --------
    >>> m = match_predictions(["a/x.jpg", "b.jpg", "c.jpg"], ["a/x.png", "b.jpg", "z.png"])
    >>> m.pairs, m.missing, m.extra
    ([(0, 'a/x.png'), (1, 'b.jpg')], ['c.jpg'], ['z.png'])
    """
    available = set(names)
    exact = {s for s in sources if s in available}
    candidates: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if name not in exact:
            candidates[_stem(name)].append(name)
    open_stems = Counter(_stem(s) for s in sources if s not in exact)
    matching = Matching(len(sources), [])
    taken: set[str] = set()
    for i, source in enumerate(sources):
        found = [source] if source in exact else candidates.get(_stem(source), [])
        if not found:
            matching.missing.append(source)
        elif source not in exact and (len(found) > 1 or open_stems[_stem(source)] > 1):
            matching.ambiguous.append(f"{source} <- {', '.join(sorted(found))}")
            taken.update(found)
        else:
            matching.pairs.append((i, found[0]))
            taken.add(found[0])
    matching.extra = [n for n in names if n not in taken]
    return matching


# --- predictions: a folder of files or a store ------------------------------------------------


def is_zarr_store(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``path`` is the root of a Zarr group (v2 or v3)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    root = root.rstrip("/")
    return bool(fs.exists(f"{root}/zarr.json") or fs.exists(f"{root}/.zgroup"))


def open_prediction_store(
    store: str | xr.Dataset, storage_options: dict[str, Any] | None = None
) -> xr.Dataset:
    """Open (lazily) and check a store of a model's outputs in the layout of an images store.

    It needs ``images`` ``(image, y, x, channel)`` uint8 with 3 channels and a ``source``
    coordinate; the other coordinates and the ``pupsnr_kind`` attribute are not required.
    """
    name = store if isinstance(store, str) else "predictions"
    if isinstance(store, xr.Dataset):
        ds = store
    else:
        try:
            with warnings.catch_warnings():  # a model's outputs need no consolidated metadata
                warnings.filterwarnings("ignore", message="Failed to open Zarr store with cons")
                ds = xr.open_zarr(store, storage_options=storage_options, consolidated=None)
        except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
            raise schema.StoreError(f"{name!r} is not a readable Zarr store: {err}") from err
    var = ds.get(schema.IMAGES)
    if var is None or var.dims != schema.IMAGE_DIMS or var.dtype != np.uint8:
        raise schema.StoreError(
            f"predictions {name!r} must hold {schema.IMAGES!r} {schema.IMAGE_DIMS} uint8, "
            "as an images store does"
        )
    if var.sizes[schema.CHANNEL] != 3 or schema.SOURCE not in ds.coords:
        raise schema.StoreError(f"predictions {name!r} need 3 channels and a 'source' coordinate")
    sources = [str(s) for s in ds[schema.SOURCE].values]
    if len(set(sources)) != len(sources):
        raise schema.StoreError(f"predictions {name!r} repeat some 'source' values")
    return ds


def _fit(rgb: Image.Image, size: int) -> tuple[np.ndarray, str]:
    """The image at ``size x size`` (LANCZOS, as ingest) and, when resized, its old size."""
    if rgb.size == (size, size):
        return np.asarray(rgb, dtype=np.uint8), ""
    return resize_lanczos(rgb, size), f"{rgb.size[0]}x{rgb.size[1]}"


Notes = list[tuple[int, str, str]]


def _psnr_files_batch(
    truth: np.ndarray, root: str, names: list[str], storage_options: dict[str, Any] | None
) -> tuple[np.ndarray, Notes]:
    """Worker task: decode one batch of prediction files, PSNR of each against ``truth``."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(root, **(storage_options or {}))
    preds = np.zeros_like(truth)
    notes: Notes = []
    budget = decode_budget()
    for j, name in enumerate(names):
        try:  # the formats of its extension only, its size and memory checked first
            with fs.open(posixpath.join(base.rstrip("/"), name), "rb") as fp:
                rgb = decode_rgb(fp, name=name, max_bytes=budget)
                preds[j], resized = _fit(rgb, truth.shape[1])
        except Exception as err:  # a bad file is reported, never a crash
            notes.append((j, "unreadable", decode_failure(err)))
            continue
        if resized:
            notes.append((j, "resized", resized))
    return _psnr_with_notes(truth, preds, notes)


def _psnr_array_batch(truth: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, Notes]:
    """Worker task: PSNR of one batch of stored predictions, resized when of another size."""
    if preds.shape == truth.shape:
        return psnr_kernel(truth, preds), []
    fitted = np.empty_like(truth)
    notes: Notes = []
    for j, pred in enumerate(preds):
        fitted[j], resized = _fit(Image.fromarray(pred), truth.shape[1])
        notes.append((j, "resized", resized))
    return _psnr_with_notes(truth, fitted, notes)


def _psnr_with_notes(
    truth: np.ndarray, preds: np.ndarray, notes: Notes
) -> tuple[np.ndarray, Notes]:
    psnr = psnr_kernel(truth, preds)
    psnr[[j for j, kind, _ in notes if kind == "unreadable"]] = np.nan
    return psnr, notes


def build_output_psnr(
    truth: Any,
    predictions: str | xr.Dataset,
    names: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    storage_options: dict[str, Any] | None = None,
) -> list[Any]:
    """Lazy per-image PSNR of a model's outputs against img_true: one task per batch.

    Parameters
    ----------
    truth : dask.array.Array or np.ndarray
        img_true of the matched images, shape ``(n, size, size, 3)``, uint8.
    predictions : str or xr.Dataset
        A folder of image files (path or fsspec URL), or a prediction store (see
        :func:`open_prediction_store`).
    names : sequence of str
        For each of the ``n`` images, its prediction: a relative path in the folder, or a
        ``source`` of the store.
    batch_size : int
        Images per task.
    storage_options : dict, optional
        fsspec options for a folder in object storage.

    Returns
    -------
    list of dask.delayed.Delayed
        One per batch, each computing ``(psnr, notes)``: PSNR in dB, float64 ``(b,)`` (NaN for an
        unreadable file) and ``(index in batch, "resized" | "unreadable", detail)`` notes.
        Nothing is computed.
    """
    import dask.array as da

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if len(names) != len(truth):
        raise ValueError(
            f"names must name one prediction per image, got {len(names)} for {len(truth)} images"
        )
    if not isinstance(truth, da.Array):
        truth = da.from_array(np.asarray(truth), chunks=(batch_size, -1, -1, -1))
    blocks = truth.rechunk((batch_size, -1, -1, -1)).to_delayed().ravel()
    starts = range(0, len(names), batch_size)
    if isinstance(predictions, str):
        token = tokenize(truth.name, predictions, list(names))
        task = dask.delayed(_psnr_files_batch, pure=True)
        return [
            task(
                block,
                predictions,
                list(names[b : b + batch_size]),
                storage_options,
                dask_key_name=f"pupsnr-advise-{token}-{k:06d}",
            )
            for k, (block, b) in enumerate(zip(blocks, starts, strict=True))
        ]
    position = {str(s): i for i, s in enumerate(predictions[schema.SOURCE].values)}
    pixels = predictions[schema.IMAGES].data
    if not isinstance(pixels, da.Array):
        pixels = da.from_array(pixels, chunks=(batch_size, -1, -1, -1))
    pixels = pixels[np.array([position[n] for n in names], dtype=np.int64)]
    pixels = pixels.rechunk((batch_size, -1, -1, -1))
    preds = pixels.to_delayed().ravel()
    token = tokenize(truth.name, pixels.name)
    task = dask.delayed(_psnr_array_batch, pure=True)
    return [
        task(block, pred, dask_key_name=f"pupsnr-advise-{token}-{k:06d}")
        for k, (block, pred) in enumerate(zip(blocks, preds, strict=True))
    ]


# --- statistics --------------------------------------------------------------------------------


def psnr_ceiling_db(size: int, data_range: float = DATA_RANGE) -> float:
    """PSNR of the smallest non-zero error between uint8 ``size x size x 3`` images.

    Examples
    --------
    >>> round(psnr_ceiling_db(256), 2)
    101.07
    """
    return float(psnr_from_mse(np.array(1.0 / (size * size * 3)), data_range))


def _verdicts(low: np.ndarray, high: np.ndarray, margin_db: float) -> list[str]:
    out = []
    for lo, hi in zip(low, high, strict=True):
        if not np.isfinite(lo):
            out.append(NO_INTERVAL)
        elif lo > margin_db:
            out.append(BEATEN)
        elif hi < -margin_db:
            out.append(WORSE)
        else:
            out.append(AS_GOOD)
    return out


def crossover_index(beaten: Sequence[bool]) -> int | None:
    """Index of the shallowest level beaten together with every deeper one (None if none).

    ``beaten`` is ordered from the shallowest level to the deepest.

    Examples
    --------
    >>> crossover_index([False, False, True, True]), crossover_index([True, False, True, False])
    (2, None)
    """
    k = len(beaten)
    while k > 0 and beaten[k - 1]:
        k -= 1
    return None if k == len(beaten) else k


def _mean_psnr(psnr: np.ndarray) -> np.ndarray:
    """Mean over images (axis 0) as SPEC.md defines it: +inf as soon as one is +inf."""
    with np.errstate(invalid="ignore"):
        return psnr.mean(axis=0)


def compare_paired(
    output_db: np.ndarray,
    p_db: np.ndarray,
    *,
    size: int,
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = 0.0,
) -> dict[str, Any]:
    """Per-level statistics of the paired differences ``output - p_i``.

    Parameters
    ----------
    output_db : np.ndarray
        Shape ``(n,)``, float64: each image's output PSNR (dB, +inf when identical).
    p_db : np.ndarray
        Shape ``(n, levels)``, float64: each image's p_i, levels from shallow to deep.
    size : int
        Image side, for the ceiling that replaces +inf (:func:`psnr_ceiling_db`).
    confidence : float
        Level of the two-sided t-interval.
    margin_db : float
        A difference must exceed this (dB) to count as beating the skip copy.

    Returns
    -------
    dict
        Arrays over levels: ``diff_mean_db``, ``diff_ci_low_db``, ``diff_ci_high_db``,
        ``share_output_le_p``, ``beaten``, ``verdict``; and ``crossover`` (index or None).
    """
    _check_confidence(confidence, margin_db)
    n = len(output_db)
    ceiling = psnr_ceiling_db(size)
    diff = np.minimum(output_db, ceiling)[:, None] - np.minimum(p_db, ceiling)
    mean = diff.mean(axis=0)
    if n >= 2:
        half = t_half_width(diff.std(axis=0, ddof=1), n, confidence)
    else:
        half = np.full(mean.shape, np.nan)
    low, high = mean - half, mean + half
    verdict = _verdicts(low, high, margin_db)
    beaten = np.array([v == BEATEN for v in verdict])
    return {
        "diff_mean_db": mean,
        "diff_ci_low_db": low,
        "diff_ci_high_db": high,
        "share_output_le_p": (output_db[:, None] <= p_db).mean(axis=0),
        "beaten": beaten,
        "verdict": verdict,
        "crossover": crossover_index(beaten.tolist()),
    }


def compare_number(output_db: float, p_mean_db: np.ndarray, margin_db: float = 0.0) -> dict:
    """Per-level comparison of one output PSNR (from a training log) with the mean p_i."""
    _check_confidence(DEFAULT_CONFIDENCE, margin_db)
    diff = output_db - p_mean_db
    beaten = diff > margin_db
    nan = np.full(diff.shape, np.nan)
    return {
        "diff_mean_db": diff,
        "diff_ci_low_db": nan,
        "diff_ci_high_db": nan,
        "share_output_le_p": nan,
        "beaten": beaten,
        "verdict": [ABOVE if b else NOT_ABOVE for b in beaten],
        "crossover": crossover_index(beaten.tolist()),
    }


def _check_confidence(confidence: float, margin_db: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not margin_db >= 0.0:
        raise ValueError(f"margin_db must be >= 0, got {margin_db!r}")


def conclusion(levels: np.ndarray, resolution: np.ndarray, crossover: int | None) -> str:
    """One or two sentences on the crossover, levels ordered shallow to deep."""
    first, last = _lvl(levels[0]), _lvl(levels[-1])
    if crossover is None:
        return (
            f"The output does not beat even the deepest skip copy (level {last}, "
            f"{resolution[-1]} px): a copy of the input at {resolution[-1]} x {resolution[-1]} "
            "already does as well. Check the predictions, their pairing and the variant."
        )
    if crossover == 0:
        return (
            f"The output beats every skip copy (levels {first}-{last}), even at "
            f"{resolution[0]} px: the yardstick explains no level away; the deep layers may "
            "all contribute."
        )
    c, x = crossover, crossover - 1
    return (
        f"Crossover at level {_lvl(levels[c])} ({resolution[c]} px): the output beats the skip "
        f"copies at levels {_lvl(levels[c])}-{last} but not at level {_lvl(levels[x])} "
        f"({resolution[x]} px), whose copy of the input already does as well. By the yardstick, "
        f"levels deeper than {_lvl(levels[x])} are not needed to explain the output's PSNR."
    )


def _lvl(level: float) -> str:
    return f"{level:g}"


# --- the entry point ---------------------------------------------------------------------------


def advise(
    results: str | xr.Dataset,
    predictions: str | xr.Dataset | None = None,
    *,
    variant: str,
    output_psnr: float | None = None,
    images: str | xr.Dataset | None = None,
    split: Split = "all",
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Which U-Net depths does a model really use? Compare its outputs with p_i at every level.

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
        Over ``scale`` (with ``level`` and ``resolution``): ``p_mean_db``, ``p_of_mean_mse_db``,
        ``diff_mean_db``, ``diff_ci_low_db``, ``diff_ci_high_db``, ``share_output_le_p``,
        ``beaten``, ``verdict``; the scalar ``output_mean_db``; with predictions, per image
        ``output_psnr_db`` and ``p_psnr_db`` (image, scale). Attributes: ``variant``, ``split``,
        ``mode``, ``n_images``, ``crossover_level``/``crossover_scale`` (None when no level is
        beaten), ``conclusion``, ``method``, ``matching`` (counts and example names).
    """
    if (predictions is None) == (output_psnr is None):
        raise ValueError("give exactly one of predictions and output_psnr")
    _check_confidence(confidence, margin_db)
    if output_psnr is not None:
        selected = _select(_open_results(results, storage_options), variant, split)
        return _advise_number(selected, variant, float(output_psnr), split, margin_db)
    assert predictions is not None
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


@dataclass
class AdvicePlan:
    """What :func:`plan_advice` opened, checked and paired; no pixel has been read yet."""

    selected: xr.Dataset  #: the results of the split, scales in increasing order
    truth: xr.Dataset  #: the images store holding img_true
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
    """Open and check the stores, pair the predictions with the images; compute nothing.

    Parameters are those of :func:`advise`. Raises ValueError when no prediction matches.
    """
    results_ds = _open_results(results, storage_options)
    selected = _select(results_ds, variant, split)
    truth = _open_truth(results_ds, images, storage_options)
    sources = [str(s) for s in selected[schema.SOURCE].values]
    absent = sorted(set(sources) - {str(s) for s in truth[schema.SOURCE].values})
    if absent:
        raise ValueError(
            f"the images store does not hold the images of the results, e.g. {_examples(absent)}"
        )
    matching, preds = _match(sources, predictions, storage_options)
    if not matching.pairs:
        raise ValueError("no prediction matches a dataset image: " + "; ".join(matching.lines()))
    return AdvicePlan(selected, truth, preds, matching, variant, split, storage_options)


def run_advice(
    plan: AdvicePlan,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
) -> xr.Dataset:
    """Compute the output PSNR of a plan's predictions on the active scheduler and compare.

    Parameters and result are those of :func:`advise`.
    """
    _check_confidence(confidence, margin_db)
    matching = copy.deepcopy(plan.matching)
    output = _output_psnr(plan, matching, batch_size, progress)
    usable = ~np.isnan(output)
    matching.pairs = [pair for pair, ok in zip(matching.pairs, usable, strict=True) if ok]
    if not matching.pairs:
        raise ValueError("no prediction could be decoded: " + "; ".join(matching.lines()))
    paired = plan.selected.isel({schema.IMAGE: [i for i, _ in matching.pairs]})
    return _advise_paired(
        paired, output[usable], plan.variant, plan.split, matching, confidence, margin_db
    )


def _select(results: xr.Dataset, variant: str, split: Split) -> xr.Dataset:
    variants = tuple(str(v) for v in results[schema.VARIANT].values)
    if variant not in variants:
        raise ValueError(
            f"variant must be one of the results' variants {variants}, got {variant!r}"
        )
    selected = select_split(results, split).sortby(schema.SCALE)
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


def _open_truth(
    results: xr.Dataset, images: str | xr.Dataset | None, storage_options: dict[str, Any] | None
) -> xr.Dataset:
    """The images store holding img_true: ``images``, or the one recorded in ``results``."""
    if isinstance(images, xr.Dataset):
        schema.validate(images, "images", name="images")
        truth = images
    else:
        how = "given"
        path = images
        if not path:
            where = results.encoding.get("source")
            path, how = images_store_of(results.attrs, where, storage_options)
        if not path:
            raise ValueError(
                "the results do not record their images store (written by an older pupsnr); "
                "pass it with --images STORE (images=...)"
            )
        try:
            truth = open_store(path, "images", storage_options=storage_options)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"the images store {path!r} ({how}) does not exist; pass it with --images STORE"
            ) from err
    size = results.attrs.get("size")
    if size is not None and truth.sizes[schema.Y] != size:
        raise ValueError(
            f"images store has size {truth.sizes[schema.Y]}, the results were computed at {size}"
        )
    return truth


def _match(
    sources: list[str], predictions: str | xr.Dataset, storage_options: dict[str, Any] | None
) -> tuple[Matching, str | xr.Dataset]:
    """Pair the images with a prediction store (by ``source``) or folder (by relative path)."""
    if isinstance(predictions, xr.Dataset) or is_zarr_store(predictions, storage_options):
        store = open_prediction_store(predictions, storage_options)
        return match_predictions(sources, [str(s) for s in store[schema.SOURCE].values]), store
    if not isinstance(predictions, str):
        raise TypeError(
            f"predictions must be a path or an xr.Dataset, got {type(predictions).__name__}"
        )
    try:
        files = list_files(predictions, storage_options)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise type(err)(f"predictions {predictions!r} is not a folder or a store") from err
    images = [f for f in files if image_extension(f) in IMAGE_EXTENSIONS]
    matching = match_predictions(sources, images)
    matching.ignored = sorted(set(files) - set(images))
    return matching, predictions


def _output_psnr(
    plan: AdvicePlan, matching: Matching, batch_size: int, progress: bool | None
) -> np.ndarray:
    """PSNR of each matched prediction (NaN when unreadable), computed on the cluster.

    Records resized and unreadable predictions in ``matching``.
    """
    truth_ds = plan.truth
    sources = [str(s) for s in plan.selected[schema.SOURCE].values]
    position = {str(s): i for i, s in enumerate(truth_ds[schema.SOURCE].values)}
    rows = np.array([position[sources[i]] for i, _ in matching.pairs], dtype=np.int64)
    names = [name for _, name in matching.pairs]
    truth = truth_ds[schema.IMAGES].data[rows]
    tasks = build_output_psnr(
        truth,
        plan.predictions,
        names,
        batch_size=batch_size,
        storage_options=plan.storage_options,
    )
    parts = compute(*tasks, progress=progress)
    for k, (_, notes) in enumerate(parts):
        for j, kind, detail in notes:
            name = names[k * batch_size + j]
            if kind == "resized":
                matching.resized.append(f"{name} ({detail})")
            else:
                matching.unreadable.append(f"{name}: {detail}")
    return np.concatenate([psnr for psnr, _ in parts])


def _scale_coords(selected: xr.Dataset) -> dict[str, Any]:
    scales = selected[schema.SCALE].values.astype(np.int64)
    levels = np.log2(scales)
    if np.all(levels == np.round(levels)):
        levels = levels.astype(np.int64)
    return {
        schema.SCALE: scales,
        "level": (schema.SCALE, levels),
        schema.RESOLUTION: (schema.SCALE, selected[schema.RESOLUTION].values),
    }


def _advice_dataset(
    selected: xr.Dataset, variant: str, output_mean: float, stats: dict[str, Any]
) -> xr.Dataset:
    """The per-level table as a Dataset over ``scale``."""
    psnr = np.asarray(selected[schema.PSNR].sel({schema.VARIANT: variant}).values, np.float64)
    mse = np.asarray(selected[schema.MSE].sel({schema.VARIANT: variant}).values, np.float64)
    dims = (schema.SCALE,)
    ds = xr.Dataset(
        {
            "p_mean_db": (dims, _mean_psnr(psnr), {"long_name": "mean p_i", "units": "dB"}),
            "p_n_infinite": (dims, np.isinf(psnr).sum(axis=0)),
            "p_of_mean_mse_db": (dims, psnr_from_mse(mse.mean(axis=0)), {"units": "dB"}),
            "output_mean_db": ((), output_mean, {"long_name": "mean output PSNR", "units": "dB"}),
            **{
                key: (dims, np.asarray(stats[key]))
                for key in (
                    "diff_mean_db",
                    "diff_ci_low_db",
                    "diff_ci_high_db",
                    "share_output_le_p",
                    "beaten",
                    "verdict",
                )
            },
        },
        coords=_scale_coords(selected),
    )
    crossover = stats["crossover"]
    levels, scales = ds["level"].values, ds[schema.SCALE].values
    skip = len(levels) - 1 if crossover is None else crossover - 1
    ds.attrs = {
        "variant": variant,
        "n_images": int(selected.sizes[schema.IMAGE]),
        "crossover_level": None if crossover is None else levels[crossover].item(),
        "crossover_scale": None if crossover is None else int(scales[crossover]),
        "skip_level": None if skip < 0 else levels[skip].item(),
        "conclusion": conclusion(levels, ds[schema.RESOLUTION].values, crossover)
        if NO_INTERVAL not in stats["verdict"]
        else "Fewer than 2 paired images: no interval, so no verdict and no crossover.",
    }
    return ds


def _advise_paired(
    paired: xr.Dataset,
    output: np.ndarray,
    variant: str,
    split: str,
    matching: Matching,
    confidence: float,
    margin_db: float,
) -> xr.Dataset:
    p_db = np.asarray(paired[schema.PSNR].sel({schema.VARIANT: variant}).values, np.float64)
    size = int(paired.attrs.get("size", 256))
    stats = compare_paired(output, p_db, size=size, confidence=confidence, margin_db=margin_db)
    ds = _advice_dataset(paired, variant, float(_mean_psnr(output)), stats)
    ds = ds.assign_coords(
        {
            schema.IMAGE: paired[schema.IMAGE].values,
            schema.SOURCE: (schema.IMAGE, paired[schema.SOURCE].values),
        }
    )
    ds["output_psnr_db"] = ((schema.IMAGE,), output, {"units": "dB"})
    ds["p_psnr_db"] = ((schema.IMAGE, schema.SCALE), p_db, {"units": "dB"})
    ceiling = psnr_ceiling_db(size)
    ds.attrs.update(
        mode="predictions",
        split=split,
        confidence=confidence,
        margin_db=margin_db,
        ceiling_db=ceiling,
        method=METHOD.format(ceiling=ceiling, pct=100 * confidence, margin=margin_db),
        matching=matching.as_dict(),
        matching_report=matching.lines(),
    )
    return ds


def _advise_number(
    selected: xr.Dataset, variant: str, output_db: float, split: str, margin_db: float
) -> xr.Dataset:
    if math.isnan(output_db):
        raise ValueError(f"output_psnr must be a number of dB, got {output_db!r}")
    psnr = np.asarray(selected[schema.PSNR].sel({schema.VARIANT: variant}).values, np.float64)
    stats = compare_number(output_db, _mean_psnr(psnr), margin_db)
    ds = _advice_dataset(selected, variant, output_db, stats)
    by_mse = compare_number(output_db, ds["p_of_mean_mse_db"].values, margin_db)["crossover"]
    levels, resolution = ds["level"].values, ds[schema.RESOLUTION].values
    first = ds.attrs["conclusion"]
    text = f"By the mean p_i (one number, no interval), {first[0].lower()}{first[1:]}"
    if by_mse != stats["crossover"]:
        other = conclusion(levels, resolution, by_mse)
        text += f" Against the p_i of mean MSE instead: {other[0].lower()}{other[1:]}"
    ds.attrs["conclusion"] = text
    ds.attrs.update(
        mode="output_psnr",
        split=split,
        margin_db=margin_db,
        method="output_psnr - mean p_i per level; beaten when above by more than the margin "
        f"({margin_db:g} dB).",
        limits=NUMBER_LIMITS,
    )
    return ds


# --- tables ------------------------------------------------------------------------------------

COLUMNS = {
    "level": "level",
    "scale": "scale",
    "resolution": "resolution",
    "p_mean_db": "p_i mean",
    "p_of_mean_mse_db": "p_i of mean MSE",
    "output_mean_db": "output mean",
    "diff_mean_db": "output - p_i",
    "ci": "CI",
    "share_output_le_p": "output <= p_i",
    "verdict": "verdict",
}


def _signed(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f}"


def _rows(ds: xr.Dataset) -> list[dict[str, str]]:
    paired = ds.attrs["mode"] == "predictions"
    n = int(ds.attrs["n_images"])
    all_identical = paired and bool(np.isposinf(ds["output_psnr_db"].values).all())
    out = []
    for k in range(ds.sizes[schema.SCALE]):
        low, high = float(ds["diff_ci_low_db"][k]), float(ds["diff_ci_high_db"][k])
        share = float(ds["share_output_le_p"][k])
        row = {
            "level": _lvl(ds["level"].values[k]),
            "scale": str(int(ds[schema.SCALE][k])),
            "resolution": str(int(ds[schema.RESOLUTION][k])),
            "p_mean_db": format_value(float(ds["p_mean_db"][k]), int(ds["p_n_infinite"][k]) == n),
            "p_of_mean_mse_db": format_value(float(ds["p_of_mean_mse_db"][k]), True),
            "output_mean_db": format_value(float(ds["output_mean_db"]), all_identical),
            "diff_mean_db": _signed(float(ds["diff_mean_db"][k])),
            "ci": f"[{_signed(low)}, {_signed(high)}]",
            "share_output_le_p": f"{100 * share:.0f}%",
            "verdict": str(ds["verdict"].values[k]),
        }
        for key in ("p_of_mean_mse_db",) if paired else ("ci", "share_output_le_p"):
            del row[key]
        out.append(row)
    return out


def _header_lines(ds: xr.Dataset) -> list[str]:
    a = ds.attrs
    lines = [f"variant {a['variant']}, split {a['split']}: {a['n_images']} images"]
    if a["mode"] == "predictions":
        lines += a["matching_report"]
        lines.append(
            f"output - p_i: mean of per-image differences, {100 * a['confidence']:g}% "
            "t-interval; output <= p_i: share of images where a skip copy would do as well"
        )
    else:
        lines.append(f"output PSNR {float(ds['output_mean_db']):.2f} dB given as one number")
    return lines


def _footer_lines(ds: xr.Dataset) -> list[str]:
    extra = ds.attrs["method"] if ds.attrs["mode"] == "predictions" else ds.attrs["limits"]
    return [ds.attrs["conclusion"], "", extra]


def format_advice(ds: xr.Dataset, fmt: Format = "text") -> str:
    """Render the output of :func:`advise` as a text or markdown table, CSV or JSON.

    Parameters
    ----------
    ds : xr.Dataset
        From :func:`advise`.
    fmt : {"text", "markdown", "csv", "json"}
        Text and markdown: header (matching report), one row per level, conclusion and method.
        CSV: the rows only (numbers unrounded, "inf"/"nan" as such). JSON: everything, with
        non-finite numbers as null.

    Returns
    -------
    str
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "csv":
        return _csv(ds)
    if fmt == "json":
        return _json(ds)
    rows = _rows(ds)
    header = [COLUMNS[key] for key in rows[0]]
    cells = [list(r.values()) for r in rows]
    head = _header_lines(ds)
    if fmt == "markdown":
        head = [("  - " if line.startswith("  ") else "- ") + line.strip() for line in head]
        table = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header[:-1])]
        table[1] += "|:---|"
        table += ["| " + " | ".join(r) + " |" for r in cells]
    else:
        widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header) - 1)]
        table = [
            "  ".join([*(c.rjust(w) for c, w in zip(r, widths, strict=False)), r[-1]])
            for r in [header, *cells]
        ]
    return "\n".join([*head, "", *table, "", *_footer_lines(ds)])


def _numeric_records(ds: xr.Dataset, json_safe: bool) -> list[dict[str, Any]]:
    def num(x: Any) -> Any:
        x = float(x)
        return None if json_safe and not math.isfinite(x) else x

    out = []
    for k in range(ds.sizes[schema.SCALE]):
        out.append(
            {
                "level": ds["level"].values[k].item(),
                "scale": int(ds[schema.SCALE][k]),
                "resolution": int(ds[schema.RESOLUTION][k]),
                "p_mean_db": num(ds["p_mean_db"][k]),
                "p_of_mean_mse_db": num(ds["p_of_mean_mse_db"][k]),
                "output_mean_db": num(ds["output_mean_db"]),
                "diff_mean_db": num(ds["diff_mean_db"][k]),
                "diff_ci_low_db": num(ds["diff_ci_low_db"][k]),
                "diff_ci_high_db": num(ds["diff_ci_high_db"][k]),
                "share_output_le_p": num(ds["share_output_le_p"][k]),
                "beaten": bool(ds["beaten"][k]),
                "verdict": str(ds["verdict"].values[k]),
            }
        )
    return out


def _csv(ds: xr.Dataset) -> str:
    return records_to_csv(_numeric_records(ds, json_safe=False))


def _json(ds: xr.Dataset) -> str:
    import json

    keep = (
        "variant",
        "split",
        "mode",
        "n_images",
        "confidence",
        "margin_db",
        "ceiling_db",
        "crossover_level",
        "crossover_scale",
        "skip_level",
        "conclusion",
        "method",
        "limits",
        "matching",
    )
    doc = {k: ds.attrs[k] for k in keep if k in ds.attrs}
    doc["rows"] = _numeric_records(ds, json_safe=True)
    return json.dumps(doc, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))


# --- figure ------------------------------------------------------------------------------------


def check_plotting() -> None:
    """Raise ImportError, with the install hint, unless matplotlib can be imported."""
    plots.require_matplotlib()


def plot_advice(ds: xr.Dataset, path: str | None = None) -> Any:
    """Plot the output PSNR distribution against the p_i curve, and the paired differences.

    Left: p_i per level (box: spread over images; line: mean) and the model's output PSNR
    (line: mean; band: 10th-90th percentile over images). Right: mean ``output - p_i`` per level
    with its confidence interval; filled markers are the levels the output beats. +inf values
    are not drawn as points (their count is noted under the figure, with the conclusion).

    Parameters
    ----------
    ds : xr.Dataset
        From :func:`advise`.
    path : str, optional
        Save the figure there (format from the extension) and close it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_plotting()
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5), constrained_layout=True)
    x = np.arange(ds.sizes[schema.SCALE])
    levels, resolution = ds["level"].values, ds[schema.RESOLUTION].values
    ticks = [f"{_lvl(lv)}\n{int(r)} px" for lv, r in zip(levels, resolution, strict=True)]
    notes = _plot_levels(left, ds, x)
    notes += _plot_differences(right, ds, x)
    for ax in (left, right):
        ax.set_xticks(x, ticks)
        ax.set_xlabel("U-Net level (resolution of its skip connection)")
        ax.grid(axis="y", alpha=0.3)
        _mark_crossover(ax, ds)
    a = ds.attrs
    matched = a.get("matching", {})
    of = (
        f" (of {matched['n_images']})"
        if matched.get("n_images", a["n_images"]) != a["n_images"]
        else ""
    )
    fig.suptitle(  # parse_math=False: names from the data are drawn as they are ($ too)
        f"Does the model use its deep layers?  variant {a['variant']}, {a['n_images']} images"
        f"{of}, split {a['split']}",
        parse_math=False,
    )
    caption = " ".join([a["conclusion"], *notes])
    fig.supxlabel(
        textwrap.fill(caption, 170), fontsize="small", ha="left", x=0.01, parse_math=False
    )
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def _plot_levels(ax: Any, ds: xr.Dataset, x: np.ndarray) -> list[str]:
    notes = []
    if "p_psnr_db" in ds:
        p = ds["p_psnr_db"].values
        boxes = [col[np.isfinite(col)] for col in p.T]
        shown = [k for k, b in enumerate(boxes) if len(b)]
        ax.boxplot(
            [boxes[k] for k in shown],
            positions=x[shown],
            widths=0.35,
            patch_artist=True,
            boxprops={"facecolor": "#c6dbef", "edgecolor": "#6baed6"},
            medianprops={"color": "#2171b5"},
            whiskerprops={"color": "#6baed6"},
            capprops={"color": "#6baed6"},
            flierprops={"markersize": 3, "markeredgecolor": "#6baed6"},
        )
        if np.isinf(p).any():
            notes.append(f"{int(np.isinf(p).sum())} infinite p_i (identical copies) not drawn.")
    p_mean = ds["p_mean_db"].values
    finite = np.isfinite(p_mean)
    ax.plot(x[finite], p_mean[finite], "o-", color="#08519c", label="p_i: skip copy (mean)")
    notes += _plot_output(ax, ds, x)
    if any("+inf" in note for note in notes):
        low, high = ax.get_ylim()  # room for the +inf markers above the data
        ax.set_ylim(low, high + 0.1 * (high - low))
    ax.set_ylabel("PSNR against img_true (dB)")
    ax.set_title("Output PSNR against the p_i yardstick")
    # Below the axes, where it hides no data.
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small", frameon=False
    )
    return notes


def _plot_output(ax: Any, ds: xr.Dataset, x: np.ndarray) -> list[str]:
    span = [x[0] - 0.4, x[-1] + 0.4]
    color = "#d94801"
    if "output_psnr_db" not in ds:
        value = float(ds["output_mean_db"])
        ax.plot(
            span, [value, value], color=color, label=f"model output (one number): {value:.2f} dB"
        )
        mse = ds["p_of_mean_mse_db"].values
        ax.plot(x, mse, "s--", color="#6baed6", label="p_i of mean MSE")
        return []
    out = ds["output_psnr_db"].values
    finite = out[np.isfinite(out)]
    notes = []
    if len(finite) < len(out):
        n_inf = len(out) - len(finite)
        ax.plot(
            x,
            np.full(len(x), 0.97),
            "^",
            transform=ax.get_xaxis_transform(),
            color=color,
            label=f"model output = img_true (+inf): {n_inf} images",
        )
        notes.append(
            f"{n_inf} outputs identical to img_true (+inf) are marked by triangles at the top "
            f"on the left and count as {ds.attrs['ceiling_db']:.2f} dB in the differences."
        )
    if len(finite):
        lo, hi = np.percentile(finite, [10, 90])
        ax.fill_between(
            span, lo, hi, color=color, alpha=0.15, label="model output: 10-90% of images"
        )
        mean = finite.mean()
        what = "mean of finite" if notes else "mean"
        ax.plot(span, [mean, mean], color=color, label=f"model output ({what}): {mean:.2f} dB")
    return notes


def _plot_differences(ax: Any, ds: xr.Dataset, x: np.ndarray) -> list[str]:
    diff = ds["diff_mean_db"].values
    low, high = ds["diff_ci_low_db"].values, ds["diff_ci_high_db"].values
    beaten = ds["beaten"].values.astype(bool)
    paired = ds.attrs["mode"] == "predictions"
    ok = np.isfinite(diff)
    if paired:
        err = np.vstack([diff - low, high - diff])
        ax.errorbar(x[ok], diff[ok], yerr=err[:, ok], fmt="none", ecolor="#525252", capsize=4)
    for mask, face, label in (
        (beaten & ok, "#238b45", "beaten"),
        (~beaten & ok, "white", "not beaten"),
    ):
        if mask.any():
            ax.plot(
                x[mask],
                diff[mask],
                "o",
                markersize=8,
                markerfacecolor=face,
                markeredgecolor="#238b45",
                linestyle="none",
                label=label,
            )
    if paired:
        for k in np.flatnonzero(ok):
            share = float(ds["share_output_le_p"][k])
            ax.annotate(
                f"{100 * share:.0f}% ≤",
                (x[k], high[k] if np.isfinite(high[k]) else diff[k]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize="x-small",
            )
    low_y, high_y = ax.get_ylim()  # room for the share labels above the intervals
    ax.set_ylim(low_y, high_y + 0.08 * (high_y - low_y))
    ax.axhline(0.0, color="black", linewidth=0.8)
    margin = float(ds.attrs.get("margin_db", 0.0))
    if margin > 0:
        ax.axhline(margin, color="black", linewidth=0.8, linestyle=":")
    what = f"mean, {100 * ds.attrs['confidence']:g}% CI" if paired else "one number, no CI"
    ax.set_ylabel(f"output - p_i (dB; {what})")
    ax.set_title(
        "Paired difference (% = share of images where output ≤ p_i)"
        if paired
        else "Output PSNR minus mean p_i"
    )
    # Below the axes, where it hides no data.
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small", frameon=False
    )
    return []


def _mark_crossover(ax: Any, ds: xr.Dataset) -> None:
    level = ds.attrs.get("crossover_level")
    if level is None or ds.attrs.get("skip_level") is None:
        return
    k = int(np.flatnonzero(ds["level"].values == level)[0])
    ax.axvline(k - 0.5, color="#238b45", linestyle="--", linewidth=1)
    ax.text(
        k - 0.45,
        0.02,
        "crossover",
        transform=ax.get_xaxis_transform(),
        color="#238b45",
        fontsize="small",
        va="bottom",
    )
