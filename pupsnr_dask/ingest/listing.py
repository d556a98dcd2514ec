"""Listing SRC: every file below it, the Zarr stores and journals inside it that are skipped."""

from __future__ import annotations

import posixpath
from typing import Any

from pupsnr_dask.store.fs import PARTIAL_SUFFIX, lock_path, url_to_fs
from pupsnr_dask.store.journal import PARTIAL_ENTRIES


def list_files(
    src: str,
    storage_options: dict[str, Any] | None = None,
    *,
    skipped: list[str] | None = None,
) -> list[str]:
    """Every file below ``src``, as sorted relative paths with ``/`` separators.

    Symbolic links are listed, not followed: a link to a folder is an entry of its own (ingest
    rejects it), so loops cannot make the walk endless. A folder that cannot be listed is an
    entry too, its path ending with ``/``, so that it is reported rather than skipped. A name
    that is not valid UTF-8 is listed as :func:`os.fsdecode` gives it (its undecodable bytes
    as lone surrogates, see :func:`~pupsnr_dask.kernels.image.escaped_name`): ingest rejects
    it and records its name escaped.

    Zarr stores below ``src`` (folders holding ``zarr.json``, ``.zgroup`` or ``.zarray``), pupsnr
    journals (``X.partial``) and the lock files ``X.lock`` next to them are not listed (a store
    written inside SRC is not a source of itself): their paths are appended to ``skipped``.

    Raises
    ------
    FileNotFoundError
        When ``src`` does not exist.
    NotADirectoryError
        When ``src`` is not a folder.
    """
    fs, root = url_to_fs(src, storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"SRC {src!r} does not exist")
    if not fs.isdir(root):
        raise NotADirectoryError(f"SRC {src!r} is not a folder")
    root = root.rstrip("/") or "/"
    entries: list[str] = []
    stores: list[str] = []
    folders = [root]
    while folders:  # fsspec's walk would skip unlistable subfolders silently
        folder = folders.pop()
        try:
            listing = fs.ls(folder, detail=True)
        except OSError:
            if folder == root:
                raise
            entries.append(posixpath.relpath(folder, root) + "/")
            continue
        if folder != root and _is_store_listing(folder, listing):
            stores.append(posixpath.relpath(folder, root))
            continue
        for info in listing:
            path = info["name"].rstrip("/")
            if path == folder:
                continue
            if info["type"] == "directory" and not info.get("islink"):
                folders.append(path)
            else:
                entries.append(posixpath.relpath(path, root))
    entries = _without_locks_of(entries, stores)
    if skipped is not None:
        skipped.extend(sorted(stores))
    return sorted(entries)


_STORE_MARKERS = frozenset({"zarr.json", ".zgroup", ".zarray"})


def _is_store_listing(folder: str, listing: list[dict[str, Any]]) -> bool:
    """True when a folder's listing is that of a Zarr store or of a pupsnr journal."""
    names = {posixpath.basename(info["name"].rstrip("/")) for info in listing}
    if names & _STORE_MARKERS:
        return True
    return folder.endswith(PARTIAL_SUFFIX) and bool(names) and names <= PARTIAL_ENTRIES


def _without_locks_of(entries: list[str], stores: list[str]) -> list[str]:
    """``entries`` less the lock files ``X.lock`` of skipped stores (``X`` or ``X.partial``)."""
    owners = {s[: -len(PARTIAL_SUFFIX)] if s.endswith(PARTIAL_SUFFIX) else s for s in stores}
    locks = {lock_path(owner) for owner in owners}
    return [e for e in entries if e not in locks]


def skipped_note(skipped: list[str]) -> str:
    """The summary line about the Zarr stores and journals found inside SRC and not listed."""
    n = len(skipped)
    shown = ", ".join(skipped[:5]) + (", ..." if n > 5 else "")
    return f"skipped {n} Zarr store{'s' if n != 1 else ''} inside SRC: {shown}"


def canonical_src(src: str, storage_options: dict[str, Any] | None = None) -> str:
    """SRC as recorded in a store: an absolute path, or a URL with its protocol."""
    from fsspec.implementations.local import LocalFileSystem

    fs, root = url_to_fs(src, storage_options)
    root = root.rstrip("/") or "/"
    return root if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(root)
