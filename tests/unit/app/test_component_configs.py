"""Each store, session store and runtime is built from its own small config, not from Settings (issue 20).

``gateway/app.py`` turns the ``MCPGW_*`` settings into one frozen config per implementation
(``CosmosConfig``, ``RedisSessionConfig``, ``LocalRuntimeConfig``, ``KubernetesRuntimeConfig``; SQLite and
memory take a path and a size) and injects the clients (the Redis client, the Cosmos client factory, the
one Azure credential). These tests build every implementation with only its config, and no running
service; the behaviour with services is pinned by the store, session store and runtime suites. Then the
settings checks that tie several settings together, each failing at start with the variable it names.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos.aio import CosmosClient
from redis.asyncio import Redis

from gateway.app import cosmos_config, kubernetes_runtime_config, local_runtime_config, redis_session_config
from gateway.errors import RuntimeUnavailable, SessionStoreUnavailable
from gateway.models import AdapterRecord
from gateway.runtime._kube_manifests import statefulset_manifest
from gateway.runtime.kubernetes import KubernetesRuntime, KubernetesRuntimeConfig
from gateway.runtime.local import LocalRuntime, LocalRuntimeConfig
from gateway.sessions.base import SessionRecord
from gateway.sessions.memory import MemorySessionStore
from gateway.sessions.redis import RedisSessionConfig, RedisSessionStore, entra_provider, redis_client
from gateway.settings import Settings, SettingsError, load_settings
from gateway.store.cosmos import CosmosAdapterStore, CosmosClientFactory, CosmosConfig
from gateway.store.sqlite import SqliteAdapterStore

ENDPOINT = "https://example.documents.azure.com:443/"


def record(name: str = "alpha") -> AdapterRecord:
    return AdapterRecord(name=name, image_name="mcp-example", image_version="1.0.0")


# --- the composition root carries every setting into its config ------------------------------------

# Each config field and the setting app.py fills it from, with a valid non-default value for the setting.
LOCAL: dict[str, tuple[str, Any]] = {
    "data_dir": ("data_dir", Path("/srv/gw")),
    "image_catalog": ("image_catalog", Path("/srv/catalog.toml")),
    "env_deny": ("env_deny", ("TEAM_*",)),
    "replica_user": ("local_replica_user", "mcp"),
    "sandbox": ("local_sandbox", "off"),
    "expose": ("local_expose", ("/srv/shared",)),
    "ready_timeout": ("local_ready_timeout", 7.0),
    "restart_backoff_max": ("local_restart_backoff_max", 9.0),
    "packages": ("local_packages", True),
    "stdio_max_sessions": ("stdio_max_sessions", 3),
    "stdio_idle_timeout": ("stdio_idle_timeout", 11.0),
    "stdio_allow_roots": ("stdio_allow_roots", True),
    "replica_drain_timeout": ("replica_drain_timeout", 0.0),
}
KUBERNETES: dict[str, tuple[str, Any]] = {
    "namespace": ("kube_namespace", "mcp"),
    "kubeconfig": ("kubeconfig", Path("/srv/kubeconfig")),
    "context": ("kube_context", "aks"),
    "registry": ("kube_registry", "myacr.azurecr.io"),
    "image_pull_policy": ("kube_image_pull_policy", "Always"),
    "service_account": ("kube_service_account", "sa"),
    "workload_service_account": ("kube_workload_service_account", "wi-sa"),
    "pod_addressing": ("kube_pod_addressing", "dns"),
    "cluster_domain": ("kube_cluster_domain", "k8s.test"),
    "cpu_request": ("kube_cpu_request", "250m"),
    "memory_request": ("kube_memory_request", "256Mi"),
    "cpu_limit": ("kube_cpu_limit", "2"),
    "memory_limit": ("kube_memory_limit", "1Gi"),
    "node_selector": ("kube_adapter_node_selector", "pool=adapters"),
    "tolerations": ("kube_adapter_tolerations", "pool=adapters:NoSchedule"),
    "stdio_bridge_image": ("kube_stdio_bridge_image", "myacr.azurecr.io/mcp-gateway:1"),
    "stdio_max_sessions": ("stdio_max_sessions", 3),
    "stdio_idle_timeout": ("stdio_idle_timeout", 11.0),
    "stdio_allow_roots": ("stdio_allow_roots", True),
    "env_deny": ("env_deny", ("TEAM_*",)),
    "replica_drain_timeout": ("replica_drain_timeout", 0.0),
    "lease_name": ("kube_lease_name", "other-lease"),
    "lease_duration": ("kube_lease_duration", 20.0),
    "lease_renew_deadline": ("kube_lease_renew_deadline", 12.0),
    "lease_retry_period": ("kube_lease_retry_period", 3.0),
}
REDIS: dict[str, tuple[str, Any]] = {
    "url": ("redis_url", "rediss://redis.example:6380/1"),
    "key_prefix": ("redis_key_prefix", "gw:"),
    "entra": ("redis_entra", True),
    "username": ("redis_username", "object-id"),
}
COSMOS: dict[str, tuple[str, Any]] = {
    "endpoint": ("cosmos_endpoint", ENDPOINT),
    "database": ("cosmos_database", "db"),
    "container": ("cosmos_container", "things"),
    "create_if_missing": ("cosmos_create_if_missing", True),
    "verify_tls": ("cosmos_verify_tls", False),
    "ca_file": ("cosmos_ca_file", Path("/srv/ca.pem")),
    "timeout": ("cosmos_timeout", 3.0),
}
BASE: dict[str, dict[str, Any]] = {
    "local": {},
    "kubernetes": {"runtime": "kubernetes"},
    "redis": {"sessions": "redis"},
    "cosmos": {"store": "cosmos", "cosmos_endpoint": ENDPOINT},
}
CASES: dict[str, tuple[type[Any], Callable[[Settings], Any], dict[str, tuple[str, Any]]]] = {
    "local": (LocalRuntimeConfig, local_runtime_config, LOCAL),
    "kubernetes": (KubernetesRuntimeConfig, kubernetes_runtime_config, KUBERNETES),
    "redis": (RedisSessionConfig, redis_session_config, REDIS),
    "cosmos": (CosmosConfig, cosmos_config, COSMOS),
}


@pytest.mark.parametrize("kind", CASES)
def test_every_config_field_comes_from_its_setting(kind: str) -> None:
    cls, build, mapping = CASES[kind]
    assert {f.name for f in dataclasses.fields(cls)} == set(mapping), "a field without a setting (or a stale one)"
    config = build(Settings(**{**BASE[kind], **dict(mapping.values())}))
    for field, (setting, value) in mapping.items():
        assert getattr(config, field) == value, f"{cls.__name__}.{field} is not filled from {setting}"


@pytest.mark.parametrize("kind", CASES)
def test_config_defaults_are_the_settings_defaults(kind: str) -> None:
    cls, build, mapping = CASES[kind]
    settings = Settings(**BASE[kind])
    required = {
        f.name: getattr(settings, mapping[f.name][0])
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert build(settings) == cls(**required)  # the few required fields aside, no default disagrees


def test_no_store_session_store_or_runtime_imports_the_settings() -> None:
    package = Path(__file__).resolve().parents[3] / "gateway"
    readers = [
        str(path.relative_to(package))
        for folder in ("store", "sessions", "runtime")
        for path in sorted((package / folder).glob("*.py"))
        if "gateway.settings" in path.read_text()
    ]
    assert readers == []


# --- each implementation with only its own config ---------------------------------------------------


async def test_sqlite_store_round_trip_with_only_a_path(tmp_path: Path) -> None:
    store = SqliteAdapterStore(tmp_path / "gateway.db")
    await store.start()
    try:
        created = await store.create(record())
        assert (await store.get("alpha")) == created
        assert [r.name for r in await store.list(limit=10)] == ["alpha"]
    finally:
        await store.close()


async def test_memory_session_store_with_only_its_size() -> None:
    store = MemorySessionStore(max_sessions=1)
    await store.start()
    try:
        for sid in ("s1", "s2"):
            await store.put(SessionRecord(sid=sid, user_id="u", adapter="a", replica="r0", created=1, last_used=1), 60)
        assert await store.get("s1") is None and await store.get("s2") is not None  # the oldest was evicted
    finally:
        await store.close()


async def test_redis_session_store_with_its_config_and_an_injected_client() -> None:
    config = RedisSessionConfig(url="redis://127.0.0.1:1/0", key_prefix="t:")  # nothing listens on port 1
    client = Redis.from_url(config.url, socket_connect_timeout=0.5)
    store = RedisSessionStore(config, client=client)
    assert store.client() is client and repr(store) == "RedisSessionStore(redis://127.0.0.1:1/0)"
    with pytest.raises(SessionStoreUnavailable) as caught:
        await store.ping()
    assert "cannot connect to redis://127.0.0.1:1/0" in caught.value.detail and "MCPGW_REDIS_URL" in caught.value.detail
    await store.close()  # the store owns the client it was given
    with pytest.raises(RuntimeError, match="after close"):
        store.client()


async def test_redis_client_factory_builds_without_io_and_entra_needs_the_injected_credential() -> None:
    plain = redis_client(RedisSessionConfig(url="redis://:pw@127.0.0.1:1/0"))
    assert entra_provider(plain) is None and plain.connection_pool.connection_kwargs["password"] == "pw"
    await plain.aclose()
    with pytest.raises(ValueError, match="MCPGW_REDIS_ENTRA needs an Azure credential"):
        redis_client(RedisSessionConfig(entra=True))
    with pytest.raises(ValueError, match="MCPGW_REDIS_URL must not carry a user or password"):
        RedisSessionConfig(url="rediss://:pw@example:6380/0", entra=True)
    assert "pw" not in repr(RedisSessionConfig(url="redis://:pw@127.0.0.1:1/0"))  # the URL may hold a password


async def test_cosmos_store_with_its_config_and_an_injected_client_factory() -> None:
    config = CosmosConfig(endpoint=ENDPOINT, timeout=1.0)
    made: list[CosmosClient] = []

    def new_client() -> CosmosClient:
        made.append(CosmosClientFactory(config, "a-key")())
        return made[-1]

    store = CosmosAdapterStore(config, new_client=new_client)
    assert made == []  # constructing connects nothing
    await store.close()
    client = CosmosClientFactory(config, "a-key")()  # the real factory: a client, no request sent yet
    assert isinstance(client, CosmosClient)
    await client.close()
    with pytest.raises(ValueError, match="MCPGW_COSMOS_ENDPOINT"):
        CosmosConfig(endpoint="")


async def test_local_runtime_with_only_its_config(tmp_path: Path) -> None:
    runtime = LocalRuntime(LocalRuntimeConfig(data_dir=tmp_path / "data", sandbox="off", replica_user=""))
    await runtime.start()
    try:
        assert runtime.role == "leader"
        assert runtime.check_image("mcp-example", "1.0.0") is None  # the built-in catalog
        assert "MCPGW_IMAGE_CATALOG" in (runtime.check_image("nope", "1") or "")
        assert runtime.endpoints("alpha") == ()
    finally:
        await runtime.close()


async def test_kubernetes_runtime_with_only_its_config(tmp_path: Path) -> None:
    config = KubernetesRuntimeConfig(kubeconfig=tmp_path / "absent", image_pull_policy="Always", namespace="mcp")
    runtime = KubernetesRuntime(config)
    assert runtime.endpoints("alpha") == ()
    with pytest.raises(RuntimeUnavailable, match="MCPGW_KUBECONFIG"):
        await runtime.start()
    await runtime.close()
    sts = statefulset_manifest(record(), config)
    assert sts["metadata"]["namespace"] == "mcp"
    assert sts["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    with pytest.raises(ValueError, match="kube_adapter_tolerations"):
        KubernetesRuntime(KubernetesRuntimeConfig(tolerations="pool=a:Sometimes"))


# --- settings that contradict each other fail at start, naming the variable -------------------------


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    return str(caught.value)


def test_session_cache_must_be_shorter_than_the_session_ttl() -> None:
    message = refused({"MCPGW_SESSION_TTL": "5", "MCPGW_SESSION_CACHE_SECONDS": "5"})
    assert message.startswith("MCPGW_SESSION_CACHE_SECONDS (--session-cache-seconds): ")
    assert "less than MCPGW_SESSION_TTL (5 s)" in message
    assert "0 (no cache) or more" in refused({"MCPGW_SESSION_CACHE_SECONDS": "-1"})
    assert load_settings({"MCPGW_SESSION_TTL": "5", "MCPGW_SESSION_CACHE_SECONDS": "4.5"}).session_cache_seconds == 4.5
    assert load_settings({"MCPGW_SESSION_TTL": "1", "MCPGW_SESSION_CACHE_SECONDS": "0"}).session_ttl == 1


def test_session_max_age_must_be_at_least_the_session_ttl() -> None:
    message = refused({"MCPGW_SESSION_TTL": "600", "MCPGW_SESSION_MAX_AGE": "300"})
    assert message.startswith("MCPGW_SESSION_MAX_AGE (--session-max-age): ")
    assert "at least MCPGW_SESSION_TTL (600 s)" in message
    assert load_settings({"MCPGW_SESSION_TTL": "600", "MCPGW_SESSION_MAX_AGE": "600"}).session_max_age == 600


def test_image_pull_policy_is_one_of_kubernetes_values() -> None:
    message = refused({"MCPGW_KUBE_IMAGE_PULL_POLICY": "sometimes"})
    assert message.startswith("MCPGW_KUBE_IMAGE_PULL_POLICY: ") and "Always, IfNotPresent, Never" in message
    # Read case-insensitively, kept in the spelling the Kubernetes API accepts.
    assert load_settings({"MCPGW_KUBE_IMAGE_PULL_POLICY": "always"}).kube_image_pull_policy == "Always"
    with pytest.raises(SettingsError, match=r"MCPGW_KUBE_IMAGE_PULL_POLICY .*case-sensitive"):
        Settings(kube_image_pull_policy="ifnotpresent")  # type: ignore[arg-type]


def test_kubernetes_node_selector_and_tolerations_are_checked_at_start() -> None:
    kube = {"MCPGW_RUNTIME": "kubernetes"}
    message = refused({**kube, "MCPGW_KUBE_ADAPTER_TOLERATIONS": "pool=a:Sometimes"})
    assert message.startswith("MCPGW_KUBE_ADAPTER_TOLERATIONS (--kube-adapter-tolerations): ")
    assert "NoSchedule|PreferNoSchedule|NoExecute" in message
    message = refused({**kube, "MCPGW_KUBE_ADAPTER_NODE_SELECTOR": "pool"})
    assert message.startswith("MCPGW_KUBE_ADAPTER_NODE_SELECTOR (--kube-adapter-node-selector): ")
    # The local runtime never reads them.
    assert load_settings({"MCPGW_KUBE_ADAPTER_NODE_SELECTOR": "pool"}).runtime == "local"


def test_redis_entra_refuses_a_url_with_a_password_at_start() -> None:
    message = refused(
        {"MCPGW_SESSIONS": "redis", "MCPGW_REDIS_ENTRA": "true", "MCPGW_REDIS_URL": "rediss://:pw@example:6380/0"}
    )
    assert message.startswith("MCPGW_REDIS_URL (--redis-url): ") and "MCPGW_REDIS_USERNAME" in message
    assert "pw@" not in message


def test_serve_refuses_contradicting_session_lifetimes(tmp_path: Path) -> None:
    env = {**os.environ, "MCPGW_DATA_DIR": str(tmp_path), "MCPGW_SESSION_TTL": "3600", "MCPGW_SESSION_MAX_AGE": "60"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "MCPGW_SESSION_MAX_AGE" in result.stderr, result.stderr
