"""The MCP side of virtual servers: the gateway terminates MCP at ``/servers/{name}/mcp`` (Streamable
HTTP, 2025-era sessions and 2026-07-28 stateless), ``/servers/{name}/sse`` + ``/messages`` (legacy
HTTP+SSE) and ``/mcp`` (every adapter the caller may read), and answers from its members.

The client is answered in its own era; each member is called in the member's era through the data
plane (gateway/servers/member.py), so any client era reaches any member era. Listings fan out to the
members in parallel, each bounded by ``server_member_timeout``: a member that fails or is slow is left
out (logged, counted in ``member_failures``), the others are listed. Names are prefixed per member;
resource URIs of a prefixed member become ``mcpgw+<adapter>:<uri>`` (reversible). A member with an
empty prefix keeps its names and URIs (at most one per server: prefixes are unique).

Answers are always ``application/json`` (one response per POST); see docs/servers.md for what does
not translate across eras.

Sessions across gateways (2026-11-30): a 2025-era client session of ``/servers/{name}/mcp`` or ``/mcp``
is a sealed id of kind ``vmcp`` (gateway/proxy/sealing.py, the adapters' key ring) naming the server
(``servers/<name>``, ``servers/*`` for ``/mcp``), the user, the negotiated protocol version and the
issue time, plus a record in the shared session store (revocation, sliding idle TTL, caps), checked
by a ``SessionRouter`` of its own (``SessionRouter.check``: seal, kind, server, user, maximum age,
record). Before, the id was a random key into a per-process dict, so behind a load balancer that is
not sticky the next request on another gateway got 404. Now any gateway sharing the key and the store
rebuilds the session's ``Context`` from the id on first sight. Member sessions stay per gateway: a
gateway opens its own, lazily, on the first call to a stateful member (docs/servers.md says why).
Legacy ``/sse`` + ``/messages`` sessions stay with the gateway holding the stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import msgspec

from gateway.auth.base import Authenticator, can_read
from gateway.browser.hosts import HostPolicy
from gateway.errors import (
    Forbidden,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    SessionStoreUnavailable,
    Unauthenticated,
)
from gateway.models import AdapterRecord, Identity, ServerMember, ServerRecord, session_scope
from gateway.policy.toolpolicy import GlobMatcher, PolicyCache
from gateway.proxy.sealing import SessionClaims
from gateway.proxy.sessions import SessionRejected, SessionRouter
from gateway.servers.backchannel import (
    AnswerRefused,
    Backchannel,
    Sealing,
    named,
    relayed_capabilities,
    seal_capabilities,
    unseal_capabilities,
)
from gateway.servers.listing import ListingCache, MergedKey, MergedListing
from gateway.servers.member import LEGACY, MODERN, Asgi, MemberClient, MemberError, Relay, post_response, sse_event
from gateway.servers.streams import ResumeRefused, Streams, WatchTarget, drain_queue
from gateway.sessions.base import SessionLimitExceeded
from gateway.store.base import ServerStore
from gateway.store.view import AdapterView

log = logging.getLogger("gateway.servers")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
URI_SCHEME = "mcpgw+"
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
SERVER_INFO = {"name": "mcp-gateway", "version": "0.1.0"}
#: listChanged since 2026-12-01: the standalone GET stream (2025-era) and subscriptions/listen (2026-07-28)
#: carry the members' list_changed notifications (gateway/servers/streams.py).
CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": True},
    "completions": {},
    "logging": {},
}
#: A legacy HTTP+SSE session (``/sse`` + ``/messages``) has no change streams: its listings refresh by TTL.
LEGACY_SSE_CAPABILITIES: dict[str, Any] = {
    **CAPABILITIES,
    "tools": {"listChanged": False},
    "prompts": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": True},
}
MAX_PAGES = 20
#: The listing methods, by the result key they answer with.
LIST_METHODS = {
    "tools": "tools/list",
    "prompts": "prompts/list",
    "resources": "resources/list",
    "resourceTemplates": "resources/templates/list",
}
LIST_KINDS = {method: kind for kind, method in LIST_METHODS.items()}
#: JSON-RPC code of a member that could not answer (down, slow, not MCP); data.member names it.
MEMBER_UNAVAILABLE = -32003
#: Kind of a sealed virtual-server session id: never accepted on an adapter route (kinds ``mcp``, ``sse``).
VIRTUAL_KIND = "vmcp"
#: JSON-RPC code of a refused ``initialize`` (session cap), as the data plane's (gateway/proxy/app.py).
SESSION_LIMITED = -32008


@functools.lru_cache(maxsize=1024)
def _matcher(globs: tuple[str, ...]) -> GlobMatcher:
    return GlobMatcher(globs)


_POLICIES = PolicyCache()
#: Seconds a server record is reused before it is read again (a change made through another replica
#: shows after at most this long; changes through this one at once).
RECORD_SECONDS = 1.0


@dataclass
class Member:
    """A member resolved for one request: its spec, its adapter record, and its filters."""

    spec: ServerMember
    adapter: AdapterRecord

    def selected(self, tool: str) -> bool:
        """The member's include/exclude globs: whether the server offers ``tool`` at all."""
        if self.spec.tools is not None and not _matcher(tuple(self.spec.tools)).matches(tool):
            return False
        return not (self.spec.exclude and _matcher(tuple(self.spec.exclude)).matches(tool))

    def permitted(self, tool: str, identity: Identity) -> bool:
        """The member adapter's ``toolPolicy`` for this caller (``mcp.admin`` may call everything)."""
        rules = self.adapter.tool_policy
        return rules is None or _POLICIES.get(self.adapter.name, self.adapter.etag, rules).may_call(
            tool, identity.roles
        )

    def visible(self, tool: str, identity: Identity) -> bool:
        """Listed for this caller: selected by the member and permitted by the adapter's toolPolicy."""
        return self.selected(tool) and self.permitted(tool, identity)

    def uri_out(self, uri: str) -> str:
        return f"{URI_SCHEME}{self.spec.adapter}:{uri}" if self.spec.prefix else uri


#: Seconds before a request starts watching for its client to go away (as the data plane's).
DISCONNECT_WATCH_DELAY = 0.01


class _Cancellation:
    """Cancels the task serving one request: on ``cancel()`` (the client's ``notifications/cancelled``)
    or, given the client's ``receive``, when the client disconnects — watched by a task started only
    after ``DISCONNECT_WATCH_DELAY``, since most member calls are over sooner. Inert once closed."""

    __slots__ = ("_closed", "_receive", "_timer", "_watcher", "disconnected", "requested", "task")

    def __init__(self, receive: Receive | None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.requested = False
        self.disconnected = False
        self._closed = False
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._timer = (
            asyncio.get_running_loop().call_later(DISCONNECT_WATCH_DELAY, self._watch) if receive is not None else None
        )

    def cancel(self) -> None:
        """Cancel the request's work (once; nothing after ``close``)."""
        if not self._closed and not self.requested:
            self.requested = True
            self.task.cancel()

    def _watch(self) -> None:
        self._timer = None
        self._watcher = asyncio.ensure_future(self._disconnect())

    async def _disconnect(self) -> None:
        assert self._receive is not None
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        self.cancel()

    def close(self) -> None:
        """The work is over: stop watching; later ``cancel()`` calls do nothing."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        watcher, self._watcher = self._watcher, None  # its CancelledError's frames would hold self
        if watcher is not None:
            watcher.cancel()


@dataclass
class Context:
    """Member clients of one client session (or of one stateless caller of one server)."""

    key: str
    user_id: str
    clients: dict[str, MemberClient] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)
    version: str = LEGACY
    queue: asyncio.Queue[bytes | None] | None = None  # legacy SSE: messages for the client's stream
    owners: dict[str, str] = field(default_factory=dict)  # listed name → adapter (members without prefix)
    log_level: str | None = None
    inflight: dict[str | int, _Cancellation] = field(default_factory=dict)  # by request id
    claims: SessionClaims | None = None  # a sealed 2025-era client session's (None: stateless, legacy SSE)
    backchannel: Backchannel | None = None  # server-to-client requests awaiting the client (sessions only)


class VirtualServers:
    """ASGI handler of every virtual server route."""

    def __init__(
        self,
        *,
        app: Callable[[], Asgi],
        servers: ServerStore,
        view: AdapterView,
        authenticator: Authenticator,
        hosts: HostPolicy,
        member_timeout: float,
        list_ttl: float,
        session_ttl: float,
        gateway_prefix: bool,
        sessions: SessionRouter,
        max_body_bytes: int = 4 * 1024 * 1024,
        www_authenticate: Callable[[str, str | None, str | None], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream_buffer_events: int = 256,
        stream_buffer_bytes: int = 1024 * 1024,
        stream_retry_ms: int = 1000,
        listens_per_user: int = 8,
    ) -> None:
        self._max_body = max_body_bytes
        self._www = www_authenticate or (lambda path, error, detail: f'Bearer error="{error or "invalid_token"}"')
        self._app = app
        self._servers = servers
        self._view = view
        self._auth = authenticator
        self._hosts = hosts
        self._timeout = member_timeout
        self._session_ttl = session_ttl
        self._gateway_prefix = gateway_prefix
        self._eras: dict[str, bool] = {}
        self._router = sessions
        self._instance = secrets.token_urlsafe(12)  # this process, in the ids of the requests it relays
        # Contexts this gateway built, by sealed id (any gateway may build one for the same id).
        self._sessions: dict[str, Context] = {}
        # Legacy SSE sessions: held by the gateway serving the stream, by their random session_id.
        self._streams: dict[str, Context] = {}
        self._stateless: dict[str, Context] = {}
        self._listings = ListingCache(list_ttl, clock)
        # Merged per caller: clients may cache a listing for the TTL, shared caches may not.
        self._listing_fields = {"ttlMs": int(list_ttl * 1000), "cacheScope": "private"}
        stamp = {"_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO}, **self._listing_fields}
        self._modern_listing_tail = b"," + msgspec.json.encode(stamp)[1:-1]
        self.member_failures: Counter[str] = Counter()
        self._records: dict[str, tuple[float, ServerRecord | None]] = {}
        self._next_sweep = 0.0
        self.streams = Streams(
            app=app,
            invalidate=self.invalidate,
            member_timeout=member_timeout,
            max_events=stream_buffer_events,
            max_bytes=stream_buffer_bytes,
            retry_ms=stream_retry_ms,
            listens_per_user=listens_per_user,
        )

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send, name: str | None, route: str) -> None:
        """Serve ``/servers/{name}/{route}`` (``name`` None: the gateway-wide ``/mcp``); never a bare 500."""
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._serve(scope, receive, tracked, name, route)
        except PayloadTooLarge as exc:
            if not started:
                await _json(send, 413, _error(None, -32600, exc.detail))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("virtual server failure on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _json(send, 502, _error(None, -32603, "the virtual server could not complete the request"))

    async def _serve(self, scope: dict[str, Any], receive: Receive, send: Send, name: str | None, route: str) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._hosts.check(headers.get("host"), headers.get("origin"))
        if problem is not None:
            await _json(send, problem[0], _error(None, -32600, problem[1]))
            return
        try:
            identity = await self._auth.authenticate(headers)
            label, members = await self._resolve(identity, name)
        except Unauthenticated as exc:
            # The same challenge as the data plane's: resource_metadata names this route's RFC 9728 document.
            challenge = self._www(scope["path"], exc.error, exc.detail)
            await _json(send, 401, _error(None, -32600, exc.detail), {"www-authenticate": challenge})
            return
        except GatewayError as exc:
            await _json(send, exc.status, _error(None, -32600 if exc.status != 404 else -32601, exc.detail))
            return
        self._sweep()
        method = scope["method"]
        if route == "sse":
            if method != "GET":
                await _json(send, 405, _error(None, -32600, "use GET on /sse"), {"allow": "GET"})
                return
            await self._sse(scope, receive, send, identity, label, members, name)
            return
        if route == "messages":
            if method != "POST":
                await _json(send, 405, _error(None, -32600, "use POST on /messages"), {"allow": "POST"})
                return
            await self._messages(scope, receive, send, identity, label, members)
            return
        if method == "DELETE":
            ctx = await self._session_of(headers, identity, label, scope)
            if ctx is None:
                await _json(send, 404, _error(None, -32001, "session not found"))
                return
            if ctx.claims is not None:  # ended for every gateway: the record goes
                await self._router.revoke(ctx.claims)
            await self._end(ctx, scope)
            await _json(send, 200, None)
            return
        if method == "GET" and "mcp-session-id" in headers:
            await self._get(scope, receive, send, headers, identity, label, members)
            return
        if method != "POST":
            await _json(send, 405, _error(None, -32600, f"{method} is not supported here"), {"allow": "POST, DELETE"})
            return
        body = await _read_body(receive, self._max_body)
        try:
            message = msgspec.json.decode(body)
        except msgspec.DecodeError:
            await _json(send, 400, _error(None, -32700, "the body is not JSON"))
            return
        if isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message):
            await self._answered(scope, send, await self._session_of(headers, identity, label, scope), message)
            return
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            # An object without a method still names its id (issue 17: errors answer the request's id).
            ident = message.get("id") if isinstance(message, dict) else None
            ident = ident if isinstance(ident, (str, int, float)) and not isinstance(ident, bool) else None
            await _json(send, 400, _error(ident, -32600, "send one JSON-RPC request or notification per POST"))
            return
        meta = (message.get("params") or {}).get("_meta") if isinstance(message.get("params"), dict) else None
        header_version = headers.get("mcp-protocol-version", "").strip()
        # Modern: a 2026-07-28 request, or one carrying the per-request era of a version we do not know
        # (answered with -32022, as a modern server does); 2025-era versions take the session path.
        modern = (bool(header_version) and header_version not in LEGACY_VERSIONS) or (
            isinstance(meta, dict) and "io.modelcontextprotocol/protocolVersion" in meta
        )
        ident = message.get("id")
        if modern and "mcp-session-id" not in headers:
            refused = _modern_check(headers, message, meta)
            if refused is not None:
                error = _error(ident, refused[1], refused[2])
                if refused[1] == -32022:
                    requested = meta.get("io.modelcontextprotocol/protocolVersion") if isinstance(meta, dict) else None
                    error["error"]["data"] = {"supported": [MODERN], "requested": requested or header_version}
                await _json(send, refused[0], error)
                return
        if message["method"] == "initialize" and not modern:
            version = (message.get("params") or {}).get("protocolVersion")
            version = version if version in LEGACY_VERSIONS else LEGACY
            caps = relayed_capabilities((message.get("params") or {}).get("capabilities"))
            try:
                ctx = await self._open_session(identity, label, version, caps)
            except SessionStoreUnavailable as exc:
                await _json(
                    send, 503, _error(ident, -32005, f"cannot open a session: {exc.detail}"), {"retry-after": "5"}
                )
                return
            except SessionLimitExceeded as exc:
                holder = f"user {identity.user_id!r}" if exc.limit == "per_user" else "all users together"
                where = "/mcp" if name is None else f"server {name!r}"
                text = (
                    f"session limit reached: {holder} may hold at most {exc.maximum} open sessions on {where} "
                    f"({exc.setting}); close a session (DELETE) or retry later"
                )
                await _json(
                    send, 429, _error(ident, SESSION_LIMITED, text), {"retry-after": str(math.ceil(exc.retry_after))}
                )
                return
            result = {
                "protocolVersion": ctx.version,
                "capabilities": CAPABILITIES,
                "serverInfo": {**SERVER_INFO, "name": f"mcp-gateway/{label}"},
            }
            await _json(send, 200, {"jsonrpc": "2.0", "id": ident, "result": result}, {"mcp-session-id": ctx.key})
            return
        if modern:
            ctx = self._stateless_of(identity, label)
        else:
            found = await self._session_of(headers, identity, label, scope)
            if found is None:
                status, text = (
                    (404, "session not found: initialize a new session")
                    if headers.get("mcp-session-id")
                    else (400, "no session: send initialize first, or a 2026-07-28 request")
                )
                await _json(send, status, _error(ident, -32001 if status == 404 else -32600, text))
                return
            ctx = found
        if "id" not in message:
            self._notified(ctx, message)
            await _json(send, 202, None)
            return
        if modern and message["method"] == "subscriptions/listen":
            listen = message.get("params")
            targets = [self._target(ctx, m, own=True) for m in members]
            over = await self.streams.listen(
                scope, identity.user_id, ident, listen if isinstance(listen, dict) else {}, targets, receive, send
            )
            if over is not None:
                await _json(send, 429, over)
            return
        # A 2025-era session that takes SSE gets a resumable SSE answer (gateway/servers/streams.py).
        resumable = not modern and "text/event-stream" in headers.get("accept", "")
        cached = self._cached_listing(ident, ctx, identity, members, message["method"], modern=modern)
        if cached is not None:
            if resumable:
                await self.streams.answer(ctx.key, functools.partial(_ready, msgspec.Raw(cached)), send)
            else:
                await _json_bytes(send, 200, cached)
            return
        if resumable:
            # Not cancelled when the client goes away: a 2025-era client resumes (or sends notifications/cancelled).
            def work(relay: Relay) -> Awaitable[dict[str, Any] | None]:
                return self._cancellable(
                    ctx, ident, self._handle(scope, ctx, identity, members, message, modern=False, notes=relay)
                )

            await self.streams.answer(ctx.key, work, send)
            return
        # The member's progress and log notifications go to a client that takes SSE as they arrive
        # (the response becomes an SSE stream with the first one), then the answer.
        notes = Relay(send if "text/event-stream" in headers.get("accept", "") else None)
        answer = await self._cancellable(
            ctx, ident, self._handle(scope, ctx, identity, members, message, modern=modern, notes=notes), receive
        )
        if answer is None:  # the client went away: the member call was cancelled with it
            return
        if notes.started:
            await notes.finish(answer)
            return
        status = 200
        if modern and "error" in answer:
            # A modern server's HTTP statuses for its JSON-RPC errors (clients tell eras and causes apart by them).
            status = {-32601: 404, -32020: 400, -32021: 400, -32022: 400}.get(answer["error"].get("code"), 200)
        await _json(send, status, answer)

    async def _answered(
        self, scope: Mapping[str, Any], send: Send, ctx: Context | None, message: dict[str, Any]
    ) -> None:
        """A client's JSON-RPC response: passed on to the member whose request it answers (202), when that
        request is waiting on this very session (gateway/servers/backchannel.py); else 400 naming the id,
        and nothing reaches a member. An unknown session is 404 as for any request."""
        ident = message.get("id")
        shown = ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None
        if ctx is None:
            named_session = any(k.lower() == b"mcp-session-id" for k, _ in scope.get("headers", []))
            status, code = (404, -32001) if named_session else (400, -32600)
            text = "session not found" if named_session else "no session"
            await _json(send, status, _error(shown, code, f"{text}: a response must come on the session it answers"))
            return
        if ctx.backchannel is None:
            text = f"no request with id {named(ident)} is waiting for an answer: this session has none"
            await _json(send, 400, _error(shown, -32600, text))
            return
        try:
            member = await ctx.backchannel.answer(scope, message)
        except AnswerRefused as exc:
            log.info("virtual server: a client response was refused: %s", exc.message)
            await _json(send, 400, _error(exc.ident, -32600, exc.message))
            return
        log.debug("virtual server: a client response went to member %s", member)
        await _json(send, 202, None)

    def _sealing(self) -> Sealing:
        """Relayed requests' ids are sealed with the session key ring, so any gateway can pass an answer on."""
        return Sealing(self._router.sealer, self._instance, self._forward)

    async def _forward(self, scope: Mapping[str, Any], adapter: str, session: str, message: dict[str, Any]) -> None:
        """An answer to a request another gateway relayed: onto the member session from here."""
        await post_response(self._app(), scope, adapter, session, message)

    # --- GET: resumption and the standalone stream (gateway/servers/streams.py) ----------------

    async def _get(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        headers: Mapping[str, str],
        identity: Identity,
        label: str,
        members: Sequence[Member],
    ) -> None:
        """GET with a 2025-era session: ``Last-Event-ID`` resumes one of its streams, else the session's
        standalone stream of the members' change notifications (one at a time: 409)."""
        ctx = await self._session_of(headers, identity, label, scope)
        if ctx is None:
            await _json(send, 404, _error(None, -32001, "session not found: initialize a new session"))
            return
        if "text/event-stream" not in headers.get("accept", ""):
            await _json(send, 406, _error(None, -32600, "GET needs Accept: text/event-stream"))
            return
        last = headers.get("last-event-id")
        if last is not None:
            try:
                await self.streams.resume(ctx.key, last, receive, send)
            except ResumeRefused as exc:
                await _json(send, 400, _error(None, -32600, exc.detail))
            return
        if self.streams.standalone_busy(ctx.key):
            await _json(send, 409, _error(None, -32600, "this session's GET stream is already open"))
            return
        over = self.streams.over_cap(identity.user_id)
        if over is not None:
            await _json(send, 429, _error(None, -32008, over))
            return
        # Each member that speaks 2026-07-28 on a subscriptions/listen of its own (MCPServer's change events
        # reach only those: stateless, no member session), and each member called in the session's era on
        # the GET stream of the session's member session (what a 2025-era member sends there, resources/updated
        # of the session's resources/subscribe included; no second member session is opened).
        targets = [self._target(ctx, m, own=True, era=MODERN) for m in members]
        targets += [self._target(ctx, m, own=False, era=LEGACY) for m in members]
        await self.streams.standalone(ctx.key, identity.user_id, scope, targets, receive, send)

    def _target(self, ctx: Context, member: Member, *, own: bool, era: str | None = None) -> WatchTarget:
        """A member to watch: on the context's own member client (a 2025-era session's, whose member
        session holds its resource subscriptions), or on a client of the watch's own (a listen)."""
        client = (
            MemberClient(self._app(), member.spec.adapter, self._eras, on_list_changed=self.invalidate)
            if own
            else self._client(ctx, member)
        )

        def uri_in(uri: str) -> str | None:
            found, inner = self._by_uri([member], uri)
            return inner if found is not None else None

        return WatchTarget(member.spec.adapter, member.uri_out, uri_in, client, own, era)

    # --- cancellation -----------------------------------------------------------------------

    def _notified(self, ctx: Context, message: dict[str, Any]) -> None:
        """A client notification: ``notifications/cancelled`` cancels the named request's member call."""
        if message.get("method") != "notifications/cancelled":
            return
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        guard = ctx.inflight.get(request_id) if isinstance(request_id, (str, int)) else None
        if guard is not None:
            guard.cancel()

    async def _cancellable(
        self, ctx: Context, ident: Any, work: Awaitable[dict[str, Any]], receive: Receive | None = None
    ) -> dict[str, Any] | None:
        """Run one request's work in this task; cancelled by ``notifications/cancelled`` for its id, or
        (with ``receive``) when the client's HTTP request goes away. Cancelling closes the member call's
        upstream request, which a 2026-07-28 member takes as cancellation. None when the client is gone.

        In the request's own task, not a new one (2026-11-30): the task, a watcher task and
        ``asyncio.wait`` cost 35 us per request on the 2-core machine, and the member call's in-process
        request (member.py ``asgi_post``) as much again; the watcher starts after
        ``DISCONNECT_WATCH_DELAY`` like the data plane's (gateway/proxy/app.py ``_DisconnectWatch``).
        """
        guard = _Cancellation(receive)
        key = ident if isinstance(ident, (str, int)) else None
        if key is not None:
            ctx.inflight[key] = guard
        try:
            return await work
        except asyncio.CancelledError:
            if not guard.requested:
                raise  # not ours (the server shutting down, say)
            guard.task.uncancel()
            return None if guard.disconnected else _error(ident, -32800, "request cancelled")
        finally:
            guard.close()
            if key is not None and ctx.inflight.get(key) is guard:
                del ctx.inflight[key]

    # --- contexts ---------------------------------------------------------------------------

    async def _open_session(
        self, identity: Identity, label: str, version: str, capabilities: dict[str, Any] | None = None
    ) -> Context:
        """A new 2025-era client session: recorded in the session store (caps checked there) and sealed,
        so every gateway sharing the key and the store accepts its id. The client's sampling /
        elicitation / roots capabilities ride in the seal (``client_caps``), so a gateway rebuilding
        the context declares them to members too (2026-12-01)."""
        capabilities = capabilities or {}
        token, claims = await self._router.open_session(
            kind=VIRTUAL_KIND,
            adapter=session_scope(label),  # label "*" (/mcp) gives servers/*
            replica="",
            replica_uid="",
            upstream=version,
            user_id=identity.user_id,
            client_caps=seal_capabilities(capabilities),
        )
        ctx = self._sessions[token] = Context(
            key=token,
            user_id=identity.user_id,
            version=version,
            claims=claims,
            backchannel=Backchannel(capabilities, session=claims, sealing=self._sealing()),
        )
        return ctx

    async def _session_of(
        self, headers: Mapping[str, str], identity: Identity, label: str, scope: Mapping[str, Any]
    ) -> Context | None:
        """The client session named by ``Mcp-Session-Id`` for this caller on this server, or None (404).

        The sealed id is checked on every request (the record read is cached as the data plane's,
        ``MCPGW_SESSION_CACHE_SECONDS``); a context this gateway has not seen is rebuilt from the id.
        A session revoked elsewhere (DELETE through another gateway) also ends this gateway's context
        and its member sessions.
        """
        token = headers.get("mcp-session-id", "")
        if not token:
            return None
        held = self._sessions.get(token)
        where = session_scope(label)  # label "*": /mcp
        try:
            claims = await self._router.check(token, kind=VIRTUAL_KIND, adapter=where, user_id=identity.user_id)
        except SessionRejected as exc:
            log.info("virtual server session rejected on %s: %s", where, exc)
            # Its owner on its own server, refused: revoked elsewhere or too old. (An id replayed on
            # another server or by another user leaves the owner's session alone.)
            mine = held is not None and held.claims is not None and held.claims.adapter == where
            if held is not None and mine and held.user_id == identity.user_id:
                await self._end(held, scope)
            return None
        ctx = self._sessions.get(token)  # another request may have built it while the check waited
        if ctx is None:
            version = claims.upstream if claims.upstream in LEGACY_VERSIONS else LEGACY
            ctx = self._sessions[token] = Context(
                key=token,
                user_id=claims.user_id,
                version=version,
                claims=claims,
                backchannel=Backchannel(
                    unseal_capabilities(claims.client_caps), session=claims, sealing=self._sealing()
                ),
            )
        ctx.last_used = time.monotonic()
        return ctx

    def _stateless_of(self, identity: Identity, label: str) -> Context:
        key = f"{label}\x00{identity.user_id}"
        ctx = self._stateless.get(key)
        if ctx is None:
            ctx = self._stateless[key] = Context(key=key, user_id=identity.user_id, version=MODERN)
        ctx.last_used = time.monotonic()
        return ctx

    async def _end(self, ctx: Context, scope: Mapping[str, Any]) -> None:
        """Forget a context on this gateway and close its member sessions (its record is the caller's)."""
        if self._sessions.get(ctx.key) is ctx:
            del self._sessions[ctx.key]
        if self._streams.get(ctx.key) is ctx:
            del self._streams[ctx.key]
        if ctx.queue is not None:
            ctx.queue.put_nowait(None)
        self.streams.drop(ctx.key)
        await asyncio.gather(*(c.close(scope) for c in ctx.clients.values()), return_exceptions=True)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 10.0
        self._listings.sweep()
        cutoff = now - self._session_ttl
        for table in (self._sessions, self._stateless):
            for key in [k for k, c in table.items() if c.last_used < cutoff and c.queue is None]:
                # Their member sessions expire by the data plane's own TTL; a sealed session still
                # live in the store is rebuilt on its next request.
                del table[key]
                self.streams.drop(key)

    async def _resolve(self, identity: Identity, name: str | None) -> tuple[str, list[Member]]:
        """The members the caller may use: a server's readable members, or every readable adapter."""
        if name is None:
            members = []
            for adapter_name in self._view.names():
                record = self._view.get(adapter_name)
                if record is not None and can_read(identity, record):
                    prefix = f"{adapter_name}_" if self._gateway_prefix else ""
                    members.append(Member(ServerMember(adapter=adapter_name, prefix=prefix), record))
            return "*", members
        now = time.monotonic()
        held = self._records.get(name)
        if held is not None and held[0] > now:
            server = held[1]
        else:
            server = await self._servers.get(name)
            self._records[name] = (now + RECORD_SECONDS, server)
        if server is None:
            raise NotFound(f"server {name!r} does not exist")
        if not can_read(identity, server):
            raise Forbidden(f"you may not use server {name!r}")
        out = []
        for spec in server.members:
            record = self._view.get(spec.adapter)
            if record is not None and can_read(identity, record):
                out.append(Member(spec, record))
        return name, out

    # --- JSON-RPC ---------------------------------------------------------------------------

    async def _handle(
        self,
        scope: Mapping[str, Any],
        ctx: Context,
        identity: Identity,
        members: Sequence[Member],
        message: dict[str, Any],
        *,
        modern: bool,
        notes: list[Any] | None = None,
    ) -> dict[str, Any]:
        ident = message.get("id")
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        assert isinstance(params, dict)
        try:
            result = await self._dispatch(scope, ctx, identity, members, method, params, notes)
        except MemberError as exc:
            self.member_failures[exc.adapter] += 1
            if exc.error is not None:
                error = dict(exc.error)
                error["message"] = f"member {exc.adapter!r}: {error.get('message', '')}"
                data = error.get("data")
                error["data"] = {**(data if isinstance(data, dict) else {}), "member": exc.adapter}
                return {"jsonrpc": "2.0", "id": ident, "error": error}
            log.warning("virtual server member %s failed on %s: %s", exc.adapter, method, exc.detail)
            return _error(
                ident, MEMBER_UNAVAILABLE, f"member {exc.adapter!r} is unavailable: {exc.detail}", exc.adapter
            )
        except _RpcError as exc:
            return _error(ident, exc.code, exc.message)
        if modern and isinstance(result, dict):
            meta = result.get("_meta")
            stamped = {**(meta if isinstance(meta, dict) else {}), "io.modelcontextprotocol/serverInfo": SERVER_INFO}
            result = {"resultType": "complete", **result, "_meta": stamped}
            if method.endswith("/list") or method == "server/discover":
                result.update(self._listing_fields)
        return {"jsonrpc": "2.0", "id": ident, "result": result}

    async def _dispatch(
        self,
        scope: Mapping[str, Any],
        ctx: Context,
        identity: Identity,
        members: Sequence[Member],
        method: str,
        params: dict[str, Any],
        notes: list[Any] | None = None,
    ) -> Any:
        meta = params.get("_meta")
        caps = meta.get("io.modelcontextprotocol/clientCapabilities") if isinstance(meta, dict) else None
        caps = caps if isinstance(caps, dict) else None
        if method == "logging/setLevel":
            level = params.get("level")
            if isinstance(level, str):
                ctx.log_level = level
                await asyncio.gather(*(c.set_log_level(scope, level) for c in ctx.clients.values()))
            return {}
        if method == "ping":
            return {}
        if method == "server/discover":
            # subscriptions/listen carries list_changed and resources/updated (gateway/servers/streams.py).
            return {"supportedVersions": [MODERN], "capabilities": CAPABILITIES, "resultType": "complete"}
        kind = LIST_KINDS.get(method)
        if kind is not None:
            return {kind: await self._list(scope, ctx, identity, members, kind)}
        if method in ("tools/call", "prompts/get"):
            name = params.get("name")
            if not isinstance(name, str):
                raise _RpcError(-32602, f"{method} needs a string params.name")
            member, inner = self._by_name(members, name, identity if method == "tools/call" else None, ctx)
            if member is None:
                raise _RpcError(-32602, f"unknown {'tool' if method == 'tools/call' else 'prompt'} {name!r}")
            return await self._client(ctx, member).request(
                scope, method, {**_strip_meta(params), "name": inner}, notes, caps
            )
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if not isinstance(uri, str):
                raise _RpcError(-32602, f"{method} needs a string params.uri")
            member, inner = self._by_uri(members, uri)
            if member is None:
                raise _RpcError(-32602, f"unknown resource {uri!r}")
            result = await self._client(ctx, member).request(
                scope, method, {**_strip_meta(params), "uri": inner}, notes, caps
            )
            if isinstance(result, dict) and isinstance(result.get("contents"), list):
                for content in result["contents"]:
                    if isinstance(content, dict) and isinstance(content.get("uri"), str):
                        content["uri"] = member.uri_out(content["uri"])
            return result
        if method == "completion/complete":
            ref = params.get("ref") if isinstance(params.get("ref"), dict) else {}
            assert isinstance(ref, dict)
            if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
                member, inner = self._by_name(members, ref["name"], None)
                new_ref = {**ref, "name": inner}
            elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
                member, inner = self._by_uri(members, ref["uri"])
                new_ref = {**ref, "uri": inner}
            else:
                raise _RpcError(-32602, "completion/complete needs params.ref (ref/prompt or ref/resource)")
            if member is None:
                raise _RpcError(-32602, "unknown completion reference")
            return await self._client(ctx, member).request(
                scope, method, {**_strip_meta(params), "ref": new_ref}, None, caps
            )
        raise _RpcError(-32601, f"method {method!r} is not supported by a virtual server")

    def _client(self, ctx: Context, member: Member) -> MemberClient:
        client = ctx.clients.get(member.spec.adapter)
        if client is None:
            client = ctx.clients[member.spec.adapter] = MemberClient(
                self._app(),
                member.spec.adapter,
                self._eras,
                prefer_legacy=ctx.version != MODERN,
                on_list_changed=self.invalidate,
                backchannel=ctx.backchannel,
            )
            if ctx.log_level is not None:
                client._log_level = ctx.log_level
        return client

    def _by_name(
        self, members: Sequence[Member], name: str, identity: Identity | None, ctx: Context | None = None
    ) -> tuple[Member | None, str]:
        owner = ctx.owners.get(name) if ctx is not None else None
        if owner is not None:  # several members without a prefix (/mcp with the prefix off): the listing decides
            for member in members:
                if member.spec.adapter == owner and name.startswith(member.spec.prefix):
                    inner = name[len(member.spec.prefix) :]
                    if identity is None or member.visible(inner, identity):
                        return member, inner
        refused: tuple[Member, str] | None = None
        for member in sorted(members, key=lambda m: -len(m.spec.prefix)):
            if name.startswith(member.spec.prefix):
                inner = name[len(member.spec.prefix) :]
                if identity is not None and not member.visible(inner, identity):
                    if refused is None and member.selected(inner):
                        refused = (member, inner)
                    continue
                return member, inner
        if refused is not None:
            # A tool the member offers but its toolPolicy denies this caller: the call goes to the data
            # plane, which refuses it there (-32006, never forwarded upstream), audits it as denied and
            # counts it, exactly as a direct call (2026-11-30; before, the virtual server answered
            # "unknown tool" itself and the denial left no audit record).
            return refused
        return None, name

    def _by_uri(self, members: Sequence[Member], uri: str) -> tuple[Member | None, str]:
        if uri.startswith(URI_SCHEME):
            adapter, sep, inner = uri[len(URI_SCHEME) :].partition(":")
            for member in members:
                if sep and member.spec.adapter == adapter and member.spec.prefix:
                    return member, inner
        for member in members:
            if not member.spec.prefix:
                return member, uri
        return None, uri

    async def _list(
        self, scope: Mapping[str, Any], ctx: Context, identity: Identity, members: Sequence[Member], kind: str
    ) -> list[Any]:
        """The members' listings of ``kind`` merged for this caller (prefixed, filtered, deduplicated).

        Member listings come from the cache or from the members, in parallel; when every member
        answered, the merged result is cached as JSON bytes for the fast path in ``_serve``.
        """
        method = LIST_METHODS[kind]
        cache = self._listings
        versions = {m.spec.adapter: cache.version(m.spec.adapter) for m in members}
        expiries: list[float] = []

        async def one(member: Member) -> list[Any]:
            key = (member.spec.adapter, member.adapter.etag, identity.user_id, identity.roles, kind)
            cached = cache.member(key)
            if cached is not None:
                expiries.append(cached[0])
                return cached[1]
            items: list[Any] = []
            cursor: str | None = None
            async with asyncio.timeout(self._timeout):
                for _ in range(MAX_PAGES):
                    result = await self._client(ctx, member).request(
                        scope, method, {"cursor": cursor} if cursor else {}
                    )
                    page = result.get(kind) if isinstance(result, dict) else None
                    items += page if isinstance(page, list) else []
                    cursor = result.get("nextCursor") if isinstance(result, dict) else None
                    if not isinstance(cursor, str) or not cursor:
                        break
            expiries.append(cache.put_member(key, items, versions[member.spec.adapter]))
            return items

        results = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
        out: list[Any] = []
        seen: set[str] = set()
        owners: dict[str, str] = {}
        complete = True
        for member, result in zip(members, results, strict=True):
            if isinstance(result, BaseException):
                complete = False
                self.member_failures[member.spec.adapter] += 1
                reason = "timed out" if isinstance(result, TimeoutError) else str(result)
                log.warning("virtual server: %s of member %s left out: %s", method, member.spec.adapter, reason)
                continue
            for item in result:
                if not isinstance(item, dict):
                    continue
                entry = dict(item)
                if kind in ("tools", "prompts"):
                    name = entry.get("name")
                    if not isinstance(name, str) or (kind == "tools" and not member.visible(name, identity)):
                        continue
                    entry["name"] = member.spec.prefix + name
                    unique = entry["name"]
                elif kind == "resources":
                    if not isinstance(entry.get("uri"), str):
                        continue
                    entry["uri"] = unique = member.uri_out(entry["uri"])
                else:
                    if not isinstance(entry.get("uriTemplate"), str):
                        continue
                    entry["uriTemplate"] = unique = member.uri_out(entry["uriTemplate"])
                if unique in seen:
                    log.info(
                        "virtual server: %s %r of member %s hidden by an earlier member",
                        kind,
                        unique,
                        member.spec.adapter,
                    )
                    continue
                seen.add(unique)
                if kind in ("tools", "prompts"):
                    owners[unique] = member.spec.adapter
                out.append(entry)
        ctx.owners.update(owners)
        if complete and cache.enabled:  # a listing missing a failed member is never cached
            merged = MergedListing(
                body=msgspec.json.encode(out),
                owners=owners,
                adapters=frozenset(versions),
                expires=min(expiries, default=cache.fresh_until()),
            )
            cache.put_merged(_merged_key(kind, identity, members), merged, versions)
        return out

    def _cached_listing(
        self, ident: Any, ctx: Context, identity: Identity, members: Sequence[Member], method: str, *, modern: bool
    ) -> bytes | None:
        """The whole JSON-RPC answer to a listing request from the merged cache, or None on a miss.

        The cached items are spliced in as bytes; the envelope is what ``_handle`` builds for a listing
        (tests/unit/servers/test_servers_listing.py compares the two).
        """
        kind = LIST_KINDS.get(method)
        if kind is None or not self._listings.enabled:
            return None
        hit = self._listings.merged(_merged_key(kind, identity, members))
        if hit is None:
            return None
        ctx.owners.update(hit.owners)
        head = b'{"jsonrpc":"2.0","id":' + msgspec.json.encode(ident) + b',"result":{'
        items = b'"' + kind.encode() + b'":' + hit.body
        if not modern:
            return head + items + b"}}"
        return head + b'"resultType":"complete",' + items + self._modern_listing_tail + b"}}"

    def server_changed(self, name: str) -> None:
        """A server was updated or deleted through this replica: read it again on its next request."""
        self._records.pop(name, None)

    def invalidate(self, adapter: str | None = None) -> None:
        """Drop cached listings (of one member, with every merged listing including it; or all)."""
        self._listings.invalidate(adapter)

    # --- legacy HTTP+SSE --------------------------------------------------------------------

    async def _sse(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        identity: Identity,
        label: str,
        members: Sequence[Member],
        name: str | None,
    ) -> None:
        ctx = Context(key=secrets.token_urlsafe(32), user_id=identity.user_id, version="2024-11-05")
        ctx.queue = asyncio.Queue()
        self._streams[ctx.key] = ctx
        base = f"/servers/{name}/messages" if name is not None else "/messages"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        endpoint = f"event: endpoint\ndata: {base}?session_id={ctx.key}\n\n".encode()
        await send({"type": "http.response.body", "body": endpoint, "more_body": True})

        def frame(item: bytes | None) -> bytes | None:
            ctx.last_used = time.monotonic()
            return item

        try:
            await drain_queue(ctx.queue, receive, send, frame)
        finally:
            ctx.queue = None
            await self._end(ctx, scope)
            with contextlib.suppress(Exception):  # the client is gone
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _messages(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        identity: Identity,
        label: str,
        members: Sequence[Member],
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key = (query.get("session_id") or [""])[0]
        ctx = self._streams.get(key)
        if ctx is None or ctx.user_id != identity.user_id or ctx.queue is None:
            # A legacy session lives on the gateway holding its stream: a post that a load balancer sent
            # to another gateway lands here too (docs/servers.md, sessions across gateways).
            text = (
                "session not found on this gateway: a legacy SSE session is served by the gateway holding its "
                "/sse stream; open a new /sse stream (or route /messages to the same gateway)"
            )
            await _json(send, 404, _error(None, -32001, text))
            return
        body = await _read_body(receive, self._max_body)
        try:
            message = msgspec.json.decode(body)
        except msgspec.DecodeError:
            await _json(send, 400, _error(None, -32700, "the body is not JSON"))
            return
        if isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message):
            await self._answered(scope, send, ctx, message)  # a response to a relayed request
            return
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            await _json(send, 202, None)  # batches from the client: nothing to do
            return
        await _json(send, 202, None)
        if "id" not in message:
            self._notified(ctx, message)
            return
        notes = Relay(self._to_stream(ctx))
        if message["method"] == "initialize":
            version = (message.get("params") or {}).get("protocolVersion")
            ctx.version = version if version in LEGACY_VERSIONS else "2024-11-05"
            if ctx.backchannel is None:  # before any member session declares the capabilities
                ctx.backchannel = Backchannel(relayed_capabilities((message.get("params") or {}).get("capabilities")))
            result = {
                "protocolVersion": ctx.version,
                "capabilities": LEGACY_SSE_CAPABILITIES,
                "serverInfo": {**SERVER_INFO, "name": f"mcp-gateway/{label}"},
            }
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        else:
            handled = await self._cancellable(
                ctx, message["id"], self._handle(scope, ctx, identity, members, message, modern=False, notes=notes)
            )
            if handled is None:
                return
            answer = handled
        if ctx.queue is not None:
            ctx.queue.put_nowait(sse_event(answer))  # after the notifications, which went as they arrived

    @staticmethod
    def _to_stream(ctx: Context) -> Callable[[dict[str, Any]], Awaitable[None]]:
        """A relay ``send`` that puts each notification on the client's legacy SSE stream at once."""

        async def send(message: dict[str, Any]) -> None:
            body = message.get("body")
            if message["type"] == "http.response.body" and body and ctx.queue is not None:
                ctx.queue.put_nowait(body)

        return send


#: Methods 2026-07-28 removed: a modern request naming one is "method not found" (404), as from a modern server.
_REMOVED_IN_MODERN = frozenset(
    {
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "notifications/initialized",
    }
)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")
"""Control characters other than tab (refused in Mcp-* headers)."""


def _modern_check(headers: Mapping[str, str], message: dict[str, Any], meta: Any) -> tuple[int, int, str] | None:
    """What a 2026-07-28 server checks before acting: removed methods, ``_meta``, and the routing
    headers against the body (SEP-2575, SEP-2243); (status, code, message) when refused."""
    method = message["method"]
    if method in _REMOVED_IN_MODERN:
        return 404, -32601, f"method {method!r} does not exist in 2026-07-28"
    if "id" not in message:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("io.modelcontextprotocol/protocolVersion"), str):
        return 400, -32602, "params._meta must carry io.modelcontextprotocol/protocolVersion"
    if not isinstance(meta.get("io.modelcontextprotocol/clientCapabilities"), dict):
        return 400, -32602, "params._meta must carry io.modelcontextprotocol/clientCapabilities"
    version = headers.get("mcp-protocol-version")
    if version is not None and version.strip() != meta["io.modelcontextprotocol/protocolVersion"]:
        return 400, -32020, "MCP-Protocol-Version does not match params._meta"
    if meta["io.modelcontextprotocol/protocolVersion"] != MODERN:
        return 400, -32022, f"unsupported protocol version; supported: {MODERN}"
    for key in ("mcp-protocol-version", "mcp-method"):
        if headers.get(key) is None:
            return 400, -32020, f"the {key} header is required in 2026-07-28"
    if any(_CONTROL.search(v) for key, v in headers.items() if key.startswith("mcp-")):
        return 400, -32020, "an Mcp-* header holds control characters"
    header_method = headers.get("mcp-method")
    if header_method is not None and header_method.strip() != method:
        return 400, -32020, "Mcp-Method does not match the body's method"
    if method in ("tools/call", "prompts/get", "resources/read"):
        params = message.get("params") or {}
        named = params.get("uri" if method == "resources/read" else "name")
        header_name = headers.get("mcp-name")
        if header_name is None and named is not None:
            return 400, -32020, f"the mcp-name header is required for {method} in 2026-07-28"
        if header_name is not None and _header_value(header_name) != named:
            return 400, -32020, "Mcp-Name does not match the body"
    return None


def _header_value(raw: str) -> str | None:
    """A SEP-2243 header value: plain (trimmed) or ``=?base64?...?=``; None when undecodable."""
    value = raw.strip()
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return value


_ERA_META = frozenset(
    {
        "io.modelcontextprotocol/protocolVersion",
        "io.modelcontextprotocol/clientCapabilities",
        "io.modelcontextprotocol/clientInfo",
    }
)


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _strip_meta(params: dict[str, Any]) -> dict[str, Any]:
    """The client's params without its era markers (the member call adds its own)."""
    out = dict(params)
    meta = out.get("_meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in _ERA_META}
        if kept:
            out["_meta"] = kept
        else:
            out.pop("_meta")
    return out


def _error(ident: Any, code: int, message: str, member: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if member is not None:
        error["data"] = {"member": member}
    return {"jsonrpc": "2.0", "id": ident, "error": error}


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes (MCPGW_MAX_BODY_BYTES)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _json(send: Send, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
    if body is None:
        out = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        out.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await _json_bytes(send, status, msgspec.json.encode(body), headers)


async def _json_bytes(send: Send, status: int, raw: bytes, headers: Mapping[str, str] | None = None) -> None:
    out = [(b"content-type", b"application/json")]
    out += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    out.append((b"content-length", str(len(raw)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


async def _ready(answer: Any, relay: Relay) -> Any:
    """An answer already made (a cached listing), as the work of a resumable SSE answer."""
    return answer


def _merged_key(kind: str, identity: Identity, members: Sequence[Member]) -> MergedKey:
    """What a merged listing depends on: the caller (user id and roles: the members' own listings are
    theirs, the toolPolicy decides by role) and each member's spec and version, in order."""
    signature = tuple(
        (
            m.spec.adapter,
            m.spec.prefix,
            m.adapter.etag,
            None if m.spec.tools is None else tuple(m.spec.tools),
            tuple(m.spec.exclude),
        )
        for m in members
    )
    return kind, identity.user_id, identity.roles, signature
