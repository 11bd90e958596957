"""Host and Origin checks at the gateway (DNS-rebinding protection).

The gateway rewrites Host for the upstream, so upstreams cannot see a hostile Host or Origin;
the gateway must refuse them itself before anything is forwarded.
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
    """Which Host and Origin values MCP routes accept."""

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

    def check(self, host: str | None, origin: str | None) -> tuple[int, str] | None:
        """None when acceptable, else (status, reason)."""
        if (
            host is not None
            and not self._any_host
            and host.lower() not in self._exact_hosts
            and _split_host(host) not in self._hosts
        ):
            return 421, f"Host {host!r} is not served by this gateway"
        if origin is not None:
            normalized = origin.rstrip("/").lower()
            if normalized not in self._origins:
                parts = urlsplit(normalized)
                if parts.scheme not in ("http", "https") or (parts.hostname or "") not in LOOPBACK_HOSTS:
                    return 403, f"Origin {origin!r} is not allowed"
        return None
