"""Traces: the gateway's own ``TracerProvider`` and helpers to open spans.

Tracing is on only when a span exporter is configured (Azure Monitor, OTLP, or a test's
in-memory exporter). Off, the data plane creates no span at all and the control plane uses a
no-op tracer, so an unexported span never costs the hot path anything.

The SDK's provider and batch processor are used as they come (2026-11-30). They register at-fork
hooks that restart worker threads in a forked child; the gateway never forks without exec and
starts every child without a ``preexec_fn`` (``gateway.child_process.launch``), so CPython runs
no at-fork hook in those children and nothing needs overriding.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.errors import GatewayError
from gateway.telemetry.logs import hash_user

P = ParamSpec("P")
R = TypeVar("R")

PROPAGATOR = TraceContextTextMapPropagator()
"""W3C ``traceparent``/``tracestate``, the only propagation format the gateway speaks."""


class Tracing:
    """A tracer, or a no-op one when nothing exports spans."""

    def __init__(
        self,
        exporters: Sequence[SpanExporter] = (),
        resource: Resource | None = None,
        *,
        batch: bool = True,
    ) -> None:
        self.enabled = bool(exporters)
        self.provider: TracerProvider | None = None
        if self.enabled:
            self.provider = TracerProvider(resource=resource or Resource({}), shutdown_on_exit=False)
            for exporter in exporters:
                processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
                self.provider.add_span_processor(processor)
            self.tracer: trace.Tracer = self.provider.get_tracer("mcp-gateway")
        else:
            self.tracer = trace.NoOpTracer()

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, str | int] | None = None, kind: SpanKind = SpanKind.INTERNAL
    ) -> Iterator[Span]:
        """A span that is current for the block; 5xx-like failures mark it as an error.

        Gateway errors a user caused (404, 409, 422 …) are outcomes, not failures: they are
        recorded as ``mcpgw.error.status`` without the error status.
        """
        with self.tracer.start_as_current_span(
            name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except GatewayError as exc:
                span.set_attribute("mcpgw.error.status", exc.status)
                if exc.status >= 500:
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        if self.provider is not None:
            self.provider.shutdown()


DISABLED = Tracing()


class Traced(Protocol):
    """An object with a ``_tracing`` attribute (the service and the reconciler)."""

    _tracing: Tracing


T = TypeVar("T", bound=Traced)
Method = Callable[Concatenate[T, P], Coroutine[Any, Any, R]]


def traced(name: str) -> Callable[[Method[T, P, R]], Method[T, P, R]]:
    """Run an async method in a span named ``name``, tagged with the adapter and a user hash.

    The adapter comes from an argument called ``name`` (or the ``.name`` of ``data``/``record``),
    the user from an ``identity`` argument; both are looked up by position once, at decoration.
    """

    def decorate(fn: Method[T, P, R]) -> Method[T, P, R]:
        params = list(inspect.signature(fn).parameters)[1:]  # without self

        def attributes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
            bound = dict(zip(params, args, strict=False)) | kwargs
            out: dict[str, str] = {}
            adapter = bound.get("name")
            if adapter is None:
                holder = bound.get("data", bound.get("record"))
                adapter = getattr(holder, "name", None)
            if isinstance(adapter, str):
                out["mcpgw.adapter"] = adapter
            identity = bound.get("identity")
            user = getattr(identity, "user_id", None)
            if isinstance(user, str):
                out["enduser.hash"] = hash_user(user)
            return out

        @functools.wraps(fn)
        async def wrapper(self: T, /, *args: P.args, **kwargs: P.kwargs) -> R:
            tracing = self._tracing
            if not tracing.enabled:
                return await fn(self, *args, **kwargs)
            with tracing.span(name, attributes(args, kwargs)):
                return await fn(self, *args, **kwargs)

        return wrapper

    return decorate
