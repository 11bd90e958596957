"""What the cluster says about an adapter: StatefulSet status, each pod's state, logs.

Status comes from the StatefulSet (replica counts, revisions, conditions) and its pods (Ready,
waiting reasons such as ImagePullBackOff, scheduling failures); a pod whose container will not
become ready by itself is reported as an issue. Logs come from ``pods/log``; while a container is
still being created there is nothing to read, and the answer says so instead of failing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import aiohttp

from gateway.models import AdapterRecord, InstanceStatus
from gateway.runtime._kube_api import TRANSPORT_ERRORS, ApiError, KubeApi, unavailable
from gateway.runtime._kube_config import KubernetesRuntimeConfig
from gateway.runtime._kube_manifests import (
    CONTAINER_NAME,
    GENERATION_ANNOTATION,
    Manifest,
    adapter_selector,
    applied_generation,
    image_reference,
    is_managed,
)
from gateway.runtime.base import InstanceNotFound, RuntimeIssue, RuntimeStatus

# Waiting reasons of a container that mean it will not become ready by itself.
STUCK_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "ErrImageNeverPull",
    }
)


def pod_ready(pod: Manifest) -> bool:
    """Ready condition, a pod IP, and no deletion in progress."""
    return not pod.get("metadata", {}).get("deletionTimestamp") and pod_serving(pod)


def pod_serving(pod: Manifest) -> bool:
    """Ready condition and a pod IP, deleted or not: a terminating pod in its preStop drain still serves."""
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_index(pod: Manifest, adapter: str) -> int | None:
    """The StatefulSet ordinal of the pod (label, else from its name)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    text = labels.get("apps.kubernetes.io/pod-index")
    if text is None:
        name: str = meta.get("name") or ""
        prefix = f"{adapter}-"
        text = name[len(prefix) :] if name.startswith(prefix) else None
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def pod_uid(pod: Manifest) -> str:
    """The pod's uid; without one, a stand-in that changes whenever the pod is replaced.

    A replaced StatefulSet pod keeps its name; a real API server gives it a new uid. Should the
    uid be missing (API emulators), name + pod IP + start time + creation time tells incarnations apart.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("uid"):
        return str(meta["uid"])
    parts = (meta.get("name"), status.get("podIP"), status.get("startTime"), meta.get("creationTimestamp"))
    return "/".join(str(p or "") for p in parts)


def container_status(pod: Manifest) -> Manifest:
    """The status of the adapter container (else the first container).

    A stdio pod's other containers (the bridge and its setup init container, from the gateway
    image; issue 17) come first when they are stuck: a missing bridge image keeps the adapter's
    container in PodInitializing, and the reason is theirs.
    """
    status = pod.get("status") or {}
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if (
            cs.get("name") != CONTAINER_NAME
            and ((cs.get("state") or {}).get("waiting") or {}).get("reason") in STUCK_REASONS
        ):
            return cast(Manifest, cs)
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == CONTAINER_NAME:
            return cast(Manifest, cs)
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return cast(Manifest, statuses[0]) if statuses else {}


async def adapter_status(api: KubeApi, adapter: AdapterRecord, config: KubernetesRuntimeConfig) -> RuntimeStatus:
    """Replica counts and rollout state of the StatefulSet, readiness and trouble of each pod."""
    name, namespace = adapter.name, api.namespace
    try:
        sts = await api.get("statefulsets", name)
        pods = await api.list("pods", adapter_selector(name))
    except (*TRANSPORT_ERRORS,) as exc:
        raise unavailable(f"read statefulset {namespace}/{name}", exc) from None
    if sts is None or not is_managed(sts, name):
        return RuntimeStatus(
            observed_generation=0,
            image=image_reference(adapter, config),
            desired=adapter.replica_count,
            ready=0,
            updated=0,
            available=0,
            issues=(RuntimeIssue("NotDeployed", f"StatefulSet {namespace}/{name} does not exist yet"),),
            progressing=adapter.replica_count > 0,
        )
    meta, spec, st = sts["metadata"], sts.get("spec") or {}, sts.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready, updated = int(st.get("readyReplicas") or 0), int(st.get("updatedReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    image = str(containers[0].get("image", ""))
    generation = applied_generation(sts) or int((meta.get("annotations") or {}).get(GENERATION_ANNOTATION, 0) or 0)
    update_revision = st.get("updateRevision")
    controller_behind = int(st.get("observedGeneration") or 0) < int(meta.get("generation") or 0)
    rolling = bool(update_revision and st.get("currentRevision") and update_revision != st.get("currentRevision"))
    progressing = controller_behind or rolling or updated < desired or ready < desired

    issues: list[RuntimeIssue] = []
    for condition in st.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("reason"):
            issues.append(RuntimeIssue(str(condition["reason"]), str(condition.get("message", ""))))
    instances: dict[int, InstanceStatus] = {}
    for pod in pods.get("items") or []:
        if not is_managed(pod, name):
            continue
        index = pod_index(pod, name)
        if index is None:
            continue
        instance, pod_issues = instance_status(pod, index, generation, update_revision)
        instances[index] = instance
        issues.extend(pod_issues)
    for index in range(desired):
        if index not in instances:
            instances[index] = InstanceStatus(
                instance=index,
                name=f"{name}-{index}",
                ready=False,
                state="Pending",
                message="the pod is not created yet",
            )
    return RuntimeStatus(
        observed_generation=generation,
        image=image,
        desired=desired,
        ready=ready,
        updated=updated,
        available=available,
        instances=tuple(instances[i] for i in sorted(instances)),
        issues=tuple(issues),
        progressing=progressing,
    )


def instance_status(
    pod: Manifest, index: int, generation: int, update_revision: str | None
) -> tuple[InstanceStatus, list[RuntimeIssue]]:
    """One pod as an instance: state label, readiness, restarts, generation; and its issues."""
    meta, status = pod["metadata"], pod.get("status") or {}
    issues: list[RuntimeIssue] = []
    cs = container_status(pod)
    state = cs.get("state") or {}
    message = ""
    if "waiting" in state:
        label = str(state["waiting"].get("reason") or "Waiting")
        message = str(state["waiting"].get("message") or "")
        if label in STUCK_REASONS:
            issues.append(RuntimeIssue(label, f"{meta['name']}: {message or label}"))
    elif "running" in state:
        label = "Running"
    elif "terminated" in state:
        label = f"Terminated: {state['terminated'].get('reason') or 'Exited'}"
        message = str(state["terminated"].get("message") or "")
    else:
        label = str(status.get("phase") or "Pending")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = str(condition.get("reason") or "Unschedulable")
            message = str(condition.get("message") or reason)
            label = reason
            issues.append(RuntimeIssue(reason, f"{meta['name']}: {message}"))
    if meta.get("deletionTimestamp"):
        # In its preStop sleep (replica_drain_timeout) a replaced pod serves its pinned sessions only.
        label = "Draining" if pod_serving(pod) else "Terminating"
    revision = (meta.get("labels") or {}).get("controller-revision-hash")
    current = not update_revision or not revision or revision == update_revision
    return (
        InstanceStatus(
            instance=index,
            name=str(meta["name"]),
            ready=pod_ready(pod),
            state=label,
            restarts=int(cs.get("restartCount") or 0),
            generation=generation if current else 0,
            message=message,
        ),
        issues,
    )


async def replica_logs(api: KubeApi, name: str, instance: int, tail: int) -> str:
    """The last ``tail`` lines of pod ``<name>-<instance>``; a note while its container is starting."""
    pod_name = f"{name}-{instance}"
    not_yet = f"logs not yet available for instance {instance}"
    try:
        pod = await api.get("pods", pod_name) if instance >= 0 else None
        if pod is None or not is_managed(pod, name):
            sts = await api.get("statefulsets", name)
            if sts is not None and is_managed(sts, name) and 0 <= instance < int(sts["spec"].get("replicas", 0)):
                return not_yet  # the controller has not created the pod yet
            raise InstanceNotFound(f"adapter {name} has no instance {instance}")
        container = container_status(pod)
        started = {"running", "terminated"} & (container.get("state") or {}).keys()
        if not started and "terminated" not in (container.get("lastState") or {}):
            return not_yet  # image pull, scheduling, container creation: nothing was logged yet
        return await api.pod_log(pod_name, max(tail, 0))
    except ApiError as exc:
        if exc.status == 400 and "waiting to start" in exc.message:
            return not_yet
        if exc.status == 404:
            raise InstanceNotFound(f"adapter {name} has no instance {instance}") from None
        raise unavailable(f"read the log of pod {api.namespace}/{pod_name}", exc) from None
    except (*TRANSPORT_ERRORS,) as exc:
        raise unavailable(f"read the log of pod {api.namespace}/{pod_name}", exc) from None


async def follow_replica_logs(api: KubeApi, name: str, instance: int, tail: int) -> AsyncIterator[str]:
    """The last ``tail`` lines of pod ``<name>-<instance>``, then its new lines until the pod goes."""
    pod_name = f"{name}-{instance}"
    try:
        pod = await api.get("pods", pod_name) if instance >= 0 else None
        if pod is None or not is_managed(pod, name):
            raise InstanceNotFound(f"adapter {name} has no instance {instance}")
        response = await api.pod_log_follow(pod_name, max(tail, 0))
    except ApiError as exc:
        if exc.status == 404:
            raise InstanceNotFound(f"adapter {name} has no instance {instance}") from None
        raise unavailable(f"follow the log of pod {api.namespace}/{pod_name}", exc) from None
    except (*TRANSPORT_ERRORS,) as exc:
        raise unavailable(f"follow the log of pod {api.namespace}/{pod_name}", exc) from None
    return _response_lines(response)


async def _response_lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The lines of a followed pod log; ends when the API server ends it (pod deleted, container gone)."""
    try:
        async for raw in response.content:
            yield raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
    except (aiohttp.ClientError, OSError):
        return
    finally:
        response.release()
