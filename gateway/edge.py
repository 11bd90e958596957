"""Limits at the edge: the HTTP/1.1 server protocol every client connection is served by.

Why a subclass of uvicorn's ``HttpToolsProtocol`` (decided 2026-11-30, issue 12): the gateway is
served by uvicorn with the httptools (llhttp) protocol, which enforces no limit on the request
head and no read timeout. On main a client sending a 256 MiB header was read for 63 s while
httptools concatenated the growing value (+600 MB RSS, every other request on the loop stalled
for seconds), and 2,000 connections trickling a head stayed open indefinitely. uvicorn's h11
protocol caps the head (``h11_max_incomplete_event_size``) but is several times slower per
request, and has no read timeouts either. This class keeps llhttp and adds, per connection:

* **Head size and field count** (``max_header_bytes``, ``max_header_fields``): bytes are fed to
  the parser at most up to the room left in the head, so an oversized head is refused after
  ``max_header_bytes`` bytes whatever its shape (one huge value, a huge request target, many
  small fields); the field count is checked when the head is complete (the byte cap bounds the
  work until then). A request pipelined in the same read as the end of the previous one has its
  head added up from what the parser saw instead. The chunk framing plus trailer fields of a
  request body may not exceed its payload by more than ``max_header_bytes`` (otherwise a huge
  trailer would be the same attack as a huge header). Over a limit → 431.
* **Header timeout** (``header_timeout``): from the first byte of a request head (or from the
  accept, for a new connection) the whole head must arrive within it. A connection that sent
  part of a head gets 408; a new connection that sent nothing is closed without an answer.
* **Body timeout** (``body_timeout``): while a request body is being received, the client may
  not stall longer than this between two reads. Time during which the gateway itself paused
  reading (the application has not consumed the body yet, a pipelined request waits its turn)
  does not count. 408 if no response was started, else the connection is just closed. It is
  about the client's *request* body: a response, however long (an SSE stream lives for hours),
  is never cut by it.
* **Connection cap** (``max_connections``): a connection accepted beyond it is answered 503
  with ``Retry-After: 1`` and closed at once, before anything is read. uvicorn's own
  ``limit_concurrency`` was not used: it counts connections *and* tasks, only when a request
  head is complete, answers 503 and keeps the connection open — so connections that never
  finish a head (slowloris) are never refused, and it is the descriptors and the memory held
  per connection that run out first.

Every refusal is a short ``application/problem+json`` naming the setting at fault, sent with
``Connection: close``; then the write side is shut and what the client still sends is read and
dropped for at most ``LINGER_SECONDS`` / ``LINGER_BYTES``, so the client reads the answer instead
of a connection reset. A refusal never interleaves with a response in flight: if the client
pipelined the offending request behind one still being answered, the refusal follows that
response (uvicorn's own 400 for a malformed pipelined request was written at once, *before* the
previous answer — a response desync, fixed here). Malformed framing (Content-Length together with
Transfer-Encoding, two Content-Length values, negative or garbage lengths, CR/LF/NUL in names,
values or the target, bare LF) is refused by llhttp's strict mode → 400.

Cost, measured 2026-11-30 with ``scripts/bench_edge.py --rounds 6 --seconds 3`` on the 2-core
machine while other work ran (load average 10-12: read as indicative): in process, a 1 KiB
keep-alive POST costs 21.7 µs of CPU through the plain httptools protocol and 23.0 µs through
this one (+1.3 µs; uvicorn's h11 protocol: 102 µs). Over loopback with wrk, CPU per request
+1.8 µs (x1.09) for a bare ASGI app and x1.00 for the gateway's own ``GET /healthz`` (61 µs per
request); the throughput ratios (0.80 and 1.07) moved with the machine's load more than with
the protocol. Against the 120-230 µs the gateway spends on a proxied call, about 1%.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("gateway.edge")

LINGER_SECONDS = 1.0
"""After a refusal, how long what the client still sends is read and dropped before closing."""
LINGER_BYTES = 1024 * 1024
"""After a refusal, how many bytes are read and dropped at most before closing."""
FD_RESERVE = 256
"""Descriptors kept for everything but client connections when ``max_connections`` is automatic."""
LOG_EVERY = 10.0
"""Seconds between two log lines about refusals of one kind (the rest are counted in the next)."""

# Where a connection is in reading its current request.
_WAIT = 0  # between requests: nothing of the next one received yet
_HEAD = 1  # some bytes of a request head received, head not complete
_BODY = 2  # head complete, body not complete
_REFUSED = 3  # a refusal was decided; nothing more is parsed
_UPGRADED = 4  # handed to another protocol (WebSocket)


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """The limits one gateway process applies to its client connections.

    The defaults are the settings' defaults, except ``max_connections`` (automatic there).
    """

    max_header_bytes: int = 64 * 1024
    max_header_fields: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        """The limits the settings ask for; ``max_connections`` 0 is derived from the fd limit."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_fields=settings.max_header_fields,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections or automatic_max_connections(),
        )


def automatic_max_connections() -> int:
    """Half the open-file limit less a reserve: every proxied stream also holds one to its replica."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, (soft - FD_RESERVE) // 2)


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """``EdgeProtocol`` bound to ``limits``: the class to pass as ``http=`` to ``uvicorn.Config``."""

    class BoundEdgeProtocol(EdgeProtocol):
        _limits = limits
        _max_head = limits.max_header_bytes
        _max_fields = limits.max_header_fields
        _header_timeout = limits.header_timeout
        _body_timeout = limits.body_timeout
        _max_connections = limits.max_connections
        _refusals = _RefusalLog()

    return BoundEdgeProtocol


class _LimitExceeded(Exception):
    """Raised from a parser callback to stop parsing an oversized head."""

    def __init__(self, detail: str, setting: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.setting = setting


class _RefusalLog:
    """At most one log line per kind of refusal every ``LOG_EVERY`` seconds, with a count."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -LOG_EVERY) < LOG_EVERY:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        suffix = f" ({more} more since the last line)" if more else ""
        log.warning(message + suffix, *args)


_HEADER_BYTES = "MCPGW_MAX_HEADER_BYTES"
_HEADER_FIELDS = "MCPGW_MAX_HEADER_FIELDS"


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits, read timeouts and a connection cap.

    Use ``edge_protocol(limits)`` to get a class bound to a set of limits.
    """

    _limits: ClassVar[EdgeLimits] = EdgeLimits()
    _max_head: ClassVar[int] = _limits.max_header_bytes
    _max_fields: ClassVar[int] = _limits.max_header_fields
    _header_timeout: ClassVar[float] = _limits.header_timeout
    _body_timeout: ClassVar[float] = _limits.body_timeout
    _max_connections: ClassVar[int] = _limits.max_connections
    _refusals: ClassVar[_RefusalLog] = _RefusalLog()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _WAIT
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._head_started = 0.0
        self._head_bytes = 0  # bytes fed while in the head of the current request
        self._uncounted = False  # the head began in a read that ended another request: not all counted
        self._was_paused = False  # the body timer saw reading paused by the gateway
        self._body_fed = 0  # bytes fed while in the body: payload, chunk framing, trailers
        self._body_payload = 0
        self._completed = 0  # requests fully received on this connection
        self._pending: bytes | None = None  # a refusal waiting for the response in flight
        self._dropped = 0

    # --- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._last_read = self.loop.time()
        if len(self.connections) > self._max_connections:
            # Not counted as served: the cap is about the connections the gateway works for.
            self.connections.discard(self)
            self._refusals.note(
                "connections", "refused a connection: %d open (MCPGW_MAX_CONNECTIONS)", len(self.connections)
            )
            self._refuse(
                503,
                "Service Unavailable",
                f"the gateway serves at most {self._max_connections} connections at once; retry shortly",
                "MCPGW_MAX_CONNECTIONS",
                extra=b"retry-after: 1\r\n",
            )
            return
        self._timer = self.loop.call_later(self._header_timeout, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        now = self._last_read = self.loop.time()
        while data:
            phase = self._phase
            if phase == _BODY:
                piece, data = data, b""
            elif phase in (_HEAD, _WAIT):
                if phase == _WAIT:  # the first bytes of the next request (or blank lines before it)
                    phase = self._phase = _HEAD
                    self._head_started = now
                room = self._max_head - self._head_bytes
                if room <= 0:
                    self._refuse_head(f"the request line and headers are larger than {self._max_head} bytes")
                    break
                if len(data) <= room:
                    piece, data = data, b""
                else:
                    piece, data = data[:room], data[room:]
            else:
                break
            completed = self._completed
            if not self._feed(piece):
                return
            if self._completed != completed:
                # The piece ended a request. If the next one began in it, its first bytes are not
                # counted here: on_headers_complete adds up its head instead.
                if self._phase == _WAIT:
                    self._uncounted = False
                continue
            if self._phase == _HEAD:
                self._head_bytes += len(piece)
            elif phase == _BODY:
                self._body_fed += len(piece)
                if self._body_fed - self._body_payload > self._max_head:
                    self._refuse_head(
                        f"the chunk framing and trailer fields of the body are larger than {self._max_head} bytes"
                    )
                    break
        if self._phase == _REFUSED:
            self._drop(len(data))
        elif self._timer is None and self._phase != _WAIT:
            delay = self._body_timeout if self._phase == _BODY else self._head_started + self._header_timeout - now
            self._timer = self.loop.call_later(delay, self._on_timer)

    def _feed(self, piece: bytes) -> bool:
        """Feed the parser; False when parsing stopped (refused, or upgraded)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._phase = _UPGRADED
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _LimitExceeded):
                self._refuse_head(cause.detail, cause.setting)
            else:
                self._refusals.note("malformed", "refused a malformed request: %s", exc)
                self._refuse(400, "Bad Request", f"malformed HTTP/1.1 request: {exc}", None)
            return False
        return True

    # --- parser callbacks (per request: the base class is called directly, not through super()) --

    def on_message_begin(self) -> None:
        if self._phase != _HEAD:  # a request pipelined in the read that ended the previous one
            self._phase = _HEAD
            self._head_started = self._last_read
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        headers = self.headers
        if len(headers) > self._max_fields:
            raise _LimitExceeded(f"the request has more than {self._max_fields} header fields", _HEADER_FIELDS)
        if self._uncounted:
            # Pipelined behind a request that ended in the same read: add up what the parser saw.
            self._uncounted = False
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
            if size > self._max_head:
                raise _LimitExceeded(
                    f"the request line and headers are larger than {self._max_head} bytes", _HEADER_BYTES
                )
        self._phase = _BODY
        self._body_fed = 0
        self._body_payload = 0
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        self._body_payload += len(body)
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._phase = _WAIT
        self._completed += 1
        self._head_bytes = 0
        self._uncounted = True  # until data_received says the read ended here
        HttpToolsProtocol.on_message_complete(self)

    # --- responses -------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        if self._pending is not None and not self.pipeline:
            self.server_state.total_requests += 1
            payload, self._pending = self._pending, None
            if not self.transport.is_closing():
                self._send_and_linger(payload)
            return
        HttpToolsProtocol.on_response_complete(self)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", msg, None)

    # --- timeouts --------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        phase = self._phase
        if self.transport.is_closing() or phase in (_REFUSED, _UPGRADED):
            return
        now = self.loop.time()
        if phase == _WAIT:
            if self.cycle is None:  # a new connection that never sent a byte
                self.transport.close()
            return  # between requests uvicorn's keep-alive timeout applies
        cycle = self.cycle
        gateway_waits = self.flow.read_paused or (
            phase == _BODY and cycle is not None and cycle.waiting_for_100_continue
        )
        if gateway_waits or self._was_paused:
            # The gateway paused reading (the application has not consumed the body yet, or a
            # pipelined request waits its turn), or has not yet asked for the body the client
            # holds back for "Expect: 100-continue": not the client's delay. The clock restarts
            # when the gateway reads again.
            self._was_paused = gateway_waits
            self._head_started = self._last_read = now
            self._timer = self.loop.call_later(min(self._header_timeout, self._body_timeout), self._on_timer)
            return
        if phase == _HEAD:
            left = self._head_started + self._header_timeout - now
            if left > 0:
                self._timer = self.loop.call_later(left, self._on_timer)
                return
            self._refusals.note("header_timeout", "closed a connection: request head not complete in time")
            detail = f"the request head did not arrive within {self._header_timeout:g} s"
            self._refuse(408, "Request Timeout", detail, "MCPGW_HEADER_TIMEOUT")
            return
        left = self._last_read + self._body_timeout - now
        if left > 0:
            self._timer = self.loop.call_later(left, self._on_timer)
            return
        self._refusals.note("body_timeout", "closed a connection: request body stalled")
        detail = f"the request body stalled for more than {self._body_timeout:g} s"
        self._refuse(408, "Request Timeout", detail, "MCPGW_BODY_TIMEOUT")

    # --- refusals --------------------------------------------------------------------------------

    def _refuse_head(self, detail: str, setting: str = _HEADER_BYTES) -> None:
        self._refusals.note("header_size", "refused a request: %s", detail)
        self._refuse(431, "Request Header Fields Too Large", detail, setting)

    def _refuse(self, status: int, title: str, detail: str, setting: str | None, extra: bytes = b"") -> None:
        """Answer ``status`` and close; after the response in flight for an earlier request, if any."""
        receiving_body = self._phase == _BODY
        self._phase = _REFUSED
        cycle = self.cycle
        if receiving_body and cycle is not None:
            # The refused request is ``self.cycle``, whose body was being received.
            if cycle.response_started or self.pipeline:
                # Its answer has begun (or is done), or it waits behind another response: no status
                # can be sent for it any more, only the connection closed.
                self.transport.close()
                return
            cycle.disconnected = True  # its application sees http.disconnect and sends nothing
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # The refused request follows one whose response is (or will be) in flight.
            self._pending = self._problem(status, title, detail, setting, extra)
            self.flow.pause_reading()
            return
        self._send_and_linger(self._problem(status, title, detail, setting, extra))

    def _problem(self, status: int, title: str, detail: str, setting: str | None, extra: bytes) -> bytes:
        problem: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        if setting:
            problem["limit"] = setting
        body = json.dumps(problem).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n",
        ]
        return b"".join(head) + body

    def _send_and_linger(self, payload: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(payload)
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    def _drop(self, size: int) -> None:
        """Bytes read and dropped after a refusal; close when the client keeps sending."""
        self._dropped += size
        if self._dropped > LINGER_BYTES and not self.transport.is_closing():
            self.transport.close()
