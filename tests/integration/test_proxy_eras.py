"""All three protocol eras through the gateway with the real mcp SDK client, over 3 replicas."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from tests.fixtures.gateway import GatewayProcess, example_adapter, replica_pids, start_gateway, wait_ready
from tests.fixtures.mcp_results import first_text

SESSIONS = 30


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with start_gateway(tmp_path_factory.mktemp("eras") / "data") as g:
        with g.client() as api:
            assert api.post("/adapters", json=example_adapter("trio", replicas=3)).status_code == 201
            wait_ready(api, "trio", 3, timeout=40)
        yield g


async def whoami_series(client: Client, calls: int) -> list[str]:
    replies = []
    for _ in range(calls):
        result = await client.call_tool("whoami", {})
        assert not result.is_error
        replies.append(first_text(result))
    return replies


async def many_sessions(open_client: Any, count: int, calls: int = 3, parallel: int = 6) -> list[list[str]]:
    results: list[list[str]] = []
    limiter = anyio.Semaphore(parallel)

    async def one() -> None:
        async with limiter, open_client() as client:
            results.append(await whoami_series(client, calls))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return results


def assert_pinned_and_spread(results: list[list[str]]) -> Counter[str]:
    assert len(results) == SESSIONS
    for replies in results:
        assert len(set(replies)) == 1, f"a session moved between replicas: {replies}"
    spread = Counter(replies[0] for replies in results)
    assert len(spread) >= 2, f"all sessions on one replica: {spread}"
    return spread


def test_2025_sessions_stay_on_one_replica_and_spread(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/trio/mcp"

    async def run() -> list[list[str]]:
        return await many_sessions(lambda: Client(url, mode="legacy"), SESSIONS)

    spread = assert_pinned_and_spread(anyio.run(run))
    assert set(spread) <= {"trio-0", "trio-1", "trio-2"}


def test_legacy_sse_sessions_stay_on_one_replica_and_spread(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/trio/sse"

    async def run() -> list[list[str]]:
        return await many_sessions(lambda: Client(sse_client(url), mode="legacy"), SESSIONS)

    assert_pinned_and_spread(anyio.run(run))


def test_stateless_2026_calls_spread_over_every_replica(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/trio/mcp"

    async def run() -> list[str]:
        async with Client(url, mode="2026-07-28") as client:
            assert client.protocol_version == "2026-07-28"
            return await whoami_series(client, 12)

    replies = anyio.run(run)
    assert Counter(replies).keys() == {"trio-0", "trio-1", "trio-2"}


def test_stateless_requests_carry_no_session_and_touch_no_session_store(gw: GatewayProcess) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "add",
            "arguments": {"a": 1, "b": 2},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
            },
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "add",
    }
    response = httpx.post(gw.url + "/adapters/trio/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers
    assert '"result":3' in response.text.replace(" ", "") or '"text":"3"' in response.text.replace(" ", "")


def test_session_delete_then_reuse_is_404(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/trio/mcp"
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    opened = httpx.post(url, json=init, headers=headers)
    assert opened.status_code == 200
    token = opened.headers["mcp-session-id"]
    session_headers = {**headers, "Mcp-Session-Id": token, "MCP-Protocol-Version": "2025-11-25"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert httpx.post(url, json=ping, headers=session_headers).status_code == 200
    assert httpx.delete(url, headers=session_headers).status_code == 200
    gone = httpx.post(url, json=ping, headers=session_headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == -32001


def test_killing_a_replica_mid_run_only_ends_its_sessions(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/trio/mcp"
    statuses: list[int] = []

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients: list[Client] = []
            homes: list[str] = []
            while len(clients) < 3 or len(set(homes)) < 2:
                client = await stack.enter_async_context(Client(url, mode="legacy"))
                clients.append(client)
                homes.append((await whoami_series(client, 1))[0])
            victim = homes[0]
            victim_pid = replica_pids(gw.data_dir)[victim]
            os.kill(victim_pid, signal.SIGKILL)

            # The dead replica's sessions end with a 404 (the SDK reports the session terminated) ...
            with pytest.raises(MCPError):
                await whoami_series(clients[0], 1)
            # ... while every other session continues on its own replica.
            for client, home in zip(clients, homes, strict=True):
                if home != victim:
                    assert await whoami_series(client, 2) == [home, home]

            # Stateless traffic and new sessions keep working; none of it sees a 5xx.
            async with httpx.AsyncClient() as raw:
                for _ in range(6):
                    response = await raw.post(
                        url,
                        json={"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}},
                        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"},
                    )
                    statuses.append(response.status_code)
            for _ in range(4):
                async with Client(url, mode="legacy") as fresh:
                    assert (await whoami_series(fresh, 1))[0] in {"trio-0", "trio-1", "trio-2"}

    anyio.run(run)
    assert all(status < 500 for status in statuses), statuses
    with gw.client() as api:
        status = wait_ready(api, "trio", 3, timeout=30)  # the runtime restarted the victim
        assert sum(i["restarts"] for i in status["instances"]) >= 1
    assert "Traceback" not in gw.log_text()
