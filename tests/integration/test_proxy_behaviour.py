"""Data-plane rules (DESIGN.md §2) against a real gateway and a header-recording upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import (
    GatewayProcess,
    example_adapter,
    replica_processes,
    start_gateway,
    wait_for,
    wait_ready,
)

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_MAX_BODY_BYTES": "4096",
        "MCPGW_UPSTREAM_READ_TIMEOUT": "2",
    }
    with start_gateway(tmp_path_factory.mktemp("proxy") / "data", env) as g:
        with g.client() as api:
            for name, replicas in (("rec", 1), ("rec-other", 1), ("empty", 0)):
                body = example_adapter(name, replicas=replicas, imageName="recorder", imageVersion="1.0")
                assert api.post("/adapters", json=body).status_code == 201
            wait_ready(api, "rec", 1)
            wait_ready(api, "rec-other", 1)
        yield g


def post(
    gw: GatewayProcess, adapter: str = "rec", headers: dict[str, str | bytes] | None = None, **kw: Any
) -> httpx.Response:
    # A value may be bytes (a non-ASCII header); httpx's annotation takes one kind per mapping, so all go
    # as bytes, str ones encoded as httpx itself would (ASCII).
    sent = [
        (name.encode("ascii"), value if isinstance(value, bytes) else value.encode("ascii"))
        for name, value in {**ACCEPT, **(headers or {})}.items()
    ]
    return httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=kw.pop("json", INIT), headers=sent, **kw)


def report(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def jsonrpc_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], int) and error["message"]
    return error


def test_client_credentials_and_identity_claims_never_reach_the_upstream(gw: GatewayProcess) -> None:
    sent: dict[str, str | bytes] = {
        "Authorization": "Bearer client-secret-token",
        "Cookie": "session=abc",
        "X-Mcp-User-Id": "mallory",
        "X-Mcp-Roles": "mcp.admin",
        "X-Forwarded-For": "10.9.9.9",
        "X-Real-IP": "10.8.8.8",
        "X-Custom-Hop": "hop-only",
        "X-Utf8": "café".encode(),
        "X-Dev-User-Id": "dev",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "add",
        "Mcp-Param-Region": "=?base64?ZXU=?=",
        "MCP-Protocol-Version": "2026-07-28",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Connection": "keep-alive, X-Custom-Hop",
    }
    seen = report(post(gw, headers=sent))["headers"]
    assert "authorization" not in seen and "cookie" not in seen
    assert seen["x-mcp-user-id"] == "dev" and seen["x-mcp-roles"] == ""
    # the peer is no trusted proxy: its X-Forwarded-For and X-Real-IP are not believed
    assert seen["x-forwarded-for"] == "127.0.0.1" and "x-real-ip" not in seen
    assert "x-custom-hop" not in seen  # named in Connection: hop-by-hop
    assert seen["x-utf8"] == "café"  # header bytes pass unchanged (were latin-1 → UTF-8 double-encoded)
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == gw.url.removeprefix("http://")
    assert seen["host"] != gw.url.removeprefix("http://")  # the upstream's own address
    assert seen["mcp-method"] == "tools/call" and seen["mcp-name"] == "add"
    assert seen["mcp-param-region"] == "=?base64?ZXU=?="
    assert seen["mcp-protocol-version"] == "2026-07-28"
    assert seen["traceparent"].startswith("00-0af7651916cd43dd")
    assert "x-dev-user-id" not in seen and "connection" not in seen
    # the gateway checked Origin itself; the upstream's own rebinding check must not see a browser origin
    assert "origin" not in report(post(gw, headers={"Origin": "http://localhost:6274"}))["headers"]


def test_upstream_status_headers_and_body_pass_through_unchanged(gw: GatewayProcess) -> None:
    response = post(gw, headers={"x-test-status": "418"})
    assert response.status_code == 418
    assert response.headers["x-test-upstream"] == "yes"
    assert response.json()["result"]["replica"] == "rec-0"


def test_sse_is_streamed_event_by_event(gw: GatewayProcess) -> None:
    arrivals: list[float] = []
    start = time.monotonic()
    with httpx.stream(
        "POST",
        f"{gw.url}/adapters/rec/mcp",
        json=INIT,
        headers={**ACCEPT, "x-test-stream": "4", "x-test-interval": "0.4"},
        timeout=10,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = ""
        for chunk in response.iter_raw():
            arrivals.append(time.monotonic() - start)
            text += chunk.decode()
    assert arrivals[0] < 0.9, f"first event arrived only after {arrivals[0]:.2f}s: buffered"
    assert arrivals[-1] > 1.4
    assert "id: ev-0\nretry: 1000\n" in text and "id: ev-3" in text and '"replica": "rec-0"' in text


def test_client_disconnect_cancels_the_upstream_request(gw: GatewayProcess) -> None:
    _, port = replica_processes(gw.data_dir)["rec-0"]
    before = httpx.get(f"http://127.0.0.1:{port}/stats").json()["cancelled"]
    with pytest.raises(httpx.ReadTimeout):
        post(gw, headers={"x-test-sleep": "1.5"}, timeout=0.4)
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/stats").json()["cancelled"] == before + 1,
        timeout=5,
        what="the upstream to see the cancellation",
    )


def test_body_over_the_limit_gets_413(gw: GatewayProcess) -> None:
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": "y" * 5000}}
    jsonrpc_error(post(gw, json=big), 413)

    def chunks() -> Iterator[bytes]:
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    chunked = httpx.post(f"{gw.url}/adapters/rec/mcp", content=chunks(), headers=ACCEPT)
    jsonrpc_error(chunked, 413)
    assert report(post(gw, json={**big, "params": {"x": "y" * 3000}}))["bodyLength"] > 3000


def test_foreign_host_and_origin_are_refused_before_forwarding(gw: GatewayProcess) -> None:
    jsonrpc_error(post(gw, headers={"Host": "evil.example.com"}), 421)
    jsonrpc_error(post(gw, headers={"Origin": "http://evil.example.com"}), 403)
    jsonrpc_error(post(gw, headers={"Origin": "null"}), 403)
    assert post(gw, headers={"Origin": "http://localhost:6274"}).status_code == 200
    assert post(gw, headers={"Host": f"localhost:{gw.port}"}).status_code == 200


def test_gateway_errors_are_jsonrpc_with_meaningful_status(gw: GatewayProcess) -> None:
    jsonrpc_error(post(gw, adapter="missing"), 404)
    error = jsonrpc_error(post(gw, adapter="empty"), 503)
    assert "no ready replica" in error["message"]
    assert post(gw, adapter="empty").headers["retry-after"]
    response = httpx.put(f"{gw.url}/adapters/rec/mcp", json=INIT)
    jsonrpc_error(response, 405)
    assert response.headers["allow"] == "POST, GET, DELETE"
    with gw.client("stranger") as other:
        jsonrpc_error(other.post("/adapters/rec/mcp", json=INIT, headers=ACCEPT), 403)


def test_gateway_errors_answer_the_request_id_when_the_mcp_stages_parsed_the_body(gw: GatewayProcess) -> None:
    # Issue 17: errors carried id null. With a stage configured (here rateLimits) the body is parsed
    # anyway, so an error made after it answers the request's id; a batch, a notification and a body
    # that is not JSON-RPC keep null, and an adapter without stages still never has its body read.
    limits = [{"per": "user", "requests": 1000, "seconds": 60}]
    body = example_adapter("limited", replicas=0, imageName="recorder", imageVersion="1.0", rateLimits=limits)
    with gw.client() as api:
        assert api.post("/adapters", json=body).status_code == 201
    try:
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "add"}}
        no_replica = post(gw, adapter="limited", json=call)
        assert no_replica.status_code == 503 and no_replica.json()["id"] == 7, no_replica.text
        assert no_replica.json()["error"]["code"] == -32002
        forged = post(gw, adapter="limited", json={**call, "id": "s-1"}, headers={"Mcp-Session-Id": "forged"})
        assert forged.status_code == 404 and forged.json()["id"] == "s-1", forged.text
        for without_id in ([call], {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"no": "method"}):
            response = post(gw, adapter="limited", json=without_id)
            assert response.status_code == 503 and response.json()["id"] is None, response.text
        unparsable = httpx.post(f"{gw.url}/adapters/limited/mcp", content=b"{not json", headers=ACCEPT)
        assert unparsable.status_code == 503 and unparsable.json()["id"] is None
        assert jsonrpc_error(post(gw, adapter="empty", json=call), 503)  # no stage: the body is not read
    finally:
        with gw.client() as api:
            assert api.delete("/adapters/limited").status_code == 204


def test_upstream_timeout_is_504(gw: GatewayProcess) -> None:
    error = jsonrpc_error(post(gw, headers={"x-test-sleep": "4"}, timeout=10), 504)
    assert "rec-0" in error["message"]


def test_upstream_session_ids_are_sealed_and_restored(gw: GatewayProcess) -> None:
    upstream_id = "abc_DEF-123.x~"
    opened = post(gw, headers={"x-test-session": upstream_id})
    token = opened.headers["mcp-session-id"]
    assert upstream_id not in token and token.isascii() and token.isprintable() and " " not in token
    seen = report(post(gw, headers={"Mcp-Session-Id": token}))["headers"]
    assert seen["mcp-session-id"] == upstream_id

    jsonrpc_error(post(gw, headers={"Mcp-Session-Id": "forged-session"}), 404)
    jsonrpc_error(post(gw, headers={"Mcp-Session-Id": token[:-2] + "AA"}), 404)
    jsonrpc_error(post(gw, adapter="rec-other", headers={"Mcp-Session-Id": token}), 404)
    # eve may use the adapter (admin), but the session is not hers
    jsonrpc_error(post(gw, headers={"Mcp-Session-Id": token, "X-Dev-User-Id": "eve", "X-Dev-Roles": "mcp.admin"}), 404)

    deleted = httpx.delete(f"{gw.url}/adapters/rec/mcp", headers={"Mcp-Session-Id": token})
    assert deleted.status_code == 200
    jsonrpc_error(post(gw, headers={"Mcp-Session-Id": token}), 404)


def test_replica_dying_mid_request_is_502_and_the_gateway_keeps_serving(gw: GatewayProcess) -> None:
    error = jsonrpc_error(post(gw, adapter="rec-other", headers={"x-test-exit": "1"}), 502)
    assert "rec-other-0" in error["message"]
    with gw.client() as api:
        # The status may still say ready for a moment after the exit (the supervisor notices the death
        # asynchronously): wait for the restart itself, then for readiness.
        wait_for(
            lambda: any(i["restarts"] >= 1 for i in api.get("/adapters/rec-other/status").json()["instances"]),
            timeout=30,
            what="rec-other-0 restarted",
        )
        wait_ready(api, "rec-other", 1, timeout=30)
    assert report(post(gw, adapter="rec-other"))["replica"] == "rec-other-0"
    assert "Traceback" not in gw.log_text()


def test_browser_clients_get_cors_for_accepted_origins_only(gw: GatewayProcess) -> None:
    url = f"{gw.url}/adapters/rec/mcp"
    preflight = httpx.options(
        url,
        headers={
            "Origin": "http://localhost:6274",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, mcp-session-id, mcp-protocol-version",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:6274"
    assert preflight.headers["access-control-allow-methods"] == "POST, GET, DELETE"
    assert "mcp-session-id" in preflight.headers["access-control-allow-headers"]
    jsonrpc_error(httpx.options(url, headers={"Origin": "http://evil.example.com"}), 403)

    opened = post(gw, headers={"Origin": "http://localhost:6274", "x-test-session": "s-1"})
    assert opened.headers["access-control-allow-origin"] == "http://localhost:6274"
    assert "Mcp-Session-Id" in opened.headers["access-control-expose-headers"]
    assert "WWW-Authenticate" in opened.headers["access-control-expose-headers"]
    missing = post(gw, adapter="missing", headers={"Origin": "http://localhost:6274"})
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "http://localhost:6274"
    assert "access-control-allow-origin" not in post(gw).headers
