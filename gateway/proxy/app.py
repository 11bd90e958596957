"""The data plane: an ASGI app that routes MCP traffic to adapter replicas.

Routes (DESIGN.md §2):

* ``POST|GET|DELETE /adapters/{name}/mcp`` — Streamable HTTP, every era. A request without a
  session id goes to the least busy ready replica. If the upstream answers with an
  ``Mcp-Session-Id`` (a 2025-era ``initialize``), the gateway records a session and hands the
  client a sealed id instead; later requests carrying it follow the pin. 2026-07-28 stateless
  requests never carry one, so they never touch the session store.
* ``GET /adapters/{name}/sse`` + ``POST /adapters/{name}/messages?session_id=`` — legacy HTTP+SSE.

Bodies stream both ways; upstream statuses and bodies pass through unchanged; a client
disconnect cancels the upstream request. Errors the gateway itself makes are JSON-RPC error
objects with a meaningful HTTP status (one map, ``_upstream_failure``, for every route). An
upstream body that breaks off (early close, mis-framing, silence) before the client's response
started is a 502; after, the client's connection is cut without the terminating chunk, so the
client can tell (2026-11-30, issue 12; gateway/proxy/upstream.py says what "breaks off" means).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode

import msgspec

from gateway.auth.base import Authenticator, can_read
from gateway.browser.cors import preflight_headers, request_origin, with_cors
from gateway.browser.hosts import HostPolicy
from gateway.credentials import UpstreamCredentialError, UpstreamCredentials, merge_headers
from gateway.errors import GatewayError, SessionStoreUnavailable, Unauthenticated
from gateway.models import AdapterRecord, Identity
from gateway.policy.audit import AuditTrail, CredentialAudit, credential_failed, credential_used
from gateway.policy.classify import RequestId
from gateway.policy.ratelimit import MemoryRateLimiter
from gateway.policy.toolpolicy import (
    MAX_SSE_EVENT,
    SseEventTooLarge,
    ToolsListSseFilter,
    filter_tools_list_body,
    merge_batch_response,
    sse_message_event,
)
from gateway.proxy.balancer import Balancer
from gateway.proxy.headers import downstream_headers, upstream_headers
from gateway.proxy.policy import McpStages, Plan
from gateway.proxy.routes import ALLOWED_METHODS
from gateway.proxy.sealing import SessionClaims
from gateway.proxy.sessions import SessionIdTooLong, SessionRejected, SessionRouter
from gateway.proxy.sse import EndpointRewriter, upstream_path
from gateway.proxy.upstream import (
    UpstreamClosed,
    UpstreamError,
    UpstreamPool,
    UpstreamPoolExhausted,
    UpstreamProtocolError,
    UpstreamResponse,
)
from gateway.runtime.base import Endpoint, Runtime, accepting
from gateway.sessions.base import SessionLimitExceeded
from gateway.store.view import AdapterView
from gateway.telemetry.logs import sanitize
from gateway.telemetry.requests import SCOPE_KEY, RequestTelemetry

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encoder = msgspec.json.Encoder()

"""The forward stage's hook for upstream credentials (``upstreamAuth``): extra headers for one request
to adapter ``name`` on behalf of ``identity``. None (the default): no extra headers."""


class ProxyError(Exception):
    """A response the gateway makes itself on an MCP route."""

    def __init__(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.rpc_id: RequestId = None
        """The request's JSON-RPC id when the MCP stages parsed the body (``_serve``); else null."""


class BodyTooLarge(Exception):
    """The client sent more than max_body_bytes."""


class ClientDisconnected(Exception):
    """The client went away; the upstream request was cancelled."""


class ResponseAborted(Exception):
    """The upstream's body broke off after the client's response started: the client connection
    must be closed without the terminating chunk, so the client sees a truncated response.

    Raised out of the ASGI app on purpose: uvicorn then closes the transport (verified with a raw
    socket in tests/adversarial/test_upstream_gateway.py). ``deliberate_abort`` lets the logging
    filter in gateway/telemetry/logs.py drop uvicorn's traceback for it.
    """

    deliberate_abort = True


class McpProxy:
    """Routes MCP requests to replicas; see the module docstring."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        view: AdapterView,
        runtime: Runtime,
        sessions: SessionRouter,
        hosts: HostPolicy,
        max_body_bytes: int,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int,
        www_authenticate: Callable[[str, str | None, str | None], str],
        telemetry: RequestTelemetry | None = None,
        upstream_max_header_bytes: int = 64 * 1024,
        upstream_max_header_fields: int = 100,
        trusted_proxies: tuple[str, ...] = (),
        sse_keepalive_interval: float = 15.0,
        stages: McpStages | None = None,
        credentials: UpstreamCredentials | None = None,
    ) -> None:
        self._auth = authenticator
        self._view = view
        self._runtime = runtime
        self._sessions = sessions
        self._hosts = hosts
        self._max_body = max_body_bytes
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_size = pool_size
        self._www_authenticate = www_authenticate
        self._telemetry = telemetry or RequestTelemetry.disabled()
        self._balancer = Balancer()
        self._client: UpstreamPool | None = None
        self._max_header_bytes = upstream_max_header_bytes
        self._max_header_fields = upstream_max_header_fields
        self._trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._releases: set[asyncio.Task[None]] = set()
        self._keepalive = sse_keepalive_interval
        self.stages = stages or McpStages(limiter=MemoryRateLimiter(), audit=AuditTrail([]))
        self._credentials = credentials
        self._channels: dict[str, _LegacyChannel] = {}
        self.open_streams = 0
        self.keepalives_sent = 0
        self.upstream_aborts: dict[str, int] = {}
        """Responses whose upstream body broke off, by reason (closed, protocol, timeout)."""

    async def start(self) -> None:
        """Open the upstream connection pool."""
        self._client = UpstreamPool(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            max_per_host=self._pool_size,
            max_header_bytes=self._max_header_bytes,
            max_header_fields=self._max_header_fields,
        )

    async def close(self) -> None:
        """Close the pool."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str, route: str) -> None:
        """Serve one request to ``/adapters/{name}/{route}``."""
        send = self._telemetry.request_started(scope, send, name, route)
        origin = request_origin(scope["headers"])
        if origin is not None:
            if scope["method"] == "OPTIONS":
                await self._preflight(scope, send, route, origin)
                self._telemetry.request_finished(scope)
                return
            if self._hosts.check(None, origin.decode("latin-1")) is None:
                send = with_cors(send, origin)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._serve(scope, receive, tracked_send, name, route)
        except ProxyError as exc:
            if not started:
                await _error(send, exc)
        except GatewayError as exc:
            if not started:
                await _error(send, _from_gateway_error(exc, self._www_authenticate, scope["path"]))
        except ClientDisconnected:
            return
        except ResponseAborted:
            raise  # uvicorn closes the client connection: no terminating chunk, the client sees the cut
        except BodyTooLarge:
            if not started:
                await _error(send, ProxyError(413, -32600, f"request body is larger than {self._max_body} bytes"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("proxy failure on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _error(send, ProxyError(502, -32603, "the gateway could not complete the upstream request"))
        finally:
            self._telemetry.request_finished(scope)

    async def _preflight(self, scope: Scope, send: Send, route: str, origin: bytes) -> None:
        """Answer a CORS preflight: 204 for an accepted origin, else 403."""
        headers = _header_map(scope["headers"])
        problem = self._hosts.check(headers.get("host"), origin.decode("latin-1"))
        if problem is not None:
            await _error(send, ProxyError(problem[0], -32600, problem[1]))
            return
        out = preflight_headers(origin, ALLOWED_METHODS[route], headers.get("access-control-request-headers"))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _serve(self, scope: Scope, receive: Receive, send: Send, name: str, route: str) -> None:
        """The pipeline after the edge (gateway/edge.py) and CORS (``__call__``), in order; each stage
        raises ProxyError/GatewayError to answer, or returns what the next stage needs (README: the table)."""
        headers = self._stage_host_origin(scope, route)
        identity = await self._auth.authenticate(headers)  # authentication
        adapter = self._stage_adapter(name, identity)
        plan = await self._stage_mcp(scope, receive, headers, identity, adapter, route)
        if plan is not None and plan.local is not None and route != "messages":
            await _answer(send, plan.local.status, plan.local.body, plan.local.headers)
            return
        try:
            # routing (stateless / pinned / legacy) → forward → response filters
            if route == "mcp":
                await self._streamable(scope, receive, send, name, identity, headers, plan, adapter)
            elif route == "sse":
                await self._sse(scope, receive, send, name, identity, headers, adapter)
            else:
                await self._messages(scope, receive, send, name, identity, headers, plan, adapter)
        except (ProxyError, GatewayError) as exc:
            if plan is None or plan.rpc_id is None:
                raise
            # The body was parsed by the MCP stages: the error answers the request's id (issue 17). A
            # streamed body is never read just for this; its errors keep ``id: null``.
            path = scope["path"]
            error = exc if isinstance(exc, ProxyError) else _from_gateway_error(exc, self._www_authenticate, path)
            error.rpc_id = plan.rpc_id
            raise error from None

    def _stage_host_origin(self, scope: Scope, route: str) -> dict[str, str]:
        """Method allowed on the route (405), Host and Origin accepted (gateway/browser/hosts.py); the headers."""
        method: str = scope["method"]
        allowed = ALLOWED_METHODS[route]
        if method not in allowed:
            raise ProxyError(405, -32600, f"{method} is not supported on /{route}", {"Allow": ", ".join(allowed)})
        headers = _header_map(scope["headers"])
        problem = self._hosts.check(headers.get("host"), headers.get("origin"))
        if problem is not None:
            raise ProxyError(problem[0], -32600, problem[1])
        return headers

    def _stage_adapter(self, name: str, identity: Identity) -> AdapterRecord:
        """The adapter exists (404) and the caller may use it (403)."""
        adapter = self._view.get(name)
        if adapter is None:
            raise ProxyError(404, -32601, f"adapter {name!r} does not exist")
        if not can_read(identity, adapter):
            raise ProxyError(403, -32600, f"you may not use adapter {name!r}")
        return adapter

    async def _stage_mcp(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        identity: Identity,
        adapter: AdapterRecord,
        route: str,
    ) -> Plan | None:
        """Classify → tool authorization → rate limits (gateway/proxy/policy.py) on POST bodies, only
        when a stage is configured for the adapter; None (the body is not read) otherwise."""
        if scope["method"] != "POST" or not self.stages.active(adapter):
            return None
        body, _ = await self._request_body(scope, receive, headers)
        request_id = trace_id = None
        if self.stages.audit.enabled:
            request_id, trace_id = _request_ids(scope, headers)
        return await self.stages.plan(
            adapter, identity, headers, body, legacy=route == "messages", request_id=request_id, trace_id=trace_id
        )

    # --- Streamable HTTP --------------------------------------------------------------------

    async def _streamable(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        identity: Identity,
        headers: dict[str, str],
        plan: Plan | None,
        record: AdapterRecord,
    ) -> None:
        token = headers.get("mcp-session-id")
        if token:
            claims = await self._check_session(token, "mcp", name, identity)
            endpoint = self._pinned(claims)
            query = scope.get("query_string", b"")
            url = endpoint.url + "/mcp" + (f"?{query.decode('latin-1')}" if query else "")
            status = await self._forward(
                scope, receive, send, endpoint, url, identity, headers,
                upstream_session=claims.upstream, claims=claims, plan=plan, record=record,
            )  # fmt: skip
            if (scope["method"] == "DELETE" and (200 <= status < 300 or status in (404, 405))) or status == 404:
                await self._sessions.revoke(claims)
                self._audit_session("session.end", claims, identity, status)
            return
        endpoint = self._choose(name)
        query = scope.get("query_string", b"")
        url = endpoint.url + "/mcp" + (f"?{query.decode('latin-1')}" if query else "")
        await self._forward(
            scope, receive, send, endpoint, url, identity, headers,
            upstream_session=None, claims=None, plan=plan, record=record,
        )  # fmt: skip

    async def _check_session(self, token: str, kind: str, name: str, identity: Identity) -> SessionClaims:
        try:
            return await self._sessions.check(token, kind=kind, adapter=name, user_id=identity.user_id)
        except SessionRejected as exc:
            log.info("session rejected on adapter %s: %s", name, exc)
            raise ProxyError(404, -32001, "session not found: initialize a new session") from None

    def _pinned(self, claims: SessionClaims) -> Endpoint:
        for endpoint in self._runtime.endpoints(claims.adapter):
            if endpoint.uid == claims.replica_uid:
                return endpoint
        log.info("session of adapter %s pinned to replica %s, which is gone", claims.adapter, claims.replica)
        self._sessions.forget(claims)  # in case this gateway missed the endpoint change
        raise ProxyError(404, -32001, "session not found: its replica is gone; initialize a new session")

    def _choose(self, name: str) -> Endpoint:
        endpoints = accepting(self._runtime.endpoints(name))  # a draining replica serves its pinned sessions only
        if not endpoints:
            raise ProxyError(503, -32002, f"adapter {name!r} has no ready replica", {"Retry-After": "2"})
        return self._balancer.pick(name, endpoints)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        url: str,
        identity: Identity,
        request_headers: dict[str, str],
        *,
        upstream_session: str | None,
        claims: SessionClaims | None,
        plan: Plan | None = None,
        record: AdapterRecord | None = None,
    ) -> int:
        """Send the request to ``url`` and stream the answer back; returns the upstream status.

        The forward stage: ``plan`` (from the MCP stages) carries the already-read body and what the
        response filters need; without it the body streams through unread.
        """
        assert self._client is not None
        out_headers = self._upstream_headers(scope, identity, upstream_session, request_headers)
        out_headers = await self._with_credentials(scope, identity, out_headers, plan)  # upstreamAuth (issue 18)
        if plan is not None:
            body, body_done = plan.body, True
        else:
            body, body_done = await self._request_body(scope, receive, request_headers)
        status = 0
        self._balancer.begin(endpoint)
        try:
            async with _DisconnectWatch(receive, body_done):
                sent = time.perf_counter()
                try:
                    response = await self._client.request(
                        scope["method"], url, out_headers, body, identity=identity.user_id
                    )
                except UpstreamError as exc:
                    raise _upstream_failure(exc, endpoint.replica) from None
                async with response:
                    status = response.status
                    headers = downstream_headers(response.raw_headers)
                    upstream_id = response.header("mcp-session-id")
                    self._telemetry.upstream_answered(scope, endpoint.replica, sent, opened_session=bool(upstream_id))
                    if upstream_id and claims is None and 200 <= response.status < 300:
                        # Only an initialize the upstream accepted opens a session (issue 12).
                        token, _ = await self._open_session("mcp", endpoint, upstream_id, scope, identity)
                        headers.append((b"mcp-session-id", token.encode()))
                    elif upstream_id and "mcp-session-id" in request_headers:  # echo the client's sealed id
                        headers.append((b"mcp-session-id", request_headers["mcp-session-id"].encode("latin-1")))
                    await self._stream_response(send, response, headers, endpoint.replica, plan, identity)
                    return response.status
        finally:
            self._balancer.end(endpoint)
            if plan is not None and record is not None:
                self.stages.answered(plan, record, identity, status)

    async def _open_session(
        self, kind: str, endpoint: Endpoint, upstream: str, scope: Scope, identity: Identity
    ) -> tuple[str, SessionClaims]:
        """Record the session the upstream opened; 429 over a cap, 502 for an id too long to seal.

        When the gateway refuses a 2025-era session the upstream already opened, the upstream's
        session is closed (DELETE, in the background) so refused sessions do not fill its table;
        a refused legacy SSE session ends with its stream.
        """
        name = scope["path"].split("/")[2]
        try:
            opened = await self._sessions.open_session(
                kind=kind,
                adapter=name,
                replica=endpoint.replica,
                replica_uid=endpoint.uid,
                upstream=upstream,
                user_id=identity.user_id,
            )
            self._audit_session("session.start", opened[1], identity, 200)
            return opened
        except SessionStoreUnavailable as exc:
            raise ProxyError(503, -32005, f"cannot open a session: {exc.detail}", {"Retry-After": "5"}) from None
        except SessionLimitExceeded as exc:
            if kind == "mcp":
                self._release_upstream_session(endpoint, upstream, scope, identity)
            holder = f"user {identity.user_id!r}" if exc.limit == "per_user" else "all users together"
            raise ProxyError(
                429,
                SESSION_LIMITED,
                f"session limit reached: {holder} may hold at most {exc.maximum} open sessions on adapter "
                f"{name!r} ({exc.setting}); close a session (DELETE) or retry later",
                {"Retry-After": str(math.ceil(exc.retry_after))},
            ) from None
        except SessionIdTooLong as exc:
            if kind == "mcp":
                self._release_upstream_session(endpoint, upstream, scope, identity)
            raise ProxyError(502, -32003, f"replica {endpoint.replica} cannot be used with sessions: {exc}") from None

    def _release_upstream_session(self, endpoint: Endpoint, upstream: str, scope: Scope, identity: Identity) -> None:
        """DELETE a session the upstream opened and the gateway refused (best effort, in the background)."""
        client = self._client
        if client is None:
            return
        kept = [(k, v) for k, v in scope["headers"] if k.lower() == b"mcp-protocol-version"]
        headers = upstream_headers(
            kept,
            client_ip="127.0.0.1",
            trusted_peer=False,
            scheme="http",
            user_id=identity.user_id,
            roles=(),
            session_id=upstream,
        )

        async def release() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._connect_timeout + 5):
                    response = await client.request(
                        "DELETE", endpoint.url + "/mcp", headers, b"", identity=identity.user_id
                    )
                    async with response:
                        while await response.read_chunk():
                            pass

        task = asyncio.create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _stream_response(
        self,
        send: Send,
        response: UpstreamResponse,
        headers: list[Any],
        replica: str,
        plan: Plan | None = None,
        identity: Identity | None = None,
    ) -> None:
        """Stream the upstream's answer to the client; a body that breaks off aborts the client's response.

        Response filters: with a ``plan`` that has ``tools/list`` answers to trim or local errors to
        merge (a batch mixing allowed and denied calls), JSON answers are read whole and rewritten,
        SSE answers are filtered event by event.
        """
        streaming = response.content_type == "text/event-stream"
        rewrite = plan is not None and (bool(plan.listing_ids) or bool(plan.merged))
        if rewrite and not streaming:
            assert plan is not None and identity is not None
            await self._rewrite_json(send, response, headers, replica, plan, identity)
            return
        if streaming:
            self.open_streams += 1
        try:
            first = b""
            if not streaming:
                # Read up to PREREAD_BYTES before answering: a JSON body that breaks off is then a
                # clean 502, not a cut 200. Most answers arrive with their head: no extra wait.
                try:
                    first = await _preread(response)
                except UpstreamError as exc:
                    self._count_abort(exc)
                    raise _upstream_failure(exc, replica) from None
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            if streaming:
                sse_filter = None
                if plan is not None and plan.policy is not None and plan.listing_ids and identity is not None:
                    sse_filter = ToolsListSseFilter(plan.listing_ids, plan.policy, identity.roles)
                extra = [sse_message_event(e) for e in plan.merged] if plan is not None else []
                await self._relay_events(send, response, replica, b"", sse_filter=sse_filter, extra=extra)
                return
            try:
                chunk = first or await response.read_chunk()
                while chunk:
                    # A chunk that ends the body is sent as the last one: one write instead of two.
                    last = response.at_eof()
                    await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                    if last:
                        return
                    chunk = await response.read_chunk()
            except UpstreamError as exc:
                self._abort(exc, replica)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if streaming:
                self.open_streams -= 1

    async def _rewrite_json(
        self,
        send: Send,
        response: UpstreamResponse,
        headers: list[Any],
        replica: str,
        plan: Plan,
        identity: Identity,
    ) -> None:
        """Response filter for JSON answers: trim ``tools/list`` results, merge a mixed batch's local errors."""
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await response.read_chunk():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_SSE_EVENT:
                    too_large = f"replica {replica} answered more than {MAX_SSE_EVENT} bytes to filter"
                    raise ProxyError(502, -32003, too_large)
        except UpstreamError as exc:
            self._count_abort(exc)
            raise _upstream_failure(exc, replica) from None
        body = b"".join(chunks)
        status = response.status
        if plan.policy is not None and plan.listing_ids:
            body = filter_tools_list_body(body, plan.listing_ids, plan.policy, identity.roles)
        if plan.merged:
            body = merge_batch_response(body, plan.merged)
            if status == 202:  # only notifications went upstream: the local errors are the answer
                status = 200
                headers = [h for h in headers if h[0] != b"content-type"] + [(b"content-type", b"application/json")]
        await _answer_raw(send, status, body, headers)

    async def _relay_events(
        self,
        send: Send,
        response: UpstreamResponse,
        replica: str,
        sent: bytes,
        *,
        sse_filter: ToolsListSseFilter | None = None,
        extra: list[bytes] | None = None,
        channel: _LegacyChannel | None = None,
    ) -> None:
        """Relay an SSE body (headers already sent; ``sent`` = the bytes already sent, if any).

        Every ``sse_keepalive_interval`` seconds without upstream bytes, and only between two events
        (the bytes sent so far end with a blank line), the client gets a comment line ``: keep-alive``,
        which every SSE parser ignores: load balancers in the path (Azure LB ≈ 4 min, App Gateway)
        then never see the connection idle (2026-11-30, issue 14). Events pass byte for byte.
        """
        if channel is not None:
            await self._relay_legacy(send, response, replica, sent, channel, sse_filter)
            return
        interval = self._keepalive
        loop = asyncio.get_running_loop()
        tail = sent[-4:] if sent else b"\n\n"
        silent_since = loop.time()
        try:
            while True:
                if interval > 0:
                    chunk = await response.read_chunk_or_idle(interval, silent_since)
                    if chunk is None:
                        if tail.endswith(_EVENT_ENDS):
                            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                            self.keepalives_sent += 1
                        continue
                else:
                    chunk = await response.read_chunk()
                if not chunk:
                    break
                silent_since = loop.time()
                if sse_filter is not None:
                    chunk = sse_filter.feed(chunk)
                    if not chunk:
                        continue
                tail = (tail + chunk)[-4:]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if sse_filter is not None and (rest := sse_filter.flush()):
                await send({"type": "http.response.body", "body": rest, "more_body": True})
        except UpstreamError as exc:
            self._abort(exc, replica)
        except SseEventTooLarge as exc:
            log.warning("aborting the SSE answer from replica %s: %s", replica, exc)
            raise ResponseAborted(str(exc)) from None
        if extra:  # local errors of a batch mixing allowed and denied calls
            await send({"type": "http.response.body", "body": b"".join(extra), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay_legacy(
        self,
        send: Send,
        response: UpstreamResponse,
        replica: str,
        sent: bytes,
        channel: _LegacyChannel,
        sse_filter: ToolsListSseFilter | None,
    ) -> None:
        """Relay a legacy SSE stream, interleaving the gateway's own events (denied calls posted to
        ``/messages``) between the upstream's events, with keep-alives on idle."""
        queue = channel.queue
        credits = asyncio.Semaphore(RELAY_AHEAD)  # backpressure: the reader stays at most this many chunks ahead

        async def reader() -> None:
            try:
                while chunk := await response.read_chunk():
                    await credits.acquire()
                    queue.put_nowait((False, chunk))
                queue.put_nowait((False, b""))
            except UpstreamError as exc:
                queue.put_nowait((False, exc))

        task = asyncio.create_task(reader())
        tail = sent[-4:] if sent else b"\n\n"
        held: list[bytes] = []
        interval = self._keepalive if self._keepalive > 0 else None
        try:
            while True:
                try:
                    local, item = await asyncio.wait_for(queue.get(), interval)
                except TimeoutError:
                    if tail.endswith(_EVENT_ENDS):
                        await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                        self.keepalives_sent += 1
                    continue
                if isinstance(item, UpstreamError):
                    self._abort(item, replica)
                if local:
                    held.append(item)
                elif not item:
                    break
                else:
                    credits.release()
                    if sse_filter is not None:
                        item = sse_filter.feed(item)
                    if item:
                        tail = (tail + item)[-4:]
                        await send({"type": "http.response.body", "body": item, "more_body": True})
                if held and tail.endswith(_EVENT_ENDS):
                    out, held = b"".join(held), []
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except SseEventTooLarge as exc:
            log.warning("aborting the SSE stream from replica %s: %s", replica, exc)
            raise ResponseAborted(str(exc)) from None
        finally:
            task.cancel()

    def _count_abort(self, exc: UpstreamError) -> str:
        if isinstance(exc, UpstreamClosed):
            reason = "closed"
        elif isinstance(exc, TimeoutError):
            reason = "timeout"
        else:
            reason = "protocol"
        self.upstream_aborts[reason] = self.upstream_aborts.get(reason, 0) + 1
        return reason

    def _abort(self, exc: UpstreamError, replica: str) -> NoReturn:
        """The response started and its upstream body broke off: count it, cut the client off."""
        reason = self._count_abort(exc)
        log.warning("aborting the response from replica %s (%s): %s", replica, reason, exc)
        raise ResponseAborted(str(exc)) from None

    def _upstream_headers(
        self, scope: Scope, identity: Identity, upstream_session: str | None, request_headers: dict[str, str]
    ) -> list[tuple[bytes, bytes]]:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        out = upstream_headers(
            scope["headers"],
            client_ip=peer,
            trusted_peer=bool(self._trusted) and _in_networks(peer, self._trusted),
            scheme=scope.get("scheme", "http"),
            user_id=identity.user_id,
            roles=identity.roles,
            session_id=upstream_session,
        )
        self._telemetry.upstream_request(scope, out, identity.user_id)
        return out

    async def _with_credentials(
        self, scope: Scope, identity: Identity, out: list[tuple[bytes, bytes]], plan: Plan | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The adapter's upstream credential (``upstreamAuth``) added to ``out``; its kind and outcome
        (issued, cached, failed with its JSON-RPC code) audited, never its value (issue 18)."""
        adapter = self._view.get(scope["path"].split("/")[2]) if self._credentials is not None else None
        if adapter is None or self._credentials is None or adapter.upstream_auth.type == "none":
            return out
        audit = self.stages.audit.enabled
        try:
            credential = await self._credentials.issue(adapter, identity, identity.bearer_token)
        except UpstreamCredentialError as exc:
            if audit:
                used = credential_failed(adapter.upstream_auth.type, exc.rpc_code, exc.outcome)
                self._audit_credential(scope, plan, adapter, identity, used, exc.status)
            raise
        if audit:
            self._audit_credential(
                scope, plan, adapter, identity, credential_used(credential.type, credential.issued), None
            )
        return merge_headers(out, credential.headers)

    def _audit_credential(
        self,
        scope: Scope,
        plan: Plan | None,
        adapter: AdapterRecord,
        identity: Identity,
        used: CredentialAudit,
        status: int | None,
    ) -> None:
        """The credential's audit record(s) (gateway/proxy/policy.py ``credential_audit``); a request without
        a plan (GET, DELETE) takes its request and trace ids from its headers here."""
        ids = _request_ids(scope, _header_map(scope["headers"])) if plan is None else (None, None)
        self.stages.credential_audit(plan, adapter, identity, used, status=status, request_id=ids[0], trace_id=ids[1])

    async def _request_body(
        self, scope: Scope, receive: Receive, request_headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        """The request body: bytes when it came in one piece, else a size-checked stream.

        The flag says whether the whole body has been read (so disconnects can be watched).
        """
        if scope["method"] in ("GET", "DELETE", "HEAD"):
            return b"", True
        length = request_headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise BodyTooLarge()
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        first: bytes = message.get("body", b"")
        if len(first) > self._max_body:
            raise BodyTooLarge()
        if not message.get("more_body", False):
            return first, True
        chunks = [first]
        size = len(first)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    # --- legacy HTTP+SSE --------------------------------------------------------------------

    async def _sse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        identity: Identity,
        headers: dict[str, str],
        record: AdapterRecord,
    ) -> None:
        assert self._client is not None
        endpoint = self._choose(name)
        query = scope.get("query_string", b"")
        url = endpoint.url + "/sse" + (f"?{query.decode('latin-1')}" if query else "")
        out_headers = self._upstream_headers(scope, identity, None, headers)
        out_headers = await self._with_credentials(scope, identity, out_headers)  # issue 18: forward stage
        claims: SessionClaims | None = None
        self._balancer.begin(endpoint)
        try:
            async with _DisconnectWatch(receive, True):
                sent = time.perf_counter()
                try:
                    response = await self._client.request("GET", url, out_headers, b"", identity=identity.user_id)
                except UpstreamError as exc:
                    raise _upstream_failure(exc, endpoint.replica) from None
                async with response:
                    self._telemetry.upstream_answered(scope, endpoint.replica, sent)
                    if response.status != 200 or response.content_type != "text/event-stream":
                        await self._stream_response(
                            send, response, downstream_headers(response.raw_headers), endpoint.replica
                        )
                        return
                    try:
                        rewriter = await self._sse_preamble(scope, name, endpoint, identity, response, headers)
                    except UpstreamError as exc:
                        self._count_abort(exc)
                        raise _upstream_failure(exc, endpoint.replica) from None
                    claims = rewriter[1]
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": downstream_headers(response.raw_headers),
                        }
                    )
                    await send({"type": "http.response.body", "body": rewriter[0], "more_body": True})
                    self.open_streams += 1
                    channel = self._channels[claims.sid] = _LegacyChannel()
                    policy = self.stages.policy(record)
                    sse_filter = (
                        ToolsListSseFilter(channel.listing_ids, policy, identity.roles)
                        if policy is not None and policy.restricts(identity.roles)
                        else None
                    )
                    try:
                        await self._relay_events(
                            send, response, endpoint.replica, rewriter[0], sse_filter=sse_filter, channel=channel
                        )
                    finally:
                        self.open_streams -= 1
        finally:
            self._balancer.end(endpoint)
            if claims is not None:
                self._channels.pop(claims.sid, None)
                self._audit_session("session.end", claims, identity, 200)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._sessions.revoke(claims))

    async def _sse_preamble(
        self,
        scope: Scope,
        name: str,
        endpoint: Endpoint,
        identity: Identity,
        response: UpstreamResponse,
        request_headers: dict[str, str],
    ) -> tuple[bytes, SessionClaims]:
        """Read up to the endpoint event, open the session, return the rewritten bytes and the claims."""
        probe = EndpointRewriter(lambda upstream, absolute: upstream)
        buffered = b""
        while not probe.done:
            chunk = await response.read_chunk()
            if not chunk:
                raise ProxyError(502, -32003, f"replica {endpoint.replica} closed the SSE stream before its endpoint")
            buffered += chunk
            try:
                probe.feed(chunk)
            except ValueError:
                raise ProxyError(502, -32003, f"replica {endpoint.replica} sent no SSE endpoint event") from None
        assert probe.upstream_endpoint is not None
        token, claims = await self._open_session(
            "sse", endpoint, upstream_path(probe.upstream_endpoint), scope, identity
        )

        def gateway_url(upstream: str, absolute: bool) -> str:
            path = f"/adapters/{name}/messages?{urlencode({'session_id': token})}"
            if absolute:
                return f"{scope.get('scheme', 'http')}://{request_headers.get('host', '')}{path}"
            return path

        return EndpointRewriter(gateway_url).feed(buffered), claims

    async def _messages(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        identity: Identity,
        headers: dict[str, str],
        plan: Plan | None,
        record: AdapterRecord,
    ) -> None:
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = params.get("session_id") or params.get("sessionId")
        if not token:
            raise ProxyError(400, -32600, "session_id query parameter is required")
        claims = await self._check_session(token, "sse", name, identity)
        channel = self._channels.get(claims.sid)
        if plan is not None and plan.local is not None:
            if channel is None or plan.local.status != 403 or channel.queue.qsize() >= MAX_INJECTED:
                # Limits (429/503) and unusable bodies (400) answer the POST itself; a denied call whose
                # client stream is held by another gateway replica can only be answered here too.
                await _answer(send, plan.local.status, plan.local.body, plan.local.headers)
                return
            for response in plan.local.responses:  # the error arrives on the client's stream, like an answer
                channel.queue.put_nowait((True, sse_message_event(response)))
            await _answer(send, 202, b"", {})
            return
        if plan is not None and channel is not None:
            channel.listing_ids.update(plan.listing_ids)
            for response in plan.merged:
                channel.queue.put_nowait((True, sse_message_event(response)))
            plan.merged = []
            plan.listing_ids = set()
        endpoint = self._pinned(claims)
        url = endpoint.url + claims.upstream
        await self._forward(
            scope, receive, send, endpoint, url, identity, headers,
            upstream_session=None, claims=claims, plan=plan, record=record,
        )  # fmt: skip

    def _audit_session(self, event: Any, claims: SessionClaims, identity: Identity, status: int) -> None:
        audit = self.stages.audit
        if audit.enabled:
            audit.record(
                event, "allowed", user=identity.user_id, roles=identity.roles, adapter=claims.adapter,
                status=status, era="legacy" if claims.kind == "sse" else "session",
            )  # fmt: skip


SESSION_LIMITED = -32008
"""JSON-RPC code of a refused session (per-user / per-adapter cap); see docs/policy.md's table."""


RELAY_AHEAD = 4
"""Upstream chunks a legacy SSE relay reads ahead of a slow client (then the upstream is not read)."""
MAX_INJECTED = 256
"""Gateway events waiting for a legacy stream; beyond, a denied call's error answers the POST itself."""


class _LegacyChannel:
    """What the ``/messages`` stage shares with the legacy SSE stream of the same session on this gateway:
    the gateway's own events to interleave (local errors) and the ids of ``tools/list`` requests to trim."""

    __slots__ = ("listing_ids", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self.listing_ids: set[Any] = set()


KEEPALIVE = b": keep-alive\n\n"
"""An SSE comment: parsers skip it; it only keeps idle connections open."""
_EVENT_ENDS = (b"\n\n", b"\r\r", b"\n\r", b"\r\n\r\n", b"\r\r\n")
"""Endings of an SSE byte stream that sit between events (a blank line was just completed)."""

PREREAD_BYTES = 64 * 1024
"""A non-SSE upstream body up to this size is read whole before the client's response starts."""


async def _preread(response: UpstreamResponse) -> bytes:
    """The body's first bytes: all of it when it ends within PREREAD_BYTES (raises if it breaks off)."""
    chunk = await response.read_chunk()
    if not chunk or response.at_eof():
        return chunk
    chunks = [chunk]
    size = len(chunk)
    while size < PREREAD_BYTES and (chunk := await response.read_chunk()):
        chunks.append(chunk)
        size += len(chunk)
        if response.at_eof():
            break
    return b"".join(chunks)


def _upstream_failure(exc: UpstreamError, replica: str) -> ProxyError:
    """The one map from an upstream failure before the response started to the client's error."""
    if isinstance(exc, UpstreamPoolExhausted):
        return ProxyError(503, -32002, f"replica {replica} is busy: {exc}", {"Retry-After": "1"})
    if isinstance(exc, TimeoutError):
        return ProxyError(504, -32004, f"replica {replica} did not answer in time: {exc}")
    if isinstance(exc, UpstreamProtocolError):
        return ProxyError(502, -32003, f"replica {replica} sent an invalid response: {exc}")
    return ProxyError(502, -32003, f"replica {replica} is unreachable: {exc}")


def _request_ids(scope: Scope, headers: dict[str, str]) -> tuple[str | None, str | None]:
    """Request id (the telemetry's, else the client's X-Request-Id) and trace id (the request span's, else
    the client's traceparent) for audit records."""
    req = scope.get(SCOPE_KEY)
    request_id = getattr(req, "request_id", None) or sanitize(headers.get("x-request-id", ""), 64) or None
    span = getattr(req, "span", None)
    if span is not None:
        trace_id: str | None = format(span.get_span_context().trace_id, "032x")
    else:
        parent = headers.get("traceparent", "")
        trace_id = parent[3:35] if len(parent) >= 55 and all(c in "0123456789abcdef" for c in parent[3:35]) else None
    return request_id, trace_id


def _in_networks(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


DISCONNECT_WATCH_DELAY = 0.01
"""Seconds before a request starts watching for its client to disconnect (see _DisconnectWatch)."""


class _DisconnectWatch:
    """Cancel the enclosed work when the client disconnects (after the body was read).

    Watching takes a task that waits on ``receive()``. Most proxied calls are over in a few
    milliseconds, so the task is only started after ``DISCONNECT_WATCH_DELAY``: a timer costs a
    tenth of a task, and a client that leaves in the first 10 ms is noticed 10 ms later at most.
    A class rather than an ``asynccontextmanager``, which costs several times more per request.
    """

    __slots__ = ("_disconnected", "_receive", "_task", "_timer", "_watch", "_watcher")

    def __init__(self, receive: Receive, watch: bool) -> None:
        self._receive = receive
        self._watch = watch
        self._disconnected = False
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        if self._watch:
            self._task = asyncio.current_task()
            assert self._task is not None
            self._timer = asyncio.get_running_loop().call_later(DISCONNECT_WATCH_DELAY, self._start)

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.create_task(self._watch_disconnect())

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                assert self._task is not None
                self._task.cancel()
                return

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        watcher, self._watcher = self._watcher, None  # its CancelledError's frames hold self: no cycle
        if watcher is None:
            return
        watcher.cancel()
        if self._disconnected and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            assert self._task is not None
            self._task.uncancel()
            raise ClientDisconnected() from None


async def _answer(send: Send, status: int, body: bytes, extra: Mapping[str, str]) -> None:
    """A local answer of the MCP stages (JSON body, or empty for 202)."""
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _answer_raw(send: Send, status: int, body: bytes, headers: list[Any]) -> None:
    out = [h for h in headers if h[0] != b"content-length"] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _error(send: Send, exc: ProxyError) -> None:
    body = _encoder.encode({"jsonrpc": "2.0", "id": exc.rpc_id, "error": {"code": exc.code, "message": exc.message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _from_gateway_error(
    exc: GatewayError, www_authenticate: Callable[[str, str | None, str | None], str], path: str
) -> ProxyError:
    headers = dict(exc.headers)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = www_authenticate(path, exc.error, exc.detail)
    if isinstance(exc, UpstreamCredentialError):
        return _credential_error(exc, www_authenticate, path, headers)
    return ProxyError(exc.status, -32600 if exc.status < 500 else -32603, exc.detail, headers)


#: JSON-RPC codes of upstream-credential failures: the caller must act (consent, new token) / the gateway's.
CREDENTIAL_ACTION_CODE, CREDENTIAL_UNAVAILABLE_CODE = -32009, -32010
"""JSON-RPC codes of upstream-credential failures (docs/policy.md has every code the gateway uses)."""


def _credential_error(
    exc: UpstreamCredentialError,
    www_authenticate: Callable[[str, str | None, str | None], str],
    path: str,
    headers: dict[str, str],
) -> ProxyError:
    """401/403 with a challenge naming the error and scope, or 502 naming the credential (issue 18)."""
    if exc.bearer_error is None:
        return ProxyError(exc.status, CREDENTIAL_UNAVAILABLE_CODE, exc.detail, headers)
    challenge = www_authenticate(path, exc.bearer_error, exc.detail)
    if exc.scopes:
        challenge += ', scope="' + " ".join(exc.scopes) + '"'
    if exc.claims:
        challenge += ', claims="' + exc.claims.replace("\\", "\\\\").replace('"', '\\"') + '"'
    headers["WWW-Authenticate"] = challenge
    return ProxyError(exc.status, CREDENTIAL_ACTION_CODE, exc.detail, headers)
