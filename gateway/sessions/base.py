"""The session record store protocol.

A record exists for every open 2025-era Streamable HTTP session and legacy SSE session routed
by the gateway. The sealed session id the client holds already names adapter, replica, user
and upstream id; the record adds revocation, a sliding idle lifetime and the counts the caps
are checked against. Implementations: ``memory`` (embedded) and ``redis``.

Caps (2026-11-30, issue 12): one user opening 20,000 sessions filled the example server's
session table and locked every other user out. ``open`` therefore checks the caps and inserts
in one atomic step (one event-loop turn in memory, one Lua script in Redis), so concurrent
``initialize`` calls on several gateways cannot overshoot a cap. Counts come from the live
records themselves (an expired or revoked session frees its slot at once), never from a
separate counter that could drift.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class SessionRecord(msgspec.Struct, kw_only=True):
    """One session: who owns it, where it is pinned, when it was made and last used (epoch seconds).

    ``replica`` is the replica's stable name (metrics label); ``replica_uid`` the incarnation the
    session is pinned to, so its sessions can be dropped when that incarnation goes.
    """

    sid: str
    user_id: str
    adapter: str
    replica: str
    created: float
    last_used: float
    replica_uid: str = ""


class SessionLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Caps ``open`` enforces; 0 means no cap."""

    per_user: int = 0
    """Open sessions one user may hold on one adapter (``MCPGW_SESSION_MAX_PER_USER``)."""
    per_adapter: int = 0
    """Open sessions on one adapter, all users together (``MCPGW_SESSION_MAX_PER_ADAPTER``)."""


LIMIT_SETTINGS = {"per_user": "MCPGW_SESSION_MAX_PER_USER", "per_adapter": "MCPGW_SESSION_MAX_PER_ADAPTER"}
"""The setting that controls each cap, for error messages."""


class SessionLimitExceeded(Exception):
    """``open`` refused a session: ``limit`` (``per_user`` or ``per_adapter``) is at ``maximum``.

    ``retry_after`` is how many seconds until the oldest counted session expires if unused (at
    least 1): the earliest a slot frees by itself. Closing a session (DELETE) frees one at once.
    """

    def __init__(self, limit: str, maximum: int, retry_after: float) -> None:
        super().__init__(f"{limit} session limit of {maximum} reached")
        self.limit = limit
        self.maximum = maximum
        self.retry_after = max(1.0, retry_after)

    @property
    def setting(self) -> str:
        """The environment variable that raises this cap."""
        return LIMIT_SETTINGS.get(self.limit, self.limit)


class SessionStore(Protocol):
    """Session records with a sliding TTL, caps and revocation."""

    @property
    def evictions(self) -> int:
        """Live records dropped to keep the store within its maximum size (memory store; 0 for Redis)."""

    async def start(self) -> None:
        """Connect."""

    async def close(self) -> None:
        """Disconnect."""

    async def ping(self) -> None:
        """Raise SessionStoreUnavailable when the store cannot be reached."""

    async def open(self, record: SessionRecord, ttl: float, limits: SessionLimits) -> None:
        """Store a new record unless a cap is reached (checked and inserted atomically).

        Raises SessionLimitExceeded naming the cap; the record is then not stored.
        """

    async def put(self, record: SessionRecord, ttl: float) -> None:
        """Store a record that expires ``ttl`` seconds after its last use (no caps checked)."""

    async def get(self, sid: str) -> SessionRecord | None:
        """The live record, or None when unknown, expired or revoked."""

    async def touch(self, sid: str, last_used: float, ttl: float) -> None:
        """Mark the session used now and push its expiry out by ``ttl``."""

    async def revoke(self, sid: str) -> None:
        """Delete one record."""

    async def revoke_adapter(self, adapter: str) -> int:
        """Delete every record of an adapter; returns how many."""

    async def revoke_replica(self, adapter: str, replica_uid: str) -> int:
        """Delete every record pinned to one replica incarnation (it is gone); returns how many."""

    async def count(self, adapter: str | None = None) -> int:
        """Live records, of one adapter or of all."""

    async def count_user(self, adapter: str, user_id: str) -> int:
        """Live records of one user on one adapter."""

    async def count_replica(self, adapter: str, replica_uid: str) -> int:
        """Live records pinned to one replica incarnation (a draining replica stops at 0)."""
