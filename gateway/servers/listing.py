"""Cached listings of virtual servers: each member's own listing, and the merged answer built from them.

Two levels, both per caller (user id and roles) and both bounded by ``MCPGW_SERVER_LIST_TTL``:

* **member listings** — what one member adapter answered to ``tools/list`` (or prompts, resources,
  templates) for this caller, keyed by the member's version (its adapter's etag), so a listing
  fetched for one caller is never shown to another (the data plane filtered it by the caller's
  roles, and the member itself sees the caller's identity);
* **merged listings** — the caller-visible answer of a whole server as ready JSON bytes (prefixed,
  filtered by the members' globs and toolPolicy, deduplicated), keyed by what it was computed from:
  the caller, and each member's spec and version. A cached ``tools/list`` is then answered without a
  fan-out, without filtering and without encoding: the bytes are spliced into the JSON-RPC answer.

Decision (2026-11-30): bytes, not objects. Answering a cached 10-member, 40-tool listing from the
member level took 0.40-0.42 ms of gateway CPU per request (``scripts/bench_servers.py``: ten tasks for
the fan-out, 400 visibility checks, 40 tool dicts copied and encoded again), nearly what a whole direct
``tools/call`` costs; from the merged bytes 0.23-0.26 ms: the request's parsing and access checks
(docs/performance.md, *Virtual servers*).

Invalidation: a member's ``list_changed`` heard on a call's stream drops that member's listings and
every merged listing that includes it, at once; everything else ages out by the TTL (a merged entry
expires with the oldest member listing it was built from). Each member has a version counter bumped
by invalidation: a fan-out that started before an invalidation does not store what it fetched, so a
listing announced as changed is never cached again by a request already in flight. Expired entries
are dropped by ``sweep`` (the server calls it at most every 10 s), so callers that never come back
do not hold memory much beyond one TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

#: (adapter, adapter etag, user id, roles, kind): one member's listing for one caller.
MemberKey = tuple[str, str, str, frozenset[str], str]
#: (kind, user id, roles, members' signature): a server's merged listing for one caller.
MergedKey = tuple[str, str, frozenset[str], tuple[Hashable, ...]]


@dataclass(frozen=True, slots=True)
class MergedListing:
    """A merged listing ready to send: the JSON array of items, and which member owns each unprefixed name."""

    body: bytes
    owners: dict[str, str]
    adapters: frozenset[str]
    expires: float


class ListingCache:
    """Member listings and merged listings per caller, with TTL, ``list_changed`` invalidation and sweeping."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._members: dict[MemberKey, tuple[float, list[Any]]] = {}
        self._merged: dict[MergedKey, MergedListing] = {}
        self._versions: dict[str, int] = {}
        self._epoch = 0

    @property
    def enabled(self) -> bool:
        """False with a TTL of 0: nothing is cached."""
        return self.ttl > 0

    def version(self, adapter: str) -> tuple[int, int]:
        """The member's listing version: read before a fan-out, checked again before storing its result."""
        return self._epoch, self._versions.get(adapter, 0)

    def member(self, key: MemberKey) -> tuple[float, list[Any]] | None:
        """(expiry, items) of a member listing still valid, else None."""
        entry = self._members.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry

    def fresh_until(self) -> float:
        """The expiry of a listing fetched now."""
        return self._clock() + self.ttl

    def put_member(self, key: MemberKey, items: list[Any], version: tuple[int, int]) -> float:
        """Keep a member listing fetched at ``version``; returns its expiry (kept only if still current)."""
        expires = self.fresh_until()
        if self.enabled and self.version(key[0]) == version:
            self._members[key] = (expires, items)
        return expires

    def merged(self, key: MergedKey) -> MergedListing | None:
        """A merged listing still valid, else None."""
        entry = self._merged.get(key)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def put_merged(self, key: MergedKey, listing: MergedListing, versions: dict[str, tuple[int, int]]) -> None:
        """Keep a merged listing built from member listings of ``versions`` (if none changed meanwhile)."""
        if self.enabled and all(self.version(adapter) == v for adapter, v in versions.items()):
            self._merged[key] = listing

    def invalidate(self, adapter: str | None = None) -> None:
        """Drop the listings of one member (its ``list_changed``) and every merged listing with it; or all."""
        if adapter is None:
            self._epoch += 1
            self._members.clear()
            self._merged.clear()
            return
        self._versions[adapter] = self._versions.get(adapter, 0) + 1
        for key in [k for k in self._members if k[0] == adapter]:
            del self._members[key]
        for merged_key in [k for k, v in self._merged.items() if adapter in v.adapters]:
            del self._merged[merged_key]

    def sweep(self) -> None:
        """Drop expired entries."""
        now = self._clock()
        for key in [k for k, (expires, _) in self._members.items() if expires <= now]:
            del self._members[key]
        for merged_key in [k for k, v in self._merged.items() if v.expires <= now]:
            del self._merged[merged_key]

    def __len__(self) -> int:
        return len(self._members) + len(self._merged)
