"""A gateway that gets SIGTERM drains (issue 13): not-ready at once, still serving for drain_delay,
open streams ended cleanly after drain_timeout, then it exits. Embedded mode, one real process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_process import GatewayProcess, example_adapter, start_gateway, wait_ready

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
DELAY, TIMEOUT = 1.5, 2.0


@pytest.fixture
def draining_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    env = {"MCPGW_DRAIN_DELAY": str(DELAY), "MCPGW_DRAIN_TIMEOUT": str(TIMEOUT)}
    with start_gateway(tmp_path / "data", env) as gw:
        with gw.client() as api:
            assert api.post("/adapters", json=example_adapter("dr", replicas=1)).status_code == 201
            wait_ready(api, "dr", 1)
        yield gw


def call(gw: GatewayProcess) -> int:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    return httpx.post(f"{gw.url}/adapters/dr/mcp", json=init, headers=ACCEPT, timeout=10).status_code


def test_sigterm_reports_not_ready_keeps_serving_then_ends_streams_cleanly(draining_gateway: GatewayProcess) -> None:
    gw = draining_gateway
    assert httpx.get(gw.url + "/readyz").status_code == 200
    ended: dict[str, object] = {}

    def hold_stream(ready: threading.Event) -> None:
        try:
            with httpx.stream("GET", f"{gw.url}/adapters/dr/sse", headers={"Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                for chunk in r.iter_text():
                    if "session_id=" in chunk:
                        ready.set()
            ended["clean"] = True  # the chunked body ended with its last chunk: no reset, no truncation
        except Exception as exc:
            ended["error"] = exc
        ended["at"] = time.monotonic()
        ready.set()

    ready = threading.Event()
    reader = threading.Thread(target=hold_stream, args=(ready,))
    reader.start()
    assert ready.wait(10) and "error" not in ended

    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    readyz = httpx.get(gw.url + "/readyz", timeout=2)
    assert readyz.status_code == 503 and readyz.json()["status"] == "draining"
    assert time.monotonic() - signalled < DELAY
    assert call(gw) == 200  # still accepting and serving during the drain delay

    reader.join(DELAY + TIMEOUT + 10)
    assert ended.get("clean") is True, ended
    took = float(ended["at"]) - signalled  # type: ignore[arg-type]
    assert DELAY + TIMEOUT - 0.5 < took < DELAY + TIMEOUT + 3, took
    assert gw.proc.wait(10) == 0
    log = gw.log_text()
    assert "ended 1 open stream(s)" in log
