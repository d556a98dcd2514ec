"""The statistics of ``advise``: a model's output PSNR against p_i, depth by depth.

Per image, ``d_i = PSNR(output) - p_i``; per depth, the mean of ``d_i`` with a Student-t
interval (SciPy's quantile), the share of images where the output is at or below p_i, a verdict
and the crossover. With one number instead of per-image outputs, only the difference with the
mean p_i. Arrays in, arrays out: no store, no dask, no text beyond the verdict and conclusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pupsnr_dask.defaults import DEFAULT_CONFIDENCE, DEFAULT_MARGIN_DB
from pupsnr_dask.kernels.metrics import DATA_RANGE, psnr_from_mse
from pupsnr_dask.query import t_half_width

BEATEN = "beaten: the output holds more than this skip carries"
AS_GOOD = "as good: a skip copy at this depth would do as well"
WORSE = "worse: a skip copy at this depth would do better"
ABOVE = "above mean p_i (a single number: no interval)"
NOT_ABOVE = "not above mean p_i: a skip copy would do as well (a single number: no interval)"
NO_INTERVAL = "undecided: fewer than 2 images, no interval"

ADVICE_METHOD = (
    "Per image, d_i = PSNR(output) - p_i, both against img_true. +inf (identical images) is "
    "replaced by the ceiling {ceiling:.2f} dB, the PSNR of the smallest non-zero error between "
    "uint8 images of this size (one value off by 1), before subtracting: an identical output "
    "beats every finite p_i and ties (d = 0) with an identical skip copy. Mean of d_i with a "
    "{pct:g}% Student t-interval (mean +- t * sd / sqrt(n), n - 1 degrees of freedom). Verdict: "
    "beaten when the lower bound > margin ({margin:g} dB), worse when the upper bound < -margin, "
    "else as good. Crossover: the shallowest depth beaten together with every deeper depth."
)
NUMBER_METHOD = (
    "output_psnr - mean p_i per depth; beaten when above by more than the margin ({margin:g} dB)."
)
NUMBER_LIMITS = (
    "Only one number: no per-image pairing, so no confidence interval, no share of images, "
    "and no way to tell a model that is better on every image from one that is better on "
    "average. The number is read as the mean of per-image PSNRs (dB, against the stored "
    "img_true of these images); if the training log averages the MSE over images or batches before "
    "taking the log, compare it with the 'p_i of mean MSE' column instead, which is lower."
)

FEW_IMAGES = "Fewer than 2 paired images: no interval, so no verdict and no crossover."


def psnr_ceiling_db(size: int, data_range: float = DATA_RANGE) -> float:
    """PSNR of the smallest non-zero error between uint8 ``size x size x 3`` images.

    Examples
    --------
    >>> round(psnr_ceiling_db(256), 2)
    101.07
    """
    return float(psnr_from_mse(np.array(1.0 / (size * size * 3)), data_range))


def verdicts(low: np.ndarray, high: np.ndarray, margin_db: float) -> list[str]:
    """The verdict of each depth from the bounds of its interval of ``output - p_i``."""
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
    """Index of the shallowest depth beaten together with every deeper one (None if none).

    ``beaten`` is ordered from the shallowest depth to the deepest.

    Examples
    --------
    >>> crossover_index([False, False, True, True]), crossover_index([True, False, True, False])
    (2, None)
    """
    k = len(beaten)
    while k > 0 and beaten[k - 1]:
        k -= 1
    return None if k == len(beaten) else k


def mean_psnr(psnr: np.ndarray) -> np.ndarray:
    """Mean over images (axis 0) as SPEC.md defines it: +inf as soon as one is +inf."""
    with np.errstate(invalid="ignore"):
        return psnr.mean(axis=0)


def check_confidence(confidence: float, margin_db: float) -> None:
    """Raise ValueError unless ``0 < confidence < 1`` and ``margin_db >= 0``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not margin_db >= 0.0:
        raise ValueError(f"margin_db must be >= 0, got {margin_db!r}")


def compare_paired(
    output_db: np.ndarray,
    p_db: np.ndarray,
    *,
    size: int,
    confidence: float = DEFAULT_CONFIDENCE,
    margin_db: float = DEFAULT_MARGIN_DB,
) -> dict[str, Any]:
    """Per-depth statistics of the paired differences ``output - p_i``.

    Parameters
    ----------
    output_db : np.ndarray
        Shape ``(n,)``, float64: each image's output PSNR (dB, +inf when identical).
    p_db : np.ndarray
        Shape ``(n, depths)``, float64: each image's p_i, depths from shallow to deep.
    size : int
        Image side, for the ceiling that replaces +inf (:func:`psnr_ceiling_db`).
    confidence : float
        Level of the two-sided t-interval.
    margin_db : float
        A difference must exceed this (dB) to count as beating the skip copy.

    Returns
    -------
    dict
        Arrays over depths: ``diff_mean_db``, ``diff_ci_low_db``, ``diff_ci_high_db``,
        ``share_output_le_p``, ``beaten``, ``verdict``; and ``crossover`` (index or None).
    """
    check_confidence(confidence, margin_db)
    n = len(output_db)
    ceiling = psnr_ceiling_db(size)
    diff = np.minimum(output_db, ceiling)[:, None] - np.minimum(p_db, ceiling)
    mean = diff.mean(axis=0)
    if n >= 2:
        half = t_half_width(diff.std(axis=0, ddof=1), n, confidence)
    else:
        half = np.full(mean.shape, np.nan)
    low, high = mean - half, mean + half
    verdict = verdicts(low, high, margin_db)
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


def compare_number(
    output_db: float, p_mean_db: np.ndarray, margin_db: float = DEFAULT_MARGIN_DB
) -> dict[str, Any]:
    """Per-depth comparison of one output PSNR (from a training log) with the mean p_i."""
    check_confidence(DEFAULT_CONFIDENCE, margin_db)
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


def conclusion(depths: np.ndarray, resolution: np.ndarray, crossover: int | None) -> str:
    """One or two sentences on the crossover, depths ordered shallow to deep."""
    first, last = _depth(depths[0]), _depth(depths[-1])
    if crossover is None:
        return (
            f"The output does not beat even the deepest skip copy (depth {last}, "
            f"{resolution[-1]} px): a copy of the input at {resolution[-1]} x {resolution[-1]} "
            "already does as well. Check the predictions, their pairing and the variant."
        )
    if crossover == 0:
        return (
            f"The output beats every skip copy (depths {first}-{last}), even at "
            f"{resolution[0]} px: the yardstick explains no depth away; the deep layers may "
            "all contribute."
        )
    c, x = crossover, crossover - 1
    return (
        f"Crossover at depth {_depth(depths[c])} ({resolution[c]} px): the output beats the skip "
        f"copies at depths {_depth(depths[c])}-{last} but not at depth {_depth(depths[x])} "
        f"({resolution[x]} px), whose copy of the input already does as well. By the yardstick, "
        f"depths deeper than {_depth(depths[x])} are not needed to explain the output's PSNR."
    )


def _depth(depth: float) -> str:
    return f"{depth:g}"
