"""The storage contract: dimension, variable, coordinate and attribute names; open and validate.

Two kinds of store are written by pupsnr_dask, both Zarr groups that ``xr.open_zarr`` opens:

``images`` store (written by :func:`pupsnr_dask.ingest.ingest`)::

    images   (image, y, x, channel)  uint8     img_true, chunked along ``image`` only
    image    (image,)                int64     stable index of each image
    source   (image,)                str       path relative to SRC, "/" separators
    color_score (image,)             float64   mean of the 3x3 RGB correlation matrix
    split    (image,)                str       "train" or "test"
    original_width, original_height (image,)   int64

``psnr`` store (written by :func:`pupsnr_dask.experiment.run`)::

    psnr     (image, variant, scale) float64   dB, +inf for identical images
    mse      (image, variant, scale) float64   mean over H x W x C against img_true
    variant  (variant,)              str       "true", "gray", "mosaic", ...
    scale    (scale,)                int64     1, 2, 4, 8, 16, 32
    resolution (scale,)              int64     size // scale
    source, split (image,)                     carried over from the images store
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import numpy as np
import xarray as xr

IMAGE = "image"
Y = "y"
X = "x"
CHANNEL = "channel"
VARIANT = "variant"
SCALE = "scale"

IMAGE_DIMS = (IMAGE, Y, X, CHANNEL)
CUBE_DIMS = (IMAGE, VARIANT, SCALE)

IMAGES = "images"
PSNR = "psnr"
MSE = "mse"

SOURCE = "source"
COLOR_SCORE = "color_score"
SPLIT = "split"
ORIGINAL_WIDTH = "original_width"
ORIGINAL_HEIGHT = "original_height"
RESOLUTION = "resolution"
IMAGE_COORDS = (SOURCE, COLOR_SCORE, SPLIT, ORIGINAL_WIDTH, ORIGINAL_HEIGHT)

SPLITS = ("train", "test")
DATA_RANGE = 255
#: Images per chunk along ``image`` (and per ingest task); 32 measured best (benchmarks/RESULTS.md).
DEFAULT_CHUNK_SIZE = 32

KIND_ATTR = "pupsnr_kind"
VERSION_ATTR = "pupsnr_version"
REJECTED_ATTR = "rejected"

StoreKind = Literal["images", "psnr"]


class StoreError(ValueError):
    """A store exists but is not a valid pupsnr store of the expected kind."""


class StorageOptions(dict[str, Any]):
    """fsspec storage options whose ``repr`` hides credentials.

    A plain ``dict`` in every other way (it is passed to fsspec as ``**options``). Dask worker
    logs print the arguments of a failed task, and these options travel to the workers as task
    arguments: the values of keys that look like credentials (see :data:`SECRET_WORDS`) are
    shown as ``'***'``, also in nested dicts.

    Examples
    --------
    >>> StorageOptions(endpoint_url="http://127.0.0.1:9000", secret="abc")
    StorageOptions({'endpoint_url': 'http://127.0.0.1:9000', 'secret': '***'})
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_redacted(self)!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (dict(self),)


#: Parts of option names whose values are never shown: key, secret, token, password, ...
SECRET_WORDS = ("key", "secret", "token", "password", "credential", "auth", "session")


#: What a hidden value is shown as.
REDACTED = "***"
#: Command-line options whose value is always hidden (a JSON object of storage options).
SECRET_OPTIONS = ("--storage-options",)


def is_secret_name(name: str) -> bool:
    """True when an option or variable name looks like it holds a credential.

    Examples
    --------
    >>> is_secret_name("aws_secret_access_key"), is_secret_name("endpoint_url")
    (True, False)
    """
    return any(word in name.lower() for word in SECRET_WORDS)


def _redacted(options: dict[str, Any]) -> dict[str, Any]:
    def hide(name: str, value: Any) -> Any:
        if isinstance(value, dict):
            return _redacted(value)
        if isinstance(value, list):
            return [hide(name, v) for v in value]
        if is_secret_name(name):
            return REDACTED
        if isinstance(value, str):  # a proxy or endpoint URL with a password
            return _URL_PASSWORD.sub(rf"\1{REDACTED}\2", value)
        return value

    return {name: hide(str(name), value) for name, value in options.items()}


def redact_arg(arg: str) -> str:
    """One command-line word with its credentials hidden.

    A JSON object has the values of its secret-looking keys hidden (also when it does not
    parse: then all of it); ``NAME=VALUE`` with a secret-looking ``NAME`` becomes
    ``NAME=***``; a URL's password (``scheme://user:password@host``) becomes ``***``.

    Examples
    --------
    >>> redact_arg('{"endpoint_url": "http://h:9000", "secret": "abc"}')
    '{"endpoint_url": "http://h:9000", "secret": "***"}'
    >>> redact_arg("--aws-secret-access-key=abc"), redact_arg("s3://me:abc@bucket/x")
    ('--aws-secret-access-key=***', 's3://me:***@bucket/x')
    """
    text = arg.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return REDACTED
        return json.dumps(_redacted(parsed)) if isinstance(parsed, dict) else arg
    name, eq, _ = arg.partition("=")
    if eq and is_secret_name(name):
        return f"{name}={REDACTED}"
    return _URL_PASSWORD.sub(rf"\1{REDACTED}\2", arg)


_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/:@\s]*:)[^/@\s]+(@)")


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with its credentials hidden (see :func:`redact_arg`).

    The value of :data:`SECRET_OPTIONS` is hidden whatever it looks like; secret-looking
    keys of a JSON object, ``NAME=VALUE`` words and URL passwords anywhere.

    Examples
    --------
    >>> redact_argv(["pupsnr", "--storage-options", '{"key": "id"}', "s3://b/d.zarr"])
    ['pupsnr', '--storage-options', '{"key": "***"}', 's3://b/d.zarr']
    >>> redact_argv(["pupsnr", "--storage-options=not json"])
    ['pupsnr', '--storage-options=***']
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        option, eq, value = arg.partition("=")
        if hide_next:
            out.append(_redact_whole(arg))
        elif eq and option in SECRET_OPTIONS:
            out.append(f"{option}={_redact_whole(value)}")
        else:
            out.append(redact_arg(arg))
        hide_next = arg in SECRET_OPTIONS
    return out


def _redact_whole(value: str) -> str:
    hidden = redact_arg(value)
    return hidden if hidden.lstrip().startswith("{") else REDACTED


def parse_storage_options(
    storage_options: dict[str, Any] | str | None,
) -> StorageOptions | None:
    """Return fsspec storage options from a dict, a JSON string, or None.

    The error for a malformed string does not repeat it: it may hold credentials.

    Examples
    --------
    >>> parse_storage_options('{"endpoint_url": "http://127.0.0.1:9000", "key": "id"}')
    StorageOptions({'endpoint_url': 'http://127.0.0.1:9000', 'key': '***'})
    """
    if storage_options is None:
        return None
    if isinstance(storage_options, dict):
        return StorageOptions(storage_options)
    try:
        parsed = json.loads(storage_options)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"storage_options must be a JSON object; it is not valid JSON ({err.msg} at "
            f"character {err.pos})"
        ) from None
    except RecursionError:
        raise ValueError("storage_options must be a JSON object; it is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise ValueError(
            f"storage_options must be a JSON object, got a JSON {type(parsed).__name__}"
        )
    return StorageOptions(parsed)


def open_store(
    store: str,
    kind: StoreKind,
    *,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Open a pupsnr store lazily and check that it is of the expected kind.

    Parameters
    ----------
    store : str
        Path or fsspec URL of the Zarr store.
    kind : {"images", "psnr"}
        The kind of store expected.
    storage_options : dict, optional
        fsspec options for object storage (endpoint, credentials).

    Returns
    -------
    xr.Dataset
        The store's dataset, dask-backed (lazy).

    Raises
    ------
    FileNotFoundError
        When nothing is stored at ``store``.
    StoreError
        When the store is not a pupsnr store of that kind, or its layout is wrong.
    """
    if kind not in ("images", "psnr"):
        raise ValueError(f"kind must be one of ('images', 'psnr'), got {kind!r}")
    from pupsnr_dask import verify

    if not store_exists(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    why = verify.unfinished(store, storage_options)
    if why:
        raise StoreError(why)
    keys = verify.list_keys(store, storage_options)
    bad = verify.metadata_defects(store, storage_options, keys)
    if bad:
        raise StoreError(f"{store!r} is damaged: {bad[0]}")
    try:
        ds = xr.open_zarr(store, storage_options=storage_options, consolidated=None)
    except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
        raise StoreError(f"{store!r} is not a readable Zarr store: {err}") from err
    validate(ds, kind, name=store)
    bad = verify.missing_chunks(store, storage_options, keys)
    if bad:
        raise StoreError(
            f"{store!r} is damaged: {len(bad)} chunks or metadata files are missing "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); `pupsnr verify` lists "
            "every defect"
        )
    if kind == "psnr":  # small: every chunk is read now rather than failing in a report
        bad = verify.unreadable_chunks(store, storage_options)
        if bad:
            raise StoreError(f"{store!r} is damaged: {bad[0]}")
    return ds


def validate(ds: xr.Dataset, kind: StoreKind, *, name: str = "dataset") -> None:
    """Raise :class:`StoreError` unless ``ds`` follows the layout of a ``kind`` store."""
    found = ds.attrs.get(KIND_ATTR)
    if found != kind:
        what = f"a pupsnr {found!r} store" if found else "not a pupsnr store"
        raise StoreError(f"{name!r} is {what}; expected a pupsnr {kind!r} store")
    if kind == "images":
        _check_var(ds, IMAGES, IMAGE_DIMS, "uint8", name)
        if ds[IMAGES].sizes[CHANNEL] != 3:
            raise StoreError(f"{name!r}: {IMAGES} must have 3 channels")
        if ds[IMAGES].sizes[Y] != ds[IMAGES].sizes[X]:
            raise StoreError(f"{name!r}: {IMAGES} must be square")
        coords: tuple[str, ...] = IMAGE_COORDS
    else:
        _check_var(ds, PSNR, CUBE_DIMS, "float64", name)
        _check_var(ds, MSE, CUBE_DIMS, "float64", name)
        coords = (VARIANT, SCALE, RESOLUTION, SOURCE, SPLIT)
    missing = [c for c in coords if c not in ds.coords]
    if missing:
        raise StoreError(f"{name!r} lacks coordinates {missing}")


def _check_var(ds: xr.Dataset, var: str, dims: tuple[str, ...], dtype: str, name: str) -> None:
    if var not in ds.data_vars:
        raise StoreError(f"{name!r} has no variable {var!r}")
    if ds[var].dims != dims:
        raise StoreError(f"{name!r}: {var} has dims {ds[var].dims}, expected {dims}")
    if ds[var].dtype != dtype:
        raise StoreError(f"{name!r}: {var} has dtype {ds[var].dtype}, expected {dtype}")


def write_store(
    ds: xr.Dataset,
    store: str,
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> None:
    """Write a lazy dataset to a new Zarr store (refusing to overwrite), computing it.

    Metadata is consolidated so that a plain ``xr.open_zarr(store)`` opens it in one read.
    Every chunk is written, even one equal to the fill value, so a missing chunk is always a
    defect (see :func:`pupsnr_dask.verify.missing_chunks`). Dask blocks are realigned to whole
    shards of sharded variables (:func:`align_to_shards`).
    """
    from pupsnr_dask.cluster import compute

    compute(create_store(ds, store, storage_options=storage_options), progress=progress)


def create_store(
    ds: xr.Dataset, store: str, *, storage_options: dict[str, Any] | None = None
) -> Any:
    """Create a new Zarr store for ``ds``: metadata and in-memory variables, not dask ones.

    Returns
    -------
    dask.delayed.Delayed
        Computing it writes the dask-backed variables; the resumable writers of
        :mod:`pupsnr_dask.ingest` and :mod:`pupsnr_dask.experiment` write regions themselves.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        return align_to_shards(ds).to_zarr(
            store,
            mode="w-",
            compute=False,
            consolidated=True,
            write_empty_chunks=True,
            storage_options=storage_options,
        )


def align_to_shards(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk dask variables whose encoding has ``shards`` so that blocks hold whole shards.

    Parallel tasks writing parts of the same shard would each read, modify and rewrite the
    whole shard, losing each other's data; xarray refuses such writes, this realigns them.

    Examples
    --------
    >>> import dask.array as da
    >>> v = xr.Variable("i", da.zeros(10, chunks=3), encoding={"chunks": (2,), "shards": (4,)})
    >>> align_to_shards(xr.Dataset({"v": v}))["v"].chunks
    ((4, 4, 2),)
    """
    out = ds.copy()
    for name, var in ds.variables.items():
        shards = var.encoding.get("shards")
        if not shards or var.chunks is None:
            continue
        blocks = {}
        for dim, shard, sizes in zip(var.dims, shards, var.chunks, strict=True):
            edges = np.cumsum(sizes)[:-1]
            if any(edge % shard for edge in edges):
                blocks[dim] = shard
        if blocks:
            out[name] = var.chunk(blocks)
    return out


def remove_store(store: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete ``store`` (a path or fsspec URL) and everything below it, if it exists."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def store_exists(store: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when something exists at ``store`` (a path or fsspec URL)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
    fs.invalidate_cache(path)  # object stores cache listings; workers may have written since
    return bool(fs.exists(path))
