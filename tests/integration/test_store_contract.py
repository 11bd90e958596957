"""The AdapterStore contract: every implementation passes these unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from gateway.models import AdapterRecord, ServerMember, ServerRecord
from gateway.store import AdapterExists, AdapterStore, EtagMismatch, ServerExists, ServerStore
from gateway.store.base import ServerStoreOwner
from gateway.store.sqlite import SqliteAdapterStore

StoreFactory = Callable[[Path], Awaitable[AdapterStore]]


async def _sqlite(tmp_path: Path) -> AdapterStore:
    return SqliteAdapterStore(tmp_path / "store.db")


async def _cosmos(tmp_path: Path) -> AdapterStore:
    # A real Cosmos-protocol server (tests/fixtures/cosmos.py), one database per test.
    from tests.fixtures.cosmos import new_cosmos_store

    return await new_cosmos_store()


# Implementations under contract. Each factory returns a store that is not yet started.
FACTORIES: dict[str, StoreFactory] = {"sqlite": _sqlite, "cosmos": _cosmos}


@pytest.fixture(params=sorted(FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AdapterStore]:
    s = await FACTORIES[request.param](tmp_path)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def record(name: str, **changes: object) -> AdapterRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = AdapterRecord(
        name=name,
        image_name="mcp-example",
        image_version="1.0.0",
        environment_variables={"A": "1"},
        replica_count=2,
        description="d",
        required_roles=["reader"],
        created_by="alice",
        created_at=now,
        last_updated_at=now,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


async def test_create_then_get_returns_the_same_record_with_an_etag(store: AdapterStore) -> None:
    created = await store.create(record("alpha"))
    assert created.etag
    got = await store.get("alpha")
    assert got is not None
    assert got.etag == created.etag
    assert got.environment_variables == {"A": "1"}
    assert got.required_roles == ["reader"]
    assert got.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert got.generation == 1


async def test_get_unknown_is_none(store: AdapterStore) -> None:
    assert await store.get("nope") is None


async def test_create_duplicate_raises_adapter_exists(store: AdapterStore) -> None:
    await store.create(record("alpha"))
    with pytest.raises(AdapterExists):
        await store.create(record("alpha"))


async def test_replace_with_current_etag_succeeds_and_changes_etag(store: AdapterStore) -> None:
    created = await store.create(record("alpha"))
    updated = await store.replace(record("alpha", replica_count=5, generation=2), etag=created.etag)
    assert updated.etag and updated.etag != created.etag
    got = await store.get("alpha")
    assert got is not None and got.replica_count == 5 and got.generation == 2 and got.etag == updated.etag


async def test_replace_with_stale_etag_raises_etag_mismatch(store: AdapterStore) -> None:
    created = await store.create(record("alpha"))
    await store.replace(record("alpha", description="first"), etag=created.etag)
    with pytest.raises(EtagMismatch):
        await store.replace(record("alpha", description="second"), etag=created.etag)
    got = await store.get("alpha")
    assert got is not None and got.description == "first"


async def test_replace_missing_raises_key_error(store: AdapterStore) -> None:
    with pytest.raises(KeyError):
        await store.replace(record("ghost"), etag="whatever")


async def test_delete_removes_and_reports_absence(store: AdapterStore) -> None:
    await store.create(record("alpha"))
    assert await store.delete("alpha") is True
    assert await store.get("alpha") is None
    assert await store.delete("alpha") is False


async def test_delete_with_stale_etag_keeps_the_record(store: AdapterStore) -> None:
    created = await store.create(record("alpha"))
    await store.replace(record("alpha", description="new"), etag=created.etag)
    with pytest.raises(EtagMismatch):
        await store.delete("alpha", etag=created.etag)
    assert await store.get("alpha") is not None


async def test_list_pages_in_name_order(store: AdapterStore) -> None:
    for name in ["delta", "alpha", "charlie", "bravo", "echo"]:
        await store.create(record(name))
    first = await store.list(limit=2)
    assert [r.name for r in first] == ["alpha", "bravo"]
    second = await store.list(limit=2, after="bravo")
    assert [r.name for r in second] == ["charlie", "delta"]
    third = await store.list(limit=2, after="delta")
    assert [r.name for r in third] == ["echo"]
    assert await store.list(limit=2, after="echo") == []
    assert all(r.etag for r in first + second + third)


async def test_ping_succeeds_on_a_started_store(store: AdapterStore) -> None:
    await store.ping()


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    first = SqliteAdapterStore(tmp_path / "s.db")
    await first.start()
    await first.create(record("alpha"))
    await first.close()
    second = SqliteAdapterStore(tmp_path / "s.db")
    await second.start()
    try:
        got = await second.get("alpha")
        assert got is not None and got.name == "alpha"
    finally:
        await second.close()


# --- virtual servers (issue 16): the second record kind, same contract, shared with adapters -------


def servers_of(store: AdapterStore) -> ServerStore:
    owner = cast(ServerStoreOwner, store)
    return owner.servers()


def server(name: str, **changes: object) -> ServerRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = ServerRecord(
        name=name,
        description="d",
        required_roles=["reader"],
        members=[ServerMember(adapter="alpha", prefix="a_", tools=["add", "echo*"], exclude=["debug*"])],
        created_by="alice",
        created_at=now,
        last_updated_at=now,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


async def test_servers_create_get_replace_delete(store: AdapterStore) -> None:
    servers = servers_of(store)
    created = await servers.create(server("one"))
    assert created.etag
    got = await servers.get("one")
    assert got is not None and got.etag == created.etag
    assert got.members == [ServerMember(adapter="alpha", prefix="a_", tools=["add", "echo*"], exclude=["debug*"])]
    assert got.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ServerExists):
        await servers.create(server("one"))
    updated = await servers.replace(server("one", description="new"), etag=created.etag)
    assert updated.etag != created.etag
    with pytest.raises(EtagMismatch):
        await servers.replace(server("one", description="stale"), etag=created.etag)
    with pytest.raises(EtagMismatch):
        await servers.delete("one", etag=created.etag)
    with pytest.raises(KeyError):
        await servers.replace(server("ghost"), etag="whatever")
    assert await servers.delete("one", etag=updated.etag) is True
    assert await servers.get("one") is None
    assert await servers.delete("one") is False


async def test_servers_and_adapters_do_not_see_each_other(store: AdapterStore) -> None:
    servers = servers_of(store)
    for name in ["alpha", "zulu"]:
        await store.create(record(name))
    for name in ["bravo", "alpha", "charlie"]:
        await servers.create(server(name))
    assert [r.name for r in await store.list(limit=10)] == ["alpha", "zulu"]
    assert [r.name for r in await store.list(limit=10, after="alpha")] == ["zulu"]
    assert [r.name for r in await servers.list(limit=2)] == ["alpha", "bravo"]
    assert [r.name for r in await servers.list(limit=2, after="bravo")] == ["charlie"]
    assert await servers.get("zulu") is None and await store.get("bravo") is None
    # Same name in both kinds: two records, deleting one leaves the other.
    assert await servers.delete("alpha") is True
    assert await store.get("alpha") is not None
