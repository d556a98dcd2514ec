"""Questions to ask a results store, answered as xarray objects (not printouts).

For interactive work and for the plots and the HTML report::

    summarize(results, "train")            # the published table's statistics, by variant x scale
    summary_figures(results, "train")      # the same as NumPy arrays (what `pupsnr report` prints)
    summary_table(results)                 # summarize() + spread of the finite PSNRs
    extremes(results, "gray", 8, n=5)      # the 5 images with the lowest PSNR there
    with_image_coords(results, images)     # the cube with colour score and original size
    by_split(results)                      # finite-mean PSNR by split x variant x scale

The PU grid of one image is in :mod:`pupsnr_dask.grid`. Everything that reduces the cube
computes it with :func:`pupsnr_dask.cluster.compute`, on the active scheduler and with a progress
bar when standard error is a terminal (``summarize`` computes on the active scheduler too).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from pupsnr_dask import registry, schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.defaults import Split
from pupsnr_dask.kernels.metrics import psnr_from_mse
from pupsnr_dask.store import zarr_io
from pupsnr_dask.store.zarr_io import open_store

#: Statistics of the finite per-image PSNRs that :func:`summary_table` adds to ``summarize``.
SPREAD_CONFIDENCE = 0.95
SPREAD_STATISTICS = {
    "n_finite": "images with a finite PSNR",
    "finite_mean_psnr_db": "mean of the finite PSNRs (dB)",
    "ci95_low_db": "95% confidence interval of that mean, lower end (dB, Student t)",
    "ci95_high_db": "95% confidence interval of that mean, upper end (dB, Student t)",
    "p10_psnr_db": "10th percentile of the finite PSNRs (dB)",
    "median_psnr_db": "median of the finite PSNRs (dB)",
    "p90_psnr_db": "90th percentile of the finite PSNRs (dB)",
}


def select_split(results: xr.Dataset, split: Split = "all") -> xr.Dataset:
    """The images of one split ("train", "test") or all of them."""
    if split == "all":
        return results
    if split not in schema.SPLITS:
        raise ValueError(f"split must be one of {(*schema.SPLITS, 'all')}, got {split!r}")
    return results.isel({schema.IMAGE: np.flatnonzero(results[schema.SPLIT].values == split)})


def metrics_in(results: xr.Dataset) -> tuple[str, ...]:
    """The metrics of :data:`pupsnr_dask.registry.METRICS` that ``results`` holds, in order."""
    return tuple(m for m in registry.METRICS if m in results.data_vars)


def check_metric(results: xr.Dataset, metric: str) -> registry.MetricSpec:
    """The spec of ``metric``; ValueError unless ``results`` holds it (naming what it holds)."""
    held = metrics_in(results)
    if metric not in held:
        hint = (
            f" (rerun `pupsnr run` with --metrics {','.join((*held, metric))})"
            if metric in registry.METRICS
            else ""
        )
        raise ValueError(
            f"metric must be one of {held} (those the results hold), got {metric!r}{hint}"
        )
    return registry.METRICS[metric]


def statistic_names(metric: str) -> dict[str, str]:
    """The statistics of :func:`summarize` for ``metric``: variable name -> title.

    ``psnr``: the mean of the per-image PSNRs (the published figure), their standard
    deviation, and the PSNR of the mean MSE. Any other metric: the mean and the standard
    deviation of its per-image values only (there is no "SSIM of the mean MSE").

    Examples
    --------
    >>> list(statistic_names("ssim"))
    ['mean_ssim', 'std_ssim']
    """
    if metric == schema.PSNR:
        return {
            "mean_psnr_db": "Mean PSNR (dB)",
            "std_psnr_db": "Standard deviation of PSNR (dB)",
            "psnr_of_mean_mse_db": "PSNR of the mean MSE (dB)",
        }
    spec = registry.METRICS[metric]
    suffix = "_db" if spec.units == "dB" else ""
    units = f" ({spec.units})" if spec.units == "dB" else ""
    return {
        f"mean_{metric}{suffix}": f"Mean {spec.long_name}{units}",
        f"std_{metric}{suffix}": f"Standard deviation of {spec.long_name}{units}",
    }


@dataclass(frozen=True)
class Summary:
    """The figures of :func:`summarize` as NumPy arrays: what ``pupsnr report`` prints.

    xarray imports dask.array (~0.35 s, measured) the first time it wraps NumPy data in a
    variable (its check for dask arrays), so the report's table is computed and formatted
    from this, and only :meth:`to_dataset` makes the ``xr.Dataset`` of :func:`summarize`.

    Attributes
    ----------
    coords : dict
        The results' coordinate variables without the image dimension (``variant``,
        ``scale``, ``resolution``), as xarray variables.
    values : dict
        Each statistic (and ``n_infinite``) by name, a float or int array ``(variant, scale)``.
    n_images : int
        How many images were summarised.
    attrs : dict
        ``split``, ``units``, ``metric`` and ``aggregate`` (how the dataset figure is formed).
    """

    coords: dict[str, xr.Variable]
    values: dict[str, np.ndarray]
    n_images: int
    attrs: dict[str, Any]

    @property
    def variants(self) -> list[str]:
        """The variants, in the order of the rows of :attr:`values`."""
        return [str(v) for v in self.coords[schema.VARIANT].values]

    @property
    def scales(self) -> list[int]:
        """The scales, in the order of the columns of :attr:`values`."""
        return [int(s) for s in self.coords[schema.SCALE].values]

    @property
    def resolutions(self) -> list[int]:
        """The side of the pooled image at each scale."""
        return [int(r) for r in self.coords[schema.RESOLUTION].values]

    @classmethod
    def of(cls, summary: xr.Dataset | Summary) -> Summary:
        """``summary`` as a :class:`Summary`.

        ``summary``: the output of :func:`summarize` or :func:`summary_table` (every
        ``(variant, scale)`` variable is kept), or a :class:`Summary`.
        """
        if isinstance(summary, Summary):
            return summary
        dims = {schema.VARIANT, schema.SCALE}
        return cls(
            coords={str(name): c.variable for name, c in summary.coords.items()},
            values={
                str(name): var.transpose(schema.VARIANT, schema.SCALE).values
                for name, var in summary.data_vars.items()
                if set(var.dims) == dims
            },
            n_images=int(summary["n_images"]),
            attrs=dict(summary.attrs),
        )

    def to_dataset(self) -> xr.Dataset:
        """The dataset of :func:`summarize`: each statistic with its ``long_name``."""
        metric = str(self.attrs["metric"])
        titles = {
            **statistic_names(metric),
            "n_infinite": f"images whose {metric} is +inf (identical to img_true)",
        }
        units = self.attrs.get("units")
        dims = (schema.VARIANT, schema.SCALE)
        data_vars: dict[str, Any] = {}
        for name, values in self.values.items():
            attrs = {"long_name": titles.get(name, name)}
            if units and values.dtype.kind == "f":
                attrs = {"units": units, **attrs}
            data_vars[name] = xr.Variable(dims, values, attrs)
        data_vars["n_images"] = xr.Variable((), np.int64(self.n_images), {"long_name": "images"})
        return xr.Dataset(data_vars, coords=self.coords, attrs=dict(self.attrs))


def summarize(results: xr.Dataset, split: Split = "all", metric: str = "psnr") -> xr.Dataset:
    """Dataset statistics by variant x scale, computed eagerly.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    split : {"train", "test", "all"}
        Which images to summarise.
    metric : str
        One of the metrics ``results`` holds (``psnr``, ``psnr_y``, ``ssim``).

    Returns
    -------
    xr.Dataset
        Dims ``(variant, scale)``. For ``psnr``: ``mean_psnr_db`` (mean of per-image PSNR, the
        published figure; +inf when any image is identical), ``std_psnr_db``,
        ``psnr_of_mean_mse_db``, ``n_images``, ``n_infinite``. For another metric the two
        statistics of :func:`statistic_names` (mean and standard deviation of the per-image
        values), ``n_images`` and ``n_infinite``. The attributes name the ``metric``, its
        ``units`` and its ``aggregate`` (how the dataset figure is formed). NaN values (none
        in a finished store) are left out of the means, as xarray's reductions leave them.
    """
    return summary_figures(results, split, metric).to_dataset()


def summary_figures(results: xr.Dataset, split: Split = "all", metric: str = "psnr") -> Summary:
    """The figures of :func:`summarize` as a :class:`Summary` (NumPy arrays, no xarray result).

    Parameters and figures as for :func:`summarize`.
    """
    spec = check_metric(results, metric)
    sel = select_split(results, split)
    n = sel.sizes[schema.IMAGE]
    if n == 0:
        raise ValueError(f"no images in split {split!r}")
    names = [spec.name, *([schema.MSE] if metric == schema.PSNR else [])]
    order = (schema.IMAGE, schema.VARIANT, schema.SCALE)
    read = _read(*(sel[name].transpose(*order) for name in names))
    cube = read[0].values
    mean, std = list(statistic_names(spec.name))[:2]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # an all-NaN column: NaN, as xarray gives it, without NumPy's warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        values = {
            mean: np.nanmean(cube, axis=0),
            std: np.nanstd(cube, axis=0, ddof=1) if n > 1 else np.full(cube.shape[1:], np.nan),
        }
        if metric == schema.PSNR:
            values["psnr_of_mean_mse_db"] = psnr_from_mse(np.nanmean(read[1].values, axis=0))
    values["n_infinite"] = np.isinf(cube).sum(axis=0)
    coords = {str(name): c.variable for name, c in sel.coords.items() if schema.IMAGE not in c.dims}
    attrs = {"split": split, "units": spec.units, "metric": spec.name, "aggregate": spec.aggregate}
    return Summary(coords, values, n, attrs)


def _read(*arrays: xr.DataArray) -> tuple[xr.DataArray, ...]:
    """``arrays`` in memory: computed on the active scheduler when dask-backed, else read.

    A store opened with ``open_store(..., lazy=False)`` (as ``pupsnr report`` does) is read
    into NumPy directly: no dask graph, no scheduler.
    """
    if any(a.chunks is not None for a in arrays):
        return compute(*arrays, progress=False)
    return tuple(a.load() for a in arrays)


def t_half_width(std: Any, n: Any, confidence: float) -> Any:
    """Half-width of the two-sided Student-t confidence interval of a mean (SciPy's quantile).

    Parameters
    ----------
    std : float or np.ndarray
        Sample standard deviation (``ddof=1``) of the ``n`` values.
    n : int or np.ndarray of int
        Number of values; NaN is returned where it is below 2.
    confidence : float
        Coverage of the interval, in (0, 1), e.g. 0.95.

    Returns
    -------
    float or np.ndarray
        ``t.ppf(0.5 + confidence / 2, n - 1) * std / sqrt(n)``.

    Examples
    --------
    >>> round(float(t_half_width(1.0, 11, 0.95)), 4)
    0.6718
    """
    # Imported here: scipy.stats adds about 0.8 s to `import pupsnr_dask` (measured), which
    # every `pupsnr` command would pay.
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n = np.asarray(n)
    if n.dtype.kind not in "iu" or (n < 0).any():
        raise ValueError(f"n must be counts (integers >= 0), got {n.tolist()!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)[()]


def load_cube(
    results: xr.Dataset, split: Split = "all", *, progress: bool | None = None
) -> xr.Dataset:
    """The ``psnr``, ``mse`` and other metrics of one split, computed into memory.

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
    names = [schema.PSNR, schema.MSE, *(m for m in metrics_in(sel) if m != schema.PSNR)]
    (loaded,) = compute(sel[names], progress=progress)
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
    n = np.isfinite(values).sum(axis=0)
    finite = np.where(np.isfinite(values), values, np.nan)
    out_dims = [d for d in psnr.dims if d != schema.IMAGE]
    with warnings.catch_warnings():  # columns without a finite value are NaN, said above
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(finite, axis=0)
        q10, q50, q90 = np.nanpercentile(finite, [10, 50, 90], axis=0)
        half = t_half_width(np.nanstd(finite, axis=0, ddof=1), n, SPREAD_CONFIDENCE)
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
    results: xr.Dataset,
    split: Split = "all",
    *,
    progress: bool | None = None,
    metric: str = "psnr",
) -> xr.Dataset:
    """The summary of :func:`summarize` plus the spread across images.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    split : {"train", "test", "all"}
        Which images to summarise.
    progress : bool, optional
        Progress bar while the cube is read; by default when standard error is a terminal.
    metric : str
        As for :func:`summarize`; the spread is of that metric's values (the variables keep
        the names of :data:`SPREAD_STATISTICS`, whose "dB" holds for the dB metrics only).

    Returns
    -------
    xr.Dataset
        Dims ``(variant, scale)``: every variable of ``summarize`` (``mean_psnr_db``,
        ``std_psnr_db``, ``psnr_of_mean_mse_db``, ``n_images``, ``n_infinite``) and those of
        :data:`SPREAD_STATISTICS`, which leave out the +inf PSNRs of identical images.
    """
    cube = load_cube(results, split, progress=progress)
    base = summarize(cube, metric=metric)  # the cube holds only this split already
    out = xr.merge([base, spread(cube[metric])], combine_attrs="override")
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
    metric: str = "psnr",
) -> xr.DataArray:
    """The ``n`` images with the lowest (or highest) PSNR (or ``metric``) for a variant and scale.

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
    metric : str
        One of the metrics ``results`` holds; all are higher-is-better, so the lowest are the
        worst.

    Returns
    -------
    xr.DataArray
        PSNR in dB (or ``metric``), dim ``image`` (sorted), with the ``source`` and
        ``split`` of each image. NaN values are never returned; ties keep the order of the
        ``image`` index.
    """
    check_metric(results, metric)
    _check_member(results, schema.VARIANT, variant)
    _check_member(results, schema.SCALE, scale)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    sel = select_split(load_coords(results), split)
    (psnr,) = compute(
        sel[metric].sel({schema.VARIANT: variant, schema.SCALE: scale}), progress=progress
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
    ours = strings(results[schema.SOURCE].values)
    theirs = strings(coords[schema.SOURCE].values)
    if not np.array_equal(ours, theirs):
        k = int(np.flatnonzero(ours != theirs)[0])
        raise ValueError(
            f"image {int(index[k])} is {ours[k]!r} in results but {theirs[k]!r} in images: "
            "not the store these results were computed from"
        )
    return results.assign_coords({c: (schema.IMAGE, coords[c].values) for c in coords.data_vars})


def strings(values: Any) -> np.ndarray:
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
    labels = strings(cube[schema.SPLIT].values)
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


def images_store_of(
    results: xr.Dataset,
    images: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    results_store: str | None = None,
) -> tuple[xr.Dataset | None, str | None, str]:
    """Open the images store of ``results``: ``images`` when given, else the recorded one.

    The one place above the pipeline that finds the images store of a results store (the
    HTML report and ``advise`` call it). The recorded one is looked up by
    :func:`pupsnr_dask.zarr_io.images_store_of` (relative to ``results_store`` first,
    default: where ``results`` was opened from).

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
    recorded, how = zarr_io.images_store_of(results.attrs, where, storage_options)
    if not recorded:
        return None, None, how
    try:
        ds = open_store(recorded, "images", storage_options=storage_options)
    except (OSError, ValueError) as err:
        return None, recorded, f"the recorded images store cannot be opened ({how}: {err})"
    return ds, recorded, f"images store {recorded!r} ({how})"
