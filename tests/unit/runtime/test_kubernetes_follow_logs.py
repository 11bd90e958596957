"""KubernetesRuntime.follow_logs against the kmock API emulator: ``pods/log?follow=true``, tail, not-found.

The emulator answers a log request at once and closes it (no kubelet streams), so this pins the
request the runtime sends and that the stream ends when the API server ends it; lines arriving
over time are covered for the local runtime by tests/integration/test_cli.py.
"""

from __future__ import annotations

import pytest

from gateway.runtime.base import InstanceNotFound
from gateway.runtime.kubernetes import KubernetesRuntime
from tests.fixtures.kubernetes import ClusterEmulator, pod, record, requests_to


async def test_follow_logs_streams_the_pod_log_with_follow_and_tail(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex", generation=5))
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    cluster.pod_logs[("adapter", "ex-0")] = "".join(f"line {i}\r\n" for i in range(5))

    lines = [line async for line in await runtime.follow_logs("ex", 0, 2)]

    assert lines == ["line 3", "line 4"]
    (req,) = requests_to(cluster, "GET", "/pods/ex-0/log")
    assert (
        req.params["follow"].lower() == "true" and req.params["tailLines"] == "2" and req.params["container"] == "mcp"
    )


async def test_follow_logs_of_an_unknown_instance_raise_instance_not_found(
    runtime: KubernetesRuntime, cluster: ClusterEmulator
) -> None:
    await runtime.apply(record("ex", generation=5))
    cluster.put_object("pods", pod("ex", 0, ip="10.0.0.1"))
    for name, instance in (("ex", 3), ("ex", -1), ("nope", 0)):
        with pytest.raises(InstanceNotFound):
            await runtime.follow_logs(name, instance, 10)
