"""Replica runtimes: the protocol and its implementations."""

from gateway.runtime.base import Endpoint, InstanceNotFound, Runtime, RuntimeIssue, RuntimeStatus

__all__ = ["Endpoint", "InstanceNotFound", "Runtime", "RuntimeIssue", "RuntimeStatus"]
