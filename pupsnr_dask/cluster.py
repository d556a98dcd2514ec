"""Where the work runs: a LocalCluster by default, an existing Dask scheduler, or Kubernetes.

:func:`connect` is a context manager that yields a ``distributed.Client``; while it is open,
every ``dask.compute`` in the library runs on that cluster. :func:`compute` computes with a
progress bar on standard error, on whatever scheduler is active.

An existing scheduler is reached over ``tcp://`` or, with certificates, ``tls://``
(:func:`make_security`). Nothing waits forever: a scheduler that cannot be reached within
``timeout`` seconds, or that goes away during a computation, raises a :class:`ConnectionError`;
a cluster left without any worker for ``no_worker_timeout`` seconds during a computation raises
:class:`NoWorkerError` (a :class:`ConnectionError` too). :func:`compute_each` tells which tasks
killed their workers (out of memory, a crash) instead of failing them all.

The worker processes of the local cluster do not receive the SIGINT of a Ctrl-C (it goes to the
whole foreground process group): this process handles it and closes the cluster, quietly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

import dask
import dask.threaded

from pupsnr_dask import kube

# the connection defaults and environment variables (TLS_ENV: by parameter of :func:`connect`)
from pupsnr_dask.defaults import (
    DEFAULT_CONNECT_PROCESSES,
    DEFAULT_NO_WORKER_TIMEOUT,
    DEFAULT_TIMEOUT,
    NO_WORKER_TIMEOUT_ENV,
    SCHEDULER_ENV,
    TLS_ENV,
)
from pupsnr_dask.store.fs import StorageOptions, url_to_fs

#: How often a waiting computation asks the scheduler how many workers it has, in seconds.
POLL_INTERVAL = 0.5
#: Added to the environment of local worker processes. distributed sets MALLOC_TRIM_THRESHOLD_
#: to 64 KiB, which freezes glibc's mmap threshold at 128 KiB and gives the top of the heap
#: back to the system after every large free: every temporary array is then page-faulted in
#: afresh (~25 % of the time of a 32-image chunk, see benchmarks/RESULTS.md; ingest's per-file
#: loop: 350,000 faults and 0.7 s of sys time for 150 files, 7,800 and 0.04 s with these).
#: Arrays below 32 MiB (glibc's maximum: a larger MALLOC_MMAP_THRESHOLD_ is ignored) come
#: from the heap, and up to 64 MiB of free heap stays mapped for the next one.
LOCAL_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": 1 << 25, "MALLOC_TRIM_THRESHOLD_": 1 << 26}
#: glibc's ``mallopt`` parameter of each setting of :data:`LOCAL_WORKER_ENV` (``malloc.h``:
#: ``M_TRIM_THRESHOLD``, ``M_MMAP_THRESHOLD``): the same settings for a worker of threads in
#: this process (:func:`tune_malloc`), which was not started with that environment.
MALLOPT_PARAMS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}
#: The local workers' statistical profiler (the dashboard's Profile page) samples every
#: thread's stack 100 times a second: ingest of 2,000 files took 22.2 s without it, 23.5 s
#: with it (two runs each, benchmarks/RESULTS.md). Off, unless the environment says otherwise.
PROFILE_ENV = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"
#: Dask settings of the local cluster, unless set already (configuration file, environment).
#: Every scheduler, nanny and worker checks its event loop every 20 ms and samples CPU, memory
#: and I/O every 0.5 s; on two cores that took ~0.7 s of CPU (0.4 s of it in the ``pupsnr``
#: process) from the 2,000-file ingest: 19.75 s -> 19.42 s (three runs each, RESULTS.md). A
#: blocked loop is still reported (after 3 s), the dashboard's system plots get a point every
#: 2 s. The nannies' memory check (0.1 s) is kept: it kills a worker at its limit before the
#: system does.
LOCAL_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


class _HeartbeatCutByClose(logging.Filter):
    """Drops the error a worker logs when its own close cuts a heartbeat short.

    A race of distributed's: a worker closing (its cluster is done) refuses the connection its
    last heartbeat is opening ("ConnectionPool closing"), and logs that with a traceback, on
    the standard error of the ``pupsnr`` command that succeeded. Every other heartbeat
    failure (a scheduler that cannot be reached) is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        return not (
            record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")
            and isinstance(err, OSError)
            and "ConnectionPool closing" in str(err)
        )


_HEARTBEAT_CUT_BY_CLOSE = _HeartbeatCutByClose()


def dask_setup(worker: Any) -> None:
    """Run by each worker of the local cluster as it starts (a Dask preload of this module)."""
    logging.getLogger("distributed.worker").addFilter(_HEARTBEAT_CUT_BY_CLOSE)


class SchedulerLostError(ConnectionError):
    """The connection to the Dask scheduler was lost while a computation was running."""


class NoWorkerError(ConnectionError):
    """The cluster had no worker for longer than the no-worker timeout during a computation."""


class WorkerDiedError(RuntimeError):
    """Workers died while running a task (out of memory, a crash), as often as Dask allows."""


class _WorkerDied:
    """The outcome, in :func:`compute_each`, of a task whose workers died while running it."""

    def __repr__(self) -> str:
        return "WORKER_DIED"


#: What :func:`compute_each` returns for a task that killed its workers.
WORKER_DIED: Any = _WorkerDied()
_NO_WORKER_TIMEOUTS: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def default_n_workers() -> int:
    """One single-threaded worker process per CPU core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Kubernetes:
    """A Dask cluster created on Kubernetes for the block (:func:`kube.start_cluster`).

    ``image`` is built from ``deploy/Dockerfile``; the other fields are those of
    :func:`pupsnr_dask.kube.start_cluster`. Needs ``pip install "pupsnr-dask[kubernetes]"``.
    """

    image: str
    n_workers: int = 4
    worker_threads: int = 2
    worker_memory: str = "6Gi"
    namespace: str | None = None
    name: str = "pupsnr"
    s3_secret: str | None = "pupsnr-s3"

    def arguments(self, quiet: bool = False) -> dict[str, Any]:
        """What ``KubeCluster`` is given (:func:`kube.cluster_arguments`), built offline.

        Checks every field, and that dask-kubernetes is installed, before anything starts.
        """
        return kube.cluster_arguments(self.name, quiet=quiet, **self._fields())

    def start(self, quiet: bool) -> Any:
        """Create the DaskCluster and wait for it (a ``KubeCluster``, closed with the block)."""
        return kube.start_cluster(self.name, quiet=quiet, **self._fields())

    def _fields(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "namespace": self.namespace,
            "n_workers": self.n_workers,
            "worker_threads": self.worker_threads,
            "worker_memory": self.worker_memory,
            "s3_secret": self.s3_secret,
        }


class Connection:
    """What :func:`connect` yields with ``lazy=True``: the cluster, started when first needed.

    Inside the block, the first Dask computation (through :func:`compute`, xarray or
    ``dask.compute``) starts the cluster or connects to the scheduler; work that computes
    nothing -- an argument or store error, an up-to-date store -- never starts one.
    """

    def __init__(self, opener: Callable[[], contextlib.AbstractContextManager[Any]], local: bool):
        self._opener = opener
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._client: Any = None
        self._on_start: list[Callable[[], None]] = []
        self.local = local  # a LocalCluster: its workers see this machine's files
        self.scheduler_function = self._get  # the dask scheduler of the block, until started

    @property
    def started(self) -> bool:
        """Whether the cluster was started (or the scheduler connected to)."""
        return self._client is not None

    @property
    def client(self) -> Any:
        """The ``distributed.Client``, starting the cluster if it is not started yet."""
        with self._lock:
            if self._client is None:
                # Worker processes inherit Dask's configuration: not this block's function.
                with dask.config.set(scheduler=None):
                    self._client = self._stack.enter_context(self._opener())
                dask.config.set(scheduler="dask.distributed")  # until the block ends
                for fn in self._on_start:
                    _in_background(fn)
                self._on_start.clear()
            return self._client

    def _get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        return self.client.get(dsk, keys, **kwargs)

    def _close(self, *exc_info: Any) -> bool:
        return bool(self._stack.__exit__(*exc_info))


_CONNECTIONS: list[Connection] = []


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    processes: bool = DEFAULT_CONNECT_PROCESSES,
    kubernetes: Kubernetes | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    timeout: float = DEFAULT_TIMEOUT,
    no_worker_timeout: float | None = None,
    quiet: bool = False,
    lazy: bool = False,
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Iterator[Any]:
    """Connect to a Dask cluster for the duration of a ``with`` block.

    Work runs in one of three places: a LocalCluster on this machine (the default), an
    existing scheduler (``scheduler``), or a cluster created on Kubernetes (``kubernetes``).

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786`` or ``tls://host:8786``). When
        None, the environment variable ``PUPSNR_SCHEDULER`` is used; when that is unset too
        (and ``kubernetes`` is None), a LocalCluster is started with its scheduler and
        dashboard bound to 127.0.0.1.
    n_workers : int, optional
        LocalCluster: worker processes (``processes=True``) or threads of its one in-process
        worker (``processes=False``); default one per CPU core.
    processes : bool
        LocalCluster: single-threaded worker processes (True) or one worker of threads in this
        process (False; Pillow and NumPy release the GIL; this process then gets the worker
        processes' malloc settings, :func:`tune_malloc`, for the rest of its life). Default
        :data:`~pupsnr_dask.defaults.DEFAULT_CONNECT_PROCESSES`; each command has its own,
        :data:`~pupsnr_dask.defaults.DEFAULT_PROCESSES`.
    kubernetes : Kubernetes, optional
        Create a DaskCluster on Kubernetes for the block and delete it afterwards. Not with
        ``scheduler`` (nor ``$PUPSNR_SCHEDULER``).
    dashboard_address : str
        Where the LocalCluster's dashboard listens.
    timeout : float
        Seconds to wait for an existing scheduler before giving up. Losing the connection
        during a computation makes :func:`compute` raise :class:`SchedulerLostError` at once.
    no_worker_timeout : float, optional
        Seconds that :func:`compute` waits, inside the block, while the cluster has no worker
        at all (they died, or none was started) before it raises :class:`NoWorkerError`.
        Default: ``$PUPSNR_NO_WORKER_TIMEOUT``, else :data:`DEFAULT_NO_WORKER_TIMEOUT`.
    quiet : bool
        When False, print the dashboard link to standard error.
    lazy : bool
        Start the cluster (or connect) only when the block first computes with Dask, and yield
        a :class:`Connection`: a command that finds nothing to compute starts nothing. Every
        argument is checked at once all the same.
    tls_ca_file, tls_cert, tls_key : str, optional
        PEM files for a ``tls://`` scheduler: the certificate authority, this client's
        certificate and its private key (see :func:`make_security`). When None and the address
        is ``tls://``, the environment variables of :data:`TLS_ENV`, then Dask's
        ``distributed.comm.tls`` configuration, are used. Given for any other address, they
        raise ValueError.

    Yields
    ------
    distributed.Client or Connection
        The client, set as the default scheduler inside the block; with ``lazy``, the
        :class:`Connection` whose ``client`` it will be.
    """
    from_env = not scheduler and bool(os.environ.get(SCHEDULER_ENV))
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, got {n_workers!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if kubernetes is not None:
        if scheduler:
            given = f"${SCHEDULER_ENV}={scheduler!r}" if from_env else f"scheduler={scheduler!r}"
            raise ValueError(f"kubernetes and {given} exclude each other: give one")
        kubernetes.arguments()  # the extra and every field, before anything starts
    no_worker_timeout = resolve_no_worker_timeout(no_worker_timeout)
    given_tls = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
    use_env = bool(scheduler) and str(scheduler).startswith("tls://")  # else they do not apply
    tls = {
        name: value or (os.environ.get(TLS_ENV[name]) if use_env else None) or None
        for name, value in given_tls.items()
    }
    security = None
    if scheduler:
        security = make_security(scheduler, **tls)
    elif any(tls.values()):
        raise ValueError(
            "TLS certificates (tls_ca_file, tls_cert, tls_key) need a tls:// scheduler "
            "address; the local cluster does not use them"
        )

    def opener() -> contextlib.AbstractContextManager[Any]:
        if scheduler:
            return _existing(scheduler, security, timeout, no_worker_timeout, quiet)
        if kubernetes is not None:
            return _on_kubernetes(kubernetes, no_worker_timeout, quiet)
        return _local(n_workers, processes, dashboard_address, no_worker_timeout, quiet)

    if not lazy:
        with opener() as client:
            yield client
        return
    connection = Connection(opener, local=not scheduler and kubernetes is None)
    _CONNECTIONS.append(connection)
    try:
        with dask.config.set(scheduler=connection.scheduler_function):
            try:
                yield connection
            except BaseException:
                if not connection._close(*sys.exc_info()):
                    raise
            else:
                connection._close(None, None, None)
    finally:
        _CONNECTIONS.remove(connection)


@contextlib.contextmanager
def _existing(
    scheduler: str, security: Any, timeout: float, no_worker_timeout: float, quiet: bool
) -> Iterator[Any]:
    from distributed import Client

    try:
        client = Client(scheduler, timeout=timeout, security=security)
    except (OSError, TimeoutError) as err:
        raise ConnectionError(
            f"could not reach the Dask scheduler at {scheduler!r} within {timeout:g} s: "
            + _one_line(err)
        ) from err
    _NO_WORKER_TIMEOUTS[client] = no_worker_timeout
    try:
        _announce(client, quiet)
        yield client
    except BaseException:  # lost, interrupted, failed: distributed would log at length
        with _logging_disabled():
            client.close(timeout=timeout)
        raise
    finally:
        client.close()  # does nothing when already closed


@contextlib.contextmanager
def _on_kubernetes(kubernetes: Kubernetes, no_worker_timeout: float, quiet: bool) -> Iterator[Any]:
    from distributed import Client

    with kubernetes.start(quiet) as cluster, Client(cluster) as client:
        _NO_WORKER_TIMEOUTS[client] = no_worker_timeout
        _announce(client, quiet)
        yield client


@contextlib.contextmanager
def _local(
    n_workers: int | None,
    processes: bool,
    dashboard_address: str,
    no_worker_timeout: float,
    quiet: bool,
) -> Iterator[Any]:
    from distributed import Client

    cluster = start_local_cluster(n_workers, processes, dashboard_address)
    try:
        with Client(cluster) as client:
            _NO_WORKER_TIMEOUTS[client] = no_worker_timeout
            _announce(client, quiet, _local_dashboard_link(cluster, dashboard_address))
            yield client
    except BaseException as err:  # interrupted or failed: close without distributed's noise
        with _logging_disabled():
            if not isinstance(err, Exception):  # Ctrl-C: tasks would log their cancellation
                _kill_local_workers(cluster)
            cluster.close()
        raise
    cluster.close()


def start_local_cluster(
    n_workers: int | None = None,
    processes: bool = DEFAULT_CONNECT_PROCESSES,
    dashboard_address: str = "127.0.0.1:8787",
) -> Any:
    """The LocalCluster of :func:`connect`, on 127.0.0.1, its workers deaf to Ctrl-C.

    ``processes``: ``n_workers`` single-threaded worker processes (default one per core);
    otherwise one worker in this process with ``n_workers`` threads. The workers' profiler
    is off (:data:`PROFILE_ENV`=True turns it on); they run Dask's periodic checks less often
    (:data:`LOCAL_CLUSTER_CONFIG`) and preload this module (:func:`dask_setup`).
    """
    from distributed import LocalCluster

    n = n_workers or default_n_workers()
    workers, threads = (n, 1) if processes else (1, n)
    config: dict[str, Any] = {
        f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in LOCAL_WORKER_ENV.items()
    }
    if PROFILE_ENV not in os.environ:
        config["distributed.worker.profile.enabled"] = False
    preload = dask.config.get("distributed.worker.preload", None) or []
    preload = [preload] if isinstance(preload, str) else list(preload)  # one, or a list
    if __name__ not in preload:  # its dask_setup: the workers' logging
        preload.append(__name__)
    config["distributed.worker.preload"] = preload
    shipped = dask.config.merge(*dask.config.defaults)  # distributed's own defaults
    for key, value in LOCAL_CLUSTER_CONFIG.items():
        if dask.config.get(key) == dask.config.get(key, config=shipped):  # else the user's
            config[key] = value
    if not processes:  # its worker computes in this process
        tune_malloc()
    with dask.config.set(config), _sigint_blocked():  # inherited by its threads and workers
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            # in-process: the scheduler listens on inproc://, only the dashboard on a port
            **({"host": "127.0.0.1"} if processes else {}),
            dashboard_address=dashboard_address,
        )


def tune_malloc() -> bool:
    """Give this process the malloc settings that the local worker processes get.

    Those of :data:`LOCAL_WORKER_ENV`; each one this process's environment sets is left as it
    is. For the in-process worker of a threaded local cluster: its threads compute in this
    process, which glibc started with its defaults (measured in benchmarks/RESULTS.md). True
    when glibc took every setting; False elsewhere (no ``mallopt``: macOS, Windows), where
    nothing changes.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no C library symbols, or no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    took = [
        mallopt(param, LOCAL_WORKER_ENV[name]) == 1
        for name, param in MALLOPT_PARAMS.items()
        if name not in os.environ
    ]
    return all(took)


def _kill_local_workers(cluster: Any) -> None:
    """SIGKILL the worker processes that the nannies of a LocalCluster started."""
    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


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


def resolve_no_worker_timeout(value: float | None = None) -> float:
    """The no-worker timeout in seconds: ``value``, else ``$PUPSNR_NO_WORKER_TIMEOUT``, else 60.

    Raises
    ------
    ValueError
        When the value (or the environment variable) is not a positive number.
    """
    name = "no_worker_timeout"
    if value is None and os.environ.get(NO_WORKER_TIMEOUT_ENV):
        name, value = f"${NO_WORKER_TIMEOUT_ENV}", os.environ[NO_WORKER_TIMEOUT_ENV]
    if value is None:
        return DEFAULT_NO_WORKER_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the block: threads and processes started inside keep it.

    A Ctrl-C is sent to every process of the terminal's foreground group. Worker processes
    spawned while SIGINT is blocked never receive it (the mask survives ``fork`` and ``exec``),
    nor do those that the nanny threads started here spawn later; this process gets it as soon
    as the block ends, and closes the cluster.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    from multiprocessing import resource_tracker

    # Started later, by the first spawn, it would unblock SIGINT in the thread that spawns.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


def _announce(client: Any, quiet: bool, link: str | None = None) -> None:
    if quiet:
        return
    n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    print(f"dask: {n} workers, dashboard {link or client.dashboard_link}", file=sys.stderr)


def _local_dashboard_link(cluster: Any, dashboard_address: str) -> str | None:
    """The link to an in-process cluster's dashboard, where it listens.

    distributed's link names the host of the ``inproc://`` address: this machine's network
    address, where nothing listens.
    """
    server = getattr(cluster.scheduler, "http_server", None)
    if server is None or not str(cluster.scheduler_address).startswith("inproc://"):
        return None
    host = dashboard_address.rpartition(":")[0].strip("[]")
    return (
        f"http://{host if host not in ('', '0.0.0.0', '::') else '127.0.0.1'}:{server.port}/status"
    )


def compute(
    *collections: Any,
    progress: bool | None = None,
    no_worker_timeout: float | None = None,
    label: str | None = None,
) -> tuple[Any, ...]:
    """Compute dask collections on the active scheduler, with a progress bar on stderr.

    Parameters
    ----------
    *collections
        Dask collections or delayed objects.
    progress : bool, optional
        Show a progress bar on standard error; by default only when it is a terminal.
    no_worker_timeout : float, optional
        On a distributed cluster: seconds to wait while it has no worker at all before raising
        :class:`NoWorkerError`. Default: the value given to :func:`connect`, else
        ``$PUPSNR_NO_WORKER_TIMEOUT``, else :data:`DEFAULT_NO_WORKER_TIMEOUT`.
    label : str, optional
        What the progress bar measures, printed on the line above it (``pupsnr: LABEL``).

    Returns
    -------
    tuple
        The computed results, in order.

    Raises
    ------
    SchedulerLostError
        When the connection to the scheduler is lost.
    NoWorkerError
        When the cluster has had no worker for ``no_worker_timeout`` seconds.
    WorkerDiedError
        When a task killed its workers as often as ``distributed.scheduler.allowed-failures``
        allows (see :func:`compute_each` to go on without it).
    """
    outcomes = _compute(collections, progress, no_worker_timeout, False, label)
    return tuple(outcomes)


def compute_each(
    tasks: Sequence[Any],
    progress: bool | None = None,
    no_worker_timeout: float | None = None,
    label: str | None = None,
) -> list[Any]:
    """Like :func:`compute`, but a task whose workers die gives :data:`WORKER_DIED`, not an error.

    On a distributed cluster, a task is given up (``KilledWorker``) once the workers running
    it have died ``distributed.scheduler.allowed-failures`` + 1 times; every other task still
    runs to the end. Under the local ``processes`` scheduler, a dead process breaks the whole
    pool: the tasks are then computed again one at a time, each on a pool of its own, so that
    only the one whose process dies is :data:`WORKER_DIED`.

    Note that Dask also counts a death against the other tasks that were waiting on the same
    worker: a task reported as :data:`WORKER_DIED` among others may be innocent; computed
    again alone, it is not.

    Returns
    -------
    list
        The result of each task, in order, or :data:`WORKER_DIED`.
    """
    return _compute(tasks, progress, no_worker_timeout, True, label)


def _compute(
    collections: Sequence[Any],
    progress: bool | None,
    no_worker_timeout: float | None,
    tolerate_deaths: bool,
    label: str | None = None,
) -> list[Any]:
    if progress is None:
        progress = sys.stderr.isatty()
    if progress and label:
        print(f"pupsnr: {label}", file=sys.stderr, flush=True)
    client = _active_client()
    if client is not None:
        timeout = (
            resolve_no_worker_timeout(no_worker_timeout)
            if no_worker_timeout is not None or client not in _NO_WORKER_TIMEOUTS
            else _NO_WORKER_TIMEOUTS[client]
        )
        return _compute_distributed(client, list(collections), progress, timeout, tolerate_deaths)
    if not tolerate_deaths:
        return list(_compute_local(collections, progress))
    from concurrent.futures.process import BrokenProcessPool

    try:
        return list(_compute_local(collections, progress))
    except BrokenProcessPool:  # which task? each alone, on a fresh pool
        outcomes = []
        for task in collections:
            try:
                with dask.config.set(num_workers=1):
                    outcomes.append(_compute_local([task], False)[0])
            except BrokenProcessPool:
                outcomes.append(WORKER_DIED)
        return outcomes


def _compute_local(collections: Sequence[Any], progress: bool) -> tuple[Any, ...]:
    # Dask's default for arrays and delayed, named by its function: asked for by name (or not
    # at all), dask imports distributed to look for a client, ~0.5 s that nothing here needs.
    scheduler = None if dask.config.get("scheduler", None) else dask.threaded.get
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return dask.compute(*collections, scheduler=scheduler)
    return dask.compute(*collections, scheduler=scheduler)


def _compute_distributed(
    client: Any, collections: list[Any], progress: bool, timeout: float, tolerate_deaths: bool
) -> list[Any]:
    from distributed import KilledWorker

    futures = client.compute(collections)
    try:
        _wait_for(client, futures, progress, timeout, stop_on_error=not tolerate_deaths)
        died = [
            tolerate_deaths and f.status == "error" and isinstance(f.exception(), KilledWorker)
            for f in futures
        ]
        for future, dead in zip(futures, died, strict=True):
            if future.status == "error" and not dead:
                _result(future)  # raises
        live = [f for f, dead in zip(futures, died, strict=True) if not dead]
        results = iter(client.gather(live))
        return [WORKER_DIED if dead else next(results) for dead in died]
    except CancelledError as err:
        if client.status == "running" and "connection-lost" not in str(err):
            raise
        raise SchedulerLostError(
            f"lost the connection to the Dask scheduler at {client.scheduler.address!r} "
            "during the computation; its results are incomplete (re-run the command once "
            "the scheduler is back)"
        ) from err
    except Exception:  # not on Ctrl-C: the cluster goes away with the client
        if any(not f.done() for f in futures):
            with contextlib.suppress(Exception), _logging_disabled():
                client.cancel(futures)
        raise


def _result(future: Any) -> Any:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as err:
        raise WorkerDiedError(
            f"Dask workers died {err.allowed_failures + 1} times while running task "
            f"{err.task!r} (out of memory, or a crash?); its results are incomplete: give the "
            "workers more memory, then rerun the command to resume"
        ) from err


def _wait_for(
    client: Any, futures: list[Any], progress: bool, timeout: float, stop_on_error: bool
) -> None:
    """Wait until every future is done, a progress bar on stderr; never forever without workers.

    Raises :class:`NoWorkerError` once the cluster has had no worker for ``timeout`` seconds;
    with ``stop_on_error``, returns as soon as a future fails.
    """
    import queue

    start = time.monotonic()
    bar = _ProgressBar(len(futures)) if progress else None
    # Each future reports itself once when it ends; distributed's wait(FIRST_COMPLETED) would
    # instead watch every pending future anew each time one ends: O(n^2) on the client.
    ended: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(ended.put)
    n_done = 0
    failed = False
    no_worker_since: float | None = None
    next_check = start + POLL_INTERVAL
    while True:
        if bar is not None:
            bar.show(n_done, time.monotonic() - start)
        if n_done == len(futures) or (stop_on_error and failed):
            break
        with contextlib.suppress(queue.Empty):
            future = ended.get(timeout=POLL_INTERVAL)
            while True:
                n_done += 1
                failed = failed or future.status == "error"
                future = ended.get_nowait()
        now = time.monotonic()
        if now < next_check:
            continue
        next_check = now + POLL_INTERVAL
        if _n_workers(client):
            no_worker_since = None
        elif no_worker_since is None:
            no_worker_since = now
        elif now - no_worker_since >= timeout:
            raise NoWorkerError(
                f"no Dask worker for {timeout:g} s: the scheduler at "
                f"{client.scheduler.address!r} has none left (did they die? out of memory?); "
                "start workers, then rerun the command to resume"
            )
    if bar is not None:
        bar.done()


def parallelism() -> int:
    """How many tasks the active scheduler runs at once: its threads in all, 1 when sync."""
    client = _active_client()
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except (OSError, TimeoutError):
            return 1
    if dask.config.get("scheduler", None) in ("sync", "synchronous", "single-threaded"):
        return 1
    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _n_workers(client: Any) -> int:
    try:
        return len(client.nthreads())
    except (OSError, TimeoutError):  # the scheduler is going away: the futures will say so
        return 1


class _ProgressBar:
    """A text progress bar on standard error, as distributed draws it."""

    width = 40

    def __init__(self, total: int) -> None:
        self.total = total

    def show(self, n_done: int, elapsed: float) -> None:
        frac = n_done / self.total if self.total else 1.0
        bar = "#" * int(self.width * frac)
        line = f"[{bar:<{self.width}}] | {frac:4.0%} Completed | {elapsed:4.1f}s"
        print(f"\r{line}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(file=sys.stderr, flush=True)


def _active_client() -> Any:
    lazy = _lazy_connection()
    if lazy is not None:
        return lazy.client  # the first computation of a lazy block starts the cluster
    if "distributed" not in sys.modules:  # no client can exist: not worth importing it
        return None
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return None
    # An explicit dask.config scheduler other than the client's (e.g. "sync") wins.
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    return client


def when_started(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a background thread once the active lazy cluster has started.

    For work that competes with the start of a lazy :func:`connect` block's cluster for this
    process (an import that holds the GIL): it waits until that cluster is up, and is
    dropped if the block ends without starting one. With no lazy cluster to wait for, ``fn``
    starts at once. Exceptions in ``fn`` are its own to handle.
    """
    lazy = _lazy_connection()
    if lazy is not None:
        with lazy._lock:
            if lazy._client is None:  # else it started meanwhile
                lazy._on_start.append(fn)
                return
    _in_background(fn)


def _in_background(fn: Callable[[], None]) -> None:
    name = f"pupsnr-{getattr(fn, '__name__', 'background').strip('_')}"
    threading.Thread(target=fn, name=name, daemon=True).start()


def _lazy_connection() -> Connection | None:
    """The lazy :func:`connect` block whose cluster is to start, if it is the active scheduler."""
    if not _CONNECTIONS or _CONNECTIONS[-1].started:
        return None
    connection = _CONNECTIONS[-1]
    return (
        connection if dask.config.get("scheduler", None) == connection.scheduler_function else None
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
    lazy = _lazy_connection()
    if not locations or (lazy is not None and lazy.local):  # local workers: this machine
        return
    client = _active_client()
    if client is None:
        return
    options = dict(storage_options) if storage_options is not None else None
    if options is not None:
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
    out = []
    for name, location in locations.items():
        try:
            fs, path = url_to_fs(location, storage_options)
            fs.invalidate_cache(path)
            found = fs.exists(path)
        except Exception:  # any failure to look means the worker cannot read it
            found = False
        if not found:
            out.append(name)
    return out
