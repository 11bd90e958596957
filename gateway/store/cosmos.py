"""Cosmos DB adapter store: the production metadata store (NoSQL API, Entra ID auth).

One item per adapter in one container with partition key ``/id``; the item id is the adapter
name, the item's ``_etag`` is the record's etag. Reads are point reads, listing is one ordered
query per page, updates are conditional replaces (``If-Match``).

Retries live here, not in the SDK: the SDK's own retry loops are switched off so every
operation has one budget (``cosmos_timeout``) and one place that decides what is safe to retry.
Throttling (429), "retry with" (449), 503 and failures to connect are retried for every
operation, honouring ``x-ms-retry-after-ms``; timeouts, 408 and lost responses only for reads,
because a write whose answer was lost may already have been applied. When the budget runs out,
or Cosmos refuses the gateway's identity, the operation raises ``StoreUnavailable`` naming
Cosmos DB and what to check; keys and tokens never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.documents import ConnectionPolicy
from azure.cosmos.exceptions import CosmosHttpResponseError

from gateway.errors import StoreUnavailable
from gateway.models import AdapterRecord, ServerRecord
from gateway.store.base import AdapterExists, EtagMismatch, ServerExists

T = TypeVar("T")

log = logging.getLogger(__name__)

DEPENDENCY = "Cosmos DB"
RETRY_AFTER_HEADER = "x-ms-retry-after-ms"
# Statuses Cosmos documents as transient and safe to resend for any operation.
_RETRY_ANY = frozenset({429, 449, 503})
# Transient, but the request may have been applied: resend only reads.
_RETRY_READS = frozenset({408})
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
# System properties Cosmos adds to every item; not part of the record.
_SYSTEM_KEYS = ("id", "_rid", "_self", "_etag", "_attachments", "_ts")
# Sub-status of a 404 whose owner (database or container) is missing, not the item.
_OWNER_MISSING = 1003


class _Retry(Exception):
    """Internal: the attempt failed in a way worth another try after ``delay`` seconds (None: backoff)."""

    def __init__(self, reason: str, delay: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class _VerifyingTransport(AioHttpTransport):  # type: ignore[misc]
    """aiohttp transport that applies the gateway's TLS settings to every request.

    azure-cosmos 4.17 drops a CA-file path given as ``connection_verify`` and turns verification
    off by itself for localhost endpoints; this transport makes ``cosmos_verify_tls`` and
    ``cosmos_ca_file`` the only things that decide, for every host.
    """

    def __init__(self, *, session: aiohttp.ClientSession, verify: bool) -> None:
        super().__init__(session=session, session_owner=True)
        self._verify = verify

    async def send(self, request: Any, **config: Any) -> Any:
        # True → aiohttp uses the session connector's SSL context (the one built from settings).
        config["connection_verify"] = self._verify
        config.pop("connection_cert", None)
        return await super().send(request, **config)


@dataclass(frozen=True, slots=True, kw_only=True)
class CosmosConfig:
    """What the Cosmos DB adapter store and its client read, and nothing else (issue 20, 2026-12-01).

    ``gateway/app.py`` builds it from the ``MCPGW_COSMOS_*`` settings (same defaults, which
    tests/unit/app/test_component_configs.py checks); the credential (account key or the gateway's Azure
    credential) is not part of it: it is given to :class:`CosmosClientFactory`.
    """

    endpoint: str
    """Account endpoint, ``https://<account>.documents.azure.com``."""
    database: str = "mcpgateway"
    """Database name."""
    container: str = "adapters"
    """Container name (partition key ``/id``)."""
    create_if_missing: bool = False
    """Create the database and container when they are missing (else: StoreUnavailable naming them)."""
    verify_tls: bool = True
    """Verify the endpoint's TLS certificate."""
    ca_file: Path | None = None
    """CA bundle for the endpoint (emulator certificates)."""
    timeout: float = 10.0
    """Seconds one operation may take, retries and connecting included."""

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise ValueError("CosmosConfig needs an endpoint (MCPGW_COSMOS_ENDPOINT)")


def _ssl_context(config: CosmosConfig) -> ssl.SSLContext:
    if config.ca_file is not None:
        return ssl.create_default_context(cafile=str(config.ca_file))
    return ssl.create_default_context()


@dataclass(frozen=True, slots=True)
class CosmosClientFactory:
    """Makes the ``CosmosClient`` the store talks through: SDK retries off, the TLS settings, one timeout.

    The store is given a factory rather than a client because it drops its client after a failed
    connect (a half-open aiohttp session is not reused) and makes a new one on its next call.
    ``credential`` is the account key, or the gateway's one Azure credential
    (:func:`gateway.azure_credentials.build_azure_credential`, built and closed by ``gateway/app.py``
    and shared with the Redis session store); neither the factory nor the store closes it.
    """

    config: CosmosConfig
    credential: str | AsyncTokenCredential

    def __call__(self) -> CosmosClient:
        """A new client (no I/O until it is entered)."""
        timeout = self.config.timeout
        policy = ConnectionPolicy()
        # No SDK-side throttling retries (our loop owns them). The kwarg retry_throttle_total=0 is
        # read as "unset" by the SDK, so build the options object, whose class is not exported.
        policy.RetryOptions = type(policy.RetryOptions)(max_retry_attempt_count=0)
        policy.RequestTimeout = math.ceil(timeout)
        policy.ReadTimeout = timeout
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_ssl_context(self.config)),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=True,
        )
        return CosmosClient(
            self.config.endpoint,
            self.credential,
            connection_policy=policy,
            transport=_VerifyingTransport(session=session, verify=self.config.verify_tls),
            retry_total=0,
            retry_connect=0,
            retry_read=0,
            retry_status=0,
        )


def _to_item(record: AdapterRecord) -> dict[str, Any]:
    item: dict[str, Any] = msgspec.to_builtins(record)
    del item["etag"]
    item["id"] = item.pop("name")
    return item


def _from_item(item: Mapping[str, Any]) -> AdapterRecord:
    fields = {k: v for k, v in item.items() if k not in _SYSTEM_KEYS}
    fields["name"] = item["id"]
    fields["etag"] = item["_etag"]
    return msgspec.convert(fields, AdapterRecord)


async def _connected_already(container: ContainerProxy) -> None:
    """The operation of start(): connecting is all it does."""


class CosmosAdapterStore:
    """Adapter records in a Cosmos DB container (partition key ``/id``).

    ``gateway/app.py`` builds it with ``CosmosAdapterStore(config, new_client=CosmosClientFactory(config,
    credential))`` when ``MCPGW_STORE=cosmos``.
    ``start()`` connects and checks (or, with ``cosmos_create_if_missing``, creates) the database
    and container; if Cosmos is unreachable it raises ``StoreUnavailable``, and every later
    operation tries to connect again, so the gateway recovers without a restart.
    """

    def __init__(self, config: CosmosConfig, *, new_client: Callable[[], CosmosClient]) -> None:
        self._config = config
        self._new_client = new_client
        self._endpoint = config.endpoint
        self._timeout = config.timeout
        self._client: CosmosClient | None = None
        self._container: ContainerProxy | None = None
        self._connect_lock = asyncio.Lock()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, and check or create the database and container."""
        await self._call("connect", _connected_already, idempotent=True)

    async def close(self) -> None:
        """Close the client (the credential belongs to whoever made the client factory)."""
        await self._drop_client()

    def servers(self) -> CosmosServerStore:
        """The virtual server records of the same container (same client, budget and retries)."""
        return CosmosServerStore(self)

    async def ping(self) -> None:
        """Read the container's properties; raise StoreUnavailable when that fails."""
        await self._call("ping", lambda container: container.read(), idempotent=True)

    # --- records ----------------------------------------------------------------------------

    async def create(self, record: AdapterRecord) -> AdapterRecord:
        """Insert the record; AdapterExists when the name is taken."""
        try:
            item = await self._call(
                "create", lambda container: container.create_item(body=_to_item(record)), idempotent=False
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 409:
                raise AdapterExists(record.name) from None
            raise
        return _from_item(item)

    async def get(self, name: str) -> AdapterRecord | None:
        """Point read by name; None when absent."""
        try:
            item = await self._call(
                "read", lambda container: container.read_item(item=name, partition_key=name), idempotent=True
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 404:
                return None
            raise
        return _from_item(item)

    async def list(self, *, limit: int, after: str | None = None) -> list[AdapterRecord]:
        """Up to ``limit`` records ordered by name, after the name ``after``."""
        if limit < 1:
            return []
        # Virtual server items share the container with ids after every adapter name (SERVER_ID_PREFIX).
        where = "WHERE c.id > @after AND c.id < @end " if after is not None else "WHERE c.id < @end "
        query = f"SELECT TOP @limit * FROM c {where}ORDER BY c.id ASC"
        parameters: list[dict[str, Any]] = [{"name": "@limit", "value": limit}, {"name": "@end", "value": "~"}]
        if after is not None:
            parameters.append({"name": "@after", "value": after})

        async def page(container: ContainerProxy) -> list[dict[str, Any]]:
            items = container.query_items(query, parameters=parameters, max_item_count=limit)
            return [item async for item in items]

        items = await self._call("query", page, idempotent=True)
        return [_from_item(item) for item in items[:limit]]

    async def replace(self, record: AdapterRecord, *, etag: str) -> AdapterRecord:
        """Overwrite if the stored etag is ``etag``; EtagMismatch if not, KeyError if gone."""
        try:
            item = await self._call(
                "replace",
                lambda container: container.replace_item(
                    item=record.name,
                    body=_to_item(record),
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                ),
                idempotent=False,
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 412:
                raise EtagMismatch(record.name) from None
            if exc.status_code == 404:
                raise KeyError(record.name) from None
            raise
        return _from_item(item)

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Remove the record (only at ``etag`` when given); False when it was absent."""
        conditions: dict[str, Any] = {}
        if etag is not None:
            conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._call(
                "delete",
                lambda container: container.delete_item(item=name, partition_key=name, **conditions),
                idempotent=False,
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 412:
                raise EtagMismatch(name) from None
            if exc.status_code == 404:
                return False
            raise
        return True

    # --- connection -------------------------------------------------------------------------

    async def _connected(self) -> ContainerProxy:
        """The container client, connecting first when there is none (at start or after a failure)."""
        if self._container is None:
            async with self._connect_lock:
                if self._container is None:
                    await self._connect()
        assert self._container is not None
        return self._container

    async def _connect(self) -> None:
        s = self._config
        await self._drop_client()
        client = self._new_client()
        self._client = client
        try:
            await client.__aenter__()
            if s.create_if_missing:
                database = await client.create_database_if_not_exists(s.database)
                container = await database.create_container_if_not_exists(
                    s.container, partition_key=PartitionKey(path="/id")
                )
            else:
                container = client.get_database_client(s.database).get_container_client(s.container)
                await container.read()
        except CosmosHttpResponseError as exc:
            await self._drop_client()
            if exc.status_code == 404:
                raise StoreUnavailable(
                    DEPENDENCY,
                    f"database {s.database!r} or container {s.container!r} not found at "
                    f"{self._endpoint}; create them (the Pulumi program does) or set "
                    "MCPGW_COSMOS_CREATE_IF_MISSING=true",
                    retry_after=self._retry_after,
                ) from None
            raise
        except BaseException:
            await self._drop_client()
            raise
        self._container = container

    async def _drop_client(self) -> None:
        client, self._client, self._container = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:  # closing a half-open client must not mask the real failure
                log.debug("closing the Cosmos client failed: %s", type(exc).__name__)

    # --- retries ----------------------------------------------------------------------------

    @property
    def _retry_after(self) -> int:
        return max(1, math.ceil(self._timeout))

    def _unavailable(self, detail: str) -> StoreUnavailable:
        return StoreUnavailable(DEPENDENCY, detail, retry_after=self._retry_after)

    async def _call(self, op: str, fn: Callable[[ContainerProxy], Awaitable[T]], *, idempotent: bool) -> T:
        """Run one Cosmos operation within the ``cosmos_timeout`` budget, retrying what is safe.

        Connecting (when there is no client yet, or the last attempt failed) is part of the budget.

        Returns the result, re-raises CosmosHttpResponseError for statuses the caller maps
        (404, 409, 412, ...), and turns everything else into StoreUnavailable.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempt = 0
        last = ""
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            connected = self._container is not None  # else this attempt connects first: nothing written yet
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    try:
                        return await fn(await self._connected())
                    except CosmosHttpResponseError as exc:
                        raise self._classify(exc, idempotent) from None
                    except ServiceRequestError:
                        # Nothing was sent (DNS, refused, TLS handshake): safe to resend.
                        raise _Retry(f"cannot connect to {self._endpoint}", None) from None
                    except ServiceResponseError:
                        if connected and not idempotent:
                            raise self._unavailable(
                                f"the connection to {self._endpoint} broke during a {op}; it may or may not "
                                "have been applied, read the adapter again before retrying"
                            ) from None
                        raise _Retry(f"the connection to {self._endpoint} broke", None) from None
                    except ClientAuthenticationError as exc:
                        log.warning("Cosmos DB: getting an Entra ID token failed: %s", type(exc).__name__)
                        raise self._unavailable(
                            "could not get an Entra ID token for Cosmos DB; check the workload identity "
                            "(AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE), MCPGW_AZURE_CLIENT_ID, or `az login`"
                        ) from None
            except _Retry as retry:
                last, hinted = retry.reason, retry.delay
            except TimeoutError:
                earlier = f" after {attempt - 1} failed attempt(s), last: {last}" if last else ""
                applied = (
                    f" during a {op}, which may or may not have been applied" if connected and not idempotent else ""
                )
                raise self._unavailable(
                    f"no answer from {self._endpoint} within {self._timeout:g}s{applied}{earlier}; check that "
                    "the account is reachable from the gateway (network rules, private endpoint, DNS)"
                ) from None
            delay = (
                hinted
                if hinted is not None
                else min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            )
            if loop.time() + delay >= deadline:
                raise self._unavailable(
                    f"gave up after {attempt} attempt(s) in {self._timeout:g}s: {last}; check that the account "
                    "is reachable and has enough throughput, or raise MCPGW_COSMOS_TIMEOUT"
                )
            log.warning("Cosmos DB %s: %s; retry %d in %.2fs", op, last, attempt, delay)
            await asyncio.sleep(delay)

    def _classify(self, exc: CosmosHttpResponseError, idempotent: bool) -> Exception:
        """What one error answer means: retry, a status for the caller, or the store being unavailable."""
        status = exc.status_code or 0
        if status in _RETRY_ANY or (idempotent and status in _RETRY_READS):
            header = (exc.headers or {}).get(RETRY_AFTER_HEADER)
            delay = None
            if header is not None:
                try:
                    delay = max(0.0, int(header) / 1000)
                except ValueError:
                    delay = None
            return _Retry(f"HTTP {status} from {self._endpoint}", delay)
        if status in (401, 403):
            return self._unavailable(
                f"access denied (HTTP {status}) by {self._endpoint}; grant the gateway's identity the "
                "'Cosmos DB Built-in Data Contributor' role on the account, or check MCPGW_COSMOS_KEY"
            )
        if status == 404 and exc.sub_status == _OWNER_MISSING:
            return self._unavailable(
                f"database {self._config.database!r} or container {self._config.container!r} "
                f"is gone from {self._endpoint}"
            )
        if status in (404, 409, 412):
            return exc
        return self._unavailable(f"unexpected HTTP {status} from {self._endpoint}")


#: Ids of virtual server items: '~' sorts after every character an adapter name may hold
#: ([a-z0-9-]), so adapter listings end before the first server and the names never collide.
SERVER_ID_PREFIX = "~server:"
_SERVER_KIND = "server"


def _server_to_item(record: ServerRecord) -> dict[str, Any]:
    item: dict[str, Any] = msgspec.to_builtins(record)
    del item["etag"]
    item["id"] = SERVER_ID_PREFIX + item.pop("name")
    item["kind"] = _SERVER_KIND
    return item


def _server_from_item(item: Mapping[str, Any]) -> ServerRecord:
    fields = {k: v for k, v in item.items() if k not in _SYSTEM_KEYS and k != "kind"}
    fields["name"] = str(item["id"]).removeprefix(SERVER_ID_PREFIX)
    fields["etag"] = item["_etag"]
    return msgspec.convert(fields, ServerRecord)


class CosmosServerStore:
    """Virtual server records as ``kind: "server"`` items of the adapter container (issue 16).

    One container keeps one set of provisioning, RBAC and backups; the id prefix keeps the two
    kinds apart in listings (``c.id < "~"`` for adapters, the prefix range for servers).
    """

    def __init__(self, owner: CosmosAdapterStore) -> None:
        self._owner = owner

    async def create(self, record: ServerRecord) -> ServerRecord:
        """Insert; ServerExists when the name is taken."""
        try:
            item = await self._owner._call(
                "create", lambda container: container.create_item(body=_server_to_item(record)), idempotent=False
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 409:
                raise ServerExists(record.name) from None
            raise
        return _server_from_item(item)

    async def get(self, name: str) -> ServerRecord | None:
        """Point read by name; None when absent."""
        key = SERVER_ID_PREFIX + name
        try:
            item = await self._owner._call(
                "read", lambda container: container.read_item(item=key, partition_key=key), idempotent=True
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 404:
                return None
            raise
        return _server_from_item(item)

    async def list(self, *, limit: int, after: str | None = None) -> list[ServerRecord]:
        """Up to ``limit`` records ordered by name, after the name ``after``."""
        if limit < 1:
            return []
        query = "SELECT TOP @limit * FROM c WHERE c.id > @after AND c.id < @end ORDER BY c.id ASC"
        parameters: list[dict[str, Any]] = [
            {"name": "@limit", "value": limit},
            {"name": "@after", "value": SERVER_ID_PREFIX + (after or "")},
            {"name": "@end", "value": SERVER_ID_PREFIX + "~"},
        ]

        async def page(container: ContainerProxy) -> list[dict[str, Any]]:
            items = container.query_items(query, parameters=parameters, max_item_count=limit)
            return [item async for item in items]

        items = await self._owner._call("query", page, idempotent=True)
        return [_server_from_item(item) for item in items[:limit]]

    async def replace(self, record: ServerRecord, *, etag: str) -> ServerRecord:
        """Overwrite if the stored etag is ``etag``; EtagMismatch if not, KeyError if gone."""
        key = SERVER_ID_PREFIX + record.name
        try:
            item = await self._owner._call(
                "replace",
                lambda container: container.replace_item(
                    item=key, body=_server_to_item(record), etag=etag, match_condition=MatchConditions.IfNotModified
                ),
                idempotent=False,
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 412:
                raise EtagMismatch(record.name) from None
            if exc.status_code == 404:
                raise KeyError(record.name) from None
            raise
        return _server_from_item(item)

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Remove the record (only at ``etag`` when given); False when it was absent."""
        key = SERVER_ID_PREFIX + name
        conditions: dict[str, Any] = {}
        if etag is not None:
            conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._owner._call(
                "delete",
                lambda container: container.delete_item(item=key, partition_key=key, **conditions),
                idempotent=False,
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code == 412:
                raise EtagMismatch(name) from None
            if exc.status_code == 404:
                return False
            raise
        return True
