"""Hostile inputs against the policy building blocks: nothing raises, nothing slips past, nothing is slow."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from gateway.policy.audit import AuditTrail, FileSink
from gateway.policy.classify import classify
from gateway.policy.ratelimit import AdapterLimits, RateRule
from gateway.policy.toolpolicy import (
    ToolPolicy,
    ToolRule,
    ToolsListSseFilter,
    filter_tools_list_body,
    merge_batch_response,
    split_batch,
    tool_call_decision,
)

POLICY = ToolPolicy([ToolRule(tools=["add", "echo*"], roles=["calc.user"])])
USER = frozenset({"calc.user"})
DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":'
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}}",
    ],
    ids=["deep-array", "deep-object", "deep-arguments"],
)
def test_deeply_nested_bodies_are_malformed_not_a_crash(body: bytes) -> None:
    c = classify({}, body)
    assert c.malformed and not c.parsed and c.name is None
    assert filter_tools_list_body(b'{"tools":' + body + b"}", {1}, POLICY, USER) is not None
    assert merge_batch_response(body, [])  # passed along, not repaired


def test_random_bytes_never_raise() -> None:
    rng = random.Random(15)
    alphabet = b'{}[]":,0123456789.-+eE \t\n\\/ntrufalsid' + bytes(range(0x80, 0x90))
    for _ in range(3000):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        c = classify({"mcp-method": "tools/call", "mcp-name": "add"}, body)
        assert c.parsed or not c.messages


def test_mutated_valid_calls_never_raise_and_never_name_a_tool_they_do_not_contain() -> None:
    rng = random.Random(16)
    base = json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add"}} for i in range(3)]
    ).encode()
    for _ in range(3000):
        body = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        c = classify({}, bytes(body))
        for m in c.messages:
            assert m.name is None or m.name in bytes(body).decode("utf-8", "replace")


@pytest.mark.parametrize(
    "name",
    ["add ", " add", "add\x00", "ADD", "\u0430dd", "add\u200b", "ech", "add/../secret", "Echo"],
)
def test_lookalike_tool_names_are_denied(name: str) -> None:
    assert not POLICY.may_call(name, USER)


def test_glob_suffix_matches_newlines_consistently() -> None:
    # fnmatch.translate compiles with DOTALL: "echo*" covers "echo\nanything" — as the policy author asked.
    assert POLICY.may_call("echo\nx", USER)


def test_duplicate_name_keys_and_header_disagreement_cannot_smuggle_a_call() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","name":"secret"}}'
    c = classify({"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "add"}, body)
    assert c.error is not None  # the header says add, the body (last key wins) says secret
    split = split_batch(body, c.messages, c.batch, tool_call_decision(POLICY, USER))
    assert split.forward is None  # and the policy, which reads the body, refuses it anyway


def test_huge_batch_is_classified_and_split_in_linear_time() -> None:
    n = 20_000
    messages = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add" if i % 2 else "secret"}}
        for i in range(n)
    ]
    body = json.dumps(messages).encode()
    started = time.perf_counter()
    c = classify({}, body)
    split = split_batch(body, c.messages, c.batch, tool_call_decision(POLICY, USER))
    elapsed = time.perf_counter() - started
    assert len(split.local) == n // 2 and split.forward is not None
    assert len(json.loads(split.forward)) == n // 2
    assert elapsed < 2.0  # ≈ 0.05 s idle; generous for a loaded machine


def test_many_tiny_sse_events_fed_byte_by_byte_stay_linear() -> None:
    stream = b"data: {}\n\n" * 5000
    f = ToolsListSseFilter({1}, POLICY, USER)
    started = time.perf_counter()
    out = b"".join(f.feed(stream[i : i + 1]) for i in range(len(stream))) + f.flush()
    assert out == stream and time.perf_counter() - started < 5.0


def test_random_chunking_of_a_listing_stream_equals_the_whole() -> None:
    rng = random.Random(17)
    listing = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": n} for n in ("add", "secret", "echo")]}}
    stream = (
        b": ping\r\n\r\nid: 1\r\nevent: message\r\ndata: " + json.dumps(listing).encode() + b"\r\n\r\n"
        b'data: {"jsonrpc":"2.0","method":"notifications/progress"}\r\r'
    )
    whole = ToolsListSseFilter({1}, POLICY, USER)
    expected = whole.feed(stream) + whole.flush()
    assert b"secret" not in expected
    for _ in range(300):
        f = ToolsListSseFilter({1}, POLICY, USER)
        out, i = [], 0
        while i < len(stream):
            step = rng.randrange(1, 12)
            out.append(f.feed(stream[i : i + step]))
            i += step
        assert b"".join(out) + f.flush() == expected


def test_user_ids_cannot_collide_or_escape_the_hash_tag() -> None:
    limits = AdapterLimits("calc", [RateRule(per="user", requests=5, seconds=1)])
    users = ["a:u:b", "a", "{ratelimit}", "}", "x" * 10_000, "é", ""]
    keys = [limits.checks(u, classify({}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}').messages)[0].key for u in users]
    assert len(set(keys)) == len(users)
    assert all("{" not in k and "}" not in k and len(k) < 64 for k in keys)


async def test_audit_lines_cannot_be_forged_by_names(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail([FileSink(path)])
    await trail.start()
    forged = 'add\n{"event":"adapter.delete","outcome":"allowed","user":"admin"}'
    trail.record("tools/call", "denied", user="mallory\n", adapter="calc", target=forged, detail="\r\n\x00")
    await trail.close()
    (line,) = path.read_bytes().splitlines()
    record = json.loads(line)
    assert record["tool"] == forged and record["user"] == "mallory\n"


def test_upstream_answers_with_odd_ids_pass_untouched_without_raising() -> None:
    for ident in ([1], {"a": 1}, None, True):
        body = json.dumps({"jsonrpc": "2.0", "id": ident, "result": {"tools": [{"name": "secret"}]}}).encode()
        assert filter_tools_list_body(body, {1}, POLICY, USER) is body
        event = b"data: " + body + b"\n\n"
        assert ToolsListSseFilter({1}, POLICY, USER).feed(event) == event
