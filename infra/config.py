"""Stack configuration: every key the program reads, its default, and the typed view of it.

``KEYS`` is the one list of configuration keys; ``infra/README.md`` documents each of them with the
same default (a test keeps the two in step). Keys live in the project namespace, so
``pulumi config set gatewayReplicas 3`` sets ``mcp-gateway:gatewayReplicas``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

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


@dataclass(frozen=True)
class Key:
    """One configuration key: name, default (per platform when it differs), meaning."""

    name: str
    default: Any
    help: str
    scope: Scope = "all"
    secret: bool = False
    default_text: str | None = None  # how README shows a computed default

    def default_for(self, platform: Platform) -> Any:
        """The default on ``platform``."""
        if isinstance(self.default, dict) and set(self.default) == {"azure", "local"}:
            return self.default[platform]
        return self.default

    @property
    def documented_default(self) -> str:
        """The default as README writes it."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, dict) and set(self.default) == {"azure", "local"}:
            return f"{_show(self.default['azure'])} (azure), {_show(self.default['local'])} (local)"
        return _show(self.default)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return "(empty)"
    if value == [] or value == {}:
        return "[]" if value == [] else "{}"
    return str(value)


KEYS: tuple[Key, ...] = (
    # --- every stack ---------------------------------------------------------------------
    Key("platform", "azure", "`azure` (AKS and Azure services) or `local` (the cluster of your kubeconfig)."),
    Key("namePrefix", "mcpgw", "Prefix of resource names: 2 to 8 lowercase letters or digits, starting with a letter."),
    Key("gatewayImageTag", "0.1.0", "Tag of the gateway image `<registry>/mcp-gateway` that the build script pushed."),
    Key(
        "gatewayImage",
        "",
        "Full gateway image reference; overrides registry and tag.",
        default_text="`<registry>/mcp-gateway:<gatewayImageTag>`",
    ),
    Key(
        "gatewayReplicas",
        {"azure": 2, "local": 1},
        "Gateway pods. At least 2 on Azure; exactly 1 on local (the SQLite store is not shared between pods).",
    ),
    Key("gatewayNamespace", "mcp-gateway", "Namespace of the gateway (and of in-cluster Redis on local)."),
    Key("adapterNamespace", "adapter", "Namespace of the adapter StatefulSets (MCPGW_KUBE_NAMESPACE)."),
    Key("gatewayCpuRequest", "250m", "CPU request of a gateway pod."),
    Key("gatewayMemoryRequest", "256Mi", "Memory request of a gateway pod."),
    Key("gatewayCpuLimit", "1", "CPU limit of a gateway pod."),
    Key("gatewayMemoryLimit", "512Mi", "Memory limit of a gateway pod."),
    Key(
        "gatewayAwaitReady",
        False,
        "Make `pulumi up` wait until the gateway pods are ready. Leave false for the "
        "first `up` (the images are pushed after the registry exists); turn on once images are published.",
    ),
    Key("logLevel", "info", "Gateway log level (MCPGW_LOG_LEVEL): debug, info, warning or error."),
    Key("maxAdapterReplicas", 10, "Largest replicaCount an adapter may ask for (MCPGW_MAX_REPLICAS)."),
    Key(
        "adapterEgressCidrs",
        ["0.0.0.0/0"],
        "Where adapter pods may connect besides cluster DNS (a list of CIDRs). Instance metadata, the Azure "
        "host (168.63.129.16) and link-local addresses are always excluded; so are private ranges (the "
        "cluster, the VNet, the API server's in-cluster address) unless listed here themselves.",
        default_text='["0.0.0.0/0"]',
    ),
    Key(
        "upstreamSecretNames",
        [],
        "Kubernetes Secrets (in the gateway's namespace, key `value`) that adapters may name in "
        "`upstreamAuth` type `secret`. The gateway gets `get` on exactly these names, nothing else on secrets.",
        default_text="[]",
    ),
    Key(
        "gatewayEnv",
        {},
        "Extra plain environment variables for the gateway (a map), e.g. MCPGW_SESSION_TTL. "
        "Secret settings are refused here.",
    ),
    Key(
        "publicUrl",
        "",
        "Public origin of the gateway (MCPGW_PUBLIC_URL).",
        default_text="`https://<hostName or App Gateway FQDN>` (azure), `http://localhost:8000` (local)",
    ),
    # --- azure ---------------------------------------------------------------------------
    Key("location", "westus3", "Azure region of every resource.", "azure"),
    Key("resourceGroupName", "", "Resource group to create.", "azure", default_text="`<namePrefix>-<stack>`"),
    Key(
        "entraClientId",
        None,
        "**Required.** Application (client) id of the gateway's Entra ID app registration.",
        "azure",
        default_text="(required)",
    ),
    Key(
        "entraTenantId",
        "",
        "Entra ID tenant of the app registration.",
        "azure",
        default_text="the tenant you are logged in to",
    ),
    Key("vnetAddressSpace", "10.10.0.0/16", "Address space of the virtual network.", "azure"),
    Key("aksSubnetPrefix", "10.10.0.0/22", "Subnet of the AKS nodes (pods use an overlay CIDR).", "azure"),
    Key("appGatewaySubnetPrefix", "10.10.4.0/24", "Subnet of the Application Gateway.", "azure"),
    Key("privateEndpointSubnetPrefix", "10.10.5.0/24", "Subnet of private endpoints.", "azure"),
    Key(
        "gatewayPrivateIp",
        "10.10.3.250",
        "Private IP of the gateway's internal load balancer (in the AKS subnet); the App Gateway's backend.",
        "azure",
    ),
    Key("aksKubernetesVersion", "", "Kubernetes version.", "azure", default_text="the AKS default"),
    Key("aksVmSize", "Standard_D4ds_v5", "VM size of the system node pool.", "azure"),
    Key("aksMinNodes", 2, "Smallest node count of the autoscaling system pool.", "azure"),
    Key("aksMaxNodes", 5, "Largest node count of the autoscaling system pool.", "azure"),
    Key("aksAdapterVmSize", "Standard_D4ds_v5", "VM size of the adapter node pool (tainted: adapters only).", "azure"),
    Key("aksAdapterMinNodes", 1, "Smallest node count of the autoscaling adapter pool.", "azure"),
    Key("aksAdapterMaxNodes", 5, "Largest node count of the autoscaling adapter pool.", "azure"),
    Key("aksAvailabilityZones", [], 'Availability zones of the node pool, e.g. ["1","2","3"].', "azure"),
    Key(
        "aksTier",
        "Free",
        "AKS pricing tier: Free, Standard (uptime SLA) or Premium (which comes with the AKSLongTermSupport plan).",
        "azure",
    ),
    Key(
        "aksNetworkPolicy",
        "cilium",
        "NetworkPolicy engine: cilium (Azure CNI powered by Cilium), calico or azure.",
        "azure",
    ),
    Key("aksPodCidr", "192.168.0.0/16", "Overlay CIDR of pod IPs.", "azure"),
    Key("aksServiceCidr", "172.16.0.0/16", "CIDR of Service IPs.", "azure"),
    Key("aksDnsServiceIp", "172.16.0.10", "Cluster DNS IP, inside aksServiceCidr.", "azure"),
    Key(
        "aksAuthorizedIpRanges",
        [],
        "CIDRs allowed to reach the Kubernetes API server; empty allows all. Required when a private endpoint "
        "is on (cosmosPrivateEndpoint, redisPrivateEndpoint).",
        "azure",
    ),
    Key(
        "deployerPrincipalType",
        "User",
        "What runs `pulumi up`: User, ServicePrincipal (CI) or Group; it gets AKS RBAC Cluster Admin.",
        "azure",
    ),
    Key(
        "kubeLogin",
        "azurecli",
        "How the Kubernetes provider signs in to AKS (kubelogin --login): azurecli, spn (AZURE_CLIENT_ID and "
        "AZURE_CLIENT_SECRET in the environment), workloadidentity (AZURE_FEDERATED_TOKEN_FILE, e.g. GitHub "
        "OIDC), msi or azd.",
        "azure",
    ),
    Key("acrSku", "Standard", "Container registry SKU: Basic, Standard or Premium.", "azure"),
    Key(
        "cosmosServerless", True, "Serverless Cosmos DB account (else autoscale throughput on the container).", "azure"
    ),
    Key(
        "cosmosAutoscaleMaxThroughput",
        1000,
        "Autoscale max RU/s of the adapters container when not serverless.",
        "azure",
    ),
    Key(
        "cosmosPrivateEndpoint", False, "Reach Cosmos DB only through a private endpoint (public access off).", "azure"
    ),
    Key("cosmosZoneRedundant", False, "Zone-redundant Cosmos DB region.", "azure"),
    Key("cosmosDatabase", "mcpgateway", "Cosmos DB database (MCPGW_COSMOS_DATABASE).", "azure"),
    Key("cosmosContainer", "adapters", "Cosmos DB container, partition key /id (MCPGW_COSMOS_CONTAINER).", "azure"),
    Key("redisSku", "Balanced_B0", "Azure Managed Redis SKU.", "azure"),
    Key("redisHighAvailability", True, "Replicate Azure Managed Redis.", "azure"),
    Key("redisPrivateEndpoint", False, "Reach Azure Managed Redis only through a private endpoint.", "azure"),
    Key(
        "gatewayMaxReplicas",
        6,
        "Largest gateway pod count the HorizontalPodAutoscaler may reach (it keeps at least gatewayReplicas).",
        "azure",
    ),
    Key("logRetentionDays", 30, "Log Analytics retention in days.", "azure"),
    Key("appGatewayMinCapacity", 1, "Smallest App Gateway instance count (autoscale).", "azure"),
    Key("appGatewayMaxCapacity", 3, "Largest App Gateway instance count (autoscale).", "azure"),
    Key("appGatewayZones", [], "Availability zones of the App Gateway and its public IP.", "azure"),
    Key("appGatewayWaf", False, "WAF_v2 SKU with a WAF policy (Microsoft Default Rule Set 2.1).", "azure"),
    Key("appGatewayWafMode", "Prevention", "WAF mode: Detection or Prevention.", "azure"),
    Key("backendRequestTimeoutSeconds", 3600, "App Gateway backend request timeout; long, for SSE streams.", "azure"),
    Key(
        "dnsLabel",
        "",
        "DNS label of the public IP: `<label>.<location>.cloudapp.azure.com`.",
        "azure",
        default_text="`<namePrefix>-<stack>-<random suffix>`",
    ),
    Key("hostName", "", "Custom host name served by the HTTPS listener (point its DNS at the public IP).", "azure"),
    Key(
        "tlsCertificate",
        "",
        "Base64 PFX of the HTTPS certificate (`pulumi config set --secret`).",
        "azure",
        secret=True,
    ),
    Key(
        "tlsCertificatePassword", "", "Password of tlsCertificate (`pulumi config set --secret`).", "azure", secret=True
    ),
    Key(
        "tlsKeyVaultSecretId", "", "Key Vault secret id of the HTTPS certificate (instead of tlsCertificate).", "azure"
    ),
    Key(
        "tlsKeyVaultId",
        "",
        "Resource id of that Key Vault (RBAC mode); the App Gateway identity gets Key Vault Secrets User on it.",
        "azure",
    ),
    # --- local ---------------------------------------------------------------------------
    Key("kubeContext", "", "kubeconfig context to deploy to.", "local", default_text="the current context"),
    Key("localRegistry", "localhost:5001", "Registry the build script pushes to and the cluster pulls from.", "local"),
    Key("localRedisImage", "redis:7.4-alpine", "Image of the in-cluster Redis.", "local"),
    Key(
        "localStorage", "pvc", "Volume of the gateway's SQLite data dir: pvc (survives restarts) or emptyDir.", "local"
    ),
    Key("localStorageSize", "1Gi", "Size of that PersistentVolumeClaim.", "local"),
)

KEYS_BY_NAME = {key.name: key for key in KEYS}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and how to fix it."""


@dataclass(frozen=True)
class GatewayConfig:
    """What every platform needs to run the gateway on Kubernetes."""

    image: str
    image_tag: str
    replicas: int
    namespace: str
    adapter_namespace: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    await_ready: bool
    log_level: str
    max_adapter_replicas: int
    extra_env: Mapping[str, str]
    public_url: str
    adapter_egress_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])
    upstream_secret_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AzureConfig:
    """Azure resources of the dev and prod stacks."""

    location: str
    resource_group_name: str
    entra_client_id: str
    entra_tenant_id: str
    vnet_address_space: str
    aks_subnet_prefix: str
    app_gateway_subnet_prefix: str
    private_endpoint_subnet_prefix: str
    gateway_private_ip: str
    aks_kubernetes_version: str
    aks_vm_size: str
    aks_min_nodes: int
    aks_max_nodes: int
    aks_adapter_vm_size: str
    aks_adapter_min_nodes: int
    aks_adapter_max_nodes: int
    aks_availability_zones: list[str]
    aks_tier: str
    aks_network_policy: str
    aks_pod_cidr: str
    aks_service_cidr: str
    aks_dns_service_ip: str
    aks_authorized_ip_ranges: list[str]
    deployer_principal_type: str
    kube_login: str
    acr_sku: str
    cosmos_serverless: bool
    cosmos_autoscale_max_throughput: int
    cosmos_private_endpoint: bool
    cosmos_zone_redundant: bool
    cosmos_database: str
    cosmos_container: str
    redis_sku: str
    redis_high_availability: bool
    redis_private_endpoint: bool
    gateway_max_replicas: int
    log_retention_days: int
    app_gateway_min_capacity: int
    app_gateway_max_capacity: int
    app_gateway_zones: list[str]
    app_gateway_waf: bool
    app_gateway_waf_mode: str
    backend_request_timeout_seconds: int
    dns_label: str
    host_name: str
    tls_certificate: pulumi.Output[str] | None
    tls_certificate_password: pulumi.Output[str] | None
    tls_key_vault_secret_id: str
    tls_key_vault_id: str


@dataclass(frozen=True)
class LocalConfig:
    """The local stack: an existing cluster from the kubeconfig."""

    kube_context: str
    registry: str
    redis_image: str
    storage: str
    storage_size: str


@dataclass(frozen=True)
class StackConfig:
    """The whole stack configuration, validated."""

    stack: str
    platform: Platform
    name_prefix: str
    gateway: GatewayConfig
    azure: AzureConfig | None = None
    local: LocalConfig | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


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


_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,7}$")
MAX_STACK_NAME = 16
_STACK = re.compile(rf"^[a-z](?:[a-z0-9-]{{0,{MAX_STACK_NAME - 2}}}[a-z0-9])?$")
AKS_TIERS = ("Free", "Standard", "Premium")
PRINCIPAL_TYPES = ("User", "ServicePrincipal", "Group")
KUBELOGIN_MODES = ("azurecli", "spn", "workloadidentity", "msi", "azd")
SSE_KEEPALIVE_SECONDS = 15
"""The gateway's keep-alive interval on idle SSE streams it proxies; every idle timeout on the path
(App Gateway, its public IP, the internal load balancer) must stay well above it."""
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|k|M|G)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_config(config: pulumi.Config | None = None, stack: str | None = None) -> StackConfig:
    """Read and check every key of the current stack (``pulumi.Config()`` of the project)."""
    config = config or pulumi.Config()
    stack = stack or pulumi.get_stack()
    chosen = config.get("platform") or "azure"
    if chosen not in ("azure", "local"):
        raise ConfigError(f"platform: expected azure or local, got {chosen!r}")
    platform: Platform = "azure" if chosen == "azure" else "local"
    values = {key.name: _read(config, key, platform) for key in KEYS if key.scope in ("all", platform)}
    if platform == "azure":
        entra = config.get("entraClientId")
        if not entra:
            raise ConfigError(
                "entraClientId is required on Azure stacks: the application (client) id of the gateway's app "
                f"registration; set it with `pulumi config set entraClientId <id> -s {stack}` (docs/deploy-azure.md)"
            )
        values["entraClientId"] = entra
    return _build(stack, platform, values)


def _build(stack: str, platform: Platform, v: Mapping[str, Any]) -> StackConfig:
    prefix = v["namePrefix"]
    if not _PREFIX.match(prefix):
        raise ConfigError(f"namePrefix: 2 to 8 lowercase letters or digits starting with a letter, got {prefix!r}")
    replicas = int(v["gatewayReplicas"])
    if platform == "azure" and replicas < 2:
        raise ConfigError(f"gatewayReplicas: at least 2 on Azure (one per zone/node for availability), got {replicas}")
    if platform == "local" and replicas != 1:
        raise ConfigError(
            f"gatewayReplicas: exactly 1 on the local stack, whose SQLite store is not shared between pods; "
            f"got {replicas}"
        )
    for name in ("gatewayCpuRequest", "gatewayMemoryRequest", "gatewayCpuLimit", "gatewayMemoryLimit"):
        if not _QUANTITY.match(str(v[name])):
            raise ConfigError(f"{name}: not a Kubernetes quantity: {v[name]!r}")
    extra_env = {str(k): str(val) for k, val in dict(v["gatewayEnv"]).items()}
    for name in extra_env:
        if not _ENV_NAME.match(name):
            raise ConfigError(f"gatewayEnv: {name!r} is not an environment variable name")
        if name in SECRET_ENV:
            raise ConfigError(f"gatewayEnv: {name} is a secret setting; it is managed by the program, not config")
    # The program computes from these (grace period, WAF body limit): they must be numbers.
    for name in ("MCPGW_DRAIN_DELAY", "MCPGW_DRAIN_TIMEOUT", "MCPGW_MAX_BODY_BYTES"):
        if name in extra_env:
            try:
                number = float(extra_env[name])
            except ValueError:
                number = -1.0
            if number < 0 or (name == "MCPGW_MAX_BODY_BYTES" and not number.is_integer()):
                raise ConfigError(f"gatewayEnv: {name} must be a non-negative number, got {extra_env[name]!r}")
    if v["logLevel"] not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"logLevel: expected debug, info, warning or error, got {v['logLevel']!r}")
    gateway = GatewayConfig(
        image=v["gatewayImage"],
        image_tag=str(v["gatewayImageTag"]),
        replicas=replicas,
        namespace=v["gatewayNamespace"],
        adapter_namespace=v["adapterNamespace"],
        cpu_request=str(v["gatewayCpuRequest"]),
        memory_request=str(v["gatewayMemoryRequest"]),
        cpu_limit=str(v["gatewayCpuLimit"]),
        memory_limit=str(v["gatewayMemoryLimit"]),
        await_ready=bool(v["gatewayAwaitReady"]),
        log_level=v["logLevel"],
        max_adapter_replicas=int(v["maxAdapterReplicas"]),
        extra_env=extra_env,
        public_url=v["publicUrl"],
        adapter_egress_cidrs=_cidrs("adapterEgressCidrs", v["adapterEgressCidrs"]),
        upstream_secret_names=_secret_names("upstreamSecretNames", v["upstreamSecretNames"]),
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
        if v["localStorage"] not in ("pvc", "emptyDir"):
            raise ConfigError(f"localStorage: expected pvc or emptyDir, got {v['localStorage']!r}")
        local = LocalConfig(
            kube_context=v["kubeContext"],
            registry=v["localRegistry"].rstrip("/"),
            redis_image=v["localRedisImage"],
            storage=v["localStorage"],
            storage_size=v["localStorageSize"],
        )
        return StackConfig(stack, platform, prefix, gateway, local=local, raw=v)
    return StackConfig(stack, platform, prefix, gateway, azure=_azure(stack, prefix, v), raw=v)


_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


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


def _cidrs(name: str, values: Any) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(str(value))))
        except ValueError as exc:
            raise ConfigError(f"{name}: {value!r} is not a CIDR ({exc})") from None
    return out


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
    check_stack_name(stack)
    net = ipaddress.ip_network(v["vnetAddressSpace"])
    subnets = {
        name: ipaddress.ip_network(v[name])
        for name in ("aksSubnetPrefix", "appGatewaySubnetPrefix", "privateEndpointSubnetPrefix")
    }
    for name, subnet in subnets.items():
        if not subnet.subnet_of(net):  # type: ignore[arg-type]
            raise ConfigError(f"{name}: {subnet} is not inside vnetAddressSpace {net}")
    names = list(subnets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if subnets[a].overlaps(subnets[b]):
                raise ConfigError(f"{a} and {b} overlap")
    if ipaddress.ip_address(v["gatewayPrivateIp"]) not in subnets["aksSubnetPrefix"]:
        raise ConfigError(f"gatewayPrivateIp: {v['gatewayPrivateIp']} is not inside aksSubnetPrefix")
    for name in ("aksPodCidr", "aksServiceCidr"):
        if ipaddress.ip_network(v[name]).overlaps(net):
            raise ConfigError(f"{name}: {v[name]} overlaps vnetAddressSpace {net}")
    if ipaddress.ip_address(v["aksDnsServiceIp"]) not in ipaddress.ip_network(v["aksServiceCidr"]):
        raise ConfigError("aksDnsServiceIp must be inside aksServiceCidr")
    if v["aksNetworkPolicy"] not in ("cilium", "calico", "azure"):
        raise ConfigError(
            f"aksNetworkPolicy: expected cilium, calico or azure (NetworkPolicies must be enforced), "
            f"got {v['aksNetworkPolicy']!r}"
        )
    if not 1 <= v["aksMinNodes"] <= v["aksMaxNodes"]:
        raise ConfigError("aksMinNodes must be at least 1 and at most aksMaxNodes")
    if not 0 <= v["aksAdapterMinNodes"] <= v["aksAdapterMaxNodes"] or v["aksAdapterMaxNodes"] < 1:
        raise ConfigError("aksAdapterMinNodes must be at least 0 and at most aksAdapterMaxNodes (at least 1)")
    if v["aksTier"] not in AKS_TIERS:
        raise ConfigError(f"aksTier: expected one of {', '.join(AKS_TIERS)}, got {v['aksTier']!r}")
    if v["deployerPrincipalType"] not in PRINCIPAL_TYPES:
        raise ConfigError(
            f"deployerPrincipalType: expected one of {', '.join(PRINCIPAL_TYPES)} (ServicePrincipal for CI), "
            f"got {v['deployerPrincipalType']!r}"
        )
    if v["kubeLogin"] not in KUBELOGIN_MODES:
        raise ConfigError(f"kubeLogin: expected one of {', '.join(KUBELOGIN_MODES)}, got {v['kubeLogin']!r}")
    if (v["cosmosPrivateEndpoint"] or v["redisPrivateEndpoint"]) and not v["aksAuthorizedIpRanges"]:
        raise ConfigError(
            "aksAuthorizedIpRanges: required when Cosmos DB or Redis sit behind a private endpoint, or the "
            "Kubernetes API server (which holds the keys to both) stays open to the internet; set it with "
            f"`pulumi config set --path 'aksAuthorizedIpRanges[0]' <your CIDR> -s {stack}`"
        )
    if v["gatewayMaxReplicas"] < v["gatewayReplicas"]:
        raise ConfigError("gatewayMaxReplicas must be at least gatewayReplicas (the autoscaler's floor)")
    if not 1 <= v["appGatewayMinCapacity"] <= v["appGatewayMaxCapacity"]:
        raise ConfigError("appGatewayMinCapacity must be at least 1 and at most appGatewayMaxCapacity")
    if v["appGatewayWafMode"] not in ("Detection", "Prevention"):
        raise ConfigError(f"appGatewayWafMode: expected Detection or Prevention, got {v['appGatewayWafMode']!r}")
    if not 4 * SSE_KEEPALIVE_SECONDS <= v["backendRequestTimeoutSeconds"] <= 86400:
        raise ConfigError(
            f"backendRequestTimeoutSeconds must be between {4 * SSE_KEEPALIVE_SECONDS} (well above the gateway's "
            f"{SSE_KEEPALIVE_SECONDS} s SSE keep-alive) and 86400"
        )
    has_pfx = v["tlsCertificate"] is not None
    has_kv = bool(v["tlsKeyVaultSecretId"])
    if has_pfx == has_kv:
        raise ConfigError(
            "the HTTPS listener needs exactly one certificate source: tlsCertificate (+ tlsCertificatePassword), "
            f"set with `pulumi config set --secret tlsCertificate ... -s {stack}`, or tlsKeyVaultSecretId "
            "(+ tlsKeyVaultId); see docs/deploy-azure.md"
        )
    if has_kv and not v["tlsKeyVaultId"]:
        raise ConfigError("tlsKeyVaultId is required with tlsKeyVaultSecretId (the App Gateway needs read access)")
    return AzureConfig(
        location=v["location"],
        resource_group_name=v["resourceGroupName"] or f"{prefix}-{stack}",
        entra_client_id=v["entraClientId"],
        entra_tenant_id=v["entraTenantId"],
        vnet_address_space=v["vnetAddressSpace"],
        aks_subnet_prefix=v["aksSubnetPrefix"],
        app_gateway_subnet_prefix=v["appGatewaySubnetPrefix"],
        private_endpoint_subnet_prefix=v["privateEndpointSubnetPrefix"],
        gateway_private_ip=v["gatewayPrivateIp"],
        aks_kubernetes_version=v["aksKubernetesVersion"],
        aks_vm_size=v["aksVmSize"],
        aks_min_nodes=int(v["aksMinNodes"]),
        aks_max_nodes=int(v["aksMaxNodes"]),
        aks_adapter_vm_size=v["aksAdapterVmSize"],
        aks_adapter_min_nodes=int(v["aksAdapterMinNodes"]),
        aks_adapter_max_nodes=int(v["aksAdapterMaxNodes"]),
        aks_availability_zones=[str(z) for z in v["aksAvailabilityZones"]],
        aks_tier=v["aksTier"],
        aks_network_policy=v["aksNetworkPolicy"],
        aks_pod_cidr=v["aksPodCidr"],
        aks_service_cidr=v["aksServiceCidr"],
        aks_dns_service_ip=v["aksDnsServiceIp"],
        aks_authorized_ip_ranges=_cidrs("aksAuthorizedIpRanges", v["aksAuthorizedIpRanges"]),
        deployer_principal_type=v["deployerPrincipalType"],
        kube_login=v["kubeLogin"],
        acr_sku=v["acrSku"],
        cosmos_serverless=bool(v["cosmosServerless"]),
        cosmos_autoscale_max_throughput=int(v["cosmosAutoscaleMaxThroughput"]),
        cosmos_private_endpoint=bool(v["cosmosPrivateEndpoint"]),
        cosmos_zone_redundant=bool(v["cosmosZoneRedundant"]),
        cosmos_database=v["cosmosDatabase"],
        cosmos_container=v["cosmosContainer"],
        redis_sku=v["redisSku"],
        redis_high_availability=bool(v["redisHighAvailability"]),
        redis_private_endpoint=bool(v["redisPrivateEndpoint"]),
        gateway_max_replicas=int(v["gatewayMaxReplicas"]),
        log_retention_days=int(v["logRetentionDays"]),
        app_gateway_min_capacity=int(v["appGatewayMinCapacity"]),
        app_gateway_max_capacity=int(v["appGatewayMaxCapacity"]),
        app_gateway_zones=[str(z) for z in v["appGatewayZones"]],
        app_gateway_waf=bool(v["appGatewayWaf"]),
        app_gateway_waf_mode=v["appGatewayWafMode"],
        backend_request_timeout_seconds=int(v["backendRequestTimeoutSeconds"]),
        dns_label=v["dnsLabel"],
        host_name=v["hostName"],
        tls_certificate=v["tlsCertificate"],
        tls_certificate_password=v["tlsCertificatePassword"],
        tls_key_vault_secret_id=v["tlsKeyVaultSecretId"],
        tls_key_vault_id=v["tlsKeyVaultId"],
    )
