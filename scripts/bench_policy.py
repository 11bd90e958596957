"""What the policy building blocks cost one request, function by function (gateway/policy).

Usage (from the repository root, with the project's virtualenv)::

    python scripts/bench_policy.py              # best of 5 timeit repeats per function
    python scripts/bench_policy.py --repeat 9
    python scripts/bench_policy.py --redis-url redis://127.0.0.1:6379/0   # + RedisRateLimiter round trips

Prints µs per call for: classify of a typical 2026-07-28 ``tools/call`` (headers + body, and
headers only), ``may_call`` (exact name, glob), ``PolicyCache.get``, ``AdapterLimits.checks``,
``MemoryRateLimiter.check_now`` and the awaited ``check_all``, ``AuditTrail.record``, and the sum
of one request through classify → authorization → limit → audit (the CPU the future stages add;
the issue's budget is 300 µs p50 added at concurrency 1). In-process only: no gateway is started.
Compare with ``uptime``: on a shared machine the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import timeit
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gateway.policy.audit import AuditRecord, AuditTrail
from gateway.policy.classify import classify
from gateway.policy.ratelimit import AdapterLimits, MemoryRateLimiter, RateRule
from gateway.policy.toolpolicy import PolicyCache, ToolPolicy, ToolRule

BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "add",
            "arguments": {"a": 1, "b": 2},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
).encode()
HEADERS = {
    "host": "127.0.0.1:8080",
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "add",
    "user-agent": "python-httpx/0.28",
    "content-length": str(len(BODY)),
}
RULES = [
    ToolRule(tools=["add", "echo*"], roles=["calc.user"]),
    ToolRule(tools=["version"], roles=["*"]),
    ToolRule(tools=["debug_[ab]"], roles=["ops"]),
]
ROLES = frozenset({"calc.user", "other"})


class _NullSink:
    async def write(self, records: Sequence[AuditRecord]) -> None:
        pass

    async def close(self) -> None:
        pass


def measure(fn: Callable[[], object], repeat: int) -> float:
    """Best µs per call over ``repeat`` rounds (timeit's own loop count)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


async def _redis_round_trips(url: str) -> tuple[float, float]:
    """p50 and p90 µs of one awaited Redis check."""
    from redis.asyncio import Redis

    from gateway.policy.ratelimit import LimitCheck, RedisRateLimiter

    client = Redis.from_url(url)
    limiter = RedisRateLimiter(client, key_prefix="bench:")
    check = [LimitCheck("k", 10**9, 1, 1, "bench", "")]
    try:
        for _ in range(200):
            await limiter.check_all(check)
        times = []
        for _ in range(3000):
            started = time.perf_counter()
            await limiter.check_all(check)
            times.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.9)] * 1e6


def main(argv: list[str] | None = None) -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timeit repeats per function (best is kept)")
    parser.add_argument("--redis-url", help="also time RedisRateLimiter.check_all against this Redis (keys bench:*)")
    args = parser.parse_args(argv)

    policy = ToolPolicy(RULES)
    cache = PolicyCache()
    cache.get("calc", "etag-1", RULES)
    limits = AdapterLimits("calc", [RateRule(per="user", requests=10**9, seconds=1)])
    limiter = MemoryRateLimiter()
    trail = AuditTrail([_NullSink()], queue_size=10**9)
    messages = classify(HEADERS, BODY).messages
    checks = limits.checks("alice", messages)
    loop = asyncio.new_event_loop()

    def audit() -> None:
        trail.record("tools/call", "allowed", user="alice", roles=ROLES, adapter="calc", target="add", status=200)
        if trail.queued > 100_000:
            trail._queue.clear()  # keep the deque small: growth is not what is measured

    async def awaited_limit() -> None:
        for _ in range(1000):
            await limiter.check_all(limits.checks("alice", messages))

    def whole_request() -> None:
        c = classify(HEADERS, BODY)
        p = cache.get("calc", "etag-1", RULES)
        for m in c.messages:
            if m.method == "tools/call" and m.name is not None:
                p.may_call(m.name, ROLES)
        limiter.check_now(limits.checks("alice", c.messages))
        audit()

    rows = [
        ("classify: tools/call, 2026-07-28 headers + body", measure(lambda: classify(HEADERS, BODY), args.repeat)),
        (
            "classify: headers only (parse_body=False)",
            measure(lambda: classify(HEADERS, None, parse_body=False), args.repeat),
        ),
        ("ToolPolicy.may_call: exact name", measure(lambda: policy.may_call("add", ROLES), args.repeat)),
        ("ToolPolicy.may_call: glob", measure(lambda: policy.may_call("echo_loud", ROLES), args.repeat)),
        ("PolicyCache.get: hit", measure(lambda: cache.get("calc", "etag-1", RULES), args.repeat)),
        ("AdapterLimits.checks: one rule", measure(lambda: limits.checks("alice", messages), args.repeat)),
        ("MemoryRateLimiter.check_now", measure(lambda: limiter.check_now(checks), args.repeat)),
        (
            "checks + awaited MemoryRateLimiter.check_all",
            measure(lambda: loop.run_until_complete(awaited_limit()), max(1, args.repeat // 2)) / 1000,
        ),
        ("AuditTrail.record", measure(audit, args.repeat)),
        ("one tools/call: classify + authorize + limit + audit", measure(whole_request, args.repeat)),
    ]
    if args.redis_url:
        p50, p90 = loop.run_until_complete(_redis_round_trips(args.redis_url))
        rows.append(("RedisRateLimiter.check_all p50 (3000 awaits)", p50))
        rows.append(("RedisRateLimiter.check_all p90", p90))
    loop.close()
    width = max(len(name) for name, _ in rows)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (cores: {os.cpu_count()})")
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:8.2f} µs")


if __name__ == "__main__":
    main()
