"""Exporters chosen by settings: Azure Monitor, OTLP, both, or none.

* ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set → traces and metrics to Application Insights
  through the exporters of ``azure-monitor-opentelemetry``. They are attached to the gateway's own
  providers; ``configure_azure_monitor()`` is not called because it installs process-wide
  providers and instruments libraries (httpx, requests, ASGI …) behind the gateway's back.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` set → traces and metrics over OTLP/gRPC (``http://host:4317``
  for plain text, ``https://`` for TLS). The exporter also honours the standard
  ``OTEL_EXPORTER_OTLP_HEADERS`` / ``_CERTIFICATE`` / ``_TIMEOUT`` variables.
* neither → nothing: no span is created on the data plane, metrics are only kept for ``/metrics``.

Imports happen only for the exporter in use, so an unused one costs nothing at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from gateway.settings import Settings
from gateway.telemetry.metrics import MetricSink

METRIC_EXPORT_INTERVAL = 60.0
"""Seconds between metric exports."""


def span_exporters(settings: Settings) -> Sequence[SpanExporter]:
    """The span exporters settings ask for (empty: tracing stays off)."""
    out: list[SpanExporter] = []
    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        out.append(AzureMonitorTraceExporter(connection_string=settings.applicationinsights_connection_string))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        out.append(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    return out


def log_exporters(settings: Settings) -> Sequence[Any]:
    """The log exporters settings ask for (the audit trail's OpenTelemetry sink; empty: no logs exported)."""
    out: list[Any] = []
    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorLogExporter

        out.append(AzureMonitorLogExporter(connection_string=settings.applicationinsights_connection_string))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        out.append(OTLPLogExporter(endpoint=settings.otlp_endpoint))
    return out


def metric_sinks(settings: Settings, interval: float = METRIC_EXPORT_INTERVAL) -> Sequence[MetricSink]:
    """Where the metric registry is pushed, as settings ask (``gateway.telemetry.metrics.PeriodicExport``).

    Azure Monitor wants deltas of counters and histograms (its exporter's preferred temporality),
    OTLP cumulative values (the protocol's default).
    """
    out: list[MetricSink] = []
    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

        exporter = AzureMonitorMetricExporter(connection_string=settings.applicationinsights_connection_string)
        out.append(MetricSink(exporter, delta=True, interval=interval))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        out.append(MetricSink(OTLPMetricExporter(endpoint=settings.otlp_endpoint), delta=False, interval=interval))
    return out
