"""Session record stores: the protocol and its implementations."""

from gateway.sessions.base import SessionLimitExceeded, SessionLimits, SessionRecord, SessionStore

__all__ = ["SessionLimitExceeded", "SessionLimits", "SessionRecord", "SessionStore"]
