"""Virtual server listings and cancellation, in process (issue 16, Deliver 5 and 6).

The gateway-wide ``/mcp`` of a real ``VirtualServers`` (real dev authentication, adapter view and host
policy) in front of a stand-in for the gateway's own data plane at ``/adapters/{name}/mcp``, which
counts what reaches each member: a cached ``tools/list`` is the same answer without asking any
member; ``list_changed`` heard on a call and the TTL end it; callers and role sets never share a
listing; a listing with a failed member is not kept; ``notifications/cancelled`` and a client that
goes away cancel the member's request. The same paths against real member processes are in
tests/integration/test_servers_mcp.py and tests/integration/test_servers_policy.py.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.auth.dev import DevAuthenticator
from gateway.browser.hosts import HostPolicy
from gateway.models import AdapterRecord
from gateway.policy.toolpolicy import ToolRule
from gateway.proxy.sealing import SessionSealer
from gateway.proxy.sessions import SessionRouter
from gateway.servers.listing import ListingCache, MergedListing
from gateway.servers.mcp import VirtualServers
from gateway.sessions.memory import MemorySessionStore
from gateway.store.view import AdapterView

MODERN = "2026-07-28"
TTL = 30.0
READER = "team"


class DataPlane:
    """Stands in for the gateway's data plane at ``/adapters/{name}/mcp``: members (both eras) whose
    tools can change, that can fail, announce ``tools/list_changed`` on a call's stream, or hang until
    their request is cancelled. Each member also lists a tool named after the caller (``mine_<user>``):
    a listing fetched for one caller shown to another would show it."""

    def __init__(self, tools: dict[str, list[str]]) -> None:
        self.tools = tools
        self.asked: Counter[tuple[str, str]] = Counter()
        self.failing: set[str] = set()
        self.announce: set[str] = set()
        self.hanging = asyncio.Event()
        self.cancelled: list[str] = []
        self.progressed = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        adapter = scope["path"].split("/")[2]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        method = request["method"]
        user = dict(scope["headers"])[b"x-dev-user-id"].decode()
        self.asked[(adapter, method)] += 1
        if "id" not in request:  # notifications/initialized
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if adapter in self.failing and method != "server/discover":
            await respond(send, 503, {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -1, "message": "down"}})
            return
        result: dict[str, Any] = {}
        notes: list[dict[str, Any]] = []
        if method == "server/discover":
            result = {"supportedVersions": [MODERN], "capabilities": {"tools": {}}}
        elif method == "initialize":  # a 2025-era client's session calls its members in its era
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": adapter}}
        elif method == "tools/list":
            names = [*self.tools[adapter], f"mine_{user}"]
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
        elif method == "tools/call" and request["params"]["name"] == "slow":
            self.hanging.set()
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.cancelled.append(f"{adapter}: disconnected")
            except asyncio.CancelledError:
                self.cancelled.append(f"{adapter}: cancelled")
                raise
            return
        elif method == "tools/call" and request["params"]["name"] == "flood":
            # A broken member: 5,000 notifications, in chunks that split events (and CRLF) anywhere.
            sse = [(b"content-type", b"text/event-stream")]
            notes = [
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": i}} for i in range(5000)
            ]
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"content": [{"type": "text", "text": "done"}]}}
            raw = b"".join(_event(m).replace(b"\n", b"\r\n") for m in [*notes, answer])
            await send({"type": "http.response.start", "status": 200, "headers": sse})
            for start in range(0, len(raw), 997):
                await send({"type": "http.response.body", "body": raw[start : start + 997], "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        elif method == "tools/call" and request["params"]["name"] == "progressive":
            # One progress notification, then the answer only once the test releases it.
            progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
            sse = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": sse})
            await send({"type": "http.response.body", "body": _event(progress), "more_body": True})
            self.progressed.set()
            await self.release.wait()
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"content": [{"type": "text", "text": "done"}]}}
            await send({"type": "http.response.body", "body": _event(answer), "more_body": False})
            return
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "ok"}]}
            if adapter in self.announce:
                notes.append({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
        if not notes:
            await respond(send, 200, answer)
            return
        events = b"".join(b"event: message\ndata: " + json.dumps(m).encode() + b"\n\n" for m in [*notes, answer])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": events, "more_body": False})


def _event(message: Any) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


async def respond(send: Any, status: int, body: Any) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


def record(name: str, tool_policy: list[ToolRule] | None = None) -> AdapterRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return AdapterRecord(
        name=name,
        image_name="x",
        image_version="1",
        created_at=now,
        last_updated_at=now,
        required_roles=[READER],
        tool_policy=tool_policy,
        etag=f"{name}-1",
    )


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    """``VirtualServers`` over ``/mcp`` with two members, ``m0`` (whose ``add`` needs role ``calc.user``)
    and ``m1``, and the stand-in data plane."""

    def __init__(self, ttl: float = TTL) -> None:
        self.plane = DataPlane({"m0": ["add", "echo"], "m1": ["upper"]})
        view = AdapterView()
        policy = [
            ToolRule(tools=["add"], roles=["calc.user"]),
            ToolRule(tools=["echo", "mine_*", "slow", "progressive", "flood"], roles=["*"]),
        ]
        view.put(record("m0", policy))
        view.put(record("m1"))
        self.clock = Clock()
        self.servers = VirtualServers(
            app=lambda: self.plane,
            servers=None,  # type: ignore[arg-type]  # /mcp reads no server records
            view=view,
            authenticator=DevAuthenticator(),
            hosts=HostPolicy(listen_host="127.0.0.1", public_url=None, hosts=[], origins=[]),
            member_timeout=2.0,
            list_ttl=ttl,
            session_ttl=600,
            gateway_prefix=True,
            sessions=SessionRouter(
                MemorySessionStore(), SessionSealer([os.urandom(32)]), ttl=600, max_age=3600, cache_seconds=5
            ),
            clock=self.clock,
        )

    async def post(
        self,
        message: dict[str, Any],
        *,
        user: str = "alice",
        roles: str = f"{READER},calc.user",
        session: str | None = None,
        gone: asyncio.Event | None = None,
        sent: list[dict[str, Any]] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One POST /mcp, 2026-07-28 unless in a ``session`` (``""``: a 2025-era request without one);
        (status, headers, decoded body or None). ``gone`` set: the client disconnects."""
        headers = [
            (b"host", b"127.0.0.1"),
            (b"accept", b"application/json, text/event-stream"),
            (b"x-dev-user-id", user.encode()),
            (b"x-dev-roles", roles.encode()),
        ]
        if session is None:
            headers += [(b"mcp-protocol-version", MODERN.encode()), (b"mcp-method", message["method"].encode())]
            if message["method"] == "tools/call":
                headers.append((b"mcp-name", message["params"]["name"].encode()))
            meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
            message = {**message, "params": {**message.get("params", {}), "_meta": meta}}
        elif session:
            headers.append((b"mcp-session-id", session.encode()))
        body = msgspec.json.encode(message)
        sent = [] if sent is None else sent
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await (gone.wait() if gone is not None else asyncio.Event().wait())
            return {"type": "http.disconnect"}

        async def send(event: dict[str, Any]) -> None:
            sent.append(event)

        scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers, "query_string": b""}
        await self.servers(scope, receive, send, None, "mcp")
        if not sent:
            return 0, {}, None
        start = sent[0]
        raw = b"".join(e.get("body", b"") for e in sent[1:])
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        if response_headers.get("content-type") == "text/event-stream":  # notifications, then the answer
            events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
            return start["status"], response_headers, [json.loads(e) for e in events]
        return start["status"], response_headers, json.loads(raw) if raw else None

    async def initialize(self, **caller: Any) -> str:
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        _, headers, _ = await self.post(initialize, session="", **caller)
        return headers["mcp-session-id"]

    async def tools(self, **caller: Any) -> list[str]:
        status, _, body = await self.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, **caller)
        assert status == 200, body
        return [t["name"] for t in body["result"]["tools"]]

    def listed(self, adapter: str) -> int:
        """How often the member was asked for its tools."""
        return self.plane.asked[(adapter, "tools/list")]


async def test_a_cached_listing_is_the_same_answer_and_asks_no_member() -> None:
    gw = Gateway()
    listing = {"jsonrpc": "2.0", "id": "list-7", "method": "tools/list"}
    session = await gw.initialize()
    callers: list[dict[str, Any]] = [{}, {"session": session}]  # 2026-07-28 stateless, then a 2025-era session
    for caller in callers:
        first = await gw.post(listing, **caller)
        asked = dict(gw.plane.asked)
        second = await gw.post(listing, **caller)
        assert gw.plane.asked == asked  # no member was asked again
        # A 2025-era session that takes SSE gets its answer as a resumable SSE stream (streams.py).
        kind = "text/event-stream" if caller else "application/json"
        assert first[0] == second[0] == 200 and second[1]["content-type"] == kind
        assert first[2] == second[2]  # the spliced bytes decode to what the uncached path built
    modern = (await gw.post(listing))[2]["result"]
    assert modern["resultType"] == "complete" and modern["cacheScope"] == "private" and modern["ttlMs"] == 30000
    assert modern["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway"
    assert [t["name"] for t in modern["tools"]] == ["m0_add", "m0_echo", "m0_mine_alice", "m1_upper", "m1_mine_alice"]
    [legacy] = (await gw.post(listing, session=session))[2]
    assert "resultType" not in legacy["result"]


async def test_list_changed_heard_on_a_call_ends_the_cached_listing_of_that_member() -> None:
    gw = Gateway()
    assert "m1_lower" not in await gw.tools()
    gw.plane.tools["m1"].append("lower")
    assert "m1_lower" not in await gw.tools()  # cached: the member was not asked
    gw.plane.announce.add("m1")
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "m1_upper", "arguments": {}}}
    status, _, relayed = await gw.post(call)
    assert status == 200 and relayed[0]["method"] == "notifications/tools/list_changed"
    assert "m1_lower" in await gw.tools()
    assert (gw.listed("m0"), gw.listed("m1")) == (1, 2)  # only the member that announced was asked again


async def test_cached_listings_end_after_the_ttl() -> None:
    gw = Gateway()
    await gw.tools()
    gw.clock.now += TTL - 1
    await gw.tools()
    assert gw.listed("m0") == 1
    gw.clock.now += 2
    await gw.tools()
    assert gw.listed("m0") == 2


async def test_without_a_ttl_every_listing_asks_the_members() -> None:
    gw = Gateway(ttl=0)
    await gw.tools()
    await gw.tools()
    assert (gw.listed("m0"), gw.listed("m1")) == (2, 2)


async def test_callers_and_role_sets_never_share_a_cached_listing() -> None:
    gw = Gateway()
    assert "m0_add" in await gw.tools(user="alice", roles=f"{READER},calc.user")
    # The same user with fewer roles: the toolPolicy hides add; not the listing cached for more roles.
    assert "m0_add" not in await gw.tools(user="alice", roles=READER)
    # Another user with alice's first roles: their own listing (the member sees who asks).
    bob = await gw.tools(user="bob", roles=f"{READER},calc.user")
    assert "m0_mine_bob" in bob and "m0_mine_alice" not in bob and "m0_add" in bob
    assert gw.listed("m0") == 3
    # Each again: all from the cache, each its own.
    assert "m0_add" not in await gw.tools(user="alice", roles=READER)
    assert "m0_mine_alice" in await gw.tools(user="alice", roles=f"{READER},calc.user")
    assert gw.listed("m0") == 3


async def test_a_listing_without_a_failed_member_is_not_kept() -> None:
    gw = Gateway()
    gw.plane.failing.add("m1")
    assert not any(t.startswith("m1_") for t in await gw.tools())
    gw.plane.failing.clear()
    assert "m1_upper" in await gw.tools()  # m1 listed again at once, not after the TTL
    assert gw.servers.member_failures["m1"] == 1


def test_a_fan_out_started_before_an_invalidation_is_not_kept() -> None:
    cache = ListingCache(TTL, Clock())
    key = ("m0", "m0-1", "alice", frozenset({READER}), "tools")
    version = cache.version("m0")
    cache.invalidate("m0")  # list_changed arrives while the member's listing is on its way
    cache.put_member(key, [{"name": "stale"}], version)
    merged = MergedListing(body=b"[]", owners={}, adapters=frozenset({"m0"}), expires=cache.fresh_until())
    merged_key = ("tools", "alice", frozenset({READER}), ())
    cache.put_merged(merged_key, merged, {"m0": version})
    assert cache.member(key) is None and cache.merged(merged_key) is None
    cache.put_member(key, [{"name": "fresh"}], cache.version("m0"))
    assert cache.member(key) is not None


def test_expired_listings_are_swept() -> None:
    clock = Clock()
    cache = ListingCache(TTL, clock)
    for user in ("a", "b"):
        cache.put_member(("m0", "e", user, frozenset(), "tools"), [], cache.version("m0"))
    merged = MergedListing(body=b"[]", owners={}, adapters=frozenset({"m0"}), expires=cache.fresh_until())
    cache.put_merged(("tools", "a", frozenset(), ()), merged, {"m0": cache.version("m0")})
    assert len(cache) == 3
    clock.now += TTL
    cache.sweep()
    assert len(cache) == 0


async def test_notifications_cancelled_cancels_the_member_request() -> None:
    gw = Gateway()
    session = await gw.initialize()
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "m1_slow", "arguments": {}}}
    pending = asyncio.ensure_future(gw.post(call, session=session))
    await asyncio.wait_for(gw.plane.hanging.wait(), 5)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}
    assert (await gw.post(cancel, session=session))[0] == 202
    status, _, events = await asyncio.wait_for(pending, 5)
    assert status == 200 and events[-1]["error"]["code"] == -32800  # the session's SSE answer (streams.py)
    assert gw.plane.cancelled == ["m1: cancelled"]
    assert (await gw.post(call | {"params": {"name": "m1_upper", "arguments": {}}}, session=session))[0] == 200


async def test_a_client_that_goes_away_cancels_the_member_request() -> None:
    gw = Gateway()
    gone = asyncio.Event()
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "m0_slow", "arguments": {}}}
    pending = asyncio.ensure_future(gw.post(call, gone=gone))
    await asyncio.wait_for(gw.plane.hanging.wait(), 5)
    gone.set()
    assert await asyncio.wait_for(pending, 5) == (0, {}, None)  # nothing sent to a client that left
    assert gw.plane.cancelled == ["m0: cancelled"]


async def test_member_progress_reaches_the_client_while_the_member_still_works() -> None:
    """Notifications on a member's answer stream go to the client as they arrive (2026-11-30; before,
    they were relayed after the member's answer), for 2026-07-28 requests and 2025-era sessions."""
    gw = Gateway()
    session = await gw.initialize()
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "m0_progressive", "arguments": {}}}
    for in_session in (None, session):
        gw.plane.progressed.clear()
        gw.plane.release.clear()
        sent: list[dict[str, Any]] = []
        task = asyncio.create_task(gw.post(call, sent=sent, session=in_session))
        await asyncio.wait_for(gw.plane.progressed.wait(), 5)
        for _ in range(200):  # the client holds the progress event while the member has not answered
            if any(b"notifications/progress" in e.get("body", b"") for e in sent):
                break
            await asyncio.sleep(0.01)
        assert any(b"notifications/progress" in e.get("body", b"") for e in sent), sent
        assert not task.done() and sent[0]["headers"][0] == (b"content-type", b"text/event-stream")
        gw.plane.release.set()
        status, headers, events = await asyncio.wait_for(task, 5)
        assert status == 200 and headers["content-type"] == "text/event-stream"
        assert events[0]["method"] == "notifications/progress"
        assert events[1]["id"] == 3 and events[1]["result"]["content"][0]["text"] == "done"


async def test_a_member_flooding_notifications_is_relayed_in_order_in_linear_time() -> None:
    """A broken member streaming 5,000 notifications in odd chunks (split events, CRLF): every one
    reaches the client once, in order, then the answer; each event is parsed once (2026-11-30:
    before, every chunk re-parsed the whole stream so far)."""
    gw = Gateway()
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "m0_flood", "arguments": {}}}
    started = asyncio.get_running_loop().time()
    status, headers, events = await asyncio.wait_for(gw.post(call), 30)
    elapsed = asyncio.get_running_loop().time() - started
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert [e["params"]["progress"] for e in events[:-1]] == list(range(5000))
    assert events[-1]["id"] == 9 and events[-1]["result"]["content"][0]["text"] == "done"
    assert elapsed < 10, elapsed
