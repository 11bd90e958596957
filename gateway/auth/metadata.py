"""MCP authorization discovery: RFC 9728 protected-resource metadata and the 401 challenge.

An MCP client that gets a 401 reads ``resource_metadata`` from ``WWW-Authenticate``, fetches that
document, checks that its ``resource`` is exactly the URL it called (RFC 9728 §3.3; the Python SDK
enforces it), and asks one of the ``authorization_servers`` for a token for that resource. So each
MCP endpoint gets its own document at the path-inserted well-known URL, built from the public
origin in settings (the gateway usually runs behind a TLS-terminating proxy and cannot see it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway.settings import Settings

WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"


def _split_origin(settings: Settings) -> tuple[str, str]:
    """(scheme://host[:port], path prefix) of the public URL; the prefix is '' for a bare origin."""
    parts = urlsplit(settings.origin)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def _normalize_path(path: str) -> str:
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = "/" + path.strip("/")
    return "" if path == "/" else path


def resource_url(settings: Settings, request_path: str) -> str:
    """The public URL of the resource at ``request_path`` (a path on the gateway), no trailing slash."""
    return settings.origin + _normalize_path(request_path)


def metadata_url(settings: Settings, request_path: str) -> str:
    """Where the metadata of ``request_path`` lives: the well-known segment goes between host and path."""
    host, prefix = _split_origin(settings)
    return host + WELL_KNOWN_PATH + prefix + _normalize_path(request_path)


def authorization_servers(settings: Settings) -> list[str]:
    """The issuer clients get tokens from: the tenant's v2 issuer (entra) or the OIDC issuer."""
    if settings.auth == "entra":
        return [f"{settings.entra_authority.rstrip('/')}/{settings.entra_tenant_id}/v2.0"]
    if settings.auth == "oidc" and settings.oidc_issuer:
        return [settings.oidc_issuer]
    return []


def scopes_supported(settings: Settings) -> list[str]:
    """Scopes from MCPGW_AUTH_SCOPES; by default ``api://<clientId>/.default`` in entra mode."""
    if settings.auth_scopes:
        return list(settings.auth_scopes)
    if settings.auth == "entra" and settings.entra_client_id:
        return [f"api://{settings.entra_client_id}/.default"]
    return []


def protected_resource_metadata(settings: Settings, resource_path: str) -> dict[str, Any]:
    """The RFC 9728 document for the public resource whose path (below the public URL) is ``resource_path``."""
    host, _ = _split_origin(settings)
    doc: dict[str, Any] = {
        "resource": host + _normalize_path(resource_path),
        "authorization_servers": authorization_servers(settings),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP Gateway",
    }
    scopes = scopes_supported(settings)
    if scopes:
        doc["scopes_supported"] = scopes
    return doc


#: Characters of ``error_description`` in a ``WWW-Authenticate`` header at most.
MAX_DESCRIPTION = 300


def _quoted(value: str) -> str:
    # RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E, so no quote, backslash or non-ASCII.
    cleaned = "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else "'" if ch == '"' else "?" for ch in value)
    return f'"{cleaned}"'


def www_authenticate(
    settings: Settings, request_path: str, error: str | None = None, description: str | None = None
) -> str:
    """The ``WWW-Authenticate`` value of a 401 on ``request_path`` (a gateway path like /adapters/x/mcp).

    In dev mode there is no authorization server, so no ``resource_metadata`` is advertised.
    """
    params: list[str] = []
    if settings.auth != "dev":
        params.append(f"resource_metadata={_quoted(metadata_url(settings, request_path))}")
    if error:
        params.append(f"error={_quoted(error)}")
    if description:
        if len(description) > MAX_DESCRIPTION:  # the text may quote token contents; keep the header small
            description = description[: MAX_DESCRIPTION - 3] + "..."
        params.append(f"error_description={_quoted(description)}")
    return "Bearer " + ", ".join(params) if params else "Bearer"
