"""Which headers cross the gateway, in each direction."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 §7.6.1 connection-specific headers, plus ones only this hop may set.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded upstream: client credentials, identity claims only the gateway may make,
# forwarding headers the gateway rewrites, and the client's Host (httpx/aiohttp set the upstream's).
STRIPPED_UPSTREAM = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"cookie",
    b"x-mcp-user-id",
    b"x-mcp-userid",
    b"x-mcp-username",
    b"x-mcp-roles",
    b"x-dev-user-id",
    b"x-dev-roles",
    b"x-gateway-secret",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"mcp-session-id",
    b"content-length",
    b"expect",
    b"origin",  # checked by the gateway; upstream DNS-rebinding checks would refuse a browser's origin
}
STRIPPED_DOWNSTREAM = HOP_BY_HOP | {b"mcp-session-id", b"content-length", b"server", b"date"}


def upstream_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    client_ip: str,
    scheme: str,
    host: str,
    user_id: str,
    roles: Iterable[str],
    session_id: str | None,
) -> list[tuple[str, str]]:
    """Headers for the upstream request: the client's minus the stripped, plus the gateway's own."""
    out: list[tuple[str, str]] = []
    forwarded_for = ""
    for name, value in raw:
        lname = name.lower()
        if lname == b"x-forwarded-for":
            forwarded_for = value.decode("latin-1")
        if lname in STRIPPED_UPSTREAM:
            continue
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    out.append(("X-Forwarded-For", f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip))
    out.append(("X-Forwarded-Proto", scheme))
    out.append(("X-Forwarded-Host", host))
    out.append(("X-Mcp-User-Id", user_id))
    out.append(("X-Mcp-Roles", ",".join(sorted(roles))))
    if session_id is not None:
        out.append(("Mcp-Session-Id", session_id))
    return out


def downstream_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers fit for the client (the session id is handled by the caller)."""
    return [(name.lower(), value) for name, value in raw if name.lower() not in STRIPPED_DOWNSTREAM]
