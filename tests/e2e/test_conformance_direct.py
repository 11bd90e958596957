"""The official conformance suite and the MCP Inspector CLI against our servers, directly.

These pin the baseline the gateway tests compare with: the fixture server passes every scored
scenario of both requirement sets on its own, and the Inspector lists and calls the example
server's tools over Streamable HTTP and legacy SSE.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import conformance as conformance_fixtures
from tests.fixtures.conformance import (
    REQUIREMENT_SETS,
    InspectorError,
    NodeToolsMissing,
    ServerProcess,
    run_conformance,
    run_inspector,
    start_conformance_server,
)
from tests.fixtures.redis import RedisServer


@pytest.mark.parametrize("requirements", REQUIREMENT_SETS)
def test_fixture_server_passes_every_scored_scenario(
    conformance_server: ServerProcess,
    requirements: str,
    tmp_path: Path,
) -> None:
    result = run_conformance(conformance_server.mcp_url, requirements, tmp_path / "results")
    print(result.summary())

    failures = "\n".join(f"{c.scenario}:{c.check_id}: {c.message}" for c in result.failures(scored_only=True))
    assert result.exit_code == 0, f"{result.summary()}\n{failures}\n{result.output[-3000:]}"
    not_passed = [s for s in result.scored_scenarios if not result.scenario_passed(s)]
    assert not_passed == [], f"scored scenarios not passed: {not_passed}\n{failures}"
    assert result.count("SUCCESS", scored_only=True) > 0
    # The security check the gateway must reproduce is among the scored ones, and it passed.
    assert result.passed()[("dns-rebinding-protection", "localhost-host-rebinding-rejected")] == 1

    # Unscored, but the gateway comparison relies on them passing directly: session lifecycle
    # (DELETE, then 404), SSE polling (Last-Event-ID resume), 2020-12 schemas, SEP-2243 headers.
    unscored = {
        "2025-11-25": ("server-session-lifecycle", "server-sse-polling", "json-schema-2020-12"),
        "2026-07-28": ("json-schema-2020-12", "http-header-validation", "http-custom-header-server-validation"),
    }[requirements]
    for scenario in unscored:
        assert result.scenario_passed(scenario), [c for c in result.checks if c.scenario == scenario]


@pytest.mark.parametrize("endpoint", ["mcp", "sse"])
def test_inspector_lists_and_calls_example_tools(example_server: ServerProcess, endpoint: str) -> None:
    url = f"{example_server.base_url}/{endpoint}"

    listed = run_inspector(url, "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == {"add", "echo", "whoami", "get_env"}

    added = run_inspector(url, "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "--tool-arg", "b=40")
    assert added["isError"] is False
    assert added["structuredContent"] == {"result": 42}

    who = run_inspector(url, "tools/call", "--tool-name", "whoami", transport="http" if endpoint == "mcp" else "sse")
    assert who["content"][0]["text"] == "r0"


def test_inspector_reports_an_unknown_tool_as_exit_5(example_server: ServerProcess) -> None:
    with pytest.raises(InspectorError) as raised:
        run_inspector(example_server.mcp_url, "tools/call", "--tool-name", "no_such_tool")
    assert raised.value.exit_code == 5
    assert raised.value.error is not None and raised.value.error["code"] == "tool_not_found"


def test_missing_node_tools_fail_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance_fixtures, "CONFORMANCE_BIN", conformance_fixtures.TOOLS_DIR / "absent" / "bin")
    with pytest.raises(NodeToolsMissing, match=r"scripts/install_node_tools\.sh"):
        run_conformance("http://127.0.0.1:1/mcp", "2025-11-25", Path("unused"))


STATELESS_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
}


def _call_2026(base_url: str, tool: str, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    """One stateless 2026-07-28 tools/call."""
    params: dict[str, Any] = {"name": tool, "arguments": {}, **extra}
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    all_headers = {**STATELESS_HEADERS, "Mcp-Name": tool, **(headers or {})}
    return httpx.post(f"{base_url}/mcp", json=body, headers=all_headers, timeout=10)


def _reply(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    reply: dict[str, Any] = response.json()
    return reply


def _input_required_round_trip(first: str, second: str) -> dict[str, Any]:
    tool = "test_input_required_result_request_state"
    round1 = _reply(_call_2026(first, tool))["result"]
    assert round1["resultType"] == "input_required"
    answer = {"confirm": {"action": "accept", "content": {"ok": True}}}
    return _reply(_call_2026(second, tool, inputResponses=answer, requestState=round1["requestState"]))


def test_replicas_sharing_request_state_keys_finish_each_others_round_trips(tmp_path: Path) -> None:
    shared = {"MCP_REQUEST_STATE_KEYS": "conformance-fixture-test-key-0123456789abcdef"}
    with (
        start_conformance_server(env=shared, log_dir=tmp_path) as first,
        start_conformance_server(env=shared, log_dir=tmp_path) as second,
    ):
        reply = _input_required_round_trip(first.base_url, second.base_url)
    assert "state-ok" in reply["result"]["content"][0]["text"], reply


def test_replicas_with_their_own_keys_reject_each_others_request_state(
    conformance_server: ServerProcess,
    tmp_path: Path,
) -> None:
    with start_conformance_server(log_dir=tmp_path) as other:
        reply = _input_required_round_trip(conformance_server.base_url, other.base_url)
    assert reply["error"]["code"] == -32602, reply


def test_dns_rebinding_protection_is_on_alone_and_off_behind_the_gateway(
    conformance_server: ServerProcess,
    tmp_path: Path,
) -> None:
    foreign = {"Host": "evil.example.com", "Origin": "http://evil.example.com"}
    assert _call_2026(conformance_server.base_url, "whoami").status_code == 200
    assert _call_2026(conformance_server.base_url, "whoami", headers=foreign).status_code == 421

    env = {"MCP_DNS_REBINDING_PROTECTION": "0", "MCP_REPLICA_ID": "behind-gateway"}
    with start_conformance_server(env=env, log_dir=tmp_path) as behind_gateway:
        reply = _reply(_call_2026(behind_gateway.base_url, "whoami", headers=foreign))
    assert reply["result"]["content"][0]["text"] == "behind-gateway"


def _listen_frames(base_url: str, trigger: Callable[[], None], wanted: str, timeout: float = 10.0) -> list[str]:
    """Open a 2026 ``subscriptions/listen`` stream, run ``trigger`` once it is acknowledged, and
    collect the JSON-RPC methods of its frames until ``wanted`` arrives."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {"toolsListChanged": True}},
    }
    headers = {**STATELESS_HEADERS, "Mcp-Method": "subscriptions/listen"}
    methods: list[str] = []
    with httpx.stream("POST", f"{base_url}/mcp", json=body, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            methods.append(json.loads(line[5:]).get("method", ""))
            if methods[-1] == "notifications/subscriptions/acknowledged":
                trigger()
            if methods[-1] == wanted:
                break
    return methods


def test_list_changes_reach_listen_streams_on_other_replicas_over_redis(
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = {"MCP_SUBSCRIPTION_REDIS_URL": redis_server.url, "MCP_SUBSCRIPTION_CHANNEL": f"test-{tmp_path.name}"}
    with (
        start_conformance_server(env=env, log_dir=tmp_path) as listening,
        start_conformance_server(env=env, log_dir=tmp_path) as changing,
    ):

        def change_tools_elsewhere() -> None:
            assert "result" in _reply(_call_2026(changing.base_url, "test_trigger_tool_change"))

        methods = _listen_frames(listening.base_url, change_tools_elsewhere, "notifications/tools/list_changed")
    assert methods[0] == "notifications/subscriptions/acknowledged"
    assert methods[-1] == "notifications/tools/list_changed"
