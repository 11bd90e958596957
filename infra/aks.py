"""AKS: OIDC issuer and workload identity, Azure CNI with an enforcing NetworkPolicy engine, Azure RBAC."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import yaml
from pulumi_azure_native import authorization, containerservice

from infra.azure_roles import AKS_RBAC_CLUSTER_ADMIN, NETWORK_CONTRIBUTOR, role_definition_id

SYSTEM_POOL = "system"


@dataclass
class AksArgs:
    """Cluster shape; see the aks* keys in infra/README.md."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    cluster_name: str
    subnet_id: pulumi.Input[str]
    workspace_id: pulumi.Input[str]
    tenant_id: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    deployer_object_id: pulumi.Input[str]
    kubernetes_version: str
    vm_size: str
    min_nodes: int
    max_nodes: int
    availability_zones: list[str]
    tier: str
    network_policy: str
    pod_cidr: str
    service_cidr: str
    dns_service_ip: str
    authorized_ip_ranges: list[str]
    tags: Mapping[str, str] = field(default_factory=dict)


def azure_cli_kubeconfig(encoded: str) -> str:
    """The AKS user kubeconfig, with kubelogin switched to the Azure CLI login.

    With Azure RBAC and local accounts off, the kubeconfig AKS returns runs ``kubelogin`` in
    device-code mode, which cannot answer inside ``pulumi up``. The Azure CLI login reuses the
    deployer's ``az login``.
    """
    doc: dict[str, Any] = yaml.safe_load(base64.b64decode(encoded).decode())
    for user in doc.get("users") or []:
        exec_ = (user.get("user") or {}).get("exec")
        if not exec_ or "kubelogin" not in str(exec_.get("command", "")):
            continue
        args = list(exec_.get("args") or [])
        server_id = args[args.index("--server-id") + 1] if "--server-id" in args else None
        exec_["args"] = ["get-token", "--login", "azurecli"] + (["--server-id", server_id] if server_id else [])
    return yaml.safe_dump(doc, sort_keys=False)


class Aks(pulumi.ComponentResource):
    """The cluster, the deployer's cluster-admin role, and the cluster identity's subnet role."""

    cluster: containerservice.ManagedCluster
    oidc_issuer_url: pulumi.Output[str]
    kubelet_object_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """A kubeconfig for the Kubernetes provider, as a Pulumi secret."""

    def __init__(self, name: str, args: AksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Aks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network_profile: dict[str, Any] = {
            "network_plugin": "azure",
            # Overlay: pods get IPs from pod_cidr, so the node subnet stays small.
            "network_plugin_mode": "overlay",
            "network_policy": args.network_policy,
            "pod_cidr": args.pod_cidr,
            "service_cidr": args.service_cidr,
            "dns_service_ip": args.dns_service_ip,
            "load_balancer_sku": "standard",
            "outbound_type": "loadBalancer",
        }
        if args.network_policy == "cilium":
            network_profile["network_dataplane"] = "cilium"
        pool: dict[str, Any] = {
            "name": SYSTEM_POOL,
            "mode": "System",
            "type": "VirtualMachineScaleSets",
            "os_type": "Linux",
            "os_sku": "AzureLinux",
            "vm_size": args.vm_size,
            "enable_auto_scaling": True,
            "count": args.min_nodes,
            "min_count": args.min_nodes,
            "max_count": args.max_nodes,
            "vnet_subnet_id": args.subnet_id,
            "upgrade_settings": {"max_surge": "33%"},
        }
        if args.availability_zones:
            pool["availability_zones"] = args.availability_zones
        extra: dict[str, Any] = {}
        if args.kubernetes_version:
            extra["kubernetes_version"] = args.kubernetes_version
        if args.authorized_ip_ranges:
            extra["api_server_access_profile"] = {"authorized_ip_ranges": args.authorized_ip_ranges}
        self.cluster = containerservice.ManagedCluster(
            f"{name}-cluster",
            resource_group_name=args.resource_group_name,
            location=args.location,
            resource_name_=args.cluster_name,
            dns_prefix=args.cluster_name,
            identity={"type": "SystemAssigned"},
            sku={"name": "Base", "tier": args.tier},
            agent_pool_profiles=[pool],
            network_profile=network_profile,
            oidc_issuer_profile={"enabled": True},
            security_profile={"workload_identity": {"enabled": True}},
            enable_rbac=True,
            aad_profile={"managed": True, "enable_azure_rbac": True, "tenant_id": args.tenant_id},
            disable_local_accounts=True,
            auto_upgrade_profile={"upgrade_channel": "patch", "node_os_upgrade_channel": "NodeImage"},
            addon_profiles={
                "omsagent": {
                    "enabled": True,
                    "config": {"logAnalyticsWorkspaceResourceID": args.workspace_id, "useAADAuth": "true"},
                }
            },
            tags=args.tags,
            **extra,
            opts=child,
        )
        # The cluster identity manages the internal load balancer in the (custom) node subnet.
        authorization.RoleAssignment(
            f"{name}-subnet-network-contributor",
            scope=args.subnet_id,
            role_definition_id=role_definition_id(args.subscription_id, NETWORK_CONTRIBUTOR),
            principal_id=self.cluster.identity.apply(lambda i: i.principal_id if i else ""),
            principal_type="ServicePrincipal",
            opts=child,
        )
        # Azure RBAC is on and local accounts are off: whoever runs `pulumi up` needs a cluster role
        # to deploy the gateway's Kubernetes objects.
        deployer_admin = authorization.RoleAssignment(
            f"{name}-deployer-cluster-admin",
            scope=self.cluster.id,
            role_definition_id=role_definition_id(args.subscription_id, AKS_RBAC_CLUSTER_ADMIN),
            principal_id=args.deployer_object_id,
            opts=child,
        )
        self.oidc_issuer_url = self.cluster.oidc_issuer_profile.apply(lambda p: (p.issuer_url or "") if p else "")
        self.kubelet_object_id = self.cluster.identity_profile.apply(
            lambda profiles: (profiles or {})["kubeletidentity"].object_id or ""
        )
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=args.resource_group_name,
            resource_name=self.cluster.name,
            opts=pulumi.InvokeOutputOptions(depends_on=[deployer_admin]),
        )
        self.kubeconfig = pulumi.Output.secret(credentials.kubeconfigs[0].value.apply(azure_cli_kubeconfig))
        self.register_outputs(
            {"clusterName": self.cluster.name, "oidcIssuerUrl": self.oidc_issuer_url, "kubeconfig": self.kubeconfig}
        )
