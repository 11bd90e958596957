"""Shared fixtures: real gateway processes (tests/gateway_process.py)."""

pytest_plugins = ["tests.gateway_process"]
