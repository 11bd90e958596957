"""One metric registry (gateway/telemetry/metrics.py): declared once, rendered for /metrics, pushed to
exporters; and a gateway exporting over OTLP (threads running) still starts its replicas.

The OTLP side is real: the SDK's gRPC exporter talks to a gRPC server started here that keeps
what it receives.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.metrics.export import AggregationTemporality, Histogram, Sum
from opentelemetry.sdk.resources import Resource

from gateway.telemetry.metrics import GatewayMetrics, MetricSink, PeriodicExport, Snapshotter
from tests.fixtures.gateway import example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.telemetry import CATALOG, parse_prometheus, value

REPO = Path(__file__).resolve().parents[2]
MODERN = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "add",
}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add"}}


class OtlpSink:
    """An OTLP/gRPC collector that keeps every metrics, traces and logs request it receives."""

    def __init__(self) -> None:
        self.metrics: list[Any] = []
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        sink = self

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with sink.lock:
                    sink.metrics.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with sink.lock:
                    sink.spans.extend(
                        span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
                    )
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return logs_service_pb2.ExportLogsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def points(self, name: str) -> list[tuple[dict[str, str], Any]]:
        """Every data point of metric ``name`` received so far: (attributes, point)."""
        out = []
        with self.lock:
            requests = list(self.metrics)
        for request in requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name != name:
                            continue
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            attrs = {a.key: a.value.string_value for a in point.attributes}
                            out.append((attrs, point))
        return out


@pytest.fixture
def otlp() -> Iterator[OtlpSink]:
    sink = OtlpSink()
    yield sink
    sink.server.stop(0)


def test_every_metric_is_declared_once_and_documented_with_its_labels() -> None:
    """docs/operations.md lists the metrics and labels; the registry must keep them exactly."""
    metrics = GatewayMetrics()
    declared = {m.name: m for m in metrics.registry}
    table = (REPO / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(mcpgw_[a-z_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|", table, re.M)
    documented_names = {name.removesuffix("_total") if kind == "counter" else name for name, kind, _ in rows}
    assert documented_names == set(declared), "docs/operations.md and the registry list different metrics"
    for name, kind, labels in rows:
        base = name.removesuffix("_total") if kind == "counter" else name
        assert base in declared, f"{name} is documented but not declared"
        metric = declared[base]
        assert metric.kind == kind, name
        documented = re.findall(r"`([a-z_]+)`(?: \([^)]*\))?", labels)
        assert list(metric.labels) == documented, (name, metric.labels, documented)


def test_recorded_and_read_metrics_render_through_one_registry() -> None:
    metrics = GatewayMetrics()
    metrics.count_request("a", "modern", "tools/call", 200)
    metrics.count_request("a", "modern", "tools/call", 200)
    metrics.record_latency("a", 0.0007, 0.0001)
    metrics.store_errors.add(("create",))
    metrics.set_source("mcpgw_tool_denials", lambda: [(("a",), 4)])
    metrics.set_source("mcpgw_open_streams", lambda: [((), 2)])
    text = metrics.render()
    assert text.count("# TYPE mcpgw_requests_total counter") == 1
    series = parse_prometheus(text)
    assert value(series, "mcpgw_requests_total", adapter="a", era="modern", method="tools/call", status="200") == 2
    assert value(series, "mcpgw_upstream_latency_seconds_bucket", adapter="a", le="0.0005") == 0
    assert value(series, "mcpgw_upstream_latency_seconds_bucket", adapter="a", le="0.001") == 1
    assert value(series, "mcpgw_upstream_latency_seconds_bucket", adapter="a", le="+Inf") == 1
    assert value(series, "mcpgw_gateway_overhead_seconds_count", adapter="a") == 1
    assert value(series, "mcpgw_store_errors_total", operation="create") == 1
    assert value(series, "mcpgw_tool_denials_total", adapter="a") == 4
    assert value(series, "mcpgw_open_streams") == 2


def test_cumulative_and_delta_snapshots() -> None:
    """OTLP gets running totals; Azure Monitor (delta) gets what changed since its last export."""
    metrics = GatewayMetrics()
    cumulative = Snapshotter(metrics.registry, Resource({}), delta=False)
    delta = Snapshotter(metrics.registry, Resource({}), delta=True)

    def collect(snapshotter: Snapshotter) -> dict[str, Any]:
        snapshot = snapshotter.collect()
        return {m.name: m.data for rm in snapshot.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    audit = {"dropped": 3}
    metrics.set_source("mcpgw_audit_records", lambda: [((k,), n) for k, n in audit.items()])
    metrics.count_request("a", "modern", "POST", 200)
    metrics.record_latency("a", 0.02, 0.001)
    exported = collect(delta)
    first = exported["mcpgw_requests"]
    assert isinstance(first, Sum) and first.is_monotonic
    assert first.aggregation_temporality is AggregationTemporality.DELTA
    assert first.data_points[0].value == 1
    attributes = first.data_points[0].attributes
    assert attributes is not None
    assert dict(attributes) == {"adapter": "a", "era": "modern", "method": "POST", "status": "200"}
    assert exported["mcpgw_audit_records"].data_points[0].value == 3

    metrics.count_request("a", "modern", "POST", 200)
    metrics.count_request("a", "modern", "POST", 200)
    audit["dropped"] = 5
    exported = collect(delta)
    assert exported["mcpgw_requests"].data_points[0].value == 2
    assert exported["mcpgw_audit_records"].data_points[0].value == 2
    assert "mcpgw_upstream_latency_seconds" not in exported  # no new sample: no point

    exported = collect(cumulative)
    totals = exported["mcpgw_requests"]
    assert totals.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert totals.data_points[0].value == 3
    histogram = exported["mcpgw_upstream_latency_seconds"]
    assert isinstance(histogram, Histogram)
    point = histogram.data_points[0]
    assert point.count == 1 and point.sum == 0.02 and sum(point.bucket_counts) == 1
    assert point.min == 0.01 and point.max == 0.025  # the bounds of the one non-empty bucket


def test_otlp_exporter_receives_the_registry(otlp: OtlpSink) -> None:
    metrics = GatewayMetrics()
    metrics.count_request("a", "session", "tools/call", 200)
    metrics.record_latency("a", 0.003, 0.0002)
    metrics.runtime_errors.add(("apply",))
    exporter = OTLPMetricExporter(endpoint=otlp.endpoint, insecure=True)
    export = PeriodicExport(metrics.registry, Resource({"service.name": "t"}), MetricSink(exporter, interval=3600))
    export.export_now()
    metrics.count_request("a", "session", "tools/call", 200)
    export.shutdown()  # one more export, then the exporter stops
    counts = [p.as_int for attrs, p in otlp.points("mcpgw_requests") if attrs.get("adapter") == "a"]
    assert counts == [1, 2]
    (attrs, point), *_ = otlp.points("mcpgw_upstream_latency_seconds")
    assert attrs == {"adapter": "a"} and point.count == 1
    assert [p.as_int for _, p in otlp.points("mcpgw_runtime_errors")][-1] == 1


@pytest.fixture
def path_without_setpriv(tmp_path: Path) -> str:
    """A PATH on which util-linux's setpriv is not found (the gateway runs by absolute paths)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("true", "sh"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("setpriv", ["with setpriv", "without setpriv"])
def test_gateway_exporting_over_otlp_starts_replicas_and_exports_on_stop(
    tmp_path: Path, otlp: OtlpSink, path_without_setpriv: str, setpriv: str
) -> None:
    """Span, log and metric exporters run threads; replicas still start (no child hangs between
    fork and exec: no Python runs there), and the last metrics leave at shutdown."""
    env = {
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "MCPGW_LOCAL_SANDBOX": "off",
    }
    if setpriv == "without setpriv":
        env["PATH"] = path_without_setpriv
        env["MCPGW_LOCAL_REPLICA_USER"] = ""  # dropping to another user needs setpriv too
    with start_gateway(tmp_path / "data", env) as gw:
        with gw.client() as api:
            for i in range(2):
                body = example_adapter(f"rec{i}", replicas=2, imageName="recorder", imageVersion="1.0")
                assert api.post("/adapters", json=body).status_code == 201
            for i in range(2):
                wait_ready(api, f"rec{i}", 2, timeout=60)
            scraped = parse_prometheus(api.get("/metrics").text)
        response = httpx.post(f"{gw.url}/adapters/rec0/mcp", json=CALL, headers=MODERN, timeout=10)
        assert response.status_code == 200
        assert value(scraped, "mcpgw_replicas_ready", adapter="rec0") == 2
        assert gw.stop() == 0
        log = gw.log_text()
    warned = log.count("setpriv is not on PATH")
    assert warned == (1 if setpriv == "without setpriv" else 0)
    sent = wait_for(
        lambda: [a for a, _ in otlp.points("mcpgw_requests") if a.get("adapter") == "rec0"],
        timeout=10,
        what="the shutdown export",
    )
    assert sent[-1] == {"adapter": "rec0", "era": "modern", "method": "tools/call", "status": "200"}
    assert otlp.points("mcpgw_replicas_ready")
    assert wait_for(lambda: otlp.spans, timeout=10, what="exported spans")


def test_launch_runs_no_python_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With or without setpriv a replica starts without a preexec_fn: CPython then runs no at-fork
    hook in the child (the OpenTelemetry SDK's can hang a forked child of a threaded process)."""
    import os
    import subprocess

    from gateway import child_process
    from gateway.runtime._local_isolation import detect

    marker = tmp_path / "hook-ran"

    def hook() -> None:
        with contextlib.suppress(OSError):  # the hook stays registered after the test
            marker.touch()

    os.register_at_fork(after_in_child=hook)
    for setpriv in (child_process.SETPRIV, None):
        monkeypatch.setattr(child_process, "SETPRIV", setpriv)
        isolation, _ = detect(data_dir=tmp_path / "data", replica_user="", sandbox="off", setpriv=setpriv)
        start = isolation.launch([sys.executable, "-c", "pass"], cwd=str(tmp_path), replica="r-0")
        if setpriv is None:
            assert start.argv == [sys.executable, "-c", "pass"]
        else:
            assert start.argv[:4] == [setpriv, "--pdeathsig", "KILL", "--"]
        preexec = getattr(start, "preexec", None)  # what the runtime passes as preexec_fn (the field is gone)
        options: dict[str, Any] = {"cwd": start.cwd, "start_new_session": True, "close_fds": True}
        subprocess.run(start.argv, preexec_fn=preexec, check=True, timeout=30, **options)
        assert not marker.exists(), f"an at-fork hook ran in the child ({setpriv=})"


class IngestionEndpoint:
    """An Application Insights ingestion endpoint on loopback: keeps every ``/v2.1/track`` envelope."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                endpoint.envelopes.extend(json.loads(body))
                answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.connection_string = (
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:{port}/"
        )

    def metrics(self, name: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """(properties, metric) of every received data point named ``name``, in arrival order."""
        out: list[tuple[dict[str, str], dict[str, Any]]] = []
        for envelope in self.envelopes:
            data = envelope["data"]["baseData"]
            out.extend((data.get("properties", {}), m) for m in data["metrics"] if m["name"] == name)
        return out


def test_azure_monitor_exporter_receives_deltas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Application Insights sums what each export sends: counters and histograms go as deltas."""
    from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")  # no call home from a test
    monkeypatch.setenv("APPLICATIONINSIGHTS_SDKSTATS_DISABLED", "true")  # nor SDK stats to the endpoint later
    ingestion = IngestionEndpoint()
    try:
        metrics = GatewayMetrics()
        exporter = AzureMonitorMetricExporter(
            connection_string=ingestion.connection_string, disable_offline_storage=True
        )
        export = PeriodicExport(metrics.registry, Resource({}), MetricSink(exporter, delta=True, interval=3600))
        metrics.count_request("a", "modern", "tools/call", 200)
        metrics.record_latency("a", 0.02, 0.001)
        export.export_now()
        for _ in range(2):
            metrics.count_request("a", "modern", "tools/call", 200)
        export.shutdown()
    finally:
        ingestion.server.shutdown()
    requests = ingestion.metrics("mcpgw_requests")
    assert [m["value"] for _, m in requests] == [1, 2]
    assert requests[0][0] == {"adapter": "a", "era": "modern", "method": "tools/call", "status": "200"}
    (props, latency), *later = ingestion.metrics("mcpgw_upstream_latency_seconds")
    assert props == {"adapter": "a"} and latency["count"] == 1 and latency["value"] == 0.02
    assert latency["min"] == 0.01 and latency["max"] == 0.025
    assert not later  # no new sample, nothing sent
