"""Session record stores: one contract for memory and Redis, then Redis auth, outages and Entra ID."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError

from gateway.app import redis_session_config
from gateway.azure_credentials import build_azure_credential
from gateway.errors import SessionStoreUnavailable
from gateway.sessions import SessionLimitExceeded, SessionLimits, SessionRecord, SessionStore
from gateway.sessions._entra import REDIS_SCOPE
from gateway.sessions.memory import SWEEP_BATCH, MemorySessionStore
from gateway.sessions.redis import HASH_TAG, RedisNotSuitable, RedisSessionStore, entra_provider, redis_client
from gateway.settings import Settings
from tests.fixtures.redis import CLUSTER_ARGS, RedisServer, free_port, serve_all_slots

FAST = 2.0  # seconds: the most a failing store call may take during an outage


def record(sid: str, adapter: str = "alpha", user: str = "alice", replica: str = "r0") -> SessionRecord:
    now = time.time()
    return SessionRecord(sid=sid, user_id=user, adapter=adapter, replica=replica, created=now, last_used=now)


def redis_settings(url: str, **overrides: Any) -> Settings:
    overrides = {"redis_key_prefix": f"t{uuid.uuid4().hex[:8]}:", **overrides}
    return Settings(sessions="redis", redis_url=url, **overrides)


def redis_store(settings: Settings, credential: AsyncTokenCredential | None = None) -> RedisSessionStore:
    """The store gateway/app.py builds: its own config and an injected client."""
    config = redis_session_config(settings)
    return RedisSessionStore(config, client=redis_client(config, credential=credential))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_server_session: RedisServer) -> AsyncIterator[SessionStore]:
    s: MemorySessionStore | RedisSessionStore
    s = MemorySessionStore() if request.param == "memory" else redis_store(redis_settings(redis_server_session.url))
    await s.start()
    try:
        yield s
    finally:
        await s.close()


# --- the contract, for both stores -------------------------------------------------------------


async def test_put_then_get_returns_the_record(store: SessionStore) -> None:
    rec = record("s1", adapter="alpha", user="alice", replica="alpha-2")
    await store.put(rec, ttl=30)
    assert await store.get("s1") == rec


async def test_unknown_session_is_none(store: SessionStore) -> None:
    assert await store.get("never-issued") is None


async def test_session_ids_with_any_visible_ascii_work(store: SessionStore) -> None:
    sid = "a_b-c.d~e:f/g{h}*?[x]"
    await store.put(record(sid), ttl=30)
    got = await store.get(sid)
    assert got is not None and got.sid == sid
    assert await store.count("alpha") == 1


async def test_record_expires_ttl_after_last_put(store: SessionStore) -> None:
    await store.put(record("s1"), ttl=0.3)
    assert await store.get("s1") is not None
    await asyncio.sleep(0.45)
    assert await store.get("s1") is None
    assert await store.count() == 0


async def test_touch_extends_expiry_and_records_last_use(store: SessionStore) -> None:
    await store.put(record("s1"), ttl=0.4)
    await asyncio.sleep(0.25)
    await store.touch("s1", last_used=1234.5, ttl=0.4)
    await asyncio.sleep(0.25)  # 0.5 s after the put: alive only because of the touch
    got = await store.get("s1")
    assert got is not None and got.last_used == 1234.5
    assert await store.count("alpha") == 1
    await asyncio.sleep(0.3)
    assert await store.get("s1") is None
    assert await store.count("alpha") == 0


async def test_touch_of_unknown_or_expired_session_does_not_create_it(store: SessionStore) -> None:
    await store.touch("ghost", last_used=time.time(), ttl=30)
    assert await store.get("ghost") is None
    await store.put(record("s1"), ttl=0.1)
    await asyncio.sleep(0.2)
    await store.touch("s1", last_used=time.time(), ttl=30)
    assert await store.get("s1") is None
    assert await store.count() == 0


async def test_revoke_deletes_one_record(store: SessionStore) -> None:
    await store.put(record("s1"), ttl=30)
    await store.put(record("s2"), ttl=30)
    await store.revoke("s1")
    await store.revoke("s1")  # twice is fine
    await store.revoke("never-issued")
    assert await store.get("s1") is None
    assert await store.get("s2") is not None
    assert await store.count("alpha") == 1


async def test_deleting_an_adapter_revokes_its_sessions_only(store: SessionStore) -> None:
    for i in range(3):
        await store.put(record(f"a{i}", adapter="alpha"), ttl=30)
    for i in range(2):
        await store.put(record(f"b{i}", adapter="beta"), ttl=30)
    assert await store.revoke_adapter("alpha") == 3
    assert [await store.get(f"a{i}") for i in range(3)] == [None, None, None]
    assert await store.get("b0") is not None
    assert await store.count("alpha") == 0
    assert await store.count("beta") == 2
    assert await store.count() == 2
    assert await store.revoke_adapter("alpha") == 0
    assert await store.revoke_adapter("never-created") == 0


async def test_revoke_adapter_counts_only_live_sessions(store: SessionStore) -> None:
    await store.put(record("old", adapter="alpha"), ttl=0.1)
    await store.put(record("live", adapter="alpha"), ttl=30)
    await asyncio.sleep(0.2)
    assert await store.revoke_adapter("alpha") == 1
    assert await store.get("live") is None


async def test_count_counts_live_records_per_adapter_and_in_all(store: SessionStore) -> None:
    await store.put(record("a1", adapter="alpha"), ttl=0.2)
    await store.put(record("a2", adapter="alpha"), ttl=30)
    await store.put(record("b1", adapter="beta"), ttl=30)
    assert (await store.count(), await store.count("alpha"), await store.count("beta")) == (3, 2, 1)
    assert await store.count("gamma") == 0
    await asyncio.sleep(0.3)
    assert (await store.count(), await store.count("alpha"), await store.count("beta")) == (2, 1, 1)


async def test_put_again_replaces_the_record_and_its_adapter(store: SessionStore) -> None:
    await store.put(record("s1", adapter="alpha", replica="r0"), ttl=30)
    await store.put(record("s1", adapter="beta", replica="r1"), ttl=30)
    got = await store.get("s1")
    assert got is not None and (got.adapter, got.replica) == ("beta", "r1")
    assert (await store.count("alpha"), await store.count("beta"), await store.count()) == (0, 1, 1)
    assert await store.revoke_adapter("alpha") == 0
    assert await store.get("s1") is not None


async def test_a_record_handed_out_does_not_change_when_touched(store: SessionStore) -> None:
    await store.put(record("s1"), ttl=30)
    first = await store.get("s1")
    assert first is not None
    await store.touch("s1", last_used=first.last_used + 10, ttl=30)
    second = await store.get("s1")
    assert second is not None and second.last_used == first.last_used + 10
    assert first.last_used != second.last_used


async def test_many_sessions_concurrently(store: SessionStore) -> None:
    await asyncio.gather(*(store.put(record(f"s{i}", adapter=f"ad{i % 4}"), ttl=30) for i in range(200)))
    await asyncio.gather(*(store.touch(f"s{i}", last_used=time.time(), ttl=30) for i in range(0, 200, 2)))
    assert await store.count() == 200
    assert await store.count("ad1") == 50
    assert await store.revoke_adapter("ad1") == 50
    assert await store.count() == 150


def pinned(sid: str, adapter: str = "alpha", user: str = "alice", uid: str = "u0") -> SessionRecord:
    rec = record(sid, adapter=adapter, user=user)
    rec.replica_uid = uid
    return rec


async def test_open_refuses_past_the_per_user_cap_and_names_it(store: SessionStore) -> None:
    limits = SessionLimits(per_user=2, per_adapter=0)
    await store.open(pinned("a1"), 30, limits)
    await store.open(pinned("a2"), 30, limits)
    with pytest.raises(SessionLimitExceeded) as refused:
        await store.open(pinned("a3"), 30, limits)
    assert (refused.value.limit, refused.value.maximum, refused.value.setting) == (
        "per_user",
        2,
        "MCPGW_SESSION_MAX_PER_USER",
    )
    assert 25 < refused.value.retry_after <= 30  # until the oldest counted session expires
    assert await store.get("a3") is None
    assert await store.count_user("alpha", "alice") == 2
    await store.open(pinned("b1", user="bob"), 30, limits)  # other users and adapters are not affected
    await store.open(pinned("c1", adapter="beta"), 30, limits)
    await store.revoke("a1")  # closing one frees its slot at once
    await store.open(pinned("a3"), 30, limits)


async def test_open_refuses_past_the_per_adapter_cap(store: SessionStore) -> None:
    limits = SessionLimits(per_user=0, per_adapter=3)
    for i in range(3):
        await store.open(pinned(f"s{i}", user=f"user{i}"), 30, limits)
    with pytest.raises(SessionLimitExceeded) as refused:
        await store.open(pinned("s3", user="user3"), 30, limits)
    assert refused.value.limit == "per_adapter" and refused.value.setting == "MCPGW_SESSION_MAX_PER_ADAPTER"
    await store.open(pinned("t0", adapter="beta"), 30, limits)
    assert await store.count("alpha") == 3


async def test_expired_sessions_free_their_slots(store: SessionStore) -> None:
    limits = SessionLimits(per_user=1, per_adapter=1)
    await store.open(pinned("a1"), 0.1, limits)
    await asyncio.sleep(0.2)
    await store.open(pinned("a2"), 30, limits)
    assert await store.count_user("alpha", "alice") == 1


async def test_concurrent_opens_never_overshoot_a_cap(store: SessionStore) -> None:
    limits = SessionLimits(per_user=5, per_adapter=0)
    results = await asyncio.gather(
        *(store.open(pinned(f"s{i}"), 30, limits) for i in range(40)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, SessionLimitExceeded) for r in results if r is not None)
    assert await store.count_user("alpha", "alice") == 5


async def test_revoke_replica_drops_only_that_incarnations_sessions(store: SessionStore) -> None:
    limits = SessionLimits(per_user=3, per_adapter=0)
    for i in range(3):
        await store.open(pinned(f"old{i}", uid="dead"), 30, limits)
    await store.put(pinned("other", uid="alive"), 30)
    await store.put(pinned("elsewhere", adapter="beta", uid="dead"), 30)
    assert await store.revoke_replica("alpha", "dead") == 3
    assert [await store.get(f"old{i}") for i in range(3)] == [None, None, None]
    assert await store.get("other") is not None and await store.get("elsewhere") is not None
    assert await store.count("alpha") == 1
    assert await store.count_user("alpha", "alice") == 1
    await store.open(pinned("new"), 30, limits)  # the slots are free again
    assert await store.revoke_replica("alpha", "dead") == 0


async def test_revoke_adapter_frees_the_users_slots(store: SessionStore) -> None:
    limits = SessionLimits(per_user=1, per_adapter=0)
    await store.open(pinned("a1"), 30, limits)
    await store.revoke_adapter("alpha")
    await store.open(pinned("a2"), 30, limits)


async def test_memory_store_evicts_the_least_recently_used_beyond_its_maximum() -> None:
    store = MemorySessionStore(max_sessions=3)
    for i in range(3):
        await store.put(record(f"s{i}"), ttl=30)
    await store.touch("s0", last_used=time.time(), ttl=30)  # s1 is now the least recently used
    await store.open(record("s3"), 30, SessionLimits())
    assert store.evictions == 1
    assert await store.get("s1") is None
    assert [await store.get(s) is not None for s in ("s0", "s2", "s3")] == [True, True, True]
    assert await store.count() == 3
    await store.put(record("s4"), ttl=30)
    assert store.evictions == 2 and await store.count() == 3


async def test_memory_store_does_not_count_expired_records_as_evicted() -> None:
    store = MemorySessionStore(max_sessions=2)
    await store.put(record("s0"), ttl=0.05)
    await store.put(record("s1"), ttl=30)
    await asyncio.sleep(0.1)
    await store.put(record("s2"), ttl=30)
    assert store.evictions == 0
    assert await store.count() == 2


async def test_ping_succeeds_when_the_store_is_reachable(store: SessionStore) -> None:
    await store.ping()


# --- memory only -------------------------------------------------------------------------------


async def test_memory_cleanup_is_bounded_per_call_and_complete_on_count() -> None:
    s = MemorySessionStore()
    for i in range(SWEEP_BATCH * 4):
        await s.put(record(f"s{i}"), ttl=0.05)
    await asyncio.sleep(0.1)
    await s.put(record("fresh"), ttl=30)
    # one write removed at most one batch of the expired records ...
    assert len(s._records) >= SWEEP_BATCH * 3
    # ... and count() reports (and drops) every expired one.
    assert await s.count() == 1
    assert len(s._records) == 1


async def test_memory_expiry_heap_stays_small_under_many_touches() -> None:
    s = MemorySessionStore()
    await s.put(record("s1"), ttl=30)
    for _ in range(5000):
        await s.touch("s1", last_used=time.time(), ttl=30)
    assert len(s._heap) <= 2 + SWEEP_BATCH + 1
    assert await s.get("s1") is not None


# --- Redis: layout, auth, outages ---------------------------------------------------------------


def command_stats(server: RedisServer) -> dict[str, dict[str, Any]]:
    with server.client() as c:
        info: dict[str, dict[str, Any]] = c.info("commandstats")
    return info


async def test_redis_uses_no_keys_or_scan_and_indexes_expire_with_their_sessions(
    redis_server: RedisServer,
) -> None:
    settings = redis_settings(redis_server.url)
    s = redis_store(settings)
    await s.start()
    try:
        with redis_server.client() as c:
            c.config_resetstat()
        await s.put(record("s1", adapter="alpha"), ttl=0.3)
        await s.put(record("s2", adapter="beta"), ttl=0.3)
        await s.get("s1")
        await s.touch("s1", last_used=time.time(), ttl=0.3)
        await s.count()
        await s.count("alpha")
        await s.revoke("s2")
        await s.revoke_adapter("beta")
        stats = command_stats(redis_server)
        assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), stats
        with redis_server.client() as c:
            index_ttl = c.pttl(settings.redis_key_prefix + "{sessions}:a:alpha")
        assert 0 < index_ttl <= 300  # the index lives no longer than its newest member
        await asyncio.sleep(0.45)
        with redis_server.client() as c:
            left = c.keys(settings.redis_key_prefix + "*")  # KEYS here is the test looking, not the store
        assert left == []
    finally:
        await s.close()


async def test_redis_with_password(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(password="s3cret/with:odd@chars")
    good = redis_store(redis_settings(server.url))
    await good.start()
    try:
        await good.put(record("s1"), ttl=30)
        assert await good.get("s1") is not None
    finally:
        await good.close()

    bad = redis_store(redis_settings(f"redis://:wrong@127.0.0.1:{server.port}/0"))
    started = time.monotonic()
    with pytest.raises(SessionStoreUnavailable) as caught:
        await bad.start()
    assert time.monotonic() - started < FAST
    assert caught.value.dependency == "Redis"
    assert "password" in caught.value.detail and "wrong" not in caught.value.detail
    await bad.close()

    none = redis_store(redis_settings(f"redis://127.0.0.1:{server.port}/0"))
    with pytest.raises(SessionStoreUnavailable, match="refused"):
        await none.start()
    await none.close()


async def expect_fast_failure(call: Callable[[], Any]) -> SessionStoreUnavailable:
    started = time.monotonic()
    with pytest.raises(SessionStoreUnavailable) as caught:
        await call()
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.2f} s"
    assert caught.value.status == 503
    assert caught.value.dependency == "Redis"
    return caught.value


async def test_redis_stopped_fails_fast_and_recovers_without_restart(redis_server: RedisServer) -> None:
    s = redis_store(redis_settings(redis_server.url))
    await s.start()
    try:
        await s.put(record("s1"), ttl=30)
        redis_server.stop()
        for call in (
            lambda: s.get("s1"),
            lambda: s.put(record("s2"), ttl=30),
            lambda: s.touch("s1", last_used=time.time(), ttl=30),
            lambda: s.revoke("s1"),
            lambda: s.revoke_adapter("alpha"),
            lambda: s.count(),
            s.ping,
        ):
            err = await expect_fast_failure(call)
            assert f"127.0.0.1:{redis_server.port}" in err.detail
            assert "running" in err.detail  # says what to check
        redis_server.start()  # same port, empty (no persistence)
        assert await s.get("s1") is None
        await s.put(record("s3"), ttl=30)
        assert await s.get("s3") is not None
        assert await s.count() == 1
    finally:
        await s.close()


async def test_redis_restarted_between_calls_needs_nothing_from_the_caller(
    redis_server: RedisServer,
) -> None:
    s = redis_store(redis_settings(redis_server.url))
    await s.start()
    try:
        await asyncio.gather(*(s.put(record(f"s{i}"), ttl=30) for i in range(5)))  # several pooled connections
        redis_server.stop()
        redis_server.start()
        # The pooled sockets are dead and Redis lost its script cache: the very next calls just work.
        await s.put(record("again"), ttl=30)
        assert await s.get("again") is not None
        assert await s.count() == 1
    finally:
        await s.close()


async def test_hung_redis_times_out_fast(redis_server: RedisServer) -> None:
    s = redis_store(redis_settings(redis_server.url))
    await s.start()
    assert redis_server.process is not None
    pid = redis_server.process.pid
    try:
        await s.put(record("s1"), ttl=30)
        os.kill(pid, signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            err = await expect_fast_failure(lambda: s.get("s1"))
            assert "no answer" in err.detail
            err = await expect_fast_failure(lambda: s.put(record("s2"), ttl=30))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await s.get("s1") is not None
    finally:
        await s.close()


async def test_start_when_redis_is_down_raises_and_later_calls_work(redis_server: RedisServer) -> None:
    redis_server.stop()
    s = redis_store(redis_settings(redis_server.url))
    try:
        await expect_fast_failure(s.start)
        redis_server.start()
        await s.ping()
        await s.put(record("s1"), ttl=30)
        assert await s.get("s1") is not None
    finally:
        await s.close()


# --- Redis that keeps sessions: one slot, no eviction (DESIGN §8) --------------------------------

STORE_LOG = "gateway.sessions.redis"


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == STORE_LOG and r.levelno >= logging.WARNING]


async def exercise(s: RedisSessionStore) -> None:
    """Every script the store has, on keys of every kind."""
    await s.open(record("s1", adapter="alpha"), 30, SessionLimits(per_user=5, per_adapter=5))
    await s.put(record("s2", adapter="alpha", user="bob"), 30)
    await s.touch("s1", time.time(), 30)
    assert await s.count() == 2 and await s.count("alpha") == 2 and await s.count_user("alpha", "bob") == 1
    assert await s.revoke_replica("alpha", "") == 2  # both pinned to the same (empty) replica uid
    await s.put(record("s3", adapter="beta"), 30)
    assert await s.revoke_adapter("beta") == 1
    assert await s.count() == 0


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_redis_with_an_evicting_policy_warns_at_start(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
    policy: str,
) -> None:
    server = redis_server_factory("--maxmemory-policy", policy)
    s = redis_store(redis_settings(server.url))
    await s.start()
    try:
        [warning] = store_warnings(caplog)
        assert f"maxmemory-policy {policy}" in warning and "noeviction" in warning and "NoEviction" in warning
        await s.put(record("s1"), 30)  # a warning, not a refusal: the store works
        assert await s.get("s1") is not None
        assert len(store_warnings(caplog)) == 1  # said once, not per call
    finally:
        await s.close()


async def test_redis_with_noeviction_starts_quietly(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=STORE_LOG)
    server = redis_server_factory("--maxmemory-policy", "noeviction")
    s = redis_store(redis_settings(server.url))
    await s.start()
    try:
        await exercise(s)
        assert store_warnings(caplog) == []
        assert not [r for r in caplog.records if r.name == STORE_LOG]  # not even "could not read"
    finally:
        await s.close()


async def test_eviction_policy_is_read_from_info_when_config_is_disabled(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Azure Managed Redis refuses CONFIG; INFO memory still names the policy.
    server = redis_server_factory("--maxmemory-policy", "allkeys-lfu", "--rename-command", "CONFIG", "")
    s = redis_store(redis_settings(server.url))
    await s.start()
    try:
        [warning] = store_warnings(caplog)
        assert "maxmemory-policy allkeys-lfu" in warning
    finally:
        await s.close()


async def test_redis_user_without_dangerous_commands_is_checked_as_far_as_it_may(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Like Azure Cache for Redis' "Data Contributor" access policy: no INFO, CONFIG or CLUSTER KEYSLOT.
    caplog.set_level(logging.INFO, logger=STORE_LOG)
    server = redis_server_factory("--maxmemory-policy", "allkeys-lru", password="admin-only")
    with server.client() as c:
        c.acl_setuser("contributor", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-@dangerous"])
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis(port=server.port, username="contributor", password="pw").info("cluster")
    s = redis_store(redis_settings(f"redis://contributor:pw@127.0.0.1:{server.port}/0"))
    await s.start()
    try:
        await exercise(s)
        messages = [r.getMessage() for r in caplog.records if r.name == STORE_LOG]
        assert any("could not read INFO cluster" in m for m in messages)
        assert any("could not read maxmemory-policy" in m and "noeviction" in m for m in messages)
        assert store_warnings(caplog) == []
    finally:
        await s.close()


async def test_redis_cluster_node_serving_the_sessions_slot_works(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=STORE_LOG)
    server = serve_all_slots(redis_server_factory(*CLUSTER_ARGS, "--maxmemory-policy", "noeviction"))
    settings = redis_settings(server.url)
    s = redis_store(settings)
    await s.start()
    try:
        with server.client() as c:
            slot = c.cluster("KEYSLOT", settings.redis_key_prefix + HASH_TAG)
        assert any(f"slot {slot}" in r.getMessage() for r in caplog.records if r.name == STORE_LOG)
        await exercise(s)  # every script runs on a cluster node: all its keys are in one slot
        assert store_warnings(caplog) == []
    finally:
        await s.close()


async def test_redis_cluster_with_keys_in_several_slots_refuses_to_start(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(*CLUSTER_ARGS)  # CLUSTER KEYSLOT answers even before slots are served
    # "{}" is an empty hash tag: Redis then hashes each whole key, so they land in different slots.
    s = redis_store(redis_settings(server.url, redis_key_prefix="gw{}:"))
    try:
        with pytest.raises(RedisNotSuitable) as caught:
            await s.start()
        message = str(caught.value)
        assert "Redis Cluster" in message and "MCPGW_REDIS_KEY_PREFIX='gw{}:'" in message and "slots" in message
        assert not isinstance(caught.value, SessionStoreUnavailable)  # the gateway does not swallow it
    finally:
        await s.close()


async def test_redis_cluster_node_not_serving_the_slot_refuses_to_start(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(*CLUSTER_ARGS)  # a node that serves no slot
    s = redis_store(redis_settings(server.url))
    try:
        with pytest.raises(RedisNotSuitable, match=r"does not serve slot \d+ .*ClusterDownError.*NoCluster"):
            await s.start()
    finally:
        await s.close()


async def test_redis_cluster_of_two_shards_refuses_the_node_without_the_slot(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    # The shape of a sharded (OSS-cluster) Redis: the plain client would get MOVED on every call.
    a, b = redis_server_factory(*CLUSTER_ARGS), redis_server_factory(*CLUSTER_ARGS)
    with a.client() as ca, b.client() as cb:
        slot = int(ca.cluster("KEYSLOT", HASH_TAG))
        ca.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, slot - 1)
        cb.execute_command("CLUSTER", "ADDSLOTSRANGE", slot, 16383)
        ca.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port)
        deadline = time.monotonic() + 10
        while ca.cluster("INFO")["cluster_state"] != "ok" or cb.cluster("INFO")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "two-node cluster not ok within 10 s"
            await asyncio.sleep(0.02)
    s = redis_store(redis_settings(a.url))
    try:
        with pytest.raises(RedisNotSuitable, match=rf"does not serve slot {slot} .*MovedError.*{b.port}"):
            await s.start()
    finally:
        await s.close()
    good = redis_store(redis_settings(b.url))  # the node that serves the slot is fine
    await good.start()
    try:
        await exercise(good)
    finally:
        await good.close()


async def test_redis_checks_run_at_the_first_call_when_redis_was_down_at_start(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(*CLUSTER_ARGS)
    server.stop()
    s = redis_store(redis_settings(server.url, redis_key_prefix="gw{}:"))
    try:
        with pytest.raises(SessionStoreUnavailable, match="cannot connect"):
            await s.start()
        server.start()
        for _ in range(2):  # refused on every call, without touching Redis again
            with pytest.raises(SessionStoreUnavailable, match="slots") as caught:
                await s.put(record("s1"), 30)
            assert caught.value.dependency == "Redis"
        with server.client() as c:
            assert c.dbsize() == 0
    finally:
        await s.close()


def test_gateway_refuses_to_start_on_a_cluster_whose_slots_the_store_cannot_use(
    redis_server_factory: Callable[..., RedisServer],
    tmp_path: Path,
) -> None:
    server = redis_server_factory(*CLUSTER_ARGS)
    env = {
        **os.environ,
        "MCPGW_SESSIONS": "redis",
        "MCPGW_REDIS_URL": server.url,
        "MCPGW_REDIS_KEY_PREFIX": "gw{}:",
        "MCPGW_DATA_DIR": str(tmp_path),
        "MCPGW_PORT": str(free_port()),
        "MCPGW_EXAMPLE_ADAPTER": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if "the gateway does not start" in line]
    assert "RedisSessionStore(" in line and "is a Redis Cluster" in line and "MCPGW_REDIS_KEY_PREFIX" in line


# --- Redis with Entra ID ------------------------------------------------------------------------


class MintedCredential:
    """An azure-identity async credential that mints its own tokens (no network).

    Each token is a JWT with an ``oid`` claim; ``on_token`` lets the test make Redis accept it,
    the way Azure accepts every fresh token of an identity with a data access policy.
    """

    def __init__(self, oid: str, lifetime: float, on_token: Callable[[str], None] | None = None) -> None:
        self.oid = oid
        self.lifetime = lifetime
        self.on_token = on_token
        self.scopes: list[tuple[str, ...]] = []
        self.tokens: list[str] = []
        self.closed = False
        self.fail: Exception | None = None

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.fail is not None:
            raise self.fail
        now = time.time()
        claims = {"oid": self.oid, "aud": "https://redis.azure.com", "iat": int(now), "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, "test-signing-key-" + "x" * 32, algorithm="HS256")
        self.tokens.append(token)
        if self.on_token is not None:
            self.on_token(token)
        return AccessToken(token, int(now + self.lifetime))

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> MintedCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@pytest.fixture
def entra_redis(redis_server_factory: Callable[..., RedisServer]) -> Iterator[RedisServer]:
    # The default user needs a password nobody here uses: the store must AUTH as the token's user.
    yield redis_server_factory(password="default-user-not-used-by-the-store")


def allow_token(server: RedisServer, user: str, *, only_latest: bool = False) -> Callable[[str], None]:
    def add(token: str) -> None:
        with server.client() as c:
            rules = ["on", *(["resetpass"] if only_latest else []), f">{token}", "~*", "+@all"]
            c.execute_command("ACL", "SETUSER", user, *rules)

    return add


def users_of_gateway_connections(server: RedisServer) -> set[str]:
    with server.client() as c:
        return {conn["user"] for conn in c.client_list() if conn.get("name") == "mcp-gateway"}


async def test_entra_token_authenticates_as_its_oid(entra_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    oid = str(uuid.uuid4())
    credential = MintedCredential(oid, lifetime=3600, on_token=allow_token(entra_redis, oid))
    s = redis_store(redis_settings(f"redis://127.0.0.1:{entra_redis.port}/0", redis_entra=True), credential=credential)
    await s.start()
    try:
        await s.put(record("s1"), ttl=30)
        assert await s.get("s1") is not None
        assert credential.scopes == [(REDIS_SCOPE,)]  # one token, cached for every connection
        assert users_of_gateway_connections(entra_redis) == {oid}
    finally:
        await s.close()
    assert not credential.closed  # an injected credential is shared: its owner (gateway/app.py) closes it
    assert credential.tokens and all(t not in caplog.text for t in credential.tokens)


async def test_entra_username_setting_wins_over_the_oid(entra_redis: RedisServer) -> None:
    credential = MintedCredential(str(uuid.uuid4()), lifetime=3600, on_token=allow_token(entra_redis, "gateway-mi"))
    settings = redis_settings(f"redis://127.0.0.1:{entra_redis.port}/0", redis_entra=True, redis_username="gateway-mi")
    s = redis_store(settings, credential=credential)
    await s.start()
    try:
        await s.put(record("s1"), ttl=30)
        assert users_of_gateway_connections(entra_redis) == {"gateway-mi"}
    finally:
        await s.close()


async def test_entra_token_is_refreshed_before_expiry_and_pooled_connections_reauthenticate(
    entra_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    oid = str(uuid.uuid4())
    # Redis accepts only the newest token: a connection still on an old one could not re-AUTH.
    credential = MintedCredential(oid, lifetime=1.2, on_token=allow_token(entra_redis, oid, only_latest=True))
    s = redis_store(redis_settings(f"redis://127.0.0.1:{entra_redis.port}/0", redis_entra=True), credential=credential)
    await s.start()
    try:
        await s.put(record("s1"), ttl=30)
        with entra_redis.client() as c:
            c.config_resetstat()
        await asyncio.sleep(1.3)  # refresh is due at 0.75 of the lifetime; the first token has expired now
        assert len(credential.tokens) >= 2
        auth = command_stats(entra_redis).get("cmdstat_auth", {})
        assert auth.get("calls", 0) >= 1 and auth.get("failed_calls", 0) == 0, auth
        # Every pooled connection is on the newest token; new ones authenticate with it too.
        await asyncio.gather(*(s.put(record(f"p{i}"), ttl=30) for i in range(4)))
        assert await s.count() == 5
    finally:
        await s.close()
    assert all(t not in caplog.text for t in credential.tokens)


async def test_entra_token_failure_is_session_store_unavailable(entra_redis: RedisServer) -> None:
    credential = MintedCredential("x", lifetime=3600)
    credential.fail = ClientAuthenticationError("ManagedIdentityCredential: no managed identity endpoint found")
    s = redis_store(redis_settings(f"redis://127.0.0.1:{entra_redis.port}/0", redis_entra=True), credential=credential)
    with pytest.raises(SessionStoreUnavailable) as caught:
        await s.start()
    assert "Entra ID token" in caught.value.detail and "AZURE_CLIENT_ID" in caught.value.detail
    await s.close()


async def test_entra_token_without_access_is_refused_with_a_hint(entra_redis: RedisServer) -> None:
    credential = MintedCredential(str(uuid.uuid4()), lifetime=3600)  # Redis knows no such user
    s = redis_store(redis_settings(f"redis://127.0.0.1:{entra_redis.port}/0", redis_entra=True), credential=credential)
    with pytest.raises(SessionStoreUnavailable) as caught:
        await s.start()
    assert "data access policy" in caught.value.detail
    assert credential.tokens[0] not in caught.value.detail
    await s.close()


def test_entra_refuses_a_url_with_a_password() -> None:
    with pytest.raises(ValueError, match="MCPGW_REDIS_URL"):
        redis_store(redis_settings("rediss://:pw@example.redis.cache.windows.net:6380/0", redis_entra=True))


async def test_one_azure_credential_factory_follows_the_client_id_setting() -> None:
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    managed, default = build_azure_credential("abc"), build_azure_credential(None)
    try:
        assert isinstance(managed, ManagedIdentityCredential)
        assert isinstance(default, DefaultAzureCredential)
    finally:
        await managed.close()
        await default.close()


async def test_the_composition_root_builds_one_azure_credential_for_cosmos_and_redis() -> None:
    from gateway.app import build_components, build_shared_credential, build_store
    from gateway.store.cosmos import CosmosAdapterStore, CosmosClientFactory

    cosmos = "https://example.documents.azure.com:443/"
    settings = redis_settings("rediss://example:6380/0", redis_entra=True, store="cosmos", cosmos_endpoint=cosmos)
    c = build_components(settings)
    assert c.azure_credential is not None
    try:
        assert isinstance(c.store, CosmosAdapterStore) and isinstance(c.sessions, RedisSessionStore)
        provider = entra_provider(c.sessions.client())
        assert provider is not None and not provider._owns_credential
        assert isinstance(c.store._new_client, CosmosClientFactory)
        assert c.store._new_client.credential is c.azure_credential
        assert provider._credential is c.azure_credential
    finally:
        await c.sessions.close()
        await c.azure_credential.close()
    # A shared credential belongs to the composition root: neither store closes it.
    shared = MintedCredential("oid", lifetime=3600)
    for component in (build_store(settings, shared), redis_store(settings, credential=shared)):
        await component.close()
    assert not shared.closed
    # Nothing authenticates with Entra ID: no credential at all.
    assert build_shared_credential(Settings()) is None
    assert build_shared_credential(Settings(store="cosmos", cosmos_endpoint=cosmos, cosmos_key="k")) is None
    assert build_shared_credential(redis_settings("redis://127.0.0.1:6379/0")) is None


async def test_entra_client_needs_the_injected_credential_and_never_closes_it() -> None:
    config = redis_session_config(redis_settings("rediss://example:6380/0", redis_entra=True, azure_client_id="abc"))
    with pytest.raises(ValueError, match="MCPGW_REDIS_ENTRA needs an Azure credential"):
        redis_client(config)  # the store no longer builds a credential of its own: gateway/app.py injects one
    shared = MintedCredential("oid", lifetime=3600)
    s = RedisSessionStore(config, client=redis_client(config, credential=shared))
    provider = entra_provider(s.client())
    assert provider is not None and provider._credential is shared and not provider._owns_credential
    await s.close()
    assert not shared.closed


async def test_redis_over_tls_with_a_password(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(password="pw", tls=True)
    assert server.url.startswith("rediss://")
    s = redis_store(redis_settings(server.url))
    await s.start()
    try:
        await s.put(record("s1"), ttl=30)
        assert await s.get("s1") is not None
    finally:
        await s.close()
    # Without the CA the certificate is not trusted: refused, quickly, naming what to check.
    untrusted = redis_store(redis_settings(f"rediss://:pw@localhost:{server.port}/0"))
    err = await expect_fast_failure(untrusted.start)
    assert "rediss://localhost" in err.detail and "certificate" in err.detail
    await untrusted.close()


# --- the session router over a store: bounded cache, replicas that go -----------------------------


def router_over(store: SessionStore, ttl: float = 30.0) -> Any:
    from gateway.proxy.sealing import SessionSealer
    from gateway.proxy.sessions import SessionRouter

    return SessionRouter(
        store, SessionSealer([os.urandom(32)]), ttl=ttl, max_age=3600, cache_seconds=5, limits=SessionLimits(per_user=2)
    )


async def open_on(router: Any, uid: str, user: str = "alice") -> Any:
    _, claims = await router.open_session(
        kind="mcp", adapter="alpha", replica=f"alpha-{uid}", replica_uid=uid, upstream="up", user_id=user
    )
    return claims


async def test_router_revokes_the_sessions_of_a_replica_that_left(store: SessionStore) -> None:
    from gateway.proxy.sessions import SessionRejected
    from gateway.runtime.base import Endpoint

    router = router_over(store)
    a, b = Endpoint("alpha-0", "uid-a", "http://a"), Endpoint("alpha-1", "uid-b", "http://b")
    router.replicas_changed("alpha", [a, b])
    gone = [await open_on(router, "uid-a", user=f"u{i}") for i in range(3)]
    kept = await open_on(router, "uid-b")
    router.replicas_changed("alpha", [b])  # replica a left the ready endpoints
    await router.close()  # waits for the background revocations
    assert await store.count("alpha") == 1
    assert router.replica_revocations == 3
    for claims in gone:
        with pytest.raises(SessionRejected):
            await router.check(router._sealer.seal(claims), kind="mcp", adapter="alpha", user_id=claims.user_id)
    assert (await router.check(router._sealer.seal(kept), kind="mcp", adapter="alpha", user_id="alice")) == kept
    router.replicas_changed("alpha", [])  # the adapter has no endpoints: nothing kept per adapter
    await router.close()
    assert router._live_uids == {} and await store.count("alpha") == 0


async def test_router_refuses_over_the_cap_and_a_sealed_id_too_long() -> None:
    from gateway.proxy.sessions import SessionIdTooLong

    store = MemorySessionStore()
    router = router_over(store)
    await open_on(router, "u")
    await open_on(router, "u")
    with pytest.raises(SessionLimitExceeded):
        await open_on(router, "u")
    assert router.limit_rejections == {"per_user": 1}
    with pytest.raises(SessionIdTooLong, match="4096"):
        await router.open_session(
            kind="mcp", adapter="alpha", replica="r", replica_uid="u", upstream="x" * 3200, user_id="bob"
        )
    assert await store.count() == 2  # neither refusal stored anything


async def test_router_cache_forgets_sessions_idle_past_the_ttl() -> None:
    router = router_over(MemorySessionStore(), ttl=0.1)
    for i in range(5):
        await open_on(router, "u", user=f"u{i}")
    await asyncio.sleep(0.15)
    await open_on(router, "u", user="late")
    assert len(router._cache) == 1
