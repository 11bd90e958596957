"""Malformed credentials are 401, always: random JOSE headers and claims against the JWT authenticator.

The property: whatever a bearer token's header or claims contain — non-string or list ``kid``,
unknown ``crit``, ``exp`` as a string, list, NaN or 1e300, ``aud`` as an object, ``roles`` as a
number — :meth:`JwtAuthenticator.authenticate` either returns an identity or raises
``Unauthenticated``; nothing else escapes (anything else became a 500 on REST and a 502 on MCP
routes). Tokens are signed by hand with the provider's real key, so hostile claims also get past
the signature check and reach the claim checks. Hypothesis runs derandomized (same examples
on every run; 150 examples per mode and test, 1-3 s each at load average 11).

A real gateway in oidc mode then gets a few hostile tokens on REST and MCP routes: 401 with
``WWW-Authenticate`` on both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from gateway.auth.jwt import JwtAuthenticator
from gateway.errors import Unauthenticated
from gateway.models import Identity
from gateway.settings import Settings
from tests.fixtures.auth import CLIENT_ID, OIDC_AUDIENCE, TENANT_ID, OidcServer, b64url
from tests.fixtures.gateway import GatewayProcess, start_gateway

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Any JSON value, including what Python's json emits and accepts beyond the RFC (NaN, Infinity).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HEADER_NAMES = ["alg", "kid", "typ", "crit", "b64", "jku", "jwk", "x5u", "x5c", "cty", "zip", "enc"]
CLAIM_NAMES = ["iss", "aud", "exp", "nbf", "iat", "sub", "oid", "tid", "scp", "roles", "jti"]


@st.composite
def jose_header(draw: st.DrawFn) -> dict[str, Any]:
    """A header that is often almost right (RS256, the published kid) and wrong in one or more places."""
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": "key-1"}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=4, unique=True)):
        header[name] = draw(
            st.sampled_from(["RS256", "ES256", "none", "HS256", "key-1", "", ["b64"], ["exp"], False]) | JSON
        )
    if draw(st.booleans()):
        header.pop("kid", None)
    header.update(draw(st.dictionaries(st.text(max_size=6), JSON, max_size=2)))
    return header


@st.composite
def claims(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """Valid claims with some replaced by values of any type (and some removed or added)."""
    out = dict(base)
    for name in draw(st.lists(st.sampled_from(CLAIM_NAMES), max_size=5, unique=True)):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            out.pop(name, None)
        elif choice == 1:
            out[name] = draw(st.sampled_from([1e300, -1e300, 10**25, -(10**25), "1700000000", [1], {"a": 1}, True]))
        else:
            out[name] = draw(JSON)
    out.update(draw(st.dictionaries(st.text(max_size=6), JSON, max_size=2)))
    return out


def sign(server: OidcServer, header: Any, payload: Any, *, raw_header: bytes | None = None) -> str:
    """A compact JWS over exactly these bytes, RS256-signed with the provider's published key."""
    head = b64url(raw_header if raw_header is not None else json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(f"{head}.{body}".encode(), server.keys[0].private_key)
    return f"{head}.{body}.{b64url(signature)}"


class Harness:
    """One authenticator with keys loaded, driven from synchronous hypothesis examples."""

    def __init__(self, authenticator: JwtAuthenticator) -> None:
        self.authenticator = authenticator
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(authenticator.start())

    def outcome(self, token: str) -> Identity | Unauthenticated:
        """The identity, or the Unauthenticated raised; any other exception fails the test."""
        try:
            return self.loop.run_until_complete(self.authenticator.authenticate({"authorization": f"Bearer {token}"}))
        except Unauthenticated as exc:
            assert exc.status == 401
            return exc

    def close(self) -> None:
        self.loop.run_until_complete(self.authenticator.close())
        self.loop.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcServer]:
    server = OidcServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["oidc", "entra"])
def harness(request: pytest.FixtureRequest, idp: OidcServer) -> Iterator[tuple[Harness, dict[str, Any]]]:
    if request.param == "oidc":
        config = Settings(auth="oidc", oidc_issuer=idp.oidc_issuer, oidc_audience=OIDC_AUDIENCE)
        base = idp.oidc_claims("fuzz-user")
    else:
        config = Settings(auth="entra", entra_tenant_id=TENANT_ID, entra_client_id=CLIENT_ID, entra_authority=idp.url)
        base = idp.entra_claims("fuzz-user")
    h = Harness(JwtAuthenticator.from_settings(config))
    try:
        yield h, base
    finally:
        h.close()


def test_the_fixture_token_is_accepted(idp: OidcServer, harness: tuple[Harness, dict[str, Any]]) -> None:
    """The hand-signed path works, so the fuzz below really reaches the claim checks."""
    h, base = harness
    assert isinstance(h.outcome(sign(idp, {"alg": "RS256", "typ": "JWT", "kid": "key-1"}, base)), Identity)


@FUZZ
@given(data=st.data())
def test_random_headers_and_claims_give_an_identity_or_unauthenticated(
    idp: OidcServer, harness: tuple[Harness, dict[str, Any]], data: st.DataObject
) -> None:
    h, base = harness
    header = data.draw(jose_header(), label="header")
    payload = data.draw(claims(base) | JSON, label="claims")
    token = sign(idp, header, payload)
    if data.draw(st.booleans(), label="break signature"):
        token = token[: token.rindex(".") + 1] + b64url(data.draw(st.binary(max_size=300)))
    result = h.outcome(token)
    if isinstance(result, Identity):
        assert isinstance(payload, dict) and result.user_id in (payload.get("sub"), payload.get("oid"))


@FUZZ
@given(raw=st.binary(max_size=200), dots=st.integers(0, 4), tail=st.text(max_size=40))
def test_random_header_bytes_and_segments_are_unauthenticated(
    idp: OidcServer, harness: tuple[Harness, dict[str, Any]], raw: bytes, dots: int, tail: str
) -> None:
    h, base = harness
    token = sign(idp, None, base, raw_header=raw)
    mangled = ".".join([token.split(".")[0]] * dots) + tail
    for candidate in (token, mangled):
        if candidate.strip() and " " not in candidate.strip():
            assert isinstance(h.outcome(candidate.strip()), Unauthenticated)


@pytest.mark.parametrize(
    ("label", "header", "patch"),
    [
        ("kid is a number", {"alg": "RS256", "kid": 7}, {}),
        ("kid is a list", {"alg": "RS256", "kid": ["key-1"]}, {}),
        ("unknown crit", {"alg": "RS256", "kid": "key-1", "crit": ["x-unknown"], "x-unknown": 1}, {}),
        ("crit is not a list", {"alg": "RS256", "kid": "key-1", "crit": "b64"}, {}),
        ("exp is a string", {"alg": "RS256", "kid": "key-1"}, {"exp": "tomorrow"}),
        ("exp is a list", {"alg": "RS256", "kid": "key-1"}, {"exp": [1]}),
        ("exp far in the past", {"alg": "RS256", "kid": "key-1"}, {"exp": -1e300}),
        ("exp is infinite", {"alg": "RS256", "kid": "key-1"}, {"exp": math.inf}),
        ("nbf far in the future", {"alg": "RS256", "kid": "key-1"}, {"nbf": 1e300}),
        ("aud is an object", {"alg": "RS256", "kid": "key-1"}, {"aud": {"x": 1}}),
        ("iss is a number", {"alg": "RS256", "kid": "key-1"}, {"iss": 1}),
        ("sub is a list", {"alg": "RS256", "kid": "key-1"}, {"sub": ["a"], "oid": ["a"]}),
    ],
)
def test_named_hostile_tokens_are_unauthenticated(
    idp: OidcServer, harness: tuple[Harness, dict[str, Any]], label: str, header: dict[str, Any], patch: dict[str, Any]
) -> None:
    h, base = harness
    result = h.outcome(sign(idp, header, {**base, **patch}))
    assert isinstance(result, Unauthenticated), label


def test_roles_of_any_type_never_grant_anything(idp: OidcServer, harness: tuple[Harness, dict[str, Any]]) -> None:
    h, base = harness
    for roles in (7, {"mcp.admin": True}, None, [["mcp.admin"]], [1, None]):
        result = h.outcome(sign(idp, {"alg": "RS256", "kid": "key-1"}, {**base, "roles": roles, "scp": "access"}))
        assert isinstance(result, Identity) and not result.is_admin, roles


# --- a real gateway in oidc mode ----------------------------------------------------------------


def _hostile_tokens(idp: OidcServer) -> dict[str, str]:
    base = idp.oidc_claims("hostile")
    return {
        "kid number": sign(idp, {"alg": "RS256", "kid": 7}, base),
        "kid list": sign(idp, {"alg": "RS256", "kid": ["key-1"]}, base),
        "unknown crit": sign(idp, {"alg": "RS256", "kid": "key-1", "crit": ["x-unknown"]}, base),
        "exp -1e300": sign(idp, {"alg": "RS256", "kid": "key-1"}, {**base, "exp": -1e300}),
        "header not JSON": sign(idp, None, base, raw_header=b"\xff{"),
        "header is a list": sign(idp, None, base, raw_header=b"[1]"),
        "garbage": base64.urlsafe_b64encode(b"\x00" * 30).decode() + "..",
    }


@pytest.fixture(scope="module")
def oidc_gateway(idp: OidcServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_AUTH": "oidc", "MCPGW_OIDC_ISSUER": idp.oidc_issuer, "MCPGW_OIDC_AUDIENCE": OIDC_AUDIENCE}
    data_dir: Path = tmp_path_factory.mktemp("jwt-fuzz-gw") / "data"
    with start_gateway(data_dir, env) as gw:
        yield gw


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/adapters"),
        ("POST", "/adapters"),
        ("GET", "/adapters/some-adapter"),
        ("POST", "/adapters/some-adapter/mcp"),
        ("GET", "/adapters/some-adapter/sse"),
    ],
)
def test_hostile_tokens_get_401_with_www_authenticate_on_rest_and_mcp_routes(
    idp: OidcServer, oidc_gateway: GatewayProcess, method: str, path: str
) -> None:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"} if path.endswith("/mcp") else {}
    with httpx.Client(base_url=oidc_gateway.url, timeout=10) as client:
        for label, token in _hostile_tokens(idp).items():
            response = client.request(
                method,
                path,
                json=body if method == "POST" else None,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
            )
            assert response.status_code == 401, (label, response.status_code, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer "), label
