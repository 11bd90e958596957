"""Log formatting rules: one JSON object per line, sanitized values, secrets masked."""

from __future__ import annotations

import json
import logging

from gateway.telemetry.logs import JsonFormatter, TextFormatter, hash_user, redact, sanitize
from gateway.telemetry.metrics import MetricRegistry, render_prometheus

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_secrets_are_masked_wherever_they_appear() -> None:
    assert redact(f"Authorization: Bearer {JWT}") == "Authorization: Bearer ***"
    assert JWT not in redact(f"token in a url ?t={JWT}&x=1")
    assert redact("InstrumentationKey=abc-123;IngestionEndpoint=https://x") == (
        "InstrumentationKey=***;IngestionEndpoint=https://x"
    )
    assert redact("rediss://default:s3cret@cache.example:6380/0") == "rediss://default:***@cache.example:6380/0"
    assert redact("AccountKey=c2VjcmV0;") == "AccountKey=***;"
    assert redact("adapter rec created by dev") == "adapter rec created by dev"


def test_json_lines_are_single_objects_with_sanitized_fields() -> None:
    line = JsonFormatter().format(record("adapter %s failed", "a\nb\x1b[31m", detail=f"Bearer {JWT}", count=3))
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "adapter a b [31m failed"
    assert payload["detail"] == "Bearer ***" and payload["count"] == 3
    assert payload["level"] == "warning" and payload["time"].endswith("Z")


def test_text_lines_are_sanitized_and_masked() -> None:
    line = TextFormatter().format(record("user value %r", f"x\r\nFAKE 00:00:00 ERROR forged Bearer {JWT}"))
    assert "\n" not in line and "\r" not in line and JWT not in line


def test_user_hash_is_stable_and_not_the_id() -> None:
    assert hash_user("alice@example.com") == hash_user("alice@example.com") != "alice@example.com"
    assert len(hash_user("alice@example.com")) == 16
    assert len(sanitize("x" * 500, 64)) == 65


def test_prometheus_text_of_no_data_is_valid() -> None:
    assert render_prometheus(None) == "\n"
    assert render_prometheus(MetricRegistry()) == "\n"
