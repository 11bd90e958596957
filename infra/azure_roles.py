"""Built-in Azure role definitions the program assigns, by name."""

from __future__ import annotations

import pulumi

# Role definition GUIDs are the same in every Azure tenant.
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
AKS_RBAC_CLUSTER_ADMIN = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
# Cosmos DB data-plane role (a Cosmos SQL role, not an ARM role): read and write items.
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    """The ARM id of a built-in role definition in the subscription."""
    return pulumi.Output.concat(
        "/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )
