"""Which request headers reach a replica (gateway/proxy/headers.py): bytes unchanged, no forged
forwarding headers, nothing the client's Connection header names."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.proxy.app import _in_networks
from gateway.proxy.headers import downstream_headers, upstream_headers
from gateway.settings import Settings, SettingsError


def forwarded(raw: list[tuple[bytes, bytes]], *, trusted: bool = False) -> dict[bytes, bytes]:
    out = upstream_headers(
        raw, client_ip="192.0.2.7", trusted_peer=trusted, scheme="https", user_id="alice", roles=(), session_id=None
    )
    assert len({name.lower() for name, _ in out}) == len(out), "a header was sent twice"
    return {name.lower(): value for name, value in out}


def test_header_bytes_pass_unchanged() -> None:
    seen = forwarded([(b"x-utf8", "café".encode()), (b"x-latin", b"\xe9t\xe9"), (b"host", b"gw.example:8443")])
    assert seen[b"x-utf8"] == b"caf\xc3\xa9" and seen[b"x-latin"] == b"\xe9t\xe9"
    assert seen[b"x-forwarded-host"] == b"gw.example:8443" and b"host" not in seen


def test_headers_named_by_connection_are_dropped() -> None:
    seen = forwarded(
        [(b"connection", b"keep-alive, X-Hop-A"), (b"connection", b"x-hop-b"), (b"x-hop-a", b"1"), (b"X-Hop-B", b"2"),
         (b"x-kept", b"3")]
    )  # fmt: skip
    assert b"x-hop-a" not in seen and b"x-hop-b" not in seen and b"connection" not in seen
    assert seen[b"x-kept"] == b"3"


def test_forwarding_headers_of_an_untrusted_peer_are_replaced() -> None:
    raw = [(b"x-forwarded-for", b"10.0.0.1"), (b"x-real-ip", b"10.0.0.2"), (b"x-mcp-user-id", b"mallory")]
    seen = forwarded(raw)
    assert seen[b"x-forwarded-for"] == b"192.0.2.7"
    assert b"x-real-ip" not in seen and seen[b"x-mcp-user-id"] == b"alice"


def test_a_trusted_proxy_keeps_the_chain_and_is_appended() -> None:
    raw = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-for", b"10.0.0.1")]
    assert forwarded(raw, trusted=True)[b"x-forwarded-for"] == b"203.0.113.9, 10.0.0.1, 192.0.2.7"
    assert forwarded([], trusted=True)[b"x-forwarded-for"] == b"192.0.2.7"


def test_trusted_proxies_are_addresses_or_networks() -> None:
    parsed = tuple(ipaddress.ip_network(p, strict=False) for p in ("10.0.0.0/8", "::1", "192.0.2.7"))
    assert _in_networks("10.1.2.3", parsed) and _in_networks("::1", parsed) and _in_networks("192.0.2.7", parsed)
    assert not _in_networks("192.0.2.8", parsed) and not _in_networks("unknown", parsed)
    with pytest.raises(SettingsError, match="MCPGW_TRUSTED_PROXIES"):
        Settings(trusted_proxies=("10.0.0.0/33",))
    assert Settings(trusted_proxies=("10.0.0.0/8", "::1")).trusted_proxies == ("10.0.0.0/8", "::1")


def test_upstream_response_headers_named_by_connection_are_dropped() -> None:
    raw = [(b"Connection", b"x-internal"), (b"X-Internal", b"secret"), (b"Content-Type", b"application/json")]
    assert downstream_headers(raw) == [(b"content-type", b"application/json")]
