"""A stdio image on Kubernetes end to end (issue 17): the gateway in kubernetes mode, the API emulator,
the test kubelet running the pod's three containers as real processes (the setup init container, the
stock server container under the busybox spawner, the bridge container from the gateway image), and
the real ``mcp`` client through the gateway."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from gateway.runtime._kube_manifests import STDIO_VOLUME
from tests.fixtures.gateway import GatewayProcess, wait_for, wait_ready
from tests.fixtures.kubernetes import ClusterThread

pytestmark = pytest.mark.slow

SESSIONS = 4


def stdio_adapter(name: str, args: list[str], replicas: int = 2) -> dict[str, Any]:
    """A stdio image whose program is the test's stdio server (the kubelet's images are this venv)."""
    return {
        "name": name,
        "imageName": "stdio-whoami",
        "imageVersion": "1.0.0",
        "transport": "stdio",
        "command": ["python", "-m", "tests.upstreams.stdio_whoami"],
        "args": args,
        "replicaCount": replicas,
    }


async def call(client: Client, tool: str) -> Any:
    result = await client.call_tool(tool, {})
    assert not result.is_error, result
    return result.structured_content["result"] if result.structured_content else None


def servers_with(marker: str) -> list[tuple[str, str]]:
    """(command line, parent's program) of the stdio server processes given ``marker`` (not the spawners)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
                if marker.encode() in argv and b"busybox" not in argv[0]:
                    stat = Path(entry.path, "stat").read_bytes()
                    ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
                    parent = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")[0]
                    found.append((b" ".join(argv).decode(errors="replace"), parent.decode(errors="replace")))
    return found


def test_a_stdio_image_serves_pinned_sessions_one_process_each_and_put_changes_its_args(
    k8s: ClusterThread, k8s_gateway: GatewayProcess
) -> None:
    first, second = f"first-{uuid.uuid4().hex[:8]}", f"second-{uuid.uuid4().hex[:8]}"
    url = k8s_gateway.url + "/adapters/kst/mcp"
    with k8s_gateway.client() as api:
        # The image's ENTRYPOINT cannot be wrapped without naming it: the API asks for command.
        nameless = api.post("/adapters", json={**stdio_adapter("kst", [first]), "command": None})
        assert nameless.status_code == 422 and nameless.json()["field"] == "command", nameless.text
        created = api.post("/adapters", json=stdio_adapter("kst", [first]))
        assert created.status_code == 201, created.text
        wait_ready(api, "kst", 2, timeout=90)

    assert k8s.cluster is not None and k8s.kubelet is not None
    pod = k8s.call(k8s.cluster.get_object, "pods", "kst-0")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["stdio-setup"]
    server, bridge = pod["spec"]["containers"]
    assert (server["name"], server["image"]) == ("mcp", "registry.test/stdio-whoami:1.0.0")
    assert server["args"] == ["python", "-m", "tests.upstreams.stdio_whoami", first]
    assert (bridge["name"], bridge["image"]) == ("bridge", "registry.test/mcp-gateway:0.1.0")

    async def sessions() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(url, mode="legacy")) for _ in range(SESSIONS)]
            seen: list[tuple[str, int]] = []
            for client in clients:
                homes = {await call(client, "whoami") for _ in range(3)}
                pids = {await call(client, "pid") for _ in range(3)}
                assert len(homes) == 1 and len(pids) == 1, f"a session moved: {homes} {pids}"
                assert await call(client, "argv") == [first]
                seen.append((homes.pop(), pids.pop()))
            assert {home for home, _ in seen} <= {"kst-0", "kst-1"}
            assert len(set(seen)) == SESSIONS, f"sessions shared a process: {seen}"
            # Each session's process is the stock program, started by the server container's spawner
            # (busybox), not by the bridge: it runs in the image's container.
            running = servers_with(first)
            assert len(running) >= SESSIONS, running
            assert {Path(parent).name for _, parent in running} == {"busybox"}, running
        # Stateless (2026-07-28) calls: the replica's shared process.
        async with Client(url) as modern:
            assert await call(modern, "argv") == [first]
            assert await call(modern, "whoami") in {"kst-0", "kst-1"}
        # Legacy HTTP+SSE (2024-11-05): the stream's own process, pinned like a session.
        async with Client(sse_client(url.removesuffix("/mcp") + "/sse"), mode="legacy") as legacy:
            assert len({await call(legacy, "whoami") for _ in range(3)}) == 1
            assert await call(legacy, "argv") == [first]

    anyio.run(sessions)
    # The sessions ended (the client's DELETE): their processes are gone; the shared ones remain.
    wait_for(lambda: len(servers_with(first)) <= 2, timeout=20, what="ended sessions' processes to exit")

    with k8s_gateway.client() as api:
        logs = api.get("/adapters/kst/logs", params={"instance": 0, "tail": 50})
        assert logs.status_code == 200 and "mcp-stdio spawner: waiting for sessions" in logs.text

        assert api.put("/adapters/kst", json=stdio_adapter("kst", [second])).status_code == 200
        status = wait_ready(api, "kst", 2, timeout=90)
        assert status["observedGeneration"] == 2

    async def argv_of_a_new_session() -> Any:
        async with Client(url, mode="legacy") as client:
            return await call(client, "argv")

    wait_for(lambda: anyio.run(argv_of_a_new_session) == [second], timeout=30, what="the new args in effect")
    assert [anyio.run(argv_of_a_new_session) for _ in range(4)] == [[second]] * 4
    wait_for(lambda: not servers_with(first), timeout=20, what="the old pods' processes to be gone")

    with k8s_gateway.client() as api:
        assert api.delete("/adapters/kst").status_code == 204
    kubelet = k8s.kubelet  # a local: the lambda sees it narrowed
    assert kubelet is not None
    wait_for(lambda: kubelet.pods == {}, timeout=20, what="the test kubelet to stop every pod")
    wait_for(lambda: not servers_with(second), timeout=20, what="no stdio server left")
    wait_for(lambda: not list(k8s.log_dir.glob(f"kst-*-{STDIO_VOLUME}")), timeout=10, what="the emptyDirs gone")
