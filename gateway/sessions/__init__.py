"""Session record stores: the protocol and its implementations."""

from gateway.sessions.base import SessionRecord, SessionStore

__all__ = ["SessionRecord", "SessionStore"]
