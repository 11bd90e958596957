"""Typed gateway settings.

Every setting is read from an ``MCPGW_*`` environment variable and mirrored by a flag of
``mcp-gateway serve`` (``data_dir`` ↔ ``MCPGW_DATA_DIR`` ↔ ``--data-dir``). Flags win over the
environment, the environment wins over defaults. The defaults are the embedded mode: SQLite in
the data dir, in-memory sessions, the local process runtime and dev auth.

This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

ENV_PREFIX = "MCPGW_"
MiB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the environment variable and flag."""


def setting(default: Any, help: str, *, env: str | None = None, secret: bool = False) -> Any:
    """Declare one setting: its default, its help text, an optional extra env name, secrecy."""
    if isinstance(default, list | dict | set):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"help": help, "env": env, "secret": secret})


StoreKind = Literal["sqlite", "cosmos"]
SessionsKind = Literal["memory", "redis"]
RuntimeKind = Literal["local", "kubernetes"]
AuthKind = Literal["dev", "entra", "oidc"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "text", "json"]
AccessLog = Literal["all", "errors", "off"]
PodAddressing = Literal["ip", "dns"]
LocalSandbox = Literal["auto", "bwrap", "off"]
ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway can be told. See ``mcp-gateway serve --help`` or docs/limits.md."""

    # --- process -------------------------------------------------------------------------
    host: str = setting("127.0.0.1", "Address the gateway listens on.")
    port: int = setting(8000, "Port the gateway listens on.")
    drain_delay: float = setting(5.0, "Seconds a stopping gateway still accepts requests after reporting not-ready.")
    drain_timeout: float = setting(
        20.0, "Seconds a stopping gateway waits for in-flight requests before it closes open streams."
    )
    logs_follow_max_per_user: int = setting(
        8,
        "Log streams (GET /adapters/{name}/logs?follow=true) one user may hold open at once on this gateway; "
        "over it, 429 + Retry-After. 0: no limit.",
    )
    replica_drain_timeout: float = setting(
        60.0,
        "Seconds a replaced or scaled-away adapter replica keeps serving the sessions pinned to it (it takes "
        "no new ones) before it stops; it stops sooner when its last session ends. 0 stops it at once.",
    )
    data_dir: Path = setting(
        Path(".mcp-gateway"), "Folder for the SQLite store, replica logs and the embedded session key."
    )
    public_url: str | None = setting(
        None,
        "Public origin of the gateway (e.g. https://mcp.example.com) when it runs behind a proxy; "
        "used in absolute URLs and protected-resource metadata. Default: derived from host and port.",
    )
    log_level: LogLevel = setting("info", "Log level: debug, info, warning or error.")
    log_format: LogFormat = setting("auto", "Log format: text, json, or auto (text in embedded mode, else json).")

    # --- edge limits ---------------------------------------------------------------------
    max_header_bytes: int = setting(
        64 * 1024,
        "Largest request line plus header fields of one request (and chunk framing plus trailers of its body); "
        "larger → 431 and the connection is closed.",
    )
    max_header_fields: int = setting(100, "Most header fields in one request; more → 431 and the connection is closed.")
    header_timeout: float = setting(
        10.0,
        "Seconds a client has to send a whole request head from its first byte (and a new connection its "
        "first byte); then 408 (a new connection that sent nothing: closed) and the connection is closed.",
    )
    body_timeout: float = setting(
        30.0,
        "Seconds a request body may stall (no byte arrives while the gateway reads) before the connection is "
        "closed, with 408 if no response was started. Responses and streams are not limited by it.",
    )
    max_connections: int = setting(
        0,
        "Most client connections served at once; beyond it a new connection gets 503 and is closed. "
        "0: half the process's open-file limit less 256 (each proxied stream also holds one to its replica).",
    )

    # --- components ----------------------------------------------------------------------
    store: StoreKind = setting("sqlite", "Adapter metadata store: sqlite (embedded) or cosmos.")
    sessions: SessionsKind = setting("memory", "Session record store: memory (embedded) or redis.")
    runtime: RuntimeKind = setting("local", "Where replicas run: local (child processes) or kubernetes.")
    auth: AuthKind = setting("dev", "Identity: dev (X-Dev-User-Id / X-Dev-Roles headers), entra or oidc.")

    # --- control plane -------------------------------------------------------------------
    max_replicas: int = setting(10, "Largest replicaCount an adapter may ask for.")
    reconcile_interval: float = setting(10.0, "Seconds between periodic reconciler passes.")
    example_adapter: bool = setting(
        True, "With the local runtime, register the example adapter mcp-example at start when it is absent."
    )
    list_max_limit: int = setting(100, "Largest page size of GET /adapters.")

    # --- local runtime -------------------------------------------------------------------
    image_catalog: Path | None = setting(
        None, "TOML file mapping imageName:imageVersion to a command for the local runtime."
    )
    local_ready_timeout: float = setting(30.0, "Seconds a local replica may take to accept connections.")
    local_restart_backoff_max: float = setting(30.0, "Longest wait before restarting a crashed local replica.")
    env_deny: tuple[str, ...] = setting(
        (),
        "Extra environment variable names or globs (case-insensitive) adapters may not set, on top of the "
        "built-in deny-list (LD_*, PYTHON*, PATH, ...; docs/security.md). Both runtimes enforce it.",
    )
    local_replica_user: str = setting(
        "nobody",
        "User (name or uid) local replicas run as when the gateway runs as root; empty = root (not isolated).",
    )
    local_sandbox: LocalSandbox = setting(
        "auto",
        "Run each local replica in a bubblewrap sandbox (read-only root, private /tmp and /proc, data dir "
        "hidden): auto (when bwrap works), bwrap (required: start fails without it) or off.",
    )
    local_expose: tuple[str, ...] = setting(
        (),
        "Folders an adapter's command or args may name to have them shown read-only in its sandbox where the "
        "sandbox hides them (/tmp, /var/tmp) or the replica user cannot reach them. Paths elsewhere in an "
        "adapter's command line are never exposed (the catalog's are).",
    )
    # --- stdio servers and packages (local runtime; issue 17) ---
    stdio_max_sessions: int = setting(
        32,
        "Processes (one per client session) a replica of a stdio adapter runs at once; over it, 503 + Retry-After.",
    )
    stdio_idle_timeout: float = setting(
        600.0, "Seconds a stdio session may stay idle (no request, no open GET stream) before its process ends."
    )
    local_packages: bool = setting(
        False,
        "Let adapters run npm/PyPI packages (npx/uvx, fetched from the registries) on the local runtime. Off: "
        "package adapters are stored but start nothing (status PackagesDisabled).",
    )
    stdio_allow_roots: bool = setting(
        False,
        "Pass the client's roots capability to stdio servers (server-filesystem then serves the client's roots "
        "instead of the adapter's configured directories).",
    )

    # --- data plane ----------------------------------------------------------------------
    max_body_bytes: int = setting(4 * MiB, "Largest MCP request body; larger requests get 413.")
    upstream_connect_timeout: float = setting(5.0, "Seconds to connect to a replica before answering 502/504.")
    upstream_read_timeout: float = setting(
        300.0, "Seconds an upstream may stay silent (between chunks) before 504; streams have no total limit."
    )
    upstream_pool_size: int = setting(
        1024,
        "Most connections open at once to one replica, across users; every open stream holds one. "
        "At the cap, idle connections of other users are closed; with none, 503 after the connect timeout.",
    )
    upstream_max_header_bytes: int = setting(
        64 * 1024, "Largest response head (status line and headers) or trailer section a replica may send; then 502."
    )
    upstream_max_header_fields: int = setting(
        100, "Most header fields in a replica's response head (and in its trailers); then 502."
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "Addresses or CIDRs of proxies in front of the gateway. Only from these peers is the client's "
        "X-Forwarded-For kept (and the peer appended); from any other peer it is replaced by the peer address.",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Host header values accepted (host or host:port, '*' for any). Loopback forms and the public URL's "
        "host are always accepted.",
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        "Origin header values accepted (and given CORS headers) on MCP and REST routes. The public URL is always "
        "accepted; loopback origins on MCP routes only, the request's own origin on REST routes only.",
    )

    # --- virtual servers -----------------------------------------------------------------
    server_max_members: int = setting(20, "Most members (adapters) one virtual server may compose.")
    server_member_timeout: float = setting(
        5.0,
        "Seconds a virtual server waits for one member's answer while listing or opening its session; a member "
        "slower than this is left out of the listing (logged and counted) and its calls get a JSON-RPC error.",
    )
    server_list_ttl: float = setting(
        30.0, "Seconds a member's tools/prompts/resources listing is cached per caller-visible set (0: no cache)."
    )
    gateway_mcp: bool = setting(
        True, "Serve /mcp: one virtual server per caller over every adapter the caller may read."
    )
    gateway_mcp_prefix: bool = setting(
        True, "On /mcp, prefix each tool and prompt with its adapter's name and '_' (off: names as the adapters say)."
    )
    # --- policy and audit ----------------------------------------------------------------
    sse_keepalive_interval: float = setting(
        15.0,
        "Seconds an SSE stream the gateway relays may stay silent before it sends a ': keep-alive' comment "
        "(between events only); keep it below every idle timeout in the path. 0 turns keep-alives off.",
    )
    default_user_rate: str = setting(
        "",
        "REQUESTS/SECONDS each user may send to each adapter (e.g. 600/60), unless the adapter's rateLimits "
        "has its own per-user rule without tools; empty: no default limit.",
    )
    rate_limit_failure: Literal["open", "closed"] = setting(
        "open",
        "What a rate-limit store (Redis) outage means: open (admit, counted and logged) or closed (503).",
    )
    rate_limit_timeout: float = setting(0.25, "Seconds one Redis rate-limit check may take before the failure mode.")
    audit: str = setting("off", "Audit trail sink: off, stdout or file:PATH (JSON lines, rotated by size).")
    audit_hash_arguments: bool = setting(False, "Record the SHA-256 of each tools/call's arguments in the audit.")
    audit_queue: int = setting(10000, "Audit records waiting for the writer before new ones are dropped (counted).")
    audit_file_max_bytes: int = setting(50 * MiB, "Size at which the audit file (file:PATH) is rotated.")
    audit_file_backups: int = setting(5, "Rotated audit files kept (PATH.1 ... PATH.N).")

    # --- sessions ------------------------------------------------------------------------
    session_ttl: float = setting(3600.0, "Sliding idle lifetime of a session, in seconds.")
    session_max_age: float = setting(86400.0, "Absolute lifetime of a session id, in seconds.")
    session_keys: tuple[str, ...] = setting(
        (),
        "Comma-separated base64 32-byte keys sealing session ids; the first seals, all open (rotation). "
        "Default: a key generated once in the data dir.",
        secret=True,
    )
    session_cache_seconds: float = setting(
        5.0, "How long a gateway trusts a session record it read, before asking the store again."
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "Redis URL for session records (rediss:// for TLS).", secret=True
    )
    redis_entra: bool = setting(False, "Authenticate to Azure Redis with an Entra ID token (azure-identity).")
    redis_username: str | None = setting(
        None, "Redis user for Entra auth (the identity's object id); default: from the token."
    )
    redis_key_prefix: str = setting("mcpgw:", "Prefix of every Redis key the gateway writes.")
    session_max_per_user: int = setting(
        100, "Open sessions (2025-era and legacy SSE) one user may hold on one adapter; more get 429. 0: no cap."
    )
    session_max_per_adapter: int = setting(
        10_000, "Open sessions on one adapter, all users together; more get 429. 0: no cap."
    )
    session_memory_max: int = setting(
        100_000, "Most session records the memory store holds; beyond it the least recently used is evicted."
    )

    # --- cosmos --------------------------------------------------------------------------
    cosmos_endpoint: str | None = setting(None, "Cosmos DB account endpoint (https://<account>.documents.azure.com).")
    cosmos_database: str = setting("mcpgateway", "Cosmos DB database name.")
    cosmos_container: str = setting("adapters", "Cosmos DB container name (partition key /id).")
    cosmos_key: str | None = setting(
        None, "Account key; only for the emulator and local work. Default: Entra ID.", secret=True
    )
    cosmos_create_if_missing: bool = setting(False, "Create the database and container when they are missing.")
    cosmos_verify_tls: bool = setting(True, "Verify the Cosmos endpoint's TLS certificate.")
    cosmos_ca_file: Path | None = setting(None, "CA bundle for the Cosmos endpoint (emulator certificates).")
    cosmos_timeout: float = setting(10.0, "Seconds one Cosmos operation may take, retries included.")
    azure_client_id: str | None = setting(
        None, "Client id of a user-assigned managed identity for Cosmos and Redis.", env="AZURE_CLIENT_ID"
    )

    # --- kubernetes ----------------------------------------------------------------------
    kube_namespace: str = setting("adapter", "Namespace the adapter StatefulSets live in.")
    kubeconfig: Path | None = setting(
        None, "kubeconfig file; default: in-cluster config, else ~/.kube/config.", env="KUBECONFIG"
    )
    kube_context: str | None = setting(None, "kubeconfig context to use.")
    kube_registry: str = setting("", "Registry prefix for adapter images (e.g. myacr.azurecr.io).")
    kube_image_pull_policy: ImagePullPolicy = setting(
        "IfNotPresent", "imagePullPolicy of adapter pods: Always, IfNotPresent or Never."
    )
    kube_service_account: str = setting("mcp-adapter", "Service account of adapter pods.")
    kube_workload_service_account: str = setting(
        "mcp-adapter-workload", "Service account of adapters with useWorkloadIdentity."
    )
    kube_pod_addressing: PodAddressing = setting(
        "ip", "How the gateway reaches pods: ip (pod IP) or dns (<pod>.<service>.<ns>.svc)."
    )
    kube_cluster_domain: str = setting("cluster.local", "Cluster DNS domain for dns pod addressing.")
    kube_cpu_request: str = setting("100m", "CPU request of an adapter container.")
    kube_memory_request: str = setting("128Mi", "Memory request of an adapter container.")
    kube_cpu_limit: str = setting("1", "CPU limit of an adapter container.")
    kube_memory_limit: str = setting("512Mi", "Memory limit of an adapter container.")
    kube_lease_name: str = setting(
        "mcp-gateway-reconciler", "Lease (in kube_namespace) whose holder is the one gateway that applies and removes."
    )
    kube_lease_duration: float = setting(
        15.0, "Seconds a follower waits after the Lease's last renewal before it takes the lead."
    )
    kube_lease_renew_deadline: float = setting(
        10.0, "Seconds the leader may go without renewing the Lease before it stops acting."
    )
    kube_lease_retry_period: float = setting(2.0, "Seconds between the Lease renewals (leader) or tries (followers).")
    kube_leader_poll_interval: float = setting(
        1.0, "Seconds between the leader's reads of the store: how soon a write on another gateway is acted on."
    )
    kube_adapter_node_selector: str = setting(
        "", "nodeSelector of adapter pods: comma-separated key=value pairs (e.g. pool=adapters)."
    )
    kube_adapter_tolerations: str = setting(
        "",
        "Tolerations of adapter pods: comma-separated key=value:Effect or key:Effect (e.g. pool=adapters:NoSchedule).",
    )
    # --- kubernetes stdio ---
    kube_stdio_bridge_image: str = setting(
        "",
        "Image of the stdio bridge in stdio adapter pods: the gateway image, with busybox-static "
        "(default <kube_registry>/mcp-gateway:<gateway version>).",
    )

    # --- auth ----------------------------------------------------------------------------
    auth_dev_allow_remote: bool = setting(
        False, "Allow dev auth on a non-loopback address (anyone can claim any identity!)."
    )
    entra_tenant_id: str | None = setting(None, "Entra ID tenant id (auth=entra).")
    entra_client_id: str | None = setting(None, "Entra ID application (client) id of the gateway (auth=entra).")
    entra_authority: str = setting(
        "https://login.microsoftonline.com", "Entra ID authority host (sovereign clouds, tests)."
    )
    oidc_issuer: str | None = setting(None, "OIDC issuer URL (auth=oidc).")
    oidc_audience: str | None = setting(None, "Expected token audience (auth=oidc).")
    auth_scopes: tuple[str, ...] = setting(
        (), "Scopes advertised in protected-resource metadata; default api://<clientId>/.default."
    )
    workload_identity_roles: tuple[str, ...] = setting(
        (), "Roles, besides mcp.admin, allowed to create adapters with useWorkloadIdentity."
    )
    jwt_leeway: float = setting(60.0, "Clock skew tolerated on exp/nbf, in seconds.")
    jwks_min_refresh_interval: float = setting(
        30.0, "Shortest time between JWKS refreshes triggered by unknown key ids."
    )

    # --- upstream credentials ------------------------------------------------------------
    obo_client_secret: str | None = setting(
        None, "Client secret of the gateway's app registration for on-behalf-of (entra-obo adapters).", secret=True
    )
    obo_certificate_path: Path | None = setting(
        None, "PEM file with the private key and certificate of the gateway's app registration (entra-obo)."
    )
    obo_federated_token_file: Path | None = setting(
        None,
        "Workload-identity token file used as the client assertion for on-behalf-of (entra-obo); "
        "AKS workload identity sets it.",
        env="AZURE_FEDERATED_TOKEN_FILE",
    )
    obo_authority: str | None = setting(
        None, "Authority host MSAL uses for on-behalf-of; default MCPGW_ENTRA_AUTHORITY. Must be https."
    )
    upstream_token_refresh_margin: float = setting(
        300.0, "Seconds before expiry a cached upstream token (on-behalf-of, managed identity) is renewed."
    )
    upstream_token_cache_size: int = setting(
        10000, "Most cached on-behalf-of tokens (one per user and scope set); the oldest go first."
    )
    upstream_token_timeout: float = setting(
        10.0, "Seconds for one token request to Entra ID or the managed identity endpoint."
    )
    secrets_namespace: str | None = setting(
        None, "Namespace of the Kubernetes Secrets secret-type adapters read; default the gateway's own namespace."
    )

    # --- telemetry -----------------------------------------------------------------------
    metrics_enabled: bool = setting(True, "Serve Prometheus metrics at GET /metrics.")
    metrics_token: str | None = setting(
        None,
        "Bearer token GET /metrics requires (Authorization: Bearer <token>); unset → /metrics answers "
        "anyone who reaches the gateway. The Azure stacks set a random one.",
        secret=True,
    )
    access_log: AccessLog = setting(
        "errors",
        "One log line per proxied request: all, errors (status 400 and above, or the client left) or off. "
        "'all' costs about 10-20% of the proxy's throughput.",
    )
    applicationinsights_connection_string: str | None = setting(
        None,
        "Azure Monitor connection string; set → traces and metrics exported there.",
        env="APPLICATIONINSIGHTS_CONNECTION_STRING",
        secret=True,
    )
    otlp_endpoint: str | None = setting(
        None, "OTLP endpoint; set → traces and metrics exported there.", env="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    # --- virtual server streams ---
    server_stream_buffer_events: int = setting(
        256,
        "SSE events a 2025-era virtual server session keeps for resumption (GET + Last-Event-ID); oldest dropped "
        "first. Resumption needs the gateway that served the stream.",
    )
    server_stream_buffer_bytes: int = setting(
        1024 * 1024, "Bytes of SSE events a 2025-era virtual server session keeps for resumption; oldest dropped first."
    )
    server_stream_retry_ms: int = setting(
        1000, "The retry: field (milliseconds) of a virtual server's SSE answers: how long a client waits to resume."
    )
    server_listens_per_user: int = setting(
        8, "Open subscriptions/listen streams one user may hold on virtual servers, per gateway (0: no cap)."
    )

    def __post_init__(self) -> None:
        _check_settings(self)

    @property
    def embedded(self) -> bool:
        """True when every component is the single-machine one."""
        return self.store == "sqlite" and self.sessions == "memory" and self.runtime == "local"

    @property
    def listens_on_loopback(self) -> bool:
        """True when the listen address is a loopback address or localhost."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def origin(self) -> str:
        """The public origin: public_url, else http://host:port."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def env_name(f: dataclasses.Field[Any]) -> str:
    """The MCPGW_* environment variable of a setting."""
    return ENV_PREFIX + f.name.upper()


def flag_name(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a setting."""
    return "--" + f.name.replace("_", "-")


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The declared settings, in order."""
    return dataclasses.fields(Settings)


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Build settings from the environment and string overrides (CLI flags), validating each value."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}
    for f in setting_fields():
        raw: str | None = None
        source = ""
        if overrides and overrides.get(f.name) is not None:
            raw, source = overrides[f.name], flag_name(f)
        elif env_name(f) in environ:
            raw, source = environ[env_name(f)], env_name(f)
        elif f.metadata["env"] and f.metadata["env"] in environ:
            raw, source = environ[f.metadata["env"]], f.metadata["env"]
        if raw is None:
            continue
        try:
            values[f.name] = parse_value(hints[f.name], raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return Settings(**values)


def parse_value(tp: Any, raw: str) -> Any:
    """Convert one setting's text to its declared type; ValueError says what was expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if raw.strip() == "":
            return None
        return parse_value(inner[0], raw)
    if origin is Literal:
        # Case-insensitive, answered in the declared spelling (imagePullPolicy: ifnotpresent → IfNotPresent).
        value = raw.strip().lower()
        for arg in args:
            if arg.lower() == value:
                return arg
        raise ValueError(f"expected one of {', '.join(args)}, got {raw!r}")
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if tp is bool:
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if tp is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if tp is Path:
        return Path(raw).expanduser()
    return raw


def _fail(name: str, message: str) -> typing.NoReturn:
    f = next(f for f in setting_fields() if f.name == name)
    raise SettingsError(f"{env_name(f)} ({flag_name(f)}): {message}")


def _require(settings: Settings, names: Sequence[str], when: str) -> None:
    for name in names:
        if not getattr(settings, name):
            _fail(name, f"is required when {when}")


def _check_edge_limits(s: Settings) -> None:
    if s.max_header_bytes < 1024:
        _fail("max_header_bytes", f"must be at least 1024, got {s.max_header_bytes}")
    if s.max_header_fields < 1:
        _fail("max_header_fields", f"must be at least 1, got {s.max_header_fields}")
    for name in ("header_timeout", "body_timeout"):
        if getattr(s, name) <= 0:
            _fail(name, f"must be greater than 0, got {getattr(s, name)}")
    if s.max_connections < 0:
        _fail("max_connections", f"must be 0 (automatic) or more, got {s.max_connections}")
    if s.logs_follow_max_per_user < 0:
        _fail("logs_follow_max_per_user", f"must be 0 (no limit) or more, got {s.logs_follow_max_per_user}")
    if s.replica_drain_timeout < 0:
        _fail("replica_drain_timeout", f"must be 0 (no draining) or more, got {s.replica_drain_timeout:g}")


def _check_policy(s: Settings) -> None:
    from gateway.policy.audit import parse_audit_setting
    from gateway.policy.ratelimit import parse_rate

    if s.sse_keepalive_interval < 0:
        _fail("sse_keepalive_interval", f"must be 0 (off) or more, got {s.sse_keepalive_interval:g}")
    if s.rate_limit_timeout <= 0:
        _fail("rate_limit_timeout", f"must be greater than 0, got {s.rate_limit_timeout:g}")
    if s.audit_queue < 1:
        _fail("audit_queue", f"must be at least 1, got {s.audit_queue}")
    if s.audit_file_max_bytes < 1024:
        _fail("audit_file_max_bytes", f"must be at least 1024, got {s.audit_file_max_bytes}")
    if s.audit_file_backups < 0:
        _fail("audit_file_backups", f"must be 0 or more, got {s.audit_file_backups}")
    try:
        parse_rate(s.default_user_rate, "default rate")
    except ValueError as exc:
        _fail("default_user_rate", str(exc))
    if not s.audit.startswith("file:"):  # a FileSink would open the file here
        try:
            parse_audit_setting(s.audit, "the audit sink")
        except ValueError as exc:
            _fail("audit", str(exc))


def _check_settings(s: Settings) -> None:
    if not 0 < s.port < 65536:
        _fail("port", f"must be between 1 and 65535, got {s.port}")
    _check_edge_limits(s)
    for name in ("max_replicas", "max_body_bytes", "upstream_pool_size", "list_max_limit"):
        if getattr(s, name) < 1:
            _fail(name, f"must be at least 1, got {getattr(s, name)}")
    for name in (
        "reconcile_interval",
        "upstream_connect_timeout",
        "upstream_read_timeout",
        "session_ttl",
        "session_max_age",
        "local_ready_timeout",
        "cosmos_timeout",
        "kube_lease_duration",
        "kube_lease_renew_deadline",
        "kube_lease_retry_period",
        "kube_leader_poll_interval",
    ):
        if getattr(s, name) <= 0:
            _fail(name, f"must be greater than 0, got {getattr(s, name)}")
    _check_policy(s)
    if not s.kube_lease_duration > s.kube_lease_renew_deadline > s.kube_lease_retry_period:
        _fail(
            "kube_lease_renew_deadline",
            "must lie between kube_lease_retry_period and kube_lease_duration (defaults 2 < 10 < 15), got "
            f"{s.kube_lease_retry_period:g} / {s.kube_lease_renew_deadline:g} / {s.kube_lease_duration:g}",
        )
    if s.public_url is not None:
        parts = urlsplit(s.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            _fail("public_url", f"must be an http(s) origin like https://mcp.example.com, got {s.public_url!r}")
    if s.store == "cosmos":
        _require(s, ["cosmos_endpoint"], "store is cosmos")
    if s.auth == "entra":
        _require(s, ["entra_tenant_id", "entra_client_id"], "auth is entra")
    if s.auth == "oidc":
        _require(s, ["oidc_issuer", "oidc_audience"], "auth is oidc")
    if s.auth == "dev" and not s.listens_on_loopback and not s.auth_dev_allow_remote:
        _fail(
            "auth",
            f"dev auth trusts X-Dev-* headers and is refused on non-loopback address {s.host!r}; "
            "use entra or oidc, or set MCPGW_AUTH_DEV_ALLOW_REMOTE=true",
        )
    for name in ("session_max_per_user", "session_max_per_adapter"):
        if getattr(s, name) < 0:
            _fail(name, f"must be 0 (no cap) or more, got {getattr(s, name)}")
    if s.session_memory_max < 1:
        _fail("session_memory_max", f"must be at least 1, got {s.session_memory_max}")
    if s.sessions == "redis" and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        _fail("redis_url", "must start with redis://, rediss:// or unix://")
    _check_upstream(s)
    _check_sessions(s)
    _check_kubernetes(s)


IMAGE_PULL_POLICIES: tuple[str, ...] = typing.get_args(ImagePullPolicy)
"""Kubernetes' imagePullPolicy values (case-sensitive: the API server refuses any other spelling)."""


def _check_sessions(s: Settings) -> None:
    """Session lifetimes that contradict each other (issue 20: checked at start, not found in production)."""
    if s.session_cache_seconds < 0:
        _fail("session_cache_seconds", f"must be 0 (no cache) or more, got {s.session_cache_seconds:g}")
    if s.session_cache_seconds >= s.session_ttl:
        # A record trusted for longer than a session may stay idle keeps expired and revoked sessions
        # routing, and the router's cache pruning takes entries older than the TTL for expired ones.
        _fail(
            "session_cache_seconds",
            f"must be less than MCPGW_SESSION_TTL ({s.session_ttl:g} s), got {s.session_cache_seconds:g}",
        )
    if s.session_max_age < s.session_ttl:
        _fail(
            "session_max_age",
            f"must be at least MCPGW_SESSION_TTL ({s.session_ttl:g} s): the absolute lifetime cannot be shorter "
            f"than the idle one, got {s.session_max_age:g}",
        )
    if s.sessions == "redis" and s.redis_entra:
        parts = urlsplit(s.redis_url)
        if parts.username or parts.password:
            _fail(
                "redis_url",
                "must not carry a user or password when MCPGW_REDIS_ENTRA is on (the Entra ID token is the "
                "password; set MCPGW_REDIS_USERNAME for the user)",
            )


def _check_kubernetes(s: Settings) -> None:
    """Kubernetes settings that are enumerations or small languages: refused at start, not at the first apply."""
    if s.kube_image_pull_policy not in IMAGE_PULL_POLICIES:
        _fail(
            "kube_image_pull_policy",
            f"must be one of {', '.join(IMAGE_PULL_POLICIES)} (case-sensitive), got {s.kube_image_pull_policy!r}",
        )
    if s.runtime != "kubernetes":
        return
    from gateway.runtime._kube_manifests import node_selector, tolerations

    for name, parse in (("kube_adapter_node_selector", node_selector), ("kube_adapter_tolerations", tolerations)):
        try:
            parse(getattr(s, name))
        except ValueError as exc:
            _fail(name, str(exc).removeprefix(f"{name}: "))


def _check_upstream(s: Settings) -> None:
    for name in ("upstream_max_header_bytes", "upstream_max_header_fields"):
        if getattr(s, name) < 1:
            _fail(name, f"must be at least 1, got {getattr(s, name)}")
    for entry in s.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            _fail("trusted_proxies", f"{entry!r} is not an IP address or CIDR")
