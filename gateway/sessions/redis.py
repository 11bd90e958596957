"""Session records in Redis, shared by every gateway process.

Layout (``P`` is ``MCPGW_REDIS_KEY_PREFIX``; ``{sessions}`` is a hash tag that puts every key in
one cluster slot so the scripts below may touch several keys):

- ``P{sessions}:s:<sid>`` — a hash ``user_id adapter replica replica_uid created last_used`` with
  a TTL that every put and touch resets (sliding expiry, kept by Redis itself);
- ``P{sessions}:a:<adapter>`` — a sorted set of the adapter's session ids scored by their expiry
  time (ms, Redis clock), so expired members can be dropped by score without KEYS or SCAN;
- ``P{sessions}:u:<adapter>:<user>`` — the same for one user's sessions on one adapter (the
  per-user cap counts its members with a score in the future: ``ZCOUNT now +inf``, O(log n));
- ``P{sessions}:r:<adapter>:<replica uid>`` — the same for the sessions pinned to one replica
  incarnation, so they can be dropped when it goes;
- ``P{sessions}:all`` — the same for every session, for ``count()``.

Every index key carries a TTL at least as long as its newest member's, so indexes of users and
replicas that are gone vanish by themselves.

Each write is one Lua script (one round trip, atomic), using the Redis server's clock so several
gateways with skewed clocks agree. Reads are a single ``HGETALL``.

One shard (2026-11-30, DESIGN §8). Every script touches several keys, so every key must live in
one cluster slot: they all begin ``P{sessions}:``, and ``{sessions}`` (``HASH_TAG``) is the hash
tag, so Redis Cluster hashes only ``sessions`` (or, when ``P`` itself holds a ``{…}``, that tag —
common to every key too). The client is a plain one, not a cluster client: Azure Managed Redis
runs with ``clusteringPolicy: NoCluster`` (infra/redis.py). ``start()`` checks this instead of
trusting it: when the server says ``cluster_enabled:1`` it asks ``CLUSTER KEYSLOT`` for one key of
every kind and reads a key of that slot; keys in several slots (a prefix holding an empty ``{}``
tag) or a slot served by another node make ``start()`` raise :class:`RedisNotSuitable` and the
gateway refuses to start. A user that may not run INFO or CLUSTER is checked with Redis' own key
hash (``redis.crc.key_slot``) and the key read. A plain Redis costs two round trips at start
(``INFO cluster``, ``CONFIG GET``). The keys have carried this hash tag since the store was written, so
there is no key rename and no session loss across an upgrade.

No eviction. ``start()`` also reads ``maxmemory-policy`` (``CONFIG GET``, which Azure disables;
then ``INFO memory``) and logs a WARNING for anything but ``noeviction``: every key here has a TTL,
so even the ``volatile-*`` policies evict them, which silently revokes sessions and can drop the
indexes that adapter and replica revocation rely on. (A full ``noeviction`` Redis answers writes
with OOM errors instead, reported as SessionStoreUnavailable.) When Redis is unreachable at start
the checks run before the first call that reaches it.

Availability: every call fails fast (connect and read timeouts below, one retry on a broken
connection, an overall deadline) with ``SessionStoreUnavailable`` naming Redis and what to check;
redis-py reconnects on the next call, so recovery after an outage needs no restart.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.exceptions as rex
from azure.core.credentials_async import AsyncTokenCredential
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from gateway.errors import SessionStoreUnavailable
from gateway.sessions._entra import EntraCredentialProvider
from gateway.sessions.base import SessionLimitExceeded, SessionLimits, SessionRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 0.5
"""Seconds to open a connection to Redis (TCP, TLS and AUTH). URL query ``socket_connect_timeout`` wins."""

COMMAND_TIMEOUT = 0.5
"""Seconds Redis may take to answer one command. URL query ``socket_timeout`` wins."""

POOL_SIZE = 64
"""Connections per gateway process. URL query ``max_connections`` wins."""

RETRIES = 1
"""Retries of a command that failed on a broken connection (a pooled socket Redis closed)."""

OPERATION_TIMEOUT = 1.5
"""Deadline of one store call, retries included: the data plane must not wait longer."""

START_TIMEOUT = 10.0
"""Deadline of ``start()``, which may also fetch the first Entra ID token."""

RETRY_AFTER = 1
"""Retry-After (seconds) suggested with SessionStoreUnavailable."""

REVOKE_BATCH = 500
"""Sessions one ``revoke_adapter`` script deletes at a time, so Redis is never blocked for long."""

PRUNE_BATCH = 64
"""Most expired index members one write drops (bounded cost per write)."""

HASH_TAG = "{sessions}"
"""The hash tag every key carries right after the prefix: one cluster slot for all of them."""

NO_EVICTION = "noeviction"
"""The only ``maxmemory-policy`` under which Redis never drops a session key by itself."""


class RedisNotSuitable(RuntimeError):
    """The Redis server cannot hold the sessions correctly (e.g. keys spread over cluster slots).

    Raised by ``start()``, which the gateway does not catch: it refuses to start. Found later (Redis
    was down at start), every call raises SessionStoreUnavailable with the same message.
    """


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function prune(k, limit)
  local old = redis.call('ZRANGEBYSCORE', k, '-inf', now, 'LIMIT', 0, limit)
  if #old > 0 then redis.call('ZREM', k, unpack(old)) end
end
local function index(k, sid, ttl)
  prune(k, tonumber(ARGV[#ARGV]))
  redis.call('ZADD', k, now + ttl, sid)
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
"""

# Index keys from a base ``P{sessions}:`` (every key shares the hash tag, so one slot).
_KEYS = """
local function adapter_key(base, adapter) return base .. 'a:' .. adapter end
local function user_key(base, adapter, user) return base .. 'u:' .. adapter .. ':' .. user end
local function replica_key(base, adapter, uid) return base .. 'r:' .. adapter .. ':' .. uid end
-- Remove a session (hash and index memberships); returns 1 when the hash existed.
local function drop(base, sid)
  local k = base .. 's:' .. sid
  local f = redis.call('HMGET', k, 'adapter', 'user_id', 'replica_uid')
  -- No hash (new or expired session): nothing to undo; stale index members expire by score.
  if not f[1] then return 0 end
  local n = redis.call('DEL', k)
  redis.call('ZREM', adapter_key(base, f[1]), sid)
  if f[2] then redis.call('ZREM', user_key(base, f[1], f[2]), sid) end
  redis.call('ZREM', replica_key(base, f[1], f[3] or ''), sid)
  redis.call('ZREM', base .. 'all', sid)
  return n
end
"""

# Store one record and index it. ARGV from 2: sid, adapter, user, replica, replica uid, created,
# last_used; ARGV[1] the ttl ms, KEYS[1] the base; the last ARGV the prune batch.
_STORE = """
local function store(base, ttl)
  local sid, adapter, user, uid = ARGV[2], ARGV[3], ARGV[4], ARGV[6]
  drop(base, sid)
  local k = base .. 's:' .. sid
  redis.call('HSET', k, 'user_id', user, 'adapter', adapter, 'replica', ARGV[5], 'replica_uid', uid,
             'created', ARGV[7], 'last_used', ARGV[8])
  redis.call('PEXPIRE', k, ttl)
  index(adapter_key(base, adapter), sid, ttl)
  index(user_key(base, adapter, user), sid, ttl)
  index(replica_key(base, adapter, uid), sid, ttl)
  index(base .. 'all', sid, ttl)
end
"""

# KEYS: base. ARGV: ttl ms, sid, adapter, user, replica, replica uid, created, last_used, prune batch.
_PUT = (
    _NOW
    + _KEYS
    + _STORE
    + """
store(KEYS[1], tonumber(ARGV[1]))
return {0, 0}
"""
)

# KEYS: base. ARGV: as _PUT with, before the prune batch, the per-user and per-adapter caps
# (0: none). Returns {0, 0} when stored, else {1 (user) or 2 (adapter), ms until the oldest
# counted session expires}.
_OPEN = (
    _NOW
    + _KEYS
    + _STORE
    + """
local base = KEYS[1]
local caps = {{user_key(base, ARGV[3], ARGV[4]), tonumber(ARGV[9])}, {adapter_key(base, ARGV[3]), tonumber(ARGV[10])}}
for i, cap in ipairs(caps) do
  if cap[2] > 0 and redis.call('ZCOUNT', cap[1], '(' .. now, '+inf') >= cap[2] then
    local first = redis.call('ZRANGEBYSCORE', cap[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    return {i, tonumber(first[2]) - now}
  end
end
store(base, tonumber(ARGV[1]))
return {0, 0}
"""
)

# KEYS: base. ARGV: ttl ms, sid, last_used, prune batch.
_TOUCH = (
    _NOW
    + _KEYS
    + """
local base, ttl, sid = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local k = base .. 's:' .. sid
if redis.call('PEXPIRE', k, ttl) == 0 then return 0 end
redis.call('HSET', k, 'last_used', ARGV[3])
local f = redis.call('HMGET', k, 'adapter', 'user_id', 'replica_uid')
if f[1] then
  index(adapter_key(base, f[1]), sid, ttl)
  if f[2] then index(user_key(base, f[1], f[2]), sid, ttl) end
  index(replica_key(base, f[1], f[3] or ''), sid, ttl)
end
index(base .. 'all', sid, ttl)
return 1
"""
)

# KEYS: base. ARGV: sid.
_REVOKE = (
    _KEYS
    + """
return drop(KEYS[1], ARGV[1])
"""
)

# KEYS: base, an index (of an adapter or a replica). ARGV: adapter, batch.
# Deletes a batch of the index's sessions that still belong to the adapter, and removes the batch
# from the index. Returns {deleted, members seen}.
_REVOKE_INDEX = (
    _KEYS
    + """
local base = KEYS[1]
local sids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local n = 0
for _, sid in ipairs(sids) do
  if redis.call('HGET', base .. 's:' .. sid, 'adapter') == ARGV[1] then n = n + drop(base, sid) end
end
if #sids > 0 then
  redis.call('ZREM', KEYS[2], unpack(sids))
  redis.call('ZREM', base .. 'all', unpack(sids))
end
return {n, #sids}
"""
)

# KEYS: an index. Drops expired members, returns how many are left.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSessionConfig:
    """What the Redis session store and its client read, and nothing else (issue 20, 2026-12-01).

    ``gateway/app.py`` builds it from ``MCPGW_REDIS_URL``, ``MCPGW_REDIS_KEY_PREFIX``,
    ``MCPGW_REDIS_ENTRA`` and ``MCPGW_REDIS_USERNAME`` (same defaults; tests/unit/app/test_component_configs.py
    checks that they agree); a test builds one directly.
    """

    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    """Redis URL (``rediss://`` for TLS; query options such as ``max_connections`` are honoured)."""
    key_prefix: str = "mcpgw:"
    """Prefix of every key the store writes (before the ``{sessions}`` hash tag)."""
    entra: bool = False
    """Authenticate with an Entra ID token from an injected Azure credential instead of the URL's password."""
    username: str | None = None
    """Redis user for Entra ID auth (the identity's object id); None: the token's ``oid``."""

    def __post_init__(self) -> None:
        if self.entra and (urlsplit(self.url).password or urlsplit(self.url).username):
            raise ValueError(
                "MCPGW_REDIS_URL must not carry a user or password when MCPGW_REDIS_ENTRA is on "
                "(the Entra ID token is the password; set MCPGW_REDIS_USERNAME for the user)"
            )


def redis_client(config: RedisSessionConfig, *, credential: AsyncTokenCredential | None = None) -> Redis:
    """The ``redis.asyncio`` client the session store is given (no I/O: connections open on first use).

    Fast-failing timeouts, one retry on a broken connection, a blocking pool of ``POOL_SIZE``. With
    ``config.entra`` the client authenticates with tokens of ``credential`` (the gateway's one Azure
    credential, which ``gateway/app.py`` builds and closes; the client's Entra provider never closes
    it). The store that receives the client closes it, provider included.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "retry": Retry(NoBackoff(), RETRIES),
        "decode_responses": True,
        "client_name": "mcp-gateway",
    }
    provider: EntraCredentialProvider | None = None
    if config.entra:
        if credential is None:
            raise ValueError("MCPGW_REDIS_ENTRA needs an Azure credential (gateway/app.py builds one)")
        provider = EntraCredentialProvider(credential, username=config.username, owns_credential=False)
        options["credential_provider"] = provider
    # Blocking pool: a burst of requests waits for a connection (under the call deadline)
    # instead of failing with "too many connections".
    pool = BlockingConnectionPool.from_url(config.url, max_connections=POOL_SIZE, timeout=None, **options)
    # Passing the provider again registers redis-py's re-authentication of pooled connections.
    client = Redis(connection_pool=pool, credential_provider=provider)
    client.auto_close_connection_pool = True
    return client


def entra_provider(client: Redis) -> EntraCredentialProvider | None:
    """The Entra ID credential provider a client from :func:`redis_client` authenticates with, if any."""
    provider = client.connection_pool.connection_kwargs.get("credential_provider")
    return provider if isinstance(provider, EntraCredentialProvider) else None


class RedisSessionStore:
    """Session records in Redis (``redis.asyncio``), by URL with password/TLS or by Entra ID token.

    ``client`` comes from :func:`redis_client` (``gateway/app.py`` builds it with the gateway's
    Azure credential when ``config.entra``); the store owns it from then on and closes it, and its
    Entra ID provider, in :meth:`close`. Other Redis users (the rate limiter) share it through
    :meth:`client`, and the composition root closes the store after them.
    """

    def __init__(self, config: RedisSessionConfig, *, client: Redis) -> None:
        self._config = config
        self._target = _describe(config.url)
        self._base = config.key_prefix + HASH_TAG + ":"
        self._session_prefix = self._base + "s:"
        self._index_prefix = self._base + "a:"
        self._all_key = self._base + "all"
        self.evictions = 0  # Redis evicts nothing of ours by itself (use a noeviction maxmemory policy)
        self._client: Redis | None = client
        self._scripts: dict[str, AsyncScript] = {}
        self._checked = False  # the server checks (one slot, eviction policy) passed
        self._refusal: str | None = None  # why the server is not suitable, once found
        self._check_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RedisSessionStore({self._target})"

    async def start(self) -> None:
        """Check Redis answers and suits the store (see the module docstring).

        Raises SessionStoreUnavailable when Redis cannot be reached (the store stays usable: later
        calls reconnect by themselves and run the checks first), RedisNotSuitable when its keys
        would not share one cluster slot.
        """
        await self._guard(self._redis.ping(), deadline=START_TIMEOUT, strict=True)

    def client(self) -> Redis:
        """The Redis client: other Redis users share it (rate limits)."""
        return self._redis

    async def close(self) -> None:
        """Close the connections and stop the Entra ID token refresh (an injected credential stays open)."""
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            provider = entra_provider(client)
            await client.aclose()
            if provider is not None:
                await provider.aclose()

    async def ping(self) -> None:
        """Raise SessionStoreUnavailable when Redis cannot be reached."""
        await self._guard(self._redis.ping())

    async def put(self, record: SessionRecord, ttl: float) -> None:
        """Store a record that expires ``ttl`` seconds after its last use."""
        if ttl <= 0:
            await self.revoke(record.sid)
            return
        await self._guard(self._run_script(_PUT, [self._base], [*self._record_args(record, ttl), PRUNE_BATCH]))

    async def open(self, record: SessionRecord, ttl: float, limits: SessionLimits) -> None:
        """Store a new record unless the user's or the adapter's cap is reached (one atomic script).

        Raises SessionLimitExceeded naming the cap; the record is then not stored.
        """
        if ttl <= 0:
            return
        args = [*self._record_args(record, ttl), limits.per_user, limits.per_adapter, PRUNE_BATCH]
        result = await self._guard(self._run_script(_OPEN, [self._base], args))
        which, wait_ms = int(result[0]), float(result[1])
        if which == 1:
            raise SessionLimitExceeded("per_user", limits.per_user, wait_ms / 1000)
        if which == 2:
            raise SessionLimitExceeded("per_adapter", limits.per_adapter, wait_ms / 1000)

    def _record_args(self, record: SessionRecord, ttl: float) -> list[Any]:
        return [
            _ms(ttl),
            record.sid,
            record.adapter,
            record.user_id,
            record.replica,
            record.replica_uid,
            repr(record.created),
            repr(record.last_used),
        ]

    async def get(self, sid: str) -> SessionRecord | None:
        """The live record, or None when unknown, expired or revoked."""
        raw = await self._guard(self._redis.hgetall(self._session_prefix + sid))
        data = {str(k): str(v) for k, v in raw.items()}  # decode_responses=True: already str
        if not data:
            return None
        try:
            return SessionRecord(
                sid=sid,
                user_id=data["user_id"],
                adapter=data["adapter"],
                replica=data["replica"],
                created=float(data["created"]),
                last_used=float(data["last_used"]),
                replica_uid=data.get("replica_uid", ""),
            )
        except (KeyError, ValueError):
            log.warning(
                "session record %s… in Redis is malformed (fields %s); treated as unknown", sid[:8], sorted(data)
            )
            return None

    async def touch(self, sid: str, last_used: float, ttl: float) -> None:
        """Mark the session used now and push its expiry out by ``ttl``; unknown sessions stay unknown."""
        if ttl <= 0:
            await self.revoke(sid)
            return
        await self._guard(self._run_script(_TOUCH, [self._base], [_ms(ttl), sid, repr(last_used), PRUNE_BATCH]))

    async def revoke(self, sid: str) -> None:
        """Delete one record."""
        await self._guard(self._run_script(_REVOKE, [self._base], [sid]))

    async def revoke_adapter(self, adapter: str) -> int:
        """Delete every record of an adapter, a batch at a time; returns how many were live."""
        return await self._revoke_index(adapter, self._index_prefix + adapter)

    async def revoke_replica(self, adapter: str, replica_uid: str) -> int:
        """Delete every record pinned to one replica incarnation, a batch at a time; returns how many."""
        return await self._revoke_index(adapter, f"{self._base}r:{adapter}:{replica_uid}")

    async def _revoke_index(self, adapter: str, index: str) -> int:
        deleted = 0
        while True:
            result = await self._guard(self._run_script(_REVOKE_INDEX, [self._base, index], [adapter, REVOKE_BATCH]))
            deleted += int(result[0])
            if int(result[1]) == 0:
                return deleted

    async def count(self, adapter: str | None = None) -> int:
        """Live records, of one adapter or of all."""
        key = self._all_key if adapter is None else self._index_prefix + adapter
        return int(await self._guard(self._run_script(_COUNT, [key], [])))

    async def count_user(self, adapter: str, user_id: str) -> int:
        """Live records of one user on one adapter."""
        return int(await self._guard(self._run_script(_COUNT, [f"{self._base}u:{adapter}:{user_id}"], [])))

    async def count_replica(self, adapter: str, replica_uid: str) -> int:
        """Live records pinned to one replica incarnation."""
        return int(await self._guard(self._run_script(_COUNT, [f"{self._base}r:{adapter}:{replica_uid}"], [])))

    # --- internals ------------------------------------------------------------------------

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError("RedisSessionStore used after close()")
        return self._client

    def _run_script(self, source: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        # EVALSHA, loading the script again when Redis lost it (a restart empties the script cache).
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._redis.register_script(source)
        result: Awaitable[Any] = script(keys=keys, args=args)
        return result

    async def _check_once(self) -> None:
        """Run the server checks before the first call that reaches Redis; raise RedisNotSuitable."""
        async with self._check_lock:
            if self._refusal is None and not self._checked:
                self._refusal = await self._check_server()
                self._checked = self._refusal is None
        if self._refusal is not None:
            raise RedisNotSuitable(self._refusal)

    async def _check_server(self) -> str | None:
        """Why this server cannot hold the sessions, or None; warns about an evicting policy.

        A user that may not run INFO, CONFIG or CLUSTER (Azure Cache for Redis' "Data Contributor"
        policy excludes @dangerous commands) is not refused for it: what cannot be read is logged.
        """
        try:
            info = await self._redis.info("cluster")
            cluster: bool | None = int(info.get("cluster_enabled", 0)) == 1
        except rex.ResponseError as exc:
            log.info("could not read INFO cluster of %s (%s); checking the slot by a key read", self._target, exc)
            cluster = None
        if cluster is not False:
            refusal = await self._check_cluster()
            if refusal is not None:
                return refusal
        policy = await self._eviction_policy()
        if policy is None:
            log.info(
                "could not read maxmemory-policy of %s (CONFIG and INFO refused); make sure it is noeviction",
                self._target,
            )
        elif policy != NO_EVICTION:
            log.warning(
                "%s has maxmemory-policy %s: when memory runs short Redis evicts session keys (they all have a TTL), "
                "which silently revokes sessions and can drop the indexes adapter and replica revocation rely on; "
                "set maxmemory-policy noeviction (Azure Managed Redis: evictionPolicy NoEviction, as the Pulumi "
                "stacks set it)",
                self._target,
                policy,
            )
        return None

    async def _check_cluster(self) -> str | None:
        """In a Redis Cluster (or maybe one): every key kind in one slot, and that slot served here."""
        samples = {
            "session": self._session_prefix + "x",
            "adapter index": self._index_prefix + "x",
            "user index": f"{self._base}u:x:y",
            "replica index": f"{self._base}r:x:y",
            "all index": self._all_key,
            "script base": self._base,
        }
        slots: dict[str, int] = {}
        for kind, key in samples.items():
            try:
                slots[kind] = int(await _awaited(self._redis.cluster("KEYSLOT", key)))
            except rex.ResponseError:  # CLUSTER refused (or no cluster): Redis' own CRC16 of the hash tag
                slots[kind] = key_slot(key.encode())
        prefix = self._config.key_prefix
        if len(set(slots.values())) > 1:
            return (
                f"{self._target} is a Redis Cluster and the session keys under MCPGW_REDIS_KEY_PREFIX={prefix!r} "
                f"fall into {len(set(slots.values()))} slots ({', '.join(f'{k}: {v}' for k, v in slots.items())}); "
                f"the store's scripts need them in one slot: use a prefix without an empty '{{}}' (the keys carry "
                f"the hash tag {HASH_TAG})"
            )
        slot = slots["session"]
        try:
            await self._redis.exists(self._all_key)
        except rex.ResponseError as exc:  # MOVED / ASK / CLUSTERDOWN
            return (
                f"{self._target} is a Redis Cluster node that does not serve slot {slot} of the session keys "
                f"({type(exc).__name__}: {exc}); the session store talks to one node only: use a non-clustered "
                "Redis (Azure Managed Redis: clusteringPolicy NoCluster, as the Pulumi stacks set it) or point "
                f"MCPGW_REDIS_URL at the node serving slot {slot}"
            )
        log.info("%s: every session key is in slot %d, which this node serves", self._target, slot)
        return None

    async def _eviction_policy(self) -> str | None:
        """``maxmemory-policy`` from CONFIG GET, else from INFO memory (Azure disables CONFIG)."""
        try:
            config = await self._redis.config_get("maxmemory-policy")
            policy = config.get("maxmemory-policy")
            if policy:
                return str(policy)
        except rex.ResponseError:
            pass
        try:
            info = await self._redis.info("memory")
        except rex.ResponseError:
            return None
        policy = info.get("maxmemory_policy")
        return str(policy) if policy else None

    async def _guard(self, call: Awaitable[T], *, deadline: float = OPERATION_TIMEOUT, strict: bool = False) -> T:
        """Run one Redis call under a deadline; every failure becomes SessionStoreUnavailable.

        The server checks run first until they have passed once; ``strict`` lets their
        RedisNotSuitable through (``start()``), otherwise it too becomes SessionStoreUnavailable.
        """
        try:
            async with asyncio.timeout(deadline):
                if not self._checked:
                    await self._check_once()
                return await call
        except RedisNotSuitable as exc:
            if strict:
                raise
            raise self._unavailable(str(exc)) from exc
        except rex.ExternalAuthProviderError as exc:
            raise self._unavailable(
                f"{exc}; check the managed identity (AZURE_CLIENT_ID) or the DefaultAzureCredential setup"
            ) from exc
        except (rex.AuthenticationError, rex.AuthorizationError, rex.NoPermissionError) as exc:
            if self._config.entra:
                hint = (
                    "check that the gateway's identity has a Redis data access policy and that "
                    "MCPGW_REDIS_USERNAME (default: the token's oid) is its object id"
                )
            else:
                hint = "check the user and password in MCPGW_REDIS_URL"
            raise self._unavailable(f"{self._target} refused the gateway ({exc}); {hint}") from exc
        except (rex.TimeoutError, TimeoutError) as exc:
            raise self._unavailable(
                f"no answer from {self._target} within {deadline:g} s; check that Redis is up and not overloaded "
                f"and the network path to it (or, under heavy load, that this gateway's {POOL_SIZE} Redis "
                "connections suffice: max_connections in the URL query)"
            ) from exc
        except (rex.ConnectionError, OSError) as exc:
            if "CERTIFICATE" in str(exc).upper():
                hint = "check that the server's TLS certificate is trusted (ssl_ca_certs in the URL query) and its name"
            else:
                hint = "check that Redis is running and reachable, and MCPGW_REDIS_URL (host, port, rediss:// for TLS)"
            raise self._unavailable(f"cannot connect to {self._target} ({exc}); {hint}") from exc
        except rex.RedisError as exc:
            raise self._unavailable(f"{self._target} answered with an error ({type(exc).__name__}: {exc})") from exc
        finally:
            if inspect.iscoroutine(call):
                call.close()  # never awaited when a check failed first; a no-op once it ran

    def _unavailable(self, detail: str) -> SessionStoreUnavailable:
        return SessionStoreUnavailable("Redis", detail, retry_after=RETRY_AFTER)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _describe(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def _awaited(result: Any) -> Any:
    """The answer of a redis-py command typed ``Any | Awaitable[Any]`` (always awaitable in asyncio)."""
    return await result if inspect.isawaitable(result) else result
