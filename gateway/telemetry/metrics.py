"""Metrics: OpenTelemetry instruments, and their Prometheus text exposition for ``GET /metrics``.

Every metric is an OpenTelemetry instrument on the gateway's own ``MeterProvider`` (no global
provider), so the same numbers reach ``/metrics`` and, when configured, Azure Monitor or OTLP.

Two instruments sit on the hot path of every proxied request. The SDK's synchronous instruments
clean and hash their attributes on every call (measured: 10-30 µs per request for a counter and
two histograms, 10-20% of the proxy's throughput), so the data plane aggregates in plain Python:
requests in a dict reported through an ``ObservableCounter``, latencies in ``LatencyHistogram``
(fixed buckets, a bisect and three additions) rendered straight into ``/metrics``. Only when an
exporter is configured are latencies also recorded into SDK histograms, for Azure Monitor / OTLP.
"""

from __future__ import annotations

import bisect
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
MAX_METHOD_LABELS = 100
"""Distinct ``method`` label values per process; later new values are counted as ``other``."""
_METHOD = re.compile(r"^[a-z][a-zA-Z0-9_/.-]{0,63}$")
UNKNOWN = "unknown"


class PrometheusReader(MetricReader):
    """A pull reader: ``render()`` collects now and returns the Prometheus text exposition."""

    def __init__(self) -> None:
        super().__init__()
        self._latest: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""

    def render(self, skip: frozenset[str] = frozenset()) -> str:
        """Collect every instrument and format the result (without ``skip`` names)."""
        self._latest = None
        self.collect()
        return render_prometheus(self._latest, skip)


def render_prometheus(data: MetricsData | None, skip: frozenset[str] = frozenset()) -> str:
    """Prometheus text format 0.0.4 of cumulative OpenTelemetry metrics data (without ``skip`` names)."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    if data is not None:
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name in skip:
                        continue
                    name = _metric_name(metric.name)
                    point_data = metric.data
                    if isinstance(point_data, Sum) and point_data.is_monotonic:
                        kind, name = "counter", name if name.endswith("_total") else name + "_total"
                    elif isinstance(point_data, Sum | Gauge):
                        kind = "gauge"
                    elif isinstance(point_data, Histogram):
                        kind = "histogram"
                    else:  # exponential histograms are not configured
                        continue
                    family = families.setdefault(name, (kind, metric.description or "", []))
                    lines = family[2]
                    for point in point_data.data_points:
                        if isinstance(point, HistogramDataPoint):
                            lines.extend(_histogram_lines(name, point))
                        elif isinstance(point, NumberDataPoint):
                            lines.append(f"{name}{_labels(point.attributes)} {_number(point.value)}")
    out: list[str] = []
    for name, (kind, description, lines) in families.items():
        if description:
            out.append(f"# HELP {name} {_escape_help(description)}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"


def _histogram_lines(name: str, point: HistogramDataPoint) -> Iterator[str]:
    cumulative = 0
    for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
        cumulative += count
        yield f"{name}_bucket{_labels(point.attributes, ('le', _number(bound)))} {cumulative}"
    yield f"{name}_bucket{_labels(point.attributes, ('le', '+Inf'))} {point.count}"
    yield f"{name}_sum{_labels(point.attributes)} {_number(point.sum)}"
    yield f"{name}_count{_labels(point.attributes)} {point.count}"


def _metric_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    return cleaned if not cleaned[:1].isdigit() else "_" + cleaned


def _labels(attributes: Any, extra: tuple[str, str] | None = None) -> str:
    pairs = [(re.sub(r"[^a-zA-Z0-9_]", "_", str(k)), str(v)) for k, v in (attributes or {}).items()]
    if extra is not None:
        pairs.append(extra)
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class LatencyHistogram:
    """A histogram per adapter with fixed buckets, recorded on the hot path without the SDK."""

    __slots__ = ("_series", "bounds", "description", "name")

    def __init__(self, name: str, description: str, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.description = description
        self.bounds = tuple(bounds)
        self._series: dict[str, list[Any]] = {}

    def record(self, value: float, adapter: str) -> None:
        """One sample, in seconds."""
        series = self._series.get(adapter)
        if series is None:
            series = self._series[adapter] = [[0] * (len(self.bounds) + 1), 0.0]
        series[0][bisect.bisect_left(self.bounds, value)] += 1
        series[1] += value

    def keep_only(self, adapters: set[str]) -> None:
        """Drop the series of every adapter not in ``adapters``."""
        for adapter in [a for a in self._series if a not in adapters]:
            del self._series[adapter]

    def prometheus(self) -> list[str]:
        """The histogram family in Prometheus text format."""
        lines = [f"# HELP {self.name} {_escape_help(self.description)}", f"# TYPE {self.name} histogram"]
        for adapter, (counts, total) in list(self._series.items()):
            label = _escape_label(adapter)
            cumulative = 0
            for bound, count in zip(self.bounds, counts, strict=False):
                cumulative += count
                lines.append(f'{self.name}_bucket{{adapter="{label}",le="{_number(bound)}"}} {cumulative}')
            cumulative += counts[-1]
            lines.append(f'{self.name}_bucket{{adapter="{label}",le="+Inf"}} {cumulative}')
            lines.append(f'{self.name}_sum{{adapter="{label}"}} {_number(total)}')
            lines.append(f'{self.name}_count{{adapter="{label}"}} {cumulative}')
        return lines


class _MeterProvider(MeterProvider):
    """A ``MeterProvider`` that does nothing in a forked child.

    The SDK re-detects resources in a thread pool after ``fork``. The local runtime starts
    replicas with a ``preexec_fn``, which runs at-fork handlers between fork and exec, where a
    thread pool deadlocks the child. The gateway never forks without exec, so there is nothing
    to re-initialise.
    """

    def _handle_fork(self) -> None:
        pass


class GatewayMetrics:
    """Every instrument of the gateway, on one ``MeterProvider``.

    Gauges that describe state (active sessions, open streams, replicas ready, reconciler
    counters) are observed from their owners when a reader collects; ``observe`` hands them in.
    """

    def __init__(self, readers: Sequence[MetricReader], resource: Resource, *, export: bool = False) -> None:
        self.provider = _MeterProvider(
            metric_readers=list(readers),
            resource=resource,
            exemplar_filter=AlwaysOffExemplarFilter(),
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter("mcp-gateway")
        self._requests: dict[tuple[str, str, str, int], int] = {}
        self._methods: set[str] = set()
        self._adapter_attrs: dict[str, dict[str, str]] = {}
        self._sources: dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]] = {}
        self._adapter_names: Callable[[], Iterable[str]] | None = None
        requests = (
            "Proxied MCP requests by adapter, era (modern, session, legacy-sse, unknown), "
            "method (Mcp-Method header, else the HTTP method) and status."
        )
        # Observed series go straight into /metrics (render_local), not through the SDK: its
        # asynchronous instruments keep an aggregation for every label set ever observed, and
        # past 2,000 report every new one (a new replica, adapter) as an overflow series.
        self._observed: list[tuple[str, str, str]] = [("mcpgw_requests", "counter", requests)]
        if export:
            meter.create_observable_counter("mcpgw_requests", [self._observe_requests], unit="1", description=requests)
        upstream = "Time from sending a request to a replica to receiving its response headers."
        overhead = (
            "Latency the gateway adds to a proxied request: time to the response headers minus the upstream latency."
        )
        self.upstream_latency = LatencyHistogram("mcpgw_upstream_latency_seconds", upstream)
        self.gateway_latency = LatencyHistogram("mcpgw_gateway_overhead_seconds", overhead)
        self.local = (self.upstream_latency, self.gateway_latency)
        self._exported: tuple[Any, Any] | None = None
        if export:
            self._exported = (
                meter.create_histogram(
                    self.upstream_latency.name, unit="s", description=upstream,
                    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
                ),
                meter.create_histogram(
                    self.gateway_latency.name, unit="s", description=overhead,
                    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
                ),
            )  # fmt: skip
        self.session_store_latency = meter.create_histogram(
            "mcpgw_session_store_latency_seconds",
            unit="s",
            description="Session store calls by operation.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.session_store_errors = meter.create_counter(
            "mcpgw_session_store_errors", unit="1", description="Failed session store calls by operation."
        )
        self.store_latency = meter.create_histogram(
            "mcpgw_store_latency_seconds",
            unit="s",
            description="Adapter store calls by operation.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.store_errors = meter.create_counter(
            "mcpgw_store_errors", unit="1", description="Failed adapter store calls by operation."
        )
        self.runtime_latency = meter.create_histogram(
            "mcpgw_runtime_latency_seconds",
            unit="s",
            description="Runtime calls (apply, remove, deployed, status, logs) by operation.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.runtime_errors = meter.create_counter(
            "mcpgw_runtime_errors", unit="1", description="Failed runtime calls by operation."
        )
        for name, kind, description in (
            ("mcpgw_sessions_active", "gauge", "Sessions this gateway routed and saw used within the idle TTL, "
             "by adapter and the replica they are pinned to."),
            ("mcpgw_open_streams", "gauge", "SSE responses being streamed through this gateway now."),
            ("mcpgw_upstream_truncated", "counter",
             "Responses whose upstream body broke off (reason: closed early, protocol error, timeout): "
             "aborted towards the client, or 502 when nothing was sent yet."),
            ("mcpgw_replicas_ready", "gauge", "Ready replicas per adapter, as the data plane routes to them."),
            ("mcpgw_reconcile_passes", "counter", "Reconciler passes."),
            ("mcpgw_reconcile_actions", "counter", "Apply and remove actions started by the reconciler."),
            ("mcpgw_reconcile_failures", "counter", "Reconciler passes skipped and actions failed."),
            ("mcpgw_reconcile_leader", "gauge", "1 while this gateway's reconciler may apply and remove "
             "(it holds the Kubernetes Lease, or the runtime has no election), else 0."),
            ("mcpgw_reconcile_leadership_changes", "counter",
             "Times this gateway started or stopped leading the reconciler."),
            ("mcpgw_reconcile_stale_refused", "counter",
             "Applies refused because the runtime already ran a newer generation (a stale read of the store)."),
            ("mcpgw_session_store_outages", "counter",
             "Session store calls of the data plane that failed and were served from sealed ids."),
            ("mcpgw_session_evictions", "counter",
             "Live sessions the memory session store evicted to stay within MCPGW_SESSION_MEMORY_MAX."),
            ("mcpgw_session_limit_rejections", "counter",
             "Sessions refused with 429 because a cap was reached, by limit (per_user, per_adapter)."),
            ("mcpgw_session_replica_revocations", "counter",
             "Sessions revoked because the replica they were pinned to left the ready endpoints."),
            ("mcpgw_upstream_credentials", "counter",
             "Upstream credentials attached or refused, by upstreamAuth type and outcome (issue 18)."),
            ("mcpgw_tool_denials", "counter", "tools/call requests refused by an adapter's toolPolicy, by adapter."),
            ("mcpgw_rate_limited", "counter", "Requests refused by a rate limit, by adapter and limit."),
            ("mcpgw_rate_limit_store_failures", "counter",
             "Rate-limit checks the store (Redis) could not answer, by the failure mode applied (open, closed)."),
            ("mcpgw_audit_records", "counter",
             "Audit records by result: written (to every sink), dropped (queue full), failed (a sink refused)."),
            ("mcpgw_sse_keepalives", "counter", "Keep-alive comments sent on idle relayed SSE streams."),
        ):  # fmt: skip
            self._observed.append((name, kind, description))
            if not export:
                continue
            callback = self._observer(name)
            if kind == "gauge":
                meter.create_observable_gauge(name, [callback], unit="1", description=description)
            else:
                meter.create_observable_counter(name, [callback], unit="1", description=description)

    # --- hot path ----------------------------------------------------------------------------

    def count_request(self, adapter: str, era: str, method: str, status: int) -> None:
        """One finished proxied request."""
        key = (adapter, era, method, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1

    def record_latency(self, adapter: str, upstream: float, overhead: float) -> None:
        """Upstream latency and gateway overhead of one proxied request, in seconds."""
        self.upstream_latency.record(upstream, adapter)
        self.gateway_latency.record(overhead, adapter)
        if self._exported is not None:
            attrs = self.adapter_attributes(adapter)
            self._exported[0].record(upstream, attrs)
            self._exported[1].record(overhead, attrs)

    @property
    def local_names(self) -> frozenset[str]:
        """Names ``render_local`` writes (a Prometheus reader of the SDK must skip them)."""
        return frozenset([*(h.name for h in self.local), *(name for name, _, _ in self._observed)])

    def render_local(self) -> str:
        """The hot-path histograms and the observed series in Prometheus text format."""
        self.forget_gone_adapters()
        lines = [line for histogram in self.local for line in histogram.prometheus()]
        for name, kind, description in self._observed:
            if kind == "counter":
                name += "_total"
            points = self._observe_requests_points() if name == "mcpgw_requests_total" else self._points(name)
            lines.append(f"# HELP {name} {_escape_help(description)}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{_labels(attrs)} {_number(value)}" for value, attrs in points)
        return "\n".join(lines) + "\n"

    def _points(self, name: str) -> list[tuple[float, dict[str, str]]]:
        source = self._sources.get(name.removesuffix("_total"))
        return [] if source is None else list(source())

    def method_label(self, method: str) -> str:
        """A bounded label for a client-supplied method name."""
        if method in self._methods:
            return method
        if len(self._methods) < MAX_METHOD_LABELS and _METHOD.match(method):
            self._methods.add(method)
            return method
        return "other"

    def adapter_attributes(self, adapter: str) -> dict[str, str]:
        """The attribute dict of one adapter, built once (the SDK reads it on every record)."""
        attrs = self._adapter_attrs.get(adapter)
        if attrs is None:
            attrs = self._adapter_attrs[adapter] = {"adapter": adapter}
        return attrs

    # --- observed state ----------------------------------------------------------------------

    def set_source(self, name: str, source: Callable[[], Iterable[tuple[float, dict[str, str]]]]) -> None:
        """Where an observable instrument reads its values (``observe`` in setup wires these)."""
        self._sources[name] = source

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            source = self._sources.get(name)
            if source is None:
                return []
            return [Observation(value, attrs) for value, attrs in source()]

        return callback

    def set_adapter_names(self, names: Callable[[], Iterable[str]]) -> None:
        """Where the names of the adapters that exist now come from (``observe`` in setup wires it).

        Each collection then drops the request counts, latency series and attribute dicts of
        adapters that no longer exist. Soak 2026-11-30: every deleted adapter left ~44 lines in
        ``/metrics`` (two histograms and its request counts) for the life of the process, and
        the SDK kept an aggregation per label set until its cardinality limit (2,000), after
        which new adapters' requests would be counted under an overflow label. The cost: a
        deleted and re-created adapter starts its counters again from 0, which Prometheus reads
        as a counter reset (``rate()`` handles it), and a scrape walks the series once.
        """
        self._adapter_names = names

    def forget_gone_adapters(self) -> None:
        """Drop every per-adapter series of adapters that no longer exist (``unknown`` stays)."""
        if self._adapter_names is None:
            return
        live = {*self._adapter_names(), UNKNOWN}
        requests = self._requests
        for key in [k for k in requests if k[0] not in live]:
            del requests[key]
        for histogram in self.local:
            histogram.keep_only(live)
        for adapter in [a for a in self._adapter_attrs if a not in live]:
            del self._adapter_attrs[adapter]

    def _observe_requests_points(self) -> list[tuple[float, dict[str, str]]]:
        return [
            (count, {"adapter": a, "era": e, "method": m, "status": str(s)})
            for (a, e, m, s), count in list(self._requests.items())
        ]

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        self.forget_gone_adapters()  # every export comes through here
        return [Observation(value, attrs) for value, attrs in self._observe_requests_points()]

    def shutdown(self) -> None:
        """Flush and stop every reader (exporters send what they hold)."""
        self.provider.shutdown()


class Timer:
    """``with Timer(histogram, attrs, errors):`` records the duration, and counts an error when
    the block raises an exception that ``is_error`` accepts."""

    __slots__ = ("_attrs", "_errors", "_histogram", "_is_error", "_start")

    def __init__(
        self,
        histogram: Any,
        attrs: dict[str, str],
        errors: Any,
        is_error: Callable[[BaseException], bool],
    ) -> None:
        self._histogram = histogram
        self._attrs = attrs
        self._errors = errors
        self._is_error = is_error
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._histogram.record(time.perf_counter() - self._start, self._attrs)
        if exc is not None and self._is_error(exc):
            self._errors.add(1, self._attrs)
