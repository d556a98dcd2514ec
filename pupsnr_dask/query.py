"""Questions to ask a results store, answered as xarray objects (not printouts).

For interactive work and for the plots and the HTML report::

    summary_table(results)                 # summarize() + spread of the finite PSNRs
    extremes(results, "gray", 8, n=5)      # the 5 images with the lowest PSNR there
    with_image_coords(results, images)     # the cube with colour score and original size
    by_split(results)                      # finite-mean PSNR by split x variant x scale
    pu_grid(images, "skimage/coffee.png")  # the PU-transformed variants of one image

Everything that reduces the cube computes it with :func:`pupsnr_dask.cluster.compute`, on the
active scheduler and with a progress bar when standard error is a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.experiment import SCALES, VARIANTS, Split, check_selection, select_split, summarize
from pupsnr_dask.kernels.metrics import psnr_kernel
from pupsnr_dask.kernels.variants import pu_kernel
from pupsnr_dask.stats import t_half_width
from pupsnr_dask.store.zarr_io import open_store

#: Statistics of the finite per-image PSNRs that :func:`summary_table` adds to ``summarize``.
SPREAD_STATISTICS = {
    "n_finite": "images with a finite PSNR",
    "finite_mean_psnr_db": "mean of the finite PSNRs (dB)",
    "ci95_low_db": "95% confidence interval of that mean, lower end (dB, Student t)",
    "ci95_high_db": "95% confidence interval of that mean, upper end (dB, Student t)",
    "p10_psnr_db": "10th percentile of the finite PSNRs (dB)",
    "median_psnr_db": "median of the finite PSNRs (dB)",
    "p90_psnr_db": "90th percentile of the finite PSNRs (dB)",
}


def load_cube(
    results: xr.Dataset, split: Split = "all", *, progress: bool | None = None
) -> xr.Dataset:
    """The ``psnr`` and ``mse`` of one split, computed into memory (with a progress bar).

    Parameters
    ----------
    results : xr.Dataset
        A results store (see :mod:`pupsnr_dask.schema`), lazy or not.
    split : {"train", "test", "all"}
        Which images to keep.
    progress : bool, optional
        Progress bar on standard error; by default when it is a terminal.

    Returns
    -------
    xr.Dataset
        Same layout as ``results``, NumPy-backed, coordinates loaded.
    """
    schema.validate(results, "psnr", name="results")
    sel = select_split(load_coords(results), split)
    (loaded,) = compute(sel[[schema.PSNR, schema.MSE]], progress=progress)
    return loaded


def load_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its 1-D non-index coordinates (source, split, ...) in memory, data still lazy.

    Grouping by ``split`` needs its values: ``load_coords(results).psnr.groupby("split")``.
    """
    small = {
        name: c.load()
        for name, c in ds.coords.items()
        if c.ndim == 1 and name not in ds.dims and c.chunks is not None
    }
    return ds.assign_coords(small)


def spread(psnr: xr.DataArray) -> xr.Dataset:
    """Spread of the finite values of an ``(image, ...)`` PSNR array, reduced over ``image``.

    Parameters
    ----------
    psnr : xr.DataArray
        Per-image PSNR in dB, NumPy-backed (in memory), with an ``image`` dimension.

    Returns
    -------
    xr.Dataset
        The variables of :data:`SPREAD_STATISTICS`, over the remaining dimensions; NaN where
        no value is finite (and for the interval, where fewer than two are).
    """
    values = np.asarray(psnr.transpose(schema.IMAGE, ...).values, dtype=np.float64)
    finite = np.where(np.isfinite(values), values, np.nan)
    n = np.isfinite(values).sum(axis=0)
    out_dims = [d for d in psnr.dims if d != schema.IMAGE]
    shape = values.shape[1:]
    mean = np.full(shape, np.nan)
    half = np.full(shape, np.nan)
    q10 = np.full(shape, np.nan)
    q50 = np.full(shape, np.nan)
    q90 = np.full(shape, np.nan)
    some = n > 0
    if some.any():
        cols = finite[:, some]
        mean[some] = np.nanmean(cols, axis=0)
        q10[some], q50[some], q90[some] = np.nanpercentile(cols, [10, 50, 90], axis=0)
    for idx in zip(*np.nonzero(n > 1), strict=True):
        col = finite[(slice(None), *idx)]
        half[idx] = t_half_width(np.nanstd(col, ddof=1), int(n[idx]), 0.95)
    coords = {d: psnr[d] for d in out_dims if d in psnr.coords}
    data = {
        "n_finite": (out_dims, n.astype(np.int64)),
        "finite_mean_psnr_db": (out_dims, mean),
        "ci95_low_db": (out_dims, mean - half),
        "ci95_high_db": (out_dims, mean + half),
        "p10_psnr_db": (out_dims, q10),
        "median_psnr_db": (out_dims, q50),
        "p90_psnr_db": (out_dims, q90),
    }
    out = xr.Dataset(data, coords=coords)
    for name, text in SPREAD_STATISTICS.items():
        out[name].attrs["long_name"] = text
    return out


def summary_table(
    results: xr.Dataset, split: Split = "all", *, progress: bool | None = None
) -> xr.Dataset:
    """The summary of :func:`pupsnr_dask.experiment.summarize` plus the spread across images.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    split : {"train", "test", "all"}
        Which images to summarise.
    progress : bool, optional
        Progress bar while the cube is read; by default when standard error is a terminal.

    Returns
    -------
    xr.Dataset
        Dims ``(variant, scale)``: every variable of ``summarize`` (``mean_psnr_db``,
        ``std_psnr_db``, ``psnr_of_mean_mse_db``, ``n_images``, ``n_infinite``) and those of
        :data:`SPREAD_STATISTICS`, which leave out the +inf PSNRs of identical images.
    """
    cube = load_cube(results, split, progress=progress)
    base = summarize(cube)  # the cube holds only this split already
    out = xr.merge([base, spread(cube[schema.PSNR])], combine_attrs="override")
    out.attrs = {**base.attrs, "split": split}
    return out


def extremes(
    results: xr.Dataset,
    variant: str,
    scale: int,
    n: int = 5,
    lowest: bool = True,
    *,
    split: Split = "all",
    progress: bool | None = None,
) -> xr.DataArray:
    """The ``n`` images with the lowest (or highest) PSNR for one variant and scale.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    variant : str
        One of the store's variants.
    scale : int
        One of the store's scales.
    n : int
        How many images (fewer when the split has fewer).
    lowest : bool
        True for the worst images (lowest PSNR first), False for the best (highest first).
    split : {"train", "test", "all"}
        Which images to consider.
    progress : bool, optional
        Progress bar while the PSNRs are read.

    Returns
    -------
    xr.DataArray
        PSNR in dB, dim ``image`` (sorted), with the ``source`` and ``split`` of each image.
        NaN values are never returned; ties keep the order of the ``image`` index.
    """
    _check_member(results, schema.VARIANT, variant)
    _check_member(results, schema.SCALE, scale)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    sel = select_split(load_coords(results), split)
    (psnr,) = compute(
        sel[schema.PSNR].sel({schema.VARIANT: variant, schema.SCALE: scale}), progress=progress
    )
    values = psnr.values
    keep = np.flatnonzero(~np.isnan(values))
    order = keep[np.argsort(values[keep] if lowest else -values[keep], kind="stable")]
    out = psnr.isel({schema.IMAGE: order[: int(n)]})
    out.attrs = {**psnr.attrs, "order": "lowest first" if lowest else "highest first"}
    return out


def _check_member(ds: xr.Dataset, dim: str, value: Any) -> None:
    allowed = ds[dim].values.tolist()
    if value not in allowed:
        raise ValueError(f"{dim} must be one of {tuple(allowed)}, got {value!r}")


def with_image_coords(results: xr.Dataset, images: xr.Dataset | str) -> xr.Dataset:
    """The cube with the coordinates of each image from the images store attached.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    images : xr.Dataset or str
        The images store the results were computed from (a dataset or its path).

    Returns
    -------
    xr.Dataset
        ``results`` (still lazy) with ``source``, ``split``, ``color_score``,
        ``original_width`` and ``original_height`` as in-memory coordinates along ``image``.

    Raises
    ------
    ValueError
        When an image of ``results`` is missing from ``images`` or has another source there.
    """
    schema.validate(results, "psnr", name="results")
    if isinstance(images, str):
        images = open_store(images, "images")
    schema.validate(images, "images", name="images")
    index = results[schema.IMAGE].values
    missing = np.setdiff1d(index, images[schema.IMAGE].values)
    if missing.size:
        raise ValueError(
            f"images lacks {missing.size} image(s) of results, e.g. index {int(missing[0])}: "
            "not the store these results were computed from"
        )
    coords = images[list(schema.IMAGE_COORDS)].reset_coords().sel({schema.IMAGE: index})
    (coords,) = compute(coords, progress=False)
    ours = _strings(results[schema.SOURCE].values)
    theirs = _strings(coords[schema.SOURCE].values)
    if not np.array_equal(ours, theirs):
        k = int(np.flatnonzero(ours != theirs)[0])
        raise ValueError(
            f"image {int(index[k])} is {ours[k]!r} in results but {theirs[k]!r} in images: "
            "not the store these results were computed from"
        )
    return results.assign_coords({c: (schema.IMAGE, coords[c].values) for c in coords.data_vars})


def _strings(values: Any) -> np.ndarray:
    """A fixed-width ``str`` array from any 1-D string array (StringDType, object)."""
    return np.array(np.asarray(values).tolist(), dtype=str)


def by_split(results: xr.Dataset, *, progress: bool | None = None) -> xr.Dataset:
    """PSNR statistics of each split: ``spread`` grouped by ``split``.

    Returns
    -------
    xr.Dataset
        Dims ``(split, variant, scale)``: the variables of :data:`SPREAD_STATISTICS` and
        ``n_images``, for each split present in ``results`` (train first).
    """
    cube = load_cube(results, "all", progress=progress)
    labels = _strings(cube[schema.SPLIT].values)
    present = [s for s in schema.SPLITS if s in labels]
    parts = []
    for name in present:
        part = cube[schema.PSNR].isel({schema.IMAGE: np.flatnonzero(labels == name)})
        stats = spread(part)
        stats["n_images"] = part.sizes[schema.IMAGE]
        parts.append(stats)
    out = xr.concat(parts, dim=xr.DataArray(present, dims=schema.SPLIT, name=schema.SPLIT))
    out.attrs = {"units": "dB"}
    return out


def find_image(ds: xr.Dataset, image: int | str) -> int:
    """Position along ``image`` of an image given by its index or its source path.

    Parameters
    ----------
    ds : xr.Dataset
        An images or results store.
    image : int or str
        The image's stable index (``ds.image``), its ``source`` path, or a suffix of the path
        after a ``/`` that matches one image only (``"coffee.png"``). A string of digits is an
        index.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        When no image, or more than one, matches.
    """
    index = ds[schema.IMAGE].values
    key = image.strip() if isinstance(image, str) else image
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        hits = np.flatnonzero(index == key)
        if hits.size:
            return int(hits[0])
        raise ValueError(
            f"image must be an index in {int(index.min())}..{int(index.max())} or a source path, "
            f"got {image!r}"
        )
    if not isinstance(key, str):
        raise TypeError(f"image must be an int or a str, got {type(image).__name__}")
    sources = _strings(ds[schema.SOURCE].values)
    hits = np.flatnonzero(sources == key)
    if hits.size == 0:
        hits = np.flatnonzero(np.char.endswith(sources, "/" + key.lstrip("/")))
    if hits.size == 1:
        return int(hits[0])
    if hits.size > 1:
        some = ", ".join(repr(str(s)) for s in sources[hits[:2]])
        raise ValueError(f"image {image!r} matches {hits.size} sources, e.g. {some}")
    examples = ", ".join(repr(str(s)) for s in sources[:3])
    raise ValueError(
        f"image {image!r} is neither an index nor a source in the store (sources: {examples}, ...)"
    )


def pu_grid(
    images: xr.Dataset | str,
    image: int | str,
    variants: Sequence[str] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
) -> xr.DataArray:
    """The PU-transformed variants of one image, the cells of the visual grid.

    Parameters
    ----------
    images : xr.Dataset or str
        An images store (a dataset or its path).
    image : int or str
        The image, as :func:`find_image` takes it.
    variants : sequence of str
        Rows, keys of :data:`pupsnr_dask.experiment.VARIANTS`.
    scales : sequence of int
        Columns; scale 1 (the variant itself, "original") is put first whether listed or not.

    Returns
    -------
    xr.DataArray
        ``pu``, uint8, dims ``(variant, scale, y, x, channel)``: ``rint(pu_kernel(variant(img),
        scale))`` clipped to 0..255, in memory. Coordinates: ``resolution`` by scale and
        ``psnr`` (dB, of the unrounded transform against img_true, as in the results store) by
        variant x scale; attrs ``image``, ``source``, ``split``.
    """
    if isinstance(images, str):
        images = open_store(images, "images")
    schema.validate(images, "images", name="images")
    pos = find_image(images, image)
    one = images.isel({schema.IMAGE: pos})
    (pixels, coords) = compute(
        one[schema.IMAGES], one.reset_coords()[list(schema.IMAGE_COORDS)], progress=False
    )
    attrs = {
        "image": int(images[schema.IMAGE].values[pos]),
        "source": str(coords[schema.SOURCE].values),
        "split": str(coords[schema.SPLIT].values),
        "color_score": float(coords[schema.COLOR_SCORE].values),
    }
    return pu_cells(np.asarray(pixels.values), variants, scales, attrs=attrs)


def pu_cells(
    true: np.ndarray,
    variants: Sequence[str] = tuple(VARIANTS),
    scales: Sequence[int] = SCALES,
    *,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """The cells of the PU grid of one image in memory; see :func:`pu_grid`.

    Parameters
    ----------
    true : np.ndarray
        img_true, shape ``(size, size, 3)``, uint8.
    variants, scales : sequence
        As :func:`pu_grid`.
    attrs : dict, optional
        Attributes of the result (image, source, ...).
    """
    true = np.asarray(true)
    if true.ndim != 3 or true.shape[2] != 3 or true.dtype != np.uint8:
        raise ValueError(
            f"true must be a (size, size, 3) uint8 image, got shape {true.shape} {true.dtype}"
        )
    size = true.shape[0]
    scales = (1, *[int(s) for s in scales if int(s) != 1])
    variants, scales = check_selection(variants, scales, size)
    batch = true[None]
    cells = np.empty((len(variants), len(scales), size, size, 3), dtype=np.uint8)
    psnr = np.empty((len(variants), len(scales)))
    for j, name in enumerate(variants):
        view = VARIANTS[name](batch)
        for k, s in enumerate(scales):
            pooled = pu_kernel(view, s)
            psnr[j, k] = psnr_kernel(batch, pooled)[0]
            cells[j, k] = np.clip(np.rint(pooled[0]), 0, 255).astype(np.uint8)
    return xr.DataArray(
        cells,
        dims=(schema.VARIANT, schema.SCALE, schema.Y, schema.X, schema.CHANNEL),
        coords={
            schema.VARIANT: list(variants),
            schema.SCALE: np.array(scales, dtype=np.int64),
            schema.RESOLUTION: (schema.SCALE, np.array([size // s for s in scales])),
            schema.PSNR: ((schema.VARIANT, schema.SCALE), psnr, {"units": "dB"}),
        },
        name="pu",
        attrs=dict(attrs or {}),
    )
