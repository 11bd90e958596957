"""SQLite adapter store: the embedded default, one file in the data dir.

Calls run on one dedicated thread (sqlite3 connections are not shared across threads), so the
event loop never blocks on disk. WAL mode lets several gateway processes share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec

from gateway.errors import StoreUnavailable
from gateway.models import AdapterRecord, ServerRecord
from gateway.store.base import AdapterExists, EtagMismatch, ServerExists

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS adapters (
    name TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    doc  BLOB NOT NULL
)
"""
#: Virtual servers (issue 16): the second record kind, in its own table of the same file.
_SERVERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    doc  BLOB NOT NULL
)
"""


class SqliteAdapterStore:
    """Adapter records in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(AdapterRecord)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise StoreUnavailable("SQLite store", "not started")
            try:
                with self._conn:
                    return fn(self._conn)
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable("SQLite store", f"{self._path}: {exc}") from exc

        if self._executor is None:
            raise StoreUnavailable("SQLite store", "not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def start(self) -> None:
        """Open (and create) the database file."""

        def open_db() -> None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=10, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(_SCHEMA)
            conn.execute(_SERVERS_SCHEMA)
            conn.isolation_level = "DEFERRED"
            self._conn = conn

        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, open_db)
        except sqlite3.Error as exc:
            raise StoreUnavailable("SQLite store", f"cannot open {self._path}: {exc}") from exc

    async def close(self) -> None:
        """Close the database."""

        def close_db() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, close_db)
            executor.shutdown(wait=False)

    def servers(self) -> SqliteServerStore:
        """The virtual server records of the same file (started and closed with this store)."""
        return SqliteServerStore(self)

    async def ping(self) -> None:
        """Run a trivial query."""
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    def _decode(self, etag: str, doc: bytes) -> AdapterRecord:
        record = self._decoder.decode(doc)
        record.etag = etag
        return record

    async def create(self, record: AdapterRecord) -> AdapterRecord:
        """Insert; AdapterExists when the name is taken."""
        stored = msgspec.structs.replace(record, etag=uuid.uuid4().hex)

        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute(
                    "INSERT INTO adapters (name, etag, doc) VALUES (?, ?, ?)",
                    (stored.name, stored.etag, self._encoder.encode(stored)),
                )
            except sqlite3.IntegrityError:
                raise AdapterExists(record.name) from None

        await self._run(insert)
        return stored

    async def get(self, name: str) -> AdapterRecord | None:
        """Point read."""
        row = await self._run(lambda c: c.execute("SELECT etag, doc FROM adapters WHERE name = ?", (name,)).fetchone())
        return None if row is None else self._decode(row[0], row[1])

    async def list(self, *, limit: int, after: str | None = None) -> list[AdapterRecord]:
        """A page ordered by name."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT etag, doc FROM adapters WHERE name > ? ORDER BY name LIMIT ?", (after or "", limit)
            ).fetchall()
        )
        return [self._decode(etag, doc) for etag, doc in rows]

    async def replace(self, record: AdapterRecord, *, etag: str) -> AdapterRecord:
        """Conditional overwrite."""
        stored = msgspec.structs.replace(record, etag=uuid.uuid4().hex)

        def update(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE adapters SET etag = ?, doc = ? WHERE name = ? AND etag = ?",
                (stored.etag, self._encoder.encode(stored), record.name, etag),
            )
            if cur.rowcount == 0:
                exists = c.execute("SELECT 1 FROM adapters WHERE name = ?", (record.name,)).fetchone()
                if exists is None:
                    raise KeyError(record.name)
                raise EtagMismatch(record.name)

        await self._run(update)
        return stored

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Conditional delete."""

        def remove(c: sqlite3.Connection) -> bool:
            if etag is None:
                return c.execute("DELETE FROM adapters WHERE name = ?", (name,)).rowcount > 0
            cur = c.execute("DELETE FROM adapters WHERE name = ? AND etag = ?", (name, etag))
            if cur.rowcount == 0:
                if c.execute("SELECT 1 FROM adapters WHERE name = ?", (name,)).fetchone() is not None:
                    raise EtagMismatch(name)
                return False
            return True

        return await self._run(remove)


class SqliteServerStore:
    """Virtual server records in the ``servers`` table, on the adapter store's connection and thread."""

    def __init__(self, owner: SqliteAdapterStore) -> None:
        self._owner = owner
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(ServerRecord)

    def _decode(self, etag: str, doc: bytes) -> ServerRecord:
        record = self._decoder.decode(doc)
        record.etag = etag
        return record

    async def create(self, record: ServerRecord) -> ServerRecord:
        """Insert; ServerExists when the name is taken."""
        stored = msgspec.structs.replace(record, etag=uuid.uuid4().hex)

        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute(
                    "INSERT INTO servers (name, etag, doc) VALUES (?, ?, ?)",
                    (stored.name, stored.etag, self._encoder.encode(stored)),
                )
            except sqlite3.IntegrityError:
                raise ServerExists(record.name) from None

        await self._owner._run(insert)
        return stored

    async def get(self, name: str) -> ServerRecord | None:
        """Point read."""
        row = await self._owner._run(
            lambda c: c.execute("SELECT etag, doc FROM servers WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else self._decode(row[0], row[1])

    async def list(self, *, limit: int, after: str | None = None) -> list[ServerRecord]:
        """A page ordered by name."""
        rows = await self._owner._run(
            lambda c: c.execute(
                "SELECT etag, doc FROM servers WHERE name > ? ORDER BY name LIMIT ?", (after or "", limit)
            ).fetchall()
        )
        return [self._decode(etag, doc) for etag, doc in rows]

    async def replace(self, record: ServerRecord, *, etag: str) -> ServerRecord:
        """Conditional overwrite."""
        stored = msgspec.structs.replace(record, etag=uuid.uuid4().hex)

        def update(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE servers SET etag = ?, doc = ? WHERE name = ? AND etag = ?",
                (stored.etag, self._encoder.encode(stored), record.name, etag),
            )
            if cur.rowcount == 0:
                if c.execute("SELECT 1 FROM servers WHERE name = ?", (record.name,)).fetchone() is None:
                    raise KeyError(record.name)
                raise EtagMismatch(record.name)

        await self._owner._run(update)
        return stored

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Conditional delete."""

        def remove(c: sqlite3.Connection) -> bool:
            if etag is None:
                return c.execute("DELETE FROM servers WHERE name = ?", (name,)).rowcount > 0
            cur = c.execute("DELETE FROM servers WHERE name = ? AND etag = ?", (name, etag))
            if cur.rowcount == 0:
                if c.execute("SELECT 1 FROM servers WHERE name = ?", (name,)).fetchone() is not None:
                    raise EtagMismatch(name)
                return False
            return True

        return await self._owner._run(remove)
