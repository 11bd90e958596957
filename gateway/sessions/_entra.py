"""Entra ID authentication to Azure Redis: a redis-py credential provider backed by azure-identity.

Azure Cache for Redis and Azure Managed Redis accept ``AUTH <object id> <access token>`` for an
identity that holds a data access policy. Tokens live about an hour and the server drops a
connection whose token expired, so the provider refreshes the token ahead of expiry and hands the
new one to redis-py, which re-authenticates every pooled connection (idle ones at once, busy ones
when they are released). New connections always authenticate with the current token.

Tokens are secrets: nothing here logs them or puts them in an exception or a ``repr``.

Why not ``redis-entraid`` (compared 2026-11-30 with redis-entraid 1.2.2 and redis-py 8.1.0, the
package Redis publishes for exactly this; kept this module):

- **It blocks the event loop.** Its identity providers are synchronous (msal's
  ``ManagedIdentityClient`` over ``requests``, or the sync ``azure.identity.DefaultAzureCredential``)
  and redis-py's ``TokenManager.acquire_token_async`` calls ``idp.request_token()`` directly on the
  loop, for every new connection and for every refresh: a token request (IMDS or the workload
  identity exchange, 50 ms to seconds) would stall every MCP request of the gateway. Here the
  azure-identity *async* credential is awaited.
- **It cannot take an injected credential.** ``create_from_managed_identity`` /
  ``create_from_default_azure_credential`` / ``create_from_service_principal`` each build their own
  client, so it could not share the one Azure credential (and token cache) that ``gateway/app.py``
  builds for Cosmos and Redis (``gateway/azure_credentials.py``). msal's ``ManagedIdentityClient``
  also does not read AKS workload identity's federated token file; only the default-credential
  path would work on AKS.
- **No user name override and no shutdown.** The Redis user is always the token's ``oid``
  (``MCPGW_REDIS_USERNAME`` could not be honoured), and the async renewal re-arms itself with
  ``loop.call_later`` without keeping the handle, so ``TokenManager.stop()`` cannot stop it and
  nothing closes the credential.
- Re-AUTH of pooled connections is the same in both: redis-py's own ``on_next`` callback (which this
  provider feeds too). Its default retry policy is 3 attempts 3 ms apart with a 100 ms request
  timeout; here a failed refresh is retried every 10 s while the old token still works.
- Dependencies: it adds ``msal`` and ``requests`` as direct requirements (both already arrive with
  azure-identity); this module needs ``PyJWT`` only to read ``oid``, as redis-entraid does.
- Tests: this provider is tested against a real redis-server with ACL users whose passwords are
  minted tokens (tests/integration/test_session_stores.py: ``test_entra_*``), including a refresh where the
  server accepts only the newest token.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from azure.core.credentials_async import AsyncTokenCredential
from redis.auth.token import TokenInterface
from redis.credentials import StreamingCredentialProvider
from redis.exceptions import ExternalAuthProviderError

log = logging.getLogger(__name__)

REDIS_SCOPE = "https://redis.azure.com/.default"
"""The scope of an access token for Azure Cache for Redis and Azure Managed Redis."""

REFRESH_RATIO = 0.75
"""Refresh once this share of a token's lifetime has passed (45 minutes into a one-hour token)."""

MIN_REFRESH_AFTER = 1.0
"""Never refresh a token younger than this (guards against a busy loop on odd expiry times)."""

REFRESH_RETRY_DELAY = 10.0
"""Seconds between attempts after a failed refresh (while the old token is still valid)."""

EXPIRY_SKEW = 30.0
"""A token this close to expiry is not handed out any more."""

REAUTH_TIMEOUT = 5.0
"""Longest time re-authenticating the pooled connections may take after a refresh."""


class EntraToken(TokenInterface):
    """An access token in the shape redis-py's re-authentication expects.

    redis-py sends ``AUTH <try_get("oid")> <get_value()>`` when it re-authenticates pooled
    connections, so ``try_get("oid")`` answers with the Redis user name (the configured one or the
    token's ``oid`` claim).
    """

    def __init__(self, value: str, username: str, expires_at: float, received_at: float) -> None:
        self._value = value
        self.username = username
        self.expires_at = expires_at
        self.received_at = received_at

    def __repr__(self) -> str:
        return f"EntraToken(username={self.username!r}, expires_at={self.expires_at})"

    def is_expired(self) -> bool:
        return self.ttl() <= 0

    def ttl(self) -> float:
        return (self.expires_at - time.time()) * 1000

    def try_get(self, key: str) -> str:
        # redis-py asks for "oid" to name the user to AUTH as.
        return self.username if key == "oid" else ""

    def get_value(self) -> str:
        return self._value

    def get_expires_at_ms(self) -> float:
        return self.expires_at * 1000

    def get_received_at_ms(self) -> float:
        return self.received_at * 1000

    @property
    def refresh_at(self) -> float:
        """When a new token should be fetched (epoch seconds)."""
        lifetime = max(self.expires_at - self.received_at, 0.0)
        return self.received_at + max(REFRESH_RATIO * lifetime, MIN_REFRESH_AFTER)


class EntraCredentialProvider(StreamingCredentialProvider):
    """Redis credentials ``(user, access token)`` from an azure-identity async credential.

    ``username`` is the Redis user (the identity's object id); when None it is read from the
    token's ``oid`` claim. Call :meth:`aclose` when done: it stops the refresh task, and closes the
    credential when ``owns_credential`` (a credential shared with other components, e.g. the one
    ``gateway/app.py`` injects, is closed by its owner).
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        username: str | None = None,
        scope: str = REDIS_SCOPE,
        owns_credential: bool = True,
    ) -> None:
        self._credential = credential
        self._owns_credential = owns_credential
        self._username = username
        self._scope = scope
        self._token: EntraToken | None = None
        self._pushed: EntraToken | None = None  # the token the pooled connections were last given
        self._lock = asyncio.Lock()
        self._on_next: Callable[[Any], Any] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"EntraCredentialProvider(username={self._username!r}, scope={self._scope!r})"

    # --- redis-py CredentialProvider ------------------------------------------------------

    def get_credentials(self) -> tuple[str, str]:
        """The current credentials; only the async client is supported, so no token is fetched here."""
        token = self._token
        if token is None or token.expires_at - EXPIRY_SKEW <= time.time():
            raise ExternalAuthProviderError("no Entra ID token yet: use the asyncio Redis client")
        return token.username, token.get_value()

    async def get_credentials_async(self) -> tuple[str, str]:
        """Credentials for a new connection: the cached token, fetched again when due."""
        token = await self.current_token()
        self._ensure_refresher()
        return token.username, token.get_value()

    def on_next(self, callback: Callable[[Any], Any]) -> None:
        """redis-py registers its re-authentication of pooled connections here."""
        self._on_next = callback

    def on_error(self, callback: Callable[[Exception], Any]) -> None:
        """Refresh failures are logged and retried here rather than raised into redis-py."""

    def is_streaming(self) -> bool:
        return self._refresher is not None and not self._refresher.done()

    # --- ours ---------------------------------------------------------------------------------

    async def current_token(self) -> EntraToken:
        """A token that is not due for refresh, fetching one when needed.

        Raises ``ExternalAuthProviderError`` (a redis ``ConnectionError``) when no usable token
        can be had.
        """
        token = self._token
        if token is not None and time.time() < token.refresh_at:
            return token
        async with self._lock:
            token = self._token
            if token is not None and time.time() < token.refresh_at:
                return token
            try:
                return await self._fetch()
            except ExternalAuthProviderError:
                if token is not None and time.time() < token.expires_at - EXPIRY_SKEW:
                    return token  # the old one still works; the refresher keeps trying
                raise

    async def refresh(self) -> EntraToken:
        """Fetch a new token now and re-authenticate the pooled connections with it."""
        async with self._lock:
            token = await self._fetch()
        await self._push(token)
        return token

    async def aclose(self) -> None:
        """Stop refreshing, and close the credential when this provider owns it."""
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._owns_credential:
            await self._credential.close()

    async def _fetch(self) -> EntraToken:
        received = time.time()
        try:
            access = await self._credential.get_token(self._scope)
        except Exception as exc:
            # azure-identity messages name the credential chain and what failed, never the token.
            raise ExternalAuthProviderError(
                f"could not get an Entra ID token for {self._scope}: {type(exc).__name__}: {exc}"
            ) from exc
        username = self._username or _oid_claim(access.token)
        token = EntraToken(access.token, username, float(access.expires_on), received)
        if self._token is None:
            self._pushed = token  # the first token: every connection made so far used it
        self._token = token
        log.debug("fetched an Entra ID token for Redis user %s, valid until %.0f", username, token.expires_at)
        return token

    async def _push(self, token: EntraToken) -> None:
        if self._on_next is None or token is self._pushed:
            return
        result = self._on_next(token)
        if inspect.isawaitable(result):
            async with asyncio.timeout(REAUTH_TIMEOUT):
                await result
        self._pushed = token

    def _ensure_refresher(self) -> None:
        if self._closed or (self._refresher is not None and not self._refresher.done()):
            return
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="redis-entra-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            token = self._token
            delay = REFRESH_RETRY_DELAY if token is None else max(token.refresh_at - time.time(), 0.0)
            await asyncio.sleep(delay)
            try:
                # A new connection may have fetched the next token already; the pooled ones
                # still need it either way.
                await self._push(await self.current_token())
            except Exception as exc:
                remaining = (token.expires_at - time.time()) if token else 0.0
                log.warning(
                    "refreshing the Entra ID token for Redis failed (%s: %s); current token expires in %.0f s",
                    type(exc).__name__,
                    exc,
                    remaining,
                )
                await asyncio.sleep(min(REFRESH_RETRY_DELAY, max(remaining / 2, 1.0)))


def _oid_claim(token: str) -> str:
    """The ``oid`` claim of an access token (read, not verified: Redis verifies it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ExternalAuthProviderError(
            f"the Entra ID token is not a JWT ({type(exc).__name__}); set MCPGW_REDIS_USERNAME"
        ) from None
    oid = claims.get("oid")
    if not isinstance(oid, str) or not oid:
        raise ExternalAuthProviderError("the Entra ID token has no oid claim; set MCPGW_REDIS_USERNAME")
    return oid
