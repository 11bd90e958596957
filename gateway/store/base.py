"""The adapter metadata store protocol.

A store keeps desired state only. Implementations: ``sqlite`` (embedded) and ``cosmos``.
The contract every implementation honours is pinned by ``tests/store_contract.py``.
"""

from __future__ import annotations

from typing import Protocol

from gateway.models import AdapterRecord


class AdapterExists(Exception):
    """create() was called for a name that is already stored."""


class EtagMismatch(Exception):
    """replace()/delete() lost an optimistic-concurrency race: the stored etag differs."""


class AdapterStore(Protocol):
    """Durable adapter records, keyed by name, with an etag per record."""

    async def start(self) -> None:
        """Open connections; create schema where the implementation owns it."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""

    async def create(self, record: AdapterRecord) -> AdapterRecord:
        """Insert a new record; raise AdapterExists if the name is taken. Returns it with its etag."""

    async def get(self, name: str) -> AdapterRecord | None:
        """The record named ``name``, or None."""

    async def list(self, *, limit: int, after: str | None = None) -> list[AdapterRecord]:
        """Up to ``limit`` records ordered by name, starting after the name ``after``."""

    async def replace(self, record: AdapterRecord, *, etag: str) -> AdapterRecord:
        """Overwrite the record if its stored etag is ``etag``.

        Raise EtagMismatch when it is not, KeyError when the record is gone. Returns the new record.
        """

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Remove the record (only if its etag is ``etag`` when given); False when it was absent."""
