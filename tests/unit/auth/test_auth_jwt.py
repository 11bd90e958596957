"""Bearer JWT validation against a real local OpenID provider with test-minted RSA keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.auth.dev import DevAuthenticator
from gateway.auth.factory import build_authenticator
from gateway.auth.jwt import JwtAuthenticator, JwtConfig, bearer_token
from gateway.errors import DependencyUnavailable, Unauthenticated
from gateway.models import Identity
from gateway.settings import Settings
from tests.fixtures.auth import CLIENT_ID, OIDC_AUDIENCE, TENANT_ID, OidcServer, SigningKey, hs256_token, unsigned_token


def entra_settings(server: OidcServer, **extra: Any) -> Settings:
    return Settings(
        auth="entra",
        entra_tenant_id=TENANT_ID,
        entra_client_id=CLIENT_ID,
        entra_authority=server.url,
        **extra,
    )


def oidc_settings(server: OidcServer, **extra: Any) -> Settings:
    return Settings(auth="oidc", oidc_issuer=server.oidc_issuer, oidc_audience=OIDC_AUDIENCE, **extra)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def entra(oidc_server: OidcServer) -> AsyncIterator[JwtAuthenticator]:
    auth = JwtAuthenticator.from_settings(entra_settings(oidc_server))
    await auth.start()
    try:
        yield auth
    finally:
        await auth.close()


async def test_valid_v2_token_gives_oid_and_roles(oidc_server: OidcServer, entra: JwtAuthenticator) -> None:
    identity = await entra.authenticate(bearer(oidc_server.entra_token("oid-alice", ["mcp.admin", "reader"])))
    assert identity == Identity(user_id="oid-alice", roles=frozenset({"mcp.admin", "reader"}))
    assert identity.is_admin


async def test_valid_v1_token_with_api_audience_is_accepted(oidc_server: OidcServer, entra: JwtAuthenticator) -> None:
    claims = oidc_server.entra_claims("oid-bob", iss=oidc_server.entra_v1_issuer, aud=f"api://{CLIENT_ID}", ver="1.0")
    identity = await entra.authenticate(bearer(oidc_server.mint(claims)))
    assert identity == Identity(user_id="oid-bob", roles=frozenset())


async def test_app_only_token_with_roles_and_no_scp_is_accepted(
    oidc_server: OidcServer,
    entra: JwtAuthenticator,
) -> None:
    claims = oidc_server.entra_claims("sp-oid", ["mcp.admin"], idtyp="app")
    del claims["scp"]
    identity = await entra.authenticate(bearer(oidc_server.mint(claims)))
    assert identity.user_id == "sp-oid" and identity.is_admin


async def test_expiry_within_leeway_is_accepted(oidc_server: OidcServer, entra: JwtAuthenticator) -> None:
    now = int(time.time())
    token = oidc_server.mint(oidc_server.entra_claims(exp=now - 30, nbf=now + 30, iat=now - 600))
    assert (await entra.authenticate(bearer(token))).user_id == "user-1"


def _now() -> int:
    return int(time.time())


# (name, token maker, expected error code, fragment of the description)
BAD_TOKENS: list[tuple[str, Callable[[OidcServer], str], str]] = [
    (
        "expired",
        lambda s: s.mint(s.entra_claims(exp=_now() - 3600, iat=_now() - 7200, nbf=_now() - 7200)),
        "expired at",
    ),
    ("not yet valid", lambda s: s.mint(s.entra_claims(nbf=_now() + 3600)), "not valid before"),
    ("wrong audience", lambda s: s.mint(s.entra_claims(aud="api://someone-else")), "audience 'api://someone-else'"),
    ("wrong issuer", lambda s: s.mint(s.entra_claims(iss="https://evil.example/v2.0")), "issuer 'https://evil.example"),
    (
        "other tenant's issuer",
        lambda s: s.mint(s.entra_claims(iss="https://sts.windows.net/99999999-0000-0000-0000-000000000000/")),
        "issuer",
    ),
    ("bad signature", lambda s: s.mint(s.entra_claims(), SigningKey.generate(), kid=s.keys[0].kid), "signature"),
    (
        "tampered payload",
        lambda s: _swap_payload(s.entra_token("user-1"), s.entra_token("intruder", ["mcp.admin"])),
        "signature",
    ),
    ("unknown kid", lambda s: s.mint(s.entra_claims(), SigningKey.generate("not-published")), "'not-published'"),
    ("alg none", lambda s: unsigned_token(s.entra_claims(), kid=s.keys[0].kid), "alg 'none'"),
    (
        "HS256 signed with the public key",
        lambda s: hs256_token(s.entra_claims(), s.keys[0].public_pem(), s.keys[0].kid),
        "HMAC-signed tokens (HS256)",
    ),
    ("missing exp", lambda s: s.mint({k: v for k, v in s.entra_claims().items() if k != "exp"}), "'exp'"),
    ("no scp and no roles (ID token)", lambda s: s.mint({**s.entra_claims(), "scp": ""}), "neither 'scp' nor 'roles'"),
    ("no oid", lambda s: s.mint({k: v for k, v in s.entra_claims().items() if k != "oid"}), "'oid'"),
    ("foreign tid", lambda s: s.mint(s.entra_claims(tid="99999999-0000-0000-0000-000000000000")), "tenant"),
    ("not a JWT", lambda s: "abc.def", "not a JWT"),
    ("garbage header", lambda s: "!!!.e30.sig", "header is not valid"),
]


def _swap_payload(signed: str, other: str) -> str:
    head, _, sig = signed.split(".")
    return f"{head}.{other.split('.')[1]}.{sig}"


@pytest.mark.parametrize(("case", "make", "fragment"), BAD_TOKENS, ids=[c[0] for c in BAD_TOKENS])
async def test_bad_token_is_rejected_with_a_precise_description(
    oidc_server: OidcServer,
    entra: JwtAuthenticator,
    case: str,
    make: Callable[[OidcServer], str],
    fragment: str,
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await entra.authenticate(bearer(make(oidc_server)))
    assert caught.value.status == 401
    assert caught.value.error == "invalid_token"
    assert fragment in caught.value.detail, caught.value.detail


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing bearer token"),
        ({"authorization": ""}, "missing bearer token"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "scheme 'Basic'"),
        ({"authorization": "Bearer"}, "Bearer <token>"),
        ({"authorization": "Bearer a b"}, "one token"),
    ],
)
async def test_missing_or_malformed_authorization_is_invalid_request(
    entra: JwtAuthenticator, headers: dict[str, str], fragment: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await entra.authenticate(headers)
    assert caught.value.error == "invalid_request"
    assert fragment in caught.value.detail


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token({"authorization": "bearer  abc.def.ghi "}) == "abc.def.ghi"


async def test_es256_token_naming_an_rsa_key_is_rejected(oidc_server: OidcServer, entra: JwtAuthenticator) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(oidc_server.entra_claims(), ec_key, algorithm="ES256", headers={"kid": oidc_server.keys[0].kid})
    with pytest.raises(Unauthenticated, match="does not fit key 'key-1' of type RSA"):
        await entra.authenticate(bearer(token))


async def test_oidc_mode_uses_sub_and_the_configured_audience(oidc_server: OidcServer) -> None:
    auth = JwtAuthenticator.from_settings(oidc_settings(oidc_server))
    await auth.start()
    try:
        identity = await auth.authenticate(bearer(oidc_server.oidc_token("alice", ["reader"])))
        assert identity == Identity(user_id="alice", roles=frozenset({"reader"}))
        # An Entra-shaped token from the same keys is for another issuer and audience.
        with pytest.raises(Unauthenticated, match="issuer"):
            await auth.authenticate(bearer(oidc_server.entra_token()))
        with pytest.raises(Unauthenticated, match="audience"):
            await auth.authenticate(bearer(oidc_server.mint(oidc_server.oidc_claims(aud=CLIENT_ID))))
        # A token without kid is fine while the issuer publishes exactly one key.
        assert (
            await auth.authenticate(bearer(oidc_server.mint(oidc_server.oidc_claims("bob"), kid=None)))
        ).user_id == ("bob")
    finally:
        await auth.close()


async def test_key_rotation_is_picked_up_without_restart(oidc_server: OidcServer) -> None:
    auth = JwtAuthenticator.from_settings(entra_settings(oidc_server, jwks_min_refresh_interval=0.2))
    await auth.start()
    try:
        old = oidc_server.keys[0]
        assert (await auth.authenticate(bearer(oidc_server.entra_token("u")))).user_id == "u"
        # The provider publishes a new key next to the old one, then signs with it.
        new = SigningKey.generate("key-2")
        oidc_server.keys = [old, new]
        await asyncio.sleep(0.25)
        token = oidc_server.mint(oidc_server.entra_claims("u2"), new)
        assert (await auth.authenticate(bearer(token))).user_id == "u2"
        # Then withdraws the old key: tokens it signed stop working once a refresh has seen that.
        oidc_server.keys = [new]
        await asyncio.sleep(0.25)
        newest = SigningKey.generate("key-3")
        oidc_server.keys = [new, newest]
        assert (
            await auth.authenticate(bearer(oidc_server.mint(oidc_server.entra_claims("u3"), newest)))
        ).user_id == "u3"
        with pytest.raises(Unauthenticated, match="'key-1' is not among"):
            await auth.authenticate(bearer(oidc_server.mint(oidc_server.entra_claims("u"), old)))
        assert oidc_server.jwks_hits == 3
    finally:
        await auth.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval(
    oidc_server: OidcServer,
) -> None:
    clock = FakeClock()
    auth = JwtAuthenticator(JwtConfig.entra(entra_settings(oidc_server, jwks_min_refresh_interval=30.0)), clock=clock)
    await auth.start()
    try:
        assert oidc_server.jwks_hits == 1
        clock.now += 31
        forged = [
            oidc_server.mint(oidc_server.entra_claims(), SigningKey(uuid.uuid4().hex, oidc_server.keys[0].private_key))
            for _ in range(3)
        ]
        tokens = [forged[i % 3] for i in range(300)]

        async def attempt(token: str) -> str:
            try:
                await auth.authenticate(bearer(token))
            except Unauthenticated as exc:
                return exc.detail
            return "accepted"

        results = await asyncio.gather(*(attempt(t) for t in tokens))
        assert all("is not among the issuer's signing keys" in r for r in results)
        assert oidc_server.jwks_hits == 2  # one refresh for 300 unknown-kid tokens
        # Valid tokens keep working throughout, without extra fetches.
        assert (await auth.authenticate(bearer(oidc_server.entra_token("ok")))).user_id == "ok"
        clock.now += 10
        await attempt(forged[0])
        assert oidc_server.jwks_hits == 2
        clock.now += 25
        await attempt(forged[0])
        assert oidc_server.jwks_hits == 3  # the next interval allows one more
    finally:
        await auth.close()


async def test_keys_older_than_max_age_are_refetched(oidc_server: OidcServer) -> None:
    clock = FakeClock()
    auth = JwtAuthenticator(JwtConfig.entra(entra_settings(oidc_server)), clock=clock)
    await auth.start()
    try:
        await auth.authenticate(bearer(oidc_server.entra_token()))
        assert oidc_server.jwks_hits == 1
        clock.now += auth.config.max_key_age + 1
        await auth.authenticate(bearer(oidc_server.entra_token()))
        assert oidc_server.jwks_hits == 2
    finally:
        await auth.close()


async def test_unreachable_provider_gives_503_and_recovers(oidc_server: OidcServer) -> None:
    clock = FakeClock()
    token = oidc_server.entra_token("later")
    settings = entra_settings(oidc_server)
    url = oidc_server.url
    oidc_server.stop()
    auth = JwtAuthenticator(JwtConfig.entra(settings), clock=clock)
    await auth.start()  # logs, does not raise
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            await auth.authenticate(bearer(token))
        assert caught.value.status == 503
        assert url in caught.value.detail and "Retry-After" in caught.value.headers
        # Within the interval it does not retry; the answer names the last failure.
        with pytest.raises(DependencyUnavailable, match="OpenID configuration"):
            await auth.authenticate(bearer(token))
    finally:
        await auth.close()


async def test_wrong_tenant_discovery_names_the_mismatch(oidc_server: OidcServer) -> None:
    # The discovery document of another authority path names a different issuer.
    config = JwtConfig.entra(entra_settings(oidc_server))
    auth = JwtAuthenticator(
        JwtConfig(
            issuers=config.issuers,
            audiences=config.audiences,
            discovery_url=oidc_server.oidc_issuer + "/.well-known/openid-configuration",
            expected_discovery_issuer=config.expected_discovery_issuer,
        )
    )
    await auth.start()
    try:
        with pytest.raises(DependencyUnavailable, match="names issuer"):
            await auth.authenticate(bearer(oidc_server.entra_token()))
    finally:
        await auth.close()


def test_factory_picks_the_authenticator_for_the_mode(oidc_server: OidcServer) -> None:
    assert isinstance(build_authenticator(Settings()), DevAuthenticator)
    assert isinstance(build_authenticator(entra_settings(oidc_server)), JwtAuthenticator)
    oidc = build_authenticator(oidc_settings(oidc_server))
    assert isinstance(oidc, JwtAuthenticator) and oidc.config.user_id_claim == "sub"
