"""Per-request telemetry of the data plane: the request counter, latency histograms, the access
log line and the request span, fed by four calls the proxy makes.

``request_started`` (wraps ``send`` to see the status), ``upstream_request`` (injects
``traceparent`` into the upstream headers), ``upstream_answered`` (upstream latency and replica)
and ``request_finished``. State travels in the ASGI scope under ``SCOPE_KEY``, so the proxy's
signatures stay as they are. With metrics, tracing and the access log all off, every call
returns at once.

Eras: ``legacy-sse`` on ``/sse`` and ``/messages``; ``session`` with an ``Mcp-Session-Id``, a
2025 ``MCP-Protocol-Version`` or a session the upstream opened; ``modern`` with a 2026
version, or for any other request that reached a replica (DESIGN.md §2 routes those
statelessly); ``unknown`` when the gateway answered before routing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.telemetry.logs import ACCESS_LOGGER, FIELDS, hash_user, sanitize
from gateway.telemetry.metrics import UNKNOWN, GatewayMetrics
from gateway.telemetry.tracing import DISABLED, PROPAGATOR, Tracing

SCOPE_KEY = "mcpgw.telemetry"
MODERN_VERSION = "2026-07-28"
CLIENT_CLOSED = 499
"""Status recorded when the client left before any response started (nginx's convention)."""

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

access_log = logging.getLogger(ACCESS_LOGGER)


class _Request:
    __slots__ = (
        "adapter",
        "era",
        "method",
        "replica",
        "request_id",
        "responded",
        "route",
        "span",
        "started",
        "status",
        "token",
        "upstream",
        "user",
    )

    def __init__(self, adapter: str, route: str, started: float) -> None:
        self.adapter = adapter
        self.route = route
        self.started = started
        self.era: str | None = None
        self.method = ""
        self.replica = ""
        self.request_id = ""
        self.responded = 0.0
        self.status = 0
        self.upstream: float | None = None
        self.user: str | None = None
        self.span: trace.Span | None = None
        self.token: object = None


class RequestTelemetry:
    """What the proxy reports per request; see the module docstring."""

    def __init__(
        self,
        metrics: GatewayMetrics | None,
        tracing: Tracing,
        known_adapter: Callable[[str], bool],
        *,
        access_log: str = "errors",
    ) -> None:
        self._metrics = metrics
        self._tracing = tracing
        self._known = known_adapter
        self._access_log = access_log != "off"
        self._access_errors_only = access_log == "errors"

    @classmethod
    def disabled(cls) -> RequestTelemetry:
        """Reports nothing at all (no metrics, no spans, no access log)."""
        return cls(None, DISABLED, lambda name: False, access_log="off")

    def request_started(self, scope: dict[str, Any], send: Send, name: str, route: str) -> Send:
        """Begin a request; returns the ``send`` the proxy must use from now on."""
        logging_on = self._access_log and access_log.isEnabledFor(logging.INFO)
        if self._metrics is None and not self._tracing.enabled and not logging_on:
            return send
        req = _Request(name, route, time.perf_counter())
        version = mcp_method = request_id = traceparent = tracestate = None
        session = False
        for key, value in scope["headers"]:
            if key.startswith(b"mcp-"):
                if key == b"mcp-method":
                    mcp_method = value
                elif key == b"mcp-session-id":
                    session = True
                elif key == b"mcp-protocol-version":
                    version = value
            elif key == b"x-request-id":
                request_id = value
            elif key == b"traceparent":
                traceparent = value
            elif key == b"tracestate":
                tracestate = value
        if route != "mcp":
            req.era = "legacy-sse"
        elif session:
            req.era = "session"
        elif version is not None:
            req.era = "modern" if version.decode("latin-1") >= MODERN_VERSION else "session"
        http_method: str = scope["method"]
        if mcp_method is not None:
            label = sanitize(mcp_method.decode("latin-1"), 64)
            req.method = self._metrics.method_label(label) if self._metrics is not None else label
        else:
            req.method = http_method
        if self._tracing.enabled:
            carrier = {}
            if traceparent is not None:
                carrier["traceparent"] = traceparent.decode("latin-1")
                if tracestate is not None:
                    carrier["tracestate"] = tracestate.decode("latin-1")
            span = self._tracing.tracer.start_span(
                f"{http_method} /adapters/{{name}}/{route}",
                context=PROPAGATOR.extract(carrier) if carrier else None,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": http_method,
                    "http.route": f"/adapters/{{name}}/{route}",
                    "mcpgw.adapter": sanitize(name, 100),
                    "mcp.method.name": req.method,
                },
            )
            req.span = span
            req.token = otel_context.attach(trace.set_span_in_context(span))
            req.request_id = format(span.get_span_context().trace_id, "032x")
        if request_id is not None:
            req.request_id = sanitize(request_id.decode("latin-1"), 64)
        elif not req.request_id and logging_on:
            req.request_id = os.urandom(8).hex()
        scope[SCOPE_KEY] = req

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not req.status:
                req.status = message["status"]
                req.responded = time.perf_counter()
            await send(message)

        return observed_send

    def upstream_request(self, scope: dict[str, Any], headers: list[tuple[bytes, bytes]], user_id: str) -> None:
        """The request is about to go upstream with ``headers``: put our span in its traceparent."""
        req: _Request | None = scope.get(SCOPE_KEY)
        if req is None:
            return
        req.user = user_id
        if req.span is not None:
            carrier: dict[str, str] = {}
            PROPAGATOR.inject(carrier, context=trace.set_span_in_context(req.span))
            headers[:] = [(k, v) for k, v in headers if k.lower() not in (b"traceparent", b"tracestate")]
            headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items())

    def upstream_answered(
        self, scope: dict[str, Any], replica: str, sent: float, *, opened_session: bool = False
    ) -> None:
        """Response headers arrived from ``replica``; ``sent`` is ``time.perf_counter()`` at send.

        ``opened_session``: the response carries an ``Mcp-Session-Id`` (a 2025-era session).
        """
        req: _Request | None = scope.get(SCOPE_KEY)
        if req is not None:
            req.upstream = time.perf_counter() - sent
            req.replica = replica
            if opened_session and req.era is None:
                req.era = "session"

    def request_finished(self, scope: dict[str, Any]) -> None:
        """The request is over (response sent, error answered, or client gone)."""
        req: _Request | None = scope.pop(SCOPE_KEY, None)
        if req is None:
            return
        end = time.perf_counter()
        status = req.status or CLIENT_CLOSED
        adapter = req.adapter if self._known(req.adapter) else UNKNOWN
        era = req.era or ("modern" if req.upstream is not None else UNKNOWN)
        overhead = None
        if req.upstream is not None:
            overhead = max(0.0, (req.responded or end) - req.started - req.upstream)
        metrics = self._metrics
        if metrics is not None:
            metrics.count_request(adapter, era, req.method, status)
            if req.upstream is not None and overhead is not None:
                metrics.record_latency(adapter, req.upstream, overhead)
        duration_ms = round((end - req.started) * 1000, 2)
        log_it = self._access_log and (status >= 400 or not self._access_errors_only)
        if log_it and access_log.isEnabledFor(logging.INFO):
            # makeRecord + handle: the same handlers and filters as .info(), without the caller lookup
            record = access_log.makeRecord(
                ACCESS_LOGGER,
                logging.INFO,
                "",
                0,
                "%s /adapters/%s/%s %d %.1fms",
                (scope["method"], req.adapter, req.route, status, duration_ms),
                None,
            )
            setattr(
                record,
                FIELDS,
                {
                    "request_id": req.request_id,
                    "adapter": sanitize(req.adapter, 100),
                    "route": req.route,
                    "era": era,
                    "method": req.method,
                    "replica": req.replica or None,
                    "user": hash_user(req.user) if req.user is not None else None,
                    "status": status,
                    "duration_ms": duration_ms,
                    "upstream_ms": round(req.upstream * 1000, 2) if req.upstream is not None else None,
                },
            )
            access_log.handle(record)
        span = req.span
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("mcpgw.era", era)
            if req.replica:
                span.set_attribute("mcpgw.replica", req.replica)
            if req.upstream is not None:
                span.set_attribute("mcpgw.upstream_ms", round(req.upstream * 1000, 3))
            if req.user is not None:
                span.set_attribute("enduser.hash", hash_user(req.user))
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(req.token)  # type: ignore[arg-type]
