"""Hostile use of virtual server streams (issue 16, 2026-12-01), in process: a real ``VirtualServers``
(dev authentication, sealed sessions in a memory store) in front of a stand-in data plane whose two
members speak 2026-07-28 and count their open ``subscriptions/listen`` streams.

* ``Last-Event-ID`` of another session, of another user's session, garbage, or evicted from the bounded
  buffer is refused, and never replays another session's events;
* a second standalone GET stream of one session is 409;
* ``subscriptions/listen`` and standalone GET streams per user are capped together, and the cap frees
  as they end;
* a client that leaves ends the member streams opened for it: the members' open listens and the
  gateway's watch tasks go back to zero;
* a broken or hostile 2025-era member: one that only ever asks to be polled (absurd ``retry:``) is
  resumed a bounded number of times with a capped wait, and one that floods the client with
  server-to-client requests gets all but ``MAX_PENDING`` refused.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.auth.dev import DevAuthenticator
from gateway.browser.hosts import HostPolicy
from gateway.models import AdapterRecord
from gateway.proxy.sealing import SessionSealer
from gateway.proxy.sessions import SessionRouter
from gateway.servers.mcp import VirtualServers
from gateway.sessions.memory import MemorySessionStore
from gateway.store.view import AdapterView

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
SSE = [(b"content-type", b"text/event-stream")]


def _event(message: Any) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


class Members:
    """The data plane at ``/adapters/{name}/mcp``: 2026-07-28 members (``initialize`` is -32601) that
    serve ``subscriptions/listen`` until their request is cancelled, and a ``change`` tool that
    announces ``tools/list_changed`` on every open listen."""

    def __init__(self) -> None:
        self.listening = 0
        self.queues: list[asyncio.Queue[dict[str, Any]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 405, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        request = json.loads(body)
        method, ident = request["method"], request.get("id")
        if ident is None:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if method == "subscriptions/listen":
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self.queues.append(queue)
            self.listening += 1
            try:
                await send({"type": "http.response.start", "status": 200, "headers": SSE})
                ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {}}
                await send({"type": "http.response.body", "body": _event(ack), "more_body": True})
                while True:
                    note = await queue.get()
                    await send({"type": "http.response.body", "body": _event(note), "more_body": True})
            finally:
                self.listening -= 1
                self.queues.remove(queue)
        if method == "initialize":
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "no"}}
        elif method == "server/discover":
            answer = {"jsonrpc": "2.0", "id": ident, "result": {"supportedVersions": [MODERN], "capabilities": {}}}
        elif method == "tools/list":
            answer = {"jsonrpc": "2.0", "id": ident, "result": {"tools": [{"name": "change", "inputSchema": {}}]}}
        else:  # tools/call change
            for queue in self.queues:
                queue.put_nowait({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            answer = {"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "ok"}]}}
        raw = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": raw, "more_body": False})


def record(name: str) -> AdapterRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return AdapterRecord(
        name=name,
        image_name="x",
        image_version="1",
        created_at=now,
        last_updated_at=now,
        required_roles=["team"],
        etag=f"{name}-1",
    )


class Exchange:
    """One request to the virtual server, served in a task: what it sent so far, and its client's leaving."""

    def __init__(self, servers: VirtualServers, method: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(event: dict[str, Any]) -> None:
            self.sent.append(event)

        scope = {"type": "http", "method": method, "path": "/mcp", "headers": headers, "query_string": b""}
        self.task = asyncio.ensure_future(servers(scope, receive, send, None, "mcp"))

    @property
    def status(self) -> int | None:
        return self.sent[0]["status"] if self.sent else None

    @property
    def text(self) -> str:
        return b"".join(e.get("body", b"") for e in self.sent[1:]).decode()

    def ids(self) -> list[str]:
        return [line[3:].strip() for line in self.text.splitlines() if line.startswith("id:")]

    async def leave(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 5)


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class HostileLegacy:
    """A broken or hostile 2025-era member (a session of its own): ``tools/call`` either answers with an
    SSE stream that only ever says "poll me" (a priming event with an absurd ``retry:``, then closed; every
    GET resume the same), or floods the client with ``sampling/createMessage`` requests before answering.
    It counts the resumes and the responses it is sent."""

    def __init__(self, mode: str, asks: int = 100) -> None:
        self.mode = mode
        self.asks = asks
        self.resumes = 0
        self.responses: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "DELETE":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if scope["method"] == "GET":  # a resume: poll me again, forever
            self.resumes += 1
            await send({"type": "http.response.start", "status": 200, "headers": SSE})
            more = f"id: r{self.resumes}\nretry: 999999999\ndata: \n\n".encode()
            await send({"type": "http.response.body", "body": more, "more_body": False})
            return
        request = json.loads(body)
        method, ident = request.get("method"), request.get("id")
        if method is None:  # a response to one of our requests
            self.responses.append(request)
        if ident is None or method is None:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if method == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "h"}}
            raw = json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}).encode()
            headers = [(b"content-type", b"application/json"), (b"mcp-session-id", b"hostile-1")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": raw, "more_body": False})
            return
        if method != "tools/call":
            raw = json.dumps({"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "no"}}).encode()
            await send(
                {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": raw, "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        if self.mode == "poll":
            await send(
                {"type": "http.response.body", "body": b"id: p0\nretry: 999999999\ndata: \n\n", "more_body": False}
            )
            return
        for n in range(self.asks):
            ask = {"jsonrpc": "2.0", "id": f"ask-{n}", "method": "sampling/createMessage", "params": {"messages": []}}
            await send({"type": "http.response.body", "body": _event(ask), "more_body": True})
        done = {"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "done"}]}}
        await send({"type": "http.response.body", "body": _event(done), "more_body": False})


class Gateway:
    def __init__(self, buffer_events: int = 64, listens: int = 2, members: Any = None) -> None:
        self.members = members or Members()
        view = AdapterView()
        view.put(record("m0"))
        view.put(record("m1"))
        self.servers = VirtualServers(
            app=lambda: self.members,
            servers=None,  # type: ignore[arg-type]  # /mcp reads no server records
            view=view,
            authenticator=DevAuthenticator(),
            hosts=HostPolicy(listen_host="127.0.0.1", public_url=None, hosts=[], origins=[]),
            member_timeout=2.0,
            list_ttl=0,
            session_ttl=600,
            gateway_prefix=True,
            sessions=SessionRouter(
                MemorySessionStore(), SessionSealer([os.urandom(32)]), ttl=600, max_age=3600, cache_seconds=5
            ),
            stream_buffer_events=buffer_events,
            listens_per_user=listens,
        )

    def request(self, method: str, message: dict[str, Any] | None, user: str = "alice", **extra: str) -> Exchange:
        headers = [(b"host", b"127.0.0.1"), (b"accept", b"application/json, text/event-stream")]
        headers += [(b"x-dev-user-id", user.encode()), (b"x-dev-roles", b"team")]
        headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]
        return Exchange(self.servers, method, headers, msgspec.json.encode(message) if message is not None else b"")

    async def done(self, method: str, message: dict[str, Any] | None, user: str = "alice", **extra: str) -> Exchange:
        exchange = self.request(method, message, user, **extra)
        await asyncio.wait_for(exchange.task, 5)
        return exchange

    async def done_json(self, message: dict[str, Any], session: str) -> Exchange:
        """A session request from a client that takes only JSON (one answer, no SSE stream)."""
        headers = [(b"host", b"127.0.0.1"), (b"accept", b"application/json")]
        headers += [(b"x-dev-user-id", b"alice"), (b"x-dev-roles", b"team"), (b"mcp-session-id", session.encode())]
        exchange = Exchange(self.servers, "POST", headers, msgspec.json.encode(message))
        await asyncio.wait_for(exchange.task, 10)
        return exchange

    async def session(self, user: str = "alice") -> str:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
        exchange = await self.done("POST", init, user)
        return str(dict(exchange.sent[0]["headers"])[b"mcp-session-id"].decode())

    async def call(self, session: str, ident: int) -> Exchange:
        call = {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": "m0_change"}}
        return await self.done("POST", call, mcp_session_id=session)

    def listen(self, ident: str, user: str = "alice") -> Exchange:
        params = {"_meta": META, "notifications": {"toolsListChanged": True}}
        message = {"jsonrpc": "2.0", "id": ident, "method": "subscriptions/listen", "params": params}
        return self.request("POST", message, user, mcp_protocol_version=MODERN, mcp_method="subscriptions/listen")


async def test_last_event_id_of_another_session_user_or_garbage_is_refused() -> None:
    gw = Gateway()
    mine, other = await gw.session(), await gw.session()
    answered = await gw.call(mine, 7)
    assert answered.status == 200 and '"id":7' in answered.text and '"text":"ok"' in answered.text
    priming = answered.ids()[0]
    theirs = (await gw.call(other, 8)).ids()[0]
    # Positive control: the session's own id replays the rest of that stream (the answer).
    own = await gw.done("GET", None, mcp_session_id=mine, last_event_id=priming)
    assert own.status == 200 and '"id":7' in own.text
    for forged in (theirs, "garbage", "x-1-1", priming.replace("-1-", "-99-"), priming + "0" * 80, ""):
        refused = await gw.done("GET", None, mcp_session_id=mine, last_event_id=forged)
        assert refused.status == 400, (forged, refused.text)
        assert '"id":8' not in refused.text and "ok" not in refused.text
    # Another user holding the session id and an event id of it: the session is not theirs.
    stolen = await gw.done("GET", None, "mallory", mcp_session_id=mine, last_event_id=priming)
    assert stolen.status == 404 and '"id":7' not in stolen.text


async def test_evicted_events_are_not_resumed() -> None:
    gw = Gateway(buffer_events=6)
    session = await gw.session()
    first = (await gw.call(session, 1)).ids()[0]
    for ident in range(2, 6):
        await gw.call(session, ident)
    refused = await gw.done("GET", None, mcp_session_id=session, last_event_id=first)
    assert refused.status == 400 and "no longer buffered" in refused.text


async def test_a_second_get_stream_is_409_and_leaving_ends_the_member_streams() -> None:
    gw = Gateway()
    session = await gw.session()
    baseline = len(asyncio.all_tasks())
    stream = gw.request("GET", None, mcp_session_id=session)
    await until(lambda: gw.members.listening == 2, "both members' listens")
    second = await gw.done("GET", None, mcp_session_id=session)
    assert second.status == 409
    await gw.call(session, 3)  # m0's tools change: heard on the standalone stream
    await until(lambda: "notifications/tools/list_changed" in stream.text, "the change on the GET stream")
    await stream.leave()
    await until(lambda: gw.members.listening == 0, "the member listens to end")
    assert not gw.servers.streams.watches
    await until(lambda: len(asyncio.all_tasks()) <= baseline, "no task left behind")
    again = gw.request("GET", None, mcp_session_id=session)  # the slot is free again
    await until(lambda: again.status == 200, "a new GET stream")
    await again.leave()


async def test_listens_per_user_are_capped_and_the_cap_frees_when_they_end() -> None:
    gw = Gateway(listens=2)
    first, second = gw.listen("a"), gw.listen("b")
    await until(lambda: "acknowledged" in first.text and "acknowledged" in second.text, "two acknowledgements")
    assert gw.members.listening == 4  # two members each
    flood = [gw.listen(f"f{i}") for i in range(20)]
    await asyncio.wait_for(asyncio.gather(*(f.task for f in flood)), 5)
    assert {f.status for f in flood} == {429} and "MCPGW_SERVER_LISTENS_PER_USER" in flood[0].text
    assert gw.members.listening == 4
    # A standalone GET stream holds a stream to every member too: it counts against the same cap.
    stream = await gw.done("GET", None, mcp_session_id=await gw.session())
    assert stream.status == 429 and "MCPGW_SERVER_LISTENS_PER_USER" in stream.text
    other = gw.listen("c", user="bob")  # the cap is per user
    await until(lambda: "acknowledged" in other.text, "another user's listen")
    for exchange in (first, second, other):
        await exchange.leave()
    await until(lambda: gw.members.listening == 0, "every member listen to end")
    assert not gw.servers.streams.watches and not gw.servers.streams.listens
    again = gw.listen("d")
    await until(lambda: "acknowledged" in again.text, "a listen after the others ended")
    await again.leave()


async def test_a_member_that_only_ever_asks_to_be_polled_is_polled_a_bounded_number_of_times(
    monkeypatch: Any,
) -> None:
    """A broken replica ending every stream with ``retry: 999999999`` and no answer: the gateway waits at
    most ``MAX_RETRY_MS`` between resumes and gives up after ``MAX_POLLS``; the client gets a JSON-RPC
    error naming the member, not a hang and not a 5xx."""
    from gateway.servers import member

    monkeypatch.setattr(member, "MAX_RETRY_MS", 20)  # the cap, made short for the test
    hostile = HostileLegacy("poll")
    gw = Gateway(members=hostile)
    session = await gw.session()
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "m0_anything"}}
    started = asyncio.get_running_loop().time()
    answered = await gw.done_json(call, session)
    elapsed = asyncio.get_running_loop().time() - started
    assert hostile.resumes == member.MAX_POLLS
    assert elapsed < 5, elapsed  # 20 waits of at most 20 ms, not 20 x 999999 s
    assert answered.status == 200, answered.text
    error = json.loads(answered.text)["error"]
    assert "m0" in error["message"] and error["data"]["member"] == "m0", error


async def test_a_member_flooding_the_client_with_requests_gets_the_excess_refused() -> None:
    """A member sending 100 sampling requests in one call: at most ``MAX_PENDING`` reach the client, the
    rest are answered with -32601 to the member at once, and the call still completes."""
    from gateway.servers.backchannel import MAX_PENDING

    hostile = HostileLegacy("flood", asks=100)
    gw = Gateway(members=hostile)
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}}},
    }
    opened = await gw.done("POST", init)
    session = dict(opened.sent[0]["headers"])[b"mcp-session-id"].decode()
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "m0_anything"}}
    answered = await gw.done("POST", call, mcp_session_id=session)
    relayed = [m for m in _messages(answered.text) if m.get("method") == "sampling/createMessage"]
    assert len(relayed) == MAX_PENDING, len(relayed)
    assert all(str(m["id"]).startswith("mcpgw-") for m in relayed)  # never the member's own ids
    assert any(m.get("id") == 9 and "result" in m for m in _messages(answered.text))
    await until(lambda: len(hostile.responses) == 100 - MAX_PENDING, "the excess refused to the member")
    assert all(r["error"]["code"] == -32601 for r in hostile.responses)


def _messages(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            out.append(json.loads(line[5:]))
    return out
