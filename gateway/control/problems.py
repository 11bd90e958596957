"""Rendering of errors as RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException

from gateway.errors import GatewayError, Unauthenticated
from gateway.problems import problem_response

log = logging.getLogger("gateway.control")
_FIELD_AT = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def gateway_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Our own errors carry status, detail and field."""
    assert isinstance(exc, GatewayError)
    headers = dict(exc.headers)
    if isinstance(exc, Unauthenticated):
        www = request.app.state.get("www_authenticate")
        headers["WWW-Authenticate"] = www(request.url.path, exc.error, exc.detail) if www else "Bearer"
    if exc.status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc.detail)
    return problem_response(exc.status, exc.title, exc.detail, field=exc.field, headers=headers)


def validation_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Body and parameter decoding errors: name the field."""
    assert isinstance(exc, ValidationException)
    messages: list[str] = []
    field: str | None = None
    for item in exc.extra or []:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            key = item.get("key")
            unknown = _UNKNOWN.search(message)
            located = _FIELD_AT.search(message)
            if unknown:
                field = field or unknown.group(1)
                message = f"unknown field {unknown.group(1)!r}"
            elif located and located.group(1):
                where = located.group(1).replace("[...]", "")
                field = field or where
                message = f"{where}: {message[: located.start()].rstrip(' -')}"
            elif key:
                where = str(key).replace("[...]", "")
                field = field or where
                message = f"{where}: {message}"
            messages.append(message)
    detail = "; ".join(m for m in messages if m) or str(exc.detail)
    if "Object missing required field" in detail:
        missing = re.search(r"required field `([^`]+)`", detail)
        if missing:
            field = missing.group(1)
            detail = f"required field {field!r} is missing"
    return problem_response(400, "Invalid request", detail, field=field)


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Framework errors (unknown route, wrong method, …) in the same shape."""
    assert isinstance(exc, HTTPException)
    if isinstance(exc, NotAuthorizedException):
        return gateway_error_handler(request, Unauthenticated(str(exc.detail)))
    headers = dict(exc.headers or {})
    return problem_response(exc.status_code, _title(exc.status_code), str(exc.detail), headers=headers)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug: log it with its stack, answer without one."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "Internal error", "the gateway failed unexpectedly; see its log")


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    GatewayError: gateway_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
