"""Virtual server types: wire names camelCase, as /adapters has them (gateway/models.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from gateway.models import NAME_MAX_LENGTH, NAME_PATTERN

#: A member's tool-name prefix: the characters MCP allows in tool names (2025-11-25: [A-Za-z0-9_.-]).
PREFIX_PATTERN = r"^[A-Za-z0-9_.-]{0,64}$"
PREFIX_MAX_LENGTH = 64


Glob = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]*$")]
"""A tool-name glob of a member: 1-128 characters, no control characters (also a schema keyword)."""


class ServerMember(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """One adapter in a virtual server: its tools, prefixed and filtered."""

    adapter: Annotated[
        str,
        msgspec.Meta(
            pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="Name of an adapter the creator may read."
        ),
    ]
    prefix: Annotated[
        str,
        msgspec.Meta(
            pattern=PREFIX_PATTERN,
            max_length=PREFIX_MAX_LENGTH,
            description="Put before each of the member's tool and prompt names (and into its resource URIs).",
        ),
    ] = ""
    tools: (
        Annotated[
            list[Glob],
            msgspec.Meta(max_length=100, description="Globs of the member's tool names to include (absent: all)."),
        ]
        | None
    ) = None
    exclude: Annotated[
        list[Glob],
        msgspec.Meta(max_length=100, description="Globs of the member's tool names to leave out (after `tools`)."),
    ] = msgspec.field(default_factory=list)


class ServerInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Body of POST /servers and PUT /servers/{name}."""

    name: Annotated[
        str,
        msgspec.Meta(
            pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="Virtual server name; also its id. Immutable."
        ),
    ]
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    required_roles: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"\S")]],
        msgspec.Meta(max_length=50, description="Roles that grant read and data-plane use to non-owners."),
    ] = msgspec.field(default_factory=list)
    members: Annotated[list[ServerMember], msgspec.Meta(min_length=1, description="The adapters composed, in order.")]


class ServerRecord(msgspec.Struct, kw_only=True):
    """A virtual server as stored; ``etag`` changes on every write."""

    name: str
    description: str = ""
    required_roles: list[str] = msgspec.field(default_factory=list)
    members: list[ServerMember] = msgspec.field(default_factory=list)
    created_by: str = ""
    created_at: datetime | None = None
    last_updated_at: datetime | None = None
    etag: str = ""


class ServerResource(msgspec.Struct, rename="camel", kw_only=True):
    """A virtual server as the API returns it."""

    id: str
    name: str
    description: str
    required_roles: list[str]
    members: list[ServerMember]
    created_by: str
    created_at: datetime
    last_updated_at: datetime

    @classmethod
    def from_record(cls, r: ServerRecord) -> ServerResource:
        """The wire form of a stored record."""
        assert r.created_at is not None and r.last_updated_at is not None
        return cls(
            id=r.name,
            name=r.name,
            description=r.description,
            required_roles=r.required_roles,
            members=r.members,
            created_by=r.created_by,
            created_at=r.created_at,
            last_updated_at=r.last_updated_at,
        )


class ServerPage(msgspec.Struct, rename="camel", kw_only=True):
    """One page of GET /servers; pass ``nextCursor`` as ``cursor`` for the next."""

    items: list[ServerResource]
    next_cursor: str | None = None


class MemberStatus(msgspec.Struct, rename="camel", kw_only=True):
    """One member of GET /servers/{name}/status."""

    adapter: str
    prefix: str
    present: bool
    readable: bool
    ready_replicas: int
    message: str


class ServerStatus(msgspec.Struct, rename="camel", kw_only=True):
    """GET /servers/{name}/status: which members exist, which the caller may use, which have ready replicas."""

    name: str
    members: list[MemberStatus]
    present_members: int
    missing_members: int


def session_scope(server: str | None) -> str:
    """What a virtual server's client session ids and records name in place of an adapter:
    ``servers/<name>``, or ``servers/*`` for ``/mcp`` (``server`` None). Never an adapter name (those
    hold no ``/``), so caps and revocations by adapter never mix with them."""
    return f"servers/{'*' if server is None else server}"
