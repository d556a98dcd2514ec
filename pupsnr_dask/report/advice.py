"""The table of :func:`pupsnr_dask.advise.advise_depths`: one row a U-Net depth.

Text and markdown: the matching report, the table, the conclusion and how it was computed.
CSV: the rows only, numbers unrounded. JSON: everything, non-finite numbers as null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.advise import DEPTH
from pupsnr_dask.defaults import Format
from pupsnr_dask.report.tables import check_format, format_value, render

#: Column headings of the text and markdown tables.
COLUMNS = {
    "depth": "depth",
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
#: Numeric columns of the CSV and JSON rows, after depth, scale and resolution.
NUMBERS = (
    "p_mean_db",
    "p_of_mean_mse_db",
    "output_mean_db",
    "diff_mean_db",
    "diff_ci_low_db",
    "diff_ci_high_db",
    "share_output_le_p",
)
#: Attributes of the advice that its JSON keeps.
JSON_ATTRS = (
    "variant",
    "metric",
    "split",
    "mode",
    "n_images",
    "confidence",
    "margin_db",
    "ceiling_db",
    "crossover_depth",
    "crossover_scale",
    "skip_depth",
    "conclusion",
    "advice_method",
    "limits",
    "matching",
    "model",
)


def _signed(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f}"


def _row(ds: xr.Dataset, k: int, all_identical: bool) -> dict[str, str]:
    low, high = float(ds["diff_ci_low_db"][k]), float(ds["diff_ci_high_db"][k])
    n = int(ds.attrs["n_images"])
    return {
        "depth": f"{ds[DEPTH].values[k]:g}",
        "scale": str(int(ds[schema.SCALE][k])),
        "resolution": str(int(ds[schema.RESOLUTION][k])),
        "p_mean_db": format_value(float(ds["p_mean_db"][k]), int(ds["p_n_infinite"][k]) == n),
        "p_of_mean_mse_db": format_value(float(ds["p_of_mean_mse_db"][k]), True),
        "output_mean_db": format_value(float(ds["output_mean_db"]), all_identical),
        "diff_mean_db": _signed(float(ds["diff_mean_db"][k])),
        "ci": f"[{_signed(low)}, {_signed(high)}]",
        "share_output_le_p": f"{100 * float(ds['share_output_le_p'][k]):.0f}%",
        "verdict": str(ds["verdict"].values[k]),
    }


def advice_frame(ds: xr.Dataset) -> pd.DataFrame:
    """The rows of the text and markdown tables, formatted, headed by :data:`COLUMNS`."""
    paired = ds.attrs["mode"] == "predictions"
    all_identical = paired and bool(np.isposinf(ds["output_psnr_db"].values).all())
    rows = [_row(ds, k, all_identical) for k in range(ds.sizes[schema.SCALE])]
    drop = ("p_of_mean_mse_db",) if paired else ("ci", "share_output_le_p")
    df = pd.DataFrame(rows).drop(columns=list(drop))
    return df.rename(columns=COLUMNS)


def advice_records(ds: xr.Dataset) -> pd.DataFrame:
    """One row a depth, numbers unrounded (CSV and JSON)."""
    n = ds.sizes[schema.SCALE]

    def floats(name: str) -> list[float]:
        return np.broadcast_to(ds[name].values, (n,)).astype(float).tolist()

    return pd.DataFrame(
        {
            "depth": ds[DEPTH].values.tolist(),
            "scale": ds[schema.SCALE].values.astype(int).tolist(),
            "resolution": ds[schema.RESOLUTION].values.astype(int).tolist(),
            **{key: floats(key) for key in NUMBERS},
            "beaten": ds["beaten"].values.astype(bool).tolist(),
            "verdict": [str(v) for v in ds["verdict"].values],
        }
    )


def _header_lines(ds: xr.Dataset) -> list[str]:
    a = ds.attrs
    metric = a.get("metric", "psnr")
    lines = [f"variant {a['variant']}, split {a['split']}: {a['n_images']} images"]
    if metric != "psnr":
        lines[0] += f"; metric {metric} (the columns' values are {metric}, not PSNR)"
    if "model" in a:
        m = a["model"]
        lines.append(
            f"model {m['model']} (SHA-256 {m['sha256'][:12]}...; {m['layout']}, input "
            f"{m['input_range']}, output {m['output_range']}) run on {m['input']}: {m['outputs']}"
        )
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
    extra = ds.attrs["advice_method"] if ds.attrs["mode"] == "predictions" else ds.attrs["limits"]
    return [ds.attrs["conclusion"], "", extra]


def format_advice(ds: xr.Dataset, fmt: Format = "text") -> str:
    """Render the output of :func:`pupsnr_dask.advise.advise_depths` as text, CSV or JSON.

    Parameters
    ----------
    ds : xr.Dataset
        From ``advise_depths``.
    fmt : {"text", "markdown", "csv", "json"}
        Text and markdown: header (matching report), one row per depth, conclusion and method.
        CSV: the rows only (numbers unrounded, "inf"/"nan" as such). JSON: everything, with
        non-finite numbers as null.

    Returns
    -------
    str
    """
    check_format(fmt)
    if fmt == "csv":
        return render(advice_records(ds), "csv")
    if fmt == "json":
        meta: dict[str, Any] = {k: ds.attrs[k] for k in JSON_ATTRS if k in ds.attrs}
        return render(advice_records(ds), "json", meta=meta)
    head = _header_lines(ds)
    if fmt == "markdown":
        head = [("  - " if line.startswith("  ") else "- ") + line.strip() for line in head]
    table = render(advice_frame(ds), fmt, left=[COLUMNS["verdict"]])
    return "\n".join([*head, "", table, "", *_footer_lines(ds)])
