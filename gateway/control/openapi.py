"""What the OpenAPI document needs beyond what Litestar derives from the routes and models.

Litestar turns top-level ``msgspec.Meta`` keywords (pattern, max_length, ge, ...) and parameter
constraints into schema keywords, but (Litestar 2.25, checked 2026-11-30) drops those of nested
types — dict keys and values, list items — and cannot know limits that are settings. Both are
added here, from the same constants validation.py enforces, so the document is the whole contract
(schemathesis generates only what the gateway accepts and checks every answer against it).
"""

from __future__ import annotations

from collections.abc import Iterable

from litestar.openapi.spec import OpenAPI, OpenAPIType, Parameter, Reference, Schema

from gateway.control.validation import MAX_DESCRIPTION, MAX_ENV_VALUE, MAX_ENV_VARS, MAX_ROLES
from gateway.models import ENV_NAME_PATTERN

#: validation.py: a role is non-empty after stripping and at most 256 characters.
ROLE_MAX_LENGTH = 256
#: validation.py: an environment value has no NUL.
NO_NUL_PATTERN = "^[^\\x00]*$"


def complete_openapi(
    doc: OpenAPI,
    *,
    max_replicas: int,
    list_max_limit: int,
    denied_env_globs: Iterable[str] = (),
    allowed_env_names: Iterable[str] = (),
) -> None:
    """Add nested and settings-dependent constraints to ``doc`` (the app's cached document) in place.

    ``denied_env_globs`` are the environment-variable names adapters may not set (case-insensitive
    ``fnmatch`` globs such as ``LD_*``); they become ``propertyNames.not``, so generated bodies avoid them.
    ``allowed_env_names`` are exceptions to those globs (``PYTHONUNBUFFERED`` under ``PYTHON*``).
    """
    components = doc.components
    schemas = components.schemas if components is not None and not isinstance(components, list) else None
    adapter_input = schemas.get("AdapterInput") if schemas else None
    if adapter_input is not None and adapter_input.properties:
        adapter_input.additional_properties = False  # forbid_unknown_fields=True: unknown fields are 400
        props = adapter_input.properties
        _schema(props["environmentVariables"]).max_properties = MAX_ENV_VARS
        denied = globs_pattern(denied_env_globs)
        allowed = globs_pattern(sorted(allowed_env_names))  # a frozenset: its order changes with the hash seed
        refused = Schema(pattern=denied, schema_not=Schema(pattern=allowed) if allowed else None) if denied else None
        _schema(props["environmentVariables"]).property_names = Schema(pattern=ENV_NAME_PATTERN, schema_not=refused)
        _schema(props["environmentVariables"]).additional_properties = Schema(
            type=OpenAPIType.STRING, max_length=MAX_ENV_VALUE, pattern=NO_NUL_PATTERN
        )
        # command/args (issue 17): Litestar keeps the list bounds, drops the items' (they reach execve).
        for name, min_length in (("command", 1), ("args", None)):
            array = next(o for o in _schema(props[name]).one_of or () if _schema(o).type == OpenAPIType.ARRAY)
            _schema(array).items = Schema(
                type=OpenAPIType.STRING, min_length=min_length, max_length=4096, pattern=NO_NUL_PATTERN
            )
        _schema(props["replicaCount"]).maximum = max_replicas
        _schema(props["description"]).max_length = MAX_DESCRIPTION
        roles = _schema(props["requiredRoles"])
        roles.max_items = MAX_ROLES
        roles.items = Schema(type=OpenAPIType.STRING, min_length=1, max_length=ROLE_MAX_LENGTH, pattern=r"\S")
    package_ref = schemas.get("PackageRef") if schemas else None
    if package_ref is not None:
        package_ref.additional_properties = False  # forbid_unknown_fields=True, like AdapterInput
    listing = doc.paths.get("/adapters") if doc.paths else None
    if listing is not None and listing.get is not None:
        for parameter in listing.get.parameters or []:
            if isinstance(parameter, Parameter) and parameter.name == "limit" and parameter.schema is not None:
                _schema(parameter.schema).maximum = list_max_limit


def _schema(value: Schema | Reference) -> Schema:
    assert isinstance(value, Schema), f"expected an inline schema, got {value!r}"
    return value


def globs_pattern(globs: Iterable[str]) -> str | None:
    """One anchored, case-insensitive regex (ECMA-262 and Python alike) matching any of ``globs``.

    JSON Schema patterns have no flags, so each letter becomes ``[Xx]``; ``*`` is ``.*``, ``?`` is ``.``.
    """
    parts: list[str] = []
    for glob in globs:
        out = []
        for ch in glob:
            if ch == "*":
                out.append(".*")
            elif ch == "?":
                out.append(".")
            elif ch.isalpha():
                out.append(f"[{ch.upper()}{ch.lower()}]")
            elif ch.isalnum() or ch == "_":
                out.append(ch)
            else:
                out.append("\\" + ch)
        if out:
            parts.append("".join(out))
    return f"^({'|'.join(parts)})$" if parts else None
