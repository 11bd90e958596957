"""The data plane's HTTP/1.1 client to replicas: a strict keep-alive pool on asyncio protocols.

Why not aiohttp (measured 2026-11-23, docs/performance.md): on the 2-core reference machine an
aiohttp ``ClientSession.request`` cost about 0.25 ms of CPU per proxied call, three quarters of
the gateway's whole per-request cost, against about 0.05 ms for this client. The proxy needs
little of what a general client does: no redirects, cookies, proxies, decompression or
multipart; request bodies are bytes already read and size-checked; responses are streamed.
Parsing is ``httptools`` (llhttp, the parser uvicorn uses, strict mode); this module frames
requests and response heads, pools connections and applies the timeouts.

* **Strict framing (2026-11-30, issue 12).** A replica is not trusted to frame its answers
  (DESIGN.md §7). A response head must start with ``HTTP/`` and end within
  ``max_header_bytes`` (and ``max_header_fields`` fields); the head is cut at its end before
  llhttp sees it, so the bytes after it are counted exactly. The status must be 100-599; a
  1xx is interim (skipped; at most ``MAX_INTERIM``), except a 101 or a 1xx with a body, which
  are errors. The only transfer coding is ``chunked``. A connection is reused only after a
  complete response with nothing after it: any byte beyond the framed message — in the same
  read (a second response, a stray CRLF, excess body) or while the connection is idle —
  closes the connection, and fails the response if its reader has not seen its end yet. An
  early close (before Content-Length or the last chunk) is ``UpstreamClosed``, never a clean
  end: the proxy aborts the client's response (gateway/proxy/app.py).
* **Connections belong to one identity.** On a shared HTTP/1.1 connection a late byte that
  arrives while the next request is in flight cannot be told apart from that request's
  answer. So a kept-alive connection carries only requests of the identity (user id) it was
  opened for: a buggy or hostile replica can never put one user's bytes into another user's
  response. Cost: one more TCP connection per (replica, user) pair that is active at once
  (the many-users row of scripts/bench_proxy.py).
* **Pool.** Per target (``scheme://host:port``) at most ``max_per_host`` connections are open
  at once, across identities. A request reuses the newest idle connection of its own
  identity; else opens one if under the cap; else, when the cap is reached, closes the
  oldest idle connection of another identity and opens its own; else waits up to
  ``connect_timeout`` for one to come free, then fails with ``UpstreamPoolExhausted`` (503,
  not the 504 of a slow upstream). Idle connections close after ``keepalive_seconds`` (kept
  below the common server idle timeout, uvicorn: 5 s), and a target's state is dropped with
  its last connection, so replicas and users that went away leave nothing behind.
* **Timeouts.** ``connect_timeout`` for a free connection plus the TCP connect;
  ``read_timeout`` for every wait on the upstream (the response head, then each body chunk):
  a stream may live for hours as long as it is not silent longer than that.
* **Errors.** One tree under ``UpstreamError``: ``UpstreamUnreachable`` (a ``ConnectionError``:
  refused, reset, closed before the response head), ``UpstreamClosed`` (a ``ConnectionError``:
  the body ended early), ``UpstreamTimeout`` (a ``TimeoutError``), ``UpstreamPoolExhausted``
  (no free connection; deliberately not a ``TimeoutError``), ``UpstreamProtocolError`` (a
  malformed or mis-framed response; ``UpstreamHeadersTooLarge`` for the head limits).
* **Back-pressure.** A response body buffers at most ``HIGH_WATER`` bytes before the socket is
  paused, so a slow client slows the upstream instead of growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote

import httptools

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_INTERIM = 8
"""Most interim (1xx) responses accepted before the final one."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_HTTP = b"HTTP/"
_LINE_BREAKS = (b"\r", b"\n")


class UpstreamError(Exception):
    """The upstream request failed."""


class UpstreamUnreachable(UpstreamError, ConnectionError):
    """No connection, or the connection broke before the response head arrived."""


class UpstreamClosed(UpstreamError, ConnectionError):
    """The upstream closed the connection in the middle of the response body (a truncated body)."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No connect in time, or the upstream was silent for longer than allowed."""


class UpstreamPoolExhausted(UpstreamError):
    """Every connection to the upstream is in use and none came free in time (not the upstream's fault)."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer is not valid, strictly framed HTTP/1.1."""


class UpstreamHeadersTooLarge(UpstreamProtocolError):
    """The upstream's response head (or trailers) exceeds the size or field-count limit."""


class _Connection(asyncio.Protocol):
    """One upstream TCP connection of one identity; parses one response at a time."""

    def __init__(self, pool: UpstreamPool, key: str, identity: str) -> None:
        self._pool = pool
        self.key = key
        self.identity = identity
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = True  # still counted in its target's connection count
        self.idle_since = 0.0
        self.reused = False
        self._parser: httptools.HttpResponseParser | None = None
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._exc: BaseException | None = None
        self._paused = False
        self._response: UpstreamResponse | None = None
        self._head = bytearray()  # an incomplete response head
        self._begun = False  # the current parser has seen a message begin
        self._fields = 0  # header (or trailer) fields of the current head
        self._trailer_bytes = 0
        self._interims = 0
        self._after_head = 0  # bytes received after the final head
        self._tail = b""  # the last bytes of a chunked body: nothing may follow its final CRLF
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are no asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None  # the parser holds this protocol's callbacks: a cycle otherwise
        self._pool._lost(self)
        response = self._response
        if response is not None and not response.complete:
            if response.head_done and response.read_until_close:
                response.complete = True  # a body without length ends with the connection
            elif response.head_done:
                if response.length is not None:
                    got = f"{self._after_head} of {response.length} bytes"
                else:
                    got = "before the last chunk"
                self._fail(UpstreamClosed(f"the upstream closed the connection in the middle of the body ({got})"))
            else:
                self._fail(UpstreamUnreachable(f"the upstream closed the connection: {exc or 'EOF'}"))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamUnreachable("the upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            # Idle (or between requests): nobody asked. The connection can no longer be trusted.
            self._fail(UpstreamProtocolError(f"the upstream sent {len(data)} bytes without a request"))
            self.close()
            return
        try:
            if response.complete:
                self._after_end(len(data))
            elif not response.head_done:
                self._feed_head(response, data)
            else:
                self._feed_body(response, data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream answered with a protocol upgrade"))
            self.close()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, UpstreamError):
                self._fail(cause)
            else:
                self._fail(UpstreamProtocolError(f"the upstream sent malformed HTTP: {exc}"))
            self.close()
        except UpstreamError as exc:
            self._fail(exc)
            self.close()
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # --- framing -------------------------------------------------------------------------------

    def _feed_head(self, response: UpstreamResponse, data: bytes) -> None:
        """Cut response heads out of the stream and parse each; hand what follows to the body."""
        limit = self._pool.max_header_bytes
        head = self._head
        if head:
            fresh = len(head)  # only the new bytes are searched: a dribbled head costs O(n), not O(n²)
            head += data
            buf: bytes | bytearray = head
        else:
            buf, fresh = data, 0
        while True:
            if buf[:5] != _HTTP[: len(buf[:5])]:
                raise UpstreamProtocolError(f"the upstream sent {bytes(buf[:16])!r} where a response head belongs")
            end = buf.find(b"\r\n\r\n", max(fresh - 3, 0))
            if end < 0 or end + 4 > limit:
                if len(buf) > limit or end >= 0:
                    raise UpstreamHeadersTooLarge(f"the upstream's response head is larger than {limit} bytes")
                if buf.count(b"\n", fresh) != buf.count(b"\r\n", max(fresh - 1, 0)):
                    raise UpstreamProtocolError("the upstream's response head has a line break without CR")
                if buf is not head:
                    head += buf
                return
            end += 4
            parser = self._parser = httptools.HttpResponseParser(self)
            self._begun = False
            self._fields = 0
            if end == len(buf):
                parser.feed_data(buf)
                rest = b""
            else:
                with memoryview(buf) as view, view[:end] as part:
                    parser.feed_data(part)
                rest = bytes(buf[end:])
            head.clear()
            if response.interim:
                response.interim = False
                self._interims += 1
                if self._interims > MAX_INTERIM:
                    raise UpstreamProtocolError(f"the upstream sent more than {MAX_INTERIM} interim responses")
                if not rest:
                    return
                buf, fresh = rest, 0
                continue
            if not response.head_done:
                raise UpstreamProtocolError("the upstream's response head did not parse")
            if rest:
                if response.complete:
                    self._after_end(len(rest))
                else:
                    self._feed_body(response, rest)
            return

    def _feed_body(self, response: UpstreamResponse, data: bytes) -> None:
        assert self._parser is not None
        self._after_head += len(data)
        self._parser.feed_data(data)
        if response.chunked:
            self._tail = (self._tail + data[-5:])[-5:]
        if not response.complete:
            return
        if response.length is not None:
            extra = self._after_head - response.length
            if extra > 0:
                self._after_end(extra)
        elif response.chunked:
            # A strict chunked message ends "X\r\n\r\n" with X the last-chunk size, an extension
            # or a trailer value, never a line break; llhttp would skip stray CR/LF silently.
            tail = self._tail
            if len(tail) < 5 or tail[1:] != b"\r\n\r\n" or tail[:1] in _LINE_BREAKS:
                self._after_end(0)

    def _after_end(self, count: int) -> None:
        what = f"{count} bytes" if count else "bytes"
        raise UpstreamProtocolError(f"the upstream sent {what} after the end of its response")

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._begun:
            raise UpstreamProtocolError("the upstream sent a second response for one request")
        self._begun = True

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._response
        assert response is not None
        self._fields += 1
        if self._fields > self._pool.max_header_fields:
            raise UpstreamHeadersTooLarge(f"the upstream sent more than {self._pool.max_header_fields} header fields")
        if response.head_done:  # a trailer: dropped, but bounded
            self._trailer_bytes += len(name) + len(value) + 4
            limit = self._pool.max_header_bytes
            if self._trailer_bytes > limit:
                raise UpstreamHeadersTooLarge(f"the upstream's trailers are larger than {limit} bytes")
            return
        response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        parser = self._parser
        assert response is not None and parser is not None
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise UpstreamProtocolError(f"the upstream answered with status {status}, outside 100-599")
        length: int | None = None
        chunked = False
        for name, value in response.raw_headers:
            lname = name.lower()
            if lname == b"content-length":
                length = int(value)  # llhttp checked digits and duplicates
            elif lname == b"transfer-encoding":
                if chunked or value.strip().lower() != b"chunked":
                    raise UpstreamProtocolError(f"the upstream used transfer coding {value!r}; only chunked is allowed")
                chunked = True
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("the upstream switched protocols (101) without being asked to")
            if length or chunked:
                raise UpstreamProtocolError(f"the upstream sent an interim {status} response with a body")
            response.raw_headers.clear()
            response.interim = True
            return
        response.status = status
        response.keep_alive = parser.should_keep_alive()
        response.length = length
        response.chunked = chunked
        response.head_done = True
        self._fields = 0
        if response.method == "HEAD" or status in (204, 304):
            # No body follows whatever the headers say; llhttp cannot know the request was HEAD.
            response.length = 0
            response.chunked = False
            response.complete = True
        elif length is None and not chunked:
            response.read_until_close = True
            response.keep_alive = False

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        response.buffer.append(body)
        response.buffered += len(body)
        if response.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        if response.head_done:
            response.complete = True

    # --- used by UpstreamResponse and UpstreamPool ---------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None], what: str) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout(f"the upstream sent no {what} within {self._pool.read_timeout:g}s"))

    def failure(self) -> BaseException:
        """A fresh copy of what went wrong, to raise.

        Raising the stored exception itself would attach a traceback whose frames hold this
        connection: a cycle (connection, exception, traceback, frame) that only a full GC pass
        frees, with the stream's buffers and the request around it. Soak 2026-11-30: every
        replica kill broke 50 streams this way; garbage piled up between full passes and the
        RSS rose in steps.
        """
        assert self._exc is not None
        return copy.copy(self._exc)

    async def wait(self, what: str, deadline: float | None = None) -> None:
        """Wait for more from the upstream (at most read_timeout, or until ``deadline``); raise what went wrong."""
        if self._exc is not None:
            raise self.failure()
        waiter = self._loop.create_future()
        self._waiter = waiter
        delay = self._pool.read_timeout if deadline is None else deadline - self._loop.time()
        timer = self._loop.call_later(delay, self._timed_out, waiter, what)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._exc is not None:
            raise self.failure()

    def consumed(self, response: UpstreamResponse) -> None:
        if self._paused and response.buffered < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def send(self, data: bytes, response: UpstreamResponse) -> None:
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise UpstreamUnreachable("the connection to the upstream is closed")
        self._response = response
        self._exc = None
        self._interims = 0
        self._after_head = 0
        self._trailer_bytes = 0
        self._tail = b""
        self.transport.write(data)
        if self._write_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def finish(self) -> bool:
        """The exchange is over; True when the connection may carry another request."""
        response = self._response
        self._response = None
        return (
            response is not None
            and response.complete
            and response.keep_alive
            and not response.buffer
            and self._exc is None
            and not self.closed
            and not self._paused
            and not self._head
        )

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class UpstreamResponse:
    """An upstream response whose body is read chunk by chunk."""

    __slots__ = (
        "_conn",
        "_released",
        "buffer",
        "buffered",
        "chunked",
        "complete",
        "head_done",
        "interim",
        "keep_alive",
        "length",
        "method",
        "raw_headers",
        "read_until_close",
        "status",
    )

    def __init__(self, conn: _Connection, method: str) -> None:
        self._conn = conn
        self._released = False
        self.method = method
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.interim = False
        self.complete = False
        self.keep_alive = False
        self.read_until_close = False
        self.length: int | None = None
        self.chunked = False
        self.buffer: collections.deque[bytes] = collections.deque()
        self.buffered = 0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case (``application/octet-stream`` if absent)."""
        value = self.header("content-type")
        if not value:
            return "application/octet-stream"
        return value.split(";", 1)[0].strip().lower()

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived; b"" at its end; raises when it did not end cleanly."""
        conn = self._conn
        while True:
            if self.buffer:
                chunk = self.buffer.popleft()
                self.buffered -= len(chunk)
                conn.consumed(self)
                return chunk
            if self.complete:
                if conn._exc is not None:
                    raise conn.failure()
                return b""
            await conn.wait("data")

    async def read_chunk_or_idle(self, idle: float, silent_since: float) -> bytes | None:
        """Like ``read_chunk``, but None when nothing arrived within ``idle`` seconds (2026-11-30, issue 14).

        The read timeout still counts from ``silent_since`` (loop time of the last chunk), so an SSE
        relay that wakes up every ``idle`` seconds to send a keep-alive does not hide a silent upstream.
        Nothing is consumed when it returns None: the next call picks up where this one stopped.
        """
        conn = self._conn
        loop = conn._loop
        deadline = silent_since + conn._pool.read_timeout
        wake = loop.time() + idle
        while True:
            if self.buffer or self.complete:
                return await self.read_chunk()
            try:
                await conn.wait("data", min(deadline, wake))
            except UpstreamTimeout:
                if loop.time() < deadline and conn._exc is None:
                    return None
                raise

    def at_eof(self) -> bool:
        """Whether the whole body has been read and ended cleanly."""
        return self.complete and not self.buffer and self._conn._exc is None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives."""
        while chunk := await self.read_chunk():
            yield chunk

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the connection back to the pool (or close it when it cannot be reused)."""
        if not self._released:
            self._released = True
            self._conn._pool._release(self._conn, self._conn.finish())


class _Target:
    """Connections to one ``scheme://host:port``: open ones counted, idle ones per identity."""

    __slots__ = ("address", "count", "idle", "lru", "waiters")

    def __init__(self, address: tuple[str, int, bool, bytes]) -> None:
        self.address = address
        self.count = 0
        self.idle: dict[str, list[_Connection]] = {}
        """Idle connections per identity, newest last."""
        self.lru: dict[_Connection, None] = {}
        """Every idle connection, oldest first (eviction at the cap, expiry)."""
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to replicas, one set per identity; see the module docstring."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_per_host: int,
        keepalive_seconds: float = 4.0,
        max_header_bytes: int = 64 * 1024,
        max_header_fields: int = 100,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_per_host = max_per_host
        self.keepalive_seconds = keepalive_seconds
        self.max_header_bytes = max_header_bytes
        self.max_header_fields = max_header_fields
        self._targets: dict[str, _Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._sweep_timer: asyncio.TimerHandle | None = None

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes, *, identity: str = ""
    ) -> UpstreamResponse:
        """Send one request as ``identity``; returns once the response head arrived (read the body, then release).

        Header names and values are sent as given (bytes, no re-encoding); a CR, LF or NUL in
        any of them is refused with ``ValueError`` (header injection).
        """
        base, path = _split_url(url)
        parts = [method.encode("ascii"), b" ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ", b"", b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        lines = len(headers) + 3  # request line, Host, the headers, the empty line
        if body or method not in NO_BODY_METHODS:
            parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
            lines += 1
        parts.append(b"\r\n")
        target = self._targets.get(base)
        address = target.address if target is not None else _parse_base(base)
        parts[4] = address[3]
        head = b"".join(parts)
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
            raise ValueError("a header name or value of the upstream request holds CR, LF or NUL")
        data = head + body if body else head
        for attempt in (0, 1):
            conn = await self._acquire(base, address, identity)
            response = UpstreamResponse(conn, method)
            try:
                await conn.send(data, response)
                # The whole head within read_timeout: a replica dribbling its head byte by byte
                # cannot hold the request open for longer.
                deadline = asyncio.get_running_loop().time() + self.read_timeout
                while not response.head_done:
                    await conn.wait("complete response head", deadline)
                return response
            except UpstreamUnreachable:
                response.release()
                # A kept-alive connection the server closed just as we wrote: safe to resend only
                # when the method is idempotent (nothing can have happened twice).
                if attempt == 0 and conn.reused and method in IDEMPOTENT:
                    continue
                raise
            except BaseException:
                response.release()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close every idle connection; busy ones close when released."""
        self._closed = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for target in list(self._targets.values()):
            for conn in list(target.lru):
                self._discard(target, conn)

    def stats(self) -> dict[str, int]:
        """Targets, open connections, idle connections and identities with idle connections (tests, soak)."""
        targets = list(self._targets.values())
        return {
            "targets": len(targets),
            "connections": sum(t.count for t in targets),
            "idle": sum(len(t.lru) for t in targets),
            "identities": sum(len(t.idle) for t in targets),
        }

    # --- internals ---------------------------------------------------------------------------

    async def _acquire(self, key: str, address: tuple[str, int, bool, bytes], identity: str) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            target = self._targets.get(key)
            if target is None:
                target = self._targets[key] = _Target(address)
            conns = target.idle.get(identity)
            if conns:
                conn = conns.pop()
                del target.lru[conn]
                if not conns:
                    del target.idle[identity]
                if conn.closed or time.monotonic() - conn.idle_since > self.keepalive_seconds:
                    self._discard(target, conn, drop=False)
                    continue
                conn.reused = True
                return conn
            if target.count >= self.max_per_host and target.lru:
                # At the cap with idle connections of other identities: close the oldest one.
                self._discard(target, next(iter(target.lru)), drop=False)
            if target.count < self.max_per_host:
                break
            waiter = loop.create_future()
            target.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one(target)  # woken, but leaving: hand the wake-up on
                if isinstance(exc, TimeoutError):
                    raise UpstreamPoolExhausted(
                        f"no free connection to the upstream within {self.connect_timeout:g}s "
                        f"({self.max_per_host} in use)"
                    ) from None
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                if waiter in target.waiters:
                    target.waiters.remove(waiter)
                self._maybe_drop(key, target)
        target.count += 1
        try:
            return await self._connect(key, address, identity, max(deadline - loop.time(), 0.001))
        except BaseException:
            target.count -= 1
            self._wake_one(target)
            self._maybe_drop(key, target)
            raise

    async def _connect(
        self, key: str, address: tuple[str, int, bool, bytes], identity: str, budget: float
    ) -> _Connection:
        host, port, tls, _ = address
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(budget):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key, identity),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(f"cannot connect to {host}:{port} within {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return conn

    def _release(self, conn: _Connection, reusable: bool) -> None:
        target = self._targets.get(conn.key)
        if target is None or not conn.counted:
            conn.close()
            return
        if reusable and not self._closed:
            conn.idle_since = time.monotonic()
            target.idle.setdefault(conn.identity, []).append(conn)
            target.lru[conn] = None
            if self._sweep_timer is None:
                self._sweep_timer = asyncio.get_running_loop().call_later(self.keepalive_seconds, self._sweep)
            self._wake_one(target)
            return
        self._discard(target, conn)

    def _sweep(self) -> None:
        """Close idle connections older than keepalive_seconds (one timer per pool, not per request)."""
        self._sweep_timer = None
        now = time.monotonic()
        next_due: float | None = None
        for target in list(self._targets.values()):
            for conn in list(target.lru):  # oldest first: stop at the first one still fresh
                due = conn.idle_since + self.keepalive_seconds
                if due > now:
                    next_due = due if next_due is None else min(next_due, due)
                    break
                self._discard(target, conn)
        if next_due is not None:
            self._sweep_timer = asyncio.get_running_loop().call_later(next_due - now + 0.01, self._sweep)

    def _discard(self, target: _Target, conn: _Connection, *, drop: bool = True) -> None:
        """Close ``conn`` and free its slot now (not when the close completes)."""
        if target.lru.pop(conn, 0) is None:  # it was idle
            conns = target.idle[conn.identity]
            conns.remove(conn)
            if not conns:
                del target.idle[conn.identity]
        if conn.counted:
            conn.counted = False
            target.count -= 1
            self._wake_one(target)
        conn.close()
        if drop:
            self._maybe_drop(conn.key, target)

    def _lost(self, conn: _Connection) -> None:
        target = self._targets.get(conn.key)
        if target is not None and conn.counted:
            self._discard(target, conn)

    def _maybe_drop(self, key: str, target: _Target) -> None:
        if target.count <= 0 and not target.waiters and self._targets.get(key) is target:
            del self._targets[key]

    @staticmethod
    def _wake_one(target: _Target) -> None:
        while target.waiters:
            waiter = target.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _split_url(url: str) -> tuple[str, str]:
    """("scheme://netloc", "/path?query") of an absolute http(s) URL."""
    slash = url.find("/", url.find("//") + 2)
    if slash < 0:
        return url, "/"
    base, path = url[:slash], url[slash:]
    if not path.isascii() or " " in path or not path.isprintable():
        path = quote(path, safe="/:@!$&'()*+,;=?#[]%~-._")
    return base, path


def _parse_base(base: str) -> tuple[str, int, bool, bytes]:
    scheme, _, netloc = base.partition("://")
    tls = scheme.lower() == "https"
    if scheme.lower() not in ("http", "https") or not netloc:
        raise UpstreamUnreachable(f"unsupported upstream URL {base!r}")
    host, port = netloc, 443 if tls else 80
    if netloc.startswith("["):
        end = netloc.index("]")
        host = netloc[1:end]
        if netloc[end + 1 : end + 2] == ":":
            port = int(netloc[end + 2 :])
    elif ":" in netloc:
        host, _, raw_port = netloc.rpartition(":")
        port = int(raw_port)
    return host, port, tls, netloc.encode("idna" if not netloc.isascii() else "ascii")
