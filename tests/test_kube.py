"""pupsnr_dask.kube: the DaskCluster it builds, checked offline (no Kubernetes API server)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import yaml
from k8s_schemas import as_pod, option, pod_specs, validate_builtin, validate_dask_resource

from pupsnr_dask import kube

IMAGE = "registry.example.com/pupsnr-dask:0.1.0"
DASKCLUSTER = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "daskcluster.yaml"


@pytest.fixture
def operator():
    import dask_kubernetes.operator  # in the test extra: a missing one must fail, not skip

    return dask_kubernetes.operator


def test_upstream_spec_starts_removed_commands_and_ours_does_not(operator):
    # Why the module exists: what dask-kubernetes generates cannot start on distributed 2026.8.
    upstream = operator.make_cluster_spec("pupsnr", image=IMAGE)
    upstream_args = [c["args"][0] for _, pod in pod_specs(upstream) for c in pod["containers"]]
    ours = kube.make_cluster_spec(image=IMAGE)
    containers = {role: pod["containers"] for role, pod in pod_specs(ours)}
    assert upstream_args == ["dask-scheduler", "dask-worker"]
    assert containers["scheduler"][0]["args"][:2] == ["dask", "scheduler"]
    assert containers["worker"][0]["args"][:2] == ["dask", "worker"]


def test_spec_passes_the_strict_crd_schema_and_kubernetes_validate(operator):
    spec = kube.make_cluster_spec(image=IMAGE, n_workers=3, s3_secret=None)
    validate_dask_resource(spec)
    for role, pod_spec in pod_specs(spec):
        validate_builtin(as_pod(role, pod_spec))
    assert spec["spec"]["worker"]["replicas"] == 3


def test_spec_matches_the_daskcluster_manifest(operator):
    # The Python path and deploy/kubernetes/daskcluster.yaml give the same workers.
    manifest = yaml.safe_load(DASKCLUSTER.read_text())
    spec = kube.make_cluster_spec(image=IMAGE)
    (ours,) = dict(pod_specs(spec))["worker"]["containers"]
    (theirs,) = dict(pod_specs(manifest))["worker"]["containers"]
    assert ours["resources"] == theirs["resources"]
    assert ours["env"] == theirs["env"]
    for name in ("--nthreads", "--memory-limit"):
        assert option(ours["args"], name) == option(theirs["args"], name)
    assert spec["spec"]["idleTimeout"] == manifest["spec"]["idleTimeout"]


def test_worker_size_sets_threads_memory_and_resources(operator):
    spec = kube.make_cluster_spec(image=IMAGE, worker_threads=3, worker_memory="5Gi")
    (worker,) = dict(pod_specs(spec))["worker"]["containers"]
    assert worker["args"][-4:] == ["--nthreads", "3", "--memory-limit", "5Gi"]
    assert worker["resources"]["limits"] == {"cpu": "3", "memory": "5Gi"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Pupsnr"}, "name must be"),
        ({"name": "x" * 54}, "name must be"),
        ({"n_workers": -1}, "n_workers must be"),
        ({"worker_threads": 0}, "worker_threads must be"),
        ({"worker_memory": "6GB"}, "worker_memory must be"),
        ({"scheduler_cpu": "one"}, "scheduler_cpu must be"),
    ],
)
def test_bad_arguments_are_rejected_before_anything_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kube.make_cluster_spec(image=IMAGE, **kwargs)


@pytest.mark.parametrize("function", [kube.make_cluster_spec, kube.start_cluster])
def test_missing_extra_gives_the_install_hint(monkeypatch, function):
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(ImportError, match=r'pip install "pupsnr-dask\[kubernetes\]"'):
        function(image=IMAGE)


# --- reachable: cluster.connect(kubernetes=...) and `pupsnr ... --kubernetes IMAGE` -----------


def test_connect_gives_kubecluster_the_spec_namespace_and_timeout(operator):
    from k8s_schemas import validate_dask_resource

    from pupsnr_dask.cluster import Kubernetes

    where = Kubernetes(IMAGE, n_workers=3, worker_threads=4, worker_memory="5Gi", namespace="lab")
    arguments = where.arguments()
    assert arguments["namespace"] == "lab" and arguments["resource_timeout"] == 300
    spec = arguments["custom_cluster_spec"]
    validate_dask_resource(spec)
    assert spec == kube.make_cluster_spec(
        image=IMAGE, n_workers=3, worker_threads=4, worker_memory="5Gi"
    )
    assert set(arguments) <= set(inspect.signature(operator.KubeCluster).parameters)


def _kubernetes_of(argv):
    """The Kubernetes cluster that a command line asks for, as cluster_context builds it."""
    from pupsnr_dask.cli.options import kubernetes_of
    from pupsnr_dask.cli.run import run_cmd

    ctx = run_cmd.make_context("run", ["data.zarr", "-o", "psnr.zarr", *argv])
    settings = dict(ctx.meta.get("pupsnr.connect", {}))
    return kubernetes_of(settings, ctx.params["scheduler"]), settings


def test_the_kubernetes_options_reach_the_cluster(operator, monkeypatch):
    monkeypatch.delenv("PUPSNR_SCHEDULER", raising=False)
    argv = ["--kubernetes", IMAGE, "--k8s-workers", "7", "--k8s-threads", "3"]
    where, rest = _kubernetes_of([*argv, "--k8s-memory", "3Gi", "--k8s-namespace", "lab"])
    assert (where.image, where.n_workers, where.worker_threads) == (IMAGE, 7, 3)
    assert (where.worker_memory, where.namespace) == ("3Gi", "lab")
    assert not any(name.startswith("k8s") or name == "kubernetes" for name in rest)
    (worker,) = dict(pod_specs(where.arguments()["custom_cluster_spec"]))["worker"]["containers"]
    assert worker["args"][-4:] == ["--nthreads", "3", "--memory-limit", "3Gi"]
    default, _ = _kubernetes_of(["--kubernetes", IMAGE])
    manifest = yaml.safe_load(DASKCLUSTER.read_text())
    assert default.n_workers == manifest["spec"]["worker"]["replicas"]
    assert _kubernetes_of([])[0] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1"], "--kubernetes and --scheduler"),
        (["--k8s-memory", "6GB"], "worker_memory must be a Kubernetes quantity"),
        (["--k8s-namespace", "Lab"], "namespace must be a lowercase DNS label"),
    ],
)
def test_bad_kubernetes_options_are_one_line_before_anything_starts(
    operator, argv, message, images_store, tmp_path, capsys
):
    from pupsnr_dask.cli import main

    code = main(["run", str(images_store), "-o", str(tmp_path / "r.zarr"),
                 "--kubernetes", IMAGE, *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.zarr").exists()  # refused before anything was written


def test_kubernetes_without_the_extra_is_one_line_naming_it(
    monkeypatch, images_store, tmp_path, capsys
):
    from pupsnr_dask.cli import main

    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    code = main(["run", str(images_store), "-o", str(tmp_path / "r.zarr"),
                 "--kubernetes", IMAGE])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert 'pip install "pupsnr-dask[kubernetes]"' in err
    assert not (tmp_path / "r.zarr").exists()
