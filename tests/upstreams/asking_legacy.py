"""A 2025-era-only MCP server whose tool asks the client things mid-call (sampling, elicitation, roots).

Run as a replica by the local runtime (image ``asking-legacy:1.0`` in tests/upstreams/images.toml) for
the virtual-server back-channel tests (tests/adversarial/test_virtual_backchannel.py). It speaks only
the 2025 handshake (``server/discover`` without a session is 400, as from a 2025 SDK server), and keeps
what the tests need to see from outside:

- ``ask`` (``method``, ``wait`` seconds): answers the call as an SSE stream that first carries a
  server-to-client request ``method`` (ids ``q1``, ``q2``, ... across the process), then waits for
  the client's response and ends with a text result holding that response as JSON (or ``no answer``);
- ``capabilities``: the client capabilities this member session's ``initialize`` declared;
- ``received``: every JSON-RPC response POSTed to this server so far, with the session it came on —
  so a test can prove that a refused answer never reached the member.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

import uvicorn

LEGACY = "2025-11-25"
TOOLS = [
    {
        "name": "ask",
        "description": "asks the client (params.method) and returns its answer",
        "inputSchema": {
            "type": "object",
            "properties": {"method": {"type": "string"}, "wait": {"type": "number"}},
        },
    },
    {"name": "capabilities", "description": "the session's client capabilities", "inputSchema": {"type": "object"}},
    {"name": "received", "description": "responses received so far", "inputSchema": {"type": "object"}},
]
PARAMS = {
    "sampling/createMessage": {
        "messages": [{"role": "user", "content": {"type": "text", "text": "What is 2+2?"}}],
        "maxTokens": 10,
    },
    "elicitation/create": {
        "message": "Your name?",
        "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
    "roots/list": {},
}
_sessions = itertools.count(1)
_questions = itertools.count(1)
capabilities: dict[str, Any] = {}  # session → declared client capabilities
waiting: dict[tuple[str, str], asyncio.Future[Any]] = {}
received: list[dict[str, Any]] = []


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def respond(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode() if payload is not None else b""
    out = [(b"content-type", b"application/json")] if payload is not None else []
    await send({"type": "http.response.start", "status": status, "headers": out + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def event(message: Any) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


def text(ident: Any, value: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": value}]}}


async def ask(send: Any, session: str, ident: Any, args: dict[str, Any]) -> None:
    method = str(args.get("method", "sampling/createMessage"))
    question = f"q{next(_questions)}"
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    waiting[(session, question)] = future
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    request = {"jsonrpc": "2.0", "id": question, "method": method, "params": PARAMS.get(method, {})}
    await send({"type": "http.response.body", "body": event(request), "more_body": True})
    try:
        answer = await asyncio.wait_for(future, float(args.get("wait", 10)))
        outcome = json.dumps({k: v for k, v in answer.items() if k in ("result", "error")}, sort_keys=True)
    except TimeoutError:
        outcome = "no answer"
    finally:
        waiting.pop((session, question), None)
    await send({"type": "http.response.body", "body": event(text(ident, outcome)), "more_body": False})


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
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    session = headers.get("mcp-session-id", "")
    if scope["method"] == "DELETE":
        capabilities.pop(session, None)
        await respond(send, 200, None)
        return
    if scope["method"] != "POST":
        await respond(send, 405, None)
        return
    try:
        message = json.loads(await read_body(receive))
    except ValueError:
        await respond(send, 400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        return
    ident = message.get("id")
    method = message.get("method")
    if method is None:  # a response to one of our questions
        received.append({"session": session, "message": message})
        future = waiting.get((session, str(ident)))
        if future is not None and not future.done():
            future.set_result(message)
        await respond(send, 202, None)
        return
    if method == "initialize":
        session = f"s{next(_sessions)}"
        capabilities[session] = (message.get("params") or {}).get("capabilities") or {}
        result = {"protocolVersion": LEGACY, "capabilities": {"tools": {}}, "serverInfo": {"name": "asking-legacy"}}
        await respond(
            send, 200, {"jsonrpc": "2.0", "id": ident, "result": result}, [(b"mcp-session-id", session.encode())]
        )
        return
    if session not in capabilities:
        await respond(send, 400, {"jsonrpc": "2.0", "id": ident, "error": {"code": -32600, "message": "no session"}})
        return
    if ident is None:
        await respond(send, 202, None)
        return
    params = message.get("params") or {}
    if method == "tools/list":
        await respond(send, 200, {"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
    elif method == "tools/call" and params.get("name") == "ask":
        await ask(send, session, ident, params.get("arguments") or {})
    elif method == "tools/call" and params.get("name") == "capabilities":
        await respond(send, 200, text(ident, json.dumps(capabilities[session], sort_keys=True)))
    elif method == "tools/call" and params.get("name") == "received":
        await respond(send, 200, text(ident, json.dumps(received)))
    else:
        await respond(send, 200, {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "not found"}})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        log_level="warning",
        lifespan="on",
    )
