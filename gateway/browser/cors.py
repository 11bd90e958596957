"""CORS on MCP and REST routes.

Only origins the Host/Origin policy accepts get CORS headers (on MCP routes loopback origins, the
public URL and MCPGW_ALLOWED_ORIGINS; on REST routes the public URL and MCPGW_ALLOWED_ORIGINS);
requests without an Origin header (every non-browser client) pay nothing. On MCP routes browsers
must be able to read ``Mcp-Session-Id`` (to continue a session) and ``WWW-Authenticate`` (to find
the protected-resource metadata), so both are exposed; REST exposes ``ETag`` and ``Location``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

EXPOSED = b"Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Retry-After"
REST_EXPOSED = b"ETag, Location, WWW-Authenticate, Retry-After"
MAX_AGE = b"600"
_TOKEN_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def request_origin(raw_headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The Origin header of a request, if any."""
    for name, value in raw_headers:
        if name == b"origin" or name.lower() == b"origin":
            return bytes(value)
    return None


def with_cors(send: Send, origin: bytes, exposed: bytes = EXPOSED) -> Send:
    """``send`` that adds the CORS response headers for an accepted ``origin``."""

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", exposed),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    return cors_send


def preflight_headers(origin: bytes, methods: tuple[str, ...], requested: str | None) -> list[tuple[bytes, bytes]]:
    """Headers of a 204 answer to an accepted preflight."""
    headers = [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", ", ".join(methods).encode()),
        (b"access-control-max-age", MAX_AGE),
        (b"vary", b"Origin"),
    ]
    if requested and _TOKEN_LIST.match(requested.strip()):
        headers.append((b"access-control-allow-headers", requested.strip().encode()))
    return headers
