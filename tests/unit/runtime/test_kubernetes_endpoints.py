"""Endpoints of the KubernetesRuntime: the pod list + watch, its resume, re-list and backoff."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import cast

import kmock

from gateway.app import kubernetes_runtime_config
from gateway.runtime.base import accepting
from gateway.runtime.kubernetes import KubernetesRuntime
from tests.fixtures.kubernetes import ClusterEmulator, kube_settings, pod, record, requests_to, wait_for

PODS = "/api/v1/namespaces/adapter/pods"


def replicas(rt: KubernetesRuntime, name: str = "ex") -> list[str]:
    return [e.replica for e in rt.endpoints(name)]


async def test_only_ready_pods_with_an_ip_are_endpoints(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.10"))
    cluster.put_object("pods", pod("ex", 1, ip="10.0.0.11", ready=False))
    cluster.put_object("pods", pod("ex", 2, waiting="ContainerCreating"))
    cluster.put_object("pods", pod("ex", 3, ip="fd00::3"))
    terminating = pod("ex", 4, ip="10.0.0.14")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cluster.put_object("pods", terminating)
    foreign = pod("ex", 5, ip="10.0.0.15")
    del foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    cluster.put_object("pods", foreign)

    await wait_for(lambda: len(runtime.endpoints("ex")) == 3, what="three endpoints")
    await asyncio.sleep(0.1)
    e0, e3, e4 = runtime.endpoints("ex")
    assert (e0.replica, e0.url, e0.draining) == ("ex-0", "http://10.0.0.10:8000", False)
    assert (e3.replica, e3.url, e3.draining) == ("ex-3", "http://[fd00::3]:8000", False)
    # Deleted but still Ready: in its preStop drain, it serves the sessions pinned to it, nothing new.
    assert (e4.replica, e4.url, e4.draining) == ("ex-4", "http://10.0.0.14:8000", True)
    assert accepting(runtime.endpoints("ex")) == (e0, e3)
    pod0 = cluster.get_object("pods", "ex-0")
    assert pod0 is not None and e0.uid == pod0["metadata"]["uid"]
    assert runtime.endpoints("other") == ()
    # Once it stops answering its readiness probe, the draining pod is no endpoint at all.
    terminating["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    cluster.put_object("pods", terminating)
    await wait_for(lambda: len(runtime.endpoints("ex")) == 2, what="the drained pod gone")


async def test_endpoints_change_within_a_second_of_the_watch_event(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    heard: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    runtime.add_listener(lambda name: heard.append((name, loop.time())))

    async def step(expected: list[str]) -> float:
        """Right after a change: how long until the endpoints are ``expected`` and a listener heard it."""
        start, count = loop.time(), len(heard)
        took = await wait_for(lambda: replicas(runtime) == expected and len(heard) > count, limit=1.0)
        assert heard[-1][0] == "ex"
        assert heard[-1][1] - start < 1.0
        return took

    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    took = [await step(["ex-0"])]
    cluster.put_object("pods", pod("ex", 1, ip="10.0.0.2"))
    took.append(await step(["ex-0", "ex-1"]))
    cluster.patch_object("pods", "ex-0", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    took.append(await step(["ex-1"]))
    cluster.delete_object("pods", "ex-1")
    took.append(await step([]))
    assert max(took) < 1.0
    assert runtime.endpoints("ex") == ()


async def test_a_replaced_pod_keeps_its_name_and_gets_a_new_uid(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    await wait_for(lambda: replicas(runtime) == ["ex-0"])
    first = runtime.endpoints("ex")[0]
    cluster.delete_object("pods", "ex-0")
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.9"))
    await wait_for(lambda: bool(runtime.endpoints("ex")) and runtime.endpoints("ex")[0] != first)
    second = runtime.endpoints("ex")[0]
    assert second.replica == first.replica and second.uid != first.uid and second.url == "http://10.0.0.9:8000"


async def test_without_a_uid_the_stand_in_still_changes_with_the_incarnation(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    cluster.stamp_uids = False  # as plain kmock: metadata.uid stays empty
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    await wait_for(lambda: replicas(runtime) == ["ex-0"])
    first = runtime.endpoints("ex")[0]
    assert first.uid.startswith("ex-0/10.0.0.1/")
    cluster.delete_object("pods", "ex-0")
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.2"))
    await wait_for(lambda: bool(runtime.endpoints("ex")) and runtime.endpoints("ex")[0].uid != first.uid)


async def test_dns_addressing_uses_the_per_pod_name_of_the_headless_service(
    cluster: ClusterEmulator, kubeconfig: Path
) -> None:
    cluster.put_object("pods", pod("ex", 1, ip="10.0.0.1"))
    rt = KubernetesRuntime(
        kubernetes_runtime_config(kube_settings(kubeconfig, kube_pod_addressing="dns", kube_cluster_domain="k8s.test"))
    )
    await rt.start()
    try:
        # the initial list already knows the pod: no wait needed
        (endpoint,) = rt.endpoints("ex")
        assert endpoint.url == "http://ex-1.ex.adapter.svc.k8s.test:8000"
    finally:
        await rt.close()


async def test_the_watch_resumes_from_its_resource_version_after_the_server_ends_it(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await _resume_after_drop(runtime, cluster, abrupt=False)


async def test_the_watch_resumes_from_its_resource_version_after_a_dropped_connection(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await _resume_after_drop(runtime, cluster, abrupt=True)


async def _resume_after_drop(runtime: KubernetesRuntime, cluster: ClusterEmulator, *, abrupt: bool) -> None:
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    cluster.put_object("pods", pod("ex", 1, ip="10.0.0.2"))
    await wait_for(lambda: replicas(runtime) == ["ex-0", "ex-1"])
    await wait_for(lambda: cluster.open_watches == 1)
    seen = str(cluster.revision)
    lists_before = len(requests_to(cluster, "GET", PODS)) - len(_watches(cluster))

    # The connection goes; while it is down, one pod leaves and another arrives.
    assert cluster.drop_watches(abrupt=abrupt) == 1
    cluster.delete_object("pods", "ex-0")
    cluster.put_object("pods", pod("ex", 2, ip="10.0.0.3"))

    await wait_for(lambda: replicas(runtime) == ["ex-1", "ex-2"], what="events missed while disconnected")
    resumed = _watches(cluster)[-1]
    assert resumed.params["resourceVersion"] == seen
    assert len(requests_to(cluster, "GET", PODS)) - len(_watches(cluster)) == lists_before, "no re-list needed"


def _watches(cluster: ClusterEmulator) -> list[kmock.Request]:
    return [r for r in requests_to(cluster, "GET", PODS) if r.params.get("watch", "").lower() == "true"]


async def test_the_watch_lists_again_after_410_gone(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    await wait_for(lambda: replicas(runtime) == ["ex-0"])
    await wait_for(lambda: cluster.open_watches == 1)
    watches_before = len(_watches(cluster))

    cluster.drop_watches()
    cluster.delete_object("pods", "ex-0")
    cluster.put_object("pods", pod("other", 0, ip="10.0.0.5"))
    cluster.compact()  # the history of those events is gone: resuming answers 410

    await wait_for(lambda: replicas(runtime) == [] and replicas(runtime, "other") == ["other-0"], what="re-list")
    await wait_for(lambda: len(_watches(cluster)) - watches_before >= 2, what="a watch after the re-list")
    watches = _watches(cluster)[watches_before:]
    assert int(watches[0].params["resourceVersion"]) < cluster.compacted  # answered 410 Gone
    assert int(watches[-1].params["resourceVersion"]) >= cluster.compacted  # after the re-list
    relists = [r for r in requests_to(cluster, "GET", PODS) if "watch" not in r.params]
    assert len(relists) >= 2  # start + after 410
    await wait_for(lambda: cluster.open_watches == 1)


async def test_the_watch_backs_off_on_errors_and_recovers(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    loop = asyncio.get_running_loop()
    await wait_for(lambda: cluster.open_watches == 1)
    watches_before = len(_watches(cluster))
    refused: list[float] = []

    def refuse_three_times(request: kmock.Request) -> kmock.Payload:
        if len(refused) == 3:
            # from now on the emulator serves watches again (kmock: NotImplemented passes on; mypy reads it as Any)
            return cast(kmock.Payload, NotImplemented)
        refused.append(loop.time())
        return kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd is sad")

    cluster[kmock.method.GET, PODS][lambda r: r.params.get("watch", "").lower() == "true"] << refuse_three_times

    cluster.drop_watches()
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    await wait_for(lambda: replicas(runtime) == ["ex-0"], limit=10)
    assert len(refused) == 3
    assert len(_watches(cluster)) - watches_before == 4  # three refused, then one served
    gaps = [b - a for a, b in itertools.pairwise(refused)]
    assert 0.2 < gaps[0] < gaps[1]  # waited between attempts, doubling (with jitter)


async def test_close_ends_the_watch(cluster: ClusterEmulator, kubeconfig: Path) -> None:
    rt = KubernetesRuntime(kubernetes_runtime_config(kube_settings(kubeconfig)))
    await rt.start()
    await wait_for(lambda: cluster.open_watches == 1)
    await rt.close()
    await wait_for(lambda: cluster.open_watches == 0, what="the watch to end")


async def test_removing_an_adapter_empties_its_endpoints(runtime: KubernetesRuntime, cluster: ClusterEmulator) -> None:
    await runtime.apply(record("ex"))
    owner = cluster.get_object("statefulsets", "ex")
    assert owner is not None
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1", owner_uid=owner["metadata"]["uid"]))
    await wait_for(lambda: replicas(runtime) == ["ex-0"])
    await runtime.remove("ex")
    await wait_for(lambda: runtime.endpoints("ex") == ())
