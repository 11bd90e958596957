"""What can go wrong while getting an upstream credential, as errors the proxy maps to responses.

``ConsentRequired`` and ``OboFailed`` are the caller's to fix (consent, sign in again, satisfy a
conditional-access policy): 403 / 401 with ``WWW-Authenticate`` naming the error and the scope.
``CredentialUnavailable`` is the operator's (no OBO credential configured, managed identity or
secret missing): 502 naming which credential. None of them ever carries a token or a secret value.

Each class carries the JSON-RPC code the client gets (``rpc_code``, docs/policy.md): -32009 when the
caller must act, -32010 when the gateway's own credential is missing. The audit record of the request
carries the same code (gateway/policy/audit.py ``CredentialAudit``).
"""

from __future__ import annotations

import re

from gateway.errors import GatewayError

CREDENTIAL_ACTION_CODE = -32009
"""JSON-RPC code: the caller must act (sign in again, consent) before the upstream credential can be had."""
CREDENTIAL_UNAVAILABLE_CODE = -32010
"""JSON-RPC code: the gateway could not obtain the upstream credential (its configuration, a missing secret)."""


class UpstreamCredentialError(GatewayError):
    """Base class. ``outcome`` is the label counted and audited; ``scopes`` what was asked for."""

    outcome = "error"
    #: RFC 6750 error code for WWW-Authenticate, when the caller can act.
    bearer_error: str | None = None
    #: The JSON-RPC error code of the client's answer and of the audit record.
    rpc_code = CREDENTIAL_UNAVAILABLE_CODE

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
    rpc_code = CREDENTIAL_ACTION_CODE


class OboFailed(UpstreamCredentialError):
    """The on-behalf-of exchange refused the caller's token (invalid_grant, interaction_required,
    conditional access): 401, the client must get a new token (with ``claims`` when given)."""

    status = 401
    title = "On-behalf-of exchange failed"
    outcome = "obo_failed"
    bearer_error = "invalid_token"
    rpc_code = CREDENTIAL_ACTION_CODE


class CredentialUnavailable(UpstreamCredentialError):
    """The gateway could not obtain its own credential for the adapter (502 naming which)."""

    status = 502
    title = "Upstream credential unavailable"
    outcome = "unavailable"
    rpc_code = CREDENTIAL_UNAVAILABLE_CODE


_JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}")
REDACTED = "[token redacted]"


def redact_tokens(text: str, *known: str) -> str:
    """``text`` (an identity provider's error description, an exception message) without tokens.

    2026-11-30: the detail of a credential error reaches the client, the log and the WWW-Authenticate
    challenge, so it must never carry a token, whatever the provider or transport put in its message.
    Removed: every ``known`` value (the caller's assertion) and anything shaped like a JWT (``eyJ…``,
    also when cut short), before the text is shortened.
    """
    for value in known:
        if value:
            text = text.replace(value, REDACTED)
    return _JWT_SHAPED.sub(REDACTED, text)
