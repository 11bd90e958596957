"""The RFC 9457 ``application/problem+json`` response every HTTP surface of the gateway answers with.

The control plane's exception handlers (``gateway/control/problems.py``) and ``GET /metrics``
(``gateway/telemetry/setup.py``) both build it; it lives here, below both, so telemetry does not
import the control plane (issue 20).
"""

from __future__ import annotations

import msgspec
from litestar import Response

from gateway.models import Problem

PROBLEM_JSON = "application/problem+json"
_encoder = msgspec.json.Encoder()


def problem_response(
    status: int, title: str, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> Response[bytes]:
    """A problem+json response."""
    body = Problem(title=title, status=status, detail=detail, field=field)
    return Response(_encoder.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers or {})
