"""toolPolicy: validation naming the field, who may call what, batch splitting, and tools/list filters."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.policy.classify import classify
from gateway.policy.toolpolicy import (
    INVALID_PARAMS,
    TOOL_DENIED,
    PolicyCache,
    SseEventTooLarge,
    ToolPolicy,
    ToolRule,
    ToolsListSseFilter,
    denied_error,
    filter_tools_list_body,
    local_status,
    merge_batch_response,
    split_batch,
    sse_message_event,
    tool_call_decision,
    validate_tool_policy,
)

CALC = ToolPolicy(
    [
        ToolRule(tools=["add", "echo*"], roles=["calc.user"]),
        ToolRule(tools=["version"], roles=["*"]),
        ToolRule(tools=["debug_[ab]"], roles=["ops"]),
    ]
)
USER = frozenset({"calc.user"})
NOBODY = frozenset[str]()


def rules(value: Any) -> list[ToolRule]:
    """Rules decoded as the API does; ones the schema keywords refuse are built as code would build them
    (the constructor checks no keywords), so the validator's own messages stay under test."""
    try:
        return msgspec.convert(value, list[ToolRule])
    except msgspec.ValidationError as exc:
        if not any(word in str(exc) for word in ("length", "matching regex", ">=", "<=")):
            raise  # a wrong type or an unknown member: the decoder's refusal is what is under test
        return [ToolRule(**item) for item in value]


# --- validation ------------------------------------------------------------------------------------


def test_valid_policy_has_no_errors() -> None:
    assert validate_tool_policy(rules([{"tools": ["add", "echo*"], "roles": ["calc.user", "*"]}])) == []
    assert validate_tool_policy(None) == []
    assert validate_tool_policy([]) == []


def test_errors_name_the_field_at_fault() -> None:
    errors = validate_tool_policy(
        rules(
            [
                {"tools": ["add"], "roles": ["a"]},
                {"tools": ["ok", "has space", ""], "roles": []},
                {"tools": [], "roles": ["", "x" * 300]},
            ]
        )
    )
    assert [e.split(":")[0] for e in errors] == [
        "toolPolicy[1].tools[1]",
        "toolPolicy[1].tools[2]",
        "toolPolicy[1].roles",
        "toolPolicy[2].tools",
        "toolPolicy[2].roles[0]",
        "toolPolicy[2].roles[1]",
    ]


def test_counts_and_lengths_are_limited() -> None:
    assert validate_tool_policy(rules([{"tools": ["a"], "roles": ["r"]}] * 101))[0].startswith("toolPolicy: at most")
    assert "at most 200" in validate_tool_policy(rules([{"tools": ["a"] * 201, "roles": ["r"]}]))[0]
    assert validate_tool_policy(rules([{"tools": ["a" * 129], "roles": ["r"]}]))[0].startswith("toolPolicy[0].tools[0]")


def test_unknown_rule_members_are_refused_by_decoding() -> None:
    with pytest.raises(msgspec.ValidationError, match="tool"):
        rules([{"tools": ["a"], "roles": ["r"], "tool": "typo"}])


# --- may_call -------------------------------------------------------------------------------------


def test_absent_policy_allows_everything() -> None:
    policy = ToolPolicy(None)
    assert policy.unrestricted and policy.may_call("anything", NOBODY) and not policy.restricts(NOBODY)


@pytest.mark.parametrize(
    ("tool", "roles", "allowed"),
    [
        ("add", USER, True),
        ("echo", USER, True),
        ("echo_loud", USER, True),
        ("Echo", USER, False),  # case-sensitive
        ("add", NOBODY, False),
        ("version", NOBODY, True),  # "*": every reader
        ("secret", USER, False),
        ("debug_a", frozenset({"ops"}), True),
        ("debug_c", frozenset({"ops"}), False),
        ("secret", frozenset({"mcp.admin"}), True),
        ("add", frozenset({"other", "calc.user"}), True),
    ],
)
def test_may_call(tool: str, roles: frozenset[str], allowed: bool) -> None:
    assert CALC.may_call(tool, roles) is allowed


def test_roles_of_any_collection_type_and_a_bounded_decision_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.policy.toolpolicy as tp

    monkeypatch.setattr(tp, "DECISION_CACHE", 3)
    policy = ToolPolicy([ToolRule(tools=["t*"], roles=["r"])])
    assert policy.may_call("t1", ["r"]) and policy.may_call("t1", {"r"}) and not policy.may_call("t1", ("x",))
    for i in range(10):
        assert policy.may_call(f"t{i}", frozenset({"r"}))
        assert len(policy._decided) <= 3


def test_admin_role_is_the_gateways() -> None:
    import gateway.models
    import gateway.policy.toolpolicy

    assert gateway.policy.toolpolicy.ADMIN_ROLE == gateway.models.ADMIN_ROLE


def test_empty_policy_hides_everything_but_from_admins() -> None:
    policy = ToolPolicy([])
    assert not policy.unrestricted and not policy.may_call("add", USER)
    assert policy.may_call("add", {"mcp.admin"}) and not policy.restricts({"mcp.admin"})


def test_policy_cache_recompiles_only_when_the_version_changes() -> None:
    cache = PolicyCache()
    first = cache.get("calc", "etag-1", [ToolRule(tools=["add"], roles=["*"])])
    assert cache.get("calc", "etag-1", []) is first
    second = cache.get("calc", "etag-2", [])
    assert second is not first and not second.may_call("add", NOBODY)
    cache.forget("calc")
    assert cache.get("calc", "etag-2", None).unrestricted


# --- denied calls, batches -------------------------------------------------------------------------


def test_denied_error_names_the_tool_and_keeps_the_id() -> None:
    err = denied_error("r-7", "delete_all", "calc")
    assert err["id"] == "r-7" and err["error"]["code"] == TOOL_DENIED
    assert "'delete_all'" in err["error"]["message"] and "'calc'" in err["error"]["message"]
    assert denied_error(3, None)["error"]["code"] == INVALID_PARAMS


def body_of(*messages: dict[str, Any]) -> bytes:
    return json.dumps(list(messages), separators=(", ", ": ")).encode()


def call(ident: Any, name: str | None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/call", "params": {"arguments": {"x": [1, 2]}}}
    if name is not None:
        msg["params"]["name"] = name
    if ident is not None:
        msg["id"] = ident
    return msg


def split(body: bytes, policy: ToolPolicy = CALC, roles: frozenset[str] = USER) -> Any:
    c = classify({}, body)
    return split_batch(body, c.messages, c.batch, tool_call_decision(policy, roles, "calc"))


def test_batch_mixing_allowed_and_denied_forwards_only_the_allowed_part() -> None:
    body = body_of(call(1, "add"), call(2, "secret"), {"jsonrpc": "2.0", "method": "notifications/x"}, call(3, "echo"))
    s = split(body)
    assert json.loads(s.forward) == [call(1, "add"), {"jsonrpc": "2.0", "method": "notifications/x"}, call(3, "echo")]
    assert b'{"x": [1, 2]}' in s.forward  # the forwarded messages are the client's bytes, not re-encoded
    assert [e["id"] for e in s.local] == [2] and s.local[0]["error"]["code"] == TOOL_DENIED and s.refused == 1


def test_split_lists_forwarded_and_denied_messages_and_builds_the_local_body() -> None:
    s = split(body_of(call(1, "add"), call(2, "secret"), call(None, "hidden")))
    assert [m.name for m in s.forwarded] == ["add"] and [m.name for m in s.denied] == ["secret", "hidden"]
    assert s.refused == 2 and s.batch
    alone = split(body_of(call(2, "secret")))
    assert json.loads(alone.local_body()) == [denied_error(2, "secret", "calc")]
    single = split(json.dumps(call(2, "secret")).encode())
    assert json.loads(single.local_body()) == denied_error(2, "secret", "calc")


def test_nothing_denied_forwards_the_body_itself() -> None:
    body = body_of(call(1, "add"), call(2, "version"))
    assert split(body).forward is body


def test_single_denied_call_is_answered_locally_with_403() -> None:
    body = json.dumps(call("a", "secret")).encode()
    s = split(body)
    assert s.forward is None and [e["id"] for e in s.local] == ["a"] and local_status(s) == 403


def test_denied_notification_is_dropped_without_an_answer() -> None:
    s = split(body_of(call(None, "secret"), call(1, "add")))
    assert s.local == () and s.refused == 1 and json.loads(s.forward) == [call(1, "add")]
    alone = split(json.dumps(call(None, "secret")).encode())
    assert alone.forward is None and local_status(alone) == 202


def test_call_without_a_name_is_refused_under_a_policy() -> None:
    s = split(body_of(call(5, None)))
    assert s.forward is None and s.local[0]["error"]["code"] == INVALID_PARAMS


def test_all_denied_batch_forwards_nothing() -> None:
    s = split(body_of(call(1, "secret"), call(2, "hidden")))
    assert s.forward is None and [e["id"] for e in s.local] == [1, 2]


def test_merge_appends_local_errors_to_the_upstream_batch() -> None:
    local = [denied_error(2, "secret")]
    merged = json.loads(merge_batch_response(b' [{"jsonrpc":"2.0","id":1,"result":{}}] ', local))
    assert [m["id"] for m in merged] == [1, 2]
    single = json.loads(merge_batch_response(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700}}', local))
    assert [m["id"] for m in single] == [None, 2]
    assert json.loads(merge_batch_response(b"", local)) == [denied_error(2, "secret")]


def test_local_error_as_an_sse_event() -> None:
    event = sse_message_event(denied_error(1, "x"))
    assert event.startswith(b"event: message\ndata: {") and event.endswith(b"}\n\n")


# --- tools/list filters -----------------------------------------------------------------------------

TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("add", "echo", "secret", "version")]


def listing(ident: Any = 1, tools: list[Any] = TOOLS, **result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "result": {"tools": tools, **result}}


def names(message: dict[str, Any]) -> list[str]:
    return [t["name"] for t in message["result"]["tools"]]


def test_json_listing_is_trimmed_and_keeps_the_cursor() -> None:
    body = json.dumps(listing(1, nextCursor="p2")).encode()
    out = json.loads(filter_tools_list_body(body, {1}, CALC, USER))
    assert names(out) == ["add", "echo", "version"] and out["result"]["nextCursor"] == "p2"
    assert names(json.loads(filter_tools_list_body(body, {1}, CALC, NOBODY))) == ["version"]


def test_json_listing_untouched_for_other_ids_admins_and_nothing_to_hide() -> None:
    body = json.dumps(listing(1)).encode()
    assert filter_tools_list_body(body, {2}, CALC, USER) is body
    assert filter_tools_list_body(body, {1}, CALC, {"mcp.admin"}) is body
    assert filter_tools_list_body(body, {1}, ToolPolicy(None), USER) is body
    visible = json.dumps(listing(1, TOOLS[:2])).encode()
    assert filter_tools_list_body(visible, {1}, CALC, USER) is visible
    assert filter_tools_list_body(b'{"tools": not json', {1}, CALC, USER) == b'{"tools": not json'


def test_json_batch_listing_trims_only_listing_responses() -> None:
    other = {"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "secret"}]}}  # not a tools/list id
    out = json.loads(filter_tools_list_body(json.dumps([listing(1), other]).encode(), {1}, CALC, USER))
    assert names(out[0]) == ["add", "echo", "version"] and out[1] == other


def sse(*events: bytes) -> bytes:
    return b"".join(events)


def data_event(message: dict[str, Any], *, event_id: bytes | None = None, nl: bytes = b"\n") -> bytes:
    head = (b"id: " + event_id + nl if event_id else b"") + b"event: message" + nl
    return head + b"data: " + json.dumps(message).encode() + nl + nl


def run_filter(stream: bytes, chunk: int, ids: Any = frozenset({1}), roles: frozenset[str] = USER) -> bytes:
    f = ToolsListSseFilter(ids, CALC, roles)
    out = [f.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)]
    return b"".join(out) + f.flush()


def parse_sse(stream: bytes) -> list[dict[str, str]]:
    events = []
    for block in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        fields: dict[str, str] = {}
        for line in block.split(b"\n"):
            if b":" in line and not line.startswith(b":"):
                k, _, v = line.partition(b":")
                fields[k.decode()] = fields.get(k.decode(), "") + v.decode().lstrip(" ")
        if fields:
            events.append(fields)
    return events


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100_000])
def test_sse_listing_is_trimmed_across_any_chunking_and_other_events_are_byte_identical(nl: bytes, chunk: int) -> None:
    progress = b": keep-alive" + nl + b"event: message" + nl + b'data: {"jsonrpc":"2.0","method":"n"}' + nl + nl
    priming = b"id: e0" + nl + b"data:" + nl + nl
    stream = sse(priming, progress, data_event(listing(1), event_id=b"e1", nl=nl), progress)
    out = run_filter(stream, chunk)
    pieces = out.split(nl + nl)
    assert out.startswith(priming + progress) and out.endswith(progress)
    rewritten = out[len(priming + progress) : -len(progress)]
    assert rewritten.startswith(b"id: e1" + nl + b"event: message" + nl + b"data: ") and rewritten.endswith(nl + nl)
    message = json.loads(rewritten.split(b"data: ", 1)[1])
    assert names(message) == ["add", "echo", "version"] and len(pieces) >= 4


def test_sse_multiline_data_listing_is_rebuilt_as_one_data_line() -> None:
    text = json.dumps(listing(1), indent=1).encode()
    event = b"event: message\n" + b"".join(b"data: " + line + b"\n" for line in text.split(b"\n")) + b"\n"
    out = run_filter(event, 5)
    (fields,) = parse_sse(out)
    assert names(json.loads(fields["data"])) == ["add", "echo", "version"] and fields["event"] == "message"


def test_sse_listing_with_nothing_to_hide_or_another_id_is_byte_identical() -> None:
    visible = data_event(listing(1, TOOLS[:2]))
    other_id = data_event(listing(9))
    assert run_filter(visible + other_id, 4) == visible + other_id


def test_sse_batch_response_in_one_event_is_trimmed() -> None:
    other = {"jsonrpc": "2.0", "id": 2, "result": {"content": []}}
    event = b"data: " + json.dumps([other, listing(1)]).encode() + b"\n\n"
    (fields,) = parse_sse(run_filter(event, 9))
    first, second = json.loads(fields["data"])
    assert first == other and names(second) == ["add", "echo", "version"]


def test_sse_ids_may_arrive_while_the_stream_runs() -> None:
    ids: set[int] = set()
    f = ToolsListSseFilter(ids, CALC, USER)
    first = data_event(listing(1))
    assert f.feed(first) == first  # id 1 not (yet) known as a tools/list request
    ids.add(2)
    assert names(json.loads(f.feed(data_event(listing(2))).split(b"data: ")[1])) == ["add", "echo", "version"]


def test_sse_unterminated_last_event_is_filtered_at_flush() -> None:
    event = b"data: " + json.dumps(listing(1)).encode()
    f = ToolsListSseFilter({1}, CALC, USER)
    assert f.feed(event) == b""
    assert names(json.loads(f.flush()[6:])) == ["add", "echo", "version"]


def test_sse_event_over_the_limit_raises() -> None:
    f = ToolsListSseFilter({1}, CALC, USER, max_event=100)
    f.feed(b"data: " + b"x" * 50)
    with pytest.raises(SseEventTooLarge):
        f.feed(b"x" * 60)


def test_sse_endpoint_event_of_legacy_streams_passes() -> None:
    event = b"event: endpoint\ndata: /adapters/calc/messages?session_id=g1.x\n\n"
    assert run_filter(event, 3) == event
