"""A hostile upstream: a raw asyncio HTTP/1.1 server that frames its answers as badly as asked.

Used two ways:

* in-process, by the unit and differential tests: ``RawServer(answer)`` on a free loopback port,
  where ``answer(request, writer)`` writes whatever bytes the test wants;
* as a replica of the local runtime (image ``malicious:1``, see ``catalog``), by the gateway
  tests: ``python tests/adversarial/malicious_upstream.py`` serves ``$HOST:$PORT``; the request
  header ``x-evil: <case>`` picks one of ``CASES`` (the same bytes the differential test uses) or
  a behaviour of ``evil_answer`` (late bytes, cut streams, a killed replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Request:
    """One request the server read."""

    conn: int
    index: int
    method: str
    path: str
    headers: dict[str, bytes]
    body: bytes


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """Reads requests (Content-Length bodies only) and lets ``answer`` write anything back."""

    answer: Answer
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    eofs: int = 0
    """Connections the client closed (the server saw EOF)."""
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # the replica goes away: so do its connections
            writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self._writers.add(writer)
        index = 0
        try:
            while not writer.is_closing():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.eofs += 1
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, bytes] = {}
                for line in head.split(b"\r\n")[1:]:
                    if b":" in line:
                        name, _, value = line.partition(b":")
                        headers[name.decode("latin-1").strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", b"0")))
                request = Request(conn, index, method, path, headers, body)
                self.requests.append(request)
                index += 1
                await self.answer(request, writer)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # (a cancelled handler re-raising makes 3.11's start_server log a traceback)
        finally:
            self._writers.discard(writer)
            writer.close()


def reply(data: bytes, *, close: bool = False) -> Answer:
    """An answer that writes ``data`` (and closes the connection when ``close``)."""

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        if close:
            await writer.drain()
            writer.close()

    return answer


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    """A well-framed 200 with a Content-Length body."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


HUGE = b"X-Huge: " + b"a" * (100 * 1024) + b"\r\n"
MANY = b"".join(b"X-F%d: v\r\n" % i for i in range(150))

CASES: dict[str, tuple[bytes, bool]] = {
    # name: (bytes the upstream sends, whether it then closes the connection)
    "ok-content-length": (ok(), False),
    "ok-chunked-with-trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
        False,
    ),
    "ok-interim-103": (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(), False),
    "ok-read-until-close": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", True),
    "ok-204": (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    "closed-before-head": (b"", True),
    "closed-mid-head": (b"HTTP/1.1 200 OK\r\nContent-Le", True),
    "content-length-truncated": (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort", True),
    "chunked-truncated": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", True),
    "chunked-cut-mid-chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel", True),
    "status-000": (b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok", False),
    "status-99": (b"HTTP/1.1 99 Low\r\nContent-Length: 2\r\n\r\nok", False),
    "status-600": (b"HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok", False),
    "status-199-with-body": (b"HTTP/1.1 199 Odd\r\nContent-Length: 5\r\n\r\nhello", False),
    "status-101-unasked": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nzz",
        False,
    ),
    "huge-header": (b"HTTP/1.1 200 OK\r\n" + HUGE + b"Content-Length: 2\r\n\r\nok", False),
    "many-header-fields": (b"HTTP/1.1 200 OK\r\n" + MANY + b"Content-Length: 2\r\n\r\nok", False),
    "content-length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        False,
    ),
    "two-content-lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", False),
    "transfer-coding-gzip-chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        False,
    ),
    "bad-chunk-size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", False),
    "nul-in-header": (b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok", False),
    "space-before-colon": (b"HTTP/1.1 200 OK\r\nX-Bad : a\r\nContent-Length: 2\r\n\r\nok", False),
    "bare-lf": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False),
    "leading-crlf": (b"\r\n" + ok(), False),
    "two-responses-in-one-read": (ok(b'{"first":1}') + ok(b'{"second":2}', b"X-Second: 1\r\n"), False),
    "excess-body": (ok(b'{"ok":true}') + b"EXTRA", False),
    "stray-crlf-after-chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\r\n",
        False,
    ),
    "not-http": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", False),
}


# --- as a replica of the local runtime ------------------------------------------------------------


def catalog(path: Path) -> Path:
    """Write an image catalog with ``malicious:1`` (this file as a replica) to ``path``."""
    path.write_text(
        '["malicious:1"]\ncommand = ["{python}", "{repo}/tests/adversarial/malicious_upstream.py"]\n'
        'ready_path = "/healthz"\n',
        encoding="utf-8",
    )
    return path


def _json(status: int, payload: Any, extra: bytes = b"") -> bytes:
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        extra,
        body,
    )


PENDING: dict[int, bytes] = {}
"""Per connection: bytes held back by ``late-bytes``, sent when the next request arrives on it."""


async def evil_answer(request: Request, writer: asyncio.StreamWriter) -> None:
    """The replica's behaviour, picked by the ``x-evil`` request header."""
    user = request.headers.get("x-mcp-user-id", b"?").decode("latin-1")
    held = PENDING.pop(request.conn, None)
    if held is not None:
        # Bytes "late" from the previous answer on this connection, arriving while this request
        # is in flight; this request itself is never answered.
        writer.write(held)
        return
    if request.path == "/healthz":
        writer.write(_json(200, {"ok": True}))
        return
    case = request.headers.get("x-evil", b"").decode("latin-1")
    if case in CASES:
        data, close = CASES[case]
        writer.write(data)
        if close:
            await writer.drain()
            writer.close()
        return
    if case == "late-bytes":
        writer.write(_json(200, {"jsonrpc": "2.0", "id": 1, "result": {"user": user}}))
        PENDING[request.conn] = _json(200, {"jsonrpc": "2.0", "id": 1, "result": {"leaked-from": user}})
        return
    if case in ("sse-cut", "sse-kill"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(2):
            event = b'event: message\ndata: {"n": %d}\n\n' % n
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05)
        if case == "sse-kill":
            os._exit(9)  # a replica killed mid-stream
        writer.close()
        return
    if case == "legacy-sse-cut":
        # 2024-11-05 HTTP+SSE: the endpoint event, one message, then the stream breaks off.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in (b"event: endpoint\ndata: /messages?session_id=abc\n\n", b'event: message\ndata: {"n": 0}\n\n'):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()
        return
    if case == "sleep":
        await asyncio.sleep(float(request.headers.get("x-sleep", b"1")))
        writer.write(_json(200, {"jsonrpc": "2.0", "id": 1, "result": {"slept": True}}))
        return
    if case == "json-cut-late":
        # A large JSON body (beyond what the gateway reads before answering) that then breaks off.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400000\r\n\r\n")
        writer.write(b"[" + b"0," * 100_000)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        return
    writer.write(_json(200, {"jsonrpc": "2.0", "id": 1, "result": {"user": user, "conn": request.conn}}))


async def _main() -> None:
    server = RawServer(evil_answer, os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"]))
    async with server:
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
