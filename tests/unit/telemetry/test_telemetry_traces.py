"""Spans of the data and control planes, read from an in-memory exporter of an in-process gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.settings import Settings
from gateway.telemetry.setup import Telemetry
from tests.fixtures.telemetry import CATALOG, in_process_gateway

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> set[str]:
    parent_id = parent.context.span_id
    return {s.name for s in spans if s.parent is not None and s.parent.span_id == parent_id}


async def test_span_tree_and_traceparent_reach_the_upstream(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(span_exporters=[exporter], batch_spans=False)
    settings = Settings(data_dir=tmp_path / "data", example_adapter=False, image_catalog=CATALOG, reconcile_interval=1)
    async with (
        in_process_gateway(settings, telemetry) as url,
        httpx.AsyncClient(base_url=url, headers={"X-Dev-User-Id": "dev"}, timeout=10) as client,
    ):
        body = {"name": "rec", "imageName": "recorder", "imageVersion": "1.0", "replicaCount": 1}
        assert (await client.post("/adapters", json=body)).status_code == 201
        for _ in range(150):
            if (await client.get("/adapters/rec/status")).json()["readyReplicas"] == 1:
                break
            await asyncio.sleep(0.1)
        exporter.clear()

        traced = await client.post(
            "/adapters/rec/mcp",
            json=CALL,
            headers={**ACCEPT, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "Mcp-Method": "tools/call"},
        )
        seen = traced.json()["result"]["headers"]["traceparent"]
        opened = await client.post("/adapters/rec/mcp", json=CALL, headers={**ACCEPT, "x-test-session": "u-1"})
        assert opened.status_code == 200
        fresh = await client.post("/adapters/rec/mcp", json=CALL, headers=ACCEPT)
        fresh_seen = fresh.json()["result"]["headers"]["traceparent"]
        assert (await client.get("/adapters/rec")).status_code == 200
        assert (await client.get("/adapters/missing")).status_code == 404

    spans = exporter.get_finished_spans()
    requests = named(spans, "POST /adapters/{name}/mcp")
    assert len(requests) == 3 and all(s.kind is SpanKind.SERVER for s in requests)
    first, session, root = requests

    # the client's trace continues: same trace id, the client's span as parent
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert first.parent is not None and format(first.parent.span_id, "016x") == PARENT_ID
    assert first.attributes is not None
    assert first.attributes["mcp.method.name"] == "tools/call" and first.attributes["mcpgw.era"] == "modern"
    assert first.attributes["http.response.status_code"] == 200 and first.attributes["mcpgw.replica"] == "rec-0"
    upstream_ms = first.attributes["mcpgw.upstream_ms"]
    assert isinstance(upstream_ms, float) and first.end_time is not None and first.start_time is not None
    assert 0 < upstream_ms < (first.end_time - first.start_time) / 1e6
    # the upstream received our span as its parent, not the client's
    assert seen.startswith(f"00-{TRACE_ID}-{format(first.context.span_id, '016x')}-")

    # opening a session writes the session store inside the request span
    assert "session_store.open" in children(spans, session)
    assert session.attributes is not None and session.attributes["mcpgw.era"] == "session"

    # no incoming traceparent: a new trace, and the upstream still gets one
    assert root.parent is None
    assert fresh_seen.startswith(f"00-{format(root.context.trace_id, '032x')}-{format(root.context.span_id, '016x')}-")

    # control plane: one span per operation with its store call inside
    get_spans = named(spans, "adapter.get")
    assert len(get_spans) == 2 and all("store.get" in children(spans, s) for s in get_spans)
    missing = next(s for s in get_spans if s.attributes and s.attributes["mcpgw.adapter"] == "missing")
    assert missing.attributes is not None and missing.attributes["mcpgw.error.status"] == 404
    assert missing.status.is_ok  # a 404 the user asked for is not a failure


async def test_create_and_reconcile_spans(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(metrics_enabled=False, span_exporters=[exporter], batch_spans=False)
    settings = Settings(data_dir=tmp_path / "data", example_adapter=False, image_catalog=CATALOG, reconcile_interval=1)
    async with (
        in_process_gateway(settings, telemetry) as url,
        httpx.AsyncClient(base_url=url, headers={"X-Dev-User-Id": "dev"}, timeout=10) as client,
    ):
        body = {"name": "rec", "imageName": "recorder", "imageVersion": "1.0", "replicaCount": 1}
        assert (await client.post("/adapters", json=body)).status_code == 201
        for _ in range(150):
            if named(exporter.get_finished_spans(), "reconcile.apply"):
                break
            await asyncio.sleep(0.1)
        assert (await client.delete("/adapters/rec")).status_code == 204
    spans = exporter.get_finished_spans()
    create = named(spans, "adapter.create")[0]
    assert "store.create" in children(spans, create)
    assert create.attributes is not None and create.attributes["mcpgw.adapter"] == "rec"
    assert create.attributes["enduser.hash"] != "dev" and len(str(create.attributes["enduser.hash"])) == 16
    passes = named(spans, "reconcile.pass")
    assert passes and {"store.list", "runtime.deployed"} <= children(spans, passes[0])
    apply = named(spans, "reconcile.apply")[0]
    assert "runtime.apply" in children(spans, apply)
    delete = named(spans, "adapter.delete")[0]
    assert {"store.get", "store.delete", "runtime.remove", "session_store.revoke_adapter"} <= children(spans, delete)
