"""The composition root: builds the gateway's object graph from settings.

This is the only module that names concrete stores, session stores, runtimes and authenticators.
``create_app(settings)`` returns an ASGI app: the MCP data plane (``/adapters/{name}/mcp|sse|messages``)
is dispatched straight to the proxy, everything else goes to the Litestar control plane.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from gateway.auth.base import Authenticator
from gateway.azure_credentials import build_azure_credential, needs_azure_credential
from gateway.browser.hosts import HostPolicy
from gateway.control.guard import RestGuard
from gateway.control.openapi import complete_openapi
from gateway.control.problems import EXCEPTION_HANDLERS
from gateway.control.reconciler import Reconciler
from gateway.control.routes import AdapterController, healthz, readyz
from gateway.control.service import AdapterService
from gateway.control.status import ConditionClock
from gateway.credentials import UpstreamCredentials
from gateway.drain import Drain
from gateway.envpolicy import ALLOWED_PYTHON, EnvPolicy
from gateway.errors import SessionStoreUnavailable, StoreUnavailable
from gateway.models import AdapterInput, Identity
from gateway.policy.audit import AuditTrail
from gateway.proxy.app import McpProxy
from gateway.proxy.policy import McpStages
from gateway.proxy.routes import DataPlaneRoutes
from gateway.proxy.sealing import SessionSealer, load_or_create_key, parse_keys
from gateway.proxy.sessions import SessionRouter
from gateway.runtime.base import Runtime, accepting
from gateway.servers.mcp import VirtualServers
from gateway.servers.routes import ServerController
from gateway.servers.service import ServerService
from gateway.sessions.base import SessionLimits, SessionStore
from gateway.settings import Settings
from gateway.store.base import AdapterStore, ServerStore, ServerStoreOwner
from gateway.store.view import AdapterView
from gateway.telemetry.setup import Telemetry, metrics_route
from gateway.ui import portal_router

if TYPE_CHECKING:
    import uvicorn
    from azure.core.credentials_async import AsyncTokenCredential

    from gateway.runtime.kubernetes import KubernetesRuntimeConfig
    from gateway.runtime.local import LocalRuntimeConfig
    from gateway.sessions.redis import RedisSessionConfig
    from gateway.store.cosmos import CosmosConfig

log = logging.getLogger("gateway")

VERSION = "0.1.0"
EXAMPLE_ADAPTER = AdapterInput(
    name="mcp-example",
    image_name="mcp-example",
    image_version="1.0.0",
    replica_count=2,
    description="Example MCP server (tools add, echo, whoami, get_env)",
)


def build_shared_credential(settings: Settings) -> AsyncTokenCredential | None:
    """The gateway's one Azure credential, when a component authenticates with Entra ID."""
    if needs_azure_credential(
        cosmos=settings.store == "cosmos",
        cosmos_key=settings.cosmos_key,
        redis_entra=settings.sessions == "redis" and settings.redis_entra,
    ):
        return build_azure_credential(settings.azure_client_id)
    return None


def cosmos_config(settings: Settings) -> CosmosConfig:
    """The Cosmos DB store's part of the settings (the key goes to the client factory, not here)."""
    from gateway.store.cosmos import CosmosConfig

    return CosmosConfig(
        endpoint=settings.cosmos_endpoint or "",
        database=settings.cosmos_database,
        container=settings.cosmos_container,
        create_if_missing=settings.cosmos_create_if_missing,
        verify_tls=settings.cosmos_verify_tls,
        ca_file=settings.cosmos_ca_file,
        timeout=settings.cosmos_timeout,
    )


def build_store(settings: Settings, credential: AsyncTokenCredential | None = None) -> AdapterStore:
    """The adapter store named by settings.store; Cosmos gets its client factory and credential injected.

    Cosmos authenticates with ``MCPGW_COSMOS_KEY`` when set, else with ``credential``, the gateway's
    one Azure credential (:func:`build_shared_credential`), which the caller closes.
    """
    if settings.store == "cosmos":
        from gateway.store.cosmos import CosmosAdapterStore, CosmosClientFactory

        key_or_credential = settings.cosmos_key or credential
        if key_or_credential is None:
            raise ValueError("the Cosmos store needs MCPGW_COSMOS_KEY or the gateway's Azure credential")
        config = cosmos_config(settings)
        return CosmosAdapterStore(config, new_client=CosmosClientFactory(config, key_or_credential))
    from gateway.store.sqlite import SqliteAdapterStore

    return SqliteAdapterStore(settings.data_dir / "gateway.db")


def redis_session_config(settings: Settings) -> RedisSessionConfig:
    """The Redis session store's part of the settings."""
    from gateway.sessions.redis import RedisSessionConfig

    return RedisSessionConfig(
        url=settings.redis_url,
        key_prefix=settings.redis_key_prefix,
        entra=settings.redis_entra,
        username=settings.redis_username,
    )


def build_sessions(settings: Settings, credential: AsyncTokenCredential | None = None) -> SessionStore:
    """The session store named by settings.sessions; Redis gets its client (and the Azure credential) injected."""
    if settings.sessions == "redis":
        from gateway.sessions.redis import RedisSessionStore, redis_client

        config = redis_session_config(settings)
        return RedisSessionStore(config, client=redis_client(config, credential=credential))
    from gateway.sessions.memory import MemorySessionStore

    return MemorySessionStore(max_sessions=settings.session_memory_max)


def local_runtime_config(settings: Settings) -> LocalRuntimeConfig:
    """The local runtime's part of the settings."""
    from gateway.runtime.local import LocalRuntimeConfig

    return LocalRuntimeConfig(
        data_dir=settings.data_dir,
        image_catalog=settings.image_catalog,
        env_deny=settings.env_deny,
        replica_user=settings.local_replica_user,
        sandbox=settings.local_sandbox,
        expose=settings.local_expose,
        ready_timeout=settings.local_ready_timeout,
        restart_backoff_max=settings.local_restart_backoff_max,
        packages=settings.local_packages,
        stdio_max_sessions=settings.stdio_max_sessions,
        stdio_idle_timeout=settings.stdio_idle_timeout,
        stdio_allow_roots=settings.stdio_allow_roots,
        replica_drain_timeout=settings.replica_drain_timeout,
    )


def kubernetes_runtime_config(settings: Settings) -> KubernetesRuntimeConfig:
    """The Kubernetes runtime's part of the settings (``image_pull_policy`` is checked by Settings)."""
    from gateway.runtime.kubernetes import KubernetesRuntimeConfig

    return KubernetesRuntimeConfig(
        namespace=settings.kube_namespace,
        kubeconfig=settings.kubeconfig,
        context=settings.kube_context,
        registry=settings.kube_registry,
        image_pull_policy=settings.kube_image_pull_policy,
        service_account=settings.kube_service_account,
        workload_service_account=settings.kube_workload_service_account,
        pod_addressing=settings.kube_pod_addressing,
        cluster_domain=settings.kube_cluster_domain,
        cpu_request=settings.kube_cpu_request,
        memory_request=settings.kube_memory_request,
        cpu_limit=settings.kube_cpu_limit,
        memory_limit=settings.kube_memory_limit,
        node_selector=settings.kube_adapter_node_selector,
        tolerations=settings.kube_adapter_tolerations,
        stdio_bridge_image=settings.kube_stdio_bridge_image,
        stdio_max_sessions=settings.stdio_max_sessions,
        stdio_idle_timeout=settings.stdio_idle_timeout,
        stdio_allow_roots=settings.stdio_allow_roots,
        env_deny=settings.env_deny,
        replica_drain_timeout=settings.replica_drain_timeout,
        lease_name=settings.kube_lease_name,
        lease_duration=settings.kube_lease_duration,
        lease_renew_deadline=settings.kube_lease_renew_deadline,
        lease_retry_period=settings.kube_lease_retry_period,
    )


def build_runtime(settings: Settings) -> Runtime:
    """The runtime named by settings.runtime, given only its own configuration."""
    if settings.runtime == "kubernetes":
        from gateway.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime(kubernetes_runtime_config(settings))
    from gateway.runtime.local import LocalRuntime

    return LocalRuntime(local_runtime_config(settings))


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator named by settings.auth."""
    from gateway.auth.factory import build_authenticator as factory

    return factory(settings)


def build_audit(settings: Settings, telemetry: Telemetry) -> AuditTrail:
    """The audit trail MCPGW_AUDIT asks for, plus OpenTelemetry logs when telemetry exports (no sink: off)."""
    from gateway.policy.audit import FileSink, audit_sinks

    sinks = audit_sinks(
        "off" if settings.audit.startswith("file:") else settings.audit, logger_provider=telemetry.logger_provider
    )
    if settings.audit.startswith("file:"):
        path = settings.audit[5:].strip()
        sinks.append(FileSink(path, max_bytes=settings.audit_file_max_bytes, backups=settings.audit_file_backups))
    return AuditTrail(sinks, queue_size=settings.audit_queue, hash_arguments=settings.audit_hash_arguments)


def build_stages(settings: Settings, sessions: SessionStore, audit: AuditTrail) -> McpStages:
    """The MCP stages: the limiter follows the session store (Redis → shared limits)."""
    from gateway.policy.ratelimit import (
        GuardedRateLimiter,
        MemoryRateLimiter,
        RateLimiter,
        RedisRateLimiter,
        parse_rate,
    )

    limiter: RateLimiter = MemoryRateLimiter()
    if settings.sessions == "redis":
        from gateway.sessions.redis import RedisSessionStore

        if isinstance(sessions, RedisSessionStore):
            redis = RedisRateLimiter(
                sessions.client(), key_prefix=settings.redis_key_prefix, timeout=settings.rate_limit_timeout
            )
            limiter = GuardedRateLimiter(redis, failure=settings.rate_limit_failure)
    return McpStages(
        limiter=limiter, audit=audit, default_user_rate=parse_rate(settings.default_user_rate, "default rate")
    )


def session_sealer(settings: Settings) -> SessionSealer:
    """Keys from settings, else the embedded key generated once in the data dir."""
    keys = (
        parse_keys(settings.session_keys)
        if settings.session_keys
        else [load_or_create_key(settings.data_dir / "session.key")]
    )
    return SessionSealer(keys)


@dataclass
class Components:
    """Everything create_app wires together; tests and the CLI may reach in."""

    settings: Settings
    azure_credential: AsyncTokenCredential | None  # the one Azure credential (Cosmos, Redis Entra ID)
    store: AdapterStore
    sessions: SessionStore
    runtime: Runtime
    authenticator: Authenticator
    view: AdapterView
    reconciler: Reconciler
    service: AdapterService
    router: SessionRouter
    proxy: McpProxy
    telemetry: Telemetry
    drain: Drain
    server_store: ServerStore
    server_service: ServerService
    server_sessions: SessionRouter  # 2025-era client sessions of virtual servers (sealed kind ``vmcp``)
    credentials: UpstreamCredentials | None = None


def build_components(settings: Settings, telemetry: Telemetry | None = None) -> Components:
    """Construct (not start) every component; ``telemetry`` defaults to what settings ask for."""
    from gateway.auth.metadata import www_authenticate

    telemetry = telemetry or Telemetry.from_settings(settings, version=VERSION)

    credential = build_shared_credential(settings)  # shared by Cosmos and Redis; closed after both
    store = build_store(settings, credential)
    sessions = build_sessions(settings, credential)
    runtime = build_runtime(settings)
    authenticator = build_authenticator(settings)
    view = AdapterView()
    audit = build_audit(settings, telemetry)
    # Control plane and session router see instrumented dependencies; Components keep the raw ones.
    i_store, i_sessions = telemetry.instrument_store(store), telemetry.instrument_sessions(sessions)
    i_runtime = telemetry.instrument_runtime(runtime)
    reconciler = Reconciler(
        i_store,
        i_runtime,
        view,
        i_sessions,
        interval=settings.reconcile_interval,
        tracing=telemetry.tracing,
        poll_interval=settings.kube_leader_poll_interval,
    )
    if settings.runtime == "kubernetes":  # only the Lease holder applies and removes
        from gateway.runtime.kubernetes import KubernetesRuntime

        if isinstance(runtime, KubernetesRuntime):
            reconciler.follow(runtime.leadership)
    from gateway.runtime.local import LocalRuntime

    if isinstance(runtime, LocalRuntime):  # a follower taking over re-applies every adapter now
        runtime.on_leadership(reconciler.kick)
    service = AdapterService(
        store=i_store,
        runtime=i_runtime,
        sessions=i_sessions,
        view=view,
        reconciler=reconciler,
        max_replicas=settings.max_replicas,
        list_max_limit=settings.list_max_limit,
        workload_identity_roles=settings.workload_identity_roles,
        tracing=telemetry.tracing,
        env_policy=EnvPolicy(settings.env_deny),
        auth_mode=settings.auth,
        audit=audit,
        runtime_kind=settings.runtime,
        condition_clock=ConditionClock(settings.data_dir / "conditions.json"),
        logs_follow_max_per_user=settings.logs_follow_max_per_user,
    )
    sealer = session_sealer(settings)
    limits = SessionLimits(per_user=settings.session_max_per_user, per_adapter=settings.session_max_per_adapter)

    def session_router() -> SessionRouter:
        return SessionRouter(
            i_sessions,
            sealer,
            ttl=settings.session_ttl,
            max_age=settings.session_max_age,
            cache_seconds=settings.session_cache_seconds,
            limits=limits,
        )

    router = session_router()
    # Virtual-server client sessions: the same key ring and store, their own kind and router (so the
    # adapters' per-replica session gauges and revocations never see them); caps apply per server.
    server_sessions = session_router()
    # Sessions pinned to a replica that left the ready endpoints are revoked at once, not at their TTL.
    runtime.add_listener(lambda name: router.replicas_changed(name, runtime.endpoints(name)))
    # A draining replica (replaced or scaled away) stops as soon as no session is pinned to it (issue 13).
    runtime.set_session_counter(i_sessions.count_replica)
    credentials = UpstreamCredentials.from_settings(
        settings,
        kube_api_client=(lambda: cast(Any, runtime).api_client) if settings.runtime == "kubernetes" else None,
        azure_credential=credential,
    )
    proxy = McpProxy(
        authenticator=authenticator,
        view=view,
        runtime=runtime,
        sessions=router,
        hosts=HostPolicy(
            listen_host=settings.host,
            public_url=settings.public_url,
            hosts=settings.allowed_hosts,
            origins=settings.allowed_origins,
        ),
        max_body_bytes=settings.max_body_bytes,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        pool_size=settings.upstream_pool_size,
        upstream_max_header_bytes=settings.upstream_max_header_bytes,
        upstream_max_header_fields=settings.upstream_max_header_fields,
        trusted_proxies=settings.trusted_proxies,
        www_authenticate=lambda path, error, detail: www_authenticate(settings, path, error, detail),
        telemetry=telemetry.requests,
        credentials=credentials,
        sse_keepalive_interval=settings.sse_keepalive_interval,
        stages=build_stages(settings, sessions, audit),
    )
    telemetry.observe(
        view=view, runtime=runtime, router=router, proxy=proxy, reconciler=reconciler, credentials=credentials
    )
    telemetry.observe_policy(proxy.stages, proxy)
    drain = Drain(settings.drain_delay, settings.drain_timeout)
    drain.on_begin(reconciler.resign)  # another gateway leads while this one drains
    server_store = cast(ServerStoreOwner, store).servers()  # both stores keep servers (issue 16)
    server_service = ServerService(
        servers=server_store,
        adapters=i_store,
        ready=lambda name: len(accepting(runtime.endpoints(name))),
        max_members=settings.server_max_members,
        list_max_limit=settings.list_max_limit,
        sessions=i_sessions,  # deleting a server revokes its client sessions
    )
    return Components(
        settings=settings,
        azure_credential=credential,
        store=store,
        sessions=sessions,
        runtime=runtime,
        authenticator=authenticator,
        view=view,
        reconciler=reconciler,
        service=service,
        router=router,
        proxy=proxy,
        telemetry=telemetry,
        drain=drain,
        server_store=server_store,
        server_service=server_service,
        server_sessions=server_sessions,
        credentials=credentials,
    )


async def _register_example(c: Components) -> None:
    if c.settings.runtime != "local" or not c.settings.example_adapter:
        return
    if await c.store.get(EXAMPLE_ADAPTER.name) is not None:
        return
    try:
        await c.service.create(Identity(user_id="dev", roles=frozenset({"mcp.admin"})), EXAMPLE_ADAPTER)
        log.info("registered the example adapter %s", EXAMPLE_ADAPTER.name)
    except Exception as exc:  # the gateway is still useful without it
        log.warning("could not register the example adapter %s: %s", EXAMPLE_ADAPTER.name, exc)


def rest_host_policy(settings: Settings) -> HostPolicy:
    """The Host/Origin policy of REST routes: the MCP routes' settings (RestGuard refuses loopback origins)."""
    return HostPolicy(
        listen_host=settings.host,
        public_url=settings.public_url,
        hosts=settings.allowed_hosts,
        origins=settings.allowed_origins,
    )


def create_litestar(c: Components) -> Litestar:
    """The control-plane Litestar app with lifecycle hooks for every component."""
    from gateway.auth.metadata import www_authenticate
    from gateway.auth.routes import protected_resource_router

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        stopping: list[float] = []

        async def stopped() -> None:
            # One line at shutdown (issue 17), after every other component closed.
            took = f" in {time.monotonic() - stopping[0]:.1f}s" if stopping else ""
            log.info("gateway stopped%s", took)
            for handler in logging.getLogger().handlers:  # INFO is buffered; the process exits next
                handler.flush()

        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(c.telemetry.close)
            if c.azure_credential is not None:
                stack.push_async_callback(c.azure_credential.close)
            stack.push_async_callback(stopped)
            try:
                await c.store.start()
            except StoreUnavailable as exc:  # start not ready; the store reconnects on its next call
                log.error("adapter store unavailable at start: %s", exc.detail)
            stack.push_async_callback(c.store.close)
            try:
                await c.sessions.start()
            except SessionStoreUnavailable as exc:  # existing sessions route from their seals; retried per call
                log.warning("session store unavailable at start: %s", exc.detail)
            except Exception as exc:  # e.g. a Redis Cluster whose slots the store cannot use: refuse to start
                log.error("session store %r cannot be used, the gateway does not start: %s", c.sessions, exc)
                raise
            stack.push_async_callback(c.sessions.close)
            await c.authenticator.start()
            stack.push_async_callback(c.authenticator.close)
            await c.runtime.start()
            stack.push_async_callback(c.runtime.close)
            await c.proxy.start()
            stack.push_async_callback(c.proxy.close)
            if c.credentials is not None:
                stack.push_async_callback(c.credentials.close)
            await c.proxy.stages.audit.start()
            stack.push_async_callback(c.proxy.stages.audit.close)
            stack.push_async_callback(c.router.close)
            stack.push_async_callback(c.server_sessions.close)
            await c.reconciler.start()
            stack.push_async_callback(c.reconciler.close)
            await _register_example(c)
            log.info(
                "gateway ready on %s (store=%s sessions=%s runtime=%s auth=%s)",
                c.settings.origin,
                c.settings.store,
                c.settings.sessions,
                c.settings.runtime,
                c.settings.auth,
            )
            settle_garbage_collector()
            stack.callback(lambda: stopping.append(time.monotonic()))  # runs first when closing
            yield

    state: dict[str, Any] = {
        "settings": c.settings,
        "store": c.store,
        "runtime": c.runtime,
        "service": c.service,
        "drain": c.drain,
        "server_service": c.server_service,
        "authenticator": c.authenticator,
        "www_authenticate": lambda path, error, detail: www_authenticate(c.settings, path, error, detail),
    }
    app = Litestar(
        route_handlers=[
            AdapterController,
            ServerController,
            healthz,
            readyz,
            protected_resource_router(c.settings),
            portal_router(c.settings),  # /ui: static files, no data-plane cost (dispatched after the data-plane routes)
            *([metrics_route(c.telemetry, c.settings.metrics_token)] if c.settings.metrics_enabled else []),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(RestGuard, hosts=rest_host_policy(c.settings))],
        lifespan=[lifespan],
        state=State(state),
        openapi_config=OpenAPIConfig(
            title="MCP Gateway",
            version=VERSION,
            description="Control plane of MCP Gateway. MCP traffic goes to /adapters/{name}/mcp (Streamable HTTP) "
            "and /adapters/{name}/sse + /adapters/{name}/messages (legacy HTTP+SSE).",
            path="/openapi",
            render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],
        ),
        debug=False,
        logging_config=None,
    )
    env_policy = EnvPolicy(c.settings.env_deny)
    complete_openapi(
        app.openapi_schema,
        max_replicas=c.settings.max_replicas,
        list_max_limit=c.settings.list_max_limit,
        denied_env_globs=env_policy.patterns,
        allowed_env_names=sorted(ALLOWED_PYTHON),
        server_max_members=c.settings.server_max_members,
        auth_mode=c.settings.auth,
    )
    return app


class GatewayApp:
    """ASGI entry: MCP routes straight to the proxy, the rest to Litestar."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.litestar = create_litestar(components)
        from gateway.auth.metadata import www_authenticate

        s = components.settings
        self.servers = VirtualServers(
            app=lambda: self,
            servers=components.server_store,
            view=components.view,
            authenticator=components.authenticator,
            hosts=rest_host_policy(s),
            member_timeout=s.server_member_timeout,
            list_ttl=s.server_list_ttl,
            session_ttl=s.session_ttl,
            gateway_prefix=s.gateway_mcp_prefix,
            sessions=components.server_sessions,
            max_body_bytes=s.max_body_bytes,
            www_authenticate=lambda path, error, detail: www_authenticate(s, path, error, detail),
            stream_buffer_events=s.server_stream_buffer_events,
            stream_buffer_bytes=s.server_stream_buffer_bytes,
            stream_retry_ms=s.server_stream_retry_ms,
            listens_per_user=s.server_listens_per_user,
        )
        components.server_service.on_change(self.servers.server_changed)
        self.routes = DataPlaneRoutes()
        self.routes.add("/adapters/{name}/mcp", components.proxy, "mcp")
        self.routes.add("/adapters/{name}/sse", components.proxy, "sse")
        self.routes.add("/adapters/{name}/messages", components.proxy, "messages")
        # Virtual servers (issue 16): /servers/{name}/mcp|sse|messages, and /mcp over every readable adapter.
        self.routes.add("/servers/{name}/mcp", self.servers, "mcp")
        self.routes.add("/servers/{name}/sse", self.servers, "sse")
        self.routes.add("/servers/{name}/messages", self.servers, "messages")
        if s.gateway_mcp:
            self.routes.add("/mcp", self._gateway_mcp, "mcp")

    async def _gateway_mcp(self, scope: dict[str, Any], receive: Any, send: Any, name: str, route: str) -> None:
        """``/mcp``: the per-caller virtual server over every adapter the caller may read."""
        await self.servers(scope, receive, send, None, route)

    def server(self, config: uvicorn.Config) -> uvicorn.Server:
        """The uvicorn server for this app: its first SIGTERM drains (see gateway/drain.py)."""
        from gateway.drain import DrainingServer

        return DrainingServer(config, self.components.drain)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            found = self.routes.match(scope["path"])
            if found is not None:
                handler, name, route = found
                await handler(scope, receive, send, name, route)
                return
        await self.litestar(scope, receive, send)  # type: ignore[arg-type]


GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the data plane's hot path; called once started.

    Under load a request's objects live longer than the 700 allocations between two young
    collections, get promoted and make the oldest generation grow, and every full collection
    then scans the whole start-up heap (modules, the Litestar app, clients) while every request
    in flight waits. Measured on the 2-core machine (stub upstream, 64 connections, 10 s, about
    60,000 requests): 15 full collections of up to 62 ms and 1.0 s in all collections, wrk p99
    45-53 ms. ``gc.freeze`` moves the start-up heap out of every later collection and a young
    generation of 10,000 allocations promotes far less: one full collection, 45 ms in all,
    p99 17 ms. Cyclic garbage waits at most 10,000 allocations longer; memory does not grow.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def create_app(settings: Settings) -> GatewayApp:
    """The gateway as an ASGI app."""
    return GatewayApp(build_components(settings))
