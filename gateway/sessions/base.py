"""The session record store protocol.

A record exists for every open 2025-era Streamable HTTP session and legacy SSE session routed
by the gateway. The sealed session id the client holds already names adapter, replica, user
and upstream id; the record adds revocation and a sliding idle lifetime.
Implementations: ``memory`` (embedded) and ``redis``.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class SessionRecord(msgspec.Struct, kw_only=True):
    """One session: who owns it, where it is pinned, when it was made and last used (epoch seconds)."""

    sid: str
    user_id: str
    adapter: str
    replica: str
    created: float
    last_used: float


class SessionStore(Protocol):
    """Session records with a sliding TTL and revocation."""

    async def start(self) -> None:
        """Connect."""

    async def close(self) -> None:
        """Disconnect."""

    async def ping(self) -> None:
        """Raise SessionStoreUnavailable when the store cannot be reached."""

    async def put(self, record: SessionRecord, ttl: float) -> None:
        """Store a record that expires ``ttl`` seconds after its last use."""

    async def get(self, sid: str) -> SessionRecord | None:
        """The live record, or None when unknown, expired or revoked."""

    async def touch(self, sid: str, last_used: float, ttl: float) -> None:
        """Mark the session used now and push its expiry out by ``ttl``."""

    async def revoke(self, sid: str) -> None:
        """Delete one record."""

    async def revoke_adapter(self, adapter: str) -> int:
        """Delete every record of an adapter; returns how many."""

    async def count(self, adapter: str | None = None) -> int:
        """Live records, of one adapter or of all."""
