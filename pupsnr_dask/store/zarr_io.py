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
from typing import Any

import dask
import dask.local
import numpy as np
import xarray as xr

from pupsnr_dask.schema import (
    IMAGES,
    VARIABLE_ATTRS,
    StoreError,
    StoreKind,
    encode_attrs,
    validate,
)
from pupsnr_dask.store.codecs import compressors, ends_with_checksum
from pupsnr_dask.store.fs import absolute, is_url, partial_path, store_exists
from pupsnr_dask.store.integrity import (
    damage_message,
    list_keys,
    metadata_defects,
    missing_chunks,
    unfinished,
    unreadable_chunks,
)


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

    why = unfinished(store, storage_options)  # also when STORE does not exist yet
    if why:
        raise StoreError(why)
    if not store_exists(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    keys = list_keys(store, storage_options)
    bad = metadata_defects(store, storage_options, keys)
    if bad:
        raise StoreError(f"{store!r} is damaged: {bad[0]}")
    try:
        ds = xr.open_zarr(store, storage_options=storage_options, consolidated=None)
    except Exception as err:  # zarr raises many kinds for foreign or corrupt stores
        named = damage_message([store], storage_options, skip=(IMAGES,))
        raise StoreError(named or f"{store!r} is not a readable Zarr store: {err}") from err
    validate(ds, kind, name=store)
    bad = missing_chunks(store, storage_options, keys)
    if bad:
        raise StoreError(
            f"{store!r} is damaged: {len(bad)} chunks or metadata files are missing "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); `pupsnr verify` lists "
            "every defect"
        )
    # Every chunk of the labels (small), and of a results store (small too), is read now
    # rather than failing later; the pixels of an images store are not (see damage_named).
    bad = unreadable_chunks(store, storage_options, skip=(IMAGES,))
    if bad:
        raise StoreError(f"{store!r}: {bad[0]}: `pupsnr verify` lists every defect")
    return _labels_in_memory(ds)


def _labels_in_memory(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its 1-D labels (source, split, ...) read in this process, data still lazy.

    Read synchronously whatever the active scheduler: opening a store and answering from its
    labels alone (an up-to-date store, a bad selection) never starts a cluster.
    """
    lazy = [n for n, c in ds.coords.items() if c.ndim == 1 and n not in ds.dims and c.chunks]
    # a function, not "sync": dask would import distributed to look for a client
    with dask.config.set(scheduler=dask.local.get_sync):
        return ds.assign_coords({name: ds[name].load() for name in lazy})


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
    so = dict(storage_options) if storage_options else None
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
        if store_exists(location, so) or store_exists(partial_path(location), so):
            return location, how
    names = " nor ".join(repr(loc) for loc, _ in tried)
    return tried[-1][0], f"the recorded images store is missing (neither {names} exists)"
