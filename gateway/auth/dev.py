"""Dev auth: identity from X-Dev-User-Id and X-Dev-Roles headers (default user ``dev``).

Anyone can claim any identity, so settings refuse it off loopback unless explicitly allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.errors import InvalidRequest
from gateway.models import Identity

DEFAULT_USER = "dev"
_USER_PATTERN = re.compile(r"^[A-Za-z0-9._@:+-]{1,128}$")


class DevAuthenticator:
    """Reads the caller from X-Dev-* headers."""

    async def start(self) -> None:
        """Nothing to fetch."""

    async def close(self) -> None:
        """Nothing to release."""

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The identity named by the headers, or the default user."""
        user = headers.get("x-dev-user-id", "").strip() or DEFAULT_USER
        if not _USER_PATTERN.match(user):
            raise InvalidRequest(
                "X-Dev-User-Id must be 1-128 characters of letters, digits and ._@:+-", field="X-Dev-User-Id"
            )
        roles = frozenset(r.strip() for r in headers.get("x-dev-roles", "").split(",") if r.strip())
        return Identity(user_id=user, roles=roles)
