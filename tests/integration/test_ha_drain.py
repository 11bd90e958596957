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

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
DELAY, TIMEOUT = 1.5, 2.0
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture
def draining_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    env = {"MCPGW_DRAIN_DELAY": str(DELAY), "MCPGW_DRAIN_TIMEOUT": str(TIMEOUT)}
    with start_gateway(tmp_path / "data", env) as gw:
        with gw.client() as api:
            assert api.post("/adapters", json=example_adapter("dr", replicas=1)).status_code == 201
            wait_ready(api, "dr", 1)
        yield gw


def call(gw: GatewayProcess) -> int:
    return httpx.post(f"{gw.url}/adapters/dr/mcp", json=INIT, headers=ACCEPT, timeout=10).status_code


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
    at = ended["at"]
    assert isinstance(at, float), ended
    took = at - signalled
    assert DELAY + TIMEOUT - 0.5 < took < DELAY + TIMEOUT + 3, took
    assert gw.proc.wait(10) == 0
    log = gw.log_text()
    assert "ended 1 open stream(s)" in log


def test_sigterm_ends_2025_get_streams_at_once_and_their_connections_close_after_one_more_request(
    draining_gateway: GatewayProcess,
) -> None:
    """A GET stream opened before the drain ends when the drain begins, while the gateway still serves:
    the client's next request on that connection is answered, with ``Connection: close``, instead of
    racing the close of an idle keep-alive connection when the gateway stops accepting."""
    gw = draining_gateway
    url = f"{gw.url}/adapters/dr/mcp"
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1)) as http:  # one connection: reused
        opened = http.post(url, json=INIT, headers=ACCEPT)
        assert opened.status_code == 200
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert http.post(url, json=note, headers={**ACCEPT, **session}).status_code == 202
        with http.stream("GET", url, headers={"Accept": "text/event-stream", **session}) as stream:
            assert stream.status_code == 200 and "connection" not in stream.headers
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            stream.read()  # ends cleanly (a complete chunked body), well before the drain delay is over
            assert time.monotonic() - signalled < DELAY, time.monotonic() - signalled
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        answered = http.post(url, json=ping, headers={**ACCEPT, **session})
        assert answered.status_code == 200 and answered.headers["connection"] == "close"
    assert gw.proc.wait(DELAY + TIMEOUT + 10) == 0
    assert "ended 1 open stream(s)" in gw.log_text()
