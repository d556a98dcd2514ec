"""One self-contained HTML page about a results store: tables, plots, extremes, provenance.

Every picture is embedded as a base64 PNG and the style sheet is inline: the page has no
script and loads nothing, so it opens from disk, by mail or as a CI artefact. Sections::

    1. Tables        mean PSNR (SPEC.md's layout), standard deviation, PSNR of the mean MSE,
                     mean of the finite PSNRs with its 95% interval
    2. Plot          plots.psnr_figure
    3. Extremes      per variant x scale, the images with the lowest and highest PSNR
                     (thumbnails of img_true, linked to their PU grids)
    4. PU grids      plots.grid_figure of each image shown in 3.
    5. Provenance    parameters, definitions, data set size, versions, dates

Sections 3 and 4 need the pixels, from the images store: given explicitly, or found through
the ``images_store`` attribute that :func:`pupsnr_dask.experiment.run` records.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.metadata
import io
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import plots, query, report, schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.experiment import Split
from pupsnr_dask.store.zarr_io import images_store_of, open_store

#: Grids drawn at most; more extreme images are listed without one (a grid is ~150 kB).
MAX_GRIDS = 40
THUMBNAIL_PX = 72
GRID_CELL_PX = 128
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

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1320px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f3f3f3; }
.tables { display: flex; flex-wrap: wrap; gap: 0 2.5em; }
.tables h3 { font-size: 1em; margin-bottom: 0; }
.note { color: #555; font-size: .9em; }
img.figure { max-width: 100%; height: auto; border: 1px solid #eee; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.thumb { display: inline-block; text-align: center; font-size: .75em; width: 84px;
         text-decoration: none; color: #333; }
.thumb img { display: block; margin: 0 auto 2px; border: 1px solid #bbb; }
.thumb .name { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.grid { margin: 1.2em 0 2em; }
table.pugrid td, table.pugrid th { border: none; padding: 2px; text-align: center; }
table.pugrid thead th { background: none; font-size: .8em; vertical-align: bottom; }
table.pugrid th.row { writing-mode: vertical-rl; transform: rotate(180deg); font-size: 1.05em; }
table.pugrid img { display: block; image-rendering: pixelated; }
.psnr { font-size: .75em; color: #333; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
"""


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_png(pixels: np.ndarray, size: int = THUMBNAIL_PX) -> bytes:
    """A small PNG of one ``(h, w, 3)`` uint8 image, resized with LANCZOS."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


def find_images_store(
    results: xr.Dataset,
    images: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    results_store: str | None = None,
) -> tuple[xr.Dataset | None, str | None, str]:
    """Open the images store of ``results``: ``images`` when given, else the recorded one.

    The recorded one is looked up by :func:`pupsnr_dask.store.zarr_io.images_store_of`
    (relative to ``results_store`` first, default: where ``results`` was opened from).

    Returns
    -------
    tuple
        ``(dataset or None, location or None, note)``; the note says where the store came from
        or why there is none. An explicit ``images`` that cannot be opened raises.
    """
    if images is not None:
        ds = open_store(images, "images", storage_options=storage_options)
        return ds, images, f"images store {images!r} (given)"
    where = results_store or results.encoding.get("source")
    recorded, how = images_store_of(results.attrs, where, storage_options)
    if not recorded:
        return None, None, how
    try:
        ds = open_store(recorded, "images", storage_options=storage_options)
    except (OSError, ValueError) as err:
        return None, recorded, f"the recorded images store cannot be opened ({how}: {err})"
    return ds, recorded, f"images store {recorded!r} ({how})"


def store_modified(store: str | None, storage_options: dict[str, Any] | None = None) -> str | None:
    """When a store's metadata was last written (UTC, ISO 8601), or None when unknown."""
    if not store:
        return None
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
        for name in ("zarr.json", ".zmetadata", ".zgroup"):
            if fs.exists(f"{path}/{name}"):
                when = fs.modified(f"{path}/{name}")
                break
        else:
            return None
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
    top: int = 3,
    results_name: str | None = None,
    images_name: str | None = None,
    images_note: str = "",
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> str:
    """The HTML page of a results store.

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
        How the images store was found (from :func:`find_images_store`).
    storage_options : dict, optional
        fsspec options, to read the stores' dates.
    progress : bool, optional
        Progress bars while reading; by default when standard error is a terminal.

    Returns
    -------
    str
        A complete HTML document with no external reference.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    cube = query.load_cube(results, split, progress=progress)
    if cube.sizes[schema.IMAGE] == 0:
        raise ValueError(f"no images in split {split!r}")
    summary = query.summary_table(cube)
    summary.attrs["split"] = split
    picks = _extremes(cube, top)
    pictures = _pictures(images, cube, picks, progress) if images is not None else None
    n = cube.sizes[schema.IMAGE]
    body = [
        "<h1>pupsnr: PSNR of the PU transform</h1>",
        f'<p class="sub">{n} images, split {_e(split)}; results '
        f"{_code(results_name or '(in memory)')}; generated {_now()}</p>",
        _tables_section(summary),
        _plot_section(cube),
        _extremes_section(cube, picks, pictures, top, images_note),
        _grids_section(pictures, images_note),
        _provenance_section(
            results, images, cube, results_name, images_name, images_note, storage_options
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>pupsnr report: {html.escape(results_name or 'results')}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _Html(str):
    """Markup built here from escaped parts; any other ``str`` is text, escaped by :func:`_e`."""


def _e(value: Any) -> str:
    """``value`` as HTML: text (anything from a store or a name) escaped, :class:`_Html` kept."""
    return value if isinstance(value, _Html) else html.escape(str(value))


def _code(text: Any) -> _Html:
    return _Html(f"<code>{_e(text)}</code>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of plain-text cells (escaped), right-aligned as numbers."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tables_section(summary: xr.Dataset) -> str:
    parts = ['<h2 id="tables">Tables</h2><div class="tables">']
    for stat, title in report.STATISTICS.items():
        header, rows = report._rows(summary, stat)
        parts.append(f"<div><h3>{html.escape(title)}</h3>{_table(header, rows)}</div>")
    header, rows = _interval_rows(summary)
    parts.append(
        "<div><h3>Mean of the finite PSNRs (dB) [95% interval]</h3>"
        f"{_table(header, rows)}</div></div>"
    )
    parts.append(
        '<p class="note">Mean PSNR is the mean of the per-image PSNRs (SPEC.md). "—": every '
        'image is identical to its target (PSNR +∞); "∞": some are, so the mean is +∞; the PSNR '
        "of the mean MSE and the mean of the finite PSNRs stay finite. The interval is Student's "
        "t on the finite values.</p>"
    )
    return "".join(parts)


def _interval_rows(summary: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    variants = summary[schema.VARIANT].values.tolist()
    header = ["scale", "resolution", *variants]
    rows = []
    for k, scale in enumerate(summary[schema.SCALE].values.tolist()):
        row = [str(scale), str(int(summary[schema.RESOLUTION].values[k]))]
        for j in range(len(variants)):
            mean = float(summary["finite_mean_psnr_db"].values[j, k])
            low = float(summary["ci95_low_db"].values[j, k])
            high = float(summary["ci95_high_db"].values[j, k])
            if np.isnan(mean):
                row.append("—")
            elif np.isnan(low):
                row.append(f"{mean:.2f}")
            else:
                row.append(f"{mean:.2f} [{low:.2f}, {high:.2f}]")
        rows.append(row)
    return header, rows


def _plot_section(cube: xr.Dataset) -> str:
    fig = plots.psnr_figure(cube)
    uri = png_data_uri(plots.png_bytes(fig))
    return (
        '<h2 id="plot">PSNR against scale</h2>'
        f'<img class="figure" src="{uri}" alt="Mean PSNR against PU scale for each variant, '
        'with the spread across images, and the per-image distribution by scale">'
    )


Picks = dict[tuple[str, int], tuple[xr.DataArray, xr.DataArray] | None]


def _extremes(cube: xr.Dataset, top: int) -> Picks:
    """Lowest and highest ``top`` per variant x scale; None where every PSNR is +inf."""
    picks: Picks = {}
    for variant in cube[schema.VARIANT].values.tolist():
        for scale in cube[schema.SCALE].values.tolist():
            values = cube[schema.PSNR].sel({schema.VARIANT: variant, schema.SCALE: scale})
            if np.isposinf(values.values).all():
                picks[variant, scale] = None
                continue
            low = query.extremes(cube, variant, scale, n=top, lowest=True, progress=False)
            high = query.extremes(cube, variant, scale, n=top, lowest=False, progress=False)
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
) -> dict[int, dict[str, Any]]:
    """Thumbnail and (for the first MAX_GRIDS) grid PNG of each image in the extremes."""
    coords = query.with_image_coords(cube, images)  # also checks it is the right store
    shown = _shown_images(picks)
    index = images[schema.IMAGE].values
    positions = [int(np.flatnonzero(index == i)[0]) for i in shown]
    (pixels,) = compute(images[schema.IMAGES].isel({schema.IMAGE: positions}), progress=progress)
    variants = cube[schema.VARIANT].values.tolist()
    scales = cube[schema.SCALE].values.tolist()
    out: dict[int, dict[str, Any]] = {}
    for k, i in enumerate(shown):
        one = coords.sel({schema.IMAGE: i})
        meta = {
            "image": i,
            "source": str(one[schema.SOURCE].values),
            "split": str(one[schema.SPLIT].values),
            "color_score": float(one[schema.COLOR_SCORE].values),
            "original": f"{int(one[schema.ORIGINAL_WIDTH])}×{int(one[schema.ORIGINAL_HEIGHT])}",
        }
        entry = {**meta, "thumb": png_data_uri(thumbnail_png(pixels.values[k]))}
        if k < MAX_GRIDS:
            cells = query.pu_cells(pixels.values[k], variants, scales, attrs=meta)
            entry["grid"] = grid_html(cells)
        out[i] = entry
    return out


def grid_html(grid: xr.DataArray, cell_px: int = GRID_CELL_PX) -> str:
    """The PU grid of one image as an HTML table: a PNG per cell, PSNR above, labels around.

    Parameters
    ----------
    grid : xr.DataArray
        From :func:`pupsnr_dask.query.pu_grid` or :func:`pupsnr_dask.query.pu_cells`.
    cell_px : int
        Side of each cell's picture (box-filtered down from the image size).
    """
    from PIL import Image

    variants = grid[schema.VARIANT].values.tolist()
    scales = grid[schema.SCALE].values.tolist()
    resolution = grid[schema.RESOLUTION].values.tolist()
    head = "".join(
        f"<th>{'original' if s == 1 else f'scale {_e(s)}'}<br>"
        f"{_e(plots.scale_label(s, r)).replace(chr(10), ' · ')}</th>"
        for s, r in zip(scales, resolution, strict=True)
    )
    rows = []
    for j, variant in enumerate(variants):
        cells = []
        for k in range(len(scales)):
            buf = io.BytesIO()
            img = Image.fromarray(grid.values[j, k])
            if img.width != cell_px:
                img = img.resize((cell_px, cell_px), Image.Resampling.BOX)
            img.save(buf, format="PNG")
            text = plots.psnr_text(float(grid[schema.PSNR].values[j, k]))
            cells.append(
                f'<td><div class="psnr">{_e(text)}</div><img src="'
                f'{png_data_uri(buf.getvalue())}" width="{int(cell_px)}" height="{int(cell_px)}" '
                f'alt="{_e(variant)}, scale {_e(scales[k])}: {_e(text)}"></td>'
            )
        rows.append(f'<tr><th class="row">{_e(variant)}</th>{"".join(cells)}</tr>')
    return (
        f'<table class="pugrid"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _thumb(
    value: float, image: int, source: str, pictures: dict[int, dict[str, Any]] | None
) -> str:
    label = "∞" if np.isinf(value) else f"{value:.2f} dB"
    title = _e(f"image {image}: {source}, PSNR {label}")
    name = f'<span class="name">{_e(source.rsplit("/", 1)[-1])}</span>'
    if pictures is None:
        return f'<span class="thumb" title="{title}">{label}{name}</span>'
    entry = pictures[image]
    target = f"#image-{int(image)}" if "grid" in entry else "#grids"
    return (
        f'<a class="thumb" href="{target}" title="{title}"><img src="{entry["thumb"]}" '
        f'width="{THUMBNAIL_PX}" height="{THUMBNAIL_PX}" alt="{title}">{label}{name}</a>'
    )


def _extremes_section(
    cube: xr.Dataset,
    picks: Picks,
    pictures: dict[int, dict[str, Any]] | None,
    top: int,
    images_note: str,
) -> str:
    parts = [
        '<h2 id="extremes">Best and worst images</h2>',
        f'<p class="note">For each variant and scale, the {top} images with the lowest and the '
        "highest PSNR (thumbnails of the true image; click one for its PU grid).</p>",
    ]
    if pictures is None:
        parts.append(f'<p class="note">No thumbnails: {_e(images_note)}.</p>')
    parts.append(
        "<table><thead><tr><th>variant</th><th>scale</th><th>lowest PSNR</th>"
        "<th>highest PSNR</th></tr></thead><tbody>"
    )
    n = cube.sizes[schema.IMAGE]
    for (variant, scale), pair in picks.items():
        res = int(cube[schema.RESOLUTION].sel({schema.SCALE: scale}))
        head = f"<tr><td>{_e(variant)}</td><td>{_e(scale)} ({res} px)</td>"
        if pair is None:
            parts.append(
                f'{head}<td colspan="2" class="note">all {n} images identical to the target '
                "(PSNR +∞): no best or worst</td></tr>"
            )
            continue
        cells = []
        for arr in pair:
            thumbs = [
                _thumb(float(v), int(i), str(src), pictures)
                for v, i, src in zip(
                    arr.values,
                    arr[schema.IMAGE].values,
                    arr[schema.SOURCE].values.tolist(),
                    strict=True,
                )
            ]
            cells.append(f'<td><div class="thumbs">{"".join(thumbs)}</div></td>')
        parts.append(f"{head}{''.join(cells)}</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _grids_section(pictures: dict[int, dict[str, Any]] | None, images_note: str) -> str:
    parts = ['<h2 id="grids">PU grids</h2>']
    if pictures is None:
        parts.append(f'<p class="note">No grids: {_e(images_note)}.</p>')
        return "".join(parts)
    parts.append(
        '<p class="note">Each image shown above: rows true / gray / mosaic, columns the '
        "original then each PU scale, with the PSNR of each cell against the true image.</p>"
    )
    missing = [e for e in pictures.values() if "grid" not in e]
    for entry in pictures.values():
        if "grid" not in entry:
            continue
        head = (
            f"image {int(entry['image'])}: {_e(entry['source'])} — split "
            f"{_e(entry['split'])}, colour score {entry['color_score']:.3f}, "
            f"original {_e(entry['original'])} px"
        )
        parts.append(
            f'<div class="grid" id="image-{int(entry["image"])}"><h3>{head}</h3>'
            f"{entry['grid']}</div>"
        )
    if missing:
        names = ", ".join(_e(e["source"]) for e in missing)
        parts.append(
            f'<p class="note">{len(missing)} more images without a grid here (at most '
            f"{MAX_GRIDS}): {names}. <code>pupsnr grid STORE --image SOURCE -o FILE.png</code> "
            "draws one.</p>"
        )
    return "".join(parts)


def _provenance_section(
    results: xr.Dataset,
    images: xr.Dataset | None,
    cube: xr.Dataset,
    results_name: str | None,
    images_name: str | None,
    images_note: str,
    storage_options: dict[str, Any] | None,
) -> str:
    attrs = results.attrs
    splits = query._strings(results[schema.SPLIT].values)
    counts = ", ".join(f"{s}: {int((splits == s).sum())}" for s in schema.SPLITS)
    items: list[tuple[str, Any]] = [  # (label, text or _Html): every value escaped below
        ("report generated", _now()),
        ("results store", _code(results_name or "(in memory)")),
        ("results written", store_modified(results_name, storage_options) or "unknown"),
        ("images store", _code(images_name) if images_name else "none"),
        ("images store found", images_note or "—"),
    ]
    if images is not None:
        items.append(("images written", store_modified(images_name, storage_options) or "unknown"))
    items += [
        ("images in the results", f"{results.sizes[schema.IMAGE]} ({counts})"),
        ("images in this report", str(cube.sizes[schema.IMAGE])),
        ("variants", ", ".join(results[schema.VARIANT].values.tolist())),
        ("scales", ", ".join(str(s) for s in results[schema.SCALE].values.tolist())),
    ]
    for key in (
        "size",
        "method",
        "data_range",
        schema.VERSION_ATTR,
        "mse_definition",
        "psnr_definition",
        "pu_definition",
    ):
        if key in attrs:
            label = "written by pupsnr-dask" if key == schema.VERSION_ATTR else key
            items.append((label.replace("_", " "), attrs[key]))
    ingest = dict(attrs.get("images_store_attrs", {}))
    if images is not None:
        ingest.update({k: v for k, v in images.attrs.items() if k != schema.REJECTED_ATTR})
        rejected = images.attrs.get(schema.REJECTED_ATTR, [])
        items.append(("files rejected at ingest", str(len(rejected))))
    for key, value in ingest.items():
        if key != schema.KIND_ATTR:
            items.append((f"ingest: {str(key).replace('_', ' ')}", value))
    for name, version in software_versions().items():
        items.append((f"version of {name} (this report)", version))
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<h2 id="provenance">Provenance</h2><dl class="meta">{rows}</dl>'


def write_html(
    results: str,
    output: str,
    *,
    images: str | None = None,
    split: Split = "all",
    top: int = 3,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> tuple[str, str]:
    """Write the HTML page of the results store at ``results`` to the file ``output``.

    Returns
    -------
    tuple of str
        ``(output, note)``: the note says where the images came from, or why there are none.
    """
    ds = open_store(results, "psnr", storage_options=storage_options)
    image_ds, images_name, note = find_images_store(
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
    )
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)
    return output, note
