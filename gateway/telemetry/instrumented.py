"""Instrumented stand-ins for the store, session store and runtime protocols.

``gateway/app.py`` hands these to the control plane, the reconciler and the session router, so
every call to a dependency gets a latency sample, an error count and (when tracing) a child span
of the request or operation in progress, without touching the implementations. Outcomes that
are answers, not failures (``AdapterExists``, ``EtagMismatch``, ``KeyError``,
``InstanceNotFound``, ``SessionLimitExceeded``), are not counted as errors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Generic, Protocol, TypeVar

from opentelemetry.trace import SpanKind

from gateway.models import AdapterRecord
from gateway.runtime.base import Endpoint, EndpointListener, InstanceNotFound, Runtime, RuntimeStatus, SessionCounter
from gateway.sessions.base import SessionLimitExceeded, SessionLimits, SessionRecord, SessionStore
from gateway.store.base import AdapterExists, AdapterStore, EtagMismatch
from gateway.telemetry.metrics import Counter, GatewayMetrics, HistogramMetric
from gateway.telemetry.tracing import Tracing

_ANSWERS = (AdapterExists, EtagMismatch, KeyError, InstanceNotFound, SessionLimitExceeded)


class _Calls:
    """Times calls of one dependency into a registry histogram/counter pair and opens child spans."""

    def __init__(
        self, prefix: str, histogram: HistogramMetric | None, errors: Counter | None, tracing: Tracing
    ) -> None:
        self._prefix = prefix
        self._histogram = histogram
        self._errors = errors
        self._tracing = tracing
        self._keys: dict[str, tuple[str]] = {}

    @classmethod
    def of(cls, prefix: str, metrics: GatewayMetrics | None, tracing: Tracing) -> _Calls:
        """Calls reported to ``<prefix>_latency`` / ``<prefix>_errors`` of ``metrics`` (none when metrics are off)."""
        if metrics is None:
            return cls(prefix, None, None, tracing)
        histogram, errors = getattr(metrics, f"{prefix}_latency"), getattr(metrics, f"{prefix}_errors")
        return cls(prefix, histogram, errors, tracing)

    @contextlib.contextmanager
    def __call__(self, operation: str, adapter: str | None = None) -> Iterator[None]:
        key = self._keys.get(operation)
        if key is None:
            key = self._keys[operation] = (operation,)
        start = time.perf_counter()
        try:
            if self._tracing.enabled:
                span_attrs = {"mcpgw.adapter": adapter} if adapter else None
                with self._tracing.span(f"{self._prefix}.{operation}", span_attrs, SpanKind.CLIENT):
                    yield
            else:
                yield
        except _ANSWERS:
            raise
        except Exception:
            if self._errors is not None:
                self._errors.add(key)
            raise
        finally:
            if self._histogram is not None:
                self._histogram.record(time.perf_counter() - start, key)


class _Lifecycle(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...


_Inner = TypeVar("_Inner", bound=_Lifecycle)


class _Instrumented(Generic[_Inner]):
    """What the three wrappers share: the wrapped dependency, its call timer, start/close/ping."""

    def __init__(self, inner: _Inner, kind: str, metrics: GatewayMetrics | None, tracing: Tracing) -> None:
        self.inner = inner
        self._call = _Calls.of(kind, metrics, tracing)

    async def start(self) -> None:
        """Start the wrapped dependency."""
        await self.inner.start()

    async def close(self) -> None:
        """Close the wrapped dependency."""
        await self.inner.close()

    async def ping(self) -> None:
        """Ping the wrapped dependency."""
        with self._call("ping"):
            await self.inner.ping()


class InstrumentedAdapterStore(_Instrumented[AdapterStore]):
    """An ``AdapterStore`` that reports every call (``store.*`` spans, ``mcpgw_store_*``)."""

    def __init__(self, inner: AdapterStore, metrics: GatewayMetrics | None, tracing: Tracing) -> None:
        super().__init__(inner, "store", metrics, tracing)

    async def create(self, record: AdapterRecord) -> AdapterRecord:
        """See ``AdapterStore.create``."""
        with self._call("create", record.name):
            return await self.inner.create(record)

    async def get(self, name: str) -> AdapterRecord | None:
        """See ``AdapterStore.get``."""
        with self._call("get", name):
            return await self.inner.get(name)

    async def list(self, *, limit: int, after: str | None = None) -> list[AdapterRecord]:
        """See ``AdapterStore.list``."""
        with self._call("list"):
            return await self.inner.list(limit=limit, after=after)

    async def replace(self, record: AdapterRecord, *, etag: str) -> AdapterRecord:
        """See ``AdapterStore.replace``."""
        with self._call("replace", record.name):
            return await self.inner.replace(record, etag=etag)

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """See ``AdapterStore.delete``."""
        with self._call("delete", name):
            return await self.inner.delete(name, etag=etag)


class InstrumentedSessionStore(_Instrumented[SessionStore]):
    """A ``SessionStore`` that reports every call (``session_store.*`` spans, ``mcpgw_session_store_*``)."""

    def __init__(self, inner: SessionStore, metrics: GatewayMetrics | None, tracing: Tracing) -> None:
        super().__init__(inner, "session_store", metrics, tracing)

    @property
    def evictions(self) -> int:
        """See ``SessionStore.evictions``."""
        return self.inner.evictions

    async def open(self, record: SessionRecord, ttl: float, limits: SessionLimits) -> None:
        """See ``SessionStore.open`` (a refusal for a cap is an answer, not an error)."""
        with self._call("open", record.adapter):
            await self.inner.open(record, ttl, limits)

    async def put(self, record: SessionRecord, ttl: float) -> None:
        """See ``SessionStore.put``."""
        with self._call("put", record.adapter):
            await self.inner.put(record, ttl)

    async def get(self, sid: str) -> SessionRecord | None:
        """See ``SessionStore.get``."""
        with self._call("get"):
            return await self.inner.get(sid)

    async def touch(self, sid: str, last_used: float, ttl: float) -> None:
        """See ``SessionStore.touch``."""
        with self._call("touch"):
            await self.inner.touch(sid, last_used, ttl)

    async def revoke(self, sid: str) -> None:
        """See ``SessionStore.revoke``."""
        with self._call("revoke"):
            await self.inner.revoke(sid)

    async def revoke_adapter(self, adapter: str) -> int:
        """See ``SessionStore.revoke_adapter``."""
        with self._call("revoke_adapter", adapter):
            return await self.inner.revoke_adapter(adapter)

    async def revoke_replica(self, adapter: str, replica_uid: str) -> int:
        """See ``SessionStore.revoke_replica``."""
        with self._call("revoke_replica", adapter):
            return await self.inner.revoke_replica(adapter, replica_uid)

    async def count(self, adapter: str | None = None) -> int:
        """See ``SessionStore.count``."""
        with self._call("count", adapter):
            return await self.inner.count(adapter)

    async def count_user(self, adapter: str, user_id: str) -> int:
        """See ``SessionStore.count_user``."""
        with self._call("count_user", adapter):
            return await self.inner.count_user(adapter, user_id)

    async def count_replica(self, adapter: str, replica_uid: str) -> int:
        """See ``SessionStore.count_replica``."""
        with self._call("count_replica", adapter):
            return await self.inner.count_replica(adapter, replica_uid)


class InstrumentedRuntime(_Instrumented[Runtime]):
    """A ``Runtime`` that reports its slow calls (``runtime.*`` spans, ``mcpgw_runtime_*``).

    ``endpoints`` and ``add_listener`` pass straight through: they are in-memory reads.
    """

    def __init__(self, inner: Runtime, metrics: GatewayMetrics | None, tracing: Tracing) -> None:
        super().__init__(inner, "runtime", metrics, tracing)

    def check_image(self, image_name: str, image_version: str) -> str | None:
        """See ``Runtime.check_image`` (not instrumented: a catalog lookup in memory)."""
        return self.inner.check_image(image_name, image_version)

    async def apply(self, adapter: AdapterRecord) -> None:
        """See ``Runtime.apply``."""
        with self._call("apply", adapter.name):
            await self.inner.apply(adapter)

    async def remove(self, name: str) -> None:
        """See ``Runtime.remove``."""
        with self._call("remove", name):
            await self.inner.remove(name)

    async def deployed(self) -> dict[str, int]:
        """See ``Runtime.deployed``."""
        with self._call("deployed"):
            return await self.inner.deployed()

    async def status(self, adapter: AdapterRecord) -> RuntimeStatus:
        """See ``Runtime.status``."""
        with self._call("status", adapter.name):
            return await self.inner.status(adapter)

    async def logs(self, name: str, instance: int, tail: int) -> str:
        """See ``Runtime.logs``."""
        with self._call("logs", name):
            return await self.inner.logs(name, instance, tail)

    async def follow_logs(self, name: str, instance: int, tail: int) -> AsyncIterator[str]:
        """See ``Runtime.follow_logs`` (the span covers opening the stream, not the hours it may last)."""
        with self._call("follow_logs", name):
            return await self.inner.follow_logs(name, instance, tail)

    def endpoints(self, name: str) -> tuple[Endpoint, ...]:
        """See ``Runtime.endpoints`` (not instrumented: hot path, memory only)."""
        return self.inner.endpoints(name)

    def add_listener(self, listener: EndpointListener) -> None:
        """See ``Runtime.add_listener``."""
        self.inner.add_listener(listener)

    def set_session_counter(self, counter: SessionCounter) -> None:
        """See ``Runtime.set_session_counter``."""
        self.inner.set_session_counter(counter)
