"""One self-contained HTML page about a results store: tables, plots, extremes, provenance.

Every picture is embedded as a base64 data URI and the style sheet is inline: the page has no
script and loads nothing, so it opens from disk, by mail or as a CI artefact. The page is the
jinja2 template ``templates/report.html.j2`` (every value HTML-escaped) with the style sheet
``templates/report.css``.

To keep it light (1.3 MB instead of 8.3 MB for 1,000 images), pictures are encoded at the
size they are shown: photographs as lossy WebP (JPEG when Pillow lacks WebP); the cells of a
PU grid, constant on scale x scale blocks, at their own resolution (``size // scale`` pixels,
lossless when magnified 4x or more), magnified by the browser without smoothing; the plot as
lossless WebP (the same pixels as its PNG). Each thumbnail is embedded once (an SVG
``<image>``) and drawn by ``<use>`` wherever the image appears. Sections::

    1. Tables        mean PSNR (SPEC.md's layout), standard deviation, PSNR of the mean MSE,
                     mean of the finite PSNRs with its 95% interval
    2. Plot          plots.psnr_figure
    3. Extremes      per variant x scale, the images with the lowest and highest PSNR
                     (thumbnails of img_true, linked to their PU grids)
    4. PU grids      the PU grid of each image shown in 3.
    5. Provenance    parameters, definitions, data set size, versions, dates

Sections 3 and 4 need the pixels, from the images store: given explicitly, or found through
the ``images_store`` attributes that :func:`pupsnr_dask.experiment.run` records (looked up by
:func:`pupsnr_dask.zarr_io.images_store_of`, through :func:`pupsnr_dask.query.images_store_of`).
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import importlib.resources
import io
import platform
import re
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import xarray as xr
from markupsafe import Markup
from PIL import Image, features

from pupsnr_dask import grid, query, registry, schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.defaults import DEFAULT_METRIC, DEFAULT_TOP, Split
from pupsnr_dask.report import plots, summary, tables
from pupsnr_dask.store.zarr_io import open_store

#: Grids drawn at most; more extreme images are listed without one (a grid is ~25 kB).
MAX_GRIDS = 40
THUMBNAIL_PX = 72
GRID_CELL_PX = 128
#: Characters of a thumbnail's caption at most (two lines under the thumbnail).
CAPTION_CHARS = 26
#: Quality of the lossy pictures (WebP, or JPEG without WebP).
LOSSY_QUALITY = 80
#: A grid cell magnified this many times or more is embedded losslessly (PNG).
LOSSLESS_MAGNIFICATION = 4
VERSIONED = (
    "pupsnr-dask",
    "numpy",
    "xarray",
    "dask",
    "distributed",
    "zarr",
    "pillow",
    "matplotlib",
)
#: Attributes of the results shown in the provenance section, in this order.
PROVENANCE_ATTRS = (
    "size",
    "method",
    "data_range",
    schema.VERSION_ATTR,
    "mse_definition",
    "psnr_definition",
    "pu_definition",
)

Picks = dict[tuple[str, int], tuple[xr.DataArray, xr.DataArray] | None]
Pictures = dict[int, dict[str, Any]]


def data_uri(data: bytes, fmt: str) -> str:
    """``data:image/FMT;base64,...`` for encoded picture bytes."""
    return f"data:image/{fmt};base64," + base64.b64encode(data).decode("ascii")


def picture_format(*, lossless: bool) -> str:
    """``"webp"`` when Pillow can write WebP, else ``"png"`` (lossless) or ``"jpeg"``."""
    if features.check("webp"):
        return "webp"
    return "png" if lossless else "jpeg"


def encode_picture(image: Image.Image, *, lossless: bool = False) -> str:
    """A data URI of ``image``: lossless WebP (or PNG), or WebP (or JPEG) at LOSSY_QUALITY.

    An RGB image whose three channels are equal (the ``gray`` variant) is encoded as one.
    """
    if image.mode == "RGB":
        r, g, b = (np.asarray(c) for c in image.split())
        if np.array_equal(r, g) and np.array_equal(g, b):
            image = image.convert("L")
    fmt = picture_format(lossless=lossless)
    options: dict[str, Any] = {
        "webp": {"lossless": lossless, "quality": LOSSY_QUALITY, "method": 6},
        "png": {"optimize": True},
        "jpeg": {"quality": LOSSY_QUALITY, "optimize": True},
    }[fmt]
    buf = io.BytesIO()
    image.save(buf, format=fmt.upper(), **options)
    return data_uri(buf.getvalue(), fmt)


def figure_uri(png: bytes) -> str:
    """A data URI of a figure rendered as PNG: the same pixels, as lossless WebP if possible."""
    with Image.open(io.BytesIO(png)) as image:
        return encode_picture(image.copy(), lossless=True)


def thumbnail_uri(pixels: np.ndarray, size: int = THUMBNAIL_PX) -> str:
    """A data URI of one ``(h, w, 3)`` uint8 image, resized with LANCZOS to ``size``, lossy."""
    return encode_picture(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS))


def cell_uri(cell: np.ndarray, scale: int, cell_px: int = GRID_CELL_PX) -> str:
    """A data URI of one grid cell, ``(size, size, 3)`` uint8, as drawn ``cell_px`` wide.

    A PU-transformed cell is constant on ``scale x scale`` blocks: it is embedded at its own
    resolution (one pixel a block, exactly), which the browser magnifies without smoothing;
    lossless when magnified :data:`LOSSLESS_MAGNIFICATION` times or more, where lossy
    artefacts would show. Other cells are box-filtered down to ``cell_px`` (lossy).
    """
    size = cell.shape[0]
    if scale > 1 and size % scale == 0:
        small = cell[::scale, ::scale]
        if np.array_equal(np.repeat(np.repeat(small, scale, 0), scale, 1), cell):
            if size // scale <= cell_px:
                lossless = cell_px >= LOSSLESS_MAGNIFICATION * (size // scale)
                return encode_picture(Image.fromarray(small), lossless=lossless)
    img = Image.fromarray(cell)
    if img.width != cell_px:
        img = img.resize((cell_px, cell_px), Image.Resampling.BOX)
    return encode_picture(img)


def caption(source: str, width: int = CAPTION_CHARS) -> str:
    """``source`` in at most ``width`` characters, cut in the middle to keep folder and name.

    Examples
    --------
    >>> caption("a/very/long/path/to/the/folder/name.jpg", 24)
    'a/very/long/pa…/name.jpg'
    >>> caption("short/name.png")
    'short/name.png'
    >>> caption("a_very_long_file_name_without_any_folder_0001.png", 20)
    'a_very…lder_0001.png'
    """
    if len(source) <= width:
        return source
    room = width - 1  # for "…"
    folder, _, name = source.rpartition("/")
    tail = "/" + name if folder else name
    keep_end = len(tail) if len(tail) <= room - 3 else room - room // 3  # the name, if it fits
    return source[: room - keep_end] + "…" + source[len(source) - keep_end :]


def captions(sources: dict[int, str], width: int = CAPTION_CHARS) -> dict[int, str]:
    """:func:`caption` of each image; ``"#index caption"`` where two would read the same.

    Examples
    --------
    >>> captions({3: "trip/day1/2019/IMG_01.jpg", 7: "trip/day1/2020/IMG_01.jpg", 9: "n.png"}, 20)
    {3: '#3 trip/…/IMG_01.jpg', 7: '#7 trip/…/IMG_01.jpg', 9: 'n.png'}
    """
    short = {i: caption(src, width) for i, src in sources.items()}
    seen: dict[str, int] = {}
    for text in short.values():
        seen[text] = seen.get(text, 0) + 1
    out = {}
    for i, src in sources.items():
        if seen[short[i]] > 1:
            prefix = f"#{i} "
            out[i] = prefix + caption(src, max(width - len(prefix), 8))
        else:
            out[i] = short[i]
    return out


def store_modified(store: str | None, storage_options: dict[str, Any] | None = None) -> str | None:
    """When a store's metadata was last written (UTC, ISO 8601), or None when unknown."""
    if not store:
        return None
    try:
        fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
        names = [f"{path}/{n}" for n in ("zarr.json", ".zmetadata", ".zgroup")]
        found = next((name for name in names if fs.exists(name)), None)
        if found is None:
            return None
        when = fs.modified(found)
    except (OSError, NotImplementedError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages that produce the numbers and pictures."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_html(
    results: xr.Dataset,
    images: xr.Dataset | None = None,
    *,
    split: Split = "all",
    top: int = DEFAULT_TOP,
    results_name: str | None = None,
    images_name: str | None = None,
    images_note: str = "",
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    metric: str = DEFAULT_METRIC,
) -> str:
    """The HTML page of a results store, for one of the metrics it holds.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    images : xr.Dataset, optional
        Its images store; without it the page has no thumbnails or grids, and says so.
    split : {"train", "test", "all"}
        Which images to report on.
    top : int
        Images with the lowest and with the highest PSNR shown per variant and scale.
    results_name, images_name : str, optional
        Where the stores are, for the provenance section.
    images_note : str
        How the images store was found (from :func:`pupsnr_dask.query.images_store_of`).
    storage_options : dict, optional
        fsspec options, to read the stores' dates.
    progress : bool, optional
        Progress bars while reading; by default when standard error is a terminal.
    metric : str
        What the tables, the plot and the extremes rank by: ``psnr``, or ``psnr_y`` / ``ssim``
        when ``results`` hold them (higher is better for each). The PU grids show PSNR.

    Returns
    -------
    str
        A complete HTML document with no external reference.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    spec = query.check_metric(results, metric)
    cube = query.load_cube(results, split, progress=progress)
    if cube.sizes[schema.IMAGE] == 0:
        raise ValueError(f"no images in split {split!r}")
    picks = _extremes(cube, top, metric)
    pictures = _pictures(images, cube, picks, progress) if images is not None else None
    names = (results_name, images_name)
    return tables.template("report.html.j2").render(
        generator=Markup(GENERATOR),
        css=importlib.resources.files(__package__).joinpath("templates/report.css").read_text(),
        title=results_name or "results",
        n=cube.sizes[schema.IMAGE],
        split=split,
        results_name=results_name or "(in memory)",
        generated=_now(),
        metric=metric,
        measure=spec.long_name,
        units=f" ({spec.units})" if spec.units == "dB" else "",
        aggregate=spec.aggregate,
        tables=_tables(cube, split, metric),
        plot=figure_uri(plots.png_bytes(plots.psnr_figure(cube, metric=metric))),
        top=top,
        images_note=images_note,
        pictures=pictures,
        thumbs=[(i, entry["thumb"]) for i, entry in (pictures or {}).items()],
        extremes=_extremes_rows(cube, picks, pictures, spec),
        grids=[entry for entry in (pictures or {}).values() if "grid" in entry],
        without_grid=[e["source"] for e in (pictures or {}).values() if "grid" not in e],
        provenance=_provenance(results, images, cube, names, images_note, storage_options),
        thumb_px=THUMBNAIL_PX,
        cell_px=GRID_CELL_PX,
        max_grids=MAX_GRIDS,
    )


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _tables(cube: xr.Dataset, split: str, metric: str) -> list[tuple[str, Markup]]:
    """The statistics tables and the interval table, rendered by the one table renderer."""
    table = query.summary_table(cube, metric=metric)
    table.attrs["split"] = split
    names = query.statistic_names(metric)
    frames = [(title, summary.statistic_frame(table, s)) for s, title in names.items()]
    spec = registry.METRICS[metric]
    units = f" ({spec.units})" if spec.units == "dB" else ""
    title = f"Mean of the finite {spec.long_name} values{units} [95% interval]"
    frames.append((title, summary.interval_frame(table)))
    return [(title, Markup(tables.render(df, "html"))) for title, df in frames]


def _extremes(cube: xr.Dataset, top: int, metric: str = schema.PSNR) -> Picks:
    """Lowest and highest ``top`` per variant x scale by ``metric``; None: every PSNR is +inf.

    Every image identical to its target at that scale: there is no worst or best.
    """
    picks: Picks = {}
    for variant in cube[schema.VARIANT].values.tolist():
        for scale in cube[schema.SCALE].values.tolist():
            values = cube[schema.PSNR].sel({schema.VARIANT: variant, schema.SCALE: scale})
            if np.isposinf(values.values).all():
                picks[variant, scale] = None
                continue
            ends = [
                query.extremes(
                    cube, variant, scale, n=top, lowest=lowest, progress=False, metric=metric
                )
                for lowest in (True, False)
            ]
            low, high = ends
            picks[variant, scale] = (low, high)
    return picks


def _shown_images(picks: Picks) -> list[int]:
    """Images in the extremes, most often shown first (ties: by index)."""
    count: dict[int, int] = {}
    for pair in picks.values():
        for arr in pair or ():
            for i in arr[schema.IMAGE].values.tolist():
                count[i] = count.get(i, 0) + 1
    return sorted(count, key=lambda i: (-count[i], i))


def _pictures(
    images: xr.Dataset, cube: xr.Dataset, picks: Picks, progress: bool | None
) -> Pictures:
    """Thumbnail and (for the first MAX_GRIDS) grid of each image in the extremes."""
    coords = query.with_image_coords(cube, images)  # also checks it is the right store
    shown = _shown_images(picks)
    index = images[schema.IMAGE].values
    positions = [int(np.flatnonzero(index == i)[0]) for i in shown]
    (pixels,) = compute(images[schema.IMAGES].isel({schema.IMAGE: positions}), progress=progress)
    variants = cube[schema.VARIANT].values.tolist()
    scales = cube[schema.SCALE].values.tolist()
    out: Pictures = {}
    for k, i in enumerate(shown):
        meta = _image_meta(coords.sel({schema.IMAGE: i}), i)
        out[i] = {**meta, "thumb": thumbnail_uri(pixels.values[k])}
        if k < MAX_GRIDS:
            cells = grid.pu_cells(pixels.values[k], variants, scales, attrs=meta)
            out[i].update(grid_context(cells))
    return out


def _image_meta(one: xr.Dataset, image: int) -> dict[str, Any]:
    return {
        "image": image,
        "source": str(one[schema.SOURCE].values),
        "split": str(one[schema.SPLIT].values),
        "color_score": float(one[schema.COLOR_SCORE].values),
        "original": f"{int(one[schema.ORIGINAL_WIDTH])}×{int(one[schema.ORIGINAL_HEIGHT])}",
    }


def grid_context(cells: xr.DataArray, cell_px: int = GRID_CELL_PX) -> dict[str, Any]:
    """What the template draws of one PU grid: column heads, and a PNG and PSNR per cell.

    Parameters
    ----------
    cells : xr.DataArray
        From :func:`pupsnr_dask.grid.pu_grid` or :func:`pupsnr_dask.grid.pu_cells`.
    cell_px : int
        Side of each cell's picture (box-filtered down from the image size).
    """
    scales = cells[schema.SCALE].values.tolist()
    resolution = cells[schema.RESOLUTION].values.tolist()
    columns = [
        ("original" if s == 1 else f"scale {s}", plots.scale_label(s, r).replace("\n", " · "))
        for s, r in zip(scales, resolution, strict=True)
    ]
    rows = []
    for j, variant in enumerate(cells[schema.VARIANT].values.tolist()):
        row = []
        for k, scale in enumerate(scales):
            text = plots.psnr_text(float(cells[schema.PSNR].values[j, k]))
            src = cell_uri(cells.values[j, k], scale, cell_px)
            row.append({"text": text, "src": src, "scale": scale})
        rows.append((variant, row))
    return {"grid": True, "columns": columns, "rows": rows}


def _thumb(
    value: float,
    image: int,
    source: str,
    name: str,
    pictures: Pictures | None,
    spec: registry.MetricSpec,
) -> dict[str, Any]:
    """What the template draws of one thumbnail; ``picture`` says whether it has one."""
    if np.isinf(value):
        label = "∞"
    else:
        label = f"{value:.2f} dB" if spec.units == "dB" else f"{value:.4f}"
    out = {
        "image": image,
        "label": label,
        "title": f"image {image}: {source}, {spec.long_name} {label}",
        "name": Markup("<wbr>").join(re.split(r"(?<=[/_ -])", name)),  # escapes each part
        "picture": False,
    }
    if pictures is not None:
        entry = pictures[image]
        out.update(picture=True, href=f"#image-{image}" if "grid" in entry else "#grids")
    return out


def _thumbs(
    arr: xr.DataArray,
    names: dict[int, str],
    pictures: Pictures | None,
    spec: registry.MetricSpec,
) -> list[dict[str, Any]]:
    sources = arr[schema.SOURCE].values.tolist()
    triples = zip(arr.values, arr[schema.IMAGE].values.tolist(), sources, strict=True)
    return [_thumb(float(v), i, str(src), names[i], pictures, spec) for v, i, src in triples]


def _shown_sources(picks: Picks) -> dict[int, str]:
    """The source of every image in the extremes, by image index."""
    out: dict[int, str] = {}
    for pair in picks.values():
        for arr in pair or ():
            images = arr[schema.IMAGE].values.tolist()
            out.update(zip(images, map(str, arr[schema.SOURCE].values.tolist()), strict=True))
    return out


def _extremes_rows(
    cube: xr.Dataset, picks: Picks, pictures: Pictures | None, spec: registry.MetricSpec
) -> list[dict]:
    """One row a variant x scale: lowest and highest thumbnails, or None (all +inf)."""
    names = captions(_shown_sources(picks))
    rows = []
    for (variant, scale), pair in picks.items():
        res = int(cube[schema.RESOLUTION].sel({schema.SCALE: scale}))
        ends = None if pair is None else [_thumbs(arr, names, pictures, spec) for arr in pair]
        rows.append({"variant": variant, "scale": scale, "resolution": res, "ends": ends})
    return rows


def _provenance(
    results: xr.Dataset,
    images: xr.Dataset | None,
    cube: xr.Dataset,
    names: tuple[str | None, str | None],
    images_note: str,
    storage_options: dict[str, Any] | None,
) -> list[tuple[str, str, bool]]:
    """``(label, value, as code)`` rows: stores, dates, sizes, definitions, ingest, versions."""
    results_name, images_name = names
    splits = query.strings(results[schema.SPLIT].values)
    counts = ", ".join(f"{s}: {int((splits == s).sum())}" for s in schema.SPLITS)
    items = [
        ("report generated", _now(), False),
        ("results store", results_name or "(in memory)", True),
        ("results written", store_modified(results_name, storage_options) or "unknown", False),
        ("images store", images_name or "none", bool(images_name)),
        ("images store found", images_note or "—", False),
    ]
    if images is not None:
        when = store_modified(images_name, storage_options) or "unknown"
        items.append(("images written", when, False))
    items += [
        ("images in the results", f"{results.sizes[schema.IMAGE]} ({counts})", False),
        ("images in this report", str(cube.sizes[schema.IMAGE]), False),
        ("variants", ", ".join(results[schema.VARIANT].values.tolist()), False),
        ("scales", ", ".join(str(s) for s in results[schema.SCALE].values.tolist()), False),
    ]
    for key in PROVENANCE_ATTRS:
        if key in results.attrs:
            label = "written by pupsnr-dask" if key == schema.VERSION_ATTR else key
            items.append((label.replace("_", " "), str(results.attrs[key]), False))
    items += _ingest_items(results, images)
    items += [(f"version of {k} (this report)", v, False) for k, v in software_versions().items()]
    return items


def _ingest_items(results: xr.Dataset, images: xr.Dataset | None) -> list[tuple[str, str, bool]]:
    ingest = dict(schema.json_attr(results.attrs, "images_store_attrs", {}))
    items = []
    if images is not None:
        ingest.update({k: v for k, v in images.attrs.items() if k not in schema.JSON_ATTRS})
        rejected = schema.json_attr(images.attrs, schema.REJECTED_ATTR, [])
        items.append(("files rejected at ingest", str(len(rejected)), False))
    items += [
        (f"ingest: {str(key).replace('_', ' ')}", str(value), False)
        for key, value in ingest.items()
        if key != schema.KIND_ATTR
    ]
    return items


#: In the head of every page :func:`write_html` writes: what lets a rerun replace it.
GENERATOR = '<meta name="generator" content="pupsnr">'


def check_html_output(output: str) -> None:
    """Raise FileExistsError when a file is at ``output`` that :func:`write_html` did not write.

    Such a file (a user's own page or notes) is never replaced; a page pupsnr wrote is.
    """
    path = Path(output)
    if not path.exists() or path.is_dir():  # a folder: open() says so, as it did before
        return
    with open(path, "rb") as f:
        head = f.read(4096)
    if GENERATOR.encode() not in head:
        raise FileExistsError(
            f"{output!r} exists and pupsnr did not write it: not replaced (pupsnr replaces "
            "only the HTML reports it wrote); remove it or choose another name"
        )


def write_html(
    results: str,
    output: str,
    *,
    images: str | None = None,
    split: Split = "all",
    top: int = DEFAULT_TOP,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    metric: str = DEFAULT_METRIC,
) -> tuple[str, str]:
    """Write the HTML page of the results store at ``results`` to the file ``output``.

    Returns
    -------
    tuple of str
        ``(output, note)``: the note says where the images came from, or why there are none.
    """
    ds = open_store(results, "psnr", storage_options=storage_options)
    image_ds, images_name, note = query.images_store_of(
        ds, images, storage_options=storage_options, results_store=results
    )
    page = build_html(
        ds,
        image_ds,
        split=split,
        top=top,
        results_name=results,
        images_name=images_name,
        images_note=note,
        storage_options=storage_options,
        progress=progress,
        metric=metric,
    )
    check_html_output(output)
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)
    return output, note
