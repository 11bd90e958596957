"""Upstream credentials (issue 18) through a real gateway process and a recording upstream.

Entra mode: the gateway validates user tokens against the local provider (http), and exchanges them
on behalf of the user with MSAL against the provider's https listener (MCPGW_OBO_AUTHORITY; the test CA
reaches MSAL through REQUESTS_CA_BUNDLE). The recorder (tests/upstreams/recorder.py) reports the headers
it received. Embedded mode: a secret set with the CLI reaches the upstream and nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.fixtures.auth import OidcServer, entra_gateway_env
from tests.fixtures.gateway import REPO, GatewayProcess, example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.tls import TlsFiles

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}
SCOPE = "api://upstream-api/.default"


@pytest.fixture(scope="module")
def entra_gw(idp: OidcServer, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("upauth") / "data"
    env = {
        **entra_gateway_env(idp, tls),
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_LOG_LEVEL": "debug",
    }
    with start_gateway(data, env) as gw:
        creator = {"Authorization": f"Bearer {idp.entra_token('oid-creator')}"}
        with httpx.Client(base_url=gw.url, headers=creator, timeout=30) as client:
            body = example_adapter(
                "obo",
                imageName="recorder",
                imageVersion="1.0",
                requiredRoles=["reader-role"],
                upstreamAuth={"type": "entra-obo", "scopes": [SCOPE]},
            )
            created = client.post("/adapters", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["upstreamAuth"] == {"type": "entra-obo", "scopes": [SCOPE]}
            wait_ready(client, "obo", 1)
        yield gw


def call(gw: GatewayProcess, token: str, adapter: str = "obo", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/adapters/{adapter}/mcp",
        json=TOOLS_LIST,
        headers={**ACCEPT, "Authorization": f"Bearer {token}", **headers},
        timeout=30,
    )


def upstream_token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    seen: dict[str, str] = response.json()["result"]["headers"]
    scheme, _, token = seen["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def test_each_user_reaches_the_upstream_with_their_own_exchanged_token(
    entra_gw: GatewayProcess, idp: OidcServer
) -> None:
    token_a, token_b = idp.entra_token("oid-a", ["reader-role"]), idp.entra_token("oid-b", ["reader-role"])
    seen_a = [upstream_token(call(entra_gw, token_a)) for _ in range(4)]
    seen_b = upstream_token(call(entra_gw, token_b))
    a, b = (
        jwt.decode(seen_a[0], options={"verify_signature": False}),
        jwt.decode(seen_b, options={"verify_signature": False}),
    )
    assert (a["oid"], a["aud"]) == ("oid-a", "api://upstream-api")
    assert b["oid"] == "oid-b"
    assert len(set(seen_a)) == 1 and seen_b != seen_a[0]
    assert token_a not in seen_a and seen_b != token_b  # the client's own token never goes upstream
    # One exchange per user for the token's lifetime, however many calls.
    assert idp.obo_exchanges["oid-a"] == 1 and idp.obo_exchanges["oid-b"] == 1
    log = entra_gw.log_text()
    assert token_a not in log and seen_a[0] not in log and idp.client_secret not in log


def test_a_refused_exchange_tells_the_client_what_to_do(entra_gw: GatewayProcess, idp: OidcServer) -> None:
    challenge = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    idp.obo_refusals["oid-mfa"] = ("interaction_required", "", 50076, challenge)
    idp.obo_refusals["oid-consent"] = ("invalid_grant", "consent_required", 65001, None)
    mfa = call(entra_gw, idp.entra_token("oid-mfa", ["reader-role"]))
    assert mfa.status_code == 401, mfa.text
    www = mfa.headers["www-authenticate"]
    assert 'error="invalid_token"' in www and f'scope="{SCOPE}"' in www and "claims=" in www
    assert mfa.json()["error"]["code"] == -32009 and "sign in again" in mfa.json()["error"]["message"]

    consent = call(entra_gw, idp.entra_token("oid-consent", ["reader-role"]))
    assert consent.status_code == 403, consent.text
    assert 'error="insufficient_scope"' in consent.headers["www-authenticate"]
    assert f'scope="{SCOPE}"' in consent.headers["www-authenticate"]
    assert "consent" in consent.json()["error"]["message"]

    metrics = httpx.get(f"{entra_gw.url}/metrics", timeout=10).text
    for outcome in ("consent_required", "obo_failed"):
        pattern = rf'mcpgw_upstream_credentials_total{{[^}}]*outcome="{outcome}"[^}}]*}} 1(\.0)?$'
        assert re.search(pattern, metrics, re.MULTILINE), metrics[-2000:]


def test_entra_obo_is_refused_outside_entra_mode(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        body = example_adapter("obo", upstreamAuth={"type": "entra-obo", "scopes": [SCOPE]})
        refused = client.post("/adapters", json=body)
    assert refused.status_code == 400 and refused.json()["field"] == "upstreamAuth.type", refused.text


def secrets_cli(data_dir: Path, *args: str, stdin: str = "") -> None:
    command = [sys.executable, "-m", "gateway.cli", "secrets", *args, "--data-dir", str(data_dir)]
    subprocess.run(command, input=stdin, text=True, cwd=REPO, check=True, capture_output=True, timeout=60)


def test_secret_set_with_the_cli_reaches_the_upstream_and_nothing_else(tmp_path: Path) -> None:
    data = tmp_path / "data"
    value = "sk-live-4f1e2d3c"
    secrets_cli(data, "set", "api-key", stdin=value + "\n")
    with start_gateway(
        data, {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_LOG_LEVEL": "debug", "MCPGW_ACCESS_LOG": "all"}
    ) as gw:
        with gw.client("owner") as client:
            auth: dict[str, Any] = {"type": "secret", "header": "X-Api-Key", "secret": "api-key", "prefix": "Key "}
            body = example_adapter("keyed", imageName="recorder", imageVersion="1.0", upstreamAuth=auth)
            created = client.post("/adapters", json=body)
            assert created.status_code == 201, created.text
            wait_ready(client, "keyed", 1)
            missing = example_adapter(
                "unkeyed", imageName="recorder", imageVersion="1.0", upstreamAuth={"type": "secret", "secret": "nope"}
            )
            assert client.post("/adapters", json=missing).status_code == 201
            wait_ready(client, "unkeyed", 1)
            answer = client.post(
                "/adapters/keyed/mcp", json=TOOLS_LIST, headers={**ACCEPT, "X-Api-Key": "client-value"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["headers"]["x-api-key"] == f"Key {value}"
            # Every route: a pinned session (2025 era) and the legacy SSE GET carry it too.
            opened = client.post("/adapters/keyed/mcp", json=TOOLS_LIST, headers={**ACCEPT, "x-test-session": "up-1"})
            sealed = opened.headers["mcp-session-id"]
            pinned = client.post("/adapters/keyed/mcp", json=TOOLS_LIST, headers={**ACCEPT, "Mcp-Session-Id": sealed})
            assert pinned.json()["result"]["headers"]["x-api-key"] == f"Key {value}"
            sse = client.get("/adapters/keyed/sse")  # the recorder answers JSON: passed through as is
            assert sse.json()["result"]["headers"]["x-api-key"] == f"Key {value}"
            secrets_cli(data, "set", "api-key", stdin="rotated-value\n")
            wait_for(
                lambda: (
                    client.post("/adapters/keyed/mcp", json=TOOLS_LIST, headers=ACCEPT).json()["result"]["headers"][
                        "x-api-key"
                    ]
                    == "Key rotated-value"
                ),
                timeout=10,
                what="the rotated secret upstream",
            )
            unavailable = client.post("/adapters/unkeyed/mcp", json=TOOLS_LIST, headers=ACCEPT)
            assert unavailable.status_code == 502 and "secret 'nope'" in unavailable.json()["error"]["message"]
            shown = [
                client.get("/adapters/keyed").text,
                client.get("/adapters").text,
                client.get("/openapi/openapi.json").text,
                unavailable.text,
            ]
            assert json.loads(shown[0])["upstreamAuth"] == auth
        log = gw.log_text()
    assert "/adapters/keyed/mcp" in log  # the access log at debug level saw the calls
    for text in [*shown, log]:
        assert value not in text and "rotated-value" not in text
