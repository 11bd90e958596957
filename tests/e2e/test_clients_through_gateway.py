"""Real third-party clients through the gateway: the official conformance suite and the MCP Inspector CLI.

The conformance suite runs against our fixture server twice — directly and through
``/adapters/<name>/mcp`` — and the same checks must pass both ways, for the 2025-11-25 (session)
wire and the 2026-07-28 (stateless) wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.conformance import ServerProcess, run_conformance, run_inspector, start_conformance_server
from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready
from tests.fixtures.redis import RedisServer

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, redis_server_session: RedisServer) -> Iterator[GatewayProcess]:
    with start_gateway(tmp_path_factory.mktemp("clients") / "data", {"MCPGW_IMAGE_CATALOG": str(CATALOG)}) as g:
        with g.client() as api:
            api.post("/adapters", json=example_adapter("example", replicas=2))
            conformance = example_adapter("conformance", replicas=1, imageName="conformance-server", imageVersion="1.0")
            api.post("/adapters", json=conformance)
            # Two replicas: stateless requests spread over both. The suite's list-changed checks
            # subscribe on one request and change the list on another, so the replicas share a
            # subscription bus over Redis (MRTR request state keys are shared by the image's env).
            bus = {
                "MCP_SUBSCRIPTION_REDIS_URL": redis_server_session.url,
                "MCP_SUBSCRIPTION_CHANNEL": f"conformance-{g.port}",
            }
            scaled = example_adapter(
                "conformance-ha",
                replicas=2,
                imageName="conformance-server",
                imageVersion="1.0",
                environmentVariables=bus,
            )
            api.post("/adapters", json=scaled)
            wait_ready(api, "example", 2, timeout=40)
            wait_ready(api, "conformance", 1, timeout=40)
            wait_ready(api, "conformance-ha", 2, timeout=40)
        yield g


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_conformance_server(log_dir=tmp_path_factory.mktemp("direct")) as server:
        yield server


@pytest.mark.parametrize("requirements", ["2025-11-25", "2026-07-28"])
def test_conformance_suite_passes_the_same_checks_through_the_gateway(
    gw: GatewayProcess, direct: ServerProcess, requirements: str, tmp_path: Path
) -> None:
    straight = run_conformance(direct.mcp_url, requirements, tmp_path / "direct")
    proxied = run_conformance(f"http://localhost:{gw.port}/adapters/conformance/mcp", requirements, tmp_path / "gw")
    assert straight.exit_code == 0, straight.summary() + "\n" + straight.output[-3000:]
    assert proxied.exit_code == 0, proxied.summary() + "\n" + proxied.output[-3000:]
    missing = straight.passed() - proxied.passed()
    assert not missing, f"checks passing directly but not through the gateway: {sorted(missing)}"
    assert set(straight.scored_scenarios) <= set(proxied.scenarios)
    assert proxied.count("SUCCESS", scored_only=True) >= 40


def test_conformance_2026_passes_through_the_gateway_over_two_replicas(
    gw: GatewayProcess, direct: ServerProcess, tmp_path: Path
) -> None:
    straight = run_conformance(direct.mcp_url, "2026-07-28", tmp_path / "direct")
    proxied = run_conformance(f"http://localhost:{gw.port}/adapters/conformance-ha/mcp", "2026-07-28", tmp_path / "gw")
    assert proxied.exit_code == 0, proxied.summary() + "\n" + proxied.output[-3000:]
    missing = straight.passed() - proxied.passed()
    assert not missing, f"checks passing directly but not through the gateway over 2 replicas: {sorted(missing)}"


def test_inspector_lists_and_calls_tools_over_streamable_http(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/example/mcp"
    tools = run_inspector(url, "tools/list")
    assert {t["name"] for t in tools["tools"]} >= {"add", "echo", "whoami", "get_env"}
    result = run_inspector(url, "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "--tool-arg", "b=40")
    assert result["content"][0]["text"] == "42"
    who = run_inspector(url, "tools/call", "--tool-name", "whoami")
    assert who["content"][0]["text"] in {"example-0", "example-1"}


def test_inspector_lists_and_calls_tools_over_legacy_sse(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/example/sse"
    tools = run_inspector(url, "tools/list", transport="sse")
    assert {t["name"] for t in tools["tools"]} >= {"add", "echo", "whoami"}
    result = run_inspector(url, "tools/call", "--tool-name", "echo", "--tool-arg", "text=through-sse", transport="sse")
    assert result["content"][0]["text"] == "through-sse"
