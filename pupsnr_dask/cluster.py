"""Where the work runs: a LocalCluster by default, or an existing Dask scheduler.

:func:`connect` is a context manager that yields a ``distributed.Client``; while it is open,
every ``dask.compute`` in the library runs on that cluster. :func:`compute` computes with a
progress bar on standard error, on whatever scheduler is active.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import dask

SCHEDULER_ENV = "PUPSNR_SCHEDULER"


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
    timeout: float = 30.0,
    quiet: bool = False,
) -> Iterator[Any]:
    """Connect to a Dask cluster for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``). When None, the environment
        variable ``PUPSNR_SCHEDULER`` is used; when that is unset too, a LocalCluster is started
        with its scheduler and dashboard bound to 127.0.0.1.
    n_workers : int, optional
        Worker processes of the LocalCluster; default one per CPU core.
    dashboard_address : str
        Where the LocalCluster's dashboard listens.
    timeout : float
        Seconds to wait for an existing scheduler before giving up.
    quiet : bool
        When False, print the dashboard link to standard error.

    Yields
    ------
    distributed.Client
        The client, set as the default scheduler inside the block.
    """
    from distributed import Client, LocalCluster

    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, got {n_workers!r}")
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except OSError as err:
            raise ConnectionError(
                f"could not reach the Dask scheduler at {scheduler!r} within {timeout:g} s: {err}"
            ) from err
        with client:
            _announce(client, quiet)
            yield client
        return
    with (
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
        futures = client.compute(list(collections))
        if progress:
            from distributed import progress as show_progress

            with contextlib.redirect_stdout(sys.stderr):
                show_progress(futures)
                print(file=sys.stderr)
        return tuple(client.gather(futures))
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
