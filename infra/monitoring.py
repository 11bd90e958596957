"""Monitoring: a Log Analytics workspace and a workspace-based Application Insights component."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import applicationinsights, operationalinsights


@dataclass
class MonitoringArgs:
    """Where the workspace lives and how long it keeps logs."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    retention_days: int = 30
    tags: Mapping[str, str] = field(default_factory=dict)


class Monitoring(pulumi.ComponentResource):
    """Log Analytics (AKS container insights, App Gateway logs) and Application Insights (the gateway)."""

    workspace: operationalinsights.Workspace
    app_insights: applicationinsights.Component
    workspace_id: pulumi.Output[str]
    connection_string: pulumi.Output[str]
    """Application Insights connection string, as a Pulumi secret (it admits telemetry ingestion)."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.workspace = operationalinsights.Workspace(
            f"{name}-logs",
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku={"name": "PerGB2018"},
            retention_in_days=args.retention_days,
            tags=args.tags,
            opts=child,
        )
        self.app_insights = applicationinsights.Component(
            f"{name}-appinsights",
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="web",
            application_type="web",
            ingestion_mode="LogAnalytics",
            workspace_resource_id=self.workspace.id,
            tags=args.tags,
            opts=child,
        )
        self.workspace_id = self.workspace.id
        self.connection_string = pulumi.Output.secret(self.app_insights.connection_string)
        self.register_outputs({"workspaceId": self.workspace_id, "connectionString": self.connection_string})
