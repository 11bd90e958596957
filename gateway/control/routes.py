"""REST routes of the control plane: /adapters, /healthz, /readyz."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from gateway.auth.base import Authenticator
from gateway.control.service import AdapterService
from gateway.errors import DependencyUnavailable
from gateway.models import AdapterInput, AdapterPage, AdapterRecord, AdapterResource, AdapterStatus, Identity


async def provide_identity(request: Request[Any, Any, Any]) -> Identity:
    """The caller, from the configured authenticator."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request.headers)


def provide_service(state: State) -> AdapterService:
    """The adapter service built by app.py."""
    service: AdapterService = state.service
    return service


def _resource(record: AdapterRecord, status_code: int = 200, **headers: str) -> Response[AdapterResource]:
    return Response(
        AdapterResource.from_record(record),
        status_code=status_code,
        headers={"ETag": f'"{record.etag}"', **headers},
    )


class AdapterController(Controller):
    """Register, inspect, update and delete adapters."""

    path = "/adapters"
    tags = ["adapters"]
    dependencies = {"identity": Provide(provide_identity), "service": Provide(provide_service, sync_to_thread=False)}

    @post("/", status_code=201, summary="Create an adapter")
    async def create_adapter(
        self,
        data: JSONBody[AdapterInput],
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
    ) -> Response[AdapterResource]:
        """Store the adapter and deploy its replicas. 409 when the name exists."""
        record = await service.create(identity, data)
        return _resource(record, 201, Location=f"/adapters/{record.name}")

    @get("/", summary="List adapters")
    async def list_adapters(
        self,
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
        limit: Annotated[int | None, QueryParameter(description="Page size.")] = None,
        cursor: Annotated[str | None, QueryParameter(description="nextCursor of the previous page.")] = None,
    ) -> AdapterPage:
        """The adapters the caller may read, in name order, one page at a time."""
        return await service.list(identity, limit=limit, cursor=cursor)

    @get("/{name:str}", summary="Get an adapter")
    async def get_adapter(
        self, name: FromPath[str], identity: NamedDependency[Identity], service: NamedDependency[AdapterService]
    ) -> Response[AdapterResource]:
        """One adapter. 404 unknown, 403 not allowed."""
        return _resource(await service.get(identity, name))

    @put("/{name:str}", summary="Update an adapter")
    async def update_adapter(
        self,
        name: FromPath[str],
        data: JSONBody[AdapterInput],
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", description="ETag from a read.")] = None,
    ) -> Response[AdapterResource]:
        """Replace the spec. name and useWorkloadIdentity are immutable; only deployment changes redeploy."""
        return _resource(await service.update(identity, name, data, if_match=if_match))

    @delete("/{name:str}", status_code=204, summary="Delete an adapter")
    async def delete_adapter(
        self, name: FromPath[str], identity: NamedDependency[Identity], service: NamedDependency[AdapterService]
    ) -> None:
        """Delete the adapter, its replicas and its sessions."""
        await service.delete(identity, name)

    @get("/{name:str}/status", summary="Adapter status")
    async def adapter_status(
        self, name: FromPath[str], identity: NamedDependency[Identity], service: NamedDependency[AdapterService]
    ) -> AdapterStatus:
        """Replica counts, conditions and per-replica readiness."""
        return await service.status(identity, name)

    @get("/{name:str}/logs", media_type="text/plain", summary="Replica logs")
    async def adapter_logs(
        self,
        name: FromPath[str],
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
        instance: Annotated[int, QueryParameter(description="Replica index.")] = 0,
        tail: Annotated[int, QueryParameter(description="Lines to return.")] = 100,
    ) -> str:
        """The last ``tail`` lines of replica ``instance``."""
        return await service.logs(identity, name, instance=instance, tail=tail)


@get("/healthz", tags=["health"], summary="Liveness", media_type="application/json")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@get("/readyz", tags=["health"], summary="Readiness", media_type="application/json")
async def readyz(state: State) -> Response[dict[str, Any]]:
    """The store is reachable and the runtime started; 503 ``draining`` once the gateway is stopping."""
    drain = state.get("drain")
    if drain is not None and drain.draining:  # load balancers take this gateway out first
        return Response({"status": "draining", "checks": {}}, status_code=503)
    checks: dict[str, str] = {}
    ok = True
    for label, component in (("store", state.store), ("runtime", state.runtime)):
        try:
            await component.ping()
            checks[label] = "ok"
        except DependencyUnavailable as exc:
            ok = False
            checks[label] = exc.detail
        except Exception as exc:
            ok = False
            checks[label] = f"{type(exc).__name__}: {exc}"
    return Response({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)
