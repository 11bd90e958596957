"""The MCP stages of the data plane (gateway/proxy/policy.py: McpStages), in process."""

from __future__ import annotations

import json
from typing import Any

from gateway.models import AdapterRecord, Identity
from gateway.policy.audit import AuditTrail
from gateway.policy.ratelimit import MemoryRateLimiter, RateRule
from gateway.policy.toolpolicy import ToolRule
from gateway.proxy.policy import McpStages

USER = Identity("u", frozenset({"calc.user"}))
NOBODY = Identity("n")


class ListSink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def write(self, records: Any) -> None:
        self.records.extend(records)

    async def close(self) -> None:
        pass


def record(**extra: Any) -> AdapterRecord:
    return AdapterRecord(name="calc", image_name="i", image_version="1", etag="e1", **extra)


def stages(*, audit: bool = False, default: tuple[int, float] | None = None) -> McpStages:
    trail = AuditTrail([ListSink()] if audit else [])
    return McpStages(limiter=MemoryRateLimiter(), audit=trail, default_user_rate=default)


def call(ident: Any, tool: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": tool}}).encode()


def test_nothing_configured_means_inactive_so_no_body_is_read() -> None:
    assert not stages().active(record())
    assert stages().active(record(tool_policy=[]))
    assert stages().active(record(rate_limits=[RateRule(per="user", requests=1, seconds=1)]))
    assert stages(audit=True).active(record())
    assert stages(default=(10, 1.0)).active(record())
    assert not stages().active(record(rate_limits=[]))


async def test_denied_call_is_a_local_403_for_its_id() -> None:
    s = stages()
    rec = record(tool_policy=[ToolRule(tools=["add"], roles=["calc.user"])])
    plan = await s.plan(rec, NOBODY, {}, call(5, "add"), legacy=False)
    assert plan.local is not None and plan.local.status == 403
    assert json.loads(plan.local.body)["id"] == 5 and s.denials == {"calc": 1}
    allowed = await s.plan(rec, USER, {}, call(6, "add"), legacy=False)
    assert allowed.local is None and allowed.body == call(6, "add")


async def test_header_mismatch_is_400() -> None:
    rec = record(tool_policy=[ToolRule(tools=["*"], roles=["*"])])
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "add"}
    plan = await stages().plan(rec, USER, headers, call(1, "secret"), legacy=False)
    assert plan.local is not None and plan.local.status == 400
    assert json.loads(plan.local.body)["id"] == 1  # issue 17: the request's id, not null


async def test_plan_carries_the_id_of_a_single_request_only() -> None:
    rec = record(rate_limits=[RateRule(per="user", requests=100, seconds=60)])
    s = stages()

    async def rpc_id(body: bytes) -> Any:
        plan = await s.plan(rec, USER, {}, body, legacy=False)
        assert plan.local is None
        return plan.rpc_id

    assert await rpc_id(call(5, "add")) == 5
    assert await rpc_id(call("x", "add")) == "x"
    assert await rpc_id(b"[" + call(5, "add") + b"]") is None  # a batch: no single id
    assert await rpc_id(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}') is None
    assert await rpc_id(b"{not json") is None


async def test_over_the_limit_is_429_with_retry_after() -> None:
    s = stages()
    rec = record(rate_limits=[RateRule(per="user", requests=1, seconds=60)])
    assert (await s.plan(rec, USER, {}, call(1, "add"), legacy=False)).local is None
    plan = await s.plan(rec, USER, {}, call(2, "add"), legacy=False)
    assert plan.local is not None and plan.local.status == 429 and int(plan.local.headers["Retry-After"]) >= 1
    assert s.limited_by == {("calc", "rateLimits[0]"): 1}


async def test_listing_ids_and_policy_only_for_restricted_callers() -> None:
    rec = record(tool_policy=[ToolRule(tools=["add"], roles=["calc.user"])])
    listing = json.dumps({"jsonrpc": "2.0", "id": "l", "method": "tools/list"}).encode()
    plan = await stages().plan(rec, NOBODY, {}, listing, legacy=False)
    assert plan.listing_ids == {"l"} and plan.policy is not None
    admin = await stages().plan(rec, Identity("a", frozenset({"mcp.admin"})), {}, listing, legacy=False)
    assert admin.listing_ids == set() and admin.policy is None


async def test_audit_hashes_arguments_only_when_asked() -> None:
    for hashing in (False, True):
        sink = ListSink()
        trail = AuditTrail([sink], hash_arguments=hashing)
        s = McpStages(limiter=MemoryRateLimiter(), audit=trail)
        rec = record(tool_policy=[ToolRule(tools=["add"], roles=["calc.user"])])
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1}}}
        ).encode()
        await s.plan(rec, NOBODY, {}, body, legacy=False)
        await trail.start()
        await trail.close()
        [denied] = sink.records
        assert denied.outcome == "denied" and denied.tool == "add"
        assert (denied.arguments_sha256 is not None) is hashing
