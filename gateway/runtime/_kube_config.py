"""What the Kubernetes runtime reads, and nothing else (issue 20, 2026-12-01).

``gateway/app.py`` builds a :class:`KubernetesRuntimeConfig` from the ``MCPGW_KUBE_*`` settings (and the
few runtime-wide ones: ``env_deny``, ``replica_drain_timeout``, ``stdio_*``); the runtime and its
private modules (manifests, status, pod watch) receive it instead of the gateway's whole settings. The
defaults are the settings' defaults (tests/unit/app/test_component_configs.py checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesRuntimeConfig:
    """The Kubernetes runtime's configuration: cluster access, pod shape, leader election."""

    namespace: str = "adapter"
    """Namespace the adapter StatefulSets, Services and the Lease live in (``MCPGW_KUBE_NAMESPACE``)."""
    kubeconfig: Path | None = None
    """kubeconfig file; None: in-cluster config, else ~/.kube/config."""
    context: str | None = None
    """kubeconfig context to use."""
    registry: str = ""
    """Registry prefix for adapter images (e.g. myacr.azurecr.io)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """imagePullPolicy of every container the gateway puts in adapter pods."""
    service_account: str = "mcp-adapter"
    """Service account of adapter pods."""
    workload_service_account: str = "mcp-adapter-workload"
    """Service account of adapters with useWorkloadIdentity."""
    pod_addressing: Literal["ip", "dns"] = "ip"
    """How the gateway reaches pods: pod IP, or ``<pod>.<service>.<ns>.svc.<cluster domain>``."""
    cluster_domain: str = "cluster.local"
    """Cluster DNS domain for dns pod addressing."""
    cpu_request: str = "100m"
    """CPU request of an adapter container."""
    memory_request: str = "128Mi"
    """Memory request of an adapter container."""
    cpu_limit: str = "1"
    """CPU limit of an adapter container."""
    memory_limit: str = "512Mi"
    """Memory limit of an adapter container."""
    node_selector: str = ""
    """nodeSelector of adapter pods: ``key=value`` pairs, comma-separated."""
    tolerations: str = ""
    """Tolerations of adapter pods: ``key[=value][:Effect]`` terms, comma-separated."""
    stdio_bridge_image: str = ""
    """Image of the stdio bridge in stdio adapter pods; empty: ``<registry>/mcp-gateway:<version>``."""
    stdio_max_sessions: int = 32
    """Processes (one per client session) the bridge of a stdio pod runs at once."""
    stdio_idle_timeout: float = 600.0
    """Seconds a stdio session may stay idle before its process ends."""
    stdio_allow_roots: bool = False
    """Pass the client's roots capability to stdio servers."""
    env_deny: tuple[str, ...] = ()
    """Extra env var names or globs adapters may not set (on top of the built-in deny-list)."""
    replica_drain_timeout: float = 60.0
    """Seconds a replaced pod keeps serving its pinned sessions (its preStop sleep); 0: none."""
    lease_name: str = "mcp-gateway-reconciler"
    """Lease whose holder is the one gateway that applies and removes."""
    lease_duration: float = 15.0
    """Seconds a follower waits after the Lease's last renewal before it takes the lead."""
    lease_renew_deadline: float = 10.0
    """Seconds the leader may go without renewing before it stops acting."""
    lease_retry_period: float = 2.0
    """Seconds between renewals (leader) or tries (followers)."""
