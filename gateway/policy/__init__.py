"""Per-tool authorization, rate limits and the audit trail: the MCP-aware building blocks of the data plane.

Each module is self-contained (no settings object, no proxy import); the pipeline stages of
``gateway/proxy`` adapt them (see README.md in this folder).
"""
