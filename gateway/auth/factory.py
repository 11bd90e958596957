"""Picks the authenticator for ``settings.auth``."""

from __future__ import annotations

from gateway.auth.base import Authenticator
from gateway.auth.dev import DevAuthenticator
from gateway.auth.jwt import JwtAuthenticator
from gateway.settings import Settings


def build_authenticator(settings: Settings) -> Authenticator:
    """DevAuthenticator for dev, JwtAuthenticator for entra and oidc. Call ``start()`` before use."""
    if settings.auth == "dev":
        return DevAuthenticator()
    return JwtAuthenticator.from_settings(settings)
