"""Per-adapter metric series end with the adapter (gateway/telemetry/metrics.py).

Soak 2026-11-30: every throwaway adapter left its request counts and two latency histograms in
``/metrics`` (~44 lines) for the life of the process; a day of one throwaway a minute is ~63,000
lines, and the SDK's cardinality limit would then fold new adapters into an overflow series.
"""

from __future__ import annotations

from gateway.telemetry.metrics import UNKNOWN, GatewayMetrics


def scrape(metrics: GatewayMetrics) -> str:
    return metrics.render()


def test_series_of_a_deleted_adapter_leave_the_scrape_and_memory() -> None:
    metrics = GatewayMetrics()
    adapters = {"keep", "gone"}
    metrics.set_adapter_names(lambda: sorted(adapters))
    for adapter in ("keep", "gone", UNKNOWN):
        metrics.count_request(adapter, "modern", "tools/call", 200)
        metrics.record_latency(adapter, 0.01, 0.001)
    before = scrape(metrics)
    assert 'adapter="gone"' in before
    assert before.count('mcpgw_upstream_latency_seconds_count{adapter="gone"} 1') == 1

    adapters.discard("gone")
    after = scrape(metrics)
    assert 'adapter="gone"' not in after
    assert 'mcpgw_requests_total{adapter="keep",era="modern",method="tools/call",status="200"} 1' in after
    assert 'mcpgw_upstream_latency_seconds_count{adapter="keep"} 1' in after
    assert f'mcpgw_upstream_latency_seconds_count{{adapter="{UNKNOWN}"}} 1' in after
    assert len(after.splitlines()) < len(before.splitlines())
    assert all(key[0] != "gone" for metric in metrics.registry for key in metric.series)

    # Re-created under the same name: counts start again (Prometheus reads a counter reset).
    adapters.add("gone")
    metrics.count_request("gone", "modern", "tools/call", 200)
    metrics.record_latency("gone", 0.01, 0.001)
    metrics.record_latency("gone", 0.01, 0.001)
    again = scrape(metrics)
    assert 'mcpgw_upstream_latency_seconds_count{adapter="gone"} 2' in again
    assert 'mcpgw_requests_total{adapter="gone",era="modern",method="tools/call",status="200"} 1' in again


def test_new_adapters_keep_their_own_series_after_thousands_came_and_went() -> None:
    """The SDK's asynchronous instruments fold label sets past 2,000 ever seen into an overflow series."""
    metrics = GatewayMetrics()
    adapters = {"keep"}
    metrics.set_adapter_names(lambda: sorted(adapters))
    sessions: dict[str, int] = {}
    metrics.set_source("mcpgw_sessions_active", lambda: [(("keep", r), n) for r, n in sessions.items()])
    for i in range(2_100):
        adapters.add(f"tmp-{i}")
        sessions[f"replica-{i}"] = 1
        metrics.count_request(f"tmp-{i}", "modern", "tools/call", 200)
        scrape(metrics)
        adapters.discard(f"tmp-{i}")
        del sessions[f"replica-{i}"]
    metrics.count_request("keep", "modern", "tools/call", 200)
    sessions["replica-last"] = 3
    text = scrape(metrics)
    assert "overflow" not in text
    assert 'mcpgw_requests_total{adapter="keep",era="modern",method="tools/call",status="200"} 1' in text
    assert 'mcpgw_sessions_active{adapter="keep",replica="replica-last"} 3' in text
    assert len(text.splitlines()) < 100
