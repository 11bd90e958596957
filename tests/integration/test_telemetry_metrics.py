"""GET /metrics and the access log of a real gateway process after real traffic."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, free_port, start_gateway, wait_for, wait_ready
from tests.fixtures.telemetry import CATALOG, scrape, total, value

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add"}}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_LOG_FORMAT": "json", "MCPGW_ACCESS_LOG": "all"}
    with start_gateway(tmp_path_factory.mktemp("telemetry") / "data", env) as g:
        with g.client() as api:
            for body in (
                example_adapter("rec", replicas=1, imageName="recorder", imageVersion="1.0"),
                example_adapter("empty", replicas=0, imageName="recorder", imageVersion="1.0"),
                example_adapter("ex", replicas=1),
            ):
                assert api.post("/adapters", json=body).status_code == 201
            wait_ready(api, "rec", 1)
            wait_ready(api, "ex", 1)
        yield g


def post(gw: GatewayProcess, adapter: str = "rec", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=CALL, headers={**ACCEPT, **(headers or {})}, timeout=10)


def access_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    lines = []
    for line in gw.log_text().splitlines():
        if line.startswith("{") and '"gateway.access"' in line:
            lines.append(json.loads(line))
    return lines


def test_requests_are_counted_by_adapter_era_method_and_status(gw: GatewayProcess) -> None:
    before = scrape(gw.url)
    modern = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "add"}
    for _ in range(3):
        assert post(gw, headers=modern).status_code == 200
    assert post(gw, headers={**modern, "x-test-status": "418"}).status_code == 418
    assert post(gw).status_code == 200  # no version, no session, no Mcp-Method: modern, method POST
    opened = post(gw, headers={"x-test-session": "upstream-1"})
    token = opened.headers["mcp-session-id"]
    assert post(gw, headers={"Mcp-Session-Id": token, "MCP-Protocol-Version": "2025-11-25"}).status_code == 200
    assert post(gw, adapter="empty", headers=modern).status_code == 503
    assert post(gw, adapter="no-such-adapter").status_code == 404

    after = scrape(gw.url)

    def moved(**labels: str) -> float:
        return value(after, "mcpgw_requests_total", **labels) - value(before, "mcpgw_requests_total", **labels)

    assert moved(adapter="rec", era="modern", method="tools/call", status="200") == 3
    assert moved(adapter="rec", era="modern", method="tools/call", status="418") == 1
    assert moved(adapter="rec", era="modern", method="POST", status="200") == 1
    assert moved(adapter="rec", era="session", method="POST", status="200") == 2  # the initialize and the call
    assert moved(adapter="empty", era="modern", method="tools/call", status="503") == 1
    assert moved(adapter="unknown", era="unknown", method="POST", status="404") == 1
    assert not any(
        dict(labels).get("adapter") == "no-such-adapter" for name, labels in after if name.startswith("mcpgw_")
    ), "a client-chosen adapter name became a label"

    upstream = total(after, "mcpgw_upstream_latency_seconds_count", adapter="rec")
    assert upstream - total(before, "mcpgw_upstream_latency_seconds_count", adapter="rec") == 7
    overhead = value(after, "mcpgw_gateway_overhead_seconds_count", adapter="rec")
    assert overhead - value(before, "mcpgw_gateway_overhead_seconds_count", adapter="rec") == 7
    assert value(after, "mcpgw_gateway_overhead_seconds_bucket", adapter="rec", le="+Inf") == overhead
    assert 0 < value(after, "mcpgw_gateway_overhead_seconds_sum", adapter="rec") < overhead * 1.0

    assert value(after, "mcpgw_sessions_active", adapter="rec", replica="rec-0") >= 1
    assert value(after, "mcpgw_session_store_latency_seconds_count", operation="open") >= 1
    assert value(after, "mcpgw_replicas_ready", adapter="rec") == 1
    assert value(after, "mcpgw_replicas_ready", adapter="empty") == 0
    assert value(after, "mcpgw_replicas_ready", adapter="ex") == 1


def test_control_plane_store_runtime_and_reconciler_series(gw: GatewayProcess) -> None:
    series = scrape(gw.url)
    assert value(series, "mcpgw_store_latency_seconds_count", operation="create") == 3
    assert value(series, "mcpgw_store_latency_seconds_count", operation="list") >= 1
    assert value(series, "mcpgw_runtime_latency_seconds_count", operation="apply") >= 3
    assert value(series, "mcpgw_runtime_latency_seconds_count", operation="deployed") >= 1
    assert value(series, "mcpgw_reconcile_passes_total") >= 1
    assert value(series, "mcpgw_reconcile_actions_total") >= 3
    assert value(series, "mcpgw_reconcile_failures_total") == 0
    assert value(series, "mcpgw_store_errors_total", operation="create") == 0
    with gw.client() as api:
        assert api.get("/adapters/rec/logs", params={"instance": 5}).status_code == 404
    later = scrape(gw.url)
    assert value(later, "mcpgw_runtime_errors_total", operation="logs") == 0  # an answer, not a failure


def test_open_streams_gauge_follows_sse_responses(gw: GatewayProcess) -> None:
    seen: list[float] = []

    def stream() -> None:
        headers = {**ACCEPT, "x-test-stream": "3", "x-test-interval": "1.0", "Mcp-Method": "tools/call"}
        with httpx.stream("POST", f"{gw.url}/adapters/rec/mcp", json=CALL, headers=headers, timeout=10) as r:
            for _ in r.iter_raw():
                pass

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        seen.append(wait_for(lambda: value(scrape(gw.url), "mcpgw_open_streams") == 1, timeout=5, what="1 stream"))
    finally:
        thread.join(timeout=10)
    assert value(scrape(gw.url), "mcpgw_open_streams") == 0

    # legacy SSE: GET /sse on the example server, held open until the endpoint event arrived
    sse = {"adapter": "ex", "era": "legacy-sse", "method": "GET", "status": "200"}
    before = value(scrape(gw.url), "mcpgw_requests_total", **sse)
    with httpx.stream("GET", f"{gw.url}/adapters/ex/sse", headers={"Accept": "text/event-stream"}, timeout=10) as r:
        assert r.status_code == 200
        chunks = r.iter_text()  # kept open: closing the iterator would close the stream
        received = ""
        while "/adapters/ex/messages?session_id=" not in received:
            received += next(chunks)
        wait_for(lambda: value(scrape(gw.url), "mcpgw_open_streams") == 1, timeout=5, what="the SSE stream")
    wait_for(
        lambda: value(scrape(gw.url), "mcpgw_requests_total", **sse) == before + 1,
        timeout=5,
        what="the legacy SSE request to be counted",
    )
    assert value(scrape(gw.url), "mcpgw_open_streams") == 0


def test_access_log_is_one_json_object_per_request_without_secrets(gw: GatewayProcess) -> None:
    opened = post(gw, headers={"x-test-session": "upstream-secret-id", "Authorization": f"Bearer {JWT}"})
    token = opened.headers["mcp-session-id"]
    response = post(
        gw,
        headers={
            "Mcp-Session-Id": token,
            "Authorization": f"Bearer {JWT}",
            "X-Request-Id": "req-42",
            "traceparent": TRACEPARENT,
        },
    )
    assert response.status_code == 200
    # no exporter configured: the gateway makes no span and forwards the client's traceparent as is
    assert response.json()["result"]["headers"]["traceparent"] == TRACEPARENT
    assert httpx.post(f"{gw.url}/adapters/evil%0A%22injected/mcp", json=CALL, headers=ACCEPT).status_code == 404

    def logged() -> list[dict[str, Any]]:
        lines = access_lines(gw)
        both = any(line.get("request_id") == "req-42" for line in lines) and any(
            "injected" in str(line.get("adapter")) for line in lines
        )
        return lines if both else []

    lines = wait_for(logged, timeout=5, what="both access log lines")
    line = next(line for line in lines if line.get("request_id") == "req-42")
    assert line["logger"] == "gateway.access" and line["level"] == "info"
    assert line["adapter"] == "rec" and line["era"] == "session" and line["replica"] == "rec-0"
    assert line["status"] == 200 and line["method"] == "POST" and line["route"] == "mcp"
    assert line["user"] == hashlib.sha256(b"dev").hexdigest()[:16]
    assert line["duration_ms"] > 0 and 0 < line["upstream_ms"] <= line["duration_ms"]
    evil = [line for line in lines if "injected" in str(line.get("adapter"))]
    assert evil and "\n" not in evil[0]["adapter"] and evil[0]["status"] == 404
    text = gw.log_text()
    assert JWT not in text and token not in text and "upstream-secret-id" not in text
    for raw in text.splitlines():
        if raw.startswith("{"):
            json.loads(raw)  # every line of the JSON format is one object


def test_session_store_errors_are_counted(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_SESSIONS": "redis", "MCPGW_REDIS_URL": dead}
    with start_gateway(tmp_path / "data", env) as g:
        with g.client() as api:
            body = example_adapter("rec", replicas=1, imageName="recorder", imageVersion="1.0")
            assert api.post("/adapters", json=body).status_code == 201
            wait_ready(api, "rec", 1)
        assert post(g, headers={"x-test-session": "s-1"}).status_code == 503
        series = scrape(g.url)
        assert value(series, "mcpgw_session_store_errors_total", operation="open") >= 1
        assert value(series, "mcpgw_requests_total", adapter="rec", era="session", method="POST", status="503") == 1
        assert post(g).status_code == 200
        # the default access log keeps failures only
        logged = wait_for(lambda: [line for line in access_lines(g) if line["status"] == 503], timeout=5, what="503")
        assert logged[0]["era"] == "session" and logged[0]["replica"] == "rec-0"
        assert not [line for line in access_lines(g) if line["status"] == 200]


def test_metrics_can_be_disabled(tmp_path: Path) -> None:
    with start_gateway(tmp_path / "data", {"MCPGW_METRICS_ENABLED": "false"}) as g:
        assert httpx.get(g.url + "/metrics").status_code == 404
        assert httpx.get(g.url + "/healthz").status_code == 200
        assert "/metrics" not in json.dumps(httpx.get(g.url + "/openapi/openapi.json").json()["paths"])


def test_metrics_token_is_required_when_set_and_never_shown(tmp_path: Path) -> None:
    token = "metrics-Token_0123456789abcdef"
    with start_gateway(tmp_path / "data", {"MCPGW_METRICS_TOKEN": token, "MCPGW_LOG_LEVEL": "debug"}) as g:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            refused = httpx.get(g.url + "/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
            assert "MCPGW_METRICS_TOKEN" in refused.json()["detail"] and token not in refused.text
        allowed = httpx.get(g.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        assert "mcpgw_reconcile_passes" in allowed.text
        assert httpx.get(g.url + "/healthz").status_code == 200
        logs = g.log_text()
    assert logs and token not in logs
