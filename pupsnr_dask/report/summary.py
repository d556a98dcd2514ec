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

from pupsnr_dask.defaults import Format
from pupsnr_dask.query import Summary, statistic_names
from pupsnr_dask.report.tables import check_format, format_value, render

#: The statistics of :func:`pupsnr_dask.query.summarize` that the tables show for PSNR, with
#: titles (:func:`pupsnr_dask.query.statistic_names` gives those of every metric).
STATISTICS = statistic_names("psnr")


def _metric(summary: Summary) -> str:
    return str(summary.attrs.get("metric", "psnr"))


def _digits(summary: Summary) -> int:
    """Decimals shown: 2 for dB, 4 for a dimensionless metric (SSIM)."""
    return 2 if summary.attrs.get("units", "dB") == "dB" else 4


def _by_scale(summary: Summary, cell: Any) -> pd.DataFrame:
    """Rows = scale (with its resolution), columns = variant, ``cell(j, k)`` in each."""
    variants = summary.variants
    rows = []
    for k, (scale, resolution) in enumerate(zip(summary.scales, summary.resolutions, strict=True)):
        row = {"scale": str(scale), "resolution": str(resolution)}
        rows.append(row | {v: cell(j, k) for j, v in enumerate(variants)})
    return pd.DataFrame(rows, columns=["scale", "resolution", *variants])


def statistic_frame(summary: xr.Dataset | Summary, stat: str) -> pd.DataFrame:
    """One statistic of ``summary`` as SPEC.md lays it out, formatted (``"—"``, ``"∞"``)."""
    summary = Summary.of(summary)
    n, digits = summary.n_images, _digits(summary)
    values, n_infinite = summary.values[stat], summary.values["n_infinite"]

    def cell(j: int, k: int) -> str:
        return format_value(float(values[j, k]), int(n_infinite[j, k]) == n, digits=digits)

    return _by_scale(summary, cell)


def interval_frame(summary: xr.Dataset | Summary) -> pd.DataFrame:
    """Mean of the finite values with its 95% interval, from :func:`query.summary_table`.

    The values are PSNRs or those of the table's metric: 2 decimals for dB, 4 for SSIM.
    """
    summary = Summary.of(summary)
    d = _digits(summary)
    means, lows, highs = (
        summary.values[name] for name in ("finite_mean_psnr_db", "ci95_low_db", "ci95_high_db")
    )

    def cell(j: int, k: int) -> str:
        mean, low, high = float(means[j, k]), float(lows[j, k]), float(highs[j, k])
        if np.isnan(mean):
            return "—"
        return f"{mean:.{d}f}" if np.isnan(low) else f"{mean:.{d}f} [{low:.{d}f}, {high:.{d}f}]"

    return _by_scale(summary, cell)


def records_frame(summary: xr.Dataset | Summary) -> pd.DataFrame:
    """One row per (variant, scale): counts and every statistic, unrounded."""
    summary = Summary.of(summary)
    rows = []
    metric = _metric(summary)
    stats = statistic_names(metric)
    for j, variant in enumerate(summary.variants):
        for k, (scale, resolution) in enumerate(
            zip(summary.scales, summary.resolutions, strict=True)
        ):
            row: dict[str, Any] = {
                "metric": metric,
                "variant": variant,
                "scale": scale,
                "resolution": resolution,
                "n_images": summary.n_images,
                "n_infinite": int(summary.values["n_infinite"][j, k]),
            }
            rows.append(row | {s: float(summary.values[s][j, k]) for s in stats})
    return pd.DataFrame(rows)


def format_summary(summary: xr.Dataset | Summary, fmt: Format = "text") -> str:
    """Render the output of :func:`pupsnr_dask.query.summarize` as text.

    Parameters
    ----------
    summary : xr.Dataset or Summary
        Dims ``(variant, scale)``, from ``summarize`` (or its figures, from
        :func:`pupsnr_dask.query.summary_figures`, which need no dask.array).
    fmt : {"text", "markdown", "csv", "json"}
        Tables laid out as SPEC.md (rows = scale, columns = variant) for text and markdown;
        one row per (variant, scale) for csv and json (+inf as null in json).

    Returns
    -------
    str
    """
    check_format(fmt)
    summary = Summary.of(summary)
    metric = _metric(summary)
    if fmt in ("csv", "json"):
        meta = {
            "n_images": summary.n_images,
            "split": summary.attrs.get("split"),
            "metric": metric,
            "aggregate": summary.attrs.get("aggregate"),
        }
        return render(records_frame(summary), fmt, meta=meta)
    lines = [f"{summary.n_images} images, split: {summary.attrs.get('split', 'all')}"]
    if metric != "psnr":
        lines.append(
            f"metric: {metric} ({summary.attrs.get('units')}, higher is better); dataset figure: "
            f"{summary.attrs.get('aggregate')}"
        )
    for stat, title in statistic_names(metric).items():
        heading = f"## {title}" if fmt == "markdown" else title
        lines += ["", heading, "", render(statistic_frame(summary, stat), fmt)]
    return "\n".join(lines)
