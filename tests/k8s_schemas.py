"""Offline checks of Kubernetes resources, shared by test_deploy.py and test_kube.py.

No API server runs here, so each resource is checked against the schema a server would use:

- built-in kinds (Namespace, Secret, Pod, Service, ...) against the Kubernetes OpenAPI schemas
  that the ``kubernetes-validate`` wheel ships, in its strict flavour (unknown fields rejected);
- the Dask custom resources (``kubernetes.dask.org``) against the ``openAPIV3Schema`` of the CRDs
  that the installed ``dask-kubernetes`` wheel ships, made strict here: a CRD schema leaves
  ``additionalProperties`` unset, so plain JSON Schema would accept any typo'd field, whereas
  ``kubectl apply`` (server-side field validation "Strict") rejects it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DASK_GROUP = "kubernetes.dask.org"
CRD_SUBDIR = Path("operator/deployment/helm/dask-kubernetes-operator/crds")
# Oldest Kubernetes the manifests are checked against, besides the newest the wheel knows.
OLDEST_KUBERNETES = "1.30"

# What the API server itself adds at the root of every custom resource (made strict with the rest).
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_SUBDOMAIN},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "required": ["name"],
}


def crd_dir() -> Path:
    """The CRD folder inside the installed dask-kubernetes package."""
    import dask_kubernetes

    path = Path(dask_kubernetes.__file__).parent / CRD_SUBDIR
    assert path.is_dir(), f"dask-kubernetes no longer ships its CRDs under {path}"
    return path


@functools.cache
def crds() -> dict[str, dict[str, Any]]:
    """The CustomResourceDefinitions of the Dask operator, by kind."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large
    found = {}
    for path in sorted(crd_dir().glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        found[crd["spec"]["names"]["kind"]] = crd
    return found


@functools.cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the CRD for ``kind``, with apiVersion/kind/metadata added."""
    crd = crds().get(kind)
    if crd is None:
        raise LookupError(f"no CRD for kind {kind!r} in {crd_dir()}")
    (entry,) = (v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = copy.deepcopy(entry["schema"]["openAPIV3Schema"])
    schema["properties"] |= {
        "apiVersion": {"type": "string", "enum": [f"{DASK_GROUP}/{version}"]},
        "kind": {"type": "string", "enum": [kind]},
        "metadata": _OBJECT_META,
    }
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema


def make_strict(schema: Any) -> Any:
    """Copy of an OpenAPI schema that rejects properties it does not list.

    Every object node that lists ``properties`` and says nothing about ``additionalProperties``
    gets ``additionalProperties: false``, unless it is marked
    ``x-kubernetes-preserve-unknown-fields``. Maps (``additionalProperties: {...}``) stay maps.
    """
    if isinstance(schema, list):
        return [make_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {
        key: {name: make_strict(sub) for name, sub in value.items()}
        if key == "properties"  # property names are not schema keywords
        else make_strict(value)
        for key, value in schema.items()
    }
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@functools.cache
def _crd_validator(kind: str, version: str, strict: bool) -> jsonschema.protocols.Validator:
    schema = crd_schema(kind, version)
    if strict:
        schema = make_strict(schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def validate_dask_resource(doc: dict[str, Any], *, strict: bool = True) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` fits its (strict) CRD schema."""
    group, _, version = doc["apiVersion"].partition("/")
    assert group == DASK_GROUP, f"not a Dask resource: {doc['apiVersion']}"
    error = jsonschema.exceptions.best_match(
        _crd_validator(doc["kind"], version, strict).iter_errors(doc)
    )
    if error is not None:
        raise error


def kubernetes_versions() -> list[str]:
    """Kubernetes versions to validate built-in kinds against: the oldest we claim, the newest."""
    import kubernetes_validate

    return [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]


def validate_builtin(doc: dict[str, Any]) -> None:
    """Raise unless ``doc`` passes ``kubernetes-validate --strict`` for every checked version.

    Unlike the ``kubernetes-validate`` command, which only warns about a kind it has no schema
    for, this fails: a resource that nothing validated must not pass.
    """
    import kubernetes_validate

    for version in kubernetes_versions():
        kubernetes_validate.validate(doc, version, strict=True)


def validate_resource(doc: dict[str, Any]) -> None:
    """Validate any resource: Dask kinds against the CRDs, the rest with kubernetes-validate."""
    if doc["apiVersion"].startswith(DASK_GROUP + "/"):
        validate_dask_resource(doc)
    else:
        validate_builtin(doc)


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, PodSpec) for every Pod template inside a Dask resource."""
    spec = doc["spec"]
    if doc["kind"] == "DaskJob":
        yield "job", spec["job"]["spec"]
        spec = spec["cluster"]["spec"]
    if doc["kind"] in ("DaskCluster", "DaskJob"):
        yield "scheduler", spec["scheduler"]["spec"]
    if doc["kind"] == "DaskWorkerGroup":
        spec = {"worker": spec["worker"]}
    if "worker" in spec:
        yield "worker", spec["worker"]["spec"]


def scheduler_service_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The Service spec a DaskCluster or DaskJob gives its scheduler."""
    spec = doc["spec"]["cluster"]["spec"] if doc["kind"] == "DaskJob" else doc["spec"]
    return spec["scheduler"]["service"]


def as_pod(name: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A Pod resource around ``pod_spec``, as the operator will create it."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


def as_service(name: str, service_spec: dict[str, Any]) -> dict[str, Any]:
    """A Service resource around ``service_spec``, as the operator will create it."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": service_spec}


def option(args: list[str], name: str) -> str | None:
    """Value of ``--name value`` or ``--name=value`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
