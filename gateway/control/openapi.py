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

from gateway.control.validation import (
    FORBIDDEN_CREDENTIAL_HEADERS,
    HEADER_NAME_PATTERN,
    MAX_DESCRIPTION,
    MAX_ENV_VALUE,
    MAX_ENV_VARS,
    MAX_ROLES,
    MAX_SCOPES,
    PREFIX_PATTERN,
    SCOPE_PATTERN,
    SECRET_NAME_PATTERN,
)
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
    server_max_members: int = 0,
    auth_mode: str = "dev",
) -> None:
    """Add nested and settings-dependent constraints to ``doc`` (the app's cached document) in place.

    ``denied_env_globs`` are the environment-variable names adapters may not set (case-insensitive
    ``fnmatch`` globs such as ``LD_*``); they become ``propertyNames.not``, so generated bodies avoid them.
    ``allowed_env_names`` are exceptions to those globs (``PYTHONUNBUFFERED`` under ``PYTHON*``).
    ``auth_mode`` decides whether ``upstreamAuth`` type ``entra-obo`` is offered (entra mode only).
    """
    components = doc.components
    roles_items = Schema(type=OpenAPIType.STRING, min_length=1, max_length=ROLE_MAX_LENGTH, pattern=r"\S")
    schemas = components.schemas if components is not None and not isinstance(components, list) else None
    adapter_input = schemas.get("AdapterInput") if schemas else None
    if adapter_input is not None and adapter_input.properties:
        adapter_input.additional_properties = False  # forbid_unknown_fields=True: unknown fields are 400
        props = adapter_input.properties
        _schema(props["environmentVariables"]).max_properties = MAX_ENV_VARS
        denied = globs_pattern(denied_env_globs)
        allowed = globs_pattern(sorted(allowed_env_names))  # a frozenset: its order varies per process
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
        roles.items = roles_items
    if schemas is not None and "UpstreamAuth" in schemas:
        schemas["UpstreamAuth"] = upstream_auth_schema(auth_mode)
    package_ref = schemas.get("PackageRef") if schemas else None
    if package_ref is not None:
        package_ref.additional_properties = False  # forbid_unknown_fields=True, like AdapterInput
    for path in ("/adapters", "/servers"):
        listing = doc.paths.get(path) if doc.paths else None
        if listing is not None and listing.get is not None:
            for parameter in listing.get.parameters or []:
                if isinstance(parameter, Parameter) and parameter.name == "limit" and parameter.schema is not None:
                    _schema(parameter.schema).maximum = list_max_limit
    # Item rules of nested lists (Litestar keeps the list's own keywords, not its items'): the same
    # patterns the msgspec types decode with (gateway/policy/*.py, gateway/models.py).
    from gateway.policy.toolpolicy import GLOB_PATTERN, ROLE_PATTERN

    glob = Schema(type=OpenAPIType.STRING, pattern=GLOB_PATTERN, min_length=1, max_length=128)
    member_glob = Schema(type=OpenAPIType.STRING, pattern=r"^[^\x00-\x1f]*$", min_length=1, max_length=128)
    role = Schema(type=OpenAPIType.STRING, pattern=ROLE_PATTERN, min_length=1, max_length=256)
    for schema_name, prop, items in (
        ("RateRule", "tools", glob),
        ("ToolRule", "tools", glob),
        ("ToolRule", "roles", role),
        ("ServerMember", "tools", member_glob),
        ("ServerMember", "exclude", member_glob),
        ("ServerInput", "requiredRoles", roles_items),
    ):
        target = schemas.get(schema_name) if schemas else None
        if target is not None and target.properties and prop in target.properties:
            _set_items(_schema(target.properties[prop]), items)
    for schema_name in ("RateRule", "ToolRule", "ServerMember", "ServerInput"):
        target = schemas.get(schema_name) if schemas else None
        if target is not None:
            target.additional_properties = False  # forbid_unknown_fields=True: unknown fields are 400
    server_input = schemas.get("ServerInput") if schemas else None
    if server_input is not None and server_input.properties and server_max_members:
        _schema(server_input.properties["members"]).max_items = server_max_members


def upstream_auth_schema(auth_mode: str) -> Schema:
    """``upstreamAuth`` as one variant per type, exactly what validate_upstream_auth accepts."""
    null = Schema(type=OpenAPIType.NULL)

    def optional(schema: Schema) -> Schema:
        return Schema(one_of=[schema, null])

    def variant(kind: str, required: dict[str, Schema], optional_fields: dict[str, Schema]) -> Schema:
        props: dict[str, Schema | Reference] = {"type": Schema(type=OpenAPIType.STRING, enum=[kind])}
        for name in ("scopes", "header", "secret", "prefix"):
            if name in required:
                props[name] = required[name]
            elif name in optional_fields:
                props[name] = optional(optional_fields[name])
            else:
                props[name] = null
        return Schema(
            type=OpenAPIType.OBJECT,
            title=f"UpstreamAuth {kind}",
            properties=props,
            required=["type", *required] if kind != "none" else None,
            additional_properties=False,
        )

    scopes = Schema(
        type=OpenAPIType.ARRAY,
        min_items=1,
        max_items=MAX_SCOPES,
        items=Schema(type=OpenAPIType.STRING, pattern=SCOPE_PATTERN),
    )
    forbidden = globs_pattern(FORBIDDEN_CREDENTIAL_HEADERS)
    header = Schema(
        type=OpenAPIType.STRING,
        pattern=HEADER_NAME_PATTERN,
        schema_not=Schema(pattern=forbidden) if forbidden else None,
    )
    variants = [variant("none", {}, {})]
    if auth_mode == "entra":
        variants.append(variant("entra-obo", {"scopes": scopes}, {}))
    variants += [
        variant("managed-identity", {"scopes": scopes}, {}),
        variant(
            "secret",
            {"secret": Schema(type=OpenAPIType.STRING, pattern=SECRET_NAME_PATTERN)},
            {"header": header, "prefix": Schema(type=OpenAPIType.STRING, pattern=PREFIX_PATTERN)},
        ),
    ]
    return Schema(
        title="UpstreamAuth",
        description=(
            "Credential the gateway sends upstream: none; entra-obo (the caller's token exchanged on behalf of "
            "the user; entra auth mode only); managed-identity (the gateway's own identity); secret (a stored "
            "value, named, never shown; header default Authorization)."
        ),
        one_of=variants,
    )


def _set_items(prop: Schema, items: Schema) -> None:
    """Give an array property (or the array variant of an array-or-null one) its item schema."""
    if prop.items is not None:
        prop.items = items
    for variant in prop.one_of or []:
        if isinstance(variant, Schema) and variant.items is not None:
            variant.items = items


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
