"""Tables of the summary statistics, in the layout of SPEC.md's published table."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Literal

import numpy as np
import xarray as xr

from pupsnr_dask import schema

Format = Literal["text", "markdown", "csv", "json"]
FORMATS = ("text", "markdown", "csv", "json")

STATISTICS = {
    "mean_psnr_db": "Mean PSNR (dB)",
    "std_psnr_db": "Standard deviation of PSNR (dB)",
    "psnr_of_mean_mse_db": "PSNR of the mean MSE (dB)",
}


def format_value(value: float, all_infinite: bool = False) -> str:
    """A PSNR for a table: two decimals, "—" when every image is identical, "∞" otherwise.

    Examples
    --------
    >>> format_value(24.6149), format_value(math.inf, True), format_value(math.inf)
    ('24.61', '—', '∞')
    """
    if math.isinf(value) and value > 0:
        return "—" if all_infinite else "∞"
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}"


def _rows(summary: xr.Dataset, stat: str) -> tuple[list[str], list[list[str]]]:
    variants = [str(v) for v in summary[schema.VARIANT].values]
    header = ["scale", "resolution", *variants]
    rows = []
    n = int(summary["n_images"])
    for k, scale in enumerate(summary[schema.SCALE].values):
        row = [str(int(scale)), str(int(summary[schema.RESOLUTION].values[k]))]
        for j in range(len(variants)):
            value = float(summary[stat].values[j, k])
            all_inf = int(summary["n_infinite"].values[j, k]) == n
            row.append(format_value(value, all_inf))
        rows.append(row)
    return header, rows


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-----:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _title(summary: xr.Dataset) -> str:
    n = int(summary["n_images"])
    return f"{n} images, split: {summary.attrs.get('split', 'all')}"


def format_summary(summary: xr.Dataset, fmt: Format = "text") -> str:
    """Render the output of :func:`pupsnr_dask.experiment.summarize` as text.

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
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "csv":
        return _csv(summary)
    if fmt == "json":
        return json.dumps(
            {
                "n_images": int(summary["n_images"]),
                "split": summary.attrs.get("split"),
                "rows": _records(summary, json_safe=True),
            },
            indent=2,
        )
    table = _text_table if fmt == "text" else _markdown_table
    lines = [_title(summary)]
    for stat, title in STATISTICS.items():
        header, rows = _rows(summary, stat)
        lines += ["", f"## {title}" if fmt == "markdown" else title, "", *table(header, rows)]
    return "\n".join(lines)


def _records(summary: xr.Dataset, *, json_safe: bool) -> list[dict[str, Any]]:
    out = []
    for j, variant in enumerate(summary[schema.VARIANT].values):
        for k, scale in enumerate(summary[schema.SCALE].values):
            row: dict[str, Any] = {
                "variant": str(variant),
                "scale": int(scale),
                "resolution": int(summary[schema.RESOLUTION].values[k]),
                "n_images": int(summary["n_images"]),
                "n_infinite": int(summary["n_infinite"].values[j, k]),
            }
            for stat in STATISTICS:
                value = float(summary[stat].values[j, k])
                row[stat] = None if json_safe and not np.isfinite(value) else value
            out.append(row)
    return out


def records_to_csv(records: list[dict[str, Any]]) -> str:
    """CSV text with a header row from a list of same-keyed dicts ("inf"/"nan" kept as such)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _csv(summary: xr.Dataset) -> str:
    return records_to_csv(_records(summary, json_safe=False))
