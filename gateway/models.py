"""API and domain types. Wire names are camelCase, as the seed's API has them."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from gateway.policy.ratelimit import RateRule
from gateway.policy.toolpolicy import ToolRule

ADMIN_ROLE = "mcp.admin"

NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,50}[a-z0-9])?$"
IMAGE_NAME_PATTERN = r"^[a-z0-9]+([._/-][a-z0-9]+)*$"
IMAGE_VERSION_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Transport = Literal["streamable-http", "stdio"]
PackageRegistry = Literal["npm", "pypi"]
#: An exact package version: no ranges, tags or "latest" (npm semver or PEP 440 release, as registries publish).
PACKAGE_VERSION_PATTERN = r"^[0-9][0-9A-Za-z.+-]{0,127}$"
#: npm (``@scope/name``) and PyPI project names.
PACKAGE_NAME_PATTERN = r"^(@[a-z0-9][a-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]{0,213}$"
#: No NUL: command and args reach execve.
NO_NUL_PATTERN = "^[^\\x00]*$"
#: Longest adapter name: NAME_PATTERN allows 1 + 50 + 1 characters (StatefulSet and Service name limits).
NAME_MAX_LENGTH = 52


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a stable user id and the roles the credential carries."""

    user_id: str
    roles: frozenset[str] = frozenset()
    #: The validated bearer token the identity came from (entra/oidc), for on-behalf-of exchanges.
    #: Never shown: excluded from repr and comparisons, and never logged or stored.
    bearer_token: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        """True for holders of mcp.admin."""
        return ADMIN_ROLE in self.roles


UpstreamAuthType = Literal["none", "entra-obo", "managed-identity", "secret"]


class UpstreamAuth(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How the gateway authenticates to an adapter's replicas (issue 18; gateway/credentials/).

    ``none``: nothing (the client's own token never goes upstream). ``entra-obo``: the caller's Entra
    token exchanged on behalf of the user for ``scopes``. ``managed-identity``: a token of the gateway's
    own identity for ``scopes``. ``secret``: the value stored under the name ``secret`` (never the value
    itself), sent in ``header`` (default Authorization) after ``prefix``.
    """

    type: Annotated[UpstreamAuthType, msgspec.Meta(description="none, entra-obo, managed-identity or secret.")] = "none"
    scopes: Annotated[
        list[str] | None, msgspec.Meta(description="Scopes of the upstream token (entra-obo, managed-identity).")
    ] = None
    header: Annotated[
        str | None, msgspec.Meta(description="Request header the credential goes in (secret); default Authorization.")
    ] = None
    secret: Annotated[
        str | None, msgspec.Meta(description="Name of the stored secret (secret type); the value is never shown.")
    ] = None
    prefix: Annotated[str | None, msgspec.Meta(description="Text before the secret value, e.g. 'Bearer '.")] = None


class PackageRef(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """An npm or PyPI package the local runtime runs with ``npx -y name@version`` or ``uvx name==version``."""

    registry: Annotated[PackageRegistry, msgspec.Meta(description="npm or pypi.")]
    name: Annotated[
        str, msgspec.Meta(pattern=PACKAGE_NAME_PATTERN, description="Package name (npm may be @scope/name).")
    ]
    version: Annotated[
        str, msgspec.Meta(pattern=PACKAGE_VERSION_PATTERN, description="Exact version (no ranges, no 'latest').")
    ]


class AdapterInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Body of POST /adapters and PUT /adapters/{name}."""

    # Patterns, lengths and ranges are schema keywords (msgspec enforces them while decoding, Litestar
    # puts them in the OpenAPI document); gateway/control/validation.py checks the rest, and
    # gateway/control/openapi.py documents what Litestar drops (nested constraints, settings).
    name: Annotated[
        str,
        msgspec.Meta(
            pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="Adapter name; also its id. Immutable."
        ),
    ]
    image_name: Annotated[
        str,
        msgspec.Meta(
            pattern=IMAGE_NAME_PATTERN,
            description="Image name (path segments; never '..'). Required unless package or serverJson is given.",
        ),
    ] = ""
    image_version: Annotated[
        str, msgspec.Meta(pattern=IMAGE_VERSION_PATTERN, description="Image tag. Required with imageName.")
    ] = ""
    environment_variables: Annotated[dict[str, str], msgspec.Meta(description="Environment of each replica.")] = (
        msgspec.field(default_factory=dict)
    )
    replica_count: Annotated[
        int, msgspec.Meta(ge=0, description="Replicas to run, 0 … the configured maximum (MCPGW_MAX_REPLICAS).")
    ] = 1
    description: str = ""
    required_roles: Annotated[
        list[str], msgspec.Meta(description="Roles that grant read and data-plane use to non-owners.")
    ] = msgspec.field(default_factory=list)
    use_workload_identity: Annotated[
        bool, msgspec.Meta(description="Run replicas with the workload identity. Immutable; mcp.admin only.")
    ] = False
    upstream_auth: Annotated[
        UpstreamAuth, msgspec.Meta(description="Credential the gateway sends upstream (issue 18); default none.")
    ] = msgspec.field(default_factory=UpstreamAuth)
    tool_policy: (
        Annotated[
            list[ToolRule],
            msgspec.Meta(
                max_length=100,
                description="Who may see and call which tools (docs/policy.md); absent = every reader, every tool.",
            ),
        ]
        | None
    ) = None
    rate_limits: (
        Annotated[
            list[RateRule],
            msgspec.Meta(
                max_length=20,
                description="Request rate limits per user or per adapter (docs/policy.md); absent = none.",
            ),
        ]
        | None
    ) = None
    transport: Annotated[
        Transport | None,
        msgspec.Meta(
            description="How the server speaks MCP: streamable-http (default) or stdio (bridged by the gateway)."
        ),
    ] = None
    command: (
        Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=NO_NUL_PATTERN)]],
            msgspec.Meta(
                min_length=1,
                max_length=64,
                description=(
                    "Replaces the image's entrypoint (local: the catalog command; a package: its bin). "
                    "Required for a stdio image on Kubernetes: the program the pod's bridge starts per session."
                ),
            ),
        ]
        | None
    ) = None
    args: (
        Annotated[
            list[Annotated[str, msgspec.Meta(max_length=4096, pattern=NO_NUL_PATTERN)]],
            msgspec.Meta(max_length=64, description="Arguments after the command."),
        ]
        | None
    ) = None
    package: Annotated[
        PackageRef | None, msgspec.Meta(description="Run an npm/PyPI package instead of an image (local runtime).")
    ] = None
    server_json: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="An MCP Registry server.json; the gateway picks the package that fits its runtime."),
    ] = None


class AdapterRecord(msgspec.Struct, kw_only=True):
    """An adapter as stored: the desired state plus bookkeeping.

    ``generation`` grows by one on every change of the deployed spec (image, env, replicas);
    ``etag`` changes on every write and guards optimistic concurrency.
    """

    name: str
    image_name: str
    image_version: str
    environment_variables: dict[str, str] = msgspec.field(default_factory=dict)
    replica_count: int = 1
    description: str = ""
    required_roles: list[str] = msgspec.field(default_factory=list)
    use_workload_identity: bool = False
    upstream_auth: UpstreamAuth = msgspec.field(default_factory=UpstreamAuth)
    tool_policy: list[ToolRule] | None = None
    rate_limits: list[RateRule] | None = None
    created_by: str = ""
    created_at: datetime | None = None
    last_updated_at: datetime | None = None
    generation: int = 1
    etag: str = ""
    transport: str | None = None
    """None: the image decides (streamable-http unless the local catalog says stdio)."""
    command: list[str] | None = None
    args: list[str] | None = None
    package: PackageRef | None = None
    server_name: str = ""
    """The server.json ``name`` the adapter was imported from ("" when it was not)."""

    @property
    def image(self) -> str:
        """imageName:imageVersion, or ``npm:name@version`` / ``pypi:name==version`` for a package."""
        if self.package is not None:
            sep = "@" if self.package.registry == "npm" else "=="
            return f"{self.package.registry}:{self.package.name}{sep}{self.package.version}"
        return f"{self.image_name}:{self.image_version}"

    def same_deployment(self, other: AdapterRecord) -> bool:
        """True when both ask the runtime for exactly the same replicas."""
        return (
            self.image_name == other.image_name
            and self.image_version == other.image_version
            and self.environment_variables == other.environment_variables
            and self.replica_count == other.replica_count
            and self.use_workload_identity == other.use_workload_identity
            and self.transport == other.transport
            and self.command == other.command
            and self.args == other.args
            and self.package == other.package
        )


class AdapterResource(msgspec.Struct, rename="camel", kw_only=True):
    """An adapter as the API returns it."""

    id: str
    name: str
    image_name: str
    image_version: str
    environment_variables: dict[str, str]
    replica_count: int
    description: str
    use_workload_identity: bool
    required_roles: list[str]
    created_by: str
    created_at: datetime
    last_updated_at: datetime
    generation: int
    upstream_auth: UpstreamAuth = msgspec.field(default_factory=UpstreamAuth)
    tool_policy: list[ToolRule] | None = None
    rate_limits: list[RateRule] | None = None
    transport: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    package: PackageRef | None = None
    server_name: str = ""

    @classmethod
    def from_record(cls, r: AdapterRecord) -> AdapterResource:
        """The wire form of a stored record."""
        assert r.created_at is not None and r.last_updated_at is not None
        return cls(
            id=r.name,
            name=r.name,
            image_name=r.image_name,
            image_version=r.image_version,
            environment_variables=r.environment_variables,
            replica_count=r.replica_count,
            description=r.description,
            use_workload_identity=r.use_workload_identity,
            required_roles=r.required_roles,
            created_by=r.created_by,
            created_at=r.created_at,
            last_updated_at=r.last_updated_at,
            generation=r.generation,
            upstream_auth=r.upstream_auth,
            tool_policy=r.tool_policy,
            rate_limits=r.rate_limits,
            transport=r.transport,
            command=r.command,
            args=r.args,
            package=r.package,
            server_name=r.server_name,
        )


class AdapterPage(msgspec.Struct, rename="camel", kw_only=True):
    """One page of GET /adapters; pass ``nextCursor`` as ``cursor`` for the next."""

    items: list[AdapterResource]
    next_cursor: str | None = None


ConditionType = Literal["Accepted", "Progressing", "Ready", "Degraded"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(msgspec.Struct, rename="camel", kw_only=True):
    """One status condition, as Kubernetes and the Gateway API shape them."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: datetime


class InstanceStatus(msgspec.Struct, rename="camel", kw_only=True):
    """One replica: its index, whether it routes traffic, and why not."""

    instance: int
    name: str
    ready: bool
    state: str
    restarts: int = 0
    generation: int = 0
    message: str = ""


class AdapterStatus(msgspec.Struct, rename="camel", kw_only=True):
    """GET /adapters/{name}/status."""

    name: str
    image: str
    generation: int
    observed_generation: int
    desired_replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    replica_status: str
    conditions: list[Condition]
    instances: list[InstanceStatus]


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, as every REST error body."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None
    instance: str | None = None


# --- virtual servers (issue 16): beside AdapterRecord, so the stores need not import gateway.servers ---
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
