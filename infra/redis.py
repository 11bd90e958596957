"""Session records' Redis: Azure Managed Redis (Entra ID auth, TLS only) on Azure, a small in-cluster
Redis on the local stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_azure_native import redisenterprise

from infra.gateway_k8s import GATEWAY_SELECTOR, container_security, pod_security
from infra.network import private_endpoint

# Azure Managed Redis serves its database on this TLS port.
MANAGED_REDIS_PORT = 10000
PRIVATE_DNS_ZONE = "privatelink.redis.azure.net"
# Session records and the indexes adapter deletion relies on must never be evicted: an evicting
# policy silently revokes sessions when memory runs short (DESIGN §8). A full Redis answers
# writes with OOM errors instead, which the gateway reports as a dependency failure.
EVICTION_POLICY = "NoEviction"


@dataclass
class ManagedRedisArgs:
    """Cluster name (unique in the region), SKU, and the identity that may use it."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    sku: str
    high_availability: bool
    gateway_principal_id: pulumi.Input[str]
    zones: list[str] = field(default_factory=list)
    private_endpoint: bool = False
    private_endpoint_subnet_id: pulumi.Input[str] | None = None
    vnet_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class ManagedRedis(pulumi.ComponentResource):
    """Azure Managed Redis with access keys off: the gateway identity signs in with Entra ID over TLS."""

    cluster: redisenterprise.RedisEnterprise
    database: redisenterprise.Database
    host: pulumi.Output[str]
    url: pulumi.Output[str]
    """``rediss://<host>:10000/0`` — no credential in it (the token comes from the managed identity)."""

    def __init__(self, name: str, args: ManagedRedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:azure:ManagedRedis", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = redisenterprise.RedisEnterprise(
            f"{name}-cluster",
            resource_group_name=args.resource_group_name,
            location=args.location,
            cluster_name=args.cluster_name,
            sku={"name": args.sku},
            minimum_tls_version="1.2",
            high_availability="Enabled" if args.high_availability else "Disabled",
            public_network_access="Disabled" if args.private_endpoint else "Enabled",
            zones=args.zones or None,
            tags=args.tags,
            opts=child,
        )
        self.database = redisenterprise.Database(
            f"{name}-database",
            resource_group_name=args.resource_group_name,
            cluster_name=self.cluster.name,
            database_name="default",
            client_protocol="Encrypted",
            port=MANAGED_REDIS_PORT,
            # One endpoint a plain (non-cluster) client can use.
            clustering_policy="NoCluster",
            eviction_policy=EVICTION_POLICY,
            access_keys_authentication="Disabled",
            opts=child,
        )
        redisenterprise.AccessPolicyAssignment(
            f"{name}-gateway-access",
            resource_group_name=args.resource_group_name,
            cluster_name=self.cluster.name,
            database_name=self.database.name,
            access_policy_assignment_name="mcpgateway",
            access_policy_name="default",
            user={"object_id": args.gateway_principal_id},
            opts=child,
        )
        if args.private_endpoint:
            if args.private_endpoint_subnet_id is None or args.vnet_id is None:
                raise ValueError("a Redis private endpoint needs the private-endpoint subnet and the VNet")
            private_endpoint(
                "redis",
                resource_group_name=args.resource_group_name,
                location=args.location,
                subnet_id=args.private_endpoint_subnet_id,
                vnet_id=args.vnet_id,
                target_id=self.cluster.id,
                group_id="redisEnterprise",
                zone_name=PRIVATE_DNS_ZONE,
                tags=args.tags,
                opts=child,
            )
        self.host = self.cluster.host_name
        self.url = pulumi.Output.concat("rediss://", self.host, f":{MANAGED_REDIS_PORT}/0")
        self.register_outputs({"host": self.host, "url": self.url})


REDIS_NAME = "redis"
REDIS_LABELS = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/part-of": "mcp-gateway"}
REDIS_UID = 999  # the redis user of the official image


@dataclass
class InClusterRedisArgs:
    """Namespace and image of the in-cluster Redis."""

    namespace: pulumi.Input[str]
    image: str
    provider: k8s.Provider


class InClusterRedis(pulumi.ComponentResource):
    """One Redis pod and its Service, password-protected, reachable only from gateway pods.

    Session records are short-lived and rebuilt by clients (a lost session gets 404 and the client
    re-initializes), so it keeps nothing on disk.
    """

    host: pulumi.Output[str]
    url: pulumi.Output[str]
    """``redis://:<password>@redis.<ns>.svc:6379/0``, a Pulumi secret."""

    def __init__(self, name: str, args: InClusterRedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:local:InClusterRedis", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        password = random.RandomPassword(
            f"{name}-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        secret_password: pulumi.Output[str] = pulumi.Output.secret(password.result)
        meta = {"name": REDIS_NAME, "namespace": args.namespace, "labels": REDIS_LABELS}
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=meta,
            type="Opaque",
            string_data=pulumi.Output.secret({"password": secret_password}),
            opts=child,
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta,
            spec={
                "replicas": 1,
                "selector": {"match_labels": REDIS_LABELS},
                "template": {
                    "metadata": {"labels": REDIS_LABELS},
                    "spec": {
                        "automount_service_account_token": False,
                        "enable_service_links": False,
                        "security_context": pod_security(REDIS_UID),
                        "containers": [
                            {
                                "name": "redis",
                                "image": args.image,
                                "command": ["redis-server"],
                                # $(VAR) is expanded by Kubernetes from the env below.
                                "args": [
                                    "--requirepass",
                                    "$(REDIS_PASSWORD)",
                                    "--save",
                                    "",
                                    "--appendonly",
                                    "no",
                                    "--dir",
                                    "/data",
                                ],
                                "env": [
                                    {
                                        "name": "REDIS_PASSWORD",
                                        "value_from": {
                                            "secret_key_ref": {"name": secret.metadata.name, "key": "password"}
                                        },
                                    }
                                ],
                                "ports": [{"name": "redis", "container_port": 6379, "protocol": "TCP"}],
                                "readiness_probe": {"tcp_socket": {"port": "redis"}, "period_seconds": 5},
                                "liveness_probe": {"tcp_socket": {"port": "redis"}, "period_seconds": 20},
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "64Mi"},
                                    "limits": {"cpu": "500m", "memory": "256Mi"},
                                },
                                "security_context": container_security(),
                                "volume_mounts": [{"name": "data", "mount_path": "/data"}],
                            }
                        ],
                        "volumes": [{"name": "data", "empty_dir": {}}],
                    },
                },
            },
            opts=child,
        )
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta,
            spec={
                "type": "ClusterIP",
                "selector": REDIS_LABELS,
                "ports": [{"name": "redis", "port": 6379, "target_port": "redis", "protocol": "TCP"}],
            },
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-from-gateway",
            metadata={"name": "redis-from-gateway", "namespace": args.namespace, "labels": REDIS_LABELS},
            spec={
                "pod_selector": {"match_labels": REDIS_LABELS},
                "policy_types": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"pod_selector": {"match_labels": GATEWAY_SELECTOR}}],
                        "ports": [{"port": 6379, "protocol": "TCP"}],
                    }
                ],
            },
            opts=child,
        )
        self.host = pulumi.Output.concat(REDIS_NAME, ".", args.namespace, ".svc")
        self.url = pulumi.Output.secret(pulumi.Output.concat("redis://:", secret_password, "@", self.host, ":6379/0"))
        self.register_outputs({"host": self.host, "url": self.url})
