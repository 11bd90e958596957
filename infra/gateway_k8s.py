"""The gateway on Kubernetes: namespaces, service accounts, the runtime's RBAC, settings, the
Deployment and its Service, and the NetworkPolicies that keep adapter pods reachable only from it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

GATEWAY_NAME = "mcp-gateway"
GATEWAY_SERVICE_ACCOUNT = "mcp-gateway"
ADAPTER_SERVICE_ACCOUNT = "mcp-adapter"
WORKLOAD_SERVICE_ACCOUNT = "mcp-adapter-workload"
RUNTIME_ROLE = "mcp-gateway-runtime"
GATEWAY_PORT = 8000
ADAPTER_PORT = 8000
DATA_DIR = "/data"
GATEWAY_UID = 10001

GATEWAY_SELECTOR = {"app.kubernetes.io/name": GATEWAY_NAME, "app.kubernetes.io/component": "gateway"}
GATEWAY_LABELS = {**GATEWAY_SELECTOR, "app.kubernetes.io/part-of": "mcp-gateway"}
# Labels the Kubernetes runtime puts on every adapter pod (gateway/runtime).
ADAPTER_MANAGED_BY = {"app.kubernetes.io/managed-by": "mcp-gateway"}
WORKLOAD_IDENTITY_USE = "azure.workload.identity/use"
WORKLOAD_IDENTITY_CLIENT_ID = "azure.workload.identity/client-id"

# Exactly what the Kubernetes runtime does in the adapter namespace, nothing more.
RUNTIME_RULES: list[dict[str, Any]] = [
    {
        "api_groups": ["apps"],
        "resources": ["statefulsets"],
        "verbs": ["get", "list", "create", "update", "delete"],
    },
    {
        "api_groups": [""],
        "resources": ["services"],
        "verbs": ["get", "list", "create", "update", "delete"],
    },
    {"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"api_groups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def pod_security(uid: int) -> dict[str, Any]:
    """Pod security context meeting the `restricted` Pod Security Standard."""
    return {
        "run_as_non_root": True,
        "run_as_user": uid,
        "run_as_group": uid,
        "fs_group": uid,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    """Container security context meeting the `restricted` Pod Security Standard."""
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass
class ServiceExposure:
    """How the gateway Service is reached: ClusterIP (port-forward) or an internal load balancer."""

    type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass
class GatewayOnKubernetesArgs:
    """Everything the gateway's Kubernetes objects are made of.

    ``settings`` become the ConfigMap (plain values); ``secret_settings`` join the generated
    session key in the Secret and must be Pulumi secrets.
    """

    provider: k8s.Provider
    image: str | pulumi.Output[str]
    replicas: int
    namespace: str
    adapter_namespace: str
    settings: Mapping[str, pulumi.Input[str]]
    secret_settings: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"
    gateway_client_id: pulumi.Input[str] | None = None
    workload_client_id: pulumi.Input[str] | None = None
    exposure: ServiceExposure = field(default_factory=ServiceExposure)
    data_volume: Literal["emptyDir", "pvc"] = "emptyDir"
    data_volume_size: str = "1Gi"
    await_ready: bool = True


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class GatewayOnKubernetes(pulumi.ComponentResource):
    """Namespaces, service accounts, runtime Role, settings, Deployment, PDB, Service, NetworkPolicies.

    Workload identity is on when ``gateway_client_id`` is given: the gateway's service account is
    annotated with that client id and its pods are labelled for the identity webhook.
    """

    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    session_key: random.RandomBytes
    metrics_token: random.RandomPassword

    def __init__(self, name: str, args: GatewayOnKubernetesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mcp-gateway:kubernetes:Gateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        gw_ns, ad_ns = args.namespace, args.adapter_namespace
        workload_identity = args.gateway_client_id is not None

        namespaces = {}
        for label, ns in (("gateway", gw_ns), ("adapter", ad_ns)):
            namespaces[label] = k8s.core.v1.Namespace(
                f"{name}-{label}-namespace",
                metadata={
                    "name": ns,
                    "labels": {
                        # Adapter pods run as non-root with seccomp and no capabilities (gateway/runtime),
                        # so both namespaces can enforce the restricted standard.
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/warn": "restricted",
                        "app.kubernetes.io/part-of": "mcp-gateway",
                    },
                },
                opts=child,
            )
        in_gw = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespaces["gateway"]]))
        in_ad = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespaces["adapter"]]))

        def sa_meta(sa: str, ns: str, client_id: pulumi.Input[str] | None) -> dict[str, Any]:
            meta: dict[str, Any] = {"name": sa, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "mcp-gateway"}}
            if client_id is not None:
                meta["annotations"] = {WORKLOAD_IDENTITY_CLIENT_ID: client_id}
            return meta

        gateway_sa = k8s.core.v1.ServiceAccount(
            f"{name}-gateway-sa", metadata=sa_meta(GATEWAY_SERVICE_ACCOUNT, gw_ns, args.gateway_client_id), opts=in_gw
        )
        # Adapters without workload identity: no API token, no Azure identity.
        k8s.core.v1.ServiceAccount(
            f"{name}-adapter-sa",
            metadata=sa_meta(ADAPTER_SERVICE_ACCOUNT, ad_ns, None),
            automount_service_account_token=False,
            opts=in_ad,
        )
        k8s.core.v1.ServiceAccount(
            f"{name}-workload-sa",
            metadata=sa_meta(WORKLOAD_SERVICE_ACCOUNT, ad_ns, args.workload_client_id),
            opts=in_ad,
        )

        role = k8s.rbac.v1.Role(
            f"{name}-runtime-role",
            metadata={"name": RUNTIME_ROLE, "namespace": ad_ns, "labels": {"app.kubernetes.io/part-of": "mcp-gateway"}},
            rules=RUNTIME_RULES,
            opts=in_ad,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-runtime-binding",
            metadata={"name": RUNTIME_ROLE, "namespace": ad_ns, "labels": {"app.kubernetes.io/part-of": "mcp-gateway"}},
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": GATEWAY_SERVICE_ACCOUNT, "namespace": gw_ns}],
            opts=in_ad,
        )

        # --- settings -------------------------------------------------------------------
        self.session_key = random.RandomBytes(
            f"{name}-session-key", length=32, opts=pulumi.ResourceOptions(parent=self)
        )
        # /metrics is reachable wherever the gateway is (the App Gateway forwards every path): a
        # scrape needs this token (kubectl get secret mcp-gateway -o jsonpath='{.data.MCPGW_METRICS_TOKEN}').
        self.metrics_token = random.RandomPassword(
            f"{name}-metrics-token", length=40, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        secret_data: dict[str, pulumi.Input[str]] = {
            "MCPGW_SESSION_KEYS": pulumi.Output.secret(self.session_key.base64),
            "MCPGW_METRICS_TOKEN": pulumi.Output.secret(self.metrics_token.result),
            **args.secret_settings,
        }
        overlap = set(args.settings) & set(secret_data)
        if overlap:
            raise ValueError(f"settings given both plain and secret: {sorted(overlap)}")
        meta = {"name": GATEWAY_NAME, "namespace": gw_ns, "labels": GATEWAY_LABELS}
        config_map = k8s.core.v1.ConfigMap(f"{name}-settings", metadata=meta, data=dict(args.settings), opts=in_gw)
        secret = k8s.core.v1.Secret(
            f"{name}-secrets",
            metadata=meta,
            type="Opaque",
            string_data=pulumi.Output.secret(secret_data),
            opts=in_gw,
        )
        # Pods restart when settings change; the digest reveals nothing about the secret values.
        settings_digest = pulumi.Output.unsecret(pulumi.Output.all(dict(args.settings), secret_data).apply(_digest))

        # --- deployment -----------------------------------------------------------------
        pod_labels: dict[str, str] = dict(GATEWAY_LABELS)
        if workload_identity:
            pod_labels[WORKLOAD_IDENTITY_USE] = "true"
        volumes: list[dict[str, Any]] = [{"name": "tmp", "empty_dir": {}}]
        if args.data_volume == "pvc":
            claim = k8s.core.v1.PersistentVolumeClaim(
                f"{name}-data",
                metadata={
                    "name": f"{GATEWAY_NAME}-data",
                    "namespace": gw_ns,
                    "labels": GATEWAY_LABELS,
                    # Local provisioners bind a claim when its first pod starts; don't wait for it here.
                    "annotations": {"pulumi.com/skipAwait": "true"},
                },
                spec={
                    "access_modes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": args.data_volume_size}},
                },
                opts=in_gw,
            )
            volumes.append({"name": "data", "persistent_volume_claim": {"claim_name": claim.metadata.name}})
        else:
            volumes.append({"name": "data", "empty_dir": {}})
        deployment_annotations = {} if args.await_ready else {"pulumi.com/skipAwait": "true"}
        http_probe = {"http_get": {"path": "/healthz", "port": "http"}}
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={**meta, "annotations": deployment_annotations},
            spec={
                "replicas": args.replicas,
                "revision_history_limit": 5,
                "selector": {"match_labels": GATEWAY_SELECTOR},
                # One pod owning a ReadWriteOnce volume must stop before the next starts.
                "strategy": (
                    {"type": "Recreate"}
                    if args.data_volume == "pvc"
                    else {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 0, "max_surge": 1}}
                ),
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {"mcp-gateway/settings-digest": settings_digest},
                    },
                    "spec": {
                        "service_account_name": gateway_sa.metadata.name,
                        # The runtime talks to the Kubernetes API with this account's token.
                        "automount_service_account_token": True,
                        "enable_service_links": False,
                        # Long enough for in-flight requests to finish after readiness drops.
                        "termination_grace_period_seconds": 60,
                        "security_context": pod_security(GATEWAY_UID),
                        "topology_spread_constraints": [
                            {
                                "max_skew": 1,
                                "topology_key": key,
                                "when_unsatisfiable": "ScheduleAnyway",
                                "label_selector": {"match_labels": GATEWAY_SELECTOR},
                            }
                            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                        ],
                        "containers": [
                            {
                                "name": "gateway",
                                "image": args.image,
                                "image_pull_policy": "IfNotPresent",
                                "ports": [{"name": "http", "container_port": GATEWAY_PORT, "protocol": "TCP"}],
                                "env_from": [
                                    {"config_map_ref": {"name": config_map.metadata.name}},
                                    {"secret_ref": {"name": secret.metadata.name}},
                                ],
                                "startup_probe": {**http_probe, "period_seconds": 2, "failure_threshold": 30},
                                "liveness_probe": {**http_probe, "period_seconds": 10, "timeout_seconds": 3},
                                "readiness_probe": {
                                    "http_get": {"path": "/readyz", "port": "http"},
                                    "period_seconds": 5,
                                    "timeout_seconds": 3,
                                    "failure_threshold": 2,
                                },
                                "resources": {
                                    "requests": {"cpu": args.cpu_request, "memory": args.memory_request},
                                    "limits": {"cpu": args.cpu_limit, "memory": args.memory_limit},
                                },
                                "security_context": container_security(),
                                "volume_mounts": [
                                    {"name": "data", "mount_path": DATA_DIR},
                                    {"name": "tmp", "mount_path": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
            opts=in_gw,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta,
            spec={"max_unavailable": 1, "selector": {"match_labels": GATEWAY_SELECTOR}},
            opts=in_gw,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={**meta, "annotations": dict(args.exposure.annotations)},
            spec={
                "type": args.exposure.type,
                "selector": GATEWAY_SELECTOR,
                "ports": [{"name": "http", "port": GATEWAY_PORT, "target_port": "http", "protocol": "TCP"}],
            },
            opts=in_gw,
        )

        # --- network policies -------------------------------------------------------------
        self._policy(name, "gateway-default-deny", gw_ns, {}, None, in_gw)
        # The gateway port is public by design (App Gateway, port-forward); everything else is closed.
        self._policy(name, "gateway-http", gw_ns, GATEWAY_SELECTOR, [{"ports": [_tcp(GATEWAY_PORT)]}], in_gw)
        self._policy(name, "adapter-default-deny", ad_ns, {}, None, in_ad)
        self._policy(
            name,
            "adapters-from-gateway",
            ad_ns,
            ADAPTER_MANAGED_BY,
            [
                {
                    "from": [
                        {
                            "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": gw_ns}},
                            "pod_selector": {"match_labels": GATEWAY_SELECTOR},
                        }
                    ],
                    "ports": [_tcp(ADAPTER_PORT)],
                }
            ],
            in_ad,
        )
        self.register_outputs({"deployment": self.deployment.metadata.name, "service": self.service.metadata.name})

    def _policy(
        self,
        name: str,
        policy: str,
        namespace: str,
        pod_labels: Mapping[str, str],
        ingress: list[dict[str, Any]] | None,
        opts: pulumi.ResourceOptions,
    ) -> None:
        selector = {"match_labels": dict(pod_labels)} if pod_labels else {}
        spec: dict[str, Any] = {"pod_selector": selector, "policy_types": ["Ingress"]}
        if ingress is not None:
            spec["ingress"] = ingress
        k8s.networking.v1.NetworkPolicy(
            f"{name}-{policy}",
            metadata={"name": policy, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "mcp-gateway"}},
            spec=spec,
            opts=opts,
        )


def _tcp(port: int) -> dict[str, Any]:
    return {"port": port, "protocol": "TCP"}
