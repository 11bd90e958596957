"""The authenticator protocol and the access rules shared by both planes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.models import AdapterRecord, Identity


class Authenticator(Protocol):
    """Turns request headers into an Identity, or raises Unauthenticated."""

    async def start(self) -> None:
        """Fetch discovery documents or keys if the mode needs them."""

    async def close(self) -> None:
        """Release resources."""

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The caller's identity; ``headers`` has lower-case names."""


class Owned(Protocol):
    """A record with an owner and read roles: an adapter or a virtual server (issue 16)."""

    @property
    def created_by(self) -> str: ...

    @property
    def required_roles(self) -> list[str]: ...


def can_read(identity: Identity, adapter: AdapterRecord | Owned) -> bool:
    """Read (and data-plane use): the creator, mcp.admin, or a holder of any required role."""
    return (
        identity.is_admin
        or identity.user_id == adapter.created_by
        or any(role in identity.roles for role in adapter.required_roles)
    )


def can_write(identity: Identity, adapter: AdapterRecord | Owned) -> bool:
    """Update and delete: the creator or mcp.admin."""
    return identity.is_admin or identity.user_id == adapter.created_by


def can_use_workload_identity(identity: Identity, extra_roles: tuple[str, ...]) -> bool:
    """Workload identity: mcp.admin or a role listed in MCPGW_WORKLOAD_IDENTITY_ROLES."""
    return identity.is_admin or any(role in identity.roles for role in extra_roles)
