"""What a browser page may do to the gateway: Host allow-list, Origin checks and CORS.

Shared by the MCP routes (``proxy/``) and the REST control plane (``control/``), so both planes
answer a DNS-rebinding Host (421), a foreign Origin (403) and a preflight the same way; neither
plane imports the other, both import this package.
"""
