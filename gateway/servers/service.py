"""The virtual server service: every /servers operation, with validation and access rules.

Same conventions as gateway/control/service.py (AdapterService): the creator, ``mcp.admin`` or a
holder of one of ``requiredRoles`` reads; the creator or ``mcp.admin`` writes; If-Match guards
updates; cursors are the same unpadded base64url of the last name. A member must name an adapter
the caller may read when it is added; a member whose adapter is deleted later stays and is reported
as missing by status (deleting an adapter never edits servers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from gateway.auth.base import can_read, can_write
from gateway.control.service import _decode_cursor, _dedupe, _encode_cursor
from gateway.control.validation import validate_name
from gateway.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    SessionStoreUnavailable,
    Unprocessable,
)
from gateway.models import (
    Identity,
    MemberStatus,
    ServerInput,
    ServerPage,
    ServerRecord,
    ServerResource,
    ServerStatus,
    session_scope,
)
from gateway.servers.validation import validate_server
from gateway.sessions.base import SessionStore
from gateway.store.base import AdapterStore, EtagMismatch, ServerExists, ServerStore
from gateway.telemetry.logs import hash_user

log = logging.getLogger("gateway.servers")

#: Ready replicas of an adapter, from memory (the runtime's endpoints): the cheap "reachable".
ReadyCount = Callable[[str], int]


class ServerService:
    """Create, read, update and delete virtual servers; report their members."""

    def __init__(
        self,
        *,
        servers: ServerStore,
        adapters: AdapterStore,
        ready: ReadyCount,
        max_members: int,
        list_max_limit: int,
        on_change: Callable[[str], None] | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self._sessions = sessions
        self._servers = servers
        self._adapters = adapters
        self._ready = ready
        self._max_members = max_members
        self._list_max_limit = list_max_limit
        self._listeners: list[Callable[[str], None]] = [on_change] if on_change is not None else []

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` after each update or delete of a server (the MCP side drops its copy)."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    async def _readable(self, identity: Identity, name: str) -> ServerRecord:
        validate_name(name)
        record = await self._servers.get(name)
        if record is None:
            raise NotFound(f"server {name!r} does not exist")
        if not can_read(identity, record):
            raise Forbidden(f"you may not read server {name!r}")
        return record

    async def _writable(self, identity: Identity, name: str) -> ServerRecord:
        record = await self._readable(identity, name)
        if not can_write(identity, record):
            raise Forbidden(f"only the creator of server {name!r} or mcp.admin may change it")
        return record

    async def _check_members(self, identity: Identity, data: ServerInput, keep: frozenset[str] = frozenset()) -> None:
        """Each new member names an adapter the caller may read (``keep``: members already in the server).

        Unknown and unreadable adapters get the same answer, so the check does not reveal which exist.
        """
        for i, member in enumerate(data.members):
            if member.adapter in keep:
                continue
            adapter = await self._adapters.get(member.adapter)
            if adapter is None or not can_read(identity, adapter):
                raise Unprocessable(
                    f"members[{i}].adapter: there is no adapter {member.adapter!r} you may read",
                    field=f"members[{i}].adapter",
                )

    async def create(self, identity: Identity, data: ServerInput) -> ServerRecord:
        """Store a new server."""
        validate_server(data, max_members=self._max_members)
        await self._check_members(identity, data)
        now = datetime.now(UTC)
        record = ServerRecord(
            name=data.name,
            description=data.description,
            required_roles=_dedupe(data.required_roles),
            members=list(data.members),
            created_by=identity.user_id,
            created_at=now,
            last_updated_at=now,
        )
        try:
            stored = await self._servers.create(record)
        except ServerExists:
            raise Conflict(f"server {data.name!r} already exists", field="name") from None
        log.info("server %s created by user %s", stored.name, hash_user(identity.user_id))
        return stored

    async def get(self, identity: Identity, name: str) -> ServerRecord:
        """One server the caller may read."""
        return await self._readable(identity, name)

    async def list(self, identity: Identity, *, limit: int | None, cursor: str | None) -> ServerPage:
        """A page of the servers the caller may read."""
        if limit is None:
            limit = min(50, self._list_max_limit)
        if not 1 <= limit <= self._list_max_limit:
            raise InvalidRequest(f"limit must be between 1 and {self._list_max_limit}", field="limit")
        after = _decode_cursor(cursor) if cursor else None
        items: list[ServerResource] = []
        batch = max(limit, 50)
        while True:
            page = await self._servers.list(limit=batch, after=after)
            for record in page:
                after = record.name
                if can_read(identity, record):
                    items.append(ServerResource.from_record(record))
                    if len(items) == limit:
                        more = record is not page[-1] or len(page) == batch
                        return ServerPage(items=items, next_cursor=_encode_cursor(record.name) if more else None)
            if len(page) < batch:
                return ServerPage(items=items, next_cursor=None)

    async def update(
        self, identity: Identity, name: str, data: ServerInput, *, if_match: str | None = None
    ) -> ServerRecord:
        """Replace the spec; members added must name adapters the caller may read."""
        current = await self._writable(identity, name)
        if data.name != name:
            raise Conflict(f"name is immutable: the body says {data.name!r}, the URL {name!r}", field="name")
        validate_server(data, max_members=self._max_members)
        if if_match is not None and if_match.strip('"') != current.etag and if_match != "*":
            raise PreconditionFailed(f"server {name!r} has changed: If-Match does not match its ETag")
        await self._check_members(identity, data, keep=frozenset(m.adapter for m in current.members))
        updated = msgspec.structs.replace(
            current,
            description=data.description,
            required_roles=_dedupe(data.required_roles),
            members=list(data.members),
            last_updated_at=datetime.now(UTC),
        )
        try:
            stored = await self._servers.replace(updated, etag=current.etag)
        except EtagMismatch:
            raise Conflict(f"server {name!r} was changed by another request; read it again and retry") from None
        except KeyError:
            raise NotFound(f"server {name!r} does not exist") from None
        self._changed(name)
        log.info("server %s updated by user %s", name, hash_user(identity.user_id))
        return stored

    async def delete(self, identity: Identity, name: str) -> None:
        """Delete the server and revoke its client sessions (a server made again under the same name
        does not take them over)."""
        record = await self._writable(identity, name)
        try:
            await self._servers.delete(name, etag=record.etag)
        except EtagMismatch:
            raise Conflict(f"server {name!r} was changed by another request; read it again and retry") from None
        self._changed(name)
        if self._sessions is not None:
            try:
                await self._sessions.revoke_adapter(session_scope(name))
            except SessionStoreUnavailable as exc:  # they still end at their idle TTL
                log.warning("could not revoke the client sessions of deleted server %s: %s", name, exc.detail)
        log.info("server %s deleted by user %s", name, hash_user(identity.user_id))

    async def status(self, identity: Identity, name: str) -> ServerStatus:
        """Each member: present in the store, readable by the caller, ready replicas (from memory)."""
        record = await self._readable(identity, name)
        members: list[MemberStatus] = []
        for member in record.members:
            adapter = await self._adapters.get(member.adapter)
            if adapter is None:
                members.append(
                    MemberStatus(
                        adapter=member.adapter,
                        prefix=member.prefix,
                        present=False,
                        readable=False,
                        ready_replicas=0,
                        message=f"adapter {member.adapter!r} does not exist (deleted?); its tools are not listed",
                    )
                )
                continue
            readable = can_read(identity, adapter)
            ready = self._ready(member.adapter) if readable else 0
            message = (
                "you may not read this adapter; its tools are not listed for you"
                if not readable
                else ("no ready replica" if ready == 0 else "ok")
            )
            members.append(
                MemberStatus(
                    adapter=member.adapter,
                    prefix=member.prefix,
                    present=True,
                    readable=readable,
                    ready_replicas=ready,
                    message=message,
                )
            )
        present = sum(1 for m in members if m.present)
        return ServerStatus(
            name=record.name, members=members, present_members=present, missing_members=len(members) - present
        )
