"""Hostile answers to server-to-client requests relayed through a virtual server (issue 16,
gateway/servers/backchannel.py).

A member's ``sampling/createMessage`` / ``elicitation/create`` / ``roots/list`` reaches the client under
a gateway-chosen id; the client's response POST is passed on to the member only when it answers a
request waiting on *that* client session. Each case here must be refused with a 4xx naming the id,
must never reach the member (the member, tests/upstreams/asking_legacy.py, lists every response it
received), and must leave the genuine answer working. A flood of bogus answers stores nothing.

Observed on main before this (2026-12-01): every response POST was refused with 400 ("send one
JSON-RPC request or notification per POST") and the member's request was answered at once with
-32601 by the gateway, so none of this could be reached; the cases pin the new way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.proxy.sealing import SessionClaims, SessionSealer
from gateway.servers.backchannel import (
    FORWARD_MAX_AGE,
    MAX_PENDING,
    MAX_SEALED_CAPS,
    AnswerRefused,
    Backchannel,
    Sealing,
    relayed_capabilities,
    seal_capabilities,
    unseal_capabilities,
)
from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready

CATALOG = Path(__file__).resolve().parent.parent / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream"}
ASKS = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
SAMPLED = {"role": "assistant", "content": {"type": "text", "text": "four"}, "model": "m"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_EXAMPLE_ADAPTER": "false", "MCPGW_SERVER_LIST_TTL": "0"}
    with start_gateway(tmp_path_factory.mktemp("vs-backchannel") / "data", env) as g:
        with g.client() as api:
            asking = example_adapter("asking", replicas=1, imageName="asking-legacy", imageVersion="1.0")
            assert api.post("/adapters", json=asking).status_code == 201, api.get("/adapters").text
            wait_ready(api, "asking", 1, timeout=40)
            for name in ("one", "two"):
                body = {"name": name, "members": [{"adapter": "asking"}], "requiredRoles": ["team"]}
                assert api.post("/servers", json=body).status_code == 201
        yield g


class Session:
    """One raw 2025-era client session of a virtual server."""

    def __init__(self, gw: GatewayProcess, server: str = "one", user: str = "dev", caps: Any = None) -> None:
        self.url = f"{gw.url}/servers/{server}/mcp"
        self.headers = {**ACCEPT, "X-Dev-User-Id": user, "X-Dev-Roles": "team"}
        params = {"protocolVersion": "2025-11-25", "capabilities": ASKS if caps is None else caps}
        init = httpx.post(
            self.url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, headers=self.headers
        )
        assert init.status_code == 200, init.text
        self.headers |= {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        self.next_id = 1

    def post(self, message: dict[str, Any], **changes: str) -> httpx.Response:
        return httpx.post(self.url, json=message, headers={**self.headers, **changes}, timeout=10)

    def call(self, tool: str, **arguments: Any) -> str:
        self.next_id += 1
        message = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }
        reply = self.post(message)
        assert reply.status_code == 200, reply.text
        found = (
            [m for m in _events(reply.text) if m.get("id") == self.next_id]
            if reply.headers["content-type"].startswith("text/event-stream")
            else [reply.json()]
        )
        return str(found[-1]["result"]["content"][0]["text"])

    @contextlib.contextmanager
    def asking(self, method: str = "sampling/createMessage", wait: float = 10) -> Iterator[Asked]:
        """A call of the member's ``ask`` tool, open until the block ends; yields the relayed request."""
        self.next_id += 1
        params = {"name": "ask", "arguments": {"method": method, "wait": wait}}
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": params}
        with httpx.stream("POST", self.url, json=message, headers=self.headers, timeout=15) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            asked = Asked(self.next_id, _next_message(lines), lines)
            yield asked


class Asked:
    """A relayed request seen by the client, and the rest of its call's stream."""

    def __init__(self, call_id: int, request: dict[str, Any], lines: Iterator[str]) -> None:
        self.call_id = call_id
        self.request = request
        self._lines = lines

    @property
    def id(self) -> str:
        return str(self.request["id"])

    def result(self) -> str:
        message = _next_message(self._lines)
        assert message.get("id") == self.call_id, message
        return str(message["result"]["content"][0]["text"])


def _next_message(lines: Iterator[str]) -> dict[str, Any]:
    for line in lines:
        if line.startswith("data:") and line[5:].strip():  # not the priming event (an id, empty data)
            message: dict[str, Any] = json.loads(line[5:])
            return message
    raise AssertionError("the stream ended")


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:") and line[5:].strip()]


def received(session: Session) -> list[dict[str, Any]]:
    """Every response the member got so far (its ``received`` tool)."""
    return list(json.loads(session.call("received")))


def answer(ident: Any, result: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "result": SAMPLED if result is None else result}


def refused(response: httpx.Response, ident: Any) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.json()
    assert body["error"]["code"] == -32600 and body["id"] == (ident if isinstance(ident, (str, int)) else None)
    if isinstance(ident, str):
        assert ident[:40] in body["error"]["message"], body


def test_the_relayed_request_has_a_gateway_id_and_takes_exactly_one_answer(gw: GatewayProcess) -> None:
    session = Session(gw)
    before = len(received(session))
    with session.asking() as asked:
        assert asked.request["method"] == "sampling/createMessage"
        assert asked.id.startswith("mcpgw-g1.")  # sealed: unguessable, and not the member's own id (q<n>)
        member_ids: list[Any] = [f"q{n}" for n in range(1, 40)]  # the member's own ids are not accepted either
        for bogus in ["mcpgw-nope", 1, None, asked.id.upper(), *member_ids]:
            refused(session.post(answer(bogus)), bogus)
        assert session.post(answer(asked.id)).status_code == 202
        second = answer(asked.id, {"role": "assistant", "content": {"type": "text", "text": "5"}})
        refused(session.post(second), asked.id)
        assert json.loads(asked.result()) == {"result": SAMPLED}
    got = received(session)[before:]
    assert [r["message"] for r in got] == [{"jsonrpc": "2.0", "id": got[0]["message"]["id"], "result": SAMPLED}], got


def test_another_users_or_another_sessions_answer_is_refused_and_never_reaches_the_member(gw: GatewayProcess) -> None:
    owner = Session(gw)
    mallory = Session(gw, user="mallory")
    sibling = Session(gw)  # the same user, another session of the same server
    elsewhere = Session(gw, server="two")  # the same user, a session of another server with the same member
    before = len(received(owner))
    with owner.asking("elicitation/create") as asked:
        assert asked.request["method"] == "elicitation/create"
        forged = answer(asked.id, {"action": "accept", "content": {"name": "mallory"}})
        stolen = owner.post(forged, **{"X-Dev-User-Id": "mallory"})  # the owner's session id, another user
        assert stolen.status_code == 404, stolen.text
        refused(mallory.post(forged), asked.id)
        refused(sibling.post(forged), asked.id)
        refused(elsewhere.post(forged), asked.id)
        genuine = answer(asked.id, {"action": "accept", "content": {"name": "Ada"}})
        assert owner.post(genuine).status_code == 202
        assert json.loads(asked.result())["result"]["content"] == {"name": "Ada"}
    after = received(owner)[before:]
    assert [r["message"]["result"]["content"]["name"] for r in after] == ["Ada"], after


def test_tampered_and_borrowed_sealed_ids_are_refused(gw: GatewayProcess) -> None:
    """The relayed id is sealed (kind ``vask``, forwardable by another gateway): a tampered one, the
    client session's own id dressed as one, and the relayed id used as a session id all fail."""
    session = Session(gw)
    with session.asking() as asked:
        assert asked.id.startswith("mcpgw-g1.")
        flipped = asked.id[:-3] + ("A" if asked.id[-3] != "A" else "B") + asked.id[-2:]
        own = "mcpgw-" + session.headers["Mcp-Session-Id"]
        for bogus in (flipped, own, asked.id + "x", asked.id[:-4]):
            refused(session.post(answer(bogus)), bogus)
        as_session = session.post(
            {"jsonrpc": "2.0", "id": 9, "method": "ping"}, **{"Mcp-Session-Id": asked.id[len("mcpgw-") :]}
        )
        assert as_session.status_code == 404, as_session.text
        assert session.post(answer(asked.id)).status_code == 202
        assert json.loads(asked.result()) == {"result": SAMPLED}


def test_an_answer_after_the_call_ended_is_refused(gw: GatewayProcess) -> None:
    session = Session(gw)
    with session.asking(wait=0.2) as asked:
        assert asked.result() == "no answer"  # the member gave up: the call is over
    refused(session.post(answer(asked.id)), asked.id)


def test_a_flood_of_bogus_answers_is_refused_and_leaves_the_pending_request_answerable(gw: GatewayProcess) -> None:
    session = Session(gw)
    before = len(received(session))
    with session.asking("roots/list") as asked, httpx.Client(timeout=10) as client:
        for n in range(500):
            ident = f"mcpgw-{n:022d}"
            response = client.post(session.url, json=answer(ident), headers=session.headers)
            assert response.status_code == 400
        roots = {"roots": [{"uri": "file:///work", "name": "work"}]}
        assert session.post(answer(asked.id, roots)).status_code == 202
        assert json.loads(asked.result()) == {"result": roots}
    assert len(received(session)) == before + 1


def test_malformed_answers_name_what_is_wrong(gw: GatewayProcess) -> None:
    session = Session(gw)
    with session.asking() as asked:
        both = {"jsonrpc": "2.0", "id": asked.id, "result": {}, "error": {"code": 1, "message": "x"}}
        refused(session.post(both), asked.id)
        bad_error = {"jsonrpc": "2.0", "id": asked.id, "error": "nope"}
        refused(session.post(bad_error), asked.id)
        no_session = httpx.post(
            session.url, json=answer(asked.id), headers={**ACCEPT, "X-Dev-User-Id": "dev", "X-Dev-Roles": "team"}
        )
        assert no_session.status_code == 400 and no_session.json()["error"]["code"] == -32600, no_session.text
        error = {"jsonrpc": "2.0", "id": asked.id, "error": {"code": -1, "message": "user declined"}}
        assert session.post(error).status_code == 202  # an error is an answer too
        assert json.loads(asked.result()) == {"error": {"code": -1, "message": "user declined"}}


def test_members_are_told_only_the_capabilities_the_client_declared(gw: GatewayProcess) -> None:
    declared = {**ASKS, "experimental": {"x": {}}, "tasks": {"requests": {}}}
    assert json.loads(Session(gw, caps=declared).call("capabilities")) == {
        "elicitation": {},
        "roots": {},
        "sampling": {},
    }
    only_sampling = Session(gw, caps={"sampling": {}})
    assert json.loads(only_sampling.call("capabilities")) == {"sampling": {}}
    # A request for a capability the client did not declare is refused at once, never relayed.
    text = only_sampling.call("ask", method="elicitation/create")
    error = json.loads(text)["error"]
    assert error["code"] == -32601 and "not relayed" in error["message"], text


def test_a_2026_07_28_caller_gets_the_members_answer_to_the_refusal(gw: GatewayProcess) -> None:
    """A stateless caller has no session to answer on: the 2025-era member's request is refused with
    -32601 and the tool's result is whatever the member makes of that (docs/servers.md)."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": ASKS}
    params = {"name": "ask", "arguments": {"method": "sampling/createMessage"}, "_meta": meta}
    headers = {**ACCEPT, "X-Dev-User-Id": "dev", "X-Dev-Roles": "team", "MCP-Protocol-Version": "2026-07-28"}
    headers |= {"Mcp-Method": "tools/call", "Mcp-Name": "ask"}
    reply = httpx.post(
        f"{gw.url}/servers/one/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
        headers=headers,
        timeout=15,
    )
    assert reply.status_code == 200, reply.text
    messages = _events(reply.text) if reply.text.startswith("event") else [reply.json()]
    assert not any("method" in m for m in messages), messages  # nothing was asked of the client
    error = json.loads(messages[-1]["result"]["content"][0]["text"])["error"]
    assert error["code"] == -32601 and "sampling/createMessage is not relayed" in error["message"]


def test_an_answer_on_a_legacy_messages_post_needs_a_pending_id(gw: GatewayProcess) -> None:
    with httpx.stream(
        "GET", f"{gw.url}/servers/one/sse", headers={"X-Dev-User-Id": "dev", "X-Dev-Roles": "team"}, timeout=10
    ) as stream:
        lines = stream.iter_lines()
        endpoint = next(line for line in lines if line.startswith("data:"))[5:].strip()
        url = f"{gw.url}{endpoint}"
        headers = {"X-Dev-User-Id": "dev", "X-Dev-Roles": "team"}
        refused(httpx.post(url, json=answer("mcpgw-unknown"), headers=headers), "mcpgw-unknown")


# --- the table itself, in process ---------------------------------------------------------------


def test_the_pending_table_is_bounded_and_bogus_answers_store_nothing() -> None:
    delivered: list[dict[str, Any]] = []

    async def deliver(scope: Any, message: dict[str, Any]) -> None:
        delivered.append(message)

    async def run() -> None:
        channel = Backchannel({"sampling": {}})
        idents = [channel.hold("m", n, deliver) for n in range(MAX_PENDING)]
        assert all(idents) and len(set(idents)) == MAX_PENDING
        assert channel.hold("m", "one too many", deliver) is None  # refused to the member, as without the capability
        for n in range(10_000):
            with pytest.raises(AnswerRefused):
                await channel.answer({}, answer(f"mcpgw-{n}"))
        assert channel.waiting == MAX_PENDING and delivered == []
        assert await channel.answer({}, answer(idents[0])) == "m"
        assert delivered == [{"jsonrpc": "2.0", "id": 0, "result": SAMPLED}] and channel.waiting == MAX_PENDING - 1
        channel.forget([i for i in idents if i is not None])
        assert channel.waiting == 0

    asyncio.run(run())


def test_a_sealed_id_is_forwarded_by_another_gateway_only_on_its_own_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateway B relays; gateway A (same key ring, another process) gets the answer and forwards it —
    for the same session and user only, within ``FORWARD_MAX_AGE``; B itself refuses it once answered."""
    sealer = SessionSealer([os.urandom(32)])
    forwarded: list[tuple[str, str, dict[str, Any]]] = []

    async def forward(scope: Any, adapter: str, session: str, message: dict[str, Any]) -> None:
        forwarded.append((adapter, session, message))

    async def deliver(scope: Any, message: dict[str, Any]) -> None:
        raise AssertionError("B is not asked")

    def claims(sid: str = "s1", user: str = "alice") -> SessionClaims:
        return SessionClaims("vmcp", sid, "servers/one", "", "", "2025-11-25", user, time.time())

    def channel(instance: str, session: SessionClaims) -> Backchannel:
        return Backchannel({"sampling": {}}, session=session, sealing=Sealing(sealer, instance, forward))

    async def run() -> None:
        mine = claims()
        b = channel("B", mine)
        ident = b.hold("asking", 7, deliver, "g1.member-session")
        assert ident is not None and ident.startswith("mcpgw-g1.")
        for other in (channel("A", claims(sid="s2")), channel("A", claims(user="mallory"))):
            with pytest.raises(AnswerRefused):
                await other.answer({}, answer(ident))
        assert forwarded == []
        assert await channel("A", mine).answer({}, answer(ident)) == "asking"
        assert forwarded == [("asking", "g1.member-session", {"jsonrpc": "2.0", "id": 7, "result": SAMPLED})]
        b.forget([ident])
        with pytest.raises(AnswerRefused):  # B relayed it: no longer pending means refused, not forwarded
            await b.answer({}, answer(ident))
        other_ring = Backchannel({}, session=mine, sealing=Sealing(SessionSealer([os.urandom(32)]), "A", forward))
        with pytest.raises(AnswerRefused):
            await other_ring.answer({}, answer(ident))
        later = time.time() + FORWARD_MAX_AGE + 1
        monkeypatch.setattr(time, "time", lambda: later)  # the module backchannel reads the clock from
        with pytest.raises(AnswerRefused):
            await channel("A", mine).answer({}, answer(ident))
        assert len(forwarded) == 1

    asyncio.run(run())


def test_capabilities_in_a_sealed_id_are_compact_and_bounded() -> None:
    caps = relayed_capabilities({**ASKS, "experimental": {"big": "x" * 10_000}})
    assert caps == {"sampling": {}, "elicitation": {}, "roots": {}}
    assert unseal_capabilities(seal_capabilities(caps)) == caps
    huge = relayed_capabilities({"sampling": {"x": "y" * 10_000}, "elicitation": {}})
    sealed = seal_capabilities(huge)
    assert len(sealed) <= MAX_SEALED_CAPS and unseal_capabilities(sealed) == {"sampling": {}, "elicitation": {}}
    assert seal_capabilities({}) == "" and unseal_capabilities("") == {} and unseal_capabilities("{not json") == {}
    assert relayed_capabilities("nope") == {} and relayed_capabilities({"sampling": True}) == {}
