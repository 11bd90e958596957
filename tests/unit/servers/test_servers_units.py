"""Virtual server pieces without a gateway: member filters (globs, the adapter's toolPolicy), names and
URIs mapped back to their member, and the 2026-07-28 request checks."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec

from gateway.models import AdapterRecord, Identity, ServerMember
from gateway.policy.toolpolicy import ToolRule
from gateway.servers.mcp import Context, Member, VirtualServers, _modern_check
from gateway.servers.member import MemberError


def adapter(name: str) -> AdapterRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return AdapterRecord(name=name, image_name="x", image_version="1", created_at=now, last_updated_at=now)


class PolicyAdapter(AdapterRecord, kw_only=True):
    """An adapter record with the toolPolicy field that issue 15 adds (absent from this branch's models)."""

    tool_policy: list[ToolRule] | None = None


def test_include_and_exclude_globs() -> None:
    member = Member(
        ServerMember(adapter="calc", prefix="c_", tools=["add", "echo*"], exclude=["echo_secret"]), adapter("calc")
    )
    who = Identity("u")
    assert member.visible("add", who) and member.visible("echo", who) and member.visible("echo_loud", who)
    assert not member.visible("echo_secret", who) and not member.visible("sub", who)


def test_the_member_adapters_tool_policy_applies_for_the_caller() -> None:
    record = msgspec.convert(
        {
            "name": "calc",
            "image_name": "x",
            "image_version": "1",
            "tool_policy": [{"tools": ["add"], "roles": ["*"]}, {"tools": ["get_env"], "roles": ["ops"]}],
        },
        PolicyAdapter,
    )
    member = Member(ServerMember(adapter="calc", prefix="c_"), record)
    assert member.visible("add", Identity("u")) and not member.visible("get_env", Identity("u"))
    assert member.visible("get_env", Identity("u", frozenset({"ops"})))
    assert member.visible("get_env", Identity("root", frozenset({"mcp.admin"})))


def test_names_and_uris_map_back_to_their_member() -> None:
    servers = VirtualServers.__new__(VirtualServers)
    calc = Member(ServerMember(adapter="calc", prefix="calc_"), adapter("calc"))
    calc2 = Member(ServerMember(adapter="calc2", prefix="calc_x_"), adapter("calc2"))
    plain = Member(ServerMember(adapter="plain"), adapter("plain"))
    members = [calc, calc2, plain]
    who = Identity("u")
    assert servers._by_name(members, "calc_add", who) == (calc, "add")
    assert servers._by_name(members, "calc_x_add", who) == (calc2, "add")  # the longest prefix wins
    assert servers._by_name(members, "other", who) == (plain, "other")
    assert calc.uri_out("file:///a b") == "mcpgw+calc:file:///a b" and plain.uri_out("test://x") == "test://x"
    assert servers._by_uri(members, "mcpgw+calc:file:///a b") == (calc, "file:///a b")
    assert servers._by_uri(members, "test://x") == (plain, "test://x")
    # Without prefixes (/mcp with the prefix off) the listing records each name's owner.
    ctx = Context(key="k", user_id="u")
    ctx.owners["add"] = "calc2"
    flat = [
        Member(ServerMember(adapter="calc"), adapter("calc")),
        Member(ServerMember(adapter="calc2"), adapter("calc2")),
    ]
    assert servers._by_name(flat, "add", who, ctx)[0] is flat[1]


def refused(refusal: tuple[int, int, str] | None) -> tuple[int, int] | None:
    """(status, JSON-RPC code) of a refusal, without its message."""
    return refusal[:2] if refusal is not None else None


def test_modern_request_checks() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "_meta": meta}}
    good = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "add"}
    assert _modern_check(good, call, meta) is None
    assert _modern_check({**good, "mcp-name": "=?base64?YWRk?="}, call, meta) is None
    assert _modern_check({**good, "mcp-name": "sub"}, call, meta) == (400, -32020, "Mcp-Name does not match the body")
    missing = {k: v for k, v in good.items() if k != "mcp-name"}
    assert _modern_check(missing, call, meta) == (
        400,
        -32020,
        "the mcp-name header is required for tools/call in 2026-07-28",
    )
    assert refused(_modern_check({**good, "mcp-method": "tools/list"}, call, meta)) == (400, -32020)
    assert refused(_modern_check(good, {**call, "method": "ping"}, meta)) == (404, -32601)
    assert refused(_modern_check(good, call, {})) == (400, -32602)
    old = {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    assert refused(_modern_check({**good, "mcp-protocol-version": "2099-01-01"}, call, old)) == (400, -32022)


class FakeMember:
    """Stands in for a MemberClient in listing tests: counts calls, can fail or hang."""

    def __init__(self, tools: list[str], *, fail: bool = False, hang: bool = False) -> None:
        self.tools = tools
        self.fail = fail
        self.hang = hang
        self.calls = 0

    async def request(self, scope: object, method: str, params: dict[str, object], *rest: object) -> object:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(60)
        if self.fail:
            raise MemberError("broken", "HTTP 503")
        return {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in self.tools]}


def servers(ttl: float, timeout: float = 1.0) -> VirtualServers:
    return VirtualServers(
        app=lambda: None,  # type: ignore[arg-type,return-value]
        servers=None,  # type: ignore[arg-type]
        view=None,  # type: ignore[arg-type]
        authenticator=None,  # type: ignore[arg-type]
        hosts=None,  # type: ignore[arg-type]
        member_timeout=timeout,
        list_ttl=ttl,
        session_ttl=60,
        gateway_prefix=True,
        sessions=None,  # type: ignore[arg-type]  # no client sessions in these tests
    )


def context_with(members: dict[str, FakeMember]) -> Context:
    ctx = Context(key="k", user_id="u")
    ctx.clients.update(members)  # type: ignore[arg-type]
    return ctx


async def test_listings_are_cached_per_member_and_caller_until_ttl_or_invalidation() -> None:
    vs = servers(ttl=30)
    calc = FakeMember(["add"])
    ctx = context_with({"calc": calc})
    members = [Member(ServerMember(adapter="calc", prefix="c_"), adapter("calc"))]
    who = Identity("u")
    assert [t["name"] for t in await vs._list({}, ctx, who, members, "tools")] == ["c_add"]
    await vs._list({}, ctx, who, members, "tools")
    assert calc.calls == 1
    await vs._list({}, ctx, Identity("other"), members, "tools")  # another caller: its own entry
    assert calc.calls == 2
    vs.invalidate("calc")  # what a member's notifications/tools/list_changed triggers
    await vs._list({}, ctx, who, members, "tools")
    assert calc.calls == 3
    no_cache = servers(ttl=0)
    await no_cache._list({}, ctx, who, members, "tools")
    await no_cache._list({}, ctx, who, members, "tools")
    assert calc.calls == 5


async def test_a_failing_or_hung_member_is_left_out_within_the_timeout() -> None:
    vs = servers(ttl=0, timeout=0.3)
    ctx = context_with(
        {"calc": FakeMember(["add"]), "broken": FakeMember(["x"], fail=True), "slow": FakeMember(["y"], hang=True)}
    )
    members = [
        Member(ServerMember(adapter="calc", prefix="c_"), adapter("calc")),
        Member(ServerMember(adapter="broken", prefix="b_"), adapter("broken")),
        Member(ServerMember(adapter="slow", prefix="s_"), adapter("slow")),
    ]
    started = time.monotonic()
    listed = await vs._list({}, ctx, Identity("u"), members, "tools")
    assert [t["name"] for t in listed] == ["c_add"]
    assert time.monotonic() - started < 2.0
    assert vs.member_failures == {"broken": 1, "slow": 1}
