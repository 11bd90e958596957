"""Bearer JWT validation for the ``entra`` and ``oidc`` auth modes.

Keys come from OIDC discovery and the issuer's JWKS, fetched with httpx and cached in memory.
A token whose ``kid`` is not cached triggers one JWKS refresh, at most once per
``jwks_min_refresh_interval`` seconds, so a flood of made-up key ids cannot turn the gateway
into an amplifier against the identity provider. Every rejection names what was wrong with the
token (expired, wrong audience, ...), because that text reaches the caller in the 401's
``WWW-Authenticate: Bearer error_description``.

Checks, in order: the ``Authorization`` header form; the JOSE header (``alg`` on an allow-list of
asymmetric algorithms, so ``none`` and HMAC-with-a-public-key are refused before any key is
touched; a ``kid`` that names a cached key whose type fits the algorithm); the signature; then
``exp``/``nbf``/``iat`` with ``jwt_leeway`` of clock skew, ``iss`` and ``aud``; then the claims
the identity is built from.

Every token that cannot be parsed or verified ends as ``Unauthenticated`` (401), whatever its header
or claims hold. 2026-11-30: a non-string or list ``kid`` and an unknown ``crit`` raised PyJWT's
``InvalidTokenError`` past the ``DecodeError`` handler (500 on REST, 502 on MCP routes), and an
``exp`` of -1e300 crashed while writing "expired at"; tests/adversarial/test_jwt_fuzz.py now feeds
random headers and claims (validly signed) and accepts nothing but an identity or a 401.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import jwt
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWKError,
    PyJWTError,
)

from gateway.errors import DependencyUnavailable, Unauthenticated
from gateway.models import Identity
from gateway.settings import Settings

log = logging.getLogger(__name__)

#: Asymmetric algorithms a token may be signed with, and the JWK key type each needs.
#: Entra signs with RS256; the rest are for generic OIDC providers.
ALLOWED_ALGORITHMS: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}

#: Cached keys older than this are refetched on the next request, so keys the provider
#: withdrew stop verifying tokens within an hour even if no unknown ``kid`` shows up.
JWKS_MAX_AGE = 3600.0

#: Seconds for one discovery or JWKS request.
FETCH_TIMEOUT = 10.0

#: The public-cloud v1 token issuer host; Entra v1 access tokens carry ``https://sts.windows.net/<tid>/``.
ENTRA_V1_ISSUER_HOST = "https://sts.windows.net"

UserIdClaim = Literal["oid", "sub"]


@dataclasses.dataclass(frozen=True, slots=True)
class JwtConfig:
    """What a valid token looks like for one gateway.

    ``issuers`` and ``audiences`` are the accepted ``iss`` and ``aud`` values; ``discovery_url``
    is the OpenID configuration document naming the JWKS. ``expected_discovery_issuer`` (when
    set) must equal the document's ``issuer``, as OpenID Connect Discovery 1.0 §4.3 requires.
    """

    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    discovery_url: str
    expected_discovery_issuer: str | None = None
    user_id_claim: UserIdClaim = "sub"
    tenant_id: str | None = None
    require_scope_or_roles: bool = False
    leeway: float = 60.0
    min_refresh_interval: float = 30.0
    max_key_age: float = JWKS_MAX_AGE

    @classmethod
    def entra(cls, settings: Settings) -> JwtConfig:
        """Entra ID: v1 and v2 issuers of one tenant, audiences ``<clientId>`` and ``api://<clientId>``."""
        tenant, client = settings.entra_tenant_id, settings.entra_client_id
        if not tenant or not client:
            raise ValueError("auth=entra needs entra_tenant_id and entra_client_id")
        authority = settings.entra_authority.rstrip("/")
        v2 = f"{authority}/{tenant}/v2.0"
        return cls(
            issuers=(v2, f"{ENTRA_V1_ISSUER_HOST}/{tenant}/"),
            audiences=(client, f"api://{client}"),
            discovery_url=f"{v2}/.well-known/openid-configuration",
            expected_discovery_issuer=v2,
            user_id_claim="oid",
            tenant_id=tenant,
            require_scope_or_roles=True,
            leeway=settings.jwt_leeway,
            min_refresh_interval=settings.jwks_min_refresh_interval,
        )

    @classmethod
    def oidc(cls, settings: Settings) -> JwtConfig:
        """A generic OpenID provider: one issuer, one audience, user id from ``sub``."""
        issuer, audience = settings.oidc_issuer, settings.oidc_audience
        if not issuer or not audience:
            raise ValueError("auth=oidc needs oidc_issuer and oidc_audience")
        return cls(
            issuers=(issuer,),
            audiences=(audience,),
            discovery_url=f"{issuer.rstrip('/')}/.well-known/openid-configuration",
            expected_discovery_issuer=issuer,
            user_id_claim="sub",
            leeway=settings.jwt_leeway,
            min_refresh_interval=settings.jwks_min_refresh_interval,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    kty: str
    alg: str | None
    key: Any


class _KeyCache:
    """The provider's signing keys, when they were fetched, and the last fetch failure."""

    def __init__(self) -> None:
        self.keys: dict[str | None, _Key] = {}
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        self.last_error: str | None = None
        self.jwks_uri: str | None = None


class JwtAuthenticator:
    """Validates ``Authorization: Bearer <jwt>`` against an OpenID provider's published keys.

    ``http_client`` is used for discovery and JWKS fetches when given (the caller closes it);
    otherwise the authenticator opens its own in :meth:`start` and closes it in :meth:`close`.
    ``clock`` returns monotonic seconds and only paces JWKS refreshes; token times use wall time.
    """

    def __init__(
        self,
        config: JwtConfig,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._client = http_client
        self._owns_client = http_client is None
        self._clock = clock
        self._cache = _KeyCache()
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtAuthenticator:
        """The authenticator for ``settings.auth`` (entra or oidc)."""
        if settings.auth == "entra":
            return cls(JwtConfig.entra(settings))
        if settings.auth == "oidc":
            return cls(JwtConfig.oidc(settings))
        raise ValueError(f"JwtAuthenticator does not serve auth={settings.auth}")

    async def start(self) -> None:
        """Fetch discovery and keys once; a failure is logged and retried on demand (503 until then)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False)
        async with self._lock:
            try:
                await self._refresh()
            except DependencyUnavailable as exc:
                log.error("identity provider not reachable at start: %s", exc.detail)

    async def close(self) -> None:
        """Close the HTTP client if this authenticator opened it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The caller's identity from a valid bearer token; Unauthenticated otherwise."""
        token = bearer_token(headers)
        header = _jose_header(token)
        alg = header.get("alg")
        _check_algorithm(alg)
        assert isinstance(alg, str)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("token header 'kid' must be a string")
        key = await self._key_for(kid)
        if ALLOWED_ALGORITHMS[alg] != key.kty:
            raise Unauthenticated(f"token algorithm {alg} does not fit key {_short(kid)} of type {key.kty}")
        if key.alg is not None and key.alg != alg:
            raise Unauthenticated(f"token algorithm {alg} differs from the algorithm {key.alg} of key {_short(kid)}")
        claims = self._decode(token, key, alg)
        # The validated token rides along (never shown or logged) for on-behalf-of exchanges (issue 18).
        return dataclasses.replace(self._identity(claims), bearer_token=token)

    # --- keys --------------------------------------------------------------------------

    async def _key_for(self, kid: str | None) -> _Key:
        cache = self._cache
        now = self._clock()
        stale = cache.fetched_at is None or now - cache.fetched_at >= self.config.max_key_age
        if stale or kid not in cache.keys:
            await self._maybe_refresh(kid)
        if kid is None:
            if len(cache.keys) == 1:
                return next(iter(cache.keys.values()))
            raise Unauthenticated(
                f"token header has no 'kid' and the issuer publishes {len(cache.keys)} keys; cannot pick one"
            )
        found = cache.keys.get(kid)
        if found is None:
            ago = self._clock() - cache.fetched_at if cache.fetched_at is not None else 0.0
            raise Unauthenticated(
                f"token key id {_short(kid)} is not among the issuer's signing keys "
                f"(fetched {ago:.0f}s ago; refetched at most every {self.config.min_refresh_interval:g}s)"
            )
        return found

    async def _maybe_refresh(self, kid: str | None) -> None:
        """Refetch the keys unless another task just did, or the refresh budget is spent."""
        async with self._lock:
            cache = self._cache
            now = self._clock()
            fresh = cache.fetched_at is not None and now - cache.fetched_at < self.config.max_key_age
            if fresh and (kid is None or kid in cache.keys):
                return
            if cache.attempted_at is not None and now - cache.attempted_at < self.config.min_refresh_interval:
                if cache.fetched_at is None:
                    wait = self.config.min_refresh_interval - (now - cache.attempted_at)
                    reason = cache.last_error or "signing keys not loaded"
                    raise DependencyUnavailable("identity provider", reason, retry_after=max(1, int(wait)))
                return
            try:
                await self._refresh()
            except DependencyUnavailable:
                if cache.fetched_at is None:
                    raise
                # Keep serving with the keys we have; the provider may be briefly down.
                log.warning("JWKS refresh failed, keeping %d cached keys: %s", len(cache.keys), cache.last_error)

    async def _refresh(self) -> None:
        """Fetch discovery (once) and the JWKS. Caller holds the lock."""
        cache = self._cache
        cache.attempted_at = self._clock()
        try:
            if cache.jwks_uri is None:
                cache.jwks_uri = await self._discover()
            jwks = await self._get_json(cache.jwks_uri, "JWKS")
            keys = _parse_jwks(jwks, cache.jwks_uri)
        except DependencyUnavailable as exc:
            cache.last_error = exc.detail
            raise
        cache.keys = keys
        cache.fetched_at = self._clock()
        cache.last_error = None
        log.info("loaded %d signing keys from %s", len(keys), cache.jwks_uri)

    async def _discover(self) -> str:
        doc = await self._get_json(self.config.discovery_url, "OpenID configuration")
        expected = self.config.expected_discovery_issuer
        issuer = doc.get("issuer")
        if expected is not None and (not isinstance(issuer, str) or issuer.rstrip("/") != expected.rstrip("/")):
            raise DependencyUnavailable(
                "identity provider",
                f"{self.config.discovery_url} names issuer {issuer!r}, expected {expected!r}; check the tenant "
                "or issuer setting",
            )
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise DependencyUnavailable("identity provider", f"{self.config.discovery_url} has no usable jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False)
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise DependencyUnavailable("identity provider", f"{what} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise DependencyUnavailable("identity provider", f"{what} {url} answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise DependencyUnavailable("identity provider", f"{what} {url} is not JSON") from None
        if not isinstance(body, dict):
            raise DependencyUnavailable("identity provider", f"{what} {url} is not a JSON object")
        return body

    # --- claims ------------------------------------------------------------------------

    def _decode(self, token: str, key: _Key, alg: str) -> dict[str, Any]:
        cfg = self.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=list(cfg.audiences),
                issuer=list(cfg.issuers),
                leeway=cfg.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except InvalidSignatureError:
            raise Unauthenticated(f"token signature does not verify with key {key.kid!r}") from None
        except ExpiredSignatureError:
            exp = _unverified_claim(token, "exp")
            raise Unauthenticated(f"token expired at {_when(exp)}") from None
        except ImmatureSignatureError:
            nbf = _unverified_claim(token, "nbf")
            raise Unauthenticated(f"token is not valid before {_when(nbf)}") from None
        except InvalidIssuedAtError:
            raise Unauthenticated("token 'iat' is in the future or not a number") from None
        except InvalidAudienceError:
            aud = _unverified_claim(token, "aud")
            raise Unauthenticated(
                f"token audience {_short(aud)} is not this gateway (expected one of {', '.join(cfg.audiences)})"
            ) from None
        except InvalidIssuerError:
            iss = _unverified_claim(token, "iss")
            raise Unauthenticated(
                f"token issuer {_short(iss)} is not accepted (expected one of {', '.join(cfg.issuers)})"
            ) from None
        except MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the required {exc.claim!r} claim") from None
        except DecodeError as exc:
            raise Unauthenticated(f"token is not a well-formed JWT: {exc}") from None
        except PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {exc}") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        cfg = self.config
        if cfg.tenant_id is not None and "tid" in claims and claims["tid"] != cfg.tenant_id:
            raise Unauthenticated(f"token tenant {_short(claims['tid'])} is not this gateway's tenant")
        if cfg.require_scope_or_roles and not claims.get("scp") and not claims.get("roles"):
            # Entra ID tokens for the gateway's own app have the right audience but carry neither;
            # only access tokens (delegated 'scp' or application 'roles') are accepted.
            raise Unauthenticated("token carries neither 'scp' nor 'roles'; send an access token, not an ID token")
        user = claims.get(cfg.user_id_claim)
        if not isinstance(user, str) or not user:
            raise Unauthenticated(f"token lacks the {cfg.user_id_claim!r} claim that identifies the user")
        return Identity(user_id=user, roles=_roles(claims.get("roles")))


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer`` header, or Unauthenticated(invalid_request)."""
    value = headers.get("authorization")
    if value is None or not value.strip():
        raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'", error="invalid_request")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(
            f"Authorization scheme {scheme!r} is not supported; use 'Bearer <token>'", error="invalid_request"
        )
    token = token.strip()
    if not token or " " in token:
        raise Unauthenticated("Authorization header must be 'Bearer <token>' with one token", error="invalid_request")
    return token


def _jose_header(token: str) -> dict[str, Any]:
    if token.count(".") != 2:
        raise Unauthenticated("token is not a JWT (expected three dot-separated parts)")
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError as exc:  # DecodeError, and InvalidTokenError for a non-string 'kid' or an unknown 'crit'
        raise Unauthenticated(f"token header is not valid: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # belt and braces: header bytes are attacker-chosen
        raise Unauthenticated(f"token header is not valid: {type(exc).__name__}") from None
    return header


def _check_algorithm(alg: object) -> None:
    if not isinstance(alg, str) or not alg:
        raise Unauthenticated("token header has no 'alg'")
    if alg.lower() == "none":
        raise Unauthenticated("unsigned tokens (alg 'none') are not accepted")
    if alg.upper().startswith("HS"):
        raise Unauthenticated(
            f"HMAC-signed tokens ({alg}) are not accepted; only the issuer's public-key signatures are"
        )
    if alg not in ALLOWED_ALGORITHMS:
        allowed = ", ".join(ALLOWED_ALGORITHMS)
        raise Unauthenticated(f"token algorithm {_short(alg)} is not accepted (allowed: {allowed})")


def _parse_jwks(jwks: dict[str, Any], uri: str) -> dict[str | None, _Key]:
    raw = jwks.get("keys")
    if not isinstance(raw, list):
        raise DependencyUnavailable("identity provider", f"JWKS {uri} has no 'keys' list")
    keys: dict[str | None, _Key] = {}
    for jwk in raw:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kty, alg, kid = jwk.get("kty"), jwk.get("alg"), jwk.get("kid")
        if kty not in ("RSA", "EC", "OKP") or (alg is not None and alg not in ALLOWED_ALGORITHMS):
            continue  # symmetric keys and algorithms we never accept
        try:
            parsed = jwt.PyJWK(jwk)
        except (PyJWKError, PyJWTError, ValueError, TypeError) as exc:
            log.warning("skipping unusable JWKS key %r from %s: %s", kid, uri, exc)
            continue
        keys[kid if isinstance(kid, str) else None] = _Key(
            kid=kid if isinstance(kid, str) else None, kty=kty, alg=alg, key=parsed.key
        )
    return keys


def _unverified_claim(token: str, name: str) -> Any:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except PyJWTError:
        return None


def _when(value: Any) -> str:
    """A claim time for an error message; any value the token holds, even one no datetime can show."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            pass
    return _short(value)


def _short(value: Any) -> str:
    """``repr`` of a claim cut to 80 characters: the text goes into a response header."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _roles(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()
