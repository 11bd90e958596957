"""No reference cycles on the paths the soak exercises (scripts/soak.py, docs/performance.md "Soak").

A request whose objects form a reference cycle is freed only by a full garbage-collection pass,
which runs rarely once the heap is large (gateway.app.settle_garbage_collector). Soak 2026-11-30
(churn every 20 s): ~10,000 cyclic objects per 20 s — every watched request's disconnect watcher,
and every upstream connection with its parser and a broken stream's exception — piled up between
full passes, and the RSS rose in steps. Each test runs with the collector off and asserts that
reference counting alone frees the objects.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.proxy.app import DISCONNECT_WATCH_DELAY, _DisconnectWatch
from gateway.proxy.upstream import UpstreamClosed, UpstreamPool
from tests.adversarial.malicious_upstream import CASES, RawServer, reply


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _NeverDisconnects:
    """An ASGI ``receive`` that waits forever (a client that stays)."""

    async def __call__(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}


async def test_a_disconnect_watch_that_started_its_watcher_is_freed_without_gc(no_gc: None) -> None:
    receive = _NeverDisconnects()
    ref = weakref.ref(receive)
    async with _DisconnectWatch(receive, True):
        await asyncio.sleep(DISCONNECT_WATCH_DELAY * 5)  # the watcher task has started
    del receive
    for _ in range(5):  # the cancelled watcher runs to its end
        await asyncio.sleep(0)
    assert ref() is None, "the disconnect watcher stays in a reference cycle"


async def test_a_broken_upstream_body_leaves_no_cycle_through_the_connection(no_gc: None) -> None:
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=1.0, max_per_host=8, keepalive_seconds=5.0)
    try:
        async with RawServer(reply(CASES["content-length-truncated"][0], close=True)) as server:
            headers = [(b"content-type", b"application/json"), (b"x-identity", b"alice")]
            response = await pool.request("POST", server.url + "/mcp", headers, b"{}", identity="alice")
            ref = weakref.ref(response._conn)
            failed = False
            try:
                async with response:
                    async for _ in response.iter_chunks():
                        pass
            except UpstreamClosed:
                failed = True
            assert failed
            del response
            for _ in range(5):  # the transport reports the close
                await asyncio.sleep(0)
            assert ref() is None, "the upstream connection stays in a reference cycle"
    finally:
        await pool.close()
