"""The per-image table of a results store, in long form, for the user's own tools.

One row per image x variant x scale, ready to join with a training log on ``source`` (or
``image``) and ``scale``::

    image  source      split  variant  scale  resolution  psnr       mse
    0      astronaut…  train  true     1      256         inf        0.0
    0      astronaut…  train  true     2      128         31.2…      49.1…
    ...

:func:`table_dataset` builds it as an xarray Dataset (dim ``row``), :func:`table_frame` as a
pandas DataFrame; :func:`write_table` writes either to Parquet (pyarrow), CSV or NetCDF, the
format chosen by the file's extension (:data:`FORMATS`). Values are the stored ones, unchanged:
a +inf PSNR (an image identical to its PU transform) stays +inf in Parquet and NetCDF and is
written ``inf`` in CSV (``-inf`` and ``nan`` likewise), which pandas reads back as float.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from pupsnr_dask import schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.store import fs as locations

if TYPE_CHECKING:
    import pandas as pd

ExportFormat = Literal["parquet", "csv", "netcdf"]

#: File extension -> format written there.
FORMATS: dict[str, ExportFormat] = {".parquet": "parquet", ".csv": "csv", ".nc": "netcdf"}
#: The dimension of the long-form table.
ROW = "row"
#: The first columns, in this order; the other coordinates and the metrics follow.
KEY_COLUMNS = (schema.IMAGE, schema.SOURCE, schema.SPLIT, schema.VARIANT, schema.SCALE)
#: How CSV spells the non-finite floats (pandas reads these back as float).
CSV_NAN = "nan"
PARQUET_HINT = "pip install 'pupsnr-dask[parquet]' (or: pip install 'pyarrow>=14')"


def export_format(path: str | os.PathLike[str]) -> ExportFormat:
    """The format written to ``path``, from its extension.

    Examples
    --------
    >>> export_format("runs/table.parquet"), export_format("t.CSV"), export_format("t.nc")
    ('parquet', 'csv', 'netcdf')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"the table's file name must end with one of {', '.join(FORMATS)}, "
            f"got {os.fspath(path)!r}"
        )
    return FORMATS[suffix]


def metric_variables(results: xr.Dataset) -> list[str]:
    """The per-image metric variables of ``results``: ``psnr``, ``mse``, then any other.

    A per-image metric is a data variable with the ``image`` dimension whose other dimensions
    are among ``variant`` and ``scale``.
    """
    found = [
        name
        for name, var in results.data_vars.items()
        if schema.IMAGE in var.dims and set(var.dims) <= set(schema.CUBE_DIMS)
    ]
    first = [n for n in (schema.PSNR, schema.MSE) if n in found]
    return first + [n for n in found if n not in first]


def table_dataset(results: xr.Dataset, *, progress: bool | None = None) -> xr.Dataset:
    """The per-image table of ``results`` in long form, computed into memory.

    Parameters
    ----------
    results : xr.Dataset
        A results store (see :mod:`pupsnr_dask.schema`), lazy or not.
    progress : bool, optional
        Progress bar while the metrics are read; by default when standard error is a terminal.

    Returns
    -------
    xr.Dataset
        NumPy-backed, one dimension ``row`` of length ``image x variant x scale``, rows in that
        order (image slowest). Variables: ``image``, ``source``, ``split``, ``variant``,
        ``scale``, ``resolution``, every other 1-D coordinate along ``image``, ``variant`` or
        ``scale``, then :func:`metric_variables`, with their stored dtypes (strings as
        ``str``) and attributes.
    """
    schema.validate(results, "psnr", name="results")
    metrics = metric_variables(results)
    (loaded,) = compute(results[metrics].reset_coords(), progress=progress)
    sizes = [results.sizes[d] for d in schema.CUBE_DIMS]
    position = dict(zip(schema.CUBE_DIMS, np.indices(sizes).reshape(3, -1), strict=True))
    columns: dict[str, xr.Variable] = {}
    for name in _label_names(results):
        label = loaded[name] if name in loaded else results[name]
        (dim,) = label.dims
        values = np.asarray(label.values)
        if values.dtype.kind in "OUT":
            values = np.array(values.tolist(), dtype=str)
        columns[name] = xr.Variable(ROW, values[position[dim]], attrs=label.attrs)
    for name in metrics:
        var = loaded[name].broadcast_like(loaded[list(metrics)]).transpose(*schema.CUBE_DIMS)
        columns[name] = xr.Variable(ROW, var.values.reshape(-1), attrs=results[name].attrs)
    return xr.Dataset(columns, attrs=_flat_attrs(results.attrs))


def table_frame(results: xr.Dataset, *, progress: bool | None = None) -> pd.DataFrame:
    """The table of :func:`table_dataset` as a pandas DataFrame (a plain ``RangeIndex``).

    ``DataFrame.attrs`` holds the results store's scalar attributes (definitions, version).
    """
    table = table_dataset(results, progress=progress)
    frame = table.to_dataframe().reset_index(drop=True)
    frame.attrs = dict(table.attrs)
    return frame


def write_table(
    results: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    results_location: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> Path:
    """Write the per-image table of ``results`` to ``path``, in the format of its extension.

    Parameters
    ----------
    results : xr.Dataset
        A results store, lazy or not.
    path : str or os.PathLike
        A local file ending with one of :data:`FORMATS` (``.parquet`` needs pyarrow).
    overwrite : bool
        Replace an existing file at ``path``; a folder is never replaced.
    results_location : str, optional
        Where ``results`` is stored [default: where it was opened from]; ``path`` must not be
        that store or inside it.
    storage_options : dict, optional
        fsspec options of ``results_location``.
    progress : bool, optional
        Progress bar while the metrics are read.

    Returns
    -------
    Path
        The file written. It appears whole or not at all (written beside it, then renamed).

    Raises
    ------
    ValueError
        For another extension, an existing file without ``overwrite``, a folder, or a ``path``
        inside the results store.
    ImportError
        For ``.parquet`` without pyarrow, with the install hint.
    """
    fmt = export_format(path)
    target = _check_target(path, overwrite, results_location or results.encoding.get("source"),
                           storage_options)  # fmt: skip
    if fmt == "parquet":
        require_pyarrow()
    table = table_dataset(results, progress=progress)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        _WRITERS[fmt](table, tmp)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)  # ours: made by mkstemp above
        raise
    return target


def require_pyarrow() -> None:
    """Raise ImportError, with the install hint, unless pyarrow can be imported."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(f"writing Parquet needs pyarrow: {PARQUET_HINT}") from None


def _label_names(results: xr.Dataset) -> list[str]:
    """The 1-D coordinates along the cube's dims: the key columns first, then resolution, ..."""
    names = [
        name for name, c in results.coords.items() if c.ndim == 1 and c.dims[0] in schema.CUBE_DIMS
    ]
    first = [n for n in (*KEY_COLUMNS, schema.RESOLUTION) if n in names]
    return first + [n for n in names if n not in first]


def _flat_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes that every format can carry: strings and numbers (not bools)."""
    return {
        k: v
        for k, v in attrs.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool) and k != schema.KIND_ATTR
    }


def _check_target(
    path: str | os.PathLike[str],
    overwrite: bool,
    results_location: str | None,
    storage_options: dict[str, Any] | None,
) -> Path:
    text = os.fspath(path)
    if locations.is_url(text):
        raise ValueError(f"the table must be written to a local file, got {text!r}")
    target = Path(locations.absolute(text))
    if results_location is not None and not locations.is_url(results_location):
        locations.check_output(str(target), results_location, output_name="the table",
                               source_name="RESULTS", overwrite=overwrite)  # fmt: skip
    if target.is_dir():
        raise ValueError(f"{text!r} is a folder; the table is written to a file")
    if target.exists() and not overwrite:
        raise ValueError(f"{text!r} already exists; --overwrite replaces it")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder {str(target.parent)!r} of {text!r} does not exist")
    return target


def _write_parquet(table: xr.Dataset, path: str) -> None:
    frame = table.to_dataframe().reset_index(drop=True)
    frame.attrs = dict(table.attrs)
    frame.to_parquet(path, engine="pyarrow", index=False)


def _write_csv(table: xr.Dataset, path: str) -> None:
    frame = table.to_dataframe().reset_index(drop=True)
    frame.to_csv(path, index=False, na_rep=CSV_NAN, lineterminator="\n")


def _write_netcdf(table: xr.Dataset, path: str) -> None:
    table.to_netcdf(path)


_WRITERS = {"parquet": _write_parquet, "csv": _write_csv, "netcdf": _write_netcdf}
