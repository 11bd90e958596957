"""Virtual server streams with real clients and a real member (issue 16, 2026-12-01): a 2025-era SDK
client hears a member's ``tools/list_changed`` on its standalone GET stream; a 2026-07-28 SDK client's
``subscriptions/listen`` is acknowledged, tagged and filtered; a member that ends its answer stream
mid-call (SEP-1699 polling) is resumed by the client from the gateway with GET + ``Last-Event-ID``.

The member is the conformance fixture (examples/conformance-server), behind the prefix ``cf_``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client import Client

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready
from tests.fixtures.mcp_results import first_text

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
ACCEPT = "application/json, text/event-stream"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_EXAMPLE_ADAPTER": "false", "MCPGW_SERVER_LIST_TTL": "30"}
    with start_gateway(tmp_path_factory.mktemp("servers-streams") / "data", env) as g:
        with g.client() as api:
            conformance = example_adapter("conformance", replicas=1, imageName="conformance-server", imageVersion="1.0")
            assert api.post("/adapters", json=conformance).status_code == 201
            wait_ready(api, "conformance", 1, timeout=40)
            body = {"name": "cs", "members": [{"adapter": "conformance", "prefix": "cf_"}]}
            assert api.post("/servers", json=body).status_code == 201
        yield g


def _method(message: Any) -> str | None:
    """The method of a notification the SDK hands a message handler (typed or wrapped)."""
    for candidate in (message, getattr(message, "root", None)):
        method = getattr(candidate, "method", None)
        if isinstance(method, str):
            return method
    return None


def test_a_2025_sdk_client_hears_list_changed_on_its_get_stream(gw: GatewayProcess) -> None:
    """The member announces its change on its own subscriptions/listen (MCPServer's change events reach only
    those); the gateway relays it on the client session's standalone GET stream."""
    heard: list[str] = []

    async def handler(message: Any) -> None:
        method = _method(message)
        if method is not None:
            heard.append(method)

    async def run() -> None:
        async with Client(f"{gw.url}/servers/cs/mcp", mode="legacy", message_handler=handler) as client:
            assert client.server_capabilities is not None
            assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
            deadline = time.monotonic() + 15
            # The SDK opens its GET stream in the background: trigger until the change is heard there.
            while "notifications/tools/list_changed" not in heard:
                assert time.monotonic() < deadline, heard
                await client.call_tool("cf_test_trigger_tool_change", {})
                with anyio.move_on_after(1.0):
                    while "notifications/tools/list_changed" not in heard:
                        await anyio.sleep(0.05)

    anyio.run(run)


def test_a_2026_sdk_client_listens_through_a_virtual_server(gw: GatewayProcess) -> None:
    async def run() -> list[Any]:
        async with Client(f"{gw.url}/servers/cs/mcp", mode="2026-07-28") as client:
            events: list[Any] = []
            async with client.listen(tools_list_changed=True) as sub:
                assert sub.honored.tools_list_changed
                await client.call_tool("cf_test_trigger_tool_change", {})
                with anyio.fail_after(10):
                    async for event in sub:
                        events.append(event)
                        break
            return events

    events = anyio.run(run)
    assert type(events[0]).__name__ == "ToolsListChanged", events


def test_a_listen_is_acknowledged_tagged_and_filtered_on_the_wire(gw: GatewayProcess) -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"Accept": ACCEPT, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}
    notifications = {"promptsListChanged": True, "toolsListChanged": True}
    listen: dict[str, Any] = {"jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen"}
    listen["params"] = {"_meta": meta, "notifications": notifications}
    call: dict[str, Any] = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
    call["params"] = {"name": "cf_test_trigger_prompt_change", "arguments": {}, "_meta": meta}
    call_headers = {**headers, "Mcp-Method": "tools/call", "Mcp-Name": "cf_test_trigger_prompt_change"}
    frames: list[dict[str, Any]] = []
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", f"{gw.url}/servers/cs/mcp", json=listen, headers=headers) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            frames.append(json.loads(line[5:]))
            if len(frames) == 1:
                assert httpx.post(f"{gw.url}/servers/cs/mcp", json=call, headers=call_headers).status_code == 200
            else:
                break
    ack, change = frames
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == {"toolsListChanged": True, "promptsListChanged": True}
    assert change["method"] == "notifications/prompts/list_changed"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"
    assert change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"


def test_a_call_whose_member_closes_its_stream_is_resumed_from_the_gateway(gw: GatewayProcess) -> None:
    """The fixture's test_reconnection ends its answer stream after a retry field; the gateway ends the
    client's stream the same way, goes on polling the member, and replays the answer on GET + Last-Event-ID."""
    url = f"{gw.url}/servers/cs/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    session = httpx.post(url, json=init, headers={"Accept": ACCEPT}).headers["mcp-session-id"]
    headers = {"Accept": ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "cf_test_reconnection"}}
    posted = httpx.post(url, json=call, headers=headers, timeout=10)
    assert posted.headers["content-type"].startswith("text/event-stream")
    lines = posted.text.splitlines()
    ids = [line[3:].strip() for line in lines if line.startswith("id:")]
    assert lines[0].startswith("id:") and lines[1].startswith("retry:")  # the priming event comes first
    assert '"id":7' not in posted.text  # the stream ended without the answer
    resumed = httpx.get(url, headers={**headers, "Last-Event-ID": ids[-1]}, timeout=10)
    assert resumed.status_code == 200
    assert "Reconnection test completed" in resumed.text and '"id":7' in resumed.text

    async def sdk() -> str:  # the SDK client does the same by itself
        async with Client(url, mode="legacy") as client:
            result = await client.call_tool("cf_test_reconnection", {})
            return first_text(result)

    assert anyio.run(sdk) == "Reconnection test completed"
