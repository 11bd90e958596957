"""The gateway's exception hierarchy.

Every failure a user can cause, or a dependency can cause, is one of these. The control plane
renders them as ``application/problem+json``; the data plane as a JSON-RPC error object.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: an HTTP status, a short title and a detail the caller can act on."""

    status = 500
    title = "Gateway error"

    def __init__(self, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    """The request is malformed; ``field`` names the part at fault."""

    status = 400
    title = "Invalid request"


class Unauthenticated(GatewayError):
    """No valid credential (401). ``error`` is the RFC 6750 error code."""

    status = 401
    title = "Unauthenticated"

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error


class Forbidden(GatewayError):
    """The caller is known but not allowed (403)."""

    status = 403
    title = "Forbidden"


class NotFound(GatewayError):
    """The named thing does not exist, or the caller may not know it exists (404)."""

    status = 404
    title = "Not found"


class Conflict(GatewayError):
    """The request conflicts with the current state: duplicate name, lost update race (409)."""

    status = 409
    title = "Conflict"


class PreconditionFailed(GatewayError):
    """If-Match did not match the current ETag (412)."""

    status = 412
    title = "Precondition failed"


class Unprocessable(GatewayError):
    """The body is well-formed and schema-valid, but what it asks for cannot be deployed (422): a
    server.json without a package this runtime runs, a required variable or argument left out, a
    missing image source. ``field`` names the part at fault."""

    status = 422
    title = "Unprocessable content"


class PayloadTooLarge(GatewayError):
    """The request body is over the configured limit (413)."""

    status = 413
    title = "Payload too large"


class TooManyRequests(GatewayError):
    """The caller holds too many of something at once (429); ``Retry-After`` says when to try again."""

    status = 429
    title = "Too many requests"


class DependencyUnavailable(GatewayError):
    """A dependency (store, Redis, Kubernetes, …) failed; the message names it (503)."""

    status = 503
    title = "Dependency unavailable"

    def __init__(self, dependency: str, detail: str, *, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(f"{dependency}: {detail}", headers=headers)
        self.dependency = dependency


class StoreUnavailable(DependencyUnavailable):
    """The adapter metadata store is unreachable."""


class SessionStoreUnavailable(DependencyUnavailable):
    """The session store (Redis) is unreachable."""


class RuntimeUnavailable(DependencyUnavailable):
    """The replica runtime (Kubernetes API, local process manager) failed."""
