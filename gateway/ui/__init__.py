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

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

#: Where the portal's files live (package data, see pyproject.toml).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Browsers revalidate on every load (files are small; a gateway upgrade shows at once).
_CACHE = CacheControlHeader(no_cache=True)


def portal_router(path: str = "/ui") -> Router:
    """Serve ``static/`` at ``path``; ``path/`` answers index.html (HTML mode)."""
    return create_static_files_router(
        path=path, directories=[STATIC_DIR], html_mode=True, name="portal", cache_control=_CACHE
    )
