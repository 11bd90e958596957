"""The data plane's HTTP/1.1 client to replicas: a keep-alive pool on asyncio protocols.

Why not aiohttp (measured 2026-11-23, docs/performance.md): on the 2-core reference machine an
aiohttp ``ClientSession.request`` cost about 0.25 ms of CPU per proxied call, three quarters of
the gateway's whole per-request cost, against about 0.05 ms for this client. The proxy needs
little of what a general client does: no redirects, cookies, proxies, decompression or
multipart; request bodies are bytes already read and size-checked; responses are streamed.
Parsing is ``httptools`` (llhttp, the parser uvicorn uses); this module only frames requests,
pools connections and applies the timeouts.

* **Pool.** Per ``host:port``, at most ``max_per_host`` connections at once (further requests
  wait up to the connect timeout for one to come free); idle connections are reused newest
  first and dropped after ``keepalive_seconds``, kept below the common server idle timeout
  (uvicorn: 5 s) so a request rarely meets a connection the server is closing.
* **Timeouts.** ``connect_timeout`` for a free connection plus the TCP connect;
  ``read_timeout`` for every wait on the upstream (the response head, then each body chunk):
  a stream may live for hours as long as it is not silent longer than that.
* **Errors.** ``UpstreamUnreachable`` (a ``ConnectionError``: refused, reset, closed before the
  response head), ``UpstreamTimeout`` (a ``TimeoutError``), ``UpstreamProtocolError`` (a
  malformed response), ``UpstreamClosed`` (a ``ConnectionError``: the body ended early).
* **Back-pressure.** A response body buffers at most ``HIGH_WATER`` bytes before the socket is
  paused, so a slow client slows the upstream instead of growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import httptools

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


class UpstreamError(Exception):
    """The upstream request failed."""


class UpstreamUnreachable(UpstreamError, ConnectionError):
    """No connection, or the connection broke before the response head arrived."""


class UpstreamClosed(UpstreamError, ConnectionError):
    """The upstream closed the connection in the middle of the response body."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No free connection, no connect, or the upstream was silent for longer than allowed."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer is not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One upstream TCP connection; parses one response at a time."""

    def __init__(self, pool: UpstreamPool, key: str) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._exc: BaseException | None = None
        self._paused = False
        self._response: UpstreamResponse | None = None
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
        self._pool._lost(self)
        response = self._response
        if response is not None and not response.complete:
            if response.head_done and response.read_until_close:
                response.complete = True  # a body without length ends with the connection
            elif response.head_done:
                self._fail(UpstreamClosed("the upstream closed the connection in the middle of the body"))
            else:
                self._fail(UpstreamUnreachable(f"the upstream closed the connection: {exc or 'EOF'}"))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamUnreachable("the upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            self._fail(UpstreamProtocolError("the upstream sent data without a request"))
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream answered with a protocol upgrade"))
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"the upstream sent malformed HTTP: {exc}"))
            self.close()
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # --- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response: wait for the final one
            response.raw_headers.clear()
            return
        response.status = status
        response.head_done = True
        response.keep_alive = self._parser.should_keep_alive()
        framed = False
        for name, value in response.raw_headers:
            lname = name.lower()
            if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
                framed = True
                break
        response.read_until_close = not framed and status not in (204, 304) and response.method != "HEAD"
        if response.method == "HEAD" or status in (204, 304):
            # No body follows whatever the headers say; llhttp cannot know the request was HEAD.
            response.complete = True
            response.keep_alive = response.keep_alive and response.method != "HEAD"

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
            waiter.set_exception(UpstreamTimeout(f"the upstream sent no {what} for {self._pool.read_timeout:g}s"))

    async def wait(self, what: str) -> None:
        """Wait for more from the upstream (at most read_timeout); raise what went wrong."""
        if self._exc is not None:
            raise self._exc
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(self._pool.read_timeout, self._timed_out, waiter, what)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._exc is not None:
            raise self._exc

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
        reusable = (
            response is not None
            and response.complete
            and response.keep_alive
            and not response.buffer
            and self._exc is None
            and not self.closed
            and not self._paused
        )
        return reusable

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
        "complete",
        "head_done",
        "keep_alive",
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
        self.complete = False
        self.keep_alive = False
        self.read_until_close = False
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
        """The next piece of the body as it arrived; b"" at its end."""
        conn = self._conn
        while True:
            if self.buffer:
                chunk = self.buffer.popleft()
                self.buffered -= len(chunk)
                conn.consumed(self)
                return chunk
            if self.complete:
                return b""
            await conn.wait("data")

    def at_eof(self) -> bool:
        """Whether the whole body has been read."""
        return self.complete and not self.buffer

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


class _HostPool:
    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.count = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to replicas; see the module docstring."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, max_per_host: int, keepalive_seconds: float = 4.0
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_per_host = max_per_host
        self.keepalive_seconds = keepalive_seconds
        self._hosts: dict[str, _HostPool] = {}
        self._targets: dict[str, tuple[str, int, bool, bytes]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def request(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamResponse:
        """Send one request; returns once the response head arrived (read the body, then release)."""
        base, path = _split_url(url)
        target = self._targets.get(base)
        if target is None:
            target = self._targets[base] = _parse_base(base)
        host, port, tls, host_header = target
        parts = [method.encode("ascii"), b" ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ", host_header, b"\r\n"]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"newline in the value of header {name!r}")
            parts += (name.encode("utf-8"), b": ", value.encode("utf-8"), b"\r\n")
        if body or method not in NO_BODY_METHODS:
            parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body)
        else:
            parts.append(b"\r\n")
        data = b"".join(parts)
        for attempt in (0, 1):
            conn = await self._acquire(base, host, port, tls)
            response = UpstreamResponse(conn, method)
            try:
                await conn.send(data, response)
                while not response.head_done:
                    await conn.wait("response")
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
        """Close every connection."""
        self._closed = True
        for pool in self._hosts.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()

    async def _acquire(self, key: str, host: str, port: int, tls: bool) -> _Connection:
        pool = self._hosts.get(key)
        if pool is None:
            pool = self._hosts[key] = _HostPool()
        now = time.monotonic()
        while pool.idle:
            conn = pool.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.keepalive_seconds:
                conn.close()
                continue
            conn.reused = True
            return conn
        deadline = now + self.connect_timeout
        while self.max_per_host and pool.count >= self.max_per_host:
            waiter = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
                    await waiter
            except TimeoutError:
                raise UpstreamTimeout(
                    f"no free connection to the upstream within {self.connect_timeout:g}s ({self.max_per_host} in use)"
                ) from None
            finally:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)
            while pool.idle:
                conn = pool.idle.pop()
                if not conn.closed:
                    conn.reused = True
                    return conn
        pool.count += 1
        try:
            return await self._connect(key, host, port, tls, max(deadline - time.monotonic(), 0.001))
        except BaseException:
            pool.count -= 1
            self._wake_one(pool)
            raise

    async def _connect(self, key: str, host: str, port: int, tls: bool, budget: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(budget):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key), host, port, ssl=context, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise UpstreamTimeout(f"cannot connect to {host}:{port} within {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return conn

    def _release(self, conn: _Connection, reusable: bool) -> None:
        pool = self._hosts.get(conn.key)
        if pool is None:
            conn.close()
            return
        if reusable and not self._closed:
            conn.idle_since = time.monotonic()
            pool.idle.append(conn)
            self._wake_one(pool)
            return
        conn.close()  # connection_lost will count it out of the pool

    def _lost(self, conn: _Connection) -> None:
        pool = self._hosts.get(conn.key)
        if pool is None:
            return
        pool.count -= 1
        if conn in pool.idle:
            pool.idle.remove(conn)
        self._wake_one(pool)

    @staticmethod
    def _wake_one(pool: _HostPool) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
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
