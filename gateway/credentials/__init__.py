"""Upstream credentials: what the gateway sends to an adapter's replicas on each request (issue 18).

The proxy asks :meth:`UpstreamCredentials.headers_for` for the headers of one request and appends
them to the upstream request (DESIGN.md §6: the forward stage). The client's own ``Authorization``
never goes upstream (gateway/proxy/headers.py strips it); these headers are the gateway's.
"""

from gateway.credentials.errors import (
    CREDENTIAL_ACTION_CODE,
    CREDENTIAL_UNAVAILABLE_CODE,
    ConsentRequired,
    CredentialUnavailable,
    OboFailed,
    UpstreamCredentialError,
)
from gateway.credentials.provider import UpstreamCredential, UpstreamCredentials, merge_headers

__all__ = [
    "CREDENTIAL_ACTION_CODE",
    "CREDENTIAL_UNAVAILABLE_CODE",
    "ConsentRequired",
    "CredentialUnavailable",
    "OboFailed",
    "UpstreamCredential",
    "UpstreamCredentialError",
    "UpstreamCredentials",
    "merge_headers",
]
