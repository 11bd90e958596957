"""The stdio bridge on its own: session lifetime, errors, the JSON-RPC relay (issue 17).

Runs ``python -m gateway.stdio.bridge`` around ``mcp-server-time`` (PyPI, pinned in the test extra).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.gateway import free_port, wait_for

REPO = Path(__file__).resolve().parents[3]
HEADERS = {"Accept": "application/json, text/event-stream"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"roots": {"listChanged": True}},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


def children(bridge: subprocess.Popen[bytes]) -> list[int]:
    """Live processes whose parent is the bridge (setpriv execs the server in place)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if fields[0] != b"Z" and int(fields[1]) == bridge.pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def bridge(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    idle = getattr(request, "param", 600)
    port = free_port()
    argv = [sys.executable, "-m", "gateway.stdio.bridge", "--port", str(port), "--idle-timeout", str(idle)]
    proc = subprocess.Popen([*argv, "--max-sessions", "2", "--", sys.executable, "-m", "mcp_server_time"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/healthz").status_code == 200, timeout=30, what="bridge ready")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("bridge", [1.5], indirect=True)
def test_session_lifetime_delete_and_idle_timeout(bridge: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = bridge
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as http:
        first = http.post("/mcp", json=INIT)
        assert first.status_code == 200 and first.json()["result"]["serverInfo"]["name"] == "mcp-time"
        sid = first.headers["mcp-session-id"]
        assert len(children(proc)) == 1
        call = {"jsonrpc": "2.0", "id": "x", "method": "tools/list"}
        listed = http.post("/mcp", json=call, headers={"Mcp-Session-Id": sid})
        assert listed.json()["id"] == "x" and len(listed.json()["result"]["tools"]) == 2
        assert http.delete("/mcp", headers={"Mcp-Session-Id": sid}).status_code == 200
        wait_for(lambda: not children(proc), timeout=10, what="DELETE ends the process")
        gone = http.post("/mcp", json=call, headers={"Mcp-Session-Id": sid})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == -32001

        idle = http.post("/mcp", json=INIT).headers["mcp-session-id"]
        start = time.monotonic()
        wait_for(lambda: not children(proc), timeout=15, what="the idle session's process ends")
        assert time.monotonic() - start >= 1.0
        assert http.post("/mcp", json=call, headers={"Mcp-Session-Id": idle}).status_code == 404


def test_errors_are_json_rpc_with_the_request_id(bridge: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = bridge
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as http:
        parse = http.post("/mcp", content=b"{not json", headers={"content-type": "application/json"})
        assert parse.status_code == 400 and parse.json()["error"]["code"] == -32700
        unknown = http.post("/mcp", json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers={"Mcp-Session-Id": "x"})
        assert unknown.status_code == 404 and unknown.json()["id"] == 9  # issue 17: was null
        assert http.get("/mcp").status_code == 400  # no session: like real Streamable-HTTP servers
        sessions = [http.post("/mcp", json=INIT).headers["mcp-session-id"] for _ in range(2)]
        over = http.post("/mcp", json=INIT)
        assert over.status_code == 503 and over.headers["retry-after"] and over.json()["id"] == INIT["id"]
        for sid in sessions:
            http.delete("/mcp", headers={"Mcp-Session-Id": sid})


def test_stateless_requests_share_one_process_with_ids_restored(bridge: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = bridge
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }
    with httpx.Client(base_url=url, headers={**HEADERS, "MCP-Protocol-Version": "2026-07-28"}, timeout=30) as http:
        for request_id in ("a", 7, "a"):
            body = {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": "tools/call",
                "params": {"name": "get_current_time", "arguments": {"timezone": "UTC"}, "_meta": meta},
            }
            answer = http.post("/mcp", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["id"] == request_id and "mcp-session-id" not in answer.headers
    assert len(children(proc)) == 1
