"""Sealed session ids: authenticity, key rotation, and what a client can do with one."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from gateway.proxy.sealing import SessionClaims, SessionSealer, load_or_create_key, parse_keys

CLAIMS = SessionClaims(
    kind="mcp",
    sid="s1",
    adapter="alpha",
    replica="alpha-0",
    replica_uid="uid-1",
    upstream="abc_DEF-123",
    user_id="alice",
    issued_at=1.0,
)


def test_a_sealed_id_opens_to_the_same_claims_and_hides_them() -> None:
    sealer = SessionSealer([os.urandom(32)])
    token = sealer.seal(CLAIMS)
    assert sealer.open(token) == CLAIMS
    assert "alice" not in token and "abc_DEF" not in token and "alpha" not in token
    assert all(0x21 <= ord(c) <= 0x7E for c in token)
    assert sealer.seal(CLAIMS) != token  # a fresh nonce every time


def test_tampered_truncated_and_foreign_ids_do_not_open() -> None:
    sealer = SessionSealer([os.urandom(32)])
    token = sealer.seal(CLAIMS)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in [flipped, token[:-5], "g1.", "g1.!!!", "plain-upstream-id", "", "g1." + "A" * 5000]:
        assert sealer.open(bad) is None
    assert SessionSealer([os.urandom(32)]).open(token) is None


def test_rotation_the_first_key_seals_every_key_opens() -> None:
    old, new = os.urandom(32), os.urandom(32)
    before = SessionSealer([old]).seal(CLAIMS)
    rotated = SessionSealer([new, old])
    assert rotated.open(before) == CLAIMS
    after = rotated.seal(CLAIMS)
    assert SessionSealer([new]).open(after) == CLAIMS
    assert SessionSealer([old]).open(after) is None


def test_keys_from_settings_accept_standard_and_url_safe_base64() -> None:
    key = bytes(range(32))
    standard = base64.b64encode(key).decode()
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert parse_keys([standard, urlsafe]) == [key, key]
    with pytest.raises(ValueError, match="entry 1 is not base64"):
        parse_keys(["***"])
    with pytest.raises(ValueError, match="entry 2 decodes to 16 bytes"):
        parse_keys([standard, base64.b64encode(os.urandom(16)).decode()])


def test_the_embedded_key_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    first = load_or_create_key(path)
    assert load_or_create_key(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
