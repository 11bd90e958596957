"""Logging setup: readable text in embedded mode, one JSON object per line otherwise.

Rules every log line follows, whichever module writes it:

* user-controlled values are sanitized (no control characters, bounded length) by the formatters;
* bearer tokens, JWTs, keys in connection strings and URL passwords are masked by the formatters
  as a last line of defence — code never passes them, nor session ids, to a log call;
* users appear as ``hash_user(user_id)``, never by id, in per-request lines.

Per proxied request (``MCPGW_ACCESS_LOG=all``; by default only those with status 400 and above
or whose client left) the data plane writes one line to the ``gateway.access`` logger at INFO with
``request_id``, ``adapter``, ``era``, ``method``, ``replica``, ``user`` (hash), ``status``,
``duration_ms`` and ``upstream_ms``. ``MCPGW_LOG_LEVEL=warning`` turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sys
import threading
import time
from typing import Any

import msgspec

from gateway.settings import Settings

_CONTROL = str.maketrans({chr(c): " " for c in range(32)} | {"\x7f": " "})
_SECRETS = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"  # Authorization values
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # JWTs anywhere
    r"|((?:instrumentationkey|accountkey|sharedaccesskey|password|secret|client_secret|token|key)=)[^;&\s]+"
    r"|(://[^/:@\s]*:)[^@/\s]+(@)"  # user:password@ in URLs
)
ACCESS_LOGGER = "gateway.access"
FIELDS = "mcpgw_fields"
"""Record attribute holding already-sanitized JSON fields (set by hot-path loggers)."""
_encoder = msgspec.json.Encoder(enc_hook=str)


def sanitize(value: object, limit: int = 300) -> str:
    """A user-controlled value made safe for one log line (no control characters, bounded)."""
    text = str(value).translate(_CONTROL)
    return text if len(text) <= limit else text[:limit] + "…"


def redact(text: str) -> str:
    """``text`` with tokens, keys and URL passwords masked as ``***``."""
    if "=" not in text and "eyJ" not in text and "earer" not in text and "@" not in text:
        return text
    return _SECRETS.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + "***"
    if match.group(2):
        return match.group(2) + "***"
    if match.group(3):
        return match.group(3) + "***" + match.group(4)
    return "***"


@functools.lru_cache(maxsize=4096)
def hash_user(user_id: str) -> str:
    """A stable pseudonym of a user id for logs and spans (first 16 hex digits of SHA-256)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with any ``extra`` fields of the record."""

    _standard = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once per second, not per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        payload: dict[str, object] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(sanitize(record.getMessage(), 2000)),
        }
        fields = getattr(record, FIELDS, None)
        if fields is not None:  # pre-sanitized fields of a hot-path record (the access log)
            payload.update(fields)
        else:
            for key, value in vars(record).items():
                if key not in self._standard and not key.startswith("_"):
                    payload[key] = redact(sanitize(value, 2000)) if isinstance(value, str) else value
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return _encoder.encode(payload).decode()


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message`` with the message sanitized and secrets masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = redact(sanitize(record.message, 2000))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


class BufferedStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr through a 64 KiB buffer: INFO lines are written in batches at most ``interval`` apart.

    Python's stderr writes every line with its own system call; with one access-log line per
    proxied request that alone cost about 10% of the proxy's throughput. Warnings and errors are
    written at once; a daemon thread writes the rest every ``interval`` seconds, and logging's
    shutdown flushes at exit (a SIGKILL loses at most ``interval`` of INFO lines).
    """

    def __init__(self, interval: float = 0.1) -> None:
        stream = open(  # noqa: SIM115 - lives as long as the process
            sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace", closefd=False
        )
        super().__init__(stream)
        self._interval = interval
        threading.Thread(target=self._flush_periodically, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            if record.levelno >= logging.WARNING:
                self.stream.flush()
        except Exception:
            self.handleError(record)

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


def configure_logging(settings: Settings) -> None:
    """Root logging per settings.log_level and settings.log_format."""
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "text" if settings.embedded else "json"
    handler = BufferedStderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # No formatter of ours prints them; skipping them makes every record cheaper to create.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.error", "uvicorn.access", "azure", "kubernetes_asyncio", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.error").addFilter(drop_deliberate_aborts)


def drop_deliberate_aborts(record: logging.LogRecord) -> bool:
    """Drop uvicorn's traceback for a response the proxy aborted on purpose (the proxy logged why).

    The proxy raises out of the ASGI app to make uvicorn close a client connection without the
    terminating chunk (gateway/proxy/app.py ``ResponseAborted``, marked ``deliberate_abort``).
    """
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, "deliberate_abort", False)
