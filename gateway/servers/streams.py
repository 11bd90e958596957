"""Streams of virtual servers (issue 16, 2026-12-01): resumable SSE answers and the standalone GET stream
of 2025-era client sessions, and 2026-07-28 ``subscriptions/listen``.

**SSE answers (2025-era sessions).** A request whose ``Accept`` takes ``text/event-stream`` is answered
with an SSE stream: a priming event (an id, empty data) with ``retry:``, then the members' notifications
as they arrive, then the answer, every event with an id ``<tag>-<stream>-<n>``: ``tag`` is random per
session on this gateway, ``stream`` numbers the session's streams, ``n`` counts the session's events
(unique within the session, SEP-1699). The events are kept in the session's ``EventLog``, bounded by
count and bytes (``MCPGW_SERVER_STREAM_BUFFER_EVENTS``, ``MCPGW_SERVER_STREAM_BUFFER_BYTES``; oldest
first), so ``GET`` + ``Last-Event-ID`` replays what followed that id *on that stream* and then
continues it until its answer. A closed connection is not a cancellation in this era (the client sends
``notifications/cancelled``): the call goes on and its answer waits in the log. When a member ends its
own answer stream early to be polled (SEP-1699; member.py ``MemberClient._poll``), the client's stream
ends the same way: the client resumes it here while the member call goes on.

Only the gateway that holds a session's log can resume its streams: a context rebuilt on another
gateway (sealed sessions, gateway/servers/mcp.py) has none, and a resume there is refused with a
message saying so. A ``Last-Event-ID`` that is not one of this session's buffered events (another
session's, another user's: the session id is checked first, garbage, or evicted) is refused (400);
no other session's events can be named, since each log is the session's own.

**Standalone GET stream (2025-era sessions).** ``GET`` without ``Last-Event-ID``: at most one per
session (409 for a second, as the SDK's server). While it is open, the gateway watches each member the
caller may use — the member's own ``subscriptions/listen`` where it speaks 2026-07-28 (the SDK's
``MCPServer`` publishes its change events only there) and a GET stream on the session's member session
where the member is called in the 2025 era (no second member session), through the data plane like
every member call — and relays ``list_changed`` and ``resources/updated`` (URIs namespaced as in
listings). The watches end with the stream (a change while no stream is open is not replayed; the
client lists again). Standalone streams count against the listen cap (each holds one stream per member).

**subscriptions/listen (2026-07-28).** The same watches, opened per listen request with the client's
filter (``notifications``), each member's acknowledgement awaited (at most the member timeout) before
the client's ``notifications/subscriptions/acknowledged``; every notification is tagged with the
listen's id and filtered; the member streams end when the client leaves. A 2025-era member is watched
on a session of the listen's own, closed with it. Listens per user are bounded
(``MCPGW_SERVER_LISTENS_PER_USER``). Every ``list_changed`` also drops the member's cached listings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.servers.member import Asgi, MemberClient, MemberError, Relay, _sse_messages, member_scope, sse_event

log = logging.getLogger("gateway.servers")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
#: Filter flag of ``subscriptions/listen`` by the notification it lets through.
LIST_CHANGED = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
UPDATED = "notifications/resources/updated"
#: Seconds between keep-alive comments on an idle stream (as the data plane's default).
KEEPALIVE = 15.0
#: The whole filter a standalone GET stream asks its 2026-07-28 members for.
EVERYTHING = {flag: True for flag in LIST_CHANGED.values()}


class ResumeRefused(Exception):
    """A ``Last-Event-ID`` this gateway cannot resume; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EventStream:
    """One SSE stream of a session: its buffered events (sequence, framed bytes), whether its answer was
    written, and which reader (a POST answer or a GET resume) sends it now."""

    __slots__ = ("changed", "dropped", "events", "finished", "number", "reader")

    def __init__(self, number: int) -> None:
        self.number = number
        self.events: deque[tuple[int, bytes]] = deque()
        self.finished = False
        self.dropped = 0  # the highest sequence evicted from this stream
        self.reader: object | None = None
        self.changed = asyncio.Event()

    def wake(self) -> None:
        """Wake the readers waiting for an event (each waits on the event it read, replaced here)."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def after(self, sequence: int) -> list[tuple[int, bytes]]:
        """The buffered events after ``sequence``."""
        return [(n, frame) for n, frame in self.events if n > sequence]


class EventLog:
    """The buffered SSE events of one 2025-era client session on this gateway, bounded by count and bytes."""

    def __init__(self, max_events: int, max_bytes: int, retry_ms: int) -> None:
        self.tag = secrets.token_hex(6)
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.retry_ms = retry_ms
        self._streams: dict[int, EventStream] = {}
        self._order: deque[tuple[EventStream, int]] = deque()
        self._bytes = 0
        self._sequence = itertools.count(1)
        self._numbers = itertools.count(1)
        self.standalone: EventStream | None = None
        self.closed = False

    def open(self) -> EventStream:
        """A new stream of this session."""
        stream = EventStream(next(self._numbers))
        self._streams[stream.number] = stream
        return stream

    def add(self, stream: EventStream, message: Any | None) -> bytes:
        """Buffer one event (None: the priming event, with ``retry:``) and return it framed."""
        sequence = next(self._sequence)
        head = f"id: {self.tag}-{stream.number}-{sequence}\n".encode()
        priming = f"retry: {self.retry_ms}\ndata:\n\n".encode()
        frame = head + (priming if message is None else sse_event(message))
        stream.events.append((sequence, frame))
        self._order.append((stream, sequence))
        self._bytes += len(frame)
        while self._order and (len(self._order) > self._max_events or self._bytes > self._max_bytes):
            old, old_sequence = self._order.popleft()
            _, old_frame = old.events.popleft()
            self._bytes -= len(old_frame)
            old.dropped = old_sequence
            if old.finished and not old.events and old is not self.standalone:
                self._streams.pop(old.number, None)
        stream.wake()
        return frame

    def finish(self, stream: EventStream) -> None:
        """The stream's answer was buffered: readers end after sending it."""
        stream.finished = True
        stream.wake()
        if not stream.events and stream is not self.standalone:
            self._streams.pop(stream.number, None)

    def find(self, event_id: str) -> tuple[EventStream, int]:
        """The stream and sequence named by a ``Last-Event-ID``; ResumeRefused when it is not this
        session's (or no longer buffered)."""
        tag, _, rest = event_id.strip().partition("-")
        number, _, sequence = rest.partition("-")
        if not (tag and number.isdigit() and sequence.isdigit()) or len(event_id) > 64:
            raise ResumeRefused("Last-Event-ID is not an event id of this server")
        if tag != self.tag:
            raise ResumeRefused(
                "Last-Event-ID names no stream of this session on this gateway (streams are resumed only on the "
                "gateway that served them, within the same session)"
            )
        stream = self._streams.get(int(number))
        if stream is None or int(sequence) < stream.dropped:
            raise ResumeRefused("the events after this Last-Event-ID are no longer buffered; send the request again")
        return stream, int(sequence)

    def close(self) -> None:
        """The session ended: every stream ends (its readers stop)."""
        self.closed = True
        for stream in list(self._streams.values()):
            stream.finished = True
            stream.wake()
        if self.standalone is not None:
            self.standalone.finished = True
            self.standalone.wake()


class StreamRelay(Relay):
    """The relay of one SSE answer of a 2025-era session: each notification is buffered in the session's
    log and, while the POST that asked is the stream's reader, sent to it; ``paused`` ends the POST's
    response (the client resumes with GET), ``finish`` buffers the answer and ends the stream."""

    def __init__(self, events: EventLog, stream: EventStream, send: Send) -> None:
        super().__init__(send)
        self._post = send
        self.events = events
        self.stream = stream
        stream.reader = self

    async def begin(self) -> None:
        """Response headers and the priming event."""
        self.started = True
        await self._post({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
        frame = self.events.add(self.stream, None)
        await self._post({"type": "http.response.body", "body": frame, "more_body": True})

    async def note(self, message: Any) -> None:
        frame = self.events.add(self.stream, message)
        if self.stream.reader is self:
            await self._post({"type": "http.response.body", "body": frame, "more_body": True})

    async def finish(self, answer: Any) -> None:
        frame = self.events.add(self.stream, answer)
        self.events.finish(self.stream)
        if self.stream.reader is self:
            self.stream.reader = None
            await self._post({"type": "http.response.body", "body": frame, "more_body": False})

    async def paused(self) -> None:
        await self.end()

    async def end(self) -> None:
        """End the POST's response if it still reads the stream (the events stay buffered)."""
        if self.stream.reader is self:
            self.stream.reader = None
            await self._post({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass(frozen=True)
class WatchTarget:
    """One member to watch: its name, how its URIs are shown to the client, the client that calls it,
    and whether that client is the watch's own (a session opened for it and closed with it)."""

    adapter: str
    uri_out: Callable[[str], str]
    uri_in: Callable[[str], str | None]
    client: MemberClient
    own: bool = False
    era: str | None = None
    """Watch only if the member is called in this era (None: either)."""


class Streams:
    """The streams of every 2025-era session on this gateway and the listens of every caller."""

    def __init__(
        self,
        *,
        app: Callable[[], Asgi],
        invalidate: Callable[[str], None],
        member_timeout: float,
        max_events: int = 256,
        max_bytes: int = 1024 * 1024,
        retry_ms: int = 1000,
        listens_per_user: int = 8,
    ) -> None:
        self._app = app
        self._invalidate = invalidate
        self._timeout = member_timeout
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._retry_ms = retry_ms
        self._listens_per_user = listens_per_user
        self._logs: dict[str, EventLog] = {}
        self.listens: Counter[str] = Counter()
        self.watches: set[asyncio.Task[None]] = set()
        """Member watch tasks running now (tests count them: none may outlive its stream)."""

    def log_of(self, key: str) -> EventLog:
        """The session's event log on this gateway (made on first use)."""
        found = self._logs.get(key)
        if found is None:
            found = self._logs[key] = EventLog(self._max_events, self._max_bytes, self._retry_ms)
        return found

    def drop(self, key: str) -> None:
        """The session ended (or was swept) on this gateway: its streams end, its buffer goes."""
        found = self._logs.pop(key, None)
        if found is not None:
            found.close()

    # --- SSE answers ----------------------------------------------------------------------------

    async def answer(self, key: str, work: Callable[[Relay], Awaitable[dict[str, Any] | None]], send: Send) -> None:
        """Answer one request of session ``key`` on a resumable SSE stream (see the module docstring)."""
        events = self.log_of(key)
        relay = StreamRelay(events, events.open(), send)
        await relay.begin()
        try:
            answer = await work(relay)
        except BaseException:
            events.finish(relay.stream)
            await relay.end()
            raise
        if answer is None:
            events.finish(relay.stream)
            await relay.end()
            return
        await relay.finish(answer)

    async def resume(self, key: str, last_event_id: str, receive: Receive, send: Send) -> None:
        """``GET`` + ``Last-Event-ID``: the events of that stream after that id, then the rest of it live
        until its answer (or the session's end). Raises ResumeRefused before anything is sent."""
        events = self._logs.get(key)
        if events is None:
            raise ResumeRefused(
                "this gateway holds no stream of this session: resuming a stream needs the gateway that served "
                "it (send the request again)"
            )
        stream, after = events.find(last_event_id)
        await self._pump(stream, after, receive, send, priming=None)

    async def _pump(
        self, stream: EventStream, after: int, receive: Receive, send: Send, *, priming: bytes | None
    ) -> None:
        """Send a stream from ``after`` on as its events come, until it is finished, another reader takes
        it over, or the client leaves (keep-alive comments while idle)."""
        token = object()
        previous = stream.reader
        stream.reader = token
        if isinstance(previous, StreamRelay):
            await previous_end(previous)
        await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
        if priming is not None:
            await send({"type": "http.response.body", "body": priming, "more_body": True})
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while stream.reader is token:
                if stream.dropped > after:
                    break  # evicted while this reader was behind: end; the client sends its request again
                pending = stream.after(after)
                for sequence, frame in pending:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    after = sequence
                if stream.finished:
                    break
                changed = asyncio.ensure_future(stream.changed.wait())
                done, _ = await asyncio.wait({changed, gone}, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
                if changed not in done:
                    changed.cancel()
                if gone in done:
                    break
                if not done:
                    await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
        finally:
            gone.cancel()
            if stream.reader is token:
                stream.reader = None
            with contextlib.suppress(Exception):  # the client may be gone
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    # --- standalone GET stream ------------------------------------------------------------------

    def standalone_busy(self, key: str) -> bool:
        """Whether the session's standalone stream is already open (a second one is refused, 409)."""
        events = self._logs.get(key)
        return events is not None and events.standalone is not None and events.standalone.reader is not None

    def over_cap(self, user_id: str) -> str | None:
        """Why the user may open no more change streams (listens and standalone GET streams), else None."""
        if self._listens_per_user and self.listens[user_id] >= self._listens_per_user:
            return (
                f"listen limit reached: user {user_id!r} may hold at most {self._listens_per_user} open "
                "subscriptions/listen or GET streams on virtual servers on this gateway (MCPGW_SERVER_LISTENS_PER_USER)"
            )
        return None

    async def standalone(
        self,
        key: str,
        user_id: str,
        scope: Mapping[str, Any],
        targets: Sequence[WatchTarget],
        receive: Receive,
        send: Send,
    ) -> None:
        """The session's standalone GET stream: the members' change notifications while it is open
        (counted with the user's listens: each holds a stream to every member)."""
        self.listens[user_id] += 1
        try:
            await self._standalone(key, scope, targets, receive, send)
        finally:
            self._release(user_id)

    def _release(self, user_id: str) -> None:
        self.listens[user_id] -= 1
        if self.listens[user_id] <= 0:
            del self.listens[user_id]

    async def _standalone(
        self, key: str, scope: Mapping[str, Any], targets: Sequence[WatchTarget], receive: Receive, send: Send
    ) -> None:
        events = self.log_of(key)
        if events.standalone is None:
            events.standalone = events.open()
        stream = events.standalone
        stream.finished = False

        async def deliver(message: dict[str, Any]) -> None:
            events.add(stream, message)

        watches = [self._watch(scope, target, EVERYTHING, deliver) for target in targets]
        priming = events.add(stream, None)
        after = stream.events[-1][0] if stream.events else 0
        try:
            await self._pump(stream, after, receive, send, priming=priming)
        finally:
            await _stop(watches)
            await asyncio.gather(*(t.client.close(scope) for t in targets if t.own), return_exceptions=True)

    # --- subscriptions/listen -------------------------------------------------------------------

    async def listen(
        self,
        scope: Mapping[str, Any],
        user_id: str,
        ident: Any,
        params: Mapping[str, Any],
        targets: Sequence[WatchTarget],
        receive: Receive,
        send: Send,
    ) -> dict[str, Any] | None:
        """Serve one 2026-07-28 ``subscriptions/listen``; a JSON-RPC error to send instead (the cap)."""
        text = self.over_cap(user_id)
        if text is not None:
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": -32008, "message": text}}
        wanted = params.get("notifications") if isinstance(params.get("notifications"), dict) else {}
        assert isinstance(wanted, dict)
        honored: dict[str, Any] = {flag: True for flag in LIST_CHANGED.values() if wanted.get(flag) is True}
        uris = wanted.get("resourceSubscriptions")
        if isinstance(uris, list) and (uris := [u for u in uris if isinstance(u, str)]):
            honored["resourceSubscriptions"] = uris
        watched_uris = frozenset(honored.get("resourceSubscriptions", ()))
        meta = {SUBSCRIPTION_ID: ident}
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1024)

        async def deliver(message: dict[str, Any]) -> None:
            method = message["method"]
            flag = LIST_CHANGED.get(method)
            if flag is not None and not honored.get(flag):
                return
            if method == UPDATED and (message.get("params") or {}).get("uri") not in watched_uris:
                return
            params_out = dict(message.get("params") or {})
            params_out["_meta"] = meta
            with contextlib.suppress(asyncio.QueueFull):  # a client that stops reading loses changes
                queue.put_nowait({"jsonrpc": "2.0", "method": method, "params": params_out})

        self.listens[user_id] += 1
        watches: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        try:
            for target in targets:
                member_filter = {k: v for k, v in honored.items() if k != "resourceSubscriptions"}
                inner = [u for u in (target.uri_in(uri) for uri in watched_uris) if u is not None]
                if inner:
                    member_filter["resourceSubscriptions"] = inner
                if member_filter:
                    watches.append(self._watch(scope, target, member_filter, deliver))
            ready = [asyncio.ensure_future(event.wait()) for _, event in watches]
            if ready:
                await asyncio.wait(ready, timeout=self._timeout)
                for waiter in ready:
                    waiter.cancel()
            await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
            ack = {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {"notifications": honored, "_meta": meta},
            }
            await send({"type": "http.response.body", "body": sse_event(ack), "more_body": True})
            await drain_queue(queue, receive, send, sse_event)
        finally:
            self._release(user_id)
            await _stop(watches)
            await asyncio.gather(*(t.client.close(scope) for t in targets if t.own), return_exceptions=True)
        with contextlib.suppress(Exception):  # the client is gone
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None

    # --- member watches -------------------------------------------------------------------------

    def _watch(
        self,
        scope: Mapping[str, Any],
        target: WatchTarget,
        notifications: dict[str, Any],
        deliver: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> tuple[asyncio.Task[None], asyncio.Event]:
        """Start watching one member; (its task, set once the member's stream is open)."""
        ready = asyncio.Event()

        async def on_message(message: Any) -> None:
            if not isinstance(message, dict) or not isinstance(message.get("method"), str) or "id" in message:
                return
            method = message["method"]
            if method == "notifications/subscriptions/acknowledged":
                ready.set()
                return
            if method in LIST_CHANGED:
                self._invalidate(target.adapter)
                await deliver({"jsonrpc": "2.0", "method": method, "params": {}})
            elif method == UPDATED:
                uri = (message.get("params") or {}).get("uri")
                if isinstance(uri, str):
                    await deliver({"jsonrpc": "2.0", "method": method, "params": {"uri": target.uri_out(uri)}})

        async def run() -> None:
            try:
                opened = await target.client.change_stream(scope, notifications, next(_watch_ids), target.era)
                if opened is None:
                    return
                method, headers, body = opened
                if method == "GET":
                    # A 2025-era member: resource subscriptions are made on the watch's own session.
                    for uri in notifications.get("resourceSubscriptions", ()) if target.own else ():
                        await target.client.request(scope, "resources/subscribe", {"uri": uri})
                    ready.set()  # a GET stream is open once the member answers; the ack is listen's
                status = await asgi_stream(
                    self._app(), scope, target.client.path, headers, body, method=method, on_message=on_message
                )
                if status != 200:
                    log.info("virtual server: member %s refused its change stream (HTTP %s)", target.adapter, status)
            except MemberError as exc:
                log.info("virtual server: member %s not watched: %s", target.adapter, exc.detail)
            finally:
                ready.set()

        task = asyncio.ensure_future(run())
        self.watches.add(task)
        task.add_done_callback(self.watches.discard)
        return task, ready


_watch_ids = itertools.count(1)


async def previous_end(relay: StreamRelay) -> None:
    """A GET resume took the stream over from the POST that asked: end that POST's response."""
    with contextlib.suppress(Exception):
        await relay._post({"type": "http.response.body", "body": b"", "more_body": False})


async def _stop(watches: Sequence[tuple[asyncio.Task[None], asyncio.Event]]) -> None:
    for task, _ in watches:
        task.cancel()
    if watches:
        await asyncio.gather(*(task for task, _ in watches), return_exceptions=True)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def drain_queue(
    queue: asyncio.Queue[Any], receive: Receive, send: Send, frame: Callable[[Any], bytes | None]
) -> None:
    """Send each item of ``queue`` to an open SSE response as ``frame`` makes it (None: the stream ends),
    with keep-alive comments while idle, until the client leaves. The response stays open."""
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, gone}, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                getter.cancel()
                return
            if not getter.done():
                getter.cancel()
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                continue
            body = frame(getter.result())
            if body is None:
                return
            await send({"type": "http.response.body", "body": body, "more_body": True})
    finally:
        gone.cancel()


async def asgi_stream(
    app: Asgi,
    client_scope: Mapping[str, Any],
    path: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes | None,
    *,
    method: str,
    on_message: Callable[[Any], Awaitable[None]],
) -> int:
    """A long in-process request to the data plane (a member's change stream): each SSE message goes to
    ``on_message`` as its event completes; returns the HTTP status when the stream ends. Cancel the
    caller to end it (the data plane closes the upstream stream). Nothing of the stream is kept beyond
    the event being parsed (member.py ``asgi_post`` keeps the whole answer)."""
    scope = member_scope(client_scope, path, headers, body, method)
    sent_body = False
    status = 0
    sse = False
    pending = bytearray()
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body or b"", "more_body": False}
        await never.wait()  # until cancelled
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, sse
        if message["type"] == "http.response.start":
            status = message["status"]
            sse = any(
                k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in message.get("headers", [])
            )
            return
        if message["type"] != "http.response.body" or not sse or status != 200:
            return
        pending.extend(message.get("body", b""))
        pending[:] = pending.replace(b"\r\n", b"\n")
        end = pending.rfind(b"\n\n")
        if end < 0:
            if len(pending) > 1024 * 1024:
                raise ValueError(f"a member's change stream sent an event over 1 MiB on {path}")
            return
        complete = bytes(pending[: end + 2])
        del pending[: end + 2]
        for parsed in _sse_messages(complete):
            await on_message(parsed)

    await app(scope, receive, send)
    return status
