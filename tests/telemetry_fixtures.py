"""Helpers for telemetry tests: a Prometheus text parser and an in-process gateway on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn

from gateway.app import GatewayApp, build_components
from gateway.settings import Settings
from gateway.telemetry.setup import Telemetry
from tests.gateway_process import free_port

CATALOG = Path(__file__).with_name("upstreams") / "images.toml"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> Series:
    """Every sample of a Prometheus text exposition: (name, labels) → value. Fails on a malformed line."""
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"malformed exposition line: {line!r}"
        labels = frozenset(_LABEL.findall(match.group(3) or ""))
        out[(match.group(1), labels)] = float(match.group(4))
    return out


def value(series: Series, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent)."""
    return series.get((name, frozenset(labels.items())), 0.0)


def total(series: Series, name: str, **labels: str) -> float:
    """The sum of every sample ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and wanted <= ls)


def scrape(base_url: str) -> Series:
    """GET /metrics and parse it."""
    response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(response.text)


@contextlib.asynccontextmanager
async def in_process_gateway(settings: Settings, telemetry: Telemetry) -> AsyncIterator[str]:
    """The gateway built with ``telemetry``, served by uvicorn in this event loop; yields its URL."""
    port = free_port()
    import dataclasses

    settings = dataclasses.replace(settings, port=port)
    app = GatewayApp(build_components(settings, telemetry))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None, loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(300):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "in-process gateway did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
