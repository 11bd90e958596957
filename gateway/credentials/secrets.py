"""Named secrets for ``upstreamAuth`` type ``secret``: a 0600 file in embedded mode, Kubernetes Secrets
in production. Values are only ever returned by :meth:`SecretStore.get`; lists hold names only.

The file is JSON ``{"name": "value"}`` in ``<data_dir>/secrets.json``, written atomically with mode
0600 by ``mcp-gateway secrets set|delete``; the gateway rereads it when its mtime changes, so a value
set while the gateway runs is used by the next request.

A Kubernetes Secret named ``<name>`` in the gateway's namespace holds the value under the key
``value``. The gateway reads it with ``get`` on that one name (no ``list``/``watch``: least privilege)
and keeps it for ``KUBE_SECRET_TTL`` seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

SECRETS_FILE = "secrets.json"
KUBE_SECRET_KEY = "value"
KUBE_SECRET_TTL = 30.0
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class SecretMissing(Exception):
    """No secret by that name, or it cannot be read; the message says which and why (never the value)."""


class SecretStore(Protocol):
    """Where named secrets live."""

    async def get(self, name: str) -> str:
        """The value stored under ``name``; SecretMissing otherwise."""

    async def read(self, name: str) -> tuple[str, bool]:
        """The value and whether it was read from its source on this call (True) or from memory (False)."""

    async def close(self) -> None:
        """Release clients."""


class FileSecretStore:
    """Secrets in a 0600 JSON file (embedded mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._values: dict[str, str] = {}

    def _load(self) -> dict[str, str]:
        return self._reload()[0]

    def _reload(self) -> tuple[dict[str, str], bool]:
        """The values, and whether the file was (re)read for them."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._mtime, self._values = None, {}
            return self._values, False
        fresh = stat.st_mtime_ns != self._mtime
        if fresh:
            if stat.st_mode & 0o077:
                raise SecretMissing(f"{self.path} is readable by others (mode {stat.st_mode & 0o777:o}); chmod 600 it")
            try:
                raw = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise SecretMissing(f"{self.path} is not a readable JSON object: {type(exc).__name__}") from None
            if not isinstance(raw, dict):
                raise SecretMissing(f"{self.path} is not a JSON object")
            self._values = {str(k): str(v) for k, v in raw.items()}
            self._mtime = stat.st_mtime_ns
        return self._values, fresh

    async def get(self, name: str) -> str:
        """The value, or SecretMissing naming the file."""
        return (await self.read(name))[0]

    async def read(self, name: str) -> tuple[str, bool]:
        """The value and whether the file was read for it (first use, or changed since)."""
        values, fresh = self._reload()
        if name not in values:
            raise SecretMissing(f"no secret {name!r} in {self.path}; set it with 'mcp-gateway secrets set {name}'")
        return values[name], fresh

    def names(self) -> list[str]:
        """The stored names, sorted."""
        return sorted(self._load())

    def set(self, name: str, value: str) -> None:
        """Store ``value`` under ``name`` (atomically, mode 0600)."""
        values = dict(self._load())
        values[name] = value
        self._write(values)

    def delete(self, name: str) -> bool:
        """Remove ``name``; False when it was not there."""
        values = dict(self._load())
        if values.pop(name, None) is None:
            return False
        self._write(values)
        return True

    def _write(self, values: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(values, out)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._mtime = None

    async def close(self) -> None:
        """Nothing to release."""


class KubernetesSecretStore:
    """Secrets as Kubernetes Secrets in one namespace, read by name (``get`` only).

    ``api_client`` returns the runtime's API client (it exists only once the runtime started).
    """

    def __init__(self, api_client: Callable[[], Any], namespace: str, *, ttl: float = KUBE_SECRET_TTL) -> None:
        self._api_client = api_client
        self.namespace = namespace
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}

    async def get(self, name: str) -> str:
        """The Secret's ``value`` key, cached for a short while; SecretMissing naming the Secret."""
        return (await self.read(name))[0]

    async def read(self, name: str) -> tuple[str, bool]:
        """The value and whether the API was asked for it (True) or it came from the cache (False)."""
        hit = self._cache.get(name)
        now = time.monotonic()
        if hit is not None and now < hit[0]:
            return hit[1], False
        from kubernetes_asyncio.client import CoreV1Api
        from kubernetes_asyncio.client.exceptions import ApiException

        where = f"Kubernetes Secret {self.namespace}/{name}"
        try:
            secret = await CoreV1Api(self._api_client()).read_namespaced_secret(
                name, self.namespace, _request_timeout=15
            )
        except ApiException as exc:
            if exc.status == 404:
                raise SecretMissing(f"{where} does not exist") from None
            if exc.status == 403:
                raise SecretMissing(f"{where}: the gateway may not read it (RBAC: get on secrets)") from None
            raise SecretMissing(f"{where}: Kubernetes API answered {exc.status}") from None
        except Exception as exc:  # connection errors of any client layer
            raise SecretMissing(f"{where}: {type(exc).__name__}") from None
        data = secret.data or {}
        if KUBE_SECRET_KEY not in data:
            raise SecretMissing(f"{where} has no '{KUBE_SECRET_KEY}' key")
        try:
            value = base64.b64decode(data[KUBE_SECRET_KEY]).decode()
        except (ValueError, UnicodeDecodeError):
            raise SecretMissing(f"{where}: '{KUBE_SECRET_KEY}' is not UTF-8 text") from None
        self._cache[name] = (now + self._ttl, value)
        return value, True

    async def close(self) -> None:
        """The API client belongs to the caller."""


def gateway_namespace(default: str) -> str:
    """The namespace the gateway pod runs in (its service account's), else ``default``."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or default
    except OSError:
        return default
