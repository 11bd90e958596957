"""The gateway in kubernetes mode end to end: the API emulator, a test kubelet whose pods are real
example-server processes on 127.x.0.N:8000, a real gateway process, and the real ``mcp`` client."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from tests.fixtures.gateway import GatewayProcess, example_adapter, wait_for, wait_ready
from tests.fixtures.kubernetes import ClusterThread
from tests.fixtures.mcp_results import first_text

pytestmark = pytest.mark.slow

MODERN_CALLS = 24


async def whoami(client: Client) -> str:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return first_text(result)


async def stateless_whoami(url: str) -> str:
    async with Client(url) as client:
        return await whoami(client)


async def stateless_spread(url: str, calls: int) -> set[str]:
    """Who answered ``calls`` modern (stateless) calls from one client, each its own request."""
    async with Client(url) as client:
        return {await whoami(client) for _ in range(calls)}


def _rpc_result(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        message = json.loads(data[-1])
    else:
        message = response.json()
    assert "result" in message, message
    return dict(message["result"])


class RawSession:
    """A 2025-era session spoken by hand, to see the gateway's status codes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30, headers={"Accept": "application/json, text/event-stream"})
        self.session_id = ""

    def post(self, message: dict[str, Any]) -> httpx.Response:
        headers = {"MCP-Protocol-Version": "2025-11-25"}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return self.http.post(self.url, json={"jsonrpc": "2.0", **message}, headers=headers)

    def initialize(self) -> None:
        init = self.post(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
        )
        assert init.status_code == 200, init.text
        self.session_id = init.headers["mcp-session-id"]
        _rpc_result(init)
        assert self.post({"method": "notifications/initialized"}).status_code == 202

    def whoami(self) -> httpx.Response:
        return self.post({"id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})


def test_sessions_stay_on_one_pod_stateless_calls_spread_and_a_killed_pod_leaves_routing(
    k8s: ClusterThread, k8s_gateway: GatewayProcess
) -> None:
    url = k8s_gateway.url + "/adapters/kx/mcp"
    with k8s_gateway.client() as api:
        assert api.post("/adapters", json=example_adapter("kx", replicas=3)).status_code == 201
        status = wait_ready(api, "kx", 3, timeout=90)
        assert [(i["name"], i["ready"]) for i in status["instances"]] == [(f"kx-{n}", True) for n in range(3)]

    cluster, kubelet = k8s.cluster, k8s.kubelet  # locals: the lambdas below see them narrowed
    assert cluster is not None and kubelet is not None
    sts = k8s.call(cluster.get_object, "statefulsets", "kx")
    assert sts["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mcp-gateway"
    pods = k8s.call(cluster.objects_of, "pods")
    assert {p["status"]["podIP"].startswith("127.") for p in pods.values()} == {True}

    # Modern (stateless) calls spread over every pod.
    assert anyio.run(stateless_spread, url, MODERN_CALLS) == {"kx-0", "kx-1", "kx-2"}

    # A hand-spoken 2025 session picks the pod to kill; it answers from that pod every time.
    raw = RawSession(url)
    raw.initialize()
    victim = {_rpc_result(raw.whoami())["content"][0]["text"] for _ in range(3)}
    assert len(victim) == 1
    (victim_pod,) = victim

    async def sessions_then_kill() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(url, mode="legacy")) for _ in range(6)]
            homes = []
            for client in clients:
                answers = {await whoami(client) for _ in range(4)}
                assert len(answers) == 1, f"a session moved between pods: {answers}"
                homes.append(answers.pop())
            assert len(set(homes)) >= 2, f"new sessions all landed on one pod: {homes}"

            # The pod's process dies; the kubelet marks it not Ready; the gateway stops routing to it.
            k8s.call(lambda: kubelet.process_of(victim_pod).kill())
            await anyio.to_thread.run_sync(
                lambda: wait_for(lambda: raw.whoami().status_code == 404, timeout=10, what="404 for the dead pod")
            )

            for client, home in zip(clients, homes, strict=True):
                if home == victim_pod:
                    with pytest.raises(Exception):  # noqa: B017 - the client surfaces the 404 its own way
                        await whoami(client)
                else:
                    assert await whoami(client) == home  # sessions elsewhere are untouched
            for _ in range(4):
                async with Client(url, mode="legacy") as fresh:
                    assert await whoami(fresh) != victim_pod
            assert await stateless_spread(url, MODERN_CALLS) == {"kx-0", "kx-1", "kx-2"} - {victim_pod}

    anyio.run(sessions_then_kill)
    response = raw.whoami()
    assert response.status_code == 404
    assert response.json()["error"]

    with k8s_gateway.client() as api:
        status = api.get("/adapters/kx/status").json()
        dead = next(i for i in status["instances"] if i["name"] == victim_pod)
        assert dead["ready"] is False and dead["state"] == "CrashLoopBackOff"
        logs = api.get("/adapters/kx/logs", params={"instance": 0, "tail": 20})
        assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
        assert api.get("/adapters/kx/logs", params={"instance": 7}).status_code == 404

        assert api.delete("/adapters/kx").status_code == 204
    wait_for(lambda: not k8s.call(cluster.objects_of, "pods"), timeout=20, what="pods gone")
    wait_for(
        lambda: k8s.call(cluster.get_object, "statefulsets", "kx") is None,
        timeout=20,
        what="the StatefulSet gone (its pods may go first)",
    )
    wait_for(lambda: kubelet.pods == {}, timeout=20, what="the test kubelet to stop every pod process")


def test_put_removes_env_from_running_pods(k8s: ClusterThread, k8s_gateway: GatewayProcess) -> None:
    url = k8s_gateway.url + "/adapters/envk/mcp"
    with k8s_gateway.client() as api:
        body = example_adapter("envk", replicas=1, environmentVariables={"KEEP": "1", "DROP": "x"})
        assert api.post("/adapters", json=body).status_code == 201
        wait_ready(api, "envk", 1, timeout=60)

        async def env(name: str) -> dict[str, Any] | None:
            async with Client(url) as client:
                result: dict[str, Any] | None = (await client.call_tool("get_env", {"name": name})).structured_content
                return result

        assert anyio.run(env, "DROP") == {"result": "x"}
        body = example_adapter("envk", replicas=2, environmentVariables={"KEEP": "2"})
        assert api.put("/adapters/envk", json=body).status_code == 200
        status = wait_ready(api, "envk", 2, timeout=60)
        assert status["observedGeneration"] == 2

        def rolled() -> bool:
            return anyio.run(env, "DROP") == {"result": None} and anyio.run(env, "KEEP") == {"result": "2"}

        wait_for(rolled, timeout=30, what="the new env on every pod")
        answers = {json.dumps([anyio.run(env, "DROP"), anyio.run(env, "KEEP")]) for _ in range(6)}
        assert answers == {json.dumps([{"result": None}, {"result": "2"}])}
