"""Who is writing a store: ``STORE.lock``, taken for the duration of a ``with`` block.

:class:`StoreLock` takes ``STORE.lock``; a second writer gets a :class:`StoreLockedError` naming
the holder: ``{"pid", "host", "started", "command"}`` (credentials hidden from the command; mode
0600 on a local disk). On a local disk the lock is an ``flock`` on the lock file, so it dies with
its process, even after SIGKILL; elsewhere (object storage) the file is created exclusively and
a lock left by a dead process on the same host is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import sys
import time
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from pupsnr_dask.store.fs import lock_path, redact_argv, url_to_fs


class StoreLockedError(OSError):
    """Another process holds the lock of a store."""


#: Mode of a lock file on a local disk: it names the command, readable by its owner only.
LOCK_FILE_MODE = 0o600


#: ``taken_over`` of a lock whose file was empty or not valid JSON (a writer that died while
#: writing it, on a full disk for instance).
UNREADABLE_HOLDER = {"unreadable": True}


def _holder_info() -> dict[str, Any]:
    """Who takes a lock: pid, host, start time and the command, its credentials hidden."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(redact_argv(list(sys.argv)))[:1000],
    }


def describe(holder: dict[str, Any] | None) -> str:
    """A lock holder for messages: pid, host and start time."""
    if holder == UNREADABLE_HOLDER:
        return "a process that left an empty or unreadable lock file"
    if not holder:
        return "an unknown process"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')!r} since {holder.get('started', '?')}"
    )


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class StoreLock:
    """Exclusive right to write ``store``, held for a ``with`` block.

    Parameters
    ----------
    store : str
        Path or fsspec URL of the store; the lock file is ``STORE.lock``.
    storage_options : dict, optional
        fsspec options for object storage.

    Attributes
    ----------
    taken_over : dict or None
        The holder recorded in a stale lock file that was taken over (a process that died
        without releasing it), else None.

    Raises
    ------
    StoreLockedError
        On entering, when a live process holds the lock.
    """

    def __init__(self, store: str, storage_options: dict[str, Any] | None = None) -> None:
        self.store = store
        self.path = lock_path(store)
        self.fs, self._fspath = url_to_fs(self.path, storage_options)
        self.taken_over: dict[str, Any] | None = None
        self._fd: int | None = None
        self._info: dict[str, Any] = {}

    @property
    def takeover_note(self) -> str | None:
        """The line that tells the user the lock was taken over from a dead process, or None."""
        if not self.taken_over:
            return None
        return f"took over the lock of a process that died ({describe(self.taken_over)})"

    def __enter__(self) -> StoreLock:
        self._info = _holder_info()
        parent = posixpath.dirname(self._fspath.rstrip("/"))
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        if isinstance(self.fs, LocalFileSystem) and _has_flock():
            self._acquire_flock()
        else:
            self._acquire_exclusive_file()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _refuse(self, holder: dict[str, Any] | None) -> StoreLockedError:
        return StoreLockedError(
            f"{self.store!r} is being written by another process ({describe(holder)}): wait "
            f"for it to finish; if that process is gone, delete {self.path!r}"
        )

    # -- local disk: flock, released by the kernel when the process dies ----------------------
    def _acquire_flock(self) -> None:
        import fcntl

        for _ in range(10):
            fd = os.open(self._fspath, os.O_RDWR | os.O_CREAT, LOCK_FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder_fd(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            try:
                same = os.stat(self._fspath).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file as we opened it: retry
                os.close(fd)
                continue
            previous = _read_holder_fd(fd)
            if previous:
                self.taken_over = previous
            try:
                self._write_holder_fd(fd)
            except OSError:  # a full disk: leave no lock file behind, not even an empty one
                with contextlib.suppress(OSError):
                    os.unlink(self._fspath)  # still holding the flock: it is ours
                os.close(fd)
                raise
            self._fd = fd
            return
        raise self._refuse(None)

    def _write_holder_fd(self, fd: int) -> None:
        os.fchmod(fd, LOCK_FILE_MODE)  # also a lock file left by an older version
        data = json.dumps(self._info).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    # -- elsewhere: exclusive creation, stale when its process is dead on this host -----------
    def _acquire_exclusive_file(self) -> None:
        data = json.dumps(self._info).encode()
        for _ in range(3):
            try:
                with self.fs.open(self._fspath, "xb") as fh:
                    fh.write(data)
                return
            except FileExistsError:
                pass
            except (ValueError, NotImplementedError):  # no exclusive create on this filesystem
                if not self.fs.exists(self._fspath):
                    self.fs.pipe_file(self._fspath, data)
                    return
            holder = self._read_holder_file()
            if holder is None:  # released meanwhile: try again
                continue
            if not self._is_stale(holder):
                raise self._refuse(holder)
            self.taken_over = holder or UNREADABLE_HOLDER
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._fspath)
        raise self._refuse(self._read_holder_file())

    def _read_holder_file(self) -> dict[str, Any] | None:
        """The holder in the lock file; ``{}`` when it is empty or unreadable, None if gone."""
        try:
            return _parse_holder(self.fs.cat_file(self._fspath)) or {}
        except FileNotFoundError:
            return None

    @staticmethod
    def _is_stale(holder: dict[str, Any] | None) -> bool:
        """True for a holder that died on this host, and for an empty or unreadable lock file.

        An object store writes a lock file in one request, whole: an empty or unparsable one
        was left by a writer that failed while writing it, never by a live one.
        """
        if holder == {}:
            return True
        if not holder or holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid)

    def release(self) -> None:
        """Give the lock up and remove the lock file (also done on leaving the block)."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._fspath)  # while still holding the flock
            os.close(self._fd)
            self._fd = None
        elif self._info and self._read_holder_file() == self._info:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._fspath)
        self._info = {}


def _has_flock() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not on POSIX
        return False
    return True


def _read_holder_fd(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse_holder(os.read(fd, 4096))


def _parse_holder(data: bytes) -> dict[str, Any] | None:
    try:
        holder = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def read_lock_holder(store: str, storage_options: dict[str, Any] | None = None) -> dict | None:
    """Who holds (or last held) the lock of ``store`` according to its lock file, or None."""
    fs, path = url_to_fs(lock_path(store), storage_options)
    try:
        return _parse_holder(fs.cat_file(path))
    except FileNotFoundError:
        return None
