"""The figure of :func:`pupsnr_dask.advise.advise_depths`: output PSNR against p_i per depth.

Drawn like :mod:`pupsnr_dask.report.plots`: a ``matplotlib.figure.Figure`` on an Agg canvas,
never ``pyplot`` and never ``matplotlib.use``, so a Jupyter user's backend is left alone::

    left: p_i by depth (boxes over images, line: mean)     right: mean output - p_i by depth
          and the model's output PSNR (line, 10-90% band)         with its interval; filled
                                                                  markers = depths beaten
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.advise import DEPTH
from pupsnr_dask.report.plots import DEFAULT_DPI, literal, new_figure, save_figure


def plot_advice(ds: xr.Dataset, path: str | Path | None = None, *, dpi: int = DEFAULT_DPI) -> Any:
    """Plot the output PSNR distribution against the p_i curve, and the paired differences.

    Left: p_i per depth (box: spread over images; line: mean) and the model's output PSNR
    (line: mean; band: 10th-90th percentile over images). Right: mean ``output - p_i`` per depth
    with its confidence interval; filled markers are the depths the output beats. +inf values
    are not drawn as points (their count is noted under the figure, with the conclusion).

    Parameters
    ----------
    ds : xr.Dataset
        From :func:`pupsnr_dask.advise.advise_depths`.
    path : str or Path, optional
        Also save the figure there (format from the extension).
    dpi : int
        Resolution of the saved picture.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = new_figure(figsize=(12, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.arange(ds.sizes[schema.SCALE])
    depths, resolution = ds[DEPTH].values, ds[schema.RESOLUTION].values
    ticks = [f"{d:g}\n{int(r)} px" for d, r in zip(depths, resolution, strict=True)]
    notes = _plot_depths(left, ds, x) + _plot_differences(right, ds, x)
    for ax in (left, right):
        ax.set_xticks(x, ticks)
        ax.set_xlabel("U-Net depth (resolution of its skip connection)")
        ax.grid(axis="y", alpha=0.3)
        _mark_crossover(ax, ds)
    fig.suptitle(literal(_title(ds.attrs)))
    caption = " ".join([ds.attrs["conclusion"], *notes])
    fig.supxlabel(literal(textwrap.fill(caption, 170)), fontsize="small", ha="left", x=0.01)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


#: How the axes name each metric of ``advise --metric``: (name, unit suffix).
METRIC_LABELS = {"psnr": ("PSNR", " (dB)"), "psnr_y": ("Y-PSNR", " (dB)"), "ssim": ("SSIM", "")}


def _metric_label(ds: xr.Dataset) -> tuple[str, str]:
    metric = ds.attrs.get("metric", "psnr")
    return METRIC_LABELS.get(metric, (metric, ""))


def _title(a: dict[str, Any]) -> str:
    matched = a.get("matching", {})
    of = (
        f" (of {matched['n_images']})"
        if matched.get("n_images", a["n_images"]) != a["n_images"]
        else ""
    )
    return (
        f"Does the model use its deep layers?  variant {a['variant']}, {a['n_images']} images"
        f"{of}, split {a['split']}"
    )


def _plot_depths(ax: Any, ds: xr.Dataset, x: np.ndarray) -> list[str]:
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
    name, unit = _metric_label(ds)
    ax.set_ylabel(f"{name} against img_true{unit}")
    ax.set_title(f"Output {name} against the p_i yardstick")
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
    unit = _metric_label(ds)[1].strip(" ()")
    ax.set_ylabel(f"output - p_i ({unit + '; ' if unit else ''}{what})")
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
    depth = ds.attrs.get("crossover_depth")
    if depth is None or ds.attrs.get("skip_depth") is None:
        return
    k = int(np.flatnonzero(ds[DEPTH].values == depth)[0])
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
