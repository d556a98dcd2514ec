"""Tables of the summary statistics, in the layout of SPEC.md's published table.

Text and markdown: one table a statistic, rows = scale, columns = variant::

    Mean PSNR (dB)

    scale  resolution   true   gray  mosaic
        1         256      —  19.85   15.58
        2         128  24.61  18.65   15.58

CSV and JSON: one row per (variant, scale), numbers unrounded.

Every metric of a results store can be summarised (``summarize(results, metric=...)``): PSNR
has three statistics (mean of the per-image PSNRs, their standard deviation, PSNR of the mean
MSE); ``psnr_y`` and ``ssim`` have the mean and standard deviation of the per-image values
only, and the text says so. SSIM is shown with 4 decimals, dB with 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.defaults import Format
from pupsnr_dask.query import statistic_names
from pupsnr_dask.report.tables import check_format, format_value, render

#: The statistics of :func:`pupsnr_dask.query.summarize` that the tables show for PSNR, with
#: titles (:func:`pupsnr_dask.query.statistic_names` gives those of every metric).
STATISTICS = statistic_names("psnr")


def _metric(summary: xr.Dataset) -> str:
    return str(summary.attrs.get("metric", "psnr"))


def _digits(summary: xr.Dataset) -> int:
    """Decimals shown: 2 for dB, 4 for a dimensionless metric (SSIM)."""
    return 2 if summary.attrs.get("units", "dB") == "dB" else 4


def _by_scale(summary: xr.Dataset, cell: Any) -> pd.DataFrame:
    """Rows = scale (with its resolution), columns = variant, ``cell(j, k)`` in each."""
    variants = [str(v) for v in summary[schema.VARIANT].values]
    rows = []
    for k, scale in enumerate(summary[schema.SCALE].values):
        row = {"scale": str(int(scale)), "resolution": str(int(summary[schema.RESOLUTION][k]))}
        rows.append(row | {v: cell(j, k) for j, v in enumerate(variants)})
    return pd.DataFrame(rows, columns=["scale", "resolution", *variants])


def statistic_frame(summary: xr.Dataset, stat: str) -> pd.DataFrame:
    """One statistic of ``summary`` as SPEC.md lays it out, formatted (``"—"``, ``"∞"``)."""
    n = int(summary["n_images"])
    digits = _digits(summary)

    def cell(j: int, k: int) -> str:
        all_inf = int(summary["n_infinite"].values[j, k]) == n
        return format_value(float(summary[stat].values[j, k]), all_inf, digits=digits)

    return _by_scale(summary, cell)


def interval_frame(summary: xr.Dataset) -> pd.DataFrame:
    """Mean of the finite values with its 95% interval, from :func:`query.summary_table`.

    The values are PSNRs or those of the table's metric: 2 decimals for dB, 4 for SSIM.
    """
    d = _digits(summary)

    def cell(j: int, k: int) -> str:
        mean = float(summary["finite_mean_psnr_db"].values[j, k])
        low = float(summary["ci95_low_db"].values[j, k])
        high = float(summary["ci95_high_db"].values[j, k])
        if np.isnan(mean):
            return "—"
        return f"{mean:.{d}f}" if np.isnan(low) else f"{mean:.{d}f} [{low:.{d}f}, {high:.{d}f}]"

    return _by_scale(summary, cell)


def records_frame(summary: xr.Dataset) -> pd.DataFrame:
    """One row per (variant, scale): counts and every statistic, unrounded."""
    rows = []
    stats = statistic_names(_metric(summary))
    for j, variant in enumerate(summary[schema.VARIANT].values):
        for k, scale in enumerate(summary[schema.SCALE].values):
            row: dict[str, Any] = {
                "metric": _metric(summary),
                "variant": str(variant),
                "scale": int(scale),
                "resolution": int(summary[schema.RESOLUTION].values[k]),
                "n_images": int(summary["n_images"]),
                "n_infinite": int(summary["n_infinite"].values[j, k]),
            }
            rows.append(row | {s: float(summary[s].values[j, k]) for s in stats})
    return pd.DataFrame(rows)


def format_summary(summary: xr.Dataset, fmt: Format = "text") -> str:
    """Render the output of :func:`pupsnr_dask.query.summarize` as text.

    Parameters
    ----------
    summary : xr.Dataset
        Dims ``(variant, scale)``, from ``summarize``.
    fmt : {"text", "markdown", "csv", "json"}
        Tables laid out as SPEC.md (rows = scale, columns = variant) for text and markdown;
        one row per (variant, scale) for csv and json (+inf as null in json).

    Returns
    -------
    str
    """
    check_format(fmt)
    metric = _metric(summary)
    if fmt in ("csv", "json"):
        meta = {
            "n_images": int(summary["n_images"]),
            "split": summary.attrs.get("split"),
            "metric": metric,
            "aggregate": summary.attrs.get("aggregate"),
        }
        return render(records_frame(summary), fmt, meta=meta)
    lines = [f"{int(summary['n_images'])} images, split: {summary.attrs.get('split', 'all')}"]
    if metric != "psnr":
        lines.append(
            f"metric: {metric} ({summary.attrs.get('units')}, higher is better); dataset figure: "
            f"{summary.attrs.get('aggregate')}"
        )
    for stat, title in statistic_names(metric).items():
        heading = f"## {title}" if fmt == "markdown" else title
        lines += ["", heading, "", render(statistic_frame(summary, stat), fmt)]
    return "\n".join(lines)
