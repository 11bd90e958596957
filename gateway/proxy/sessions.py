"""Session checks on the data plane: sealed ids first, the session store only when needed.

A request carrying a session id is checked in this order, cheapest first: the seal (no I/O), the
adapter and user it names, its absolute age, then the record (revocation, idle expiry). Records
are cached for ``session_cache_seconds`` so most requests touch no store, and the sliding expiry
is pushed out in the background at most every ``touch_every`` seconds. When the store cannot be
reached, sessions whose seal is valid keep routing (logged and counted); only opening a new
session needs the store.

Bounds (2026-11-30, issue 12): opening a session goes through ``SessionStore.open``, which checks
the per-user and per-adapter caps and inserts atomically (SessionLimitExceeded → 429). A sealed
id longer than the sealer accepts is refused before anything is stored (SessionIdTooLong → 502):
before this check, a long upstream session id was accepted at ``initialize`` and then answered
404 forever. When a replica incarnation leaves an adapter's ready endpoints, ``replicas_changed``
revokes its sessions in the store and drops them from the cache at once, instead of leaving them
counted (and cached) until their idle TTL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from typing import Any

from gateway.errors import SessionStoreUnavailable
from gateway.proxy.sealing import MAX_TOKEN_CHARS, SessionClaims, SessionSealer
from gateway.runtime.base import Endpoint
from gateway.sessions.base import SessionLimitExceeded, SessionLimits, SessionRecord, SessionStore

log = logging.getLogger("gateway.proxy.sessions")

CACHE_MAX = 100_000
CACHE_PRUNE_BATCH = 8
"""Most cache entries of expired sessions one new entry removes (bounded cost per call)."""


class SessionRejected(Exception):
    """The session id cannot be used; the reason is for logs, the client just gets 404."""


class SessionIdTooLong(Exception):
    """The upstream's session id (or SSE endpoint) is too long to fit in a sealed id the gateway accepts."""

    def __init__(self, upstream_length: int, sealed_length: int) -> None:
        super().__init__(
            f"the upstream's session id is {upstream_length} characters long; sealed it would be "
            f"{sealed_length} characters, over the {MAX_TOKEN_CHARS} the gateway accepts"
        )


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
        limits: SessionLimits | None = None,
    ) -> None:
        self._store = store
        self._limits = limits or SessionLimits()
        self.limit_rejections: dict[str, int] = {}
        self.replica_revocations = 0
        self._live_uids: dict[str, frozenset[str]] = {}
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
        self,
        *,
        kind: str,
        adapter: str,
        replica: str,
        replica_uid: str,
        upstream: str,
        user_id: str,
        client_caps: str = "",
    ) -> tuple[str, SessionClaims]:
        """Record a new session; returns the sealed id for the client and its claims (needs the store).

        Raises SessionIdTooLong when the sealed id would be longer than the gateway accepts, and
        SessionLimitExceeded when the user or the adapter is at its cap; nothing is stored then.
        """
        now = time.time()
        sid = secrets.token_urlsafe(16)
        claims = SessionClaims(
            kind=kind,
            sid=sid,
            adapter=adapter,
            replica=replica,
            replica_uid=replica_uid,
            upstream=upstream,
            user_id=user_id,
            issued_at=now,
            client_caps=client_caps,
        )
        token = self._sealer.seal(claims)
        if len(token) > MAX_TOKEN_CHARS:
            raise SessionIdTooLong(len(upstream), len(token))
        record = SessionRecord(
            sid=sid,
            user_id=user_id,
            adapter=adapter,
            replica=replica,
            replica_uid=replica_uid,
            created=now,
            last_used=now,
        )
        try:
            await self._store.open(record, self._ttl, self._limits)
        except SessionLimitExceeded as exc:
            self.limit_rejections[exc.limit] = self.limit_rejections.get(exc.limit, 0) + 1
            raise
        self._remember(record, time.monotonic())
        return token, claims

    @property
    def sealer(self) -> SessionSealer:
        """The key ring's sealer (virtual servers seal the ids of relayed requests with it)."""
        return self._sealer

    def replicas_changed(self, adapter: str, endpoints: Iterable[Endpoint]) -> None:
        """The adapter's ready endpoints changed: revoke the sessions of every incarnation that left.

        Called by the runtime's endpoint listener (no I/O here; the store calls run in the background).
        """
        live = frozenset(e.uid for e in endpoints)
        gone = self._live_uids.get(adapter, frozenset()) - live
        if live:
            self._live_uids[adapter] = live
        else:
            self._live_uids.pop(adapter, None)
        if not gone:
            return
        for sid, (record, _) in list(self._cache.items()):
            if record.adapter == adapter and record.replica_uid in gone:
                del self._cache[sid]
        for uid in gone:
            self._spawn(self._revoke_replica(adapter, uid))

    @property
    def evictions(self) -> int:
        """Live sessions the store dropped to stay within its maximum size."""
        return self._store.evictions

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

    def forget(self, claims: SessionClaims) -> None:
        """Revoke a session in the background (its replica is gone: it can never route again)."""
        self._cache.pop(claims.sid, None)
        self._spawn(self.revoke(claims))

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
        cache = self._cache
        cache[record.sid] = (record, mono)
        cache.move_to_end(record.sid)
        while len(cache) > CACHE_MAX:
            cache.popitem(last=False)
        # Entries are in the order they were last read from the store, which a session in use does
        # every cache_seconds: the oldest ones not read for a whole idle TTL are expired sessions.
        # Before this (issue 12 soak) an abandoned session's entry stayed until CACHE_MAX pushed it
        # out: +20 KiB/min of Python heap at 6 sessions/s, up to 100,000 entries (~50 MB).
        for _ in range(CACHE_PRUNE_BATCH):
            oldest = next(iter(cache.values()), None)
            if oldest is None or mono - oldest[1] <= self._ttl:
                break
            cache.popitem(last=False)

    async def _revoke_replica(self, adapter: str, uid: str) -> None:
        try:
            count = await self._store.revoke_replica(adapter, uid)
        except SessionStoreUnavailable as exc:
            self._outage(exc)
            return
        self.replica_revocations += count
        if count:
            log.info("revoked %d session(s) of adapter %s pinned to a replica that is gone", count, adapter)

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
