"""Every Kubernetes object the program declares passes strict schema validation (kubernetes-validate)
for the oldest Kubernetes we support (1.30) and the newest schema bundled with kubernetes-validate."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from tests.infra.stack_fixtures import stack_run

VERSIONS = ["1.30.0", latest_version()]


def as_json(value: Any) -> Any:
    """The manifest as the API server gets it (the engine's wire format sends every number as a double)."""
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_every_kubernetes_object_is_valid_in_strict_mode(stack: str, version: str) -> None:
    objects = stack_run(stack).kubernetes_objects()
    kinds = sorted({o.plain["kind"] for o in objects})
    expected = {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
    }
    assert expected <= set(kinds)
    for obj in objects:
        manifest = as_json(obj.plain)
        assert manifest["metadata"].get("name"), f"{obj.name} has no explicit name"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{stack}: {manifest['kind']} {manifest['metadata']['name']} invalid for {version}: {exc}")


def test_strict_validation_catches_an_unknown_field() -> None:
    """The check above has teeth: a misspelt field fails strict validation."""
    deployment = next(
        as_json(o.plain) for o in stack_run("local").kubernetes_objects() if o.plain["kind"] == "Deployment"
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)
