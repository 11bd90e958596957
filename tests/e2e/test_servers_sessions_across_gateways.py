"""Virtual-server sessions across gateways: two gateway processes sharing a data dir (so the session
key and the SQLite store) and one Redis, as replicas behind a load balancer that is not sticky.

Observed on main before this: a 2025-era session of ``/servers/{name}/mcp`` or ``/mcp`` lived in one
process' dict, so its next request on the other gateway got 404 "session not found" and a DELETE
there ended nothing. Now its id is sealed (kind ``vmcp``) and recorded in the shared store.

The gateways trust a record they read for ``MCPGW_SESSION_CACHE_SECONDS`` (default 5); the test sets
0 so that "DELETE through B, then the next request through A" is exact rather than eventual.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready
from tests.fixtures.mcp_results import first_text
from tests.fixtures.redis import RedisServer

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream"}
INIT: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server_session: RedisServer,
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Gateways A and B over one data dir and one Redis, with server ``duo`` over the example adapter."""
    env = {
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_EXAMPLE_ADAPTER": "false",
        "MCPGW_SESSIONS": "redis",
        "MCPGW_REDIS_URL": redis_server_session.url,
        "MCPGW_REDIS_KEY_PREFIX": f"vsess-{os.urandom(4).hex()}:",
        "MCPGW_SESSION_CACHE_SECONDS": "0",
        "MCPGW_SERVER_LIST_TTL": "0",
    }
    data_dir = tmp_path_factory.mktemp("vsess") / "shared"
    with start_gateway(data_dir, env) as first:
        with first.client() as api:
            assert api.post("/adapters", json=example_adapter("example", requiredRoles=["users"])).status_code == 201
            wait_ready(api, "example", 1, timeout=40)
            duo = {"name": "duo", "requiredRoles": ["users"], "members": [{"adapter": "example", "prefix": "ex_"}]}
            assert api.post("/servers", json=duo).status_code == 201
            assert api.post("/servers", json={**duo, "name": "other"}).status_code == 201
        with start_gateway(data_dir, env) as second:
            with second.client() as api:
                wait_ready(api, "example", 1, timeout=40)
            yield first, second


class NotSticky(httpx2.AsyncBaseTransport):
    """A load balancer that is not sticky: each request goes to the next gateway in turn."""

    def __init__(self, gateways: tuple[GatewayProcess, ...]) -> None:
        self._ports = [g.port for g in gateways]
        self._turn = 0
        self._inner = httpx2.AsyncHTTPTransport()
        self.seen: list[tuple[str, int, int, str | None]] = []  # method, port, status, session id sent

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self._ports[self._turn % len(self._ports)]
        self._turn += 1
        request.url = request.url.copy_with(port=port)
        response = await self._inner.handle_async_request(request)
        self.seen.append((request.method, port, response.status_code, request.headers.get("mcp-session-id")))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def post(gw: GatewayProcess, path: str, session: str, ident: int, method: str, user: str = "dev") -> httpx.Response:
    params: dict[str, Any] = {"name": "ex_add", "arguments": {"a": ident, "b": 1}} if method == "tools/call" else {}
    return httpx.post(
        f"{gw.url}{path}",
        json={"jsonrpc": "2.0", "id": ident, "method": method, "params": params},
        # JSON only: a session that takes SSE gets resumable SSE answers (gateway/servers/streams.py).
        headers={
            "Accept": "application/json",
            "Mcp-Session-Id": session,
            "X-Dev-User-Id": user,
            "X-Dev-Roles": "users",
        },
        timeout=30,
    )


def test_sdk_client_session_moves_between_gateways_behind_a_balancer_that_is_not_sticky(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = pair
    balancer = NotSticky((first, second))

    async def run() -> tuple[set[str], list[str]]:
        http = httpx2.AsyncClient(transport=balancer, headers={"X-Dev-User-Id": "dev"}, timeout=30)
        async with (
            http,
            Client(streamable_http_client(f"{first.url}/servers/duo/mcp", http_client=http), mode="legacy") as client,
        ):
            tools = {t.name for t in (await client.list_tools()).tools}
            sums = []
            for a in range(4):
                result = await client.call_tool("ex_add", {"a": a, "b": 10})
                sums.append(first_text(result))
            return tools, sums

    tools, sums = anyio.run(run)
    assert "ex_add" in tools
    assert sums == ["10", "11", "12", "13"]
    posts = [(port, status, sid) for method, port, status, sid in balancer.seen if method == "POST"]
    initialize = posts[0]
    assert initialize[0] == first.port and initialize[2] is None  # opened on A
    later = posts[1:]
    assert {port for port, _, _ in later} == {first.port, second.port}, balancer.seen  # used on both
    assert all(status in (200, 202) for _, status, _ in later), balancer.seen
    assert len({sid for _, _, sid in later}) == 1  # one session throughout
    deletes = [status for method, _, status, _ in balancer.seen if method == "DELETE"]
    assert deletes == [200], balancer.seen  # closed by whichever gateway the DELETE reached


def test_session_opened_on_a_serves_on_b_refuses_another_user_and_delete_on_b_ends_it_on_a(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = pair
    for path in ("/servers/duo/mcp", "/mcp"):
        opened = httpx.post(f"{first.url}{path}", json=INIT, headers=ACCEPT, timeout=30)
        assert opened.status_code == 200, opened.text
        assert opened.json()["result"]["protocolVersion"] == "2025-11-25"
        session = opened.headers["mcp-session-id"]
        assert session.startswith("g1.")  # sealed, not a per-process key
        name = "ex_add" if path != "/mcp" else "example_add"
        listed = post(second, path, session, 2, "tools/list").json()["result"]["tools"]
        assert name in {t["name"] for t in listed}
        if path == "/servers/duo/mcp":
            assert post(second, path, session, 3, "tools/call").json()["result"]["content"][0]["text"] == "4"
            assert post(first, path, session, 4, "tools/call").json()["result"]["content"][0]["text"] == "5"
            assert post(second, path, session, 5, "tools/call").json()["result"]["content"][0]["text"] == "6"
        # another user who may use the server but holds this id gets 404 on either gateway
        for gw in (first, second):
            stolen = post(gw, path, session, 6, "tools/list", user="mallory")
            assert stolen.status_code == 404 and stolen.json()["error"]["code"] == -32001
        assert post(first, path, session, 7, "ping").status_code == 200  # still the owner's
        ended = httpx.delete(f"{second.url}{path}", headers={"Mcp-Session-Id": session}, timeout=30)
        assert ended.status_code == 200
        for gw in (first, second):
            gone = post(gw, path, session, 8, "tools/list")
            assert gone.status_code == 404, gone.text
            assert gone.json()["error"]["code"] == -32001
        again = httpx.delete(f"{first.url}{path}", headers={"Mcp-Session-Id": session}, timeout=30)
        assert again.status_code == 404
    for gw in pair:
        assert "Traceback" not in gw.log_text()


def test_legacy_sse_message_on_the_other_gateway_gets_a_json_rpc_error(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """Legacy HTTP+SSE keeps its stream on one gateway: a /messages post sent elsewhere is a clear 404."""
    first, second = pair
    with httpx.stream("GET", f"{first.url}/servers/duo/sse", headers=ACCEPT, timeout=30) as stream:
        endpoint = ""
        lines = stream.iter_lines()  # held: a dropped iterator closes the stream (the session with it)
        for line in lines:
            if line.startswith("data: "):
                endpoint = line[len("data: ") :]
                break
        assert endpoint.startswith("/servers/duo/messages?session_id=")
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        elsewhere = httpx.post(f"{second.url}{endpoint}", json=ping, timeout=30)
        assert elsewhere.status_code == 404
        error = elsewhere.json()["error"]
        assert error["code"] == -32001 and "gateway" in error["message"]
        here = httpx.post(f"{first.url}{endpoint}", json=ping, timeout=30)
        assert here.status_code == 202, here.text


def test_deleting_a_server_ends_its_sessions_even_when_a_server_of_that_name_returns(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = pair
    spec = {"name": "brief", "requiredRoles": ["users"], "members": [{"adapter": "example", "prefix": "ex_"}]}
    with first.client() as api:
        assert api.post("/servers", json=spec).status_code == 201
    opened = httpx.post(f"{first.url}/servers/brief/mcp", json=INIT, headers=ACCEPT, timeout=30)
    session = opened.headers["mcp-session-id"]
    assert post(first, "/servers/brief/mcp", session, 2, "tools/call").status_code == 200
    with second.client() as api:
        assert api.delete("/servers/brief").status_code == 204
        assert api.post("/servers", json=spec).status_code == 201
    for gw in (first, second):
        gone = post(gw, "/servers/brief/mcp", session, 3, "tools/list")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == -32001, gone.text


def test_a_session_rebuilt_on_b_declares_the_clients_capabilities_and_relays_there(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """The client's sampling/elicitation/roots capabilities ride in the sealed id (2026-12-01), so a
    gateway that rebuilds the session declares them to its own member session. The relayed request's
    id is sealed too: an answer the balancer sends to the other gateway is passed on from there —
    only on the session it was relayed on."""
    import json

    first, second = pair
    with first.client() as api:
        if api.get("/adapters/asking").status_code == 404:
            asking = example_adapter("asking", imageName="asking-legacy", imageVersion="1.0", requiredRoles=["users"])
            assert api.post("/adapters", json=asking).status_code == 201
            body = {"name": "asks", "requiredRoles": ["users"], "members": [{"adapter": "asking"}]}
            assert api.post("/servers", json=body).status_code == 201
        wait_ready(api, "asking", 1, timeout=40)
    with second.client() as api:
        wait_ready(api, "asking", 1, timeout=40)
    init = {**INIT, "params": {**INIT["params"], "capabilities": {"sampling": {}, "roots": {"listChanged": True}}}}
    opened = httpx.post(f"{first.url}/servers/asks/mcp", json=init, headers=ACCEPT, timeout=30)
    headers = {**ACCEPT, "Mcp-Session-Id": opened.headers["mcp-session-id"], "X-Dev-User-Id": "dev"}
    headers["X-Dev-Roles"] = "users"

    def call(gw: GatewayProcess, ident: int, arguments: dict[str, Any], name: str) -> httpx.Response:
        params = {"name": name, "arguments": arguments}
        message = {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}
        json_only = {**headers, "Accept": "application/json"}  # one JSON body, not a resumable SSE answer
        return httpx.post(f"{gw.url}/servers/asks/mcp", json=message, headers=json_only, timeout=30)

    def events(lines: Iterator[str]) -> Iterator[Any]:  # the SSE answer's messages (not its priming event)
        return (json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip())

    # B's adapter view follows the store (about a second behind a create on A): until it has the member,
    # the server has no tool of that name there.
    deadline = time.monotonic() + 30
    while "result" not in (probe := call(second, 2, {}, "capabilities")).json() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "result" in probe.json(), probe.text
    declared = probe.json()["result"]["content"][0]["text"]
    assert json.loads(declared) == {"roots": {}, "sampling": {}}, probe.text  # B rebuilt the context from the seal
    message = {"jsonrpc": "2.0", "id": 3, "method": "tools/call"}
    message["params"] = {"name": "ask", "arguments": {"method": "sampling/createMessage"}}
    sampled = {"role": "assistant", "content": {"type": "text", "text": "four"}, "model": "m"}
    with httpx.stream("POST", f"{second.url}/servers/asks/mcp", json=message, headers=headers, timeout=30) as stream:
        messages = events(stream.iter_lines())
        request = next(messages)
        assert request["method"] == "sampling/createMessage"
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": sampled}
        other = httpx.post(f"{first.url}/servers/asks/mcp", json=init, headers=ACCEPT, timeout=30)
        foreign = {**headers, "Mcp-Session-Id": other.headers["mcp-session-id"]}  # same user, another session
        refused = httpx.post(f"{first.url}/servers/asks/mcp", json=answer, headers=foreign, timeout=30)
        assert refused.status_code == 400 and request["id"][:40] in refused.json()["error"]["message"], refused.text
        forwarded = httpx.post(f"{first.url}/servers/asks/mcp", json=answer, headers=headers, timeout=30)
        assert forwarded.status_code == 202, forwarded.text  # A passes it on to B's member session
        result = next(messages)
    assert json.loads(result["result"]["content"][0]["text"]) == {"result": sampled}
    late = httpx.post(f"{second.url}/servers/asks/mcp", json=answer, headers=headers, timeout=30)
    assert late.status_code == 400, late.text  # B relayed it and its call is over
