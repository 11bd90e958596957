"""The few Kubernetes API calls the runtime makes, on plain dicts, with errors as ``ApiError``.

Calls go through kubernetes_asyncio's generated clients (they carry authentication: bearer tokens,
exec plugins, in-cluster token refresh) with ``_preload_content=False`` so answers stay JSON dicts;
the generated model classes are not needed for the few fields the runtime reads.

The watch reads the event stream itself rather than through ``kubernetes_asyncio.watch.Watch``.
Measured against kubernetes_asyncio 36.1.0 (shared/research/stdio-registry-obo-lease.md §4): the
helper re-opens an ended stream at once, without backoff, and answers 410 Gone by retrying once
with the same stale resourceVersion before raising, so the runtime would still need its own
re-list and backoff loop around it; the stream is one JSON object per line either way. The loop
that re-opens a closed watch with backoff and re-lists on 410 is ``_kube_endpoints.PodWatch``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as kube_client

from gateway.errors import RuntimeUnavailable
from gateway.runtime._kube_manifests import CONTAINER_NAME, Manifest

DEPENDENCY = "Kubernetes API"
REQUEST_TIMEOUT = 15.0
"""Seconds one API call (not a watch) may take."""
WATCH_TIMEOUT = 300
"""Seconds the API server keeps one watch open before the runtime re-watches from where it was."""
FIELD_MANAGER = "mcp-gateway"


class ApiError(Exception):
    """A non-2xx answer of the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


TRANSPORT_ERRORS = (ApiError, aiohttp.ClientError, OSError, TimeoutError)
"""What a call to the API server can raise besides cancellation."""


def unavailable(action: str, exc: Exception) -> RuntimeUnavailable:
    """The error a caller sees: what failed, against which dependency, and what to check."""
    if isinstance(exc, ApiError):
        hint = ""
        if exc.status in (401, 403):
            hint = " (check the gateway's credentials and its RBAC Role, see docs/kubernetes.md)"
        return RuntimeUnavailable(DEPENDENCY, f"{action}: {exc}{hint}")
    return RuntimeUnavailable(DEPENDENCY, f"{action}: {type(exc).__name__}: {exc or 'no answer'}")


_KINDS = {
    "statefulsets": ("apps", "stateful_set"),
    "services": ("core", "service"),
    "pods": ("core", "pod"),
    "leases": ("coordination", "lease"),
}


class KubeApi:
    """Namespaced get/list/create/replace/delete/watch of the kinds the runtime uses, plus pod logs."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self._groups: dict[str, Any] = {
            "core": cast(Any, kube_client).CoreV1Api(api_client),
            "apps": cast(Any, kube_client).AppsV1Api(api_client),
            "coordination": cast(Any, kube_client).CoordinationV1Api(api_client),
        }

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.api_client.close()

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
            raise ApiError(response.status, reason, message)
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
        except ApiError as exc:
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
                field_manager=FIELD_MANAGER,
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
                field_manager=FIELD_MANAGER,
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
        except ApiError as exc:
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

    async def pod_log_follow(self, name: str, tail: int) -> aiohttp.ClientResponse:
        """The open ``pods/log?follow=true`` response of the pod's adapter container (the caller releases it)."""
        return await self._send(
            cast(Any, self._groups["core"]).read_namespaced_pod_log(
                name,
                self.namespace,
                container=CONTAINER_NAME,
                tail_lines=tail,
                follow=True,
                _preload_content=False,
                # A followed log may stay silent for hours: only connecting is bounded.
                _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT),
            )
        )

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
