"""Application Gateway v2: the public HTTPS entry of the gateway.

HTTPS listener (certificate from config or Key Vault), HTTP→HTTPS redirect, a backend timeout long
enough for SSE streams, response buffering off so events are not held back, a health probe on
/readyz, and an optional WAF policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_azure_native import authorization, managedidentity, monitor, network

from infra.azure_roles import KEY_VAULT_SECRETS_USER, role_definition_id
from infra.placement import Placement

FRONTEND_IP = "public"
HTTPS_PORT = "https"
HTTP_PORT = "http"
HTTPS_LISTENER = "https"
HTTP_LISTENER = "http"
CERTIFICATE = "gateway-tls"
BACKEND_POOL = "gateway"
BACKEND_SETTINGS = "gateway-http"
PROBE = "gateway-readyz"
REDIRECT = "http-to-https"


@dataclass
class AppGatewayArgs:
    """Everything the App Gateway needs; see the appGateway*, tls*, dnsLabel and hostName keys."""

    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
    location: pulumi.Input[str]
    gateway_name: str
    subnet_id: pulumi.Input[str]
    backend_ip: str
    backend_port: int
    dns_label: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    workspace_id: pulumi.Input[str]
    host_name: str = ""
    request_timeout_seconds: int = 3600
    idle_timeout_minutes: int = 30
    """TCP idle timeout of the frontend public IP (4 to 30 minutes)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """The gateway's own body limit (Settings.max_body_bytes): the WAF must not refuse less."""
    min_capacity: int = 1
    max_capacity: int = 3
    zones: list[str] = field(default_factory=list)
    waf: bool = False
    waf_mode: str = "Prevention"
    tls_certificate: pulumi.Output[str] | None = None
    tls_certificate_password: pulumi.Output[str] | None = None
    tls_key_vault_secret_id: str = ""
    tls_key_vault_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


# With DRS 2.1 / CRS 3.2+ the WAF inspects request bodies up to 2000 KB.
WAF_INSPECT_LIMIT_KB = 2000


def waf_policy_settings(mode: str, max_body_bytes: int) -> network.PolicySettingsArgsDict:
    """WAF policy settings that never refuse a body the gateway accepts (decided 2026-11-30, issue 14).

    The gateway accepts MCP bodies up to 4 MiB (Settings.max_body_bytes) and answers larger ones
    with its own 413; the WAF's largest enforced body limit is 2000 KB, so with enforcement on,
    Prevention mode would answer 413 to valid MCP requests between 2000 KB and 4 MiB. So: the WAF
    still inspects the first 2000 KB of every body (request_body_check), but does not enforce a size
    (request_body_enforcement off); the gateway enforces it. Should the gateway's limit ever fall to
    2000 KB or less, enforcement comes back on at that size.
    """
    limit_kb = max_body_bytes // 1024
    enforce = limit_kb <= WAF_INSPECT_LIMIT_KB
    return {
        "state": "Enabled",
        "mode": mode,
        "request_body_check": True,
        "request_body_enforcement": enforce,
        "request_body_inspect_limit_in_kb": min(limit_kb, WAF_INSPECT_LIMIT_KB),
        "max_request_body_size_in_kb": min(limit_kb, WAF_INSPECT_LIMIT_KB),
        "file_upload_limit_in_mb": 100,
    }


class AppGateway(pulumi.ComponentResource):
    """Public IP + Application Gateway (+ WAF policy, + identity for Key Vault certificates)."""

    public_ip: network.PublicIPAddress
    app_gateway: network.ApplicationGateway
    host: pulumi.Output[str]
    """The public host name: hostName when set, else the public IP's Azure FQDN."""
    fqdn: pulumi.Output[str]
    """``<dnsLabel>.<location>.cloudapp.azure.com``: where a hostName's CNAME record points."""

    def __init__(self, name: str, args: AppGatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:AppGateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rg = args.resource_group_name
        common: Placement = {"resource_group_name": rg, "location": args.location, "tags": args.tags}
        self.public_ip = network.PublicIPAddress(
            f"{name}-ip",
            **common,
            sku={"name": "Standard", "tier": "Regional"},
            public_ip_allocation_method="Static",
            public_ip_address_version="IPv4",
            dns_settings={"domain_name_label": args.dns_label},
            idle_timeout_in_minutes=args.idle_timeout_minutes,
            zones=args.zones or None,
            opts=child,
        )

        extra: dict[str, Any] = {}
        certificate: network.ApplicationGatewaySslCertificateArgsDict = {"name": CERTIFICATE}
        if args.tls_key_vault_secret_id:
            # The App Gateway reads the certificate with its own identity.
            identity = managedidentity.UserAssignedIdentity(f"{name}-identity", **common, opts=child)
            grant = authorization.RoleAssignment(
                f"{name}-keyvault-secrets-user",
                scope=args.tls_key_vault_id,
                role_definition_id=role_definition_id(args.subscription_id, KEY_VAULT_SECRETS_USER),
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
                opts=child,
            )
            extra["identity"] = {"type": "UserAssigned", "user_assigned_identities": [identity.id]}
            certificate["key_vault_secret_id"] = args.tls_key_vault_secret_id
            depends: list[pulumi.Resource] = [grant]
        else:
            if args.tls_certificate is None:
                raise ValueError("the HTTPS listener needs tls_certificate or tls_key_vault_secret_id")
            certificate["data"] = pulumi.Output.secret(args.tls_certificate)
            if args.tls_certificate_password is not None:
                certificate["password"] = pulumi.Output.secret(args.tls_certificate_password)
            depends = []

        if args.waf:
            policy = network.WebApplicationFirewallPolicy(
                f"{name}-waf",
                **common,
                policy_settings=waf_policy_settings(args.waf_mode, args.max_body_bytes),
                managed_rules={
                    "managed_rule_sets": [{"rule_set_type": "Microsoft_DefaultRuleSet", "rule_set_version": "2.1"}]
                },
                opts=child,
            )
            extra["firewall_policy"] = {"id": policy.id}

        gateway_id = pulumi.Output.concat(
            args.resource_group_id, "/providers/Microsoft.Network/applicationGateways/", args.gateway_name
        )

        def ref(kind: str, sub: str) -> network.SubResourceArgsDict:
            return {"id": pulumi.Output.concat(gateway_id, "/", kind, "/", sub)}

        https_listener: network.ApplicationGatewayHttpListenerArgsDict = {
            "name": HTTPS_LISTENER,
            "protocol": "Https",
            "frontend_ip_configuration": ref("frontendIPConfigurations", FRONTEND_IP),
            "frontend_port": ref("frontendPorts", HTTPS_PORT),
            "ssl_certificate": ref("sslCertificates", CERTIFICATE),
        }
        http_listener: network.ApplicationGatewayHttpListenerArgsDict = {
            "name": HTTP_LISTENER,
            "protocol": "Http",
            "frontend_ip_configuration": ref("frontendIPConfigurations", FRONTEND_IP),
            "frontend_port": ref("frontendPorts", HTTP_PORT),
        }
        if args.host_name:
            https_listener["host_name"] = http_listener["host_name"] = args.host_name
        probe_host = args.host_name or args.backend_ip
        self.app_gateway = network.ApplicationGateway(
            f"{name}-appgateway",
            **common,
            application_gateway_name=args.gateway_name,
            sku={"name": "WAF_v2" if args.waf else "Standard_v2", "tier": "WAF_v2" if args.waf else "Standard_v2"},
            autoscale_configuration={"min_capacity": args.min_capacity, "max_capacity": args.max_capacity},
            zones=args.zones or None,
            enable_http2=True,
            # SSE: pass events through as they come. The WAF inspects request bodies, so it needs
            # request buffering; without the WAF, uploads stream too.
            global_configuration={"enable_response_buffering": False, "enable_request_buffering": args.waf},
            gateway_ip_configurations=[{"name": "gateway-subnet", "subnet": {"id": args.subnet_id}}],
            frontend_ip_configurations=[{"name": FRONTEND_IP, "public_ip_address": {"id": self.public_ip.id}}],
            frontend_ports=[{"name": HTTPS_PORT, "port": 443}, {"name": HTTP_PORT, "port": 80}],
            ssl_certificates=[certificate],
            ssl_policy={"policy_type": "Predefined", "policy_name": "AppGwSslPolicy20220101S"},
            http_listeners=[https_listener, http_listener],
            redirect_configurations=[
                {
                    "name": REDIRECT,
                    "redirect_type": "Permanent",
                    "target_listener": ref("httpListeners", HTTPS_LISTENER),
                    "include_path": True,
                    "include_query_string": True,
                }
            ],
            backend_address_pools=[{"name": BACKEND_POOL, "backend_addresses": [{"ip_address": args.backend_ip}]}],
            probes=[
                {
                    "name": PROBE,
                    "protocol": "Http",
                    "host": probe_host,
                    "path": "/readyz",
                    "interval": 10,
                    "timeout": 5,
                    "unhealthy_threshold": 3,
                    "pick_host_name_from_backend_http_settings": False,
                    "match": {"status_codes": ["200"]},
                }
            ],
            backend_http_settings_collection=[
                {
                    "name": BACKEND_SETTINGS,
                    "port": args.backend_port,
                    "protocol": "Http",
                    "cookie_based_affinity": "Disabled",
                    "request_timeout": args.request_timeout_seconds,
                    "pick_host_name_from_backend_address": False,
                    "probe": ref("probes", PROBE),
                    "connection_draining": {"enabled": True, "drain_timeout_in_sec": 60},
                }
            ],
            request_routing_rules=[
                {
                    "name": "https-to-gateway",
                    "rule_type": "Basic",
                    "priority": 100,
                    "http_listener": ref("httpListeners", HTTPS_LISTENER),
                    "backend_address_pool": ref("backendAddressPools", BACKEND_POOL),
                    "backend_http_settings": ref("backendHttpSettingsCollection", BACKEND_SETTINGS),
                },
                {
                    "name": "http-redirect",
                    "rule_type": "Basic",
                    "priority": 200,
                    "http_listener": ref("httpListeners", HTTP_LISTENER),
                    "redirect_configuration": ref("redirectConfigurations", REDIRECT),
                },
            ],
            **extra,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=depends)),
        )
        monitor.DiagnosticSetting(
            f"{name}-diagnostics",
            resource_uri=self.app_gateway.id,
            workspace_id=args.workspace_id,
            logs=[{"category_group": "allLogs", "enabled": True}],
            metrics=[{"category": "AllMetrics", "enabled": True}],
            opts=child,
        )
        self.fqdn = self.public_ip.dns_settings.apply(lambda d: (d.fqdn or "") if d else "")
        self.host = pulumi.Output.from_input(args.host_name) if args.host_name else self.fqdn
        self.register_outputs({"host": self.host, "publicIp": self.public_ip.ip_address})
