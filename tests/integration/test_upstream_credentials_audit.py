"""The audit of upstream credentials (issue 18 + issue 15) through a real gateway process.

Entra mode, ``MCPGW_AUDIT=file:PATH``, the local provider (tests/fixtures/auth.py) as Entra ID: users'
tokens are exchanged on their behalf (MSAL against its https listener), the gateway's own identity
gets its token with the workload-identity federated assertion (azure-identity, as on AKS), and a
secret comes from the secrets file the CLI writes. The recording upstream (tests/upstreams/recorder.py)
answers every request. Each request forwarded to an adapter with ``upstreamAuth`` is audited with
``credential`` = ``{type, outcome}``: ``issued`` when the gateway obtained it for that request,
``cached`` when it reused one, ``failed`` with the JSON-RPC code the client got; never the value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.auth import CLIENT_ID, TENANT_ID, OidcServer
from tests.fixtures.gateway import REPO, GatewayProcess, example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.tls import TlsFiles

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
SCOPE = "api://upstream-api/.default"
ROLE = "reader-role"
SECRET_VALUE = "sk-audit-7c1b9e"
ADAPTERS: dict[str, dict[str, Any] | None] = {
    "obo": {"type": "entra-obo", "scopes": [SCOPE]},
    "mi": {"type": "managed-identity", "scopes": [SCOPE]},
    "keyed": {"type": "secret", "secret": "api-key", "header": "X-Api-Key"},
    "unkeyed": {"type": "secret", "secret": "absent"},
    "plain": None,
}


def call_tool(rpc_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}


def list_tools(rpc_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list", "params": {}}


def secrets_cli(data_dir: Path, *args: str, stdin: str = "") -> None:
    command = [sys.executable, "-m", "gateway.cli", "secrets", *args, "--data-dir", str(data_dir)]
    subprocess.run(command, input=stdin, text=True, cwd=REPO, check=True, capture_output=True, timeout=60)


class AuditedGateway:
    """The gateway, its audit file and the provider, with helpers to call and to read records."""

    def __init__(self, gw: GatewayProcess, audit: Path, idp: OidcServer, data: Path) -> None:
        self.gw, self.audit, self.idp, self.data = gw, audit, idp, data

    def post(self, user: str, adapter: str, message: dict[str, Any], **headers: str) -> httpx.Response:
        token = self.idp.entra_token(user, [ROLE])
        return httpx.post(
            f"{self.gw.url}/adapters/{adapter}/mcp",
            json=message,
            headers={**ACCEPT, "Authorization": f"Bearer {token}", **headers},
            timeout=30,
        )

    def records(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]

    def wait_records(self, count: int, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The records ``keep`` selects, once there are ``count`` of them (the writer is asynchronous)."""

        def enough() -> list[dict[str, Any]] | None:
            found = [r for r in self.records() if keep(r)]
            return found if len(found) >= count else None

        found: list[dict[str, Any]] = wait_for(enough, timeout=15, what=f"{count} audit records")
        return found


@pytest.fixture(scope="module")
def audited(idp: OidcServer, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    root = tmp_path_factory.mktemp("credaudit")
    data, audit = root / "data", root / "audit.jsonl"
    federated = root / "azure-identity-token"
    federated.write_text("federated-assertion-of-the-gateway\n")
    secrets_cli(data, "set", "api-key", stdin=SECRET_VALUE + "\n")
    env = {
        "MCPGW_AUTH": "entra",
        "MCPGW_ENTRA_TENANT_ID": TENANT_ID,
        "MCPGW_ENTRA_CLIENT_ID": CLIENT_ID,
        "MCPGW_ENTRA_AUTHORITY": idp.url,
        "MCPGW_OBO_AUTHORITY": idp.https_url,
        # The gateway's identity as AKS workload identity gives it: azure-identity exchanges the
        # federated token file at AZURE_AUTHORITY_HOST (on-behalf-of uses the same assertion).
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_AUTHORITY_HOST": idp.https_url,
        "AZURE_FEDERATED_TOKEN_FILE": str(federated),
        "REQUESTS_CA_BUNDLE": str(tls.ca_file),  # MSAL (requests)
        "SSL_CERT_FILE": str(tls.ca_file),  # azure-identity (aiohttp)
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_AUDIT": f"file:{audit}",
        "MCPGW_LOG_LEVEL": "debug",
    }
    with start_gateway(data, env) as gw:
        creator = {"Authorization": f"Bearer {idp.entra_token('oid-creator')}"}
        with httpx.Client(base_url=gw.url, headers=creator, timeout=30) as client:
            for name, auth in ADAPTERS.items():
                body = example_adapter(name, imageName="recorder", imageVersion="1.0", requiredRoles=[ROLE])
                if auth:
                    body["upstreamAuth"] = auth
                created = client.post("/adapters", json=body)
                assert created.status_code == 201, created.text
            for name in ADAPTERS:
                wait_ready(client, name, 1)
        yield AuditedGateway(gw, audit, idp, data)


def of(user: str, adapter: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("user") == user and r.get("adapter") == adapter


def test_each_obo_use_is_audited_issued_once_per_user_then_cached(audited: AuditedGateway) -> None:
    a, b = "oid-audit-a", "oid-audit-b"
    for rpc_id in (101, 102, 103):
        assert audited.post(a, "obo", call_tool(rpc_id)).status_code == 200
    assert audited.post(a, "obo", list_tools(104)).status_code == 200
    assert audited.post(b, "obo", list_tools(201)).status_code == 200

    calls = audited.wait_records(4, of(a, "obo"))
    assert [(r["event"], r.get("rpc_id"), r["outcome"], r["credential"]) for r in calls] == [
        ("tools/call", 101, "allowed", {"type": "entra-obo", "outcome": "issued"}),
        ("tools/call", 102, "allowed", {"type": "entra-obo", "outcome": "cached"}),
        ("tools/call", 103, "allowed", {"type": "entra-obo", "outcome": "cached"}),
        # A request without an audited call (tools/list) gets its own record of the credential.
        ("upstream.credential", None, "allowed", {"type": "entra-obo", "outcome": "cached"}),
    ]
    assert {r["tool"] for r in calls[:3]} == {"whoami"} and {r["status"] for r in calls[:3]} == {200}
    (other,) = audited.wait_records(1, of(b, "obo"))
    assert other["event"] == "upstream.credential" and other["credential"]["outcome"] == "issued"
    assert other["roles"] == [ROLE] and other["era"]
    # "issued" records count the exchanges the provider saw: one per user per token lifetime.
    assert audited.idp.obo_exchanges[a] == 1 and audited.idp.obo_exchanges[b] == 1


def test_refused_exchanges_are_audited_with_the_code_the_client_got(audited: AuditedGateway) -> None:
    consent, mfa = "oid-audit-consent", "oid-audit-mfa"
    audited.idp.obo_refusals[consent] = ("invalid_grant", "consent_required", 65001, None)
    audited.idp.obo_refusals[mfa] = ("interaction_required", "", 50076, '{"access_token":{}}')
    refused = audited.post(consent, "obo", call_tool(301))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == -32009, refused.text
    signed_out = audited.post(mfa, "obo", list_tools(302))
    assert signed_out.status_code == 401 and signed_out.json()["error"]["code"] == -32009, signed_out.text

    (call,) = audited.wait_records(1, of(consent, "obo"))
    assert (call["event"], call["tool"], call["rpc_id"], call["outcome"], call["status"]) == (
        "tools/call", "whoami", 301, "error", 403,
    )  # fmt: skip
    assert call["credential"] == {
        "type": "entra-obo",
        "outcome": "failed",
        "code": -32009,
        "reason": "consent_required",
    }
    (listing,) = audited.wait_records(1, of(mfa, "obo"))
    assert (listing["event"], listing["outcome"], listing["status"]) == ("upstream.credential", "error", 401)
    assert listing["credential"] == {"type": "entra-obo", "outcome": "failed", "code": -32009, "reason": "obo_failed"}


def test_the_gateway_identity_token_is_audited_issued_then_cached(audited: AuditedGateway) -> None:
    for rpc_id in (401, 402):
        answer = audited.post("oid-audit-mi", "mi", call_tool(rpc_id))
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["headers"]["authorization"].startswith("Bearer eyJ")
    assert audited.post("oid-audit-mi-2", "mi", call_tool(403)).status_code == 200
    records = audited.wait_records(3, lambda r: r.get("adapter") == "mi" and r["user"].startswith("oid-audit-mi"))
    # One token of the gateway's own identity, shared by every caller.
    assert [r["credential"]["outcome"] for r in records] == ["issued", "cached", "cached"]
    assert {r["credential"]["type"] for r in records} == {"managed-identity"}
    assert audited.idp.client_credentials_grants == 1
    # Its client credential is the federated token file (on-behalf-of presents the same file).
    assert {a.strip() for a in audited.idp.client_assertions} == {"federated-assertion-of-the-gateway"}


def test_secret_reads_rotation_and_a_missing_secret_are_audited(audited: AuditedGateway) -> None:
    user = "oid-audit-secret"
    first = audited.post(user, "keyed", call_tool(501))
    assert first.json()["result"]["headers"]["x-api-key"] == SECRET_VALUE
    audited.post(user, "keyed", call_tool(502))
    secrets_cli(audited.data, "set", "api-key", stdin="sk-audit-rotated\n")
    wait_for(
        lambda: (
            audited.post(user, "keyed", list_tools(503)).json()["result"]["headers"]["x-api-key"] == "sk-audit-rotated"
        ),
        timeout=10,
        what="the rotated secret upstream",
    )
    stream = httpx.get(
        f"{audited.gw.url}/adapters/keyed/sse",
        headers={"Authorization": f"Bearer {audited.idp.entra_token(user, [ROLE])}"},
        timeout=30,
    )
    assert stream.status_code == 200, stream.text  # the recorder answers the GET with JSON
    records = audited.wait_records(4, of(user, "keyed"))
    outcomes = [(r["event"], r["credential"]["outcome"]) for r in records]
    assert outcomes[:2] == [("tools/call", "issued"), ("tools/call", "cached")]
    # The file changed: the next request reads it again (then the GET stream reuses it).
    assert outcomes[2:] == [("upstream.credential", "issued"), ("upstream.credential", "cached")]
    assert records[-1]["request_id"]

    missing = audited.post(user, "unkeyed", call_tool(504))
    assert missing.status_code == 502 and missing.json()["error"]["code"] == -32010, missing.text
    (failed,) = audited.wait_records(1, of(user, "unkeyed"))
    assert (failed["event"], failed["outcome"], failed["status"]) == ("tools/call", "error", 502)
    assert failed["credential"] == {"type": "secret", "outcome": "failed", "code": -32010, "reason": "unavailable"}


def test_adapters_without_upstream_auth_have_no_credential_in_their_records(audited: AuditedGateway) -> None:
    assert audited.post("oid-audit-plain", "plain", call_tool(601)).status_code == 200
    assert audited.post("oid-audit-plain", "plain", list_tools(602)).status_code == 200
    (record,) = audited.wait_records(1, of("oid-audit-plain", "plain"))
    assert record["event"] == "tools/call" and "credential" not in record
    assert not [r for r in audited.records() if r["event"] == "upstream.credential" and r.get("adapter") == "plain"]
