"""Virtual servers and the member adapters' policy stages (issues 15 and 16, "Checked by": ``tools/list``
through a virtual server for a caller without the role omits the member's policy-denied tools).

Through ``/servers/{name}/mcp`` and the gateway-wide ``/mcp``, with the ``mcp`` SDK client in both eras:
a member's ``toolPolicy`` hides and refuses its tools per caller, a refused call never reaches the
member's replica (a recording upstream counts what arrives) and is audited as denied
(``MCPGW_AUDIT=file:PATH``), and a member's ``rateLimits`` hold for calls made through the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.fixtures.gateway import (
    GatewayProcess,
    example_adapter,
    replica_processes,
    start_gateway,
    wait_audit,
    wait_ready,
)

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
POLICY = [{"tools": ["add"], "roles": ["calc.user"]}, {"tools": ["whoami"], "roles": ["*"]}]
READERS: dict[str, Any] = {"requiredRoles": ["calc.reader"]}
ALICE = {"X-Dev-User-Id": "alice", "X-Dev-Roles": "calc.reader,calc.user"}
BOB = {"X-Dev-User-Id": "bob", "X-Dev-Roles": "calc.reader"}
TOOL_DENIED, RATE_LIMITED = -32006, -32007
MODES = ["legacy", "2026-07-28"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("servers-policy")
    env = {
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_EXAMPLE_ADAPTER": "false",
        "MCPGW_SERVER_LIST_TTL": "0",
        "MCPGW_AUDIT": f"file:{root / 'audit.jsonl'}",
    }
    with start_gateway(root / "data", env) as g:
        with g.client() as api:
            limit = [{"per": "user", "tools": ["add"], "requests": 2, "seconds": 60}]
            one = [{"per": "user", "requests": 1, "seconds": 60}]  # every request counts, the handshake too
            for body in (
                example_adapter("calc", replicas=1, toolPolicy=POLICY, **READERS),
                example_adapter("rec", imageName="recorder", imageVersion="1.0", toolPolicy=POLICY, **READERS),
                example_adapter("lim", replicas=1, rateLimits=limit, **READERS),
                example_adapter("tight", replicas=1, rateLimits=one, **READERS),
            ):
                created = api.post("/adapters", json=body)
                assert created.status_code == 201, created.text
            for name in ("calc", "rec", "lim", "tight"):
                wait_ready(api, name, 1, timeout=40)
            team = {
                "name": "team",
                **READERS,
                "members": [
                    {"adapter": "calc", "prefix": "c_"},
                    {"adapter": "rec", "prefix": "r_"},
                    {"adapter": "lim", "prefix": "l_"},
                ],
            }
            assert api.post("/servers", json=team).status_code == 201
            solo = {"name": "solo", **READERS, "members": [{"adapter": "tight"}]}
            assert api.post("/servers", json=solo).status_code == 201
        yield g


def client(gw: GatewayProcess, path: str, mode: str, headers: dict[str, str]) -> Client:
    transport = streamable_http_client(f"{gw.url}{path}", http_client=create_mcp_http_client(headers))
    return Client(transport, mode=mode)


def recorder_requests(gw: GatewayProcess) -> int:
    _, port = replica_processes(gw.data_dir)["rec-0"]
    count: int = httpx.get(f"http://127.0.0.1:{port}/stats").json()["requests"]
    return count


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("path", "prefix"), [("/servers/team/mcp", "c_"), ("/mcp", "calc_")])
def test_listing_omits_policy_denied_tools_and_a_denied_call_gets_the_error(
    gw: GatewayProcess, path: str, prefix: str, mode: str
) -> None:
    async def run(headers: dict[str, str]) -> tuple[set[str], Any]:
        async with client(gw, path, mode, headers) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            try:
                result: Any = await c.call_tool(f"{prefix}add", {"a": 2, "b": 3})
            except MCPError as exc:
                result = exc
            return names, result

    names, added = anyio.run(run, ALICE)
    assert f"{prefix}add" in names and f"{prefix}whoami" in names and f"{prefix}get_env" not in names
    assert not isinstance(added, MCPError) and added.content[0].text == "5"
    names, refused = anyio.run(run, BOB)
    assert f"{prefix}add" not in names and f"{prefix}whoami" in names, names
    assert isinstance(refused, MCPError), refused  # a JSON-RPC error from the member's data plane
    assert refused.error.code == TOOL_DENIED and "add" in refused.error.message
    assert refused.error.data["member"] == "calc" and refused.error.data["tool"] == "add"
    record = wait_audit(gw, event="tools/call", outcome="denied", user="bob", adapter="calc", tool="add")
    assert record["status"] == 403 and record["roles"] == ["calc.reader"]
    wait_audit(gw, event="tools/call", outcome="allowed", user="alice", adapter="calc", tool="add")
    assert "Traceback" not in gw.log_text()


class Raw:
    """A bare JSON-RPC client of /servers/team/mcp (the recorder's answers are no CallToolResult)."""

    def __init__(self, gw: GatewayProcess, mode: str, headers: dict[str, str], server: str = "team") -> None:
        self.url = f"{gw.url}/servers/{server}/mcp"
        self.modern = mode == "2026-07-28"
        self.headers = {"Accept": "application/json, text/event-stream", **headers}
        if self.modern:
            self.headers["MCP-Protocol-Version"] = "2026-07-28"
        else:
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            opened = httpx.post(self.url, json=self.rpc(0, "initialize", init), headers=self.headers)
            self.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
            self.headers["Accept"] = "application/json"  # a session taking SSE gets SSE answers (streams.py)

    def rpc(self, ident: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.modern:
            meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
            params = {**params, "_meta": {**meta, "io.modelcontextprotocol/clientCapabilities": {}}}
        return {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}

    def call(self, ident: int, tool: str) -> httpx.Response:
        extra = {"Mcp-Method": "tools/call", "Mcp-Name": tool} if self.modern else {}
        body = self.rpc(ident, "tools/call", {"name": tool, "arguments": {}})
        return httpx.post(self.url, json=body, headers={**self.headers, **extra}, timeout=30)


@pytest.mark.parametrize("mode", MODES)
def test_a_denied_call_through_a_server_never_reaches_the_member_replica(gw: GatewayProcess, mode: str) -> None:
    bob = Raw(gw, mode, BOB)
    assert "result" in bob.call(1, "r_whoami").json()  # the member's era is known, its session (if any) open
    before = recorder_requests(gw)
    refused = bob.call(2, "r_add")
    assert refused.status_code < 500, refused.text
    error = refused.json()["error"]
    assert error["code"] == TOOL_DENIED and error["data"]["member"] == "rec", error
    assert recorder_requests(gw) == before, "the denied call reached the member's replica"
    alice = Raw(gw, mode, ALICE)
    assert "result" in alice.call(1, "r_whoami").json()
    before = recorder_requests(gw)
    assert "result" in alice.call(2, "r_add").json()
    assert recorder_requests(gw) == before + 1  # the same call, allowed, does reach it
    record = wait_audit(gw, event="tools/call", outcome="denied", user="bob", adapter="rec", tool="add")
    assert record["status"] == 403


def test_a_member_rate_limit_holds_through_the_server(gw: GatewayProcess) -> None:
    """``lim`` allows each user 2 ``add`` calls a minute, however they reach it."""

    async def run(path: str, tool: str, headers: dict[str, str]) -> Any:
        async with client(gw, path, "2026-07-28", headers) as c:
            try:
                return await c.call_tool(tool, {"a": 1, "b": 1})
            except MCPError as exc:
                return exc

    carol = {"X-Dev-User-Id": "carol", "X-Dev-Roles": "calc.reader"}
    first = anyio.run(run, "/servers/team/mcp", "l_add", carol)
    second = anyio.run(run, "/mcp", "lim_add", carol)  # the same budget through the gateway-wide endpoint
    assert not isinstance(first, MCPError) and not isinstance(second, MCPError), (first, second)
    refused = anyio.run(run, "/servers/team/mcp", "l_add", carol)
    assert isinstance(refused, MCPError), refused
    assert refused.error.code == RATE_LIMITED and refused.error.data["limit"] == "rateLimits[0]"
    assert refused.error.data["member"] == "lim"
    direct = httpx.post(
        f"{gw.url}/adapters/lim/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {}}},
        headers={"Accept": "application/json, text/event-stream", **carol},
    )
    assert direct.status_code == 429  # the budget spent through the server is the direct one
    other = anyio.run(run, "/servers/team/mcp", "l_add", {**carol, "X-Dev-User-Id": "dave"})
    assert not isinstance(other, MCPError), other  # per user
    record = wait_audit(gw, event="tools/call", outcome="limited", user="carol", adapter="lim", tool="add")
    assert record["limit"] == "rateLimits[0]"


def test_a_member_handshake_over_the_limit_is_relayed_not_taken_for_another_era(gw: GatewayProcess) -> None:
    """``tight`` allows each user one request a minute (every request counts). Frank spends his directly;
    then his session-era client's call through ``solo`` must open the member's session, and that
    ``initialize`` is refused: he gets the limit's -32007, not "member unavailable" (before 2026-11-30
    the refusal was taken for "the member does not speak 2025", the other era was probed, and the
    client got -32003)."""
    frank = {"X-Dev-User-Id": "frank", "X-Dev-Roles": "calc.reader"}
    spend = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {}}}
    accept = {"Accept": "application/json, text/event-stream"}
    httpx.post(f"{gw.url}/adapters/tight/mcp", json=spend, headers={**accept, **frank})
    refused = Raw(gw, "legacy", frank, server="solo").call(1, "add")
    assert refused.status_code < 500, refused.text
    error = refused.json()["error"]
    assert error["code"] == RATE_LIMITED and "rate limit rateLimits[0]" in error["message"], error
    assert error["data"]["limit"] == "rateLimits[0]" and error["data"]["member"] == "tight", error
    # Another user's first call through the server is the handshake (their one request): refused alike.
    grace = Raw(gw, "legacy", {"X-Dev-User-Id": "grace", "X-Dev-Roles": "calc.reader"}, server="solo")
    error = grace.call(1, "add").json()["error"]
    assert error["code"] == RATE_LIMITED and error["data"]["member"] == "tight", error
    assert "Traceback" not in gw.log_text()
