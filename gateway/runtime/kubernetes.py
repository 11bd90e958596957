"""The Kubernetes runtime: one StatefulSet and one headless Service per adapter.

Objects and labels: see ``_kube_manifests``. What the gateway needs from the cluster (the RBAC Role)
and how to point it at a cluster: ``docs/kubernetes.md``.

Endpoints come from a list + watch of the managed pods in the namespace, held in memory. The watch
resumes from the last resourceVersion it saw, re-lists when the API answers 410 Gone, restarts when
the connection drops or the server ends the watch, and backs off on errors. Only pods with the
``Ready`` condition, a pod IP and no deletion in progress are endpoints; listeners hear of a change
as soon as the watch event is processed.

Apply is read-then-write: create when absent, else replace the whole object with the
resourceVersion just read, so fields dropped from the spec (env vars removed by PUT) disappear, and
a concurrent write surfaces as 409 Conflict, answered by reading again. Objects with the adapter's
name that do not carry the gateway's labels are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as kube_client
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.config.config_exception import ConfigException

from gateway.errors import RuntimeUnavailable
from gateway.models import AdapterRecord, InstanceStatus
from gateway.runtime._kube_manifests import (
    ADAPTER_LABEL,
    CONTAINER_NAME,
    CONTAINER_PORT,
    GENERATION_ANNOTATION,
    MANAGED_SELECTOR,
    Manifest,
    adapter_selector,
    applied_generation,
    contains,
    image_reference,
    is_managed,
    service_manifest,
    statefulset_manifest,
)
from gateway.runtime.base import Endpoint, EndpointListener, InstanceNotFound, RuntimeIssue, RuntimeStatus
from gateway.settings import Settings

log = logging.getLogger(__name__)

DEPENDENCY = "Kubernetes API"
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apps", "statefulsets", ("get", "list", "create", "update", "delete")),
    ("", "services", ("get", "list", "create", "update", "delete")),
    ("", "pods", ("get", "list", "watch")),
    ("", "pods/log", ("get",)),
    ("coordination.k8s.io", "leases", ("get", "create", "update")),
)
"""(API group, resource, verbs): every call this runtime makes in the adapter namespace, nothing more.
The Pulumi Role (infra/gateway_k8s.py) and docs/kubernetes.md are tested against it."""
REQUEST_TIMEOUT = 15.0
"""Seconds one API call (not a watch) may take."""
WATCH_TIMEOUT = 300
"""Seconds the API server keeps one watch open before the runtime re-watches from where it was."""
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 10.0
"""Wait after the first failed watch or list, doubling up to the maximum."""
CONFLICT_RETRIES = 5

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


class _ApiError(Exception):
    """A non-2xx answer of the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class _WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _unavailable(action: str, exc: Exception) -> RuntimeUnavailable:
    if isinstance(exc, _ApiError):
        hint = ""
        if exc.status in (401, 403):
            hint = " (check the gateway's credentials and its RBAC Role, see docs/kubernetes.md)"
        return RuntimeUnavailable(DEPENDENCY, f"{action}: {exc}{hint}")
    return RuntimeUnavailable(DEPENDENCY, f"{action}: {type(exc).__name__}: {exc or 'no answer'}")


_KINDS = {
    "statefulsets": ("apps", "stateful_set"),
    "services": ("core", "service"),
    "pods": ("core", "pod"),
}


class _KubeApi:
    """The few API calls the runtime makes, on plain dicts, with errors as ``_ApiError``.

    Calls go through kubernetes_asyncio's generated clients (they carry authentication: bearer
    tokens, exec plugins, in-cluster token refresh) with ``_preload_content=False`` so answers stay
    JSON dicts; the generated model classes are not needed for the few fields the runtime reads.
    """

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self._groups: dict[str, Any] = {
            "core": cast(Any, kube_client).CoreV1Api(api_client),
            "apps": cast(Any, kube_client).AppsV1Api(api_client),
        }

    def _method(self, verb: str, kind: str) -> Callable[..., Awaitable[Any]]:
        group, suffix = _KINDS[kind]
        method: Callable[..., Awaitable[Any]] = getattr(self._groups[group], f"{verb}_namespaced_{suffix}")
        return method

    async def _send(self, call: Awaitable[Any]) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await call
        if not 200 <= response.status < 300:
            body = await response.read()
            response.release()
            reason, message = response.reason or "", body.decode(errors="replace")[:500]
            with contextlib.suppress(ValueError, AttributeError):
                status = json.loads(body)
                reason, message = status.get("reason") or reason, status.get("message") or message
            raise _ApiError(response.status, reason, message)
        return response

    async def _json(self, call: Awaitable[Any]) -> Manifest:
        response = await self._send(call)
        try:
            data: Manifest = json.loads(await response.read())
        finally:
            response.release()
        return data

    async def get(self, kind: str, name: str) -> Manifest | None:
        """The object, or None when it does not exist."""
        try:
            return await self._json(
                self._method("read", kind)(
                    name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except _ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, selector: str) -> Manifest:
        """The list (``items`` and ``metadata.resourceVersion``) of objects matching ``selector``."""
        return await self._json(
            self._method("list", kind)(
                self.namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    async def create(self, kind: str, body: Manifest) -> Manifest:
        """Create the object."""
        return await self._json(
            self._method("create", kind)(
                self.namespace,
                body,
                field_manager="mcp-gateway",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    async def replace(self, kind: str, name: str, body: Manifest) -> Manifest:
        """Replace the whole object (``metadata.resourceVersion`` in ``body`` guards the write)."""
        return await self._json(
            self._method("replace", kind)(
                name,
                self.namespace,
                body,
                field_manager="mcp-gateway",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    async def delete(self, kind: str, name: str, uid: str | None) -> None:
        """Delete the object with foreground propagation (its pods go first); absent is fine."""
        options: Manifest = {"propagationPolicy": "Foreground"}
        if uid:
            options["preconditions"] = {"uid": uid}  # the object we listed, not a namesake created since
        try:
            response = await self._send(
                self._method("delete", kind)(
                    name,
                    self.namespace,
                    body=options,
                    propagation_policy="Foreground",
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
            response.release()
        except _ApiError as exc:
            if exc.status != 404 and not (exc.status == 409 and uid):
                raise

    async def pod_log(self, name: str, tail: int) -> str:
        """The last ``tail`` lines of the pod's adapter container."""
        response = await self._send(
            cast(Any, self._groups["core"]).read_namespaced_pod_log(
                name,
                self.namespace,
                container=CONTAINER_NAME,
                tail_lines=tail,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        try:
            text: str = (await response.read()).decode(errors="replace")
        finally:
            response.release()
        return text

    async def watch(self, kind: str, selector: str, resource_version: str) -> AsyncIterator[Manifest]:
        """Watch events (``type``, ``object``) after ``resource_version``, until the server ends the watch."""
        response = await self._send(
            self._method("list", kind)(
                self.namespace,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT,
                _preload_content=False,
                # The server ends the watch after WATCH_TIMEOUT; a silent connection beyond that is dead.
                _request_timeout=aiohttp.ClientTimeout(total=WATCH_TIMEOUT + 30, sock_connect=REQUEST_TIMEOUT),
            )
        )
        buffer = b""
        try:
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        finally:
            response.release()


def _pod_ready(pod: Manifest) -> bool:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_index(pod: Manifest, adapter: str) -> int | None:
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


def _pod_uid(pod: Manifest) -> str:
    """The pod's uid; without one, a stand-in that changes whenever the pod is replaced.

    A replaced StatefulSet pod keeps its name; a real API server gives it a new uid. Should the
    uid be missing (API emulators), name + pod IP + start time + creation time tells incarnations apart.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("uid"):
        return str(meta["uid"])
    parts = (meta.get("name"), status.get("podIP"), status.get("startTime"), meta.get("creationTimestamp"))
    return "/".join(str(p or "") for p in parts)


def _container_status(pod: Manifest) -> Manifest:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER_NAME:
            return cast(Manifest, cs)
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return cast(Manifest, statuses[0]) if statuses else {}


class KubernetesRuntime:
    """Adapters as StatefulSets in one namespace; endpoints from a pod watch (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._namespace = settings.kube_namespace
        self._api: _KubeApi | None = None
        self._pods: dict[str, dict[str, Manifest]] = {}
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._listeners: list[EndpointListener] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._resource_version = ""

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the cluster configuration, list the managed pods, start the pod watch."""
        if self._api is not None:
            return
        configuration = await self._load_configuration()
        api_client = cast(Any, kube_client).ApiClient(configuration=configuration)
        self._api = _KubeApi(api_client, self._namespace)
        try:
            await self._relist()
        except Exception:
            await self.close()
            raise
        self._watch_task = asyncio.create_task(self._watch_pods(), name="kubernetes-pod-watch")

    async def _load_configuration(self) -> Any:
        configuration = cast(Any, kube_client).Configuration()
        s = self._settings
        try:
            if s.kubeconfig is not None:
                await kube_config.load_kube_config(
                    config_file=str(s.kubeconfig), context=s.kube_context, client_configuration=configuration
                )
                return configuration
            try:
                cast(Any, kube_config).load_incluster_config(client_configuration=configuration)
            except ConfigException:
                await kube_config.load_kube_config(context=s.kube_context, client_configuration=configuration)
        except (ConfigException, OSError, ValueError) as exc:
            where = f"kubeconfig {s.kubeconfig}" if s.kubeconfig else "in-cluster service account or ~/.kube/config"
            raise RuntimeUnavailable(
                DEPENDENCY, f"cannot load the cluster configuration from {where}: {exc} (set MCPGW_KUBECONFIG)"
            ) from None
        return configuration

    async def close(self) -> None:
        """Stop the pod watch and close the API connection."""
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        api, self._api = self._api, None
        if api is not None:
            await api.api_client.close()

    @property
    def api_client(self) -> Any:
        """The API client (after start), for other readers such as gateway/credentials/secrets.py."""
        return self._require_api().api_client

    def _require_api(self) -> _KubeApi:
        if self._api is None:
            raise RuntimeUnavailable(DEPENDENCY, "the Kubernetes runtime is not started")
        return self._api

    async def ping(self) -> None:
        """List StatefulSets in the namespace (the call apply and deployed rely on)."""
        api = self._require_api()
        try:
            await api.list("statefulsets", MANAGED_SELECTOR)
        except (_ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unavailable(f"list statefulsets in namespace {self._namespace}", exc) from None

    # --- desired state -------------------------------------------------------------------------
    async def apply(self, adapter: AdapterRecord) -> None:
        """Create or replace the adapter's Service and StatefulSet (a no-op when they already match)."""
        api = self._require_api()
        await self._apply_object(api, "services", service_manifest(adapter, self._settings))
        await self._apply_object(api, "statefulsets", statefulset_manifest(adapter, self._settings))

    async def _apply_object(self, api: _KubeApi, kind: str, desired: Manifest) -> None:
        name: str = desired["metadata"]["name"]
        what = f"{kind} {self._namespace}/{name}"
        for _ in range(CONFLICT_RETRIES):
            try:
                live = await api.get(kind, name)
                if live is None:
                    await api.create(kind, desired)
                    log.info("created %s", what)
                    return
                if not is_managed(live, name):
                    raise RuntimeUnavailable(
                        DEPENDENCY,
                        f"{what} exists but is not managed by mcp-gateway (it lacks the label "
                        f"{ADAPTER_LABEL}={name}); the gateway leaves it alone: delete or rename it",
                    )
                if live["metadata"].get("deletionTimestamp"):
                    raise RuntimeUnavailable(
                        DEPENDENCY, f"{what} is being deleted; it is created again once the deletion finishes"
                    )
                if self._up_to_date(live, desired):
                    return
                body = json.loads(json.dumps(desired))
                if live["metadata"].get("resourceVersion"):
                    body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                await api.replace(kind, name, body)
                log.info("replaced %s", what)
                return
            except _ApiError as exc:
                if exc.status == 409:  # AlreadyExists after our read, or a write since our read: read again
                    log.info("conflict on %s (%s); reading it again", what, exc.reason)
                    continue
                raise _unavailable(f"apply {what}", exc) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise _unavailable(f"apply {what}", exc) from None
        raise RuntimeUnavailable(DEPENDENCY, f"apply {what}: still conflicting after {CONFLICT_RETRIES} attempts")

    @staticmethod
    def _up_to_date(live: Manifest, desired: Manifest) -> bool:
        want = desired["metadata"]
        have = live.get("metadata") or {}
        return (
            applied_generation(live) == int(want["annotations"][GENERATION_ANNOTATION])
            and (have.get("annotations") or {}).items() >= want["annotations"].items()
            and contains(have.get("labels") or {}, want["labels"])
            and contains(live.get("spec"), desired["spec"])
        )

    async def remove(self, name: str) -> None:
        """Delete the adapter's StatefulSet (pods first, foreground) and Service, found by label."""
        api = self._require_api()
        for kind in ("statefulsets", "services"):
            try:
                found = await api.list(kind, adapter_selector(name))
                for obj in found.get("items") or []:
                    if not is_managed(obj, name):  # never trust the selector alone
                        continue
                    meta = obj["metadata"]
                    await api.delete(kind, meta["name"], meta.get("uid"))
                    log.info("deleted %s %s/%s", kind, self._namespace, meta["name"])
            except (_ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise _unavailable(f"delete {kind} of adapter {name}", exc) from None

    async def deployed(self) -> dict[str, int]:
        """Managed adapters and the generation each was applied at; 0 for drifted or half-present ones.

        An adapter counts as drifted (generation 0) when its StatefulSet or Service is missing, being
        deleted, or was edited so that its spec no longer contains what the gateway applied; the
        reconciler then applies it again, or removes it when the adapter no longer exists.
        """
        api = self._require_api()
        try:
            sets = await api.list("statefulsets", MANAGED_SELECTOR)
            services = await api.list("services", MANAGED_SELECTOR)
        except (_ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unavailable(f"list managed objects in namespace {self._namespace}", exc) from None

        def generations(listing: Manifest) -> dict[str, int]:
            out: dict[str, int] = {}
            for obj in listing.get("items") or []:
                if not is_managed(obj):
                    continue
                meta = obj["metadata"]
                name = meta["labels"][ADAPTER_LABEL]
                if meta.get("name") != name:
                    out[name] = 0
                elif meta.get("deletionTimestamp"):
                    out.setdefault(name, 0)
                else:
                    out[name] = applied_generation(obj)
            return out

        by_set, by_service = generations(sets), generations(services)
        result: dict[str, int] = {}
        for name in by_set.keys() | by_service.keys():
            a, b = by_set.get(name, 0), by_service.get(name, 0)
            result[name] = a if a == b else 0
        return result

    # --- observed state ------------------------------------------------------------------------
    async def status(self, adapter: AdapterRecord) -> RuntimeStatus:
        """Replica counts and rollout state of the StatefulSet, readiness and trouble of each pod."""
        api = self._require_api()
        name = adapter.name
        try:
            sts = await api.get("statefulsets", name)
            pods = await api.list("pods", adapter_selector(name))
        except (_ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unavailable(f"read statefulset {self._namespace}/{name}", exc) from None
        if sts is None or not is_managed(sts, name):
            return RuntimeStatus(
                observed_generation=0,
                image=image_reference(adapter, self._settings),
                desired=adapter.replica_count,
                ready=0,
                updated=0,
                available=0,
                issues=(RuntimeIssue("NotDeployed", f"StatefulSet {self._namespace}/{name} does not exist yet"),),
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
            index = _pod_index(pod, name)
            if index is None:
                continue
            instance, pod_issues = self._instance_status(pod, index, generation, update_revision)
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

    @staticmethod
    def _instance_status(
        pod: Manifest, index: int, generation: int, update_revision: str | None
    ) -> tuple[InstanceStatus, list[RuntimeIssue]]:
        meta, status = pod["metadata"], pod.get("status") or {}
        issues: list[RuntimeIssue] = []
        cs = _container_status(pod)
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
            label = "Terminating"
        revision = (meta.get("labels") or {}).get("controller-revision-hash")
        current = not update_revision or not revision or revision == update_revision
        return (
            InstanceStatus(
                instance=index,
                name=str(meta["name"]),
                ready=_pod_ready(pod),
                state=label,
                restarts=int(cs.get("restartCount") or 0),
                generation=generation if current else 0,
                message=message,
            ),
            issues,
        )

    async def logs(self, name: str, instance: int, tail: int) -> str:
        """The last ``tail`` lines of pod ``<name>-<instance>``; a note while its container is starting."""
        api = self._require_api()
        pod_name = f"{name}-{instance}"
        not_yet = f"logs not yet available for instance {instance}"
        try:
            pod = await api.get("pods", pod_name) if instance >= 0 else None
            if pod is None or not is_managed(pod, name):
                sts = await api.get("statefulsets", name)
                if sts is not None and is_managed(sts, name) and 0 <= instance < int(sts["spec"].get("replicas", 0)):
                    return not_yet  # the controller has not created the pod yet
                raise InstanceNotFound(f"adapter {name} has no instance {instance}")
            container = _container_status(pod)
            started = {"running", "terminated"} & (container.get("state") or {}).keys()
            if not started and "terminated" not in (container.get("lastState") or {}):
                return not_yet  # image pull, scheduling, container creation: nothing was logged yet
            return await api.pod_log(pod_name, max(tail, 0))
        except _ApiError as exc:
            if exc.status == 400 and "waiting to start" in exc.message:
                return not_yet
            if exc.status == 404:
                raise InstanceNotFound(f"adapter {name} has no instance {instance}") from None
            raise _unavailable(f"read the log of pod {self._namespace}/{pod_name}", exc) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unavailable(f"read the log of pod {self._namespace}/{pod_name}", exc) from None

    # --- endpoints -----------------------------------------------------------------------------
    def endpoints(self, name: str) -> tuple[Endpoint, ...]:
        """Ready pods of the adapter, from the watch's memory."""
        return self._endpoints.get(name, ())

    def add_listener(self, listener: EndpointListener) -> None:
        """Call ``listener(name)`` whenever an adapter's ready endpoints change."""
        self._listeners.append(listener)

    def _endpoint(self, pod: Manifest, adapter: str) -> Endpoint:
        pod_name = str(pod["metadata"]["name"])
        if self._settings.kube_pod_addressing == "dns":
            host = f"{pod_name}.{adapter}.{self._namespace}.svc.{self._settings.kube_cluster_domain}"
        else:
            ip = str(pod["status"]["podIP"])
            host = f"[{ip}]" if ":" in ip else ip
        return Endpoint(replica=pod_name, uid=_pod_uid(pod), url=f"http://{host}:{CONTAINER_PORT}")

    def _refresh(self, adapter: str) -> None:
        pods = self._pods.get(adapter, {})
        ready = sorted((self._endpoint(p, adapter) for p in pods.values() if _pod_ready(p)), key=lambda e: e.replica)
        new = tuple(ready)
        if new == self._endpoints.get(adapter, ()):
            return
        if new:
            self._endpoints[adapter] = new
        else:
            self._endpoints.pop(adapter, None)
        for listener in list(self._listeners):
            try:
                listener(adapter)
            except Exception:
                log.exception("endpoint listener failed for adapter %s", adapter)

    def _upsert(self, pod: Manifest) -> None:
        if not is_managed(pod):
            return
        adapter = pod["metadata"]["labels"][ADAPTER_LABEL]
        self._pods.setdefault(adapter, {})[pod["metadata"]["name"]] = pod
        self._refresh(adapter)

    def _forget(self, pod: Manifest) -> None:
        adapter = ((pod.get("metadata") or {}).get("labels") or {}).get(ADAPTER_LABEL)
        if adapter is None:
            return
        self._pods.get(adapter, {}).pop(pod["metadata"]["name"], None)
        if not self._pods.get(adapter):
            self._pods.pop(adapter, None)
        self._refresh(adapter)

    async def _relist(self) -> None:
        api = self._require_api()
        try:
            listing = await api.list("pods", MANAGED_SELECTOR)
        except (_ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unavailable(f"list pods in namespace {self._namespace}", exc) from None
        fresh: dict[str, dict[str, Manifest]] = {}
        for pod in listing.get("items") or []:
            if is_managed(pod):
                fresh.setdefault(pod["metadata"]["labels"][ADAPTER_LABEL], {})[pod["metadata"]["name"]] = pod
        touched = fresh.keys() | self._pods.keys()
        self._pods = fresh
        for adapter in sorted(touched):
            self._refresh(adapter)
        self._resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch_pods(self) -> None:
        """List + watch the managed pods for as long as the runtime runs."""
        backoff = BACKOFF_FIRST
        while True:
            try:
                if not self._resource_version:
                    await self._relist()
                await self._watch_once()
                backoff = BACKOFF_FIRST  # the server ended the watch: resume right away
            except asyncio.CancelledError:
                raise
            except _WatchExpired:
                log.info("pod watch expired (410 Gone); listing pods again")
                self._resource_version = ""
            except Exception as exc:
                log.warning("pod watch failed (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _watch_once(self) -> None:
        api = self._require_api()
        try:
            async for event in api.watch("pods", MANAGED_SELECTOR, self._resource_version):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _WatchExpired()
                    raise _ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED"):
                    self._upsert(obj)
                elif kind == "DELETED":
                    self._forget(obj)
                if rv:
                    self._resource_version = str(rv)
        except _ApiError as exc:
            if exc.status == 410:
                raise _WatchExpired() from None
            raise
