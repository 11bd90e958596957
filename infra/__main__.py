"""Pulumi entry point: read the stack configuration and wire the components.

``pulumi up -s local`` deploys the gateway to the cluster of your kubeconfig; ``-s dev`` / ``-s prod``
stand up the Azure platform and deploy the gateway onto AKS. See infra/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Pulumi runs this folder as a script (``main: infra/``); make ``infra`` importable as a package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_azure_native import authorization, resources

from infra.aks import ADAPTER_NODE_LABEL, ADAPTER_TAINT, Aks, AksArgs
from infra.appgateway import AppGateway, AppGatewayArgs
from infra.config import StackConfig, load_config
from infra.cosmos import Cosmos, CosmosArgs
from infra.gateway_k8s import (
    ADAPTER_SERVICE_ACCOUNT,
    DRAIN_DELAY_SECONDS,
    DRAIN_TIMEOUT_SECONDS,
    GATEWAY_PORT,
    GATEWAY_SERVICE_ACCOUNT,
    WORKLOAD_SERVICE_ACCOUNT,
    GatewayOnKubernetes,
    GatewayOnKubernetesArgs,
    ServiceExposure,
)
from infra.identity import Identities, IdentityArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import AKS_SUBNET, Network, NetworkArgs
from infra.placement import Placement
from infra.redis import InClusterRedis, InClusterRedisArgs, ManagedRedis, ManagedRedisArgs
from infra.registry import Registry, RegistryArgs

# The Azure load balancer drops a TCP flow idle this long (minutes; Azure allows 4 to 100, and the App
# Gateway's public IP at most 30). An idle SSE stream carries the gateway's keep-alive comment every
# SSE_KEEPALIVE_SECONDS (15 s), so neither comes close; the longest value keeps quiet non-SSE
# connections (a slow tool call) alive too.
LB_IDLE_TIMEOUT_MINUTES = 30
# The gateway's default MCP body limit (Settings.max_body_bytes); the WAF is set not to refuse less.
GATEWAY_MAX_BODY_BYTES = 4 * 1024 * 1024


def drain_settings(cfg: StackConfig) -> tuple[float, float]:
    """The gateway's (drain_delay, drain_timeout): gatewayEnv overrides, else the Settings defaults."""
    env = cfg.gateway.extra_env
    return (
        float(env.get("MCPGW_DRAIN_DELAY", DRAIN_DELAY_SECONDS)),
        float(env.get("MCPGW_DRAIN_TIMEOUT", DRAIN_TIMEOUT_SECONDS)),
    )


def _common_settings(
    cfg: StackConfig, public_url: pulumi.Input[str], registry: pulumi.Input[str]
) -> dict[str, pulumi.Input[str]]:
    gw = cfg.gateway
    drain_delay, drain_timeout = drain_settings(cfg)
    return {
        "MCPGW_HOST": "0.0.0.0",
        "MCPGW_PORT": str(GATEWAY_PORT),
        "MCPGW_DATA_DIR": "/data",
        "MCPGW_PUBLIC_URL": public_url,
        "MCPGW_LOG_LEVEL": gw.log_level,
        "MCPGW_LOG_FORMAT": "json",
        "MCPGW_RUNTIME": "kubernetes",
        "MCPGW_KUBE_NAMESPACE": gw.adapter_namespace,
        "MCPGW_KUBE_REGISTRY": registry,
        # stdio adapter pods run the bridge from the very image the gateway runs (docs/kubernetes.md, "stdio servers").
        "MCPGW_KUBE_STDIO_BRIDGE_IMAGE": _image(cfg, registry),
        "MCPGW_KUBE_SERVICE_ACCOUNT": ADAPTER_SERVICE_ACCOUNT,
        "MCPGW_KUBE_WORKLOAD_SERVICE_ACCOUNT": WORKLOAD_SERVICE_ACCOUNT,
        "MCPGW_MAX_REPLICAS": str(gw.max_adapter_replicas),
        "MCPGW_SESSIONS": "redis",
        # Stated explicitly: terminationGracePeriodSeconds is computed from exactly these.
        "MCPGW_DRAIN_DELAY": f"{drain_delay:g}",
        "MCPGW_DRAIN_TIMEOUT": f"{drain_timeout:g}",
    }


def _image(cfg: StackConfig, registry: pulumi.Input[str]) -> str | pulumi.Output[str]:
    if cfg.gateway.image:
        return cfg.gateway.image
    return pulumi.Output.concat(registry, "/mcp-gateway:", cfg.gateway.image_tag)


def wire_local(cfg: StackConfig) -> dict[str, pulumi.Input[str | None]]:
    """The local stack: in-cluster Redis and the gateway on the kubeconfig's cluster."""
    assert cfg.local is not None
    gw, local = cfg.gateway, cfg.local
    provider = k8s.Provider("local", context=local.kube_context or None, enable_server_side_apply=True)
    redis = InClusterRedis(
        "redis",
        InClusterRedisArgs(namespace=gw.namespace, image=local.redis_image, provider=provider),
    )
    public_url = gw.public_url or f"http://localhost:{GATEWAY_PORT}"
    settings = {
        **_common_settings(cfg, public_url, local.registry),
        # One pod (gatewayReplicas is 1 on local): SQLite on the data volume is enough.
        "MCPGW_STORE": "sqlite",
        # Dev auth trusts X-Dev-* headers: acceptable only on a private local cluster.
        "MCPGW_AUTH": "dev",
        "MCPGW_AUTH_DEV_ALLOW_REMOTE": "true",
        **gw.extra_env,
    }
    gateway = GatewayOnKubernetes(
        "gateway",
        GatewayOnKubernetesArgs(
            provider=provider,
            image=_image(cfg, local.registry),
            replicas=gw.replicas,
            namespace=gw.namespace,
            adapter_namespace=gw.adapter_namespace,
            settings=settings,
            secret_settings={"MCPGW_REDIS_URL": redis.url},
            cpu_request=gw.cpu_request,
            memory_request=gw.memory_request,
            cpu_limit=gw.cpu_limit,
            memory_limit=gw.memory_limit,
            data_volume="pvc" if local.storage == "pvc" else "emptyDir",
            data_volume_size=local.storage_size,
            await_ready=gw.await_ready,
            adapter_egress_cidrs=gw.adapter_egress_cidrs,
            upstream_secret_names=gw.upstream_secret_names,
            drain_delay=drain_settings(cfg)[0],
            drain_timeout=drain_settings(cfg)[1],
        ),
        opts=pulumi.ResourceOptions(depends_on=[redis]),
    )
    return {
        "gatewayUrl": public_url,
        "registry": local.registry,
        "redisHost": redis.host,
        "gatewayNamespace": gateway.service.metadata.namespace,
        "adapterNamespace": gw.adapter_namespace,
    }


def wire_azure(cfg: StackConfig) -> dict[str, pulumi.Input[str | None]]:
    """The dev/prod stacks: the Azure platform, then the gateway on AKS."""
    assert cfg.azure is not None
    gw, az = cfg.gateway, cfg.azure
    stack, prefix = cfg.stack, cfg.name_prefix
    tags = {"app": "mcp-gateway", "stack": stack}
    client = authorization.get_client_config_output()
    tenant_id = az.entra_tenant_id or client.tenant_id
    # Some Azure names are global (registry, Cosmos, Redis, DNS label): a stable random suffix.
    suffix = random.RandomString("name-suffix", length=6, special=False, upper=False).result
    rg = resources.ResourceGroup(
        "resource-group", resource_group_name=az.resource_group_name, location=az.location, tags=tags
    )
    where: Placement = {"resource_group_name": rg.name, "location": az.location, "tags": tags}

    net = Network(
        "network",
        NetworkArgs(
            **where,
            address_space=az.vnet_address_space,
            aks_subnet_prefix=az.aks_subnet_prefix,
            app_gateway_subnet_prefix=az.app_gateway_subnet_prefix,
            private_endpoint_subnet_prefix=az.private_endpoint_subnet_prefix,
        ),
    )
    monitoring = Monitoring("monitoring", MonitoringArgs(**where, retention_days=az.log_retention_days))
    aks = Aks(
        "aks",
        AksArgs(
            **where,
            resource_group_id=rg.id,
            cluster_name=f"{prefix}-{stack}-aks",
            subnet_id=net.aks_subnet_id,
            workspace_id=monitoring.workspace_id,
            tenant_id=client.tenant_id,
            subscription_id=client.subscription_id,
            deployer_object_id=client.object_id,
            deployer_principal_type=az.deployer_principal_type,
            kube_login=az.kube_login,
            kubernetes_version=az.aks_kubernetes_version,
            vm_size=az.aks_vm_size,
            min_nodes=az.aks_min_nodes,
            max_nodes=az.aks_max_nodes,
            adapter_vm_size=az.aks_adapter_vm_size,
            adapter_min_nodes=az.aks_adapter_min_nodes,
            adapter_max_nodes=az.aks_adapter_max_nodes,
            availability_zones=az.aks_availability_zones,
            tier=az.aks_tier,
            network_policy=az.aks_network_policy,
            pod_cidr=az.aks_pod_cidr,
            service_cidr=az.aks_service_cidr,
            dns_service_ip=az.aks_dns_service_ip,
            authorized_ip_ranges=az.aks_authorized_ip_ranges,
        ),
    )
    registry = Registry(
        "registry",
        RegistryArgs(
            **where,
            registry_name=pulumi.Output.concat(prefix, stack.replace("-", ""), suffix),
            sku=az.acr_sku,
            subscription_id=client.subscription_id,
            kubelet_object_id=aks.kubelet_object_id,
        ),
    )
    identities = Identities(
        "identity",
        IdentityArgs(
            **where,
            oidc_issuer_url=aks.oidc_issuer_url,
            gateway_namespace=gw.namespace,
            gateway_service_account=GATEWAY_SERVICE_ACCOUNT,
            adapter_namespace=gw.adapter_namespace,
            workload_service_account=WORKLOAD_SERVICE_ACCOUNT,
            entra_client_id=az.entra_client_id,
        ),
    )
    cosmos = Cosmos(
        "cosmos",
        CosmosArgs(
            **where,
            account_name=pulumi.Output.concat(prefix, "-", stack, "-", suffix),
            database=az.cosmos_database,
            container=az.cosmos_container,
            gateway_principal_id=identities.gateway.principal_id,
            serverless=az.cosmos_serverless,
            autoscale_max_throughput=az.cosmos_autoscale_max_throughput,
            zone_redundant=az.cosmos_zone_redundant,
            private_endpoint=az.cosmos_private_endpoint,
            private_endpoint_subnet_id=net.private_endpoint_subnet_id,
            vnet_id=net.vnet_id,
        ),
    )
    redis = ManagedRedis(
        "redis",
        ManagedRedisArgs(
            **where,
            cluster_name=pulumi.Output.concat(prefix, "-", stack, "-", suffix),
            sku=az.redis_sku,
            high_availability=az.redis_high_availability,
            gateway_principal_id=identities.gateway.principal_id,
            private_endpoint=az.redis_private_endpoint,
            private_endpoint_subnet_id=net.private_endpoint_subnet_id,
            vnet_id=net.vnet_id,
        ),
    )
    app_gateway = AppGateway(
        "appgateway",
        AppGatewayArgs(
            **where,
            resource_group_id=rg.id,
            gateway_name=f"{prefix}-{stack}-appgw",
            subnet_id=net.app_gateway_subnet_id,
            backend_ip=az.gateway_private_ip,
            backend_port=GATEWAY_PORT,
            dns_label=az.dns_label or pulumi.Output.concat(prefix, "-", stack, "-", suffix),
            subscription_id=client.subscription_id,
            workspace_id=monitoring.workspace_id,
            host_name=az.host_name,
            request_timeout_seconds=az.backend_request_timeout_seconds,
            idle_timeout_minutes=LB_IDLE_TIMEOUT_MINUTES,
            max_body_bytes=int(gw.extra_env.get("MCPGW_MAX_BODY_BYTES", GATEWAY_MAX_BODY_BYTES)),
            min_capacity=az.app_gateway_min_capacity,
            max_capacity=az.app_gateway_max_capacity,
            zones=az.app_gateway_zones,
            waf=az.app_gateway_waf,
            waf_mode=az.app_gateway_waf_mode,
            tls_certificate=az.tls_certificate,
            tls_certificate_password=az.tls_certificate_password,
            tls_key_vault_secret_id=az.tls_key_vault_secret_id,
            tls_key_vault_id=az.tls_key_vault_id,
        ),
    )
    public_url = gw.public_url or pulumi.Output.concat("https://", app_gateway.host)
    settings = {
        **_common_settings(cfg, public_url, registry.login_server),
        "MCPGW_STORE": "cosmos",
        "MCPGW_COSMOS_ENDPOINT": cosmos.endpoint,
        "MCPGW_COSMOS_DATABASE": az.cosmos_database,
        "MCPGW_COSMOS_CONTAINER": az.cosmos_container,
        # Entra ID to Redis: the URL carries no credential.
        "MCPGW_REDIS_URL": redis.url,
        "MCPGW_REDIS_ENTRA": "true",
        "MCPGW_REDIS_USERNAME": identities.gateway.principal_id,
        "MCPGW_AUTH": "entra",
        "MCPGW_ENTRA_TENANT_ID": tenant_id,
        "MCPGW_ENTRA_CLIENT_ID": az.entra_client_id,
        "AZURE_CLIENT_ID": identities.gateway.client_id,
        # Adapters run only on the tainted user node pool (infra/aks.py), away from the gateway.
        "MCPGW_KUBE_ADAPTER_NODE_SELECTOR": f"{ADAPTER_NODE_LABEL[0]}={ADAPTER_NODE_LABEL[1]}",
        "MCPGW_KUBE_ADAPTER_TOLERATIONS": ADAPTER_TAINT,
        **gw.extra_env,
    }
    # Every Kubernetes call waits for the deployer's cluster-admin grant (made before the cluster).
    provider = k8s.Provider(
        "aks",
        kubeconfig=aks.kubeconfig,
        enable_server_side_apply=True,
        opts=pulumi.ResourceOptions(depends_on=[aks.deployer_admin]),
    )
    GatewayOnKubernetes(
        "gateway",
        GatewayOnKubernetesArgs(
            provider=provider,
            image=_image(cfg, registry.login_server),
            replicas=gw.replicas,
            namespace=gw.namespace,
            adapter_namespace=gw.adapter_namespace,
            settings=settings,
            secret_settings={"APPLICATIONINSIGHTS_CONNECTION_STRING": monitoring.connection_string},
            cpu_request=gw.cpu_request,
            memory_request=gw.memory_request,
            cpu_limit=gw.cpu_limit,
            memory_limit=gw.memory_limit,
            gateway_client_id=identities.gateway.client_id,
            workload_client_id=identities.workload.client_id,
            exposure=ServiceExposure(
                type="LoadBalancer",
                annotations={
                    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
                    "service.beta.kubernetes.io/azure-load-balancer-internal-subnet": AKS_SUBNET,
                    "service.beta.kubernetes.io/azure-load-balancer-ipv4": az.gateway_private_ip,
                    "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout": str(LB_IDLE_TIMEOUT_MINUTES),
                },
            ),
            data_volume="emptyDir",
            await_ready=gw.await_ready,
            max_replicas=az.gateway_max_replicas,
            adapter_egress_cidrs=gw.adapter_egress_cidrs,
            upstream_secret_names=gw.upstream_secret_names,
            drain_delay=drain_settings(cfg)[0],
            drain_timeout=drain_settings(cfg)[1],
        ),
        opts=pulumi.ResourceOptions(depends_on=[cosmos, redis]),
    )
    return {
        "gatewayUrl": public_url,
        "acrLoginServer": registry.login_server,
        "registry": registry.login_server,
        "cosmosEndpoint": cosmos.endpoint,
        "redisHost": redis.host,
        "gatewayClientId": identities.gateway.client_id,
        "workloadClientId": identities.workload.client_id,
        "entraTenantId": tenant_id,
        "entraClientId": az.entra_client_id,
        "resourceGroupName": rg.name,
        # DNS for hostName: a CNAME to appGatewayFqdn (or an A record to appGatewayPublicIp).
        "appGatewayFqdn": app_gateway.fqdn,
        "appGatewayPublicIp": app_gateway.public_ip.ip_address,
        "aksClusterName": aks.cluster.name,
        "gatewayNamespace": gw.namespace,
        "adapterNamespace": gw.adapter_namespace,
    }


def wire(cfg: StackConfig) -> dict[str, pulumi.Input[str | None]]:
    """Build the stack ``cfg`` describes; returns its outputs."""
    return wire_local(cfg) if cfg.platform == "local" else wire_azure(cfg)


if __name__ == "__main__":
    for _key, _value in wire(load_config()).items():
        pulumi.export(_key, _value)
