"""What can go wrong while getting an upstream credential, as errors the proxy maps to responses.

``ConsentRequired`` and ``OboFailed`` are the caller's to fix (consent, sign in again, satisfy a
conditional-access policy): 403 / 401 with ``WWW-Authenticate`` naming the error and the scope.
``CredentialUnavailable`` is the operator's (no OBO credential configured, managed identity or
secret missing): 502 naming which credential. None of them ever carries a token or a secret value.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class UpstreamCredentialError(GatewayError):
    """Base class. ``outcome`` is the label counted and audited; ``scopes`` what was asked for."""

    outcome = "error"
    #: RFC 6750 error code for WWW-Authenticate, when the caller can act.
    bearer_error: str | None = None

    def __init__(self, detail: str, *, adapter: str, scopes: tuple[str, ...] = (), claims: str | None = None) -> None:
        super().__init__(detail)
        self.adapter = adapter
        self.scopes = scopes
        self.claims = claims


class ConsentRequired(UpstreamCredentialError):
    """The user (or an admin) has not consented to the upstream scopes (403 insufficient_scope)."""

    status = 403
    title = "Consent required"
    outcome = "consent_required"
    bearer_error = "insufficient_scope"


class OboFailed(UpstreamCredentialError):
    """The on-behalf-of exchange refused the caller's token (invalid_grant, interaction_required,
    conditional access): 401, the client must get a new token (with ``claims`` when given)."""

    status = 401
    title = "On-behalf-of exchange failed"
    outcome = "obo_failed"
    bearer_error = "invalid_token"


class CredentialUnavailable(UpstreamCredentialError):
    """The gateway could not obtain its own credential for the adapter (502 naming which)."""

    status = 502
    title = "Upstream credential unavailable"
    outcome = "unavailable"
