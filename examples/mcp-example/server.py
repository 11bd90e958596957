"""Example MCP server used as the default local image ``mcp-example:1.0.0``.

It serves, on one port:

* Streamable HTTP at ``/mcp`` — the 2026-07-28 stateless wire and 2025-era sessions
  (``initialize`` + ``Mcp-Session-Id``), as the ``mcp`` SDK 2.x does on one endpoint;
* legacy HTTP+SSE (2024-11-05) at ``/sse`` + ``/messages/``.

Settings come from the environment: ``HOST`` (default ``0.0.0.0``), ``PORT`` (default 8000)
and ``MCP_REPLICA_ID`` (reported by ``whoami``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

mcp = MCPServer("mcp-example", version="1.0.0", log_level="WARNING")


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    result = a + b
    return int(result) if result.is_integer() else result


@mcp.tool()
def echo(text: str) -> str:
    """Return the given text unchanged."""
    return text


@mcp.tool()
def whoami() -> str:
    """Name the replica that answered: MCP_REPLICA_ID, else hostname:port."""
    return os.environ.get("MCP_REPLICA_ID") or f"{socket.gethostname()}:{os.environ.get('PORT', '8000')}"


@mcp.tool()
def get_env(name: str) -> str | None:
    """Return the value of an environment variable of this replica, or null when it is unset."""
    return os.environ.get(name)


def build_app() -> Starlette:
    """One ASGI app serving Streamable HTTP at /mcp and HTTP+SSE at /sse + /messages/."""
    # The gateway (or a Kubernetes Service) fronts this server: Host is the pod/loopback
    # address, never a browser's. DNS-rebinding protection belongs at the gateway.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    streamable = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security)
    sse = mcp.sse_app(transport_security=security)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [Route("/healthz", healthz), *streamable.routes, *sse.routes]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    """Run the server on HOST:PORT."""
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "8000"))
    replica = os.environ.get("MCP_REPLICA_ID", socket.gethostname())
    print(f"mcp-example replica {replica} serving on {host}:{port} (/mcp, /sse)", flush=True)
    uvicorn.run(build_app(), host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
