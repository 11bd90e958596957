"""Adapter metadata stores: the protocol and its implementations."""

from gateway.store.base import AdapterExists, AdapterStore, EtagMismatch, ServerExists, ServerStore

__all__ = ["AdapterExists", "AdapterStore", "EtagMismatch", "ServerExists", "ServerStore"]
