"""Container registry: ACR with the admin user off; the AKS kubelet identity may pull."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import authorization, containerregistry

from infra.azure_roles import ACR_PULL, role_definition_id


@dataclass
class RegistryArgs:
    """Registry name (globally unique, letters and digits), SKU, and who pulls."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    registry_name: pulumi.Input[str]
    sku: str
    subscription_id: pulumi.Input[str]
    kubelet_object_id: pulumi.Input[str]
    tags: Mapping[str, str] = field(default_factory=dict)


class Registry(pulumi.ComponentResource):
    """ACR reached with Entra ID only: no admin user, no anonymous pull; AcrPull for the kubelet."""

    registry: containerregistry.Registry
    login_server: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.registry = containerregistry.Registry(
            f"{name}-acr",
            resource_group_name=args.resource_group_name,
            location=args.location,
            registry_name=args.registry_name,
            sku={"name": args.sku},
            admin_user_enabled=False,
            anonymous_pull_enabled=False,
            public_network_access="Enabled",
            tags=args.tags,
            opts=child,
        )
        authorization.RoleAssignment(
            f"{name}-kubelet-acrpull",
            scope=self.registry.id,
            role_definition_id=role_definition_id(args.subscription_id, ACR_PULL),
            principal_id=args.kubelet_object_id,
            principal_type="ServicePrincipal",
            opts=child,
        )
        self.login_server = self.registry.login_server
        self.register_outputs({"loginServer": self.login_server})
