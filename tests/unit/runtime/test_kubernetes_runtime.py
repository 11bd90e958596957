"""KubernetesRuntime against the kmock-based API emulator: apply, remove, drift, status and logs."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import kmock
import pytest

from gateway.app import kubernetes_runtime_config
from gateway.errors import RuntimeUnavailable
from gateway.runtime.base import InstanceNotFound
from gateway.runtime.kubernetes import KubernetesRuntime
from tests.fixtures.kubernetes import MANAGED, ClusterEmulator, kube_settings, pod, record, requests_to

STS = "/apis/apps/v1/namespaces/adapter/statefulsets"


def container(sts: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return first


def env_of(sts: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(sts)["env"]}


async def reconcile(rt: KubernetesRuntime, records: list[Any]) -> None:
    """One reconciler pass, as gateway/control drives it."""
    wanted = {r.name: r for r in records}
    deployed = await rt.deployed()
    for name, rec in wanted.items():
        if deployed.get(name) != rec.generation:
            await rt.apply(rec)
    for name in deployed.keys() - wanted.keys():
        await rt.remove(name)


# --- apply ------------------------------------------------------------------------------------


async def test_apply_creates_a_statefulset_and_a_headless_service_labelled_and_annotated(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex", generation=3, environment_variables={"A": "1"}, use_workload_identity=True))

    sts, svc = cluster.get_object("statefulsets", "ex"), cluster.get_object("services", "ex")
    assert sts is not None and svc is not None
    for obj in (sts, svc):
        assert obj["metadata"]["labels"] == {**MANAGED, "mcp-gateway/adapter": "ex"}
        assert obj["metadata"]["annotations"]["mcp-gateway/generation"] == "3"
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "ex"
    assert sts["spec"]["replicas"] == 2
    pod_spec = sts["spec"]["template"]["spec"]
    assert sts["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod_spec["serviceAccountName"] == "mcp-adapter-workload"
    assert pod_spec["automountServiceAccountToken"] is True
    c = container(sts)
    assert c["image"] == "registry.test/mcp-example:1.0.0"
    assert c["ports"][0]["containerPort"] == 8000
    assert c["readinessProbe"]["tcpSocket"]["port"] == 8000 and c["livenessProbe"]
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    assert env_of(sts)["A"] == "1"
    assert await runtime.deployed() == {"ex": 3}


async def test_without_workload_identity_no_token_is_mounted(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex"))
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None
    pod_spec = sts["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["serviceAccountName"] == "mcp-adapter"
    assert "azure.workload.identity/use" not in sts["spec"]["template"]["metadata"]["labels"]


async def test_apply_again_with_the_same_record_writes_nothing(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex"))
    before = cluster.revision
    await runtime.apply(record("ex"))
    assert cluster.revision == before
    assert requests_to(cluster, "PUT", STS) == []


async def test_update_removes_env_vars_dropped_from_the_record(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex", environment_variables={"KEEP": "1", "DROP": "2"}))
    await runtime.apply(
        record("ex", generation=2, image_version="2.0.0", replica_count=3, environment_variables={"KEEP": "one"})
    )

    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None
    assert env_of(sts) == {"KEEP": "one", "MCP_REPLICA_ID": None}
    assert container(sts)["image"] == "registry.test/mcp-example:2.0.0"
    assert sts["spec"]["replicas"] == 3
    assert sts["metadata"]["annotations"]["mcp-gateway/generation"] == "2"
    assert await runtime.deployed() == {"ex": 2}
    # a replace carrying the resourceVersion it read, not a merge
    (put,) = requests_to(cluster, "PUT", f"{STS}/ex")
    assert put.data["metadata"]["resourceVersion"]


async def test_a_concurrent_write_is_resolved_by_reading_again(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex"))

    def someone_else_writes_first(request: kmock.Request) -> kmock.Payload:
        cluster.patch_object("statefulsets", "ex", {"metadata": {"labels": {"team": "x"}}})
        # then the emulator serves the PUT, now with a stale resourceVersion (kmock: NotImplemented passes on)
        return cast(kmock.Payload, NotImplemented)

    cluster["put", f"{STS}/ex"] << someone_else_writes_first
    await runtime.apply(record("ex", generation=2, replica_count=1))

    puts = requests_to(cluster, "PUT", f"{STS}/ex")
    assert len(puts) == 2  # 409 Conflict, read again, replace
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None and sts["spec"]["replicas"] == 1
    assert await runtime.deployed() == {"ex": 2}


async def test_apply_leaves_a_namesake_not_managed_by_the_gateway_alone(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ex", "labels": {"app": "mine"}}}
    foreign["spec"] = {"ports": [{"port": 80}]}
    cluster.put_object("services", foreign)

    with pytest.raises(RuntimeUnavailable, match="not managed by mcp-gateway"):
        await runtime.apply(record("ex"))
    svc = cluster.get_object("services", "ex")
    assert svc is not None and svc["metadata"]["labels"] == {"app": "mine"}
    assert cluster.get_object("statefulsets", "ex") is None


# --- remove -----------------------------------------------------------------------------------


async def test_remove_deletes_both_objects_by_label_in_the_foreground_and_nothing_else(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex"))
    await runtime.apply(record("other"))
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1", owner_uid=sts["metadata"]["uid"]))
    unmanaged: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "ex-legacy"},
        "spec": {},
    }
    unmanaged["metadata"]["labels"] = {"mcp-gateway/adapter": "ex"}  # adapter label but no managed-by
    cluster.put_object("statefulsets", unmanaged)

    await runtime.remove("ex")

    assert cluster.get_object("statefulsets", "ex") is None and cluster.get_object("services", "ex") is None
    assert cluster.get_object("pods", "ex-0") is None  # dependents go with a foreground delete
    assert (
        cluster.get_object("statefulsets", "other") is not None and cluster.get_object("services", "other") is not None
    )
    assert cluster.get_object("statefulsets", "ex-legacy") is not None
    lists = requests_to(
        cluster, "GET", STS, labelSelector="app.kubernetes.io/managed-by=mcp-gateway,mcp-gateway/adapter=ex"
    )
    assert lists, "objects are found by label"
    deletes = requests_to(cluster, "DELETE", "/namespaces/adapter/")
    assert {r.url.path.rsplit("/", 1)[1] for r in deletes} == {"ex"}
    for r in deletes:
        assert r.data["propagationPolicy"] == "Foreground"
        assert r.data["preconditions"]["uid"]
    assert await runtime.deployed() == {"other": 1}

    await runtime.remove("ex")  # idempotent


# --- drift ------------------------------------------------------------------------------------


async def test_a_statefulset_deleted_out_of_band_is_restored(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    rec = record("ex", generation=4, environment_variables={"A": "1"})
    await reconcile(runtime, [rec])
    cluster.delete_object("statefulsets", "ex")

    assert (await runtime.deployed()).get("ex") != 4
    await reconcile(runtime, [rec])
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None and env_of(sts)["A"] == "1"
    assert await runtime.deployed() == {"ex": 4}


async def test_a_service_deleted_out_of_band_is_restored(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    rec = record("ex")
    await reconcile(runtime, [rec])
    cluster.delete_object("services", "ex")

    assert await runtime.deployed() == {"ex": 0}
    await reconcile(runtime, [rec])
    assert cluster.get_object("services", "ex") is not None
    assert await runtime.deployed() == {"ex": 1}


@pytest.mark.parametrize(
    "edit",
    [
        {"spec": {"replicas": 7}},
        {"spec": {"template": {"spec": {"containers": [{"name": "mcp", "image": "evil:latest"}]}}}},
        {"spec": {"template": {"spec": {"automountServiceAccountToken": True}}}},
        {"metadata": {"annotations": {"mcp-gateway/applied-spec": None}}},
    ],
    ids=["scaled", "image-swapped", "token-mounted", "annotation-removed"],
)
async def test_a_statefulset_edited_out_of_band_counts_as_drift_and_is_restored(
    runtime: KubernetesRuntime, cluster: ClusterEmulator, edit: dict[str, Any]
) -> None:
    rec = record("ex", generation=2, environment_variables={"A": "1"})
    await reconcile(runtime, [rec])
    cluster.patch_object("statefulsets", "ex", edit)

    assert await runtime.deployed() == {"ex": 0}
    await reconcile(runtime, [rec])
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None
    assert sts["spec"]["replicas"] == 2
    assert container(sts)["image"] == "registry.test/mcp-example:1.0.0"
    assert env_of(sts)["A"] == "1"
    assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert await runtime.deployed() == {"ex": 2}


async def test_an_env_var_added_out_of_band_is_removed(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    rec = record("ex", environment_variables={"A": "1"})
    await reconcile(runtime, [rec])
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None
    c = container(sts)
    c["env"].append({"name": "INJECTED", "value": "x"})
    cluster.patch_object("statefulsets", "ex", {"spec": {"template": {"spec": {"containers": [c]}}}})

    assert await runtime.deployed() == {"ex": 0}
    await reconcile(runtime, [rec])
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None and "INJECTED" not in env_of(sts)


async def test_server_defaults_and_canonical_quantities_are_not_drift(
    runtime: KubernetesRuntime, cluster: ClusterEmulator, kubeconfig: Any
) -> None:
    # A Lease of its own: the ``runtime`` fixture already leads on the default one.
    rt = KubernetesRuntime(
        kubernetes_runtime_config(
            kube_settings(kubeconfig, kube_cpu_limit="1000m", kube_memory_request="0.5Gi", kube_lease_name="other")
        )
    )
    await rt.start()
    try:
        await rt.apply(record("ex"))
        sts = cluster.get_object("statefulsets", "ex")
        assert sts is not None
        c = container(sts)
        c["resources"]["limits"]["cpu"] = "1"  # the API server canonicalises quantities
        c["resources"]["requests"]["memory"] = "512Mi"
        c["terminationMessagePath"] = "/dev/termination-log"  # and fills in defaults
        spec = sts["spec"]
        spec["revisionHistoryLimit"] = 10
        spec["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
        cluster.patch_object("statefulsets", "ex", {"spec": spec})
        assert await rt.deployed() == {"ex": 1}
    finally:
        await rt.close()


async def test_a_managed_statefulset_whose_adapter_is_gone_is_removed(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await reconcile(runtime, [record("ex"), record("gone")])
    cluster.delete_object("services", "gone")  # half-present leftovers go as well

    await reconcile(runtime, [record("ex")])
    assert cluster.get_object("statefulsets", "gone") is None
    assert await runtime.deployed() == {"ex": 1}


async def test_a_leftover_service_without_statefulset_is_reported_and_removed(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await reconcile(runtime, [record("gone")])
    cluster.delete_object("statefulsets", "gone")
    assert await runtime.deployed() == {"gone": 0}
    await reconcile(runtime, [])
    assert cluster.get_object("services", "gone") is None
    assert await runtime.deployed() == {}


# --- status -----------------------------------------------------------------------------------


async def _deploy_with_pods(cluster: ClusterEmulator, runtime: KubernetesRuntime, *pods: dict[str, Any]) -> None:
    await runtime.apply(record("ex", generation=5))
    for p in pods:
        cluster.put_object("pods", p)


def _stdio_pod_without_its_bridge_image() -> dict[str, Any]:
    """A stdio pod whose setup init container (the gateway image) cannot be pulled: its server waits."""
    bad = pod("ex", 1, waiting="PodInitializing")
    bad["status"]["initContainerStatuses"] = [
        {
            "name": "stdio-setup",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "gw:0.1.0"'}},
            "image": "gw:0.1.0",
            "imageID": "",
        }
    ]
    return bad


@pytest.mark.parametrize(
    ("bad_pod", "reason"),
    [
        (pod("ex", 1, waiting="ImagePullBackOff", waiting_message='Back-off pulling image "x"'), "ImagePullBackOff"),
        (pod("ex", 1, waiting="ErrImagePull", waiting_message="manifest unknown"), "ErrImagePull"),
        (
            pod("ex", 1, ip="10.0.0.2", waiting="CrashLoopBackOff", restarts=4, waiting_message="back-off 40s"),
            "CrashLoopBackOff",
        ),
        (pod("ex", 1, unschedulable="0/3 nodes are available: 3 Insufficient cpu."), "Unschedulable"),
        (_stdio_pod_without_its_bridge_image(), "ImagePullBackOff"),
    ],
    ids=["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "Unschedulable", "stdio-bridge-image"],
)
async def test_status_reports_why_a_replica_is_not_ready(
    runtime: KubernetesRuntime, cluster: ClusterEmulator, bad_pod: dict[str, Any], reason: str
) -> None:
    await _deploy_with_pods(cluster, runtime, pod("ex", 0, ip="10.0.0.1"), bad_pod)
    cluster.patch_object(
        "statefulsets",
        "ex",
        {
            "status": {
                "observedGeneration": 1,
                "replicas": 2,
                "readyReplicas": 1,
                "updatedReplicas": 2,
                "availableReplicas": 1,
                "currentRevision": "r1",
                "updateRevision": "r1",
            }
        },
    )

    status = await runtime.status(record("ex", generation=5))

    assert [i.reason for i in status.issues] == [reason]
    assert status.issues[0].message.startswith("ex-1: ")
    assert (status.desired, status.ready, status.updated, status.available) == (2, 1, 2, 1)
    assert status.image == "registry.test/mcp-example:1.0.0"
    assert status.observed_generation == 5
    assert [(i.instance, i.name, i.ready) for i in status.instances] == [(0, "ex-0", True), (1, "ex-1", False)]
    assert status.instances[1].state == reason
    if reason == "CrashLoopBackOff":
        assert status.instances[1].restarts == 4


async def test_status_during_a_rollout_is_progressing_and_tells_old_pods_apart(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await _deploy_with_pods(
        cluster, runtime, pod("ex", 0, ip="10.0.0.1", revision="new"), pod("ex", 1, ip="10.0.0.2", revision="old")
    )
    cluster.patch_object(
        "statefulsets",
        "ex",
        {
            "status": {
                "observedGeneration": 1,
                "replicas": 2,
                "readyReplicas": 2,
                "updatedReplicas": 1,
                "availableReplicas": 2,
                "currentRevision": "old",
                "updateRevision": "new",
            }
        },
    )
    status = await runtime.status(record("ex", generation=5))
    assert status.progressing
    assert [i.generation for i in status.instances] == [5, 0]
    assert status.issues == ()

    cluster.patch_object("statefulsets", "ex", {"status": {"updatedReplicas": 2, "currentRevision": "new"}})
    cluster.patch_object("pods", "ex-1", {"metadata": {"labels": {"controller-revision-hash": "new"}}})
    status = await runtime.status(record("ex", generation=5))
    assert not status.progressing
    assert [i.generation for i in status.instances] == [5, 5]


async def test_status_of_an_adapter_not_deployed_yet(runtime: KubernetesRuntime) -> None:
    status = await runtime.status(record("ex"))
    assert status.observed_generation == 0 and status.ready == 0 and status.desired == 2
    assert [i.reason for i in status.issues] == ["NotDeployed"]


# --- logs -------------------------------------------------------------------------------------


async def test_logs_return_the_last_lines_of_the_replica(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    await _deploy_with_pods(cluster, runtime, pod("ex", 0, ip="10.0.0.1"), pod("ex", 1, ip="10.0.0.2"))
    cluster.pod_logs[("adapter", "ex-1")] = "".join(f"line {i}\n" for i in range(10))

    assert await runtime.logs("ex", 1, 3) == "line 7\nline 8\nline 9\n"
    (req,) = requests_to(cluster, "GET", "/pods/ex-1/log")
    assert req.params["tailLines"] == "3" and req.params["container"] == "mcp"


async def test_logs_of_a_replica_still_creating_say_so(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    await _deploy_with_pods(cluster, runtime, pod("ex", 0, waiting="ContainerCreating"))
    assert await runtime.logs("ex", 0, 10) == "logs not yet available for instance 0"
    # instance 1 is within replicas but its pod does not exist yet
    assert await runtime.logs("ex", 1, 10) == "logs not yet available for instance 1"


async def test_logs_of_an_unknown_instance_raise_instance_not_found(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await _deploy_with_pods(cluster, runtime, pod("ex", 0, ip="10.0.0.1"))
    for instance in (2, 99, -1):
        with pytest.raises(InstanceNotFound):
            await runtime.logs("ex", instance, 10)
    with pytest.raises(InstanceNotFound):
        await runtime.logs("nope", 0, 10)


# --- failures of the API ----------------------------------------------------------------------


async def test_api_errors_raise_runtime_unavailable_naming_kubernetes(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    cluster[kmock.method.GET, STS] << kmock.KubernetesError(status=403, reason="Forbidden", message="nope")
    with pytest.raises(RuntimeUnavailable) as info:
        await runtime.deployed()
    assert info.value.dependency == "Kubernetes API"
    assert "RBAC" in info.value.detail and "403" in info.value.detail
    with pytest.raises(RuntimeUnavailable):
        await runtime.ping()


async def test_an_unreachable_api_raises_runtime_unavailable(tmp_path: Any) -> None:
    from tests.fixtures.kubernetes import free_port, write_kubeconfig

    kc = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{free_port()}")
    rt = KubernetesRuntime(kubernetes_runtime_config(kube_settings(kc)))
    with pytest.raises(RuntimeUnavailable, match="Kubernetes API"):
        await rt.start()
    await rt.close()


async def test_a_missing_kubeconfig_raises_runtime_unavailable(tmp_path: Any) -> None:
    rt = KubernetesRuntime(kubernetes_runtime_config(kube_settings(tmp_path / "absent")))
    with pytest.raises(RuntimeUnavailable, match="cluster configuration"):
        await rt.start()


async def test_ping_succeeds_against_a_reachable_api(runtime: KubernetesRuntime) -> None:
    await runtime.ping()
    await asyncio.sleep(0)
    assert json.dumps(await runtime.deployed()) == "{}"
