"""Virtual servers over MCP (issue 16): the gateway terminates MCP at /servers/{name}/mcp and /sse and
answers from its members, each called through the data plane; clients of every era against members of
every era; a dead member leaves the others listed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client import Client
from mcp.client.sse import sse_client

from tests.fixtures.gateway import GatewayProcess, example_adapter, replica_pids, start_gateway, wait_ready
from tests.fixtures.mcp_results import first_text

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_EXAMPLE_ADAPTER": "false",
        "MCPGW_SERVER_MEMBER_TIMEOUT": str(TIMEOUT),
        "MCPGW_SERVER_LIST_TTL": "0",
    }
    with start_gateway(tmp_path_factory.mktemp("servers-mcp") / "data", env) as g:
        with g.client() as api:
            assert api.post("/adapters", json=example_adapter("example", replicas=1)).status_code == 201
            conformance = example_adapter("conformance", replicas=1, imageName="conformance-server", imageVersion="1.0")
            assert api.post("/adapters", json=conformance).status_code == 201
            modern = example_adapter("modern", replicas=1, imageName="modern-only", imageVersion="1.0")
            assert api.post("/adapters", json=modern).status_code == 201
            assert api.post("/adapters", json=example_adapter("victim", replicas=1)).status_code == 201
            for name in ("example", "conformance", "modern", "victim"):
                wait_ready(api, name, 1, timeout=40)
            pair = {
                "name": "pair",
                "members": [{"adapter": "example", "prefix": "ex_"}, {"adapter": "victim", "prefix": "v_"}],
            }
            assert api.post("/servers", json=pair).status_code == 201
            duo = {
                "name": "duo",
                "members": [
                    {"adapter": "example", "prefix": "ex_", "exclude": ["get_env"]},
                    {"adapter": "conformance", "prefix": "cf_"},
                ],
            }
            assert api.post("/servers", json=duo).status_code == 201, api.get("/servers").text
            solo = {"name": "solo", "members": [{"adapter": "modern"}]}
            assert api.post("/servers", json=solo).status_code == 201
        yield g


def headers(user: str = "dev") -> dict[str, str]:
    return {"X-Dev-User-Id": user}


async def list_and_call(client: Client) -> tuple[set[str], str, str]:
    tools = {t.name for t in (await client.list_tools()).tools}
    added = await client.call_tool("ex_add", {"a": 2, "b": 3})
    echoed = await client.call_tool("cf_test_simple_text", {})
    return tools, first_text(added), first_text(echoed)


def check(result: tuple[set[str], str, str]) -> None:
    tools, added, echoed = result
    assert "ex_add" in tools and "ex_echo" in tools and "ex_get_env" not in tools
    assert "cf_test_simple_text" in tools and not any(not (t.startswith(("ex_", "cf_"))) for t in tools)
    assert added == "5"
    assert echoed


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_sdk_client_lists_prefixed_tools_and_calls_each_member(gw: GatewayProcess, mode: str) -> None:
    async def run() -> tuple[set[str], str, str]:
        async with Client(f"{gw.url}/servers/duo/mcp", mode=mode) as client:
            return await list_and_call(client)

    check(anyio.run(run))


def test_legacy_sse_client_lists_prefixed_tools_and_calls_each_member(gw: GatewayProcess) -> None:
    async def run() -> tuple[set[str], str, str]:
        async with Client(sse_client(f"{gw.url}/servers/duo/sse"), mode="legacy") as client:
            return await list_and_call(client)

    check(anyio.run(run))


@pytest.mark.parametrize("transport", ["legacy", "sse", "2026-07-28"])
def test_a_modern_only_server_through_a_single_member_server(gw: GatewayProcess, transport: str) -> None:
    """2025-era and legacy SSE clients reach a server that answers initialize with -32601."""
    direct = httpx.post(
        f"{gw.url}/adapters/modern/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert direct.json()["error"]["code"] == -32601  # the member itself refuses the 2025 handshake

    async def run() -> tuple[set[str], str]:
        if transport == "sse":
            client = Client(sse_client(f"{gw.url}/servers/solo/sse"), mode="legacy")
        else:
            client = Client(f"{gw.url}/servers/solo/mcp", mode=transport)
        async with client:
            tools = {t.name for t in (await client.list_tools()).tools}
            added = await client.call_tool("add", {"a": 40, "b": 2})
            return tools, first_text(added)

    tools, added = anyio.run(run)
    assert tools == {"add", "hello"}
    assert added == "42"


def rpc(gw: GatewayProcess, session: str, ident: int, method: str, params: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/servers/pair/mcp",
        json={"jsonrpc": "2.0", "id": ident, "method": method, "params": params},
        # JSON only: a session that takes SSE gets resumable SSE answers (tests/integration/test_servers_streams.py).
        headers={"Accept": "application/json", "Mcp-Session-Id": session},
        timeout=30,
    )


def test_a_hung_then_dead_member_leaves_the_other_listed_and_its_calls_get_an_error(gw: GatewayProcess) -> None:
    init = httpx.post(
        f"{gw.url}/servers/pair/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
        headers={"Accept": "application/json, text/event-stream"},
    )
    session = init.headers["mcp-session-id"]
    names = {t["name"] for t in rpc(gw, session, 2, "tools/list", {}).json()["result"]["tools"]}
    assert "ex_add" in names and "v_add" in names
    pid = replica_pids(gw.data_dir)["victim-0"]
    os.kill(pid, signal.SIGSTOP)  # hung: accepts connections, never answers
    try:
        started = time.monotonic()
        listed = rpc(gw, session, 3, "tools/list", {})
        elapsed = time.monotonic() - started
        assert listed.status_code == 200
        names = {t["name"] for t in listed.json()["result"]["tools"]}
        assert "ex_add" in names and not any(n.startswith("v_") for n in names)
        assert elapsed < TIMEOUT + 2.0, elapsed
    finally:
        os.kill(pid, signal.SIGKILL)
    called = rpc(gw, session, 4, "tools/call", {"name": "v_add", "arguments": {"a": 1, "b": 2}})
    assert called.status_code == 200, called.text  # a JSON-RPC error, never a 5xx
    error = called.json()["error"]
    assert "'victim'" in error["message"] and error["data"]["member"] == "victim", error
    ok = rpc(gw, session, 5, "tools/call", {"name": "ex_add", "arguments": {"a": 1, "b": 2}})
    assert ok.json()["result"]["content"][0]["text"] == "3"
    assert "Traceback" not in gw.log_text()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.fixtures.conformance import start_conformance_server

    with start_conformance_server(log_dir=tmp_path_factory.mktemp("direct")) as server:
        yield server


#: Checks that pass against the fixture directly but not through a virtual server, by scenario, and why
#: (docs/servers.md, "What does not translate"). The test fails if any other check is lost.
KNOWN_GAPS: frozenset[str] = frozenset()  # none since 2026-12-01 (server-to-client requests, streams, listen)


@pytest.mark.parametrize("requirements", ["2025-11-25", "2026-07-28"])
def test_conformance_suite_through_a_single_member_server(
    gw: GatewayProcess, direct: Any, requirements: str, tmp_path: Path
) -> None:
    from tests.fixtures.conformance import run_conformance

    with gw.client() as api:
        if api.get("/servers/conf").status_code == 404:
            body = {"name": "conf", "members": [{"adapter": "conformance"}]}
            assert api.post("/servers", json=body).status_code == 201
    straight = run_conformance(direct.mcp_url, requirements, tmp_path / "direct")
    started = time.monotonic()
    virtual = run_conformance(f"http://localhost:{gw.port}/servers/conf/mcp", requirements, tmp_path / "vs")
    elapsed = time.monotonic() - started
    missing = straight.passed() - virtual.passed()
    unexpected = sorted(check for check in missing if check[0] not in KNOWN_GAPS)
    assert not unexpected, f"checks lost through a virtual server: {unexpected}\n{virtual.summary()}"
    assert virtual.count("SUCCESS", scored_only=True) >= 40, virtual.summary()
    assert elapsed < 60, f"the suite took {elapsed:.0f}s through the virtual server (a call hangs?)"


def test_gateway_wide_mcp_serves_every_readable_adapter_prefixed(gw: GatewayProcess) -> None:
    async def run(mode: str) -> tuple[set[str], str]:
        async with Client(f"{gw.url}/mcp", mode=mode) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            added = await client.call_tool("modern_add", {"a": 1, "b": 1})
            return tools, first_text(added)

    for mode in ("legacy", "2026-07-28"):
        tools, added = anyio.run(run, mode)
        assert {"example_add", "conformance_test_simple_text", "modern_hello"} <= tools  # victim may be restarting
        assert added == "2"
    # Another user reads none of dev's adapters: an empty listing, not an error.
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
    other = httpx.post(f"{gw.url}/mcp", json=init, headers={**MODERN_HEADERS, "X-Dev-User-Id": "mallory"})
    assert other.status_code == 200 and other.json()["result"]["tools"] == []


META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
MODERN_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/list",
}


def test_a_server_member_nobody_else_may_read_is_not_listed_for_them(gw: GatewayProcess) -> None:
    """A server readable by a role does not lend its members: each member needs the caller's own read access."""
    with gw.client() as api:
        body = {"name": "lent", "requiredRoles": ["team"], "members": [{"adapter": "example", "prefix": "ex_"}]}
        assert api.post("/servers", json=body).status_code == 201
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
    teammate = httpx.post(
        f"{gw.url}/servers/lent/mcp",
        json=request,
        headers={**MODERN_HEADERS, "X-Dev-User-Id": "tm", "X-Dev-Roles": "team"},
    )
    assert teammate.status_code == 200 and teammate.json()["result"]["tools"] == []
    outsider = httpx.post(f"{gw.url}/servers/lent/mcp", json=request, headers={**MODERN_HEADERS, "X-Dev-User-Id": "x"})
    assert outsider.status_code == 403


MCP1_PYTHON = Path(__file__).resolve().parents[2] / ".tools" / "mcp1-venv" / "bin" / "python"
MCP1_CLIENT = Path(__file__).resolve().parents[1] / "fixtures" / "mcp1_client.py"


@pytest.mark.parametrize("transport", ["streamable", "sse"])
def test_an_mcp_1x_client_lists_prefixed_tools_and_calls_each_member(gw: GatewayProcess, transport: str) -> None:
    """The last 1.x release of the SDK (scripts/test.sh installs it into .tools/mcp1-venv)."""
    import json
    import subprocess

    assert MCP1_PYTHON.exists(), "run scripts/test.sh (it creates .tools/mcp1-venv with mcp 1.x)"
    route = "sse" if transport == "sse" else "mcp"
    argv = [
        str(MCP1_PYTHON),
        str(MCP1_CLIENT),
        f"{gw.url}/servers/duo/{route}",
    ]
    argv += [transport, "ex_add", '{"a": 2, "b": 3}', "cf_test_simple_text", "{}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "ex_add" in out["tools"] and "cf_test_simple_text" in out["tools"]
    assert out["calls"]["ex_add"] == "5" and out["calls"]["cf_test_simple_text"]


@pytest.mark.parametrize("route", ["mcp", "sse"])
def test_the_inspector_cli_lists_prefixed_tools_and_calls_each_member(gw: GatewayProcess, route: str) -> None:
    from tests.fixtures.conformance import run_inspector

    url = f"{gw.url}/servers/duo/{route}"
    names = {t["name"] for t in run_inspector(url, "tools/list")["tools"]}
    assert {"ex_add", "cf_test_simple_text"} <= names
    added = run_inspector(url, "tools/call", "--tool-name", "ex_add", "--tool-arg", "a=2", "--tool-arg", "b=40")
    assert added["content"][0]["text"] == "42"
    text = run_inspector(url, "tools/call", "--tool-name", "cf_test_simple_text")
    assert text["content"][0]["text"]


def test_malformed_requests_get_json_rpc_errors_never_a_5xx(gw: GatewayProcess) -> None:
    url = f"{gw.url}/servers/duo/mcp"
    accept = {"Accept": "application/json, text/event-stream"}
    # The error answers the request's id once the body was read (issue 17); a batch, a body that is not
    # JSON and errors found before the body is read (unknown server, forged legacy session) say null.
    cases = [
        (httpx.post(url, content=b"{not json", headers=accept), 400, -32700, None),
        (httpx.post(url, json=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}], headers=accept), 400, -32600, None),
        (httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=accept), 400, -32600, 1),
        (httpx.post(url, json={"jsonrpc": "2.0", "id": "no-method"}, headers=accept), 400, -32600, "no-method"),
        (
            httpx.post(url, json={"id": 1, "method": "ping"}, headers={**accept, "Mcp-Session-Id": "forged"}),
            404,
            -32001,
            1,
        ),
        (
            httpx.post(f"{gw.url}/servers/nope/mcp", json={"id": 1, "method": "ping"}, headers=accept),
            404,
            -32601,
            None,
        ),
        (
            httpx.post(f"{gw.url}/servers/duo/messages?session_id=forged", json={"id": 1}, headers=accept),
            404,
            -32001,
            None,
        ),
        (httpx.get(url, headers=accept), 405, -32600, None),
        (httpx.post(url, content=b"[" * (5 * 1024 * 1024), headers=accept), 413, -32600, None),
    ]
    for response, status, code, ident in cases:
        assert response.status_code == status, (status, response.text[:200])
        assert response.json()["error"]["code"] == code
        assert response.json()["id"] == ident, (status, response.text[:200])
    # Another user's session id is not theirs to use.
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    session = httpx.post(url, json=init, headers=accept).headers["mcp-session-id"]
    stolen = httpx.post(
        url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers={**accept, "Mcp-Session-Id": session, "X-Dev-User-Id": "mallory"},
    )
    assert stolen.status_code in (403, 404)
    assert "Traceback" not in gw.log_text()
