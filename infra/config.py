"""Stack configuration: every key the program reads, declared once, and the typed view of it.

Each key is one field of ``GatewayConfig``, ``AzureConfig``, ``LocalConfig`` or ``StackConfig``,
declared with ``key(name, default, help, ...)`` the way ``gateway/settings.py`` declares settings
with ``setting(...)``: the field is the typed value, the declaration carries the key's name, its
default, its help text and how a raw value is checked. ``KEYS`` is read off those fields, the
loader fills them, and the tables in ``infra/README.md`` are generated from them
(``readme_tables()``; a test keeps README in step). Every value a key can get wrong is refused
with a message that names the key (2026-11-30, issue 20: the keys used to be written three times:
a key table, the dataclasses and the mapping between them).

Keys live in the project namespace, so ``pulumi config set gatewayReplicas 3`` sets
``mcp-gateway:gatewayReplicas``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pulumi

from infra.cidr import within

Platform = Literal["azure", "local"]
Scope = Literal["all", "azure", "local"]

# Settings that carry credentials; they only ever reach the gateway through its Kubernetes Secret.
SECRET_ENV = frozenset(
    {
        "MCPGW_SESSION_KEYS",
        "MCPGW_METRICS_TOKEN",
        "MCPGW_REDIS_URL",
        "MCPGW_COSMOS_KEY",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
    }
)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and how to fix it."""


Parse = Callable[[str, Any], Any]
"""Turns a key's raw value into the field's value: ``parse(key name, raw)``; raises ConfigError naming the key."""


@dataclass(frozen=True)
class Key:
    """One configuration key: name, default (per platform when it differs), meaning, and its checks."""

    name: str
    default: Any
    help: str
    scope: Scope = "all"
    secret: bool = False
    default_text: str | None = None
    """How README shows a computed default (markdown)."""
    choices: tuple[str, ...] = ()
    """The only values allowed, when the key is an enumeration."""
    why: str = ""
    """Why only ``choices`` (said in the error)."""
    parse: Parse | None = None

    def default_for(self, platform: Platform) -> Any:
        """The default on ``platform``."""
        if isinstance(self.default, dict) and set(self.default) == {"azure", "local"}:
            return self.default[platform]
        return self.default

    @property
    def documented_default(self) -> str:
        """The default as README writes it (markdown)."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, dict) and set(self.default) == {"azure", "local"}:
            return f"{_show(self.default['azure'])} (azure), {_show(self.default['local'])} (local)"
        if self.default == "":
            return "(empty)"
        return f"`{_show(self.default)}`"

    def value(self, raw: Any) -> Any:
        """``raw`` checked against ``choices`` and parsed; a ConfigError names this key."""
        if self.choices and raw not in self.choices:
            why = f" ({self.why})" if self.why else ""
            raise ConfigError(f"{self.name}: expected {_alternatives(self.choices)}{why}, got {raw!r}")
        return self.parse(self.name, raw) if self.parse is not None else raw


def key(
    name: str,
    default: Any,
    help: str,
    *,
    secret: bool = False,
    default_text: str | None = None,
    choices: tuple[str, ...] = (),
    why: str = "",
    parse: Parse | None = None,
) -> Any:
    """Declare the configuration key behind one field (its scope is the dataclass it sits in)."""
    declared = Key(name, default, help, secret=secret, default_text=default_text, choices=choices, why=why, parse=parse)
    return field(metadata={"key": declared})


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == [] or value == {}:
        return "[]" if value == [] else "{}"
    return str(value)


def _alternatives(choices: tuple[str, ...]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


# --- how raw values are checked (each error names the key) ---------------------------------

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|k|M|G)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,7}$")
_REDIS_SKU = re.compile(r"^(Balanced_B|MemoryOptimized_M|ComputeOptimized_X|FlashOptimized_A)[0-9]+$")
"""Azure Managed Redis SKUs (the Enterprise_* SKUs of pulumi_azure_native.redisenterprise are the older tier)."""


def _text(name: str, value: Any) -> str:
    return str(value)


def _int(name: str, value: Any) -> int:
    return int(value)


def _flag(name: str, value: Any) -> bool:
    return bool(value)


def _quantity(name: str, value: Any) -> str:
    if not _QUANTITY.match(str(value)):
        raise ConfigError(f"{name}: not a Kubernetes quantity: {value!r}")
    return str(value)


def _name_prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX.match(value):
        raise ConfigError(f"{name}: 2 to 8 lowercase letters or digits starting with a letter, got {value!r}")
    return value


def _network(name: str, value: Any) -> str:
    """A CIDR, kept as written."""
    try:
        ipaddress.ip_network(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not a CIDR ({exc})") from None
    return str(value)


def _address(name: str, value: Any) -> str:
    """An IP address, kept as written."""
    try:
        ipaddress.ip_address(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not an IP address ({exc})") from None
    return str(value)


def _cidrs(name: str, values: Any) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(str(value))))
        except ValueError as exc:
            raise ConfigError(f"{name}: {value!r} is not a CIDR ({exc})") from None
    return out


def _secret_names(name: str, values: Any) -> list[str]:
    """Kubernetes Secret names (DNS subdomains, at most 253 characters), each once."""
    if not isinstance(values, list):
        raise ConfigError(f"{name}: a list of Kubernetes Secret names, got {values!r}")
    out: list[str] = []
    for value in values:
        if not isinstance(value, str) or len(value) > 253 or not _SECRET_NAME.match(value):
            raise ConfigError(f"{name}: {value!r} is not a Kubernetes Secret name (lowercase DNS subdomain)")
        if value not in out:
            out.append(value)
    return out


def _zones(name: str, values: Any) -> list[str]:
    return [str(z) for z in values]


def _gateway_env(name: str, value: Any) -> dict[str, str]:
    extra_env = {str(k): str(val) for k, val in dict(value).items()}
    for env in extra_env:
        if not _ENV_NAME.match(env):
            raise ConfigError(f"{name}: {env!r} is not an environment variable name")
        if env in SECRET_ENV:
            raise ConfigError(f"{name}: {env} is a secret setting; it is managed by the program, not config")
    # The program computes from these (grace period, WAF body limit): they must be numbers.
    for env in ("MCPGW_DRAIN_DELAY", "MCPGW_DRAIN_TIMEOUT", "MCPGW_MAX_BODY_BYTES"):
        if env in extra_env:
            try:
                number = float(extra_env[env])
            except ValueError:
                number = -1.0
            if number < 0 or (env == "MCPGW_MAX_BODY_BYTES" and not number.is_integer()):
                raise ConfigError(f"{name}: {env} must be a non-negative number, got {extra_env[env]!r}")
    return extra_env


def _redis_sku(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _REDIS_SKU.match(value):
        raise ConfigError(
            f"{name}: an Azure Managed Redis SKU such as Balanced_B0, MemoryOptimized_M10, ComputeOptimized_X3 "
            f"or FlashOptimized_A250, got {value!r}"
        )
    return value


def _registry(name: str, value: Any) -> str:
    return str(value).rstrip("/")


AKS_TIERS = ("Free", "Standard", "Premium")
PRINCIPAL_TYPES = ("User", "ServicePrincipal", "Group")
KUBELOGIN_MODES = ("azurecli", "spn", "workloadidentity", "msi", "azd")
SSE_KEEPALIVE_SECONDS = 15
"""The gateway's keep-alive interval on idle SSE streams it proxies; every idle timeout on the path
(App Gateway, its public IP, the internal load balancer) must stay well above it."""


# --- the keys, one field each ---------------------------------------------------------------


@dataclass(frozen=True)
class GatewayConfig:
    """What every platform needs to run the gateway on Kubernetes."""

    image_tag: str = key(
        "gatewayImageTag",
        "0.1.0",
        "Tag of the gateway image `<registry>/mcp-gateway` that the build script pushed.",
        parse=_text,
    )
    image: str = key(
        "gatewayImage",
        "",
        "Full gateway image reference; overrides registry and tag.",
        default_text="`<registry>/mcp-gateway:<gatewayImageTag>`",
    )
    replicas: int = key(
        "gatewayReplicas",
        {"azure": 2, "local": 1},
        "Gateway pods. At least 2 on Azure; exactly 1 on local (the SQLite store is not shared between pods).",
        parse=_int,
    )
    namespace: str = key(
        "gatewayNamespace", "mcp-gateway", "Namespace of the gateway (and of in-cluster Redis on local)."
    )
    adapter_namespace: str = key(
        "adapterNamespace", "adapter", "Namespace of the adapter StatefulSets (MCPGW_KUBE_NAMESPACE)."
    )
    cpu_request: str = key("gatewayCpuRequest", "250m", "CPU request of a gateway pod.", parse=_quantity)
    memory_request: str = key("gatewayMemoryRequest", "256Mi", "Memory request of a gateway pod.", parse=_quantity)
    cpu_limit: str = key("gatewayCpuLimit", "1", "CPU limit of a gateway pod.", parse=_quantity)
    memory_limit: str = key("gatewayMemoryLimit", "512Mi", "Memory limit of a gateway pod.", parse=_quantity)
    await_ready: bool = key(
        "gatewayAwaitReady",
        False,
        "Make `pulumi up` wait until the gateway pods are ready. Leave false for the "
        "first `up` (the images are pushed after the registry exists); turn on once images are published.",
        parse=_flag,
    )
    log_level: str = key(
        "logLevel",
        "info",
        "Gateway log level (MCPGW_LOG_LEVEL): debug, info, warning or error.",
        choices=("debug", "info", "warning", "error"),
    )
    max_adapter_replicas: int = key(
        "maxAdapterReplicas", 10, "Largest replicaCount an adapter may ask for (MCPGW_MAX_REPLICAS).", parse=_int
    )
    adapter_egress_cidrs: list[str] = key(
        "adapterEgressCidrs",
        ["0.0.0.0/0"],
        "Where adapter pods may connect besides cluster DNS (a list of CIDRs). Instance metadata, the Azure "
        "host (168.63.129.16) and link-local addresses are always excluded; so are private ranges (the "
        "cluster, the VNet, the API server's in-cluster address) unless listed here themselves.",
        default_text='`["0.0.0.0/0"]`',
        parse=_cidrs,
    )
    upstream_secret_names: list[str] = key(
        "upstreamSecretNames",
        [],
        "Kubernetes Secrets (in the gateway's namespace, key `value`) that adapters may name in "
        "`upstreamAuth` type `secret`. The gateway gets `get` on exactly these names, nothing else on secrets.",
        parse=_secret_names,
    )
    extra_env: Mapping[str, str] = key(
        "gatewayEnv",
        {},
        "Extra plain environment variables for the gateway (a map), e.g. MCPGW_SESSION_TTL. "
        "Secret settings are refused here.",
        parse=_gateway_env,
    )
    public_url: str = key(
        "publicUrl",
        "",
        "Public origin of the gateway (MCPGW_PUBLIC_URL).",
        default_text="`https://<hostName or App Gateway FQDN>` (azure), `http://localhost:8000` (local)",
    )


@dataclass(frozen=True)
class AzureConfig:
    """Azure resources of the dev and prod stacks."""

    location: str = key("location", "westus3", "Azure region of every resource.")
    resource_group_name: str = key(
        "resourceGroupName", "", "Resource group to create.", default_text="`<namePrefix>-<stack>`"
    )
    entra_client_id: str = key(
        "entraClientId",
        None,
        "**Required.** Application (client) id of the gateway's Entra ID app registration.",
        default_text="(required)",
    )
    entra_tenant_id: str = key(
        "entraTenantId",
        "",
        "Entra ID tenant of the app registration.",
        default_text="the tenant you are logged in to",
    )
    vnet_address_space: str = key(
        "vnetAddressSpace", "10.10.0.0/16", "Address space of the virtual network.", parse=_network
    )
    aks_subnet_prefix: str = key(
        "aksSubnetPrefix", "10.10.0.0/22", "Subnet of the AKS nodes (pods use an overlay CIDR).", parse=_network
    )
    app_gateway_subnet_prefix: str = key(
        "appGatewaySubnetPrefix", "10.10.4.0/24", "Subnet of the Application Gateway.", parse=_network
    )
    private_endpoint_subnet_prefix: str = key(
        "privateEndpointSubnetPrefix", "10.10.5.0/24", "Subnet of private endpoints.", parse=_network
    )
    gateway_private_ip: str = key(
        "gatewayPrivateIp",
        "10.10.3.250",
        "Private IP of the gateway's internal load balancer (in the AKS subnet); the App Gateway's backend.",
        parse=_address,
    )
    aks_kubernetes_version: str = key("aksKubernetesVersion", "", "Kubernetes version.", default_text="the AKS default")
    aks_vm_size: str = key("aksVmSize", "Standard_D4ds_v5", "VM size of the system node pool.")
    aks_min_nodes: int = key("aksMinNodes", 2, "Smallest node count of the autoscaling system pool.", parse=_int)
    aks_max_nodes: int = key("aksMaxNodes", 5, "Largest node count of the autoscaling system pool.", parse=_int)
    aks_adapter_vm_size: str = key(
        "aksAdapterVmSize", "Standard_D4ds_v5", "VM size of the adapter node pool (tainted: adapters only)."
    )
    aks_adapter_min_nodes: int = key(
        "aksAdapterMinNodes", 1, "Smallest node count of the autoscaling adapter pool.", parse=_int
    )
    aks_adapter_max_nodes: int = key(
        "aksAdapterMaxNodes", 5, "Largest node count of the autoscaling adapter pool.", parse=_int
    )
    aks_availability_zones: list[str] = key(
        "aksAvailabilityZones", [], 'Availability zones of the node pool, e.g. ["1","2","3"].', parse=_zones
    )
    aks_tier: str = key(
        "aksTier",
        "Free",
        "AKS pricing tier: Free, Standard (uptime SLA) or Premium (which comes with the AKSLongTermSupport plan).",
        choices=AKS_TIERS,
    )
    aks_network_policy: str = key(
        "aksNetworkPolicy",
        "cilium",
        "NetworkPolicy engine: cilium (Azure CNI powered by Cilium), calico or azure.",
        choices=("cilium", "calico", "azure"),
        why="NetworkPolicies must be enforced",
    )
    aks_pod_cidr: str = key("aksPodCidr", "192.168.0.0/16", "Overlay CIDR of pod IPs.", parse=_network)
    aks_service_cidr: str = key("aksServiceCidr", "172.16.0.0/16", "CIDR of Service IPs.", parse=_network)
    aks_dns_service_ip: str = key(
        "aksDnsServiceIp", "172.16.0.10", "Cluster DNS IP, inside aksServiceCidr.", parse=_address
    )
    aks_authorized_ip_ranges: list[str] = key(
        "aksAuthorizedIpRanges",
        [],
        "CIDRs allowed to reach the Kubernetes API server; empty allows all. Required when a private endpoint "
        "is on (cosmosPrivateEndpoint, redisPrivateEndpoint).",
        parse=_cidrs,
    )
    deployer_principal_type: str = key(
        "deployerPrincipalType",
        "User",
        "What runs `pulumi up`: User, ServicePrincipal (CI) or Group; it gets AKS RBAC Cluster Admin.",
        choices=PRINCIPAL_TYPES,
        why="ServicePrincipal for CI",
    )
    kube_login: str = key(
        "kubeLogin",
        "azurecli",
        "How the Kubernetes provider signs in to AKS (kubelogin --login): azurecli, spn (AZURE_CLIENT_ID and "
        "AZURE_CLIENT_SECRET in the environment), workloadidentity (AZURE_FEDERATED_TOKEN_FILE, e.g. GitHub "
        "OIDC), msi or azd.",
        choices=KUBELOGIN_MODES,
    )
    acr_sku: str = key(
        "acrSku",
        "Standard",
        "Container registry SKU: Basic, Standard or Premium.",
        choices=("Basic", "Standard", "Premium"),
    )
    cosmos_serverless: bool = key(
        "cosmosServerless",
        True,
        "Serverless Cosmos DB account (else autoscale throughput on the container).",
        parse=_flag,
    )
    cosmos_autoscale_max_throughput: int = key(
        "cosmosAutoscaleMaxThroughput",
        1000,
        "Autoscale max RU/s of the adapters container when not serverless.",
        parse=_int,
    )
    cosmos_private_endpoint: bool = key(
        "cosmosPrivateEndpoint",
        False,
        "Reach Cosmos DB only through a private endpoint (public access off).",
        parse=_flag,
    )
    cosmos_zone_redundant: bool = key("cosmosZoneRedundant", False, "Zone-redundant Cosmos DB region.", parse=_flag)
    cosmos_database: str = key("cosmosDatabase", "mcpgateway", "Cosmos DB database (MCPGW_COSMOS_DATABASE).")
    cosmos_container: str = key(
        "cosmosContainer", "adapters", "Cosmos DB container, partition key /id (MCPGW_COSMOS_CONTAINER)."
    )
    redis_sku: str = key("redisSku", "Balanced_B0", "Azure Managed Redis SKU.", parse=_redis_sku)
    redis_high_availability: bool = key("redisHighAvailability", True, "Replicate Azure Managed Redis.", parse=_flag)
    redis_private_endpoint: bool = key(
        "redisPrivateEndpoint", False, "Reach Azure Managed Redis only through a private endpoint.", parse=_flag
    )
    gateway_max_replicas: int = key(
        "gatewayMaxReplicas",
        6,
        "Largest gateway pod count the HorizontalPodAutoscaler may reach (it keeps at least gatewayReplicas).",
        parse=_int,
    )
    log_retention_days: int = key("logRetentionDays", 30, "Log Analytics retention in days.", parse=_int)
    app_gateway_min_capacity: int = key(
        "appGatewayMinCapacity", 1, "Smallest App Gateway instance count (autoscale).", parse=_int
    )
    app_gateway_max_capacity: int = key(
        "appGatewayMaxCapacity", 3, "Largest App Gateway instance count (autoscale).", parse=_int
    )
    app_gateway_zones: list[str] = key(
        "appGatewayZones", [], "Availability zones of the App Gateway and its public IP.", parse=_zones
    )
    app_gateway_waf: bool = key(
        "appGatewayWaf", False, "WAF_v2 SKU with a WAF policy (Microsoft Default Rule Set 2.1).", parse=_flag
    )
    app_gateway_waf_mode: str = key(
        "appGatewayWafMode", "Prevention", "WAF mode: Detection or Prevention.", choices=("Detection", "Prevention")
    )
    backend_request_timeout_seconds: int = key(
        "backendRequestTimeoutSeconds", 3600, "App Gateway backend request timeout; long, for SSE streams.", parse=_int
    )
    dns_label: str = key(
        "dnsLabel",
        "",
        "DNS label of the public IP: `<label>.<location>.cloudapp.azure.com`.",
        default_text="`<namePrefix>-<stack>-<random suffix>`",
    )
    host_name: str = key(
        "hostName", "", "Custom host name served by the HTTPS listener (point its DNS at the public IP)."
    )
    tls_certificate: pulumi.Output[str] | None = key(
        "tlsCertificate", "", "Base64 PFX of the HTTPS certificate (`pulumi config set --secret`).", secret=True
    )
    tls_certificate_password: pulumi.Output[str] | None = key(
        "tlsCertificatePassword", "", "Password of tlsCertificate (`pulumi config set --secret`).", secret=True
    )
    tls_key_vault_secret_id: str = key(
        "tlsKeyVaultSecretId", "", "Key Vault secret id of the HTTPS certificate (instead of tlsCertificate)."
    )
    tls_key_vault_id: str = key(
        "tlsKeyVaultId",
        "",
        "Resource id of that Key Vault (RBAC mode); the App Gateway identity gets Key Vault Secrets User on it.",
    )


@dataclass(frozen=True)
class LocalConfig:
    """The local stack: an existing cluster from the kubeconfig."""

    kube_context: str = key("kubeContext", "", "kubeconfig context to deploy to.", default_text="the current context")
    registry: str = key(
        "localRegistry",
        "localhost:5001",
        "Registry the build script pushes to and the cluster pulls from.",
        parse=_registry,
    )
    redis_image: str = key("localRedisImage", "redis:7.4-alpine", "Image of the in-cluster Redis.")
    storage: str = key(
        "localStorage",
        "pvc",
        "Volume of the gateway's SQLite data dir: pvc (survives restarts) or emptyDir.",
        choices=("pvc", "emptyDir"),
    )
    storage_size: str = key("localStorageSize", "1Gi", "Size of that PersistentVolumeClaim.")


@dataclass(frozen=True)
class StackConfig:
    """The whole stack configuration, validated.

    ``gateway`` comes before the key fields: ``key()`` declares a field without a dataclass default,
    but a type checker takes any ``= key(...)`` for one, and a field without a default cannot follow
    it (mypy ``misc``, 2026-12-01). Build it with keywords.
    """

    stack: str
    gateway: GatewayConfig
    platform: Platform = key(
        "platform",
        "azure",
        "`azure` (AKS and Azure services) or `local` (the cluster of your kubeconfig).",
        choices=("azure", "local"),
    )
    name_prefix: str = key(
        "namePrefix",
        "mcpgw",
        "Prefix of resource names: 2 to 8 lowercase letters or digits, starting with a letter.",
        parse=_name_prefix,
    )
    azure: AzureConfig | None = None
    local: LocalConfig | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """Every key's value as read (after defaults), by key name."""


def _declared(cls: type, scope: Scope) -> tuple[tuple[str, Key], ...]:
    """(field name, key) of every field of ``cls`` that is a configuration key."""
    return tuple(
        (f.name, dataclasses.replace(f.metadata["key"], scope=scope))
        for f in dataclasses.fields(cls)
        if "key" in f.metadata
    )


_SECTIONS: dict[type, tuple[tuple[str, Key], ...]] = {
    StackConfig: _declared(StackConfig, "all"),
    GatewayConfig: _declared(GatewayConfig, "all"),
    AzureConfig: _declared(AzureConfig, "azure"),
    LocalConfig: _declared(LocalConfig, "local"),
}

KEYS: tuple[Key, ...] = tuple(k for section in _SECTIONS.values() for _, k in section)
"""Every key, in README order: every stack, then Azure, then local."""

KEYS_BY_NAME = {k.name: k for k in KEYS}

_Section = TypeVar("_Section")


def _section(cls: type[_Section], values: Mapping[str, Any]) -> _Section:
    """``cls`` with each key field checked and parsed from ``values`` (keyed by key name)."""
    fields = {name: k.value(values[k.name]) for name, k in _SECTIONS[cls]}
    return cls(**fields)


def readme_table(scope: Scope) -> str:
    """The markdown table of ``scope``'s keys that infra/README.md embeds."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{k.name}` | {k.documented_default} | {k.help} |" for k in KEYS if k.scope == scope]
    return "\n".join(rows) + "\n"


def _read(config: pulumi.Config, key: Key, platform: Platform) -> Any:
    default = key.default_for(platform)
    if key.secret:
        return config.get_secret(key.name)
    if isinstance(default, bool):
        value: Any = config.get_bool(key.name)
    elif isinstance(default, int):
        value = config.get_int(key.name)
    elif isinstance(default, list | dict):
        value = config.get_object(key.name)
        if value is not None and not isinstance(value, type(default)):
            raise ConfigError(f"{key.name}: expected a {'list' if isinstance(default, list) else 'map'}")
    else:
        value = config.get(key.name)
    return default if value is None else value


MAX_STACK_NAME = 16
_STACK = re.compile(rf"^[a-z](?:[a-z0-9-]{{0,{MAX_STACK_NAME - 2}}}[a-z0-9])?$")


def load_config(config: pulumi.Config | None = None, stack: str | None = None) -> StackConfig:
    """Read and check every key of the current stack (``pulumi.Config()`` of the project)."""
    config = config or pulumi.Config()
    stack = stack or pulumi.get_stack()
    platform_key = KEYS_BY_NAME["platform"]
    platform: Platform = platform_key.value(_read(config, platform_key, "azure") or "azure")
    values = {k.name: _read(config, k, platform) for k in KEYS if k.scope in ("all", platform)}
    if platform == "azure" and not values["entraClientId"]:
        raise ConfigError(
            "entraClientId is required on Azure stacks: the application (client) id of the gateway's app "
            f"registration; set it with `pulumi config set entraClientId <id> -s {stack}` (docs/deploy-azure.md)"
        )
    return _build(stack, platform, values)


def _build(stack: str, platform: Platform, v: Mapping[str, Any]) -> StackConfig:
    prefix = KEYS_BY_NAME["namePrefix"].value(v["namePrefix"])
    gateway = _section(GatewayConfig, v)
    if platform == "azure" and gateway.replicas < 2:
        raise ConfigError(
            f"gatewayReplicas: at least 2 on Azure (one per zone/node for availability), got {gateway.replicas}"
        )
    if platform == "local" and gateway.replicas != 1:
        raise ConfigError(
            f"gatewayReplicas: exactly 1 on the local stack, whose SQLite store is not shared between pods; "
            f"got {gateway.replicas}"
        )
    image = gateway.image or f"<registry>/mcp-gateway:{gateway.image_tag}"
    if "@sha256:" not in image and (image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]):
        raise ConfigError(
            f"gatewayImage/gatewayImageTag: {image!r} is a moving tag; give a release tag or a digest "
            "(every pod must run the same image, docs/deploy-azure.md)"
        )
    if gateway.namespace == gateway.adapter_namespace:
        raise ConfigError("gatewayNamespace and adapterNamespace must differ (adapters run untrusted images)")
    if platform == "local":
        local = _section(LocalConfig, v)
        return StackConfig(stack=stack, gateway=gateway, platform=platform, name_prefix=prefix, local=local, raw=v)
    return StackConfig(
        stack=stack, gateway=gateway, platform=platform, name_prefix=prefix, azure=_azure(stack, prefix, v), raw=v
    )


def check_stack_name(stack: str) -> None:
    """Azure stacks put the stack name into globally unique resource names (registry, Cosmos DB, Redis,
    DNS label): keep it to what every one of them accepts once prefix and suffix are added."""
    if not _STACK.match(stack) or "--" in stack:
        raise ConfigError(
            f"stack name {stack!r}: on Azure it becomes part of globally unique resource names, so use 1 to "
            f"{MAX_STACK_NAME} lowercase letters, digits or single hyphens, starting with a letter and not "
            "ending with a hyphen (e.g. dev, prod, staging-eu)"
        )


def _azure(stack: str, prefix: str, v: Mapping[str, Any]) -> AzureConfig:
    """The Azure section, and the checks that span several of its keys."""
    check_stack_name(stack)
    az = _section(AzureConfig, v)
    if not az.resource_group_name:
        az = dataclasses.replace(az, resource_group_name=f"{prefix}-{stack}")
    net = ipaddress.ip_network(az.vnet_address_space)
    subnets = {
        "aksSubnetPrefix": ipaddress.ip_network(az.aks_subnet_prefix),
        "appGatewaySubnetPrefix": ipaddress.ip_network(az.app_gateway_subnet_prefix),
        "privateEndpointSubnetPrefix": ipaddress.ip_network(az.private_endpoint_subnet_prefix),
    }
    for name, subnet in subnets.items():
        if not within(subnet, net):
            raise ConfigError(f"{name}: {subnet} is not inside vnetAddressSpace {net}")
    names = list(subnets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if subnets[a].overlaps(subnets[b]):
                raise ConfigError(f"{a} and {b} overlap")
    if ipaddress.ip_address(az.gateway_private_ip) not in subnets["aksSubnetPrefix"]:
        raise ConfigError(f"gatewayPrivateIp: {az.gateway_private_ip} is not inside aksSubnetPrefix")
    for name, cidr in (("aksPodCidr", az.aks_pod_cidr), ("aksServiceCidr", az.aks_service_cidr)):
        if ipaddress.ip_network(cidr).overlaps(net):
            raise ConfigError(f"{name}: {cidr} overlaps vnetAddressSpace {net}")
    if ipaddress.ip_address(az.aks_dns_service_ip) not in ipaddress.ip_network(az.aks_service_cidr):
        raise ConfigError("aksDnsServiceIp must be inside aksServiceCidr")
    if not 1 <= az.aks_min_nodes <= az.aks_max_nodes:
        raise ConfigError("aksMinNodes must be at least 1 and at most aksMaxNodes")
    if not 0 <= az.aks_adapter_min_nodes <= az.aks_adapter_max_nodes or az.aks_adapter_max_nodes < 1:
        raise ConfigError("aksAdapterMinNodes must be at least 0 and at most aksAdapterMaxNodes (at least 1)")
    if (az.cosmos_private_endpoint or az.redis_private_endpoint) and not az.aks_authorized_ip_ranges:
        raise ConfigError(
            "aksAuthorizedIpRanges: required when Cosmos DB or Redis sit behind a private endpoint, or the "
            "Kubernetes API server (which holds the keys to both) stays open to the internet; set it with "
            f"`pulumi config set --path 'aksAuthorizedIpRanges[0]' <your CIDR> -s {stack}`"
        )
    if az.gateway_max_replicas < int(v["gatewayReplicas"]):
        raise ConfigError("gatewayMaxReplicas must be at least gatewayReplicas (the autoscaler's floor)")
    if not 1 <= az.app_gateway_min_capacity <= az.app_gateway_max_capacity:
        raise ConfigError("appGatewayMinCapacity must be at least 1 and at most appGatewayMaxCapacity")
    if not 4 * SSE_KEEPALIVE_SECONDS <= az.backend_request_timeout_seconds <= 86400:
        raise ConfigError(
            f"backendRequestTimeoutSeconds must be between {4 * SSE_KEEPALIVE_SECONDS} (well above the gateway's "
            f"{SSE_KEEPALIVE_SECONDS} s SSE keep-alive) and 86400"
        )
    has_pfx = az.tls_certificate is not None
    has_kv = bool(az.tls_key_vault_secret_id)
    if has_pfx == has_kv:
        raise ConfigError(
            "the HTTPS listener needs exactly one certificate source: tlsCertificate (+ tlsCertificatePassword), "
            f"set with `pulumi config set --secret tlsCertificate ... -s {stack}`, or tlsKeyVaultSecretId "
            "(+ tlsKeyVaultId); see docs/deploy-azure.md"
        )
    if has_kv and not az.tls_key_vault_id:
        raise ConfigError("tlsKeyVaultId is required with tlsKeyVaultSecretId (the App Gateway needs read access)")
    return az
