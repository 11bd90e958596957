"""The reconciler: makes the runtime match the store.

Level-triggered: every pass reads the whole desired state and compares it with what the runtime
reports as deployed, so a crash between "write store" and "deploy" is repaired by the next pass
(at start, on every change, and every ``reconcile_interval`` seconds). When the store cannot be
read, the pass does nothing at all: an outage never deletes replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.models import AdapterRecord
from gateway.runtime.base import Runtime
from gateway.sessions.base import SessionStore
from gateway.store.base import AdapterStore
from gateway.store.view import AdapterView, read_all
from gateway.telemetry.tracing import DISABLED, Tracing, traced

log = logging.getLogger("gateway.reconciler")


class Reconciler:
    """Converges the runtime to the store, in the background."""

    def __init__(
        self,
        store: AdapterStore,
        runtime: Runtime,
        view: AdapterView,
        sessions: SessionStore,
        *,
        interval: float,
        tracing: Tracing | None = None,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._view = view
        self._sessions = sessions
        self._interval = interval
        self._tracing = tracing or DISABLED
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._applying: dict[str, asyncio.Task[None]] = {}
        self.passes = 0
        self.failures = 0
        self.actions = 0

    async def start(self) -> None:
        """Run one pass now, then keep running in the background."""
        await self.run_once()
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def close(self) -> None:
        """Stop the loop and any apply still running."""
        tasks = [t for t in [self._task, *self._applying.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def kick(self) -> None:
        """Ask for a pass soon (after a change)."""
        self._wake.set()

    async def forget(self, name: str) -> None:
        """Cancel an apply in flight for an adapter that is being deleted."""
        task = self._applying.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            await self.run_once()

    @traced("reconcile.pass")
    async def run_once(self) -> None:
        """One pass: read desired state, compare, act. Never raises."""
        self.passes += 1
        try:
            records = await read_all(self._store)
        except Exception as exc:  # a store outage: change nothing
            self.failures += 1
            log.warning("reconcile skipped: cannot read the adapter store: %s", exc)
            return
        self._view.replace_all(records)
        try:
            deployed = await self._runtime.deployed()
        except Exception as exc:
            self.failures += 1
            log.warning("reconcile skipped: cannot read the runtime: %s", exc)
            return
        wanted = {r.name: r for r in records}
        for record in records:
            if deployed.get(record.name) != record.generation and record.name not in self._applying:
                self._start_apply(record)
        for name in deployed:
            if name not in wanted and name not in self._applying:
                await self._remove(name)

    def _start_apply(self, record: AdapterRecord) -> None:
        self.actions += 1
        task = asyncio.create_task(self._apply(record), name=f"apply:{record.name}")
        self._applying[record.name] = task

    @traced("reconcile.apply")
    async def _apply(self, record: AdapterRecord) -> None:
        try:
            log.info("applying adapter %s generation %d", record.name, record.generation)
            await self._runtime.apply(record)
        except Exception as exc:  # the next pass retries; a background task must not die unnoticed
            self.failures += 1
            log.warning("apply of adapter %s failed: %s", record.name, exc)
        finally:
            if self._applying.get(record.name) is asyncio.current_task():
                del self._applying[record.name]
        current = self._view.get(record.name)
        if current is None or current.generation != record.generation:
            self.kick()

    @traced("reconcile.remove")
    async def _remove(self, name: str) -> None:
        self.actions += 1
        try:
            log.info("removing adapter %s: no longer stored", name)
            await self._runtime.remove(name)
            await self._sessions.revoke_adapter(name)
        except Exception as exc:
            self.failures += 1
            log.warning("removal of adapter %s failed: %s", name, exc)
