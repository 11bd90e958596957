"""``Telemetry``: the metrics, tracing and per-request reporting of one gateway, built from settings.

``gateway/app.py`` builds one with ``Telemetry.from_settings(settings)``, wraps the store,
session store and runtime with ``instrument_*`` before handing them to the control plane and the
session router, gives ``telemetry.requests`` to the proxy and ``telemetry.tracing`` to the
service and the reconciler, calls ``observe(...)`` once everything exists, serves
``metrics_route(telemetry)`` when metrics are enabled, and awaits ``close()`` at shutdown.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.problems import problem_response
from gateway.runtime.base import Runtime, accepting
from gateway.sessions.base import SessionStore
from gateway.settings import Settings
from gateway.store.base import AdapterStore
from gateway.telemetry.export import log_exporters, metric_sinks, span_exporters
from gateway.telemetry.instrumented import InstrumentedAdapterStore, InstrumentedRuntime, InstrumentedSessionStore
from gateway.telemetry.metrics import PROMETHEUS_CONTENT_TYPE, GatewayMetrics, Key, MetricSink, PeriodicExport
from gateway.telemetry.requests import RequestTelemetry
from gateway.telemetry.tracing import Tracing


class _View(Protocol):
    def get(self, name: str) -> object | None: ...
    def names(self) -> list[str]: ...


class _Router(Protocol):
    store_errors: int
    limit_rejections: dict[str, int]
    replica_revocations: int

    @property
    def evictions(self) -> int: ...

    def active_sessions(self) -> dict[tuple[str, str], int]: ...


class _Proxy(Protocol):
    open_streams: int
    upstream_aborts: dict[str, int]


class _Credentials(Protocol):
    @property
    def outcomes(self) -> Mapping[tuple[str, str], int]: ...


class _Reconciler(Protocol):
    passes: int
    actions: int
    failures: int
    stale_refused: int
    leadership_changes: int

    @property
    def leading(self) -> bool: ...


class _Stages(Protocol):
    denials: dict[str, int]
    limited_by: dict[tuple[str, str], int]
    limiter: Any
    audit: Any


def _by_key(counts: Mapping[Any, float]) -> list[tuple[Key, float]]:
    """A component's ``{label value or tuple of them: count}`` as (label values, value) pairs."""
    return [(key if isinstance(key, tuple) else (key,), value) for key, value in list(counts.items())]


class Telemetry:
    """Metrics (``/metrics`` and exporters), tracing and the data plane's per-request reporting."""

    def __init__(
        self,
        *,
        metrics_enabled: bool = True,
        span_exporters: Sequence[SpanExporter] = (),
        metric_sinks: Sequence[MetricSink] = (),
        batch_spans: bool = True,
        access_log: str = "errors",
        version: str = "0",
        log_exporters: Sequence[Any] = (),
    ) -> None:
        resource = Resource(
            {"service.name": "mcp-gateway", "service.version": version, "service.instance.id": socket.gethostname()}
        )
        self.serves_metrics = metrics_enabled
        """Whether ``/metrics`` is served (metrics may also be kept only for exporters)."""
        self.metrics = GatewayMetrics() if metrics_enabled or metric_sinks else None
        self._exports: list[PeriodicExport] = []
        if self.metrics is not None:
            metrics = self.metrics
            self._exports = [
                PeriodicExport(metrics.registry, resource, sink, metrics.forget_gone_adapters) for sink in metric_sinks
            ]
        self.tracing = Tracing(span_exporters, resource, batch=batch_spans)
        self.logger_provider: Any = None
        """An OpenTelemetry LoggerProvider when logs are exported (the audit trail's sink), else None."""
        if log_exporters:
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

            self.logger_provider = LoggerProvider(resource=resource)
            for exporter in log_exporters:
                self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        self._view: _View | None = None
        self.requests = RequestTelemetry(self.metrics, self.tracing, self._known_adapter, access_log=access_log)

    @classmethod
    def from_settings(cls, settings: Settings, *, version: str = "0") -> Telemetry:
        """Telemetry as settings ask: ``/metrics`` per metrics_enabled, exporters per export.py."""
        return cls(
            metrics_enabled=settings.metrics_enabled,
            span_exporters=span_exporters(settings),
            metric_sinks=metric_sinks(settings),
            access_log=settings.access_log,
            version=version,
            log_exporters=log_exporters(settings),
        )

    def _known_adapter(self, name: str) -> bool:
        return self._view is not None and self._view.get(name) is not None

    # --- wiring ---------------------------------------------------------------------------

    def instrument_store(self, store: AdapterStore) -> AdapterStore:
        """The store, reporting each call (unchanged when nothing records or traces)."""
        if self.metrics is None and not self.tracing.enabled:
            return store
        return InstrumentedAdapterStore(store, self.metrics, self.tracing)

    def instrument_sessions(self, sessions: SessionStore) -> SessionStore:
        """The session store, reporting each call (unchanged when nothing records)."""
        if self.metrics is None and not self.tracing.enabled:
            return sessions
        return InstrumentedSessionStore(sessions, self.metrics, self.tracing)

    def instrument_runtime(self, runtime: Runtime) -> Runtime:
        """The runtime, reporting each slow call (unchanged when nothing records)."""
        if self.metrics is None and not self.tracing.enabled:
            return runtime
        return InstrumentedRuntime(runtime, self.metrics, self.tracing)

    def observe(
        self,
        *,
        view: _View,
        runtime: Runtime,
        router: _Router,
        proxy: _Proxy,
        reconciler: _Reconciler,
        credentials: _Credentials | None = None,
    ) -> None:
        """Point the state gauges at their owners."""
        self._view = view
        metrics = self.metrics
        if metrics is None:
            return

        def sessions_active() -> Iterable[tuple[Key, float]]:
            return [((adapter, replica), count) for (adapter, replica), count in router.active_sessions().items()]

        def replicas_ready() -> Iterable[tuple[Key, float]]:
            return [((name,), len(accepting(runtime.endpoints(name)))) for name in view.names()]

        metrics.set_adapter_names(view.names)
        metrics.set_source("mcpgw_sessions_active", sessions_active)
        metrics.set_source("mcpgw_replicas_ready", replicas_ready)
        metrics.set_source("mcpgw_open_streams", lambda: [((), proxy.open_streams)])
        metrics.set_source("mcpgw_upstream_truncated", lambda: _by_key(proxy.upstream_aborts))
        metrics.set_source("mcpgw_reconcile_passes", lambda: [((), reconciler.passes)])
        metrics.set_source("mcpgw_reconcile_actions", lambda: [((), reconciler.actions)])
        metrics.set_source("mcpgw_reconcile_failures", lambda: [((), reconciler.failures)])
        metrics.set_source("mcpgw_reconcile_leader", lambda: [((), 1 if reconciler.leading else 0)])
        metrics.set_source("mcpgw_reconcile_leadership_changes", lambda: [((), reconciler.leadership_changes)])
        metrics.set_source("mcpgw_reconcile_stale_refused", lambda: [((), reconciler.stale_refused)])
        metrics.set_source("mcpgw_session_store_outages", lambda: [((), router.store_errors)])
        metrics.set_source("mcpgw_session_evictions", lambda: [((), router.evictions)])
        metrics.set_source("mcpgw_session_limit_rejections", lambda: _by_key(router.limit_rejections))
        metrics.set_source("mcpgw_session_replica_revocations", lambda: [((), router.replica_revocations)])
        if credentials is not None:
            metrics.set_source("mcpgw_upstream_credentials", lambda: _by_key(credentials.outcomes))

    def observe_policy(self, stages: _Stages, proxy: Any) -> None:
        """Point the issue-15 counters (denials, limits, audit, keep-alives) at the data plane's stages."""
        metrics = self.metrics
        if metrics is None:
            return
        metrics.set_source("mcpgw_tool_denials", lambda: _by_key(stages.denials))
        metrics.set_source("mcpgw_rate_limited", lambda: _by_key(stages.limited_by))

        def store_failures() -> Iterable[tuple[Key, float]]:
            limiter = stages.limiter
            return [
                (("open",), getattr(limiter, "failed_open", 0)),
                (("closed",), getattr(limiter, "failed_closed", 0)),
            ]

        metrics.set_source("mcpgw_rate_limit_store_failures", store_failures)
        audit = stages.audit
        metrics.set_source(
            "mcpgw_audit_records",
            lambda: [(("written",), audit.written), (("dropped",), audit.dropped), (("failed",), audit.failed)],
        )
        metrics.set_source("mcpgw_sse_keepalives", lambda: [((), proxy.keepalives_sent)])

    def render_metrics(self) -> str:
        """The Prometheus text exposition (empty when metrics are disabled)."""
        if not self.serves_metrics or self.metrics is None:
            return ""
        return self.metrics.render()

    async def close(self) -> None:
        """Flush exporters and stop (in a thread: exporters may block on the network)."""
        for export in self._exports:
            await asyncio.to_thread(export.shutdown)
        await asyncio.to_thread(self.tracing.shutdown)
        if self.logger_provider is not None:
            await asyncio.to_thread(self.logger_provider.shutdown)


def metrics_route(telemetry: Telemetry, token: str | None = None) -> HTTPRouteHandler:
    """``GET /metrics``: Prometheus text, not in the OpenAPI document.

    With ``token`` (``MCPGW_METRICS_TOKEN``) a scrape must send ``Authorization: Bearer <token>``
    (compared in constant time), else 401; without, it answers anyone, like ``/healthz``.
    """
    expected = f"Bearer {token}".encode() if token else None

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics(request: Request[Any, Any, Any]) -> Response[str] | Response[bytes]:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return problem_response(
                    401,
                    "Unauthorized",
                    "GET /metrics needs the metrics token: Authorization: Bearer <MCPGW_METRICS_TOKEN>",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(telemetry.render_metrics(), media_type=PROMETHEUS_CONTENT_TYPE)

    return metrics
