"""What the commands share: option declarations, argument parsing, the cluster they run on.

This module and the command modules import only click and :mod:`pupsnr_dask.defaults` at top
level, so that ``--help`` and argument errors answer before dask, xarray or zarr are imported;
each command imports the library it calls inside its function (the one place in the package
where that is done, see README "Layout").
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from pupsnr_dask.defaults import (
    DEFAULT_K8S_WORKER_MEMORY,
    DEFAULT_K8S_WORKER_THREADS,
    DEFAULT_K8S_WORKERS,
    DEFAULT_NO_WORKER_TIMEOUT,
    DEFAULT_PROCESSES,
    DEFAULT_TIMEOUT,
    NO_WORKER_TIMEOUT_ENV,
    SCHEDULER_ENV,
    STORAGE_OPTIONS_ENV,
    TLS_ENV,
)

if TYPE_CHECKING:
    from pupsnr_dask.cluster import Kubernetes

_CONNECT_META = "pupsnr.connect"
#: The options of --kubernetes other than the image (fields of cluster.Kubernetes).
K8S_OPTIONS = ("k8s_workers", "k8s_threads", "k8s_memory", "k8s_namespace")


def csv_list(kind: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str], tuple]:
    """A click callback parsing a comma-separated list of ``kind``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError as err:
            raise click.BadParameter(f"{value!r}: {err}") from err

    return parse


def absolute(location: str) -> str:
    """A local path made absolute; URLs unchanged (:func:`pupsnr_dask.store.fs.absolute`)."""
    from pupsnr_dask.store.fs import absolute as absolute_location

    return absolute_location(location)


def absolute_or_none(location: str | None) -> str | None:
    """:func:`absolute`, or None for None."""
    return None if location is None else absolute(location)


def _connect_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a connection setting for :func:`cluster_context` (not passed to the command)."""
    ctx.meta.setdefault(_CONNECT_META, {})[param.name] = value


def _scheduler_address(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--scheduler``: ``[PROTOCOL://]HOST:PORT``, checked before anything is imported.

    Without it, a word such as ``sync`` reached distributed at the first computation and
    failed there as an internal error.
    """
    if not value:
        return value
    host, colon, port = value.partition("://")[2 if "://" in value else 0].rpartition(":")
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(  # one line, exit 2 (see main)
            f"--scheduler (or ${SCHEDULER_ENV}): {value!r} is not the address of a Dask "
            "scheduler; give PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.5:8786 (without it, a "
            "local cluster is started)"
        )
    return value


def _storage_options(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from pupsnr_dask.store.fs import parse_storage_options

    try:
        return parse_storage_options(value)
    except ValueError as err:  # one line, exit 2 (see main), and the value is not repeated
        raise ValueError(f"--storage-options: {err}") from None


def storage_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--storage-options`` option of the commands that read or write stores."""
    return click.option(
        "--storage-options",
        envvar=STORAGE_OPTIONS_ENV,
        default=None,
        metavar="JSON",
        callback=_storage_options,
        help="fsspec options for fsspec URLs such as s3://bucket/data.zarr, as a JSON object, "
        f'e.g. {{"endpoint_url": "http://127.0.0.1:9000"}} (or ${STORAGE_OPTIONS_ENV}). '
        "Credentials are best left to the environment (AWS_ACCESS_KEY_ID, ...); they are never "
        "written to stores or shown.",
    )(f)


def cluster_options(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Options shared by the commands that compute on a Dask cluster, for ``command``.

    ``command`` names its local cluster's default in
    :data:`~pupsnr_dask.defaults.DEFAULT_PROCESSES`.
    """
    processes = DEFAULT_PROCESSES[command]
    return lambda f: _cluster_options(f, processes)


def _cluster_options(f: Callable[..., Any], processes: bool) -> Callable[..., Any]:
    for name, what in (
        ("tls_key", "private key of --tls-cert"),
        ("tls_cert", "certificate of this client"),
        ("tls_ca_file", "certificate authority"),
    ):
        f = click.option(
            "--" + name.replace("_", "-"),
            default=None,  # connect() reads $PUPSNR_TLS_*, for tls:// addresses only
            metavar="PEM",
            expose_value=False,
            callback=_connect_option,
            help=f"For a tls:// scheduler: {what} (or ${TLS_ENV[name]}).",
        )(f)
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        expose_value=False,
        callback=_connect_option,
        help="Seconds to wait for an existing scheduler to answer before failing. A scheduler "
        "lost during a run fails the run at once, with an error.",
    )(f)
    f = click.option(
        "--no-worker-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        expose_value=False,
        callback=_connect_option,
        help="Give up (exit 2; rerunning resumes) when the cluster has had no worker for this "
        f"long during a computation (or ${NO_WORKER_TIMEOUT_ENV}) "
        f"[default: {DEFAULT_NO_WORKER_TIMEOUT:g}].",
    )(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars or dashboard link.")(f)
    f = click.option(
        "--n-workers",
        type=click.IntRange(min=1),
        default=None,
        help="Workers of the local cluster: processes, or threads with --threads [default: one "
        "per CPU core].",
    )(f)
    f = click.option(
        "--processes/--threads",
        default=processes,
        show_default=True,
        expose_value=False,
        callback=_connect_option,
        help="Local cluster: one single-threaded worker process per core, or one worker of "
        "threads inside this process (Pillow and NumPy release the GIL).",
    )(f)
    for name, kind, default, help_ in (
        ("k8s_namespace", str, None, "Namespace of --kubernetes [default: the kubeconfig's]."),
        ("k8s_memory", str, DEFAULT_K8S_WORKER_MEMORY, "Memory of each --kubernetes worker."),
        ("k8s_threads", click.IntRange(min=1), DEFAULT_K8S_WORKER_THREADS,
         "Threads (and CPUs) of each --kubernetes worker."),
        ("k8s_workers", click.IntRange(min=1), DEFAULT_K8S_WORKERS, "Workers of --kubernetes."),
    ):  # fmt: skip
        f = click.option(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            show_default=default is not None,
            metavar="QUANTITY" if name == "k8s_memory" else None,
            expose_value=False,
            callback=_connect_option,
            help=help_,
        )(f)
    f = click.option(
        "--kubernetes",
        default=None,
        metavar="IMAGE",
        expose_value=False,
        callback=_connect_option,
        help="Create a Dask cluster on Kubernetes for this command (and delete it after), its "
        "scheduler and workers running IMAGE, built from deploy/Dockerfile. Needs a kubeconfig, "
        "the dask-kubernetes operator and the kubernetes extra of pupsnr (see deploy/README.md). "
        "Not with --scheduler.",
    )(f)
    f = click.option(
        "--scheduler",
        envvar=SCHEDULER_ENV,
        default=None,
        metavar="ADDRESS",
        callback=_scheduler_address,
        help=f"Use the existing Dask scheduler at ADDRESS (or ${SCHEDULER_ENV}) instead of "
        "starting a local cluster.",
    )(f)
    return f


def kubernetes_of(settings: dict[str, Any], scheduler: str | None) -> Kubernetes | None:
    """The :class:`~pupsnr_dask.cluster.Kubernetes` that ``--kubernetes`` and ``--k8s-*`` ask for.

    Takes those options out of ``settings`` (what :func:`cluster_context` gives ``connect``).
    """
    from pupsnr_dask.cluster import Kubernetes

    image = settings.pop("kubernetes", None)
    k8s = {name: settings.pop(name, None) for name in K8S_OPTIONS}
    if image is None:
        return None
    if scheduler:
        raise ValueError(  # one line, exit 2 (see main)
            f"--kubernetes and --scheduler (or ${SCHEDULER_ENV}) exclude each other: "
            f"give one, got --scheduler {scheduler!r}"
        )
    return Kubernetes(
        image,
        n_workers=k8s["k8s_workers"] or DEFAULT_K8S_WORKERS,
        worker_threads=k8s["k8s_threads"] or DEFAULT_K8S_WORKER_THREADS,
        worker_memory=k8s["k8s_memory"] or DEFAULT_K8S_WORKER_MEMORY,
        namespace=k8s["k8s_namespace"],
    )


@contextlib.contextmanager
def cluster_context(scheduler: str | None, n_workers: int | None, quiet: bool) -> Iterator[None]:
    """Connect to the cluster the options name (:func:`pupsnr_dask.cluster.connect`), lazily.

    Nothing starts until the command first computes with Dask: an argument or store error, or
    a store already up to date, is answered without a cluster.
    """
    from pupsnr_dask.cluster import connect

    settings = dict(click.get_current_context().meta.get(_CONNECT_META, {}))
    kubernetes = kubernetes_of(settings, scheduler)
    with warnings.catch_warnings():
        if quiet:  # distributed's "Port 8787 is already in use" (the dashboard moves)
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        with connect(
            scheduler, n_workers=n_workers, quiet=quiet, kubernetes=kubernetes, lazy=True,
            **settings,
        ):  # fmt: skip
            yield
