"""The REST side of the command line: one httpx client, problem+json turned into ``ApiError``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = 30.0


class ApiError(Exception):
    """The gateway answered an error (exit status 1); the fields come from its problem+json body."""

    def __init__(self, status: int, title: str, detail: str = "", field: str | None = None) -> None:
        super().__init__(f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error a response carries: problem+json when it is that, else its status and text."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            title = str(body.get("title") or response.reason_phrase)
            detail = str(body.get("detail") or "")
            field = body.get("field")
            return cls(response.status_code, title, detail, field if isinstance(field, str) else None)
        return cls(response.status_code, response.reason_phrase, response.text.strip()[:500])

    def describe(self) -> str:
        """One line for people: ``404 Not Found: adapter 'x' does not exist (field: name)``."""
        text = f"{self.status} {self.title}" if self.status else self.title
        if self.detail and self.detail != self.title:
            text += f": {self.detail}"
        if self.field:
            text += f" (field: {self.field})"
        return text

    def as_json(self) -> dict[str, Any]:
        """The error for ``--json`` output."""
        return {"status": self.status, "title": self.title, "detail": self.detail, "field": self.field}


class ConnectionFailed(ApiError):
    """The gateway could not be reached at all."""


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """Who the command acts as: a bearer token, or dev-mode identity headers."""

    token: str | None = None
    user: str | None = None
    roles: str | None = None

    def headers(self) -> dict[str, str]:
        """The request headers that carry the identity."""
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.user:
            headers["X-Dev-User-Id"] = self.user
        if self.roles is not None:
            headers["X-Dev-Roles"] = self.roles
        return headers


class GatewayApi:
    """Calls to the gateway's REST API; every non-2xx answer raises ``ApiError``."""

    def __init__(self, url: str, credentials: Credentials, *, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials
        self._http = httpx.Client(base_url=self.url, headers=credentials.headers(), timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self, method: str, path: str, *, body: Any = None, headers: Mapping[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        """Send one request; raise ApiError unless the answer is 2xx."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(
                method, path, json=body if body is not None else None, params=query, headers=dict(headers or {})
            )
        except httpx.HTTPError as exc:
            raise ConnectionFailed(
                0, f"cannot reach the gateway at {self.url}", f"{type(exc).__name__}: {exc}"
            ) from None
        if not response.is_success:
            raise ApiError.from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a request (None for an empty body)."""
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def pages(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        """Every item of a paged list (``items`` + ``nextCursor``), page after page."""
        cursor: str | None = None
        while True:
            page = self.json("GET", path, cursor=cursor)
            yield from page.get(key) or []
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def stream_events(self, path: str, **params: Any) -> Iterator[tuple[str, str]]:
        """The (event, data) pairs of an SSE response; comments are skipped."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream("GET", path, params=query, timeout=httpx.Timeout(TIMEOUT, read=None)) as response:
                if not response.is_success:
                    response.read()
                    raise ApiError.from_response(response)
                event, data = "message", list[str]()
                for line in response.iter_lines():
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event = value
                        elif name == "data":
                            data.append(value)
        except httpx.HTTPError as exc:
            raise ConnectionFailed(0, f"lost the gateway at {self.url}", f"{type(exc).__name__}: {exc}") from None


def dumps(value: Any) -> str:
    """JSON for ``--json`` output."""
    return json.dumps(value, indent=2, sort_keys=False)
