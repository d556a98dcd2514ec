"""The advice as an ``xr.Dataset`` over ``scale``: per-depth statistics, labels, conclusion.

Built from the selected results (p_i of each image) and the comparison of
:mod:`pupsnr_dask.advise.compare`; in memory, nothing lazy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.advise.compare import (
    ADVICE_METHOD,
    FEW_IMAGES,
    NO_INTERVAL,
    NUMBER_LIMITS,
    NUMBER_METHOD,
    compare_number,
    compare_paired,
    conclusion,
    mean_psnr,
    psnr_ceiling_db,
)
from pupsnr_dask.advise.matching import Matching
from pupsnr_dask.kernels.metrics import psnr_from_mse

#: The coordinate over ``scale`` holding the U-Net depth, ``log2(scale)``.
DEPTH = "depth"


def _scale_coords(selected: xr.Dataset) -> dict[str, Any]:
    scales = selected[schema.SCALE].values.astype(np.int64)
    depths = np.log2(scales)
    if np.all(depths == np.round(depths)):
        depths = depths.astype(np.int64)
    return {
        schema.SCALE: scales,
        DEPTH: (schema.SCALE, depths),
        schema.RESOLUTION: (schema.SCALE, selected[schema.RESOLUTION].values),
    }


STAT_VARS = (
    "diff_mean_db",
    "diff_ci_low_db",
    "diff_ci_high_db",
    "share_output_le_p",
    "beaten",
    "verdict",
)


def p_values(selected: xr.Dataset, variant: str, metric: str = schema.PSNR) -> np.ndarray:
    """Each image's p_i of ``variant`` in ``metric``: ``(image, scale)`` float64, in memory."""
    return np.asarray(selected[metric].sel({schema.VARIANT: variant}).values, np.float64)


def _advice_dataset(
    selected: xr.Dataset,
    variant: str,
    output_mean: float,
    stats: dict[str, Any],
    metric: str = schema.PSNR,
) -> xr.Dataset:
    """The per-depth table as a Dataset over ``scale``."""
    psnr = p_values(selected, variant, metric)
    mse = np.asarray(selected[schema.MSE].sel({schema.VARIANT: variant}).values, np.float64)
    of_mean_mse = psnr_from_mse(mse.mean(axis=0))
    if metric != schema.PSNR:  # there is no SSIM (or Y-PSNR) of the mean RGB MSE
        of_mean_mse = np.full(of_mean_mse.shape, np.nan)
    dims = (schema.SCALE,)
    ds = xr.Dataset(
        {
            "p_mean_db": (dims, mean_psnr(psnr), {"long_name": "mean p_i", "units": "dB"}),
            "p_n_infinite": (dims, np.isinf(psnr).sum(axis=0)),
            "p_of_mean_mse_db": (dims, of_mean_mse, {"units": "dB"}),
            "output_mean_db": ((), output_mean, {"long_name": "mean output PSNR", "units": "dB"}),
            **{key: (dims, np.asarray(stats[key])) for key in STAT_VARS},
        },
        coords=_scale_coords(selected),
    )
    ds.attrs = {
        "variant": variant,
        "metric": metric,
        "n_images": int(selected.sizes[schema.IMAGE]),
        **_crossover_attrs(ds, stats["crossover"]),
        "conclusion": FEW_IMAGES
        if NO_INTERVAL in stats["verdict"]
        else conclusion(ds[DEPTH].values, ds[schema.RESOLUTION].values, stats["crossover"]),
    }
    return ds


def _crossover_attrs(ds: xr.Dataset, crossover: int | None) -> dict[str, Any]:
    depths, scales = ds[DEPTH].values, ds[schema.SCALE].values
    skip = len(depths) - 1 if crossover is None else crossover - 1
    return {
        "crossover_depth": None if crossover is None else depths[crossover].item(),
        "crossover_scale": None if crossover is None else int(scales[crossover]),
        "skip_depth": None if skip < 0 else depths[skip].item(),
    }


def advise_paired(
    paired: xr.Dataset,
    output: np.ndarray,
    variant: str,
    split: str,
    matching: Matching,
    confidence: float,
    margin_db: float,
    metric: str = schema.PSNR,
) -> xr.Dataset:
    """The advice from per-image output scores: statistics by depth, per-image values kept."""
    p_db = p_values(paired, variant, metric)
    size = int(paired.attrs.get("size", 256))
    stats = compare_paired(output, p_db, size=size, confidence=confidence, margin_db=margin_db)
    ds = _advice_dataset(paired, variant, float(mean_psnr(output)), stats, metric)
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
        advice_method=ADVICE_METHOD.format(ceiling=ceiling, pct=100 * confidence, margin=margin_db),
        matching=matching.as_dict(),
        matching_report=matching.lines(),
    )
    return ds


def advise_number(
    selected: xr.Dataset,
    variant: str,
    output_db: float,
    split: str,
    margin_db: float,
    metric: str = schema.PSNR,
) -> xr.Dataset:
    """The advice from one output score (a training log's number): no interval."""
    if math.isnan(output_db):
        raise ValueError(f"output_psnr must be a number of dB, got {output_db!r}")
    psnr = p_values(selected, variant, metric)
    stats = compare_number(output_db, mean_psnr(psnr), margin_db)
    ds = _advice_dataset(selected, variant, output_db, stats, metric)
    by_mse = stats["crossover"]
    if metric == schema.PSNR:
        by_mse = compare_number(output_db, ds["p_of_mean_mse_db"].values, margin_db)["crossover"]
    ds.attrs.update(
        conclusion=_number_conclusion(ds, by_mse, by_mse != stats["crossover"]),
        mode="output_psnr",
        split=split,
        margin_db=margin_db,
        advice_method=NUMBER_METHOD.format(margin=margin_db),
        limits=NUMBER_LIMITS,
    )
    return ds


def _number_conclusion(ds: xr.Dataset, by_mse: int | None, differs: bool) -> str:
    first = ds.attrs["conclusion"]
    text = f"By the mean p_i (one number, no interval), {first[0].lower()}{first[1:]}"
    if differs:
        other = conclusion(ds[DEPTH].values, ds[schema.RESOLUTION].values, by_mse)
        text += f" Against the p_i of mean MSE instead: {other[0].lower()}{other[1:]}"
    return text
