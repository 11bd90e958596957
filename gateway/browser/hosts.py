"""Host and Origin checks at the gateway (DNS-rebinding and cross-site request protection).

The gateway rewrites Host for the upstream, so upstreams cannot see a hostile Host or Origin;
the gateway must refuse them itself before anything is forwarded. REST routes use the same policy
with stricter origins (2026-11-30): only same-origin and configured origins, not every loopback
port, because in embedded mode a page served by any other local program (a dev server on
localhost:3000) would otherwise be able to create adapters.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _split_host(value: str) -> str:
    """The host part of a Host header value (no port, brackets kept off IPv6)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class HostPolicy:
    """Which Host and Origin values the gateway accepts, on MCP and REST routes."""

    def __init__(self, *, listen_host: str, public_url: str | None, hosts: Iterable[str], origins: Iterable[str]):
        allowed = {"127.0.0.1", "localhost", "::1"}
        if listen_host not in ("0.0.0.0", "::"):
            allowed.add(_split_host(listen_host))
        self._any_host = False
        self._exact_hosts: set[str] = set()
        for entry in hosts:
            if entry == "*":
                self._any_host = True
            elif ":" in entry.strip("[]") and not entry.startswith("["):
                self._exact_hosts.add(entry.lower())
            else:
                allowed.add(_split_host(entry))
        self._origins = {o.rstrip("/").lower() for o in origins}
        if public_url:
            parts = urlsplit(public_url)
            allowed.add((parts.hostname or "").lower())
            self._origins.add(f"{parts.scheme}://{parts.netloc}".lower())
        self._hosts = frozenset(allowed)

    def check(self, host: str | None, origin: str | None, *, loopback_origins: bool = True) -> tuple[int, str] | None:
        """None when acceptable, else (status, reason).

        ``loopback_origins`` accepts any loopback origin (MCP routes: browser-based MCP clients on
        a developer's machine); without it (REST) an origin must be configured or the request's own.
        """
        if host is not None and not self.host_allowed(host):
            return 421, f"Host {host!r} is not served by this gateway"
        if origin is not None and not self.origin_allowed(origin, host=host, loopback=loopback_origins):
            return 403, f"Origin {origin!r} is not allowed"
        return None

    def host_allowed(self, host: str) -> bool:
        """The Host header names this gateway (loopback, listen address, public URL, allowed_hosts)."""
        return self._any_host or host.lower() in self._exact_hosts or _split_host(host) in self._hosts

    def origin_allowed(self, origin: str, *, host: str | None = None, loopback: bool = True) -> bool:
        """The Origin is configured, the public URL's, the request's own (same Host), or loopback if allowed."""
        normalized = origin.rstrip("/").lower()
        if normalized in self._origins:
            return True
        try:
            parts = urlsplit(normalized)
        except ValueError:  # "http://[" and the like
            return False
        if parts.scheme not in ("http", "https"):
            return False  # "null" (sandboxed frames, file:) and anything odd
        if host is not None:
            own = _host_port(parts.scheme, host.strip().lower())
            if own is not None and own == _host_port(parts.scheme, parts.netloc):
                return True
        return loopback and (parts.hostname or "") in LOOPBACK_HOSTS


def _host_port(scheme: str, netloc: str) -> tuple[str, int] | None:
    """(host, port) of a netloc, the scheme's default port when none is written; None if malformed."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    return (parts.hostname or "", port or (443 if scheme == "https" else 80))
