"""The data-plane side of the command line: list and call tools with the ``mcp`` SDK client.

The client goes through the gateway's data plane exactly as any MCP client does, as the
signed-in user (the same bearer token or dev headers as the REST calls), so what it lists is what
that user may see and call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TIMEOUT = 60.0


class ArgumentError(ValueError):
    """A ``key=value`` argument of ``call`` does not fit the tool's inputSchema (exit status 2)."""


async def _with_client(url: str, headers: dict[str, str], work: Any) -> Any:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=TIMEOUT) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        return await work(client)


def list_tools(url: str, headers: dict[str, str]) -> list[Any]:
    """The tools the MCP endpoint at ``url`` lists for this caller."""

    async def work(client: Client) -> list[Any]:
        return list((await client.list_tools()).tools)

    result: list[Any] = anyio.run(_with_client, url, headers, work)
    return result


def call_tool(url: str, headers: dict[str, str], tool: str, pairs: Sequence[str]) -> Any:
    """Call ``tool`` with ``key=value`` arguments checked against its inputSchema; the CallToolResult."""

    async def work(client: Client) -> Any:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        if tool not in tools:
            known = ", ".join(sorted(tools)) or "none"
            raise ArgumentError(f"no tool {tool!r} here (tools: {known})")
        arguments = parse_arguments(pairs, tools[tool].input_schema or {})
        return await client.call_tool(tool, arguments)

    return anyio.run(_with_client, url, headers, work)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def parse_arguments(pairs: Sequence[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``key=value`` pairs as tool arguments: each value JSON when it parses, else the string itself.

    Checked against the schema's top-level ``properties`` types and ``required`` list; a property
    whose type is ``string`` keeps the text as typed (``text=5`` is ``"5"``, not 5).
    """
    properties: dict[str, Any] = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ArgumentError(f"argument {pair!r} is not key=value")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        expected = _types(properties.get(key, {}))
        if properties and key not in properties and schema.get("additionalProperties") is False:
            raise ArgumentError(f"argument {key}: the tool takes no such argument (it takes {', '.join(properties)})")
        if expected and "string" in expected and not isinstance(value, str):
            value = raw
        if expected and not any(_is(value, t) for t in expected):
            raise ArgumentError(f"argument {key}: expected {' or '.join(expected)}, got {raw!r}")
        arguments[key] = value
    missing = [k for k in schema.get("required") or [] if k not in arguments]
    if missing:
        raise ArgumentError(f"missing argument{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    return arguments


def _types(prop: dict[str, Any]) -> list[str]:
    kind = prop.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    variants = prop.get("anyOf") or prop.get("oneOf") or []
    return [t for v in variants if isinstance(v, dict) for t in _types(v)]


def _is(value: Any, kind: str) -> bool:
    if kind not in _JSON_TYPES:
        return True
    if isinstance(value, bool) and kind in ("number", "integer"):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[kind])
