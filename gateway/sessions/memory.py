"""In-process session records for the embedded gateway.

A dict of records with a monotonic expiry each, an index by adapter, and a heap of expiry times
that lets every write drop a bounded number of expired records, so no call ever pays for a
full sweep. No method awaits while it changes state, so each call is atomic on the event loop
and no lock is needed.
"""

from __future__ import annotations

import heapq
import time

import msgspec

from gateway.sessions.base import SessionRecord

SWEEP_BATCH = 64
"""Most expired records one write removes (bounded cleanup cost per call)."""


class MemorySessionStore:
    """Session records in this process, with a sliding TTL. Lost when the process exits."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._expires: dict[str, float] = {}
        self._by_adapter: dict[str, set[str]] = {}
        # (expiry, sid) for every put/touch; stale entries (expiry pushed out since) are skipped.
        self._heap: list[tuple[float, str]] = []

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Drop every record."""
        self._records.clear()
        self._expires.clear()
        self._by_adapter.clear()
        self._heap.clear()

    async def ping(self) -> None:
        """Always reachable."""

    async def put(self, record: SessionRecord, ttl: float) -> None:
        """Store a record that expires ``ttl`` seconds after its last use."""
        now = time.monotonic()
        self._sweep(now, SWEEP_BATCH)
        self._remove(record.sid)
        if ttl <= 0:
            return
        # A copy: records handed out are never changed afterwards, whoever holds them.
        self._records[record.sid] = msgspec.structs.replace(record)
        self._by_adapter.setdefault(record.adapter, set()).add(record.sid)
        self._set_expiry(record.sid, now + ttl)

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
        now = time.monotonic()
        sids = self._by_adapter.pop(adapter, set())
        live = 0
        for sid in sids:
            if self._expires.get(sid, 0.0) > now:
                live += 1
            self._records.pop(sid, None)
            self._expires.pop(sid, None)
        return live

    async def count(self, adapter: str | None = None) -> int:
        """Live records, of one adapter or of all."""
        # Unbounded here, but each expired record is removed once, so the cost is amortized.
        self._sweep(time.monotonic(), None)
        if adapter is None:
            return len(self._records)
        return len(self._by_adapter.get(adapter, ()))

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

    def _remove(self, sid: str) -> None:
        record = self._records.pop(sid, None)
        self._expires.pop(sid, None)
        if record is not None:
            sids = self._by_adapter.get(record.adapter)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._by_adapter[record.adapter]
