"""The adapter metadata store protocol.

A store keeps desired state only. Implementations: ``sqlite`` (embedded) and ``cosmos``.
The contract every implementation honours is pinned by ``tests/store_contract.py``.
"""

from __future__ import annotations

from typing import Protocol

from gateway.models import AdapterRecord, ServerRecord


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


class ServerExists(Exception):
    """ServerStore.create() was called for a name that is already stored."""


class ServerStore(Protocol):
    """Durable virtual server records (issue 16), keyed by name, with an etag per record.

    The second record kind of the metadata store: SQLite keeps them in their own table of the same
    file, Cosmos DB in the same container as ``kind: "server"`` items whose ids cannot collide with
    adapter names. Both share the adapter store's connection, so start/close stay with it.
    Same contract as AdapterStore (tests/integration/test_store_contract.py), with ServerExists.
    """

    async def create(self, record: ServerRecord) -> ServerRecord:
        """Insert a new record; raise ServerExists if the name is taken. Returns it with its etag."""

    async def get(self, name: str) -> ServerRecord | None:
        """The record named ``name``, or None."""

    async def list(self, *, limit: int, after: str | None = None) -> list[ServerRecord]:
        """Up to ``limit`` records ordered by name, starting after the name ``after``."""

    async def replace(self, record: ServerRecord, *, etag: str) -> ServerRecord:
        """Overwrite if the stored etag is ``etag``; EtagMismatch if not, KeyError when gone."""

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Remove the record (only if its etag is ``etag`` when given); False when it was absent."""


class ServerStoreOwner(Protocol):
    """An adapter store that also keeps virtual servers (both implementations do)."""

    def servers(self) -> ServerStore:
        """The server records, sharing this store's connection."""
