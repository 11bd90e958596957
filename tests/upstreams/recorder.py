"""A test upstream that reports what it received, controlled by x-test-* request headers.

Run as a replica by the local runtime (image ``recorder:1.0`` in tests/upstreams/images.toml):
POST /mcp answers a JSON-RPC result describing the request. Headers steer it:
``x-test-status`` (answer with that status), ``x-test-sleep`` (seconds before answering),
``x-test-stream`` (N SSE events, ``x-test-interval`` apart; ``x-test-split``: each with a pause
inside), ``x-test-session`` (issue that Mcp-Session-Id), ``x-test-exit`` (die mid-request).
GET /stats counts cancelled requests.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import uvicorn

STATS = {"cancelled": 0, "requests": 0}


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if scope["path"] in ("/healthz", "/stats"):
        await respond(send, 200, json.dumps(STATS).encode(), [(b"content-type", b"application/json")])
        return
    STATS["requests"] += 1
    body = await read_body(receive) if scope["method"] == "POST" else b""
    if "x-test-exit" in headers:
        os._exit(3)
    try:
        request_id: Any = json.loads(body).get("id", 1) if body else 1
    except (ValueError, AttributeError):
        request_id = 1
    report = {
        "replica": os.environ.get("MCP_REPLICA_ID", "?"),
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": headers,
        "bodyLength": len(body),
    }
    extra: list[tuple[bytes, bytes]] = []
    if "x-test-session" in headers:
        extra.append((b"mcp-session-id", headers["x-test-session"].encode()))
    try:
        if "x-test-sleep" in headers:
            await wait_or_disconnect(receive, float(headers["x-test-sleep"]))
        if "x-test-stream" in headers:
            count = int(headers["x-test-stream"])
            interval = float(headers.get("x-test-interval", "0.3"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), *extra],
                }
            )
            for index in range(count):
                event = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"n": index}})
                chunk = f"id: ev-{index}\nretry: 1000\nevent: message\ndata: {event}\n\n".encode()
                if "x-test-split" in headers:  # half an event, a pause, the rest (an idle gap inside an event)
                    half = len(chunk) // 2
                    await send({"type": "http.response.body", "body": chunk[:half], "more_body": True})
                    await wait_or_disconnect(receive, interval)
                    chunk = chunk[half:]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await wait_or_disconnect(receive, interval)
            final = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": report})
            await send({"type": "http.response.body", "body": f"event: message\ndata: {final}\n\n".encode()})
            return
        status = int(headers.get("x-test-status", "200"))
        payload = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": report}).encode()
        await respond(
            send, status, payload, [(b"content-type", b"application/json"), (b"x-test-upstream", b"yes"), *extra]
        )
    except asyncio.CancelledError:
        STATS["cancelled"] += 1
        raise


async def wait_or_disconnect(receive: Any, seconds: float) -> None:
    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    done, _ = await asyncio.wait([watcher], timeout=seconds)
    if watcher in done:
        raise asyncio.CancelledError()
    watcher.cancel()


async def respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        log_level="warning",
        lifespan="on",
    )
