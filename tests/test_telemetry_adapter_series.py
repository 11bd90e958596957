"""Per-adapter metric series end with the adapter (gateway/telemetry/metrics.py).

Soak 2026-11-30: every throwaway adapter left its request counts and two latency histograms in
``/metrics`` (~44 lines) for the life of the process; a day of one throwaway a minute is ~63,000
lines, and the SDK's cardinality limit would then fold new adapters into an overflow series.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource

from gateway.telemetry.metrics import UNKNOWN, GatewayMetrics, PrometheusReader


def scrape(reader: PrometheusReader, metrics: GatewayMetrics) -> str:
    return reader.render(frozenset(h.name for h in metrics.local)) + metrics.render_local()


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
