"""Two gateway processes, one real Redis: any gateway routes any session; Redis outages degrade gently.

The two gateways share a data dir, so the local runtime elects one of them to run the replicas and
the other routes to the same replicas (as gateway replicas on Kubernetes share one cluster).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.redis import RedisServer

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LEGACY = "2025-11-25"


def rpc_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result of a JSON or SSE response."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "result" in message or "error" in message:
                    assert "result" in message, message
                    return dict(message["result"])
        raise AssertionError(f"no result in SSE body: {response.text!r}")
    body = response.json()
    assert "result" in body, body
    return dict(body["result"])


class RawSession:
    """A 2025-era session driven by hand, so it can hop between gateways."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.next_id = 10

    @classmethod
    def open(cls, gw: GatewayProcess, adapter: str = "trio") -> RawSession:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }
        response = httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=init, headers=ACCEPT, timeout=10)
        rpc_result(response)
        session = cls(response.headers["mcp-session-id"])
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=note, headers=session.headers()).status_code == 202
        return session

    def headers(self) -> dict[str, str]:
        return {**ACCEPT, "Mcp-Session-Id": self.token, "MCP-Protocol-Version": LEGACY}

    def call(self, gw: GatewayProcess, tool: str = "whoami", adapter: str = "trio") -> httpx.Response:
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
        return httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=body, headers=self.headers(), timeout=10)

    def whoami(self, gw: GatewayProcess) -> str:
        return str(rpc_result(self.call(gw))["content"][0]["text"])


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """This file's own Redis (the outage test stops and restarts it)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateways sharing a data dir and Redis, started once for the file (2026-12-01: per test, the
    four set-ups of two gateways and four replicas cost ~12 s each); every test leaves both running."""
    env = {
        "MCPGW_SESSIONS": "redis",
        "MCPGW_REDIS_URL": redis.url,
        "MCPGW_SESSION_CACHE_SECONDS": "0.5",
    }
    data_dir = tmp_path_factory.mktemp("scale-out") / "shared"
    with start_gateway(data_dir, env) as first:
        with first.client() as api:
            assert api.post("/adapters", json=example_adapter("trio", replicas=3)).status_code == 201
            assert api.post("/adapters", json=example_adapter("solo", replicas=1)).status_code == 201
            wait_ready(api, "trio", 3, timeout=40)
            wait_ready(api, "solo", 1, timeout=40)
        with start_gateway(data_dir, env) as second:
            with second.client() as api:
                wait_ready(api, "trio", 3, timeout=20)
            yield first, second


def test_a_session_opened_on_one_gateway_continues_on_the_other(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    first, second = pair
    sessions = [RawSession.open(first) for _ in range(6)]
    homes = [s.whoami(first) for s in sessions]
    assert len(set(homes)) >= 2
    for session, home in zip(sessions, homes, strict=True):
        assert session.whoami(second) == home
        assert session.whoami(first) == home


def test_a_gateway_restarted_mid_session_continues_it(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    first, second = pair
    session = RawSession.open(second)
    home = session.whoami(second)
    second.stop()
    second.start()
    with second.client() as api:
        wait_ready(api, "trio", 3, timeout=20)
    assert session.whoami(second) == home
    assert session.whoami(first) == home


def test_replayed_session_ids_get_404(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    first, second = pair
    session = RawSession.open(first)
    session.whoami(first)
    admin = {"X-Dev-User-Id": "mallory", "X-Dev-Roles": "mcp.admin"}
    stolen = httpx.post(
        f"{second.url}/adapters/trio/mcp",
        json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}},
        headers={**session.headers(), **admin},
    )
    assert stolen.status_code == 404
    assert session.call(second, adapter="solo").status_code == 404
    assert httpx.delete(f"{first.url}/adapters/trio/mcp", headers=session.headers()).status_code == 200
    assert session.call(second).status_code == 404
    assert session.call(first).status_code == 404


def test_redis_outage_keeps_established_sessions_routing(
    pair: tuple[GatewayProcess, GatewayProcess],
    redis: RedisServer,
) -> None:
    first, second = pair
    session = RawSession.open(first)
    home = session.whoami(first)
    redis.stop()
    try:
        time.sleep(0.7)  # let cached records age past MCPGW_SESSION_CACHE_SECONDS
        for gw in (first, second, first):
            assert session.whoami(gw) == home
        stateless = httpx.post(
            f"{second.url}/adapters/trio/mcp",
            json={"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}},
            headers={**ACCEPT, "MCP-Protocol-Version": "2026-07-28"},
        )
        assert stateless.status_code < 500
        opening = httpx.post(
            f"{first.url}/adapters/trio/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
            },
            headers=ACCEPT,
        )
        assert opening.status_code == 503
        assert "Redis" in opening.json()["error"]["message"]
        assert opening.headers["retry-after"]
    finally:
        redis.start()
    # Recovery needs no restart: new sessions open and route again.
    fresh = wait_for(lambda: RawSession.open(second), timeout=10, what="a new session after Redis returns")
    assert fresh.whoami(first) == fresh.whoami(second)
    assert "Traceback" not in first.log_text() and "Traceback" not in second.log_text()
