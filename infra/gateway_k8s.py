"""The gateway on Kubernetes: namespaces, service accounts, the runtime's RBAC, settings, the
Deployment and its Service, and the NetworkPolicies that keep adapter pods reachable only from it."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.cidr import within

GATEWAY_NAME = "mcp-gateway"
GATEWAY_SERVICE_ACCOUNT = "mcp-gateway"
ADAPTER_SERVICE_ACCOUNT = "mcp-adapter"
WORKLOAD_SERVICE_ACCOUNT = "mcp-adapter-workload"
RUNTIME_ROLE = "mcp-gateway-runtime"
SECRETS_ROLE = "mcp-gateway-upstream-secrets"
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
    # The reconciler leader's Lease (DESIGN §8), in the adapter namespace.
    {"api_groups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
]

# Drain on SIGTERM (gateway/settings.py drain_delay, drain_timeout): the gateway reports not-ready at
# once, keeps accepting for drain_delay (endpoints and the App Gateway probe notice), waits up to
# drain_timeout for in-flight requests, then closes open streams. The defaults mirror Settings();
# the stack sets both explicitly so the grace period below is computed from what the pods run.
DRAIN_DELAY_SECONDS = 5.0
DRAIN_TIMEOUT_SECONDS = 20.0
# Time after the drain for closing streams and process exit before the kubelet sends SIGKILL.
TERMINATION_MARGIN_SECONDS = 10
# No preStop hook (decided 2026-11-30, issue 13): the gateway delays its own shutdown by drain_delay
# after SIGTERM, which is what a preStop `sleep` would do. A hook would only add its sleep on top
# (the kubelet sends SIGTERM once preStop returns, and both count against the grace period), and the
# native `sleep` action needs Kubernetes 1.30+ (an exec `sleep` would need the image's shell).


def termination_grace_seconds(drain_delay: float, drain_timeout: float) -> int:
    """terminationGracePeriodSeconds for a gateway pod with these drain settings."""
    return math.ceil(drain_delay + drain_timeout) + TERMINATION_MARGIN_SECONDS


# Adapter egress (issue 14): never the node's instance metadata service (it hands out the kubelet
# identity's tokens), the Azure host (168.63.129.16) or anything link-local; by default nothing
# private either (other adapters, the cluster, the VNet, the API server's Service address). DNS to
# the cluster resolver is always allowed.
ALWAYS_BLOCKED = ("169.254.0.0/16", "168.63.129.16/32")
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")
IMDS = "169.254.169.254/32"


def egress_blocks(allowed: list[str]) -> list[dict[str, Any]]:
    """NetworkPolicy ``to`` peers for each allowed CIDR, with every blocked range inside it excepted.

    A listed private range is allowed as listed (an operator opening a private service on purpose);
    the always-blocked ranges are excepted from every entry. Kubernetes refuses an ``except`` outside
    its ``cidr``, so only the ranges inside each entry are listed.
    """
    peers = []
    for cidr in allowed:
        net = ipaddress.ip_network(cidr)
        if any(within(net, ipaddress.ip_network(b)) for b in ALWAYS_BLOCKED):
            raise ValueError(f"adapter egress: {cidr} lies in a range adapters may never reach ({ALWAYS_BLOCKED})")
        private = any(within(net, ipaddress.ip_network(p)) for p in PRIVATE_RANGES)
        blocked = ALWAYS_BLOCKED + (() if private else PRIVATE_RANGES)
        inside = [b for b in blocked if within(ipaddress.ip_network(b), net)]
        block: dict[str, Any] = {"cidr": str(net)}
        if inside:
            block["except"] = inside
        peers.append({"ip_block": block})
    return peers


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
    max_replicas: int | None = None
    """With a value, a HorizontalPodAutoscaler scales the Deployment between ``replicas`` and this
    (and the Deployment leaves ``spec.replicas`` to it)."""
    adapter_egress_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])
    upstream_secret_names: list[str] = field(default_factory=list)
    drain_delay: float = DRAIN_DELAY_SECONDS
    drain_timeout: float = DRAIN_TIMEOUT_SECONDS


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

        part_of = {"app.kubernetes.io/part-of": "mcp-gateway"}
        if args.upstream_secret_names:
            # upstreamAuth type "secret": read by name only (no list, no watch), in the gateway's namespace.
            secrets_role = k8s.rbac.v1.Role(
                f"{name}-secrets-role",
                metadata={
                    "name": SECRETS_ROLE,
                    "namespace": gw_ns,
                    "labels": part_of,
                },
                rules=[
                    {
                        "api_groups": [""],
                        "resources": ["secrets"],
                        "resource_names": list(args.upstream_secret_names),
                        "verbs": ["get"],
                    }
                ],
                opts=in_gw,
            )
            k8s.rbac.v1.RoleBinding(
                f"{name}-secrets-binding",
                metadata={
                    "name": SECRETS_ROLE,
                    "namespace": gw_ns,
                    "labels": part_of,
                },
                role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": secrets_role.metadata.name},
                subjects=[{"kind": "ServiceAccount", "name": GATEWAY_SERVICE_ACCOUNT, "namespace": gw_ns}],
                opts=in_gw,
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
        # Until the images are pushed (after the first `up` made the registry), the pods cannot start:
        # neither the Deployment nor the Service (ready endpoints, a load-balancer IP) may be waited on.
        skip_await = {} if args.await_ready else {"pulumi.com/skipAwait": "true"}
        http_probe = {"http_get": {"path": "/healthz", "port": "http"}}
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={**meta, "annotations": skip_await},
            spec={
                # With an autoscaler, spec.replicas belongs to it (Kubernetes' advice): not declared here.
                **({} if args.max_replicas else {"replicas": args.replicas}),
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
                        # Drain delay + drain timeout + a margin (see DRAIN_* above); no preStop hook.
                        "termination_grace_period_seconds": termination_grace_seconds(
                            args.drain_delay, args.drain_timeout
                        ),
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
                                # A digest never moves; a tag might, so every pod start re-resolves it and
                                # all replicas run the same image.
                                "image_pull_policy": "IfNotPresent" if _pinned(args.image) else "Always",
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
        if args.max_replicas:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa",
                metadata=meta,
                spec={
                    "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": GATEWAY_NAME},
                    "min_replicas": args.replicas,
                    "max_replicas": args.max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "average_utilization": 70}},
                        }
                    ],
                    # Scale down one pod a minute: each one drains its streams first.
                    "behavior": {
                        "scale_down": {
                            "stabilization_window_seconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "period_seconds": 60}],
                        }
                    },
                },
                opts=pulumi.ResourceOptions.merge(in_gw, pulumi.ResourceOptions(depends_on=[self.deployment])),
            )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={**meta, "annotations": {**args.exposure.annotations, **skip_await}},
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
        self._adapter_egress(name, ad_ns, args.adapter_egress_cidrs, in_ad)
        self.register_outputs({"deployment": self.deployment.metadata.name, "service": self.service.metadata.name})

    def _adapter_egress(self, name: str, namespace: str, allowed: list[str], opts: pulumi.ResourceOptions) -> None:
        """Adapter pods: DNS to the cluster resolver, and ``allowed`` minus the blocked ranges."""
        dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        k8s.networking.v1.NetworkPolicy(
            f"{name}-adapters-egress",
            metadata={
                "name": "adapters-egress",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "mcp-gateway"},
            },
            spec={
                "pod_selector": {"match_labels": dict(ADAPTER_MANAGED_BY)},
                "policy_types": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "pod_selector": {"match_labels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": dns_ports,
                    },
                    {"to": egress_blocks(allowed)},
                ],
            },
            opts=opts,
        )

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


def _pinned(image: str | pulumi.Output[str]) -> bool:
    return isinstance(image, str) and "@sha256:" in image


def _tcp(port: int) -> dict[str, Any]:
    return {"port": port, "protocol": "TCP"}
