"""Session checks on the data plane: sealed ids first, the session store only when needed.

A request carrying a session id is checked in this order, cheapest first: the seal (no I/O), the
adapter and user it names, its absolute age, then the record (revocation, idle expiry). Records
are cached for ``session_cache_seconds`` so most requests touch no store, and the sliding expiry
is pushed out in the background at most every ``touch_every`` seconds. When the store cannot be
reached, sessions whose seal is valid keep routing (logged and counted); only opening a new
session needs the store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from gateway.errors import SessionStoreUnavailable
from gateway.proxy.sealing import SessionClaims, SessionSealer
from gateway.sessions.base import SessionRecord, SessionStore

log = logging.getLogger("gateway.proxy.sessions")

CACHE_MAX = 100_000


class SessionRejected(Exception):
    """The session id cannot be used; the reason is for logs, the client just gets 404."""


class SessionRouter:
    """Opens, checks and revokes sessions routed by this gateway."""

    def __init__(
        self,
        store: SessionStore,
        sealer: SessionSealer,
        *,
        ttl: float,
        max_age: float,
        cache_seconds: float,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._ttl = ttl
        self._max_age = max_age
        self._cache_seconds = cache_seconds
        self._touch_every = min(60.0, ttl / 10)
        self._cache: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self.store_errors = 0
        self._last_outage_log = 0.0

    async def open_session(
        self, *, kind: str, adapter: str, replica: str, replica_uid: str, upstream: str, user_id: str
    ) -> tuple[str, SessionClaims]:
        """Record a new session; returns the sealed id for the client and its claims (needs the store)."""
        now = time.time()
        sid = secrets.token_urlsafe(16)
        record = SessionRecord(sid=sid, user_id=user_id, adapter=adapter, replica=replica, created=now, last_used=now)
        await self._store.put(record, self._ttl)
        self._remember(record, time.monotonic())
        claims = SessionClaims(
            kind=kind,
            sid=sid,
            adapter=adapter,
            replica=replica,
            replica_uid=replica_uid,
            upstream=upstream,
            user_id=user_id,
            issued_at=now,
        )
        return self._sealer.seal(claims), claims

    async def check(self, token: str, *, kind: str, adapter: str, user_id: str) -> SessionClaims:
        """The claims of a usable session id; SessionRejected otherwise."""
        claims = self._sealer.open(token)
        if claims is None:
            raise SessionRejected("not a session id this gateway issued")
        if claims.kind != kind:
            raise SessionRejected(f"a {claims.kind} session id used on a {kind} route")
        if claims.adapter != adapter:
            raise SessionRejected("session id of another adapter")
        if claims.user_id != user_id:
            raise SessionRejected("session id of another user")
        now = time.time()
        if now - claims.issued_at > self._max_age:
            raise SessionRejected("session id past its maximum age")
        record = await self._record(claims.sid)
        if record is None:
            raise SessionRejected("session revoked or expired")
        if now - record.last_used > self._touch_every:
            record.last_used = now
            self._spawn(self._touch(claims.sid, now))
        return claims

    async def revoke(self, claims: SessionClaims) -> None:
        """End a session now (client DELETE, stream closed, upstream forgot it)."""
        self._cache.pop(claims.sid, None)
        try:
            await self._store.revoke(claims.sid)
        except SessionStoreUnavailable as exc:
            self._outage(exc)

    async def close(self) -> None:
        """Wait briefly for background touches."""
        if self._background:
            await asyncio.wait(self._background, timeout=2)

    def active_sessions(self) -> dict[tuple[str, str], int]:
        """Sessions this gateway has cached and seen used within the idle TTL, by (adapter, replica)."""
        cutoff = time.time() - self._ttl
        counts: dict[tuple[str, str], int] = {}
        for record, _ in list(self._cache.values()):
            if record.adapter and record.last_used > cutoff:
                key = (record.adapter, record.replica)
                counts[key] = counts.get(key, 0) + 1
        return counts

    async def _record(self, sid: str) -> SessionRecord | None:
        mono = time.monotonic()
        cached = self._cache.get(sid)
        if cached is not None and mono - cached[1] < self._cache_seconds:
            return cached[0]
        try:
            record = await self._store.get(sid)
        except SessionStoreUnavailable as exc:
            self._outage(exc)
            if cached is not None:
                return cached[0]
            # The seal is authentic and within its maximum age: keep the session routing.
            return SessionRecord(sid=sid, user_id="", adapter="", replica="", created=0.0, last_used=time.time())
        if record is None:
            self._cache.pop(sid, None)
            return None
        self._remember(record, mono)
        return record

    def _remember(self, record: SessionRecord, mono: float) -> None:
        self._cache[record.sid] = (record, mono)
        self._cache.move_to_end(record.sid)
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)

    async def _touch(self, sid: str, now: float) -> None:
        try:
            await self._store.touch(sid, now, self._ttl)
        except SessionStoreUnavailable as exc:
            self._outage(exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _outage(self, exc: SessionStoreUnavailable) -> None:
        self.store_errors += 1
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            log.warning("session store unreachable, routing existing sessions from their sealed ids: %s", exc.detail)
