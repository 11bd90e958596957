"""Validation of virtual server specs, with messages that name the field at fault (``members[1].prefix``)."""

from __future__ import annotations

import re

from gateway.control.validation import MAX_DESCRIPTION, MAX_ROLES, validate_name
from gateway.errors import InvalidRequest, Unprocessable
from gateway.models import PREFIX_PATTERN, ServerInput

_PREFIX = re.compile(PREFIX_PATTERN)
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 128


def validate_server(data: ServerInput, *, max_members: int) -> None:
    """Every rule of a server spec; raises InvalidRequest naming the first field at fault.

    Whether each member names an adapter the caller may read is the service's check (it needs the store).
    """
    validate_name(data.name)
    if len(data.description) > MAX_DESCRIPTION:
        raise InvalidRequest(f"description is longer than {MAX_DESCRIPTION} characters", field="description")
    if len(data.required_roles) > MAX_ROLES:
        raise InvalidRequest(f"requiredRoles has more than {MAX_ROLES} entries", field="requiredRoles")
    for role in data.required_roles:
        if not role.strip() or len(role) > 256:
            raise InvalidRequest(
                "requiredRoles entries must be non-empty and at most 256 characters", field="requiredRoles"
            )
    if not 1 <= len(data.members) <= max_members:
        raise InvalidRequest(
            f"members must list 1 to {max_members} adapters (MCPGW_SERVER_MAX_MEMBERS); got {len(data.members)}",
            field="members",
        )
    seen_adapters: dict[str, int] = {}
    seen_prefixes: dict[str, int] = {}
    for i, member in enumerate(data.members):
        at = f"members[{i}]"
        validate_name(member.adapter, field=f"{at}.adapter")
        if member.adapter in seen_adapters:
            raise Unprocessable(
                f"{at}.adapter: adapter {member.adapter!r} is already members[{seen_adapters[member.adapter]}]",
                field=f"{at}.adapter",
            )
        seen_adapters[member.adapter] = i
        if not _PREFIX.fullmatch(member.prefix):
            raise InvalidRequest(
                f"{at}.prefix must match {PREFIX_PATTERN} (the characters of MCP tool names); got {member.prefix!r}",
                field=f"{at}.prefix",
            )
        if len(data.members) > 1 and member.prefix in seen_prefixes:
            raise Unprocessable(
                f"{at}.prefix: {member.prefix!r} is already the prefix of members[{seen_prefixes[member.prefix]}]; "
                "give each member its own prefix so their names cannot collide",
                field=f"{at}.prefix",
            )
        seen_prefixes[member.prefix] = i
        for key, globs in (("tools", member.tools or []), ("exclude", member.exclude)):
            if len(globs) > MAX_GLOBS:
                raise InvalidRequest(f"{at}.{key} has more than {MAX_GLOBS} entries", field=f"{at}.{key}")
            for j, glob in enumerate(globs):
                if not glob or len(glob) > MAX_GLOB_LENGTH or any(ord(c) < 32 for c in glob):
                    raise InvalidRequest(
                        f"{at}.{key}[{j}]: a glob is 1-{MAX_GLOB_LENGTH} characters without control characters",
                        field=f"{at}.{key}[{j}]",
                    )
