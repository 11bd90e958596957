"""stdio MCP servers behind Streamable HTTP: the bridge a stdio adapter's replica runs (``bridge.py``)."""
