"""Gateway-issued session ids: sealed (AES-GCM) claims about a pinned session.

Clients never see an upstream's session id. They hold an authenticated encryption of
``{kind, sid, adapter, replica, replica uid, upstream id, user, issued-at}`` under a key every gateway
replica shares, so any gateway can route any session without a store round-trip, and a token is
useless to another user or on another adapter. Several keys may be configured: the first seals,
all open (rotation). Tokens are visible ASCII (base64url), as MCP requires of session ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "g1."
MAX_TOKEN_CHARS = 4096
"""Longest sealed id ``open`` accepts; ``SessionRouter.open_session`` refuses to issue a longer one."""
_AAD = b"mcp-gateway session v1"
KEY_BYTES = 32


class SessionClaims(msgspec.Struct, array_like=True, frozen=True):
    """What a sealed session id says. ``kind`` is ``mcp`` (Streamable HTTP) or ``sse`` (legacy)."""

    kind: str
    sid: str
    adapter: str
    replica: str
    replica_uid: str
    upstream: str
    user_id: str
    issued_at: float
    client_caps: str = ""
    """Virtual-server sessions (kind ``vmcp``): the client's sampling / elicitation / roots capabilities
    as compact JSON, so a gateway rebuilding the session declares them to members (2026-12-01,
    gateway/servers/backchannel.py). Trailing with a default: ids sealed before it still open, and
    a gateway without the field ignores it."""


class SessionSealer:
    """Seals and opens session ids with a ring of AES-256-GCM keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is required")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"session keys must be {KEY_BYTES} bytes, got {len(key)}")
        self._ring = [(hashlib.sha256(k).digest()[:4], AESGCM(k)) for k in keys]
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(SessionClaims)

    def seal(self, claims: SessionClaims) -> str:
        """An opaque, URL-safe id carrying ``claims``."""
        key_id, aead = self._ring[0]
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, self._encoder.encode(claims), _AAD)
        return _PREFIX + base64.urlsafe_b64encode(key_id + nonce + sealed).decode().rstrip("=")

    def open(self, token: str) -> SessionClaims | None:
        """The claims of a token this gateway sealed, or None for anything else."""
        if not token.startswith(_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        body = token[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 4 + 12 + 16:
            return None
        key_id, nonce, sealed = raw[:4], raw[4:16], raw[16:]
        for candidate_id, aead in self._ring:
            if candidate_id != key_id:
                continue
            try:
                return self._decoder.decode(aead.decrypt(nonce, sealed, _AAD))
            except (InvalidTag, msgspec.DecodeError, msgspec.ValidationError):
                return None
        return None


def parse_keys(encoded: Sequence[str]) -> list[bytes]:
    """Decode base64 keys from settings; ValueError names the bad one by position."""
    keys: list[bytes] = []
    for index, text in enumerate(encoded):
        try:
            standard = text.strip().replace("-", "+").replace("_", "/")
            key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"MCPGW_SESSION_KEYS entry {index + 1} is not base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"MCPGW_SESSION_KEYS entry {index + 1} decodes to {len(key)} bytes, not {KEY_BYTES}")
        keys.append(key)
    return keys


def load_or_create_key(path: Path) -> bytes:
    """The embedded mode's key: generated once, kept in the data dir with mode 0600."""
    if path.exists():
        key = base64.b64decode(path.read_text().strip())
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path} does not hold a {KEY_BYTES}-byte base64 key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode())
    try:
        os.link(tmp, path)  # another gateway sharing the data dir may have won the race
    except FileExistsError:
        tmp.unlink()
        return load_or_create_key(path)
    tmp.unlink()
    return key
