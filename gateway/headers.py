"""Which headers cross the gateway, in each direction.

The data plane applies these sets (``gateway/proxy/headers.py``) and the control plane refuses
adapter specs that would name them (``gateway/control/validation.py``); they live here, below both,
because control and proxy never import each other (DESIGN §3, issue 20).
"""

from __future__ import annotations

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
# forwarding headers the gateway rewrites (X-Real-IP is one a client could forge), and the client's
# Host (the pool sets the upstream's).
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
    b"x-real-ip",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"mcp-session-id",
    b"content-length",
    b"expect",
    b"origin",  # checked by the gateway; upstream DNS-rebinding checks would refuse a browser's origin
}
STRIPPED_DOWNSTREAM = HOP_BY_HOP | {b"mcp-session-id", b"content-length", b"server", b"date"}
