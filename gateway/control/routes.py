"""REST routes of the control plane: /adapters, /healthz, /readyz.

Every status a route can answer is in its ``responses`` (problem+json for 4xx/5xx), and every
parameter carries its pattern, length or range, so the OpenAPI document is the whole contract
(schemathesis checks the gateway against it: tests/adversarial/test_rest_schemathesis.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from gateway.auth.base import Authenticator
from gateway.control.service import CURSOR_MAX_LENGTH, CURSOR_PATTERN, MAX_LOG_TAIL, AdapterService
from gateway.errors import DependencyUnavailable, InvalidRequest
from gateway.models import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    AdapterInput,
    AdapterPage,
    AdapterRecord,
    AdapterResource,
    AdapterStatus,
    Identity,
    Problem,
)

PROBLEM_JSON = "application/problem+json"
_WHY: dict[int, str] = {
    400: "A parameter, header or the body is malformed; `field` names it.",
    401: "No valid credential (see WWW-Authenticate).",
    403: "Not allowed: the caller's roles, or a browser Origin that is not the gateway's own or configured.",
    404: "No such adapter (or instance).",
    409: "The name exists, an immutable field would change, or another request changed the adapter meanwhile.",
    412: "If-Match does not match the adapter's ETag.",
    413: "The body is larger than the gateway accepts.",
    415: "The body is not application/json.",
    421: "The Host header does not name this gateway.",
    422: (
        "The body is valid but cannot be deployed (no image source, an image the local runtime's catalog does "
        "not know, a server.json it cannot host); `field` names why."
    ),
    429: "The caller already holds the most log streams allowed (logs_follow_max_per_user); see Retry-After.",
    503: "A dependency (adapter store, identity provider) is unavailable; see Retry-After.",
}


#: Paging and precondition parameters shared by /adapters and /servers (one declaration, one contract).
PageLimit = Annotated[int | None, QueryParameter(ge=1, description="Page size (at most MCPGW_LIST_MAX_LIMIT).")]
PageCursor = Annotated[
    str | None,
    QueryParameter(
        pattern=CURSOR_PATTERN, max_length=CURSOR_MAX_LENGTH, description="nextCursor of the previous page."
    ),
]
IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", description="ETag from a read; 412 when it is stale.")]


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for ``statuses``, each an RFC 9457 problem+json body."""
    return {
        status: ResponseSpec(
            data_container=Problem, media_type=PROBLEM_JSON, description=_WHY[status], generate_examples=False
        )
        for status in statuses
    }


#: What every authenticated route may answer besides its success.
_ANY = (400, 401, 403, 421, 503)
_ETAG = [ResponseHeader(name="ETag", description="Version of the adapter, for If-Match.", documentation_only=True)]
AdapterName = Annotated[
    str, PathParameter(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="Adapter name.")
]


async def provide_identity(request: Request[Any, Any, Any]) -> Identity:
    """The caller, from the configured authenticator."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request.headers)


async def provide_adapter_input(request: Request[Any, Any, Any], identity: NamedDependency[Identity]) -> AdapterInput:
    """The body as AdapterInput, decoded strictly: ``"replicaCount": "2"`` or ``"useWorkloadIdentity": 0`` is 400.

    Litestar converts handler arguments in msgspec's lax mode (strings to numbers, 0/1 to booleans),
    which accepts bodies the schema says are invalid; the ``data`` argument stays for the OpenAPI
    document (and the framework's own 400s), this is the value the handlers use. JSON Schema counts
    ``2.0`` as an integer, so an integral ``replicaCount`` (or rate-rule ``requests``) float is taken
    as that integer. It depends on ``identity`` so that a caller without a valid credential gets 401,
    never details of the body.
    """
    try:
        raw = msgspec.json.decode(await request.body())
        if isinstance(raw, dict) and isinstance(count := raw.get("replicaCount"), float) and count.is_integer():
            raw["replicaCount"] = int(count)
        if isinstance(raw, dict) and isinstance(rules := raw.get("rateLimits"), list):
            for rule in rules:  # the same for each rate rule's integer request count
                if isinstance(rule, dict) and isinstance(n := rule.get("requests"), float) and n.is_integer():
                    rule["requests"] = int(n)
        return msgspec.convert(raw, AdapterInput, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationException(detail="invalid body", extra=[{"message": str(exc), "source": "body"}]) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}", field="body") from None


LOG_KEEPALIVE_SECONDS = 15.0
"""Seconds of silence after which a followed log sends an SSE comment (proxies close idle streams)."""
LOGS_DESCRIPTION = """\
Without `follow`: the last `tail` lines of replica `instance` as text/plain.

With `follow=true`: `text/event-stream` (SSE, lines end with CRLF). First the last `tail` lines, then
each new line as the replica writes it, one event per log line, without its newline:

    data: <log line>

A line holding a carriage return is split over several `data:` fields (SSE joins them with a
newline). Every 15 s without a line the stream sends a comment, `: keep-alive`. When the replica is
removed (adapter deleted, scaled down past `instance`) the stream sends one last event and ends:

    event: end
    data: the replica is gone

A client that sees `end` should not reconnect. Errors (400, 403, 404 …) are problem+json, before
the stream starts; access rules are those of the request without `follow`. One user may hold
`logs_follow_max_per_user` (8) streams at once on a gateway; one more is 429 with Retry-After.
"""


class _LogsOperation(Operation):
    """The logs operation: its 200 is text/plain, or text/event-stream with ``follow=true``."""

    def to_schema(self) -> dict[str, Any]:
        """The operation with both media types of its 200 (the handler returns one or the other)."""
        schema = super().to_schema()
        # Not the handler's media_type: Litestar would give it precedence over the SSE response's own.
        schema["responses"]["200"]["content"] = {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        }
        return schema


async def log_events(lines: AsyncIterator[str], keepalive: float) -> AsyncIterator[ServerSentEventMessage]:
    """One SSE event per log line, a comment after ``keepalive`` seconds of silence, ``end`` when lines end.

    The next line is awaited in a task so that a keep-alive never cancels the read in progress.
    Closing this generator (the client went away) cancels the read and closes ``lines``.
    """
    pending: asyncio.Future[str] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(lines))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            try:
                line = pending.result()
            except StopAsyncIteration:
                pending = None
                yield ServerSentEventMessage(event="end", data="the replica is gone")
                return
            pending = None
            yield ServerSentEventMessage(data=line)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()


def provide_service(state: State) -> AdapterService:
    """The adapter service built by app.py."""
    service: AdapterService = state.service
    return service


def _resource(record: AdapterRecord, status_code: int = 200, **headers: str) -> Response[AdapterResource]:
    return Response(
        AdapterResource.from_record(record), status_code=status_code, headers=etag_headers(record.etag, headers)
    )


def etag_headers(etag: str, extra: dict[str, str]) -> dict[str, str]:
    """A resource answer's headers: its ETag (quoted, for If-Match) and ``extra`` (Location)."""
    return {"ETag": f'"{etag}"', **extra}


class AdapterController(Controller):
    """Register, inspect, update and delete adapters."""

    path = "/adapters"
    tags = ["adapters"]
    dependencies = {
        "identity": Provide(provide_identity),
        "service": Provide(provide_service, sync_to_thread=False),
        "spec": Provide(provide_adapter_input),
    }

    @post(
        "/",
        status_code=201,
        summary="Create an adapter",
        responses=problems(*_ANY, 409, 413, 415, 422),
        response_headers=[
            *_ETAG,
            ResponseHeader(name="Location", description="URL of the new adapter.", documentation_only=True),
        ],
    )
    async def create_adapter(
        self,
        data: JSONBody[AdapterInput],
        spec: NamedDependency[AdapterInput],
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
    ) -> Response[AdapterResource]:
        """Store the adapter and deploy its replicas. 409 when the name exists."""
        record = await service.create(identity, spec)
        return _resource(record, 201, Location=f"/adapters/{record.name}")

    @get("/", summary="List adapters", responses=problems(*_ANY))
    async def list_adapters(
        self,
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
        limit: PageLimit = None,
        cursor: PageCursor = None,
    ) -> AdapterPage:
        """The adapters the caller may read, in name order, one page at a time."""
        return await service.list(identity, limit=limit, cursor=cursor)

    @get("/{name:str}", summary="Get an adapter", responses=problems(*_ANY, 404), response_headers=_ETAG)
    async def get_adapter(
        self, name: AdapterName, identity: NamedDependency[Identity], service: NamedDependency[AdapterService]
    ) -> Response[AdapterResource]:
        """One adapter. 404 unknown, 403 not allowed."""
        return _resource(await service.get(identity, name))

    @put(
        "/{name:str}",
        summary="Update an adapter",
        responses=problems(*_ANY, 404, 409, 412, 413, 415, 422),
        response_headers=_ETAG,
    )
    async def update_adapter(
        self,
        name: AdapterName,
        data: JSONBody[AdapterInput],
        spec: NamedDependency[AdapterInput],
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
        if_match: IfMatch = None,
    ) -> Response[AdapterResource]:
        """Replace the spec. name and useWorkloadIdentity are immutable; only deployment changes redeploy."""
        return _resource(await service.update(identity, name, spec, if_match=if_match))

    @delete("/{name:str}", status_code=204, summary="Delete an adapter", responses=problems(*_ANY, 404, 409))
    async def delete_adapter(
        self, name: AdapterName, identity: NamedDependency[Identity], service: NamedDependency[AdapterService]
    ) -> None:
        """Delete the adapter, its replicas and its sessions."""
        await service.delete(identity, name)

    @get("/{name:str}/status", summary="Adapter status", responses=problems(*_ANY, 404))
    async def adapter_status(
        self, name: AdapterName, identity: NamedDependency[Identity], service: NamedDependency[AdapterService]
    ) -> AdapterStatus:
        """Replica counts, conditions and per-replica readiness."""
        return await service.status(identity, name)

    @get(
        "/{name:str}/logs",
        summary="Replica logs",
        description=LOGS_DESCRIPTION,
        responses=problems(*_ANY, 404, 429),
        operation_class=_LogsOperation,
    )
    async def adapter_logs(
        self,
        name: AdapterName,
        identity: NamedDependency[Identity],
        service: NamedDependency[AdapterService],
        instance: Annotated[int, QueryParameter(ge=0, description="Replica index (404 past the last).")] = 0,
        tail: Annotated[int, QueryParameter(ge=1, le=MAX_LOG_TAIL, description="Lines to return.")] = 100,
        follow: Annotated[
            bool,
            QueryParameter(description="Stream as text/event-stream: the last `tail` lines, then new ones."),
        ] = False,
    ) -> Response[Any]:
        """The last ``tail`` lines of replica ``instance``; with ``follow=true`` an SSE stream of its lines."""
        if follow:
            lines = await service.follow_logs(identity, name, instance=instance, tail=tail)
            return ServerSentEvent(log_events(lines, LOG_KEEPALIVE_SECONDS))
        return Response(await service.logs(identity, name, instance=instance, tail=tail), media_type="text/plain")


@get("/healthz", tags=["health"], summary="Liveness", media_type="application/json")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["health"],
    summary="Readiness",
    media_type="application/json",
    responses={
        503: ResponseSpec(
            data_container=dict[str, Any],
            media_type="application/json",
            description="A dependency is down; `checks` says which and why.",
            generate_examples=False,
        )
    },
)
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
