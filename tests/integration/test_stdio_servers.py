"""Real third-party stdio MCP servers through the gateway (issue 17).

``mcp-server-time`` (PyPI, pinned in the test extra) and ``@modelcontextprotocol/server-filesystem``
(npm, pinned into .tools by scripts/install_node_tools.sh) run from a test image catalog with
``transport = "stdio"``: each replica is the stdio bridge in the local runtime's isolation, one server
process per client session. Nothing is installed here.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, types
from mcp.client.sse import sse_client
from pydantic import FileUrl

from tests.fixtures.gateway import GatewayProcess, start_gateway, wait_for, wait_ready
from tests.fixtures.mcp_results import first_text

REPO = Path(__file__).resolve().parents[2]
FILESYSTEM_JS = (
    REPO / ".tools/server-filesystem/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
).resolve()

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}

pytestmark = pytest.mark.skipif(
    not FILESYSTEM_JS.exists() and not os.environ.get("CI"),
    reason="run scripts/install_node_tools.sh (server-filesystem into .tools)",
)


def owned_processes(data_dir: Path, needle: str = "") -> list[int]:
    """Live processes carrying the runtime's owner marker for ``data_dir`` (bridges, servers, their children)."""
    from gateway.runtime._local_process import OWNER_ENV, owner_marker

    marker = f"{OWNER_ENV}={owner_marker(data_dir)}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_bytes()
            if stat[stat.rfind(b")") + 2 :].startswith(b"Z"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the filesystem server is configured with, readable by the replica user."""
    root = tmp_path_factory.mktemp("fs")
    root.chmod(0o755)
    allowed = root / "allowed"
    allowed.mkdir(mode=0o755)
    (allowed / "hello.txt").write_text("hello from the adapter's folder\n")
    (allowed / "hello.txt").chmod(0o644)
    return allowed


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, files: Path) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("stdio")
    base.chmod(0o755)  # the catalog's folder is the servers' working directory: the replica user enters it
    catalog = base / "images.toml"
    catalog.write_text(
        f"""
["time:2026.10.19"]
command = ["{{python}}", "-m", "mcp_server_time"]
transport = "stdio"
env = {{ PYTHONUNBUFFERED = "1" }}

["filesystem:2026.8.31"]
command = ["node", "{FILESYSTEM_JS}"]
transport = "stdio"
"""
    )
    # The folder lives under /tmp, which the sandbox hides: the operator lets adapters name it.
    env = {"MCPGW_IMAGE_CATALOG": str(catalog), "MCPGW_STDIO_MAX_SESSIONS": "3", "MCPGW_LOCAL_EXPOSE": str(files)}
    with start_gateway(base / "data", env=env) as g:
        with g.client() as api:
            body = {"name": "time", "imageName": "time", "imageVersion": "2026.10.19", "replicaCount": 2}
            assert api.post("/adapters", json=body).status_code == 201
            wait_ready(api, "time", 2, timeout=60)
            body = {
                "name": "fs",
                "imageName": "filesystem",
                "imageVersion": "2026.8.31",
                "args": [str(files)],
                "replicaCount": 1,
            }
            r = api.post("/adapters", json=body)
            assert r.status_code == 201, r.text
            # The same server on two replicas (the cap test below needs the single-replica one).
            assert api.post("/adapters", json={**body, "name": "fs2", "replicaCount": 2}).status_code == 201
            wait_ready(api, "time", 2, timeout=60)
            wait_ready(api, "fs", 1, timeout=60)
            wait_ready(api, "fs2", 2, timeout=60)
        yield g


async def _time_calls(client: Client, calls: int = 3) -> None:
    for _ in range(calls):
        result = await client.call_tool("get_current_time", {"timezone": "Europe/Paris"})
        assert not result.is_error, result
        assert json.loads(first_text(result))["timezone"] == "Europe/Paris"


def test_stdio_server_answers_every_era_across_two_replicas(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/time"

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            # Three sessions at once (MCPGW_STDIO_MAX_SESSIONS=3 per replica), each pinned: a move would 404.
            for _ in range(2):
                tg.start_soon(lambda: _session(Client(url + "/mcp", mode="legacy")))
            tg.start_soon(lambda: _session(Client(sse_client(url + "/sse"), mode="legacy")))
        async with Client(url + "/mcp", mode="2026-07-28") as client:
            assert client.protocol_version == "2026-07-28"
            await _time_calls(client, 4)

    async def _session(client: Client) -> None:
        async with client:
            await _time_calls(client)

    anyio.run(run)
    log = "\n".join(gw.client().get(f"/adapters/time/logs?instance={i}&tail=200").text for i in (0, 1))
    assert log.count("answered ping; ready") >= 2


def test_each_session_gets_its_own_process_and_ends_it(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/fs/mcp"
    before = set(owned_processes(gw.data_dir, "index.js"))

    async def run() -> None:
        async with Client(url, mode="legacy") as a, Client(url, mode="legacy") as b:
            for client in (a, b):
                result = await client.call_tool("list_allowed_directories", {})
                assert not result.is_error
            during = set(owned_processes(gw.data_dir, "index.js")) - before
            assert len(during) == 2, f"two sessions, server processes {during}"

    anyio.run(run)
    # Closing a session (DELETE) ends its process.
    wait_for(lambda: not (set(owned_processes(gw.data_dir, "index.js")) - before), timeout=15, what="processes gone")


def test_client_roots_do_not_widen_the_filesystem_servers_directories(gw: GatewayProcess, files: Path) -> None:
    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=FileUrl("file:///"), name="everything")])

    async def run() -> str:
        async with Client(gw.url + "/adapters/fs/mcp", mode="legacy", list_roots_callback=roots) as client:
            await anyio.sleep(0.5)  # a server honouring roots would ask for them right after initialize
            listed = await client.call_tool("list_allowed_directories", {})
            denied = await client.call_tool("read_text_file", {"path": "/etc/hostname"})
            read = await client.call_tool("read_text_file", {"path": str(files / "hello.txt")})
            assert denied.is_error, denied
            assert "hello from the adapter's folder" in first_text(read)
            return first_text(listed)

    listed = anyio.run(run)
    assert str(files) in listed and "\n/\n" not in f"\n{listed}\n"


def test_sessions_over_the_process_cap_get_503_with_retry_after(gw: GatewayProcess) -> None:
    url = gw.url + "/adapters/fs/mcp"
    headers = {"Accept": "application/json, text/event-stream"}
    opened: list[str] = []
    with httpx.Client(timeout=30) as http:
        try:
            for _ in range(3):  # MCPGW_STDIO_MAX_SESSIONS=3 on the one replica
                r = http.post(url, json=INIT, headers=headers)
                assert r.status_code == 200, r.text
                opened.append(r.headers["mcp-session-id"])
            r = http.post(url, json=INIT, headers=headers)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"]
            assert "maximum of 3 stdio sessions" in r.json()["error"]["message"]
        finally:
            for sid in opened:
                http.delete(url, headers={**headers, "Mcp-Session-Id": sid})


def test_sigkill_of_the_gateway_leaves_no_stdio_process(tmp_path: Path) -> None:
    catalog = tmp_path / "images.toml"
    catalog.write_text(
        '["time:2026.10.19"]\ncommand = ["{python}", "-m", "mcp_server_time"]\ntransport = "stdio"\n'
        'env = { PYTHONUNBUFFERED = "1" }\n'
    )
    gw = GatewayProcess(tmp_path / "data", env={"MCPGW_IMAGE_CATALOG": str(catalog)}).start()
    try:
        with gw.client() as api:
            body = {"name": "time", "imageName": "time", "imageVersion": "2026.10.19", "replicaCount": 2}
            assert api.post("/adapters", json=body).status_code == 201
            wait_ready(api, "time", 2, timeout=60)
        for _ in range(3):
            r = httpx.post(
                gw.url + "/adapters/time/mcp", json=INIT, headers={"Accept": "application/json, text/event-stream"}
            )
            assert r.status_code == 200, r.text
        servers = owned_processes(gw.data_dir, "mcp_server_time")
        assert len(servers) >= 3, servers
        assert owned_processes(gw.data_dir, "gateway.stdio.bridge")
        assert gw.proc is not None
        os.kill(gw.pid, signal.SIGKILL)
        gw.proc.wait(timeout=10)
        start = time.monotonic()
        wait_for(lambda: not owned_processes(gw.data_dir), timeout=10, what="every bridge and server gone")
        assert time.monotonic() - start < 10
    finally:
        gw.stop()


@pytest.mark.parametrize("route", ["mcp", "sse"])
def test_inspector_cli_calls_the_stdio_servers(gw: GatewayProcess, files: Path, route: str) -> None:
    from tests.fixtures.conformance import run_inspector

    url = f"{gw.url}/adapters/time/{route}"
    tools = run_inspector(url, "tools/list")
    assert {t["name"] for t in tools["tools"]} == {"get_current_time", "convert_time"}
    result = run_inspector(url, "tools/call", "--tool-name", "get_current_time", "--tool-arg", "timezone=UTC")
    assert '"timezone": "UTC"' in result["content"][0]["text"]
    listed = run_inspector(f"{gw.url}/adapters/fs/{route}", "tools/call", "--tool-name", "list_allowed_directories")
    assert str(files) in listed["content"][0]["text"]


def test_filesystem_server_on_two_replicas_over_mcp_and_sse_with_pinned_sessions(
    gw: GatewayProcess, files: Path
) -> None:
    """Issue 17, "Checked by": server-filesystem (npm, stdio) with 2 replicas, sessions pinned (a
    session sent to the other replica's bridge would be unknown there: 404), over /mcp and /sse."""
    url = gw.url + "/adapters/fs2"

    async def calls(client: Client) -> None:
        async with client:
            for _ in range(3):
                listed = await client.call_tool("list_allowed_directories", {})
                assert not listed.is_error and str(files) in first_text(listed), listed
            read = await client.call_tool("read_text_file", {"path": str(files / "hello.txt")})
            assert "hello from the adapter's folder" in first_text(read)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(lambda: calls(Client(url + "/mcp", mode="legacy")))
            tg.start_soon(lambda: calls(Client(sse_client(url + "/sse"), mode="legacy")))

    anyio.run(run)
    with gw.client() as api:
        replicas = {i["name"]: i["ready"] for i in api.get("/adapters/fs2/status").json()["instances"]}
    assert replicas == {"fs2-0": True, "fs2-1": True}, replicas
