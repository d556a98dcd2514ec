"""Where the work runs: a LocalCluster by default, or an existing Dask scheduler.

:func:`connect` is a context manager that yields a ``distributed.Client``; while it is open,
every ``dask.compute`` in the library runs on that cluster. :func:`compute` computes with a
progress bar on standard error, on whatever scheduler is active.

An existing scheduler is reached over ``tcp://`` or, with certificates, ``tls://``
(:func:`make_security`). A scheduler that cannot be reached within ``timeout`` seconds, or that
goes away during a computation, raises a :class:`ConnectionError` instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import dask

SCHEDULER_ENV = "PUPSNR_SCHEDULER"
#: Environment variables naming the TLS files, by parameter of :func:`connect`.
TLS_ENV = {
    "tls_ca_file": "PUPSNR_TLS_CA_FILE",
    "tls_cert": "PUPSNR_TLS_CERT",
    "tls_key": "PUPSNR_TLS_KEY",
}
DEFAULT_TIMEOUT = 30.0
#: Added to the environment of local worker processes. distributed sets MALLOC_TRIM_THRESHOLD_,
#: which freezes glibc's mmap threshold at 128 KiB: every larger temporary array is then
#: mmap'd and page-faulted in afresh (~17,000 faults and ~25 % of the time of a 32-image
#: chunk, see benchmarks/RESULTS.md). Arrays below 64 MiB come from the heap instead.
LOCAL_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": 1 << 26}


class SchedulerLostError(ConnectionError):
    """The connection to the Dask scheduler was lost while a computation was running."""


def default_n_workers() -> int:
    """One single-threaded worker process per CPU core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    timeout: float = DEFAULT_TIMEOUT,
    quiet: bool = False,
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Iterator[Any]:
    """Connect to a Dask cluster for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786`` or ``tls://host:8786``). When
        None, the environment variable ``PUPSNR_SCHEDULER`` is used; when that is unset too, a
        LocalCluster is started with its scheduler and dashboard bound to 127.0.0.1.
    n_workers : int, optional
        Worker processes of the LocalCluster; default one per CPU core.
    dashboard_address : str
        Where the LocalCluster's dashboard listens.
    timeout : float
        Seconds to wait for an existing scheduler before giving up. Losing the connection
        during a computation makes :func:`compute` raise :class:`SchedulerLostError` at once.
    quiet : bool
        When False, print the dashboard link to standard error.
    tls_ca_file, tls_cert, tls_key : str, optional
        PEM files for a ``tls://`` scheduler: the certificate authority, this client's
        certificate and its private key (see :func:`make_security`). When None and the address
        is ``tls://``, the environment variables of :data:`TLS_ENV`, then Dask's
        ``distributed.comm.tls`` configuration, are used. Given for any other address, they
        raise ValueError.

    Yields
    ------
    distributed.Client
        The client, set as the default scheduler inside the block.
    """
    from distributed import Client, LocalCluster

    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, got {n_workers!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    given = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
    use_env = bool(scheduler) and str(scheduler).startswith("tls://")  # else they do not apply
    tls = {
        name: value or (os.environ.get(TLS_ENV[name]) if use_env else None) or None
        for name, value in given.items()
    }
    if scheduler:
        security = make_security(scheduler, **tls)
        try:
            client = Client(scheduler, timeout=timeout, security=security)
        except (OSError, TimeoutError) as err:
            raise ConnectionError(
                f"could not reach the Dask scheduler at {scheduler!r} within {timeout:g} s: "
                + _one_line(err)
            ) from err
        try:
            _announce(client, quiet)
            yield client
        except SchedulerLostError:
            with _logging_disabled():  # distributed logs its failed reconnection at length
                client.close(timeout=timeout)
            raise
        finally:
            client.close()  # does nothing when already closed
        return
    if any(tls.values()):
        raise ValueError(
            "TLS certificates (tls_ca_file, tls_cert, tls_key) need a tls:// scheduler "
            "address; the local cluster does not use them"
        )
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in LOCAL_WORKER_ENV.items()}
    with (
        dask.config.set(environ),
        LocalCluster(
            n_workers=n_workers or default_n_workers(),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
        ) as cluster,
        Client(cluster) as client,
    ):
        _announce(client, quiet)
        yield client


def make_security(
    scheduler: str,
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Any:
    """The ``distributed.Security`` for a scheduler address, or None for Dask's configuration.

    Parameters
    ----------
    scheduler : str
        The scheduler address; TLS files are accepted only with ``tls://``.
    tls_ca_file : str, optional
        PEM file of the certificate authority that signed the scheduler's certificate.
    tls_cert : str, optional
        PEM file of this client's certificate (it may hold the private key too).
    tls_key : str, optional
        PEM file of the private key of ``tls_cert``.

    Returns
    -------
    distributed.Security or None
        None when no file is given: distributed then uses its ``distributed.comm.tls``
        configuration, which is what a plain ``tcp://`` address needs.

    Raises
    ------
    ValueError
        When files are given for a non-TLS address, or a ``tls://`` address has neither files
        nor configured certificates.
    FileNotFoundError
        When a named file does not exist.
    """
    from distributed import Security

    files = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
    is_tls = scheduler.startswith("tls://")
    if not any(files.values()):
        configured = dask.config.get("distributed.comm.tls.ca-file", None)
        if is_tls and not configured:
            raise ValueError(
                f"scheduler {scheduler!r} uses TLS: give tls_ca_file and tls_cert "
                f"(--tls-ca-file/--tls-cert, or ${TLS_ENV['tls_ca_file']}/${TLS_ENV['tls_cert']})"
            )
        return None
    if not is_tls:
        raise ValueError(
            f"TLS certificates need a tls:// scheduler address, got scheduler={scheduler!r}"
        )
    for name in ("tls_ca_file", "tls_cert"):
        if not files[name]:
            raise ValueError(f"{name} is required for a tls:// scheduler, got None")
    for name, path in files.items():
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{name} {path!r} is not a file")
    return Security(
        tls_ca_file=tls_ca_file,
        tls_client_cert=tls_cert,
        tls_client_key=tls_key,
        require_encryption=True,
    )


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def _logging_disabled() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _announce(client: Any, quiet: bool) -> None:
    if quiet:
        return
    n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    print(f"dask: {n} workers, dashboard {client.dashboard_link}", file=sys.stderr)


def compute(*collections: Any, progress: bool | None = None) -> tuple[Any, ...]:
    """Compute dask collections on the active scheduler, with a progress bar on stderr.

    Parameters
    ----------
    *collections
        Dask collections or delayed objects.
    progress : bool, optional
        Show a progress bar on standard error; by default only when it is a terminal.

    Returns
    -------
    tuple
        The computed results, in order.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    client = _active_client()
    if client is not None:
        try:
            futures = client.compute(list(collections))
            if progress:
                from distributed import progress as show_progress

                with contextlib.redirect_stdout(sys.stderr):
                    show_progress(futures)
                    print(file=sys.stderr)
            return tuple(client.gather(futures))
        except CancelledError as err:
            if client.status == "running" and "connection-lost" not in str(err):
                raise
            raise SchedulerLostError(
                f"lost the connection to the Dask scheduler at {client.scheduler.address!r} "
                "during the computation; its results are incomplete (re-run the command once "
                "the scheduler is back)"
            ) from err
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return dask.compute(*collections)
    return dask.compute(*collections)


def _active_client() -> Any:
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return None
    # An explicit dask.config scheduler other than the client's (e.g. "sync") wins.
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    return client
