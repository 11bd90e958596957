"""The REST control plane is not a CSRF target: Host, Origin and Content-Type checks, and CORS.

2026-11-30: in dev mode ``POST /adapters`` accepted a JSON body sent as ``text/plain`` or
form-encoded, from any ``Origin`` and with any ``Host``. Those are "simple" requests a browser
sends cross-site without a preflight, so any page the developer visited could create an adapter
(and with it run a command on the machine). Dev auth trusts headers, but a simple request cannot set
``X-Dev-User-Id`` — the default user ``dev`` was enough.

Checks, in order, on every request Litestar routes, before authentication:

1. ``Host`` on the gateway's allow-list (the MCP routes' :class:`HostPolicy`) → else 421, which
   stops DNS rebinding (a foreign name resolved to 127.0.0.1 makes the page same-origin with us).
2. ``Origin``, when sent, is the request's own origin, the public URL's or one of
   ``MCPGW_ALLOWED_ORIGINS`` → else 403. Unlike MCP routes, other loopback ports are *not*
   accepted: a page served by any local dev server would otherwise be a CSRF vector.
3. ``OPTIONS`` with an accepted ``Origin`` is a preflight → 204 with CORS headers (and without
   an ``Origin``, 204 with ``Allow``).
4. ``POST``/``PUT``/``PATCH`` and any request with a body must say ``application/json`` (or
   ``application/*+json``) → else 415. A cross-site page can send JSON only after a preflight,
   which step 3 answers only for accepted origins.

``GET``/``HEAD`` of /healthz, /readyz, /metrics, /openapi and the RFC 9728 metadata skip all of
this: load balancers probe with their own Host (a pod IP), and browser MCP clients read the
metadata cross-origin (it carries ``Access-Control-Allow-Origin: *`` itself).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.browser.cors import REST_EXPOSED, preflight_headers, with_cors
from gateway.browser.hosts import HostPolicy
from gateway.models import Problem

RawSend = Callable[[dict[str, Any]], Awaitable[None]]

PROBLEM_JSON = b"application/problem+json"
#: Paths (prefixes) any client may GET whatever its Host or Origin.
PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi", "/.well-known/oauth-protected-resource")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_JSON_MEDIA = re.compile(r"^application/(json|[a-z0-9!#$&^_.+-]+\+json)$")
_encoder = msgspec.json.Encoder()


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json``, parameters (charset) allowed."""
    if content_type is None:
        return False
    return _JSON_MEDIA.match(content_type.split(";", 1)[0].strip().lower()) is not None


def _is_public(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


def _has_body(method: str, headers: dict[str, str]) -> bool:
    length = headers.get("content-length")
    return method in _BODY_METHODS or "transfer-encoding" in headers or (length is not None and length.strip() != "0")


class RestGuard:
    """Litestar middleware (raw ASGI) applying the checks above; ``hosts`` is the gateway's policy."""

    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts
        self._methods: dict[str, tuple[str, ...]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str | None = scope.get("method")  # type: ignore[assignment]  # None on websockets
        if method is None or _is_public(method, scope["path"]):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            headers.setdefault(raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
        origin = headers.get("origin")
        problem = self.hosts.check(headers.get("host"), origin, loopback_origins=False)
        if problem is not None:
            status, detail = problem
            field = "Host" if status == 421 else "Origin"
            await _problem(send, status, "Misdirected request" if status == 421 else "Forbidden", detail, field)
            return
        if method == "OPTIONS":
            await self._options(scope, send, origin, headers.get("access-control-request-headers"))
            return
        if _has_body(method, headers) and not is_json_media_type(headers.get("content-type")):
            got = headers.get("content-type")
            detail = (
                f"Content-Type {got!r} is not accepted; send the body as application/json"
                if got is not None
                else "a request body needs Content-Type: application/json"
            )
            await _problem(send, 415, "Unsupported media type", detail, "Content-Type")
            return
        if origin is not None:
            send = cast(Send, with_cors(cast(RawSend, send), origin.encode("latin-1"), REST_EXPOSED))
        await self.app(scope, receive, send)

    async def _options(self, scope: Scope, send: Send, origin: str | None, requested: str | None) -> None:
        """204 naming the route's methods: a CORS preflight (origin already accepted) or a plain OPTIONS.

        Litestar 2.25's automatic OPTIONS handler names only the methods of the handlers registered
        before it on the path (``Allow: OPTIONS, POST`` on /adapters, which also has GET); the route
        itself knows them all.
        """
        methods = self._methods.get(scope["path_template"]) if "path_template" in scope else None
        if methods is None:
            handler_paths: set[str] = getattr(scope.get("route_handler"), "paths", set())
            found = {m for r in scope["app"].routes if r.path in handler_paths for m in r.methods}
            methods = tuple(sorted(found or {"OPTIONS"}))
            if "path_template" in scope:
                self._methods[scope["path_template"]] = methods
        if origin is not None:
            out = preflight_headers(origin.encode("latin-1"), methods, requested)
        else:
            out = [(b"allow", ", ".join(methods).encode())]
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _problem(send: Send, status: int, title: str, detail: str, field: str) -> None:
    body = _encoder.encode(Problem(title=title, status=status, detail=detail, field=field))
    headers = [(b"content-type", PROBLEM_JSON), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
