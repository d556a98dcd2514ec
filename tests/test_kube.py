"""pupsnr_dask.kube: the DaskCluster it builds, checked offline (no Kubernetes API server)."""

from __future__ import annotations

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
