"""No token or secret bytes in the audit trail or the gateway's log (issue 18), under hostile conditions.

A real gateway in entra mode with the audit file on, logging at debug with every request in the access
log, and the recording upstream (tests/upstreams/recorder.py), which puts every header it received —
the exchanged token, the secret — into its answer. Hostile parts:

- the upstream echoes its credential back in a 500 answer and in a streamed answer;
- the identity provider quotes the user's assertion in its refusal (``error_description`` and
  ``claims``), as a careless provider or a proxy in front of it might: the detail the gateway logs and
  answers with, and its ``WWW-Authenticate`` challenge, come from that text;
- the client sends its own ``X-Api-Key`` (the credential's header) and ``Authorization``;
- stored secrets a header cannot carry (a line break, a NUL, non-Latin-1 text).

The check is by fragments, so a token cut short is caught too: no 24-character window of any token's
signature, nor of the start of a client token's payload (which begins with a random claim, so a
window cannot match another base64 text by chance — the tenant id in MSAL's ``client_info`` would),
and no secret value (nor its base64) appears anywhere in the audit file or the log.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.credentials.secrets import SECRETS_FILE, FileSecretStore
from tests.fixtures.auth import OidcServer, entra_gateway_env
from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.tls import TlsFiles

CATALOG = Path(__file__).resolve().parent.parent / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
SCOPE = "api://upstream-api/.default"
ROLE = "reader-role"
SECRETS = {
    "api-key": "sk-leak-check-5d2c8e01",
    "broken-crlf": "first-half-a8f3\r\nX-Injected: second-half-b7e2",
    "broken-nul": "before-nul-c1d4\x00after-nul-e9f0",
    "not-latin": "snowman-\u2603-f4a1c9",
}
ADAPTERS: dict[str, dict[str, Any]] = {
    "obo": {"type": "entra-obo", "scopes": [SCOPE]},
    "keyed": {"type": "secret", "secret": "api-key", "header": "X-Api-Key", "prefix": "Key "},
    "crlf": {"type": "secret", "secret": "broken-crlf"},
    "nul": {"type": "secret", "secret": "broken-nul"},
    "latin": {"type": "secret", "secret": "not-latin"},
}


def call_tool(rpc_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}


def windows(text: str, width: int = 24) -> set[str]:
    return {text[i : i + width] for i in range(0, max(1, len(text) - width + 1), width // 2)}


def fragments(token: str, *, payload_start: bool = False) -> set[str]:
    """The token, windows of its signature and (``payload_start``) of its payload's first 80 characters."""
    _, payload, signature = token.split(".")
    found = {token} | windows(signature)
    if payload_start:
        found |= windows(payload[:80])
    return found


def client_token(idp: OidcServer, user: str) -> str:
    """A user's token whose payload starts with 32 random bytes (its windows are unique to it)."""
    return idp.mint({"leak_nonce": uuid.uuid4().hex + uuid.uuid4().hex, **idp.entra_claims(user, [ROLE])})


@pytest.fixture(scope="module")
def leaky(
    idp: OidcServer, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, Path]]:
    root = tmp_path_factory.mktemp("leaks")
    data, audit = root / "data", root / "audit.jsonl"
    store = FileSecretStore(data / SECRETS_FILE)
    for name, value in SECRETS.items():
        store.set(name, value)
    env = {
        **entra_gateway_env(idp, tls),
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_AUDIT": f"file:{audit}",
        "MCPGW_LOG_LEVEL": "debug",
        "MCPGW_ACCESS_LOG": "all",
    }
    with start_gateway(data, env) as gw:
        creator = {"Authorization": f"Bearer {idp.entra_token('oid-creator')}"}
        with httpx.Client(base_url=gw.url, headers=creator, timeout=30) as client:
            for name, auth in ADAPTERS.items():
                body = example_adapter(
                    name, imageName="recorder", imageVersion="1.0", requiredRoles=[ROLE], upstreamAuth=auth
                )
                assert client.post("/adapters", json=body).status_code == 201
            for name in ADAPTERS:
                wait_ready(client, name, 1)
        yield gw, audit


def test_no_token_or_secret_bytes_reach_the_audit_or_the_log(
    leaky: tuple[GatewayProcess, Path], idp: OidcServer
) -> None:
    gw, audit = leaky
    client_tokens: list[str] = []
    seen_upstream: list[str] = []
    answers: list[httpx.Response] = []

    def post(user: str, adapter: str, rpc_id: int, **headers: str) -> httpx.Response:
        token = client_token(idp, user)
        client_tokens.append(token)
        answer = httpx.post(
            f"{gw.url}/adapters/{adapter}/mcp",
            json=call_tool(rpc_id),
            headers={**ACCEPT, "Authorization": f"Bearer {token}", **headers},
            timeout=30,
        )
        answers.append(answer)
        return answer

    # The upstream answers (and echoes) its credential: plainly, in a 500, in a stream.
    ok = post("oid-leak-a", "obo", 1)
    assert ok.status_code == 200, ok.text
    seen_upstream.append(ok.json()["result"]["headers"]["authorization"].removeprefix("Bearer "))
    failing = post("oid-leak-a", "obo", 2, **{"x-test-status": "500"})
    assert failing.status_code == 500 and seen_upstream[0] in failing.text  # passed through, as any answer
    streamed = post("oid-leak-a", "obo", 3, **{"x-test-stream": "1", "x-test-interval": "0"})
    assert streamed.status_code == 200 and seen_upstream[0] in streamed.text

    # The provider quotes the user's assertion in its refusal.
    idp.obo_refusals["oid-leak-echo"] = ("interaction_required", "", 50076, None)
    idp.obo_echo_assertion.add("oid-leak-echo")
    echoed = post("oid-leak-echo", "obo", 4)
    assert echoed.status_code == 401 and echoed.json()["error"]["code"] == -32009, echoed.text
    echo_token = client_tokens[-1]
    challenge = echoed.headers["www-authenticate"]
    for fragment in fragments(echo_token, payload_start=True):
        assert fragment not in echoed.text and fragment not in challenge, "the client's token came back"
    assert "[token redacted]" in echoed.json()["error"]["message"]

    # The client tries to supply the credential's header itself.
    keyed = post("oid-leak-b", "keyed", 5, **{"X-Api-Key": "client-smuggled-key"})
    assert keyed.json()["result"]["headers"]["x-api-key"] == f"Key {SECRETS['api-key']}"
    assert "client-smuggled-key" not in json.dumps(keyed.json()["result"]["headers"])

    # Secrets a header cannot carry: refused by name, never shown.
    for rpc_id, adapter in enumerate(("crlf", "nul", "latin"), start=6):
        broken = post("oid-leak-b", adapter, rpc_id)
        assert broken.status_code == 502 and broken.json()["error"]["code"] == -32010, broken.text
        assert ADAPTERS[adapter]["secret"] in broken.json()["error"]["message"]

    def audited() -> str | None:
        text = audit.read_text() if audit.exists() else ""
        return text if text.count('"rpc_id"') >= 8 else None

    audit_text: str = wait_for(audited, timeout=15, what="the audit records of every call")
    log_text = gw.log_text()
    assert "/adapters/obo/mcp" in log_text and "upstream credential for adapter obo" in log_text  # debug, access log

    forbidden: set[str] = {idp.client_secret, "client-smuggled-key"}
    for token in client_tokens:
        forbidden |= fragments(token, payload_start=True)
    for token in seen_upstream:
        forbidden |= fragments(token)
    for value in SECRETS.values():
        forbidden |= {value, base64.b64encode(value.encode()).decode()}
        forbidden |= {part for part in value.replace("\x00", "\n").splitlines() if len(part) >= 8}
    for name, text in (("audit", audit_text), ("log", log_text)):
        leaked = sorted(f for f in forbidden if f in text)
        assert not leaked, f"{name} contains token or secret bytes: {leaked[:3]}"
    for answer in answers[-3:]:  # the 502s name the secret, never its value
        assert not [f for f in forbidden if f in answer.text]
