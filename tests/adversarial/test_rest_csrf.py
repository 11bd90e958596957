"""A web page the developer visits cannot drive the REST control plane (dev auth, a real gateway).

What a browser may send cross-site without a preflight — a form or ``text/plain`` POST, with the
page's ``Origin``, or with a rebound DNS name in ``Host`` — is refused before anything happens:
415 for a body that is not JSON, 403 for a foreign Origin, 421 for a foreign Host; a preflight from
a foreign origin gets no CORS headers, one from ``MCPGW_ALLOWED_ORIGINS`` does. Each case checks
afterwards that no adapter was created.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.browser.hosts import HostPolicy
from tests.fixtures.gateway import GatewayProcess, start_gateway

CONFIGURED_ORIGIN = "https://console.example.com"
ADAPTER = {"name": "csrf-made", "imageName": "mcp-example", "imageVersion": "1.0.0", "replicaCount": 0}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir: Path = tmp_path_factory.mktemp("csrf") / "data"
    with start_gateway(data_dir, {"MCPGW_ALLOWED_ORIGINS": CONFIGURED_ORIGIN}) as gateway:
        yield gateway


@pytest.fixture
def raw(gw: GatewayProcess) -> Iterator[httpx.Client]:
    """A client that sends exactly the headers a test gives (no dev identity: a browser has none)."""
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        yield client


def nothing_created(gw: GatewayProcess) -> None:
    with gw.client() as client:
        assert client.get(f"/adapters/{ADAPTER['name']}").status_code == 404
        assert client.get("/adapters").json()["items"] == []


def assert_problem(response: httpx.Response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["field"] == field
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_json_sent_as_a_simple_request_body_is_415_and_creates_nothing(
    gw: GatewayProcess, raw: httpx.Client, content_type: str
) -> None:
    response = raw.post("/adapters", content=json.dumps(ADAPTER), headers={"Content-Type": content_type})
    assert_problem(response, 415, "Content-Type")
    assert content_type.split(";")[0] in response.json()["detail"]
    nothing_created(gw)


def test_a_body_without_content_type_is_415(gw: GatewayProcess, raw: httpx.Client) -> None:
    # fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])}) sends no Content-Type at all.
    response = raw.post("/adapters", content=json.dumps(ADAPTER).encode())
    assert "content-type" not in response.request.headers
    assert_problem(response, 415, "Content-Type")
    nothing_created(gw)


def test_put_with_a_form_body_is_415(gw: GatewayProcess, raw: httpx.Client) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = raw.put("/adapters/anything", content=b"a=b", headers=form)
    assert_problem(response, 415, "Content-Type")


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://127.0.0.1:3000", "http://localhost:5173", "null", "http://127.0.0.1.evil.example"],
)
def test_a_foreign_origin_is_403_even_with_a_json_body(gw: GatewayProcess, raw: httpx.Client, origin: str) -> None:
    response = raw.post("/adapters", json=ADAPTER, headers={"Origin": origin})
    assert_problem(response, 403, "Origin")
    assert_problem(raw.delete("/adapters/x", headers={"Origin": origin}), 403, "Origin")
    assert_problem(raw.get("/adapters", headers={"Origin": origin}), 403, "Origin")
    nothing_created(gw)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io"])
def test_a_foreign_host_is_421(gw: GatewayProcess, raw: httpx.Client, host: str) -> None:
    # DNS rebinding: evil.example resolved to 127.0.0.1 makes the attacker's page same-origin with us.
    response = raw.post("/adapters", json=ADAPTER, headers={"Host": host, "Origin": f"http://{host}"})
    assert_problem(response, 421, "Host")
    assert_problem(raw.get("/adapters", headers={"Host": host}), 421, "Host")
    nothing_created(gw)


def test_preflight_from_a_foreign_origin_gets_no_cors_headers(raw: httpx.Client) -> None:
    response = raw.options(
        "/adapters",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-dev-user-id",
        },
    )
    assert response.status_code == 403
    assert not [name for name in response.headers if name.startswith("access-control-")]


def test_preflight_and_request_from_a_configured_origin_get_cors_headers(gw: GatewayProcess, raw: httpx.Client) -> None:
    preflight = raw.options(
        "/adapters",
        headers={
            "Origin": CONFIGURED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-dev-user-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == CONFIGURED_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type, x-dev-user-id"
    listed = raw.get("/adapters", headers={"Origin": CONFIGURED_ORIGIN})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == CONFIGURED_ORIGIN
    assert "ETag" in listed.headers["access-control-expose-headers"]


def test_same_origin_json_requests_still_work(gw: GatewayProcess, raw: httpx.Client) -> None:
    """The Swagger UI at /openapi/swagger posts JSON with the gateway's own Origin."""
    own = gw.url
    created = raw.post(
        "/adapters",
        json={**ADAPTER, "name": "same-origin"},
        headers={"Origin": own, "Content-Type": "application/json; charset=utf-8"},
    )
    assert created.status_code == 201, created.text
    deleted = raw.delete("/adapters/same-origin", headers={"Origin": own})
    assert deleted.status_code == 204, deleted.text


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/openapi/openapi.json", "/.well-known/oauth-protected-resource"]
)
def test_probe_and_document_paths_answer_any_host_and_origin(raw: httpx.Client, path: str) -> None:
    """Load balancers probe with a pod IP as Host; browser MCP clients read RFC 9728 metadata cross-origin."""
    response = raw.get(path, headers={"Host": "10.1.2.3:8000"})
    assert response.status_code != 421, response.text
    assert raw.get(path, headers={"Origin": "https://inspector.example"}).status_code != 403


# --- the shared policy, directly ----------------------------------------------------------------


def _policy(**overrides: Any) -> HostPolicy:
    args: dict[str, Any] = {"listen_host": "127.0.0.1", "public_url": None, "hosts": (), "origins": ()}
    return HostPolicy(**{**args, **overrides})


@pytest.mark.parametrize(
    ("host", "origin", "rest", "mcp"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000", None, None),  # same origin
        ("127.0.0.1:8000", "http://127.0.0.1:8001", 403, None),  # another local port: MCP only
        ("[::1]:8000", "http://[::1]:8000", None, None),
        ("localhost", "http://localhost:80", None, None),  # default port written out
        ("127.0.0.1:8000", "https://127.0.0.1:8000", None, None),  # TLS terminated in front: same host:port
        ("127.0.0.1:8000", "http://[", 403, 403),  # malformed: refused, not an exception
        ("127.0.0.1:8000", "file://", 403, 403),
        ("evil.example", "http://evil.example", 421, 421),  # rebinding: Host first
    ],
)
def test_host_policy_rest_and_mcp_origins(host: str, origin: str, rest: int | None, mcp: int | None) -> None:
    policy = _policy()
    assert (policy.check(host, origin, loopback_origins=False) or (None,))[0] == rest
    assert (policy.check(host, origin) or (None,))[0] == mcp


def test_public_url_and_configured_origins_are_accepted_on_rest() -> None:
    policy = _policy(public_url="https://mcp.example.com", origins=(CONFIGURED_ORIGIN,), listen_host="0.0.0.0")
    assert policy.check("mcp.example.com", "https://mcp.example.com", loopback_origins=False) is None
    assert policy.check("mcp.example.com", CONFIGURED_ORIGIN + "/", loopback_origins=False) is None
    assert policy.check("10.0.0.7:8000", None, loopback_origins=False) == (
        421,
        "Host '10.0.0.7:8000' is not served by this gateway",
    )
