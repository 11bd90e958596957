"""The Kubernetes runtime: one StatefulSet and one headless Service per adapter.

A reader's map (each module small enough to hold in one's head):

- ``_kube_manifests``: the objects of one adapter, as plain manifests, and the drift check;
- ``_kube_api``: the few API calls (get/list/create/replace/delete/watch, pod logs) on plain dicts;
- ``_kube_lease``: leader election on a Lease: only the holder applies and removes;
- ``_kube_apply``: apply (read-replace, never backwards, fenced), remove by label, what is deployed;
- ``_kube_status``: status of the StatefulSet and its pods, pod logs;
- ``_kube_endpoints``: ready pods from a list + watch, held in memory for the data plane;
- this module: the runtime the rest of the gateway sees, and the RBAC rules it needs.

Every gateway replica starts this runtime: all of them watch pods (routing) and answer status and
logs; only the Lease holder changes the cluster. On a follower ``remove`` does nothing (the leader
sees the record gone at its next store poll, re-reads it and removes), and ``apply`` raises
``NotLeading``. What the gateway needs from the cluster (the RBAC Role) and how to point it at a
cluster: ``docs/kubernetes.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from kubernetes_asyncio import client as kube_client
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.config.config_exception import ConfigException

from gateway.errors import RuntimeUnavailable
from gateway.models import AdapterRecord
from gateway.runtime._kube_api import DEPENDENCY, TRANSPORT_ERRORS, KubeApi, unavailable
from gateway.runtime._kube_apply import Applier
from gateway.runtime._kube_config import KubernetesRuntimeConfig as KubernetesRuntimeConfig  # re-exported
from gateway.runtime._kube_endpoints import PodWatch
from gateway.runtime._kube_lease import LeaseElector
from gateway.runtime._kube_manifests import (
    MANAGED_SELECTOR,
    node_selector,
    service_manifest,
    statefulset_manifest,
    tolerations,
)
from gateway.runtime._kube_status import adapter_status, follow_replica_logs, replica_logs
from gateway.runtime.base import Endpoint, EndpointListener, NotLeading, RuntimeStatus, SessionCounter

log = logging.getLogger(__name__)

RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apps", "statefulsets", ("get", "list", "create", "update", "delete")),
    ("", "services", ("get", "list", "create", "update", "delete")),
    ("", "pods", ("get", "list", "watch")),
    ("", "pods/log", ("get",)),
    ("coordination.k8s.io", "leases", ("get", "create", "update")),
)
"""(API group, resource, verbs): every call this runtime makes in the adapter namespace, nothing more.
The Pulumi Role (infra/gateway_k8s.py) and docs/kubernetes.md are tested against it."""


def replica_identity() -> str:
    """This gateway's name in the Lease: pod name (the hostname in a pod), pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaseLeadership:
    """The runtime's ``Leadership``: exists from construction, follows the Lease once the runtime started."""

    def __init__(self) -> None:
        self.elector: LeaseElector | None = None
        self._listeners: list[Callable[[bool], None]] = []

    def attach(self, elector: LeaseElector) -> None:
        """Follow ``elector`` (called by ``KubernetesRuntime.start``)."""
        self.elector = elector
        for listener in self._listeners:
            elector.add_listener(listener)

    @property
    def leading(self) -> bool:
        """True while this gateway holds the Lease within its renew deadline."""
        return self.elector is not None and self.elector.may_act()

    @property
    def transitions(self) -> int:
        """How many times this gateway started or stopped leading."""
        return self.elector.transitions if self.elector is not None else 0

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(leading)`` whenever this gateway starts or stops leading."""
        self._listeners.append(listener)
        if self.elector is not None:
            self.elector.add_listener(listener)

    async def release(self) -> None:
        """Stop campaigning and hand the Lease back (see ``LeaseElector.release``)."""
        if self.elector is not None:
            await self.elector.release()


class KubernetesRuntime:
    """Adapters as StatefulSets in one namespace; endpoints from a pod watch (see the module docstring)."""

    def __init__(self, config: KubernetesRuntimeConfig) -> None:
        self._config = config
        self._namespace = config.namespace
        # What the manifests parse: refuse to start on a typo rather than at the first apply.
        node_selector(config.node_selector)
        tolerations(config.tolerations)
        self._api: KubeApi | None = None
        self._lease_api: KubeApi | None = None
        self._pods: PodWatch | None = None
        self._applier: Applier | None = None
        self._elector: LeaseElector | None = None
        self.leadership = LeaseLeadership()
        """Whether this gateway may apply and remove; the reconciler follows it."""
        self._listeners: list[EndpointListener] = []
        self._watch_task: asyncio.Task[None] | None = None
        self.identity = replica_identity()

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the cluster configuration, list the managed pods, start the pod watch, run for the Lease."""
        if self._api is not None:
            return
        configuration = await self._load_configuration()
        self._api = KubeApi(cast(Any, kube_client).ApiClient(configuration=configuration), self._namespace)
        self._pods = PodWatch(self._api, self._config)
        for listener in self._listeners:
            self._pods.add_listener(listener)
        c = self._config
        # The Lease gets a client (a connection pool) of its own: renewals must not queue behind a
        # burst of applies (kubernetes_asyncio pools 5 connections per core; 20 applies at once
        # delayed renewals past the renew deadline in tests/e2e/test_ha_control_plane.py).
        self._lease_api = KubeApi(cast(Any, kube_client).ApiClient(configuration=configuration), self._namespace)
        self._elector = LeaseElector(
            self._lease_api,
            name=c.lease_name,
            identity=self.identity,
            lease_duration=c.lease_duration,
            renew_deadline=c.lease_renew_deadline,
            retry_period=c.lease_retry_period,
        )
        self._applier = Applier(self._api, self._elector.may_act)
        self.leadership.attach(self._elector)
        try:
            await self._pods.relist()
            await self._elector.start()
        except Exception:
            await self.close()
            raise
        self._watch_task = asyncio.create_task(self._pods.run(), name="kubernetes-pod-watch")

    async def _load_configuration(self) -> Any:
        configuration = cast(Any, kube_client).Configuration()
        s = self._config
        try:
            if s.kubeconfig is not None:
                await kube_config.load_kube_config(
                    config_file=str(s.kubeconfig), context=s.context, client_configuration=configuration
                )
                return configuration
            try:
                cast(Any, kube_config).load_incluster_config(client_configuration=configuration)
            except ConfigException:
                await kube_config.load_kube_config(context=s.context, client_configuration=configuration)
        except (ConfigException, OSError, ValueError) as exc:
            where = f"kubeconfig {s.kubeconfig}" if s.kubeconfig else "in-cluster service account or ~/.kube/config"
            raise RuntimeUnavailable(
                DEPENDENCY, f"cannot load the cluster configuration from {where}: {exc} (set MCPGW_KUBECONFIG)"
            ) from None
        return configuration

    async def close(self) -> None:
        """Hand back the Lease, stop the pod watch and close the API connection."""
        elector = self._elector
        if elector is not None:
            await elector.release()
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for api in (self._api, self._lease_api):
            if api is not None:
                await api.close()
        self._api = self._lease_api = None

    @property
    def api_client(self) -> Any:
        """The API client (after start), for other readers such as gateway/credentials/secrets.py."""
        return self._require_api().api_client

    def _require_api(self) -> KubeApi:
        if self._api is None:
            raise RuntimeUnavailable(DEPENDENCY, "the Kubernetes runtime is not started")
        return self._api

    def _require_applier(self) -> Applier:
        self._require_api()
        assert self._applier is not None
        return self._applier

    @property
    def stale_refused(self) -> int:
        """Applies refused because the cluster already ran a newer generation."""
        return self._applier.stale_refused if self._applier is not None else 0

    async def ping(self) -> None:
        """List StatefulSets in the namespace (the call apply and deployed rely on)."""
        api = self._require_api()
        try:
            await api.list("statefulsets", MANAGED_SELECTOR)
        except (*TRANSPORT_ERRORS,) as exc:
            raise unavailable(f"list statefulsets in namespace {self._namespace}", exc) from None

    # --- desired state -------------------------------------------------------------------------
    def check_image(self, image_name: str, image_version: str) -> str | None:
        """None: any image is accepted; a missing one shows as ``ImagePullBackOff`` in status."""
        return None

    async def apply(self, adapter: AdapterRecord) -> None:
        """Create or replace the adapter's Service and StatefulSet (leader only; never to an older generation)."""
        applier = self._require_applier()
        applier.fence(f"apply adapter {adapter.name}")
        await applier.apply(
            adapter, service_manifest(adapter, self._config), statefulset_manifest(adapter, self._config)
        )

    async def remove(self, name: str) -> None:
        """Delete the adapter's StatefulSet and Service; on a follower, leave it to the leader."""
        applier = self._require_applier()
        try:
            applier.fence(f"remove adapter {name}")
            await applier.remove(name)
        except NotLeading as exc:  # the leader's next poll sees the record gone, re-reads it and removes
            log.info("adapter %s: removal left to the reconciler leader (%s)", name, exc.detail)

    async def deployed(self) -> dict[str, int]:
        """Managed adapters and the generation each was applied at (see ``Applier.deployed``)."""
        return await self._require_applier().deployed()

    # --- observed state ------------------------------------------------------------------------
    async def status(self, adapter: AdapterRecord) -> RuntimeStatus:
        """Replica counts and rollout state of the StatefulSet, readiness and trouble of each pod."""
        return await adapter_status(self._require_api(), adapter, self._config)

    async def logs(self, name: str, instance: int, tail: int) -> str:
        """The last ``tail`` lines of pod ``<name>-<instance>``; a note while its container is starting."""
        return await replica_logs(self._require_api(), name, instance, tail)

    async def follow_logs(self, name: str, instance: int, tail: int) -> AsyncIterator[str]:
        """The last ``tail`` lines of pod ``<name>-<instance>``, then its new lines until the pod goes."""
        return await follow_replica_logs(self._require_api(), name, instance, tail)

    # --- endpoints -----------------------------------------------------------------------------
    def endpoints(self, name: str) -> tuple[Endpoint, ...]:
        """Ready pods of the adapter, from the watch's memory."""
        return self._pods.endpoints(name) if self._pods is not None else ()

    def add_listener(self, listener: EndpointListener) -> None:
        """Call ``listener(name)`` whenever an adapter's ready endpoints change."""
        self._listeners.append(listener)
        if self._pods is not None:
            self._pods.add_listener(listener)

    def set_session_counter(self, counter: SessionCounter) -> None:
        """Not used: a replaced pod drains for its preStop sleep (``replica_drain_timeout``), whatever its sessions."""
