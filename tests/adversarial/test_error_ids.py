"""Hostile JSON-RPC ids on MCP routes (issue 17): gateway errors now echo the request's id.

The id comes from the MCP stages' parse (gateway/policy/classify.py), so only what JSON-RPC allows
(a string or a number) is echoed; anything else (an object, a boolean, a lone surrogate, a number
JSON cannot carry) is null, and the error body is always valid JSON — never a 5xx from encoding it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.models import AdapterRecord, Identity
from gateway.policy.audit import AuditTrail
from gateway.policy.ratelimit import MemoryRateLimiter, RateRule
from gateway.proxy.app import ProxyError, _error
from gateway.proxy.policy import McpStages

HOSTILE: list[tuple[bytes, Any]] = [
    (b'{"jsonrpc":"2.0","id":100000000000000000000000000000,"method":"ping"}', 10**29),
    (b'{"jsonrpc":"2.0","id":-0.5,"method":"ping"}', -0.5),
    (b'{"jsonrpc":"2.0","id":"' + b"x" * 10_000 + b'","method":"ping"}', "x" * 10_000),
    (b'{"jsonrpc":"2.0","id":"</script>\\u0000\\n","method":"ping"}', "</script>\x00\n"),
    (b'{"jsonrpc":"2.0","id":{"nested":[1,2]},"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":1e400,"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}', 2),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', None),
    (b"[]", None),
    (b'"just a string"', None),
]


@pytest.mark.parametrize(("body", "expected"), HOSTILE)
async def test_hostile_ids_are_echoed_only_when_json_rpc_allows_them(body: bytes, expected: Any) -> None:
    stages = McpStages(limiter=MemoryRateLimiter(), audit=AuditTrail([]))
    record = AdapterRecord(
        name="a", image_name="i", image_version="1", rate_limits=[RateRule(per="user", requests=100, seconds=60)]
    )
    plan = await stages.plan(record, Identity("u"), {}, body, legacy=False)
    assert plan.local is None
    assert plan.rpc_id == expected
    error = ProxyError(503, -32002, "adapter 'a' has no ready replica")
    error.rpc_id = plan.rpc_id
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await _error(send, error)
    assert sent[0]["status"] == 503
    answer = json.loads(sent[1]["body"])
    assert answer["id"] == expected and answer["error"]["code"] == -32002
