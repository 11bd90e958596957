"""Cosmos DB (NoSQL API): Entra ID only (local auth off), the database and the adapters container
(partition key /id), a data-plane role for the gateway identity, and an optional private endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_random as random
from pulumi_azure_native import cosmosdb

from infra.azure_roles import COSMOS_DATA_CONTRIBUTOR
from infra.network import private_endpoint

PRIVATE_DNS_ZONE = "privatelink.documents.azure.com"


@dataclass
class CosmosArgs:
    """Account options; see the cosmos* keys in infra/README.md."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    account_name: pulumi.Input[str]
    database: str
    container: str
    gateway_principal_id: pulumi.Input[str]
    serverless: bool = True
    autoscale_max_throughput: int = 1000
    zone_redundant: bool = False
    private_endpoint: bool = False
    private_endpoint_subnet_id: pulumi.Input[str] | None = None
    vnet_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class Cosmos(pulumi.ComponentResource):
    """The metadata store of the gateway (MCPGW_STORE=cosmos)."""

    account: cosmosdb.DatabaseAccount
    database: cosmosdb.SqlResourceSqlDatabase
    container: cosmosdb.SqlResourceSqlContainer
    endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: CosmosArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Cosmos", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rg = args.resource_group_name
        self.account = cosmosdb.DatabaseAccount(
            f"{name}-account",
            resource_group_name=rg,
            location=args.location,
            account_name=args.account_name,
            kind="GlobalDocumentDB",
            database_account_offer_type=cosmosdb.DatabaseAccountOfferType.STANDARD,
            locations=[
                {"location_name": args.location, "failover_priority": 0, "is_zone_redundant": args.zone_redundant}
            ],
            consistency_policy={"default_consistency_level": cosmosdb.DefaultConsistencyLevel.SESSION},
            capabilities=[{"name": "EnableServerless"}] if args.serverless else [],
            # Entra ID only: no account keys for data, no key-based metadata writes.
            disable_local_auth=True,
            disable_key_based_metadata_write_access=True,
            minimal_tls_version="Tls12",
            public_network_access="Disabled" if args.private_endpoint else "Enabled",
            tags=args.tags,
            opts=child,
        )
        self.database = cosmosdb.SqlResourceSqlDatabase(
            f"{name}-database",
            resource_group_name=rg,
            account_name=self.account.name,
            database_name=args.database,
            resource={"id": args.database},
            opts=child,
        )
        container_options: cosmosdb.CreateUpdateOptionsArgsDict | None = (
            None if args.serverless else {"autoscale_settings": {"max_throughput": args.autoscale_max_throughput}}
        )
        self.container = cosmosdb.SqlResourceSqlContainer(
            f"{name}-adapters",
            resource_group_name=rg,
            account_name=self.account.name,
            database_name=self.database.name,
            container_name=args.container,
            resource={"id": args.container, "partition_key": {"paths": ["/id"], "kind": "Hash", "version": 2}},
            options=container_options,
            opts=child,
        )
        cosmosdb.SqlResourceSqlRoleAssignment(
            f"{name}-gateway-data-contributor",
            resource_group_name=rg,
            account_name=self.account.name,
            role_assignment_id=random.RandomUuid(f"{name}-gateway-role-assignment-id", opts=child).result,
            principal_id=args.gateway_principal_id,
            role_definition_id=pulumi.Output.concat(self.account.id, "/sqlRoleDefinitions/", COSMOS_DATA_CONTRIBUTOR),
            scope=self.account.id,
            opts=child,
        )
        if args.private_endpoint:
            if args.private_endpoint_subnet_id is None or args.vnet_id is None:
                raise ValueError("a Cosmos private endpoint needs the private-endpoint subnet and the VNet")
            self._private_endpoint(name, args, child)
        self.endpoint = self.account.document_endpoint
        self.register_outputs({"endpoint": self.endpoint})

    def _private_endpoint(self, name: str, args: CosmosArgs, child: pulumi.ResourceOptions) -> None:
        assert args.private_endpoint_subnet_id is not None and args.vnet_id is not None
        private_endpoint(
            "cosmos",
            resource_group_name=args.resource_group_name,
            location=args.location,
            subnet_id=args.private_endpoint_subnet_id,
            vnet_id=args.vnet_id,
            target_id=self.account.id,
            group_id="Sql",
            zone_name=PRIVATE_DNS_ZONE,
            tags=args.tags,
            opts=child,
        )
