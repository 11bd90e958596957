"""The headers of a forwarded request and of its answer (the sets live in ``gateway/headers.py``)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.headers import HOP_BY_HOP, STRIPPED_DOWNSTREAM, STRIPPED_UPSTREAM


def upstream_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    client_ip: str,
    trusted_peer: bool,
    scheme: str,
    user_id: str,
    roles: Iterable[str],
    session_id: str | None,
) -> list[tuple[bytes, bytes]]:
    """Headers for the upstream request: the client's minus the stripped, plus the gateway's own.

    The client's bytes travel unchanged (no decoding and re-encoding). Headers the client's
    ``Connection`` header names are dropped (RFC 9110 §7.6.1). ``X-Forwarded-For`` is the
    peer's address; only when the peer is a trusted proxy (``MCPGW_TRUSTED_PROXIES``) is the
    client's value kept and the peer appended to it.
    """
    out: list[tuple[bytes, bytes]] = []
    forwarded_for = b""
    host = b""
    named: set[bytes] | None = None
    for name, value in raw:
        lname = name.lower()
        if lname in STRIPPED_UPSTREAM:
            if lname == b"host":
                host = value
            elif lname == b"x-forwarded-for":
                forwarded_for = value if not forwarded_for else forwarded_for + b", " + value
            elif lname == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")} - HOP_BY_HOP
                if tokens:
                    named = tokens if named is None else named | tokens
            continue
        out.append((name, value))
    if named:
        out = [(name, value) for name, value in out if name.lower() not in named]
    peer = client_ip.encode("latin-1")
    out.append((b"X-Forwarded-For", forwarded_for + b", " + peer if trusted_peer and forwarded_for else peer))
    out.append((b"X-Forwarded-Proto", scheme.encode("latin-1")))
    out.append((b"X-Forwarded-Host", host))
    out.append((b"X-Mcp-User-Id", user_id.encode()))
    out.append((b"X-Mcp-Roles", ",".join(sorted(roles)).encode()))
    if session_id is not None:
        out.append((b"Mcp-Session-Id", session_id.encode("latin-1")))
    return out


def downstream_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers fit for the client (the session id is handled by the caller).

    Headers the upstream's ``Connection`` header names are dropped too (RFC 9110 §7.6.1).
    """
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        lname = name.lower()
        if lname in STRIPPED_DOWNSTREAM:
            if lname == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")} - HOP_BY_HOP
                if tokens:
                    named = tokens if named is None else named | tokens
            continue
        out.append((lname, value))
    if named:
        out = [(name, value) for name, value in out if name not in named]
    return out
