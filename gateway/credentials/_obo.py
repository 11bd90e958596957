"""Entra ID on-behalf-of with MSAL, as a confidential client (issue 18).

2026-11 (../shared/research/stdio-registry-obo-lease.md §5, measured with msal 1.39.0): MSAL refuses an
``http://`` authority, does discovery in its constructor (so the app is built on first use, in a
thread), and ``acquire_token_on_behalf_of`` never reads its own cache (two calls = two POSTs). The
gateway therefore keeps its own cache keyed by (user, scopes) until ``refresh_margin`` before expiry,
and lets one exchange per key run at a time (concurrent callers wait for it). MSAL is synchronous: each
exchange runs in a worker thread.

The client credential is, in order of preference: a workload-identity federated assertion (the token
file is re-read on every exchange, as AKS rotates it), a certificate (PEM with key and certificate),
or a client secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.credentials.errors import ConsentRequired, CredentialUnavailable, OboFailed, redact_tokens

#: Entra error codes that mean "consent is missing" (AADSTS65001 and its admin variant).
CONSENT_CODES = frozenset({65001, 65004, 90094, 90099})


@dataclass(frozen=True, slots=True)
class OboConfig:
    """The gateway's app registration and its credential."""

    authority: str
    client_id: str
    client_secret: str | None = None
    certificate_path: Path | None = None
    federated_token_file: Path | None = None
    timeout: float = 10.0

    def credential(self) -> str | dict[str, Any] | None:
        """MSAL's ``client_credential``, or None when none is configured."""
        if self.federated_token_file is not None:
            path = self.federated_token_file
            return {"client_assertion": lambda: path.read_text().strip()}
        if self.certificate_path is not None:
            return _certificate_credential(self.certificate_path)
        return self.client_secret


def _certificate_credential(path: Path) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    pem = path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    return {
        "private_key": pem.decode(),
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),  # SHA-1: the x5t thumbprint Entra expects
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }


@dataclass(slots=True)
class _Cached:
    token: str
    renew_at: float


class OboExchanger:
    """Exchanges a user's token for upstream tokens, with a per-(user, scopes) cache."""

    def __init__(
        self,
        config: OboConfig,
        *,
        refresh_margin: float = 300.0,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._margin = refresh_margin
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], _Cached] = OrderedDict()
        self._inflight: dict[tuple[str, tuple[str, ...]], asyncio.Future[str]] = {}
        self._app: Any = None
        self.exchanges = 0

    async def token(self, adapter: str, user_id: str, assertion: str | None, scopes: tuple[str, ...]) -> str:
        """An access token for ``scopes`` on behalf of ``user_id``, from the cache or one exchange."""
        return (await self.acquire(adapter, user_id, assertion, scopes))[0]

    async def acquire(
        self, adapter: str, user_id: str, assertion: str | None, scopes: tuple[str, ...]
    ) -> tuple[str, bool]:
        """The token and whether this call exchanged it (True) or reused one (False: the cache, or a
        concurrent caller's exchange it waited for) — so "issued" audit records count exchanges."""
        key = (user_id, scopes)
        hit = self._cache.get(key)
        if hit is not None and self._clock() < hit.renew_at:
            self._cache.move_to_end(key)
            return hit.token, False
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), False
        if not assertion:
            raise OboFailed(
                "on-behalf-of needs the caller's Entra access token; none was presented",
                adapter=adapter,
                scopes=scopes,
            )
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            token = await self._exchange(adapter, key, assertion)
            future.set_result(token)
            return token, True
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._inflight[key]

    async def _exchange(self, adapter: str, key: tuple[str, tuple[str, ...]], assertion: str) -> str:
        scopes = key[1]
        started = self._clock()
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(self._acquire, list(scopes), assertion), self._config.timeout + 5
            )
        except CredentialUnavailable as exc:
            exc.adapter, exc.scopes = adapter, scopes
            raise
        except Exception as exc:  # MSAL raises ValueError / requests errors for transport and config problems
            raise CredentialUnavailable(
                f"Entra ID on-behalf-of at {self._config.authority}: {type(exc).__name__}: "
                f"{redact_tokens(str(exc), assertion)[:200]}",
                adapter=adapter,
                scopes=scopes,
            ) from None
        self.exchanges += 1
        if "access_token" not in result:
            raise _failure(result, adapter, scopes, assertion)
        token = str(result["access_token"])
        lifetime = float(result.get("expires_in") or 600)
        ttl = lifetime - self._margin if lifetime > 2 * self._margin else lifetime / 2
        self._cache[key] = _Cached(token, started + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return token

    def _acquire(self, scopes: list[str], assertion: str) -> dict[str, Any]:
        if self._app is None:
            credential = self._config.credential()
            if credential is None:
                raise CredentialUnavailable(
                    "no on-behalf-of credential is configured: set MCPGW_OBO_CLIENT_SECRET, "
                    "MCPGW_OBO_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE",
                    adapter="",
                )
            import msal

            self._app = msal.ConfidentialClientApplication(
                self._config.client_id,
                client_credential=credential,
                authority=self._config.authority,
                instance_discovery=False,
                timeout=self._config.timeout,
            )
        result: dict[str, Any] = self._app.acquire_token_on_behalf_of(assertion, scopes)
        return result


def _failure(result: dict[str, Any], adapter: str, scopes: tuple[str, ...], assertion: str = "") -> Exception:
    """The error for Entra's refusal; nothing of the provider's text that looks like a token is kept."""
    error = redact_tokens(str(result.get("error") or "unknown_error"), assertion)[:100]
    described = redact_tokens(str(result.get("error_description") or ""), assertion)
    description = (described.splitlines() or [""])[0][:300]
    suberror = redact_tokens(str(result.get("suberror") or ""), assertion)[:100]
    codes = {int(c) for c in result.get("error_codes") or [] if isinstance(c, int)}
    claims = redact_tokens(result["claims"], assertion) if isinstance(result.get("claims"), str) else None
    wanted = " ".join(scopes)
    if suberror == "consent_required" or codes & CONSENT_CODES:
        return ConsentRequired(
            f"the upstream of adapter {adapter!r} needs consent to {wanted}: ask the user or an admin to consent "
            f"({error}: {description})",
            adapter=adapter,
            scopes=scopes,
        )
    if error in ("invalid_grant", "interaction_required"):
        what = "satisfy the claims challenge and " if claims else ""
        return OboFailed(
            f"Entra ID refused to exchange your token for {wanted} ({error}"
            f"{'/' + suberror if suberror else ''}): {what}sign in again for a new token ({description})",
            adapter=adapter,
            scopes=scopes,
            claims=claims,
        )
    return CredentialUnavailable(
        f"Entra ID on-behalf-of for {wanted} failed with {error}: {description}; check the gateway's app "
        "registration and its credential (MCPGW_OBO_*)",
        adapter=adapter,
        scopes=scopes,
    )


def fingerprint(token: str) -> str:
    """A short digest to tell tokens apart in tests and logs without showing them."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]
