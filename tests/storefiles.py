"""Byte-for-byte comparison of stores, shared by the resume and hang tests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def files(store: Path) -> dict[str, str]:
    """SHA-256 of every file of a store (metadata and chunks), by relative path.

    The link to the images store that a results store records relative to itself differs
    between stores in different folders: it is compared as the location it resolves to.
    """
    return {
        p.relative_to(store).as_posix(): hashlib.sha256(_resolved_link(store, p)).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def _resolved_link(store: Path, path: Path) -> bytes:
    data = path.read_bytes()
    if path != store / "zarr.json":
        return data
    relative = json.loads(data).get("attributes", {}).get("images_store_relative")
    if relative is None:
        return data
    target = os.path.normpath(os.path.join(store, relative))
    return data.replace(json.dumps(relative).encode(), json.dumps(target).encode())
