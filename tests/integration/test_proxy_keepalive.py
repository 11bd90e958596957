"""SSE keep-alive on idle relayed streams (issue 14, item 6), against a real gateway and the recorder.

The gateway sends ``: keep-alive`` comments when a relayed SSE stream has been silent for
``MCPGW_SSE_KEEPALIVE_INTERVAL`` (0.2 s here), only between events; with the comments removed the
client receives exactly the upstream's bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
KEEPALIVE = b": keep-alive\n\n"
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow", "arguments": {}}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_SSE_KEEPALIVE_INTERVAL": "0.2"}
    with start_gateway(tmp_path_factory.mktemp("keepalive") / "data", env) as g:
        with g.client() as api:
            body = example_adapter("rec", replicas=1, imageName="recorder", imageVersion="1.0")
            assert api.post("/adapters", json=body).status_code == 201
            assert api.post("/adapters", json=example_adapter("ex", replicas=1)).status_code == 201
            wait_ready(api, "rec", 1)
            wait_ready(api, "ex", 1)
        yield g


def stream(gw: GatewayProcess, headers: dict[str, str]) -> bytes:
    with httpx.stream(
        "POST", f"{gw.url}/adapters/rec/mcp", json=CALL, headers={**ACCEPT, **headers}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_raw())


def expected_events(count: int) -> bytes:
    out = b""
    for index in range(count):
        event = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"n": index}})
        out += f"id: ev-{index}\nretry: 1000\nevent: message\ndata: {event}\n\n".encode()
    return out


def test_idle_stream_gets_keepalive_comments_between_events_and_events_arrive_unchanged(gw: GatewayProcess) -> None:
    raw = stream(gw, {"x-test-stream": "3", "x-test-interval": "0.7"})
    assert raw.count(KEEPALIVE) >= 3, raw  # three gaps of 0.7 s at a 0.2 s interval
    cleaned = raw.replace(KEEPALIVE, b"")
    assert cleaned.startswith(expected_events(3)), cleaned
    final = json.loads(cleaned[len(expected_events(3)) :].split(b"data: ", 1)[1])
    assert final["id"] == 7 and final["result"]["method"] == "POST"
    # every comment sits between events: the bytes before it end with a blank line (or nothing was sent)
    at = 0
    while (at := raw.find(KEEPALIVE, at)) >= 0:
        assert at == 0 or raw[:at].endswith(b"\n\n"), raw[:at][-80:]
        at += len(KEEPALIVE)


def test_no_keepalive_inside_an_event(gw: GatewayProcess) -> None:
    # each event arrives in two halves 0.7 s apart: the pause inside an event gets no comment
    raw = stream(gw, {"x-test-stream": "2", "x-test-interval": "0.7", "x-test-split": "1"})
    cleaned = raw.replace(KEEPALIVE, b"")
    assert cleaned.startswith(expected_events(2)), cleaned
    at = 0
    while (at := raw.find(KEEPALIVE, at)) >= 0:
        assert at == 0 or raw[:at].endswith(b"\n\n"), raw[:at][-80:]
        at += len(KEEPALIVE)
    assert raw.count(KEEPALIVE) >= 1  # the gaps after whole events still get them


def test_json_answers_get_no_keepalive(gw: GatewayProcess) -> None:
    response = httpx.post(f"{gw.url}/adapters/rec/mcp", json=CALL, headers={**ACCEPT, "x-test-sleep": "0.6"})
    assert response.status_code == 200 and response.json()["id"] == 7


def test_idle_legacy_sse_stream_gets_keepalive_comments_after_its_endpoint_event(gw: GatewayProcess) -> None:
    received = b""
    with httpx.stream("GET", f"{gw.url}/adapters/ex/sse", headers={"Accept": "text/event-stream"}, timeout=10) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            received += chunk
            if received.count(KEEPALIVE) >= 2:
                break
    endpoint, _, rest = received.partition(b"\r\n\r\n" if b"\r\n\r\n" in received else b"\n\n")
    assert endpoint.startswith(b"event: endpoint") and b"/adapters/ex/messages?session_id=" in endpoint
    assert rest.startswith(KEEPALIVE), received
