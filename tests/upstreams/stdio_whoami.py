"""A stdio MCP server that says who and what it is: the Kubernetes stdio e2e test's "image".

Run as ``python -m tests.upstreams.stdio_whoami [args...]``. Tools: ``whoami`` (``MCP_REPLICA_ID``,
the pod), ``pid`` (this process: one per client session) and ``argv`` (the arguments it was started
with, so a PUT that changes ``args`` can be seen in effect).
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("stdio-whoami", version="1.0.0", log_level="WARNING")


@mcp.tool()
def whoami() -> str:
    """The replica (pod) this process runs in."""
    return os.environ.get("MCP_REPLICA_ID", "")


@mcp.tool()
def pid() -> int:
    """This server process's pid."""
    return os.getpid()


@mcp.tool()
def argv() -> list[str]:
    """The arguments this process was started with."""
    return sys.argv[1:]


if __name__ == "__main__":
    mcp.run("stdio")
