"""Validation of adapter specs, with messages that name the field at fault."""

from __future__ import annotations

import fnmatch
import re

from gateway.envpolicy import DEFAULT_POLICY, EnvPolicy
from gateway.errors import InvalidRequest, Unprocessable
from gateway.headers import STRIPPED_UPSTREAM
from gateway.models import (
    ENV_NAME_PATTERN,
    IMAGE_NAME_PATTERN,
    IMAGE_VERSION_PATTERN,
    NAME_PATTERN,
    AdapterInput,
    UpstreamAuth,
)
from gateway.policy.ratelimit import validate_rate_limits
from gateway.policy.toolpolicy import validate_tool_policy

_NAME = re.compile(NAME_PATTERN)
_IMAGE_NAME = re.compile(IMAGE_NAME_PATTERN)
_IMAGE_VERSION = re.compile(IMAGE_VERSION_PATTERN)
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
MAX_ENV_VARS = 200
MAX_ENV_VALUE = 32 * 1024
MAX_DESCRIPTION = 2000
MAX_ROLES = 50
MAX_COMMAND_ITEMS = 64
MAX_COMMAND_ITEM = 4096


def validate_name(name: str, field: str = "name") -> None:
    """An adapter name fits StatefulSet and Service name limits."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"{field} must be 1-52 characters of lower-case letters, digits and '-', start with a letter "
            f"and not end with '-' ({NAME_PATTERN}); got {name!r}",
            field=field,
        )


def validate_input(data: AdapterInput, *, max_replicas: int, env_policy: EnvPolicy = DEFAULT_POLICY) -> None:
    """Every rule of DESIGN.md §4; raises InvalidRequest naming the first field at fault.

    ``env_policy`` refuses environment variables that would change how a replica's program is
    loaded or interpreted (gateway/envpolicy.py; issue 12): 400 naming the variable.
    """
    validate_name(data.name)
    for problems in (validate_tool_policy(data.tool_policy), validate_rate_limits(data.rate_limits)):
        if problems:  # "toolPolicy[0].tools[1]: ..." → field "toolPolicy[0].tools[1]"
            raise InvalidRequest(problems[0], field=problems[0].split(":", 1)[0])
    if data.server_json is not None:
        raise InvalidRequest("serverJson must be resolved before validation", field="serverJson")
    if data.package is not None:
        if data.image_name or data.image_version:
            raise Unprocessable("give either imageName/imageVersion or package, not both", field="package")
    elif not data.image_name:
        raise Unprocessable("imageName is required unless package or serverJson is given", field="imageName")
    elif not data.image_version:
        raise Unprocessable("imageVersion is required with imageName", field="imageVersion")
    elif not _IMAGE_NAME.fullmatch(data.image_name) or ".." in data.image_name:
        raise InvalidRequest(
            f"imageName must match {IMAGE_NAME_PATTERN} and not contain '..'; got {data.image_name!r}",
            field="imageName",
        )
    if data.package is None and not _IMAGE_VERSION.fullmatch(data.image_version):
        raise InvalidRequest(
            f"imageVersion must match {IMAGE_VERSION_PATTERN}; got {data.image_version!r}", field="imageVersion"
        )
    for field, items in (("command", data.command), ("args", data.args)):
        validate_argv(field, items)
    if not 0 <= data.replica_count <= max_replicas:
        raise InvalidRequest(
            f"replicaCount must be between 0 and {max_replicas}; got {data.replica_count}", field="replicaCount"
        )
    if len(data.environment_variables) > MAX_ENV_VARS:
        raise InvalidRequest(f"environmentVariables has more than {MAX_ENV_VARS} entries", field="environmentVariables")
    for key, value in data.environment_variables.items():
        if not _ENV_NAME.fullmatch(key):
            raise InvalidRequest(
                f"environmentVariables key {key!r} must match {ENV_NAME_PATTERN}",
                field=f"environmentVariables.{key}",
            )
        if env_policy.denied(key):
            raise InvalidRequest(
                f"environmentVariables key {key!r} may not be set: it could change how the replica's program "
                "is loaded or interpreted, or it is set by the gateway itself (see docs/security.md, "
                "'Adapter environment')",
                field=f"environmentVariables.{key}",
            )
        if len(value) > MAX_ENV_VALUE or "\x00" in value:
            raise InvalidRequest(
                f"environmentVariables value of {key!r} is longer than {MAX_ENV_VALUE} characters or contains NUL",
                field=f"environmentVariables.{key}",
            )
    if len(data.description) > MAX_DESCRIPTION:
        raise InvalidRequest(f"description is longer than {MAX_DESCRIPTION} characters", field="description")
    if len(data.required_roles) > MAX_ROLES:
        raise InvalidRequest(f"requiredRoles has more than {MAX_ROLES} entries", field="requiredRoles")
    for role in data.required_roles:
        if not role.strip() or len(role) > 256:
            raise InvalidRequest(
                "requiredRoles entries must be non-empty and at most 256 characters", field="requiredRoles"
            )


#: RFC 9110 token characters: what a header name may consist of.
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"
_HEADER_NAME = re.compile(HEADER_NAME_PATTERN)
#: A Kubernetes Secret name (DNS subdomain, shortened); also the key in the embedded secrets file.
SECRET_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
#: A scope: visible ASCII without quotes or backslashes (it is quoted into WWW-Authenticate).
SCOPE_PATTERN = r"^[!#-\[\]-~]{1,512}$"
_SCOPE = re.compile(SCOPE_PATTERN)
#: Text before a secret value: printable ASCII.
PREFIX_PATTERN = r"^[ -~]{0,64}$"
_PREFIX = re.compile(PREFIX_PATTERN)
#: Headers a credential may not go in (case-insensitive globs): framing and hop-by-hop headers, the
#: identity and forwarding headers only the gateway sets, and the MCP headers the upstream routes on.
#: Authorization is allowed: it is where credentials usually go.
FORBIDDEN_CREDENTIAL_HEADERS: tuple[str, ...] = (
    *sorted(n.decode() for n in STRIPPED_UPSTREAM - {b"authorization", b"cookie"} if not n.startswith(b"x-")),
    "content-type",
    "accept",
    "mcp-*",
    "last-event-id",
    "traceparent",
    "tracestate",
    "x-mcp-*",
    "x-dev-*",
    "x-forwarded-*",
    "x-real-ip",
    "x-gateway-secret",
)
MAX_SCOPES = 20


def forbidden_credential_header(name: str) -> bool:
    """True when ``name`` matches one of FORBIDDEN_CREDENTIAL_HEADERS."""
    return any(fnmatch.fnmatchcase(name.lower(), glob) for glob in FORBIDDEN_CREDENTIAL_HEADERS)


def validate_upstream_auth(auth: UpstreamAuth, *, auth_mode: str) -> None:
    """``upstreamAuth`` (issue 18): the fields its type needs and no others; names the field at fault.

    gateway/control/openapi.py states the same rules as a ``oneOf`` in the OpenAPI document.
    """
    kind = auth.type
    if kind in ("entra-obo", "managed-identity"):
        if not auth.scopes:
            raise InvalidRequest(f"upstreamAuth.scopes is required for type {kind}", field="upstreamAuth.scopes")
        if len(auth.scopes) > MAX_SCOPES:
            raise InvalidRequest(f"upstreamAuth.scopes has more than {MAX_SCOPES} entries", field="upstreamAuth.scopes")
        for scope in auth.scopes:
            if not _SCOPE.fullmatch(scope):
                raise InvalidRequest(
                    f"upstreamAuth.scopes entry {scope[:80]!r} must be 1-512 visible ASCII characters without "
                    "quotes or backslashes",
                    field="upstreamAuth.scopes",
                )
        for extra in ("header", "secret", "prefix"):
            if getattr(auth, extra) is not None:
                raise InvalidRequest(f"upstreamAuth.{extra} is only for type secret", field=f"upstreamAuth.{extra}")
        if kind == "entra-obo" and auth_mode != "entra":
            raise InvalidRequest(
                f"upstreamAuth type entra-obo needs entra auth mode (MCPGW_AUTH=entra), not {auth_mode}: "
                "on-behalf-of exchanges the caller's Entra token",
                field="upstreamAuth.type",
            )
        return
    if kind == "secret":
        if auth.scopes is not None:
            raise InvalidRequest("upstreamAuth.scopes is not used by type secret", field="upstreamAuth.scopes")
        if auth.secret is None or not _SECRET_NAME.fullmatch(auth.secret):
            raise InvalidRequest(
                f"upstreamAuth.secret must name a stored secret matching {SECRET_NAME_PATTERN}",
                field="upstreamAuth.secret",
            )
        if auth.header is not None:
            if not _HEADER_NAME.fullmatch(auth.header):
                raise InvalidRequest(
                    "upstreamAuth.header must be 1-64 header-name characters (RFC 9110 token)",
                    field="upstreamAuth.header",
                )
            if forbidden_credential_header(auth.header):
                raise InvalidRequest(
                    f"upstreamAuth.header {auth.header!r} is a hop-by-hop, framing, MCP or identity header the "
                    "gateway controls",
                    field="upstreamAuth.header",
                )
        if auth.prefix is not None and not _PREFIX.fullmatch(auth.prefix):
            raise InvalidRequest(
                "upstreamAuth.prefix must be at most 64 printable ASCII characters", field="upstreamAuth.prefix"
            )
        return
    for extra in ("scopes", "header", "secret", "prefix"):
        if getattr(auth, extra) is not None:
            raise InvalidRequest(f"upstreamAuth.{extra} is not used by type none", field=f"upstreamAuth.{extra}")


def validate_argv(field: str, items: list[str] | None) -> None:
    """``command`` / ``args``: at most 64 strings of at most 4096 characters, no NUL; a command is not empty.

    They reach ``execve`` (local) or the container spec (Kubernetes) as a list, never a shell, so
    other characters are the program's business. Least privilege does not change with them: the
    same user, sandbox and security context run whatever the command is.
    """
    if items is None:
        return
    if field == "command" and (not items or not items[0]):
        raise InvalidRequest("command must name a program (a non-empty first item)", field=field)
    if len(items) > MAX_COMMAND_ITEMS:
        raise InvalidRequest(f"{field} has more than {MAX_COMMAND_ITEMS} items", field=field)
    for i, item in enumerate(items):
        if len(item) > MAX_COMMAND_ITEM or "\x00" in item:
            raise InvalidRequest(
                f"{field}[{i}] is longer than {MAX_COMMAND_ITEM} characters or contains NUL", field=f"{field}[{i}]"
            )
