"""Files and folders of stores, wherever they are: fsspec, credentials, safe deletion.

Everything that touches a filesystem goes through :func:`url_to_fs` (the one place fsspec is
asked for a filesystem). Storage options travel as :class:`StorageOptions`, whose ``repr``
hides credentials. Every writer of a store ``STORE`` uses two neighbours::

    STORE.lock      who is writing STORE now (:mod:`pupsnr_dask.store.lock`)
    STORE.partial/  the journal of unfinished work (:mod:`pupsnr_dask.store.journal`)

Journal files are small JSON documents written atomically (:func:`write_json`): a reader sees
either the whole document or none. :func:`check_output` refuses an output that is a command's
input, inside it or above it, comparing resolved locations (:func:`resolved`). Deletion
(:func:`remove_store`) removes only what it can prove pupsnr wrote, file by file.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pupsnr_dask.schema import KIND_ATTR, StoreKind


def url_to_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` of a path or fsspec URL: the one call of ``fsspec.url_to_fs``.

    Examples
    --------
    >>> fs, path = url_to_fs("/tmp/x.zarr")
    >>> type(fs).__name__, path
    ('LocalFileSystem', '/tmp/x.zarr')
    """
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


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


LOCK_SUFFIX = ".lock"


PARTIAL_SUFFIX = ".partial"


def lock_path(store: str) -> str:
    """``STORE.lock``: the lock file next to ``store``."""
    return store.rstrip("/") + LOCK_SUFFIX


def partial_path(store: str) -> str:
    """``STORE.partial``: the journal of unfinished work on ``store``."""
    return store.rstrip("/") + PARTIAL_SUFFIX


# -- journal files ---------------------------------------------------------------------------
def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``obj`` as JSON at ``url`` atomically: readers see all of it or nothing.

    On a local disk the document is written to a temporary name and renamed; object stores
    replace a key in one request.
    """
    fs, path = url_to_fs(url, storage_options)
    data = json.dumps(obj, allow_nan=True).encode()
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The JSON document at ``url``, or None when it is missing or not valid JSON."""
    fs, path = url_to_fs(url, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def list_names(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Names of the entries of the folder ``url`` (empty when it does not exist)."""
    fs, path = url_to_fs(url, storage_options)
    try:
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


Relation = Literal["same", "inside", "above"]


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
    from fsspec.implementations.local import LocalFileSystem

    fs, path = url_to_fs(location, storage_options)
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


def check_store_output(
    output: str,
    source: str,
    *,
    output_name: str,
    source_name: str,
    overwrite: bool,
    refuse_inside: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """:func:`check_output` for a store and its journal ``OUTPUT.partial``, both written."""
    for name, where in ((output_name, output), (f"{output_name}.partial", partial_path(output))):
        check_output(
            where,
            source,
            output_name=name,
            source_name=source_name,
            overwrite=overwrite,
            refuse_inside=refuse_inside,
            storage_options=storage_options,
        )


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


def store_exists(store: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when something exists at ``store`` (a path or fsspec URL)."""
    fs, path = url_to_fs(store, storage_options)
    fs.invalidate_cache(path)  # object stores cache listings; workers may have written since
    return bool(fs.exists(path))


class NotOursError(FileExistsError):
    """Something exists where pupsnr would delete, and nothing proves that pupsnr wrote it."""


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

    fs, path = url_to_fs(url, storage_options)
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
    store: str, tree: _Tree, kind: StoreKind, ours: bool, storage_options: dict[str, Any] | None
) -> str | None:
    if tree.is_file:
        return "is a file, not a store"
    if tree.links:
        return f"holds a symbolic link ({tree.links[0]!r})"
    if not tree.files:
        return None  # only empty folders: nothing to lose
    found = stored_kind(store, storage_options)
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


def _refusal(location: str, why: str) -> str:
    return (
        f"{location!r} {why}: pupsnr deletes only what it wrote; move it away or choose "
        "another location"
    )
