"""The adapter service: every control-plane operation, with validation and access rules."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec

from gateway.auth.base import can_read, can_use_workload_identity, can_write
from gateway.control import serverjson
from gateway.control.reconciler import Reconciler
from gateway.control.status import ConditionClock, build_status
from gateway.control.validation import validate_input, validate_name, validate_upstream_auth
from gateway.envpolicy import DEFAULT_POLICY, EnvPolicy
from gateway.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    TooManyRequests,
    Unprocessable,
)
from gateway.models import AdapterInput, AdapterPage, AdapterRecord, AdapterResource, AdapterStatus, Identity
from gateway.policy.audit import AuditTrail, Event, changed_fields
from gateway.runtime.base import InstanceNotFound, Runtime
from gateway.sessions.base import SessionStore
from gateway.store.base import AdapterExists, AdapterStore, EtagMismatch
from gateway.store.view import AdapterView
from gateway.telemetry.logs import hash_user
from gateway.telemetry.tracing import DISABLED, Tracing, traced

log = logging.getLogger("gateway.control")

MAX_LOG_TAIL = 10_000
#: A cursor is unpadded base64url; a length of 4n+1 cannot be (there is no 6-bit tail), so the pattern says so.
CURSOR_PATTERN = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$"
CURSOR_MAX_LENGTH = 256


class AdapterService:
    """Create, read, update and delete adapters; report status and logs."""

    def __init__(
        self,
        *,
        store: AdapterStore,
        runtime: Runtime,
        sessions: SessionStore,
        view: AdapterView,
        reconciler: Reconciler,
        max_replicas: int,
        list_max_limit: int,
        workload_identity_roles: tuple[str, ...],
        tracing: Tracing | None = None,
        env_policy: EnvPolicy = DEFAULT_POLICY,
        auth_mode: str = "dev",
        audit: AuditTrail | None = None,
        runtime_kind: str = "local",
        condition_clock: ConditionClock | None = None,
        logs_follow_max_per_user: int = 0,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._sessions = sessions
        self._view = view
        self._reconciler = reconciler
        self._max_replicas = max_replicas
        self._list_max_limit = list_max_limit
        self._wi_roles = workload_identity_roles
        self._clock = condition_clock or ConditionClock()
        self._tracing = tracing or DISABLED
        self._env_policy = env_policy
        self._auth_mode = auth_mode
        self._audit = audit
        self._runtime_kind = runtime_kind
        self._follow_max = logs_follow_max_per_user
        self._following: Counter[str] = Counter()  # open log streams per user, on this gateway

    def _resolve_source(self, data: AdapterInput) -> tuple[AdapterInput, str]:
        """A serverJson becomes the package/image, transport, args and env it stands for (serverjson.py)."""
        if data.server_json is not None and (data.image_name or data.image_version or data.package is not None):
            raise Unprocessable(
                "give either serverJson or imageName/imageVersion or package, not both", field="serverJson"
            )
        if data.server_json is None:
            if data.package is not None and self._runtime_kind != "local":
                raise Unprocessable(
                    "package adapters run on the local runtime; on Kubernetes name an image", field="package"
                )
            return _stdio_image_named(data, self._runtime_kind), ""
        registries = serverjson.LOCAL_REGISTRIES if self._runtime_kind == "local" else serverjson.KUBERNETES_REGISTRIES
        resolved, name = serverjson.resolve(data, registries=registries)
        return _stdio_image_named(resolved, self._runtime_kind), name

    def _check_image(self, data: AdapterInput, server_name: str) -> None:
        """An image the runtime cannot run is 422 naming ``imageName`` (issue 17: the local runtime asks its
        catalog; it used to store the adapter and report ``ImageNotFound`` in status). A package or a
        server.json needs no catalog image."""
        if data.package is not None or server_name:
            return
        problem = self._runtime.check_image(data.image_name, data.image_version)
        if problem is not None:
            raise Unprocessable(problem, field="imageName")

    async def _readable(self, identity: Identity, name: str) -> AdapterRecord:
        validate_name(name)
        record = await self._store.get(name)
        if record is None:
            raise NotFound(f"adapter {name!r} does not exist")
        if not can_read(identity, record):
            raise Forbidden(f"you may not read adapter {name!r}")
        return record

    @traced("adapter.create")
    async def create(self, identity: Identity, data: AdapterInput) -> AdapterRecord:
        """Store a new adapter; the reconciler deploys it."""
        data, server_name = self._resolve_source(data)
        validate_input(data, max_replicas=self._max_replicas, env_policy=self._env_policy)
        self._check_image(data, server_name)
        validate_upstream_auth(data.upstream_auth, auth_mode=self._auth_mode)
        if data.use_workload_identity and not can_use_workload_identity(identity, self._wi_roles):
            raise Forbidden("useWorkloadIdentity requires the mcp.admin role", field="useWorkloadIdentity")
        now = datetime.now(UTC)
        record = AdapterRecord(
            name=data.name,
            image_name=data.image_name,
            image_version=data.image_version,
            environment_variables=dict(data.environment_variables),
            replica_count=data.replica_count,
            description=data.description,
            required_roles=_dedupe(data.required_roles),
            use_workload_identity=data.use_workload_identity,
            upstream_auth=data.upstream_auth,
            transport=data.transport,
            command=data.command,
            args=data.args,
            package=data.package,
            server_name=server_name,
            created_by=identity.user_id,
            tool_policy=data.tool_policy,
            rate_limits=data.rate_limits,
            created_at=now,
            last_updated_at=now,
            generation=1,
        )
        try:
            stored = await self._store.create(record)
        except AdapterExists:
            raise Conflict(f"adapter {data.name!r} already exists", field="name") from None
        self._view.put(stored)
        self._reconciler.kick()
        self._record_change("adapter.create", identity, None, stored)
        log.info("adapter %s created by user %s", stored.name, hash_user(identity.user_id))
        return stored

    @traced("adapter.get")
    async def get(self, identity: Identity, name: str) -> AdapterRecord:
        """One adapter the caller may read."""
        return await self._readable(identity, name)

    @traced("adapter.list")
    async def list(self, identity: Identity, *, limit: int | None, cursor: str | None) -> AdapterPage:
        """A page of the adapters the caller may read."""
        if limit is None:
            limit = min(50, self._list_max_limit)
        if not 1 <= limit <= self._list_max_limit:
            raise InvalidRequest(f"limit must be between 1 and {self._list_max_limit}", field="limit")
        after = _decode_cursor(cursor) if cursor else None
        items: list[AdapterResource] = []
        batch = max(limit, 50)
        while True:
            page = await self._store.list(limit=batch, after=after)
            for record in page:
                after = record.name
                if can_read(identity, record):
                    items.append(AdapterResource.from_record(record))
                    if len(items) == limit:
                        more = record is not page[-1] or len(page) == batch
                        return AdapterPage(items=items, next_cursor=_encode_cursor(record.name) if more else None)
            if len(page) < batch:
                return AdapterPage(items=items, next_cursor=None)

    @traced("adapter.update")
    async def update(
        self, identity: Identity, name: str, data: AdapterInput, *, if_match: str | None = None
    ) -> AdapterRecord:
        """Replace the spec; only deployment changes bump the generation and redeploy."""
        current = await self._readable_or_writable(identity, name)
        # A well-formed body that would change an immutable field conflicts with the adapter as it is: 409
        # (schema-valid, so not 400; the same body is fine for the adapter it names).
        if data.name != name:
            raise Conflict(f"name is immutable: the body says {data.name!r}, the URL {name!r}", field="name")
        data, server_name = self._resolve_source(data)
        validate_input(data, max_replicas=self._max_replicas, env_policy=self._env_policy)
        self._check_image(data, server_name)
        validate_upstream_auth(data.upstream_auth, auth_mode=self._auth_mode)
        if data.use_workload_identity != current.use_workload_identity:
            raise Conflict("useWorkloadIdentity cannot be changed after creation", field="useWorkloadIdentity")
        if if_match is not None and if_match.strip('"') != current.etag and if_match != "*":
            raise PreconditionFailed(f"adapter {name!r} has changed: If-Match does not match its ETag")
        updated = msgspec.structs.replace(
            current,
            image_name=data.image_name,
            image_version=data.image_version,
            environment_variables=dict(data.environment_variables),
            replica_count=data.replica_count,
            description=data.description,
            required_roles=_dedupe(data.required_roles),
            upstream_auth=data.upstream_auth,
            transport=data.transport,
            command=data.command,
            args=data.args,
            package=data.package,
            server_name=server_name,
            last_updated_at=datetime.now(UTC),
            tool_policy=data.tool_policy,
            rate_limits=data.rate_limits,
        )
        if not updated.same_deployment(current):
            updated.generation = current.generation + 1
        try:
            stored = await self._store.replace(updated, etag=current.etag)
        except EtagMismatch:
            raise Conflict(f"adapter {name!r} was changed by another request; read it again and retry") from None
        except KeyError:
            raise NotFound(f"adapter {name!r} does not exist") from None
        self._view.put(stored)
        self._record_change("adapter.update", identity, current, stored)
        if stored.generation != current.generation:
            self._reconciler.kick()
        log.info("adapter %s updated by user %s (generation %d)", name, hash_user(identity.user_id), stored.generation)
        return stored

    def _record_change(
        self, event: Event, identity: Identity, before: AdapterRecord | None, after: AdapterRecord | None
    ) -> None:
        """Audit a control-plane change: the names of the changed fields, never their values."""
        if self._audit is None or not self._audit.enabled:
            return
        wire = [None if r is None else msgspec.to_builtins(AdapterResource.from_record(r)) for r in (before, after)]
        self._audit.record(
            event,
            "allowed",
            user=identity.user_id,
            roles=identity.roles,
            adapter=subject.name if (subject := after or before) is not None else None,
            changed=changed_fields(wire[0], wire[1]),
        )

    async def _readable_or_writable(self, identity: Identity, name: str) -> AdapterRecord:
        record = await self._readable(identity, name)
        if not can_write(identity, record):
            raise Forbidden(f"only the creator of adapter {name!r} or mcp.admin may change it")
        return record

    @traced("adapter.delete")
    async def delete(self, identity: Identity, name: str) -> None:
        """Delete the record first, then replicas and sessions (the reconciler finishes any crash)."""
        record = await self._readable_or_writable(identity, name)
        try:
            await self._store.delete(name, etag=record.etag)
        except EtagMismatch:
            raise Conflict(f"adapter {name!r} was changed by another request; read it again and retry") from None
        self._view.remove(name)
        await self._reconciler.forget(name)
        await self._runtime.remove(name)
        await self._sessions.revoke_adapter(name)
        self._clock.forget(name)
        self._record_change("adapter.delete", identity, record, None)
        log.info("adapter %s deleted by user %s", name, hash_user(identity.user_id))

    @traced("adapter.status")
    async def status(self, identity: Identity, name: str) -> AdapterStatus:
        """Conditions and replica counts."""
        record = await self._readable(identity, name)
        return build_status(record, await self._runtime.status(record), self._clock)

    @traced("adapter.logs")
    @traced("adapter.follow_logs")
    async def follow_logs(self, identity: Identity, name: str, *, instance: int, tail: int) -> AsyncIterator[str]:
        """The last lines of one replica's output, then each new line; same checks and errors as ``logs``."""
        record = await self._readable(identity, name)
        self._check_log_query(name, record, instance=instance, tail=tail)
        user = identity.user_id
        if self._follow_max and self._following[user] >= self._follow_max:
            raise TooManyRequests(
                f"you already follow {self._following[user]} log streams on this gateway "
                f"(logs_follow_max_per_user = {self._follow_max}); close one first",
                field="follow",
                headers={"Retry-After": "5"},
            )
        try:
            lines = await self._runtime.follow_logs(name, instance, tail)
        except InstanceNotFound:
            raise NotFound(f"adapter {name!r} has no instance {instance}") from None
        self._following[user] += 1
        return self._counted(user, lines)

    async def _counted(self, user: str, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        """``lines``, holding one of the user's follow slots until the stream ends or the client leaves."""
        try:
            async for line in lines:
                yield line
        finally:
            self._following[user] -= 1
            if self._following[user] <= 0:
                del self._following[user]
            close = getattr(lines, "aclose", None)
            if close is not None:
                await close()

    def _check_log_query(self, name: str, record: AdapterRecord, *, instance: int, tail: int) -> None:
        if instance < 0:
            raise InvalidRequest("instance must be 0 or more", field="instance")
        if not 1 <= tail <= MAX_LOG_TAIL:
            raise InvalidRequest(f"tail must be between 1 and {MAX_LOG_TAIL}", field="tail")
        if instance >= max(record.replica_count, 1):
            raise NotFound(f"adapter {name!r} has no instance {instance} (replicaCount {record.replica_count})")

    async def logs(self, identity: Identity, name: str, *, instance: int, tail: int) -> str:
        """The last lines of one replica's output."""
        record = await self._readable(identity, name)
        self._check_log_query(name, record, instance=instance, tail=tail)
        try:
            return await self._runtime.logs(name, instance, tail)
        except InstanceNotFound:
            raise NotFound(f"adapter {name!r} has no instance {instance}") from None


def _stdio_image_named(data: AdapterInput, runtime_kind: str) -> AdapterInput:
    """On Kubernetes a stdio adapter names its program: ``command`` (422 otherwise).

    The pod's bridge wraps the server's command (gateway/stdio/pod.py), and the gateway cannot read
    an image's ENTRYPOINT without pulling its config from the registry; the local catalog knows its
    images' commands.
    """
    if runtime_kind != "local" and data.transport == "stdio" and data.package is None and not data.command:
        raise Unprocessable(
            "a stdio image on Kubernetes needs command: the server's program as the image runs it "
            '(e.g. ["mcp-server-time"] or ["node", "dist/index.js"]); the pod\'s stdio bridge starts it '
            "once per client session, so the image's ENTRYPOINT cannot be used as is",
            field="command",
        )
    return data


def _dedupe(roles: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for role in roles:
        seen.setdefault(role.strip(), None)
    return list(seen)


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    """The position a cursor names: the list continues after this string, in name order.

    Any well-formed cursor is a position, even one this API never returned (a page after it is
    still only what the caller may read), so only malformed base64url is 400.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:  # binascii.Error, and non-ASCII text (GET /adapters?cursor=%C3%A9 was a 500)
        raise InvalidRequest("cursor is not one this API returned", field="cursor") from None
    return raw.decode("utf-8", "replace").replace("\x00", "")
