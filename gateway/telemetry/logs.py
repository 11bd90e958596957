"""Logging setup: readable text in embedded mode, one JSON object per line otherwise."""

from __future__ import annotations

import json
import logging
import sys
import time

from gateway.settings import Settings

_CONTROL = str.maketrans({chr(c): " " for c in range(32)})


def sanitize(value: object, limit: int = 300) -> str:
    """A user-controlled value made safe for one log line (no control characters, bounded)."""
    text = str(value).translate(_CONTROL)
    return text if len(text) <= limit else text[:limit] + "…"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with any ``extra`` fields of the record."""

    _standard = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": sanitize(record.getMessage(), 2000),
        }
        for key, value in vars(record).items():
            if key not in self._standard and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(settings: Settings) -> None:
    """Root logging per settings.log_level and settings.log_format."""
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "text" if settings.embedded else "json"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.error", "uvicorn.access", "azure", "kubernetes_asyncio", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
