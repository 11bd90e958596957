"""Endpoints from a list + watch of the managed pods in the namespace, held in memory.

Every gateway replica runs its own watch (followers route too). The watch resumes from the last
resourceVersion it saw, re-lists when the API answers 410 Gone, re-opens when the connection drops
or the server ends the watch, and backs off (0.25 s doubling to 10 s, jittered) on errors. Only pods
with the ``Ready`` condition, a pod IP and no deletion in progress are endpoints; a deleted pod that
is still Ready (in the preStop drain the manifest gives it) is a ``draining`` endpoint, for the
sessions pinned to it. Listeners hear of a change as soon as the watch event is processed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

from gateway.runtime._kube_api import TRANSPORT_ERRORS, ApiError, KubeApi, unavailable
from gateway.runtime._kube_config import KubernetesRuntimeConfig
from gateway.runtime._kube_manifests import ADAPTER_LABEL, CONTAINER_PORT, MANAGED_SELECTOR, Manifest, is_managed
from gateway.runtime._kube_status import pod_ready, pod_serving, pod_uid
from gateway.runtime.base import Endpoint, EndpointListener

log = logging.getLogger("gateway.runtime.kubernetes")

BACKOFF_FIRST, BACKOFF_MAX = 0.25, 10.0
"""Wait after the first failed watch or list, doubling up to the maximum."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class PodWatch:
    """The ready pods of every adapter, kept current by a pod watch (see the module docstring)."""

    def __init__(self, api: KubeApi, config: KubernetesRuntimeConfig) -> None:
        self._api = api
        self._config = config
        self._pods: dict[str, dict[str, Manifest]] = {}
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._listeners: list[EndpointListener] = []
        self._resource_version = ""

    def endpoints(self, name: str) -> tuple[Endpoint, ...]:
        """Ready pods of the adapter, from memory."""
        return self._endpoints.get(name, ())

    def add_listener(self, listener: EndpointListener) -> None:
        """Call ``listener(name)`` whenever an adapter's ready endpoints change."""
        self._listeners.append(listener)

    def _endpoint(self, pod: Manifest, adapter: str) -> Endpoint:
        pod_name = str(pod["metadata"]["name"])
        if self._config.pod_addressing == "dns":
            ns, domain = self._api.namespace, self._config.cluster_domain
            host = f"{pod_name}.{adapter}.{ns}.svc.{domain}"
        else:
            ip = str(pod["status"]["podIP"])
            host = f"[{ip}]" if ":" in ip else ip
        return Endpoint(replica=pod_name, uid=pod_uid(pod), url=f"http://{host}:{CONTAINER_PORT}")

    def _refresh(self, adapter: str) -> None:
        pods = self._pods.get(adapter, {})
        ready = sorted((self._endpoint(p, adapter) for p in pods.values() if pod_ready(p)), key=lambda e: e.replica)
        # Deleted but still serving (the preStop drain of a replaced or scaled-away pod): pinned sessions only.
        draining = sorted(
            (
                dataclasses.replace(self._endpoint(p, adapter), draining=True)
                for p in pods.values()
                if p["metadata"].get("deletionTimestamp") and pod_serving(p)
            ),
            key=lambda e: e.replica,
        )
        new = tuple(ready + draining)
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

    async def relist(self) -> None:
        """List the managed pods and replace the memory with what the API says."""
        try:
            listing = await self._api.list("pods", MANAGED_SELECTOR)
        except (*TRANSPORT_ERRORS,) as exc:
            raise unavailable(f"list pods in namespace {self._api.namespace}", exc) from None
        fresh: dict[str, dict[str, Manifest]] = {}
        for pod in listing.get("items") or []:
            if is_managed(pod):
                fresh.setdefault(pod["metadata"]["labels"][ADAPTER_LABEL], {})[pod["metadata"]["name"]] = pod
        touched = fresh.keys() | self._pods.keys()
        self._pods = fresh
        for adapter in sorted(touched):
            self._refresh(adapter)
        self._resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def run(self) -> None:
        """List + watch the managed pods until cancelled."""
        backoff = BACKOFF_FIRST
        while True:
            try:
                if not self._resource_version:
                    await self.relist()
                await self._watch_once()
                backoff = BACKOFF_FIRST  # the server ended the watch: resume right away
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("pod watch expired (410 Gone); listing pods again")
                self._resource_version = ""
            except Exception as exc:
                log.warning("pod watch failed (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _watch_once(self) -> None:
        try:
            async for event in self._api.watch("pods", MANAGED_SELECTOR, self._resource_version):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED"):
                    self._upsert(obj)
                elif kind == "DELETED":
                    self._forget(obj)
                if rv:
                    self._resource_version = str(rv)
        except ApiError as exc:
            if exc.status == 410:
                raise WatchExpired() from None
            raise
