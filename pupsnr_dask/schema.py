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

import contextlib
import json
import os
import posixpath
import re
import stat
from dataclasses import dataclass
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

#: zstd level of every array but the pixels (zarr's default level).
ZSTD_LEVEL = 0
#: The name of the checksum codec that ends the codecs of every array pupsnr writes.
CHECKSUM_CODEC = "crc32c"


def compressors(level: int = ZSTD_LEVEL) -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of every array pupsnr writes: zstd, then a CRC-32C checksum.

    The checksum covers every stored byte of a chunk, so that one flipped byte (a bad disk, a
    truncated upload) is an error when the chunk is read, never wrong numbers: zstd alone
    decodes most such chunks without complaint. It costs 4 bytes per chunk and about 1 ms per
    6 MB chunk each way (README, "Reliability"); zstd's own checksum was as cheap but misses
    flips in its frame header.

    Examples
    --------
    >>> [c.to_dict()["name"] for c in compressors(1)]
    ['zstd', 'crc32c']
    """
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(level=level), Crc32cCodec())


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

    why = verify.unfinished(store, storage_options)  # also when STORE does not exist yet
    if why:
        raise StoreError(why)
    if not store_exists(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    keys = verify.list_keys(store, storage_options)
    bad = verify.metadata_defects(store, storage_options, keys)
    if bad:
        raise StoreError(f"{store!r} is damaged: {bad[0]}")
    try:
        ds = xr.open_zarr(store, storage_options=storage_options, consolidated=None)
    except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
        named = verify.damage_message([store], storage_options, skip=(IMAGES,))
        raise StoreError(named or f"{store!r} is not a readable Zarr store: {err}") from err
    validate(ds, kind, name=store)
    bad = verify.missing_chunks(store, storage_options, keys)
    if bad:
        raise StoreError(
            f"{store!r} is damaged: {len(bad)} chunks or metadata files are missing "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); `pupsnr verify` lists "
            "every defect"
        )
    # Every chunk of the labels (small), and of a results store (small too), is read now
    # rather than failing later; the pixels of an images store are not (see verify.damage_named).
    bad = verify.unreadable_chunks(store, storage_options, skip=(IMAGES,))
    if bad:
        raise StoreError(f"{store!r}: {bad[0]}: `pupsnr verify` lists every defect")
    return ds


def validate(ds: xr.Dataset, kind: StoreKind, *, name: str = "dataset") -> None:
    """Raise :class:`StoreError` unless ``ds`` follows the layout of a ``kind`` store.

    The layout (:func:`check_layout`), then the attributes and labels that pupsnr reads
    (:func:`label_defects`).
    """
    check_layout(ds, kind, name=name)
    bad = label_defects(ds, kind)
    if bad:
        raise StoreError(f"{name!r} is damaged: {bad[0]}; `pupsnr verify` lists every defect")


def check_layout(ds: xr.Dataset, kind: StoreKind, *, name: str = "dataset") -> None:
    """Raise :class:`StoreError` unless ``ds`` has the variables, dims and dtypes of ``kind``."""
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


#: Attributes that pupsnr reads, by kind of store: name -> (what it must be, test).
_ATTR_TYPES: dict[str, dict[str, tuple[str, Any]]] = {
    "images": {
        "size": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "n_files": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "test_count": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "chunk_size": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "threshold": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
        "src": ("a string", lambda v: isinstance(v, str)),
        REJECTED_ATTR: (
            "a list of objects with strings 'source' and 'reason'",
            lambda v: (
                isinstance(v, list)
                and all(
                    isinstance(r, dict)
                    and isinstance(r.get("source"), str)
                    and isinstance(r.get("reason"), str)
                    for r in v
                )
            ),
        ),
    },
    "psnr": {
        "images_store": ("a string", lambda v: isinstance(v, str)),
        "method": ("a string", lambda v: isinstance(v, str)),
        "size": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    },
}


def label_defects(ds: xr.Dataset, kind: StoreKind) -> list[str]:
    """Attributes of the wrong type, and labels pupsnr does not know, of a ``kind`` dataset.

    Reads only attributes and the small index coordinates (loaded when the store is opened).
    A store passing :func:`check_layout` is expected.

    Examples
    --------
    >>> label_defects(xr.Dataset(attrs={"rejected": "oops", "size": 32}), "images")
    ["attribute 'rejected' must be a list of objects with strings 'source' and 'reason'; got a str"]
    """
    out = [
        f"attribute {attr!r} must be {what}; got a {type(ds.attrs[attr]).__name__}"
        for attr, (what, ok) in _ATTR_TYPES[kind].items()
        if attr in ds.attrs and not ok(ds.attrs[attr])
    ]
    if kind == "psnr":
        from pupsnr_dask.experiment import METHODS, VARIANTS

        method = ds.attrs.get("method")
        if isinstance(method, str) and method not in METHODS:
            out.append(f"unknown method {method!r}; expected one of {METHODS}")
        unknown = [str(v) for v in ds[VARIANT].values if str(v) not in VARIANTS]
        if unknown:
            out.append(f"unknown variant {unknown[0]!r}; expected some of {tuple(VARIANTS)}")
        scales = ds[SCALE].values
        if not np.issubdtype(scales.dtype, np.integer) or (scales < 1).any():
            out.append(f"scales must be positive integers, got {scales.tolist()}")
    return out


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

    Every variable whose encoded ``compressors`` do not end with the checksum gets
    :func:`compressors` (zstd and a checksum), so that every chunk written can be checked.

    Returns
    -------
    dask.delayed.Delayed
        Computing it writes the dask-backed variables; the resumable writers of
        :mod:`pupsnr_dask.ingest` and :mod:`pupsnr_dask.experiment` write regions themselves.
    """
    import warnings

    out = align_to_shards(ds)
    for var in out.variables.values():  # a copy: the caller's encodings are left as they are
        if not ends_with_checksum(var.encoding.get("compressors")):
            var.encoding = {**var.encoding, "compressors": compressors()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        return out.to_zarr(
            store,
            mode="w-",
            compute=False,
            consolidated=True,
            write_empty_chunks=True,
            storage_options=storage_options,
        )


def ends_with_checksum(codecs: Any) -> bool:
    """True when a sequence of Zarr codecs (objects or their JSON) ends with the checksum.

    Examples
    --------
    >>> ends_with_checksum(compressors()), ends_with_checksum([{"name": "zstd"}])
    (True, False)
    """
    if not codecs or isinstance(codecs, str | dict):
        return False
    last = codecs[-1]
    name = last.get("name") if isinstance(last, dict) else last.to_dict().get("name")
    return bool(name == CHECKSUM_CODEC)


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


class NotOursError(FileExistsError):
    """Something exists where pupsnr would delete, and nothing proves that pupsnr wrote it."""


#: The file that marks ``STORE.partial`` as pupsnr's journal: written first, deleted last.
PARTIAL_MARKER = "pupsnr.json"
#: What a pupsnr journal folder may hold at its top level (and ``*.json.tmp-*`` files).
PARTIAL_ENTRIES = frozenset(
    {PARTIAL_MARKER, "plan.json", "final.json", "records", "pixels", "done"}
)
_ZARR_METADATA = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zmetadata"})
_NODE_METADATA = frozenset({"zarr.json", ".zarray", ".zgroup"})
_GLOB = re.compile(r"[*?\[]")


@dataclass
class _Tree:
    """What is at a location: its files and folders (relative), symbolic links, a lone file."""

    files: list[str]
    dirs: list[str]
    links: list[str]
    is_file: bool = False


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/") or "/"


def _tree(fs: Any, root: str) -> _Tree | None:
    """Everything at ``root``, listed exactly (no patterns, links not followed); None: nothing."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        try:
            mode = os.lstat(root).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return _Tree([], [], [], is_file=True)
        tree = _Tree([], [], [])
        for folder, dirs, files in os.walk(root, followlinks=False):
            rel = os.path.relpath(folder, root)
            for name in [*dirs, *files]:
                key = posixpath.normpath(posixpath.join(rel.replace(os.sep, "/"), name))
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    tree.links.append(key)
                elif name in dirs:
                    tree.dirs.append(key)
                else:
                    tree.files.append(key)
        return tree
    fs.invalidate_cache(root)
    found = fs.find(root, withdirs=True, detail=True)
    if not found:
        try:
            return _Tree([], [], [], is_file=True) if fs.isfile(root) else None
        except FileNotFoundError:
            return None
    tree = _Tree([], [], [])
    for path, info in found.items():
        path = path.rstrip("/")
        if path == root:
            if info.get("type") != "directory":
                return _Tree([], [], [], is_file=True)
            continue
        key = posixpath.relpath(path, root)
        (tree.dirs if info.get("type") == "directory" else tree.files).append(key)
    return tree


def stored_kind(store: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The ``pupsnr_kind`` attribute of the Zarr group at ``store``, read from its metadata only.

    Reads the root ``zarr.json`` (Zarr 3) or ``.zattrs`` / ``.zmetadata`` (Zarr 2); None when
    there is none or it is not a pupsnr store.
    """
    fs, root = _fs(store, storage_options)
    for name, where in (
        ("zarr.json", ("attributes",)),
        (".zattrs", ()),
        (".zmetadata", ("metadata", ".zattrs")),
    ):
        try:
            doc: Any = json.loads(fs.cat_file(f"{root}/{name}"))
        except (OSError, ValueError, RecursionError):
            continue
        for key in where:
            doc = doc.get(key) if isinstance(doc, dict) else None
        kind = doc.get(KIND_ATTR) if isinstance(doc, dict) else None
        if isinstance(kind, str):
            return kind
    return None


def _foreign(files: list[str]) -> list[str]:
    """Files that belong to no Zarr group or array of the store (user files, say)."""
    nodes = {posixpath.dirname(f) for f in files if posixpath.basename(f) in _NODE_METADATA}
    out = []
    for key in files:
        top = key.split("/", 1)[0]
        ok = key in _ZARR_METADATA if "/" not in key else top in nodes
        if not ok:
            out.append(key)
    return sorted(out)


def _why_not_store(
    store: str, tree: _Tree, kind: StoreKind, ours: bool, so: dict[str, Any] | None
) -> str | None:
    if tree.is_file:
        return "is a file, not a store"
    if tree.links:
        return f"holds a symbolic link ({tree.links[0]!r})"
    if not tree.files:
        return None  # only empty folders: nothing to lose
    found = stored_kind(store, so)
    if found != kind and not ours:
        return (
            f"is a pupsnr {found!r} store, not a {kind!r} one"
            if found
            else (f"is not a pupsnr {kind!r} store")
        )
    foreign = _foreign(tree.files)
    if foreign:
        return f"holds files that are not part of a Zarr store (e.g. {foreign[0]!r})"
    return None


def _why_not_partial(
    store: str, tree: _Tree, kind: StoreKind, so: dict[str, Any] | None
) -> str | None:
    from pupsnr_dask import durable

    if tree.is_file:
        return "is a file, not a pupsnr journal"
    if tree.links:
        return f"holds a symbolic link ({tree.links[0]!r})"
    if not tree.files:
        return None
    tops = {key.split("/", 1)[0] for key in [*tree.files, *tree.dirs]}
    odd = sorted(t for t in tops if t not in PARTIAL_ENTRIES and ".json.tmp-" not in t)
    if odd:
        return f"holds {odd[0]!r}, which pupsnr never writes there"
    partial = durable.partial_path(store)
    marker = durable.read_json(f"{partial}/{PARTIAL_MARKER}", so)
    if isinstance(marker, dict) and marker.get(KIND_ATTR) == kind:
        return None
    plan = durable.read_json(f"{partial}/plan.json", so)  # written by older versions, no marker
    if isinstance(plan, dict) and set(_PLAN_KEYS[kind]) <= set(plan):
        return None
    return f"holds no pupsnr {kind!r} journal ({PARTIAL_MARKER} or plan.json)"


_PLAN_KEYS: dict[str, tuple[str, ...]] = {
    "images": ("version", "params", "files", "base"),
    "psnr": ("version", "images_store", "n_images", "sources_sha256"),
}


def partial_is_ours(
    store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None
) -> bool:
    """True when ``STORE.partial`` exists and is the journal of a pupsnr ingest/run of ``kind``."""
    from pupsnr_dask import durable

    partial = durable.partial_path(store)
    tree = _tree(*_fs(partial, storage_options))
    return tree is not None and _why_not_partial(store, tree, kind, storage_options) is None


def _delete(
    fs: Any, root: str, tree: _Tree, first: tuple[str, ...] = (), last: tuple[str, ...] = ()
) -> None:
    """Delete exactly the listed files, then the folders (deepest first), then ``root``."""
    from fsspec.implementations.local import LocalFileSystem

    files = sorted(tree.files, key=lambda k: (k not in first, k in last, k))
    if isinstance(fs, LocalFileSystem):
        for key in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, key))
        for key in sorted(tree.dirs, key=lambda k: -k.count("/")):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(root, key))
        if tree.is_file:
            os.unlink(root)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(root)
        return
    paths = [f"{root}/{key}" for key in files] if not tree.is_file else [root]
    head = [p for p in paths if posixpath.relpath(p, root) in first]
    tail = [p for p in paths if posixpath.relpath(p, root) in last]
    body = [p for p in paths if p not in head and p not in tail]
    for group in (head, body, tail):
        if not group:
            continue
        if any(_GLOB.search(p) for p in group):  # rm() would expand them as glob patterns
            for path in group:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(group)
    for key in sorted(tree.dirs, key=lambda k: -k.count("/")):
        with contextlib.suppress(OSError, NotImplementedError, ValueError):
            fs.rmdir(f"{root}/{key}")
    with contextlib.suppress(OSError, NotImplementedError, ValueError):
        if fs.isdir(root):
            fs.rmdir(root)
    fs.invalidate_cache(root)


def why_not_removable(
    store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None
) -> str | None:
    """Why :func:`remove_store` would refuse to delete ``store`` (None: it would not)."""
    fs, root = _fs(store, storage_options)
    tree = _tree(fs, root)
    return None if tree is None else _why_not_store(store, tree, kind, False, storage_options)


def remove_store(
    store: str,
    storage_options: dict[str, Any] | None = None,
    *,
    kind: StoreKind,
    ours: bool = False,
) -> None:
    """Delete the pupsnr store of ``kind`` at ``store``, file by file; nothing when none is there.

    Deletes only what it can prove pupsnr wrote: a Zarr store whose ``pupsnr_kind`` attribute
    is ``kind`` (or, with ``ours``, one that the caller's journal proves it created), every
    file of which belongs to a Zarr group or array. Files are listed first, then deleted by
    their exact names, never by pattern (object stores' ``rm`` expands ``*``, ``?`` and
    ``[...]``); symbolic links are never followed.

    Raises
    ------
    NotOursError
        When something else is there (a folder of other files, a file, a store of another
        kind); nothing is deleted.
    """
    fs, root = _fs(store, storage_options)
    tree = _tree(fs, root)
    if tree is None:
        return
    why = _why_not_store(store, tree, kind, ours, storage_options)
    if why:
        raise NotOursError(_refusal(store, why))
    _delete(fs, root, tree)


def remove_partial(
    store: str, storage_options: dict[str, Any] | None = None, *, kind: StoreKind, entry: str = ""
) -> None:
    """Delete ``STORE.partial`` (or its folder ``entry``) when it is pupsnr's journal of ``kind``.

    Its ``plan.json`` goes first (without a plan, leftovers are never resumed), its marker
    :data:`PARTIAL_MARKER` last (until then, what is left is still provably pupsnr's).

    Raises
    ------
    NotOursError
        When ``STORE.partial`` holds anything pupsnr does not write there.
    """
    from pupsnr_dask import durable

    partial = durable.partial_path(store)
    fs, root = _fs(partial, storage_options)
    tree = _tree(fs, root)
    if tree is None:
        return
    why = _why_not_partial(store, tree, kind, storage_options)
    if why:
        raise NotOursError(_refusal(partial, why))
    if entry:
        root = f"{root}/{entry}"
        tree = _tree(fs, root)
        if tree is None:
            return
    _delete(fs, root, tree, first=("plan.json",), last=(PARTIAL_MARKER,))


def start_partial(
    store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None
) -> None:
    """Create ``STORE.partial`` with its marker (after discarding an earlier one of ours)."""
    from pupsnr_dask import durable

    remove_partial(store, storage_options, kind=kind)
    durable.write_json(
        f"{durable.partial_path(store)}/{PARTIAL_MARKER}", {KIND_ATTR: kind}, storage_options
    )


def discard(store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None) -> None:
    """``--overwrite``: delete the store of ``kind`` and its journal, after checking both.

    The store must be a pupsnr store of that kind (its attribute) or, when it is half
    created, its journal must be pupsnr's; the journal must be pupsnr's. Nothing is deleted
    unless both checks pass.
    """
    from pupsnr_dask import durable

    partial = durable.partial_path(store)
    ptree = _tree(*_fs(partial, storage_options))
    if ptree is not None:
        why = _why_not_partial(store, ptree, kind, storage_options)
        if why:
            raise NotOursError(_refusal(partial, why))
    stree = _tree(*_fs(store, storage_options))
    if stree is not None:
        why = _why_not_store(store, stree, kind, ptree is not None, storage_options)
        if why:
            raise NotOursError(_refusal(store, why))
    remove_partial(store, storage_options, kind=kind)
    remove_store(store, storage_options, kind=kind, ours=ptree is not None)


def _refusal(location: str, why: str) -> str:
    return (
        f"{location!r} {why}: pupsnr deletes only what it wrote; move it away or choose "
        "another location"
    )


def store_exists(store: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when something exists at ``store`` (a path or fsspec URL)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
    fs.invalidate_cache(path)  # object stores cache listings; workers may have written since
    return bool(fs.exists(path))
