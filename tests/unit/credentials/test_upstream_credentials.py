"""Upstream credentials (issue 18) in-process: MSAL's on-behalf-of against the local provider over https,
the gateway's token cache, the managed-identity cache, the secrets file, validation and the error shapes.

MSAL runs unmodified: its authority is the provider's https listener (tests/fixtures/tls.py CA, trusted
through ``REQUESTS_CA_BUNDLE``, which MSAL's requests session honours), instance discovery off.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.control.validation import validate_upstream_auth
from gateway.credentials import ConsentRequired, CredentialUnavailable, OboFailed, UpstreamCredentials, merge_headers
from gateway.credentials._managed import ManagedIdentityTokens
from gateway.credentials._obo import OboConfig, OboExchanger, _failure
from gateway.credentials.errors import redact_tokens
from gateway.credentials.secrets import FileSecretStore, SecretMissing
from gateway.errors import InvalidRequest
from gateway.models import AdapterRecord, Identity, UpstreamAuth
from gateway.proxy.app import _credential_error
from tests.fixtures.auth import CLIENT_ID, TENANT_ID, OidcServer
from tests.fixtures.tls import write_tls_files

REPO = Path(__file__).resolve().parents[3]
SCOPES = ("api://upstream-api/.default",)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcServer]:
    files = write_tls_files(tmp_path_factory.mktemp("tls"))
    server = OidcServer().start().start_tls(files)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(files.ca_file))
        try:
            yield server
        finally:
            server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exchanger(idp: OidcServer, clock: Clock | None = None, **config: Any) -> OboExchanger:
    settings: dict[str, Any] = {"client_secret": idp.client_secret, **config}
    return OboExchanger(
        OboConfig(authority=f"{idp.https_url}/{TENANT_ID}", client_id=CLIENT_ID, **settings),
        refresh_margin=300,
        clock=clock or Clock(),
    )


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_obo_gives_each_user_their_own_token_and_exchanges_once_per_user(idp: OidcServer) -> None:
    obo = exchanger(idp)
    token_a, token_b = idp.entra_token("oid-obo-a"), idp.entra_token("oid-obo-b")
    # Concurrent first calls for one user share one exchange; repeated calls hit the cache.
    first = await asyncio.gather(*(obo.token("rec", "oid-obo-a", token_a, SCOPES) for _ in range(5)))
    again = [await obo.token("rec", "oid-obo-a", idp.entra_token("oid-obo-a"), SCOPES) for _ in range(3)]
    other = await obo.token("rec", "oid-obo-b", token_b, SCOPES)
    assert len(set(first + again)) == 1
    upstream_a = claims(first[0])
    assert upstream_a["oid"] == "oid-obo-a" and upstream_a["aud"] == "api://upstream-api"
    assert claims(other)["oid"] == "oid-obo-b"
    assert first[0] not in (token_a, token_b) and other not in (token_a, token_b)
    assert idp.obo_exchanges["oid-obo-a"] == 1 and idp.obo_exchanges["oid-obo-b"] == 1
    assert obo.exchanges == 2


async def test_obo_token_is_renewed_shortly_before_it_expires(idp: OidcServer) -> None:
    clock = Clock()
    obo = exchanger(idp, clock)
    user = "oid-obo-renew"
    first = await obo.token("rec", user, idp.entra_token(user), SCOPES)
    clock.now += idp.obo_lifetime - 301  # still more than the 300 s margin left
    assert await obo.token("rec", user, idp.entra_token(user), SCOPES) == first
    clock.now += 2
    await obo.token("rec", user, idp.entra_token(user), SCOPES)
    assert idp.obo_exchanges[user] == 2


async def test_obo_refusals_become_errors_the_caller_can_act_on(idp: OidcServer) -> None:
    obo = exchanger(idp)
    expired = idp.mint(idp.entra_claims("oid-obo-expired", lifetime=-600))
    with pytest.raises(OboFailed) as failed:
        await obo.token("rec", "oid-obo-expired", expired, SCOPES)
    assert failed.value.status == 401 and "invalid_grant" in failed.value.detail and failed.value.scopes == SCOPES

    idp.obo_refusals["oid-obo-consent"] = ("invalid_grant", "consent_required", 65001, None)
    with pytest.raises(ConsentRequired) as consent:
        await obo.token("rec", "oid-obo-consent", idp.entra_token("oid-obo-consent"), SCOPES)
    assert consent.value.status == 403 and "consent" in consent.value.detail

    challenge = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    idp.obo_refusals["oid-obo-ca"] = ("interaction_required", "", 53003, challenge)
    with pytest.raises(OboFailed) as ca:
        await obo.token("rec", "oid-obo-ca", idp.entra_token("oid-obo-ca"), SCOPES)
    assert ca.value.claims == challenge

    with pytest.raises(CredentialUnavailable, match="invalid_client"):
        await exchanger(idp, client_secret="wrong").token("rec", "oid-x", idp.entra_token("oid-x"), SCOPES)
    with pytest.raises(CredentialUnavailable, match="MCPGW_OBO_CLIENT_SECRET"):
        await exchanger(idp, client_secret=None).token("rec", "oid-x", idp.entra_token("oid-x"), SCOPES)
    assert not any(k in idp.obo_exchanges for k in ("oid-obo-expired", "oid-obo-consent", "oid-obo-ca"))


async def test_obo_with_a_federated_token_file_sends_its_current_content(idp: OidcServer, tmp_path: Path) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("federated-assertion-1\n")
    obo = exchanger(idp, client_secret=None, federated_token_file=token_file)
    await obo.token("rec", "oid-fed-1", idp.entra_token("oid-fed-1"), SCOPES)
    token_file.write_text("federated-assertion-2\n")  # AKS rotates the file
    await obo.token("rec", "oid-fed-2", idp.entra_token("oid-fed-2"), SCOPES)
    assert idp.client_assertions[-2:] == ["federated-assertion-1", "federated-assertion-2"]


def test_www_authenticate_names_the_error_and_the_scope() -> None:
    def www(path: str, error: str | None, detail: str | None) -> str:
        return f'Bearer resource_metadata="m", error="{error}", error_description="d"'

    consent = _credential_error(
        ConsentRequired("needs consent", adapter="a", scopes=SCOPES), www, "/adapters/a/mcp", {}
    )
    assert consent.status == 403 and consent.code == -32009 and consent.message == "needs consent"
    assert consent.headers["WWW-Authenticate"].endswith(
        f'error="insufficient_scope", error_description="d", scope="{SCOPES[0]}"'
    )
    obo = _credential_error(OboFailed("x", adapter="a", scopes=SCOPES, claims='{"a":"b"}'), www, "/p", {})
    assert obo.status == 401 and 'error="invalid_token"' in obo.headers["WWW-Authenticate"]
    assert 'claims="{\\"a\\":\\"b\\"}"' in obo.headers["WWW-Authenticate"]
    missing = _credential_error(CredentialUnavailable("secret 'k' is unavailable", adapter="a"), www, "/p", {})
    assert missing.status == 502 and missing.code == -32010 and "WWW-Authenticate" not in missing.headers


class FakeCredential:
    def __init__(self, lifetime: float, clock: Clock, fail: bool = False) -> None:
        self.calls = 0
        self.lifetime, self.clock, self.fail = lifetime, clock, fail

    async def get_token(self, *scopes: str) -> Any:
        self.calls += 1
        if self.fail:
            raise RuntimeError("no managed identity endpoint")

        class Token:
            token = f"mi-token-{self.calls}"
            expires_on = int(self.clock.now + self.lifetime)

        return Token()


async def test_managed_identity_token_is_shared_and_cached_until_near_expiry() -> None:
    clock = Clock()
    fake = FakeCredential(3600, clock)
    tokens = ManagedIdentityTokens(client_id="mi-client", credential=fake, clock=clock, refresh_margin=300)
    assert {await tokens.token("a", SCOPES) for _ in range(3)} == {"mi-token-1"}
    clock.now += 3600 - 299
    assert await tokens.token("a", SCOPES) == "mi-token-2"
    broken = ManagedIdentityTokens(client_id="mi-client", credential=FakeCredential(1, clock, fail=True), clock=clock)
    with pytest.raises(CredentialUnavailable, match="managed identity mi-client"):
        await broken.token("a", SCOPES)


def record(auth: UpstreamAuth) -> AdapterRecord:
    return AdapterRecord(name="rec", image_name="recorder", image_version="1.0", upstream_auth=auth)


async def test_secret_type_sends_the_stored_value_in_the_configured_header(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path / "secrets.json")
    store.set("api-key", "value-123")
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    creds = UpstreamCredentials(obo=None, managed=ManagedIdentityTokens(client_id=None), secrets=store)
    auth = UpstreamAuth(type="secret", header="X-Api-Key", secret="api-key", prefix="Key ")
    headers = await creds.headers_for(record(auth), Identity("u"), None)
    assert headers == [(b"x-api-key", b"Key value-123")]
    client = [(b"x-api-key", b"client-supplied"), (b"accept", b"*/*")]
    assert merge_headers(client, headers) == [(b"accept", b"*/*"), (b"x-api-key", b"Key value-123")]
    with pytest.raises(CredentialUnavailable, match="secret 'other' of adapter 'rec'") as missing:
        await creds.headers_for(record(UpstreamAuth(type="secret", secret="other")), Identity("u"), None)
    assert "value-123" not in missing.value.detail
    assert creds.outcomes == {("secret", "ok"): 1, ("secret", "unavailable"): 1}
    (tmp_path / "secrets.json").chmod(0o644)
    with pytest.raises(SecretMissing, match="chmod 600"):
        await FileSecretStore(tmp_path / "secrets.json").get("api-key")


def test_secrets_cli_lists_names_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway.cli", "secrets", *args, "--data-dir", str(tmp_path)]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)

    assert cli("set", "api-key", stdin="very-secret-value\n").returncode == 0
    assert cli("set", "Bad_Name", stdin="x").returncode == 2
    listed = cli("list")
    assert listed.stdout.split() == ["api-key"] and "very-secret-value" not in listed.stdout + listed.stderr
    assert cli("delete", "api-key").returncode == 0 and cli("list").stdout.strip() == ""


@pytest.mark.parametrize(
    ("auth", "mode", "field"),
    [
        (UpstreamAuth(type="entra-obo", scopes=list(SCOPES)), "dev", "upstreamAuth.type"),
        (UpstreamAuth(type="entra-obo"), "entra", "upstreamAuth.scopes"),
        (UpstreamAuth(type="managed-identity", scopes=["a b"]), "entra", "upstreamAuth.scopes"),
        (UpstreamAuth(type="managed-identity", scopes=list(SCOPES), secret="x"), "entra", "upstreamAuth.secret"),
        (UpstreamAuth(type="secret"), "dev", "upstreamAuth.secret"),
        (UpstreamAuth(type="secret", secret="k", header="Connection"), "dev", "upstreamAuth.header"),
        (UpstreamAuth(type="secret", secret="k", header="X-MCP-User-Id"), "dev", "upstreamAuth.header"),
        (UpstreamAuth(type="secret", secret="k", header="Mcp-Session-Id"), "dev", "upstreamAuth.header"),
        (UpstreamAuth(type="secret", secret="k", header="X Api"), "dev", "upstreamAuth.header"),
        (UpstreamAuth(type="secret", secret="k", prefix="a\r\nb"), "dev", "upstreamAuth.prefix"),
        (UpstreamAuth(type="none", scopes=["x"]), "dev", "upstreamAuth.scopes"),
    ],
)
def test_invalid_upstream_auth_is_refused_naming_the_field(auth: UpstreamAuth, mode: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_upstream_auth(auth, auth_mode=mode)
    assert refused.value.field == field


@pytest.mark.parametrize(
    "auth",
    [
        UpstreamAuth(),
        UpstreamAuth(type="entra-obo", scopes=["https://graph.microsoft.com/User.Read"]),
        UpstreamAuth(type="managed-identity", scopes=["https://management.azure.com/.default"]),
        UpstreamAuth(type="secret", secret="api-key"),
        UpstreamAuth(type="secret", secret="api-key", header="X-Api-Key", prefix="Bearer "),
    ],
)
def test_valid_upstream_auth_is_accepted(auth: UpstreamAuth) -> None:
    validate_upstream_auth(auth, auth_mode="entra")


def test_identity_never_shows_its_bearer_token() -> None:
    identity = Identity("u", bearer_token="eyJ.secret.token")
    assert "eyJ" not in repr(identity) and identity == Identity("u")


# --- the audit of credential use (issue 18: "counted and audited, never the token") ----------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConsentRequired("c", adapter="a", scopes=SCOPES), -32009),
        (OboFailed("o", adapter="a", scopes=SCOPES), -32009),
        (CredentialUnavailable("u", adapter="a"), -32010),
    ],
)
def test_credential_errors_carry_the_json_rpc_code_the_client_gets(error: Exception, code: int) -> None:
    def www(path: str, err: str | None, detail: str | None) -> str:
        return "Bearer"

    assert isinstance(error, ConsentRequired | OboFailed | CredentialUnavailable)
    assert error.rpc_code == code == _credential_error(error, www, "/p", {}).code  # the audit's code is the client's


async def test_issue_tells_issued_from_cached_for_every_kind(tmp_path: Path) -> None:
    clock = Clock()
    store = FileSecretStore(tmp_path / "secrets.json")
    store.set("api-key", "value-1")
    managed = ManagedIdentityTokens(client_id="mi", credential=FakeCredential(3600, clock), clock=clock)
    creds = UpstreamCredentials(obo=None, managed=managed, secrets=store)
    mi = record(UpstreamAuth(type="managed-identity", scopes=list(SCOPES)))
    secret = record(UpstreamAuth(type="secret", secret="api-key"))
    outcomes = [(await creds.issue(mi, Identity(u), None)).outcome for u in ("u1", "u2")]
    assert outcomes == ["issued", "cached"]  # one token of the gateway's identity for every caller
    assert [(await creds.issue(secret, Identity("u"), None)).outcome for _ in range(2)] == ["issued", "cached"]
    store.set("api-key", "value-2")  # the file changed: read again
    rotated = await creds.issue(secret, Identity("u"), None)
    assert (rotated.outcome, rotated.headers) == ("issued", [(b"authorization", b"value-2")])
    assert "value-2" not in repr(rotated) and repr(rotated) == "UpstreamCredential(type='secret', outcome='issued')"


async def test_obo_issued_means_this_call_exchanged(idp: OidcServer) -> None:
    obo = exchanger(idp)
    user, token = "oid-obo-issued", idp.entra_token("oid-obo-issued")
    results = await asyncio.gather(*(obo.acquire("rec", user, token, SCOPES) for _ in range(4)))
    # Concurrent callers share one exchange: exactly one of them reports it as issued.
    assert sorted(issued for _, issued in results) == [False, False, False, True]
    assert (await obo.acquire("rec", user, token, SCOPES))[1] is False
    assert idp.obo_exchanges[user] == 1


def test_token_shaped_text_is_redacted_even_when_cut_short() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ4In0.c2lnbmF0dXJl"
    assert redact_tokens(f"AADSTS50013: bad assertion {token}.") == "AADSTS50013: bad assertion [token redacted]."
    assert token[:30] not in redact_tokens(f"cut: {token[:30]}")
    assert redact_tokens("opaque s3cr3t here", "s3cr3t") == "opaque [token redacted] here"
    assert redact_tokens("AADSTS65001: The user has not consented.") == "AADSTS65001: The user has not consented."


async def test_a_refusal_quoting_the_assertion_never_carries_it_on(idp: OidcServer) -> None:
    user = "oid-obo-echo"
    idp.obo_refusals[user] = ("interaction_required", "", 50076, None)
    idp.obo_echo_assertion.add(user)
    assertion = idp.entra_token(user)
    with pytest.raises(OboFailed) as refused:
        await exchanger(idp).token("rec", user, assertion, SCOPES)
    detail, claims_text = refused.value.detail, refused.value.claims or ""
    assert "[token redacted]" in detail and "[token redacted]" in claims_text
    for part in assertion.split("."):
        assert part[:16] not in detail and part[:16] not in claims_text


def test_a_refusal_without_a_description_is_still_an_error_the_caller_can_act_on() -> None:
    # Before 2026-11-30 an answer without error_description raised IndexError (a bare 502 -32603).
    refused = _failure({"error": "invalid_grant"}, "rec", SCOPES)
    assert isinstance(refused, OboFailed) and "invalid_grant" in refused.detail
