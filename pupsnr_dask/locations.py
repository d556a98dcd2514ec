"""Where stores are: resolved locations, what may be written where, what the workers see.

Three questions, each answered once here for every command:

* Is an output location safe for a command? :func:`check_output` refuses ``-o`` equal to the
  command's input, inside it or above it (a parent of it), comparing resolved locations
  (:func:`resolved`: ``realpath`` for local paths, a normalised path for fsspec URLs), so that
  ``./photos/../photos`` and symbolic links do not dodge the test.
* Can the Dask workers read what this process sees? :func:`check_workers_see` asks every
  worker of an existing cluster before any task is sent, so that a path that only this machine
  (or this working directory) knows fails with one line naming it, before anything is written.
* Which images store belongs to a results store? :func:`images_store_attrs` records it both as
  an absolute location and relative to the results; :func:`find_images_store` looks it up
  (relative first, see there) for every caller: ``report --html``, ``advise``, ``verify``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any, Literal

Relation = Literal["same", "inside", "above"]

#: Attributes of a results store naming its images store.
IMAGES_STORE_ATTR = "images_store"
IMAGES_STORE_RELATIVE_ATTR = "images_store_relative"


def is_url(location: str) -> bool:
    """True for an fsspec URL with a protocol (``s3://...``), False for a local path."""
    return "://" in location and not location.startswith("file://")


def absolute(location: str) -> str:
    """A local path made absolute (from the current directory); URLs are returned unchanged.

    Examples
    --------
    >>> absolute("s3://bucket/data.zarr")
    's3://bucket/data.zarr'
    >>> absolute("/data/../data/x.zarr")
    '/data/x.zarr'
    """
    if is_url(location):
        return location
    if location.startswith("file://"):  # kept a URL: storage options may go with it
        return "file://" + os.path.abspath(location[len("file://") :])
    return os.path.abspath(location)


def resolved(location: str, storage_options: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """``(filesystem, path)`` that names the same place whatever the spelling.

    Local paths go through ``realpath`` (symbolic links and ``..`` resolved); URLs keep their
    protocol and get a normalised path.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        return "file", os.path.realpath(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, posixpath.normpath("/" + path.strip("/"))


def relation(a: str, b: str, storage_options: Mapping[str, Any] | None = None) -> Relation | None:
    """How location ``a`` lies relative to ``b``: the same, inside it, above it, or None.

    Examples
    --------
    >>> relation("/data/photos/../photos", "/data/photos")
    'same'
    >>> relation("/data/photos/x.zarr", "/data/photos"), relation("/data", "/data/photos")
    ('inside', 'above')
    >>> relation("/data/photos2", "/data/photos") is None
    True
    """
    (fa, pa), (fb, pb) = resolved(a, storage_options), resolved(b, storage_options)
    if fa != fb:
        return None
    if pa == pb:
        return "same"
    if pa.startswith(pb.rstrip("/") + "/"):
        return "inside"
    if pb.startswith(pa.rstrip("/") + "/"):
        return "above"
    return None


def check_output(
    output: str,
    source: str,
    *,
    output_name: str,
    source_name: str,
    overwrite: bool,
    refuse_inside: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Refuse an output that is the input of the same command, above it, or inside it.

    Parameters
    ----------
    output, source : str
        The command's output and input locations.
    output_name, source_name : str
        How messages call them (``"STORE"``, ``"SRC"``, ...).
    overwrite : bool
        Whether the command was asked to delete what is at ``output``.
    refuse_inside : bool
        Refuse an output inside the input even without ``overwrite`` (a results store inside
        an images store); with False, it is refused only with ``overwrite`` (a store inside
        SRC may be written, never deleted).

    Raises
    ------
    ValueError
        One line saying why.
    """
    found = relation(output, source, storage_options)
    if found is None or (found == "inside" and not (overwrite or refuse_inside)):
        return
    where = {"same": "is", "inside": "is inside", "above": "is a folder above"}[found]
    act = "--overwrite would delete" if overwrite else "writing there would damage"
    raise ValueError(
        f"{output_name} {output!r} {where} {source_name} {source!r}: {act} the input of this "
        f"command; choose a {output_name} outside {source_name}"
    )


# -- what the workers see --------------------------------------------------------------------
def check_workers_see(
    locations: Mapping[str, str], storage_options: Mapping[str, Any] | None = None
) -> None:
    """Raise when the workers of the active Dask client do not find these locations.

    Nothing is checked without a distributed client (threads or the synchronous scheduler
    share this process's view). Each value must exist for this process already; the keys name
    them in the message (``"SRC"``, ``"the folder of STORE"``, ...).

    Raises
    ------
    FileNotFoundError
        One line naming the first location some worker cannot find.
    """
    from pupsnr_dask.cluster import _active_client

    client = _active_client()
    if client is None or not locations:
        return
    options = dict(storage_options) if storage_options is not None else None
    if options is not None:
        from pupsnr_dask.schema import StorageOptions

        options = StorageOptions(options)
    seen = client.run(_missing, dict(locations), options)
    for worker, missing in sorted(seen.items()):
        if missing:
            name = missing[0]
            raise FileNotFoundError(
                f"the Dask workers cannot read {name} {locations[name]!r} (worker {worker} "
                "does not find it, this machine does): with an existing cluster, give "
                "locations that the workers see too (absolute paths on a shared folder, or "
                "object-store URLs)"
            )


def _missing(locations: dict[str, str], storage_options: dict[str, Any] | None) -> list[str]:
    """On a worker: the names of the locations that do not exist here."""
    import fsspec

    out = []
    for name, location in locations.items():
        try:
            fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
            fs.invalidate_cache(path)
            found = fs.exists(path)
        except Exception:  # any failure to look means the worker cannot read it
            found = False
        if not found:
            out.append(name)
    return out


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


def find_images_store(
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
    from pupsnr_dask import durable, schema

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
        if schema.store_exists(location, so) or schema.store_exists(
            durable.partial_path(location), so
        ):
            return location, how
    names = " nor ".join(repr(loc) for loc, _ in tried)
    return tried[-1][0], f"the recorded images store is missing (neither {names} exists)"
