"""Legacy HTTP+SSE: find the upstream's ``endpoint`` event and point it at the gateway.

The 2024-11-05 transport's first event names the URL to POST messages to. The gateway keeps
that URL inside the sealed session id and hands the client its own ``/messages`` URL instead.
Everything after the endpoint event streams through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
MAX_PREAMBLE = 64 * 1024


class EndpointRewriter:
    """Feeds SSE bytes through; replaces the data of the first ``endpoint`` event.

    ``make_url(upstream_endpoint)`` returns the gateway URL to put in its place; it may be
    absolute or relative, matching what the upstream sent.
    """

    def __init__(self, make_url: Callable[[str, bool], str]) -> None:
        self._make_url = make_url
        self._buffer = b""
        self.done = False
        self.upstream_endpoint: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes ready for the client (possibly none until the endpoint event is complete)."""
        if self.done:
            return chunk
        self._buffer += chunk
        out = b""
        while not self.done:
            match = _BOUNDARY.search(self._buffer)
            if match is None:
                if len(self._buffer) > MAX_PREAMBLE:
                    raise ValueError("upstream SSE stream sent no endpoint event in its first 64 KiB")
                return out
            block = self._buffer[: match.start()]
            separator = self._buffer[match.start() : match.end()]
            self._buffer = self._buffer[match.end() :]
            out += self._rewrite(block) + separator
        rest, self._buffer = self._buffer, b""
        return out + rest

    def _rewrite(self, block: bytes) -> bytes:
        lines = re.split(rb"\r\n|\n|\r", block)
        event = b"message"
        data: list[bytes] = []
        for line in lines:
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
        if event != b"endpoint":
            return block
        self.done = True
        upstream = b"\n".join(data).decode("utf-8").strip()
        self.upstream_endpoint = upstream
        absolute = bool(urlsplit(upstream).scheme)
        return b"event: endpoint\r\ndata: " + self._make_url(upstream, absolute).encode() + b""


def upstream_path(endpoint: str) -> str:
    """The path and query of an endpoint URL (the gateway always connects to the replica itself)."""
    parts = urlsplit(endpoint)
    path = parts.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path + (f"?{parts.query}" if parts.query else "")
