"""Calls from a virtual server to one member adapter, through the gateway's own data plane.

Decision (2026-11-30): a member call is an **in-process ASGI request** to the gateway's own
``/adapters/{member}/mcp`` route, carrying the caller's own credential headers (``Authorization``,
or the dev headers). The data plane authenticates the caller again, checks read access and runs its
whole pipeline (tool policy, rate limits, audit, replica choice, sessions) as for a direct call, and
strips the credential before anything goes upstream (gateway/proxy/headers.py STRIPPED_UPSTREAM), so
the client's token never leaves the process. Compared with an HTTP call on loopback with a
gateway-internal identity assertion, there is no second TCP hop and no new trust channel (an
assertion header would be one more secret that, leaked, lets anyone act as anyone); the cost is one
more authentication per member call (a cached JWT check or a dict lookup in dev mode).

A member speaks 2026-07-28 (one stateless POST per call) or an older era (a session the gateway
opens lazily with ``initialize`` and closes with the client's session). Which one is found out once
per member with ``server/discover`` and remembered until the member fails.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

import msgspec

from gateway.servers.backchannel import Backchannel

log = logging.getLogger("gateway.servers")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
#: The gateway's own ASGI app (scope, receive, send).
Asgi = Callable[[Any, Any, Any], Awaitable[None]]

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
#: Request headers of the client's that a member call carries: credentials (the data plane checks and
#: strips them) and trace context. Nothing else of the client's reaches the member.
CARRIED = frozenset({b"authorization", b"x-dev-user-id", b"x-dev-roles", b"traceparent", b"tracestate", b"user-agent"})
_ids = itertools.count(1)
#: Most reconnections of one polled member call (SEP-1699), and the longest wait honoured between two.
MAX_POLLS = 20
MAX_RETRY_MS = 5000


class MemberError(Exception):
    """A member could not answer: down, slow, refused, or not speaking MCP. ``message`` names it."""

    def __init__(self, adapter: str, detail: str, *, status: int | None = None, error: Any = None) -> None:
        super().__init__(f"member {adapter!r}: {detail}")
        self.adapter = adapter
        self.detail = detail
        self.status = status
        self.error = error  # the member's own JSON-RPC error object, when it sent one


class Reply(msgspec.Struct):
    """One member answer: HTTP status, headers (lower-case), and the JSON-RPC messages it carried.

    ``relayed``: how many of its notifications ``on_note`` already got while the answer streamed.
    """

    status: int
    headers: dict[str, str]
    messages: list[Any]
    relayed: int = 0
    last_event_id: str | None = None
    """The id of the last SSE event (when the stream carried a ``retry:`` field, SEP-1699 polling)."""
    retry: int | None = None
    """Milliseconds the member asked a client to wait before resuming its stream (``retry:``)."""


class Relay(list[Any]):
    """The notifications of one client request, as ``notes``: with a ``send``, each one goes to the
    client as it arrives (an SSE event), before the answer; without, they are only collected.

    Live since 2026-11-30 (issue 16): before, a member's progress notifications reached the client
    after the member's answer, which made them useless for a long tool call.
    """

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        super().__init__()
        self._send = send
        self.started = False

    @property
    def live(self) -> bool:
        """Whether notifications go out as they arrive."""
        return self._send is not None

    async def note(self, message: Any) -> None:
        """One notification: sent now (the SSE response starts with the first), or collected."""
        if self._send is None:
            self.append(message)
            return
        if not self.started:
            self.started = True
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send({"type": "http.response.body", "body": sse_event(message), "more_body": True})

    async def finish(self, answer: Any) -> None:
        """The answer, ending the stream this relay started."""
        assert self._send is not None and self.started
        await self._send({"type": "http.response.body", "body": sse_event(answer), "more_body": False})

    async def paused(self) -> None:
        """The member ended the answer's stream before the answer, to be polled (SEP-1699): the member
        call goes on with GET + ``Last-Event-ID``. Nothing to do here; a resumable client stream
        (gateway/servers/streams.py) ends its own the same way (2026-12-01)."""


def sse_event(message: Any) -> bytes:
    """One JSON-RPC message as an SSE ``message`` event."""
    return b"event: message\ndata: " + msgspec.json.encode(message) + b"\n\n"


def _sse_messages(body: bytes) -> list[Any]:
    out: list[Any] = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if data.strip():
            try:
                out.append(msgspec.json.decode(data))
            except msgspec.DecodeError:
                continue
    return out


def member_scope(
    client_scope: Mapping[str, Any], path: str, headers: Iterable[tuple[bytes, bytes]], body: bytes | None, method: str
) -> Scope:
    """The ASGI scope of an in-process request to the gateway's own data plane at ``path`` on behalf of
    the client of ``client_scope``: its Host, its ``CARRIED`` headers (credentials, trace context) and
    nothing else of its request, then ``headers`` (and the body's type and length)."""
    client_headers = {k.lower(): v for k, v in client_scope.get("headers", [])}
    out: list[tuple[bytes, bytes]] = [(b"host", client_headers.get(b"host", b"localhost"))]
    out += [(k, v) for k, v in client_scope.get("headers", []) if k.lower() in CARRIED]
    out += list(headers)
    if body is not None:
        out += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": client_scope.get("scheme", "http"),
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": out,
        "client": client_scope.get("client"),
        "server": client_scope.get("server"),
        "state": {},
    }


async def asgi_post(
    app: Asgi,
    client_scope: Mapping[str, Any],
    path: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes | None,
    *,
    method: str = "POST",
    want_id: Any = None,
    on_request: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    on_note: Callable[[Any], Awaitable[None]] | None = None,
) -> Reply:
    """One request to ``app`` at ``path`` in process; returns when the answer (or the response to
    ``want_id`` on an SSE stream) is complete. Cancelling the caller cancels the request, which the
    data plane passes upstream (cancellation flows through).

    The app runs in the caller's task (2026-11-30; before, in a task of its own with a second task
    waiting for the answer: 35 us per member call on the 2-core machine). Once the answer is complete,
    ``receive`` reports a disconnect, so a stream the member keeps open after it is ended by the data
    plane's own disconnect watch (within its 10 ms start delay), as when a client leaves.
    """
    scope = member_scope(client_scope, path, headers, body, method)
    done = asyncio.Event()
    sent_body = False
    status = 0
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    asked: set[Any] = set()
    relayed = 0
    pending = bytearray()  # SSE text not yet parsed (an event still arriving)

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body or b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, relayed
        if message["type"] == "http.response.start":
            status = message["status"]
            for k, v in message.get("headers", []):
                response_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()
            elif want_id is not None and response_headers.get("content-type", "").startswith("text/event-stream"):
                # Each complete event is parsed once (a member streaming many events costs linear time).
                pending.extend(message.get("body", b""))
                pending[:] = pending.replace(b"\r\n", b"\n")
                end = pending.rfind(b"\n\n")
                if end < 0:
                    return
                complete = bytes(pending[: end + 2])
                del pending[: end + 2]
                for m in _sse_messages(complete):
                    if not isinstance(m, dict):
                        continue
                    if m.get("id") == want_id and ("result" in m or "error" in m):
                        done.set()
                    elif "method" in m and "id" in m and on_request is not None and m["id"] not in asked:
                        asked.add(m["id"])  # a server-to-client request (sampling, elicitation, roots)
                        relayed_to_client = on_request(m)
                        if relayed_to_client is not None:
                            await relayed_to_client
                    elif "method" in m and "id" not in m and on_note is not None:
                        relayed += 1  # progress, log messages: on to the client now
                        await on_note(m)

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    raw = b"".join(chunks)
    if response_headers.get("content-type", "").startswith("text/event-stream"):
        messages = _sse_messages(raw)
    elif raw.strip():
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            decoded = None
        messages = decoded if isinstance(decoded, list) else ([decoded] if decoded is not None else [])
    else:
        messages = []
    reply = Reply(status=status, headers=response_headers, messages=messages, relayed=relayed)
    polled = b"retry:" in raw or method == "GET"
    if polled and response_headers.get("content-type", "").startswith("text/event-stream"):
        reply.last_event_id, reply.retry = _sse_resume_point(raw)
    return reply


def _sse_resume_point(raw: bytes) -> tuple[str | None, int | None]:
    """The last event id and ``retry:`` value of an SSE body (where to resume it, and when)."""
    last_id: str | None = None
    retry: int | None = None
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.startswith(b"id:"):
            last_id = line[3:].strip().decode("utf-8", "replace") or None
        elif line.startswith(b"retry:") and line[6:].strip().isdigit():
            retry = int(line[6:].strip())
    return last_id, retry


async def post_response(
    app: Asgi, scope: Mapping[str, Any], adapter: str, session: str, message: dict[str, Any]
) -> None:
    """A client's response to a member's request, posted on the member session ``session`` (a sealed
    adapter session id, valid on every gateway) through the data plane, which checks it again."""
    headers = [
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", LEGACY.encode()),
        (b"mcp-session-id", session.encode()),
    ]
    reply = await asgi_post(app, scope, f"/adapters/{adapter}/mcp", headers, msgspec.json.encode(message))
    if reply.status >= 300:
        log.info("member %s refused a forwarded response: HTTP %s", adapter, reply.status)


#: Data-plane answers that are the policy stages' refusals of the caller (toolPolicy 403, rateLimits
#: 429), not a sign of the member's era: relayed to the client as they are (docs/policy.md codes).
REFUSALS = frozenset({403, 429})


def _refusal(reply: Reply) -> dict[str, Any] | None:
    """The JSON-RPC error of a data-plane refusal (``REFUSALS``), else None."""
    if reply.status not in REFUSALS:
        return None
    for m in reply.messages:
        if isinstance(m, dict) and isinstance(m.get("error"), dict):
            error: dict[str, Any] = m["error"]
            return error
    return None


def _meta() -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway-virtual-server", "version": "1"},
    }


class MemberClient:
    """Calls one member adapter for one client context (a client session, or one stateless caller).

    Holds the member's legacy session (the gateway's own sealed session id) when the member needs one.
    """

    def __init__(
        self,
        app: Asgi,
        adapter: str,
        eras: dict[str, bool],
        *,
        prefer_legacy: bool = False,
        on_list_changed: Callable[[str], None] | None = None,
        backchannel: Backchannel | None = None,
    ) -> None:
        self._on_list_changed = on_list_changed
        self._backchannel = backchannel  # the client session's, when it may answer server-to-client requests
        self._app = app
        self.adapter = adapter
        self._eras = eras  # shared per process: "adapter\0era" → whether the member speaks it
        self._prefer_legacy = prefer_legacy
        self._session: str | None = None
        self._opened = False
        """The 2025 handshake was made (a member may answer it without an Mcp-Session-Id: then there is
        no session to hold, but it is not made again before every request; 2026-11-30, a test showed
        two extra upstream requests per call)."""
        self._lock = asyncio.Lock()
        self._log_level: str | None = None
        self._client_capabilities: dict[str, Any] | None = None
        self._param_headers: list[tuple[bytes, bytes]] = []
        self._background: set[asyncio.Future[Reply]] = set()

    async def set_log_level(self, scope: Mapping[str, Any], level: str) -> None:
        """The client's logging/setLevel: sent on the member's session, or put in each modern request."""
        self._log_level = level
        if self._session is not None:
            try:
                await self.request(scope, "logging/setLevel", {"level": level})
            except MemberError as exc:  # a member without logging keeps its default
                log.info("member %s refused logging/setLevel: %s", self.adapter, exc.detail)

    @property
    def path(self) -> str:
        """The data-plane route of the member."""
        return f"/adapters/{self.adapter}/mcp"

    def _forget_eras(self) -> None:
        for era in (MODERN, LEGACY):
            self._eras.pop(f"{self.adapter}\0{era}", None)

    async def _era(self, scope: Mapping[str, Any]) -> str:
        """The era to call the member in: the client's own when the member speaks it (a 2025-era client
        keeps subscriptions, log levels and server-to-client requests), else the other one."""
        if self._session is not None or self._opened:
            return LEGACY
        order = (LEGACY, MODERN) if self._prefer_legacy else (MODERN, LEGACY)
        for era in order:
            key = f"{self.adapter}\0{era}"
            known = self._eras.get(key)
            if known is False:
                continue
            if era == MODERN:
                if known:
                    return MODERN
                probe = {"jsonrpc": "2.0", "id": next(_ids), "method": "server/discover", "params": {"_meta": _meta()}}
                reply = await self._post(scope, probe, modern=True)
                if reply.status == 200 and any(isinstance(m, dict) and "result" in m for m in reply.messages):
                    self._eras[key] = True
                    return MODERN
                refusal = _refusal(reply)
                if refusal is not None:
                    raise MemberError(self.adapter, str(refusal.get("message")), status=reply.status, error=refusal)
                if reply.status not in (400, 404, 405):
                    raise MemberError(
                        self.adapter, f"server/discover answered HTTP {reply.status}", status=reply.status
                    )
                self._eras[key] = False
                continue
            async with self._lock:
                if self._session is not None or self._opened:
                    return LEGACY
                try:
                    await self._open(scope)
                except MemberError as exc:
                    if exc.status not in (400, 404, 405):
                        raise
                    self._eras[key] = False
                    continue
            self._eras[key] = True
            return LEGACY
        raise MemberError(self.adapter, "speaks neither 2026-07-28 nor the 2025 handshake")

    def _headers(self, modern: bool, method: str, name: str | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"accept", b"application/json, text/event-stream")]
        if modern:
            headers += [(b"mcp-protocol-version", MODERN.encode()), (b"mcp-method", method.encode())]
            if name is not None and name.isascii() and name.isprintable():
                headers.append((b"mcp-name", name.encode()))
            if method == "tools/call":  # SEP-2243 argument headers: the member validates them against the body
                headers += [(k, v) for k, v in self._param_headers]
        else:
            headers.append((b"mcp-protocol-version", LEGACY.encode()))
            if self._session is not None:
                headers.append((b"mcp-session-id", self._session.encode()))
        return headers

    def _refuse(self, scope: Mapping[str, Any], request: dict[str, Any]) -> None:
        """Answer a member's request to the client with an error at once, so the call does not hang:
        the client did not declare the capability, has no stream to take it on (a 2026-07-28 caller,
        a client not accepting SSE, a listing), or has ``MAX_PENDING`` unanswered (docs/servers.md)."""
        answer = {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {
                "code": -32601,
                "message": f"{request.get('method')} is not relayed to the client through a virtual server",
            },
        }
        task = asyncio.ensure_future(self._post(scope, answer, modern=False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ask_client(
        self,
        scope: Mapping[str, Any],
        to_client: Callable[[Any], Awaitable[None]],
        held: list[str],
        request: dict[str, Any],
    ) -> None:
        """A member's request during a call: to the client under a new id (gateway/servers/backchannel.py),
        before the call's answer; refused as before when the client cannot take it."""
        channel = self._backchannel
        ident = (
            channel.hold(self.adapter, request["id"], self._deliver, self._session)
            if channel is not None and channel.allows(request.get("method"))
            else None
        )
        if ident is None:
            self._refuse(scope, request)
            return
        held.append(ident)
        await to_client({**request, "id": ident})

    async def _deliver(self, scope: Mapping[str, Any], response: dict[str, Any]) -> None:
        """The client's response to a relayed request, on this member's session."""
        reply = await self._post(scope, response, modern=False)
        if reply.status >= 300:
            log.info("member %s refused a relayed response: HTTP %s", self.adapter, reply.status)

    async def _post(
        self,
        scope: Mapping[str, Any],
        message: dict[str, Any],
        *,
        modern: bool,
        on_note: Callable[[Any], Awaitable[None]] | None = None,
        on_request: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    ) -> Reply:
        params = message.get("params") or {}
        name = params.get("name") if message.get("method") in ("tools/call", "prompts/get") else params.get("uri")
        body = msgspec.json.encode(message)
        return await asgi_post(
            self._app,
            scope,
            self.path,
            self._headers(modern, str(message.get("method")), name if isinstance(name, str) else None),
            body,
            want_id=message.get("id") if "method" in message else None,
            on_request=None if modern else (on_request or (lambda m: self._refuse(scope, m))),
            on_note=on_note,
        )

    async def _open(self, scope: Mapping[str, Any]) -> None:
        init = {
            "jsonrpc": "2.0",
            "id": next(_ids),
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                # The client's own sampling / elicitation / roots, so the member asks only what it may.
                "capabilities": self._backchannel.capabilities if self._backchannel is not None else {},
                "clientInfo": {"name": "mcp-gateway-virtual-server", "version": "1"},
            },
        }
        reply = await self._post(scope, init, modern=False)
        session = reply.headers.get("mcp-session-id")
        refusal = _refusal(reply)
        if refusal is not None:  # over a rate limit, not "another era": the client sees the data plane's error
            raise MemberError(self.adapter, str(refusal.get("message")), status=reply.status, error=refusal)
        if reply.status != 200 or not any(isinstance(m, dict) and "result" in m for m in reply.messages):
            status = reply.status
            refused = any(isinstance(m, dict) and isinstance(m.get("error"), dict) for m in reply.messages)
            # A JSON-RPC error to initialize (-32601 from a modern-only server) means "not this era".
            raise MemberError(self.adapter, f"initialize answered HTTP {status}", status=404 if refused else status)
        self._session = session
        self._opened = True
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self._post(scope, note, modern=False)

    async def request(
        self,
        scope: Mapping[str, Any],
        method: str,
        params: dict[str, Any],
        notes: list[Any] | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request to the member; returns its result, raises MemberError with its error.

        Notifications the member sent on the request's stream before its answer (progress, log
        messages) are appended to ``notes``, for the caller to relay.
        """
        modern = await self._era(scope) == MODERN
        self._client_capabilities = capabilities
        self._param_headers = [
            (k.lower(), v) for k, v in scope.get("headers", []) if k.lower().startswith(b"mcp-param-")
        ]
        ident = next(_ids)
        params = dict(params)
        if modern:
            meta = dict(params.get("_meta") or {})
            meta.update(_meta())
            if self._client_capabilities is not None:  # a 2026-07-28 client's own (MRTR, extensions)
                meta["io.modelcontextprotocol/clientCapabilities"] = self._client_capabilities
            if self._log_level is not None:
                meta.setdefault("io.modelcontextprotocol/logLevel", self._log_level)
            params["_meta"] = meta
        live = notes.note if isinstance(notes, Relay) and notes.live else None
        request = {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}
        held: list[str] = []  # ids of this call's requests relayed to the client
        ask = functools.partial(self._ask_client, scope, live, held) if live is not None and not modern else None
        try:
            reply = await self._post(scope, request, modern=modern, on_note=live, on_request=ask)
            if not modern and reply.status == 404 and self._session is not None:
                self._session = None  # the member's session ended (replica gone): open a new one once
                async with self._lock:
                    await self._open(scope)
                reply = await self._post(scope, request, modern=False, on_note=live, on_request=ask)
            if not modern and reply.retry is not None:
                reply = await self._poll(scope, ident, reply, notes, live, ask)
        finally:
            if held and self._backchannel is not None:
                self._backchannel.forget(held)  # pending entries end with the call
        heard = [m for m in reply.messages if isinstance(m, dict) and "id" not in m and "method" in m]
        if any(str(m["method"]).endswith("/list_changed") for m in heard) and self._on_list_changed is not None:
            self._on_list_changed(self.adapter)
        if live is not None:
            for m in heard[reply.relayed :]:  # those in the answer's last chunk
                await live(m)
        elif notes is not None:
            notes.extend(heard)
        for m in reply.messages:
            if isinstance(m, dict) and m.get("id") == ident:
                if "error" in m:
                    error = m["error"] if isinstance(m["error"], dict) else {"code": -32603, "message": str(m["error"])}
                    raise MemberError(
                        self.adapter, str(error.get("message", "error")), status=reply.status, error=error
                    )
                return m.get("result")
        if reply.status >= 400 or reply.status == 0:
            self._forget_eras()
            self._opened = False
        raise MemberError(self.adapter, f"no answer to {method} (HTTP {reply.status})", status=reply.status)

    async def _poll(
        self,
        scope: Mapping[str, Any],
        ident: int,
        reply: Reply,
        notes: list[Any] | None,
        live: Callable[[Any], Awaitable[None]] | None,
        ask: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    ) -> Reply:
        """Continue a call whose answer stream the member ended early after a ``retry:`` field (SEP-1699
        polling): GET + ``Last-Event-ID`` on the member's session, after the wait it asked for, until
        the answer comes (at most ``MAX_POLLS`` reconnections).

        Decision (2026-12-01): before, such a call failed with "no answer"; the conformance fixture's
        ``test_reconnection`` does exactly this. The client's relay is told first (``Relay.paused``), so
        a resumable client stream ends the same way and the client resumes it from the gateway.
        """
        if any(isinstance(m, dict) and m.get("id") == ident for m in reply.messages):
            return reply  # answered on the stream (its priming event carried the retry field)
        heard = [m for m in reply.messages if isinstance(m, dict) and "id" not in m and "method" in m]
        if live is not None:  # those of the stream's last chunk first, in order
            for m in heard[reply.relayed :]:
                await live(m)
            reply.relayed = len(heard)
        if isinstance(notes, Relay):
            await notes.paused()
        for _ in range(MAX_POLLS):
            if any(isinstance(m, dict) and m.get("id") == ident for m in reply.messages):
                return reply
            if reply.last_event_id is None or self._session is None:
                return reply
            await asyncio.sleep(min(reply.retry or 0, MAX_RETRY_MS) / 1000)
            headers = [
                (b"accept", b"text/event-stream"),
                (b"mcp-protocol-version", LEGACY.encode()),
                (b"mcp-session-id", self._session.encode()),
                (b"last-event-id", reply.last_event_id.encode()),
            ]
            more = await asgi_post(
                self._app,
                scope,
                self.path,
                headers,
                None,
                method="GET",
                want_id=ident,
                on_request=ask or (lambda m: self._refuse(scope, m)),
                on_note=live,
            )
            if more.status != 200:
                return reply
            reply = Reply(
                status=more.status,
                headers=more.headers,
                messages=reply.messages + more.messages,
                relayed=reply.relayed + more.relayed,
                last_event_id=more.last_event_id or reply.last_event_id,
                retry=more.retry if more.retry is not None else reply.retry,
            )
        return reply

    async def change_stream(
        self, scope: Mapping[str, Any], notifications: dict[str, Any], ident: int, era: str | None = None
    ) -> tuple[str, list[tuple[bytes, bytes]], bytes | None] | None:
        """How to open this member's stream of change notifications (list_changed, resources/updated):
        (HTTP method, headers, body) — ``subscriptions/listen`` with ``notifications`` as its filter for
        a 2026-07-28 member, a GET on the member's session for a 2025-era one (gateway/servers/streams.py).
        None when ``era`` is given and the member is called in the other one."""
        spoken = await self._era(scope)
        if era is not None and spoken != era:
            return None
        if spoken == MODERN:
            meta = _meta()
            if self._client_capabilities is not None:
                meta["io.modelcontextprotocol/clientCapabilities"] = self._client_capabilities
            params = {"notifications": notifications, "_meta": meta}
            body = msgspec.json.encode(
                {"jsonrpc": "2.0", "id": ident, "method": "subscriptions/listen", "params": params}
            )
            return "POST", self._headers(True, "subscriptions/listen", None), body
        if self._session is None:
            raise MemberError(self.adapter, "holds no session to stream its notifications on")
        headers = [
            (b"accept", b"text/event-stream"),
            (b"mcp-protocol-version", LEGACY.encode()),
            (b"mcp-session-id", self._session.encode()),
        ]
        return "GET", headers, None

    async def close(self, scope: Mapping[str, Any]) -> None:
        """End the member session, if one was opened."""
        session, self._session = self._session, None
        self._opened = False
        if session is None:
            return
        headers = [(b"mcp-session-id", session.encode()), (b"mcp-protocol-version", LEGACY.encode())]
        try:
            await asgi_post(self._app, scope, self.path, headers, None, method="DELETE")
        except Exception as exc:  # closing is best effort; the session expires by its TTL otherwise
            log.info("closing the session of member %s failed: %s", self.adapter, type(exc).__name__)
