"""REST routes of virtual servers: /servers, with the conventions of /adapters (gateway/control/routes.py)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, PathParameter

from gateway.control.routes import IfMatch, PageCursor, PageLimit, etag_headers, problems, provide_identity
from gateway.errors import InvalidRequest
from gateway.models import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    Identity,
    ServerInput,
    ServerPage,
    ServerRecord,
    ServerResource,
    ServerStatus,
)
from gateway.servers.service import ServerService

_ANY = (400, 401, 403, 421, 503)
_ETAG = [ResponseHeader(name="ETag", description="Version of the server, for If-Match.", documentation_only=True)]
ServerName = Annotated[
    str, PathParameter(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="Virtual server name.")
]


async def provide_server_input(request: Request[Any, Any, Any], identity: NamedDependency[Identity]) -> ServerInput:
    """The body as ServerInput, decoded strictly (as provide_adapter_input; 401 before body details)."""
    try:
        return msgspec.convert(msgspec.json.decode(await request.body()), ServerInput, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationException(detail="invalid body", extra=[{"message": str(exc), "source": "body"}]) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}", field="body") from None


def provide_server_service(state: State) -> ServerService:
    """The server service built by app.py."""
    service: ServerService = state.server_service
    return service


def _resource(record: ServerRecord, status_code: int = 200, **headers: str) -> Response[ServerResource]:
    return Response(
        ServerResource.from_record(record), status_code=status_code, headers=etag_headers(record.etag, headers)
    )


class ServerController(Controller):
    """Compose adapters into virtual servers (MCP at /servers/{name}/mcp and /servers/{name}/sse)."""

    path = "/servers"
    tags = ["servers"]
    dependencies = {
        "identity": Provide(provide_identity),
        "servers": Provide(provide_server_service, sync_to_thread=False),
        "spec": Provide(provide_server_input),
    }

    @post(
        "/",
        status_code=201,
        summary="Create a virtual server",
        responses=problems(*_ANY, 409, 413, 415, 422),
        response_headers=[
            *_ETAG,
            ResponseHeader(name="Location", description="URL of the new server.", documentation_only=True),
        ],
    )
    async def create_server(
        self,
        data: JSONBody[ServerInput],
        spec: NamedDependency[ServerInput],
        identity: NamedDependency[Identity],
        servers: NamedDependency[ServerService],
    ) -> Response[ServerResource]:
        """Store the server. Each member must name an adapter the caller may read (400 naming the member)."""
        record = await servers.create(identity, spec)
        return _resource(record, 201, Location=f"/servers/{record.name}")

    @get("/", summary="List virtual servers", responses=problems(*_ANY))
    async def list_servers(
        self,
        identity: NamedDependency[Identity],
        servers: NamedDependency[ServerService],
        limit: PageLimit = None,
        cursor: PageCursor = None,
    ) -> ServerPage:
        """The servers the caller may read, in name order, one page at a time."""
        return await servers.list(identity, limit=limit, cursor=cursor)

    @get("/{name:str}", summary="Get a virtual server", responses=problems(*_ANY, 404), response_headers=_ETAG)
    async def get_server(
        self, name: ServerName, identity: NamedDependency[Identity], servers: NamedDependency[ServerService]
    ) -> Response[ServerResource]:
        """One server. 404 unknown, 403 not allowed."""
        return _resource(await servers.get(identity, name))

    @put(
        "/{name:str}",
        summary="Update a virtual server",
        responses=problems(*_ANY, 404, 409, 412, 413, 415, 422),
        response_headers=_ETAG,
    )
    async def update_server(
        self,
        name: ServerName,
        data: JSONBody[ServerInput],
        spec: NamedDependency[ServerInput],
        identity: NamedDependency[Identity],
        servers: NamedDependency[ServerService],
        if_match: IfMatch = None,
    ) -> Response[ServerResource]:
        """Replace the spec. name is immutable."""
        return _resource(await servers.update(identity, name, spec, if_match=if_match))

    @delete("/{name:str}", status_code=204, summary="Delete a virtual server", responses=problems(*_ANY, 404, 409))
    async def delete_server(
        self, name: ServerName, identity: NamedDependency[Identity], servers: NamedDependency[ServerService]
    ) -> None:
        """Delete the server; its member adapters stay."""
        await servers.delete(identity, name)

    @get("/{name:str}/status", summary="Virtual server status", responses=problems(*_ANY, 404))
    async def server_status(
        self, name: ServerName, identity: NamedDependency[Identity], servers: NamedDependency[ServerService]
    ) -> ServerStatus:
        """Each member: present (its adapter exists), readable by the caller, ready replicas."""
        return await servers.status(identity, name)
