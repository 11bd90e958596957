"""Virtual servers over MCP (issue 16): the gateway terminates MCP at /servers/{name}/mcp and /sse and
answers from its members, each called through the data plane; clients of every era against members of
every era; a dead member leaves the others listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp.client import Client

from tests.gateway_process import GatewayProcess, example_adapter, start_gateway, wait_ready

CATALOG = Path(__file__).with_name("upstreams") / "images.toml"
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
            for name in ("example", "conformance", "modern"):
                wait_ready(api, name, 1, timeout=40)
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
    return tools, str(added.content[0].text), str(echoed.content[0].text)  # type: ignore[union-attr]


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
