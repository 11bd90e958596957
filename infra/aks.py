"""AKS: OIDC issuer and workload identity, Azure CNI with an enforcing NetworkPolicy engine, Azure RBAC,
a tainted node pool for adapters, and Container Insights through a data collection rule."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import yaml
from pulumi_azure_native import authorization, containerservice, managedidentity, monitor

from infra.azure_roles import AKS_RBAC_CLUSTER_ADMIN, NETWORK_CONTRIBUTOR, role_definition_id

SYSTEM_POOL = "system"
ADAPTER_POOL = "adapters"
# Adapter pods (untrusted images) run only on the adapter pool, and nothing else does: the pool is
# tainted, and the Kubernetes runtime (gateway/runtime) gives adapter pods the matching toleration
# and node selector.
ADAPTER_TAINT_KEY = "mcp-gateway/adapter"
ADAPTER_TAINT_VALUE = "true"
ADAPTER_TAINT_EFFECT = "NoSchedule"
ADAPTER_TAINT = f"{ADAPTER_TAINT_KEY}={ADAPTER_TAINT_VALUE}:{ADAPTER_TAINT_EFFECT}"
ADAPTER_NODE_LABEL = ("mcp-gateway/pool", "adapter")
# The Premium tier is only sold with long-term support (AKS refuses Premium with KubernetesOfficial).
PREMIUM_SUPPORT_PLAN = "AKSLongTermSupport"
CONTAINER_INSIGHTS_STREAM = "Microsoft-ContainerInsights-Group-Default"


@dataclass
class AksArgs:
    """Cluster shape; see the aks* keys in infra/README.md."""

    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
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
    adapter_vm_size: str = "Standard_D4ds_v5"
    adapter_min_nodes: int = 1
    adapter_max_nodes: int = 5
    deployer_principal_type: str = "User"
    kube_login: str = "azurecli"
    tags: Mapping[str, str] = field(default_factory=dict)


def kubeconfig_for(encoded: str, login: str = "azurecli") -> str:
    """The AKS user kubeconfig, with kubelogin switched to a non-interactive login mode.

    With Azure RBAC and local accounts off, the kubeconfig AKS returns runs ``kubelogin`` in
    device-code mode, which cannot answer inside ``pulumi up``. ``login`` (config ``kubeLogin``)
    picks what the deployer has: ``azurecli`` (an ``az login`` session, also what GitHub's
    ``azure/login`` leaves behind), ``spn`` (a client secret in ``AAD_SERVICE_PRINCIPAL_CLIENT_ID``/
    ``_SECRET`` or ``AZURE_CLIENT_ID``/``_SECRET``), ``workloadidentity`` (a federated token:
    ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``), ``msi`` or ``azd``.
    Only the server id, tenant and environment are kept from AKS's arguments: its ``--client-id``
    is the device-code client, which would override the service principal's. The admin credential
    is not an option (decided 2026-11-30, issue 14): local accounts are off, so that every access
    to the cluster is an Entra ID identity under Azure RBAC.
    """
    doc: dict[str, Any] = yaml.safe_load(base64.b64decode(encoded).decode())
    for user in doc.get("users") or []:
        exec_ = (user.get("user") or {}).get("exec")
        if not exec_ or "kubelogin" not in str(exec_.get("command", "")):
            continue
        args = list(exec_.get("args") or [])
        kept: list[str] = []
        for flag in ("--server-id", "--tenant-id", "--environment"):
            if flag in args and args.index(flag) + 1 < len(args):
                kept += [flag, args[args.index(flag) + 1]]
        if login in ("azurecli", "azd", "msi"):
            # These read the tenant from the login itself; a stale --tenant-id only gets in the way.
            kept = [a for i, a in enumerate(kept) if a != "--tenant-id" and (i == 0 or kept[i - 1] != "--tenant-id")]
        exec_["args"] = ["get-token", "--login", login, *kept]
        exec_["interactiveMode"] = "Never"
    return yaml.safe_dump(doc, sort_keys=False)


class Aks(pulumi.ComponentResource):
    """The cluster, its control-plane identity, the adapter pool, Container Insights, and the
    deployer's cluster-admin role.

    Ordering matters on a first ``up`` (2026-11-30, issue 14): role assignments take minutes to
    propagate, so each one is created *before* what needs it. The control-plane identity is
    user-assigned and gets Network Contributor on the node subnet before the cluster exists (with a
    system-assigned identity the grant could only follow the cluster and raced the internal load
    balancer). The deployer's AKS RBAC Cluster Admin is granted on the resource group, also before
    the cluster, so it has propagated by the time the Kubernetes provider makes its first call.
    """

    cluster: containerservice.ManagedCluster
    adapter_pool: containerservice.AgentPool
    control_plane_identity: managedidentity.UserAssignedIdentity
    deployer_admin: authorization.RoleAssignment
    oidc_issuer_url: pulumi.Output[str]
    kubelet_object_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """A kubeconfig for the Kubernetes provider, as a Pulumi secret."""

    def __init__(self, name: str, args: AksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Aks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.control_plane_identity = managedidentity.UserAssignedIdentity(
            f"{name}-control-plane",
            resource_group_name=args.resource_group_name,
            location=args.location,
            tags=args.tags,
            opts=child,
        )
        # The control plane manages the internal load balancer in the (custom) node subnet.
        subnet_grant = authorization.RoleAssignment(
            f"{name}-subnet-network-contributor",
            scope=args.subnet_id,
            role_definition_id=role_definition_id(args.subscription_id, NETWORK_CONTRIBUTOR),
            principal_id=self.control_plane_identity.principal_id,
            principal_type="ServicePrincipal",
            opts=child,
        )
        # Azure RBAC is on and local accounts are off: whoever runs `pulumi up` needs a cluster role
        # to deploy the gateway's Kubernetes objects.
        self.deployer_admin = authorization.RoleAssignment(
            f"{name}-deployer-cluster-admin",
            scope=args.resource_group_id,
            role_definition_id=role_definition_id(args.subscription_id, AKS_RBAC_CLUSTER_ADMIN),
            principal_id=args.deployer_object_id,
            principal_type=args.deployer_principal_type,
            opts=child,
        )
        network_profile: containerservice.ContainerServiceNetworkProfileArgsDict = {
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
        pool: containerservice.ManagedClusterAgentPoolProfileArgsDict = {
            "name": SYSTEM_POOL,
            "mode": "System",
            "type": "VirtualMachineScaleSets",
            "os_type": "Linux",
            "os_sku": "AzureLinux",
            "vm_size": args.vm_size,
            "enable_auto_scaling": True,
            # The initial size only: the autoscaler owns it afterwards (ignore_changes below).
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
        if args.tier == "Premium":
            extra["support_plan"] = PREMIUM_SUPPORT_PLAN
        self.cluster = containerservice.ManagedCluster(
            f"{name}-cluster",
            resource_group_name=args.resource_group_name,
            location=args.location,
            resource_name_=args.cluster_name,
            dns_prefix=args.cluster_name,
            identity={
                "type": containerservice.ResourceIdentityType.USER_ASSIGNED,
                "user_assigned_identities": [self.control_plane_identity.id],
            },
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
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    depends_on=[subnet_grant, self.deployer_admin],
                    ignore_changes=["agentPoolProfiles[0].count"],
                ),
            ),
        )
        adapter_pool: dict[str, Any] = {}
        if args.availability_zones:
            adapter_pool["availability_zones"] = args.availability_zones
        self.adapter_pool = containerservice.AgentPool(
            f"{name}-adapter-pool",
            resource_group_name=args.resource_group_name,
            resource_name_=self.cluster.name,
            agent_pool_name=ADAPTER_POOL,
            mode="User",
            type="VirtualMachineScaleSets",
            os_type="Linux",
            os_sku="AzureLinux",
            vm_size=args.adapter_vm_size,
            enable_auto_scaling=True,
            count=max(args.adapter_min_nodes, 1),
            min_count=args.adapter_min_nodes,
            max_count=args.adapter_max_nodes,
            vnet_subnet_id=args.subnet_id,
            node_taints=[ADAPTER_TAINT],
            node_labels=dict([ADAPTER_NODE_LABEL]),
            upgrade_settings={"max_surge": "33%"},
            **adapter_pool,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["count"])),
        )
        self._container_insights(name, args, child)
        self.oidc_issuer_url = self.cluster.oidc_issuer_profile.apply(lambda p: (p.issuer_url or "") if p else "")
        self.kubelet_object_id = self.cluster.identity_profile.apply(
            lambda profiles: (profiles or {})["kubeletidentity"].object_id or ""
        )
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=args.resource_group_name,
            resource_name=self.cluster.name,
            opts=pulumi.InvokeOutputOptions(depends_on=[self.deployer_admin]),
        )
        login = args.kube_login
        self.kubeconfig = pulumi.Output.secret(
            credentials.kubeconfigs[0].value.apply(lambda encoded: kubeconfig_for(encoded, login))
        )
        self.register_outputs(
            {"clusterName": self.cluster.name, "oidcIssuerUrl": self.oidc_issuer_url, "kubeconfig": self.kubeconfig}
        )

    def _container_insights(self, name: str, args: AksArgs, child: pulumi.ResourceOptions) -> None:
        """The omsagent add-on with AAD auth collects nothing until a data collection rule sends its
        stream to the workspace and is associated with the cluster (what the portal creates)."""
        rule = monitor.DataCollectionRule(
            f"{name}-container-insights",
            resource_group_name=args.resource_group_name,
            location=args.location,
            data_collection_rule_name=f"MSCI-{args.cluster_name}"[:64],
            kind="Linux",
            data_sources={
                "extensions": [
                    {
                        "name": "ContainerInsightsExtension",
                        "extension_name": "ContainerInsights",
                        "streams": [CONTAINER_INSIGHTS_STREAM],
                        "extension_settings": {
                            "dataCollectionSettings": {
                                "interval": "1m",
                                "namespaceFilteringMode": "Off",
                                "enableContainerLogV2": True,
                            }
                        },
                    }
                ]
            },
            destinations={"log_analytics": [{"name": "ciworkspace", "workspace_resource_id": args.workspace_id}]},
            data_flows=[{"streams": [CONTAINER_INSIGHTS_STREAM], "destinations": ["ciworkspace"]}],
            tags=args.tags,
            opts=child,
        )
        monitor.DataCollectionRuleAssociation(
            f"{name}-container-insights-association",
            association_name="ContainerInsightsExtension",
            resource_uri=self.cluster.id,
            data_collection_rule_id=rule.id,
            opts=child,
        )
