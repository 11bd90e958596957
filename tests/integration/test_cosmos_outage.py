"""A gateway on Cosmos DB rides out a Cosmos outage: the control plane says so, the data plane keeps going.

A real gateway process (MCPGW_STORE=cosmos, local runtime) runs against the Cosmos-protocol
server from tests/fixtures/cosmos.py; the outage is that server frozen with SIGSTOP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.cosmos import EMULATOR_KEY, CosmosEmulator, cosmos_emulator_running
from tests.fixtures.gateway import GatewayProcess, example_adapter, replica_pids, start_gateway, wait_for, wait_ready
from tests.fixtures.local_runtime import call_tool

COSMOS_TIMEOUT = 1.5
RECONCILE_INTERVAL = 1.0

pytestmark = pytest.mark.slow


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[CosmosEmulator]:
    with cosmos_emulator_running(tmp_path / "cosmos") as em:
        yield em


@pytest.fixture
def gateway(emulator: CosmosEmulator, tmp_path: Path) -> Iterator[GatewayProcess]:
    settings = emulator.settings(cosmos_timeout=COSMOS_TIMEOUT)
    env = {**emulator.env(settings), "MCPGW_RECONCILE_INTERVAL": str(RECONCILE_INTERVAL)}
    with start_gateway(tmp_path / "data", env=env) as gw:
        yield gw


def assert_cosmos_problem(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Retry-After" in response.headers
    problem = response.json()
    assert problem["status"] == 503
    assert "Cosmos DB" in problem["detail"]
    assert EMULATOR_KEY not in response.text


async def test_cosmos_outage_keeps_the_data_plane_and_recovers_without_restart(
    emulator: CosmosEmulator, gateway: GatewayProcess
) -> None:
    mcp_url = f"{gateway.url}/adapters/known"
    with gateway.client() as api:
        assert api.post("/adapters", json=example_adapter("known", replicas=1)).status_code == 201
        wait_ready(api, "known", 1)
        assert await call_tool(mcp_url, "add", {"a": 2, "b": 3}) == 5
        replicas_before = replica_pids(gateway.data_dir)
        assert len(replicas_before) == 1
        passes_before = gateway.log_text().count("reconcile skipped")

        emulator.pause()
        try:
            # Control plane: 503 naming Cosmos, within the configured budget.
            began = time.monotonic()
            assert_cosmos_problem(api.get("/adapters"))
            assert time.monotonic() - began < COSMOS_TIMEOUT + 2
            assert_cosmos_problem(api.get("/adapters/known"))
            assert_cosmos_problem(api.post("/adapters", json=example_adapter("newcomer")))
            ready = api.get("/readyz")
            assert ready.status_code == 503
            assert "Cosmos DB" in ready.json()["checks"]["store"]

            # Data plane: the known adapter keeps answering, from the in-memory view.
            for n in range(3):
                assert await call_tool(mcp_url, "add", {"a": n, "b": 1}) == n + 1

            # Reconciler: passes fail and change nothing, so no replica is touched.
            wait_for(
                lambda: gateway.log_text().count("reconcile skipped") >= passes_before + 2,
                timeout=10 * (COSMOS_TIMEOUT + RECONCILE_INTERVAL),
                what="two reconcile passes skipped during the outage",
            )
            assert replica_pids(gateway.data_dir) == replicas_before
            assert await call_tool(mcp_url, "add", {"a": 40, "b": 2}) == 42
        finally:
            emulator.resume()

        # Recovery, same process: readiness, reads, writes, and the new adapter deploys.
        wait_for(lambda: api.get("/readyz").status_code == 200, timeout=15, what="/readyz green again")
        listed = api.get("/adapters")
        assert listed.status_code == 200
        assert [a["name"] for a in listed.json()["items"]] == ["known"]
        assert api.post("/adapters", json=example_adapter("newcomer", replicas=1)).status_code == 201
        wait_ready(api, "newcomer", 1)
        assert await call_tool(f"{gateway.url}/adapters/newcomer", "add", {"a": 1, "b": 1}) == 2
        assert await call_tool(mcp_url, "add", {"a": 1, "b": 2}) == 3
        after = replica_pids(gateway.data_dir)
        assert all(after.get(replica) == pid for replica, pid in replicas_before.items())
    assert gateway.proc is not None and gateway.proc.poll() is None, "the gateway restarted or died"
