"""Zarr stores: open and check one, create one, write it region by region.

:func:`open_store` opens a store lazily after the cheap integrity probes
(:mod:`pupsnr_dask.store.integrity`) and :func:`pupsnr_dask.schema.validate`. Every array is
written with :func:`compressors` (zstd, then a CRC-32C checksum). Parallel writers own regions
(:func:`unit_bounds`) that never share a chunk or shard. A results store records its images
store (:func:`images_store_attrs`); :func:`images_store_of` looks it up for every caller.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pupsnr_dask.schema import (
    IMAGES,
    VARIABLE_ATTRS,
    StoreError,
    StoreKind,
    encode_attrs,
    validate,
)
from pupsnr_dask.store.codecs import compressors, ends_with_checksum
from pupsnr_dask.store.fs import absolute, is_url, partial_path, store_exists, stored_kind
from pupsnr_dask.store.integrity import (
    damage_message,
    first_damaged_chunk,
    list_keys,
    metadata_defects,
    missing_chunks,
    unfinished,
)

if TYPE_CHECKING:  # xarray (and dask) are imported when a store is opened or written, not here:
    import xarray as xr  # the store errors of open_store answer without them

#: Metadata at the top of a Zarr group (Zarr 3, Zarr 2): a store has one of them.
GROUP_METADATA = frozenset({"zarr.json", ".zgroup", ".zmetadata"})


def open_store(
    store: str,
    kind: StoreKind,
    *,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    lazy: bool = True,
) -> xr.Dataset:
    """Open a pupsnr store and check that it is of the expected kind.

    The checks, cheapest first: unfinished, missing, its kind (from the group's metadata
    document alone, before xarray is imported), every metadata document valid JSON, the
    layout and attributes (:func:`pupsnr_dask.schema.validate`), no chunk missing (a listing),
    the 1-D labels read. The chunks of the data variables are not read, unless ``verify``:
    then every stored object of every array but the pixels is checked too (its checksum, or
    decoded when it has none), so that damage is an error now rather than while computing.

    Parameters
    ----------
    store : str
        Path or fsspec URL of the Zarr store.
    kind : {"images", "psnr"}
        The kind of store expected.
    storage_options : dict, optional
        fsspec options for object storage (endpoint, credentials).
    verify : bool
        Also check every chunk of the labels and of the results (not the pixels).
    lazy : bool
        Data variables as dask arrays (True), or as xarray's lazily indexed arrays, read into
        NumPy on first use without importing dask.array (False: for small results).

    Returns
    -------
    xr.Dataset
        The store's dataset, its data not read yet; its 1-D labels in memory.

    Raises
    ------
    FileNotFoundError
        When nothing is stored at ``store``.
    StoreError
        When the store is not a pupsnr store of that kind, its layout is wrong, or it is
        damaged.
    """
    if kind not in ("images", "psnr"):
        raise ValueError(f"kind must be one of ('images', 'psnr'), got {kind!r}")

    why = unfinished(store, storage_options)  # also when STORE does not exist yet
    if why:
        raise StoreError(why)
    if not store_exists(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    keys = list_keys(store, storage_options)
    bad = metadata_defects(store, storage_options, keys)
    if bad:
        raise StoreError(f"{store!r} is damaged: {bad[0]}")
    _check_kind(store, kind, storage_options, keys)
    ds = _open_dataset(store, storage_options, lazy)
    validate(ds, kind, name=store)
    bad = missing_chunks(store, storage_options, keys)
    if bad:
        raise StoreError(
            f"{store!r} is damaged: {len(bad)} chunks or metadata files are missing "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); `pupsnr verify` lists "
            "every defect"
        )
    if verify:
        found = first_damaged_chunk(store, storage_options, skip=(IMAGES,))
        if found:
            raise StoreError(f"{store!r}: {found}: `pupsnr verify` lists every defect")
    return _labels_in_memory(ds, store, storage_options)


def _check_kind(
    store: str, kind: StoreKind, storage_options: dict[str, Any] | None, keys: set[str]
) -> None:
    """The cheap refusals of :func:`open_store`, from the listing and the group's metadata."""
    if not keys & GROUP_METADATA:
        raise StoreError(f"{store!r} is not a readable Zarr store: it has no Zarr metadata")
    found = stored_kind(store, storage_options)
    if found is not None and found != kind:  # None: validate() says why, after opening
        raise StoreError(f"{store!r} is a pupsnr {found!r} store; expected a pupsnr {kind!r} store")


def _open_dataset(store: str, storage_options: dict[str, Any] | None, lazy: bool) -> xr.Dataset:
    import xarray as xr  # deferred: 0.5 s, not needed for the refusals above

    try:
        if lazy:
            return xr.open_zarr(store, storage_options=storage_options, consolidated=None)
        return xr.open_dataset(  # no dask: lazily indexed arrays, read into NumPy when used
            store,
            engine="zarr",
            chunks=None,
            storage_options=storage_options,
            backend_kwargs={"consolidated": None},
        )
    except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
        named = damage_message([store], storage_options, skip=(IMAGES,))
        raise StoreError(named or f"{store!r} is not a readable Zarr store: {err}") from err


def _labels_in_memory(
    ds: xr.Dataset, store: str, storage_options: dict[str, Any] | None
) -> xr.Dataset:
    """``ds`` with its 1-D labels (source, split, ...) read in this process, data still lazy.

    Read synchronously whatever the active scheduler: opening a store and answering from its
    labels alone (an up-to-date store, a bad selection) never starts a cluster. A label chunk
    that cannot be decoded is a :class:`StoreError` naming it.
    """
    lazy = [n for n, c in ds.coords.items() if c.ndim == 1 and n not in ds.dims]
    try:
        if any(ds[name].chunks for name in lazy):
            import dask  # deferred with the dask-backed dataset (lazy=True) that needs it
            import dask.local

            # a function, not "sync": dask would import distributed to look for a client
            with dask.config.set(scheduler=dask.local.get_sync):
                return ds.assign_coords({name: ds[name].load() for name in lazy})
        return ds.assign_coords({name: ds[name].load() for name in lazy})
    except Exception as err:
        named = damage_message([store], storage_options, skip=(IMAGES,))
        if named is None:
            raise
        raise StoreError(named) from err


def create_store(
    ds: xr.Dataset, store: str, *, storage_options: dict[str, Any] | None = None
) -> Any:
    """Create a new Zarr store for ``ds``: metadata and in-memory variables, not dask ones.

    Every variable whose encoded ``compressors`` do not end with the checksum gets
    :func:`compressors` (zstd and a checksum), so that every chunk written can be checked.
    Every variable named in :data:`pupsnr_dask.schema.VARIABLE_ATTRS` gets its CF-style
    attributes (``units``, ``long_name``, ``description``; they replace the caller's of the
    same name), and list or mapping attributes of the dataset are written as JSON text
    (:func:`pupsnr_dask.schema.encode_attrs`), so that ``ds.to_netcdf`` can carry them.

    Returns
    -------
    dask.delayed.Delayed
        Computing it writes the dask-backed variables; the resumable writers of
        :mod:`pupsnr_dask.ingest` and :mod:`pupsnr_dask.experiment` write regions themselves.
    """
    import warnings

    out = align_to_shards(ds)
    out.attrs = encode_attrs(out.attrs)
    for name, var in out.variables.items():  # a copy: the caller's encodings are kept
        if not ends_with_checksum(var.encoding.get("compressors")):
            var.encoding = {**var.encoding, "compressors": compressors()}
        var.attrs = {**var.attrs, **VARIABLE_ATTRS.get(str(name), {})}
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


def align_to_shards(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk dask variables whose encoding has ``shards`` so that blocks hold whole shards.

    Parallel tasks writing parts of the same shard would each read, modify and rewrite the
    whole shard, losing each other's data; xarray refuses such writes, this realigns them.

    Examples
    --------
    >>> import dask.array as da
    >>> import xarray as xr
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


def unit_bounds(start: int, stop: int, unit: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` at multiples of ``unit``: the regions parallel writers may own.

    A region never shares a Zarr chunk (or shard) with another, so tasks writing different
    regions in parallel never read-modify-write the same object.

    Examples
    --------
    >>> unit_bounds(5, 14, 4)
    [(5, 8), (8, 12), (12, 14)]
    """
    if unit < 1:
        raise ValueError(f"unit must be >= 1, got {unit!r}")
    out = []
    a = start
    while a < stop:
        b = min(stop, (a // unit + 1) * unit)
        out.append((a, b))
        a = b
    return out


def write_unit(array: Any) -> int:
    """Images per independent write of a Zarr array: its shard length, else its chunk length."""
    shards = getattr(array, "shards", None)
    return int(shards[0]) if shards else int(array.chunks[0])


#: Attributes of a results store naming its images store.
IMAGES_STORE_ATTR = "images_store"


IMAGES_STORE_RELATIVE_ATTR = "images_store_relative"


# -- the images store of a results store -----------------------------------------------------
def _split(location: str) -> tuple[str, str]:
    """``(prefix, absolute posix path)``: ``("s3://", "/bucket/a")`` or ``("", "/home/a")``."""
    if is_url(location):
        head, _, path = location.partition("://")
        return head + "://", posixpath.normpath("/" + path.strip("/"))
    return "", absolute(location)


def images_store_attrs(images: str, results: str) -> dict[str, str]:
    """What a results store records about its images store: absolute, and relative to it.

    The relative form (from the results store to the images store, ``/`` separators) keeps
    the link when both stores are moved or copied together; it is recorded only when both are
    on the same filesystem.

    Examples
    --------
    >>> images_store_attrs("/w/data.zarr", "/w/out/psnr.zarr")
    {'images_store': '/w/data.zarr', 'images_store_relative': '../../data.zarr'}
    """
    (pi, i), (pr, r) = _split(images), _split(results)
    out = {IMAGES_STORE_ATTR: absolute(images)}
    if pi == pr:
        out[IMAGES_STORE_RELATIVE_ATTR] = posixpath.relpath(i, r)
    return out


def _join(results: str, relative: str) -> str:
    prefix, path = _split(results)
    joined = posixpath.normpath(posixpath.join(path, relative))
    return prefix + joined.lstrip("/") if prefix else joined


def images_store_of(
    attrs: Mapping[str, Any],
    results: str | None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[str | None, str]:
    """The images store a results store records: ``(location or None, how it was found)``.

    Order: ``images_store_relative`` resolved against the results' own location first (a
    moved or copied pair finds its own images, even when the original still exists), then
    the absolute ``images_store``. The first that exists (or is unfinished) is returned; when
    none does, the absolute one (or the relative one resolved) with a note saying both were
    tried.

    Parameters
    ----------
    attrs : mapping
        The results store's attributes.
    results : str or None
        Where the results store is (path or URL); None when unknown (then only the absolute
        location is tried).
    """
    storage_options = dict(storage_options) if storage_options else None
    tried = []
    relative = attrs.get(IMAGES_STORE_RELATIVE_ATTR)
    if isinstance(relative, str) and relative and results:
        tried.append((_join(results, relative), "found by its path relative to the results"))
    recorded = attrs.get(IMAGES_STORE_ATTR)
    if isinstance(recorded, str) and recorded:
        tried.append((recorded, "recorded in the results"))
    if not tried:
        return None, "the results do not record their images store: pass --images STORE"
    for location, how in tried:
        if store_exists(location, storage_options) or store_exists(
            partial_path(location), storage_options
        ):
            return location, how
    names = " nor ".join(repr(loc) for loc, _ in tried)
    return tried[-1][0], f"the recorded images store is missing (neither {names} exists)"
