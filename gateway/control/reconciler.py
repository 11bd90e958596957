"""The reconciler: makes the runtime match the store.

Level-triggered: every pass reads the whole desired state and compares it with what the runtime
reports as deployed, so a crash between "write store" and "deploy" is repaired by the next pass
(at start, on every change, and every ``reconcile_interval`` seconds). When the store cannot be
read, the pass does nothing at all: an outage never deletes replicas.

**One leader acts (2026-11-30, issue 13).** With several gateways on one cluster, only the holder
of the runtime's ``Leadership`` (the Kubernetes Lease) applies and removes; every other gateway
still reads the store each pass to keep its routing view current. The leader reads the store every
``poll_interval`` (``kube_leader_poll_interval``, 1 s) so that a write taken by any gateway is acted
on within about a second; it reads the cluster only when the store changed (names, etags), when
kicked, or every ``interval``. On taking the lead it re-applies every adapter once (a no-op for
objects that already match): what the previous leader was doing is unknown.

**Never a removal on a stale read.** A list of the store can miss a record that was written a
moment ago (another gateway's write, an eventually consistent replica). Before removing anything,
the reconciler point-reads that adapter's record and removes only when the store says it is gone.
An apply that would replace a newer generation is refused by the runtime (``StaleGeneration``);
the next pass reads the store again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.models import AdapterRecord
from gateway.runtime.base import Leadership, Runtime, StaleGeneration
from gateway.sessions.base import SessionStore
from gateway.store.base import AdapterStore
from gateway.store.view import AdapterView, read_all
from gateway.telemetry.tracing import DISABLED, Tracing, traced

log = logging.getLogger("gateway.reconciler")
#: At most this many adapters are applied at once (each apply is several API calls). Decision
#: (2026-12-01): unbounded, a new leader's first pass started every behind adapter at once (20 in
#: tests/e2e/test_ha_control_plane.py); on a loaded 2-core machine that burst queued the Lease renewal
#: at the API server past its renew deadline, the fence refused every apply, and the next pass did the
#: same: no progress for 45 s. Controllers in client-go run a few workers for the same reason.
APPLY_CONCURRENCY = 4

Version = tuple[str, int]


def _version(record: AdapterRecord) -> Version:
    return (record.created_at.isoformat() if record.created_at else "", record.generation)


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
        leadership: Leadership | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._view = view
        self._sessions = sessions
        self._interval = interval
        self._poll_interval = poll_interval
        self._tracing = tracing or DISABLED
        self._leadership: Leadership | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._applying: dict[str, asyncio.Task[None]] = {}
        self._apply_slots = asyncio.Semaphore(APPLY_CONCURRENCY)
        self._applied: dict[str, Version] = {}
        self._seen: dict[str, str] | None = None
        self._full_due = 0.0
        self._resigned = False
        self.passes = 0
        self.failures = 0
        self.actions = 0
        self.stale_refused = 0
        self.leadership_changes = 0
        if leadership is not None:
            self.follow(leadership)

    def follow(self, leadership: Leadership) -> None:
        """Act only while ``leadership`` says this gateway leads."""
        self._leadership = leadership
        leadership.add_listener(self._on_leadership)

    @property
    def leading(self) -> bool:
        """True when this gateway's reconciler may act (always, without a Leadership)."""
        if self._resigned:
            return False
        return self._leadership is None or self._leadership.leading

    def _on_leadership(self, leading: bool) -> None:
        self.leadership_changes += 1
        self._applied.clear()  # re-apply everything once: the previous leader's work is unknown
        self._seen = None
        if not leading:
            for task in self._applying.values():
                task.cancel()
        self.kick()

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

    async def resign(self) -> None:
        """Stop acting for good and hand the lead to another gateway (a draining gateway)."""
        self._resigned = True
        for task in list(self._applying.values()):
            task.cancel()
        if self._leadership is not None:
            await self._leadership.release()

    def kick(self) -> None:
        """Ask for a pass soon (after a change)."""
        self._wake.set()

    async def forget(self, name: str) -> None:
        """Cancel an apply in flight for an adapter that is being deleted."""
        self._applied.pop(name, None)
        task = self._applying.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _loop(self) -> None:
        while True:
            timeout = self._poll_interval if self._leadership is not None and self.leading else self._interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            await self.run_once()

    @traced("reconcile.pass")
    async def run_once(self) -> None:
        """One pass: read desired state, compare, act. Never raises."""
        kicked = self._wake.is_set()
        self._wake.clear()
        self.passes += 1
        try:
            records = await read_all(self._store)
        except Exception as exc:  # a store outage: change nothing
            self.failures += 1
            log.warning("reconcile skipped: cannot read the adapter store: %s", exc)
            return
        self._view.replace_all(records)
        if not self.leading:
            return
        seen = {r.name: r.etag for r in records}
        now = time.monotonic()
        if self._leadership is not None and not kicked and seen == self._seen and now < self._full_due:
            return  # the leader's quiet poll: nothing changed in the store
        try:
            deployed = await self._runtime.deployed()
        except Exception as exc:
            self.failures += 1
            log.warning("reconcile skipped: cannot read the runtime: %s", exc)
            return
        self._seen, self._full_due = seen, now + self._interval
        wanted = {r.name: r for r in records}
        for record in records:
            if record.name in self._applying:
                continue
            behind = deployed.get(record.name) != record.generation
            if behind or (self._leadership is not None and self._applied.get(record.name) != _version(record)):
                self._start_apply(record)
        for name in deployed:
            if name not in wanted and name not in self._applying and self.leading:
                await self._remove(name)

    def _start_apply(self, record: AdapterRecord) -> None:
        self.actions += 1
        task = asyncio.create_task(self._apply(record), name=f"apply:{record.name}")
        self._applying[record.name] = task

    @traced("reconcile.apply")
    async def _apply(self, record: AdapterRecord) -> None:
        try:
            async with self._apply_slots:
                if not self.leading:
                    return  # lost the lead while waiting for a slot: the next leader applies it
                log.info("applying adapter %s generation %d", record.name, record.generation)
                await self._runtime.apply(record)
                self._applied[record.name] = _version(record)
        except StaleGeneration as exc:  # a stale read of the store: the next pass reads it again
            self.stale_refused += 1
            self._seen = None
            log.info("apply of adapter %s skipped: %s", record.name, exc)
        except Exception as exc:  # the next pass retries; a background task must not die unnoticed
            self.failures += 1
            self._seen = None
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
            # The list this pass acted on may be stale; only a point read proves the record is gone.
            if await self._store.get(name) is not None:
                log.info("not removing adapter %s: the store still has it (the list was stale)", name)
                self._seen = None  # the next poll compares again
                return
            log.info("removing adapter %s: no longer stored", name)
            await self._runtime.remove(name)
            self._applied.pop(name, None)
            await self._sessions.revoke_adapter(name)
        except Exception as exc:
            self.failures += 1
            log.warning("removal of adapter %s failed: %s", name, exc)
