"""A Kubernetes API stand-in for the kubernetes runtime tests, built on the kmock emulator.

kmock (PyPI) serves the HTTP side: routing, discovery, Kubernetes-shaped errors, and reactions a test
can inject (``cluster["put ..."][:1] << 409``). Its built-in object store is a plain dict merger, so
``ClusterEmulator`` replaces that store with one that behaves like a kube-apiserver where the runtime
depends on it. Each gap of kmock 0.8 it closes (see shared/research/feasibility.md):

- ``watch=True`` (what kubernetes_asyncio sends) is a watch; kmock only recognises ``watch=true``;
- ``labelSelector`` filters lists and watches (kmock returns every object);
- objects get ``uid``, ``resourceVersion``, ``creationTimestamp`` and ``generation``;
- ``PUT`` replaces an object, honouring ``metadata.resourceVersion`` (409 on a stale one); kmock has no PUT;
- watches resume from ``resourceVersion`` out of an event history, answer ``410 Gone`` once the history
  was compacted past it, and can be cut (``drop_watches``) to play a dropped connection;
- deleting an owner deletes its dependents (``ownerReferences``), as the garbage collector does;
- ``pods/log`` returns what the test stored, with the apiserver's 400 while the container is waiting;
- ``coordination.k8s.io/v1`` Leases are stored like any object (kmock has no such kind), so the
  runtime's leader election runs against the emulator;
- ``apply_log`` records every create, replace and delete of a StatefulSet or Service with the
  incarnation and generation annotations it carried, in order, for the high-availability tests;
- ``secret_rules`` (namespace → the rules of the gateway's Role, as infra/gateway_k8s.py renders them)
  makes Secrets obey RBAC as the apiserver would for the gateway's service account: a verb or a name
  no rule grants → 403 Forbidden (kmock has no authorization).

The workarounds live here, in the tests, never in gateway code.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import inspect
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from gateway.app import kubernetes_runtime_config
from gateway.models import AdapterRecord
from gateway.runtime._local_process import _process_tree
from gateway.runtime.kubernetes import KubernetesRuntime
from gateway.settings import Settings

NAMESPACE = "adapter"
MANAGED = {"app.kubernetes.io/managed-by": "mcp-gateway"}

KINDS = {
    ("", "v1", "pods"): "Pod",
    ("", "v1", "services"): "Service",
    ("apps", "v1", "statefulsets"): "StatefulSet",
    ("coordination.k8s.io", "v1", "leases"): "Lease",
    ("", "v1", "secrets"): "Secret",  # read by name for upstreamAuth type secret (gateway/credentials)
}

ResourceId = tuple[str, str, str]  # group, version, plural
ObjectKey = tuple[ResourceId, str | None, str]  # resource, namespace, name


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> kmock.KubernetesError:
    # Raised, not returned: kmock renders it as a Kubernetes Status with this code. (A returned
    # kmock.Response would leave its status on the shared reaction, leaking into later responses.)
    return kmock.KubernetesError(status=code, reason=reason, message=message, details={})


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-joined."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class AppliedWrite:
    """One write of a StatefulSet or Service the emulator accepted, with the annotations it carried."""

    verb: str  # create, replace, delete
    kind: str
    name: str
    incarnation: str
    generation: int
    at: float = dataclasses.field(default_factory=time.time)  # wall clock, to compare with the test's requests


class _Dropped(Exception):
    """Ends a watch stream, as a broken connection would."""


class ClusterEmulator(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold with an apiserver-like object store (see the module docstring)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store: dict[ObjectKey, dict[str, Any]] = {}
        self.history: list[tuple[int, ResourceId, dict[str, Any]]] = []
        self.pod_logs: dict[tuple[str, str], str] = {}
        self.pod_log_files: dict[tuple[str, str], Path] = {}  # written by a process (the kubelet's pods)
        self.revision = 100
        self.compacted = 0
        self.stamp_uids = True  # False: leave metadata.uid empty, as plain kmock does
        self.apply_log: list[AppliedWrite] = []
        self.secret_rules: dict[str, list[dict[str, Any]]] | None = None  # None: no RBAC on Secrets
        self._watchers: set[asyncio.Queue[tuple[ResourceId, dict[str, Any]] | str]] = set()
        for resource in KINDS:
            self.resources["/".join(p for p in resource if p)] = kmock.ResourceInfo(
                kind=KINDS[resource], namespaced=True
            )
        (self.fallback**1)[self._handles] << self._serve

    # --- test helpers -------------------------------------------------------------------------
    def objects_of(self, plural: str, namespace: str = NAMESPACE) -> dict[str, dict[str, Any]]:
        """Stored objects of one kind in a namespace, by name (deep copies)."""
        return {
            name: copy.deepcopy(obj)
            for (res, ns, name), obj in self.store.items()
            if res[2] == plural and ns == namespace
        }

    def get_object(self, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        """One stored object (a deep copy), or None."""
        obj = self.objects_of(plural, namespace).get(name)
        return obj

    def put_object(self, plural: str, obj: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
        """Create or replace an object from the test (the kubelet's and other controllers' writes)."""
        res = self._resource_id(plural)
        key: ObjectKey = (res, namespace, obj["metadata"]["name"])
        old = self.store.get(key)
        new = copy.deepcopy(obj)
        new.setdefault("metadata", {})["namespace"] = namespace
        if old is None:
            self._stamp_new(res, new)
            self.store[key] = new
            self._emit(res, "ADDED", new)
        else:
            meta = new["metadata"]
            if "uid" in old["metadata"]:
                meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["generation"] = old["metadata"].get("generation", 1)
            if new.get("spec") != old.get("spec"):
                meta["generation"] += 1
            self._bump(new)
            self.store[key] = new
            self._emit(res, "MODIFIED", new)
        return copy.deepcopy(new)

    def patch_object(self, plural: str, name: str, patch: dict[str, Any], namespace: str = NAMESPACE) -> None:
        """Merge-patch an object from the test (an out-of-band edit, a status change)."""
        res = self._resource_id(plural)
        key: ObjectKey = (res, namespace, name)
        old = self.store[key]
        new = _merge_patch(old, patch)
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._bump(new)
        self.store[key] = new
        self._emit(res, "MODIFIED", new)

    def delete_object(self, plural: str, name: str, namespace: str = NAMESPACE) -> None:
        """Delete an object from the test (and its dependents)."""
        self._delete((self._resource_id(plural), namespace, name))

    def compact(self) -> None:
        """Forget the event history, so that resuming from any older resourceVersion answers 410 Gone."""
        self.history.clear()
        self.compacted = self.revision

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch stream (``abrupt``: close the TCP connection mid-stream); returns how many."""
        count = len(self._watchers)
        for queue in list(self._watchers):
            queue.put_nowait("abort" if abrupt else "end")
        return count

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now."""
        return len(self._watchers)

    # --- the apiserver side -------------------------------------------------------------------
    @staticmethod
    def _resource_id(plural: str) -> ResourceId:
        for res in KINDS:
            if res[2] == plural:
                return res
        raise KeyError(plural)

    @staticmethod
    def _handles(request: kmock.Request) -> bool:
        res = request.resource
        return res is not None and (res.group, res.version, res.plural) in KINDS

    def _bump(self, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)

    def _stamp_new(self, res: ResourceId, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        if self.stamp_uids:
            meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        obj["apiVersion"] = f"{res[0]}/{res[1]}" if res[0] else res[1]
        obj["kind"] = KINDS[res]
        self._bump(obj)

    def _log_write(self, verb: str, res: ResourceId, obj: dict[str, Any]) -> None:
        if res[2] not in ("statefulsets", "services"):
            return
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        generation = int(annotations.get("mcp-gateway/generation", "0") or 0)
        incarnation = str(annotations.get("mcp-gateway/created-at", ""))
        self.apply_log.append(AppliedWrite(verb, res[2], str(meta.get("name")), incarnation, generation))

    def _emit(self, res: ResourceId, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self.history.append((self.revision, res, event))
        for queue in self._watchers:
            queue.put_nowait((res, event))

    def _delete(self, key: ObjectKey) -> dict[str, Any]:
        obj = self.store.pop(key)
        self._bump(obj)
        self._emit(key[0], "DELETED", obj)
        uid = obj["metadata"].get("uid")
        for other_key, other in list(self.store.items()):
            owners = other["metadata"].get("ownerReferences") or []
            if uid and other_key in self.store and any(o.get("uid") == uid for o in owners):
                self._delete(other_key)
        return obj

    def _serve(self, request: kmock.Request) -> Any:
        assert request.resource is not None
        resource = request.resource
        res: ResourceId = (resource.group or "", resource.version or "", resource.plural or "")
        params = {k: v for k, v in request.params.items()}
        method = request.method.value
        ns, name, sub = request.namespace, request.name, request.subresource
        if res[2] == "secrets" and self.secret_rules is not None:
            refused = self._forbidden(method, params, ns, name)
            if refused is not None:
                return refused
        if method == "GET" and params.get("watch", "").lower() in ("true", "1"):
            return self._watch(res, ns, name, params, request)
        if method == "GET" and name is None:
            return self._list(res, ns, params)
        if method == "POST" and name is None:
            return self._create(res, ns, request.data)
        if name is None:
            return _status(405, "MethodNotAllowed", f"{method} on a collection is not served here")
        key: ObjectKey = (res, ns, name)
        current = self.store.get(key)
        if current is None:
            return _status(404, "NotFound", f'{KINDS[res].lower()}s "{name}" not found')
        if method == "GET" and sub == "log":
            return self._log(current, params)
        if method == "GET":
            return copy.deepcopy(current)
        if method == "DELETE":
            self._log_write("delete", res, current)
            return copy.deepcopy(self._delete(key))
        if method == "PUT":
            return self._replace(key, current, request.data, sub)
        if method == "PATCH":
            return self._patch(key, current, request.data, sub)
        return _status(405, "MethodNotAllowed", method)

    def _forbidden(
        self, method: str, params: dict[str, str], ns: str | None, name: str | None
    ) -> kmock.KubernetesError | None:
        """RBAC for Secrets: None when a rule of the namespace's Role grants the verb on the name."""
        watch = params.get("watch", "").lower() in ("true", "1")
        verbs = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch"}
        verb = "watch" if watch else verbs.get(method, "delete")
        for rule in (self.secret_rules or {}).get(ns or "", []):
            names = rule.get("resourceNames") or []
            granted = "secrets" in rule.get("resources", []) and verb in rule.get("verbs", [])
            if granted and (not names or (name is not None and name in names)):
                return None
        who = 'User "system:serviceaccount:mcp-gateway:mcp-gateway"'
        what = f'secrets "{name}" is forbidden' if name else "secrets is forbidden"
        return _status(403, "Forbidden", f'{what}: {who} cannot {verb} resource "secrets" in the namespace "{ns}"')

    def _list(self, res: ResourceId, ns: str | None, params: dict[str, str]) -> dict[str, Any]:
        selector = params.get("labelSelector", "")
        items = [
            copy.deepcopy(obj)
            for (r, o_ns, _), obj in sorted(self.store.items(), key=lambda kv: kv[0][2])
            if r == res and (ns is None or o_ns == ns)
            if _selector_matches(selector, obj["metadata"].get("labels") or {})
        ]
        api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
        return {
            "kind": KINDS[res] + "List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    def _create(self, res: ResourceId, ns: str | None, data: Any) -> Any:
        if not isinstance(data, dict) or not (data.get("metadata") or {}).get("name"):
            return _status(422, "Invalid", "metadata.name: Required value")
        obj = copy.deepcopy(data)
        name = obj["metadata"]["name"]
        key: ObjectKey = (res, ns, name)
        if key in self.store:
            return _status(409, "AlreadyExists", f'{KINDS[res].lower()}s "{name}" already exists')
        obj["metadata"]["namespace"] = ns
        self._stamp_new(res, obj)
        self.store[key] = obj
        self._emit(res, "ADDED", obj)
        self._log_write("create", res, obj)
        return copy.deepcopy(obj)  # a real apiserver says 201; clients accept 200 alike

    def _replace(self, key: ObjectKey, current: dict[str, Any], data: Any, sub: str | None) -> Any:
        if not isinstance(data, dict):
            return _status(400, "BadRequest", "the body must be an object")
        wanted_rv = (data.get("metadata") or {}).get("resourceVersion")
        if key[0][2] == "services" and not wanted_rv:
            return _status(
                422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
            )
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[0][2]} "{key[2]}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )
        if sub == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(data.get("status"))
        else:
            new = copy.deepcopy(data)
            meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "namespace", "generation"):
                meta[field] = current["metadata"].get(field)
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])  # status only changes through /status
            if new.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
            new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        self._bump(new)
        self.store[key] = new
        self._emit(key[0], "MODIFIED", new)
        if sub is None:
            self._log_write("replace", key[0], new)
        return copy.deepcopy(new)

    def _patch(self, key: ObjectKey, current: dict[str, Any], data: Any, sub: str | None) -> Any:
        if not isinstance(data, dict):
            return _status(400, "BadRequest", "only merge patches are served here")
        new = _merge_patch(current, {"status": data.get("status")} if sub == "status" else data)
        if new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self._bump(new)
        self.store[key] = new
        self._emit(key[0], "MODIFIED", new)
        return copy.deepcopy(new)

    def _log(self, pod: dict[str, Any], params: dict[str, str]) -> Any:
        meta = pod["metadata"]
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        started = any(set(s.get("state") or {}) & {"running", "terminated"} for s in statuses)
        if not started:
            container = pod["spec"]["containers"][0]["name"] if pod.get("spec") else "main"
            reason = "ContainerCreating"
            for s in statuses:
                reason = ((s.get("state") or {}).get("waiting") or {}).get("reason", reason)
            return _status(
                400,
                "BadRequest",
                f'container "{container}" in pod "{meta["name"]}" is waiting to start: {reason}',
            )
        key = (meta["namespace"], meta["name"])
        text = self.pod_log_files[key].read_text(errors="replace") if key in self.pod_log_files else ""
        text = self.pod_logs.get(key, text)
        tail = params.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        return text.encode()

    async def _watch(
        self, res: ResourceId, ns: str | None, name: str | None, params: dict[str, str], request: kmock.Request
    ) -> AsyncIterator[Any]:
        selector = params.get("labelSelector", "")

        def wanted(event: dict[str, Any]) -> bool:
            meta = event["object"]["metadata"]
            return (
                (ns is None or meta.get("namespace") == ns)
                and (name is None or meta.get("name") == name)
                and _selector_matches(selector, meta.get("labels") or {})
            )

        rv_text = params.get("resourceVersion", "")
        queue: asyncio.Queue[tuple[ResourceId, dict[str, Any]] | str] = asyncio.Queue()
        backlog: list[dict[str, Any]] = []
        if rv_text in ("", "0"):
            backlog = [
                {"type": "ADDED", "object": copy.deepcopy(obj)} for (r, _, _), obj in self.store.items() if r == res
            ]
        elif int(rv_text) < self.compacted:
            yield b""
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {rv_text} ({self.compacted})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            return
        else:
            backlog = [copy.deepcopy(e) for rv, r, e in self.history if r == res and rv > int(rv_text)]
        self._watchers.add(queue)  # no await since the backlog was taken: nothing is lost in between
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        try:
            yield b""
            for event in backlog:
                if wanted(event):
                    yield event
            async with asyncio.timeout(timeout):
                while True:
                    item = await queue.get()
                    if item == "abort":
                        raw = request._raw_request
                        if raw is not None and raw.transport is not None:
                            raw.transport.close()
                        return
                    if isinstance(item, str):
                        return
                    if item[0] == res and wanted(item[1]):
                        yield item[1]
        except TimeoutError:
            return
        finally:
            self._watchers.discard(queue)


@contextlib.asynccontextmanager
async def running_cluster(port: int | None = None) -> AsyncIterator[ClusterEmulator]:
    """Start a ClusterEmulator on 127.0.0.1 (a free port unless given); stop it on exit."""
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator, port=port or free_port()):
        try:
            yield emulator
        finally:
            emulator.drop_watches()


def write_kubeconfig(path: Path, url: str, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig file pointing at ``url`` with a dummy bearer token."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster:
    server: {url.rstrip("/")}
users:
- name: tester
  user:
    token: test-token
contexts:
- name: emulator
  context:
    cluster: emulator
    user: tester
    namespace: {namespace}
current-context: emulator
"""
    )
    return path


def kube_settings(kubeconfig: Path, **overrides: Any) -> Settings:
    """Settings of a gateway in kubernetes mode talking to the emulator."""
    values: dict[str, Any] = {"runtime": "kubernetes", "kubeconfig": kubeconfig, "kube_registry": "registry.test"}
    values.update(overrides)
    return Settings(**values)


def pod(
    adapter: str,
    index: int,
    *,
    ip: str | None = None,
    ready: bool = True,
    waiting: str | None = None,
    waiting_message: str = "",
    unschedulable: str | None = None,
    restarts: int = 0,
    owner_uid: str | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """A pod of ``adapter`` as the StatefulSet controller and the kubelet would write it."""
    name = f"{adapter}-{index}"
    labels = {
        **MANAGED,
        "mcp-gateway/adapter": adapter,
        "statefulset.kubernetes.io/pod-name": name,
        "apps.kubernetes.io/pod-index": str(index),
    }
    if revision:
        labels["controller-revision-hash"] = revision
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner_uid:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": adapter, "uid": owner_uid, "controller": True}
        ]
    if waiting:
        state: dict[str, Any] = {"waiting": {"reason": waiting, "message": waiting_message}}
    elif unschedulable:
        state = {}
    else:
        state = {"running": {"startedAt": _now()}}
    conditions = [{"type": "Ready", "status": "True" if ready and not waiting else "False"}]
    if unschedulable:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]
    status: dict[str, Any] = {
        "phase": "Running" if state.get("running") else "Pending",
        "conditions": conditions,
        "containerStatuses": []
        if unschedulable
        else [
            {
                "name": "mcp",
                "ready": bool(ready and not waiting),
                "restartCount": restarts,
                "state": state,
                "image": "registry.test/x:1",
                "imageID": "",
                "started": bool(state.get("running")),
            }
        ],
    }
    if ip and not unschedulable:
        status["podIP"] = ip
        status["startTime"] = _now()
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "mcp", "image": "registry.test/x:1"}]},
        "status": status,
    }


@pytest.fixture
async def cluster() -> AsyncIterator[ClusterEmulator]:
    """A running ClusterEmulator (kmock underneath) on a free port."""
    async with running_cluster() as emulator:
        yield emulator


@pytest.fixture
def kubeconfig(cluster: ClusterEmulator, tmp_path: Path) -> Path:
    """A kubeconfig file for ``cluster``."""
    return write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url))


def iter_managed(cluster: ClusterEmulator, plural: str) -> Iterator[dict[str, Any]]:
    """Objects of a kind carrying the gateway's managed-by label."""
    for obj in cluster.objects_of(plural).values():
        if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "mcp-gateway":
            yield obj


@pytest.fixture
async def runtime(kubeconfig: Path) -> AsyncIterator[KubernetesRuntime]:
    """A started KubernetesRuntime talking to ``cluster``; closed after the test."""
    rt = KubernetesRuntime(kubernetes_runtime_config(kube_settings(kubeconfig)))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.close()


def record(name: str = "ex", generation: int = 1, **fields: Any) -> AdapterRecord:
    """An adapter record as the store would hand it to the runtime."""
    values: dict[str, Any] = {"image_name": "mcp-example", "image_version": "1.0.0", "replica_count": 2}
    values.update(fields)
    return AdapterRecord(name=name, generation=generation, **values)


def requests_to(cluster: ClusterEmulator, method: str, path_part: str, **params: str) -> list[kmock.Request]:
    """Requests the emulator received with this method, path fragment and query parameters."""
    return [
        r
        for r in list(cluster)
        if r.method.value == method and path_part in r.url.path and all(r.params.get(k) == v for k, v in params.items())
    ]


async def wait_for(predicate: Callable[[], bool], limit: float = 5.0, what: str = "condition") -> float:
    """Poll ``predicate`` every 10 ms; return the seconds it took, fail after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > limit:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.01)
    return loop.time() - start


# --- a kubelet for end-to-end tests -----------------------------------------------------------

EXAMPLE_SERVER = Path(__file__).resolve().parent.parent / "examples" / "mcp-example" / "server.py"
RECORDER = Path(__file__).resolve().parent / "upstreams" / "recorder.py"


def _program(image: str) -> Path:
    """The program a pod of ``image`` runs: the recorder for ``<registry>/recorder:<tag>``, else the example."""
    return RECORDER if image.rsplit("/", 1)[-1].split(":", 1)[0] == "recorder" else EXAMPLE_SERVER


REPO_DIR = EXAMPLE_SERVER.parent.parent.parent
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclasses.dataclass
class _PodProcess:
    name: str
    owner_uid: str
    revision: str
    ip: str
    log_path: Path
    proc: asyncio.subprocess.Process  # the first container's (the example server, or containers[0])
    phase: str = "starting"  # starting → ready → dead
    sidecars: list[asyncio.subprocess.Process] = dataclasses.field(default_factory=list)
    probe: dict[str, Any] | None = None  # the readinessProbe of the container that has one
    volumes: list[Path] = dataclasses.field(default_factory=list)

    @property
    def procs(self) -> list[asyncio.subprocess.Process]:
        return [self.proc, *self.sidecars]


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of command and args (``$$`` is a literal ``$``; unknown stays)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(one, text)


def _remap(text: str, mounts: dict[str, Path]) -> str:
    """A path under a volume's mountPath, as the host directory that stands for the volume."""
    for mount_path, host in mounts.items():
        text = re.sub(re.escape(mount_path) + r"(?=/|$|\b)", str(host), text)
    return text


class Kubelet:
    """Plays the StatefulSet controller and the kubelet against a ClusterEmulator.

    It watches StatefulSets over the API, runs one example-server process per replica on its own
    loopback address (``127.x.0.N``, port 8000, ``HOST``/``PORT``/``MCP_REPLICA_ID`` and the pod
    template's env), and writes Pod objects as a kubelet would: created with a pod IP and a waiting
    container, then Running and Ready once the port accepts connections, then not Ready (container
    terminated, CrashLoopBackOff) when the process exits. It keeps each StatefulSet's status
    (ready/updated/available replicas, revisions) current. Whatever image is named, the example
    server runs — except an image named ``recorder`` (any registry and tag), which runs the
    recording upstream (tests/upstreams/recorder.py) that reports the headers it received.

    A pod whose first container has a ``command``, or that has init containers or several containers
    (a stdio image with its bridge, issue 17), runs what it says instead: every image is this
    machine with the project's venv first on ``PATH`` and the repository as working directory
    (``python`` is the venv's). Init containers run to completion first; each ``emptyDir`` is a
    fresh directory, and a mountPath in a command, an arg or an env value stands for it (no mount
    namespaces here); ``$(VAR)`` in command and args is expanded from the container's env, whose
    ``fieldRef`` may be ``metadata.name`` or ``status.podIP``. Readiness follows the container that
    has a readinessProbe (``httpGet``: a 2xx/3xx answer; ``tcpSocket``: a connection). A container's
    processes are its process tree: stopping a pod kills every process of every container.
    """

    def __init__(self, cluster: ClusterEmulator, log_dir: Path, *, namespace: str = NAMESPACE) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.namespace = namespace
        self.pods: dict[str, _PodProcess] = {}
        self._subnet = random.randint(100, 250)
        self._next_host = 2
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def process_of(self, pod_name: str) -> asyncio.subprocess.Process:
        """The process running a pod."""
        return self.pods[pod_name].proc

    async def run(self) -> None:
        """Watch StatefulSets and keep pods and processes in line, until cancelled."""
        watcher = asyncio.create_task(self._watch_statefulsets())
        try:
            while True:
                await self.reconcile()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.stop_all()

    async def _watch_statefulsets(self) -> None:
        url = str(self.cluster.url).rstrip("/") + f"/apis/apps/v1/namespaces/{self.namespace}/statefulsets"
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(url) as listing:
                        rv = (await listing.json())["metadata"]["resourceVersion"]
                    self._wake.set()
                    async with http.get(url, params={"watch": "true", "resourceVersion": rv}) as stream:
                        async for _line in stream.content:
                            self._wake.set()
                except (aiohttp.ClientError, KeyError, ValueError):
                    await asyncio.sleep(0.2)

    def _allocate_ip(self) -> str:
        while True:
            ip = f"127.{self._subnet}.0.{self._next_host}"
            self._next_host += 1
            with socket.socket() as s:
                try:
                    s.bind((ip, 8000))
                except OSError:
                    continue  # someone else's replica lives there
                return ip

    async def reconcile(self) -> None:
        """One pass: pods for every StatefulSet, readiness of starting pods, deaths, StatefulSet status."""
        async with self._lock:
            sets = self.cluster.objects_of("statefulsets", self.namespace)
            wanted: dict[str, tuple[dict[str, Any], int, str]] = {}
            for sts in sets.values():
                revision = hashlib.sha256(json.dumps(sts["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]
                for index in range(int(sts["spec"].get("replicas", 1))):
                    wanted[f"{sts['metadata']['name']}-{index}"] = (sts, index, revision)
            for name, pp in list(self.pods.items()):
                want = wanted.get(name)
                if want is None or want[0]["metadata"]["uid"] != pp.owner_uid or want[2] != pp.revision:
                    await self._stop_pod(name)
            for name, (sts, index, revision) in wanted.items():
                if name not in self.pods:
                    await self._start_pod(sts, index, revision)
            for pp in list(self.pods.values()):
                await self._observe(pp)
            for sts in sets.values():
                self._write_statefulset_status(sts)

    @staticmethod
    def _container_env(container: dict[str, Any], pod_name: str, ip: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
        fields = {"metadata.name": pod_name, "status.podIP": ip}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") in fields:
                env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        return env

    async def _run_container(
        self, container: dict[str, Any], pod_name: str, ip: str, volumes: dict[str, Path], log_path: Path
    ) -> asyncio.subprocess.Process:
        """One container of a pod that says what it runs (see the class docstring)."""
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}
        env = {k: _remap(v, mounts) for k, v in self._container_env(container, pod_name, ip).items()}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', os.defpath)}"
        argv = [_remap(_expand(a, env), mounts) for a in [*container["command"], *(container.get("args") or [])]]
        if argv[0] == "python":
            argv[0] = sys.executable
        with open(log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once per container
            return await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=REPO_DIR, stdout=log, stderr=log, start_new_session=True
            )

    async def _start_containers(
        self, sts: dict[str, Any], name: str, revision: str, ip: str, log_path: Path
    ) -> _PodProcess:
        """A pod that says what it runs: volumes, init containers to completion, then its containers."""
        spec = sts["spec"]["template"]["spec"]
        volumes: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            assert "emptyDir" in volume, f"the test kubelet has only emptyDir volumes, not {volume}"
            path = self.log_dir / f"{name}-{revision}-{volume['name']}"
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(mode=0o777)
            volumes[volume["name"]] = path
        owner = sts["metadata"]["uid"]
        for init in spec.get("initContainers") or []:
            proc = await self._run_container(init, name, ip, volumes, log_path)
            if await proc.wait() != 0:  # the pod stays down; its log says why
                return _PodProcess(name, owner, revision, ip, log_path, proc, volumes=list(volumes.values()))
        first, *others = spec["containers"]
        pp = _PodProcess(
            name, owner, revision, ip, log_path, await self._run_container(first, name, ip, volumes, log_path)
        )
        pp.volumes = list(volumes.values())
        for other in others:
            other_log = self.log_dir / f"{name}-{revision}-{other['name']}.log"
            pp.sidecars.append(await self._run_container(other, name, ip, volumes, other_log))
        pp.probe = next((c["readinessProbe"] for c in spec["containers"] if c.get("readinessProbe")), None)
        return pp

    async def _start_pod(self, sts: dict[str, Any], index: int, revision: str) -> None:
        name = f"{sts['metadata']['name']}-{index}"
        template = sts["spec"]["template"]
        container = template["spec"]["containers"][0]
        ip = self._allocate_ip()
        log_path = self.log_dir / f"{name}-{revision}.log"
        pod_spec = template["spec"]
        if container.get("command") or pod_spec.get("initContainers") or len(pod_spec["containers"]) > 1:
            self.pods[name] = await self._start_containers(sts, name, revision, ip, log_path)
        else:
            env = self._container_env(container, name, ip)
            env.update({"HOST": ip, "PORT": "8000", "MCP_REPLICA_ID": env.get("MCP_REPLICA_ID", name)})
            with open(log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once per pod
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(_program(container["image"])),
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self.pods[name] = _PodProcess(name, sts["metadata"]["uid"], revision, ip, log_path, proc)
        self.cluster.pod_log_files[(self.namespace, name)] = log_path
        labels = {
            **(template["metadata"].get("labels") or {}),
            "statefulset.kubernetes.io/pod-name": name,
            "apps.kubernetes.io/pod-index": str(index),
            "controller-revision-hash": revision,
        }
        owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
        owner |= {"uid": sts["metadata"]["uid"], "controller": True}
        self.cluster.put_object(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
                "spec": copy.deepcopy(template["spec"]),
                "status": {
                    "phase": "Pending",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "ready": False,
                            "restartCount": 0,
                            "state": {"waiting": {"reason": "ContainerCreating"}},
                            "image": container["image"],
                            "imageID": "",
                        }
                    ],
                },
            },
            self.namespace,
        )

    async def _observe(self, pp: _PodProcess) -> None:
        exited = next((p for p in pp.procs if p.returncode is not None), None)
        if exited is not None and pp.phase != "dead":
            pp.phase = "dead"
            self._write_pod_status(
                pp,
                ready=False,
                state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}},
                last={"terminated": {"exitCode": exited.returncode, "reason": "Error"}},
            )
        elif pp.phase == "starting":
            http = (pp.probe or {}).get("httpGet")
            port = int((http or (pp.probe or {}).get("tcpSocket") or {}).get("port", 8000))
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(pp.ip, port), 0.2)
            except (OSError, TimeoutError):
                return
            try:
                if http:
                    writer.write(f"GET {http.get('path', '/')} HTTP/1.0\r\nHost: {pp.ip}\r\n\r\n".encode())
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                    if not line.split(b" ")[1:2] or not 200 <= int(line.split(b" ")[1]) < 400:
                        return
            except (OSError, TimeoutError, ValueError):
                return
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            pp.phase = "ready"
            self._write_pod_status(pp, ready=True, state={"running": {"startedAt": _now()}})

    def _write_pod_status(
        self, pp: _PodProcess, *, ready: bool, state: dict[str, Any], last: dict[str, Any] | None = None
    ) -> None:
        current = self.cluster.get_object("pods", pp.name, self.namespace)
        if current is None:
            return
        container = current["status"]["containerStatuses"][0]
        container.update({"ready": ready, "state": state, "started": "running" in state})
        if last:
            container["lastState"] = last
        self.cluster.patch_object(
            "pods",
            pp.name,
            {
                "status": {
                    "phase": "Running",
                    "startTime": current["status"].get("startTime") or _now(),
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                    "containerStatuses": [container],
                }
            },
            self.namespace,
        )

    def _write_statefulset_status(self, sts: dict[str, Any]) -> None:
        name = sts["metadata"]["name"]
        revision = hashlib.sha256(json.dumps(sts["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]
        mine = [pp for pp in self.pods.values() if pp.owner_uid == sts["metadata"]["uid"]]
        ready = sum(pp.phase == "ready" for pp in mine)
        updated = sum(pp.revision == revision for pp in mine)
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(mine),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": updated,
            "updatedReplicas": updated,
            "currentRevision": revision,
            "updateRevision": revision,
        }
        if sts.get("status") != status:
            self.cluster.patch_object("statefulsets", name, {"status": status}, self.namespace)

    async def _stop_pod(self, name: str) -> None:
        pp = self.pods.pop(name)
        await _kill_pod(pp)
        if self.cluster.get_object("pods", name, self.namespace) is not None:
            self.cluster.delete_object("pods", name, self.namespace)
        self.cluster.pod_log_files.pop((self.namespace, name), None)

    async def stop_all(self) -> None:
        """Kill every pod process."""
        for name in list(self.pods):
            pp = self.pods.pop(name)
            await _kill_pod(pp)


async def _kill_pod(pp: _PodProcess) -> None:
    """Every process of every container of the pod (a container's cgroup dies with it)."""
    tree: set[int] = set()
    for proc in pp.procs:
        if proc.returncode is None:
            tree |= _process_tree(proc.pid)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for proc in pp.procs:
        await _kill(proc)
    for path in pp.volumes:
        shutil.rmtree(path, ignore_errors=True)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


class ClusterThread:
    """A ClusterEmulator and a Kubelet on their own event loop in a thread.

    A gateway process talks to the emulator while the test blocks or awaits on its own loop;
    ``call(fn, ...)`` runs a function on the cluster's loop (the emulator is not thread-safe).
    """

    def __init__(self, log_dir: Path, *, kubelet: bool = True) -> None:
        self.log_dir = log_dir
        self.with_kubelet = kubelet  # False: only the API (no pods run; control-plane tests)
        self.url = ""
        self.cluster: ClusterEmulator | None = None
        self.kubelet: Kubelet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cluster", daemon=True)

    def __enter__(self) -> ClusterThread:
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise RuntimeError(f"the cluster thread did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__ or visible in the test
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_cluster() as cluster:
            self.cluster = cluster
            self.url = str(cluster.url).rstrip("/")
            self.kubelet = Kubelet(cluster, self.log_dir)
            task = asyncio.create_task(self.kubelet.run() if self.with_kubelet else self._stop.wait())
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (awaited when it returns an awaitable) on the cluster's loop; return its result."""
        assert self._loop is not None

        async def run() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)
