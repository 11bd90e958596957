"""The audit trail: one structured record per MCP call, session start/end and control-plane change.

2026-11-30. What is recorded (issue 15): ``tools/call``, ``resources/read``, ``prompts/get``, session
start and end, and adapter create/update/delete — with time, user id, roles, adapter, the tool /
resource / prompt, outcome (``allowed``, ``denied``, ``limited``, ``upstream_error``, ``error``), HTTP
status, latency, request id, trace id. Never recorded: tool arguments (unless
``hash_arguments`` asks for the SHA-256 of their canonical JSON), environment values, secrets, tokens,
session ids. Control-plane records carry the *names* of the changed fields only.

2026-11-30, upstream credentials (issue 18): every request forwarded to an adapter with
``upstreamAuth`` is audited with ``credential`` = ``{type, outcome}`` — the kind (``entra-obo``,
``managed-identity``, ``secret``) and ``issued`` (obtained for this request: an on-behalf-of exchange,
a managed-identity token request, a secret read from its store), ``cached`` (reused from the
gateway's memory) or ``failed`` (with the JSON-RPC ``code`` the client got, -32009 / -32010, and the
``reason``). The record is the request's ``tools/call`` / ``resources/read`` / ``prompts/get`` records
when it has any, else one ``upstream.credential`` record. Never the token or the secret.

The hot path never waits for a sink: :meth:`AuditTrail.record` appends a tuple to a bounded deque
and returns (no await, no lock, no I/O); a background task builds the :class:`AuditRecord` structs,
hashes arguments when asked, encodes and writes them in batches (file and stdout writes in a worker
thread). A full queue drops the record and counts it in ``AuditTrail.dropped`` — an audit sink that
stalls must not stall MCP traffic; the drop count is exported so the gap is visible.

Sinks (``MCPGW_AUDIT``): ``off``; ``stdout`` (JSON lines; the gateway logs to stderr);
``file:PATH`` (JSON lines, mode 0600, rotated by size to PATH.1 … PATH.N); and, when telemetry exports,
OpenTelemetry logs (:class:`OtelLogSink`, e.g. to Azure Monitor), built from a ``LoggerProvider`` the
composition root passes in.

Measured (``python -m timeit`` on the shared 2-core machine at load average ≈ 10, so upper bounds):
``record()`` ≈ 1.6 µs per call with room in the queue, ≈ 0.6 µs when full (it only counts); the
writer then spends ≈ 5-8 µs per record (struct, timestamp, JSON) off the request path, in batches
of up to 512.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider

log = logging.getLogger(__name__)

Outcome = Literal["allowed", "denied", "limited", "upstream_error", "error"]
Event = Literal[
    "tools/call",
    "resources/read",
    "prompts/get",
    "session.start",
    "session.end",
    "adapter.create",
    "adapter.update",
    "adapter.delete",
    "upstream.credential",
]

QUEUE_SIZE = 10_000
"""Records waiting for the writer before new ones are dropped (``MCPGW_AUDIT_QUEUE``)."""
BATCH = 512
"""Most records one write hands a sink."""
FILE_MAX_BYTES = 50 * 1024 * 1024
"""Size at which ``file:PATH`` rotates (``MCPGW_AUDIT_FILE_MAX_BYTES``)."""
FILE_BACKUPS = 5
"""Rotated files kept: PATH.1 (newest) … PATH.5 (``MCPGW_AUDIT_FILE_BACKUPS``)."""
CLOSE_TIMEOUT = 5.0
"""Seconds ``close()`` waits for queued records to be written."""
FAILURE_LOG_INTERVAL = 10.0
"""Seconds between two log lines about a failing sink."""

_ID_TYPES = (int, str, float)

# Bookkeeping fields of an adapter that change on every write: not "changes" an auditor wants listed.
_BOOKKEEPING = frozenset(
    {"id", "etag", "generation", "createdAt", "createdBy", "lastUpdatedAt", "created_at", "last_updated_at"}
)
_ENV_FIELDS = frozenset({"environmentVariables", "environment_variables"})


class CredentialAudit(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The upstream credential (``upstreamAuth``) of a forwarded request: its kind and outcome, never its value."""

    type: str
    """``entra-obo``, ``managed-identity`` or ``secret``."""
    outcome: str
    """``issued`` (obtained for this request), ``cached`` (reused from memory) or ``failed``."""
    code: int | None = None
    """A failure's JSON-RPC code: -32009 (the caller must act) or -32010 (the gateway could not get it)."""
    reason: str | None = None
    """A failure's kind: ``consent_required``, ``obo_failed`` or ``unavailable``."""


_USED: dict[tuple[str, bool], CredentialAudit] = {}


def credential_used(kind: str, issued: bool) -> CredentialAudit:
    """The (shared, immutable) record part of a credential that was issued or reused: no allocation per request."""
    key = (kind, issued)
    found = _USED.get(key)
    if found is None:
        found = _USED[key] = CredentialAudit(type=kind, outcome="issued" if issued else "cached")
    return found


def credential_failed(kind: str, code: int, reason: str) -> CredentialAudit:
    """The record part of a credential that could not be had (``code``: the client's JSON-RPC error code)."""
    return CredentialAudit(type=kind, outcome="failed", code=code, reason=reason)


class AuditRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One audit line. Absent fields are left out of the JSON."""

    time: datetime
    event: str
    outcome: str
    user: str
    roles: list[str] = msgspec.field(default_factory=list)
    adapter: str | None = None
    tool: str | None = None
    resource: str | None = None
    prompt: str | None = None
    status: int | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    trace_id: str | None = None
    rpc_id: int | str | float | None = None
    era: str | None = None
    limit: str | None = None
    """The limit that refused a ``limited`` call (``rateLimits[0]``)."""
    detail: str | None = None
    """A short reason for ``denied`` / ``error`` / ``upstream_error`` (no user data beyond names)."""
    changed: list[str] | None = None
    """Control plane: names of the fields the change touched (``environmentVariables.API_URL``), never values."""
    arguments_sha256: str | None = None
    credential: CredentialAudit | None = None
    """The upstream credential of the request (adapters with ``upstreamAuth``): kind and outcome only."""


class AuditSink(Protocol):
    """Where records go. ``write`` is awaited by the trail's writer task only, never on the hot path."""

    async def write(self, records: Sequence[AuditRecord]) -> None:
        """Write a batch of records."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...


_encoder = msgspec.json.Encoder()


def encode_lines(records: Sequence[AuditRecord]) -> bytes:
    """JSON lines of ``records``."""
    encode = _encoder.encode
    return b"".join([encode(r) + b"\n" for r in records])


class StdoutSink:
    """JSON lines on the process's standard output (logs go to stderr, so the streams stay apart)."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream

    async def write(self, records: Sequence[AuditRecord]) -> None:
        """Encode and write in a worker thread (a slow pipe must not block the event loop)."""
        data = encode_lines(records)
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        stream = self._stream if self._stream is not None else sys.stdout.buffer
        stream.write(data)
        stream.flush()

    async def close(self) -> None:
        """Nothing to release."""


class FileSink:
    """JSON lines in a file created with mode 0600, rotated by size to ``PATH.1`` … ``PATH.<backups>``."""

    def __init__(self, path: str | Path, *, max_bytes: int = FILE_MAX_BYTES, backups: int = FILE_BACKUPS) -> None:
        if max_bytes < 1024:
            raise ValueError(f"the audit file must be allowed at least 1024 bytes before rotation; got {max_bytes}")
        if backups < 0:
            raise ValueError(f"audit file backups must be 0 or more; got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd: int | None = None
        self._size = 0
        # close() may run while a cancelled writer's thread is still appending
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileSink({str(self.path)!r})"

    async def write(self, records: Sequence[AuditRecord]) -> None:
        """Encode, then append (and rotate) in a worker thread."""
        data = encode_lines(records)
        await asyncio.to_thread(self._append, data)

    async def close(self) -> None:
        """Close the file."""
        await asyncio.to_thread(self._close)

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps nobody else's read access either
        self._size = os.fstat(fd).st_size
        return fd

    def _append(self, data: bytes) -> None:
        with self._lock:
            self._append_locked(data)

    def _append_locked(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        self._close_locked()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()

    def _close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class OtelLogSink:
    """Records as OpenTelemetry log records (event ``mcp.gateway.audit``), exported by the provider's processors.

    ``provider`` is the ``LoggerProvider`` the telemetry setup built (with a batch processor and the
    OTLP or Azure Monitor exporter); emitting only queues in the SDK's processor.
    """

    EVENT_NAME = "mcp.gateway.audit"

    def __init__(self, provider: LoggerProvider) -> None:
        from opentelemetry._logs import SeverityNumber  # optional: imported only when this sink is used

        self._logger = provider.get_logger("gateway.audit")
        self._severity = SeverityNumber.INFO

    async def write(self, records: Sequence[AuditRecord]) -> None:
        """Emit one log record per audit record: the record as body, the searchable fields as attributes."""
        for record in records:
            body = msgspec.to_builtins(record)
            attributes: dict[str, str | int | float] = {
                "mcp.audit.event": record.event,
                "mcp.audit.outcome": record.outcome,
            }
            for key in ("adapter", "tool", "resource", "prompt", "request_id", "trace_id", "status"):
                value = getattr(record, key)
                if value is not None:
                    attributes[f"mcp.audit.{key}"] = value
            if record.credential is not None:
                attributes["mcp.audit.credential.type"] = record.credential.type
                attributes["mcp.audit.credential.outcome"] = record.credential.outcome
            self._logger.emit(
                timestamp=int(record.time.timestamp() * 1e9),
                severity_number=self._severity,
                severity_text="INFO",
                body=body,
                attributes=attributes,
                event_name=self.EVENT_NAME,
            )

    async def close(self) -> None:
        """The provider is flushed and shut down by its owner (telemetry setup)."""


def parse_audit_setting(value: str, field: str = "MCPGW_AUDIT") -> AuditSink | None:
    """``off`` → None, ``stdout`` → StdoutSink, ``file:PATH`` → FileSink; ValueError naming ``field`` otherwise."""
    text = value.strip()
    if text in ("", "off"):
        return None
    if text == "stdout":
        return StdoutSink()
    if text.startswith("file:") and text[5:].strip():
        return FileSink(text[5:].strip())
    raise ValueError(f"{field} must be off, stdout or file:PATH; got {value!r}")


def arguments_sha256(arguments: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of tool arguments: keys sorted, no whitespace, UTF-8."""
    return hashlib.sha256(msgspec.json.encode(arguments, order="sorted")).hexdigest()


def _arguments_in(body: bytes, rpc_id: Any) -> Any:
    """``params.arguments`` of the message with ``rpc_id`` in a request body (one message or a batch)."""
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # too deep nesting raises RecursionError
        return None
    messages = value if isinstance(value, list) else [value]
    for m in messages:
        if isinstance(m, dict) and (len(messages) == 1 or m.get("id") == rpc_id):
            params = m.get("params")
            if isinstance(params, dict):
                return params.get("arguments")
    return None


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """Names of the fields that differ between two wire forms of an adapter (values are never returned).

    Environment variables are listed one by one (``environmentVariables.API_URL``) — names only;
    bookkeeping fields (etag, generation, timestamps) are left out. A create lists every field set;
    a delete lists none.
    """
    if after is None:
        return []
    old = before or {}
    changed: list[str] = []
    for key in sorted(set(old) | set(after)):
        if key in _BOOKKEEPING:
            continue
        a, b = old.get(key), after.get(key)
        if a == b:
            continue
        if key in _ENV_FIELDS and isinstance(a or {}, Mapping) and isinstance(b or {}, Mapping):
            env_a, env_b = a or {}, b or {}
            changed += [
                f"{key}.{name}" for name in sorted(set(env_a) | set(env_b)) if env_a.get(name) != env_b.get(name)
            ]
        else:
            changed.append(key)
    return changed


_Pending = tuple[
    float,  # time
    str,  # event
    str,  # outcome
    str,  # user
    Collection[str],  # roles
    str | None,  # adapter
    str | None,  # target
    int | None,  # status
    float | None,  # latency_ms
    str | None,  # request_id
    str | None,  # trace_id
    Any,  # rpc_id
    str | None,  # era
    str | None,  # limit
    str | None,  # detail
    Sequence[str] | None,  # changed
    bytes | None,  # body (for the arguments hash)
    CredentialAudit | None,  # credential
]


class AuditTrail:
    """A bounded queue of records and the task that writes them to the sinks.

    Use from the event loop's thread. ``record`` never awaits and never blocks; ``dropped``,
    ``written`` and ``failed`` are counters telemetry exports (records lost to a full queue,
    records handed to every sink, records a sink failed to take).
    """

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        *,
        queue_size: int = QUEUE_SIZE,
        hash_arguments: bool = False,
        close_timeout: float = CLOSE_TIMEOUT,
        clock: Any = time.time,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"the audit queue must hold at least one record; got {queue_size}")
        self.sinks = tuple(sinks)
        self.queue_size = queue_size
        self.hash_arguments = hash_arguments
        self.close_timeout = close_timeout
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._clock = clock
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = True
        self._idle_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure_logged_at = -FAILURE_LOG_INTERVAL

    @property
    def enabled(self) -> bool:
        """False with no sink: the stage can skip building records at all."""
        return bool(self.sinks)

    @property
    def queued(self) -> int:
        """Records waiting for the writer."""
        return len(self._queue)

    def record(
        self,
        event: Event,
        outcome: Outcome,
        *,
        user: str,
        roles: Collection[str] = (),
        adapter: str | None = None,
        target: str | None = None,
        status: int | None = None,
        latency_ms: float | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        rpc_id: Any = None,
        era: str | None = None,
        limit: str | None = None,
        detail: str | None = None,
        changed: Sequence[str] | None = None,
        body: bytes | None = None,
        credential: CredentialAudit | None = None,
    ) -> None:
        """Queue one record; returns at once. ``target`` is the tool, resource URI or prompt name.

        ``body`` (the JSON-RPC request body) is kept only when ``hash_arguments`` is on, to hash the
        ``params.arguments`` of the message ``rpc_id`` in the writer; it is never written.
        """
        if len(self._queue) >= self.queue_size or not self.sinks:
            self.dropped += bool(self.sinks)
            return
        self._queue.append(
            (
                self._clock(),
                event,
                outcome,
                user,
                roles,
                adapter,
                target,
                status,
                latency_ms,
                request_id,
                trace_id,
                rpc_id,
                era,
                limit,
                detail,
                changed,
                body if self.hash_arguments else None,
                credential,
            )
        )
        if self._idle:
            self._idle = False
            self._idle_event.clear()
            self._wakeup.set()

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None and self.sinks:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Write what is queued (up to ``close_timeout`` seconds), stop the writer and close the sinks."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.close_timeout):
                    await self._drained(task)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            self.dropped += len(self._queue)
            self._queue.clear()
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("audit sink %r failed to close", sink)

    async def flush(self) -> None:
        """Wait until every queued record was handed to the sinks (tests, shutdown)."""
        if self._task is not None:
            await self._drained(self._task)

    async def _drained(self, task: asyncio.Task[None]) -> None:
        while (self._queue or not self._idle) and not task.done():
            idle = asyncio.ensure_future(self._idle_event.wait())
            await asyncio.wait({task, idle}, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._idle = True
                self._idle_event.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._idle = False
            pending = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
            records = []
            for p in pending:
                try:
                    records.append(self._build(p))
                except Exception as exc:  # one bad record must not end the writer
                    self.failed += 1
                    self._log_failure("record builder", exc)
            ok = True
            for sink in self.sinks:
                try:
                    await sink.write(records)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    ok = False
                    self.failed += len(records)
                    self._log_failure(sink, exc)
            if ok:
                self.written += len(records)

    def _build(self, p: _Pending) -> AuditRecord:
        (ts, event, outcome, user, roles, adapter, target, status, latency, request_id, trace_id, rpc_id, era,
         limit, detail, changed, body, credential) = p  # fmt: skip
        record = AuditRecord(
            time=datetime.fromtimestamp(ts, UTC),
            event=event,
            outcome=outcome,
            user=user,
            roles=sorted(roles),
            adapter=adapter,
            tool=target if event == "tools/call" else None,
            resource=target if event == "resources/read" else None,
            prompt=target if event == "prompts/get" else None,
            status=status,
            latency_ms=None if latency is None else round(latency, 3),
            request_id=request_id,
            trace_id=trace_id,
            rpc_id=rpc_id if type(rpc_id) in _ID_TYPES else None,
            era=era,
            limit=limit,
            detail=detail,
            changed=None if changed is None else list(changed),
            credential=credential,
        )
        if body is not None and event == "tools/call":
            arguments = _arguments_in(body, rpc_id)
            if arguments is not None:
                record.arguments_sha256 = arguments_sha256(arguments)
        return record

    def _log_failure(self, sink: object, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._failure_logged_at >= FAILURE_LOG_INTERVAL:
            self._failure_logged_at = now
            log.error(
                "audit sink %r failed (%s: %s); %d records lost so far", sink, type(exc).__name__, exc, self.failed
            )


def audit_sinks(
    setting: str, *, logger_provider: LoggerProvider | None = None, field: str = "MCPGW_AUDIT"
) -> list[AuditSink]:
    """The sinks for ``MCPGW_AUDIT`` plus the OpenTelemetry one when telemetry exports logs."""
    sinks: list[AuditSink] = []
    sink = parse_audit_setting(setting, field)
    if sink is not None:
        sinks.append(sink)
    if logger_provider is not None:
        sinks.append(OtelLogSink(logger_provider))
    return sinks


def iter_records(lines: Iterable[bytes]) -> list[AuditRecord]:
    """Decode JSON lines written by a sink (tools, tests)."""
    decoder = msgspec.json.Decoder(AuditRecord)
    return [decoder.decode(line) for line in lines if line.strip()]
