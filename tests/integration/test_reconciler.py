"""The reconciler converges a real local runtime to a real SQLite store: no orphans, no ghosts."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec
import pytest

from gateway.app import local_runtime_config
from gateway.control.reconciler import Reconciler
from gateway.models import AdapterRecord
from gateway.runtime.local import LocalRuntime
from gateway.sessions.base import SessionRecord
from gateway.sessions.memory import MemorySessionStore
from gateway.settings import Settings
from gateway.store.sqlite import SqliteAdapterStore
from gateway.store.view import AdapterView
from tests.fixtures.gateway import example_adapter, start_gateway, wait_ready


def record(name: str, replicas: int = 1, generation: int = 1) -> AdapterRecord:
    now = datetime.now(UTC)
    return AdapterRecord(
        name=name,
        image_name="mcp-example",
        image_version="1.0.0",
        replica_count=replicas,
        created_by="dev",
        created_at=now,
        last_updated_at=now,
        generation=generation,
    )


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.store = SqliteAdapterStore(data_dir / "gateway.db")
        self.runtime = LocalRuntime(local_runtime_config(dataclasses.replace(Settings(), data_dir=data_dir)))
        self.sessions = MemorySessionStore()
        self.view = AdapterView()
        self.reconciler = Reconciler(self.store, self.runtime, self.view, self.sessions, interval=3600)

    async def wait_deployed(self, expected: dict[str, int]) -> None:
        with anyio.fail_after(30):
            while await self.runtime.deployed() != expected:
                await anyio.sleep(0.1)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(tmp_path / "data")
    await s.store.start()
    await s.sessions.start()
    await s.runtime.start()
    try:
        yield s
    finally:
        await s.reconciler.close()
        await s.runtime.close()
        await s.sessions.close()
        await s.store.close()


async def test_a_stored_adapter_without_replicas_is_deployed(stack: Stack) -> None:
    # As after a crash between "write store" and "deploy": the record exists, nothing runs.
    await stack.store.create(record("ghostless", replicas=2))
    await stack.reconciler.run_once()
    await stack.wait_deployed({"ghostless": 1})
    assert stack.view.get("ghostless") is not None
    with anyio.fail_after(30):
        while len(stack.runtime.endpoints("ghostless")) < 2:
            await anyio.sleep(0.1)


async def test_replicas_without_a_stored_adapter_are_removed_with_their_sessions(stack: Stack) -> None:
    # As after a crash between "delete from store" and "stop replicas".
    await stack.runtime.apply(record("orphan"))
    await stack.sessions.put(
        SessionRecord(sid="s1", user_id="dev", adapter="orphan", replica="orphan-0", created=0, last_used=1e12), 60
    )
    assert "orphan" in await stack.runtime.deployed()
    await stack.reconciler.run_once()
    assert await stack.runtime.deployed() == {}
    assert stack.runtime.endpoints("orphan") == ()
    assert await stack.sessions.get("s1") is None


async def test_a_newer_generation_is_applied_and_an_unchanged_one_is_left_alone(stack: Stack) -> None:
    stored = await stack.store.create(record("steady"))
    await stack.reconciler.run_once()
    await stack.wait_deployed({"steady": 1})
    actions = stack.reconciler.actions
    await stack.reconciler.run_once()
    assert stack.reconciler.actions == actions  # nothing to do

    changed = msgspec.structs.replace(stored, replica_count=2, generation=2)
    await stack.store.replace(changed, etag=stored.etag)
    await stack.reconciler.run_once()
    await stack.wait_deployed({"steady": 2})


async def test_a_store_outage_changes_nothing(stack: Stack) -> None:
    await stack.store.create(record("kept"))
    await stack.reconciler.run_once()
    await stack.wait_deployed({"kept": 1})
    await stack.store.close()  # the store is now unreachable
    failures = stack.reconciler.failures
    await stack.reconciler.run_once()
    assert stack.reconciler.failures == failures + 1
    assert await stack.runtime.deployed() == {"kept": 1}
    assert stack.view.get("kept") is not None
    await stack.store.start()


def test_a_record_written_while_the_gateway_was_down_is_deployed_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def write() -> None:
        store = SqliteAdapterStore(data_dir / "gateway.db")
        await store.start()
        await store.create(record("offline", replicas=1))
        await store.close()

    anyio.run(write)
    with start_gateway(data_dir) as gw, gw.client() as api:
        wait_ready(api, "offline", 1)
        assert api.get("/adapters/offline").json()["createdBy"] == "dev"
        assert api.post("/adapters", json=example_adapter("offline")).status_code == 409
