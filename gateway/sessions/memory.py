"""In-process session records for the embedded gateway.

A dict of records with a monotonic expiry each, indexes by adapter, by (adapter, user) and by
(adapter, replica incarnation), and a heap of expiry times that lets every write drop a bounded
number of expired records, so no call ever pays for a full sweep. No method awaits while it
changes state, so each call (``open``'s check-then-insert included) is atomic on the event loop
and no lock is needed.

Size (2026-11-30, issue 12): the store holds at most ``max_sessions`` records. When a new one
would exceed that, the record closest to expiry (with one sliding TTL for all: the least
recently used) is evicted and counted in ``evictions`` (``mcpgw_session_evictions``); its client
gets 404 on its next request and initializes again. The per-user and per-adapter caps make
eviction rare; the maximum is the backstop that keeps memory bounded whatever the caps are.
"""

from __future__ import annotations

import heapq
import time
from typing import TypeVar

import msgspec

from gateway.sessions.base import SessionLimitExceeded, SessionLimits, SessionRecord

SWEEP_BATCH = 64
"""Most expired records one write removes (bounded cleanup cost per call)."""

DEFAULT_MAX_SESSIONS = 100_000
"""Default of ``MCPGW_SESSION_MEMORY_MAX`` (about 60 MB of records and indexes at the maximum)."""

_Key = tuple[str, str]
_K = TypeVar("_K", str, _Key)


class MemorySessionStore:
    """Session records in this process, with a sliding TTL and a maximum size. Lost when the process exits."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self.evictions = 0
        self._records: dict[str, SessionRecord] = {}
        self._expires: dict[str, float] = {}
        self._by_adapter: dict[str, set[str]] = {}
        self._by_user: dict[_Key, set[str]] = {}
        self._by_replica: dict[_Key, set[str]] = {}
        # (expiry, sid) for every put/touch; stale entries (expiry pushed out since) are skipped.
        self._heap: list[tuple[float, str]] = []

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Drop every record."""
        self._records.clear()
        self._expires.clear()
        self._by_adapter.clear()
        self._by_user.clear()
        self._by_replica.clear()
        self._heap.clear()

    async def ping(self) -> None:
        """Always reachable."""

    async def open(self, record: SessionRecord, ttl: float, limits: SessionLimits) -> None:
        """Store a new record unless the user's or the adapter's cap is reached (SessionLimitExceeded)."""
        now = time.monotonic()
        self._sweep(now, SWEEP_BATCH)
        if limits.per_user > 0:
            self._check(self._by_user.get((record.adapter, record.user_id)), "per_user", limits.per_user, now)
        if limits.per_adapter > 0:
            self._check(self._by_adapter.get(record.adapter), "per_adapter", limits.per_adapter, now)
        self._insert(record, ttl, now)

    async def put(self, record: SessionRecord, ttl: float) -> None:
        """Store a record that expires ``ttl`` seconds after its last use."""
        now = time.monotonic()
        self._sweep(now, SWEEP_BATCH)
        self._insert(record, ttl, now)

    async def get(self, sid: str) -> SessionRecord | None:
        """The live record, or None when unknown, expired or revoked."""
        record = self._records.get(sid)
        if record is None:
            return None
        if self._expires[sid] <= time.monotonic():
            self._remove(sid)
            return None
        return record

    async def touch(self, sid: str, last_used: float, ttl: float) -> None:
        """Mark the session used now and push its expiry out by ``ttl``; unknown sessions stay unknown."""
        now = time.monotonic()
        self._sweep(now, SWEEP_BATCH)
        record = self._records.get(sid)
        if record is None or self._expires[sid] <= now:
            self._remove(sid)
            return
        if ttl <= 0:
            self._remove(sid)
            return
        self._records[sid] = msgspec.structs.replace(record, last_used=last_used)
        self._set_expiry(sid, now + ttl)

    async def revoke(self, sid: str) -> None:
        """Delete one record."""
        self._remove(sid)

    async def revoke_adapter(self, adapter: str) -> int:
        """Delete every record of an adapter; returns how many were live."""
        return self._remove_all(self._by_adapter.get(adapter, set()))

    async def revoke_replica(self, adapter: str, replica_uid: str) -> int:
        """Delete every record pinned to one replica incarnation; returns how many were live."""
        return self._remove_all(self._by_replica.get((adapter, replica_uid), set()))

    async def count(self, adapter: str | None = None) -> int:
        """Live records, of one adapter or of all."""
        # Unbounded here, but each expired record is removed once, so the cost is amortized.
        self._sweep(time.monotonic(), None)
        if adapter is None:
            return len(self._records)
        return len(self._by_adapter.get(adapter, ()))

    async def count_user(self, adapter: str, user_id: str) -> int:
        """Live records of one user on one adapter."""
        self._sweep(time.monotonic(), None)
        return len(self._by_user.get((adapter, user_id), ()))

    async def count_replica(self, adapter: str, replica_uid: str) -> int:
        """Live records pinned to one replica incarnation."""
        self._sweep(time.monotonic(), None)
        return len(self._by_replica.get((adapter, replica_uid), ()))

    # --- internals ------------------------------------------------------------------------

    def _check(self, sids: set[str] | None, limit: str, maximum: int, now: float) -> None:
        if sids is None or len(sids) < maximum:
            return
        # The set may still hold expired records the bounded sweep has not reached: drop them first.
        expired = [sid for sid in sids if self._expires.get(sid, 0.0) <= now]
        for sid in expired:
            self._remove(sid)
        if len(sids) < maximum:
            return
        soonest = min(self._expires[sid] for sid in sids)
        raise SessionLimitExceeded(limit, maximum, soonest - now)

    def _insert(self, record: SessionRecord, ttl: float, now: float) -> None:
        self._remove(record.sid)
        if ttl <= 0:
            return
        while len(self._records) >= self.max_sessions:
            self._evict_one(now)
        # A copy: records handed out are never changed afterwards, whoever holds them.
        self._records[record.sid] = msgspec.structs.replace(record)
        self._by_adapter.setdefault(record.adapter, set()).add(record.sid)
        self._by_user.setdefault((record.adapter, record.user_id), set()).add(record.sid)
        self._by_replica.setdefault((record.adapter, record.replica_uid), set()).add(record.sid)
        self._set_expiry(record.sid, now + ttl)

    def _evict_one(self, now: float) -> None:
        """Remove the record that expires first; count it when it was still live."""
        heap = self._heap
        while heap:
            expires, sid = heapq.heappop(heap)
            if self._expires.get(sid) == expires:
                self._remove(sid)
                if expires > now:
                    self.evictions += 1
                return
        # Heap out of step with the records (cannot happen): fall back to the oldest inserted.
        self._remove(next(iter(self._records)))
        self.evictions += 1

    def _set_expiry(self, sid: str, expires: float) -> None:
        self._expires[sid] = expires
        heapq.heappush(self._heap, (expires, sid))
        if len(self._heap) > 2 * len(self._expires) + SWEEP_BATCH:
            # Many touches leave many stale entries: rebuild from the live expiry times.
            self._heap = [(e, s) for s, e in self._expires.items()]
            heapq.heapify(self._heap)

    def _sweep(self, now: float, limit: int | None) -> None:
        heap = self._heap
        done = 0
        while heap and heap[0][0] <= now and (limit is None or done < limit):
            expires, sid = heapq.heappop(heap)
            done += 1
            if self._expires.get(sid) == expires:
                self._remove(sid)

    def _remove_all(self, sids: set[str]) -> int:
        now = time.monotonic()
        live = 0
        for sid in list(sids):
            if self._expires.get(sid, 0.0) > now:
                live += 1
            self._remove(sid)
        return live

    def _remove(self, sid: str) -> None:
        record = self._records.pop(sid, None)
        self._expires.pop(sid, None)
        if record is None:
            return
        _discard(self._by_adapter, record.adapter, sid)
        _discard(self._by_user, (record.adapter, record.user_id), sid)
        _discard(self._by_replica, (record.adapter, record.replica_uid), sid)


def _discard(index: dict[_K, set[str]], key: _K, sid: str) -> None:
    sids = index.get(key)
    if sids is not None:
        sids.discard(sid)
        if not sids:
            del index[key]
