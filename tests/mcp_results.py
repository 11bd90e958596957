"""Reading an MCP tool result in a test."""

from __future__ import annotations

from mcp import types


def first_text(result: types.CallToolResult) -> str:
    """The text of ``result``'s first content block; the test fails, showing the result, if that block
    is not text (an image, a resource link): typed, where ``result.content[0].text`` is not."""
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text
