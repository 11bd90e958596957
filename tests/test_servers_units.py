"""Virtual server pieces without a gateway: member filters (globs, the adapter's toolPolicy), names and
URIs mapped back to their member, and the 2026-07-28 request checks."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from gateway.models import AdapterRecord, Identity
from gateway.policy.toolpolicy import ToolRule
from gateway.servers.mcp import Context, Member, VirtualServers, _modern_check
from gateway.servers.models import ServerMember


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


def test_modern_request_checks() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "_meta": meta}}
    good = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "add"}
    assert _modern_check(good, call, meta) is None
    assert _modern_check({**good, "mcp-name": "=?base64?YWRk?="}, call, meta) is None
    assert _modern_check({**good, "mcp-name": "sub"}, call, meta) == (400, -32020, "Mcp-Name does not match the body")
    assert _modern_check({**good, "mcp-method": "tools/list"}, call, meta)[:2] == (400, -32020)  # type: ignore[index]
    assert _modern_check(good, {**call, "method": "ping"}, meta)[:2] == (404, -32601)  # type: ignore[index]
    assert _modern_check(good, call, {})[:2] == (400, -32602)  # type: ignore[index]
    old = {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    assert _modern_check({**good, "mcp-protocol-version": "2099-01-01"}, call, old)[:2] == (400, -32022)  # type: ignore[index]
