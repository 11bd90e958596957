"""The Kubernetes objects of one adapter, as plain manifests, and the drift check against live ones.

Per adapter the gateway owns exactly two objects, both named after the adapter:

- a StatefulSet, so replicas have stable names (``<name>-0`` …) that sessions can be pinned to;
- a headless Service (``clusterIP: None``), the StatefulSet's ``serviceName``, which gives each pod
  the DNS name ``<pod>.<name>.<namespace>.svc.<cluster domain>``.

Both carry ``app.kubernetes.io/managed-by=mcp-gateway`` and ``mcp-gateway/adapter=<name>`` (the
gateway lists, deletes and watches only by these) and two annotations: the adapter generation they
were applied at, and the exact spec the gateway sent (``mcp-gateway/applied-spec``). A live object
whose spec no longer contains the applied spec was edited out of band, and is re-applied.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.envpolicy import EnvPolicy
from gateway.models import AdapterRecord
from gateway.runtime._kube_config import KubernetesRuntimeConfig
from gateway.stdio.pod import STDIO_DIR, setup_command, spawner_command

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mcp-gateway"
ADAPTER_LABEL = "mcp-gateway/adapter"
GENERATION_ANNOTATION = "mcp-gateway/generation"
INCARNATION_ANNOTATION = "mcp-gateway/created-at"
APPLIED_SPEC_ANNOTATION = "mcp-gateway/applied-spec"
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
CONTAINER_NAME = "mcp"
CONTAINER_PORT = 8000
REPLICA_ID_ENV = "MCP_REPLICA_ID"

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

Manifest = dict[str, Any]


def adapter_selector(name: str) -> str:
    """The label selector of one adapter's objects."""
    return f"{MANAGED_SELECTOR},{ADAPTER_LABEL}={name}"


def selector_labels(name: str) -> dict[str, str]:
    """Labels every object and pod of the adapter carries (and the StatefulSet selects on)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, ADAPTER_LABEL: name}


def is_managed(obj: Manifest, name: str | None = None) -> bool:
    """True when ``obj`` carries the gateway's labels (for adapter ``name``, when given)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not labels.get(ADAPTER_LABEL):
        return False
    return name is None or labels.get(ADAPTER_LABEL) == name


def image_reference(adapter: AdapterRecord, config: KubernetesRuntimeConfig) -> str:
    """``<registry>/<imageName>:<imageVersion>``, without the registry when none is configured."""
    registry = config.registry.strip().rstrip("/")
    return f"{registry}/{adapter.image}" if registry else adapter.image


def incarnation(adapter: AdapterRecord) -> str:
    """Which life of the name the record is: its creation time (a deleted and re-created adapter
    starts again at generation 1, so generations compare only within one incarnation)."""
    return adapter.created_at.isoformat() if adapter.created_at else ""


def applied_version(live: Manifest) -> tuple[str, int]:
    """(incarnation, generation) a live object was applied at, as the annotations say, drift or not."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    try:
        generation = int(annotations.get(GENERATION_ANNOTATION, "0"))
    except ValueError:
        generation = 0
    return str(annotations.get(INCARNATION_ANNOTATION, "")), generation


def record_version(adapter: AdapterRecord) -> tuple[str, int]:
    """(incarnation, generation) of a record, comparable with ``applied_version``."""
    return incarnation(adapter), adapter.generation


def node_selector(text: str) -> dict[str, str]:
    """``key=value,key2=value2`` (the kube_adapter_node_selector setting) as a nodeSelector."""
    out: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"kube_adapter_node_selector: {term!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def tolerations(text: str) -> list[Manifest]:
    """``key=value:Effect`` / ``key:Effect`` / ``key=value`` terms (kube_adapter_tolerations) as tolerations.

    With a value the toleration matches it (``Equal``), without one any value (``Exists``); without an
    effect it tolerates every effect of that taint.
    """
    out: list[Manifest] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        head, _, effect = term.rpartition(":") if ":" in term else (term, "", "")
        key, sep, value = head.partition("=")
        if not key.strip() or (effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute")):
            raise ValueError(
                f"kube_adapter_tolerations: {term!r} is not key[=value][:NoSchedule|PreferNoSchedule|NoExecute]"
            )
        item: Manifest = {"key": key.strip(), "operator": "Equal" if sep else "Exists"}
        if sep:
            item["value"] = value.strip()
        if effect:
            item["effect"] = effect
        out.append(item)
    return out


def _metadata(adapter: AdapterRecord, config: KubernetesRuntimeConfig, spec: Manifest) -> Manifest:
    return {
        "name": adapter.name,
        "namespace": config.namespace,
        "labels": selector_labels(adapter.name),
        "annotations": {
            GENERATION_ANNOTATION: str(adapter.generation),
            INCARNATION_ANNOTATION: incarnation(adapter),
            APPLIED_SPEC_ANNOTATION: json.dumps(spec, sort_keys=True, separators=(",", ":")),
        },
    }


def _env(adapter: AdapterRecord, config: KubernetesRuntimeConfig) -> list[Manifest]:
    """The adapter's variables minus the deny-list (gateway/envpolicy.py), then MCP_REPLICA_ID.

    The API refuses denied names; a record that holds some anyway (written before the deny-list
    existed, or straight into the store) loses them here: a container is already isolated from
    the gateway, so stripping, not refusing, keeps such an adapter serving.
    """
    allowed = EnvPolicy(config.env_deny).allowed(adapter.environment_variables)
    env: list[Manifest] = [{"name": key, "value": value} for key, value in sorted(allowed.items())]
    # The replica's own name, so a server can say which replica answered (the example's whoami).
    env.append({"name": REPLICA_ID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def statefulset_manifest(adapter: AdapterRecord, config: KubernetesRuntimeConfig) -> Manifest:
    """The StatefulSet running the adapter's replicas."""
    pod_labels = selector_labels(adapter.name)
    if adapter.use_workload_identity:
        pod_labels[WORKLOAD_IDENTITY_LABEL] = "true"
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": image_reference(adapter, config),
        "imagePullPolicy": config.image_pull_policy,
        "env": _env(adapter, config),
        "ports": [{"name": "mcp", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        # "The MCP port answers": a TCP probe works for any image; not every server has a health path.
        "readinessProbe": {
            "tcpSocket": {"port": CONTAINER_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": CONTAINER_PORT},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    drain = math.ceil(config.replica_drain_timeout)
    if drain > 0:
        # A replaced or scaled-away pod keeps serving the sessions pinned to it for the drain (issue 13):
        # the kubelet's own sleep (no binary needed in the image), then SIGTERM to the server.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": drain}}}
    # The adapter's command/args replace the image's ENTRYPOINT/CMD (issue 17); the security context
    # above stays the same whatever runs.
    if adapter.command is not None:
        container["command"] = list(adapter.command)
    if adapter.args is not None:
        container["args"] = list(adapter.args)
    spec: Manifest = {
        "replicas": adapter.replica_count,
        "serviceName": adapter.name,
        # Replicas are independent servers: start and stop them together, not one by one.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector_labels(adapter.name)},
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {
                "serviceAccountName": (
                    config.workload_service_account if adapter.use_workload_identity else config.service_account
                ),
                "automountServiceAccountToken": adapter.use_workload_identity,
                "enableServiceLinks": False,
                # The drain, then the server's own shutdown (Kubernetes' default 30 s).
                "terminationGracePeriodSeconds": drain + 30,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
            },
        },
    }
    if adapter.transport == "stdio":
        _with_stdio_bridge(spec["template"]["spec"], adapter, config)
    if config.node_selector:
        spec["template"]["spec"]["nodeSelector"] = node_selector(config.node_selector)
    if config.tolerations:
        spec["template"]["spec"]["tolerations"] = tolerations(config.tolerations)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(adapter, config, spec),
        "spec": spec,
    }


# --- stdio images (issue 17; gateway/stdio/pod.py has the design, docs/kubernetes.md the trade-offs) ---

STDIO_VOLUME = "mcp-stdio"
BRIDGE_CONTAINER_NAME = "bridge"
SETUP_CONTAINER_NAME = "stdio-setup"
POD_IP_ENV = "MCP_POD_IP"
BRIDGE_RESOURCES: Manifest = {
    # Measured 2026-11-30: the bridge holds 42 MiB RSS after warm-up and after 5 sessions alike; the
    # server's processes count against the server container's own requests and limits.
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


def bridge_image(config: KubernetesRuntimeConfig) -> str:
    """The gateway image that brings the bridge (kube_stdio_bridge_image, else the registry's mcp-gateway)."""
    if config.stdio_bridge_image:
        return config.stdio_bridge_image
    try:
        version = importlib.metadata.version("mcp-gateway")
    except importlib.metadata.PackageNotFoundError:
        version = "0.1.0"
    registry = config.registry.strip().rstrip("/")
    return f"{registry}/mcp-gateway:{version}" if registry else f"mcp-gateway:{version}"


def _with_stdio_bridge(pod: Manifest, adapter: AdapterRecord, config: KubernetesRuntimeConfig) -> None:
    """Turn the pod of a stdio image into server container + bridge container + setup init container.

    The server container keeps its image, env, resources and security context; its command becomes
    the spawner run by the busybox the init container copied (so the image needs no shell), and its
    args the adapter's ``command`` + ``args`` (the API requires ``command``: the image's ENTRYPOINT
    cannot be wrapped without naming it). The port and probes move to the bridge, which answers
    ``/healthz`` only once the server answered ``ping``. The gateway-image containers also get a
    read-only root filesystem (they write only to the shared volume).
    """
    server = pod["containers"][0]
    mount = {"name": STDIO_VOLUME, "mountPath": STDIO_DIR}
    ports, liveness = server.pop("ports"), server.pop("livenessProbe")
    server.pop("readinessProbe", None)
    server["command"] = spawner_command()
    server["args"] = [*(adapter.command or ()), *(adapter.args or ())]
    server["volumeMounts"] = [mount]
    locked = {**server["securityContext"], "readOnlyRootFilesystem": True}
    image = bridge_image(config)
    bridge: Manifest = {
        "name": BRIDGE_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "gateway.stdio.bridge"],
        "args": [
            f"--host=$({POD_IP_ENV})",
            f"--port={CONTAINER_PORT}",
            f"--fifo-dir={STDIO_DIR}",
            f"--max-sessions={config.stdio_max_sessions}",
            f"--idle-timeout={config.stdio_idle_timeout:g}",
            *(["--allow-roots"] if config.stdio_allow_roots else []),
        ],
        "env": [{"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": ports,
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": CONTAINER_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": liveness,
        "resources": copy.deepcopy(BRIDGE_RESOURCES),
        "securityContext": locked,
        "volumeMounts": [mount],
    }
    if "lifecycle" in server:  # a drain hook serves the bridge (it holds the connections) as much as the server
        bridge["lifecycle"] = copy.deepcopy(server["lifecycle"])
    pod["containers"].append(bridge)
    pod["initContainers"] = [
        {
            "name": SETUP_CONTAINER_NAME,
            "image": image,
            "imagePullPolicy": config.image_pull_policy,
            "command": setup_command(),
            "resources": copy.deepcopy(BRIDGE_RESOURCES),
            "securityContext": copy.deepcopy(locked),
            "volumeMounts": [dict(mount)],
        }
    ]
    pod["volumes"] = [{"name": STDIO_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]


def service_manifest(adapter: AdapterRecord, config: KubernetesRuntimeConfig) -> Manifest:
    """The headless Service giving the adapter's pods their DNS names."""
    spec: Manifest = {
        "clusterIP": "None",
        "selector": selector_labels(adapter.name),
        "ports": [{"name": "mcp", "port": CONTAINER_PORT, "targetPort": CONTAINER_PORT, "protocol": "TCP"}],
        # The gateway routes by its own pod watch; DNS names must keep resolving for a pod that is
        # terminating but still serves its pinned sessions (the drain), so not-ready pods stay published.
        "publishNotReadyAddresses": True,
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(adapter, config, spec), "spec": spec}


def applied_generation(live: Manifest) -> int:
    """The generation a live object was applied at; 0 when it drifted from what the gateway sent.

    Drift: the spec annotation is missing or unreadable, the generation annotation is not a number,
    or the live spec no longer contains the applied spec (the API server's defaults may add fields;
    they may not change or remove ours, nor add list items such as env vars or containers).
    """
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    try:
        generation = int(annotations.get(GENERATION_ANNOTATION, ""))
        applied = json.loads(annotations[APPLIED_SPEC_ANNOTATION])
    except (KeyError, ValueError, TypeError):
        return 0
    return generation if contains(live.get("spec"), applied) else 0


def contains(live: Any, wanted: Any, *, quantities: bool = False) -> bool:
    """True when ``live`` holds everything in ``wanted``: maps may have extra keys, lists may not."""
    if isinstance(wanted, dict):
        if not isinstance(live, dict):
            return False
        return all(
            key in live and contains(live[key], value, quantities=quantities or key == "resources")
            for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b, quantities=quantities) for a, b in zip(live, wanted, strict=True))
        )
    if quantities and isinstance(live, str) and isinstance(wanted, str) and live != wanted:
        a, b = parse_quantity(live), parse_quantity(wanted)
        return a is not None and a == b
    return bool(live == wanted)


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity (``500m``, ``1``, ``128Mi``, ``1e3``) as a number, or None.

    The API server rewrites quantities canonically (``1000m`` → ``1``); comparing numbers keeps
    such rewrites from looking like drift.
    """
    match = _QUANTITY.match(text.strip())
    if not match:
        return None
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if suffix[:1] in ("e", "E"):
        return value * Decimal(10) ** int(suffix[1:])
    factor = _SUFFIXES.get(suffix)
    return None if factor is None else value * factor
