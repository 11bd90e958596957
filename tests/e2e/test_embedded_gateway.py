"""The embedded gateway end to end: real gateway process, real replicas, real MCP clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from tests.fixtures.gateway import (
    GatewayProcess,
    example_adapter,
    replica_pids,
    replica_processes,
    start_gateway,
    wait_for,
    wait_ready,
)
from tests.fixtures.mcp_results import first_text


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return ") Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False


async def call(url: str, tool: str, args: dict[str, Any] | None = None, **client_kw: Any) -> Any:
    async with Client(url, **client_kw) as client:
        result = await client.call_tool(tool, args or {})
        assert not result.is_error, result
        return result.structured_content["result"] if result.structured_content else first_text(result)


def test_three_replicas_become_ready_and_answer_directly(gateway: GatewayProcess) -> None:
    with gateway.client() as api:
        assert api.post("/adapters", json=example_adapter("trio", replicas=3)).status_code == 201
        status = wait_ready(api, "trio", 3, timeout=30)
        assert [i["name"] for i in status["instances"]] == ["trio-0", "trio-1", "trio-2"]
        assert all(i["ready"] for i in status["instances"])
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True"
        assert conditions["Progressing"]["status"] == "False"
        assert conditions["Degraded"]["status"] == "False"

        logs = api.get("/adapters/trio/logs", params={"instance": 1, "tail": 50})
        assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
        assert "replica trio-1 serving" in logs.text and "trio-0" not in logs.text

    processes = replica_processes(gateway.data_dir)
    assert set(processes) == {"trio-0", "trio-1", "trio-2"}
    _, port = processes["trio-2"]

    async def direct() -> None:
        url = f"http://127.0.0.1:{port}/mcp"
        assert await call(url, "add", {"a": 2, "b": 3}) == 5
        assert await call(url, "echo", {"text": "hi"}) == "hi"
        assert await call(url, "whoami") == "trio-2"

    anyio.run(direct)


def test_put_changes_env_and_replicas_and_removed_env_is_gone(gateway: GatewayProcess) -> None:
    mcp_url = gateway.url + "/adapters/envy/mcp"
    with gateway.client() as api:
        body = example_adapter("envy", replicas=1, environmentVariables={"KEEP": "1", "DROP": "x"})
        assert api.post("/adapters", json=body).status_code == 201
        wait_ready(api, "envy", 1)
        assert anyio.run(call, mcp_url, "get_env", {"name": "DROP"}) == "x"

        body = example_adapter("envy", replicas=2, environmentVariables={"KEEP": "2"})
        updated = api.put("/adapters/envy", json=body)
        assert updated.status_code == 200 and updated.json()["generation"] == 2
        status = wait_ready(api, "envy", 2)
        assert status["observedGeneration"] == 2

        def rolled() -> dict[str, Any] | None:
            current: dict[str, Any] = api.get("/adapters/envy/status").json()
            instances = current["instances"]
            progressing = next(c for c in current["conditions"] if c["type"] == "Progressing")
            done = len(instances) == 2 and all(i["generation"] == 2 and i["ready"] for i in instances)
            return current if done and progressing["status"] == "False" else None

        wait_for(rolled, timeout=30, what="both replicas on generation 2 and the rollout complete")

    async def every_replica() -> None:
        seen: dict[str, tuple[Any, Any]] = {}
        for _ in range(6):
            async with Client(mcp_url) as client:
                who = first_text(await client.call_tool("whoami", {}))
                keep = (await client.call_tool("get_env", {"name": "KEEP"})).structured_content
                drop = (await client.call_tool("get_env", {"name": "DROP"})).structured_content
                seen[who] = (keep, drop)
        assert set(seen) == {"envy-0", "envy-1"}
        for keep, drop in seen.values():
            assert keep == {"result": "2"}
            assert drop == {"result": None}

    anyio.run(every_replica)


def test_delete_stops_every_replica_process(gateway: GatewayProcess) -> None:
    with gateway.client() as api:
        api.post("/adapters", json=example_adapter("doomed", replicas=2))
        wait_ready(api, "doomed", 2)
        pids = replica_pids(gateway.data_dir)
        assert set(pids) == {"doomed-0", "doomed-1"}
        assert api.delete("/adapters/doomed").status_code == 204
        assert api.get("/adapters/doomed").status_code == 404
    for pid in pids.values():
        assert not alive(pid), f"replica pid {pid} outlived DELETE"
    assert replica_pids(gateway.data_dir) == {}


def test_scale_to_zero_and_back(gateway: GatewayProcess) -> None:
    with gateway.client() as api:
        api.post("/adapters", json=example_adapter("elastic", replicas=2))
        wait_ready(api, "elastic", 2)
        api.put("/adapters/elastic", json=example_adapter("elastic", replicas=0))
        status = wait_ready(api, "elastic", 0)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "ScaledToZero"
        wait_for(lambda: replica_pids(gateway.data_dir) == {}, timeout=10, what="no replicas")
        api.put("/adapters/elastic", json=example_adapter("elastic", replicas=1))
        wait_ready(api, "elastic", 1)


def test_sigterm_and_sigkill_leave_no_replica_and_restart_restores(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_gateway(data_dir) as first:
        with first.client() as api:
            api.post("/adapters", json=example_adapter("sturdy", replicas=2))
            wait_ready(api, "sturdy", 2)
        old = replica_pids(data_dir)
        assert len(old) == 2
        first.stop(signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in old.values()), timeout=10, what="replicas die with the gateway")

    with start_gateway(data_dir) as second:
        with second.client() as api:
            status = wait_ready(api, "sturdy", 2, timeout=30)
            assert status["readyReplicas"] == 2
            assert anyio.run(call, second.url + "/adapters/sturdy/mcp", "echo", {"text": "back"}) == "back"
        new = replica_pids(data_dir)
        assert set(new) == {"sturdy-0", "sturdy-1"}
        assert not set(new.values()) & set(old.values())
        second.stop(signal.SIGTERM)
        # uvicorn re-raises the signal after a graceful shutdown
        assert second.proc is not None and second.proc.returncode in (0, -signal.SIGTERM)
        assert "Traceback" not in second.log_text()
    wait_for(lambda: replica_pids(data_dir) == {}, timeout=10, what="no replicas after SIGTERM")


def test_a_follower_sharing_the_data_dir_takes_over_and_redeploys_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"MCPGW_RECONCILE_INTERVAL": "600"}  # only the takeover itself can redeploy within the test
    with start_gateway(data_dir, env) as leader:
        with leader.client() as api:
            assert api.post("/adapters", json=example_adapter("relay", replicas=1)).status_code == 201
            wait_ready(api, "relay", 1)
        with start_gateway(data_dir, env) as follower, follower.client() as api:
            wait_ready(api, "relay", 1, timeout=10)  # mirrored from the leader
            old = replica_pids(data_dir)["relay-0"]
            leader.stop(signal.SIGTERM)
            wait_for(lambda: not alive(old), timeout=10, what="the leader's replica stops with it")
            # Until it takes the lock (within about a second) the follower still mirrors the old state.
            wait_for(
                lambda: replica_pids(data_dir).get("relay-0") not in (None, old),
                timeout=30,
                what="a replica started by the new leader",
            )
            assert wait_ready(api, "relay", 1, timeout=30)["readyReplicas"] == 1
            assert anyio.run(call, follower.url + "/adapters/relay/mcp", "whoami") == "relay-0"


def test_example_adapter_is_registered_at_start_by_default(tmp_path: Path) -> None:
    with start_gateway(tmp_path / "data", {"MCPGW_EXAMPLE_ADAPTER": "true"}) as gw, gw.client() as api:
        resource = api.get("/adapters/mcp-example").json()
        assert resource["imageName"] == "mcp-example" and resource["replicaCount"] == 2
        wait_ready(api, "mcp-example", 2)
        replies = {anyio.run(call, gw.url + "/adapters/mcp-example/mcp", "whoami") for _ in range(4)}
        assert replies == {"mcp-example-0", "mcp-example-1"}
        # The README's Python snippet, as a newcomer runs it (only the port differs).
        snippet = readme_python_snippet().replace("http://127.0.0.1:8000", gw.url)
        done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, "5\n"), done.stderr


def readme_python_snippet() -> str:
    """The ```python block of the README that follows "Or from Python" (issue 17: it was not runnable)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme[readme.index("Or from Python") :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def test_invalid_setting_stops_startup_naming_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "MCPGW_PORT": "not-a-port", "MCPGW_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "MCPGW_PORT" in result.stderr and "whole number" in result.stderr

    env = {**os.environ, "MCPGW_DATA_DIR": str(tmp_path), "MCPGW_HOST": "0.0.0.0"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "MCPGW_AUTH" in result.stderr


def test_serve_help_documents_every_setting() -> None:
    import subprocess
    import sys

    from gateway.settings import env_name, flag_name, setting_fields

    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for f in setting_fields():
        assert flag_name(f) in result.stdout, f.name
        assert env_name(f) in result.stdout, f.name
