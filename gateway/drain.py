"""Zero-downtime stops: a gateway that gets SIGTERM drains before it exits (issue 13).

What a stopping gateway does, in order (``drain_delay`` 5 s and ``drain_timeout`` 20 s by default):

1. At once: ``/readyz`` answers 503 ``draining`` so load balancers (the Kubernetes Service, an
   ingress) stop sending new requests, and the reconciler hands its Lease back so another gateway
   leads within a Lease retry period instead of a full lease duration. The 2025 GET streams
   (``GET …/mcp``, which carry no response to an in-flight request) are ended cleanly now, so
   their clients reconnect through the load balancer and their connections are reused, with
   ``Connection: close``, while this gateway still serves.
2. For ``drain_delay`` seconds it keeps accepting and serving everything, as usual: the load
   balancers need that long to notice (readiness probe period x failure threshold). Every
   response says ``Connection: close``.
3. Then it stops accepting connections (uvicorn's shutdown), closes idle keep-alive connections
   and lets in-flight requests finish.
4. After ``drain_timeout`` more seconds, responses still streaming (SSE: legacy ``/sse``, long
   tool calls, GET streams opened during the delay) are ended cleanly: the chunked body gets its terminating chunk, so
   the client sees the stream end (not a reset) and reconnects, to another gateway.
5. Then the lifespan shutdown closes the components, as before.

SIGINT (Ctrl-C at a terminal) and a second SIGTERM skip the drain: uvicorn's own graceful stop.
The Pulumi Deployment's ``terminationGracePeriodSeconds`` must exceed ``drain_delay + drain_timeout``
(+ a few seconds for the shutdown itself).

``DrainingServer`` is the ``uvicorn.Server`` that does this; ``StreamTracker`` is the thin ASGI
wrapper that counts requests and can end open streams (it sees each response's content type).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("gateway.drain")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Drain:
    """Whether this gateway is stopping, and what to do when it starts to."""

    def __init__(self, delay: float, timeout: float) -> None:
        self.delay = delay
        self.timeout = timeout
        self.draining = False
        self._callbacks: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def on_begin(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback()`` as soon as the drain begins (e.g. hand back the reconciler Lease)."""
        self._callbacks.append(callback)

    def begin(self) -> None:
        """Report not-ready from now on and start the callbacks (idempotent; needs a running loop)."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: /readyz answers 503; new requests accepted for %.1f s more", self.delay)
        for callback in self._callbacks:
            task = asyncio.get_running_loop().create_task(self._run(callback))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run(callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except Exception:
            log.exception("drain callback failed")


@dataclasses.dataclass(eq=False)
class _Exchange:
    task: asyncio.Task[Any] | None
    started: bool = False
    finished: bool = False
    stream: bool = False
    closing: bool = False
    resumable: bool = False  # a 2025 GET stream (``GET …/mcp``): its client reconnects with GET at once


class StreamTracker:
    """ASGI wrapper: keeps track of streaming responses and ends them on request.

    While draining, every response also says ``Connection: close``: a client holding a keep-alive
    connection to this gateway opens its next one through the load balancer, to a ready gateway,
    instead of racing the close of an idle connection when the drain delay ends.
    """

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain
        self._streams: set[_Exchange] = set()

    @property
    def open_streams(self) -> int:
        """Streaming (SSE) responses being sent now."""
        return len(self._streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(
            asyncio.current_task(), resumable=scope.get("method") == "GET" and scope.get("path", "").endswith("/mcp")
        )
        streams, drain = self._streams, self.drain

        async def tracked(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                exchange.started = True
                for key, value in message.get("headers") or ():
                    if key.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                        exchange.stream = True
                        streams.add(exchange)
                if drain.draining:
                    message = {**message, "headers": [*(message.get("headers") or ()), (b"connection", b"close")]}
            elif kind == "http.response.body" and not message.get("more_body", False):
                exchange.finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not exchange.closing or exchange.task is None:
                raise
            exchange.task.uncancel()  # our own cancel, to end the stream: finish the response cleanly
            if exchange.started and not exchange.finished:
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            streams.discard(exchange)

    def close_streams(self, *, resumable_only: bool = False) -> int:
        """End streaming responses now (the client sees a complete, ended body); returns how many.

        ``resumable_only``: just the 2025 GET streams, which carry no response to an in-flight request.
        """
        count = 0
        for exchange in list(self._streams):
            if resumable_only and not exchange.resumable:
                continue
            if exchange.task is not None and not exchange.closing:
                exchange.closing = True
                exchange.task.cancel()
                count += 1
        return count


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose first SIGTERM/SIGINT drains (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self.tracker: StreamTracker | None = None
        # uvicorn waits this long for in-flight requests after it stops accepting; streams are
        # ended at drain_timeout, so give them a few seconds to flush their last chunk.
        config.timeout_graceful_shutdown = int(drain.timeout) + 5

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Wrap the app in a StreamTracker, then start as uvicorn does."""
        self.tracker = StreamTracker(self.config.loaded_app, self.drain)
        self.config.loaded_app = self.tracker
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM: drain. SIGINT (Ctrl-C), a second signal, or one before start-up finished: as uvicorn does."""
        if sig != signal.SIGTERM or self.drain.draining or not self.started:
            super().handle_exit(sig, frame)
            return
        self.drain.begin()
        self._end_resumable_streams()
        asyncio.get_running_loop().create_task(self._stop_after_delay())

    def _end_resumable_streams(self) -> None:
        """End the 2025 GET streams opened before the drain, while this gateway still serves.

        Their responses went out without ``Connection: close``, so their connections would go back
        to the clients' pools when the streams end. Ended now, the next request on such a connection
        is served (and told ``Connection: close``); ended at shutdown, it would race the close.
        The clients reconnect their GET streams through the load balancer, to a ready gateway.
        """
        if self.tracker is not None and (count := self.tracker.close_streams(resumable_only=True)):
            log.info("draining: ended %d open stream(s) so their clients reconnect elsewhere", count)

    async def _stop_after_delay(self) -> None:
        await asyncio.sleep(self.drain.delay)
        self._end_resumable_streams()  # any opened during the delay said Connection: close; end them too
        log.info("draining: no longer accepting; in-flight requests have %.1f s", self.drain.timeout)
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, with open streams ended cleanly after ``drain_timeout``."""
        closer = asyncio.get_running_loop().create_task(self._close_streams_later())
        try:
            await super().shutdown(sockets)
        finally:
            closer.cancel()

    async def _close_streams_later(self) -> None:
        await asyncio.sleep(self.drain.timeout)
        if self.tracker is not None:
            count = self.tracker.close_streams()
            if count:
                log.info("draining: ended %d open stream(s) so their clients reconnect elsewhere", count)
