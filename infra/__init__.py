"""Pulumi program of MCP Gateway: the Azure platform (dev, prod) or a local Kubernetes (local).

Pulumi runs ``infra/__main__.py``; each other module is one component. See infra/README.md.
"""
