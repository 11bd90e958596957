"""Rate limits: validation naming the field, GCRA exactness, Redis shared by two limiters, outages."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from gateway.policy.classify import Message, classify
from gateway.policy.ratelimit import (
    RATE_LIMITED,
    AdapterLimits,
    Decision,
    GuardedRateLimiter,
    LimitCheck,
    MemoryRateLimiter,
    RateLimiter,
    RateRule,
    RedisRateLimiter,
    limited_error,
    limited_responses,
    limited_status,
    parse_rate,
    retry_after_header,
    validate_rate_limits,
)
from tests.fixtures.redis import RedisServer


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rules(value: object) -> list[RateRule]:
    """Rules decoded as the API does; ones the schema keywords refuse are built as code would build them
    (the constructor checks no keywords), so the validator's own messages stay under test."""
    try:
        return msgspec.convert(value, list[RateRule])
    except msgspec.ValidationError as exc:
        if not any(word in str(exc) for word in ("length", "matching regex", ">=", "<=")):
            raise  # a wrong type or an unknown member: the decoder's refusal is what is under test
        assert isinstance(value, list)
        return [RateRule(**item) for item in value]


def client(url: str) -> Redis:
    # As the composition root builds it (sessions/redis.py): a blocking pool, short socket timeouts.
    pool = BlockingConnectionPool.from_url(url, max_connections=16, timeout=None, socket_connect_timeout=2)
    redis = Redis(connection_pool=pool)
    redis.auto_close_connection_pool = True
    return redis


def check(key: str, limit: int, period: float, cost: int = 1, name: str = "rateLimits[0]") -> LimitCheck:
    return LimitCheck(key, limit, period, cost, name, f"{limit} requests per {period:g} s per user")


# --- validation ------------------------------------------------------------------------------------


def test_valid_rules_have_no_errors() -> None:
    ok = rules(
        [
            {"per": "user", "requests": 20, "seconds": 60},
            {"per": "adapter", "requests": 5, "seconds": 1.5, "tools": ["add*"]},
        ]
    )
    assert validate_rate_limits(ok) == [] and validate_rate_limits(None) == []


def test_errors_name_the_field_at_fault() -> None:
    bad = rules(
        [
            {"per": "user", "requests": 0, "seconds": 60},
            {"per": "adapter", "requests": 5, "seconds": 0.5, "tools": []},
            {"per": "user", "requests": 5, "seconds": 100_000, "tools": ["ok", "has space"]},
        ]
    )
    assert [e.split(":")[0] for e in validate_rate_limits(bad)] == [
        "rateLimits[0].requests",
        "rateLimits[1].seconds",
        "rateLimits[1].tools",
        "rateLimits[2].seconds",
        "rateLimits[2].tools[1]",
    ]
    assert validate_rate_limits(rules([{"per": "user", "requests": 1, "seconds": 1}] * 21))[0].startswith("rateLimits:")


def test_per_must_be_user_or_adapter_when_decoding() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"per"):
        rules([{"per": "tool", "requests": 1, "seconds": 1}])


def test_parse_rate_setting() -> None:
    assert parse_rate("600/60", "MCPGW_DEFAULT_USER_RATE") == (600, 60.0)
    assert parse_rate("10/1s", "X") == (10, 1.0)
    assert parse_rate(" ", "X") is None
    for bad in ("600", "a/b", "0/60", "5/0"):
        with pytest.raises(ValueError, match="MCPGW_DEFAULT_USER_RATE"):
            parse_rate(bad, "MCPGW_DEFAULT_USER_RATE")


# --- which checks a request incurs ---------------------------------------------------------------------


def calls(*names: str | None, notify: int = 0) -> list[Message]:
    out = [Message(method="tools/call", id=i, has_id=True, name=n) for i, n in enumerate(names)]
    out += [Message(method="notifications/progress")] * notify
    return out


def test_checks_count_requests_and_tool_rules_only_their_tools() -> None:
    limits = AdapterLimits(
        "calc",
        rules(
            [
                {"per": "user", "requests": 20, "seconds": 60},
                {"per": "adapter", "requests": 5, "seconds": 1, "tools": ["add*"]},
            ]
        ),
    )
    got = limits.checks("alice", calls("add", "echo", "add_more", notify=3))
    assert [(c.name, c.cost, c.limit, c.period) for c in got] == [
        ("rateLimits[0]", 3, 20, 60.0),
        ("rateLimits[1]", 2, 5, 1.0),
    ]
    assert got[1].key.endswith(":a") and "alice" not in got[0].key and got[0].key.startswith("calc:")
    assert limits.checks("alice", calls(notify=2)) == []
    assert [c.name for c in limits.checks("bob", calls("echo"))] == ["rateLimits[0]"]
    assert limits.checks("bob", calls("echo"))[0].key != got[0].key


def test_default_user_rate_applies_unless_the_adapter_sets_its_own() -> None:
    default = AdapterLimits("calc", None, default_user=(600, 60))
    (c,) = default.checks("alice", calls("add"))
    assert (c.name, c.limit, c.period) == ("MCPGW_DEFAULT_USER_RATE", 600, 60)
    own = AdapterLimits("calc", rules([{"per": "user", "requests": 5, "seconds": 1}]), default_user=(600, 60))
    assert [c.name for c in own.checks("alice", calls("add"))] == ["rateLimits[0]"]
    assert AdapterLimits("calc", None).empty


def test_editing_a_rule_gives_it_a_fresh_key() -> None:
    a = AdapterLimits("calc", rules([{"per": "user", "requests": 5, "seconds": 1}])).checks("u", calls("x"))[0]
    b = AdapterLimits("calc", rules([{"per": "user", "requests": 6, "seconds": 1}])).checks("u", calls("x"))[0]
    assert a.key != b.key


def test_classified_batch_feeds_the_checks() -> None:
    body = b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}},{"jsonrpc":"2.0","method":"n"}]'
    limits = AdapterLimits("calc", rules([{"per": "user", "requests": 5, "seconds": 1}]))
    assert [c.cost for c in limits.checks("u", classify({}, body).messages)] == [1]


# --- memory GCRA -----------------------------------------------------------------------------------


async def test_memory_gcra_admits_n_at_once_then_one_per_interval_exactly() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    decisions = [await limiter.check("k", 5, 10) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert decisions[5].retry_after == pytest.approx(2.0)  # one token every 10/5 s
    clock.now += 1.999
    assert not (await limiter.check("k", 5, 10)).allowed
    clock.now += 0.001
    assert (await limiter.check("k", 5, 10)).allowed
    assert not (await limiter.check("k", 5, 10)).allowed
    # over a long run with constant demand: exactly N + elapsed / interval admitted
    admitted = 0
    for _ in range(10_000):
        clock.now += 0.01
        admitted += (await limiter.check("steady", 5, 10)).allowed
    # GCRA: the n-th request is admitted once now >= first + n * S/N - S; attempts span 99.99 s
    assert admitted == math.floor((99.99 + 10) / 2) == 54
    assert (await limiter.check("other", 5, 10)).allowed  # keys are independent


async def test_memory_cost_and_all_or_nothing() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    assert (await limiter.check("k", 5, 10, cost=3)).remaining == 2
    assert not (await limiter.check("k", 5, 10, cost=3)).allowed
    assert (await limiter.check("k", 5, 10, cost=2)).allowed
    wide, tight = check("wide", 100, 10), check("tight", 1, 10, name="rateLimits[1]")
    assert (await limiter.check_all([wide, tight])).allowed
    refused = await limiter.check_all([wide, tight])
    assert not refused.allowed and refused.limit == tight
    assert (await limiter.check("wide", 100, 10, cost=98)).allowed  # the refused request took nothing from "wide"


async def test_memory_drops_expired_keys() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for i in range(5000):
        clock.now += 0.01
        await limiter.check(f"user-{i}", 10, 1)
    assert len(limiter) < 2200  # only keys active within the last second (100) plus at most one sweep's growth
    clock.now += 2
    assert limiter.sweep() > 0 and len(limiter) == 0


# --- Redis ---------------------------------------------------------------------------------------------


@pytest.fixture
async def redis_pair(redis_server_session: RedisServer) -> AsyncIterator[tuple[RedisRateLimiter, RedisRateLimiter]]:
    """Two limiters with their own clients and the same prefix: two gateways sharing Redis."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a, b = client(redis_server_session.url), client(redis_server_session.url)
    try:
        # a generous deadline: on a loaded 2-core machine 400 checks queue for 32 connections
        yield RedisRateLimiter(a, key_prefix=prefix, timeout=10), RedisRateLimiter(b, key_prefix=prefix, timeout=10)
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_contract_burst_admits_exactly_n(
    kind: str, redis_pair: tuple[RedisRateLimiter, RedisRateLimiter]
) -> None:
    limiter: RateLimiter = MemoryRateLimiter() if kind == "memory" else redis_pair[0]
    decisions = [await limiter.check("burst", 10, 60) for _ in range(15)]
    assert sum(d.allowed for d in decisions) == 10
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    assert 5.0 < decisions[10].retry_after <= 6.0  # next token 60/10 s after the first


async def test_two_redis_limiters_admit_at_most_n_of_many_concurrent_attempts(
    redis_pair: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    n, attempts = 25, 400
    a, b = redis_pair

    async def attempt(i: int) -> bool:
        return (await (a if i % 2 else b).check("shared", n, 60)).allowed

    results = await asyncio.gather(*(attempt(i) for i in range(attempts)))
    admitted = sum(results)
    print(
        f"\nshared Redis limit {n}/60 s, {attempts} concurrent attempts over 2 limiters: "
        f"admitted {admitted}, excess {admitted - n}"
    )
    assert admitted == n


async def test_two_redis_limiters_under_sustained_load_stay_within_the_gcra_bound(
    redis_pair: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    # 10 per second, hammered for one second by 8 tasks on two limiters: GCRA admits the burst of 10,
    # then one every 0.1 s, so at most floor((span + 1 s) / 0.1 s) in a span of attempts.
    a, b = redis_pair
    admitted = attempts = 0
    started = time.monotonic()

    async def hammer(limiter: RedisRateLimiter) -> None:
        nonlocal admitted, attempts
        while time.monotonic() - started < 1.0:
            attempts += 1
            allowed = (await limiter.check("sustained", 10, 1)).allowed  # await first: += would race
            admitted += allowed

    await asyncio.gather(*(hammer(a if i % 2 else b) for i in range(8)))
    span = time.monotonic() - started
    bound = math.floor((span + 1.0) / 0.1)
    print(f"\nsustained: {attempts} attempts in {span:.2f} s, admitted {admitted}, GCRA bound {bound}")
    assert 10 <= admitted <= bound


async def test_redis_all_or_nothing_and_limit_named(redis_pair: tuple[RedisRateLimiter, RedisRateLimiter]) -> None:
    a, _ = redis_pair
    wide, tight = check("wide", 100, 10), check("tight", 1, 10, name="rateLimits[1]")
    assert (await a.check_all([wide, tight])).allowed
    refused = await a.check_all([wide, tight])
    assert not refused.allowed and refused.limit == tight and refused.retry_after > 9
    assert (await a.check("wide", 100, 10, cost=99)).allowed


async def test_redis_keys_share_a_hash_tag_and_expire(
    redis_server_session: RedisServer,
) -> None:
    r = client(redis_server_session.url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    try:
        limiter = RedisRateLimiter(r, key_prefix=prefix)
        await limiter.check("calc:x:u:1", 10, 2)
        keys = [k.decode() if isinstance(k, bytes) else k for k in await r.keys(prefix + "*")]
        assert keys == [prefix + "{ratelimit}:calc:x:u:1"]
        assert 0 < await r.pttl(keys[0]) <= 200  # one interval (2 s / 10) of debt left to repay
    finally:
        await r.aclose()


async def test_redis_stopped_fails_open_counted_and_logged_once(
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = client(redis_server.url)
    clock = FakeClock()
    guarded = GuardedRateLimiter(RedisRateLimiter(r, key_prefix="t:"), failure="open", clock=clock)
    try:
        assert (await guarded.check("k", 1, 60)).allowed
        assert not (await guarded.check("k", 1, 60)).allowed
        redis_server.stop()
        caplog.set_level(logging.WARNING, logger="gateway.policy.ratelimit")
        started = time.monotonic()
        decisions = [await guarded.check("k", 1, 60) for _ in range(5)]
        assert time.monotonic() - started < 2.5
        assert all(d.allowed and d.unavailable for d in decisions)
        assert (guarded.failures, guarded.failed_open, guarded.failed_closed) == (5, 5, 0)
        lines = [r for r in caplog.records if "rate limits unavailable" in r.getMessage()]
        assert len(lines) == 1 and "failing open" in lines[0].getMessage() and "Redis" in lines[0].getMessage()
        clock.now += 10
        await guarded.check("k", 1, 60)
        assert len([r for r in caplog.records if "rate limits unavailable" in r.getMessage()]) == 2
        redis_server.start()  # empty script cache and state: the limiter reloads the script by itself
        assert (await guarded.check("k", 1, 60)).allowed and not (await guarded.check("k", 1, 60)).allowed
        assert guarded.failures == 6
    finally:
        await r.aclose()


async def test_redis_stopped_fails_closed_with_503_and_retry_after(redis_server: RedisServer) -> None:
    r = client(redis_server.url)
    guarded = GuardedRateLimiter(RedisRateLimiter(r, key_prefix="t:"), failure="closed")
    try:
        redis_server.stop()
        d = await guarded.check("k", 100, 60)
        assert not d.allowed and d.unavailable and guarded.failed_closed == 1
        assert limited_status(d) == 503 and retry_after_header(d) == "1"
        assert "Redis" in limited_error(4, d)["error"]["message"]
    finally:
        await r.aclose()


def test_failure_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="open' or 'closed"):
        GuardedRateLimiter(MemoryRateLimiter(), failure="ajar")  # type: ignore[arg-type]  # the wrong value under test


# --- what the client gets --------------------------------------------------------------------------


async def test_limited_error_names_the_limit_and_retry_after_rounds_up() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    c = check("k", 2, 5)
    await limiter.check_all([c])
    await limiter.check_all([c])
    d = await limiter.check_all([c])
    assert not d.allowed and d.retry_after == pytest.approx(2.5)
    assert retry_after_header(d) == "3" and limited_status(d) == 429
    body = limited_error("req-1", d)
    assert body["id"] == "req-1" and body["error"]["code"] == RATE_LIMITED
    assert body["error"]["data"] == {"limit": "rateLimits[0]", "retryAfter": 3}
    assert "rateLimits[0] (2 requests per 5 s per user)" in body["error"]["message"]
    assert retry_after_header(Decision(allowed=False, retry_after=0.0001)) == "1"
    batch = calls("add", "echo", notify=1)
    assert [e["id"] for e in limited_responses(batch, d)] == [0, 1]


async def test_a_batch_costing_more_than_the_limit_is_told_to_shrink() -> None:
    d = await MemoryRateLimiter().check_all([check("k", 2, 5, cost=3)])
    assert (
        not d.allowed
        and "counts 3 requests against rate limit rateLimits[0]" in limited_error(1, d)["error"]["message"]
    )
