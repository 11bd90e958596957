"""Sessions are bounded (issue 12): caps per user and per adapter, only accepted sessions recorded,
ids too long to seal refused, the memory store's maximum, and sessions dropped with their replica.

Observed on main before this: one user's 20,000 ``initialize`` calls filled the example server's
session table and locked everyone else out; an ``initialize`` the upstream answered with 400 still
got a gateway session id; an upstream session id too long to seal was accepted and then answered
404 forever; sessions of a killed replica stayed counted until their TTL.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import (
    GatewayProcess,
    example_adapter,
    replica_processes,
    start_gateway,
    wait_for,
    wait_ready,
)
from tests.fixtures.redis import RedisServer

CATALOG = Path(__file__).resolve().parent.parent / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ADAPTERS = ("caps", "plain", "churn", "refused", "doomed")
CAPS = {"MCPGW_SESSION_MAX_PER_USER": "3", "MCPGW_SESSION_MAX_PER_ADAPTER": "5"}


def recorder(name: str, replicas: int = 1) -> dict[str, Any]:
    return example_adapter(name, replicas=replicas, imageName="recorder", imageVersion="1.0", requiredRoles=["users"])


def initialize(gw: GatewayProcess, adapter: str, user: str, upstream_id: str = "", **headers: str) -> httpx.Response:
    """An initialize the recorder answers with Mcp-Session-Id ``upstream_id`` (or a fresh one)."""
    upstream_id = upstream_id or os.urandom(8).hex()
    sent = {**ACCEPT, "X-Dev-User-Id": user, "X-Dev-Roles": "users", "x-test-session": upstream_id, **headers}
    return httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=INIT, headers=sent, timeout=10)


def delete(gw: GatewayProcess, adapter: str, user: str, token: str) -> httpx.Response:
    headers = {"X-Dev-User-Id": user, "X-Dev-Roles": "users", "Mcp-Session-Id": token}
    return httpx.delete(f"{gw.url}/adapters/{adapter}/mcp", headers=headers, timeout=10)


def rpc_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0" and isinstance(body["error"]["code"], int)
    return str(body["error"]["message"])


def metric(gw: GatewayProcess, name: str, labels: str = "") -> float:
    """Sum of a metric's samples whose label set contains ``labels``."""
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if match and labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def upstream_requests(data_dir: Path, replica: str) -> int:
    port = replica_processes(data_dir)[replica][1]
    return int(httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()["requests"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), **CAPS}
    with start_gateway(tmp_path_factory.mktemp("caps") / "data", env) as g:
        with g.client() as api:
            for name in ADAPTERS:
                assert api.post("/adapters", json=recorder(name)).status_code == 201
            legacy = example_adapter("legacy", replicas=1, requiredRoles=["users"])
            assert api.post("/adapters", json=legacy).status_code == 201
            for name in (*ADAPTERS, "legacy"):
                wait_ready(api, name, 1)
        yield g


# --- memory sessions ----------------------------------------------------------------------------


def test_one_user_cannot_hold_more_sessions_than_the_per_user_cap(gw: GatewayProcess) -> None:
    tokens = []
    for _ in range(3):
        response = initialize(gw, "caps", "alice")
        assert response.status_code == 200, response.text
        tokens.append(response.headers["mcp-session-id"])
    before = upstream_requests(gw.data_dir, "caps-0")
    refused = initialize(gw, "caps", "alice")
    message = rpc_error(refused, 429)
    assert "MCPGW_SESSION_MAX_PER_USER" in message and "3" in message
    assert "mcp-session-id" not in refused.headers
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    # the upstream's own session for the refused initialize is closed (a DELETE follows the POST)
    wait_for(lambda: upstream_requests(gw.data_dir, "caps-0") >= before + 2, timeout=10, what="upstream DELETE")
    # another user is not locked out
    assert initialize(gw, "caps", "bob").status_code == 200
    # closing a session frees a slot at once
    assert delete(gw, "caps", "alice", tokens[0]).status_code == 200
    assert initialize(gw, "caps", "alice").status_code == 200
    assert metric(gw, "mcpgw_session_limit_rejections_total", 'limit="per_user"') >= 1


def test_all_users_together_cannot_exceed_the_per_adapter_cap(gw: GatewayProcess) -> None:
    opened = sum(initialize(gw, "plain", f"user-{i}").status_code == 200 for i in range(5))
    assert opened == 5
    message = rpc_error(initialize(gw, "plain", "user-new"), 429)
    assert "MCPGW_SESSION_MAX_PER_ADAPTER" in message and "5" in message
    # the cap is per adapter: another adapter still opens sessions
    assert initialize(gw, "churn", "user-new").status_code == 200


def test_an_initialize_the_upstream_refused_opens_no_session(gw: GatewayProcess) -> None:
    for _ in range(5):  # more than the per-user cap: none of them may count
        refused = initialize(gw, "refused", "carol", **{"x-test-status": "400"})
        assert refused.status_code == 400
        assert "mcp-session-id" not in refused.headers
    for _ in range(3):
        assert initialize(gw, "refused", "carol").status_code == 200


def test_an_upstream_session_id_too_long_to_seal_is_refused_at_initialize(gw: GatewayProcess) -> None:
    response = initialize(gw, "churn", "dave", upstream_id="x" * 3200)
    message = rpc_error(response, 502)
    assert "4096" in message and "session id" in message
    assert "mcp-session-id" not in response.headers
    # the longest id that fits still works end to end
    ok = initialize(gw, "churn", "dave", upstream_id="y" * 2800)
    assert ok.status_code == 200 and len(ok.headers["mcp-session-id"]) <= 4096
    token = ok.headers["mcp-session-id"]
    headers = {**ACCEPT, "X-Dev-User-Id": "dave", "X-Dev-Roles": "users", "Mcp-Session-Id": token}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    follow = httpx.post(f"{gw.url}/adapters/churn/mcp", json=body, headers=headers, timeout=10)
    assert follow.status_code == 200
    assert follow.json()["result"]["headers"]["mcp-session-id"] == "y" * 2800


def test_sessions_of_a_killed_replica_are_dropped_when_it_goes(gw: GatewayProcess) -> None:
    for _ in range(3):
        assert initialize(gw, "doomed", "erin").status_code == 200
    assert rpc_error(initialize(gw, "doomed", "erin"), 429)
    assert metric(gw, "mcpgw_sessions_active", 'adapter="doomed"') == 3
    pid, _ = replica_processes(gw.data_dir)["doomed-0"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: metric(gw, "mcpgw_session_replica_revocations_total") >= 3, timeout=20, what="sessions revoked")
    # no longer counted: neither by this gateway's gauge nor against the user's cap
    assert metric(gw, "mcpgw_sessions_active", 'adapter="doomed"') == 0
    with gw.client() as api:
        wait_ready(api, "doomed", 1)
    assert initialize(gw, "doomed", "erin").status_code == 200


def test_the_memory_store_evicts_beyond_its_maximum_and_counts_it(tmp_path: Path) -> None:
    # no record cache: an evicted session is refused at once (else within MCPGW_SESSION_CACHE_SECONDS)
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_SESSION_MEMORY_MAX": "4", "MCPGW_SESSION_CACHE_SECONDS": "0"}
    with start_gateway(tmp_path / "data", env) as g:
        with g.client() as api:
            assert api.post("/adapters", json=recorder("small")).status_code == 201
            wait_ready(api, "small", 1)
        tokens = [initialize(g, "small", f"u{i}").headers["mcp-session-id"] for i in range(6)]
        assert metric(g, "mcpgw_session_evictions_total") == 2

        def status(i: int) -> int:
            headers = {**ACCEPT, "X-Dev-User-Id": f"u{i}", "X-Dev-Roles": "users", "Mcp-Session-Id": tokens[i]}
            body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            return httpx.post(f"{g.url}/adapters/small/mcp", json=body, headers=headers, timeout=10).status_code

        # the least recently used two are gone (404: the client initializes again); the rest route
        assert [status(i) for i in range(6)] == [404, 404, 200, 200, 200, 200]


def test_legacy_sse_sessions_count_against_the_same_caps(gw: GatewayProcess) -> None:
    headers = {"X-Dev-User-Id": "sse-user", "X-Dev-Roles": "users", "Accept": "text/event-stream"}
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(base_url=gw.url, headers=headers, timeout=10))
        streams: list[httpx.Response] = []
        readers: list[Generator[str, None, None]] = []
        for _ in range(2):
            stream = stack.enter_context(client.stream("GET", "/adapters/legacy/sse"))
            assert stream.status_code == 200
            reader = stream.iter_text()  # kept: an abandoned iterator closes the connection
            assert isinstance(reader, Generator)  # httpx iterates with a generator: close() ends it
            assert "/adapters/legacy/messages?session_id=" in next(reader)
            streams.append(stream)
            readers.append(reader)
        # two SSE sessions and one 2025-era session fill the per-user cap of 3
        identity = {"X-Dev-User-Id": "sse-user", "X-Dev-Roles": "users"}
        init = httpx.post(f"{gw.url}/adapters/legacy/mcp", json=INIT, headers={**ACCEPT, **identity}, timeout=10)
        assert init.status_code == 200
        refused = client.get("/adapters/legacy/sse")
        assert "MCPGW_SESSION_MAX_PER_USER" in rpc_error(refused, 429)

        def sse_status() -> int:
            with client.stream("GET", "/adapters/legacy/sse") as stream:
                return stream.status_code

        readers[0].close()  # the client leaves: the stream's end closes its session and frees the slot
        streams[0].close()
        wait_for(lambda: sse_status() == 200, timeout=10, what="a free slot after the stream closed")


# --- Redis sessions, two gateways -------------------------------------------------------------


def test_caps_hold_across_gateways_sharing_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_SESSIONS": "redis",
        "MCPGW_REDIS_URL": redis_server.url,
        **CAPS,
    }
    data_dir = tmp_path / "shared"
    with start_gateway(data_dir, env) as first:
        with first.client() as api:
            assert api.post("/adapters", json=recorder("shared")).status_code == 201
            wait_ready(api, "shared", 1)
        with start_gateway(data_dir, env) as second:
            with second.client() as api:
                wait_ready(api, "shared", 1)
            # twelve concurrent initializes by one user, alternating gateways: exactly the cap succeeds
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                responses = list(pool.map(lambda i: initialize((first, second)[i % 2], "shared", "zoe"), range(12)))
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] * 3 + [429] * 9, statuses
            # the per-adapter cap counts every gateway's sessions too
            assert initialize(first, "shared", "yan").status_code == 200
            assert initialize(second, "shared", "xia").status_code == 200
            assert "MCPGW_SESSION_MAX_PER_ADAPTER" in rpc_error(initialize(first, "shared", "wes"), 429)
            # a session closed on one gateway frees the slot on the other
            token = next(r.headers["mcp-session-id"] for r in responses if r.status_code == 200)
            assert delete(second, "shared", "zoe", token).status_code == 200
            assert initialize(first, "shared", "zoe").status_code == 200
            # the replica goes: its sessions stop counting on both gateways
            pid, _ = replica_processes(data_dir)["shared-0"]
            os.kill(pid, signal.SIGKILL)
            with first.client() as api:
                wait_for(
                    lambda: (
                        metric(first, "mcpgw_session_replica_revocations_total")
                        + metric(second, "mcpgw_session_replica_revocations_total")
                        >= 5
                    ),
                    timeout=20,
                    what="sessions revoked in Redis",
                )
                wait_ready(api, "shared", 1)
            with second.client() as api:  # the follower reads the leader's published state every 0.25 s
                wait_ready(api, "shared", 1)
            opened = [initialize((first, second)[i % 2], "shared", "zoe").status_code for i in range(3)]
            assert opened == [200, 200, 200]
