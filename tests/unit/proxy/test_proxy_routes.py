"""The data plane's routes table (gateway/proxy/routes.py): what matches, what goes to the control plane."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.proxy.routes import DataPlaneRoutes


async def handler(scope: dict[str, Any], receive: Any, send: Any, name: str, route: str) -> None:
    return None


async def other(scope: dict[str, Any], receive: Any, send: Any, name: str, route: str) -> None:
    return None


def table() -> DataPlaneRoutes:
    routes = DataPlaneRoutes()
    for kind in ("mcp", "sse", "messages"):
        routes.add(f"/adapters/{{name}}/{kind}", handler, kind)
    routes.add("/servers/{name}/mcp", other, "mcp")
    routes.add("/mcp", other, "mcp")
    return routes


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/adapters/calc/mcp", (handler, "calc", "mcp")),
        ("/adapters/calc/mcp/", (handler, "calc", "mcp")),
        ("/adapters/calc/sse", (handler, "calc", "sse")),
        ("/adapters/calc/messages", (handler, "calc", "messages")),
        ("/servers/team/mcp", (other, "team", "mcp")),
        ("/mcp", (other, "", "mcp")),
        ("/adapters//mcp", None),
        ("/adapters/calc/mcp//", None),
        ("/adapters/calc", None),
        ("/adapters/calc/status", None),
        ("/adapters/a/b/mcp", None),
        ("/healthz", None),
        ("/", None),
    ],
)
def test_match(path: str, expected: Any) -> None:
    assert table().match(path) == expected


def test_bad_patterns_are_refused() -> None:
    routes = table()
    with pytest.raises(ValueError, match="already registered"):
        routes.add("/adapters/{name}/mcp", handler, "mcp")
    with pytest.raises(ValueError, match="kind"):
        routes.add("/x/{name}", handler, "rest")
    with pytest.raises(ValueError, match="placeholders"):
        routes.add("/x/{id}/mcp", handler, "mcp")
