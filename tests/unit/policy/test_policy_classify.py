"""MCP classification: eras, methods, ids and names from headers and JSON-RPC bodies, never an exception."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.policy.classify import HEADER_MISMATCH, Message, classify

MODERN = {"mcp-protocol-version": "2026-07-28"}


def call_body(name: str = "add", ident: object = 1, **extra: object) -> bytes:
    msg = {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": name, "arguments": {"a": 1}}}
    return json.dumps(msg | extra).encode()


def test_tools_call_body_gives_method_id_and_tool_name() -> None:
    c = classify({}, call_body("add", 7))
    assert c.parsed and not c.batch and not c.malformed and c.error is None
    assert c.messages == (Message(method="tools/call", id=7, has_id=True, name="add"),)
    assert c.method == "tools/call" and c.name == "add"


@pytest.mark.parametrize(
    ("method", "params", "name"),
    [
        ("tools/call", {"name": "echo"}, "echo"),
        ("prompts/get", {"name": "greet", "arguments": {}}, "greet"),
        ("resources/read", {"uri": "file:///a.txt"}, "file:///a.txt"),
        ("tools/list", {"cursor": "x", "name": "not-a-target"}, None),
    ],
)
def test_named_methods_read_name_or_uri_and_others_none(method: str, params: object, name: str | None) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": "r1", "method": method, "params": params}).encode()
    assert classify({}, body).messages[0].name == name


def test_batch_keeps_order_ids_and_notifications() -> None:
    body = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add"}},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
            {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "secret"}},
            {"jsonrpc": "2.0", "id": 9, "result": {}},
        ]
    ).encode()
    c = classify({"mcp-session-id": "g1.x"}, body)
    assert c.batch and c.parsed and c.era == "session"
    assert [m.method for m in c.messages] == ["tools/call", "notifications/progress", "tools/call", None]
    assert [m.has_id for m in c.messages] == [True, False, True, True]
    assert c.messages[1].is_notification and c.messages[2].is_request and not c.messages[3].is_request
    assert [m.name for m in c.named("tools/call")] == ["add", "secret"]
    assert c.method is None and c.name is None  # a batch has no single method


def test_null_id_is_present_missing_id_is_a_notification() -> None:
    assert classify({}, b'{"jsonrpc":"2.0","id":null,"method":"ping"}').messages[0].has_id
    assert not classify({}, b'{"jsonrpc":"2.0","method":"ping"}').messages[0].has_id


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b'{"method": "tools/call"} trailing',
        b"[]",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"\xff\xfe",
        b'[{"id": 1, "method": "tools/call"}, 3]',
    ],
)
def test_malformed_bodies_are_unknown_never_an_exception(body: bytes) -> None:
    c = classify({}, body)
    assert not c.parsed and c.messages == ()
    assert c.malformed == bool(body)


@pytest.mark.parametrize(
    ("body", "ident", "name"),
    [
        (b'{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"add"}}', 1.5, "add"),
        (b'{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"add"}}', None, "add"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}', 1, None),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["add"]}', 1, None),
        (b'{"jsonrpc":2,"id":1,"method":"tools/call","params":{"name":"add"}}', 1, "add"),
    ],
)
def test_unusual_shapes_take_the_slow_path(body: bytes, ident: object, name: str | None) -> None:
    (m,) = classify({}, body).messages
    assert m.method == "tools/call" and m.has_id and m.id == ident and m.name == name


def test_duplicate_keys_resolve_to_the_last_like_the_upstream_decoders() -> None:
    c = classify({}, b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","name":"secret"}}')
    assert c.name == json.loads(b'{"name":"add","name":"secret"}')["name"] == "secret"


@pytest.mark.parametrize(
    ("headers", "body", "era"),
    [
        (MODERN, call_body(), "modern"),
        ({"mcp-protocol-version": "2027-01-01"}, call_body(), "modern"),
        ({"mcp-protocol-version": "2025-06-18"}, call_body(), "session"),
        ({"mcp-session-id": "g1.abc"}, call_body(), "session"),
        ({}, b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}', "session"),
        ({}, call_body(), "modern"),
        ({}, None, "unknown"),
        ({}, b"garbage", "unknown"),
        ({"mcp-protocol-version": "zzz"}, None, "unknown"),
        ({"mcp-protocol-version": "9999"}, call_body(), "modern"),  # not a revision: the body decides
    ],
)
def test_era_hint(headers: dict[str, str], body: bytes | None, era: str) -> None:
    assert classify(headers, body).era == era


def test_legacy_route_says_legacy() -> None:
    assert classify({}, call_body(), legacy=True).era == "legacy"


def test_modern_headers_alone_without_parsing_the_body() -> None:
    headers = MODERN | {"mcp-method": "tools/call", "mcp-name": "add"}
    c = classify(headers, b"this is never read", parse_body=False)
    assert c.era == "modern" and not c.parsed and not c.malformed and c.error is None
    assert c.method == "tools/call" and c.name == "add"
    assert [m.name for m in c.named("tools/call")] == ["add"] and c.named("prompts/get") == []


def test_base64_encoded_name_header_is_decoded() -> None:
    name = "héllo wörld"
    encoded = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
    c = classify(MODERN | {"mcp-method": "tools/call", "mcp-name": encoded}, call_body(name))
    assert c.header_name == name and c.error is None


def test_headers_agreeing_with_the_body_pass() -> None:
    c = classify(MODERN | {"mcp-method": "tools/call", "mcp-name": "add"}, call_body("add"))
    assert c.error is None


def test_mcp_name_disagreeing_with_the_body_is_a_mismatch() -> None:
    c = classify(MODERN | {"mcp-method": "tools/call", "mcp-name": "add"}, call_body("delete_everything"))
    assert c.error is not None
    assert (c.error.status, c.error.code, c.error.header) == (400, HEADER_MISMATCH, "Mcp-Name")
    assert "'add'" in c.error.message and "'delete_everything'" in c.error.message
    assert c.name == "delete_everything"  # the body is authoritative


def test_mcp_method_disagreeing_with_the_body_is_a_mismatch() -> None:
    c = classify(MODERN | {"mcp-method": "tools/list"}, call_body("add"))
    assert c.error is not None and c.error.header == "Mcp-Method"


def test_mcp_name_on_a_method_without_a_target_is_a_mismatch() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    c = classify(MODERN | {"mcp-method": "tools/list", "mcp-name": "add"}, body)
    assert c.error is not None and c.error.header == "Mcp-Name"


def test_headers_with_a_batch_body_are_a_mismatch() -> None:
    body = b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}]'
    c = classify(MODERN | {"mcp-method": "tools/call", "mcp-name": "add"}, body)
    assert c.error is not None and c.error.batch and "batch" in c.error.message


def test_missing_name_header_is_not_a_mismatch_the_body_decides() -> None:
    assert classify(MODERN | {"mcp-method": "tools/call"}, call_body("add")).error is None
