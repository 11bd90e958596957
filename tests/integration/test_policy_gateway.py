"""Per-tool authorization, rate limits and the audit trail through a real gateway (issue 15, "Checked by").

Callers with and without the role, in each era: the ``mcp`` SDK client stateless (2026-07-28), with
a session (2025-11-25) and its legacy SSE client. A recording upstream (tests/upstreams/recorder.py)
proves a denied call never arrived. Every case leaves an audit line (MCPGW_AUDIT=file:PATH).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client
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
from tests.fixtures.mcp_results import first_text

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
POLICY = [{"tools": ["add", "echo*"], "roles": ["calc.user"]}, {"tools": ["whoami"], "roles": ["*"]}]
ALICE = {"X-Dev-User-Id": "alice", "X-Dev-Roles": "calc.reader,calc.user"}
BOB = {"X-Dev-User-Id": "bob", "X-Dev-Roles": "calc.reader"}
ADMIN = {"X-Dev-User-Id": "root", "X-Dev-Roles": "mcp.admin"}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN = {**ACCEPT, "MCP-Protocol-Version": "2026-07-28"}
TOOL_DENIED, RATE_LIMITED, HEADER_MISMATCH = -32006, -32007, -32020


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("policy")
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_AUDIT": f"file:{root / 'audit.jsonl'}"}
    with start_gateway(root / "data", env) as g:
        with g.client() as api:
            readers: dict[str, Any] = {"requiredRoles": ["calc.reader"]}
            for body in (
                example_adapter("calc", replicas=1, toolPolicy=POLICY, **readers),
                example_adapter("rec", imageName="recorder", imageVersion="1.0", toolPolicy=POLICY, **readers),
                example_adapter("lim", rateLimits=[{"per": "user", "requests": 3, "seconds": 60}], **readers),
            ):
                created = api.post("/adapters", json=body)
                assert created.status_code == 201, created.text
            for name in ("calc", "rec", "lim"):
                wait_ready(api, name, 1, timeout=40)
        yield g


def client(gw: GatewayProcess, era: str, headers: dict[str, str]) -> Client:
    if era == "legacy-sse":
        return Client(sse_client(f"{gw.url}/adapters/calc/sse", headers=headers), mode="legacy")
    transport = streamable_http_client(f"{gw.url}/adapters/calc/mcp", http_client=create_mcp_http_client(headers))
    return Client(transport, mode="2026-07-28" if era == "stateless" else "legacy")


ERAS = ["stateless", "session", "legacy-sse"]


@pytest.mark.parametrize("era", ERAS)
def test_tools_list_shows_exactly_the_visible_tools(gw: GatewayProcess, era: str) -> None:
    async def names(headers: dict[str, str]) -> list[str]:
        async with client(gw, era, headers) as c:
            return sorted(t.name for t in (await c.list_tools()).tools)

    assert anyio.run(names, ALICE) == ["add", "echo", "whoami"]
    assert anyio.run(names, BOB) == ["whoami"]
    assert anyio.run(names, ADMIN) == ["add", "echo", "get_env", "whoami"]


@pytest.mark.parametrize("era", ERAS)
def test_denied_call_gets_the_error_and_an_allowed_one_works(gw: GatewayProcess, era: str) -> None:
    async def run() -> None:
        async with client(gw, era, BOB) as c:
            with pytest.raises(MCPError) as denied:
                await c.call_tool("add", {"a": 1, "b": 2})
            assert denied.value.error.code == TOOL_DENIED and "add" in denied.value.error.message
            assert not (await c.call_tool("whoami", {})).is_error
        async with client(gw, era, ALICE) as c:
            result = await c.call_tool("add", {"a": 1, "b": 2})
            assert not result.is_error and "3" in first_text(result)

    anyio.run(run)
    record = wait_audit(gw, event="tools/call", outcome="denied", user="bob", adapter="calc", tool="add")
    assert record["roles"] == ["calc.reader"] and record["status"] == 403
    allowed = wait_audit(gw, event="tools/call", outcome="allowed", user="alice", adapter="calc", tool="add")
    assert allowed["status"] in (200, 202) and allowed["latency_ms"] >= 0


def recorder_requests(gw: GatewayProcess) -> int:
    _, port = replica_processes(gw.data_dir)["rec-0"]
    count: int = httpx.get(f"http://127.0.0.1:{port}/stats").json()["requests"]
    return count


def call(ident: Any, tool: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


def modern_call(ident: Any, tool: str) -> dict[str, Any]:
    """A 2026-07-28 stateless tools/call the example server accepts."""
    body = call(ident, tool)
    body["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    }
    return body


def test_denied_call_never_reaches_the_upstream(gw: GatewayProcess) -> None:
    before = recorder_requests(gw)
    response = httpx.post(f"{gw.url}/adapters/rec/mcp", json=call("c1", "add"), headers={**MODERN, **BOB})
    assert response.status_code == 403
    body = response.json()
    assert body["id"] == "c1" and body["error"]["code"] == TOOL_DENIED
    assert recorder_requests(gw) == before
    allowed = httpx.post(f"{gw.url}/adapters/rec/mcp", json=call("c2", "whoami"), headers={**MODERN, **BOB})
    assert allowed.status_code == 200 and recorder_requests(gw) == before + 1


def test_mcp_name_disagreeing_with_the_body_is_400(gw: GatewayProcess) -> None:
    before = recorder_requests(gw)
    headers = {**MODERN, **ALICE, "Mcp-Method": "tools/call", "Mcp-Name": "add"}
    response = httpx.post(f"{gw.url}/adapters/rec/mcp", json=call(1, "get_env"), headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == HEADER_MISMATCH
    assert recorder_requests(gw) == before


def test_batch_mixing_allowed_and_denied_calls(gw: GatewayProcess) -> None:
    before = recorder_requests(gw)
    batch = [call(1, "whoami"), call(2, "add")]
    response = httpx.post(f"{gw.url}/adapters/rec/mcp", json=batch, headers={**ACCEPT, **BOB})
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 2
    denied = [a for a in answers if "error" in a]
    assert len(denied) == 1 and denied[0]["id"] == 2 and denied[0]["error"]["code"] == TOOL_DENIED
    forwarded = next(a for a in answers if "result" in a)["result"]
    assert forwarded["bodyLength"] == len(json.dumps([call(1, "whoami")], separators=(",", ":")))
    assert recorder_requests(gw) == before + 1


def test_rate_limit_gives_429_with_retry_after_naming_the_limit(gw: GatewayProcess) -> None:
    url = f"{gw.url}/adapters/lim/mcp"
    headers = {**MODERN, "X-Dev-User-Id": "carol", "X-Dev-Roles": "calc.reader"}
    headers |= {"Mcp-Method": "tools/call", "Mcp-Name": "whoami"}
    statuses = [httpx.post(url, json=modern_call(i, "whoami"), headers=headers).status_code for i in range(3)]
    assert statuses == [200, 200, 200]
    refused = httpx.post(url, json=modern_call(9, "whoami"), headers=headers)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    error = refused.json()
    assert error["id"] == 9 and error["error"]["code"] == RATE_LIMITED
    assert error["error"]["data"]["limit"] == "rateLimits[0]"
    # another user has their own budget
    other = {**headers, "X-Dev-User-Id": "dave"}
    assert httpx.post(url, json=modern_call(1, "whoami"), headers=other).status_code == 200
    record = wait_audit(gw, event="tools/call", outcome="limited", user="carol", adapter="lim")
    assert record["limit"] == "rateLimits[0]" and record["status"] == 429


def test_sessions_start_and_end_are_audited(gw: GatewayProcess) -> None:
    async def run() -> None:
        async with client(gw, "session", {"X-Dev-User-Id": "erin", "X-Dev-Roles": "calc.reader"}) as c:
            await c.call_tool("whoami", {})

    anyio.run(run)
    wait_audit(gw, event="session.start", user="erin", adapter="calc")
    wait_audit(gw, event="session.end", user="erin", adapter="calc")


def test_control_plane_update_records_field_names_but_no_env_values(gw: GatewayProcess) -> None:
    with gw.client() as api:
        body = example_adapter("audited", replicas=0, environmentVariables={"API_KEY": "s3cr3t-value"})
        assert api.post("/adapters", json=body).status_code == 201
        body["environmentVariables"] = {"API_KEY": "other-s3cr3t", "REGION": "eu"}
        body["toolPolicy"] = POLICY
        assert api.put("/adapters/audited", json=body).status_code == 200
        assert api.delete("/adapters/audited").status_code == 204
    created = wait_audit(gw, event="adapter.create", adapter="audited")
    updated = wait_audit(gw, event="adapter.update", adapter="audited")
    wait_audit(gw, event="adapter.delete", adapter="audited")
    assert "environmentVariables.API_KEY" in created["changed"] and created["user"] == "dev"
    assert updated["changed"] == ["environmentVariables.API_KEY", "environmentVariables.REGION", "toolPolicy"]
    text = (gw.data_dir.parent / "audit.jsonl").read_text()
    assert "s3cr3t" not in text and '"eu"' not in text


def test_denials_limits_and_audit_are_counted_in_metrics(gw: GatewayProcess) -> None:
    httpx.post(f"{gw.url}/adapters/rec/mcp", json=call("m1", "add"), headers={**MODERN, **BOB})
    text = httpx.get(f"{gw.url}/metrics").text
    denials = [line for line in text.splitlines() if line.startswith("mcpgw_tool_denials") and 'adapter="rec"' in line]
    assert denials and float(denials[0].rsplit(" ", 1)[1]) >= 1, text[-2000:]
    assert 'mcpgw_audit_records_total{result="dropped"} 0' in text.replace(".0", "")
    assert "mcpgw_rate_limited" in text and "mcpgw_sse_keepalives" in text


def test_audit_records_carry_request_and_trace_ids(gw: GatewayProcess) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**MODERN, **BOB, "X-Request-Id": "req-42", "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    assert httpx.post(f"{gw.url}/adapters/rec/mcp", json=call("t1", "add"), headers=headers).status_code == 403
    record = wait_audit(gw, event="tools/call", outcome="denied", rpc_id="t1")
    assert record["request_id"] == "req-42" and record["trace_id"] == trace and record["era"] == "modern"


def test_session_tools_list_sse_answer_is_trimmed(gw: GatewayProcess) -> None:
    url = f"{gw.url}/adapters/calc/mcp"
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    opened = httpx.post(url, json=init, headers={**ACCEPT, **BOB})
    assert opened.status_code == 200
    session = {**ACCEPT, **BOB, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    session["MCP-Protocol-Version"] = "2025-11-25"
    httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    listing = httpx.post(url, json={"jsonrpc": "2.0", "id": "L", "method": "tools/list"}, headers=session)
    assert listing.status_code == 200
    assert listing.headers["content-type"].startswith("text/event-stream")  # the SSE filter's path
    data = [line[5:].strip() for line in listing.text.splitlines() if line.startswith("data:")]
    answer = next(json.loads(d) for d in data if d and json.loads(d).get("id") == "L")
    assert [t["name"] for t in answer["result"]["tools"]] == ["whoami"]
