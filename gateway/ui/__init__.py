"""The management portal at ``/ui``: static files (HTML, CSS, JavaScript modules) served by Litestar.

2026-11-30: the portal is plain HTML + vanilla JS modules + CSS committed under ``static/``, with
no build step and no third-party code: nothing is fetched from a CDN or anywhere else at runtime,
so it works offline and a wheel carries it as package data. It talks only to the public REST API
(``/adapters``, ``/servers``, ``/openapi/openapi.json``, the RFC 9728 metadata) and the data plane
(``/adapters/{name}/mcp``) with the signed-in user's credentials (dev headers or a bearer token held
in memory; no cookies, so the REST guard's CSRF rules keep holding).

It is an ordinary Litestar route: ``GatewayApp`` dispatches the MCP data plane before Litestar, so
the portal adds nothing to the MCP hot path.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from gateway.auth.metadata import authorization_servers
from gateway.settings import Settings

#: Where the portal's files live (package data, see pyproject.toml).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Browsers revalidate on every load (files are small; a gateway upgrade shows at once).
_CACHE = CacheControlHeader(no_cache=True)


def content_security_policy(settings: Settings) -> str:
    """Only our own files run; fetches go to us and the issuer (discovery, token); no framing.

    ``frame-ancestors 'none'`` stops a page from framing the portal and steering clicks onto
    Delete; ``connect-src`` names the issuer's origin because the sign-in reads its OpenID
    configuration and redeems the code from the browser.
    """
    issuers = sorted({f"{u.scheme}://{u.netloc}" for u in map(urlsplit, authorization_servers(settings))})
    connect = " ".join(["'self'", *issuers])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def portal_router(settings: Settings, path: str = "/ui") -> Router:
    """Serve ``static/`` at ``path`` (``path/`` answers index.html) with the portal's security headers."""
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the sign-in's ?code= never leaves in a Referer
        "X-Frame-Options": "DENY",
    }

    async def add_headers(response: Response[object]) -> Response[object]:
        response.headers.update(headers)
        return response

    return create_static_files_router(
        path=path,
        directories=[STATIC_DIR],
        html_mode=True,
        name="portal",
        cache_control=_CACHE,
        after_request=add_headers,
    )
