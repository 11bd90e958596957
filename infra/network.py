"""Virtual network: subnets for AKS, the Application Gateway and private endpoints, each with an NSG."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import network, privatedns

from infra.placement import Placement

AKS_SUBNET = "aks"
APP_GATEWAY_SUBNET = "appgateway"
PRIVATE_ENDPOINT_SUBNET = "private-endpoints"


@dataclass
class NetworkArgs:
    """Where the network lives and its address plan."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    address_space: str
    aks_subnet_prefix: str
    app_gateway_subnet_prefix: str
    private_endpoint_subnet_prefix: str
    tags: Mapping[str, str] = field(default_factory=dict)


def _rule(
    name: str, priority: int, source: str, ports: list[str], *, access: str = "Allow"
) -> network.SecurityRuleArgsDict:
    """One inbound NSG rule. Azure accepts ``*`` (any port) only in the singular
    ``destination_port_range``; the plural takes real ranges only (``SecurityRuleInvalidPortRange``)."""
    rule: network.SecurityRuleArgsDict = {
        "name": name,
        "priority": priority,
        "direction": "Inbound",
        "access": access,
        "protocol": "Tcp" if ports != ["*"] else "*",
        "source_address_prefix": source,
        "source_port_range": "*",
        "destination_address_prefix": "*",
    }
    if len(ports) == 1:
        rule["destination_port_range"] = ports[0]
    else:
        if "*" in ports:
            raise ValueError(f"NSG rule {name}: '*' cannot be combined with other port ranges")
        rule["destination_port_ranges"] = ports
    return rule


class Network(pulumi.ComponentResource):
    """VNet with three subnets and their network security groups.

    The subnets are declared inline in the VNet so they are created in one operation (separate
    subnet resources on one VNet race each other).
    """

    vnet: network.VirtualNetwork
    vnet_id: pulumi.Output[str]
    aks_subnet_id: pulumi.Output[str]
    app_gateway_subnet_id: pulumi.Output[str]
    private_endpoint_subnet_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        common = Placement(resource_group_name=args.resource_group_name, location=args.location, tags=args.tags)

        # The default NSG rules already allow VNet and load-balancer traffic and deny the internet.
        aks_nsg = network.NetworkSecurityGroup(f"{name}-aks-nsg", **common, opts=child)
        # Application Gateway v2 needs its management ports (65200-65535) open to GatewayManager.
        agw_nsg = network.NetworkSecurityGroup(
            f"{name}-appgateway-nsg",
            **common,
            security_rules=[
                _rule("allow-gateway-manager", 100, "GatewayManager", ["65200-65535"]),
                _rule("allow-azure-load-balancer", 110, "AzureLoadBalancer", ["*"]),
                _rule("allow-https", 120, "Internet", ["443"]),
                _rule("allow-http-for-redirect", 130, "Internet", ["80"]),
            ],
            opts=child,
        )
        pe_nsg = network.NetworkSecurityGroup(f"{name}-private-endpoints-nsg", **common, opts=child)

        self.vnet = network.VirtualNetwork(
            f"{name}-vnet",
            **common,
            address_space={"address_prefixes": [args.address_space]},
            subnets=[
                {
                    "name": AKS_SUBNET,
                    "address_prefix": args.aks_subnet_prefix,
                    "network_security_group": {"id": aks_nsg.id},
                },
                {
                    "name": APP_GATEWAY_SUBNET,
                    "address_prefix": args.app_gateway_subnet_prefix,
                    "network_security_group": {"id": agw_nsg.id},
                },
                {
                    "name": PRIVATE_ENDPOINT_SUBNET,
                    "address_prefix": args.private_endpoint_subnet_prefix,
                    "network_security_group": {"id": pe_nsg.id},
                    # Let the NSG apply to private endpoints too.
                    "private_endpoint_network_policies": "Enabled",
                },
            ],
            opts=child,
        )
        self.vnet_id = self.vnet.id
        self.aks_subnet_id = pulumi.Output.concat(self.vnet.id, "/subnets/", AKS_SUBNET)
        self.app_gateway_subnet_id = pulumi.Output.concat(self.vnet.id, "/subnets/", APP_GATEWAY_SUBNET)
        self.private_endpoint_subnet_id = pulumi.Output.concat(self.vnet.id, "/subnets/", PRIVATE_ENDPOINT_SUBNET)
        self.register_outputs(
            {
                "vnetId": self.vnet_id,
                "aksSubnetId": self.aks_subnet_id,
                "appGatewaySubnetId": self.app_gateway_subnet_id,
                "privateEndpointSubnetId": self.private_endpoint_subnet_id,
            }
        )


def private_endpoint(
    name: str,
    *,
    resource_group_name: pulumi.Input[str],
    location: pulumi.Input[str],
    subnet_id: pulumi.Input[str],
    vnet_id: pulumi.Input[str],
    target_id: pulumi.Input[str],
    group_id: str,
    zone_name: str,
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> network.PrivateEndpoint:
    """A private endpoint for ``target_id`` plus its private DNS zone, linked to the VNet, so the
    service's usual host name resolves to the private address inside the VNet."""
    endpoint = network.PrivateEndpoint(
        f"{name}-private-endpoint",
        resource_group_name=resource_group_name,
        location=location,
        subnet={"id": subnet_id},
        private_link_service_connections=[
            {"name": group_id.lower(), "private_link_service_id": target_id, "group_ids": [group_id]}
        ],
        tags=tags,
        opts=opts,
    )
    zone = privatedns.PrivateZone(
        f"{name}-private-dns",
        resource_group_name=resource_group_name,
        location="Global",
        private_zone_name=zone_name,
        tags=tags,
        opts=opts,
    )
    privatedns.VirtualNetworkLink(
        f"{name}-private-dns-link",
        resource_group_name=resource_group_name,
        location="Global",
        private_zone_name=zone.name,
        virtual_network={"id": vnet_id},
        registration_enabled=False,
        opts=opts,
    )
    network.PrivateDnsZoneGroup(
        f"{name}-private-dns-group",
        resource_group_name=resource_group_name,
        private_endpoint_name=endpoint.name,
        private_dns_zone_group_name=name,
        private_dns_zone_configs=[{"name": name, "private_dns_zone_id": zone.id}],
        opts=opts,
    )
    return endpoint
