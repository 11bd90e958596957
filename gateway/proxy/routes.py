"""The data plane's routes table: path patterns to the handler that serves them (issue 15).

Replaces the regex + dict that ``GatewayApp`` and ``McpProxy`` each held. A route is a path
pattern with at most one ``{name}`` segment, a handler with the proxy's entry signature
``(scope, receive, send, name, route)`` and the route kind the handler is told (``mcp``, ``sse``,
``messages``; the kind also picks the allowed methods, see ``ALLOWED_METHODS``). Adding a route —
e.g. virtual servers at ``/servers/{name}/mcp`` — is one ``add`` call in gateway/app.py.

Matching costs one dict lookup per pattern shape: the path is split into segments, and a
pattern's literal segments are compared with the segment at ``{name}`` taken as the name. A
trailing slash is accepted (as the old regex did). A path that matches no route goes to the
control plane.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[dict[str, Any], Any, Any, str, str], Awaitable[None]]

ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    "mcp": ("POST", "GET", "DELETE"),
    "sse": ("GET",),
    "messages": ("POST",),
}
"""HTTP methods of each route kind (others: 405 with ``Allow``)."""


class DataPlaneRoutes:
    """``add(pattern, handler, kind)``; ``match(path)`` → ``(handler, name, kind)`` or None."""

    def __init__(self) -> None:
        # key: (segment count, index of {name}, literal segments with "" at {name})
        self._routes: dict[tuple[str, ...], tuple[int, Handler, str]] = {}
        self._shapes: list[tuple[int, int]] = []

    def add(self, pattern: str, handler: Handler, kind: str) -> None:
        """Register ``pattern`` (e.g. ``/adapters/{name}/mcp``); ``kind`` must be in ALLOWED_METHODS."""
        if kind not in ALLOWED_METHODS:
            raise ValueError(f"route kind {kind!r} is not one of {sorted(ALLOWED_METHODS)}")
        parts = pattern.strip("/").split("/")
        holes = [i for i, p in enumerate(parts) if p == "{name}"]
        if len(holes) > 1 or any(p.startswith("{") and p != "{name}" for p in parts):
            raise ValueError(f"route {pattern!r}: at most one {{name}} segment and no other placeholders")
        hole = holes[0] if holes else -1
        key = tuple("" if i == hole else p for i, p in enumerate(parts))
        if key in self._routes:
            raise ValueError(f"route {pattern!r} is already registered")
        self._routes[key] = (hole, handler, kind)
        shape = (len(parts), hole)
        if shape not in self._shapes:
            self._shapes.append(shape)

    def match(self, path: str) -> tuple[Handler, str, str] | None:
        """The handler, the ``{name}`` value ("" without one) and the kind of ``path``; None if no route."""
        if path.endswith("/"):
            path = path[:-1]
        parts = path[1:].split("/")
        count = len(parts)
        for length, hole in self._shapes:
            if length != count:
                continue
            if hole >= 0:
                name = parts[hole]
                if not name:
                    continue
                key = (*parts[:hole], "", *parts[hole + 1 :])
            else:
                name = ""
                key = tuple(parts)
            found = self._routes.get(key)
            if found is not None:
                return found[1], name, found[2]
        return None
