"""A 2026-07-28-only MCP server: stateless, ``initialize`` answered with -32601 (method not found).

Run as a replica by the local runtime (image ``modern-only:1.0`` in tests/upstreams/images.toml).
It models the seed project's modern-only servers (September 2026): every POST is one request carrying
its era in ``params._meta``; GET and DELETE are 405. Tools: ``add`` (a + b) and ``hello``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import uvicorn

MODERN = "2026-07-28"
TOOLS = [
    {
        "name": "add",
        "description": "a + b",
        "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    },
    {"name": "hello", "description": "greets", "inputSchema": {"type": "object", "properties": {}}},
]
INFO = {"io.modelcontextprotocol/serverInfo": {"name": "modern-only", "version": "1"}}


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def respond(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = [(b"content-type", b"application/json")] if payload is not None else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def answer(message: dict[str, Any]) -> tuple[int, Any]:
    ident = message.get("id")
    method = message.get("method")
    params = message.get("params") or {}
    meta = params.get("_meta") or {}
    if method == "initialize" or meta.get("io.modelcontextprotocol/protocolVersion") != MODERN:
        return 404, {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": f"method {method} not found"}}
    if method == "server/discover":
        result: dict[str, Any] = {"supportedVersions": [MODERN], "capabilities": {"tools": {}}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call" and params.get("name") == "add":
        args = params.get("arguments") or {}
        result = {"content": [{"type": "text", "text": str(args.get("a", 0) + args.get("b", 0))}]}
    elif method == "tools/call" and params.get("name") == "hello":
        result = {"content": [{"type": "text", "text": "hello from a modern-only server"}]}
    else:
        return 404, {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": f"method {method} not found"}}
    return 200, {"jsonrpc": "2.0", "id": ident, "result": {**result, "_meta": INFO}}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/healthz":
        await respond(send, 200, {"status": "ok"})
        return
    if scope["method"] != "POST":
        await respond(send, 405, None)
        return
    try:
        message = json.loads(await read_body(receive))
    except ValueError:
        await respond(send, 400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        return
    if "id" not in message:
        await respond(send, 202, None)
        return
    status, payload = answer(message)
    await respond(send, status, payload)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        log_level="warning",
        lifespan="on",
    )
