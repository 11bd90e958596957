"""Identity and access rules."""

from gateway.auth.base import Authenticator, can_read, can_use_workload_identity, can_write

__all__ = ["Authenticator", "can_read", "can_use_workload_identity", "can_write"]
