"""Tokens of the gateway's own identity (azure-identity), for ``upstreamAuth`` type ``managed-identity``.

One token per scope set, the same for every caller, cached until ``refresh_margin`` before expiry
(azure-identity caches too, but a dict lookup per request is cheaper than its lock and checks). The
credential is the one Cosmos and Redis use: the user-assigned managed identity named by
``AZURE_CLIENT_ID``, else ``DefaultAzureCredential`` (AKS workload identity, a developer's az login).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.credentials.errors import CredentialUnavailable, redact_tokens


class ManagedIdentityTokens:
    """Cached tokens of the gateway's identity."""

    def __init__(
        self,
        *,
        client_id: str | None,
        refresh_margin: float = 300.0,
        timeout: float = 10.0,
        credential: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._credential = credential
        self._owns_credential = credential is None
        """An injected credential (the composition root's shared one) is closed by its owner."""
        self._margin = refresh_margin
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, ...], tuple[str, float]] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    def _build(self) -> Any:
        from gateway.azure_credentials import build_azure_credential

        return build_azure_credential(self._client_id)

    async def token(self, adapter: str, scopes: tuple[str, ...]) -> str:
        """A token for ``scopes``; CredentialUnavailable naming the identity when none can be had."""
        return (await self.acquire(adapter, scopes))[0]

    async def acquire(self, adapter: str, scopes: tuple[str, ...]) -> tuple[str, bool]:
        """The token and whether this call fetched it (True) or found it cached (False)."""
        hit = self._cache.get(scopes)
        if hit is not None and self._clock() < hit[1]:
            return hit[0], False
        lock = self._locks.setdefault(scopes, asyncio.Lock())
        async with lock:
            hit = self._cache.get(scopes)
            if hit is not None and self._clock() < hit[1]:
                return hit[0], False
            if self._credential is None:
                self._credential = self._build()
            try:
                access = await asyncio.wait_for(self._credential.get_token(*scopes), self._timeout)
            except Exception as exc:  # azure-identity raises ClientAuthenticationError, CredentialUnavailableError…
                who = f"managed identity {self._client_id}" if self._client_id else "the gateway's Azure identity"
                raise CredentialUnavailable(
                    f"{who} could not get a token for {' '.join(scopes)}: {type(exc).__name__}: "
                    f"{redact_tokens(str(exc))[:200]}",
                    adapter=adapter,
                    scopes=scopes,
                ) from None
            lifetime = max(0.0, float(access.expires_on) - self._clock())
            renew = access.expires_on - (self._margin if lifetime > 2 * self._margin else lifetime / 2)
            self._cache[scopes] = (access.token, renew)
            return str(access.token), True

    async def close(self) -> None:
        """Close the credential's transport (only one this object built itself)."""
        if self._owns_credential and self._credential is not None and hasattr(self._credential, "close"):
            await self._credential.close()
