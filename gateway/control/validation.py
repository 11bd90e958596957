"""Validation of adapter specs, with messages that name the field at fault."""

from __future__ import annotations

import re

from gateway.envpolicy import DEFAULT_POLICY, EnvPolicy
from gateway.errors import InvalidRequest
from gateway.models import (
    ENV_NAME_PATTERN,
    IMAGE_NAME_PATTERN,
    IMAGE_VERSION_PATTERN,
    NAME_PATTERN,
    AdapterInput,
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
    if not _IMAGE_NAME.fullmatch(data.image_name) or ".." in data.image_name:
        raise InvalidRequest(
            f"imageName must match {IMAGE_NAME_PATTERN} and not contain '..'; got {data.image_name!r}",
            field="imageName",
        )
    if not _IMAGE_VERSION.fullmatch(data.image_version):
        raise InvalidRequest(
            f"imageVersion must match {IMAGE_VERSION_PATTERN}; got {data.image_version!r}", field="imageVersion"
        )
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
