"""``GET /.well-known/oauth-protected-resource[/<path>]``: unauthenticated RFC 9728 metadata.

The bare form describes the gateway as a whole; the path-inserted form describes the resource at
``<public URL>/<path>``, typically an MCP endpoint such as ``/adapters/{name}/mcp``. Any path is
answered the same way without looking it up, so the documents reveal nothing about which adapters
exist. In dev mode there is no authorization server to point to, and both routes answer 404.
"""

from __future__ import annotations

from typing import Any

from litestar import Response, Router, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from gateway.auth.metadata import WELL_KNOWN_PATH, protected_resource_metadata
from gateway.errors import NotFound
from gateway.models import Problem
from gateway.settings import Settings

#: Clients may cache the document; it only changes when settings change.
CACHE_CONTROL = "public, max-age=300"
_NOT_IN_DEV = {
    404: ResponseSpec(
        data_container=Problem,
        media_type="application/problem+json",
        description="Dev auth: there is no authorization server, so no metadata.",
        generate_examples=False,
    )
}
_WITH_PATH = {
    **_NOT_IN_DEV,
    400: ResponseSpec(
        data_container=Problem,
        media_type="application/problem+json",
        description="The path is malformed.",
        generate_examples=False,
    ),
}


def protected_resource_router(settings: Settings) -> Router:
    """A Router serving the metadata documents for ``settings``; mount it without auth."""

    def _document(path: str) -> Response[dict[str, Any]]:
        if settings.auth == "dev":
            raise NotFound("dev auth has no authorization server, so there is no protected-resource metadata")
        return Response(
            protected_resource_metadata(settings, path),
            media_type="application/json",
            headers={"Cache-Control": CACHE_CONTROL, "Access-Control-Allow-Origin": "*"},
        )

    @get(
        "/",
        name="protected-resource-metadata",
        summary="RFC 9728 metadata of the gateway",
        sync_to_thread=False,
        responses=_NOT_IN_DEV,
    )
    def root_document() -> Response[dict[str, Any]]:
        return _document("")

    @get(
        "/{path:path}",
        name="protected-resource-metadata-path",
        summary="RFC 9728 metadata of the MCP endpoint at <path>",
        sync_to_thread=False,
        responses=_WITH_PATH,
    )
    def path_document(path: FromPath[str]) -> Response[dict[str, Any]]:
        return _document(path)

    return Router(path=WELL_KNOWN_PATH, route_handlers=[root_document, path_document], tags=["auth"])
