"""Strict upstream framing end to end: a real gateway in front of a malicious replica.

The replica is tests/adversarial/malicious_upstream.py run by the local runtime (image
``malicious:1``); the ``x-evil`` request header picks how it misbehaves. What a client sees is
checked with httpx and, where the exact bytes matter (a response cut without its terminating
chunk), with a raw socket.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.adversarial.malicious_upstream import catalog
from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("evil")
    env = {
        "MCPGW_IMAGE_CATALOG": str(catalog(tmp / "catalog.toml")),
        "MCPGW_UPSTREAM_READ_TIMEOUT": "3",
        "MCPGW_UPSTREAM_CONNECT_TIMEOUT": "0.5",
        "MCPGW_UPSTREAM_POOL_SIZE": "2",
    }
    with start_gateway(tmp / "data", env) as g:
        with g.client() as api:
            for name in ("evil", "evil-kill"):
                body = example_adapter(name, imageName="malicious", imageVersion="1")
                assert api.post("/adapters", json=body).status_code == 201, name
            wait_ready(api, "evil", 1)
            wait_ready(api, "evil-kill", 1)
        yield g


def call(gw: GatewayProcess, evil: str = "", user: str = "dev", adapter: str = "evil", **kw: Any) -> httpx.Response:
    headers = {**ACCEPT, "X-Dev-User-Id": user, "X-Dev-Roles": "mcp.admin"}
    if evil:
        headers["x-evil"] = evil
    headers.update(kw.pop("headers", {}))
    return httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=CALL, headers=headers, timeout=10, **kw)


def raw_call(gw: GatewayProcess, evil: str, adapter: str = "evil", route: str = "mcp") -> bytes:
    """Everything the gateway sends back on one connection, until it closes it or ends the body cleanly."""
    body = json.dumps(CALL).encode() if route == "mcp" else b""
    method = "POST" if route == "mcp" else "GET"
    request = (
        f"{method} /adapters/{adapter}/{route} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nX-Dev-User-Id: dev\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"x-evil: {evil}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    received = b""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
            if received.endswith(b"\r\n0\r\n\r\n"):  # a clean end: the connection stays open
                break
    return received


def bad_gateway(response: httpx.Response) -> str:
    assert response.status_code == 502, (response.status_code, response.text[:300])
    message: str = response.json()["error"]["message"]
    return message


def test_user_b_never_receives_bytes_meant_for_user_a(gw: GatewayProcess) -> None:
    for n in range(3):
        # alice's answer is followed by a forged answer carrying her data, held back until the
        # next request arrives on her connection (her own next request would get it: on one
        # connection that cannot be told apart, which is why connections are per identity)
        first = call(gw, "late-bytes", user=f"alice-{n}")
        assert first.json()["result"] == {"user": f"alice-{n}"}
        second = call(gw, user="bob")
        assert second.status_code == 200 and second.json()["result"]["user"] == "bob", second.text


def test_a_body_that_breaks_off_before_the_answer_started_is_502(gw: GatewayProcess) -> None:
    assert "closed the connection in the middle of the body" in bad_gateway(call(gw, "content-length-truncated"))
    assert "middle of the body" in bad_gateway(call(gw, "chunked-truncated"))


@pytest.mark.parametrize("evil", ["sse-cut", "json-cut-late"])
def test_a_body_that_breaks_off_mid_stream_aborts_the_client_connection(gw: GatewayProcess, evil: str) -> None:
    received = raw_call(gw, evil)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert len(body) > 20, "the part that arrived was forwarded"
    assert not body.endswith(b"0\r\n\r\n"), "a truncated body was reported as complete"
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", f"{gw.url}/adapters/evil/mcp", json=CALL, headers={**ACCEPT, "x-evil": evil}, timeout=10
        ) as response,
    ):
        response.read()


def test_a_replica_killed_mid_stream_aborts_the_client_connection(gw: GatewayProcess) -> None:
    received = raw_call(gw, "sse-kill", adapter="evil-kill")
    assert received.startswith(b"HTTP/1.1 200") and b'data: {"n": 1}' in received
    assert not received.endswith(b"0\r\n\r\n")
    with gw.client() as api:
        wait_ready(api, "evil-kill", 1, timeout=30)


def test_legacy_sse_streams_use_the_same_rules(gw: GatewayProcess) -> None:
    received = raw_call(gw, "legacy-sse-cut", route="sse")
    assert received.startswith(b"HTTP/1.1 200") and b"/adapters/evil/messages?session_id=" in received
    assert b'data: {"n": 0}' in received and not received.endswith(b"0\r\n\r\n")
    response = httpx.get(
        f"{gw.url}/adapters/evil/sse", headers={"Accept": "text/event-stream", "x-evil": "status-600"}, timeout=10
    )
    assert "sent an invalid response" in bad_gateway(response)
    assert "Traceback" not in gw.log_text()


@pytest.mark.parametrize(
    "evil", ["status-000", "status-99", "status-600", "status-199-with-body", "status-101-unasked"]
)
def test_statuses_outside_100_599_and_bad_interims_are_502_at_once(gw: GatewayProcess, evil: str) -> None:
    started = time.monotonic()
    message = bad_gateway(call(gw, evil))
    assert "evil-0" in message
    assert time.monotonic() - started < 2, "the gateway waited for the read timeout"


@pytest.mark.parametrize(
    "evil", ["huge-header", "many-header-fields", "two-responses-in-one-read", "excess-body", "not-http"]
)
def test_oversized_heads_and_mis_framed_answers_are_502(gw: GatewayProcess, evil: str) -> None:
    assert "sent" in bad_gateway(call(gw, evil))
    assert call(gw).status_code == 200  # the next request gets a clean connection


def test_pool_exhaustion_is_503_with_retry_after_not_504(gw: GatewayProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as workers:
        busy = [workers.submit(call, gw, "sleep", user=f"sleeper-{n}", headers={"x-sleep": "2"}) for n in range(2)]
        time.sleep(0.5)
        response = call(gw, user="third")
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] and "busy" in response.json()["error"]["message"]
        assert all(f.result().status_code == 200 for f in busy)


def test_aborts_are_counted_and_leave_no_traceback(gw: GatewayProcess) -> None:
    raw_call(gw, "sse-cut")
    metrics = httpx.get(f"{gw.url}/metrics").text
    closed = re.search(r'^mcpgw_upstream_truncated_total\{reason="closed"\} (\d+)', metrics, re.M)
    assert closed is not None and int(closed.group(1)) >= 1, metrics[-2000:]
    assert "Traceback" not in gw.log_text()
    assert "aborting the response from replica evil-0" in gw.log_text()
