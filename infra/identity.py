"""Managed identities: one for the gateway, one for adapters with useWorkloadIdentity; federated
credentials binding each to its Kubernetes service account through the AKS OIDC issuer.

Upstream credentials (issue 18): on-behalf-of can only be done by the app registration the user's
token was issued to (``entraClientId``), never by a managed identity. So the gateway's service account
is also trusted by that app registration (a Graph federated identity credential, ``pulumi-azuread``):
the gateway presents its projected service-account token (AZURE_FEDERATED_TOKEN_FILE) as the client
assertion, and no client secret exists anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_azuread as azuread
from pulumi_azure_native import managedidentity

from infra.placement import Placement

# The audience Entra ID expects on Kubernetes service-account tokens exchanged by workload identity.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


def service_account_subject(namespace: str, service_account: str) -> str:
    """The ``sub`` claim of a Kubernetes service-account token."""
    return f"system:serviceaccount:{namespace}:{service_account}"


@dataclass
class IdentityArgs:
    """The OIDC issuer of the cluster and the two service accounts that may use the identities."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    gateway_namespace: str
    gateway_service_account: str
    adapter_namespace: str
    workload_service_account: str
    tags: Mapping[str, str] = field(default_factory=dict)
    entra_client_id: str | None = None
    """The gateway's app registration; set → it trusts the gateway's service account (on-behalf-of)."""


class Identities(pulumi.ComponentResource):
    """User-assigned identities of the gateway and of adapter workloads.

    The gateway identity gets data-plane roles on Cosmos DB and Redis (granted by those components).
    The workload identity gets no roles here: operators grant it what their adapters need.
    """

    gateway: managedidentity.UserAssignedIdentity
    workload: managedidentity.UserAssignedIdentity

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Identities", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        common = Placement(resource_group_name=args.resource_group_name, location=args.location, tags=args.tags)
        self.gateway = managedidentity.UserAssignedIdentity(f"{name}-gateway", **common, opts=child)
        self.workload = managedidentity.UserAssignedIdentity(f"{name}-workload", **common, opts=child)
        for identity, label, subject in (
            (self.gateway, "gateway", service_account_subject(args.gateway_namespace, args.gateway_service_account)),
            (self.workload, "workload", service_account_subject(args.adapter_namespace, args.workload_service_account)),
        ):
            managedidentity.FederatedIdentityCredential(
                f"{name}-{label}-federation",
                resource_group_name=args.resource_group_name,
                resource_name_=identity.name,
                federated_identity_credential_resource_name=f"aks-{label}",
                issuer=args.oidc_issuer_url,
                subject=subject,
                audiences=[TOKEN_EXCHANGE_AUDIENCE],
                opts=child,
            )
        self.app_federation: azuread.ApplicationFederatedIdentityCredential | None = None
        if args.entra_client_id:
            app = azuread.get_application_output(
                client_id=args.entra_client_id, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            self.app_federation = azuread.ApplicationFederatedIdentityCredential(
                f"{name}-gateway-app-federation",
                application_id=app.id,
                display_name="mcp-gateway-aks",
                description="The gateway's Kubernetes service account, for on-behalf-of (upstreamAuth entra-obo).",
                issuer=args.oidc_issuer_url,
                subject=service_account_subject(args.gateway_namespace, args.gateway_service_account),
                audiences=[TOKEN_EXCHANGE_AUDIENCE],
                opts=child,
            )
        self.register_outputs(
            {
                "gatewayAppFederatedCredential": self.app_federation.credential_id if self.app_federation else None,
                "gatewayClientId": self.gateway.client_id,
                "gatewayPrincipalId": self.gateway.principal_id,
                "workloadClientId": self.workload.client_id,
            }
        )
