"""Virtual servers (issue 16, DESIGN §9): one MCP endpoint composed of several adapters."""
