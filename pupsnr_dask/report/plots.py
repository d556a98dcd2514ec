"""Pictures of the results: PSNR against scale, and the PU grid of one image.

matplotlib is an optional dependency (``pip install "pupsnr-dask[plot]"``), imported inside the
functions. Figures are made with ``matplotlib.figure.Figure`` on an Agg canvas, never through
``pyplot``, so nothing here touches the global backend or needs a display; in Jupyter a returned
figure shows inline. Text that comes from data (variant names, source paths) goes through
:func:`literal`, so that a ``$`` in a file name is drawn as a ``$``, not parsed as mathtext.

The PU grid of one image (rows: variants, columns: scales, "original" = scale 1; its cells are
computed by :mod:`pupsnr_dask.grid`)::

                original   scale 2   scale 4   ...   scale 32
    true        [img]      [PU 2]    [PU 4]          [PU 32]
    gray        [gray]     [PU 2]    [PU 4]          [PU 32]
    mosaic      [mosaic]   [PU 2]    [PU 4]          [PU 32]
"""

from __future__ import annotations

import io
import math
import os
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import grid, query, registry, schema
from pupsnr_dask.defaults import DEFAULT_DPI, Split
from pupsnr_dask.experiment import SCALES, VARIANTS

INSTALL_HINT = 'plots need matplotlib: pip install "pupsnr-dask[plot]"'


def require_matplotlib() -> Any:
    """Import matplotlib, or raise ImportError with the install hint."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return matplotlib


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global state)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def literal(text: object) -> str:
    r"""``text`` as matplotlib draws it literally: every ``$`` escaped, so no mathtext.

    Examples
    --------
    >>> literal("a $5 and $6 b.png")
    'a \\$5 and \\$6 b.png'
    """
    return str(text).replace("$", r"\$")


def variant_color(variant: str) -> str:
    """The colour of a variant, the same in every plot (matplotlib's tab10 cycle)."""
    names = list(VARIANTS)
    # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED).
    k = names.index(variant) if variant in names else len(names) + zlib.crc32(variant.encode()) % 7
    return f"C{k % 10}"


def scale_label(scale: int, resolution: int, *, depth: bool = True) -> str:
    r"""``"256 px · depth 0"``: the resolution of a scale and, for powers of 2, the U-Net depth.

    Examples
    --------
    >>> scale_label(8, 32)
    '32 px\ndepth 3'
    >>> scale_label(3, 30)
    '30 px'
    """
    d = math.log2(scale)
    if depth and d == int(d):
        return f"{resolution} px\ndepth {int(d)}"
    return f"{resolution} px"


def axis_label(metric: str) -> str:
    """``"PSNR (dB)"``, ``"PSNR on Y (BT.601) (dB)"``, ``"SSIM"``: a metric on an axis."""
    spec = registry.METRICS[metric]
    return f"{spec.long_name} (dB)" if spec.units == "dB" else spec.long_name


def omitted_notes(cube: xr.Dataset, metric: str = "psnr") -> list[str]:
    """One line for each (variant, scale) whose +inf values (identical images) are not drawn."""
    psnr = cube[metric]
    name = registry.METRICS[metric].long_name
    n = psnr.sizes[schema.IMAGE]
    n_inf = (psnr == np.inf).sum(schema.IMAGE)
    notes = []
    for variant in psnr[schema.VARIANT].values.tolist():
        for scale in psnr[schema.SCALE].values.tolist():
            k = int(n_inf.sel({schema.VARIANT: variant, schema.SCALE: scale}))
            if k == n:
                notes.append(
                    f"{literal(variant)} at scale {scale}: all {n} images identical to the "
                    f"target ({name} = +∞), not drawn"
                )
            elif k:
                notes.append(
                    f"{literal(variant)} at scale {scale}: {k} of {n} images identical "
                    f"({name} = +∞), left out of the mean, interval and distribution"
                )
    return notes


def psnr_figure(cube: xr.Dataset, *, title: str | None = None, metric: str = "psnr") -> Any:
    """Two panels: mean PSNR (or ``metric``) against scale with its spread, and its distribution.

    Parameters
    ----------
    cube : xr.Dataset
        ``psnr`` with dims ``(image, variant, scale)`` in memory (:func:`query.load_cube`) and
        the ``resolution`` of each scale.
    title : str, optional
        Figure title; by default the number of images.
    metric : str
        The variable drawn: ``psnr`` (default), ``psnr_y`` or ``ssim`` (all higher-is-better).

    Returns
    -------
    matplotlib.figure.Figure
        Left: for each variant the mean of the finite PSNRs, a band for its 95% confidence
        interval and a lighter one for the 10-90% range of the images, with the resolution
        and U-Net depth of each scale on the top axis. Right: box plots by scale and variant.
        +inf values are left out, with a note under the panels.
    """
    stats = query.spread(cube[metric])
    notes = omitted_notes(cube, metric)
    n = cube.sizes[schema.IMAGE]
    fig = new_figure(figsize=(13, 5.8), layout="constrained")
    bottom = 0.035 * len(notes) + 0.02 if notes else 0.0
    fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})
    _mean_panel(left, stats, metric)
    _distribution_panel(right, cube, metric)
    name = registry.METRICS[metric].long_name
    fig.suptitle(
        literal(title or f"{name} of the PU transform against the target, {n} images"), size=14
    )
    for k, note in enumerate(notes):
        fig.text(0.01, bottom - 0.035 * (k + 1), f"Note: {note}.", size=9, color="0.3")
    return fig


def _mean_panel(ax: Any, stats: xr.Dataset, metric: str = "psnr") -> None:
    from matplotlib.patches import Patch

    scales = stats[schema.SCALE].values
    resolution = stats[schema.RESOLUTION].values
    for variant in stats[schema.VARIANT].values.tolist():
        s = stats.sel({schema.VARIANT: variant})
        color = variant_color(variant)
        ax.fill_between(scales, s.p10_psnr_db, s.p90_psnr_db, color=color, alpha=0.07, lw=0)
        ax.plot(scales, s.p10_psnr_db, ":", color=color, lw=1)
        ax.plot(scales, s.p90_psnr_db, ":", color=color, lw=1)
        ax.fill_between(scales, s.ci95_low_db, s.ci95_high_db, color=color, alpha=0.3, lw=0)
        ax.plot(scales, s.finite_mean_psnr_db, "o-", color=color, label=literal(variant), lw=2)
    low = float(np.nanmin(stats.p10_psnr_db.values))
    high = float(np.nanmax(stats.p90_psnr_db.values))
    ax.set_ylim(low - 0.05 * (high - low), high + 0.4 * (high - low))  # room for the legend
    ax.set_xscale("log", base=2)
    ax.set_xticks(scales, [str(int(v)) for v in scales])
    ax.minorticks_off()
    ax.set_xlabel("PU scale s (average-pool s×s, then upsample)")
    ax.set_ylabel(axis_label(metric))
    ax.set_title(f"Mean {registry.METRICS[metric].long_name} by scale")
    ax.grid(alpha=0.3)
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        scales, [scale_label(int(s), int(r)) for s, r in zip(scales, resolution, strict=True)]
    )
    top.tick_params(labelsize=8)
    top.set_xlabel("resolution (px) and U-Net depth", size=9)
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Patch(color="0.4", alpha=0.4),
        Patch(facecolor="0.85", edgecolor="0.3", linestyle=":"),
    ]
    labels += ["95% interval of the mean", "10–90% of the images"]
    ax.legend(
        handles,
        labels,
        loc="upper right",
        ncols=2,
        fontsize=9,
        title=f"mean {registry.METRICS[metric].long_name} (finite values)",
    )


def _distribution_panel(ax: Any, cube: xr.Dataset, metric: str = "psnr") -> None:
    from matplotlib.patches import Patch

    psnr = cube[metric]
    variants = psnr[schema.VARIANT].values.tolist()
    scales = psnr[schema.SCALE].values.tolist()
    resolution = cube[schema.RESOLUTION].values.tolist()
    width = 0.8 / len(variants)
    for j, variant in enumerate(variants):
        data, positions = [], []
        for k, scale in enumerate(scales):
            values = psnr.sel({schema.VARIANT: variant, schema.SCALE: scale}).values
            values = values[np.isfinite(values)]
            if values.size:
                data.append(values)
                positions.append(k + (j - (len(variants) - 1) / 2) * width)
        if not data:
            continue
        color = variant_color(variant)
        ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.85,
            patch_artist=True,
            manage_ticks=False,
            boxprops={"facecolor": color, "alpha": 0.55, "edgecolor": color},
            medianprops={"color": "black"},
            whiskerprops={"color": color},
            capprops={"color": color},
            flierprops={"markeredgecolor": color, "markersize": 4},
        )
    ax.set_xticks(
        range(len(scales)),
        [f"{s}\n{r} px" for s, r in zip(scales, resolution, strict=True)],
    )
    ax.set_xlim(-0.6, len(scales) - 0.4)
    ax.set_xlabel("PU scale s and resolution")
    ax.set_ylabel(axis_label(metric))
    name = registry.METRICS[metric].long_name
    ax.set_title(f"Per-image {name} distribution (box: quartiles, whiskers: 1.5 IQR)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        [Patch(facecolor=variant_color(v), alpha=0.55) for v in variants],
        [literal(v) for v in variants],
        loc="upper right",
        fontsize=9,
        title="variant",
    )


def plot_psnr(
    results: xr.Dataset,
    split: Split = "all",
    *,
    progress: bool | None = None,
    metric: str = "psnr",
) -> Any:
    """The figure (:func:`psnr_figure`) of one metric of a results store, read with progress."""
    query.check_metric(results, metric)
    cube = query.load_cube(results, split, progress=progress)
    if cube.sizes[schema.IMAGE] == 0:
        raise ValueError(f"no images in split {split!r}")
    n = cube.sizes[schema.IMAGE]
    which = "" if split == "all" else f" of split {split!r}"
    name = registry.METRICS[metric].long_name
    return psnr_figure(
        cube,
        title=f"{name} of the PU transform against the target, {n} images{which}",
        metric=metric,
    )


def tile_grid(cells: xr.DataArray, gap: int = 4, fill: int = 255) -> np.ndarray:
    """The grid's cells side by side as one image, without labels.

    Parameters
    ----------
    cells : xr.DataArray
        From :func:`pupsnr_dask.grid.pu_grid`, dims ``(variant, scale, y, x, channel)``.
    gap : int
        Pixels between cells.
    fill : int
        Value of the gap pixels.

    Returns
    -------
    np.ndarray
        uint8, shape ``(V*h + (V-1)*gap, S*w + (S-1)*gap, 3)``; cell ``(j, k)`` starts at row
        ``j*(h+gap)`` and column ``k*(w+gap)``.
    """
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    pixels = cells.transpose(
        schema.VARIANT, schema.SCALE, schema.Y, schema.X, schema.CHANNEL
    ).values
    nv, ns, h, w, c = pixels.shape
    out = np.full((nv * h + (nv - 1) * gap, ns * w + (ns - 1) * gap, c), fill, dtype=np.uint8)
    for j in range(nv):
        for k in range(ns):
            out[j * (h + gap) : j * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = pixels[j, k]
    return out


def psnr_text(value: float) -> str:
    """A cell title: ``"PSNR 24.61 dB"``, or ``"PSNR ∞ (identical)"``."""
    if math.isinf(value) and value > 0:
        return "PSNR ∞ (identical)"
    return f"PSNR {value:.2f} dB"


def grid_figure(cells: xr.DataArray, *, cell_inches: float = 1.9) -> Any:
    """The labelled PU grid of one image.

    Parameters
    ----------
    cells : xr.DataArray
        From :func:`pupsnr_dask.grid.pu_grid`.
    cell_inches : float
        Size of one cell.

    Returns
    -------
    matplotlib.figure.Figure
        Rows: variants (labelled on the left); columns: "original" then each scale, labelled
        with its resolution and U-Net depth on top; each cell titled with its PSNR.
    """
    variants = cells[schema.VARIANT].values.tolist()
    scales = cells[schema.SCALE].values.tolist()
    resolution = cells[schema.RESOLUTION].values.tolist()
    fig = new_figure(
        figsize=(cell_inches * len(scales) + 0.7, cell_inches * len(variants) + 1.5),
        layout="constrained",
    )
    axes = np.atleast_2d(fig.subplots(len(variants), len(scales), squeeze=False))
    for j, variant in enumerate(variants):
        for k, scale in enumerate(scales):
            ax = axes[j, k]
            ax.imshow(cells.values[j, k], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            value = float(cells[schema.PSNR].values[j, k])
            ax.set_title(psnr_text(value), size=8.5, pad=3)
            if j == 0:
                head = "original" if scale == 1 else f"scale {scale}"
                ax.annotate(
                    f"{head}\n{scale_label(scale, resolution[k])}".replace("\n", " · ", 1),
                    xy=(0.5, 1.0),
                    xycoords="axes fraction",
                    xytext=(0, 16),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    size=9.5,
                    weight="bold",
                )
            if k == 0:
                ax.set_ylabel(literal(variant), size=12, weight="bold")
    width = fig.get_figwidth()
    where = f"image {cells.attrs.get('image', '?')}: {cells.attrs.get('source', '?')}"
    title = textwrap.fill(f"PU transform of {where}", int(width * 8.5))
    fig.suptitle(literal(title), size=12)
    caption = (
        "rows: input variant · columns: PU scale s (average-pool s×s, nearest-neighbour "
        "upsample) · titles: PSNR against the true image (dB)"
    )
    fig.supxlabel(textwrap.fill(caption, int(width * 13)), size=8.5, color="0.3")
    return fig


def plot_grid(
    images: xr.Dataset | str,
    image: int | str,
    variants: Any = tuple(VARIANTS),
    scales: Any = SCALES,
) -> Any:
    """The labelled PU grid (:func:`grid_figure`) of one image of an images store."""
    return grid_figure(grid.pu_grid(images, image, variants, scales))


def figure_path(path: str | Path) -> Path:
    """Where :func:`save_figure` writes ``path``, checked before anything is drawn.

    Without an extension, ``.png`` is added (as matplotlib would). Raises FileNotFoundError
    when its folder does not exist, ValueError when matplotlib cannot write its extension,
    FileExistsError when a file is there that pupsnr did not write (a PNG it marked).
    """
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    ext = os.path.splitext(path.name)[1].strip(".")
    if not ext:
        path = path.with_name(path.name.rstrip(".") + ".png")
    elif ext.lower() not in FigureCanvasBase.get_supported_filetypes():
        known = ", ".join(f".{e}" for e in sorted(FigureCanvasBase.get_supported_filetypes()))
        raise ValueError(f"cannot draw a picture as {str(path)!r}: give a file ending in {known}")
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"folder {str(path.parent)!r} of {str(path)!r} does not exist")
    if path.exists() and not _written_by_pupsnr(path):
        raise FileExistsError(
            f"{str(path)!r} exists and pupsnr did not write it: not replaced (pupsnr replaces "
            "only the PNG pictures it wrote); remove it or choose another name"
        )
    return path


#: The ``Software`` text of every PNG that :func:`save_figure` writes: what lets a rerun
#: replace it, and nothing else.
PNG_SOFTWARE = "pupsnr"


def _written_by_pupsnr(path: Path) -> bool:
    """True when ``path`` is a PNG that :func:`save_figure` wrote (its ``Software`` text)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == PNG_SOFTWARE
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def save_figure(fig: Any, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` to ``path`` (format from the extension, e.g. ``.png``); return the path.

    The path is :func:`figure_path`'s (``.png`` added when it has no extension).
    """
    path = figure_path(path)
    png = path.suffix.lower() == ".png"
    fig.savefig(path, dpi=dpi, **({"metadata": {"Software": PNG_SOFTWARE}} if png else {}))
    return path


def png_bytes(fig: Any, *, dpi: int = DEFAULT_DPI) -> bytes:
    """``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
