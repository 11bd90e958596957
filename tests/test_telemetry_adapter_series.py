"""Per-adapter metric series end with the adapter (gateway/telemetry/metrics.py).

Soak 2026-11-30: every throwaway adapter left its request counts and two latency histograms in
``/metrics`` (~44 lines) for the life of the process; a day of one throwaway a minute is ~63,000
lines, and the SDK's cardinality limit would then fold new adapters into an overflow series.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource

from gateway.telemetry.metrics import UNKNOWN, GatewayMetrics, PrometheusReader


def scrape(reader: PrometheusReader, metrics: GatewayMetrics) -> str:
    return reader.render(metrics.local_names) + metrics.render_local()


def test_series_of_a_deleted_adapter_leave_the_scrape_and_memory() -> None:
    reader = PrometheusReader()
    metrics = GatewayMetrics([reader], Resource({}))
    adapters = {"keep", "gone"}
    metrics.set_adapter_names(lambda: sorted(adapters))
    for adapter in ("keep", "gone", UNKNOWN):
        metrics.count_request(adapter, "modern", "tools/call", 200)
        metrics.record_latency(adapter, 0.01, 0.001)
        metrics.adapter_attributes(adapter)
    before = scrape(reader, metrics)
    assert 'adapter="gone"' in before
    assert before.count('mcpgw_upstream_latency_seconds_count{adapter="gone"} 1') == 1

    adapters.discard("gone")
    after = scrape(reader, metrics)
    assert 'adapter="gone"' not in after
    assert 'mcpgw_requests_total{adapter="keep",era="modern",method="tools/call",status="200"} 1' in after
    assert 'mcpgw_upstream_latency_seconds_count{adapter="keep"} 1' in after
    assert f'mcpgw_upstream_latency_seconds_count{{adapter="{UNKNOWN}"}} 1' in after
    assert len(after.splitlines()) < len(before.splitlines())
    assert metrics.adapter_attributes("keep") == {"adapter": "keep"}
    assert "gone" not in metrics._adapter_attrs

    # Re-created under the same name: counts start again (Prometheus reads a counter reset).
    adapters.add("gone")
    metrics.count_request("gone", "modern", "tools/call", 200)
    again = scrape(reader, metrics)
    assert 'mcpgw_requests_total{adapter="gone",era="modern",method="tools/call",status="200"} 1' in again


def test_new_adapters_keep_their_own_series_after_thousands_came_and_went() -> None:
    """The SDK's asynchronous instruments fold label sets past 2,000 ever seen into an overflow series."""
    reader = PrometheusReader()
    metrics = GatewayMetrics([reader], Resource({}))
    adapters = {"keep"}
    metrics.set_adapter_names(lambda: sorted(adapters))
    sessions: dict[str, int] = {}
    metrics.set_source("mcpgw_sessions_active", lambda: [(n, {"replica": r}) for r, n in sessions.items()])
    for i in range(2_100):
        adapters.add(f"tmp-{i}")
        sessions[f"replica-{i}"] = 1
        metrics.count_request(f"tmp-{i}", "modern", "tools/call", 200)
        scrape(reader, metrics)
        adapters.discard(f"tmp-{i}")
        del sessions[f"replica-{i}"]
    metrics.count_request("keep", "modern", "tools/call", 200)
    sessions["replica-last"] = 3
    text = scrape(reader, metrics)
    assert "overflow" not in text
    assert 'mcpgw_requests_total{adapter="keep",era="modern",method="tools/call",status="200"} 1' in text
    assert 'mcpgw_sessions_active{replica="replica-last"} 3' in text
    assert len(text.splitlines()) < 100


def test_exporters_still_receive_the_observed_series() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    exported = InMemoryMetricReader()
    prometheus = PrometheusReader()
    metrics = GatewayMetrics([prometheus, exported], Resource({}), export=True)
    metrics.set_adapter_names(lambda: ["keep"])
    metrics.set_source("mcpgw_open_streams", lambda: [(2, {})])
    metrics.count_request("keep", "modern", "tools/call", 200)
    data = exported.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"mcpgw_requests", "mcpgw_open_streams"} <= names
    text = scrape(prometheus, metrics)
    assert text.count("# TYPE mcpgw_requests_total counter") == 1  # not twice (SDK and local)
    assert "mcpgw_open_streams 2" in text
