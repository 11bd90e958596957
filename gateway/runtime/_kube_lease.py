"""Leader election on a ``coordination.k8s.io/v1`` Lease: which gateway replica applies and removes.

Every gateway replica serves REST and MCP and watches pods for routing, but only the holder of
the Lease (``kube_lease_name`` in ``kube_namespace``) changes the cluster. The rules are
client-go's (``tools/leaderelection``), written here because kubernetes_asyncio 36.1.0's
``leaderelection`` lacks what the gateway needs (measured, shared/research/stdio-registry-obo-lease.md
§4): its ``run()`` returns after losing the lease, a connection error escapes it leaving the leader
callback running, and it cannot release the lease.

- A candidate takes the Lease when it does not exist, when its holder released it (empty holder),
  or when its record has not changed for ``lease_duration`` seconds **on the candidate's own
  clock** (no wall-clock comparison between machines). Taking over increments ``leaseTransitions``.
- The holder renews every ``retry_period``; every write carries the resourceVersion it read, so
  two candidates cannot both win one round (the loser gets 409).
- **Fence:** the holder may act only while ``monotonic() < start of its last successful renewal +
  renew_deadline``. ``renew_deadline < lease_duration``, so a holder that cannot renew stops
  acting before any other replica can take over. ``may_act()`` is checked before every mutating
  API call.
- **Release:** on shutdown the holder writes an empty holder with a 1 s duration, so another
  replica leads at its next try (``retry_period``) instead of after ``lease_duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Literal

from gateway.runtime._kube_api import TRANSPORT_ERRORS, ApiError, KubeApi
from gateway.runtime._kube_manifests import Manifest

log = logging.getLogger("gateway.leader")

Outcome = Literal["held", "other", "failed"]
RELEASE_TIMEOUT = 5.0
"""Seconds a stopping leader tries to hand the Lease back before it lets it expire."""


def _micro_time() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Campaigns for one Lease for as long as it runs; see the module docstring."""

    def __init__(
        self,
        api: KubeApi,
        *,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.name = name
        self.identity = identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry = retry_period
        self._clock = clock
        self._leading = False
        self._renewed_at = -math.inf
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self._listeners: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._resigned = False
        self._last_error = ""
        self.transitions = 0
        """How many times this replica started or stopped leading."""

    # --- what others ask ------------------------------------------------------------------------
    @property
    def leading(self) -> bool:
        """True while this replica holds the Lease and is within its renew deadline."""
        return self.may_act()

    def may_act(self) -> bool:
        """The fence: hold the Lease, renewed successfully less than ``renew_deadline`` ago."""
        return self._leading and self._clock() < self._renewed_at + self._renew_deadline

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(leading)`` whenever this replica starts or stops leading."""
        self._listeners.append(listener)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Try once now (a lone gateway leads at once), then keep campaigning in the background."""
        await self._round()
        self._task = asyncio.create_task(self._campaign(), name="kubernetes-lease")

    async def release(self) -> None:
        """Stop campaigning; if leading, stop acting and hand the Lease back so another replica leads now."""
        self._resigned = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self._leading:
            return
        self._set_leading(False, "released on shutdown")
        try:
            # Bounded: a stopping gateway must not wait out two API timeouts; the Lease expires anyway.
            async with asyncio.timeout(RELEASE_TIMEOUT):
                lease = await self._api.get("leases", self.name)
                spec = (lease or {}).get("spec") or {}
                if lease is not None and spec.get("holderIdentity") == self.identity:
                    spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time())
                    await self._api.replace("leases", self.name, self._body(lease, spec))
                    log.info("released Lease %s", self.name)
        except (*TRANSPORT_ERRORS,) as exc:
            log.warning("could not release Lease %s (another gateway leads after it expires): %s", self.name, exc)

    # --- the campaign ---------------------------------------------------------------------------
    async def _campaign(self) -> None:
        while not self._resigned:
            # Followers jitter so that they do not all try in the same instant after a release.
            delay = self._retry if self._leading else self._retry * random.uniform(1.0, 1.2)
            await asyncio.sleep(delay)
            await self._round()

    async def _round(self) -> None:
        try:
            outcome = await self._try_acquire_or_renew()
            self._last_error = ""
        except (*TRANSPORT_ERRORS,) as exc:
            outcome = "failed"
            if str(exc) != self._last_error:  # once per distinct error, not every retry period
                log.warning("Lease %s: %s", self.name, exc)
                self._last_error = str(exc)
        except Exception:
            outcome = "failed"
            log.exception("Lease %s: unexpected error", self.name)
        if outcome == "held":
            self._set_leading(True, "acquired")
        elif outcome == "other":
            self._set_leading(False, "held by another gateway")
        elif self._leading and not self.may_act():
            self._set_leading(False, f"not renewed within {self._renew_deadline:g} s")

    async def _try_acquire_or_renew(self) -> Outcome:
        started = self._clock()
        lease = await self._api.get("leases", self.name)
        now = _micro_time()
        if lease is None:
            spec: Manifest = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, math.ceil(self._duration)),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            }
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name}}
            try:
                await self._api.create("leases", {**body, "spec": spec})
            except ApiError as exc:
                if exc.status == 409:  # another candidate created it first
                    return "other"
                raise
            self._renewed_at = started
            return "held"
        spec = dict(lease.get("spec") or {})
        holder = str(spec.get("holderIdentity") or "")
        observed = (holder, str(spec.get("renewTime") or ""), str(lease["metadata"].get("resourceVersion") or ""))
        if observed != self._observed:
            self._observed, self._observed_at = observed, started
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self._duration)
            if started < self._observed_at + duration:
                return "other"  # a live holder: its record changed less than a lease duration ago
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, renewTime=now, leaseDurationSeconds=max(1, math.ceil(self._duration)))
        try:
            await self._api.replace("leases", self.name, self._body(lease, spec))
        except ApiError as exc:
            if exc.status == 409:  # someone wrote the Lease since our read: not ours this round
                return "other" if holder != self.identity else "failed"
            raise
        self._renewed_at = started
        return "held"

    @staticmethod
    def _body(lease: Manifest, spec: Manifest) -> Manifest:
        meta = lease["metadata"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": meta["name"], "resourceVersion": meta.get("resourceVersion")},
            "spec": spec,
        }

    def _set_leading(self, leading: bool, why: str) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        self.transitions += 1
        if leading:
            log.info("this gateway (%s) now leads: Lease %s %s", self.identity, self.name, why)
        else:
            log.warning("this gateway (%s) stopped leading: Lease %s %s", self.identity, self.name, why)
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:
                log.exception("leadership listener failed")
