"""An mcp 1.x client (run by the interpreter of .tools/mcp1-venv, never imported by the tests).

    mcp1_client.py URL streamable|sse TOOL JSON_ARGS [TOOL JSON_ARGS ...]

Lists the tools and calls each TOOL with its arguments; prints one JSON object:
{"tools": [...names], "calls": {TOOL: first text content}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def main(url: str, transport: str, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    from mcp import ClientSession

    if transport == "sse":
        from mcp.client.sse import sse_client

        opener: Any = sse_client(url)
    else:
        # mcp 1.x API: the project venv mypy checks against has mcp 2.x, where it is streamable_http_client.
        from mcp.client.streamable_http import streamablehttp_client  # type: ignore[attr-defined]

        opener = streamablehttp_client(url)
    async with opener as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            results: dict[str, str] = {}
            for name, arguments in calls:
                result = await session.call_tool(name, arguments)
                results[name] = getattr(result.content[0], "text", "") if result.content else ""
    return {"tools": tools, "calls": results}


if __name__ == "__main__":
    argv = sys.argv[1:]
    pairs = [(argv[i], json.loads(argv[i + 1])) for i in range(2, len(argv), 2)]
    print(json.dumps(asyncio.run(main(argv[0], argv[1], pairs))))
