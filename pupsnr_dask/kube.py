"""Start a Dask cluster on Kubernetes from Python, through the dask-kubernetes operator.

Optional: needs the ``kubernetes`` extra (``pip install "pupsnr-dask[kubernetes]"``), a
kubeconfig, the operator installed in the cluster, and an image built from ``deploy/Dockerfile``.
The cluster matches ``deploy/kubernetes/daskcluster.yaml``: one scheduler, ``n_workers`` workers
with ``worker_threads`` CPUs and ``worker_memory`` each, object-storage credentials from a Secret.

``dask_kubernetes.operator.make_cluster_spec`` still starts the scheduler and workers with the
hyphenated executables that ``distributed`` 2026.8.0 no longer ships; :func:`make_cluster_spec`
rewrites them to the ``dask scheduler`` / ``dask worker`` subcommands (:func:`new_style_command`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

KUBERNETES_HINT = 'pip install "pupsnr-dask[kubernetes]"'
SCHEDULER_COMMAND = ("dask", "scheduler")
WORKER_COMMAND = ("dask", "worker")
# Environment variables the workers read from the object-storage Secret; the last is optional.
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")

_REMOVED_EXECUTABLES = {"dask-scheduler": SCHEDULER_COMMAND, "dask-worker": WORKER_COMMAND}
# A DNS-1123 label short enough for the operator's "<name>-scheduler" Service name.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")


def new_style_command(args: Sequence[str]) -> list[str]:
    """Container args with a removed hyphenated Dask executable replaced by its subcommand.

    Parameters
    ----------
    args : sequence of str
        Container args, the executable first.

    Returns
    -------
    list of str
        The same args, starting with ``dask scheduler`` / ``dask worker`` where they started
        with the hyphenated form; anything else unchanged.

    Examples
    --------
    >>> new_style_command(["dask-" + "scheduler", "--host", "0.0.0.0"])
    ['dask', 'scheduler', '--host', '0.0.0.0']
    >>> new_style_command(["dask", "worker", "--nthreads", "2"])
    ['dask', 'worker', '--nthreads', '2']
    """
    args = list(args)
    if args and args[0] in _REMOVED_EXECUTABLES:
        return [*_REMOVED_EXECUTABLES[args[0]], *args[1:]]
    return args


def make_cluster_spec(
    name: str = "pupsnr",
    *,
    image: str,
    n_workers: int = 4,
    worker_threads: int = 2,
    worker_memory: str = "6Gi",
    scheduler_cpu: str = "1",
    scheduler_memory: str = "2Gi",
    s3_secret: str | None = "pupsnr-s3",
    idle_timeout_s: int = 3600,
) -> dict[str, Any]:
    """Build a ``DaskCluster`` resource for pupsnr's image, without contacting Kubernetes.

    Parameters
    ----------
    name : str
        Name of the DaskCluster, a DNS label of at most 53 characters; the scheduler Service is
        ``<name>-scheduler``.
    image : str
        Image built from ``deploy/Dockerfile``, for the scheduler and the workers.
    n_workers : int
        Workers in the default worker group.
    worker_threads : int
        Threads per worker, also the worker's CPU request and limit.
    worker_memory : str
        Memory request and limit of a worker (a Kubernetes quantity such as ``"6Gi"``), also
        its ``--memory-limit``.
    scheduler_cpu, scheduler_memory : str
        CPU and memory request and limit of the scheduler.
    s3_secret : str or None
        Secret holding the object-storage credentials (``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, optionally ``AWS_ENDPOINT_URL``), passed to the workers as
        environment variables; None for no credentials.
    idle_timeout_s : int
        Seconds without work after which the operator deletes the cluster; 0 never.

    Returns
    -------
    dict
        The ``kubernetes.dask.org/v1`` DaskCluster resource.

    Raises
    ------
    ImportError
        When dask-kubernetes is not installed.
    ValueError
        For a bad name, count or quantity.
    """
    _check_name(name)
    _check_counts(n_workers=n_workers, worker_threads=worker_threads, idle_timeout_s=idle_timeout_s)
    _check_quantities(
        worker_memory=worker_memory, scheduler_memory=scheduler_memory, scheduler_cpu=scheduler_cpu
    )
    operator = _import_operator()
    spec = operator.make_cluster_spec(
        name, image=image, n_workers=n_workers, worker_command=list(WORKER_COMMAND),
        idle_timeout=idle_timeout_s,
    )  # fmt: skip
    scheduler_pod = spec["spec"]["scheduler"]["spec"]
    worker_pod = spec["spec"]["worker"]["spec"]
    (scheduler,) = scheduler_pod["containers"]
    (worker,) = worker_pod["containers"]
    scheduler["args"] = new_style_command(scheduler["args"])
    scheduler["resources"] = _resources(scheduler_cpu, scheduler_memory)
    worker["args"] = [
        *new_style_command(worker["args"]),
        "--nthreads", str(worker_threads), "--memory-limit", worker_memory,
    ]  # fmt: skip
    worker["resources"] = _resources(str(worker_threads), worker_memory)
    worker["env"] = _secret_env(s3_secret)
    for pod in (scheduler_pod, worker_pod):
        pod["securityContext"] = {"runAsNonRoot": True}  # the image runs as user 10001
    return _without_nulls(spec)


def start_cluster(name: str = "pupsnr", **options: Any) -> Any:
    """Create a DaskCluster through the operator and connect to its scheduler.

    ``name`` and ``options`` are those of :func:`cluster_arguments`.

    Returns
    -------
    dask_kubernetes.operator.KubeCluster
        The running cluster; a context manager that deletes the DaskCluster on exit. Its
        ``scheduler_address`` is port-forwarded when this process runs outside Kubernetes.

    Raises
    ------
    ImportError
        When dask-kubernetes is not installed.
    """
    operator = _import_operator()
    return operator.KubeCluster(**cluster_arguments(name, **options))


def cluster_arguments(
    name: str = "pupsnr",
    *,
    image: str,
    namespace: str | None = None,
    n_workers: int = 4,
    worker_threads: int = 2,
    worker_memory: str = "6Gi",
    s3_secret: str | None = "pupsnr-s3",
    idle_timeout_s: int = 3600,
    resource_timeout_s: int = 300,
    quiet: bool = False,
) -> dict[str, Any]:
    """The arguments :func:`start_cluster` gives ``KubeCluster``, built offline.

    Parameters
    ----------
    name, image, n_workers, worker_threads, worker_memory, s3_secret, idle_timeout_s
        As in :func:`make_cluster_spec`.
    namespace : str, optional
        Kubernetes namespace; default the kubeconfig's current namespace.
    resource_timeout_s : int
        Seconds to wait for the cluster's Pods (image pulls included) before giving up.
    quiet : bool
        Suppress dask-kubernetes' progress output.

    Raises
    ------
    ImportError
        When dask-kubernetes is not installed.
    ValueError
        For a bad name, count, quantity or namespace.
    """
    if namespace is not None:
        _check_name(namespace, "namespace")
    _check_counts(resource_timeout_s=resource_timeout_s)
    spec = make_cluster_spec(
        name, image=image, n_workers=n_workers, worker_threads=worker_threads,
        worker_memory=worker_memory, s3_secret=s3_secret, idle_timeout_s=idle_timeout_s,
    )  # fmt: skip
    return {
        "custom_cluster_spec": spec,
        "namespace": namespace,
        "resource_timeout": resource_timeout_s,
        "quiet": quiet,
    }


def _import_operator() -> Any:
    try:
        import dask_kubernetes.operator as operator
    except ImportError as err:
        raise ImportError(
            f"Dask clusters on Kubernetes need dask-kubernetes: {KUBERNETES_HINT}"
        ) from err
    return operator


def _check_name(name: str, label: str = "name") -> None:
    pattern, most = (_NAMESPACE, 63) if label == "namespace" else (_NAME, 53)
    if not isinstance(name, str) or not pattern.match(name):
        raise ValueError(
            f"{label} must be a lowercase DNS label of at most {most} characters, got {name!r}"
        )


def _check_counts(**counts: int) -> None:
    least = {"worker_threads": 1}
    for label, count in counts.items():
        minimum = least.get(label, 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < minimum:
            raise ValueError(f"{label} must be an integer >= {minimum}, got {count!r}")


def _check_quantities(**quantities: str) -> None:
    for label, value in quantities.items():
        pattern = _CPU if label.endswith("cpu") else _MEMORY
        if not isinstance(value, str) or not pattern.match(value):
            example = "'500m' or '2'" if pattern is _CPU else "'512Mi' or '6Gi'"
            raise ValueError(
                f"{label} must be a Kubernetes quantity such as {example}, got {value!r}"
            )


def _resources(cpu: str, memory: str) -> dict[str, dict[str, str]]:
    # Requests equal to limits: Guaranteed QoS, and the worker's memory limit is real.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def _secret_env(secret: str | None) -> list[dict[str, Any]]:
    if secret is None:
        return []
    return [
        {
            "name": variable,
            "valueFrom": {
                "secretKeyRef": {"name": secret, "key": variable}
                | ({"optional": True} if variable == "AWS_ENDPOINT_URL" else {})
            },
        }
        for variable in S3_VARIABLES
    ]


def _without_nulls(node: Any) -> Any:
    # make_cluster_spec writes None for unset fields; the CRD schema types them object/array.
    if isinstance(node, dict):
        return {key: _without_nulls(value) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [_without_nulls(item) for item in node]
    return node
