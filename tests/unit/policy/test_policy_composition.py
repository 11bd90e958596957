"""The policy blocks composed the way the pipeline stages will use them, against a recording upstream.

``handle`` below is a reference for the wiring (gateway/policy/README.md): each step is one future
stage, and each is a few lines around a gateway/policy function. The tests pin the behaviour the
issue asks for — visible tools, denied calls that never reach the upstream, mixed batches, header
mismatches, limits with Retry-After, and an audit record for each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.policy.audit import AuditRecord, AuditTrail
from gateway.policy.classify import HEADER_MISMATCH, classify
from gateway.policy.ratelimit import (
    AdapterLimits,
    MemoryRateLimiter,
    RateRule,
    limited_responses,
    limited_status,
    retry_after_header,
)
from gateway.policy.toolpolicy import (
    TOOL_DENIED,
    PolicyCache,
    ToolRule,
    filter_tools_list_body,
    local_status,
    merge_batch_response,
    split_batch,
    tool_call_decision,
)

ADAPTER = "calc"
TOOLS = ["add", "echo", "secret", "version"]
RULES = [ToolRule(tools=["add", "echo*"], roles=["calc.user"]), ToolRule(tools=["version"], roles=["*"])]
MODERN = {"mcp-protocol-version": "2026-07-28"}


class RecordingUpstream:
    """Answers every request of a body; remembers what arrived."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    def answer(self, body: bytes) -> bytes:
        value = json.loads(body)
        messages = value if isinstance(value, list) else [value]
        self.received.extend(messages)
        out = []
        for m in messages:
            if "id" not in m:
                continue
            if m["method"] == "tools/list":
                result: dict[str, Any] = {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in TOOLS]}
            else:
                result = {"content": [{"type": "text", "text": f"ran {m['params']['name']}"}]}
            out.append({"jsonrpc": "2.0", "id": m["id"], "result": result})
        if not out:
            return b""
        return json.dumps(out if isinstance(value, list) else out[0]).encode()

    def called(self) -> list[str]:
        return [m["params"]["name"] for m in self.received if m.get("method") == "tools/call"]


class ListSink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def write(self, records: Sequence[AuditRecord]) -> None:
        self.records.extend(records)

    async def close(self) -> None:
        pass


class Gateway:
    """The stages, in DESIGN §6 order, for one adapter."""

    def __init__(self, rate_limits: list[RateRule] | None = None) -> None:
        self.upstream = RecordingUpstream()
        self.policies = PolicyCache()
        self.limits = AdapterLimits(ADAPTER, rate_limits)
        self.limiter = MemoryRateLimiter()
        self.sink = ListSink()
        self.audit = AuditTrail([self.sink])

    async def handle(
        self, headers: dict[str, str], body: bytes, user: str, roles: frozenset[str]
    ) -> tuple[int, dict[str, str], bytes]:
        # classify
        c = classify(headers, body)
        if c.error is not None:
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": c.error.code, "message": c.error.message}}
            return c.error.status, {}, json.dumps(error).encode()
        if c.malformed:
            return 400, {}, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
        # tool authorization
        policy = self.policies.get(ADAPTER, "etag-1", RULES)
        split = split_batch(body, c.messages, c.batch, tool_call_decision(policy, roles, ADAPTER))
        for m in split.denied:
            self.audit.record(
                "tools/call", "denied", user=user, roles=roles, adapter=ADAPTER, target=m.name, status=403
            )
        if split.forward is None:
            return local_status(split), {}, split.local_body()
        # rate limits
        decision = await self.limiter.check_all(self.limits.checks(user, split.forwarded))
        if not decision.allowed:
            for m in split.forwarded:
                if m.method == "tools/call":
                    limit = decision.limit.name if decision.limit else None
                    self.audit.record("tools/call", "limited", user=user, adapter=ADAPTER, target=m.name, limit=limit)
            errors = limited_responses(split.forwarded, decision) + list(split.local)
            body_out = json.dumps(errors if c.batch else errors[0]).encode()
            return limited_status(decision), {"Retry-After": retry_after_header(decision)}, body_out
        # forward
        answer = self.upstream.answer(split.forward)
        # response filters
        listing_ids = {m.id for m in split.forwarded if m.method == "tools/list"}
        if listing_ids and policy.restricts(roles):
            answer = filter_tools_list_body(answer, listing_ids, policy, roles)
        if split.local:
            answer = merge_batch_response(answer, split.local)
        # audit
        for m in split.forwarded:
            if m.method == "tools/call":
                self.audit.record("tools/call", "allowed", user=user, adapter=ADAPTER, target=m.name, status=200)
        return 200, {}, answer

    async def records(self) -> list[AuditRecord]:
        await self.audit.start()
        await self.audit.close()
        return self.sink.records


def rpc(ident: Any, method: str, name: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method, "params": {}}
    if name is not None:
        msg["params"] = {"name": name, "arguments": {}}
    return msg


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


USER = frozenset({"calc.user"})
NOBODY = frozenset[str]()


async def test_tools_list_shows_exactly_the_visible_tools_per_caller() -> None:
    gw = Gateway()
    for roles, visible in ((USER, ["add", "echo", "version"]), (NOBODY, ["version"]), ({"mcp.admin"}, TOOLS)):
        status, _, body = await gw.handle(MODERN, encode(rpc(1, "tools/list")), "u", frozenset(roles))
        assert status == 200 and [t["name"] for t in json.loads(body)["result"]["tools"]] == visible


async def test_denied_call_never_reaches_the_upstream_and_is_audited() -> None:
    gw = Gateway()
    status, _, body = await gw.handle(MODERN, encode(rpc("c1", "tools/call", "secret")), "bob", USER)
    error = json.loads(body)
    assert status == 403 and error["id"] == "c1" and error["error"]["code"] == TOOL_DENIED
    assert gw.upstream.received == []
    status, _, _ = await gw.handle(MODERN, encode(rpc("c2", "tools/call", "add")), "bob", USER)
    assert status == 200 and gw.upstream.called() == ["add"]
    assert [(r.outcome, r.tool, r.status) for r in await gw.records()] == [
        ("denied", "secret", 403),
        ("allowed", "add", 200),
    ]


async def test_batch_mixing_allowed_and_denied_calls() -> None:
    gw = Gateway()
    batch = [rpc(1, "tools/call", "add"), rpc(2, "tools/call", "secret"), rpc(3, "tools/list")]
    status, _, body = await gw.handle({"mcp-session-id": "g1.x"}, encode(batch), "u", USER)
    answers = {a["id"]: a for a in json.loads(body)}
    assert status == 200 and set(answers) == {1, 2, 3}
    assert answers[1]["result"]["content"][0]["text"] == "ran add"
    assert answers[2]["error"]["code"] == TOOL_DENIED
    assert [t["name"] for t in answers[3]["result"]["tools"]] == ["add", "echo", "version"]
    assert gw.upstream.called() == ["add"] and len(gw.upstream.received) == 2
    assert sorted((r.outcome, r.tool) for r in await gw.records()) == [("allowed", "add"), ("denied", "secret")]


async def test_mcp_name_mismatch_is_400_and_nothing_is_forwarded() -> None:
    gw = Gateway()
    headers = MODERN | {"mcp-method": "tools/call", "mcp-name": "add"}
    status, _, body = await gw.handle(headers, encode(rpc(1, "tools/call", "secret")), "u", USER)
    assert status == 400 and json.loads(body)["error"]["code"] == HEADER_MISMATCH
    assert gw.upstream.received == []


async def test_rate_limit_gives_429_retry_after_and_names_the_limit() -> None:
    gw = Gateway(rate_limits=[RateRule(per="user", requests=2, seconds=60, tools=["add"])])
    statuses = []
    for i in range(3):
        status, headers, body = await gw.handle(MODERN, encode(rpc(i, "tools/call", "add")), "alice", USER)
        statuses.append(status)
    assert statuses == [200, 200, 429]
    error = json.loads(body)
    assert error["id"] == 2 and error["error"]["data"]["limit"] == "rateLimits[0]"
    assert headers["Retry-After"] == "30"
    status, _, _ = await gw.handle(MODERN, encode(rpc(9, "tools/call", "add")), "bob", USER)  # per user
    assert status == 200 and gw.upstream.called() == ["add", "add", "add"]
    assert [r.outcome for r in await gw.records()] == ["allowed", "allowed", "limited", "allowed"]


async def test_malformed_body_is_answered_locally_under_a_policy() -> None:
    gw = Gateway()
    status, _, body = await gw.handle(MODERN, b'{"jsonrpc":"2.0","id":1,"method":"tools/call",', "u", USER)
    assert status == 400 and json.loads(body)["error"]["code"] == -32700 and gw.upstream.received == []
