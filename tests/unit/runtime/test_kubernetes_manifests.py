"""Every manifest the Kubernetes runtime emits is valid, strictly, for Kubernetes 1.30 and the newest bundled."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version, schema_contents
from referencing import Registry, Resource

from gateway.app import kubernetes_runtime_config
from gateway.runtime._kube_manifests import (
    STDIO_VOLUME,
    applied_generation,
    contains,
    parse_quantity,
    service_manifest,
    statefulset_manifest,
)
from gateway.runtime.kubernetes import KubernetesRuntime
from gateway.settings import Settings
from gateway.stdio.pod import STDIO_DIR, setup_command, spawner_command
from tests.fixtures.kubernetes import ClusterEmulator, pod, record, requests_to

VERSIONS = ["1.30.0", latest_version()]

RECORDS = {
    "plain": record("mcp-example", replica_count=1),
    "env-and-replicas": record("a", generation=9, replica_count=10, environment_variables={"B": "x", "A_1": ""}),
    "workload-identity": record("wi", use_workload_identity=True, image_name="team/tool", image_version="v2.1-rc.1"),
    "scaled-to-zero": record("zero", replica_count=0),
    "own-replica-id": record("own", environment_variables={"MCP_REPLICA_ID": "fixed"}),
    "longest-name": record("a" + "b" * 50 + "c"),
    "command-and-args": record("cmd", command=["/bin/server", "--http"], args=["--port", "8000"]),
    "stdio": record("time", transport="stdio", command=["mcp-server-time"], args=["--local-timezone", "UTC"]),
}
SETTINGS = {
    "defaults": kubernetes_runtime_config(Settings(runtime="kubernetes")),
    "registry-and-limits": kubernetes_runtime_config(
        Settings(
            runtime="kubernetes",
            kube_registry="myacr.azurecr.io/",
            kube_cpu_request="250m",
            kube_memory_limit="1Gi",
            kube_image_pull_policy="Always",
            kube_namespace="mcp",
        )
    ),
    "stdio-bridge": kubernetes_runtime_config(
        Settings(
            runtime="kubernetes",
            kube_stdio_bridge_image="myacr.azurecr.io/mcp-gateway@sha256:" + "a" * 64,
            stdio_max_sessions=4,
            stdio_idle_timeout=30,
            stdio_allow_roots=True,
        )
    ),
}


def validate(manifest: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("settings_id", SETTINGS)
@pytest.mark.parametrize("record_id", RECORDS)
def test_built_manifests_are_valid(version: str, settings_id: str, record_id: str) -> None:
    settings, rec = SETTINGS[settings_id], RECORDS[record_id]
    for manifest in (statefulset_manifest(rec, settings), service_manifest(rec, settings)):
        validate(manifest, version)
        assert manifest["metadata"]["namespace"] == settings.namespace


def test_strict_validation_would_catch_a_mistake() -> None:
    bad = statefulset_manifest(RECORDS["plain"], SETTINGS["defaults"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["prot"] = 8000
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad, VERSIONS[0])
    with pytest.raises(jsonschema.ValidationError):
        validate_delete_options({"propagationPolicy": "Foreground", "cascade": True}, VERSIONS[0])


def test_image_carries_the_registry_prefix() -> None:
    sts = statefulset_manifest(RECORDS["workload-identity"], SETTINGS["registry-and-limits"])
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "myacr.azurecr.io/team/tool:v2.1-rc.1"
    sts = statefulset_manifest(RECORDS["plain"], SETTINGS["defaults"])
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "mcp-example:1.0.0"


def test_command_and_args_replace_the_entrypoint_and_keep_the_security_context() -> None:
    container = statefulset_manifest(RECORDS["command-and-args"], SETTINGS["defaults"])["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == ["/bin/server", "--http"] and container["args"] == ["--port", "8000"]
    assert container["securityContext"]["runAsNonRoot"] is True
    plain = statefulset_manifest(RECORDS["plain"], SETTINGS["defaults"])["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in plain and "args" not in plain


def test_replaced_pods_drain_their_sessions_before_the_server_is_stopped() -> None:
    """Issue 13: a replaced or scaled-away pod serves its pinned sessions for replica_drain_timeout."""
    sts = statefulset_manifest(
        RECORDS["plain"], kubernetes_runtime_config(Settings(runtime="kubernetes", replica_drain_timeout=45.5))
    )
    pod_spec = sts["spec"]["template"]["spec"]
    # The kubelet's own sleep action: no binary needed in a stock image; SIGTERM reaches the server after it.
    assert pod_spec["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 46}}}
    assert pod_spec["terminationGracePeriodSeconds"] == 46 + 30
    # DNS names of terminating pods keep resolving (the gateway routes by its own pod watch).
    assert service_manifest(RECORDS["plain"], SETTINGS["defaults"])["spec"]["publishNotReadyAddresses"] is True
    off = statefulset_manifest(
        RECORDS["plain"], kubernetes_runtime_config(Settings(runtime="kubernetes", replica_drain_timeout=0))
    )
    assert "lifecycle" not in off["spec"]["template"]["spec"]["containers"][0]
    assert off["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_a_stdio_image_gets_the_bridge_beside_it_and_keeps_its_least_privilege() -> None:
    pod = statefulset_manifest(RECORDS["stdio"], SETTINGS["stdio-bridge"])["spec"]["template"]["spec"]
    plain = statefulset_manifest(RECORDS["plain"], SETTINGS["stdio-bridge"])["spec"]["template"]["spec"]
    server, bridge = pod["containers"]
    (setup,) = pod["initContainers"]
    assert pod["volumes"] == [{"name": STDIO_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]
    # The stock image runs the spawner with the copied busybox; the adapter's command and args follow.
    assert server["name"] == "mcp" and server["image"] == "mcp-example:1.0.0"
    assert server["command"] == spawner_command() and server["command"][0] == f"{STDIO_DIR}/busybox"
    assert server["args"] == ["mcp-server-time", "--local-timezone", "UTC"]
    assert server["securityContext"] == plain["containers"][0]["securityContext"]
    assert server["resources"] == plain["containers"][0]["resources"] and server["env"] == plain["containers"][0]["env"]
    assert "ports" not in server and "readinessProbe" not in server
    # The gateway image brings the bridge (serving the port, ready once the server answered ping) and busybox.
    for container in (bridge, setup):
        assert container["image"] == SETTINGS["stdio-bridge"].stdio_bridge_image
        assert container["securityContext"] == {**server["securityContext"], "readOnlyRootFilesystem": True}
        assert container["volumeMounts"] == [{"name": STDIO_VOLUME, "mountPath": STDIO_DIR}]
    assert setup["command"] == setup_command()
    assert bridge["args"] == [
        "--host=$(MCP_POD_IP)",
        "--port=8000",
        f"--fifo-dir={STDIO_DIR}",
        "--max-sessions=4",
        "--idle-timeout=30",
        "--allow-roots",
    ]
    assert bridge["ports"] == plain["containers"][0]["ports"]
    assert bridge["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    assert not {"env", "envFrom"} & setup.keys() and [e["name"] for e in bridge["env"]] == ["MCP_POD_IP"]
    # Default bridge image: the gateway's own, from the adapters' registry.
    default = statefulset_manifest(RECORDS["stdio"], SETTINGS["registry-and-limits"])
    assert default["spec"]["template"]["spec"]["containers"][1]["image"].startswith("myacr.azurecr.io/mcp-gateway:")


def test_the_spawner_survives_kubernetes_variable_expansion() -> None:
    # Kubernetes expands $(VAR) and turns $$ into $ in command and args: the scripts must hold neither.
    for script in (spawner_command()[3], setup_command()[3]):
        assert "$(" not in script and "$$" not in script


def test_a_built_statefulset_carries_its_own_generation() -> None:
    sts = statefulset_manifest(RECORDS["env-and-replicas"], SETTINGS["defaults"])
    assert applied_generation(sts) == 9


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("1", "1000m", True), ("0.5Gi", "512Mi", True), ("1e3", "1k", True), ("128Mi", "128M", False), ("x", "x", True)],
)
def test_quantities_compare_by_value(a: str, b: str, same: bool) -> None:
    assert contains({"resources": {"cpu": a}}, {"resources": {"cpu": b}}) is same
    assert parse_quantity("100m") is not None and parse_quantity("abc") is None


@pytest.mark.parametrize("version", VERSIONS)
async def test_what_the_runtime_sends_to_the_api_is_valid(
    version: str, runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    """Every object body of every write the runtime made, across create, update and delete (Leases too)."""
    owner = None
    for rec in RECORDS.values():
        await runtime.apply(rec)
        await runtime.apply(record(rec.name, generation=rec.generation + 1, replica_count=3))
        owner = owner or cluster.get_object("statefulsets", rec.name)
    assert owner is not None
    cluster.put_object("pods", pod(owner["metadata"]["name"], 0, ip="10.0.0.1"))
    for rec in RECORDS.values():
        await runtime.remove(rec.name)

    bodies = [r.data for method in ("POST", "PUT") for r in requests_to(cluster, method, "/namespaces/adapter/")]
    deletes = [r.data for r in requests_to(cluster, "DELETE", "/namespaces/adapter/")]
    leases = [b for b in bodies if b.get("kind") == "Lease"]  # the leader election's writes
    assert leases, "the runtime took the Lease"
    assert len(bodies) - len(leases) == 4 * len(RECORDS) and len(deletes) == 2 * len(RECORDS)
    for body in bodies:
        validate(body, version)
    for body in deletes:
        validate_delete_options(body, version)
        assert body["propagationPolicy"] == "Foreground"


def validate_delete_options(body: dict[str, Any], version: str) -> None:
    # kubernetes-validate picks the DeleteOptions schema only for apiVersion meta.k8s.io/v1, which that
    # schema's own enum then rejects; so apply the strict schema directly.
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{folder}/deleteoptions-meta-v1.json", version)
    definitions = schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(body)
