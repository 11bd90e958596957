"""The ``mcp-gateway`` command line client: adapters, servers, import, tools, call, logs, login.

``register`` adds its commands to the ``mcp-gateway`` entry point (gateway/cli.py); everything
goes through the gateway's public REST API and data plane.
"""

from gateway.client.commands import register

__all__ = ["register"]
